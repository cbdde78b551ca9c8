//! Mailboxes: the bounded queues that subscriptions deliver into.

use std::collections::HashSet;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use parking_lot::Mutex;

use super::notify::Notifier;
use super::{BusInner, Message, RecvError};
use crate::config::MailboxConfig;
use crate::error::{Error, Result};
use crate::sync::{HandOff, ReadyList, WakeFlag};

/// One queued item: a message, with how many were dropped just before it; `None` is the wake-up
/// sent when the mailbox closes.
struct Item {
    msg: Option<Message>,
    lagged_before: u64,
}

/// A counter on its own cache line, so publishers and the consumer do not false-share.
#[repr(align(128))]
#[derive(Default)]
struct PaddedUsize(AtomicUsize);

/// The publishers' counters, on one line: large-message bytes ever accepted, and the last value
/// of the consumer's counter they read (re-read only when the bound looks reached, so a publisher
/// does not pull the consumer's cache line on every message).
#[repr(align(128))]
#[derive(Default)]
struct PublisherSide {
    pushed: AtomicUsize,
    popped_seen: AtomicUsize,
}

/// Takes mailbox `id` out of a list of subscribers (a topic's, a pattern's, a watched
/// prefix's); whether it was there. Order in the list does not matter.
pub(crate) fn remove_subscriber(list: &mut Vec<Arc<Shared>>, id: u64) -> bool {
    match list.iter().position(|s| s.id == id) {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    }
}

/// The publisher-facing side of a mailbox, held by the subscription trie.
///
/// `repr(C)`, in this order: what every push reads (the channel, the byte rule's two words, the
/// drop count, which wakers exist) shares the first cache line, so a publish to 10,000 mailboxes
/// touches one line of each besides its channel; the wakers themselves and the byte counters
/// (each on its own line) come after.
#[repr(C)]
pub(crate) struct Shared {
    tx: Sender<Item>,
    /// Largest message that is not counted against `max_bytes` (`max_bytes / capacity`).
    small: usize,
    /// Messages dropped since the last lag notice was queued.
    dropped: AtomicU64,
    /// Large messages queued: while 0, a small message needs no byte check. Only large messages
    /// write it.
    large_queued: AtomicUsize,
    /// Which of `notifier` (`WAKER_FD`) and `ready` (`WAKER_READY`) exist, so that a push to a
    /// mailbox with neither reads nothing more.
    wakers: AtomicU8,
    /// Whether this mailbox's id sits in its ready set since the consumer last found it empty.
    in_ready: WakeFlag,
    /// Whether the readiness descriptor has been signalled since the consumer last cleared it.
    signaled: WakeFlag,
    closed: AtomicBool,
    pub(crate) id: u64,
    rx: Receiver<Item>,
    max_bytes: usize,
    notifier: OnceLock<Notifier>,
    /// The ready set this mailbox reports to, if attached (see [`ReadySet`]).
    ready: OnceLock<Arc<ReadyInner>>,
    /// Bytes ever accepted (written by publishers) and ever taken (written by the consumer).
    publisher: PublisherSide,
    popped_bytes: PaddedUsize,
}

/// `Shared::wakers`: the readiness descriptor exists.
const WAKER_FD: u8 = 1;
/// `Shared::wakers`: the mailbox is attached to a ready set.
const WAKER_READY: u8 = 2;

