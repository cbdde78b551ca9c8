//! The bus: topic pub/sub into bounded mailboxes.
//!
//! A [`Mailbox`] subscribes to any number of topics and patterns. Topics are `:`-separated
//! segments; in a pattern `*` matches exactly one segment (`room:*` matches `room:lobby`, not
//! `room:a:b`) and a final `>` matches one or more trailing segments (`room:>` matches both).
//! [`Bus::publish`] finds the matching mailboxes through a trie of segments, so its cost does not
//! grow with unrelated subscriptions, and shares one encoded payload among all of them.
//!
//! A mailbox receives each message at most once, even when several of its patterns match it.
//! Messages from one publishing thread arrive in the order they were published.
//!
//! # Lagging
//!
//! Mailboxes are bounded by message count and by payload bytes ([`MailboxConfig`]). A publisher
//! never blocks and memory never grows: a message that does not fit is dropped for that mailbox
//! only, and counted. The consumer then receives [`RecvError::Lagged`]`(n)` at the place in the
//! stream where the `n` messages were lost, and carries on with the next message. `publish`
//! returns how many mailboxes accepted the message.
//!
//! # Closing
//!
//! [`Mailbox::close`] (or dropping the mailbox) removes all its subscriptions at once, discards
//! what it holds and wakes its waiting receivers with [`RecvError::Closed`]. Topics left with no
//! subscriber leave nothing behind in the trie.
//!
//! # Waiting
//!
//! [`Mailbox::recv_timeout`] blocks a thread; [`Mailbox::fd`] gives a descriptor for event loops,
//! signalled once per batch (see [`Mailbox::try_recv_arm`]).
//!
//! **Locking behaviour:** `publish` holds the trie's shared lock while it queues (queueing never
//! blocks), so publishers run in parallel; subscribe, unsubscribe and close take it exclusively.
//! A thread that publishes to the same topic again (with at most 16 mailboxes reached) uses its
//! own memo of the last lookup instead, valid while no subscription of the bus changed, and takes
//! no lock (`route.rs` says why and how it stays exact).
//!
//! # Across processes (`local://`, Redis)
//!
//! A bus opened on a shared backend ([`crate::Engine::open`] with a `local://` or `redis://` URL)
//! keeps its subscriptions and mailboxes in this process, exactly as above, and has a *relay*
//! (`crate::backend::Relay`) to the other processes. `publish` queues the message into the local
//! mailboxes directly and hands it to the relay once (not once per mailbox); every other process's
//! relay receives it (one background thread, started by the bus's first subscription) and hands
//! it to that process's bus, which fans it out through the same trie, so pattern semantics, order
//! per publisher, bounds and lag notices are the same. `publish` then returns the local deliveries
//! plus the number of *other* processes the message reached. On `local://` a process that fell
//! behind the shared log's bound gets a lag notice of the number of messages it missed (see the
//! local relay's docs); on Redis:
//!
//! When the subscription connection is lost, the thread reconnects with backoff and
//! resubscribes; every subscribed mailbox then gets a lag notice of `1` at that place in its
//! stream. Redis keeps nothing for a disconnected subscriber, so the real number of missed
//! messages is unknown (it may be 0): `Lagged(1)` means "you may have missed messages here".
//! A consumer waiting on the descriptor is woken for it; one blocked in
//! [`Mailbox::recv_timeout`] sees it with its next message. While Redis cannot be reached,
//! `publish` fails with [`Error::Backend`] (within the timeout) and delivers nothing.

mod mailbox;
mod message;
mod notify;
mod route;
pub mod topic;
mod trie;
mod watch;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

pub use crate::backend::ChangeKind;
use crate::backend::{Changes, Relay, Sink};
use crate::config::{Config, Limits, MailboxConfig};
use crate::error::{shorten, Error, Result};
use mailbox::Shared;
pub use mailbox::{Mailbox, ReadySet};
pub use message::Message;

