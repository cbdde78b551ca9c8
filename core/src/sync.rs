//! Synchronisation facade and the wake-flag protocol, so loom can check the lock-free part.
//!
//! Under `--cfg loom` the atomics come from loom, which explores every interleaving in
//! `core/tests/loom_wake.rs`; otherwise from std. Only the flag protocol below goes through the
//! facade: the queues themselves are crossbeam's (checked by its own loom suite).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, Ordering};

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
