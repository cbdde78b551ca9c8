//! `Mailbox`, `Message` and `ReadySet`: the native halves. `await recv()` and `async for` are
//! native awaitables ([`crate::awaitable`]) registered with the loop's `ReadySet`, which wakes
//! them; the hub that owns one `ReadySet` per event loop is Python (`_Hub` in
//! `hornbeam_erlang/__init__.py`).

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;

use hornbeam_core::{ChangeKind, Engine, MailboxConfig, ReadySet, RecvError};

use crate::convert::decode;
use crate::errors::{IntoPy, MailboxClosed};
use crate::state::{engine, key_str};

/// A received item: a published message, a watch event (a change of a watched key), or — when
/// `lagged` > 0 — the notice that `lagged` items were dropped here because the mailbox was full.
///
/// | `type` | `topic` | `message` / `data` | `op`, `key`, `value` |
/// | --- | --- | --- | --- |
/// | `'message'` | the topic | the published object | None |
/// | `'change'` | the key | `{'op': op, 'key': key, 'value': value}` | the change |
/// | `'lagged'` | None | None | None |
///
/// Also reads as the tuple `(type, topic, message)` (`('lagged', None, n)` for a lag notice), as
/// redis-py users expect.
#[pyclass(module = "hornbeam_erlang", frozen, name = "Message")]
pub(crate) struct PyMessage {
    msg: Option<hornbeam_core::Message>,
    lagged: u64,
}

/// Messages this thread decoded that other mailboxes also received, with their values: one
/// publish to many subscribers is decoded once per thread, and each receiver gets its own copy
/// of the value's lists and dicts (sharing only the immutable objects inside), which costs less
/// than decoding again. Direct-mapped by the message's allocation, so subscribers that each
/// read a burst of messages (task after task) still find them; each slot holds its message, so
/// that allocation (the key) cannot be reused by another message while it is cached.
struct Decoded {
    msg: hornbeam_core::Message,
    value: Py<PyAny>,
}

/// Slots of the decode cache (a power of two).
const DECODED_SLOTS: usize = 64;
/// Largest payload kept in the decode cache (the cache holds its messages alive).
const DECODED_MAX: usize = 64 << 10;

thread_local! {
    static DECODED: std::cell::RefCell<Vec<Option<Decoded>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn decoded_slot(m: &hornbeam_core::Message) -> usize {
    (m.payload().as_ptr() as usize >> 4).wrapping_mul(0x9E37_79B9) >> 8 & (DECODED_SLOTS - 1)
}

/// A copy of a decoded value in which every list and dict is new (what decoding again would
/// give, without parsing or making strings and numbers again).
fn fresh<'py>(v: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = v.py();
    if let Ok(list) = v.downcast_exact::<PyList>() {
        let n = list.len();
        // SAFETY: a new list of `n` empty slots, each filled once below with a new reference
        // (PyList_SetItem steals it) before the list is used; on an error the list is dropped
        // with its remaining slots NULL, which list deallocation allows.
        unsafe {
            let out = Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyList_New(n as _))?;
            for i in 0..n {
                let item = fresh(&list.get_item(i)?)?;
                pyo3::ffi::PyList_SetItem(out.as_ptr(), i as _, item.into_ptr());
            }
            return Ok(out);
        }
    }
    if let Ok(dict) = v.downcast_exact::<pyo3::types::PyDict>() {
        let out = pyo3::types::PyDict::new(py);
        for (k, item) in dict.iter() {
            out.set_item(k, fresh(&item)?)?;
        }
        return Ok(out.into_any());
    }
    Ok(v.clone())
}

