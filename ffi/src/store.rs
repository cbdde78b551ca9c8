//! The store through C: keys are UTF-8 `(ptr, len)`, values MessagePack `(ptr, len)`.

use std::time::Duration;

use hornbeam_core::{Ttl, Value};

use crate::boundary::{bytes, guard, need_out, text, write_opt, write_out, Handle};
use crate::engine::{HbBytes, HbEngine};
use crate::status::{fail, from_error, HbStatus};

/// Borrows the engine handle and the UTF-8 key that every store call starts with.
///
/// # Safety
/// `engine` is NULL or a live handle; `key` is NULL or valid for reads of `key_len` bytes.
#[inline(always)]
unsafe fn engine_key<'a>(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
) -> Result<(&'a HbEngine, &'a str), HbStatus> {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        Ok((
            HbEngine::from_ptr(engine, "engine")?,
            text(key, key_len, "key")?,
        ))
    }
}

/// The value at `key`, or `HB_NOT_FOUND`.
#[inline(always)]
fn found(e: &HbEngine, key: &str) -> Result<Value, HbStatus> {
    match e.0.store().get(key) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(not_found(key)),
        Err(err) => Err(from_error(err)),
    }
}

#[cold]
#[inline(never)]
fn not_found(key: &str) -> HbStatus {
    fail(HbStatus::HB_NOT_FOUND, format!("key {key:?} not found"))
}

/// Lends the MessagePack bytes of a value to `f` (a counter encoded on the stack): a borrow,
/// not the shared copy `Value::to_msgpack` makes (no reference-count round trip).
#[inline]
fn with_msgpack<R>(v: &Value, f: impl FnOnce(&[u8]) -> R) -> R {
    match v {
        Value::Int(i) => f(&hornbeam_core::value::encode_int(*i)),
        Value::Bytes(b) => f(b),
    }
}

fn ttl(ttl_ms: u64) -> Option<Duration> {
    (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms))
}

/// Reads `key` as MessagePack bytes. On success writes a new `HbBytes` to `*out` (free it with
/// `hb_bytes_free`); `HB_NOT_FOUND` when the key is missing.
///
/// # Safety
/// `engine` is a live handle; `key` is valid for `key_len` bytes; `out` for one pointer.
#[no_mangle]
pub unsafe extern "C" fn hb_get(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    out: *mut *mut HbBytes,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        let v = found(e, key)?;
        let b = with_msgpack(&v, HbBytes::new);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, b.into_raw(), "out") }
    })
}

/// Copies the MessagePack bytes of `key` into the caller's buffer `buf` of `buf_len` bytes (no
/// allocation) and writes their length to `*value_len`. `HB_NOT_FOUND` when the key is missing;
/// `HB_BUFFER_TOO_SMALL` when `buf_len` is less than the value's length, with nothing written but
/// the needed length to `*value_len` (call again with a larger buffer).
///
/// # Safety
/// `engine` is a live handle; `key` is valid for `key_len` bytes; `buf` is NULL (with `buf_len`
/// 0) or valid for writes of `buf_len` bytes; `value_len` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn hb_get_into(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    buf_len: usize,
    value_len: *mut usize,
) -> HbStatus {
    guard(|| {
        need_out(value_len, "value_len")?;
        if buf.is_null() && buf_len > 0 {
            return Err(fail(HbStatus::HB_NULL_ARGUMENT, "buf is NULL"));
        }
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        let v = found(e, key)?;
        with_msgpack(&v, |bytes| {
            // SAFETY: checked non-NULL above.
            unsafe { value_len.write(bytes.len()) };
            if bytes.len() > buf_len {
                return Err(too_small(key, bytes.len(), buf_len));
            }
            // SAFETY: `buf` holds `buf_len` >= bytes.len() bytes per the contract (or both are 0).
            unsafe { copy_out(bytes, buf) };
            Ok(())
        })
    })
}

/// Copies `src` to `dst` without a call into `memcpy` for short values (most reads: counters,
/// short strings): a few unaligned word moves from each end, overlapping when needed.
///
/// # Safety
/// `dst` is valid for writes of `src.len()` bytes and does not overlap `src`.
#[inline(always)]
unsafe fn copy_out(src: &[u8], dst: *mut u8) {
    let n = src.len();
    let s = src.as_ptr();
    // SAFETY: every read is within `src` (the offsets are below `n` and the widths fit) and every
    // write within `dst[..n]` (the caller's contract); unaligned moves need no alignment.
    unsafe {
        match n {
            0 => {}
            1..=3 => {
                dst.write(*s);
                dst.add(n / 2).write(*s.add(n / 2));
                dst.add(n - 1).write(*s.add(n - 1));
            }
            4..=7 => {
                let (a, b) = (
                    s.cast::<u32>().read_unaligned(),
                    s.add(n - 4).cast::<u32>().read_unaligned(),
                );
                dst.cast::<u32>().write_unaligned(a);
                dst.add(n - 4).cast::<u32>().write_unaligned(b);
            }
            8..=16 => {
                let (a, b) = (
                    s.cast::<u64>().read_unaligned(),
                    s.add(n - 8).cast::<u64>().read_unaligned(),
                );
                dst.cast::<u64>().write_unaligned(a);
                dst.add(n - 8).cast::<u64>().write_unaligned(b);
            }
            _ => std::ptr::copy_nonoverlapping(s, dst, n),
        }
    }
}

