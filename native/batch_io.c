/*
 * batch_io: whole small files read and written many at a time, in the thread pool.
 *
 * A tree of small files costs its time in per-file system calls and in the round trips
 * between JavaScript and the thread pool (open, fstat, read, close: four hops per file on
 * the source; open, write, chown, chmod, xattrs, times, close, rename on the target). Here
 * one thread-pool job does all the calls for a batch of files, and JavaScript sees one
 * call and one completion per batch. Several batches in flight keep the disk busy.
 *
 * readFiles(paths: string[], caps: number[], slab: Buffer, xattrs: boolean, direct?: boolean)
 *     -> Promise<{ sizes: Int32Array, xattrs: Buffer | null }>
 *   Reads file i into slab[offset_i, offset_i + caps[i]). Without `direct`, the offsets are
 *   the running sum of caps; with it, the slab must start at a 4096-aligned address and
 *   each file has a slot of caps[i] rounded up to a multiple of 4096, so that a direct read
 *   lands in place (see readFilesLayout in src/native/index.ts). sizes[i] is the byte
 *   count read (at most caps[i]: a file that grew is cut at its scanned size) or -errno. Opens with O_NOFOLLOW and O_NOATIME (when permitted), so
 *   the source's access times are left alone; anything but a regular file is -EINVAL.
 *   With `xattrs`, each file's extended attributes are read from the same descriptor
 *   (flistxattr, fgetxattr) into one blob, file by file: u32 count, then count times
 *   (u32 name length, name, u32 value length, value), little-endian. A file that could
 *   not be read, or whose file system has no xattrs, has count 0; an attribute that
 *   vanishes between list and get is left out. With `direct`, files are opened with O_DIRECT
 *   and read in whole blocks straight into their slots (native/direct_io.c): a cold tree
 *   costs the source no page cache and no copy; where the file system refuses it
 *   (EINVAL), the rest of the batch is read buffered (into the same slots).
 *
 * writeFiles(items: Item[]) -> Promise<Int32Array>, 5 ints per item:
 *   [step, errno, xattrIndex, xattrErrno, inPlace]. Item = { tmp, dst, data: Buffer, uid,
 *   gid, mode, mtimeSec, mtimeNsec, inPlace?: boolean, xattrNames?: string[],
 *   xattrValues?: Buffer[] }. For each item: open tmp O_CREAT|O_EXCL|O_NOFOLLOW 0600, write
 *   data, fchown (skipped when the new file already has that owner), fchmod, fsetxattr each
 *   (a failure is reported, not fatal), futimens (atime = mtime), close, rename to dst.
 *   With `inPlace` (mode must not be 0), dst itself is tried first, O_CREAT|O_EXCL|
 *   O_NOFOLLOW with permission bits 0000 until its fchmod: where nothing is at dst, the
 *   file is written there and no rename is needed (which costs ext4 about a third of the
 *   file's creation); anything at dst (EEXIST) takes the temporary file. An interrupted
 *   in-place file is recognisable by its bits 0000 (the caller lists it before the job).
 *   inPlace in the result: 1 when the file was written at dst directly.
 *   step 0 = done; otherwise the step that failed (STEP_*), the file created removed,
 *   and the items after it not attempted (step STEP_SKIPPED) -- except a rename refused
 *   because dst is a directory or not empty (STEP_PLACE): the temporary file is kept for
 *   the caller to place, and the batch goes on.
 */
#define _GNU_SOURCE
#include "jobs.h"
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <linux/limits.h>
#include <linux/openat2.h>
#include <unistd.h>

#define WRITE_RESULT_INTS 5
enum { STEP_OK = 0, STEP_OPEN, STEP_WRITE, STEP_CHOWN, STEP_CHMOD, STEP_TIMES, STEP_CLOSE, STEP_RENAME, STEP_PLACE, STEP_SKIPPED };

#define MAX_BATCH 4096
#define MAX_PATH_BYTES 4096
#define MAX_XATTRS 256

#include <sys/resource.h>
#include <sys/syscall.h>

void ferry_job_thread_setup(void) {
  static __thread int done;
  if (done) return;
  done = 1;
  const char *v = getenv("FERRY_POOL_NICE");
  int nice = 0;
  if (v && *v) {
    char *end;
    long n = strtol(v, &end, 10);
    if (*end == '\0' && n >= 0 && n <= 19) nice = (int)n;
  }
  /* a thread's own nice value: raising it needs no privilege; failing changes nothing */
  if (nice > 0) (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}

static napi_value fail_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

/* A malloc'd copy of a JS string, or of a Buffer's bytes (a path that is not valid UTF-8,
 * see src/protocol/paths.ts), or NULL when it is neither, too long or holds a NUL. */
static char *dup_string(napi_env env, napi_value v) {
  bool is_buf = false;
  if (napi_is_buffer(env, v, &is_buf) == napi_ok && is_buf) {
    void *data = NULL;
    size_t n = 0;
    if (napi_get_buffer_info(env, v, &data, &n) != napi_ok || n >= MAX_PATH_BYTES || memchr(data, 0, n)) return NULL;
    char *b = malloc(n + 1);
    if (!b) return NULL;
    memcpy(b, data, n);
    b[n] = 0;
    return b;
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || len >= MAX_PATH_BYTES) return NULL;
  char *s = malloc(len + 1);
  if (!s) return NULL;
  size_t got = 0;
  if (napi_get_value_string_utf8(env, v, s, len + 1, &got) != napi_ok || got != len || strlen(s) != len) {
    free(s);
    return NULL;
  }
  return s;
}

static int get_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  bool is = false;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return -1;
  return napi_get_buffer_info(env, v, data, len) == napi_ok ? 0 : -1;
}