impl PyMessage {
    /// The payload decoded; payloads published from C may be raw bytes: those come back as bytes.
    fn payload<'py>(py: Python<'py>, m: &hornbeam_core::Message) -> PyResult<Bound<'py, PyAny>> {
        // The borrow ends before any Python code runs (a copy, a decode, a finalizer).
        let slot = decoded_slot(m);
        let cached = DECODED.with(|c| {
            c.borrow()
                .get(slot)
                .and_then(Option::as_ref)
                .filter(|d| d.msg.shares_with(m))
                .map(|d| d.value.clone_ref(py))
        });
        if let Some(value) = cached {
            return fresh(value.bind(py));
        }
        let value = decode(py, m.payload())
            .or_else(|_| Ok::<_, PyErr>(pyo3::types::PyBytes::new(py, m.payload()).into_any()))?;
        if !m.is_shared() || m.payload().len() > DECODED_MAX {
            return Ok(value);
        }
        let copy = fresh(&value)?;
        let old = DECODED.with(|c| {
            let mut slots = c.borrow_mut();
            if slots.is_empty() {
                slots.resize_with(DECODED_SLOTS, || None);
            }
            slots[slot].replace(Decoded {
                msg: m.clone(),
                value: value.unbind(),
            })
        });
        drop(old); // outside the borrow: dropping a value may run Python code
        Ok(copy)
    }

    /// The watch event's kind, when this is one.
    fn change(&self) -> Option<(ChangeKind, &hornbeam_core::Message)> {
        let m = self.msg.as_ref()?;
        m.change_kind().map(|k| (k, m))
    }

    /// A watch event's new value: decoded for set and incr, None for the others.
    fn new_value<'py>(py: Python<'py>, m: &hornbeam_core::Message) -> PyResult<Bound<'py, PyAny>> {
        if m.payload().is_empty() {
            Ok(py.None().into_bound(py))
        } else {
            Self::payload(py, m)
        }
    }

    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match (&self.msg, self.change()) {
            (_, Some((kind, m))) => {
                let event = pyo3::types::PyDict::new(py);
                event.set_item("op", kind.name())?;
                event.set_item("key", m.topic())?;
                event.set_item("value", Self::new_value(py, m)?)?;
                Ok(event.into_any())
            }
            (Some(m), None) => Self::payload(py, m),
            (None, _) => Ok(py.None().into_bound(py)),
        }
    }
}

#[pymethods]
impl PyMessage {
    /// The topic it was published to; for a watch event, the key that changed (`""` for a
    /// clear); None for a lag notice.
    #[getter]
    fn topic(&self) -> Option<&str> {
        self.msg.as_ref().map(|m| m.topic())
    }

    /// The published object; for a watch event, the dict `{'op', 'key', 'value'}`; None for a
    /// lag notice. A new object at each access (its lists and dicts are never shared).
    #[getter]
    fn message<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.data(py)
    }

    /// Alias of `message` (redis-py's name).
    #[getter(data)]
    fn data_alias<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.data(py)
    }

    /// Number of messages dropped before this point (0 for a real message).
    #[getter]
    fn lagged(&self) -> u64 {
        self.lagged
    }

    /// For a watch event, what happened to the key: `'set'`, `'delete'`, `'incr'` (also decr),
    /// `'expire'` (its TTL ran out) or `'clear'` (the whole store was cleared); None for a
    /// published message or a lag notice.
    #[getter]
    fn op(&self) -> Option<&'static str> {
        self.change().map(|(k, _)| k.name())
    }

    /// For a watch event, the key that changed (`""` for a clear); None otherwise.
    #[getter]
    fn key(&self) -> Option<&str> {
        self.change().map(|(_, m)| m.topic())
    }

    /// For a watch event, the key's new value as committed (decoded anew at each access): the
    /// stored object for `'set'`, the counter's new value for `'incr'`; None for `'delete'`,
    /// `'expire'`, `'clear'`, and for anything that is not a watch event.
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.change() {
            Some((_, m)) => Self::new_value(py, m),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// `'message'` (published), `'change'` (a watch event) or `'lagged'` (a lag notice).
    #[getter(r#type)]
    fn kind(&self) -> &'static str {
        match (&self.msg, self.change()) {
            (_, Some(_)) => "change",
            (Some(_), None) => "message",
            (None, _) => "lagged",
        }
    }

    fn __len__(&self) -> usize {
        3
    }

    fn __getitem__<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Bound<'py, PyAny>> {
        let i = if i < 0 { i + 3 } else { i };
        match i {
            0 => Ok(self.kind().into_pyobject(py)?.into_any()),
            1 => Ok(self.topic().into_pyobject(py)?.into_any()),
            2 if self.msg.is_some() => self.data(py),
            2 => Ok(self.lagged.into_pyobject(py)?.into_any()),
            _ => Err(PyIndexError::new_err("Message index out of range")),
        }
    }

    fn __repr__(&self) -> String {
        match (&self.msg, self.change()) {
            (_, Some((kind, m))) => format!(
                "Message(op={:?}, key={:?}, {} bytes)",
                kind.name(),
                m.topic(),
                m.payload().len()
            ),
            (Some(m), None) => format!(
                "Message(topic={:?}, {} bytes)",
                m.topic(),
                m.payload().len()
            ),
            (None, _) => format!("Message(lagged={})", self.lagged),
        }
    }
}