#[cold]
#[inline(never)]
fn too_small(key: &str, len: usize, buf_len: usize) -> HbStatus {
    fail(
        HbStatus::HB_BUFFER_TOO_SMALL,
        format!("value of key {key:?} is {len} bytes, the buffer {buf_len}"),
    )
}

/// Stores MessagePack bytes (`value`, `value_len`: one well-formed value) at `key`, expiring
/// after `ttl_ms` milliseconds (0: never). The bytes are copied.
///
/// # Safety
/// `engine` is a live handle; `key` and `value` are valid for their lengths.
#[no_mangle]
pub unsafe extern "C" fn hb_set(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_ms: u64,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        // SAFETY: forwarded from this function's contract.
        let value = unsafe { bytes(value, value_len, "value") }?;
        e.0.store()
            .set_msgpack(key, value, ttl(ttl_ms))
            .map_err(from_error)
    })
}

/// Stores an integer (a counter) at `key`, expiring after `ttl_ms` milliseconds (0: never).
///
/// # Safety
/// `engine` is a live handle; `key` is valid for `key_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hb_set_int(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    value: i64,
    ttl_ms: u64,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        e.0.store()
            .set(key, Value::Int(value), ttl(ttl_ms))
            .map_err(from_error)
    })
}

/// Reads the integer at `key` into `*out`. `HB_NOT_FOUND` when missing, `HB_NOT_AN_INTEGER`
/// when the value is something else.
///
/// # Safety
/// `engine` is a live handle; `key` is valid for `key_len` bytes; `out` for one `int64_t`.
#[no_mangle]
pub unsafe extern "C" fn hb_get_int(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    out: *mut i64,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        let v = found(e, key)?;
        let i = v.as_int().ok_or_else(|| {
            fail(
                HbStatus::HB_NOT_AN_INTEGER,
                format!("value of key {key:?} is not an integer"),
            )
        })?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, i, "out") }
    })
}

/// Stores UTF-8 text (`value`, `value_len`) at `key` as a MessagePack string (so Python reads
/// a `str`), expiring after `ttl_ms` milliseconds (0: never).
///
/// # Safety
/// `engine` is a live handle; `key` and `value` are valid for their lengths.
#[no_mangle]
pub unsafe extern "C" fn hb_set_str(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    ttl_ms: u64,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        // SAFETY: forwarded from this function's contract.
        let value = unsafe { text(value, value_len, "value") }?;
        let v = Value::encode(value).map_err(from_error)?;
        e.0.store().set(key, v, ttl(ttl_ms)).map_err(from_error)
    })
}

/// Reads the string at `key`. On success writes a new `HbBytes` (UTF-8, NUL-terminated) to
/// `*out`; free it with `hb_bytes_free`. `HB_NOT_FOUND` when missing, `HB_INVALID_VALUE` when
/// the value is not a string.
///
/// # Safety
/// `engine` is a live handle; `key` is valid for `key_len` bytes; `out` for one pointer.
#[no_mangle]
pub unsafe extern "C" fn hb_get_str(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    out: *mut *mut HbBytes,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        let v = found(e, key)?;
        let s = v.as_str().ok_or_else(|| {
            fail(
                HbStatus::HB_INVALID_VALUE,
                format!("value of key {key:?} is not a string"),
            )
        })?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, HbBytes::new(s.as_bytes()).into_raw(), "out") }
    })
}

/// Removes `key`. When `existed` is not NULL, writes whether the key was there.
///
/// # Safety
/// `engine` is a live handle; `key` is valid for `key_len` bytes; `existed` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn hb_delete(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    existed: *mut bool,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        let was = e.0.store().delete(key).map_err(from_error)?;
        // SAFETY: `existed` is NULL or valid per the contract.
        unsafe { write_opt(existed, was) };
        Ok(())
    })
}

/// Adds `delta` to the counter at `key` (a missing key counts from 0) and writes the new value
/// to `*out`. `HB_NOT_AN_INTEGER` or `HB_OVERFLOW` leave the value unchanged.
///
/// # Safety
/// `engine` is a live handle; `key` is valid for `key_len` bytes; `out` for one `int64_t`.
#[no_mangle]
pub unsafe extern "C" fn hb_incr(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    delta: i64,
    out: *mut i64,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        let n = e.0.store().incr(key, delta).map_err(from_error)?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, n, "out") }
    })
}