/* The job's results (out) as an Int32Array; 0 when it cannot be made. */
static int out_array(napi_env env, job_base *j, napi_value *arr) {
  napi_value ab;
  void *mem = NULL;
  if (napi_create_arraybuffer(env, j->out_len * sizeof(int32_t), &mem, &ab) != napi_ok ||
      napi_create_typedarray(env, napi_int32_array, j->out_len, ab, 0, arr) != napi_ok)
    return 0;
  if (j->out_len) memcpy(mem, j->out, j->out_len * sizeof(int32_t));
  return 1;
}

napi_value ferry_job_queue(napi_env env, void *job, const char *name, napi_async_execute_callback execute,
                           napi_async_complete_callback complete) {
  job_base *j = job;
  napi_value promise, label;
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &label);
  napi_create_async_work(env, NULL, label, execute, complete, job, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

void ferry_job_finish(napi_env env, job_base *j, napi_value value, const char *why) {
  if (value) {
    napi_resolve_deferred(env, j->deferred, value);
  } else {
    napi_value msg, err;
    napi_create_string_utf8(env, why, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, j->deferred, err);
  }
  if (j->keep) napi_delete_reference(env, j->keep);
  napi_delete_async_work(env, j->work);
}

static void settle(napi_env env, job_base *j, napi_status status) {
  napi_value arr;
  ferry_job_finish(env, j, status == napi_ok && out_array(env, j, &arr) ? arr : NULL, "batch job cancelled");
}

/* ---------------------------------------------------------------- readFiles */

typedef struct {
  job_base base;
  char **paths;
  size_t *caps;
  uint8_t *slab;
  int want_xattrs;
  int direct; /* O_DIRECT (native/direct_io.c) until the file system refuses it */
  int slots; /* asked for direct: files in aligned slots of whole blocks (see readFiles) */
  uint8_t *xbuf; /* the xattr blob (see readFiles), grown as needed */
  size_t xlen, xcap;
  int xfailed; /* out of memory while growing it */
} read_job;

static void xappend(read_job *j, const void *p, size_t n) {
  if (j->xfailed) return;
  if (j->xlen + n > j->xcap) {
    size_t cap = j->xcap ? j->xcap : 4096;
    while (cap < j->xlen + n) cap *= 2;
    uint8_t *b = realloc(j->xbuf, cap);
    if (!b) {
      j->xfailed = 1;
      return;
    }
    j->xbuf = b;
    j->xcap = cap;
  }
  memcpy(j->xbuf + j->xlen, p, n);
  j->xlen += n;
}

static void put_u32le(uint8_t *b, uint32_t v) {
  b[0] = (uint8_t)v, b[1] = (uint8_t)(v >> 8), b[2] = (uint8_t)(v >> 16), b[3] = (uint8_t)(v >> 24);
}

static void xappend_u32(read_job *j, uint32_t v) {
  uint8_t b[4];
  put_u32le(b, v);
  xappend(j, b, 4);
}

/* Appends the attributes of fd (or, with `path`, of the entry at path itself, never what a
 * final symlink points to) to the blob: count, then (name length, name, value length, value). */
static void read_xattrs(read_job *j, int fd, const char *path, char *names, uint8_t *value) {
  size_t count_at = j->xlen;
  uint32_t count = 0;
  xappend_u32(j, 0);
  ssize_t ln = path ? llistxattr(path, names, XATTR_LIST_MAX) : fd >= 0 ? flistxattr(fd, names, XATTR_LIST_MAX) : -1;
  for (ssize_t at = 0; ln > 0 && at < ln;) {
    const char *name = names + at;
    size_t nl = strnlen(name, (size_t)(ln - at));
    at += (ssize_t)nl + 1;
    if (nl == 0) continue;
    ssize_t vl = path ? lgetxattr(path, name, value, XATTR_SIZE_MAX) : fgetxattr(fd, name, value, XATTR_SIZE_MAX);
    if (vl < 0) continue;
    xappend_u32(j, (uint32_t)nl);
    xappend(j, name, nl);
    xappend_u32(j, (uint32_t)vl);
    xappend(j, value, (size_t)vl);
    count++;
  }
  if (!j->xfailed) put_u32le(j->xbuf + count_at, count);
}

/* 0 once openat2 turned out to be missing (a kernel before 5.6) or refused (a seccomp filter
 * answering ENOSYS or EPERM): every open then falls back to O_NOFOLLOW on the last component. */
static volatile int have_openat2 = 1;

/*
 * Opens an absolute source path that the scan found to be a regular file, following no
 * symlink on the way: neither the last component (O_NOFOLLOW) nor any directory above it
 * (openat2 RESOLVE_NO_SYMLINKS). A file or a parent directory swapped for a symlink after
 * the scan is refused with ELOOP, so the content of whatever the symlink points to can never
 * be read in its place (and land on the target under the name, owner and mode of a file
 * its user controls). The caller's paths are canonical (the scan resolves its root once).
 * O_NOATIME where permitted (the file's owner or CAP_FOWNER): the source's access times are
 * left alone. Returns the descriptor, or -1 with errno set.
 */
int ferry_open_source(const char *path, int flags) {
  for (int noatime = 1; noatime >= 0; noatime--) {
    int f = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | flags | (noatime ? O_NOATIME : 0);
    int fd;
    if (have_openat2) {
      struct open_how how = {.flags = (uint64_t)f, .mode = 0, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
      fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
      /* ENOSYS: no openat2. EPERM without O_NOATIME, where a plain open works: a container's
       * seccomp filter that refuses calls it does not know (Docker before 20.10) */
      if (fd < 0 && (errno == ENOSYS || (errno == EPERM && !noatime))) {
        int why = errno;
        fd = open(path, f);
        if (why == ENOSYS || fd >= 0) have_openat2 = 0;
      }
    } else
      fd = open(path, f);
    if (fd >= 0 || errno != EPERM || !noatime) return fd;
  }
  return -1;
}

/* openSourceMode() -> "openat2" | "nofollow": how ferry_open_source opens here, found by
 * opening "/" through it (a kernel or seccomp filter that lacks or refuses openat2 leaves
 * only O_NOFOLLOW on the last component). For the agent's feasibility checks. */
static napi_value open_source_mode(napi_env env, napi_callback_info info) {
  int fd = ferry_open_source("/", O_DIRECTORY);
  if (fd >= 0) close(fd);
  napi_value out;
  napi_create_string_utf8(env, have_openat2 ? "openat2" : "nofollow", NAPI_AUTO_LENGTH, &out);
  return out;
}

/* O_NONBLOCK: a fifo swapped in for a scanned file would otherwise block the pool thread
 * in open until a writer came (no effect on reading a regular file). */
static int open_source(const char *path, int direct) {
  return ferry_open_source(path, O_NONBLOCK | (direct ? O_DIRECT : 0));
}

/* direct_io.c: straight into dst when it is aligned and `room` holds len in whole blocks */
int64_t ferry_read_direct(int fd, uint8_t *dst, size_t len, size_t room, int64_t position);

/* Reads the first `cap` bytes of fd into dst (fewer at its end): the byte count, or -errno. */
static int64_t read_head(int fd, uint8_t *dst, size_t cap, size_t room, int direct) {
  if (direct) return ferry_read_direct(fd, dst, cap, room, 0);
  size_t got = 0;
  while (got < cap) {
    ssize_t r = pread(fd, dst + got, cap - got, (off_t)got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return got ? (int64_t)got : -errno;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  return (int64_t)got;
}

/* Opens a source file, directly while the file system takes it (EINVAL: it does not, and
 * the rest of the batch is read buffered). */
static int open_for_batch(read_job *j, const char *path) {
  int fd = open_source(path, j->direct);
  if (fd < 0 && j->direct && errno == EINVAL) {
    j->direct = 0;
    fd = open_source(path, 0);
  }
  return fd;
}

#define SLOT_ALIGN 4096

/* The room file i takes in the slab: its cap, rounded up to whole blocks in slots. */
static size_t slot_bytes(const read_job *j, size_t cap) {
  return j->slots ? (cap + SLOT_ALIGN - 1) & ~(size_t)(SLOT_ALIGN - 1) : cap;
}

static void read_execute(napi_env env, void *data) {
  ferry_job_thread_setup();
  read_job *j = data;
  size_t at = 0;
  char *names = j->want_xattrs ? malloc(XATTR_LIST_MAX) : NULL;
  uint8_t *value = j->want_xattrs ? malloc(XATTR_SIZE_MAX) : NULL;
  if (j->want_xattrs && (!names || !value)) j->xfailed = 1;
  for (size_t i = 0; i < j->base.n; i++) {
    size_t cap = j->caps[i];
    int32_t result;
    int fd = open_for_batch(j, j->paths[i]);
    int direct = j->direct; /* after the open: whether fd itself is direct */
    if (fd < 0) {
      result = -errno;
    } else {
      struct stat st;
      if (fstat(fd, &st) < 0) result = -errno;
      else if (!S_ISREG(st.st_mode)) result = -EINVAL;
      else {
        int64_t got = read_head(fd, j->slab + at, cap, slot_bytes(j, cap), direct);
        if (got == -EINVAL && direct) {
          /* opened, but no direct reads here after all: this file and the rest buffered */
          j->direct = 0;
          close(fd);
          fd = open_source(j->paths[i], 0);
          got = fd < 0 ? -errno : read_head(fd, j->slab + at, cap, cap, 0);
        }
        result = (int32_t)got;
      }
    }
    /* a file that could not be read gets an empty attribute list (count 0) */
    if (j->want_xattrs && !j->xfailed) read_xattrs(j, result >= 0 ? fd : -1, NULL, names, value);
    if (fd >= 0) close(fd);
    j->base.out[i] = result;
    at += slot_bytes(j, cap);
  }
  free(names);
  free(value);
}

static void read_complete(napi_env env, napi_status status, void *data) {
  read_job *j = data;
  napi_value sizes, xattrs, result;
  int ok = status == napi_ok && !j->xfailed && out_array(env, &j->base, &sizes) &&
           napi_create_object(env, &result) == napi_ok &&
           (j->want_xattrs ? napi_create_buffer_copy(env, j->xlen, j->xbuf, NULL, &xattrs)
                           : napi_get_null(env, &xattrs)) == napi_ok &&
           napi_set_named_property(env, result, "sizes", sizes) == napi_ok &&
           napi_set_named_property(env, result, "xattrs", xattrs) == napi_ok;
  ferry_job_finish(env, &j->base, ok ? result : NULL,
         j->xfailed ? "out of memory reading extended attributes" : "batch job cancelled");
  free(j->xbuf);
  for (size_t i = 0; i < j->base.n; i++) free(j->paths[i]);
  free(j->paths);
  free(j->caps);
  free(j->base.out);
  free(j);
}

static napi_value read_files(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], keep;
  bool want_xattrs = false, direct = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || argc > 5 ||
      napi_get_value_bool(env, argv[3], &want_xattrs) != napi_ok ||
      (argc == 5 && napi_get_value_bool(env, argv[4], &direct) != napi_ok))
    return fail_type(env,
                     "expected (paths: string[], caps: number[], slab: Buffer, xattrs: boolean, direct?: boolean)");
  uint32_t n = 0, ncaps = 0;
  void *slab;
  size_t slab_len;
  bool a1 = false, a2 = false;
  napi_is_array(env, argv[0], &a1);
  napi_is_array(env, argv[1], &a2);
  if (!a1 || !a2 || napi_get_array_length(env, argv[0], &n) != napi_ok ||
      napi_get_array_length(env, argv[1], &ncaps) != napi_ok || n != ncaps || n > MAX_BATCH ||
      get_buffer(env, argv[2], &slab, &slab_len))
    return fail_type(env, "expected (paths: string[], caps: number[], slab: Buffer) of equal lengths");
  read_job *j = calloc(1, sizeof *j);
  if (!j) return fail_type(env, "out of memory");
  j->base.n = n;
  j->paths = calloc(n ? n : 1, sizeof(char *));
  j->caps = calloc(n ? n : 1, sizeof(size_t));
  j->base.out = calloc(n ? n : 1, sizeof(int32_t));
  j->base.out_len = n;
  j->slab = slab;
  j->want_xattrs = want_xattrs;
  j->direct = direct;
  j->slots = direct;
  size_t total = 0;
  const char *bad = j->paths && j->caps && j->base.out ? NULL : "out of memory";
  if (!bad && direct && ((uintptr_t)slab & (SLOT_ALIGN - 1)))
    bad = "with direct, the slab must start at a 4096-aligned address (allocAligned)";
  for (uint32_t i = 0; i < n && !bad; i++) {
    napi_value p, c;
    int64_t cap;
    if (napi_get_element(env, argv[0], i, &p) != napi_ok || !(j->paths[i] = dup_string(env, p))) bad = "paths must be strings";
    else if (napi_get_element(env, argv[1], i, &c) != napi_ok || napi_get_value_int64(env, c, &cap) != napi_ok ||
             cap < 0 || cap > (1 << 30))
      bad = "caps must be byte counts";
    else {
      j->caps[i] = (size_t)cap;
      total += slot_bytes(j, (size_t)cap);
    }
  }
  if (!bad && total > slab_len) bad = "the slab is smaller than the files' slots add up to";
  if (bad) {
    for (uint32_t i = 0; i < n && j->paths; i++) free(j->paths[i]);
    free(j->paths);
    free(j->caps);
    free(j->base.out);
    free(j);
    return fail_type(env, bad);
  }
  napi_create_array_with_length(env, 1, &keep);
  napi_set_element(env, keep, 0, argv[2]);
  napi_create_reference(env, keep, 1, &j->base.keep);
  return ferry_job_queue(env, j, "ferry.readFiles", read_execute, read_complete);
}

/* --------------------------------------------------------------- writeFiles */

typedef struct {
  char *tmp, *dst;
  const uint8_t *data;
  size_t len;
  int64_t uid, gid, mode, msec, mnsec;
  bool in_place;
  size_t nx;
  char **xnames;
  const void **xvalues;
  size_t *xlens;
} write_item;

typedef struct {
  job_base base;
  write_item *items;
} write_job;

static void write_one(write_item *it, int32_t *out) {
  out[0] = STEP_OK;
  out[1] = 0;
  out[2] = -1;
  out[3] = 0;
  out[4] = 0;
  int step = STEP_OPEN;
  const char *made = it->tmp; /* the file this item creates (removed if it fails) */
  int fd = -1;
  if (it->in_place) {
    fd = open(it->dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd >= 0) {
      made = it->dst;
      out[4] = 1;
    } else if (errno != EEXIST) {
      goto fail;
    }
  }
  if (fd < 0) fd = open(it->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) goto fail;
  step = STEP_WRITE;
  for (size_t done = 0; done < it->len;) {
    ssize_t w = pwrite(fd, it->data + done, it->len - done, (off_t)done);
    if (w < 0) {
      if (errno == EINTR) continue;
      goto fail_open;
    }
    done += (size_t)w;
  }
  step = STEP_CHOWN;
  struct stat st;
  /* a new file's owner is often the one wanted (a target run as root, root's files):
   * fchown would still journal the inode */
  if ((fstat(fd, &st) < 0 || st.st_uid != (uid_t)it->uid || st.st_gid != (gid_t)it->gid) &&
      fchown(fd, (uid_t)it->uid, (gid_t)it->gid) < 0)
    goto fail_open;
  step = STEP_CHMOD; /* after chown, which clears set-id bits */
  if (fchmod(fd, (mode_t)it->mode) < 0) goto fail_open;
  for (size_t x = 0; x < it->nx; x++) { /* after chown, which clears security.capability */
    if (fsetxattr(fd, it->xnames[x], it->xvalues[x], it->xlens[x], 0) < 0 && out[2] < 0) {
      out[2] = (int32_t)x;
      out[3] = errno;
    }
  }
  step = STEP_TIMES;
  struct timespec ts[2] = {{(time_t)it->msec, (long)it->mnsec}, {(time_t)it->msec, (long)it->mnsec}};
  if (futimens(fd, ts) < 0) goto fail_open;
  step = STEP_CLOSE;
  if (close(fd) < 0) {
    fd = -1;
    goto fail;
  }
  fd = -1;
  if (made == it->dst) return;
  step = STEP_RENAME;
  if (rename(it->tmp, it->dst) < 0) {
    int e = errno;
    if (e == EISDIR || e == ENOTEMPTY || e == EEXIST || e == ENOTDIR) {
      out[0] = STEP_PLACE;
      out[1] = e;
      return;
    }
    errno = e;
    goto fail;
  }
  return;
fail_open: {
  int e = errno;
  close(fd);
  errno = e;
}
fail: {
  int e = errno;
  if (step != STEP_OPEN) unlink(made);
  out[0] = step;
  out[1] = e;
}
}

static void write_execute(napi_env env, void *data) {
  ferry_job_thread_setup();
  write_job *j = data;
  int stopped = 0;
  for (size_t i = 0; i < j->base.n; i++) {
    int32_t *out = j->base.out + i * WRITE_RESULT_INTS;
    if (stopped) {
      out[0] = STEP_SKIPPED;
      out[1] = 0;
      out[2] = -1;
      out[3] = 0;
      out[4] = 0;
      continue;
    }
    write_one(&j->items[i], out);
    if (out[0] != STEP_OK && out[0] != STEP_PLACE) stopped = 1;
  }
}

static void free_items(write_item *items, size_t n) {
  if (!items) return;
  for (size_t i = 0; i < n; i++) {
    free(items[i].tmp);
    free(items[i].dst);
    for (size_t x = 0; x < items[i].nx; x++) free(items[i].xnames[x]);
    free(items[i].xnames);
    free(items[i].xvalues);
    free(items[i].xlens);
  }
  free(items);
}

static void write_complete(napi_env env, napi_status status, void *data) {
  write_job *j = data;
  settle(env, &j->base, status);
  free_items(j->items, j->base.n);
  free(j->base.out);
  free(j);
}

/*
 * The property names of a write item, made once per writeFiles call: looking a property up
 * by a C string makes a new JS string each time (11 per file, a third of the call's cost).
 */
enum { K_TMP, K_DST, K_DATA, K_IN_PLACE, K_UID, K_GID, K_MODE, K_MSEC, K_MNSEC, K_XNAMES, K_XVALUES, K_COUNT };
static const char *const ITEM_KEYS[K_COUNT] = {"tmp",      "dst",      "data",       "inPlace",
                                               "uid",      "gid",      "mode",       "mtimeSec",
                                               "mtimeNsec", "xattrNames", "xattrValues"};

static int item_keys(napi_env env, napi_value keys[K_COUNT]) {
  for (int k = 0; k < K_COUNT; k++)
    if (napi_create_string_utf8(env, ITEM_KEYS[k], NAPI_AUTO_LENGTH, &keys[k]) != napi_ok) return -1;
  return 0;
}

static int prop(napi_env env, napi_value obj, napi_value key, napi_value *out) {
  return napi_get_property(env, obj, key, out) == napi_ok ? 0 : -1;
}

static int prop_i64(napi_env env, napi_value obj, napi_value key, int64_t *out) {
  napi_value v;
  return prop(env, obj, key, &v) || napi_get_value_int64(env, v, out) != napi_ok ? -1 : 0;
}

/* The property, or NULL when the object does not have it (or it is undefined). */
static napi_value optional_prop(napi_env env, napi_value obj, napi_value key, int *err) {
  napi_value v;
  napi_valuetype t;
  if (prop(env, obj, key, &v) || napi_typeof(env, v, &t) != napi_ok) {
    *err = 1;
    return NULL;
  }
  return t == napi_undefined ? NULL : v;
}

/* Fills one item from its JS object; returns an error message or NULL. */
static const char *parse_item(napi_env env, napi_value obj, const napi_value keys[K_COUNT], write_item *it) {
  napi_value v;
  void *buf;
  int err = 0;
  if (prop(env, obj, keys[K_TMP], &v) || !(it->tmp = dup_string(env, v))) return "tmp must be a path";
  if (prop(env, obj, keys[K_DST], &v) || !(it->dst = dup_string(env, v))) return "dst must be a path";
  if (prop(env, obj, keys[K_DATA], &v) || get_buffer(env, v, &buf, &it->len)) return "data must be a Buffer";
  it->data = buf;
  napi_value in_place = optional_prop(env, obj, keys[K_IN_PLACE], &err);
  if (err || (in_place && napi_get_value_bool(env, in_place, &it->in_place) != napi_ok))
    return "inPlace must be a boolean";
  if (prop_i64(env, obj, keys[K_UID], &it->uid) || prop_i64(env, obj, keys[K_GID], &it->gid) ||
      prop_i64(env, obj, keys[K_MODE], &it->mode) || prop_i64(env, obj, keys[K_MSEC], &it->msec) ||
      prop_i64(env, obj, keys[K_MNSEC], &it->mnsec))
    return "uid, gid, mode, mtimeSec and mtimeNsec must be numbers";
  if (it->uid < 0 || it->uid > UINT32_MAX || it->gid < 0 || it->gid > UINT32_MAX || it->mode < 0 ||
      it->mode > 07777 || it->mnsec < 0 || it->mnsec > 999999999)
    return "uid, gid, mode or mtimeNsec out of range";
  if (it->in_place && it->mode == 0) return "inPlace needs a mode other than 0 (0 marks an unfinished file)";
  napi_value names = optional_prop(env, obj, keys[K_XNAMES], &err), values;
  if (err) return "xattrNames and xattrValues must be arrays of equal length";
  if (!names) return NULL;
  uint32_t nn = 0, nv = 0;
  if (prop(env, obj, keys[K_XVALUES], &values) ||
      napi_get_array_length(env, names, &nn) != napi_ok || napi_get_array_length(env, values, &nv) != napi_ok ||
      nn != nv || nn > MAX_XATTRS)
    return "xattrNames and xattrValues must be arrays of equal length";
  it->xnames = calloc(nn ? nn : 1, sizeof(char *));
  it->xvalues = calloc(nn ? nn : 1, sizeof(void *));
  it->xlens = calloc(nn ? nn : 1, sizeof(size_t));
  if (!it->xnames || !it->xvalues || !it->xlens) return "out of memory";
  for (uint32_t x = 0; x < nn; x++) {
    napi_value n, b;
    void *vb;
    if (napi_get_element(env, names, x, &n) != napi_ok || !(it->xnames[x] = dup_string(env, n))) {
      it->nx = x;
      return "xattr names must be strings";
    }
    it->nx = x + 1;
    if (napi_get_element(env, values, x, &b) != napi_ok || get_buffer(env, b, &vb, &it->xlens[x]))
      return "xattr values must be Buffers";
    it->xvalues[x] = vb;
  }
  return NULL;
}

static napi_value write_files(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool is_array = false;
  uint32_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 ||
      napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &n) != napi_ok || n > MAX_BATCH)
    return fail_type(env, "expected (items: object[])");
  write_job *j = calloc(1, sizeof *j);
  if (!j) return fail_type(env, "out of memory");
  j->base.n = n;
  j->items = calloc(n ? n : 1, sizeof(write_item));
  j->base.out = calloc(n ? n * WRITE_RESULT_INTS : 1, sizeof(int32_t));
  j->base.out_len = (size_t)n * WRITE_RESULT_INTS;
  napi_value keys[K_COUNT];
  const char *bad = !j->items || !j->base.out ? "out of memory" : item_keys(env, keys) ? "cannot make keys" : NULL;
  for (uint32_t i = 0; i < n && !bad; i++) {
    napi_value obj;
    if (napi_get_element(env, argv[0], i, &obj) != napi_ok) bad = "items must be objects";
    else bad = parse_item(env, obj, keys, &j->items[i]);
  }
  if (bad) {
    free_items(j->items, n);
    free(j->base.out);
    free(j);
    return fail_type(env, bad);
  }
  napi_create_reference(env, argv[0], 1, &j->base.keep);
  return ferry_job_queue(env, j, "ferry.writeFiles", write_execute, write_complete);
}

