/*
 * rolling.c: the weak block sums of a changed-block transfer, which find the target's
 * blocks in the source's file wherever they now start (data inserted or removed before
 * them shifts them off their old offsets).
 *
 * The sum of a window of bytes x[0..n) is  h = sum of T[x[i]] * P^(n-1-i)  (mod 2^32), with
 * T a fixed table of pseudo-random words: a polynomial hash over randomised byte values,
 * so that text, zeros and other regular data spread over all 2^32 values. Moving the window
 * one byte on costs one multiply-add:  h' = h * P - T[out] * P^n + T[in].  Both sides run
 * this same code, so the table and P are part of the protocol (docs/protocol.md).
 *
 *   weakSum(buf) -> number: the sum of all of buf.
 *   weakSums(buf, blockSize, out) -> Promise<number>: in the thread pool, the sum of each
 *     block of buf (the last one may be short) into out as big-endian u32s; resolves to the
 *     number of blocks. The caller leaves buf and out alone until it settles.
 *   rollFind(buf, start, end, blockSize, bits, sorted) -> number: the first p in
 *     [start, end - blockSize] whose window buf[p, p + blockSize) has a sum in the set, or
 *     -1. The set is `sorted` (its sums as ascending native-endian u32) and `bits`, a
 *     bitset of a power-of-two number of bits indexed by a sum's top bits, which answers
 *     most windows without the binary search.
 */
#include "jobs.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define P 0x01000193u

static uint32_t table[256];
static int table_ready;

static void table_init(void) {
  if (table_ready) return;
  uint64_t s = 0x66657272792d726fULL; /* splitmix64 from a fixed seed */
  for (int i = 0; i < 256; i++) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    table[i] = (uint32_t)((z ^ (z >> 31)) >> 16);
  }
  table_ready = 1;
}

static uint32_t power(uint32_t base, uint64_t n) {
  uint32_t r = 1;
  while (n) {
    if (n & 1) r *= base;
    base *= base;
    n >>= 1;
  }
  return r;
}

/* Four interleaved lanes (byte i goes to lane i % 4, each lane multiplying by P^4), joined
 * at the end: the same sum as one lane, h = h * P + T[x], at several times its speed (one
 * lane waits on its multiply every byte). */
static uint32_t sum_of(const uint8_t *p, size_t n) {
  const uint32_t p2 = P * P, p3 = p2 * P, p4 = p2 * p2;
  uint32_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a = a * p4 + table[p[i]];
    b = b * p4 + table[p[i + 1]];
    c = c * p4 + table[p[i + 2]];
    d = d * p4 + table[p[i + 3]];
  }
  uint32_t h = a * p3 + b * p2 + c * P + d;
  for (; i < n; i++) h = h * P + table[p[i]];
  return h;
}

static int in_sorted(const uint32_t *v, size_t n, uint32_t h) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (v[mid] < h) lo = mid + 1;
    else hi = mid;
  }
  return lo < n && v[lo] == h;
}

static napi_value fail(napi_env env, const char *why) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", why);
  return NULL;
}

static int buffer_arg(napi_env env, napi_value v, void **data, size_t *len) {
  bool is_buffer = false;
  return napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer ||
         napi_get_buffer_info(env, v, data, len) != napi_ok;
}

static napi_value weak_sum(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  void *buf;
  size_t len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 ||
      buffer_arg(env, argv[0], &buf, &len))
    return fail(env, "expected (buf: Buffer)");
  table_init();
  napi_create_uint32(env, sum_of(buf, len), &out);
  return out;
}

