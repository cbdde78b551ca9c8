/*
 * A CPython extension that reaches hornbeam_erlang's own engine through the capsule
 * "hornbeam_erlang._native._C_API" (an HbApi function table), so C and Python share keys and
 * topics in one process. Built and loaded by python-bindings/tests/test_capsule.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "hornbeam.h"

static const HbApi *api;
static HbEngine *engine;

static PyObject *fail(HbStatus st) {
  char msg[256];
  api->last_error(msg, sizeof msg);
  PyErr_Format(PyExc_RuntimeError, "hornbeam status %d: %s", (int)st, msg);
  return NULL;
}

/* get_str(key) -> str or None: reads a string that Python stored. */
static PyObject *get_str(PyObject *self, PyObject *args) {
  (void)self;
  const char *key;
  Py_ssize_t klen;
  if (!PyArg_ParseTuple(args, "s#", &key, &klen)) return NULL;
  HbBytes *b = NULL;
  HbStatus st = api->get_str(engine, (const uint8_t *)key, (size_t)klen, &b);
  if (st == HB_NOT_FOUND) Py_RETURN_NONE;
  if (st != HB_OK) return fail(st);
  PyObject *out = PyUnicode_FromStringAndSize((const char *)api->bytes_data(b), (Py_ssize_t)api->bytes_len(b));
  api->bytes_free(b);
  return out;
}

/* incr(key, delta) -> int */
static PyObject *incr(PyObject *self, PyObject *args) {
  (void)self;
  const char *key;
  Py_ssize_t klen;
  long long delta;
  if (!PyArg_ParseTuple(args, "s#L", &key, &klen, &delta)) return NULL;
  int64_t n;
  HbStatus st = api->incr(engine, (const uint8_t *)key, (size_t)klen, delta, &n);
  if (st != HB_OK) return fail(st);
  return PyLong_FromLongLong(n);
}

/* publish_str(topic, text) -> delivered */
static PyObject *publish_str(PyObject *self, PyObject *args) {
  (void)self;
  const char *topic, *text;
  Py_ssize_t tlen, xlen;
  if (!PyArg_ParseTuple(args, "s#s#", &topic, &tlen, &text, &xlen)) return NULL;
  size_t delivered = 0;
  HbStatus st = api->publish_str(engine, (const uint8_t *)topic, (size_t)tlen, (const uint8_t *)text, (size_t)xlen, &delivered);
  if (st != HB_OK) return fail(st);
  return PyLong_FromSize_t(delivered);
}

static PyMethodDef methods[] = {
    {"get_str", get_str, METH_VARARGS, "Read a string from hornbeam_erlang's engine."},
    {"incr", incr, METH_VARARGS, "Increment a counter in hornbeam_erlang's engine."},
    {"publish_str", publish_str, METH_VARARGS, "Publish a string on hornbeam_erlang's bus."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "hb_capsule_ext", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_hb_capsule_ext(void) {
  api = (const HbApi *)PyCapsule_Import("hornbeam_erlang._native._C_API", 0);
  if (!api) return NULL;
  if (api->version < HB_API_VERSION) {
    PyErr_SetString(PyExc_ImportError, "hornbeam_erlang's C API is older than this extension");
    return NULL;
  }
  HbStatus st = api->engine_default(&engine);
  if (st != HB_OK) return fail(st);
  return PyModule_Create(&module);
}