/* ----------------------------------------------------------------- readDir */

/*
 * readDir(dir: string)
 *     -> Promise<{ errno: number, names: (string | Buffer)[], fields: BigInt64Array }>:
 * lists a directory (without . and ..: each name a string when it is valid UTF-8, else its
 * raw bytes as a Buffer) and fstatat()s every name without following symlinks, in the
 * thread pool, so that a scan keeps the next directories loading while it works through
 * the current one. fields: 12 per name (mode, uid, gid, size, blocks, ino, dev, nlink,
 * rdev, atimeNs, mtimeNs, ctimeNs); a name that cannot be stated has mode -errno. errno is
 * set when the directory itself cannot be opened or read -- ELOOP (or ENOTDIR) when a
 * symlink is anywhere in its path (ferry_open_source): give it canonical paths.
 */
#include <dirent.h>

#define DIR_FIELDS 12

/*
 * A directory job's names, packed: each NUL-terminated in one growing buffer, found by its
 * offset. One allocation for all the names instead of one each: a directory of a million
 * names left ~50 MiB per thread-pool thread in glibc's arenas after it was freed (the agent
 * peaked at 350 MiB scanning such a directory with three listings of it); a buffer this
 * large is mapped and unmapped whole.
 */
typedef struct {
  char *pool;
  size_t pool_len, pool_cap;
  size_t *off;
  size_t count, cap;
} name_pool;

