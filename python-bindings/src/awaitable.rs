//! `await mailbox.recv()` and `async for msg in mailbox` without a Python coroutine.
//!
//! `recv()` called from a coroutine returns a [`Recv`]: a native object that is its own
//! awaitable iterator and answers CPython's `am_send` slot. `await` (the `SEND` instruction) and
//! an asyncio `Task` drive it through `PyIter_Send`, so a message already queued comes back as the
//! send's return value: no Python frame of ours, no `StopIteration`. When the mailbox is empty it
//! registers a future of the running loop with the loop's ready set (see `PyReadySet` in
//! [`crate::mailbox`]) and yields that future to the task; when the hub completes it, the task
//! sends again and the message is taken then.
//!
//! What a receiver is guaranteed does not change:
//! - A message is taken only inside a send, never before the awaitable runs, so a task cancelled
//!   before it starts, or while it waits, loses nothing.
//! - Cancelling throws into `throw()`, which takes the future off the ready set before it raises.
//! - `send`, `throw` and `close` make it a `collections.abc.Coroutine`, so `asyncio.create_task`,
//!   `ensure_future` and `wait_for` accept it as they accepted the Python coroutine it replaces.

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration, PyStopIteration, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::mailbox::{PyMailbox, PyReadySet, Taken};

/// CPython's `Py_am_send` slot number (`Include/typeslots.h`, new in 3.10); pyo3-ffi does not
/// name it.
const PY_AM_SEND: c_int = 81;

/// It has returned or raised: a second await is an error, as for a coroutine.
const DONE: u32 = 1;
/// Made by `__anext__`: a closed mailbox ends the `async for` (`StopAsyncIteration`).
const ANEXT: u32 = 2;

/// A strong reference or NULL, owned by the object it is a field of.
#[repr(transparent)]
struct Field(*mut ffi::PyObject);

impl Field {
    /// Moves the reference out, leaving NULL. A `Bound`, not a `Py`: the slots run with the GIL
    /// held but outside pyo3's own accounting (`assume_attached`), where dropping a `Py` would
    /// defer its decref to a locked pool.
    fn take<'py>(&mut self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let p = std::mem::replace(&mut self.0, ptr::null_mut());
        // SAFETY: the field held a strong reference (or NULL); its ownership moves here.
        (!p.is_null()).then(|| unsafe { Bound::from_owned_ptr(py, p) })
    }

    /// The object, borrowed from the field.
    fn get<'a, 'py>(&'a self, py: Python<'py>) -> Option<Borrowed<'a, 'py, PyAny>> {
        // SAFETY: a strong reference held by the field while it is borrowed.
        (!self.0.is_null()).then(|| unsafe { Borrowed::from_ptr(py, self.0) })
    }

    /// Stores `v`, releasing what was there.
    fn set(&mut self, v: Bound<'_, PyAny>) {
        let py = v.py();
        drop(self.take(py));
        self.0 = v.into_ptr();
    }
}

/// The object's layout.
#[repr(C)]
struct RecvObject {
    ob_base: ffi::PyObject,
    /// The mailbox (a `PyMailbox`, usually its Python subclass `Mailbox`).
    mailbox: Field,
    /// The future being waited on, while registered with `ready`.
    fut: Field,
    /// The loop's `PyReadySet` the future is registered with.
    ready: Field,
    flags: u32,
}

/// The object behind a slot's `self`.
///
/// # Safety
/// `slf` is a live object of the `MailboxRecv` type, and nothing else uses it as a `RecvObject`
/// while the reference lives (CPython calls its slots one at a time, with the GIL held).
unsafe fn this<'a>(slf: *mut ffi::PyObject) -> &'a mut RecvObject {
    // SAFETY: (the contract) the object's memory is a RecvObject (the type's basicsize).
    unsafe { &mut *slf.cast::<RecvObject>() }
}