/// A bounded queue of messages for the topics and patterns it subscribes to, and of the changes
/// of the key prefixes it watches.
#[pyclass(module = "hornbeam_erlang", frozen, subclass, name = "Mailbox")]
pub(crate) struct PyMailbox {
    inner: ManuallyDrop<hornbeam_core::Mailbox>,
    /// The default engine's generation when this mailbox was made: after a fork the child has a
    /// new engine, and this mailbox (the parent's) must not be used nor touch the old engine's locks.
    generation: u64,
    /// The hub this mailbox waits with, once settled (see [`PyMailbox::hub`]).
    hub: Mutex<Option<HubRef>>,
}

/// Where an awaiting receive registers its future: the loop and its ready set, and the thread
/// that loop ran in.
struct HubRef {
    thread: std::ffi::c_ulong,
    event_loop: Py<PyAny>,
    ready: Py<PyReadySet>,
}

/// What [`PyMailbox::take_or_arm`] found.
pub(crate) enum Taken {
    Message(PyMessage),
    /// Nothing queued; the mailbox reports to its ready set at the next delivery.
    Empty,
    Closed,
    Error(PyErr),
}

// `PyThread_get_thread_ident` is in the stable ABI (every CPython 3); pyo3-ffi does not declare it.
extern "C" {
    fn PyThread_get_thread_ident() -> std::ffi::c_ulong;
}

/// A lock that a panic elsewhere does not make unusable (what it guards stays consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for PyMailbox {
    fn drop(&mut self) {
        if self.generation == Engine::global_generation() {
            // SAFETY: `inner` is dropped exactly once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.inner) };
        }
        // Otherwise the mailbox belongs to an engine left behind by fork(): leak it, since a lock
        // it would take may have been held by a thread that does not exist in this process.
    }
}

/// A receive's outcome for Python: the item, nothing queued, or the mailbox closed.
fn taken(r: Result<hornbeam_core::Message, RecvError>) -> Taken {
    match r {
        Ok(m) => Taken::Message(PyMessage {
            msg: Some(m),
            lagged: 0,
        }),
        Err(RecvError::Lagged(n)) => Taken::Message(PyMessage {
            msg: None,
            lagged: n,
        }),
        Err(RecvError::Empty) | Err(RecvError::Timeout) => Taken::Empty,
        Err(RecvError::Closed) => Taken::Closed,
    }
}

fn message(r: Result<hornbeam_core::Message, RecvError>) -> PyResult<Option<PyMessage>> {
    match taken(r) {
        Taken::Message(m) => Ok(Some(m)),
        Taken::Empty => Ok(None),
        Taken::Closed => Err(MailboxClosed::new_err("mailbox is closed")),
        Taken::Error(e) => Err(e),
    }
}

impl PyMailbox {
    /// For the awaitable: takes the next item, or arms the ready set when there is none.
    pub(crate) fn take_or_arm(&self) -> Taken {
        match self.live() {
            Ok(mb) => taken(mb.try_recv_arm()),
            Err(e) => Taken::Error(e),
        }
    }

