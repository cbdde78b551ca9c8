//! The bus through C: publish, mailboxes, messages.

use std::time::Duration;

use hornbeam_core::{ChangeKind, Mailbox, Message, RecvError, Value};

use crate::boundary::{bytes, guard, need_out, text, write_out, Handle};
use crate::engine::HbEngine;
use crate::status::{from_error, from_recv, HbStatus};

/// Publishes `payload` (MessagePack for Python readers; any bytes for C readers) to `topic`.
/// When `delivered` is not NULL, writes how many mailboxes took the message.
///
/// # Safety
/// `engine` is a live handle; `topic` and `payload` are valid for their lengths;
/// `delivered` is NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn hb_publish(
    engine: *const HbEngine,
    topic: *const u8,
    topic_len: usize,
    payload: *const u8,
    payload_len: usize,
    delivered: *mut usize,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (e, topic, payload) = unsafe {
            (
                HbEngine::from_ptr(engine, "engine")?,
                text(topic, topic_len, "topic")?,
                bytes(payload, payload_len, "payload")?,
            )
        };
        let n = e.0.bus().publish(topic, payload).map_err(from_error)?;
        // SAFETY: `delivered` is NULL or valid per the contract.
        unsafe { crate::boundary::write_opt(delivered, n) };
        Ok(())
    })
}

/// Publishes UTF-8 `text` as a MessagePack string (Python receives a `str`).
///
/// # Safety
/// As `hb_publish`.
#[no_mangle]
pub unsafe extern "C" fn hb_publish_str(
    engine: *const HbEngine,
    topic: *const u8,
    topic_len: usize,
    text_ptr: *const u8,
    text_len: usize,
    delivered: *mut usize,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (e, topic, body) = unsafe {
            (
                HbEngine::from_ptr(engine, "engine")?,
                text(topic, topic_len, "topic")?,
                text(text_ptr, text_len, "text")?,
            )
        };
        let encoded = Value::encode(body).map_err(from_error)?.to_msgpack();
        let n = e.0.bus().publish(topic, &encoded[..]).map_err(from_error)?;
        // SAFETY: `delivered` is NULL or valid per the contract.
        unsafe { crate::boundary::write_opt(delivered, n) };
        Ok(())
    })
}

/// A mailbox: a bounded queue that the topics and patterns it subscribes to deliver into, and
/// the store changes of the key prefixes it watches (`hb_mailbox_watch`).
/// Underneath, a Rust `Mailbox`. Created by `hb_mailbox_new`, freed by `hb_mailbox_free` (which
/// also unsubscribes it). Thread-safe: any thread may subscribe, receive or close; each message is
/// received once.
pub struct HbMailbox(Mailbox);

impl Handle for HbMailbox {}

/// Borrows the mailbox handle and the UTF-8 text (a topic, or a key prefix, named `what` in
/// errors) that subscribe, unsubscribe, watch and unwatch start with.
///
/// # Safety
/// `mailbox` is NULL or a live handle; `ptr` is NULL or valid for reads of `len` bytes.
unsafe fn mailbox_text<'a>(
    mailbox: *const HbMailbox,
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<(&'a HbMailbox, &'a str), HbStatus> {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        Ok((
            HbMailbox::from_ptr(mailbox, "mailbox")?,
            text(ptr, len, what)?,
        ))
    }
}

/// A received message, a watch event (`hb_message_change_kind` is not `HB_CHANGE_NONE`), or a
/// lag notice (`hb_message_lagged` > 0: that many messages were dropped because the mailbox was
/// full). Owned by the caller; freed by `hb_message_free`. Immutable, so
/// safe to read from any thread.
///
/// Underneath, the pointer is the message itself (`Message::into_raw`: one reference, no
/// allocation per receive), or, with its lowest bit set, a boxed lag count.
pub struct HbMessage {
    _opaque: [u8; 0],
}

/// The lowest bit of an `HbMessage*` that is a lag notice.
const LAG_TAG: usize = 1;

/// What an `HbMessage*` points at: the one place that reads the tag.
enum Tagged {
    /// A message's pointer from `Message::into_raw`.
    Message(*mut u8),
    /// A boxed lag count.
    Lagged(*mut u64),
}

