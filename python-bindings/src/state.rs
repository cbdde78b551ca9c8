//! The state functions (`state_get`, `state_set`, ...) and `publish`, forwarding to the default
//! engine's store and bus.
//!
//! Point operations hold one shard lock for well under a microsecond and never call into Python
//! while holding it, so they keep the GIL (releasing it would cost more than the operation).
//! Calls that can take long (`state_keys`, many-key calls) release it.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use hornbeam_core::{Engine, Ttl, Value};

use crate::convert::{decode, encode, encode_value};
use crate::errors::IntoPy;

/// The process's default engine (opened from `HORNBEAM_URL` on first use).
#[inline]
pub(crate) fn engine() -> PyResult<&'static Engine> {
    Engine::global().py()
}

/// Runs an engine call on one key: with the GIL held on the embedded engine (a shard lock held
/// for well under a microsecond) and on `local://` (a read takes no lock; a write waits at most
/// for another process's one-key transaction, a few microseconds: releasing the GIL would cost
/// more than that wait), and released on Redis (a network round trip, during which other Python
/// threads should run). Calls that can take long (batches, scans, clearing) release the GIL on
/// every backend but the embedded one.
#[inline]
fn call<T: Send>(py: Python<'_>, f: impl FnOnce(&'static Engine) -> T + Send) -> PyResult<T> {
    let e = engine()?;
    Ok(if e.backend_name() == "redis" {
        py.detach(|| f(e))
    } else {
        f(e)
    })
}

pub(crate) fn key_str<'a>(key: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
    match key.downcast::<PyString>() {
        Ok(s) => crate::convert::utf8(s),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be str, not {}",
            key.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))),
    }
}

fn ttl_arg(ttl: Option<f64>) -> PyResult<Option<Duration>> {
    match ttl {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 && t < 1e10 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(PyValueError::new_err(format!(
            "ttl must be a positive number of seconds, got {t}"
        ))),
    }
}

/// A stored value as a Python object.
pub(crate) fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    match v {
        Value::Int(i) => Ok(i.into_pyobject(py)?.into_any()),
        Value::Bytes(b) => decode(py, b),
    }
}

/// A Python object as a stored value (errors name `value` and where the bad part sat).
pub(crate) fn py_to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    encode_value(obj, "value")
}

/// Returns the value of `key`, or None when it is missing.
#[pyfunction]
fn state_get<'py>(py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let key = key_str(key, "key")?;
    match call(py, |e| e.store().get(key))?.py()? {
        Some(v) => value_to_py(py, &v),
        None => Ok(py.None().into_bound(py)),
    }
}

/// Stores `value` at `key`, optionally expiring after `ttl` seconds.
#[pyfunction]
#[pyo3(signature = (key, value, ttl=None))]
fn state_set(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    ttl: Option<f64>,
) -> PyResult<()> {
    let key = key_str(key, "key")?;
    let ttl = ttl_arg(ttl)?;
    let value = py_to_value(value)?;
    call(py, |e| e.store().set(key, value, ttl))?.py()
}

/// Stores `value` only when `key` is missing; returns whether it was stored.
#[pyfunction]
#[pyo3(signature = (key, value, ttl=None))]
fn state_set_if_absent(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    ttl: Option<f64>,
) -> PyResult<bool> {
    let key = key_str(key, "key")?;
    let ttl = ttl_arg(ttl)?;
    let value = py_to_value(value)?;
    call(py, |e| e.store().set_if_absent(key, value, ttl))?.py()
}

/// Removes `key` (a missing key is fine).
#[pyfunction]
fn state_delete(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
    let key = key_str(key, "key")?;
    call(py, |e| e.store().delete(key))?.py()?;
    Ok(())
}

/// Whether `key` exists.
#[pyfunction]
fn state_exists(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
    let key = key_str(key, "key")?;
    Ok(call(py, |e| e.store().ttl(key))?.py()? != Ttl::Missing)
}

/// An increment: an `int` that fits in 64 bits (not a `bool`, not a `float`).
pub(crate) struct Delta(i64);

impl<'py> FromPyObject<'py> for Delta {
    fn extract_bound(delta: &Bound<'py, PyAny>) -> PyResult<Self> {
        if delta.is_instance_of::<pyo3::types::PyBool>()
            || !delta.is_instance_of::<pyo3::types::PyInt>()
        {
            return Err(PyTypeError::new_err(format!(
                "delta must be int, not {}",
                delta
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            )));
        }
        delta
            .extract()
            .map(Delta)
            .map_err(|_| PyValueError::new_err("delta does not fit in 64 bits"))
    }
}

/// Adds `delta` to the counter at `key` atomically and returns the new value.
#[pyfunction]
#[pyo3(signature = (key, delta=Delta(1)), text_signature = "(key, delta=1)")]
fn state_incr(py: Python<'_>, key: &Bound<'_, PyAny>, delta: Delta) -> PyResult<i64> {
    let key = key_str(key, "key")?;
    call(py, |e| e.store().incr(key, delta.0))?.py()
}

/// Subtracts `delta` from the counter at `key` atomically and returns the new value.
#[pyfunction]
#[pyo3(signature = (key, delta=Delta(1)), text_signature = "(key, delta=1)")]
fn state_decr(py: Python<'_>, key: &Bound<'_, PyAny>, delta: Delta) -> PyResult<i64> {
    let key = key_str(key, "key")?;
    let neg = delta
        .0
        .checked_neg()
        .ok_or_else(|| PyValueError::new_err("delta does not fit in 64 bits"))?;
    call(py, |e| e.store().incr(key, neg))?.py()
}