    /// The running loop and its ready set, with this mailbox attached to it. Cached once the
    /// Python hub has settled (`_hub_here`): the cache holds while the same thread runs the same
    /// loop (one thread runs one loop at a time, so a loop that is running and was running in
    /// this thread is this thread's running loop), which costs a thread id and `is_running()`
    /// instead of `asyncio.get_running_loop()`'s `getpid()` system call.
    pub(crate) fn hub<'py>(
        slf: &Bound<'py, PyMailbox>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyReadySet>)> {
        let py = slf.py();
        // SAFETY: reads the calling thread's id; no preconditions.
        let thread = unsafe { PyThread_get_thread_ident() };
        let cached = lock(&slf.get().hub)
            .as_ref()
            .filter(|h| h.thread == thread)
            .map(|h| (h.event_loop.clone_ref(py), h.ready.clone_ref(py)));
        if let Some((event_loop, ready)) = cached {
            let event_loop = event_loop.into_bound(py);
            if event_loop
                .call_method0(pyo3::intern!(py, "is_running"))?
                .is_truthy()?
            {
                return Ok((event_loop, ready.into_bound(py)));
            }
        }
        let hub = slf.call_method0(pyo3::intern!(py, "_hub_here"))?;
        let event_loop = hub.getattr(pyo3::intern!(py, "loop"))?;
        let ready = hub
            .getattr(pyo3::intern!(py, "ready"))?
            .downcast_into::<PyReadySet>()?;
        // Settled once the hub no longer looks for a doorbell to watch (see `_Hub.bell`).
        if !hub.getattr(pyo3::intern!(py, "bell"))?.is_none() {
            let old = lock(&slf.get().hub).replace(HubRef {
                thread,
                event_loop: event_loop.clone().unbind(),
                ready: ready.clone().unbind(),
            });
            drop(old); // outside the lock: dropping a reference may run Python code
        }
        Ok((event_loop, ready))
    }

    fn live(&self) -> PyResult<&hornbeam_core::Mailbox> {
        if self.generation != Engine::global_generation() {
            return Err(MailboxClosed::new_err(
                "mailbox belongs to the engine of the parent process (it was made before fork())",
            ));
        }
        Ok(&self.inner)
    }
}

#[pymethods]
impl PyMailbox {
    #[new]
    #[pyo3(signature = (capacity=None, max_bytes=None))]
    fn new(capacity: Option<usize>, max_bytes: Option<usize>) -> PyResult<Self> {
        let defaults = MailboxConfig::default();
        let config = MailboxConfig {
            capacity: capacity.unwrap_or(defaults.capacity),
            max_bytes: max_bytes.unwrap_or(defaults.max_bytes),
        };
        if config.capacity == 0 || config.max_bytes == 0 {
            return Err(PyValueError::new_err(
                "capacity and max_bytes must be at least 1",
            ));
        }
        let generation = Engine::global_generation();
        let mailbox = engine()?.bus().mailbox_with(config);
        // The descriptor exists before any subscription, so no message can miss its signal.
        mailbox.prepare_fd().py()?;
        Ok(PyMailbox {
            inner: ManuallyDrop::new(mailbox),
            generation,
            hub: Mutex::new(None),
        })
    }

