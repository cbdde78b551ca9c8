//! The boundary every fallible `extern "C"` body goes through ([`guard`]): panics become `HB_PANIC`, NULL pointers
//! become `HB_NULL_ARGUMENT`, bad UTF-8 becomes `HB_INVALID_UTF8`; and the one typed helper that
//! turns handles into Rust references and back.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::status::{fail, HbStatus};

/// Runs `body`, turning a panic into `HB_PANIC` (with the panic message as the last error).
///
/// Inlined into each `extern "C"` body: `catch_unwind` costs nothing until a panic, and the
/// panic and error paths are out of line, so a successful call pays only for its own work.
#[inline(always)]
pub(crate) fn guard(body: impl FnOnce() -> Result<(), HbStatus>) -> HbStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => HbStatus::HB_OK,
        Ok(Err(status)) => status,
        Err(panic) => panicked(panic),
    }
}

#[cold]
#[inline(never)]
fn panicked(panic: Box<dyn std::any::Any + Send>) -> HbStatus {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| String::from("unknown panic"));
    fail(HbStatus::HB_PANIC, format!("internal error (panic): {msg}"))
}

/// `HB_NULL_ARGUMENT` with its message (out of line: the hot paths only test and branch).
#[cold]
#[inline(never)]
pub(crate) fn null(what: &str) -> HbStatus {
    fail(HbStatus::HB_NULL_ARGUMENT, format!("{what} is NULL"))
}

#[cold]
#[inline(never)]
fn not_utf8(what: &str, e: std::str::Utf8Error) -> HbStatus {
    fail(
        HbStatus::HB_INVALID_UTF8,
        format!("{what} is not valid UTF-8: {e}"),
    )
}

/// A C handle backed by a `Box<Self>`: the one place handles and pointers convert.
pub(crate) trait Handle: Sized {
    /// Moves a value into a new handle.
    fn into_raw(self) -> *mut Self {
        Box::into_raw(Box::new(self))
    }

    /// Borrows a handle; `HB_NULL_ARGUMENT` when it is NULL.
    ///
    /// # Safety
    /// `ptr` is NULL or a live handle of this type made by `into_raw` and not yet freed.
    #[inline]
    unsafe fn from_ptr<'a>(ptr: *const Self, what: &str) -> Result<&'a Self, HbStatus> {
        // SAFETY: forwarded from this function's contract; NULL is handled by as_ref.
        unsafe { ptr.as_ref() }.ok_or_else(|| null(what))
    }

    /// Frees a handle; NULL does nothing.
    ///
    /// # Safety
    /// `ptr` is NULL or a live handle of this type made by `into_raw`, not used afterwards.
    unsafe fn free(ptr: *mut Self) {
        if !ptr.is_null() {
            // SAFETY: forwarded from this function's contract.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

/// Writes an output; `HB_NULL_ARGUMENT` when the out-pointer is NULL.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
#[inline]
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T, what: &str) -> Result<(), HbStatus> {
    if out.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL and valid for writes per this function's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// Writes an optional output (NULL means the caller does not want it).
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
#[inline]
pub(crate) unsafe fn write_opt<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-NULL and valid per this function's contract.
        unsafe { out.write(value) };
    }
}

/// Checks that an out-pointer is not NULL before any work is done (so a call that fails on it
/// has had no effect).
#[inline]
pub(crate) fn need_out<T>(out: *mut T, what: &str) -> Result<(), HbStatus> {
    if out.is_null() {
        return Err(null(what));
    }
    Ok(())
}

/// Borrows `len` bytes at `ptr`; NULL is allowed only when `len` is 0.
///
/// # Safety
/// `ptr` is NULL or valid for reads of `len` bytes for the duration of the call.
#[inline]
pub(crate) unsafe fn bytes<'a>(
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], HbStatus> {
    if ptr.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(null(what));
    }
    // SAFETY: non-NULL and valid for `len` bytes per this function's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows `len` bytes at `ptr` as UTF-8 text.
///
/// # Safety
/// As [`bytes`].
#[inline]
pub(crate) unsafe fn text<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str, HbStatus> {
    // SAFETY: forwarded from this function's contract.
    let b = unsafe { bytes(ptr, len, what) }?;
    // Keys and topics are short and nearly always ASCII: an inlined ASCII test settles them
    // without the call into the full validator, which still checks everything else.
    if b.len() <= 64 && b.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).map_err(|e| not_utf8(what, e))
}
