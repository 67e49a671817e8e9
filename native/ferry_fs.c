/*
 * ferry_fs: the Linux file-system calls that Node's fs module does not offer and a
 * faithful file-level copy needs: extended attributes (without following symlinks),
 * SEEK_DATA/SEEK_HOLE to find the data regions of sparse files, mknod for fifos and
 * device nodes, utimensat with nanosecond precision on links, and an open of a source file
 * that follows no symlink anywhere in its path.
 *
 * Contract: every function is synchronous, takes plain values, and on failure throws
 * an Error whose `code` is the errno name (e.g. "ENOENT"), like Node's own fs errors.
 */
#define _GNU_SOURCE
#include "jobs.h"
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#define PATH_MAX_BYTES 4096
#define XATTR_NAME_MAX_BYTES 256
#define XATTR_VALUE_MAX_BYTES 65536

static const char *errno_name(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EEXIST: return "EEXIST";
    case ENOTSUP: return "ENOTSUP";
    case ENODATA: return "ENODATA";
    case ERANGE: return "ERANGE";
    case ENXIO: return "ENXIO";
    case EINVAL: return "EINVAL";
    case ENOSPC: return "ENOSPC";
    case EBADF: return "EBADF";
    case ENOTDIR: return "ENOTDIR";
    case ELOOP: return "ELOOP";
    case E2BIG: return "E2BIG";
    case EROFS: return "EROFS";
    case EIO: return "EIO";
    default: return "EUNKNOWN";
  }
}

static napi_value throw_errno(napi_env env, const char *syscall, int e) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", syscall, strerror(e));
  napi_value code, message, error;
  napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_value errnum;
  napi_create_int32(env, -e, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_value sc;
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  napi_throw(env, error);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

/* Copies a JS string argument, or a Buffer's bytes (a path that is not valid UTF-8, see
 * src/native/os-path.ts), into buf; returns 0 on success. */
static int get_string(napi_env env, napi_value v, char *buf, size_t cap) {
  bool is_buf = false;
  if (napi_is_buffer(env, v, &is_buf) == napi_ok && is_buf) {
    void *data = NULL;
    size_t n = 0;
    if (napi_get_buffer_info(env, v, &data, &n) != napi_ok || n + 1 >= cap || memchr(data, 0, n)) return -1;
    memcpy(buf, data, n);
    buf[n] = 0;
    return 0;
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) return -1;
  if (len + 1 >= cap) return -1; /* truncated: refuse rather than act on a prefix */
  if (strlen(buf) != len) return -1; /* embedded NUL */
  return 0;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  return argc == want ? 0 : -1;
}

/* seekData(fd, offset) -> offset of next data at or after offset, or -1 when none. */
static napi_value seek_whence(napi_env env, napi_callback_info info, int whence) {
  napi_value argv[2];
  int32_t fd;
  int64_t off;
  if (get_args(env, info, 2, argv) || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &off) != napi_ok)
    return throw_type(env, "expected (fd: number, offset: number)");
  off_t r = lseek(fd, (off_t)off, whence);
  if (r < 0) {
    if (errno == ENXIO) r = -1;
    else return throw_errno(env, "lseek", errno);
  }
  napi_value out;
  napi_create_int64(env, (int64_t)r, &out);
  return out;
}
static napi_value seek_data(napi_env env, napi_callback_info info) { return seek_whence(env, info, SEEK_DATA); }
static napi_value seek_hole(napi_env env, napi_callback_info info) { return seek_whence(env, info, SEEK_HOLE); }

int ferry_open_source(const char *path, int flags); /* batch_io.c */

/* openSource(path) -> fd: a source file for reading, through no symlink (see
 * ferry_open_source in batch_io.c); O_NONBLOCK, so that a fifo swapped in since the scan
 * cannot stall the caller (the caller checks with fstat that it is a regular file). */
static napi_value open_source_file(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[PATH_MAX_BYTES];
  if (get_args(env, info, 1, argv) || get_string(env, argv[0], path, sizeof path))
    return throw_type(env, "expected (path: string)");
  int fd = ferry_open_source(path, O_NONBLOCK);
  if (fd < 0) return throw_errno(env, "open", errno);
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

/* Opens the parent directory of an absolute source path through no symlink
 * (ferry_open_source) and points *name at its last component, which it cuts off `path`'s
 * copy in `buf`. Returns the descriptor, or -1 with errno set (EINVAL: no last component). */
static int open_source_parent(const char *path, char *buf, size_t cap, const char **name) {
  if (snprintf(buf, cap, "%s", path) >= (int)cap) {
    errno = ENAMETOOLONG;
    return -1;
  }
  char *slash = strrchr(buf, '/');
  if (!slash || slash[1] == 0) {
    errno = EINVAL;
    return -1;
  }
  *name = slash + 1;
  if (slash == buf) return ferry_open_source("/", O_DIRECTORY);
  *slash = 0;
  return ferry_open_source(buf, O_DIRECTORY);
}

/* The one argument of a call on a source path (into path, PATH_MAX_BYTES), its parent opened
 * as open_source_parent does (parent, PATH_MAX_BYTES; *name its last component): the
 * descriptor, or -1 with the exception thrown (EINVAL, no last component, as `syscall`'s). */
static int parent_of_arg(napi_env env, napi_callback_info info, char *path, char *parent, const char **name,
                         const char *syscall) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv) || get_string(env, argv[0], path, PATH_MAX_BYTES)) {
    throw_type(env, "expected (path: string)");
    return -1;
  }
  int dfd = open_source_parent(path, parent, PATH_MAX_BYTES, name);
  if (dfd < 0) throw_errno(env, errno == EINVAL ? syscall : "open", errno);
  return dfd;
}