static RECV_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A new awaitable receive on `mailbox`; `anext` for `__anext__`.
pub(crate) fn recv<'py>(
    mailbox: &Bound<'py, PyMailbox>,
    anext: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = mailbox.py();
    let Some(tp) = RECV_TYPE.get(py) else {
        return Err(PyRuntimeError::new_err(
            "hornbeam_erlang._native is not initialised",
        ));
    };
    // SAFETY: the type is a live heap type whose basicsize is RecvObject's; GenericAlloc zeroes
    // the object (every pointer NULL, flags 0) and starts tracking it, which traverse allows.
    unsafe {
        let obj = ffi::PyType_GenericAlloc(tp.as_ptr().cast(), 0);
        let obj = Bound::from_owned_ptr_or_err(py, obj)?;
        let fresh = this(obj.as_ptr());
        fresh.mailbox.set(mailbox.clone().into_any());
        fresh.flags = if anext { ANEXT } else { 0 };
        Ok(obj)
    }
}

/// A code object (held) and whether it is a coroutine's or an async generator's.
type CodeFlag = (Py<PyAny>, bool);

/// Whether the Python code calling us now runs in a coroutine or an async generator (its code's
/// `co_flags`), known from a per-thread cache of code objects. The cache holds each code object
/// it names, so no other code object can take its address.
pub(crate) fn caller_is_async(py: Python<'_>) -> bool {
    const SLOTS: usize = 32;
    const ASYNC_CODE: i64 = 0x0080 | 0x0200; // CO_COROUTINE | CO_ASYNC_GENERATOR
    thread_local! {
        static CODES: std::cell::RefCell<Vec<Option<CodeFlag>>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    // SAFETY: with the GIL held; the frame is borrowed, the code a new reference we own.
    let code = unsafe {
        let frame = ffi::PyEval_GetFrame();
        if frame.is_null() {
            return false;
        }
        let code = ffi::PyFrame_GetCode(frame);
        if code.is_null() {
            ffi::PyErr_Clear();
            return false;
        }
        Bound::from_owned_ptr(py, code.cast())
    };
    let slot = (code.as_ptr() as usize >> 4) % SLOTS;
    let hit = CODES.with(|c| match c.borrow().get(slot) {
        Some(Some((held, is_async))) if held.is(&code) => Some(*is_async),
        _ => None,
    });
    if let Some(is_async) = hit {
        return is_async;
    }
    let is_async = code
        .getattr(pyo3::intern!(py, "co_flags"))
        .and_then(|f| f.extract::<i64>())
        .map(|f| f & ASYNC_CODE != 0)
        .unwrap_or(false);
    let old = CODES.with(|c| {
        let mut slots = c.borrow_mut();
        if slots.is_empty() {
            slots.resize_with(SLOTS, || None);
        }
        slots[slot].replace((code.unbind(), is_async))
    });
    drop(old); // outside the borrow: dropping a code object may run Python code
    is_async
}

/// What one send produced.
enum Step<'py> {
    /// The message (PYGEN_RETURN).
    Ready(Bound<'py, PyAny>),
    /// The future to wait on (PYGEN_NEXT).
    Wait(Bound<'py, PyAny>),
}

impl RecvObject {
    /// One step: take a message, or register a future and hand it to the task.
    fn step<'py>(&mut self, py: Python<'py>) -> PyResult<Step<'py>> {
        let mailbox = match self.mailbox.get(py) {
            Some(mb) if self.flags & DONE == 0 => mb.to_owned(),
            _ => {
                return Err(PyRuntimeError::new_err(
                    "cannot reuse an already awaited recv()",
                ))
            }
        };
        // Resumed: the hub completed the future and took it off the ready set.
        drop(self.fut.take(py));
        let mb = mailbox.downcast::<PyMailbox>()?;
        let taken = mb.get().take_or_arm();
        if !matches!(taken, Taken::Empty) {
            self.flags |= DONE;
        }
        match taken {
            Taken::Message(m) => Ok(Step::Ready(Bound::new(py, m)?.into_any())),
            Taken::Closed if self.flags & ANEXT != 0 => Err(PyStopAsyncIteration::new_err(())),
            Taken::Closed => Err(crate::errors::MailboxClosed::new_err("mailbox is closed")),
            Taken::Error(e) => Err(e),
            Taken::Empty => {
                let (event_loop, ready) = PyMailbox::hub(mb)?;
                let fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
                fut.setattr(pyo3::intern!(py, "_asyncio_future_blocking"), true)?;
                ready.get().add_waiter(mb.get().id(), fut.clone().unbind());
                self.fut.set(fut.clone());
                if self.ready.0.is_null() {
                    self.ready.set(ready.into_any());
                }
                Ok(Step::Wait(fut))
            }
        }
    }

    /// Takes the future off the ready set and marks the receive finished (throw, close,
    /// dealloc).
    fn finish(&mut self, py: Python<'_>) {
        self.flags |= DONE;
        let Some(fut) = self.fut.take(py) else {
            return;
        };
        let (Some(ready), Some(mailbox)) = (self.ready.get(py), self.mailbox.get(py)) else {
            return;
        };
        if let (Ok(ready), Ok(mb)) = (
            ready.downcast::<PyReadySet>(),
            mailbox.downcast::<PyMailbox>(),
        ) {
            ready.get().forget_waiter(mb.get().id(), &fut);
        }
    }
}