impl Tagged {
    /// `None` for NULL.
    fn of(ptr: *const HbMessage) -> Option<Tagged> {
        let addr = ptr as usize;
        if ptr.is_null() {
            None
        } else if addr & LAG_TAG != 0 {
            Some(Tagged::Lagged((addr & !LAG_TAG) as *mut u64))
        } else {
            Some(Tagged::Message(ptr as *mut u8))
        }
    }
}

/// What an `HbMessage*` holds, borrowed.
enum Received {
    /// A message (held without its reference: the pointer keeps it).
    Message(std::mem::ManuallyDrop<Message>),
    Lagged(u64),
}

impl Received {
    /// The message or notice behind `ptr`; `HB_NULL_ARGUMENT` when it is NULL.
    ///
    /// # Safety
    /// `ptr` is NULL or a live `HbMessage*` made by `deliver` and not yet freed.
    unsafe fn of(ptr: *const HbMessage) -> Result<Received, HbStatus> {
        Ok(match Tagged::of(ptr) {
            None => return Err(crate::boundary::null("message")),
            // SAFETY: (the contract) a live Box<u64> from `deliver`.
            Some(Tagged::Lagged(n)) => Received::Lagged(unsafe { *n }),
            Some(Tagged::Message(m)) => {
                // SAFETY: (the contract) a live message from `into_raw`; ManuallyDrop leaves its
                // reference with the pointer.
                let m = unsafe { Message::from_raw(m) };
                Received::Message(std::mem::ManuallyDrop::new(m))
            }
        })
    }

    fn message(&self) -> Option<&Message> {
        match self {
            Received::Message(m) => Some(m),
            Received::Lagged(_) => None,
        }
    }
}

/// Creates a mailbox on `engine` with the default bounds (1024 messages, 8 MiB). On success
/// writes a new handle to `*out`; free it with `hb_mailbox_free`.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for one pointer.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_new(
    engine: *const HbEngine,
    out: *mut *mut HbMailbox,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let e = unsafe { HbEngine::from_ptr(engine, "engine") }?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, HbMailbox(e.0.bus().mailbox()).into_raw(), "out") }
    })
}

/// Subscribes to a topic or pattern (`room:*` one segment, `room:>` one or more).
///
/// # Safety
/// `mailbox` is a live handle; `topic` is valid for `topic_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_subscribe(
    mailbox: *const HbMailbox,
    topic: *const u8,
    topic_len: usize,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (m, topic) = unsafe { mailbox_text(mailbox, topic, topic_len, "topic") }?;
        m.0.subscribe(topic).map(drop).map_err(from_error)
    })
}

/// Unsubscribes from a topic or pattern (not subscribed is fine).
///
/// # Safety
/// `mailbox` is a live handle; `topic` is valid for `topic_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_unsubscribe(
    mailbox: *const HbMailbox,
    topic: *const u8,
    topic_len: usize,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (m, topic) = unsafe { mailbox_text(mailbox, topic, topic_len, "topic") }?;
        m.0.unsubscribe(topic).map(drop).map_err(from_error)
    })
}

/// Watches the store's keys starting with `prefix` (UTF-8; an empty prefix, which may be NULL
/// with `prefix_len` 0, watches every key). From then on the mailbox receives one message per
/// committed change of such a key (set, delete, incr/decr, expiry, clear), in the order the store
/// committed them for each key: `hb_message_change_kind` says which change, `hb_message_topic`
/// names the key (empty for a clear) and `hb_message_payload` holds the new value's MessagePack
/// (empty for a delete, an expiry or a clear). Changes share the mailbox's bound and lag notices
/// with its messages. Watching a prefix already watched is fine. `HB_INVALID_KEY` when the prefix
/// is longer than the key limit, `HB_TOO_MANY_SUBSCRIPTIONS` past the per-mailbox limit,
/// `HB_CLOSED` after `hb_mailbox_close`; a backend without watches answers `HB_INVALID_ARGUMENT`
/// (see `hb_last_error`). The prefix is copied.
///
/// # Safety
/// `mailbox` is a live handle; `prefix` is NULL (with `prefix_len` 0) or valid for `prefix_len`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_watch(
    mailbox: *const HbMailbox,
    prefix: *const u8,
    prefix_len: usize,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (m, prefix) = unsafe { mailbox_text(mailbox, prefix, prefix_len, "prefix") }?;
        m.0.watch(prefix).map(drop).map_err(from_error)
    })
}

