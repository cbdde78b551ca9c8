//! Synchronisation facade and the engine's own synchronisation protocols, so loom can check them.
//!
//! Under `--cfg loom` the atomics and locks come from loom, which explores every interleaving in
//! `core/tests/loom_*.rs` (`make loom`); otherwise from std and parking_lot. Every protocol of
//! core's own built on atomics lives here: [`WakeFlag`] (one wake-up per batch), [`ReadyList`]
//! (a ready set's ids and its signal), [`HandOff`] (messages waiting behind a lag notice) and
//! [`GlobalSlot`] (the process-wide engine). The queues themselves are crossbeam's (checked by its
//! own loom suite); the mailboxes' byte counters are hints re-read under contention, checked by
//! `fuzz/mailbox_model`.

use std::collections::VecDeque;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, Ordering};

/// A mutex: parking_lot's, or loom's under `--cfg loom`.
#[derive(Debug, Default)]
pub(crate) struct Lock<T>(
    #[cfg(not(loom))] parking_lot::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

impl<T> Lock<T> {
    pub(crate) fn new(value: T) -> Lock<T> {
        #[cfg(not(loom))]
        return Lock(parking_lot::Mutex::new(value));
        #[cfg(loom)]
        return Lock(loom::sync::Mutex::new(value));
    }

    #[cfg(not(loom))]
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
        self.0.lock()
    }

    #[cfg(loom)]
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().expect("loom mutex")
    }
}

/// "Already signalled since the consumer last looked": makes wake-ups one per batch.
///
/// The protocol, which must never lose a wake-up:
/// - producer: make the item visible (queue it), then [`WakeFlag::raise`]; signal only when
///   it returns true (the flag went from lowered to raised);
/// - consumer: having found the queue empty, [`WakeFlag::lower`], then check the queue once
///   more before waiting.
///
/// The two SeqCst fences order "queue, then read flag" against "lower flag, then read queue":
/// either the producer sees the lowered flag and signals, or the consumer's second look sees
/// the item.
#[derive(Debug, Default)]
pub struct WakeFlag(AtomicBool);

impl WakeFlag {
    /// A lowered flag.
    pub fn new() -> WakeFlag {
        WakeFlag(AtomicBool::new(false))
    }

    /// Producer side, after queueing: true when the caller must signal the consumer.
    #[inline]
    pub fn raise(&self) -> bool {
        fence(Ordering::SeqCst);
        !self.0.load(Ordering::Relaxed) && !self.0.swap(true, Ordering::AcqRel)
    }

    /// Marks the flag raised unconditionally (a signal is being sent anyway); returns whether it
    /// was lowered.
    #[inline]
    pub fn force(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }

    /// Consumer side, after finding the queue empty: the caller must check the queue again.
    #[inline]
    pub fn lower(&self) {
        self.0.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}

/// The ids a ready set has to report, and whether its descriptor was signalled for them.
///
/// The protocol, which must never leave an id waiting without a wake-up:
/// - producer: [`ReadyList::mark`] pushes the id under the lock, then signals the descriptor only
///   when it returns true (the flag went from lowered to raised: one signal per batch);
/// - consumer: clears the descriptor, then [`ReadyList::take`] lowers the flag and takes the ids.
///
/// The lock orders a mark with a take: either the take sees the id, or the mark comes after it
/// and sees the lowered flag, and signals again.
#[derive(Debug, Default)]
pub struct ReadyList {
    signaled: AtomicBool,
    ids: Lock<Vec<u64>>,
}

impl ReadyList {
    /// An empty list, flag lowered.
    pub fn new() -> ReadyList {
        ReadyList {
            signaled: AtomicBool::new(false),
            ids: Lock::new(Vec::new()),
        }
    }

    /// Adds an id; true when the caller must signal the descriptor.
    pub fn mark(&self, id: u64) -> bool {
        self.ids.lock().push(id);
        !self.signaled.load(Ordering::Acquire) && !self.signaled.swap(true, Ordering::AcqRel)
    }