/// Sets `key` to expire after `ttl_ms` milliseconds (at least 1). When `existed` is not NULL,
/// writes whether the key exists.
///
/// # Safety
/// `engine` is a live handle; `key` is valid for `key_len` bytes; `existed` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn hb_expire(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    ttl_ms: u64,
    existed: *mut bool,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        let was =
            e.0.store()
                .expire(key, Duration::from_millis(ttl_ms.max(1)))
                .map_err(from_error)?;
        // SAFETY: `existed` is NULL or valid per the contract.
        unsafe { write_opt(existed, was) };
        Ok(())
    })
}

/// Writes the milliseconds until `key` expires to `*out`: -1 when it never expires, -2 when
/// it does not exist (as Redis' `PTTL`).
///
/// # Safety
/// `engine` is a live handle; `key` is valid for `key_len` bytes; `out` for one `int64_t`.
#[no_mangle]
pub unsafe extern "C" fn hb_ttl(
    engine: *const HbEngine,
    key: *const u8,
    key_len: usize,
    out: *mut i64,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let (e, key) = unsafe { engine_key(engine, key, key_len) }?;
        let ms = match e.0.store().ttl(key).map_err(from_error)? {
            Ttl::Missing => -2,
            Ttl::Persistent => -1,
            Ttl::Expires(d) => d.as_millis().min(i64::MAX as u128) as i64,
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ms, "out") }
    })
}

/// Removes every key of the store (on `local://` and Redis, the store every process shares).
/// Every mailbox watching any prefix receives one `HB_CHANGE_CLEAR` event.
///
/// # Safety
/// `engine` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn hb_clear(engine: *const HbEngine) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let e = unsafe { HbEngine::from_ptr(engine, "engine") }?;
        e.0.store().try_clear().map_err(from_error)
    })
}

/// A sorted list of keys, owned by the caller: read with `hb_key_list_len` and
/// `hb_key_list_get`, free with `hb_key_list_free`. Immutable, so safe to read from any thread.
pub struct HbKeyList(Vec<String>);

impl Handle for HbKeyList {}

/// The keys starting with `prefix` (all keys for an empty prefix), sorted. On success writes
/// a new list to `*out`; free it with `hb_key_list_free`.
///
/// # Safety
/// `engine` is a live handle; `prefix` is valid for `prefix_len` bytes (or NULL with 0);
/// `out` for one pointer.
#[no_mangle]
pub unsafe extern "C" fn hb_keys(
    engine: *const HbEngine,
    prefix: *const u8,
    prefix_len: usize,
    out: *mut *mut HbKeyList,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let (e, prefix) = unsafe {
            (
                HbEngine::from_ptr(engine, "engine")?,
                text(prefix, prefix_len, "prefix")?,
            )
        };
        let keys = e.0.store().keys(prefix).map_err(from_error)?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, HbKeyList(keys).into_raw(), "out") }
    })
}

/// Number of keys in the list (0 for NULL).
///
/// # Safety
/// `list` is NULL or a live `HbKeyList`.
#[no_mangle]
pub unsafe extern "C" fn hb_key_list_len(list: *const HbKeyList) -> usize {
    // SAFETY: forwarded from this function's contract.
    unsafe { list.as_ref() }.map_or(0, |l| l.0.len())
}

/// Borrows key `index` of the list: writes a pointer to its UTF-8 bytes (not NUL-terminated;
/// valid until the list is freed) and its length. `HB_INVALID_ARGUMENT` past the end.
///
/// # Safety
/// `list` is a live `HbKeyList`; `key` and `key_len` are valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn hb_key_list_get(
    list: *const HbKeyList,
    index: usize,
    key: *mut *const u8,
    key_len: *mut usize,
) -> HbStatus {
    guard(|| {
        need_out(key, "key")?;
        need_out(key_len, "key_len")?;
        // SAFETY: forwarded from this function's contract.
        let l = unsafe { HbKeyList::from_ptr(list, "list") }?;
        let k = l.0.get(index).ok_or_else(|| {
            fail(
                HbStatus::HB_INVALID_ARGUMENT,
                format!("index {index} past the end ({})", l.0.len()),
            )
        })?;
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(key, k.as_ptr(), "key")?;
            write_out(key_len, k.len(), "key_len")
        }
    })
}

/// Frees a key list. NULL does nothing.
///
/// # Safety
/// `list` is NULL or a live `HbKeyList`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hb_key_list_free(list: *mut HbKeyList) {
    // SAFETY: forwarded from this function's contract.
    unsafe { HbKeyList::free(list) }
}

#[cfg(test)]
mod tests {
    use super::copy_out;

    #[test]
    fn copy_out_copies_every_length_and_nothing_past_it() {
        let src: Vec<u8> = (1..=40).collect();
        for n in 0..=src.len() {
            let mut dst = [0u8; 48];
            // SAFETY: `dst` holds 48 >= n bytes and is a separate array.
            unsafe { copy_out(&src[..n], dst.as_mut_ptr()) };
            assert_eq!(&dst[..n], &src[..n], "{n}");
            assert!(dst[n..].iter().all(|&b| b == 0), "{n}");
        }
    }
}
