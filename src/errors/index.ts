/**
 * errors: ferry's one error type and the registry of every error code with its advice.
 * Pure: no I/O. Every part of ferry throws FerryError; codes cross process boundaries
 * (API problem bodies, wire ERROR frames, agent reports) and are matched by `code` only.
 */
export { ERROR_CODES, type ErrorCode, type ErrorInfo, errorInfo, isErrorCode } from './codes.js';
export { FerryError, isFerryError, toFerryError } from './ferry-error.js';