static int pool_add(name_pool *p, const char *name, size_t len) {
  if (p->count == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 64;
    size_t *grown = realloc(p->off, cap * sizeof(size_t));
    if (!grown) return -1;
    p->off = grown;
    p->cap = cap;
  }
  if (p->pool_len + len + 1 > p->pool_cap) {
    size_t cap = p->pool_cap ? p->pool_cap * 2 : 4096;
    while (cap < p->pool_len + len + 1) cap *= 2;
    char *grown = realloc(p->pool, cap);
    if (!grown) return -1;
    p->pool = grown;
    p->pool_cap = cap;
  }
  memcpy(p->pool + p->pool_len, name, len);
  p->pool[p->pool_len + len] = 0;
  p->off[p->count++] = p->pool_len;
  p->pool_len += len + 1;
  return 0;
}

static inline const char *pool_name(const name_pool *p, size_t i) {
  return p->pool + p->off[i];
}

static void pool_free(name_pool *p) {
  free(p->pool);
  free(p->off);
}

typedef struct {
  job_base base;
  char *dir;
  int err;
  name_pool names;
  /* readDir: stat the first `stat_limit` names (sorted) only; statNames: every name */
  size_t stat_limit, stated;
  int64_t *fields;
} dir_job;

static __thread const char *sorting_pool;
static int by_bytes(const void *a, const void *b) {
  return strcmp(sorting_pool + *(const size_t *)a, sorting_pool + *(const size_t *)b);
}

