//! Python objects to MessagePack bytes and back, directly, with no intermediate tree.
//!
//! Storable: `None`, `bool`, `int` (64-bit), `float`, `str`, `bytes`, `list`/`tuple` (read back
//! as `list`), `dict` with `str` keys. Anything else is a `TypeError` naming the type and where it
//! sat (`value['user']['joined_at']: datetime is not storable`).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use std::sync::Mutex;

use hornbeam_core::value::{encode_int, MAX_DEPTH};
use hornbeam_core::Value;

/// Where in the value an error sat, innermost segment last.
enum Seg {
    Key(String),
    Index(usize),
}

enum Fault {
    NotStorable(String),
    IntRange,
    Depth,
    DictKey(String),
    Py(PyErr),
}

struct EncodeError {
    path: Vec<Seg>,
    fault: Fault,
}

impl EncodeError {
    fn at(mut self, seg: Seg) -> Self {
        self.path.push(seg);
        self
    }

    fn into_pyerr(self, root: &str) -> PyErr {
        let mut where_ = String::from(root);
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Key(k) => where_.push_str(&format!("[{k:?}]").replace('"', "'")),
                Seg::Index(i) => where_.push_str(&format!("[{i}]")),
            }
        }
        match self.fault {
            Fault::NotStorable(ty) => PyTypeError::new_err(format!(
                "{where_}: {ty} is not storable (use None, bool, int, float, str, bytes, list, tuple or dict with str keys)"
            )),
            Fault::IntRange => PyValueError::new_err(format!("{where_}: int does not fit in 64 bits")),
            Fault::Depth => PyValueError::new_err(format!("{where_}: nested deeper than {MAX_DEPTH} levels")),
            Fault::DictKey(ty) => PyTypeError::new_err(format!("{where_}: dict key of type {ty} is not storable (keys must be str)")),
            Fault::Py(e) => e,
        }
    }
}

fn fault(f: Fault) -> EncodeError {
    EncodeError {
        path: Vec::new(),
        fault: f,
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| String::from("object"))
}

/// Encodes a Python object as MessagePack; `root` names it in error messages (`"value"`).
pub(crate) fn encode(obj: &Bound<'_, PyAny>, root: &str) -> PyResult<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    write(obj, &mut out, 0).map_err(|e| e.into_pyerr(root))?;
    Ok(out)
}

thread_local! {
    /// The encoder's scratch buffer, reused by every `encode_value` of the thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Scratch buffers larger than this are given back after use.
const SCRATCH_KEEP: usize = 64 * 1024;

/// Encodes a Python object as a stored value: into the thread's scratch buffer (no allocation
/// but the value's own), and checked once: `write` only produces one well-formed value within
/// `MAX_DEPTH` with UTF-8 strings, so core does not walk the bytes again
/// ([`Value::from_encoded`]).
pub(crate) fn encode_value(obj: &Bound<'_, PyAny>, root: &str) -> PyResult<Value> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let done = write(obj, &mut buf, 0).map_err(|e| e.into_pyerr(root));
            let value = done.map(|()| Value::from_encoded(&buf));
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            value
        }
        // Re-entered (a finalizer run by the collector mid-encode stored something): use a
        // buffer of its own.
        Err(_) => encode(obj, root).map(|b| Value::from_encoded(&b)),
    })
}

