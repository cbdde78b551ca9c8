//! `hornbeam_erlang._native`: the Python binding of the Hornbeam engine.
//!
//! It converts and forwards: Python objects become MessagePack here ([`convert`]), every rule
//! (limits, types, ordering, fan-out) lives in `hornbeam-core`, and core errors become Python
//! exceptions in one place ([`errors`]). The pure-Python package `hornbeam_erlang` re-exports these
//! functions and adds the event loop's hub; `await mailbox.recv()` itself is native
//! ([`awaitable`]).

mod awaitable;
mod calls;
mod convert;
mod errors;
mod mailbox;
mod state;

use pyo3::prelude::*;

/// The native module. It declares that it needs the GIL: no free-threaded Python (3.13t) can be
/// installed on the machines that test it, and a claim nothing tests is not made.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(py, m)?;
    state::register(m)?;
    mailbox::register(m)?;
    awaitable::register(m)?;
    calls::register(m)?;
    // C extensions in this process reach the same engine through this table (see ffi/src/api.rs).
    // SAFETY: hb_api returns a pointer to a static, initialised table.
    let api = unsafe { *hornbeam::api::hb_api() };
    let name = std::ffi::CString::new("hornbeam_erlang._native._C_API")?;
    m.add("_C_API", pyo3::types::PyCapsule::new(py, api, Some(name))?)?;
    Ok(())
}