impl Shared {
    pub(crate) fn new(id: u64, config: MailboxConfig) -> Shared {
        let (tx, rx) = crossbeam_channel::bounded(config.capacity.max(1));
        Shared {
            id,
            tx,
            rx,
            max_bytes: config.max_bytes.max(1),
            publisher: PublisherSide::default(),
            popped_bytes: PaddedUsize::default(),
            small: config.max_bytes.max(1) / config.capacity.max(1),
            dropped: AtomicU64::new(0),
            large_queued: AtomicUsize::new(0),
            wakers: AtomicU8::new(0),
            notifier: OnceLock::new(),
            ready: OnceLock::new(),
            in_ready: WakeFlag::new(),
            signaled: WakeFlag::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues a message without ever blocking. Returns false (and counts the drop) when the
    /// mailbox is full by count or by bytes.
    #[inline]
    pub(crate) fn push(&self, msg: &Message) -> bool {
        self.push_handle(msg.clone()).is_ok()
    }

    /// [`Shared::push`] of a handle the caller made (one of a message's
    /// [`Handles`](super::message::Handles), see
    /// `BusInner::deliver`); a handle that could not be queued comes back.
    #[inline]
    pub(crate) fn push_handle(&self, msg: Message) -> std::result::Result<(), Message> {
        let len = msg.size();
        // Messages of at most `small` bytes alone cannot break the byte bound: `capacity` of them
        // fit in `max_bytes`. Only larger ones are counted (counters written by them alone), so
        // the common small message costs no extra atomic write; it is checked against the bound
        // only while large messages are queued (found by fuzz/mailbox_model).
        let large = len > self.small;
        if (large || self.large_queued.load(Ordering::Relaxed) != 0) && !self.room_for(len) {
            self.dropped.fetch_add(1, Ordering::AcqRel);
            return Err(msg);
        }
        let lagged_before = if self.dropped.load(Ordering::Relaxed) != 0 {
            self.dropped.swap(0, Ordering::AcqRel)
        } else {
            0
        };
        if large {
            self.publisher.pushed.fetch_add(len, Ordering::Relaxed);
            self.large_queued.fetch_add(1, Ordering::Relaxed);
        }
        crate::valgrind::happens_before(msg.addr());
        match self.tx.try_send(Item {
            msg: Some(msg),
            lagged_before,
        }) {
            Ok(()) => {
                self.wake();
                Ok(())
            }
            Err(TrySendError::Full(item)) | Err(TrySendError::Disconnected(item)) => {
                if large {
                    self.publisher.pushed.fetch_sub(len, Ordering::Relaxed);
                    self.large_queued.fetch_sub(1, Ordering::Relaxed);
                }
                self.dropped
                    .fetch_add(item.lagged_before + 1, Ordering::AcqRel);
                Err(item.msg.expect("a pushed item holds its message"))
            }
        }
    }

    /// Whether a message of `len` bytes fits: the large messages queued, plus `small` for each
    /// small one queued, plus this one, within `max_bytes`. An oversized message still fits in
    /// an empty mailbox, so it is never undeliverable.
    fn room_for(&self, len: usize) -> bool {
        let large_n = self.large_queued.load(Ordering::Relaxed);
        let fits = |popped: usize| {
            let used = self
                .publisher
                .pushed
                .load(Ordering::Relaxed)
                .saturating_sub(popped);
            let small_n = self.rx.len().saturating_sub(large_n);
            let total = used + len + small_n * self.small;
            total <= self.max_bytes || (used == 0 && self.rx.is_empty())
        };
        if fits(self.publisher.popped_seen.load(Ordering::Relaxed)) {
            return true;
        }
        // The cached view of the consumer's counter is stale: read it again.
        let popped = self.popped_bytes.0.load(Ordering::Relaxed);
        self.publisher.popped_seen.store(popped, Ordering::Relaxed);
        fits(popped)
    }

    #[inline]
    fn wake(&self) {
        let wakers = self.wakers.load(Ordering::Acquire);
        if wakers == 0 {
            return;
        }
        // Pairs with `lower` in `try_recv_arm` (see `WakeFlag`): either we see the flag lowered,
        // or the consumer's second look sees our message.
        if let Some(n) = self.notifier.get() {
            if self.signaled.raise() {
                n.signal();
            }
        }
        if let Some(r) = self.ready.get() {
            if self.in_ready.raise() {
                r.mark(self.id);
            }
        }
    }

    fn take(&self, item: Item, held: &HandOff<Message>) -> std::result::Result<Message, RecvError> {
        let Some(msg) = item.msg else {
            return Err(RecvError::Closed);
        };
        crate::valgrind::happens_after(msg.addr());
        if msg.size() > self.small {
            self.popped_bytes.0.fetch_add(msg.size(), Ordering::Relaxed);
            self.large_queued.fetch_sub(1, Ordering::Relaxed);
        }
        if item.lagged_before > 0 {
            held.put(msg);
            return Err(RecvError::Lagged(item.lagged_before));
        }
        Ok(msg)
    }
}

/// A subscriber: a bounded queue that any number of topics and patterns deliver into.
///
/// Dropping a mailbox closes it. It is `Send + Sync`: several threads may receive from one mailbox
/// (each message goes to one of them).
pub struct Mailbox {
    pub(crate) shared: Arc<Shared>,
    bus: Arc<BusInner>,
    /// The mailbox's topics and patterns (a set: subscribing costs the same at 1 or 100,000).
    subs: Mutex<HashSet<Box<str>>>,
    /// The key prefixes it watches.
    watched: Mutex<HashSet<Box<str>>>,
    /// Messages taken from the queue behind a lag notice, handed out by the next receives.
    held: HandOff<Message>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("id", &self.shared.id)
            .field("len", &self.len())
            .finish()
    }
}

impl Mailbox {
    pub(crate) fn new(bus: Arc<BusInner>, shared: Arc<Shared>) -> Mailbox {
        Mailbox {
            shared,
            bus,
            subs: Mutex::new(HashSet::new()),
            watched: Mutex::new(HashSet::new()),
            held: HandOff::new(),
        }
    }