/// Why a receive returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing queued (non-blocking receive).
    Empty,
    /// Nothing arrived in time (blocking receive).
    Timeout,
    /// This many messages were dropped here because the mailbox was full.
    Lagged(u64),
    /// The mailbox is closed.
    Closed,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Empty => f.write_str("mailbox is empty"),
            RecvError::Timeout => f.write_str("timed out waiting for a message"),
            RecvError::Lagged(n) => write!(f, "mailbox was full: {n} messages were dropped"),
            RecvError::Closed => f.write_str("mailbox is closed"),
        }
    }
}

impl std::error::Error for RecvError {}

pub(crate) struct BusInner {
    trie: RwLock<trie::Index>,
    /// Unique in the process, for the publishing threads' memos (`route`).
    id: u64,
    /// Changes with every change to `trie`, under its write lock (see `route`).
    generation: route::Generation,
    next_id: AtomicU64,
    subscriptions: AtomicUsize,
    pub(crate) limits: Limits,
    mailbox: MailboxConfig,
    /// Set when the bus spans processes (`local://`, Redis).
    relay: Option<Relay>,
    /// Which mailboxes watch which key prefixes.
    pub(crate) watches: watch::Watches,
}

impl Changes for BusInner {
    #[inline]
    fn watching(&self) -> bool {
        self.watches.any()
    }

    fn changed(&self, kind: ChangeKind, key: &str, value: &[u8]) {
        if !self.watches.any() {
            return;
        }
        let msg = Message::change(kind, key, value);
        self.watches.matching(key, kind == ChangeKind::Clear, |s| {
            s.push(&msg);
        });
    }
}

impl Sink for BusInner {
    fn deliver(&self, topic: &str, payload: &[u8]) -> usize {
        BusInner::deliver(self, topic, payload)
    }

    fn changed(&self, kind: ChangeKind, key: &str, value: &[u8]) {
        Changes::changed(self, kind, key, value);
    }

    fn note_gap(&self, missed: u64) -> usize {
        let trie = self.trie.read();
        let mut all: Vec<Arc<Shared>> = Vec::new();
        trie.for_each_list(&mut |list| all.extend(list.iter().cloned()));
        // Watchers missed store changes too.
        self.watches.matching("", true, |s| all.push(s.clone()));
        all.sort_unstable_by_key(|s| s.id);
        all.dedup_by_key(|s| s.id);
        for s in &all {
            s.note_lag(missed);
        }
        all.len()
    }
}

impl BusInner {
    /// On a shared backend, tells the other processes whether this one watches store changes.
    pub(crate) fn set_watching(&self, on: bool) -> Result<()> {
        match &self.relay {
            Some(r) => r.set_watching(on),
            None => Ok(()),
        }
    }

