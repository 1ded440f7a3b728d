/*
 * bitback's one native addon: the few system calls Node.js does not offer and that a disk tool
 * needs. Node-API only (no dependency), built by `npm install` through node-gyp.
 *
 *   seekData(fd, offset) -> offset of the next data at or after `offset`, or -1 past the last data
 *   seekHole(fd, offset) -> offset of the next hole at or after `offset` (the file end counts)
 *
 * lseek(2) SEEK_DATA / SEEK_HOLE, which `qemu-img` uses to skip holes of sparse raw files. The
 * file position changes; bitback only does positioned I/O, so that is harmless. Errors are
 * thrown as Error objects whose `code` is the errno name (ENXIO "past the end" is not an error
 * for seekData: it returns -1).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"seekData", NULL, seek_data, NULL, NULL, NULL, napi_default, NULL},
    {"seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
