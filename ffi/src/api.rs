//! The function table that `hornbeam_erlang` hands to C extensions in the same Python process.
//!
//! A C extension linked against its own `libhornbeam` would have its own default engine. To use
//! the *same* engine as Python code, it takes this table from the capsule
//! `hornbeam_erlang._native._C_API` (`PyCapsule_Import`) and calls through it: the functions are
//! the Python module's own copies, so they see its keys and topics.

use crate::bus::*;
use crate::calls::*;
use crate::engine::*;
use crate::status::*;
use crate::store::*;

/// Version of [`HbApi`]'s layout; new fields are only ever appended.
pub const HB_API_VERSION: u32 = 2;

/// Pointers to the library's functions (see each function for its contract). Static and
/// immutable: never freed, safe from any thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HbApi {
    /// `HB_API_VERSION` of the library that filled the table.
    pub version: u32,
    /// `hb_engine_default`
    pub engine_default: unsafe extern "C" fn(*mut *mut HbEngine) -> HbStatus,
    /// `hb_engine_free`
    pub engine_free: unsafe extern "C" fn(*mut HbEngine),
    /// `hb_get`
    pub get: unsafe extern "C" fn(*const HbEngine, *const u8, usize, *mut *mut HbBytes) -> HbStatus,
    /// `hb_set`
    pub set:
        unsafe extern "C" fn(*const HbEngine, *const u8, usize, *const u8, usize, u64) -> HbStatus,
    /// `hb_get_int`
    pub get_int: unsafe extern "C" fn(*const HbEngine, *const u8, usize, *mut i64) -> HbStatus,
    /// `hb_set_int`
    pub set_int: unsafe extern "C" fn(*const HbEngine, *const u8, usize, i64, u64) -> HbStatus,
    /// `hb_get_str`
    pub get_str:
        unsafe extern "C" fn(*const HbEngine, *const u8, usize, *mut *mut HbBytes) -> HbStatus,
    /// `hb_set_str`
    pub set_str:
        unsafe extern "C" fn(*const HbEngine, *const u8, usize, *const u8, usize, u64) -> HbStatus,
    /// `hb_delete`
    pub delete: unsafe extern "C" fn(*const HbEngine, *const u8, usize, *mut bool) -> HbStatus,
    /// `hb_incr`
    pub incr: unsafe extern "C" fn(*const HbEngine, *const u8, usize, i64, *mut i64) -> HbStatus,
    /// `hb_publish`
    pub publish: unsafe extern "C" fn(
        *const HbEngine,
        *const u8,
        usize,
        *const u8,
        usize,
        *mut usize,
    ) -> HbStatus,
    /// `hb_publish_str`
    pub publish_str: unsafe extern "C" fn(
        *const HbEngine,
        *const u8,
        usize,
        *const u8,
        usize,
        *mut usize,
    ) -> HbStatus,
    /// `hb_bytes_data`
    pub bytes_data: unsafe extern "C" fn(*const HbBytes) -> *const u8,
    /// `hb_bytes_len`
    pub bytes_len: unsafe extern "C" fn(*const HbBytes) -> usize,
    /// `hb_bytes_free`
    pub bytes_free: unsafe extern "C" fn(*mut HbBytes),
    /// `hb_mailbox_new`
    pub mailbox_new: unsafe extern "C" fn(*const HbEngine, *mut *mut HbMailbox) -> HbStatus,
    /// `hb_mailbox_subscribe`
    pub mailbox_subscribe: unsafe extern "C" fn(*const HbMailbox, *const u8, usize) -> HbStatus,
    /// `hb_mailbox_recv`
    pub mailbox_recv: unsafe extern "C" fn(*const HbMailbox, i64, *mut *mut HbMessage) -> HbStatus,
    /// `hb_mailbox_free`
    pub mailbox_free: unsafe extern "C" fn(*mut HbMailbox),
    /// `hb_message_payload`
    pub message_payload:
        unsafe extern "C" fn(*const HbMessage, *mut *const u8, *mut usize) -> HbStatus,
    /// `hb_message_free`
    pub message_free: unsafe extern "C" fn(*mut HbMessage),
    /// `hb_last_error`
    pub last_error: unsafe extern "C" fn(*mut std::ffi::c_char, usize) -> usize,
    /// `hb_function_register` (version 2)
    pub function_register: unsafe extern "C" fn(
        *const u8,
        usize,
        HbFunction,
        *mut std::ffi::c_void,
        HbFreeFn,
    ) -> HbStatus,
    /// `hb_function_unregister` (version 2)
    pub function_unregister: unsafe extern "C" fn(*const u8, usize, *mut bool) -> HbStatus,
    /// `hb_function_call` (version 2)
    pub function_call:
        unsafe extern "C" fn(*const u8, usize, *const u8, usize, *mut *mut HbBytes) -> HbStatus,
    /// `hb_call_result_set` (version 2)
    pub call_result_set: unsafe extern "C" fn(*mut HbCallResult, *const u8, usize) -> HbStatus,
    /// `hb_call_result_fail` (version 2)
    pub call_result_fail: unsafe extern "C" fn(*mut HbCallResult, *const u8, usize) -> HbStatus,
}

static API: HbApi = HbApi {
    version: HB_API_VERSION,
    engine_default: hb_engine_default,
    engine_free: hb_engine_free,
    get: hb_get,
    set: hb_set,
    get_int: hb_get_int,
    set_int: hb_set_int,
    get_str: hb_get_str,
    set_str: hb_set_str,
    delete: hb_delete,
    incr: hb_incr,
    publish: hb_publish,
    publish_str: hb_publish_str,
    bytes_data: hb_bytes_data,
    bytes_len: hb_bytes_len,
    bytes_free: hb_bytes_free,
    mailbox_new: hb_mailbox_new,
    mailbox_subscribe: hb_mailbox_subscribe,
    mailbox_recv: hb_mailbox_recv,
    mailbox_free: hb_mailbox_free,
    message_payload: hb_message_payload,
    message_free: hb_message_free,
    last_error: hb_last_error,
    function_register: hb_function_register,
    function_unregister: hb_function_unregister,
    function_call: hb_function_call,
    call_result_set: hb_call_result_set,
    call_result_fail: hb_call_result_fail,
};

/// The library's function table (static; never free it).
#[no_mangle]
pub extern "C" fn hb_api() -> *const HbApi {
    &API
}
