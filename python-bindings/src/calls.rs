//! Functions registered by name (`hornbeam_core::calls`): Python functions registered for C and
//! Rust callers, and calls from Python to functions registered from C or Rust.
//!
//! The Python half (`_hooks.py`) keeps its own functions in a dict for the fast path and registers
//! them here too; `call(name, ...)` comes here only for names Python did not register.

use pyo3::exceptions::{PyLookupError, PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};

use hornbeam_core::{calls, Error};

use crate::convert::{decode, encode};
use crate::errors::to_py;

/// Registers the Python callable `fn` under `name`: C (`hb_function_call`) and Rust
/// (`hornbeam_core::calls::call`) callers run it with the GIL taken for the call, its arguments
/// decoded from MessagePack and its result encoded back; an exception becomes the call's failure
/// message (`Type: message`).
#[pyfunction]
fn register_function(name: &str, function: Bound<'_, PyAny>) -> PyResult<()> {
    if !function.is_callable() {
        return Err(PyTypeError::new_err("function must be callable"));
    }
    let function: Py<PyAny> = function.unbind();
    calls::register(name, move |args: &[u8]| {
        Python::attach(|py| {
            let run = || -> PyResult<Vec<u8>> {
                let args = decode(py, args)?;
                let args = PyTuple::new(py, args.downcast::<PyList>()?.iter())?;
                let out = function.bind(py).call1(args)?;
                encode(&out, "result")
            };
            run().map_err(|e| {
                let kind = e
                    .get_type(py)
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                format!("{kind}: {}", e.value(py))
            })
        })
    });
    Ok(())
}

/// Removes the function `name` (from every caller); whether there was one.
#[pyfunction]
fn unregister_function(name: &str) -> bool {
    calls::unregister(name)
}

/// Calls the function `name` (registered from C, Rust or Python) with `args`; the GIL is released
/// while it runs (a Python function takes it back). `LookupError` when none is registered,
/// `RuntimeError` with its message when it failed.
#[pyfunction]
fn call_function<'py>(
    py: Python<'py>,
    name: &str,
    args: Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let packed = encode(args.as_any(), "args")?;
    let name = name.to_owned();
    match py.detach(move || calls::call(&name, &packed)) {
        Ok(out) => decode(py, &out),
        Err(e @ Error::NoFunction { .. }) => Err(PyLookupError::new_err(e.to_string())),
        Err(e @ Error::FunctionFailed { .. }) => Err(PyRuntimeError::new_err(e.to_string())),
        Err(e) => Err(to_py(e)),
    }
}

/// The names registered from any language, sorted.
#[pyfunction]
fn function_names() -> Vec<String> {
    calls::names()
}

/// What `execute` needs from the Python half (`_hooks.py`), handed over once at import.
struct Hooks {
    /// `_handlers._bound`: app path -> {action: callable}, the hooks this process serves.
    bound: Py<PyDict>,
    /// `_hooks._execute_slow(app_path, action, args, kwargs)`: everything else (a handler not
    /// bound yet, a hook served by another process).
    slow: Py<PyAny>,
    /// `_hooks._wrap(app_path, action, exc)`: a handler's exception as a `HandlerError`.
    wrap: Py<PyAny>,
    /// `HookError`: raised by a handler, it passes through unwrapped.
    hook_error: Py<PyAny>,
}

static HOOKS: PyOnceLock<Hooks> = PyOnceLock::new();

/// Called once by `_hooks.py` at import: the tables and functions `execute` uses.
#[pyfunction]
fn _install_execute(
    py: Python<'_>,
    bound: Bound<'_, PyDict>,
    slow: Bound<'_, PyAny>,
    wrap: Bound<'_, PyAny>,
    hook_error: Bound<'_, PyAny>,
) -> PyResult<()> {
    let hooks = Hooks {
        bound: bound.unbind(),
        slow: slow.unbind(),
        wrap: wrap.unbind(),
        hook_error: hook_error.unbind(),
    };
    HOOKS
        .set(py, hooks)
        .map_err(|_| PyRuntimeError::new_err("execute is installed already"))
}