    /// Consumer side, after clearing the descriptor: the ids marked since the last take.
    pub fn take(&self) -> Vec<u64> {
        self.signaled.store(false, Ordering::Release);
        std::mem::take(&mut *self.ids.lock())
    }
}

/// Items taken out of a queue but not handed out yet (a message waits here while the lag notice
/// in front of it is received), first in, first out. Several threads may receive from one
/// mailbox, so several may put at once: none is lost. The flag keeps the common path (nothing
/// waiting) free of the lock; it is written only under the lock, so it never says "empty" once a
/// `put` has returned.
#[derive(Debug)]
pub struct HandOff<T> {
    any: AtomicBool,
    items: Lock<VecDeque<T>>,
}

impl<T> Default for HandOff<T> {
    fn default() -> Self {
        HandOff {
            any: AtomicBool::new(false),
            items: Lock::new(VecDeque::new()),
        }
    }
}

impl<T> HandOff<T> {
    /// An empty hand-off.
    pub fn new() -> HandOff<T> {
        HandOff::default()
    }

    /// Keeps an item for the next [`HandOff::take`].
    pub fn put(&self, item: T) {
        let mut items = self.items.lock();
        items.push_back(item);
        self.any.store(true, Ordering::Release);
    }

    /// The oldest item kept, if any.
    #[inline]
    pub fn take(&self) -> Option<T> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut items = self.items.lock();
        let item = items.pop_front();
        self.any.store(!items.is_empty(), Ordering::Release);
        item
    }

    /// Number of items kept.
    pub fn len(&self) -> usize {
        if self.any.load(Ordering::Acquire) {
            self.items.lock().len()
        } else {
            0
        }
    }

    /// Whether no item is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A lazily created, never freed value shared by the whole process, that a forked child can
/// forget (the process-wide [`crate::Engine`]).
///
/// The protocol: a reader that finds it empty builds a value and publishes it with one
/// compare-and-swap; a loser frees its own value and uses the winner's. Every caller gets the
/// same value until [`GlobalSlot::forget`], which leaks it (another thread may have held one of
/// its locks at `fork()` time, so it cannot be dropped) and lets the next caller build a new one.
#[derive(Debug)]
pub struct GlobalSlot<T> {
    ptr: AtomicPtr<T>,
    /// The value `forget` last took out: leaked, but kept reachable (memory checkers then report
    /// it as still reachable, not as lost).
    retired: AtomicPtr<T>,
}

impl<T> GlobalSlot<T> {
    /// An empty slot (usable in a `static`).
    #[cfg(not(loom))]
    pub const fn new() -> GlobalSlot<T> {
        GlobalSlot {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            retired: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// An empty slot.
    #[cfg(loom)]
    pub fn new() -> GlobalSlot<T> {
        GlobalSlot {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            retired: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The value, built by `init` when the slot is empty (`init` may run in several threads at
    /// once; one value wins, the others are dropped).
    pub fn get_or_try_init<E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        let p = self.ptr.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a non-null pointer in the slot always comes from Box::into_raw below, and
            // values published in the slot are never freed.
            return Ok(unsafe { &*p });
        }
        let fresh = Box::into_raw(Box::new(init()?));
        match self.ptr.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: `fresh` came from Box::into_raw above and now belongs to the slot forever.
            Ok(_) => Ok(unsafe { &*fresh }),
            Err(winner) => {
                // SAFETY: `fresh` lost the race, was never shared, and is freed exactly once here;
                // `winner` was published by another caller and is never freed.
                unsafe {
                    drop(Box::from_raw(fresh));
                    Ok(&*winner)
                }
            }
        }
    }

    /// Empties the slot without dropping its value (leaked: references to it stay valid).
    pub fn forget(&self) {
        let old = self.ptr.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !old.is_null() {
            self.retired.store(old, Ordering::Release);
        }
    }
}

impl<T> Default for GlobalSlot<T> {
    fn default() -> Self {
        GlobalSlot::new()
    }
}