/// Stops watching a key prefix (not watched is fine). Changes already queued stay queued.
///
/// # Safety
/// `mailbox` is a live handle; `prefix` is NULL (with `prefix_len` 0) or valid for `prefix_len`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_unwatch(
    mailbox: *const HbMailbox,
    prefix: *const u8,
    prefix_len: usize,
) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let (m, prefix) = unsafe { mailbox_text(mailbox, prefix, prefix_len, "prefix") }?;
        m.0.unwatch(prefix).map(drop).map_err(from_error)
    })
}

fn deliver(r: Result<Message, RecvError>, out: *mut *mut HbMessage) -> Result<(), HbStatus> {
    let ptr = match r {
        Ok(m) => m.into_raw().cast::<HbMessage>(),
        Err(RecvError::Lagged(n)) => {
            let boxed = Box::into_raw(Box::new(n)) as usize;
            (boxed | LAG_TAG) as *mut HbMessage
        }
        Err(e) => return Err(from_recv(e)),
    };
    // SAFETY: callers checked `out` is non-NULL; valid per their contracts.
    unsafe { write_out(out, ptr, "out") }
}

/// Takes the next message, waiting up to `timeout_ms` milliseconds (-1: forever). On success
/// writes a new message to `*out` (free it with `hb_message_free`); `HB_TIMEOUT` when none came,
/// `HB_CLOSED` after `hb_mailbox_close`.
///
/// # Safety
/// `mailbox` is a live handle; `out` is valid for one pointer.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_recv(
    mailbox: *const HbMailbox,
    timeout_ms: i64,
    out: *mut *mut HbMessage,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { HbMailbox::from_ptr(mailbox, "mailbox") }?;
        let timeout = (timeout_ms >= 0).then(|| Duration::from_millis(timeout_ms as u64));
        deliver(m.0.recv_timeout(timeout), out)
    })
}

/// Takes the next message without waiting; `HB_EMPTY` when there is none. For event loops:
/// after `hb_mailbox_fd` reads as ready, call this until `HB_EMPTY` (which re-arms the
/// descriptor), then wait again.
///
/// # Safety
/// `mailbox` is a live handle; `out` is valid for one pointer.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_try_recv(
    mailbox: *const HbMailbox,
    out: *mut *mut HbMessage,
) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { HbMailbox::from_ptr(mailbox, "mailbox") }?;
        deliver(m.0.try_recv_arm(), out)
    })
}

/// Writes a file descriptor that is readable while messages may be waiting (for `poll`,
/// `epoll`, `select`). Owned by the mailbox: do not close or read it. Wake-ups are coalesced:
/// drain with `hb_mailbox_try_recv` until `HB_EMPTY` after each wake-up.
///
/// # Safety
/// `mailbox` is a live handle; `out` is valid for one `int`.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_fd(mailbox: *const HbMailbox, out: *mut i32) -> HbStatus {
    guard(|| {
        need_out(out, "out")?;
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { HbMailbox::from_ptr(mailbox, "mailbox") }?;
        let fd = m.0.fd().map_err(from_error)?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, fd, "out") }
    })
}

/// Closes the mailbox: unsubscribes and unwatches everything and wakes waiting receivers with
/// `HB_CLOSED`. The handle must still be freed with `hb_mailbox_free`.
///
/// # Safety
/// `mailbox` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_close(mailbox: *const HbMailbox) -> HbStatus {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { HbMailbox::from_ptr(mailbox, "mailbox") }?;
        m.0.close();
        Ok(())
    })
}

/// Closes and frees a mailbox. NULL does nothing. No other thread may use it during or after.
///
/// # Safety
/// `mailbox` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hb_mailbox_free(mailbox: *mut HbMailbox) {
    let _ = crate::boundary::guard(|| {
        // SAFETY: forwarded from this function's contract.
        unsafe { HbMailbox::free(mailbox) };
        Ok(())
    });
}