    /// A number unique to this mailbox within its bus.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Subscribes to a topic or pattern. Returns false when it was already subscribed.
    pub fn subscribe(&self, pattern: &str) -> Result<bool> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        super::topic::check_pattern(pattern, self.bus.limits.max_topic_len)?;
        // On Redis, the first subscription of the bus starts its subscriber thread (outside the
        // mailbox's lock: it may wait up to the backend's timeout).
        BusInner::ensure_remote(&self.bus)?;
        let mut subs = self.subs.lock();
        if subs.contains(pattern) {
            return Ok(false);
        }
        if subs.len() >= self.bus.limits.max_subscriptions_per_mailbox {
            return Err(Error::TooManySubscriptions {
                max: self.bus.limits.max_subscriptions_per_mailbox,
            });
        }
        self.bus.add(pattern, &self.shared);
        subs.insert(pattern.into());
        Ok(true)
    }

    /// Unsubscribes from a topic or pattern. Returns false when it was not subscribed.
    pub fn unsubscribe(&self, pattern: &str) -> Result<bool> {
        let mut subs = self.subs.lock();
        if !subs.remove(pattern) {
            return Ok(false);
        }
        self.bus.remove(pattern, self.shared.id);
        Ok(true)
    }

    /// Watches the store's keys starting with `prefix` (`""`: every key): from now on the mailbox
    /// receives one event per committed change of such a key, in the order the store committed
    /// them for each key: set, delete, incr/decr, expiry, clear (see [`Message::change_kind`]).
    /// Events share the mailbox's bound and lag notices with its messages. On `local://` and
    /// Redis the events are those of every process's writes (see the README's "Watching state"
    /// for each backend's guarantees).
    /// Returns false when the prefix was already watched.
    ///
    /// ```
    /// use hornbeam_core::{ChangeKind, Engine, Value};
    /// let engine = Engine::new(Default::default());
    /// let mb = engine.bus().mailbox();
    /// mb.watch("room:lobby:").unwrap();
    /// engine.store().set("room:lobby:user:1", Value::Int(7), None).unwrap();
    /// let event = mb.try_recv().unwrap();
    /// assert_eq!(event.change_kind(), Some(ChangeKind::Set));
    /// assert_eq!((event.topic(), event.payload()), ("room:lobby:user:1", &[7u8][..]));
    /// ```
    pub fn watch(&self, prefix: &str) -> Result<bool> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if prefix.len() > self.bus.limits.max_key_len {
            return Err(Error::InvalidKey {
                key: crate::error::shorten(prefix),
                reason: format!(
                    "prefix is {} bytes, over the key limit of {} bytes",
                    prefix.len(),
                    self.bus.limits.max_key_len
                ),
            });
        }
        BusInner::ensure_remote(&self.bus)?;
        let mut watched = self.watched.lock();
        if watched.contains(prefix) {
            return Ok(false);
        }
        if watched.len() >= self.bus.limits.max_subscriptions_per_mailbox {
            return Err(Error::TooManySubscriptions {
                max: self.bus.limits.max_subscriptions_per_mailbox,
            });
        }
        let was_watching = self.bus.watches.any();
        if !was_watching {
            self.bus.set_watching(true)?;
        }
        self.bus.watches.add(prefix, &self.shared);
        watched.insert(prefix.into());
        Ok(true)
    }

    /// Stops watching `prefix`. Returns false when it was not watched.
    pub fn unwatch(&self, prefix: &str) -> Result<bool> {
        let mut watched = self.watched.lock();
        if !watched.remove(prefix) {
            return Ok(false);
        }
        self.bus.watches.remove(prefix, self.shared.id);
        if !self.bus.watches.any() {
            self.bus.set_watching(false)?;
        }
        Ok(true)
    }

    /// The key prefixes this mailbox watches, sorted.
    pub fn watches(&self) -> Vec<String> {
        let mut v: Vec<String> = self.watched.lock().iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    /// The topics and patterns this mailbox is subscribed to, sorted.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.subs.lock().iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    /// Takes the next message without waiting.
    ///
    /// Errors: [`RecvError::Empty`] when nothing is queued, [`RecvError::Lagged`] (once) when
    /// messages were dropped because the mailbox was full, [`RecvError::Closed`] after `close`.
    #[inline]
    pub fn try_recv(&self) -> std::result::Result<Message, RecvError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(RecvError::Closed);
        }
        if let Some(m) = self.held.take() {
            return Ok(m);
        }
        match self.shared.rx.try_recv() {
            Ok(item) => self.shared.take(item, &self.held),
            // Read before writing: a consumer polling an empty mailbox must not keep pulling the
            // publishers' cache line.
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => {
                if self.shared.dropped.load(Ordering::Relaxed) == 0 {
                    return Err(RecvError::Empty);
                }
                match self.shared.dropped.swap(0, Ordering::AcqRel) {
                    0 => Err(RecvError::Empty),
                    n => Err(RecvError::Lagged(n)),
                }
            }
        }
    }

    /// Takes the next message, waiting up to `timeout` (forever with `None`).
    ///
    /// On `local://` the first thread of a process that blocks here also reads the shared log
    /// itself while it waits, so a message from another process wakes only that thread.
    ///
    /// Errors as [`Mailbox::try_recv`], with [`RecvError::Timeout`] instead of `Empty`.
    pub fn recv_timeout(
        &self,
        timeout: Option<Duration>,
    ) -> std::result::Result<Message, RecvError> {
        self.recv_waiting(timeout, false)
    }

    /// [`Mailbox::recv_timeout`] for a thread that waits in the background (an idle server whose
    /// requests can wait): on `local://` it neither reads the log itself nor keeps the relay
    /// thread on the doorbell for its sake, so it costs the process no wake-up per message from
    /// other processes; its messages come with whoever reads the log next (another waiting
    /// thread, an event loop), at the latest after the relay's TICK (`?tick_ms=`, 250 ms).
    /// Elsewhere it is [`Mailbox::recv_timeout`].
    pub fn recv_timeout_background(
        &self,
        timeout: Option<Duration>,
    ) -> std::result::Result<Message, RecvError> {
        self.recv_waiting(timeout, true)
    }

    fn recv_waiting(
        &self,
        timeout: Option<Duration>,
        background: bool,
    ) -> std::result::Result<Message, RecvError> {
        match self.try_recv() {
            Err(RecvError::Empty) => {}
            other => return other,
        }
        let deadline = timeout.map(|t| {
            Instant::now()
                .checked_add(t)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365))
        });
        if !background {
            if let Some(lead) = self.bus.lead() {
                if let Ok(note) = self.notifier() {
                    return self.recv_leading(&lead, note, deadline);
                }
            }
        }
        let wait = || match deadline {
            None => self.shared.rx.recv().map_err(|_| RecvError::Closed),
            Some(deadline) => self.shared.rx.recv_deadline(deadline).map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => RecvError::Timeout,
                crossbeam_channel::RecvTimeoutError::Disconnected => RecvError::Closed,
            }),
        };
        let item = if background {
            wait()?
        } else {
            self.bus.blocking(wait)?
        };
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(RecvError::Closed);
        }
        self.shared.take(item, &self.held)
    }

    /// `recv_timeout` for the thread that leads on `local://`: waits on this mailbox's descriptor
    /// and the bus's doorbell at once, and when the doorbell rings reads the shared log itself,
    /// so a message from another process wakes only this thread.
    fn recv_leading(
        &self,
        lead: &crate::backend::local::relay::Lead<'_>,
        note: &Notifier,
        deadline: Option<Instant>,
    ) -> std::result::Result<Message, RecvError> {
        // Bounded: each turn waits at most until the deadline (a TICK-long slice without one)
        // and ends with a look at the mailbox.
        loop {
            match self.try_recv_arm() {
                Err(RecvError::Empty) => {}
                other => return other,
            }
            let slice = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(RecvError::Timeout);
                    }
                    d - now
                }
                None => Duration::from_millis(250),
            };
            lead.wait(note.fd(), slice);
        }
    }

    /// Takes everything queued now (lag notices included, in place), without waiting.
    pub fn drain(&self) -> Vec<std::result::Result<Message, RecvError>> {
        let mut out = Vec::new();
        // Bounded by what is queued now: the queue's capacity plus one lag notice per message.
        for _ in 0..(2 * self.shared.tx.capacity().unwrap_or(1) + 2) {
            match self.try_recv() {
                Err(RecvError::Empty) | Err(RecvError::Closed) => break,
                other => out.push(other),
            }
        }
        out
    }

    /// Number of messages queued.
    pub fn len(&self) -> usize {
        self.shared.rx.len() + self.held.len()
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A file descriptor that is readable while the mailbox may hold messages (or is closed), for
    /// `poll`/`epoll`/asyncio. The mailbox owns it: do not close it.
    ///
    /// Wake-ups are coalesced: one per batch. After the descriptor reads as ready, call
    /// [`Mailbox::try_recv_arm`] until it returns `Empty`; that re-arms the descriptor.
    pub fn fd(&self) -> Result<i32> {
        let fd = self.notifier()?.fd();
        // Someone may poll it from a thread of their own: on `local://` the relay thread then
        // keeps delivering (see `Bus::doorbell_fd`).
        self.bus.external_poller();
        Ok(fd)
    }

    /// Makes the readiness descriptor now without handing it out (so that no message queued
    /// from now on can miss its signal), for a binding that polls it only through a
    /// [`ReadySet`] or hands it out later.
    pub fn prepare_fd(&self) -> Result<()> {
        self.notifier().map(|_| ())
    }

    fn notifier(&self) -> Result<&Notifier> {
        Ok(match self.shared.notifier.get() {
            Some(n) => n,
            None => {
                let created = Notifier::new().map_err(|e| {
                    Error::Backend(format!("cannot create readiness descriptor: {e}"))
                })?;
                let _ = self.shared.notifier.set(created);
                let n = self.shared.notifier.get().ok_or(Error::Closed)?;
                self.shared.wakers.fetch_or(WAKER_FD, Ordering::AcqRel);
                // Messages queued before the descriptor existed signalled nothing: signal now.
                fence(Ordering::SeqCst);
                if !self.shared.rx.is_empty() || self.is_closed() {
                    self.shared.signaled.force();
                    n.signal();
                }
                n
            }
        })
    }

    /// Like [`Mailbox::try_recv`], but when the mailbox is empty it also clears the readiness
    /// descriptor and checks once more, so a message that raced the clearing is never missed.
    /// An event loop calls this after each wake-up until it returns `Empty`, then waits again.
    #[inline]
    pub fn try_recv_arm(&self) -> std::result::Result<Message, RecvError> {
        // The queued case inlines into the caller (a C or Python binding); arming does not.
        match self.try_recv() {
            Err(RecvError::Empty) => self.arm_and_retry(),
            other => other,
        }
    }

    /// `try_recv_arm` once the mailbox was found empty.
    fn arm_and_retry(&self) -> std::result::Result<Message, RecvError> {
        if let Some(n) = self.shared.notifier.get() {
            n.clear();
            self.shared.signaled.lower();
        }
        if self.shared.ready.get().is_some() {
            self.shared.in_ready.lower();
        }
        self.try_recv()
    }

    /// Attaches this mailbox to a [`ReadySet`]: from now on, when it goes from empty to holding
    /// messages, its id is added to the set (once, until [`Mailbox::try_recv_arm`] finds it
    /// empty again). A mailbox belongs to at most one ready set.
    pub fn attach(&self, set: &ReadySet) -> Result<()> {
        if let Some(current) = self.shared.ready.get() {
            return if Arc::ptr_eq(current, &set.inner) {
                Ok(())
            } else {
                Err(Error::InvalidArgument(String::from(
                    "mailbox is already attached to another ready set",
                )))
            };
        }
        let _ = self.shared.ready.set(set.inner.clone());
        self.shared.wakers.fetch_or(WAKER_READY, Ordering::AcqRel);
        // Messages queued before the attachment signalled nothing: report them now.
        fence(Ordering::SeqCst);
        if (!self.shared.rx.is_empty() || self.is_closed()) && self.shared.in_ready.force() {
            set.inner.mark(self.shared.id);
        }
        Ok(())
    }

    /// Closes the mailbox: removes all its subscriptions, discards what it holds, wakes any
    /// waiting receiver and makes every receive return [`RecvError::Closed`]. Idempotent.
    pub fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let subs: Vec<Box<str>> = std::mem::take(&mut *self.subs.lock()).into_iter().collect();
        self.bus.remove_all(&subs, self.shared.id);
        let watched = std::mem::take(&mut *self.watched.lock());
        if !watched.is_empty() {
            for prefix in &watched {
                self.bus.watches.remove(prefix, self.shared.id);
            }
            if !self.bus.watches.any() {
                let _ = self.bus.set_watching(false);
            }
        }
        // Discard what is queued (bounded by the capacity), then wake a blocked receiver.
        for _ in 0..=self.shared.tx.capacity().unwrap_or(0) {
            if self.shared.rx.try_recv().is_err() {
                break;
            }
        }
        for _ in 0..self.held.len() {
            self.held.take();
        }
        let _ = self.shared.tx.try_send(Item {
            msg: None,
            lagged_before: 0,
        });
        if let Some(n) = self.shared.notifier.get() {
            n.signal();
        }
        if let Some(r) = self.shared.ready.get() {
            r.mark(self.shared.id);
        }
    }

    /// Whether [`Mailbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.close();
    }
}

