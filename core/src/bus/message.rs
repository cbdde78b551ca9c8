//! [`Message`]: one allocation holding a reference count, the topic and the payload, reached by a
//! thin pointer.
//!
//! Why not `Arc<[u8]>`: its fat pointer made each queued item 32 bytes (40 with the channel's
//! stamp) against 16, and a publish to N mailboxes took N atomic increments of one shared
//! count, which the consumer's decrements on the other core bounce between the cores. Here a
//! publish turns its message into N references with one atomic add ([`Message::into_handles`])
//! and each delivery takes one of them ([`Handles::take`]) without touching the count; a publish
//! to one mailbox moves its reference into it (measured in
//! `cargo bench -p hornbeam-benches --bench bus`; see BENCHMARKS.md).

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering};

use super::ChangeKind;

/// What precedes the bytes in a message's allocation.
#[repr(C)]
struct Header {
    refs: AtomicUsize,
    /// Topic plus payload bytes.
    len: usize,
    topic_len: u32,
    /// 0 for a published message, else a [`ChangeKind`] (a watch event).
    kind: u8,
}

/// More references than this abort, as `Arc` does: the count can then never wrap.
const MAX_REFS: usize = isize::MAX as usize;

/// A published message, shared by every mailbox it reached: topic and payload sit in one
/// reference-counted allocation, so a delivery costs at most a reference-count increment, never a
/// copy.
pub struct Message {
    ptr: NonNull<Header>,
}

// SAFETY: the bytes never change after `new`, and the count is atomic: a message may be sent to
// and shared by any thread, as `Arc<[u8]>` may.
unsafe impl Send for Message {}
// SAFETY: as above.
unsafe impl Sync for Message {}

/// Where the bytes start: right after the header (bytes need no alignment).
const OFFSET: usize = std::mem::size_of::<Header>();

/// The allocation of a message of `len` bytes.
fn layout(len: usize) -> Layout {
    OFFSET
        .checked_add(len)
        .and_then(|size| Layout::from_size_align(size, std::mem::align_of::<Header>()).ok())
        .expect("a message's length fits in memory")
}

impl Message {
    /// A message (the bus builds these; public for backends and tests).
    pub fn new(topic: &str, payload: &[u8]) -> Message {
        Message::with_kind(topic, payload, 0)
    }

    /// A watch event: `key` changed by `kind`, `value` the new value's MessagePack (empty for
    /// deletes, expiries and clears).
    pub(crate) fn change(kind: ChangeKind, key: &str, value: &[u8]) -> Message {
        Message::with_kind(key, value, kind as u8)
    }

    fn with_kind(topic: &str, payload: &[u8], kind: u8) -> Message {
        let len = topic.len() + payload.len();
        let layout = layout(len);
        // SAFETY: the layout has a non-zero size (the header alone is not empty).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<Header>()) else {
            alloc::handle_alloc_error(layout);
        };
        // SAFETY: a fresh allocation of `layout`: the header fits at its start and `len` bytes at
        // `OFFSET`; both copies stay inside and together write every byte.
        unsafe {
            ptr.as_ptr().write(Header {
                refs: AtomicUsize::new(1),
                len,
                // Topics and keys are bounded far below 4 GiB by the limits.
                topic_len: topic.len() as u32,
                kind,
            });
            let dst = raw.add(OFFSET);
            std::ptr::copy_nonoverlapping(topic.as_ptr(), dst, topic.len());
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(topic.len()), payload.len());
        }
        Message { ptr }
    }

    /// The message as one pointer, for an API that hands it out and takes it back (the C ABI's
    /// `HbMessage*`): the handle's reference moves into the pointer. The pointer is never NULL
    /// and is aligned like a `usize`, so its lowest bit is free for a caller's tag.
    pub fn into_raw(self) -> *mut u8 {
        let p = self.ptr.as_ptr().cast::<u8>();
        std::mem::forget(self);
        p
    }

    /// The message `into_raw` gave, with its reference.
    ///
    /// # Safety
    /// `raw` came from [`Message::into_raw`], and each such pointer is given back once.
    pub unsafe fn from_raw(raw: *mut u8) -> Message {
        // SAFETY: (the contract) a live message allocation, so not NULL, whose reference this
        // handle now owns.
        let ptr = unsafe { NonNull::new_unchecked(raw.cast::<Header>()) };
        Message { ptr }
    }

    fn header(&self) -> &Header {
        // SAFETY: the allocation lives while any handle does; the header is never written after
        // `with_kind` except its atomic count.
        unsafe { self.ptr.as_ref() }
    }

    /// Topic then payload.
    fn bytes(&self) -> &[u8] {
        let len = self.header().len;
        // SAFETY: `len` initialised bytes start at `OFFSET` in the live allocation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>().add(OFFSET), len) }
    }

    /// For a watch event (see [`super::Mailbox::watch`]): what happened to the key, which
    /// [`Message::topic`] then names, with the new value as [`Message::payload`]
    /// (MessagePack; empty for deletes, expiries and clears). `None` for a published message.
    pub fn change_kind(&self) -> Option<ChangeKind> {
        ChangeKind::from_u8(self.header().kind)
    }

    /// The topic it was published to.
    pub fn topic(&self) -> &str {
        let n = self.header().topic_len as usize;
        // SAFETY: the first `topic_len` bytes were copied from a `&str` in `new` and never change.
        unsafe { std::str::from_utf8_unchecked(&self.bytes()[..n]) }
    }

    /// The payload bytes (MessagePack when published from Python).
    pub fn payload(&self) -> &[u8] {
        &self.bytes()[self.header().topic_len as usize..]
    }

    /// Whether two messages share the same allocation (one publish reaching two mailboxes).
    pub fn shares_with(&self, other: &Message) -> bool {
        self.ptr == other.ptr
    }

    /// Whether another handle to this message's allocation exists: the publish reached other
    /// mailboxes (or a receiver holds a copy), so a binding that converts it may keep the
    /// conversion for the next receiver (see [`Message::shares_with`]).
    pub fn is_shared(&self) -> bool {
        self.header().refs.load(Ordering::Acquire) > 1
    }

    /// Bytes it counts for against a mailbox's byte bound.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.header().len
    }

    /// The allocation's address (for the valgrind annotations of the hand-over).
    pub(crate) fn addr(&self) -> *const u8 {
        self.ptr.as_ptr().cast::<u8>()
    }

    /// Turns this handle into `n` (at least 1) with one atomic add of `n - 1`, to be taken by up
    /// to `n` deliveries; the ones not taken are released when the set is dropped. A publish to
    /// one mailbox moves the publisher's own reference into it and touches no count at all.
    pub(crate) fn into_handles(self, n: usize) -> Handles {
        let extra = n.saturating_sub(1);
        if extra > 0 && self.header().refs.fetch_add(extra, Ordering::Relaxed) > MAX_REFS - extra {
            std::process::abort();
        }
        let ptr = self.ptr;
        std::mem::forget(self);
        Handles {
            ptr,
            left: n.max(1),
        }
    }
}

