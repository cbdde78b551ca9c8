/*
 * A CPython extension that registers a C function for Python's hornbeam_erlang.call() and calls
 * Python's registered functions from C, through the capsule "hornbeam_erlang._native._C_API"
 * (HbApi version 2). Built and loaded by python-bindings/tests/test_calls_c.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "hornbeam.h"

static const HbApi *api;
static int released = 0;

static PyObject *fail(HbStatus st) {
  char msg[256];
  api->last_error(msg, sizeof msg);
  PyErr_Format(PyExc_RuntimeError, "hornbeam status %d: %s", (int)st, msg);
  return NULL;
}

/* c_add: [a, b] (MessagePack positive fixints) -> a + b; anything else fails with a message. */
static void c_add(void *userdata, const uint8_t *args, size_t len, HbCallResult *result) {
  (void)userdata;
  if (len != 3 || args[0] != 0x92 || args[1] > 0x3f || args[2] > 0x3f) {
    const char *msg = "c_add takes two small integers";
    api->call_result_fail(result, (const uint8_t *)msg, strlen(msg));
    return;
  }
  uint8_t sum = (uint8_t)(args[1] + args[2]);
  api->call_result_set(result, &sum, 1);
}

static void release(void *userdata) {
  (void)userdata;
  released++;
}

/* register_c_add(name) */
static PyObject *register_c_add(PyObject *self, PyObject *args) {
  (void)self;
  const char *name;
  Py_ssize_t nlen;
  if (!PyArg_ParseTuple(args, "s#", &name, &nlen)) return NULL;
  HbStatus st = api->function_register((const uint8_t *)name, (size_t)nlen, c_add, NULL, release);
  if (st != HB_OK) return fail(st);
  Py_RETURN_NONE;
}

/* released() -> how many times the library released c_add's userdata */
static PyObject *released_count(PyObject *self, PyObject *noargs) {
  (void)self, (void)noargs;
  return PyLong_FromLong(released);
}

/* call_raw(name, msgpack_args: bytes) -> (status name, result bytes or last error text).
 * The GIL is released around the call, as a C thread that does not hold it would call. */
static PyObject *call_raw(PyObject *self, PyObject *args) {
  (void)self;
  const char *name, *packed;
  Py_ssize_t nlen, plen;
  if (!PyArg_ParseTuple(args, "s#y#", &name, &nlen, &packed, &plen)) return NULL;
  HbBytes *out = NULL;
  HbStatus st;
  Py_BEGIN_ALLOW_THREADS
  st = api->function_call((const uint8_t *)name, (size_t)nlen, (const uint8_t *)packed, (size_t)plen, &out);
  Py_END_ALLOW_THREADS
  char status[32];
  snprintf(status, sizeof status, "%d", (int)st);
  if (st != HB_OK) {
    char msg[512];
    api->last_error(msg, sizeof msg);
    return Py_BuildValue("(sy)", status, msg);
  }
  PyObject *res = Py_BuildValue("(sy#)", status, (const char *)api->bytes_data(out), (Py_ssize_t)api->bytes_len(out));
  api->bytes_free(out);
  return res;
}

static PyMethodDef methods[] = {
    {"register_c_add", register_c_add, METH_VARARGS, "Register the C function c_add under a name."},
    {"released", released_count, METH_NOARGS, "How often c_add's userdata was released."},
    {"call_raw", call_raw, METH_VARARGS, "Call a registered function from C with MessagePack args."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hb_calls_ext", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_hb_calls_ext(void) {
  api = (const HbApi *)PyCapsule_Import("hornbeam_erlang._native._C_API", 0);
  if (!api) return NULL;
  if (api->version < 2) {
    PyErr_SetString(PyExc_ImportError, "hornbeam_erlang's C API has no registered functions (version < 2)");
    return NULL;
  }
  return PyModule_Create(&module);
}