    /// The next message; None on timeout.
    ///
    /// Called from a coroutine it returns an awaitable (also usable with `asyncio.create_task`)
    /// that takes the message only once it runs, so cancelling it loses nothing; called from a
    /// plain thread it blocks, releasing the GIL.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Called straight from a coroutine's own code: that is the awaitable case, known
        // without asking for the running loop (which costs a getpid() system call per call).
        if timeout.is_none() && crate::awaitable::caller_is_async(slf.py()) {
            return crate::awaitable::recv(slf, false);
        }
        slf.call_method1(pyo3::intern!(slf.py(), "_recv_slow"), (timeout,))
    }

    /// The awaitable of `await recv()`, whoever calls.
    fn _recv_async<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        crate::awaitable::recv(slf, false)
    }

    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// `async for msg in mailbox`: the next message; the loop ends when the mailbox is closed.
    fn __anext__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        crate::awaitable::recv(slf, true)
    }

    /// Subscribes to a topic or pattern (`room:*`, `room:>`); False when already subscribed.
    fn subscribe(&self, py: Python<'_>, topic: &str) -> PyResult<bool> {
        let mb = self.live()?;
        // On Redis the first subscription waits for the subscriber connection: let others run.
        py.detach(|| mb.subscribe(topic)).py()
    }

    /// Unsubscribes from a topic or pattern; False when it was not subscribed.
    fn unsubscribe(&self, topic: &str) -> PyResult<bool> {
        self.live()?.unsubscribe(topic).py()
    }

    /// The topics and patterns subscribed to, sorted.
    fn subscriptions(&self) -> PyResult<Vec<String>> {
        Ok(self.live()?.subscriptions())
    }

    /// Watches the store's keys starting with `prefix` (`""`: every key): from now on each
    /// committed change of such a key (set, delete, incr/decr, expiry, clear) arrives here as a
    /// `Message` of type `'change'` (see `Message.op`, `.key`, `.value`), sharing the mailbox's
    /// bound and lag notices with its messages. False when `prefix` was already watched.
    fn watch(&self, py: Python<'_>, prefix: &Bound<'_, PyAny>) -> PyResult<bool> {
        let prefix = key_str(prefix, "prefix")?;
        let mb = self.live()?;
        // On a shared backend the first watch tells the other processes: let others run.
        py.detach(|| mb.watch(prefix)).py()
    }

    /// Stops watching `prefix`; False when it was not watched.
    fn unwatch(&self, py: Python<'_>, prefix: &Bound<'_, PyAny>) -> PyResult<bool> {
        let prefix = key_str(prefix, "prefix")?;
        let mb = self.live()?;
        py.detach(|| mb.unwatch(prefix)).py()
    }

    /// The key prefixes watched, sorted.
    fn watches(&self) -> PyResult<Vec<String>> {
        Ok(self.live()?.watches())
    }

    /// The next message, or None at once when there is none.
    fn recv_nowait(&self) -> PyResult<Option<PyMessage>> {
        message(self.live()?.try_recv())
    }

    /// For the event loop: like `recv_nowait`, and when empty also re-arms `fileno()`.
    fn _try_recv_arm(&self) -> PyResult<Option<PyMessage>> {
        message(self.live()?.try_recv_arm())
    }

    /// Waits for the next message with the GIL released; None on timeout (`None` waits forever,
    /// waking every 200 ms to let signal handlers such as KeyboardInterrupt run). `background`:
    /// an idle server's wait, which on local:// costs no wake-up per message from elsewhere
    /// (see `Mailbox::recv_timeout_background`).
    #[pyo3(signature = (timeout=None, background=false))]
    fn _recv_blocking(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        background: bool,
    ) -> PyResult<Option<PyMessage>> {
        let mb = self.live()?;
        let deadline = match timeout {
            Some(t) if !(t >= 0.0 && t.is_finite()) => {
                return Err(PyValueError::new_err(
                    "timeout must be a non-negative number of seconds",
                ))
            }
            Some(t) => Some(Instant::now() + Duration::from_secs_f64(t.min(1e9))),
            None => None,
        };
        let recv = if background {
            hornbeam_core::Mailbox::recv_timeout_background
        } else {
            hornbeam_core::Mailbox::recv_timeout
        };
        let slice = Duration::from_millis(200);
        loop {
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(slice),
                None => slice,
            };
            let r = py.detach(|| recv(mb, Some(wait)));
            match r {
                Err(RecvError::Timeout) | Err(RecvError::Empty) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    py.check_signals()?;
                }
                other => return message(other),
            }
        }
    }

    /// Every message queued now (lag notices in place), without waiting.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self.live()?.drain();
        let list = PyList::empty(py);
        for item in items {
            if let Some(m) = message(item)? {
                list.append(Bound::new(py, m)?)?;
            }
        }
        Ok(list)
    }

    /// A descriptor that is readable while messages may be waiting (for `loop.add_reader`,
    /// `select`); owned by the mailbox.
    fn fileno(&self) -> PyResult<i32> {
        self.live()?.fd().py()
    }

    /// A number unique to this mailbox (what `ReadySet.take()` returns).
    #[getter]
    pub(crate) fn id(&self) -> u64 {
        self.inner.id()
    }

    /// Reports this mailbox to `ready_set` when it becomes ready (for the event loop's hub).
    fn _attach(&self, ready_set: &PyReadySet) -> PyResult<()> {
        self.live()?.attach(&ready_set.inner).py()
    }

    /// Unsubscribes and unwatches everything and wakes waiting receivers with `MailboxClosed`.
    fn close(&self) {
        if self.generation == Engine::global_generation() {
            self.inner.close();
        }
    }

    /// Whether `close()` was called (or the mailbox belongs to a parent process's engine).
    #[getter]
    fn closed(&self) -> bool {
        self.generation != Engine::global_generation() || self.inner.is_closed()
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.live()?.len())
    }

    fn __repr__(&self) -> String {
        let mut out = format!(
            "Mailbox(id={}, subscriptions={:?}",
            self.inner.id(),
            self.subscriptions().unwrap_or_default()
        );
        let watches = self.watches().unwrap_or_default();
        if !watches.is_empty() {
            out.push_str(&format!(", watches={watches:?}"));
        }
        out.push(')');
        out
    }
}

