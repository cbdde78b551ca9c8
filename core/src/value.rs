//! Stored values: MessagePack bytes, with integers kept unboxed so counters are cheap.
//!
//! Every value crosses the engine as MessagePack, so Rust, C and Python read each other's data.
//! A value that is a single MessagePack integer (in `i64` range) is a *counter*: the store keeps it
//! as an `i64` so that `incr` needs no decoding, and hands it back as MessagePack when asked.

use std::sync::Arc;

use crate::error::{shorten, Error, Result};

/// Deepest nesting of arrays and maps accepted in a stored value or message.
pub const MAX_DEPTH: usize = 512;

/// A value as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A MessagePack integer in `i64` range: a counter.
    Int(i64),
    /// Any other MessagePack value, as its encoded bytes (shared, never copied on read).
    Bytes(Arc<[u8]>),
}

impl Value {
    /// Classifies MessagePack bytes: an integer becomes [`Value::Int`], anything else is kept as
    /// bytes after checking that it is exactly one well-formed MessagePack value.
    ///
    /// `what` names the key or topic, for the error message.
    pub fn from_msgpack(bytes: &[u8], what: &str) -> Result<Value> {
        if let Some(i) = decode_int(bytes) {
            return Ok(Value::Int(i));
        }
        validate(bytes).map_err(|reason| Error::InvalidValue {
            key: shorten(what),
            reason,
        })?;
        Ok(Value::Bytes(Arc::from(bytes)))
    }

    /// A value from MessagePack bytes that an encoder already guarantees to be exactly one
    /// well-formed value, nested at most [`MAX_DEPTH`] deep, with valid UTF-8 in every string
    /// (the Python binding's encoder, which builds them from Python objects): classified as
    /// [`Value::from_msgpack`] does, without walking the bytes a second time. Bytes from outside
    /// (C callers, the network) go through [`Value::from_msgpack`]. Debug builds check anyway.
    pub fn from_encoded(bytes: &[u8]) -> Value {
        if let Some(i) = decode_int(bytes) {
            return Value::Int(i);
        }
        debug_assert_eq!(validate(bytes), Ok(()));
        Value::Bytes(Arc::from(bytes))
    }

    /// The value as MessagePack bytes (allocates only for integers).
    pub fn to_msgpack(&self) -> Arc<[u8]> {
        match self {
            Value::Int(i) => Arc::from(&*encode_int(*i)),
            Value::Bytes(b) => b.clone(),
        }
    }

    /// Appends the value's MessagePack encoding to `out`.
    pub fn write_msgpack(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => out.extend_from_slice(&encode_int(*i)),
            Value::Bytes(b) => out.extend_from_slice(b),
        }
    }

    /// The text, when this value is a MessagePack str (a bin of UTF-8 bytes is not a string).
    pub fn as_str(&self) -> Option<&str> {
        let Value::Bytes(b) = self else { return None };
        let start = match b.first()? {
            0xa0..=0xbf => 1,
            0xd9 => 2,
            0xda => 3,
            0xdb => 5,
            _ => return None,
        };
        // A stored value is exactly one value: the string runs to the end.
        std::str::from_utf8(b.get(start..)?).ok()
    }

    /// The integer, when this value is a counter.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bytes(_) => None,
        }
    }

    /// Size of the value's encoding in bytes.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::Int(i) => int_len(*i),
            Value::Bytes(b) => b.len(),
        }
    }

    /// Encodes any serde value as MessagePack (maps with field names, as Python and C expect).
    pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Value> {
        let bytes = rmp_serde::to_vec_named(value)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode value: {e}")))?;
        Value::from_msgpack(&bytes, "value")
    }

    /// Decodes the value into any serde type.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let bytes = self.to_msgpack();
        rmp_serde::from_slice(&bytes).map_err(|e| Error::InvalidValue {
            key: String::from("value"),
            reason: e.to_string(),
        })
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

/// The shortest MessagePack encoding of an integer (at most 9 bytes).
#[inline]
pub fn encode_int(i: i64) -> smallbuf::SmallBuf {
    let mut b = smallbuf::SmallBuf::default();
    if i >= 0 {
        let u = i as u64;
        if u < 128 {
            b.push(&[u as u8]);
        } else if u <= u8::MAX as u64 {
            b.push(&[0xcc, u as u8]);
        } else if u <= u16::MAX as u64 {
            b.push(&[0xcd]);
            b.push(&(u as u16).to_be_bytes());
        } else if u <= u32::MAX as u64 {
            b.push(&[0xce]);
            b.push(&(u as u32).to_be_bytes());
        } else {
            b.push(&[0xcf]);
            b.push(&u.to_be_bytes());
        }
    } else if i >= -32 {
        b.push(&[i as u8]);
    } else if i >= i8::MIN as i64 {
        b.push(&[0xd0, i as u8]);
    } else if i >= i16::MIN as i64 {
        b.push(&[0xd1]);
        b.push(&(i as i16).to_be_bytes());
    } else if i >= i32::MIN as i64 {
        b.push(&[0xd2]);
        b.push(&(i as i32).to_be_bytes());
    } else {
        b.push(&[0xd3]);
        b.push(&i.to_be_bytes());
    }
    b
}

