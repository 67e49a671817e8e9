import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { type ErrorCode, errorInfo, FerryError } from '../errors/index.js';

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  advice: string;
  errors?: { field: string; message: string }[];
}

const TITLES: Record<number, string> = {
  400: 'Bad request',
  401: 'Unauthenticated',
  403: 'Forbidden',
  404: 'Not found',
  409: 'Conflict',
  413: 'Payload too large',
  415: 'Unsupported media type',
  422: 'Unprocessable content',
  500: 'Internal error',
};

export function problem(code: ErrorCode, detail: string, status = errorInfo(code).http): Problem {
  return {
    type: `urn:ferry:error:${code}`,
    title: TITLES[status] ?? 'Error',
    status,
    detail,
    code,
    advice: errorInfo(code).advice,
  };
}

/** Every error leaves the API as an RFC 9457 problem body; bad input is never a 500. */
export function problemHandler(err: FastifyError, req: FastifyRequest, reply: FastifyReply): void {
  let body: Problem;
  if (err.validation) {
    const where = err.validationContext ?? 'body';
    const errors = err.validation.map((v) => {
      const missing = (v.params as { missingProperty?: string } | undefined)?.missingProperty;
      const path = `${v.instancePath ?? ''}${missing ? `/${missing}` : ''}`
        .replace(/^\//, '')
        .replace(/\//g, '.');
      return { field: path ? `${where}.${path}` : where, message: v.message ?? 'is invalid' };
    });
    body = problem('FERRY_BAD_REQUEST', errors.map((e) => `${e.field}: ${e.message}`).join('; '), 400);
    body.errors = errors;
  } else if (err instanceof FerryError) {
    body = problem(err.code, err.message);
    const field = err.context.field;
    if (typeof field === 'string') body.errors = [{ field, message: err.message }];
  } else if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    body = problem('FERRY_BAD_REQUEST', err.message, err.statusCode);
  } else {
    req.log.error({ err }, 'unexpected error');
    body = problem('FERRY_INTERNAL', 'an unexpected error happened; the console log has the details', 500);
  }
  void reply.status(body.status).type('application/problem+json').send(body);
}