/// Values of several keys as a dict; missing keys map to None.
#[pyfunction]
fn state_get_multi<'py>(py: Python<'py>, keys: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let mut names = Vec::new();
    for k in keys.try_iter()? {
        names.push(key_str(&k?, "each key")?.to_owned());
    }
    let store = engine()?.store();
    let values = py.detach(|| store.get_many(&names)).py()?;
    let out = PyDict::new(py);
    for (k, v) in names.iter().zip(values) {
        match v {
            Some(v) => out.set_item(k, value_to_py(py, &v)?)?,
            None => out.set_item(k, py.None())?,
        }
    }
    Ok(out)
}

/// Stores every item of a dict; nothing is written when any key or value is invalid.
#[pyfunction]
#[pyo3(signature = (items, ttl=None))]
fn state_set_multi(py: Python<'_>, items: &Bound<'_, PyDict>, ttl: Option<f64>) -> PyResult<()> {
    let ttl = ttl_arg(ttl)?;
    let mut batch = Vec::with_capacity(items.len());
    for (k, v) in items.iter() {
        let key = key_str(&k, "each key")?.to_owned();
        let value = py_to_value(&v)?;
        batch.push((key, value));
    }
    let store = engine()?.store();
    py.detach(|| store.set_many(batch, ttl)).py()
}

/// Keys starting with `prefix` (all keys when None), sorted.
#[pyfunction]
#[pyo3(signature = (prefix=None))]
fn state_keys<'py>(
    py: Python<'py>,
    prefix: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let prefix = match prefix {
        Some(p) if !p.is_none() => key_str(p, "prefix")?.to_owned(),
        _ => String::new(),
    };
    let store = engine()?.store();
    let keys = py.detach(|| store.keys(&prefix)).py()?;
    PyList::new(py, keys)
}

/// Sets `key` to expire after `ttl` seconds; returns whether the key exists.
#[pyfunction]
fn state_expire(py: Python<'_>, key: &Bound<'_, PyAny>, ttl: f64) -> PyResult<bool> {
    let key = key_str(key, "key")?;
    let ttl = ttl_arg(Some(ttl))?.unwrap_or_default();
    call(py, |e| e.store().expire(key, ttl))?.py()
}

/// Seconds until `key` expires; None when it has no TTL or does not exist.
#[pyfunction]
fn state_ttl(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    let key = key_str(key, "key")?;
    Ok(match call(py, |e| e.store().ttl(key))?.py()? {
        Ttl::Expires(d) => Some(d.as_secs_f64()),
        Ttl::Missing | Ttl::Persistent => None,
    })
}

/// Number of live keys.
#[pyfunction]
fn state_count(py: Python<'_>) -> PyResult<usize> {
    let store = engine()?.store();
    py.detach(|| store.try_len()).py()
}

/// Removes every key.
#[pyfunction]
fn state_clear(py: Python<'_>) -> PyResult<()> {
    let store = engine()?.store();
    py.detach(|| store.try_clear()).py()
}

/// Publishes `message` (any storable object) to `topic`; returns how many mailboxes took it.
#[pyfunction]
fn publish(
    py: Python<'_>,
    topic: &Bound<'_, PyAny>,
    message: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    let topic = key_str(topic, "topic")?;
    let payload = encode(message, "message")?;
    call(py, |e| e.bus().publish(topic, payload))?.py()
}

/// Name of the backend in use: `"embedded"`, `"local"` (`HORNBEAM_URL=local://...`) or `"redis"`.
#[pyfunction]
fn backend() -> PyResult<&'static str> {
    Ok(engine()?.backend_name())
}

/// The bus's doorbell descriptor (`local://`, once this process subscribed; else `None`): the
/// asyncio hub watches it and calls `_relay_pump` when it is ready (see `Bus::doorbell_fd`).
#[pyfunction]
fn _relay_fileno() -> PyResult<Option<i32>> {
    Ok(engine()?.bus().doorbell_fd())
}

/// Reads and delivers what other processes published, in this thread (see `Bus::pump`);
/// how many log entries it read.
#[pyfunction]
fn _relay_pump() -> PyResult<usize> {
    Ok(engine()?.bus().pump())
}

/// Forgets the default engine in a forked child (registered with `os.register_at_fork`).
#[pyfunction]
fn _after_fork_in_child() {
    Engine::reset_global_after_fork();
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_relay_fileno, m)?)?;
    m.add_function(wrap_pyfunction!(_relay_pump, m)?)?;
    m.add_function(wrap_pyfunction!(state_get, m)?)?;
    m.add_function(wrap_pyfunction!(state_set, m)?)?;
    m.add_function(wrap_pyfunction!(state_set_if_absent, m)?)?;
    m.add_function(wrap_pyfunction!(state_delete, m)?)?;
    m.add_function(wrap_pyfunction!(state_exists, m)?)?;
    m.add_function(wrap_pyfunction!(state_incr, m)?)?;
    m.add_function(wrap_pyfunction!(state_decr, m)?)?;
    m.add_function(wrap_pyfunction!(state_get_multi, m)?)?;
    m.add_function(wrap_pyfunction!(state_set_multi, m)?)?;
    m.add_function(wrap_pyfunction!(state_keys, m)?)?;
    m.add_function(wrap_pyfunction!(state_expire, m)?)?;
    m.add_function(wrap_pyfunction!(state_ttl, m)?)?;
    m.add_function(wrap_pyfunction!(state_count, m)?)?;
    m.add_function(wrap_pyfunction!(state_clear, m)?)?;
    m.add_function(wrap_pyfunction!(publish, m)?)?;
    m.add_function(wrap_pyfunction!(backend, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    Ok(())
}