/* readlinkSource(path) -> Buffer: a symlink's target, read with readlinkat in its parent
 * directory opened through no symlink (ferry_open_source): a parent swapped for a symlink
 * since the scan fails with ELOOP instead of giving another symlink's target. EINVAL when
 * the path is no longer a symlink. */
static napi_value readlink_source(napi_env env, napi_callback_info info) {
  char path[PATH_MAX_BYTES], parent[PATH_MAX_BYTES];
  const char *name;
  int dfd = parent_of_arg(env, info, path, parent, &name, "readlinkat");
  if (dfd < 0) return NULL;
  char target[PATH_MAX_BYTES];
  ssize_t n = readlinkat(dfd, name, target, sizeof target);
  int e = errno;
  close(dfd);
  if (n < 0) return throw_errno(env, "readlinkat", e);
  if ((size_t)n >= sizeof target) return throw_errno(env, "readlinkat", ENAMETOOLONG);
  void *data;
  napi_value buf;
  napi_create_buffer_copy(env, (size_t)n, target, &data, &buf);
  return buf;
}

/* nodeXattrs(path) -> Buffer: the extended attributes of the entry at an absolute source
 * path that is not opened for its content (a symlink, a device node, a fifo, a socket), in
 * fdXattrs' blob format. Its parent is opened through no symlink (ferry_open_source) and the
 * entry named inside that descriptor, /proc/self/fd/N/NAME, with the l*xattr calls, which do
 * not follow a final symlink: a parent swapped for a symlink since the scan fails with ELOOP
 * instead of lending the entry another entry's attributes (an SELinux label, say). Where
 * /proc is not mounted, by path as before. An entry without attributes, or on a file system
 * that keeps none, gives count 0. */
static napi_value node_xattrs(napi_env env, napi_callback_info info) {
  char path[PATH_MAX_BYTES], parent[PATH_MAX_BYTES];
  const char *name;
  int dfd = parent_of_arg(env, info, path, parent, &name, "nodeXattrs");
  if (dfd < 0) return NULL;
  char inside[PATH_MAX_BYTES + 32];
  snprintf(inside, sizeof inside, "/proc/self/fd/%d", dfd);
  struct stat st;
  int viaproc = stat(inside, &st) == 0 && S_ISDIR(st.st_mode);
  if (viaproc) snprintf(inside, sizeof inside, "/proc/self/fd/%d/%s", dfd, name);
  napi_value out = ferry_xattr_blob(env, -1, viaproc ? inside : path, "nodeXattrs");
  close(dfd);
  return out;
}

/* llistxattr(path) -> (string | Buffer)[]: a name that is not valid UTF-8 as a Buffer of its bytes */
static napi_value list_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[PATH_MAX_BYTES];
  if (get_args(env, info, 1, argv) || get_string(env, argv[0], path, sizeof path))
    return throw_type(env, "expected (path: string)");
  ssize_t n = llistxattr(path, NULL, 0);
  if (n < 0) return throw_errno(env, "llistxattr", errno);
  char *names = malloc(n > 0 ? (size_t)n : 1);
  if (!names) return throw_errno(env, "llistxattr", ENOMEM);
  n = llistxattr(path, names, (size_t)n);
  if (n < 0) {
    int e = errno;
    free(names);
    return throw_errno(env, "llistxattr", e);
  }
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t i = 0;
  for (ssize_t p = 0; p < n;) {
    size_t l = strnlen(names + p, (size_t)(n - p));
    napi_value s;
    if (ferry_utf8_valid((const unsigned char *)names + p, l)) napi_create_string_utf8(env, names + p, l, &s);
    else {
      void *data;
      napi_create_buffer_copy(env, l, names + p, &data, &s); /* not UTF-8: its bytes */
    }
    napi_set_element(env, arr, i++, s);
    p += (ssize_t)l + 1;
  }
  free(names);
  return arr;
}