/// One descriptor for many mailboxes: each event loop has one (see `_Hub` in `__init__.py`).
#[pyclass(module = "hornbeam_erlang", frozen, name = "ReadySet")]
pub(crate) struct PyReadySet {
    inner: ReadySet,
    /// The futures of the receives waiting in this loop, by mailbox id.
    waiters: Mutex<HashMap<u64, Waiting>>,
}

/// `asyncio.Future` and its `set_result` method descriptor, called straight with vectorcall
/// (no bound method, no argument tuple per wake-up); None where asyncio's `Future` is not a
/// type with such a descriptor (then `set_result` is looked up on each future).
fn future_set_result(py: Python<'_>) -> PyResult<Option<(&Bound<'_, PyAny>, &Bound<'_, PyAny>)>> {
    static FUTURE: PyOnceLock<Option<(Py<PyAny>, Py<PyAny>)>> = PyOnceLock::new();
    let api = FUTURE.get_or_try_init(py, || -> PyResult<_> {
        let tp = py.import("asyncio")?.getattr("Future")?;
        let descr = tp.getattr("set_result")?;
        let is_descriptor = descr.get_type().name()? == "method_descriptor";
        Ok(is_descriptor.then(|| (tp.unbind(), descr.unbind())))
    })?;
    Ok(api.as_ref().map(|(tp, d)| (tp.bind(py), d.bind(py))))
}

/// The futures waiting on one mailbox: nearly always one.
enum Waiting {
    One(Py<PyAny>),
    Many(Vec<Py<PyAny>>),
}

impl PyReadySet {
    /// Registers `fut` to be completed when mailbox `id` is reported ready.
    pub(crate) fn add_waiter(&self, id: u64, fut: Py<PyAny>) {
        let mut waiters = lock(&self.waiters);
        match waiters.remove(&id) {
            None => waiters.insert(id, Waiting::One(fut)),
            Some(Waiting::One(first)) => waiters.insert(id, Waiting::Many(vec![first, fut])),
            Some(Waiting::Many(mut all)) => {
                all.push(fut);
                waiters.insert(id, Waiting::Many(all))
            }
        };
    }

