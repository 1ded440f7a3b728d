/*
 * bitback's one native addon: the few system calls Node.js does not offer and that a disk tool
 * needs. Node-API only (no dependency), built by `npm install` through node-gyp.
 *
 *   seekData(fd, offset) -> offset of the next data at or after `offset`, or -1 past the last data
 *   seekHole(fd, offset) -> offset of the next hole at or after `offset` (the file end counts)
 *   writeBack(fd, data, offset, length, evictOffset, evictLength) -> Promise<void>
 *   setLock(fd, start, length, mode) -> undefined ('read' | 'write' | 'unlock')
 *   testLock(fd, start, length, mode) -> null | { mode, start, length, pid }
 *
 * lseek(2) SEEK_DATA / SEEK_HOLE, which `qemu-img` uses to skip holes of sparse raw files. The
 * file position changes; bitback only does positioned I/O, so that is harmless. Errors are
 * thrown as Error objects whose `code` is the errno name (ENXIO "past the end" is not an error
 * for seekData: it returns -1).
 *
 * writeBack runs on the libuv thread pool: it writes `data` (a Uint8Array of `length` bytes, or
 * null to write nothing) at `offset` with pwrite(2), then starts the writeback of
 * `[offset, offset + length)` with sync_file_range(2) SYNC_FILE_RANGE_WRITE; then, when
 * evictLength > 0, it waits until `[evictOffset, evictOffset + evictLength)` is written back
 * (WAIT_BEFORE | WRITE | WAIT_AFTER) and drops those pages from the page cache (posix_fadvise
 * POSIX_FADV_DONTNEED). This is how nbdcopy writes a file: the dirty data stays a few MiB, written
 * back while the copy goes on, and the page cache does not fill with data nobody reads again. One
 * job does it all, so a write costs one trip to the thread pool. It makes nothing durable (no
 * metadata, no disk cache flush): fdatasync at the end still does that. The promise rejects with
 * an Error whose `code` is the errno name (EIO for a failed writeback, ENOSPC...) and whose
 * `syscall` names the call that failed (pwrite, sync_file_range, posix_fadvise).
 *
 * setLock and testLock are fcntl(2) open file description locks (F_OFD_SETLK, F_OFD_GETLK), the
 * byte-range locks QEMU's file-posix driver takes on images (image-lock.ts). OFD locks belong to
 * the open file description, not to the process: two open() calls of one file in one process
 * conflict like two processes do, a dup()ed descriptor shares the locks, and closing the last
 * descriptor of the description releases them. setLock never waits: a conflicting lock makes it
 * throw an Error with code EAGAIN (or EACCES); EINVAL means the kernel has no OFD locks. testLock
 * asks whether a lock of `mode` could be taken: null when it could (locks of the same open file
 * description never conflict), else one conflicting lock. Its `pid` is -1 for an OFD lock (the
 * kernel does not know which process holds one) and the holder's pid for a classic POSIX lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>

static napi_value throw_errno(napi_env env, int err, const char *what) {
  const char *name = strerrorname_np(err);
  char message[256];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_throw_error(env, name != NULL ? name : "EIO", message);
  return NULL;
}

static napi_value seek(napi_env env, napi_callback_info info, int whence, const char *what) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  double offset;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[1], &offset) != napi_ok || offset < 0 || offset > 9007199254740991.0) {
    napi_throw_type_error(env, "EINVAL", "expected (fd, offset) with a non-negative safe integer offset");
    return NULL;
  }
  off_t result = lseek(fd, (off_t)offset, whence);
  napi_value out;
  if (result < 0) {
    if (errno == ENXIO && whence == SEEK_DATA) {
      napi_create_double(env, -1, &out);
      return out;
    }
    return throw_errno(env, errno, what);
  }
  napi_create_double(env, (double)result, &out);
  return out;
}

static napi_value seek_data(napi_env env, napi_callback_info info) {
  return seek(env, info, SEEK_DATA, "lseek(SEEK_DATA)");
}

static napi_value seek_hole(napi_env env, napi_callback_info info) {
  return seek(env, info, SEEK_HOLE, "lseek(SEEK_HOLE)");
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref data_ref; /* keeps `data` alive while the job runs */
  const uint8_t *data;
  size_t data_length;
  int fd;
  off_t offset, length, evict_offset, evict_length;
  int error;
  const char *what;    /* the failed call, for the message */
  const char *syscall; /* its name, as the error's `syscall` property (like Node's errors) */
} write_back_job;