pub(crate) struct ReadyInner {
    notifier: Notifier,
    list: ReadyList,
}

impl ReadyInner {
    fn mark(&self, id: u64) {
        if self.list.mark(id) {
            self.notifier.signal();
        }
    }
}

/// One readiness descriptor for many mailboxes, so an event loop waits on a single descriptor
/// however many mailboxes it serves, and a batch of publishes costs at most one wake-up.
///
/// Attach mailboxes with [`Mailbox::attach`]. When the descriptor reads as ready, call
/// [`ReadySet::take`] for the ids of the mailboxes that went from empty to holding messages, and
/// drain each with [`Mailbox::try_recv_arm`] until it returns `Empty` (which re-arms it).
#[derive(Clone)]
pub struct ReadySet {
    inner: Arc<ReadyInner>,
}

impl std::fmt::Debug for ReadySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadySet").field("fd", &self.fd()).finish()
    }
}

impl ReadySet {
    /// A new, empty ready set with its own descriptor.
    pub fn new() -> Result<ReadySet> {
        let notifier = Notifier::new()
            .map_err(|e| Error::Backend(format!("cannot create readiness descriptor: {e}")))?;
        Ok(ReadySet {
            inner: Arc::new(ReadyInner {
                notifier,
                list: ReadyList::new(),
            }),
        })
    }

    /// The descriptor, readable while ids are waiting to be taken. Owned by the set.
    pub fn fd(&self) -> i32 {
        self.inner.notifier.fd()
    }

    /// Clears the descriptor and returns the ids of mailboxes that became ready (each at most
    /// once per batch; a closed mailbox also reports its id).
    pub fn take(&self) -> Vec<u64> {
        self.inner.notifier.clear();
        self.inner.list.take()
    }
}

impl Shared {
    /// Counts `n` messages as lost for this mailbox (reported as a lag notice at this place in
    /// the stream) and wakes its descriptor or ready set so an event loop sees the notice.
    pub(crate) fn note_lag(&self, n: u64) {
        if n == 0 || self.closed.load(Ordering::Acquire) {
            return;
        }
        self.dropped.fetch_add(n, Ordering::AcqRel);
        self.wake();
    }
}