/* fstatat()s the first n names in dfd into fields (DIR_FIELDS each; field 0 = -errno on failure). */
static void stat_names(int dfd, const name_pool *names, size_t n, int64_t *fields) {
  for (size_t i = 0; i < n; i++) {
    int64_t *f = fields + i * DIR_FIELDS;
    struct stat st;
    if (fstatat(dfd, pool_name(names, i), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      f[0] = -(int64_t)errno;
      continue;
    }
    f[0] = st.st_mode;
    f[1] = st.st_uid;
    f[2] = st.st_gid;
    f[3] = st.st_size;
    f[4] = st.st_blocks;
    f[5] = (int64_t)st.st_ino;
    f[6] = (int64_t)st.st_dev;
    f[7] = (int64_t)st.st_nlink;
    f[8] = (int64_t)st.st_rdev;
    f[9] = (int64_t)st.st_atim.tv_sec * 1000000000 + st.st_atim.tv_nsec;
    f[10] = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    f[11] = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
  }
}

static void dir_execute(napi_env env, void *data) {
  ferry_job_thread_setup();
  dir_job *j = data;
  int dfd = ferry_open_source(j->dir, O_DIRECTORY); /* through no symlink, like the files */
  if (dfd < 0) {
    j->err = errno;
    return;
  }
  DIR *d = fdopendir(dfd);
  if (!d) {
    j->err = errno;
    close(dfd);
    return;
  }
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) continue;
    if (pool_add(&j->names, e->d_name, strlen(e->d_name)) < 0) {
      j->err = ENOMEM;
      break;
    }
    errno = 0;
  }
  if (!j->err && errno) j->err = errno;
  /* in byte order, here rather than on the event loop */
  size_t count = j->names.count;
  if (!j->err && count > 1) {
    sorting_pool = j->names.pool;
    qsort(j->names.off, count, sizeof(size_t), by_bytes);
  }
  j->stated = count < j->stat_limit ? count : j->stat_limit;
  if (!j->err) {
    j->fields = calloc(j->stated ? j->stated * DIR_FIELDS : 1, sizeof(int64_t));
    if (!j->fields) j->err = ENOMEM;
  }
  if (!j->err) stat_names(dfd, &j->names, j->stated, j->fields);
  closedir(d);
}

