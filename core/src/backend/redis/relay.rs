//! The Redis relay: one channel per prefix (`P bus:db`), one subscription connection and one
//! background thread per bus; fan-out stays local (the bus's own trie, through [`Sink`]).
//!
//! The model is Phoenix.PubSub's Redis adapter: `publish` sends one versioned envelope carrying
//! this bus's node id, the topic and the payload; every bus subscribed to the channel receives
//! it, ignores its own (already delivered locally by `publish`), and hands it to its process's
//! bus through [`Sink`], which queues it into the matching local mailboxes. Redis' glob patterns are never used, so
//! `*` and `>` mean exactly what they mean in the embedded bus.
//!
//! Store changes: a process that watches registers in `P watchers` (renewed every
//! [`WATCH_RENEW`], lapsing after [`WATCH_LEASE`]); every writing script then publishes one change
//! event per change on the same channel (`HB\x02`, see [`open_change`]), inside the write's own
//! script, so events are ordered exactly as the writes committed. Every watching process hands
//! them to its watchers, its own writes included (they come back through Redis, so a process's
//! watchers see its writes in the same order as everyone else's). While it watches, the thread
//! also runs a reap batch about once a second, which turns expired keys into expiry events.
//!
//! The thread starts with the bus's first subscription (never at creation, so nothing runs
//! before a fork), lives while the bus or any of its mailboxes does, and wakes every
//! [`TICK`] to notice that. When its connection is lost it reconnects with bounded backoff,
//! resubscribes, and gives every subscribed mailbox a lag notice ([`Sink::note_gap`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::store::{decode, RedisStore};
use super::{unix_ms, Redis};
use crate::backend::{new_node_id, ChangeKind, Sink};
use crate::error::{Error, Result};

/// How often the subscriber thread wakes when no message comes (to notice a dropped bus).
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// After this long without traffic, the subscriber checks its connection with a `PING`.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// First and longest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// First bytes of every envelope: `HB` and the format version.
const MAGIC: &[u8; 3] = b"HB\x01";
/// First bytes of a store change event (written by the store's scripts).
const CHANGE_MAGIC: &[u8; 3] = b"HB\x02";
/// How long a watcher's registration lasts without renewal (a crashed process stops making
/// writes publish events after this long).
pub(crate) const WATCH_LEASE: Duration = Duration::from_secs(30);
/// How often a watching process renews its registration.
const WATCH_RENEW: Duration = Duration::from_secs(10);
/// How often a watching process runs a reap batch (expiries become events).
const REAP_EVERY: Duration = Duration::from_secs(1);
/// Due keys one reap batch looks at.
const REAP_BATCH: usize = 1000;

/// Reads a store change event: `HB\x02`, the kind as one ASCII digit, the key's length in
/// decimal, `:`, the key, then the value as the store keeps it in Redis (empty for deletes,
/// expiries and clears). `None` for anything else.
pub(crate) fn open_change(bytes: &[u8]) -> Option<(ChangeKind, &str, &[u8])> {
    let rest = bytes.strip_prefix(CHANGE_MAGIC)?;
    let (&digit, rest) = rest.split_first()?;
    let kind = ChangeKind::from_u8(digit.checked_sub(b'0')?)?;
    let colon = rest.iter().take(12).position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let rest = &rest[colon + 1..];
    let key = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((kind, key, &rest[len..]))
}

/// An envelope: magic and version, the sender's node id, the topic's length, topic, payload.
pub(crate) fn envelope(node: u64, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 12 + topic.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads an envelope: (node id, topic, payload); `None` for anything else (another version,
/// another writer).
pub(crate) fn open_envelope(bytes: &[u8]) -> Option<(u64, &str, &[u8])> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let node = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let len = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(rest.get(12..12usize.checked_add(len)?)?).ok()?;
    Some((node, topic, &rest[12 + len..]))
}

/// Where the subscriber stands.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// No thread yet.
    Idle,
    /// The thread is making its first (or a requested) attempt.
    Starting,
    /// Subscribed at least once (it may be reconnecting now).
    Up,
    /// The thread runs but has never subscribed; the last attempt failed with this error.
    Down(String),
}