fn write_len(
    out: &mut Vec<u8>,
    len: usize,
    fix: Option<(u8, usize)>,
    m8: Option<u8>,
    m16: u8,
    m32: u8,
) -> Result<(), EncodeError> {
    // bin has no fix form: an empty bytes is `c4 00`, never the integer 0 (found by
    // fuzz/python/fuzz_decode.py).
    if let Some((fix, _)) = fix.filter(|&(_, max)| len <= max) {
        out.push(fix | len as u8);
    } else if let (Some(tag), true) = (m8, len <= u8::MAX as usize) {
        out.extend_from_slice(&[tag, len as u8]);
    } else if len <= u16::MAX as usize {
        out.push(m16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else if len <= u32::MAX as usize {
        out.push(m32);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    } else {
        return Err(fault(Fault::Py(PyValueError::new_err(
            "container or string longer than 2**32-1",
        ))));
    }
    Ok(())
}

fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), EncodeError> {
    write_len(out, s.len(), Some((0xa0, 31)), Some(0xd9), 0xda, 0xdb)?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn py_str<'a>(s: &'a Bound<'_, PyString>) -> Result<&'a str, EncodeError> {
    utf8(s).map_err(|e| fault(Fault::Py(e)))
}

extern "C" {
    // In the stable ABI since 3.10 and exported by every CPython 3.9 too. Unlike
    // `PyUnicode_AsUTF8String` (all pyo3 offers for abi3-py39), it allocates nothing for ASCII
    // strings and caches the UTF-8 form of others, which halves the cost of short keys.
    fn PyUnicode_AsUTF8AndSize(
        o: *mut pyo3::ffi::PyObject,
        size: *mut pyo3::ffi::Py_ssize_t,
    ) -> *const std::ffi::c_char;
}

/// Borrows a Python string's UTF-8 form (valid while `s` lives; CPython caches it on the object).
pub(crate) fn utf8<'a>(s: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    let mut len: pyo3::ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live str object (the GIL or the object's own lock is held by pyo3's Bound);
    // the function returns NULL with an exception set, or a pointer to `len` bytes of UTF-8 owned
    // by the object.
    unsafe {
        let p = PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut len);
        if p.is_null() {
            return Err(PyErr::fetch(s.py()));
        }
        let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len as usize);
        Ok(std::str::from_utf8_unchecked(bytes))
    }
}

fn write(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_DEPTH {
        return Err(fault(Fault::Depth));
    }
    if obj.is_none() {
        out.push(0xc0);
    } else if let Ok(s) = obj.downcast_exact::<PyString>() {
        write_str(out, py_str(s)?)?;
    } else if let Ok(b) = obj.downcast::<PyBool>() {
        out.push(if b.is_true() { 0xc3 } else { 0xc2 });
    } else if obj.is_instance_of::<PyInt>() {
        let i: i64 = obj.extract().map_err(|_| fault(Fault::IntRange))?;
        out.extend_from_slice(&encode_int(i));
    } else if let Ok(f) = obj.downcast::<PyFloat>() {
        out.push(0xcb);
        out.extend_from_slice(&f.value().to_be_bytes());
    } else if let Ok(d) = obj.downcast::<PyDict>() {
        write_len(out, d.len(), Some((0x80, 15)), None, 0xde, 0xdf)?;
        for (k, v) in d.iter() {
            let Ok(key) = k.downcast::<PyString>() else {
                return Err(fault(Fault::DictKey(type_name(&k))));
            };
            write_str(out, py_str(key)?)?;
            // The key is copied for the message only on the (rare) error path.
            write(&v, out, depth + 1).map_err(|e| e.at(Seg::Key(key.to_string())))?;
        }
    } else if let Ok(l) = obj.downcast::<PyList>() {
        write_len(out, l.len(), Some((0x90, 15)), None, 0xdc, 0xdd)?;
        for (i, item) in l.iter().enumerate() {
            write(&item, out, depth + 1).map_err(|e| e.at(Seg::Index(i)))?;
        }
    } else if let Ok(t) = obj.downcast::<PyTuple>() {
        write_len(out, t.len(), Some((0x90, 15)), None, 0xdc, 0xdd)?;
        for (i, item) in t.iter().enumerate() {
            write(&item, out, depth + 1).map_err(|e| e.at(Seg::Index(i)))?;
        }
    } else if let Ok(b) = obj.downcast::<PyBytes>() {
        let bytes = b.as_bytes();
        write_len(out, bytes.len(), None, Some(0xc4), 0xc5, 0xc6)
            .map_err(|_| fault(Fault::NotStorable("bytes".into())))?;
        out.extend_from_slice(bytes);
    } else if let Ok(b) = obj.downcast::<PyByteArray>() {
        let bytes = b.to_vec();
        write_len(out, bytes.len(), None, Some(0xc4), 0xc5, 0xc6)?;
        out.extend_from_slice(&bytes);
    } else if let Ok(s) = obj.downcast::<PyString>() {
        write_str(out, py_str(s)?)?;
    } else {
        return Err(fault(Fault::NotStorable(type_name(obj))));
    }
    Ok(())
}

