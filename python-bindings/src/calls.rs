//! Functions registered by name (`hornbeam_core::calls`): Python functions registered for C and
//! Rust callers, and calls from Python to functions registered from C or Rust.
//!
//! The Python half (`_hooks.py`) keeps its own functions in a dict for the fast path and registers
//! them here too; `call(name, ...)` comes here only for names Python did not register.

use pyo3::exceptions::{PyLookupError, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

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

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(register_function, m)?)?;
    m.add_function(wrap_pyfunction!(unregister_function, m)?)?;
    m.add_function(wrap_pyfunction!(call_function, m)?)?;
    m.add_function(wrap_pyfunction!(function_names, m)?)?;
    Ok(())
}
