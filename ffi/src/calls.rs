//! Functions registered by name ([`hornbeam_core::calls`]) from C: a C function registered here
//! can be called from Python (`hornbeam_erlang.call(name, *args)`) and Rust, and C can call the
//! functions Python registered (`hornbeam_erlang.register_function`) — when both use the same
//! library copy: inside a Python process, a C extension goes through the capsule's `HbApi` table.
//!
//! Arguments are one MessagePack array, results one MessagePack value; both are checked by core.

use std::ffi::c_void;

use hornbeam_core::calls;

use crate::boundary::{guard, need_out, text, write_opt, write_out, Handle};
use crate::engine::HbBytes;
use crate::status::{fail, from_error, HbStatus};

/// Where a C function puts its answer during a call. Underneath: a Rust value on the stack of the
/// call in progress; the library makes it and frees it, the function only fills it (at most once:
/// a second fill replaces the first) with `hb_call_result_set` or `hb_call_result_fail`, which
/// copy their bytes. Valid only until the function returns, and only on the thread that called
/// the function.
pub struct HbCallResult(Option<Result<Vec<u8>, String>>);

/// A function registered by name: called as `f(userdata, args, args_len, result)` with the
/// arguments as one MessagePack array (valid during the call only) and a result slot to fill
/// (leaving it empty is a failure). It may be called from any thread, by several threads at once,
/// and may itself call, register or unregister functions.
pub type HbFunction =
    Option<unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut HbCallResult)>;

/// Frees a function's `userdata` when the function is replaced or unregistered (may be NULL).
pub type HbFreeFn = Option<unsafe extern "C" fn(*mut c_void)>;

struct CFunction {
    f: unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut HbCallResult),
    userdata: *mut c_void,
    free: HbFreeFn,
}

// SAFETY: `hb_function_register`'s contract makes the caller promise that `f` and `userdata` may
// be used from any thread, concurrently, until `free` is called; the library adds no state.
unsafe impl Send for CFunction {}
// SAFETY: as for Send: shared use from several threads is part of the same promise.
unsafe impl Sync for CFunction {}

impl CFunction {
    fn invoke(&self, args: &[u8]) -> Result<Vec<u8>, String> {
        let mut slot = HbCallResult(None);
        // SAFETY: `f` and `userdata` are valid per the registration contract; `args` and `slot`
        // live for the whole call.
        unsafe { (self.f)(self.userdata, args.as_ptr(), args.len(), &mut slot) };
        slot.0
            .unwrap_or_else(|| Err(String::from("the function set no result")))
    }
}

impl Drop for CFunction {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: the registration contract: `free(userdata)` is called once, when the
            // library no longer uses them.
            unsafe { free(self.userdata) }
        }
    }
}

/// Registers `f` under the name `name` (UTF-8), replacing (and releasing) any function of that
/// name, for every caller in this process: C, Python and Rust.
///
/// Ownership: on `HB_OK` the library keeps `f` and `userdata` and calls `free_userdata(userdata)`
/// (when not NULL) once, after the function is replaced or unregistered and no call of it is
/// running. On failure nothing is kept: `userdata` is still the caller's.
///
/// Threading: `f` may be called from any thread, by several at once, for as long as it is
/// registered; `userdata` must allow that.
///
/// # Safety
/// `name` is valid for `name_len` bytes; `f` and `userdata` meet the contract above.
#[no_mangle]
pub unsafe extern "C" fn hb_function_register(
    name: *const u8,
    name_len: usize,
    f: HbFunction,
    userdata: *mut c_void,
    free_userdata: HbFreeFn,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let name = unsafe { text(name, name_len, "name") }?;
        let f = f.ok_or_else(|| fail(HbStatus::HB_NULL_ARGUMENT, "f is NULL"))?;
        let function = CFunction {
            f,
            userdata,
            free: free_userdata,
        };
        calls::register(name, move |args: &[u8]| function.invoke(args));
        Ok(())
    })
}

/// Removes the function `name`; writes to `*out_removed` (when not NULL) whether there was one.
///
/// # Safety
/// `name` is valid for `name_len` bytes; `out_removed` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn hb_function_unregister(
    name: *const u8,
    name_len: usize,
    out_removed: *mut bool,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let name = unsafe { text(name, name_len, "name") }?;
        let removed = calls::unregister(name);
        // SAFETY: forwarded from this function's contract.
        unsafe { write_opt(out_removed, removed) };
        Ok(())
    })
}

/// Calls the function `name` on this thread with `args` (one MessagePack array) and writes its
/// result (one MessagePack value) to `*out` as a new `HbBytes` (free it with `hb_bytes_free`).
///
/// `HB_NO_FUNCTION` when none is registered; `HB_FUNCTION_FAILED` when it failed (its message is
/// `hb_last_error`); `HB_INVALID_VALUE` when `args` is not a MessagePack array or the result is
/// not one value. A function registered from Python runs holding the GIL, taken for the call.
///
/// # Safety
/// `name` is valid for `name_len` bytes, `args` for `args_len` bytes; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn hb_function_call(
    name: *const u8,
    name_len: usize,
    args: *const u8,
    args_len: usize,
    out: *mut *mut HbBytes,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let name = unsafe { text(name, name_len, "name") }?;
        // SAFETY: forwarded from this function's contract.
        let args = unsafe { crate::boundary::bytes(args, args_len, "args") }?;
        let result = calls::call(name, args).map_err(from_error)?;
        // SAFETY: checked non-NULL above; valid per the contract.
        unsafe { write_out(out, HbBytes::new(&result).into_raw(), "out") }
    })
}

/// Sets the result of the call in progress to `value` (one MessagePack value, copied).
///
/// # Safety
/// `result` is the slot handed to the running function; `value` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hb_call_result_set(
    result: *mut HbCallResult,
    value: *const u8,
    len: usize,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let value = unsafe { crate::boundary::bytes(value, len, "value") }?;
        // SAFETY: forwarded from this function's contract (NULL is checked by as_mut).
        let slot = unsafe { result.as_mut() }
            .ok_or_else(|| fail(HbStatus::HB_NULL_ARGUMENT, "result is NULL"))?;
        slot.0 = Some(Ok(value.to_vec()));
        Ok(())
    })
}

/// Makes the call in progress fail with `message` (UTF-8, copied): the caller gets
/// `HB_FUNCTION_FAILED` (Python: `HandlerError`) with this message.
///
/// # Safety
/// `result` is the slot handed to the running function; `message` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hb_call_result_fail(
    result: *mut HbCallResult,
    message: *const u8,
    len: usize,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let message = unsafe { text(message, len, "message") }?;
        // SAFETY: forwarded from this function's contract (NULL is checked by as_mut).
        let slot = unsafe { result.as_mut() }
            .ok_or_else(|| fail(HbStatus::HB_NULL_ARGUMENT, "result is NULL"))?;
        slot.0 = Some(Err(message.to_owned()));
        Ok(())
    })
}