struct SubState {
    /// Whether our subscription connection is subscribed right now (PUBLISH counts it).
    subscribed: AtomicBool,
    /// Whether it has ever subscribed (fast path of `ensure_started`).
    ever_up: AtomicBool,
    phase: Mutex<Phase>,
    changed: Condvar,
    /// Whether this process watches store changes (registered in `P watchers`).
    watching: AtomicBool,
}

/// The Redis relay of a [`crate::Bus`].
pub(crate) struct RedisRelay {
    r: Arc<Redis>,
    /// The store, for the watchers set and the reap batches that report expiries.
    store: Arc<RedisStore>,
    channel: String,
    node: u64,
    state: Arc<SubState>,
}

impl std::fmt::Debug for RedisRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRelay")
            .field("channel", &self.channel)
            .finish()
    }
}

impl RedisRelay {
    pub(crate) fn new(r: Arc<Redis>, store: Arc<RedisStore>) -> RedisRelay {
        RedisRelay {
            channel: super::bus_channel(&r),
            r,
            store,
            node: new_node_id(),
            state: Arc::new(SubState {
                subscribed: AtomicBool::new(false),
                ever_up: AtomicBool::new(false),
                phase: Mutex::new(Phase::Idle),
                changed: Condvar::new(),
                watching: AtomicBool::new(false),
            }),
        }
    }

    /// Registers this process as a watcher (writes then publish change events) or removes the
    /// registration. The subscription is up already (the bus starts the relay first), so no
    /// change committed after this returns is missed.
    pub(crate) fn set_watching(&self, on: bool) -> Result<()> {
        self.state.watching.store(on, Ordering::Release);
        if on {
            register(&self.r, &self.store.watchers, self.node)
        } else {
            let n: std::result::Result<i64, _> = self.r.run(|c| {
                redis::cmd("ZREM")
                    .arg(&self.store.watchers)
                    .arg(self.node)
                    .query(c)
            })?;
            n.map(|_| ()).map_err(|e| self.r.server_error(e))
        }
    }

    /// Sends `topic`/`payload` to the other buses; returns how many received it.
    pub(crate) fn publish(&self, topic: &str, payload: &[u8]) -> Result<usize> {
        let env = envelope(self.node, topic, payload);
        let n: usize = self
            .r
            .run(|c| redis::cmd("PUBLISH").arg(&self.channel).arg(&env).query(c))?
            .map_err(|e| self.r.server_error(e))?;
        let mine = usize::from(self.state.subscribed.load(Ordering::Acquire));
        Ok(n.saturating_sub(mine))
    }

    /// Starts the subscriber thread if needed. The first time, waits (up to about twice the
    /// timeout) until it has subscribed, so a message published elsewhere right after a
    /// successful `subscribe` is received; fails with [`Error::Backend`] when Redis cannot be
    /// reached. Once it has subscribed, later calls return at once, even while it reconnects.
    pub(crate) fn ensure_started(&self, sink: Weak<dyn Sink>) -> Result<()> {
        if self.state.ever_up.load(Ordering::Acquire) {
            return Ok(());
        }
        let deadline = Instant::now() + self.r.timeout * 2 + Duration::from_millis(500);
        let mut phase = self.state.phase.lock();
        let mut asked = false;
        // Bounded: each turn either returns, or waits on the thread until the deadline.
        loop {
            match phase.clone() {
                Phase::Up => return Ok(()),
                Phase::Idle => {
                    self.spawn(sink.clone())?;
                    asked = true;
                    *phase = Phase::Starting;
                }
                Phase::Down(msg) if asked => {
                    return Err(Error::Backend(format!(
                        "redis at {}: cannot subscribe: {msg}",
                        self.r.place()
                    )))
                }
                Phase::Down(_) => {
                    // Ask the waiting thread for a fresh attempt now, and wait for its outcome.
                    asked = true;
                    *phase = Phase::Starting;
                    self.state.changed.notify_all();
                }
                Phase::Starting => {
                    if self
                        .state
                        .changed
                        .wait_until(&mut phase, deadline)
                        .timed_out()
                        && *phase == Phase::Starting
                    {
                        return Err(Error::Backend(format!(
                            "redis at {}: not subscribed within {:.3} s",
                            self.r.place(),
                            (self.r.timeout * 2).as_secs_f64()
                        )));
                    }
                }
            }
        }
    }