static void write_back_execute(napi_env env, void *arg) {
  (void)env;
  write_back_job *job = arg;
  job->error = 0;
  for (size_t done = 0; done < job->data_length;) {
    ssize_t n = pwrite(job->fd, job->data + done, job->data_length - done, job->offset + (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      job->error = n < 0 ? errno : EIO;
      job->what = job->syscall = "pwrite";
      return;
    }
    done += (size_t)n;
  }
  if (job->length > 0 && sync_file_range(job->fd, job->offset, job->length, SYNC_FILE_RANGE_WRITE) != 0) {
    job->error = errno;
    job->what = "sync_file_range(SYNC_FILE_RANGE_WRITE)";
    job->syscall = "sync_file_range";
    return;
  }
  if (job->evict_length <= 0) return;
  if (sync_file_range(job->fd, job->evict_offset, job->evict_length,
                      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
    job->error = errno;
    job->what = "sync_file_range(SYNC_FILE_RANGE_WAIT_AFTER)";
    job->syscall = "sync_file_range";
    return;
  }
  int err = posix_fadvise(job->fd, job->evict_offset, job->evict_length, POSIX_FADV_DONTNEED);
  if (err != 0) {
    job->error = err;
    job->what = "posix_fadvise(POSIX_FADV_DONTNEED)";
    job->syscall = "posix_fadvise";
  }
}

static void write_back_complete(napi_env env, napi_status status, void *arg) {
  write_back_job *job = arg;
  if (status == napi_ok && job->error == 0) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  } else {
    int err = status == napi_ok ? job->error : ECANCELED;
    const char *name = strerrorname_np(err);
    char message[256];
    snprintf(message, sizeof message, "%s: %s", status == napi_ok ? job->what : "writeBack", strerror(err));
    napi_value code, text, error, syscall;
    napi_create_string_utf8(env, name != NULL ? name : "EIO", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &text);
    napi_create_error(env, code, text, &error);
    if (status == napi_ok && napi_create_string_utf8(env, job->syscall, NAPI_AUTO_LENGTH, &syscall) == napi_ok) {
      napi_set_named_property(env, error, "syscall", syscall);
    }
    napi_reject_deferred(env, job->deferred, error);
  }
  if (job->data_ref != NULL) napi_delete_reference(env, job->data_ref);
  napi_delete_async_work(env, job->work);
  free(job);
}

static int get_offset(napi_env env, napi_value value, off_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || !(d >= 0) || d > 9007199254740991.0 || d != (double)(int64_t)d) return 0;
  *out = (off_t)d;
  return 1;
}

/* The bytes of a Uint8Array, or none for null/undefined. Returns 0 for anything else. */
static int get_data(napi_env env, napi_value value, const uint8_t **data, size_t *length) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return 0;
  if (type == napi_null || type == napi_undefined) {
    *data = NULL;
    *length = 0;
    return 1;
  }
  bool is_typed_array;
  napi_typedarray_type array_type;
  void *bytes;
  if (napi_is_typedarray(env, value, &is_typed_array) != napi_ok || !is_typed_array ||
      napi_get_typedarray_info(env, value, &array_type, length, &bytes, NULL, NULL) != napi_ok || array_type != napi_uint8_array) {
    return 0;
  }
  *data = bytes;
  return 1;
}

static napi_value write_back(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  int32_t fd;
  const uint8_t *data;
  size_t data_length;
  off_t offset, length, evict_offset, evict_length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 || !get_data(env, argv[1], &data, &data_length) ||
      !get_offset(env, argv[2], &offset) || !get_offset(env, argv[3], &length) ||
      !get_offset(env, argv[4], &evict_offset) || !get_offset(env, argv[5], &evict_length) ||
      (data != NULL && (off_t)data_length != length)) {
    napi_throw_type_error(env, "EINVAL",
                          "expected (fd, data, offset, length, evictOffset, evictLength): data a Uint8Array of `length` bytes or null, "
                          "the others non-negative safe integers");
    return NULL;
  }
  write_back_job *job = calloc(1, sizeof *job);
  if (job == NULL) return throw_errno(env, ENOMEM, "writeBack");
  job->data = data;
  job->data_length = data_length;
  job->fd = fd;
  job->offset = offset;
  job->length = length;
  job->evict_offset = evict_offset;
  job->evict_length = evict_length;
  napi_value promise, name;
  if ((data != NULL && napi_create_reference(env, argv[1], 1, &job->data_ref) != napi_ok) ||
      napi_create_string_utf8(env, "bitback:writeBack", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, write_back_execute, write_back_complete, job, &job->work) != napi_ok) {
    if (job->data_ref != NULL) napi_delete_reference(env, job->data_ref);
    free(job);
    napi_throw_error(env, "EIO", "writeBack: cannot prepare the work");
    return NULL;
  }
  /* Once queued, the work always completes, and write_back_complete frees it all. */
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok || napi_queue_async_work(env, job->work) != napi_ok) {
    if (job->data_ref != NULL) napi_delete_reference(env, job->data_ref);
    napi_delete_async_work(env, job->work);
    free(job);
    napi_throw_error(env, "EIO", "writeBack: cannot queue the work");
    return NULL;
  }
  return promise;
}