/* statNames: the directory opened through no symlink, then one fstatat per name */
static void stat_execute(napi_env env, void *data) {
  ferry_job_thread_setup();
  dir_job *j = data;
  int dfd = ferry_open_source(j->dir, O_DIRECTORY);
  if (dfd < 0) {
    j->err = errno;
    return;
  }
  j->stated = j->names.count;
  j->fields = calloc(j->stated ? j->stated * DIR_FIELDS : 1, sizeof(int64_t));
  if (!j->fields) j->err = ENOMEM;
  else stat_names(dfd, &j->names, j->stated, j->fields);
  close(dfd);
}

/*
 * Whether s[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF) -- exactly the names a decoder gives back unchanged, so that a string made
 * from them is the name itself, never one with replacement characters.
 */
int ferry_utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t more;
    unsigned lo = 0x80, hi = 0xbf; /* the allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) more = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      more = 2;
      if (c == 0xe0) lo = 0xa0; /* overlong below */
      if (c == 0xed) hi = 0x9f; /* surrogates above */
    } else if (c >= 0xf0 && c <= 0xf4) {
      more = 3;
      if (c == 0xf0) lo = 0x90; /* overlong below */
      if (c == 0xf4) hi = 0x8f; /* beyond U+10FFFF above */
    } else
      return 0;
    if (n - i <= more) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k <= more; k++)
      if ((s[i + k] & 0xc0) != 0x80) return 0;
    i += more + 1;
  }
  return 1;
}