    fn spawn(&self, bus: Weak<dyn Sink>) -> Result<()> {
        let sub = Subscriber {
            bus,
            r: self.r.clone(),
            store: self.store.clone(),
            channel: self.channel.clone(),
            node: self.node,
            state: self.state.clone(),
        };
        std::thread::Builder::new()
            .name("hornbeam-redis-sub".into())
            .spawn(move || sub.run())
            .map(|_| ())
            .map_err(|e| Error::Backend(format!("cannot start the Redis subscriber thread: {e}")))
    }
}

/// Writes (or renews) this process's registration as a watcher, and drops registrations that
/// lapsed long ago (processes that died).
fn register(r: &Redis, watchers: &str, node: u64) -> Result<()> {
    let now = unix_ms();
    let lease = WATCH_LEASE.as_millis() as u64;
    let reply: std::result::Result<(), _> = r.run(|c| {
        redis::pipe()
            .cmd("ZADD")
            .arg(watchers)
            .arg(now + lease)
            .arg(node)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(watchers)
            .arg("-inf")
            .arg(now.saturating_sub(lease))
            .ignore()
            .query(c)
    })?;
    reply.map_err(|e| r.server_error(e))
}

/// How one subscription session ended.
enum Ended {
    /// It never subscribed.
    Failed(Error),
    /// The connection was lost after subscribing.
    Lost,
    /// The bus is gone: the thread ends.
    Exit,
}

/// The subscriber thread's state.
struct Subscriber {
    bus: Weak<dyn Sink>,
    r: Arc<Redis>,
    store: Arc<RedisStore>,
    channel: String,
    node: u64,
    state: Arc<SubState>,
}