    /// Runs `wait` (a thread blocking in a mailbox's `recv`), telling the relay so that it keeps
    /// delivering to this thread itself (see [`Bus::doorbell_fd`]).
    #[inline]
    pub(crate) fn blocking<T>(&self, wait: impl FnOnce() -> T) -> T {
        let Some(relay) = &self.relay else {
            return wait();
        };
        struct Unblock<'a>(&'a Relay);
        impl Drop for Unblock<'_> {
            fn drop(&mut self) {
                self.0.unblocked();
            }
        }
        relay.blocking();
        let _unblock = Unblock(relay);
        wait()
    }

    /// On `local://`: lets the calling thread, about to block in `recv`, read the log itself
    /// while it waits (one wake-up per message instead of two); `None` elsewhere, or when
    /// another thread of this process does already.
    #[inline]
    pub(crate) fn lead(&self) -> Option<crate::backend::local::relay::Lead<'_>> {
        self.relay.as_ref().and_then(Relay::lead)
    }

    /// A mailbox's descriptor was handed out: the relay keeps delivering from its own thread.
    pub(crate) fn external_poller(&self) {
        if let Some(relay) = &self.relay {
            relay.external_poller();
        }
    }

    /// On a shared backend, makes sure the relay runs (and, the first time, that it joined).
    #[inline]
    pub(crate) fn ensure_remote(this: &Arc<BusInner>) -> Result<()> {
        match &this.relay {
            Some(r) => {
                let sink: Arc<dyn Sink> = this.clone();
                r.ensure_started(Arc::downgrade(&sink))
            }
            None => Ok(()),
        }
    }

    /// Queues a message into the matching mailboxes (no checks); returns how many accepted it.
    fn deliver(&self, topic: &str, payload: &[u8]) -> usize {
        // A thread publishing to the same topic again takes no lock (see `route`).
        let remembered = route::recall(self.id, &self.generation, topic, |to| {
            if to.is_empty() {
                return 0;
            }
            push_each(Message::new(topic, payload), to.iter(), to.len())
        });
        if let Some(n) = remembered {
            return n;
        }
        let trie = self.trie.read();
        let generation = self.generation.get();
        let mut first: Option<&[Arc<Shared>]> = None;
        let mut more: Vec<&[Arc<Shared>]> = Vec::new();
        trie.matching(topic, &mut |list| {
            if first.is_none() {
                first = Some(list);
            } else {
                more.push(list);
            }
        });
        let Some(first) = first else {
            route::note(self.id, generation, topic, std::iter::empty(), 0);
            // Nobody subscribed: nothing is allocated.
            return 0;
        };
        let msg = Message::new(topic, payload);
        if more.is_empty() {
            // One list: a mailbox appears in it at most once.
            route::note(self.id, generation, topic, first.iter(), first.len());
            return push_each(msg, first.iter(), first.len());
        }
        // Several lists (patterns overlapping): deliver once per mailbox.
        more.push(first);
        let mut all: Vec<&Arc<Shared>> = more.into_iter().flatten().collect();
        all.sort_unstable_by_key(|s| s.id);
        all.dedup_by_key(|s| s.id);
        let n = all.len();
        route::note(self.id, generation, topic, all.iter().copied(), n);
        push_each(msg, all.into_iter(), n)
    }

    fn add(&self, pattern: &str, shared: &Arc<Shared>) {
        let mut trie = self.trie.write();
        trie.insert(pattern, shared.clone());
        self.generation.bump();
        drop(trie);
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, pattern: &str, id: u64) {
        let mut trie = self.trie.write();
        if trie.remove(pattern, id) {
            self.generation.bump();
            drop(trie);
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn remove_all(&self, patterns: &[Box<str>], id: u64) {
        if patterns.is_empty() {
            return;
        }
        let mut trie = self.trie.write();
        for p in patterns {
            if trie.remove(p, id) {
                self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.generation.bump();
    }
}

/// Queues `msg` into each of `list`'s `n` mailboxes: the message becomes `n` handles with one
/// atomic add (see [`Message::into_handles`]), so a delivery touches no shared count; returns how
/// many accepted it.
fn push_each<'a>(msg: Message, list: impl Iterator<Item = &'a Arc<Shared>>, n: usize) -> usize {
    let mut handles = msg.into_handles(n);
    list.filter(|s| match s.push_handle(handles.take()) {
        Ok(()) => true,
        Err(back) => {
            handles.give_back(back);
            false
        }
    })
    .count()
}

/// Topic pub/sub. Cloning gives another handle to the same bus.
///
/// ```
/// use hornbeam_core::Bus;
/// let bus = Bus::new(&Default::default());
/// let mb = bus.mailbox();
/// mb.subscribe("room:*").unwrap();
/// assert_eq!(bus.publish("room:lobby", b"hi").unwrap(), 1);
/// assert_eq!(mb.try_recv().unwrap().payload(), b"hi");
/// ```
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("subscriptions", &self.subscription_count())
            .finish()
    }
}