static void free_dir_job(dir_job *j) {
  free(j->fields);
  pool_free(&j->names);
  free(j->dir);
  free(j);
}

/* Settles a readDir job ({errno, names, fields, rest}) or, with `stat_only`, a statNames job
 * ({errno, fields}): fields and names for the `stated` first names; `rest`, the names after
 * them, each followed by a NUL, in one Buffer (null when there are none). */
static void settle_dir_job(napi_env env, napi_status status, dir_job *j, int stat_only) {
  napi_value result, errv, names, ab, fields, rest;
  void *mem = NULL;
  int ok = status == napi_ok;
  size_t stated = j->err ? 0 : j->stated;
  size_t n = stat_only ? 0 : stated;
  size_t count = j->names.count;
  size_t rest_bytes = 0;
  for (size_t i = stated; !stat_only && !j->err && i < count; i++) rest_bytes += strlen(pool_name(&j->names, i)) + 1;
  if (ok && rest_bytes) {
    char *at = NULL;
    ok = napi_create_buffer(env, rest_bytes, (void **)&at, &rest) == napi_ok;
    for (size_t i = stated; ok && i < count; i++) {
      const char *name = pool_name(&j->names, i);
      size_t len = strlen(name) + 1;
      memcpy(at, name, len);
      at += len;
    }
  } else if (ok)
    ok = napi_get_null(env, &rest) == napi_ok;
  ok = ok && napi_create_object(env, &result) == napi_ok && napi_create_int32(env, j->err, &errv) == napi_ok &&
       napi_create_array_with_length(env, n, &names) == napi_ok &&
       napi_create_arraybuffer(env, stated * DIR_FIELDS * sizeof(int64_t), &mem, &ab) == napi_ok &&
       napi_create_typedarray(env, napi_bigint64_array, stated * DIR_FIELDS, ab, 0, &fields) == napi_ok;
  for (size_t i = 0; ok && i < n; i++) {
    napi_value v;
    const char *name = pool_name(&j->names, i);
    size_t len = strlen(name);
    /* a string for the scan to use as is: no Buffer, decode and re-encode per name */
    ok = (ferry_utf8_valid((const unsigned char *)name, len) ? napi_create_string_utf8(env, name, len, &v)
                                                              : napi_create_buffer_copy(env, len, name, NULL, &v)) ==
             napi_ok &&
         napi_set_element(env, names, (uint32_t)i, v) == napi_ok;
  }
  if (ok && stated) memcpy(mem, j->fields, stated * DIR_FIELDS * sizeof(int64_t));
  ok = ok && napi_set_named_property(env, result, "errno", errv) == napi_ok &&
       (stat_only || (napi_set_named_property(env, result, "names", names) == napi_ok &&
                      napi_set_named_property(env, result, "rest", rest) == napi_ok)) &&
       napi_set_named_property(env, result, "fields", fields) == napi_ok;
  ferry_job_finish(env, &j->base, ok ? result : NULL, stat_only ? "statNames failed" : "readDir failed");
  free_dir_job(j);
}