/// Length of [`encode_int`]'s output, without encoding (counters ask for it on every `incr`).
#[inline]
pub fn int_len(i: i64) -> usize {
    match i {
        -32..=127 => 1,
        -128..=255 => 2,
        -32_768..=65_535 => 3,
        -2_147_483_648..=4_294_967_295 => 5,
        _ => 9,
    }
}

/// Decodes `bytes` when it is exactly one MessagePack integer in `i64` range.
pub fn decode_int(bytes: &[u8]) -> Option<i64> {
    let (&first, rest) = bytes.split_first()?;
    let be = |n: usize| -> Option<[u8; 8]> {
        if rest.len() != n {
            return None;
        }
        let mut buf = [0u8; 8];
        buf[8 - n..].copy_from_slice(rest);
        Some(buf)
    };
    match first {
        0x00..=0x7f if rest.is_empty() => Some(first as i64),
        0xe0..=0xff if rest.is_empty() => Some(first as i8 as i64),
        0xcc => be(1).map(|b| u64::from_be_bytes(b) as i64),
        0xcd => be(2).map(|b| u64::from_be_bytes(b) as i64),
        0xce => be(4).map(|b| u64::from_be_bytes(b) as i64),
        0xcf => be(8).and_then(|b| i64::try_from(u64::from_be_bytes(b)).ok()),
        0xd0 => be(1).map(|_| rest[0] as i8 as i64),
        0xd1 => be(2).map(|_| i16::from_be_bytes([rest[0], rest[1]]) as i64),
        0xd2 => be(4).map(|_| i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as i64),
        0xd3 => be(8).map(i64::from_be_bytes),
        _ => None,
    }
}

/// Checks that `bytes` holds exactly one well-formed MessagePack value, nested at most
/// [`MAX_DEPTH`] deep, with valid UTF-8 in every string.
pub fn validate(bytes: &[u8]) -> std::result::Result<(), String> {
    let end = skip(bytes, 0, 0)?;
    if end != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the value",
            bytes.len() - end
        ));
    }
    Ok(())
}

fn need(bytes: &[u8], pos: usize, n: usize) -> std::result::Result<&[u8], String> {
    bytes
        .get(pos..pos.checked_add(n).ok_or("length overflow")?)
        .ok_or_else(|| String::from("truncated value"))
}

fn be_len(bytes: &[u8], pos: usize, n: usize) -> std::result::Result<usize, String> {
    let b = need(bytes, pos, n)?;
    Ok(b.iter().fold(0usize, |acc, &x| (acc << 8) | x as usize))
}

/// Returns the position just past the value starting at `pos`.
fn skip(bytes: &[u8], pos: usize, depth: usize) -> std::result::Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let first = *bytes.get(pos).ok_or("empty or truncated value")?;
    let p = pos + 1;
    let str_at = |start: usize, len: usize| -> std::result::Result<usize, String> {
        let s = need(bytes, start, len)?;
        std::str::from_utf8(s).map_err(|_| String::from("string is not valid UTF-8"))?;
        Ok(start + len)
    };
    let raw_at = |start: usize, len: usize| -> std::result::Result<usize, String> {
        need(bytes, start, len)?;
        Ok(start + len)
    };
    let seq = |mut at: usize, items: usize| -> std::result::Result<usize, String> {
        for _ in 0..items {
            at = skip(bytes, at, depth + 1)?;
        }
        Ok(at)
    };
    match first {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Ok(p),
        0x80..=0x8f => seq(p, 2 * (first & 0x0f) as usize),
        0x90..=0x9f => seq(p, (first & 0x0f) as usize),
        0xa0..=0xbf => str_at(p, (first & 0x1f) as usize),
        0xc1 => Err(String::from("reserved byte 0xc1")),
        0xc4 => raw_at(p + 1, be_len(bytes, p, 1)?),
        0xc5 => raw_at(p + 2, be_len(bytes, p, 2)?),
        0xc6 => raw_at(p + 4, be_len(bytes, p, 4)?),
        0xc7 => raw_at(p + 2, be_len(bytes, p, 1)?),
        0xc8 => raw_at(p + 3, be_len(bytes, p, 2)?),
        0xc9 => raw_at(p + 5, be_len(bytes, p, 4)?),
        0xca => raw_at(p, 4),
        0xcb => raw_at(p, 8),
        0xcc | 0xd0 => raw_at(p, 1),
        0xcd | 0xd1 => raw_at(p, 2),
        0xce | 0xd2 => raw_at(p, 4),
        0xcf | 0xd3 => raw_at(p, 8),
        0xd4 => raw_at(p, 2),
        0xd5 => raw_at(p, 3),
        0xd6 => raw_at(p, 5),
        0xd7 => raw_at(p, 9),
        0xd8 => raw_at(p, 17),
        0xd9 => str_at(p + 1, be_len(bytes, p, 1)?),
        0xda => str_at(p + 2, be_len(bytes, p, 2)?),
        0xdb => str_at(p + 4, be_len(bytes, p, 4)?),
        0xdc => seq(p + 2, be_len(bytes, p, 2)?),
        0xdd => seq(p + 4, be_len(bytes, p, 4)?),
        0xde => seq(p + 2, 2 * be_len(bytes, p, 2)?),
        0xdf => seq(p + 4, 2usize.saturating_mul(be_len(bytes, p, 4)?)),
    }
}