impl Bus {
    /// A bus with the limits and mailbox bounds of `config`.
    pub fn new(config: &Config) -> Bus {
        Bus::with(config, None)
    }

    /// A bus that spans every process on the relay's backend.
    pub(crate) fn with_relay(config: &Config, relay: Relay) -> Bus {
        Bus::with(config, Some(relay))
    }

    fn with(config: &Config, relay: Option<Relay>) -> Bus {
        Bus {
            inner: Arc::new(BusInner {
                trie: RwLock::new(trie::Index::default()),
                id: route::bus_id(),
                generation: Default::default(),
                next_id: AtomicU64::new(1),
                subscriptions: AtomicUsize::new(0),
                limits: config.limits.clone(),
                mailbox: config.mailbox,
                relay,
                watches: Default::default(),
            }),
        }
    }

    /// A new mailbox with the bus's default bounds.
    pub fn mailbox(&self) -> Mailbox {
        self.mailbox_with(self.inner.mailbox)
    }

    /// A new mailbox with its own bounds.
    pub fn mailbox_with(&self, config: MailboxConfig) -> Mailbox {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        Mailbox::new(self.inner.clone(), Arc::new(Shared::new(id, config)))
    }

    /// Publishes `payload` to every mailbox subscribed to `topic` (directly or by pattern);
    /// returns how many mailboxes accepted it (a full mailbox drops it and counts a lag).
    ///
    /// On `local://` and Redis: also sends it to every other process on the backend, and returns
    /// the local deliveries plus the number of other processes that received it (see the module
    /// docs).
    pub fn publish(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<usize> {
        let payload = payload.as_ref();
        topic::check_topic(topic, self.inner.limits.max_topic_len)?;
        if payload.len() > self.inner.limits.max_message_len {
            return Err(Error::MessageTooLarge {
                topic: shorten(topic),
                len: payload.len(),
                max: self.inner.limits.max_message_len,
            });
        }
        let others = match &self.inner.relay {
            Some(r) => r.publish(topic, payload)?,
            None => 0,
        };
        Ok(self.inner.deliver(topic, payload) + others)
    }

    /// On `local://`, once this process subscribed: a descriptor that reads as ready when another
    /// process published. A consumer that waits in `poll`/`epoll` (an event loop) may watch it
    /// and call [`Bus::pump`] when it is ready: the messages are then read and delivered in the
    /// consumer's thread, one wake-up sooner than through the relay thread (which keeps
    /// delivering too; each message is delivered once). `None` on the other backends and before
    /// the first subscription. The bus owns it: do not close it.
    pub fn doorbell_fd(&self) -> Option<i32> {
        self.inner.relay.as_ref().and_then(Relay::doorbell_fd)
    }

    /// Reads what other processes published and delivers it to this process's mailboxes, in the
    /// calling thread (see [`Bus::doorbell_fd`]); returns how many log entries it read. Never
    /// blocks for long: a few reads of the log, then it leaves the rest to the next wake-up.
    pub fn pump(&self) -> usize {
        self.inner.relay.as_ref().map_or(0, Relay::pump)
    }

    /// `"embedded"`, `"local"` or `"redis"`.
    pub fn backend_name(&self) -> &'static str {
        match &self.inner.relay {
            None => "embedded",
            Some(Relay::Local(_)) => "local",
            Some(Relay::Redis(_)) => "redis",
        }
    }

    /// Where an embedded store reports its changes (this bus's watchers).
    pub(crate) fn changes(&self) -> Arc<dyn Changes> {
        self.inner.clone()
    }

    /// Number of subscriptions held by all mailboxes.
    pub fn subscription_count(&self) -> usize {
        self.inner.subscriptions.load(Ordering::Relaxed)
    }

    /// Number of trie nodes (1 when nothing is subscribed): for checks that nothing leaks.
    pub fn node_count(&self) -> usize {
        self.inner.trie.read().node_count()
    }
}