/// References to one message made by [`Message::into_handles`], held until taken.
pub(crate) struct Handles {
    ptr: NonNull<Header>,
    /// References held: each is one [`Handles::take`].
    left: usize,
}

impl Handles {
    /// A handle that uses one held reference (no atomic operation).
    ///
    /// # Panics
    /// When all were taken: a caller takes at most the `n` it asked for.
    #[inline]
    pub(crate) fn take(&mut self) -> Message {
        assert!(self.left > 0, "more deliveries than handles made");
        self.left -= 1;
        Message { ptr: self.ptr }
    }

    /// Gives back a handle taken from this set that was not used (a full mailbox), without
    /// touching the count.
    #[inline]
    pub(crate) fn give_back(&mut self, msg: Message) {
        debug_assert!(msg.ptr == self.ptr);
        std::mem::forget(msg);
        self.left += 1;
    }
}

impl Drop for Handles {
    fn drop(&mut self) {
        if self.left == 0 {
            return;
        }
        if self.left > 1 {
            // One reference stays held below, so this never drops the count to zero.
            // SAFETY: (for `as_ref`) the allocation lives while we hold a reference.
            let refs = unsafe { &self.ptr.as_ref().refs };
            refs.fetch_sub(self.left - 1, Ordering::Release);
        }
        // The last held reference, released as a handle's drop (freeing it if it was the last).
        drop(Message { ptr: self.ptr });
    }
}

impl Clone for Message {
    fn clone(&self) -> Message {
        if self.header().refs.fetch_add(1, Ordering::Relaxed) > MAX_REFS {
            std::process::abort();
        }
        Message { ptr: self.ptr }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other handle's uses happen before this free (as in `Arc`).
        fence(Ordering::Acquire);
        let layout = layout(self.header().len);
        // SAFETY: the last handle: the allocation was made in `with_kind` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr().cast::<u8>(), layout) };
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.shares_with(other)
            || (self.header().kind == other.header().kind
                && self.header().topic_len == other.header().topic_len
                && self.bytes() == other.bytes())
    }
}

impl Eq for Message {}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic())
            .field("payload", &self.payload())
            .field("kind", &self.header().kind)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(m: &Message) -> usize {
        m.header().refs.load(Ordering::Relaxed)
    }

    #[test]
    fn handles_count_exactly() {
        // Three handles, one given back: dropping the set releases the two not taken.
        let m = Message::new("room:a", b"hi");
        let keep = m.clone();
        let mut h = m.into_handles(3);
        assert_eq!(refs(&keep), 4);
        let a = h.take();
        let b = h.take();
        h.give_back(b);
        assert_eq!(refs(&keep), 4);
        drop(h);
        assert_eq!(refs(&keep), 2);
        assert!(a.shares_with(&keep) && keep.is_shared());
        assert_eq!((a.topic(), a.payload()), ("room:a", &b"hi"[..]));
        drop(a);
        assert_eq!(refs(&keep), 1);
        assert!(!keep.is_shared());

        // One handle moves the reference: no count changes.
        let mut h = keep.clone().into_handles(1);
        assert_eq!(refs(&keep), 2);
        let only = h.take();
        drop(h);
        assert_eq!(refs(&keep), 2);
        drop(only);
        assert_eq!(refs(&keep), 1);

        // A set dropped with every handle given back frees the message (miri and valgrind see
        // a leak otherwise); one whose handles are all taken leaves the count to them.
        let mut h = Message::new("t", b"x").into_handles(2);
        let x = h.take();
        h.give_back(x);
        drop(h);
        let mut h = Message::new("t", b"y").into_handles(2);
        let (x, y) = (h.take(), h.take());
        drop(h);
        assert_eq!(refs(&x), 2);
        drop((x, y));
    }

    #[test]
    #[should_panic(expected = "more deliveries than handles made")]
    fn taking_more_handles_than_made_panics() {
        let mut h = Message::new("t", b"x").into_handles(1);
        let _a = h.take();
        let _b = h.take();
    }

    #[test]
    fn messages_compare_and_carry_their_kind() {
        let e = Message::change(ChangeKind::Set, "k", b"");
        assert_eq!(e.change_kind(), Some(ChangeKind::Set));
        assert_eq!((e.topic(), e.payload(), e.size()), ("k", &b""[..], 1));
        assert_eq!(Message::new("t", b"x"), Message::new("t", b"x"));
        assert_ne!(Message::new("t", b"x"), Message::new("tx", b""));
    }
}