/* "read" -> F_RDLCK, "write" -> F_WRLCK, "unlock" -> F_UNLCK (only when allow_unlock); -1 otherwise. */
static int get_lock_type(napi_env env, napi_value value, bool allow_unlock) {
  char mode[8];
  size_t length;
  if (napi_get_value_string_utf8(env, value, mode, sizeof mode, &length) != napi_ok) return -1;
  if (strcmp(mode, "read") == 0) return F_RDLCK;
  if (strcmp(mode, "write") == 0) return F_WRLCK;
  if (allow_unlock && strcmp(mode, "unlock") == 0) return F_UNLCK;
  return -1;
}

/* Reads (fd, start, length, mode) into `lock`; throws a TypeError and returns 0 when they are wrong. */
static int get_lock_args(napi_env env, napi_callback_info info, bool allow_unlock, int32_t *fd, struct flock *lock) {
  size_t argc = 4;
  napi_value argv[4];
  off_t start, length;
  int type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4 ||
      napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0 || !get_offset(env, argv[1], &start) ||
      !get_offset(env, argv[2], &length) || length == 0 || (type = get_lock_type(env, argv[3], allow_unlock)) < 0) {
    napi_throw_type_error(env, "EINVAL",
                          allow_unlock ? "expected (fd, start, length, mode): start and length (> 0) safe integers, mode 'read', 'write' or 'unlock'"
                                       : "expected (fd, start, length, mode): start and length (> 0) safe integers, mode 'read' or 'write'");
    return 0;
  }
  memset(lock, 0, sizeof *lock);
  lock->l_type = (short)type;
  lock->l_whence = SEEK_SET;
  lock->l_start = start;
  lock->l_len = length;
  lock->l_pid = 0; /* must be 0 for the F_OFD_* commands */
  return 1;
}

static napi_value set_lock(napi_env env, napi_callback_info info) {
  int32_t fd;
  struct flock lock;
  if (!get_lock_args(env, info, true, &fd, &lock)) return NULL;
  int result;
  do {
    result = fcntl(fd, F_OFD_SETLK, &lock);
  } while (result != 0 && errno == EINTR);
  if (result != 0) return throw_errno(env, errno, "fcntl(F_OFD_SETLK)");
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

static napi_value test_lock(napi_env env, napi_callback_info info) {
  int32_t fd;
  struct flock lock;
  if (!get_lock_args(env, info, false, &fd, &lock)) return NULL;
  int result;
  do {
    result = fcntl(fd, F_OFD_GETLK, &lock);
  } while (result != 0 && errno == EINTR);
  if (result != 0) return throw_errno(env, errno, "fcntl(F_OFD_GETLK)");
  napi_value out;
  if (lock.l_type == F_UNLCK) {
    napi_get_null(env, &out);
    return out;
  }
  napi_value mode, start, length, pid;
  napi_create_object(env, &out);
  napi_create_string_utf8(env, lock.l_type == F_WRLCK ? "write" : "read", NAPI_AUTO_LENGTH, &mode);
  napi_create_double(env, (double)lock.l_start, &start);
  /* l_len 0 means "to the end of the file, however far it grows". */
  napi_create_double(env, lock.l_len == 0 ? -1 : (double)lock.l_len, &length);
  napi_create_int32(env, lock.l_pid, &pid);
  napi_set_named_property(env, out, "mode", mode);
  napi_set_named_property(env, out, "start", start);
  napi_set_named_property(env, out, "length", length);
  napi_set_named_property(env, out, "pid", pid);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_default, NULL},
    {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_default, NULL},
    {"writeBack", NULL, write_back, NULL, NULL, NULL, napi_default, NULL},
    {"setLock", NULL, set_lock, NULL, NULL, NULL, napi_default, NULL},
    {"testLock", NULL, test_lock, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
