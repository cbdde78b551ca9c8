//! Core errors as Python exceptions: one mapping, applied at the boundary.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use hornbeam_core::Error;

create_exception!(
    hornbeam_erlang,
    HornbeamError,
    PyException,
    "Engine errors (limits, closed mailboxes, backend failures)."
);
create_exception!(
    hornbeam_erlang,
    MailboxClosed,
    HornbeamError,
    "The mailbox was closed."
);
create_exception!(
    hornbeam_erlang,
    BackendError,
    HornbeamError,
    "The backend (e.g. Redis) failed or could not be reached."
);

/// The Python exception for a core error: `TypeError` for values that cannot be used as asked,
/// `ValueError` for bad arguments and limits, `OverflowError` for counter overflow, the
/// `HornbeamError` family for engine conditions.
pub(crate) fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::NotAnInteger { .. } => PyTypeError::new_err(msg),
        Error::Overflow { .. } => PyOverflowError::new_err(msg),
        Error::InvalidKey { .. }
        | Error::ValueTooLarge { .. }
        | Error::InvalidValue { .. }
        | Error::InvalidTopic { .. }
        | Error::MessageTooLarge { .. }
        | Error::InvalidArgument(_) => PyValueError::new_err(msg),
        Error::Closed => MailboxClosed::new_err(msg),
        Error::Backend(_) => BackendError::new_err(msg),
        _ => HornbeamError::new_err(msg),
    }
}

/// Extension trait: `.py()?` turns a core result into a Python one.
pub(crate) trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    #[inline]
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

pub(crate) fn register(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("HornbeamError", py.get_type::<HornbeamError>())?;
    m.add("MailboxClosed", py.get_type::<MailboxClosed>())?;
    m.add("BackendError", py.get_type::<BackendError>())?;
    Ok(())
}
