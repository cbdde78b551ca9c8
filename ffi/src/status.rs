//! Status codes, the thread-local last error, and the one mapping from core errors.

use std::cell::RefCell;
use std::ffi::c_char;

use hornbeam_core::{Error, RecvError};

/// The result of every fallible call. `HB_OK` is 0; the others are grouped by hundreds
/// (arguments 1xx, store 2xx, bus 3xx, backend 4xx, registered functions 5xx, internal 9xx) and
/// never renumbered.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum HbStatus {
    /// Success: the out-parameters were written.
    HB_OK = 0,
    /// A required pointer argument was NULL.
    HB_NULL_ARGUMENT = 100,
    /// A key, topic or string was not valid UTF-8.
    HB_INVALID_UTF8 = 101,
    /// An argument is out of range (see `hb_last_error`).
    HB_INVALID_ARGUMENT = 102,
    /// The caller's buffer is too small: only the needed size was written.
    HB_BUFFER_TOO_SMALL = 103,
    /// The key does not exist.
    HB_NOT_FOUND = 200,
    /// The value is not an integer (for incr or `_int` reads); it is unchanged.
    HB_NOT_AN_INTEGER = 201,
    /// The increment would overflow 64 bits; the value is unchanged.
    HB_OVERFLOW = 202,
    /// The key is too long.
    HB_INVALID_KEY = 203,
    /// The value is larger than the configured limit.
    HB_VALUE_TOO_LARGE = 204,
    /// The value is not well-formed MessagePack (or not the type asked for).
    HB_INVALID_VALUE = 205,
    /// The topic or pattern is invalid.
    HB_INVALID_TOPIC = 300,
    /// The payload is larger than the configured limit.
    HB_MESSAGE_TOO_LARGE = 301,
    /// No message is waiting (non-blocking receive).
    HB_EMPTY = 302,
    /// No message arrived in time.
    HB_TIMEOUT = 303,
    /// The mailbox is closed.
    HB_CLOSED = 305,
    /// The mailbox holds the maximum number of subscriptions.
    HB_TOO_MANY_SUBSCRIPTIONS = 306,
    /// The backend (e.g. Redis) failed or could not be reached.
    HB_BACKEND = 400,
    /// No function is registered under that name (`hb_function_call`).
    HB_NO_FUNCTION = 500,
    /// The registered function failed; `hb_last_error` has its message.
    HB_FUNCTION_FAILED = 501,
    /// A bug: Rust code panicked; the call had no effect that can be relied on.
    HB_PANIC = 900,
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records the detailed message of the failure being returned on this thread.
pub(crate) fn set_last_error(msg: impl Into<String>) {
    LAST_ERROR.with(|e| *e.borrow_mut() = msg.into());
}

pub(crate) fn fail(status: HbStatus, msg: impl Into<String>) -> HbStatus {
    set_last_error(msg);
    status
}

/// The status for a core error, with its message recorded as the last error.
pub(crate) fn from_error(err: Error) -> HbStatus {
    let status = match &err {
        Error::InvalidKey { .. } => HbStatus::HB_INVALID_KEY,
        Error::ValueTooLarge { .. } => HbStatus::HB_VALUE_TOO_LARGE,
        Error::NotAnInteger { .. } => HbStatus::HB_NOT_AN_INTEGER,
        Error::Overflow { .. } => HbStatus::HB_OVERFLOW,
        Error::InvalidValue { .. } => HbStatus::HB_INVALID_VALUE,
        Error::InvalidTopic { .. } => HbStatus::HB_INVALID_TOPIC,
        Error::MessageTooLarge { .. } => HbStatus::HB_MESSAGE_TOO_LARGE,
        Error::TooManySubscriptions { .. } => HbStatus::HB_TOO_MANY_SUBSCRIPTIONS,
        Error::Closed => HbStatus::HB_CLOSED,
        Error::Backend(_) => HbStatus::HB_BACKEND,
        Error::InvalidArgument(_) => HbStatus::HB_INVALID_ARGUMENT,
        Error::NoFunction { .. } => HbStatus::HB_NO_FUNCTION,
        Error::FunctionFailed { .. } => HbStatus::HB_FUNCTION_FAILED,
        _ => HbStatus::HB_INVALID_ARGUMENT,
    };
    fail(status, err.to_string())
}