static napi_value roll_find(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], out;
  void *buf, *bits, *sorted;
  size_t len, bits_len, sorted_len;
  int64_t start, end, block;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6 ||
      buffer_arg(env, argv[0], &buf, &len) || napi_get_value_int64(env, argv[1], &start) != napi_ok ||
      napi_get_value_int64(env, argv[2], &end) != napi_ok || napi_get_value_int64(env, argv[3], &block) != napi_ok ||
      buffer_arg(env, argv[4], &bits, &bits_len) || buffer_arg(env, argv[5], &sorted, &sorted_len))
    return fail(env, "expected (buf: Buffer, start, end, blockSize, bits: Buffer, sorted: Buffer)");
  if (start < 0 || end < start || (uint64_t)end > len || block <= 0)
    return fail(env, "rollFind: need 0 <= start <= end <= buf.length and blockSize > 0");
  if (bits_len < 8 || (bits_len & (bits_len - 1)) || sorted_len % 4 || ((uintptr_t)sorted & 3))
    return fail(env, "rollFind: bits must be a power of two bytes (at least 8), sorted aligned u32s");
  table_init();
  int shift = 32;
  for (size_t b = bits_len * 8; b > 1; b >>= 1) shift--;
  const uint8_t *p = buf, *set = bits;
  const uint32_t *v = sorted;
  size_t nv = sorted_len / 4, n = (size_t)block;
  int64_t found = -1;
  if (end - start >= block) {
    /* Two lanes, each rolling over half of the windows, so that the two multiply chains
     * overlap (one lane waits on its multiply every byte): the first half's match wins,
     * else the second's. */
    uint32_t pn = power(P, n);
    size_t first = (size_t)start, last = (size_t)end - n; /* windows first..last */
    size_t count = last - first + 1, half = (count + 1) / 2, mid = first + half;
    uint32_t ha = sum_of(p + first, n), hb = count > 1 ? sum_of(p + mid, n) : 0;
    size_t len_b = count - half; /* len_b == half or half - 1 */
    int64_t second = -1;
#define BIT(h) ((set[((h) >> shift) >> 3] >> (((h) >> shift) & 7)) & 1)
    for (size_t k = 0; k < len_b; k++) {
      if (BIT(ha) | BIT(hb)) {
        if (BIT(ha) && in_sorted(v, nv, ha)) {
          found = (int64_t)(first + k);
          break;
        }
        if (second < 0 && BIT(hb) && in_sorted(v, nv, hb)) second = (int64_t)(mid + k);
      }
      if (k + 1 == len_b) break;
      size_t a = first + k, b = mid + k;
      ha = ha * P - table[p[a]] * pn + table[p[a + n]];
      hb = hb * P - table[p[b]] * pn + table[p[b + n]];
    }
    if (found < 0 && half > len_b) { /* the first half's last window */
      size_t a = mid - 1;
      if (len_b > 0) ha = ha * P - table[p[a - 1]] * pn + table[p[a - 1 + n]];
      if (BIT(ha) && in_sorted(v, nv, ha)) found = (int64_t)a;
    }
#undef BIT
    if (found < 0) found = second;
  }
  napi_create_int64(env, found, &out);
  return out;
}

typedef struct {
  job_base base;
  const uint8_t *buf;
  size_t len, block;
  uint8_t *out;
} sums_job;

static void sums_execute(napi_env env, void *data) {
  sums_job *j = data;
  ferry_job_thread_setup();
  for (size_t at = 0, k = 0; at < j->len; at += j->block, k++) {
    size_t n = j->len - at < j->block ? j->len - at : j->block;
    uint32_t h = sum_of(j->buf + at, n);
    j->out[4 * k] = (uint8_t)(h >> 24);
    j->out[4 * k + 1] = (uint8_t)(h >> 16);
    j->out[4 * k + 2] = (uint8_t)(h >> 8);
    j->out[4 * k + 3] = (uint8_t)h;
  }
}

static void sums_complete(napi_env env, napi_status status, void *data) {
  sums_job *j = data;
  napi_value blocks = NULL;
  if (status == napi_ok) napi_create_double(env, (double)((j->len + j->block - 1) / j->block), &blocks);
  ferry_job_finish(env, &j->base, blocks, "weakSums cancelled");
  free(j);
}

static napi_value weak_sums(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], keep;
  void *buf, *out;
  size_t len, out_len;
  int64_t block;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      buffer_arg(env, argv[0], &buf, &len) || napi_get_value_int64(env, argv[1], &block) != napi_ok || block <= 0 ||
      buffer_arg(env, argv[2], &out, &out_len))
    return fail(env, "expected (buf: Buffer, blockSize: a positive number, out: Buffer)");
  if (out_len / 4 < (len + (size_t)block - 1) / (size_t)block)
    return fail(env, "weakSums: out must hold 4 bytes per block of buf");
  sums_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  table_init(); /* here, on the main thread: the pool threads only read the table */
  j->buf = buf;
  j->len = len;
  j->block = (size_t)block;
  j->out = out;
  /* both buffers stay alive until the job completes */
  napi_create_array_with_length(env, 2, &keep);
  napi_set_element(env, keep, 0, argv[0]);
  napi_set_element(env, keep, 1, argv[2]);
  napi_create_reference(env, keep, 1, &j->base.keep);
  return ferry_job_queue(env, j, "ferry.weakSums", sums_execute, sums_complete);
}

void ferry_rolling_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"weakSum", NULL, weak_sum, NULL, NULL, NULL, napi_default, NULL},
    {"rollFind", NULL, roll_find, NULL, NULL, NULL, napi_default, NULL},
    {"weakSums", NULL, weak_sums, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
