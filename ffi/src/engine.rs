//! Engines and owned byte buffers.

use std::ffi::c_char;

use hornbeam_core::Engine;

use crate::boundary::{guard, need_out, text, write_out, Handle};
use crate::status::{from_error, HbStatus};

/// An engine: a store and a bus. Underneath, a handle to a shared Rust `Engine`: several handles
/// may name the same engine (e.g. the process default). Created by `hb_engine_new`,
/// `hb_engine_default` or `hb_engine_open`; freed by `hb_engine_free` (which frees the handle; the
/// engine lives while any handle or mailbox uses it). Thread-safe: one handle may be used from
/// any number of threads at once.
pub struct HbEngine(pub(crate) Engine);

impl Handle for HbEngine {}

/// Bytes owned by the library (a stored value, a string). Read with `hb_bytes_data` and
/// `hb_bytes_len`; the data is followed by a NUL byte (not counted in the length), so text can be
/// used as a C string. Freed by `hb_bytes_free`. Immutable, so safe to read from any thread.
pub struct HbBytes(Buf);

/// The bytes and their NUL: inside the handle's own allocation when short (one `malloc` per
/// value for the keys, counters and short strings most calls read), on the heap otherwise.
enum Buf {
    Inline { len: u8, data: [u8; INLINE] },
    Heap(Box<[u8]>),
}

/// Bytes (NUL included) held in the handle itself; the handle is then 48 bytes.
const INLINE: usize = 46;

impl Handle for HbBytes {}

impl HbBytes {
    #[inline]
    pub(crate) fn new(data: &[u8]) -> HbBytes {
        if data.len() < INLINE {
            let mut buf = [0u8; INLINE];
            buf[..data.len()].copy_from_slice(data);
            return HbBytes(Buf::Inline {
                len: data.len() as u8,
                data: buf,
            });
        }
        let mut v = Vec::with_capacity(data.len() + 1);
        v.extend_from_slice(data);
        v.push(0);
        HbBytes(Buf::Heap(v.into_boxed_slice()))
    }

    /// The bytes, without the trailing NUL.
    #[inline]
    fn data(&self) -> &[u8] {
        match &self.0 {
            Buf::Inline { len, data } => &data[..*len as usize],
            Buf::Heap(b) => &b[..b.len() - 1],
        }
    }
}

/// Creates a private embedded engine (its own store and bus). On success writes a new handle
/// to `*out`; free it with `hb_engine_free`.
///
/// # Safety
/// `out` is valid for a write of one pointer.
#[no_mangle]
pub unsafe extern "C" fn hb_engine_new(out: *mut *mut HbEngine) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: checked non-NULL above; valid per the contract.
        unsafe {
            write_out(
                out,
                HbEngine(Engine::new(Default::default())).into_raw(),
                "out",
            )
        }
    })
}

/// The process-wide default engine (chosen by the `HORNBEAM_URL` environment variable;
/// embedded when unset), shared with every other user of it in the process. On success writes
/// a new handle to `*out`; free it with `hb_engine_free` (the engine itself lives on).
///
/// # Safety
/// `out` is valid for a write of one pointer.
#[no_mangle]
pub unsafe extern "C" fn hb_engine_default(out: *mut *mut HbEngine) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        let engine = Engine::global().map_err(from_error)?.clone();
        // SAFETY: checked non-NULL above; valid per the contract.
        unsafe { write_out(out, HbEngine(engine).into_raw(), "out") }
    })
}

/// Opens the engine a URL names (`url`/`url_len`, UTF-8): empty or `embedded://` for a new
/// embedded engine; `local:///abs/dir` (or `local://`, a per-user directory) for an engine shared
/// by every process on this machine that opens the same directory (LMDB, no server; opening one
/// directory twice in a process shares it); `redis://host:port/db` for one shared through Redis.
/// On success writes a new handle to `*out`; free it with `hb_engine_free`. A bad URL is
/// `HB_INVALID_ARGUMENT`; a directory or server that cannot be used is `HB_BACKEND` (the message,
/// from `hb_last_error`, names the path).
///
/// # Safety
/// `url` is valid for reads of `url_len` bytes (or NULL with `url_len` 0); `out` is valid for
/// a write of one pointer.
#[no_mangle]
pub unsafe extern "C" fn hb_engine_open(
    url: *const u8,
    url_len: usize,
    out: *mut *mut HbEngine,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let url = unsafe { text(url, url_len, "url") }?;
        let engine = Engine::open(url, Default::default()).map_err(from_error)?;
        // SAFETY: checked non-NULL above; valid per the contract.
        unsafe { write_out(out, HbEngine(engine).into_raw(), "out") }
    })
}

/// Frees an engine handle. NULL does nothing. Mailboxes made from it stay usable.
///
/// # Safety
/// `engine` is NULL or a handle from `hb_engine_*` not freed before and not used after.
#[no_mangle]
pub unsafe extern "C" fn hb_engine_free(engine: *mut HbEngine) {
    let _ = crate::boundary::guard(|| {
        // SAFETY: forwarded from this function's contract.
        unsafe { HbEngine::free(engine) };
        Ok(())
    });
}

/// Pointer to the bytes of `bytes` (followed by a NUL byte); NULL when `bytes` is NULL. Valid
/// until `hb_bytes_free`.
///
/// # Safety
/// `bytes` is NULL or a live `HbBytes`.
#[no_mangle]
pub unsafe extern "C" fn hb_bytes_data(bytes: *const HbBytes) -> *const u8 {
    // SAFETY: forwarded from this function's contract.
    match unsafe { bytes.as_ref() } {
        Some(b) => b.data().as_ptr(),
        None => std::ptr::null(),
    }
}

/// Length of `bytes` (without the trailing NUL); 0 when `bytes` is NULL.
///
/// # Safety
/// `bytes` is NULL or a live `HbBytes`.
#[no_mangle]
pub unsafe extern "C" fn hb_bytes_len(bytes: *const HbBytes) -> usize {
    // SAFETY: forwarded from this function's contract.
    unsafe { bytes.as_ref() }.map_or(0, |b| b.data().len())
}

/// The bytes as a NUL-terminated C string (meaningful for text); NULL when `bytes` is NULL.
///
/// # Safety
/// `bytes` is NULL or a live `HbBytes`.
#[no_mangle]
pub unsafe extern "C" fn hb_bytes_cstr(bytes: *const HbBytes) -> *const c_char {
    // SAFETY: forwarded from this function's contract.
    unsafe { hb_bytes_data(bytes) }.cast()
}

/// Frees bytes returned by the library. NULL does nothing.
///
/// # Safety
/// `bytes` is NULL or a live `HbBytes`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hb_bytes_free(bytes: *mut HbBytes) {
    // SAFETY: forwarded from this function's contract.
    unsafe { HbBytes::free(bytes) }
}

/// The library's version, a static NUL-terminated string (do not free).
#[no_mangle]
pub extern "C" fn hb_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// In a child process right after `fork()`, before any other call: forgets the engines the
/// parent opened (the default engine, and every `local://` directory, which LMDB forbids using
/// after a fork), without touching locks the parent's threads may have held. Afterwards the child
/// opens engines afresh (`hb_engine_default`, `hb_engine_open` on the same URL); handles from
/// before the fork must not be used in the child (on `local://` they answer `HB_BACKEND`).
/// Calling it anywhere but in a fresh child is harmless for later opens but leaves existing
/// `local://` handles unusable. Never fails.
#[no_mangle]
pub extern "C" fn hb_reset_after_fork() {
    let _ = crate::boundary::guard(|| {
        Engine::reset_global_after_fork();
        Ok(())
    });
}