/// Runs `f` as a slot body: a panic becomes `RuntimeError` instead of unwinding into CPython.
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(PyRuntimeError::new_err("hornbeam_erlang recv() panicked")))
}

unsafe extern "C" fn am_send(
    slf: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: CPython calls slots with the GIL held, on a live object of this type.
    let (py, this) = unsafe { (Python::assume_attached(), this(slf)) };
    let (out, status) = match guarded(|| this.step(py)) {
        Ok(Step::Ready(v)) => (v.into_ptr(), ffi::PySendResult::PYGEN_RETURN),
        Ok(Step::Wait(f)) => (f.into_ptr(), ffi::PySendResult::PYGEN_NEXT),
        Err(e) => {
            e.restore(py);
            (ptr::null_mut(), ffi::PySendResult::PYGEN_ERROR)
        }
    };
    // SAFETY: `result` is CPython's out-pointer for this call.
    unsafe { *result = out };
    status
}

/// `send(value)` and `__next__`: a step with the return value as `StopIteration`, as Python code
/// expects of a coroutine or an iterator.
fn send_py(py: Python<'_>, this: &mut RecvObject) -> *mut ffi::PyObject {
    match guarded(|| this.step(py)) {
        Ok(Step::Wait(f)) => f.into_ptr(),
        Ok(Step::Ready(v)) => {
            PyStopIteration::new_err((v.unbind(),)).restore(py);
            ptr::null_mut()
        }
        Err(e) => {
            e.restore(py);
            ptr::null_mut()
        }
    }
}

unsafe extern "C" fn tp_iternext(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls slots with the GIL held, on a live object of this type.
    let (py, this) = unsafe { (Python::assume_attached(), this(slf)) };
    send_py(py, this)
}

unsafe extern "C" fn meth_send(
    slf: *mut ffi::PyObject,
    _value: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls methods with the GIL held, `slf` of this type. The value sent is
    // not used (a task sends None).
    let (py, this) = unsafe { (Python::assume_attached(), this(slf)) };
    send_py(py, this)
}

/// The exception `throw(exc)` / `throw(type[, value[, traceback]])` raises.
fn thrown(args: &Bound<'_, PyAny>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let args = args.downcast::<pyo3::types::PyTuple>()?;
        let first = args
            .get_item(0)
            .map_err(|_| PyTypeError::new_err("throw expected at least 1 argument, got 0"))?;
        let value = args.get_item(1).ok().filter(|v| !v.is_none());
        Ok(match value {
            Some(v) if first.is_instance_of::<PyType>() && !v.is_instance(&first)? => {
                PyErr::from_value(first.call1((v,))?)
            }
            Some(v) => PyErr::from_value(v),
            None => PyErr::from_value(first),
        })
    };
    build().unwrap_or_else(|e| e)
}

/// `throw(...)`: stops waiting, then raises the exception here (a cancelled task's
/// `CancelledError` goes on up to the task).
unsafe extern "C" fn meth_throw(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls methods with the GIL held, `slf` of this type, `args` the call's
    // tuple, borrowed for the call.
    let (py, this, args) = unsafe {
        let py = Python::assume_attached();
        (py, this(slf), Bound::from_borrowed_ptr(py, args))
    };
    this.finish(py);
    thrown(&args).restore(py);
    ptr::null_mut()
}

/// `close()`: stops waiting; nothing was taken, so nothing is lost.
unsafe extern "C" fn meth_close(
    slf: *mut ffi::PyObject,
    _: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls methods with the GIL held, `slf` of this type.
    let (py, this) = unsafe { (Python::assume_attached(), this(slf)) };
    this.finish(py);
    py.None().into_ptr()
}

