/*
 * jobs.h: what every thread-pool job of the addon has (batch_io.c, direct_io.c) -- its work,
 * its promise, and a reference to the JS values whose memory the thread reads, kept alive
 * until the job completes -- and the one way a job settles.
 */
#ifndef FERRY_JOBS_H
#define FERRY_JOBS_H
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref keep;
  size_t n;
  int32_t *out;
  size_t out_len;
} job_base;

/* Queues `job` -- a struct whose first member is its job_base -- in the thread pool as `name`
 * (as async hooks show it): `execute` runs there, then `complete` on the event loop, which
 * settles the returned promise through ferry_job_finish. */
napi_value ferry_job_queue(napi_env env, void *job, const char *name, napi_async_execute_callback execute,
                           napi_async_complete_callback complete);

/* Resolves the job's promise with `value`, or rejects it with `why` when value is NULL; then
 * lets go of what the job kept alive (the caller frees the job itself). */
void ferry_job_finish(napi_env env, job_base *j, napi_value value, const char *why);

/* Called first by every job's execute, in the thread-pool thread: the first time in each
 * thread, sets that thread's nice value to FERRY_POOL_NICE (0-19; unset or 0: unchanged),
 * to put the pool's batch I/O below the event loop and the server's own work. */
void ferry_job_thread_setup(void);

/* The extended attributes of fd, or with `path` of the entry at path itself (l*xattr: never
 * what a final symlink points to), as a Buffer in readFiles' blob format for one entry;
 * throws ENOMEM (naming `what`) and returns NULL when out of memory. */
napi_value ferry_xattr_blob(napi_env env, int fd, const char *path, const char *what);

/* Whether s[0..n) is well-formed UTF-8 (batch_io.c): a name that is not is given to
 * JavaScript as a Buffer of its bytes, never as a string with replacement characters. */
int ferry_utf8_valid(const unsigned char *s, size_t n);

#endif
