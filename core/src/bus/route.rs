//! A per-thread memo of where the last topic a thread published to goes, so that a thread
//! publishing to the same topic again and again does not take the index's lock each time.
//!
//! Why: a shared-lock acquire and release are two atomic read-modify-writes, and the release
//! comes right after the queue's own writes, so it waits for them to reach the consumer's core.
//! In `cargo bench -p hornbeam-benches --bench bus` at one mailbox that was most of `deliver`'s
//! own time in a `perf` profile, and publishing without the lock took the row from 0.56-0.89x to
//! 0.91-0.99x bare crossbeam (see BENCHMARKS.md).
//!
//! How it stays exact: every change to a bus's subscriptions bumps the bus's generation while it
//! holds the index's write lock ([`Generation::bump`]). A memo records the generation it was made
//! under (read under the shared lock, so it matches the lists it copied), and is used only while
//! the generation still reads the same. A subscription or unsubscription that happened before a
//! publish (in the memory model's sense: any synchronisation between the two threads) is
//! therefore seen by it, as under the lock; one that races with it may or may not be, as under the
//! lock.
//!
//! Bounds: a memo is made only for a topic the thread published to twice in a row (a thread that
//! moves between topics pays one hash per publish, no allocation) and with at most
//! [`MAX_MAILBOXES`] mailboxes (beyond that the lock is a small part of a publish). It holds
//! references to those mailboxes' queues, so a closed mailbox's memory may outlive it until the
//! thread's next publish or its exit; it receives nothing more (closing bumps the generation).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::mailbox::Shared;
use crate::keyhash::{hash_key, same_key};

/// Largest number of mailboxes a memo holds.
const MAX_MAILBOXES: usize = 16;
/// Longest topic a memo is made for.
const MAX_TOPIC: usize = 256;

/// Ids of buses, so that a memo never outlives its bus's identity (never 0).
static NEXT_BUS: AtomicU64 = AtomicU64::new(1);

/// A fresh bus id.
pub(crate) fn bus_id() -> u64 {
    NEXT_BUS.fetch_add(1, Ordering::Relaxed)
}

/// A bus's subscription generation: changes whenever its index does.
#[derive(Debug, Default)]
pub(crate) struct Generation(AtomicU64);

impl Generation {
    /// Called with the index's write lock held, after changing it.
    #[inline]
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// The memo of one thread.
#[derive(Default)]
struct Route {
    /// The bus it is about (0: none).
    bus: u64,
    /// The hash of the last topic published to on that bus.
    hash: u64,
    /// Set once a memo is made: the topic, the generation it holds for and the mailboxes.
    memo: Option<Memo>,
}

struct Memo {
    topic: Box<str>,
    generation: u64,
    to: Vec<Arc<Shared>>,
}

thread_local! {
    static ROUTE: RefCell<Route> = RefCell::default();
}

/// Runs `deliver` with the memo of where `topic` goes on bus `bus`, if this thread has one that
/// still holds; `None` otherwise (then the caller looks the topic up under the lock).
#[inline]
pub(crate) fn recall(
    bus: u64,
    generation: &Generation,
    topic: &str,
    deliver: impl FnOnce(&[Arc<Shared>]) -> usize,
) -> Option<usize> {
    ROUTE
        .try_with(|r| {
            // Borrowed already: a delivery re-entered a publish on this thread; use the lock.
            let r = r.try_borrow().ok()?;
            let m = r.memo.as_ref()?;
            if r.bus != bus || !same_key(&m.topic, topic) || m.generation != generation.get() {
                return None;
            }
            Some(deliver(&m.to))
        })
        .ok()
        .flatten()
}

/// Notes, under the index's shared lock, where `topic` goes on bus `bus` at `generation`: makes a
/// memo when the thread published to it just before, else only remembers the topic's hash.
pub(crate) fn note<'a>(
    bus: u64,
    generation: u64,
    topic: &str,
    to: impl Iterator<Item = &'a Arc<Shared>>,
    n: usize,
) {
    let _ = ROUTE.try_with(|r| {
        let Ok(mut r) = r.try_borrow_mut() else {
            return;
        };
        let hash = hash_key(topic);
        let again = r.bus == bus && r.hash == hash;
        r.bus = bus;
        r.hash = hash;
        if !again || n > MAX_MAILBOXES || topic.len() > MAX_TOPIC {
            r.memo = None;
            return;
        }
        let mut memo = match r.memo.take() {
            Some(mut m) => {
                m.to.clear();
                if !same_key(&m.topic, topic) {
                    m.topic = topic.into();
                }
                m
            }
            None => Memo {
                topic: topic.into(),
                generation,
                to: Vec::with_capacity(n),
            },
        };
        memo.generation = generation; // a reused memo's was older
        memo.to.extend(to.cloned());
        r.memo = Some(memo);
    });
}