static void dir_complete(napi_env env, napi_status status, void *data) {
  settle_dir_job(env, status, data, 0);
}

static void stat_complete(napi_env env, napi_status status, void *data) {
  settle_dir_job(env, status, data, 1);
}

/* readDir(dir: string, statLimit?: number): see FerryFs.readDir */
static napi_value read_dir(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || argc > 2)
    return fail_type(env, "expected (dir: string, statLimit?: number)");
  dir_job *j = calloc(1, sizeof *j);
  if (!j) return fail_type(env, "out of memory");
  j->stat_limit = SIZE_MAX;
  napi_valuetype t = napi_undefined;
  if (argc == 2 && napi_typeof(env, argv[1], &t) == napi_ok && t != napi_undefined) {
    int64_t limit = -1;
    if (napi_get_value_int64(env, argv[1], &limit) != napi_ok || limit < 0) {
      free(j);
      return fail_type(env, "expected (dir: string, statLimit?: number)");
    }
    j->stat_limit = (size_t)limit;
  }
  if (!(j->dir = dup_string(env, argv[0]))) {
    free(j);
    return fail_type(env, "expected (dir: string, statLimit?: number)");
  }
  return ferry_job_queue(env, j, "ferry.readDir", dir_execute, dir_complete);
}

/* statNames(dir: string, names: string[]): see FerryFs.statNames */
static napi_value stat_names_js(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  bool is_array = false;
  uint32_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &n) != napi_ok)
    return fail_type(env, "expected (dir: string, names: string[])");
  dir_job *j = calloc(1, sizeof *j);
  if (!j) return fail_type(env, "out of memory");
  const char *bad = NULL;
  if (!(j->dir = dup_string(env, argv[0]))) bad = "expected (dir: string, names: string[])";
  for (uint32_t i = 0; !bad && i < n; i++) {
    napi_value v;
    char *one = NULL;
    if (napi_get_element(env, argv[1], i, &v) != napi_ok || !(one = dup_string(env, v)) || strchr(one, '/'))
      bad = "names must be strings without '/'";
    else if (pool_add(&j->names, one, strlen(one)) < 0)
      bad = "out of memory";
    free(one);
  }
  if (bad) {
    free_dir_job(j);
    return fail_type(env, bad);
  }
  return ferry_job_queue(env, j, "ferry.statNames", stat_execute, stat_complete);
}

/* fdXattrs(fd: number) -> Buffer: the extended attributes of an open file, read from its
 * descriptor (flistxattr, fgetxattr), as a blob in readFiles' format for one file
 * (parseXattrBlob(blob, 1)). Reading them from the descriptor the content is read from means
 * they belong to that file, whatever has been swapped in at its path since. Synchronous. */
static napi_value fd_xattrs(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "expected (fd: number)");
    return NULL;
  }
  return ferry_xattr_blob(env, fd, NULL, "fdXattrs");
}

/* One entry's attributes as a blob (see fdXattrs): of fd, or of the entry at `path` itself. */
napi_value ferry_xattr_blob(napi_env env, int fd, const char *path, const char *what) {
  read_job j;
  memset(&j, 0, sizeof j);
  char *names = malloc(XATTR_LIST_MAX);
  uint8_t *value = malloc(XATTR_SIZE_MAX);
  if (names && value) read_xattrs(&j, fd, path, names, value);
  free(names);
  free(value);
  napi_value out = NULL;
  if (!names || !value || j.xfailed || j.xlen < 4) {
    free(j.xbuf);
    char msg[64];
    snprintf(msg, sizeof msg, "%s: out of memory", what);
    napi_throw_error(env, "ENOMEM", msg);
    return NULL;
  }
  void *data;
  if (napi_create_buffer_copy(env, j.xlen, j.xbuf, &data, &out) != napi_ok) out = NULL;
  free(j.xbuf);
  return out;
}

void ferry_batch_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"fdXattrs", NULL, fd_xattrs, NULL, NULL, NULL, napi_default, NULL},
    {"openSourceMode", NULL, open_source_mode, NULL, NULL, NULL, napi_default, NULL},
    {"readDir", NULL, read_dir, NULL, NULL, NULL, napi_default, NULL},
    {"readFiles", NULL, read_files, NULL, NULL, NULL, napi_default, NULL},
    {"statNames", NULL, stat_names_js, NULL, NULL, NULL, napi_default, NULL},
    {"writeFiles", NULL, write_files, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