unsafe extern "C" fn am_await(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: a live object; the awaitable is its own iterator (a new reference to it).
    unsafe { ffi::Py_IncRef(slf) };
    slf
}

unsafe extern "C" fn tp_traverse(
    slf: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: the collector calls this with the GIL held, on a live object of this type.
    let this = unsafe { this(slf) };
    for p in [this.mailbox.0, this.fut.0, this.ready.0] {
        if !p.is_null() {
            // SAFETY: the collector's callback, on a live object this one references.
            let r = unsafe { visit(p, arg) };
            if r != 0 {
                return r;
            }
        }
    }
    0
}

unsafe extern "C" fn tp_clear(slf: *mut ffi::PyObject) -> c_int {
    // SAFETY: the collector (or dealloc) calls this with the GIL held, on a live object.
    let (py, this) = unsafe { (Python::assume_attached(), this(slf)) };
    drop(this.fut.take(py));
    drop(this.ready.take(py));
    drop(this.mailbox.take(py));
    0
}

unsafe extern "C" fn tp_dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: the last reference is gone and the GIL is held: untrack, release the fields, free
    // the memory with the type's tp_free and drop the instance's reference to its heap type.
    unsafe {
        ffi::PyObject_GC_UnTrack(slf.cast());
        this(slf).finish(Python::assume_attached());
        tp_clear(slf);
        let tp = ffi::Py_TYPE(slf);
        let free = ffi::PyType_GetSlot(tp, ffi::Py_tp_free);
        if !free.is_null() {
            let free: ffi::freefunc = std::mem::transmute(free);
            free(slf.cast());
        }
        ffi::Py_DecRef(tp.cast());
    }
}

/// `PyType_Spec` and its tables point at each other and live for the process.
struct Static<T>(T);
// SAFETY: immutable after construction; the strings are 'static.
unsafe impl<T> Sync for Static<T> {}

static METHODS: Static<[ffi::PyMethodDef; 4]> = Static([
    ffi::PyMethodDef {
        ml_name: c"send".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: meth_send,
        },
        ml_flags: ffi::METH_O,
        ml_doc: c"send(value): takes the message (StopIteration) or returns the future to wait on."
            .as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"throw".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: meth_throw,
        },
        ml_flags: ffi::METH_VARARGS,
        ml_doc: c"throw(exc): stops waiting and raises exc.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"close".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: meth_close,
        },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"close(): stops waiting; nothing was taken.".as_ptr(),
    },
    ffi::PyMethodDef::zeroed(),
]);

/// Makes the type (once, at module init).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let slot = |slot: c_int, pfunc: *mut c_void| ffi::PyType_Slot { slot, pfunc };
    let mut slots = [
        slot(ffi::Py_tp_dealloc, tp_dealloc as *mut c_void),
        slot(ffi::Py_tp_traverse, tp_traverse as *mut c_void),
        slot(ffi::Py_tp_clear, tp_clear as *mut c_void),
        slot(ffi::Py_tp_iter, ffi::PyObject_SelfIter as *mut c_void),
        slot(ffi::Py_tp_iternext, tp_iternext as *mut c_void),
        slot(ffi::Py_am_await, am_await as *mut c_void),
        slot(PY_AM_SEND, am_send as *mut c_void),
        slot(ffi::Py_tp_methods, METHODS.0.as_ptr() as *mut c_void),
        slot(
            ffi::Py_tp_doc,
            c"An awaitable Mailbox.recv(): await it, or hand it to asyncio.create_task.".as_ptr()
                as *mut c_void,
        ),
        slot(0, ptr::null_mut()),
    ];
    let mut spec = ffi::PyType_Spec {
        name: c"hornbeam_erlang.MailboxRecv".as_ptr(),
        basicsize: std::mem::size_of::<RecvObject>() as c_int,
        itemsize: 0,
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_HAVE_GC) as _,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: the spec and its slots are valid for the call (CPython copies what it keeps; the
    // method table and strings are 'static).
    let tp = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))? };
    let tp = tp.downcast_into::<PyType>()?;
    m.add("MailboxRecv", &tp)?;
    RECV_TYPE
        .set(py, tp.unbind())
        .map_err(|_| PyRuntimeError::new_err("MailboxRecv is made already"))
}
