//! MessagePack values as the store accepts them, checked against rmpv, in Rust and through the
//! C ABI.
//!
//! The rule (`hornbeam_core::value::validate`): exactly one value, no trailing bytes, valid UTF-8
//! in every string, nesting at most `MAX_DEPTH` deep. rmpv decodes independently; the store must
//! accept exactly the inputs the rule allows, hand back the same bytes (or the same integer), and
//! leave the old value in place when it refuses.

use hornbeam::{store, HbBytes, HbEngine, HbStatus};
use hornbeam_core::value::{decode_int, MAX_DEPTH};
use hornbeam_core::Value;

/// Whether rmpv reads `data` as one value that the rule allows (and rmp-serde reads it too).
pub fn reference_accepts(data: &[u8]) -> bool {
    let mut rest = data;
    // rmpv's own depth limit is far above ours: the depth rule is checked by `allowed`.
    let Ok(value) = rmpv::decode::read_value_with_max_depth(&mut rest, 64 * 1024) else {
        return false;
    };
    // rmpv reads the reserved byte 0xc1 as nil; rmp-serde refuses it, as the specification does.
    rest.is_empty()
        && allowed(&value, 0)
        && rmp_serde::from_slice::<serde::de::IgnoredAny>(data).is_ok()
}

/// Every string valid UTF-8, every value at most `MAX_DEPTH` levels down.
fn allowed(value: &rmpv::Value, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match value {
        rmpv::Value::String(s) => s.as_str().is_some(),
        rmpv::Value::Array(items) => items.iter().all(|v| allowed(v, depth + 1)),
        rmpv::Value::Map(pairs) => pairs
            .iter()
            .all(|(k, v)| allowed(k, depth + 1) && allowed(v, depth + 1)),
        _ => true,
    }
}

/// The integer rmpv reads, when `data` is one integer in `i64` range.
fn reference_int(data: &[u8]) -> Option<i64> {
    let mut rest = data;
    match rmpv::decode::read_value(&mut rest) {
        Ok(rmpv::Value::Integer(i)) if rest.is_empty() => i.as_i64(),
        _ => None,
    }
}

/// Runs one input through `Value::from_msgpack` and the C ABI's `hb_set`/`hb_get`/`hb_get_into`.
pub fn check(data: &[u8]) {
    let expected = reference_accepts(data);
    let ours = Value::from_msgpack(data, "k");
    assert_eq!(
        ours.is_ok(),
        expected,
        "from_msgpack and rmpv disagree on {data:02x?}: {ours:?}"
    );
    if let Ok(value) = &ours {
        match value {
            Value::Int(i) => {
                assert_eq!(Some(*i), reference_int(data), "counter value");
                assert_eq!(decode_int(&value.to_msgpack()), Some(*i), "re-encoding");
            }
            Value::Bytes(b) => {
                assert_eq!(&**b, data, "stored bytes");
                assert_eq!(
                    reference_int(data),
                    None,
                    "an i64 must be kept as a counter"
                );
            }
        }
    }
    check_c_abi(data, expected);
}

/// A fresh engine through the C ABI, freed when dropped.
struct Engine(*mut HbEngine);

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: the pointer came from hb_engine_new and is freed once.
        unsafe { hornbeam::engine::hb_engine_free(self.0) }
    }
}

fn c_get(engine: &Engine, key: &[u8]) -> Vec<u8> {
    let mut out: *mut HbBytes = std::ptr::null_mut();
    // SAFETY: live engine, key valid for its length, out valid for one pointer write.
    let status = unsafe { store::hb_get(engine.0, key.as_ptr(), key.len(), &mut out) };
    assert_eq!(status, HbStatus::HB_OK);
    // SAFETY: `out` is a live HbBytes written by hb_get; read, copied, then freed once.
    unsafe {
        let bytes = std::slice::from_raw_parts(
            hornbeam::engine::hb_bytes_data(out),
            hornbeam::engine::hb_bytes_len(out),
        )
        .to_vec();
        hornbeam::engine::hb_bytes_free(out);
        bytes
    }
}

fn check_c_abi(data: &[u8], expected: bool) {
    let mut raw: *mut HbEngine = std::ptr::null_mut();
    // SAFETY: `raw` is valid for one pointer write.
    assert_eq!(
        unsafe { hornbeam::engine::hb_engine_new(&mut raw) },
        HbStatus::HB_OK
    );
    let engine = Engine(raw);
    let key = b"fuzz:key";
    let before = [0xa3, b'o', b'l', b'd']; // "old"
                                           // SAFETY (all calls below): live engine; pointers valid for the lengths passed with them.
    let status = unsafe { store::hb_set(engine.0, key.as_ptr(), key.len(), before.as_ptr(), 4, 0) };
    assert_eq!(status, HbStatus::HB_OK);
    let status = unsafe {
        store::hb_set(
            engine.0,
            key.as_ptr(),
            key.len(),
            data.as_ptr(),
            data.len(),
            0,
        )
    };
    if !expected {
        assert_eq!(
            status,
            HbStatus::HB_INVALID_VALUE,
            "refusal status for {data:02x?}"
        );
        assert_eq!(
            c_get(&engine, key),
            before,
            "a refused value must leave the old one"
        );
        return;
    }
    assert_eq!(status, HbStatus::HB_OK, "hb_set refused {data:02x?}");
    let got = c_get(&engine, key);
    match reference_int(data) {
        Some(i) => assert_eq!(decode_int(&got), Some(i)),
        None => assert_eq!(got, data),
    }
    // The caller-buffer read: too small gives the length and writes nothing; exact fits.
    let mut len = usize::MAX;
    let mut small = vec![0x55u8; got.len().saturating_sub(1)];
    let status = unsafe {
        store::hb_get_into(
            engine.0,
            key.as_ptr(),
            key.len(),
            small.as_mut_ptr(),
            small.len(),
            &mut len,
        )
    };
    assert_eq!(status, HbStatus::HB_BUFFER_TOO_SMALL);
    assert_eq!(len, got.len());
    assert!(
        small.iter().all(|&b| b == 0x55),
        "nothing written on BUFFER_TOO_SMALL"
    );
    let mut exact = vec![0u8; got.len()];
    let status = unsafe {
        store::hb_get_into(
            engine.0,
            key.as_ptr(),
            key.len(),
            exact.as_mut_ptr(),
            exact.len(),
            &mut len,
        )
    };
    assert_eq!(status, HbStatus::HB_OK);
    assert_eq!((len, &exact), (got.len(), &got));
}