/// The status for a receive error (`Lagged` never reaches here: it is a message).
pub(crate) fn from_recv(err: RecvError) -> HbStatus {
    let status = match err {
        RecvError::Empty => HbStatus::HB_EMPTY,
        RecvError::Timeout => HbStatus::HB_TIMEOUT,
        RecvError::Closed => HbStatus::HB_CLOSED,
        RecvError::Lagged(_) => HbStatus::HB_INVALID_ARGUMENT,
    };
    fail(status, err.to_string())
}

/// Copies `text` (NUL-terminated, truncated to fit) into `buf` of `len` bytes; returns the full
/// length of `text` without the NUL.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes.
pub(crate) unsafe fn copy_out(text: &str, buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let n = text.len().min(len - 1);
        // SAFETY: the caller guarantees `buf` holds `len` bytes, and n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, n);
            *buf.add(n) = 0;
        }
    }
    text.len()
}

/// The last error message of the calling thread, copied NUL-terminated into `buf` (truncated to
/// `len` bytes); returns the full message length (0 when there is none). `buf` may be NULL to ask
/// for the length. Thread-safe: each thread has its own last error.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hb_last_error(buf: *mut c_char, len: usize) -> usize {
    let text = LAST_ERROR.with(|e| e.borrow().clone());
    // SAFETY: forwarded from this function's own contract.
    unsafe { copy_out(&text, buf, len) }
}

/// A static, NUL-terminated name for a status (e.g. `"HB_NOT_FOUND"`). Never NULL; the caller
/// must not free it.
#[no_mangle]
pub extern "C" fn hb_status_str(status: HbStatus) -> *const c_char {
    let s: &'static [u8] = match status {
        HbStatus::HB_OK => b"HB_OK\0",
        HbStatus::HB_NULL_ARGUMENT => b"HB_NULL_ARGUMENT\0",
        HbStatus::HB_INVALID_UTF8 => b"HB_INVALID_UTF8\0",
        HbStatus::HB_INVALID_ARGUMENT => b"HB_INVALID_ARGUMENT\0",
        HbStatus::HB_BUFFER_TOO_SMALL => b"HB_BUFFER_TOO_SMALL\0",
        HbStatus::HB_NOT_FOUND => b"HB_NOT_FOUND\0",
        HbStatus::HB_NOT_AN_INTEGER => b"HB_NOT_AN_INTEGER\0",
        HbStatus::HB_OVERFLOW => b"HB_OVERFLOW\0",
        HbStatus::HB_INVALID_KEY => b"HB_INVALID_KEY\0",
        HbStatus::HB_VALUE_TOO_LARGE => b"HB_VALUE_TOO_LARGE\0",
        HbStatus::HB_INVALID_VALUE => b"HB_INVALID_VALUE\0",
        HbStatus::HB_INVALID_TOPIC => b"HB_INVALID_TOPIC\0",
        HbStatus::HB_MESSAGE_TOO_LARGE => b"HB_MESSAGE_TOO_LARGE\0",
        HbStatus::HB_EMPTY => b"HB_EMPTY\0",
        HbStatus::HB_TIMEOUT => b"HB_TIMEOUT\0",
        HbStatus::HB_CLOSED => b"HB_CLOSED\0",
        HbStatus::HB_TOO_MANY_SUBSCRIPTIONS => b"HB_TOO_MANY_SUBSCRIPTIONS\0",
        HbStatus::HB_BACKEND => b"HB_BACKEND\0",
        HbStatus::HB_NO_FUNCTION => b"HB_NO_FUNCTION\0",
        HbStatus::HB_FUNCTION_FAILED => b"HB_FUNCTION_FAILED\0",
        HbStatus::HB_PANIC => b"HB_PANIC\0",
    };
    s.as_ptr().cast()
}