/// Decodes MessagePack bytes into Python objects. Errors are `ValueError`s.
pub(crate) fn decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // Only scalars need no key cache; anything else takes it for the whole value (one lock per
    // decode). A decode that finds it taken (another thread, or a finalizer that decodes while
    // this thread is mid-decode) goes without.
    let mut keys = match bytes.first() {
        Some(0x80..=0x9f | 0xdc..=0xdf) => KEYS.try_lock().ok(),
        _ => None,
    };
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        keys: keys.as_deref_mut(),
    };
    let obj = r.read(py, 0)?;
    if r.pos != bytes.len() {
        return Err(PyValueError::new_err(
            "MessagePack value has trailing bytes",
        ));
    }
    Ok(obj)
}

/// The `str` objects of map keys decoded before (orjson's key cache): a dict read back many
/// times has the same few keys, so each is made once, with its hash computed once, and shared.
/// Direct-mapped by a hash of the key's bytes; a collision replaces the slot.
struct KeyCache {
    slots: Box<[KeySlot]>,
}

/// A key's UTF-8 bytes and its `str`.
type KeySlot = Option<(Box<[u8]>, Py<PyString>)>;

/// Slots of the key cache (a power of two).
const KEY_SLOTS: usize = 1024;
/// Longest key kept (longer keys are rarely repeated field names).
const KEY_MAX: usize = 64;

static KEYS: Mutex<Option<KeyCache>> = Mutex::new(None);

/// The slot of a key: a multiplicative hash over its bytes, 8 at a time.
fn key_slot(raw: &[u8]) -> usize {
    let mut h = raw.len() as u64;
    for chunk in raw.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    (h >> 16) as usize & (KEY_SLOTS - 1)
}

/// A `str` from UTF-8 bytes, validated once, by CPython's decoder (which also makes the object).
fn new_str<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `raw` is valid for `raw.len()` bytes; the call returns a new reference or NULL with
    // an exception set.
    unsafe {
        let p = pyo3::ffi::PyUnicode_DecodeUTF8(
            raw.as_ptr().cast(),
            raw.len() as pyo3::ffi::Py_ssize_t,
            std::ptr::null(),
        );
        if p.is_null() {
            drop(PyErr::fetch(py));
            return Err(bad("string is not valid UTF-8"));
        }
        Ok(Bound::from_owned_ptr(py, p))
    }
}

struct Reader<'a, 'c> {
    buf: &'a [u8],
    pos: usize,
    keys: Option<&'c mut Option<KeyCache>>,
}

fn bad(what: &str) -> PyErr {
    PyValueError::new_err(format!("invalid MessagePack: {what}"))
}

