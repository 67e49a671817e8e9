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

/* Resolves the job's promise with `value`, or rejects it with `why` when value is NULL; then
 * lets go of what the job kept alive (the caller frees the job itself). */
void ferry_job_finish(napi_env env, job_base *j, napi_value value, const char *why);

/* Called first by every job's execute, in the thread-pool thread: the first time in each
 * thread, lowers that thread's scheduling priority (nice FERRY_POOL_NICE, default 5) below
 * the event loop's, which every file passes through in turn while the pool's jobs run
 * many at once and have work queued ahead. */
void ferry_job_thread_setup(void);

#endif