impl Subscriber {
    fn run(self) {
        let mut backoff = MIN_BACKOFF;
        let mut was_up = false;
        // Bounded by the bus's life: every wait below is at most MAX_BACKOFF or TICK long and is
        // followed by a check that the bus still exists.
        loop {
            if self.bus.strong_count() == 0 {
                return;
            }
            match self.session(was_up) {
                Ended::Exit => return,
                Ended::Lost => {
                    was_up = true;
                    backoff = MIN_BACKOFF;
                }
                Ended::Failed(e) => {
                    let mut phase = self.state.phase.lock();
                    if *phase != Phase::Up {
                        *phase = Phase::Down(e.to_string());
                        self.state.changed.notify_all();
                    }
                    // Wait for the backoff, or until a subscriber asks for an attempt now.
                    let _ = self.state.changed.wait_for(&mut phase, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Connects, subscribes, reports it, and relays messages until the connection is lost or
    /// the bus is gone.
    fn session(&self, was_up: bool) -> Ended {
        let mut con = match self.r.connect() {
            Ok(c) => c,
            Err(e) => return Ended::Failed(e),
        };
        let mut ps = con.as_pubsub();
        if let Err(e) = ps.subscribe(&self.channel) {
            return Ended::Failed(self.r.io_error(&e));
        }
        if ps.set_read_timeout(Some(TICK)).is_err() {
            return Ended::Failed(Error::Backend(String::from("cannot set a read timeout")));
        }
        self.state.subscribed.store(true, Ordering::Release);
        {
            let mut phase = self.state.phase.lock();
            *phase = Phase::Up;
            self.state.ever_up.store(true, Ordering::Release);
            self.state.changed.notify_all();
        }
        let mut renewed = Instant::now();
        let mut reaped = Instant::now();
        if self.state.watching.load(Ordering::Acquire) && was_up {
            // Our registration may have lapsed while we were away.
            let _ = register(&self.r, &self.store.watchers, self.node);
        }
        if was_up {
            // Messages published while we were away are lost: tell every mailbox.
            match self.bus.upgrade() {
                Some(sink) => {
                    sink.note_gap(1);
                }
                None => return self.ended(Ended::Exit),
            }
        }
        let mut quiet_since = Instant::now();
        // Bounded by the connection's and the bus's life (see `run`).
        loop {
            if self.state.watching.load(Ordering::Acquire) {
                // Best effort: a failure here shows up as a lost connection below.
                if renewed.elapsed() >= WATCH_RENEW {
                    renewed = Instant::now();
                    let _ = register(&self.r, &self.store.watchers, self.node);
                }
                if reaped.elapsed() >= REAP_EVERY {
                    reaped = Instant::now();
                    let _ = self.store.reap_batch(REAP_BATCH);
                }
            }
            match ps.get_message() {
                Ok(msg) => {
                    quiet_since = Instant::now();
                    if msg.get_channel_name() != self.channel {
                        continue;
                    }
                    let bytes = msg.get_payload_bytes();
                    if let Some((kind, key, stored)) = open_change(bytes) {
                        let Some(sink) = self.bus.upgrade() else {
                            return self.ended(Ended::Exit);
                        };
                        // The value as Redis keeps it (a decimal counter or MessagePack) becomes
                        // MessagePack; one that does not read (another client's) is left empty.
                        let value = if stored.is_empty() {
                            Vec::new()
                        } else {
                            decode(key, stored)
                                .map(|v| v.to_msgpack().to_vec())
                                .unwrap_or_default()
                        };
                        sink.changed(kind, key, &value);
                        continue;
                    }
                    let Some((node, topic, payload)) = open_envelope(bytes) else {
                        continue;
                    };
                    if node == self.node {
                        continue; // ours: `publish` delivered it locally already
                    }
                    let Some(sink) = self.bus.upgrade() else {
                        return self.ended(Ended::Exit);
                    };
                    sink.deliver(topic, payload);
                }
                Err(e) if e.is_timeout() => {
                    if self.bus.strong_count() == 0 {
                        return self.ended(Ended::Exit);
                    }
                    if quiet_since.elapsed() >= KEEPALIVE {
                        let alive = ps.set_read_timeout(Some(self.r.timeout)).is_ok()
                            && ps.ping::<redis::Value>().is_ok()
                            && ps.set_read_timeout(Some(TICK)).is_ok();
                        if !alive {
                            return self.ended(Ended::Lost);
                        }
                        quiet_since = Instant::now();
                    }
                }
                Err(_) => return self.ended(Ended::Lost),
            }
        }
    }

    fn ended(&self, how: Ended) -> Ended {
        self.state.subscribed.store(false, Ordering::Release);
        how
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let env = envelope(42, "room:lobby", b"\xa2hi");
        assert_eq!(
            open_envelope(&env),
            Some((42, "room:lobby", &b"\xa2hi"[..]))
        );
        assert_eq!(open_envelope(b"HB\x02rest"), None, "another version");
        assert_eq!(open_envelope(&env[..10]), None, "truncated");
        assert_ne!(new_node_id(), new_node_id());
    }

    #[test]
    fn change_events_parse_as_the_scripts_write_them() {
        assert!(open_change(b"HB\x021").is_none(), "no length");
        assert_eq!(
            open_change(b"HB\x0214:k:\xc3\xa9\x92\x01\x02"),
            Some((ChangeKind::Set, "k:\u{e9}", &b"\x92\x01\x02"[..]))
        );
        assert_eq!(
            open_change(b"HB\x0250:"),
            Some((ChangeKind::Clear, "", &b""[..]))
        );
        assert_eq!(
            open_change(b"HB\x0233:abc-17"),
            Some((ChangeKind::Incr, "abc", &b"-17"[..]))
        );
        assert_eq!(open_change(b"HB\x0293:abc"), None, "unknown kind");
        assert_eq!(open_change(b"HB\x0219:abc"), None, "truncated key");
        assert_eq!(open_change(b"HB\x0212:\xff\xfe"), None, "key not UTF-8");
        assert_eq!(open_change(b"HB\x01rest"), None, "a message, not a change");
    }
}