/// Borrows the message's topic: writes a pointer to its UTF-8 bytes (not NUL-terminated;
/// valid until the message is freed) and its length. For a watch event it is the key that
/// changed (empty for a clear); a lag notice has an empty topic.
///
/// # Safety
/// `message` is a live `HbMessage`; `topic` and `topic_len` are valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn hb_message_topic(
    message: *const HbMessage,
    topic: *mut *const u8,
    topic_len: *mut usize,
) -> HbStatus {
    guard(|| {
        need_out(topic, "topic")?;
        need_out(topic_len, "topic_len")?;
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { Received::of(message) }?;
        let t = m.message().map_or("", |m| m.topic());
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(topic, t.as_ptr(), "topic")?;
            write_out(topic_len, t.len(), "topic_len")
        }
    })
}

/// Borrows the message's payload (valid until the message is freed). For a watch event it is
/// the key's new value as MessagePack (empty for a delete, an expiry or a clear); a lag notice
/// has an empty payload.
///
/// # Safety
/// `message` is a live `HbMessage`; `payload` and `payload_len` are valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn hb_message_payload(
    message: *const HbMessage,
    payload: *mut *const u8,
    payload_len: *mut usize,
) -> HbStatus {
    guard(|| {
        need_out(payload, "payload")?;
        need_out(payload_len, "payload_len")?;
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { Received::of(message) }?;
        let p = m.message().map_or(&[][..], |m| m.payload());
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(payload, p.as_ptr(), "payload")?;
            write_out(payload_len, p.len(), "payload_len")
        }
    })
}

/// For a lag notice, how many messages were dropped before it; 0 for a real message or NULL.
///
/// # Safety
/// `message` is NULL or a live `HbMessage`.
#[no_mangle]
pub unsafe extern "C" fn hb_message_lagged(message: *const HbMessage) -> u64 {
    // SAFETY: forwarded from this function's contract.
    match unsafe { Received::of(message) } {
        Ok(Received::Lagged(n)) => n,
        _ => 0,
    }
}

/// What a received message reports (see `hb_mailbox_watch`): `HB_CHANGE_NONE` for a published
/// message or a lag notice, otherwise the change of the key `hb_message_topic` names. The values
/// match the Rust core's `ChangeKind` and are never renumbered.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum HbChangeKind {
    /// Not a watch event: a published message, a lag notice (or a NULL message).
    HB_CHANGE_NONE = 0,
    /// The key was set; the payload is its new value.
    HB_CHANGE_SET = 1,
    /// The key was deleted; the payload is empty.
    HB_CHANGE_DELETE = 2,
    /// The counter changed (incr or decr); the payload is its new value (a MessagePack integer).
    HB_CHANGE_INCR = 3,
    /// The key's TTL ran out and the store reclaimed it; the payload is empty.
    HB_CHANGE_EXPIRE = 4,
    /// The whole store was cleared; the topic and the payload are empty.
    HB_CHANGE_CLEAR = 5,
}

/// The change a watch event reports; `HB_CHANGE_NONE` for a published message, a lag notice or
/// NULL. Never fails.
///
/// # Safety
/// `message` is NULL or a live `HbMessage`.
#[no_mangle]
pub unsafe extern "C" fn hb_message_change_kind(message: *const HbMessage) -> HbChangeKind {
    // SAFETY: forwarded from this function's contract.
    let received = unsafe { Received::of(message) }.ok();
    let kind = received.as_ref().and_then(|m| m.message()?.change_kind());
    match kind {
        None => HbChangeKind::HB_CHANGE_NONE,
        Some(ChangeKind::Set) => HbChangeKind::HB_CHANGE_SET,
        Some(ChangeKind::Delete) => HbChangeKind::HB_CHANGE_DELETE,
        Some(ChangeKind::Incr) => HbChangeKind::HB_CHANGE_INCR,
        Some(ChangeKind::Expire) => HbChangeKind::HB_CHANGE_EXPIRE,
        Some(ChangeKind::Clear) => HbChangeKind::HB_CHANGE_CLEAR,
    }
}

/// Frees a message. NULL does nothing.
///
/// # Safety
/// `message` is NULL or a live `HbMessage`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn hb_message_free(message: *mut HbMessage) {
    match Tagged::of(message) {
        None => {}
        // SAFETY: (the contract) a live Box<u64> from `deliver`, freed once.
        Some(Tagged::Lagged(n)) => drop(unsafe { Box::from_raw(n) }),
        // SAFETY: (the contract) a live message from `into_raw`, given back once.
        Some(Tagged::Message(m)) => drop(unsafe { Message::from_raw(m) }),
    }
}