// `PyObject_Vectorcall` is exported by every CPython since 3.9 and is in the stable ABI from
// 3.12; pyo3-ffi declares it only for 3.12+ under abi3, so the module (abi3, 3.11+) declares it.
extern "C" {
    pub(crate) fn PyObject_Vectorcall(
        callable: *mut ffi::PyObject,
        args: *const *mut ffi::PyObject,
        nargsf: usize,
        kwnames: *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;
}

/// `execute(app_path, action, /, *args, **kwargs)` (see `_hooks.py`), a `METH_FASTCALL |
/// METH_KEYWORDS` function: a hook this process serves and has bound is called right here with
/// the caller's own argument vector (no tuple, no dict, no Python frame of ours between the caller
/// and the handler); anything else goes to `_execute_slow`. A handler's exception other than a
/// `HookError` comes out as `_wrap`'s `HandlerError`, the original as its `__cause__`.
unsafe extern "C" fn execute(
    _module: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method of a module with the GIL held.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: CPython passes the vector, its length and kwnames as METH_FASTCALL | METH_KEYWORDS
    // promises, which is execute_attached's contract.
    let call = || unsafe { execute_attached(py, args, nargs, kwnames) };
    let run = std::panic::AssertUnwindSafe(call);
    match std::panic::catch_unwind(run)
        .unwrap_or_else(|_| Err(PyRuntimeError::new_err("hornbeam_erlang.execute panicked")))
    {
        Ok(out) => out.into_ptr(),
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// The body of `execute`, with the argument vector CPython passed.
///
/// # Safety
/// `args` holds `nargs` positional arguments followed by one value per name of `kwnames` (a tuple
/// of str, or NULL for none), all borrowed for the call, as `METH_FASTCALL | METH_KEYWORDS`
/// guarantees.
unsafe fn execute_attached<'py>(
    py: Python<'py>,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Bound<'py, PyAny>> {
    if nargs < 2 {
        return Err(PyTypeError::new_err(
            "execute() needs app_path and action as its first two arguments",
        ));
    }
    let Some(hooks) = HOOKS.get(py) else {
        return Err(PyRuntimeError::new_err(
            "hornbeam_erlang._hooks is not imported",
        ));
    };
    // SAFETY: (the function's contract) args[0..nargs + len(kwnames)] are live borrowed objects.
    let at = |i: usize| unsafe { Borrowed::from_ptr(py, *args.add(i)) };
    let (app_path, action) = (at(0), at(1));
    let positional = nargs as usize - 2;
    let handler = match hooks.bound.bind(py).get_item(app_path)? {
        Some(actions) => match actions.downcast::<PyDict>() {
            Ok(actions) => actions.get_item(action)?,
            Err(_) => None,
        },
        None => None,
    };
    let Some(handler) = handler else {
        let list = PyList::empty(py);
        for i in 0..positional {
            list.append(at(2 + i))?;
        }
        let kwargs = PyDict::new(py);
        if !kwnames.is_null() {
            // SAFETY: CPython passes a tuple of str (or NULL) as kwnames.
            let names = unsafe {
                Bound::from_borrowed_ptr(py, kwnames).downcast_into_unchecked::<PyTuple>()
            };
            for (j, name) in names.iter().enumerate() {
                kwargs.set_item(name, at(nargs as usize + j))?;
            }
        }
        return hooks.slow.bind(py).call1((app_path, action, list, kwargs));
    };
    // SAFETY: the handler is a live object; the vector after app_path and action is the caller's
    // positional arguments then keyword values, as kwnames says, exactly what vectorcall takes.
    let out = unsafe { PyObject_Vectorcall(handler.as_ptr(), args.add(2), positional, kwnames) };
    if !out.is_null() {
        // SAFETY: a new reference returned by the call.
        return Ok(unsafe { Bound::from_owned_ptr(py, out) });
    }
    let e = PyErr::fetch(py);
    if e.is_instance(py, hooks.hook_error.bind(py)) {
        return Err(e);
    }
    let cause = e.value(py).clone();
    match hooks.wrap.bind(py).call1((app_path, action, &cause)) {
        Ok(wrapped) => Err(PyErr::from_value(wrapped)),
        Err(failed) => Err(failed),
    }
}

/// The method table entry of `execute` (CPython keeps a pointer to it for the function's life).
struct MethodDef(ffi::PyMethodDef);
// SAFETY: the entry is immutable and its strings are 'static.
unsafe impl Sync for MethodDef {}

static EXECUTE: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"execute".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: execute,
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"execute(app_path, action, /, *args, **kwargs)\n--\n\nRuns `action` of hook `app_path` and returns its result: here when this process serves the hook, otherwise in a process that does.".as_ptr(),
});

fn add_execute(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // SAFETY: EXECUTE is 'static; the module is a live object; a NULL result sets an exception.
    let f = unsafe {
        let ptr = ffi::PyCFunction_NewEx(
            &EXECUTE.0 as *const ffi::PyMethodDef as *mut ffi::PyMethodDef,
            m.as_ptr(),
            std::ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, ptr)?
    };
    m.add("execute", f)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_install_execute, m)?)?;
    add_execute(m)?;
    m.add_function(wrap_pyfunction!(register_function, m)?)?;
    m.add_function(wrap_pyfunction!(unregister_function, m)?)?;
    m.add_function(wrap_pyfunction!(call_function, m)?)?;
    m.add_function(wrap_pyfunction!(function_names, m)?)?;
    Ok(())
}
