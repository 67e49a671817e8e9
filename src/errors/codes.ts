/**
 * The table of error codes. docs/errors.md is kept identical to it by a test
 * (src/errors/codes.test.ts): add a code here and a row there in the same change.
 *
 * `retryable` says whether doing the same thing again later can succeed without the
 * user changing anything (the agent retries those with back-off).
 */
export interface ErrorInfo {
  readonly http: number;
  readonly retryable: boolean;
  readonly advice: string;
}

export const ERROR_CODES = {
  FERRY_BAD_REQUEST: {
    http: 400,
    retryable: false,
    advice: 'Correct the named field and send the request again.',
  },
  FERRY_UNAUTHENTICATED: {
    http: 401,
    retryable: false,
    advice:
      'Pass the admin token (--token-file or FERRY_TOKEN_FILE) or a client certificate issued by this console.',
  },
  FERRY_REGISTRATION_DENIED: {
    http: 401,
    retryable: false,
    advice: 'Use the registration.token file from the console data directory, copied exactly.',
  },
  FERRY_REGISTRATION_REVOKED: {
    http: 401,
    retryable: false,
    advice:
      'The console no longer knows this agent or target (it was deleted, or the console data was reset). Restart it: it registers again with its registration token.',
  },
  FERRY_NOT_FOUND: {
    http: 404,
    retryable: false,
    advice: 'Check the name with `ferry servers` or `ferry targets`.',
  },
  FERRY_NAME_TAKEN: {
    http: 409,
    retryable: false,
    advice: 'Choose another --name, or delete the old registration first.',
  },
  FERRY_ILLEGAL_TRANSITION: {
    http: 409,
    retryable: false,
    advice:
      'Check the stage and status with `ferry servers show NAME`; the message says which states allow this action.',
  },
  FERRY_TARGET_LOCKED: {
    http: 409,
    retryable: false,
    advice:
      'The target belongs to a running migration; wait until it completes or delete that migration first.',
  },
  FERRY_TARGET_NOT_CONFIGURED: {
    http: 409,
    retryable: false,
    advice: 'Configure a target first: `ferry configure SOURCE --target TARGET --method file`.',
  },
  FERRY_SOURCE_DISCONNECTED: {
    http: 409,
    retryable: true,
    advice: 'Start `ferry agent` on the source server and wait until `ferry servers` shows it connected.',
  },
  FERRY_TARGET_DISCONNECTED: {
    http: 409,
    retryable: true,
    advice:
      'Start `ferry target` on the target server and check that the agent can reach its --advertise address.',
  },
  FERRY_UNSUPPORTED_METHOD: {
    http: 400,
    retryable: false,
    advice: 'Use --method file; block-level migration is not available yet.',
  },
  FERRY_LAYOUT_DOES_NOT_FIT: {
    http: 422,
    retryable: false,
    advice:
      'Map larger target disks (`ferry target --disk`, `ferry configure --disk-map SRC=TGT`) or shrink partitions with `--resize PARTITION=SIZE`; the message gives the sizes.',
  },
  FERRY_LAYOUT_UNSUPPORTED: {
    http: 422,
    retryable: false,
    advice:
      'This source layout cannot be re-created on target disks; migrate onto a target started with --root DIR instead (files only), or change the layout on the source.',
  },
  FERRY_LVM_UNSUPPORTED: {
    http: 422,
    retryable: false,
    advice:
      'LVM volumes are not re-created on target disks yet; migrate onto a target started with --root DIR (the files of the logical volumes are copied), or move the data off LVM first.',
  },
  FERRY_TARGET_DISK_BUSY: {
    http: 409,
    retryable: false,
    advice:
      'A target disk is mounted, used as swap or not one of the --disk devices; give `ferry target --disk` only blank disks it may erase.',
  },
  FERRY_DISK_PREPARATION: {
    http: 500,
    retryable: true,
    advice:
      'Partitioning, formatting or mounting a target disk failed; the target log has the tool and its output. Check that fdisk, gdisk, e2fsprogs, xfsprogs and btrfs-progs are installed on the target.',
  },
  FERRY_STALE_ENTRY: {
    http: 409,
    retryable: true,
    advice:
      "An entry relied on target content that had changed (e.g. a renamed file whose old copy was gone, or a grown file's appended bytes sent for a copy the target no longer holds as it was); it is sent again in full, nothing to do.",
  },
  FERRY_PROTOCOL_VERSION: {
    http: 502,
    retryable: false,
    advice:
      'The peer runs an incompatible ferry version: install the same ferry release on source, target and console.',
  },
  FERRY_PROTOCOL_VIOLATION: {
    http: 502,
    retryable: true,
    advice:
      'The peer sent malformed data; the connection was closed. If it persists, collect both logs and report it.',
  },
  FERRY_PEER_REFUSED: {
    http: 403,
    retryable: true,
    advice:
      'The target accepts only the source the console assigned to it; check `ferry targets` and the migration settings.',
  },
  FERRY_UNSAFE_PATH: {
    http: 400,
    retryable: false,
    advice:
      'The source sent a path that would leave the target root; nothing was written. Check the source for tampering.',
  },
  FERRY_CHECKSUM_MISMATCH: {
    http: 502,
    retryable: true,
    advice:
      'A file changed in transit or on disk while it was copied; the transfer retries it automatically.',
  },
  FERRY_SOURCE_READ: {
    http: 500,
    retryable: true,
    advice:
      'The agent could not read source files (the message names them); check disk health, network file systems and any on-access scanner on the source (see the agent log). Replication goes on without them; the launch waits for them.',
  },
  FERRY_TARGET_WRITE: {
    http: 500,
    retryable: true,
    advice:
      'The target could not write; check free space and disk health on the target (see the target log).',
  },
  FERRY_CONNECTION_LOST: {
    http: 502,
    retryable: true,
    advice:
      'The data connection dropped; ferry reconnects and resumes by itself. Check the network if it keeps happening.',
  },
  FERRY_TLS: {
    http: 502,
    retryable: false,
    advice:
      'The peer certificate is not from this console CA or names another host; re-register the agent or target.',
  },
  FERRY_CONFIG: {
    http: 400,
    retryable: false,
    advice:
      'Fix the option or configuration file named in the message; `ferry COMMAND --help` lists what is accepted.',
  },
  FERRY_TIMEOUT: {
    http: 504,
    retryable: true,
    advice: 'The operation did not finish in time; check the task with `ferry status SOURCE` and try again.',
  },
  FERRY_INTERNAL: {
    http: 500,
    retryable: false,
    advice: 'An unexpected error; the log has the details. Please report it with the log.',
  },
} as const satisfies Record<string, ErrorInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function errorInfo(code: string): ErrorInfo {
  return (ERROR_CODES as Record<string, ErrorInfo>)[code] ?? ERROR_CODES.FERRY_INTERNAL;
}

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CODES, code);
}