/// A tiny fixed buffer for an encoded integer, so encoding a counter never allocates.
pub mod smallbuf {
    /// Up to 9 bytes, on the stack.
    #[derive(Default, Clone, Copy)]
    pub struct SmallBuf {
        buf: [u8; 9],
        len: u8,
    }

    impl SmallBuf {
        #[inline]
        pub(crate) fn push(&mut self, bytes: &[u8]) {
            let start = self.len as usize;
            self.buf[start..start + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len() as u8;
        }
    }

    impl std::ops::Deref for SmallBuf {
        type Target = [u8];
        #[inline]
        fn deref(&self) -> &[u8] {
            &self.buf[..self.len as usize]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_len_matches_the_encoding() {
        for i in [
            i64::MIN,
            -2_147_483_649,
            -2_147_483_648,
            -32_769,
            -32_768,
            -129,
            -128,
            -33,
            -32,
            -1,
            0,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            4_294_967_295,
            4_294_967_296,
            i64::MAX,
        ] {
            assert_eq!(int_len(i), encode_int(i).len(), "{i}");
        }
    }

    #[test]
    fn int_roundtrip_all_widths() {
        for i in [
            0,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as i64,
            u32::MAX as i64 + 1,
            i64::MAX,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i32::MIN as i64,
            i32::MIN as i64 - 1,
            i64::MIN,
        ] {
            let enc = encode_int(i);
            assert_eq!(decode_int(&enc), Some(i), "{i}");
            let via_rmp: i64 = rmp_serde::from_slice(&enc).unwrap();
            assert_eq!(via_rmp, i);
            assert!(validate(&enc).is_ok());
        }
    }

    #[test]
    fn u64_past_i64_is_not_a_counter() {
        let bytes = rmp_serde::to_vec(&u64::MAX).unwrap();
        assert_eq!(decode_int(&bytes), None);
        assert!(matches!(
            Value::from_msgpack(&bytes, "k").unwrap(),
            Value::Bytes(_)
        ));
    }

    #[test]
    fn validate_rejects_garbage() {
        assert!(validate(&[]).is_err());
        assert!(validate(&[0xc1]).is_err());
        assert!(validate(&[0x92, 0x01]).is_err(), "truncated array");
        assert!(validate(&[0x01, 0x02]).is_err(), "trailing bytes");
        assert!(validate(&[0xa2, 0xff, 0xfe]).is_err(), "bad utf-8");
        assert!(
            validate(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "huge array header"
        );
        let deep: Vec<u8> = std::iter::repeat_n(0x91, MAX_DEPTH + 2)
            .chain([0xc0])
            .collect();
        assert!(validate(&deep).unwrap_err().contains("nested"));
        // The limit itself (found by fuzz/msgpack_value): a scalar at depth MAX_DEPTH is fine,
        // one level more is not.
        let at = |levels: usize| -> Vec<u8> {
            std::iter::repeat_n(0x91, levels).chain([0x00]).collect()
        };
        assert!(validate(&at(MAX_DEPTH)).is_ok());
        assert!(validate(&at(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn as_str_reads_every_str_width_and_nothing_else() {
        for text in [
            "",
            "héllo",
            &"x".repeat(40),
            &"y".repeat(300),
            &"z".repeat(70_000),
        ] {
            let v = Value::encode(text).unwrap();
            assert_eq!(v.as_str(), Some(text));
        }
        let bin = Value::from_msgpack(&[0xc4, 0x03, b'a', b'b', b'c'], "k").unwrap();
        assert_eq!(bin.as_str(), None);
        assert_eq!(Value::Int(7).as_str(), None);
        assert_eq!(Value::encode(&["a"]).unwrap().as_str(), None);
    }

    #[test]
    fn serde_roundtrip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct User {
            name: String,
            age: u8,
        }
        let u = User {
            name: "ann".into(),
            age: 7,
        };
        let v = Value::encode(&u).unwrap();
        assert_eq!(v.decode::<User>().unwrap(), u);
        assert_eq!(Value::encode(&5i64).unwrap(), Value::Int(5));
    }
}