impl<'a> Reader<'a, '_> {
    fn take(&mut self, n: usize) -> PyResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| bad("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| bad("truncated value"))?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> PyResult<u64> {
        Ok(self.take(n)?.iter().fold(0u64, |a, &b| (a << 8) | b as u64))
    }

    fn read<'py>(&mut self, py: Python<'py>, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        if depth > MAX_DEPTH {
            return Err(bad("nested too deep"));
        }
        let b = self.take(1)?[0];
        let obj = match b {
            0x00..=0x7f => (b as i64).into_pyobject(py)?.into_any(),
            0xe0..=0xff => (b as i8 as i64).into_pyobject(py)?.into_any(),
            0xc0 => py.None().into_bound(py),
            0xc2 => PyBool::new(py, false).to_owned().into_any(),
            0xc3 => PyBool::new(py, true).to_owned().into_any(),
            0xcc..=0xce => {
                let n = 1 << (b - 0xcc);
                self.be(n)?.into_pyobject(py)?.into_any()
            }
            0xcf => self.be(8)?.into_pyobject(py)?.into_any(),
            0xd0 => (self.be(1)? as u8 as i8 as i64)
                .into_pyobject(py)?
                .into_any(),
            0xd1 => (self.be(2)? as u16 as i16 as i64)
                .into_pyobject(py)?
                .into_any(),
            0xd2 => (self.be(4)? as u32 as i32 as i64)
                .into_pyobject(py)?
                .into_any(),
            0xd3 => (self.be(8)? as i64).into_pyobject(py)?.into_any(),
            0xca => PyFloat::new(py, f32::from_bits(self.be(4)? as u32) as f64).into_any(),
            0xcb => PyFloat::new(py, f64::from_bits(self.be(8)?)).into_any(),
            0xa0..=0xbf => self.str(py, (b & 0x1f) as usize)?,
            0xd9 => {
                let n = self.be(1)? as usize;
                self.str(py, n)?
            }
            0xda => {
                let n = self.be(2)? as usize;
                self.str(py, n)?
            }
            0xdb => {
                let n = self.be(4)? as usize;
                self.str(py, n)?
            }
            0xc4..=0xc6 => {
                let n = self.be(1 << (b - 0xc4))? as usize;
                PyBytes::new(py, self.take(n)?).into_any()
            }
            0x90..=0x9f => self.array(py, (b & 0x0f) as usize, depth)?,
            0xdc => {
                let n = self.be(2)? as usize;
                self.array(py, n, depth)?
            }
            0xdd => {
                let n = self.be(4)? as usize;
                self.array(py, n, depth)?
            }
            0x80..=0x8f => self.map(py, (b & 0x0f) as usize, depth)?,
            0xde => {
                let n = self.be(2)? as usize;
                self.map(py, n, depth)?
            }
            0xdf => {
                let n = self.be(4)? as usize;
                self.map(py, n, depth)?
            }
            // Extension types carry no Python meaning here: hand back their data as bytes.
            0xd4..=0xd8 => {
                let n = 1usize << (b - 0xd4);
                self.take(1)?;
                PyBytes::new(py, self.take(n)?).into_any()
            }
            0xc7..=0xc9 => {
                let n = self.be(1 << (b - 0xc7))? as usize;
                self.take(1)?;
                PyBytes::new(py, self.take(n)?).into_any()
            }
            0xc1 => return Err(bad("reserved byte 0xc1")),
        };
        Ok(obj)
    }

    fn str<'py>(&mut self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        new_str(py, self.take(n)?)
    }

    /// A map key: a short string comes from the key cache when it can.
    fn key<'py>(&mut self, py: Python<'py>, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        let n = match self.buf.get(self.pos) {
            Some(&b @ 0xa0..=0xbf) => (b & 0x1f) as usize,
            Some(0xd9) => match self.buf.get(self.pos + 1) {
                Some(&n) => n as usize,
                None => return self.read(py, depth),
            },
            _ => return self.read(py, depth),
        };
        if self.keys.is_none() || n > KEY_MAX {
            return self.read(py, depth);
        }
        let header = if self.buf[self.pos] == 0xd9 { 2 } else { 1 };
        self.pos += header;
        let raw = self.take(n)?;
        let Some(cache) = self.keys.as_deref_mut() else {
            return new_str(py, raw);
        };
        let slots = &mut cache
            .get_or_insert_with(|| KeyCache {
                slots: (0..KEY_SLOTS).map(|_| None).collect(),
            })
            .slots;
        let slot = &mut slots[key_slot(raw)];
        if let Some((bytes, s)) = slot {
            if **bytes == *raw {
                return Ok(s.bind(py).clone().into_any());
            }
        }
        let s = new_str(py, raw)?;
        // Computed now and kept on the object, so every dict that takes this key skips hashing.
        s.hash()?;
        *slot = Some((raw.into(), s.downcast::<PyString>()?.clone().unbind()));
        Ok(s)
    }

    fn array<'py>(
        &mut self,
        py: Python<'py>,
        n: usize,
        depth: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        if n > self.buf.len() - self.pos {
            return Err(bad("array longer than the data"));
        }
        let list = PyList::empty(py);
        for _ in 0..n {
            list.append(self.read(py, depth + 1)?)?;
        }
        Ok(list.into_any())
    }

    fn map<'py>(&mut self, py: Python<'py>, n: usize, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        if n > self.buf.len() - self.pos {
            return Err(bad("map longer than the data"));
        }
        let dict = PyDict::new(py);
        for _ in 0..n {
            let mut k = self.key(py, depth + 1)?;
            if let Ok(list) = k.downcast::<PyList>() {
                // Keys written by other languages may be arrays; a tuple is the hashable form.
                k = PyTuple::new(py, list.iter())?.into_any();
            }
            let v = self.read(py, depth + 1)?;
            dict.set_item(k, v)
                .map_err(|e| bad(&format!("unhashable map key: {e}")))?;
        }
        Ok(dict.into_any())
    }
}
