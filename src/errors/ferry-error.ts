import { type ErrorCode, errorInfo } from './codes.js';

/** The one error type of ferry: a stable code, a human message, optional context and cause. */
export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly context: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; context?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FerryError';
    this.code = code;
    this.context = options.context ?? {};
  }

  get advice(): string {
    return errorInfo(this.code).advice;
  }

  get retryable(): boolean {
    return errorInfo(this.code).retryable;
  }

  get httpStatus(): number {
    return errorInfo(this.code).http;
  }

  toJSON(): { code: ErrorCode; message: string; advice: string } {
    return { code: this.code, message: this.message, advice: this.advice };
  }
}

export function isFerryError(e: unknown): e is FerryError {
  return e instanceof FerryError;
}

/** Wraps anything thrown into a FerryError, keeping a FerryError as it is. */
export function toFerryError(e: unknown, fallback: ErrorCode = 'FERRY_INTERNAL'): FerryError {
  if (isFerryError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new FerryError(fallback, message, { cause: e });
}