    /// Takes `fut` off mailbox `id`'s waiters (a cancelled or abandoned receive).
    pub(crate) fn forget_waiter(&self, id: u64, fut: &Bound<'_, PyAny>) {
        let removed = {
            let mut waiters = lock(&self.waiters);
            match waiters.get_mut(&id) {
                Some(Waiting::One(f)) if f.is(fut) => waiters.remove(&id),
                Some(Waiting::Many(all)) => {
                    let found = all
                        .iter()
                        .position(|f| f.is(fut))
                        .map(|i| all.swap_remove(i));
                    if all.is_empty() {
                        waiters.remove(&id);
                    }
                    found.map(Waiting::One)
                }
                _ => None,
            }
        };
        // Outside the lock: dropping a reference may run Python code. As a `Bound`: this runs
        // from the awaitable's slots, outside pyo3's GIL accounting (see `awaitable::Field`).
        if let Some(Waiting::One(f)) = removed {
            drop(f.into_bound(fut.py()));
        }
    }
}

#[pymethods]
impl PyReadySet {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(PyReadySet {
            inner: ReadySet::new().py()?,
            waiters: Mutex::new(HashMap::new()),
        })
    }

    /// Right after a publish from the loop's own thread: `wake()`, when a receive waits (as
    /// `asyncio.Queue.put_nowait` completes its getter at once, not after the loop's next poll).
    fn wake_waiting(&self, py: Python<'_>) -> PyResult<()> {
        if lock(&self.waiters).is_empty() {
            return Ok(());
        }
        self.wake(py)
    }

    /// The loop's reader callback: clears the descriptor and completes the futures of the
    /// receives whose mailboxes became ready.
    fn wake(&self, py: Python<'_>) -> PyResult<()> {
        let ids = self.inner.take();
        if ids.is_empty() {
            return Ok(());
        }
        let woken: Vec<Waiting> = {
            let mut waiters = lock(&self.waiters);
            ids.iter().filter_map(|id| waiters.remove(id)).collect()
        };
        let mut first_error = None;
        let set_result = future_set_result(py)?;
        let mut complete = |fut: Py<PyAny>| {
            let fut = fut.into_bound(py);
            let done = match set_result {
                // SAFETY: the descriptor and the future are live; the vector is [future, None]
                // for the call; a NULL result sets the exception fetched here.
                Some((tp, descr)) if fut.is_instance(tp).unwrap_or(false) => unsafe {
                    let args = [fut.as_ptr(), py.None().as_ptr()];
                    let out = crate::calls::PyObject_Vectorcall(
                        descr.as_ptr(),
                        args.as_ptr(),
                        2,
                        std::ptr::null_mut(),
                    );
                    Bound::from_owned_ptr_or_err(py, out).map(drop)
                },
                _ => fut
                    .call_method1(pyo3::intern!(py, "set_result"), (py.None(),))
                    .map(drop),
            };
            if let Err(e) = done {
                // A future cancelled just before (its task has not thrown into the receive
                // yet) is done already; anything else is reported.
                if !fut
                    .call_method0(pyo3::intern!(py, "done"))
                    .and_then(|d| d.is_truthy())
                    .unwrap_or(false)
                {
                    first_error.get_or_insert(e);
                }
            }
        };
        for w in woken {
            match w {
                Waiting::One(f) => complete(f),
                Waiting::Many(all) => all.into_iter().for_each(&mut complete),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// How many receives wait on the mailbox `mailbox_id` in this loop.
    fn waiting(&self, mailbox_id: u64) -> usize {
        match lock(&self.waiters).get(&mailbox_id) {
            None => 0,
            Some(Waiting::One(_)) => 1,
            Some(Waiting::Many(all)) => all.len(),
        }
    }

    /// The descriptor, readable while mailbox ids wait to be taken.
    fn fileno(&self) -> i32 {
        self.inner.fd()
    }

    /// Clears the descriptor and returns the ids of the mailboxes that became ready.
    fn take(&self) -> Vec<u64> {
        self.inner.take()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyReadySet>()?;
    m.add_class::<PyMessage>()?;
    m.add_class::<PyMailbox>()?;
    Ok(())
}