/* lgetxattr(path, name) -> Buffer */
static napi_value get_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[PATH_MAX_BYTES], name[XATTR_NAME_MAX_BYTES];
  if (get_args(env, info, 2, argv) || get_string(env, argv[0], path, sizeof path) ||
      get_string(env, argv[1], name, sizeof name))
    return throw_type(env, "expected (path: string, name: string)");
  ssize_t n = lgetxattr(path, name, NULL, 0);
  if (n < 0) return throw_errno(env, "lgetxattr", errno);
  void *data;
  napi_value buf;
  napi_create_buffer(env, n > 0 ? (size_t)n : 0, &data, &buf);
  if (n > 0) {
    ssize_t m = lgetxattr(path, name, data, (size_t)n);
    if (m < 0) return throw_errno(env, "lgetxattr", errno);
    if (m != n) return throw_errno(env, "lgetxattr", ERANGE);
  }
  return buf;
}

/* lsetxattr(path, name, value: Buffer) */
static napi_value set_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char path[PATH_MAX_BYTES], name[XATTR_NAME_MAX_BYTES];
  void *data;
  size_t len;
  bool is_buf = false;
  if (get_args(env, info, 3, argv) || get_string(env, argv[0], path, sizeof path) ||
      get_string(env, argv[1], name, sizeof name) || napi_is_buffer(env, argv[2], &is_buf) != napi_ok || !is_buf ||
      napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok)
    return throw_type(env, "expected (path: string, name: string, value: Buffer)");
  if (len > XATTR_VALUE_MAX_BYTES) return throw_errno(env, "lsetxattr", E2BIG);
  if (lsetxattr(path, name, data, len, 0) < 0) return throw_errno(env, "lsetxattr", errno);
  return NULL;
}

/* lremovexattr(path, name) */
static napi_value remove_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[PATH_MAX_BYTES], name[XATTR_NAME_MAX_BYTES];
  if (get_args(env, info, 2, argv) || get_string(env, argv[0], path, sizeof path) ||
      get_string(env, argv[1], name, sizeof name))
    return throw_type(env, "expected (path: string, name: string)");
  if (lremovexattr(path, name) < 0) return throw_errno(env, "lremovexattr", errno);
  return NULL;
}

/* mknod(path, mode, major, minor): fifos, sockets and device nodes. */
static napi_value make_node(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char path[PATH_MAX_BYTES];
  uint32_t mode, major_n, minor_n;
  if (get_args(env, info, 4, argv) || get_string(env, argv[0], path, sizeof path) ||
      napi_get_value_uint32(env, argv[1], &mode) != napi_ok || napi_get_value_uint32(env, argv[2], &major_n) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &minor_n) != napi_ok)
    return throw_type(env, "expected (path: string, mode: number, major: number, minor: number)");
  if (mknod(path, (mode_t)mode, makedev(major_n, minor_n)) < 0) return throw_errno(env, "mknod", errno);
  return NULL;
}

/* lutimes(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec): never follows a final symlink. */
static napi_value set_times(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char path[PATH_MAX_BYTES];
  int64_t as, ans, ms, mns;
  if (get_args(env, info, 5, argv) || get_string(env, argv[0], path, sizeof path) ||
      napi_get_value_int64(env, argv[1], &as) != napi_ok || napi_get_value_int64(env, argv[2], &ans) != napi_ok ||
      napi_get_value_int64(env, argv[3], &ms) != napi_ok || napi_get_value_int64(env, argv[4], &mns) != napi_ok)
    return throw_type(env, "expected (path: string, atimeSec, atimeNsec, mtimeSec, mtimeNsec)");
  if (ans < 0 || ans > 999999999 || mns < 0 || mns > 999999999) return throw_errno(env, "utimensat", EINVAL);
  struct timespec ts[2] = {{(time_t)as, (long)ans}, {(time_t)ms, (long)mns}};
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0) return throw_errno(env, "utimensat", errno);
  return NULL;
}

void ferry_batch_init(napi_env env, napi_value exports); /* batch_io.c */
void ferry_direct_init(napi_env env, napi_value exports); /* direct_io.c */
void ferry_rolling_init(napi_env env, napi_value exports); /* rolling.c */

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_default, NULL},
    {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_default, NULL},
    {"listXattr", NULL, list_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"getXattr", NULL, get_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"setXattr", NULL, set_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"removeXattr", NULL, remove_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"mknod", NULL, make_node, NULL, NULL, NULL, napi_default, NULL},
    {"lutimes", NULL, set_times, NULL, NULL, NULL, napi_default, NULL},
    {"openSource", NULL, open_source_file, NULL, NULL, NULL, napi_default, NULL},
    {"readlinkSource", NULL, readlink_source, NULL, NULL, NULL, napi_default, NULL},
    {"nodeXattrs", NULL, node_xattrs, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  ferry_batch_init(env, exports);
  ferry_direct_init(env, exports);
  ferry_rolling_init(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
