//! Backends: where the store keeps its data and how the bus reaches other processes.
//!
//! One closed set of flavors, chosen in one place ([`open`], from a URL or `HORNBEAM_URL`):
//!
//! | URL | store | bus |
//! | --- | --- | --- |
//! | unset, `embedded://` | [`embedded`]: a sharded map in this process | this process only |
//! | `local:///abs/dir`, `local://` | [`local`]: LMDB, shared by every process on the machine opening the directory | a bounded log in the same LMDB + one doorbell per process |
//! | `redis://host:port/db` | [`redis`]: Redis | one Redis pub/sub channel |
//!
//! The fronts ([`crate::Store`], [`crate::Bus`]) check every argument against the limits once,
//! then make one `match` over the flavor per operation. The flavors never import the fronts: a
//! cross-process relay delivers what other processes published into this process's bus through
//! the narrow [`Sink`] interface, and the bus fans it out to its own mailboxes (so patterns,
//! bounds and lag notices are the embedded ones on every backend).

pub(crate) mod embedded;
pub(crate) mod local;
pub(crate) mod redis;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{Error, Result};

/// Remaining lifetime of a key, as [`crate::Store::ttl`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist (or has expired).
    Missing,
    /// The key exists and never expires.
    Persistent,
    /// The key expires after this long.
    Expires(Duration),
}

/// The store's flavor; the front dispatches every call with one `match` on it.
#[derive(Clone)]
pub(crate) enum StoreFlavor {
    Embedded(embedded::EmbeddedStore),
    Local(Arc<local::store::LocalStore>),
    Redis(Arc<redis::store::RedisStore>),
}

impl StoreFlavor {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            StoreFlavor::Embedded(_) => "embedded",
            StoreFlavor::Local(_) => "local",
            StoreFlavor::Redis(_) => "redis",
        }
    }
}

/// What happened to a key, as a watch event reports it (see [`crate::Mailbox::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChangeKind {
    /// The key was set (`set`, `set_many`, `set_if_absent` that wrote); the event carries the
    /// new value.
    Set = 1,
    /// The key was deleted (`delete` of a live key).
    Delete = 2,
    /// The counter changed (`incr`, `decr`); the event carries the new value.
    Incr = 3,
    /// The key's TTL ran out and the store reclaimed it.
    Expire = 4,
    /// The whole store was cleared; the event's key is empty.
    Clear = 5,
}

impl ChangeKind {
    /// The kind a stored byte names (0 and unknown bytes: none).
    pub(crate) fn from_u8(b: u8) -> Option<ChangeKind> {
        Some(match b {
            1 => ChangeKind::Set,
            2 => ChangeKind::Delete,
            3 => ChangeKind::Incr,
            4 => ChangeKind::Expire,
            5 => ChangeKind::Clear,
            _ => return None,
        })
    }

    /// The operation's name: `"set"`, `"delete"`, `"incr"`, `"expire"` or `"clear"`.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Set => "set",
            ChangeKind::Delete => "delete",
            ChangeKind::Incr => "incr",
            ChangeKind::Expire => "expire",
            ChangeKind::Clear => "clear",
        }
    }
}

/// Where a store flavor reports its changes: the process's bus, which hands them to the mailboxes
/// watching a prefix of the key. `watching` is one atomic load, so a write with nobody watching
/// pays nothing more.
pub(crate) trait Changes: Send + Sync {
    /// Whether any mailbox of this process watches anything.
    fn watching(&self) -> bool;
    /// Reports a committed change: `value` is the new value's MessagePack (empty for deletes,
    /// expiries and clears); for [`ChangeKind::Clear`] `key` is empty and every watcher gets it.
    fn changed(&self, kind: ChangeKind, key: &str, value: &[u8]);
}

/// What a relay hands to the process's bus: the one way into it from a backend.
pub(crate) trait Sink: Send + Sync {
    /// Queues a message another process published into the matching local mailboxes; returns
    /// how many accepted it.
    fn deliver(&self, topic: &str, payload: &[u8]) -> usize;
    /// Tells every subscribed mailbox that `missed` messages may have been lost here; returns how
    /// many mailboxes were told.
    fn note_gap(&self, missed: u64) -> usize;
    /// Hands a store change made by any process to the local watchers.
    fn changed(&self, kind: ChangeKind, key: &str, value: &[u8]);
}

/// A bus's link to the other processes on its backend (none when embedded).
#[derive(Debug)]
pub(crate) enum Relay {
    Local(local::relay::LocalRelay),
    Redis(redis::relay::RedisRelay),
}

impl Relay {
    /// Sends a message to the other processes; returns how many received it.
    #[inline]
    pub(crate) fn publish(&self, topic: &str, payload: &[u8]) -> Result<usize> {
        match self {
            Relay::Local(r) => r.publish(topic, payload),
            Relay::Redis(r) => r.publish(topic, payload),
        }
    }

    /// Says whether this process watches store changes (its first watch and after its last
    /// unwatch): writes by every process then include change events.
    pub(crate) fn set_watching(&self, on: bool) -> Result<()> {
        match self {
            Relay::Local(r) => r.set_watching(on),
            Relay::Redis(r) => r.set_watching(on),
        }
    }

    /// Makes sure messages from other processes flow into `sink` (called on each subscription;
    /// the first starts the relay's thread).
    #[inline]
    pub(crate) fn ensure_started(&self, sink: Weak<dyn Sink>) -> Result<()> {
        match self {
            Relay::Local(r) => r.ensure_started(sink),
            Relay::Redis(r) => r.ensure_started(sink),
        }
    }
}

impl Relay {
    /// The descriptor a consumer may watch to read other processes' messages in its own thread
    /// (`local://` once joined; `None` elsewhere): see [`local::relay`].
    pub(crate) fn doorbell_fd(&self) -> Option<i32> {
        match self {
            Relay::Local(r) => r.doorbell_fd(),
            Relay::Redis(_) => None,
        }
    }

    /// A thread is about to block in a mailbox's `recv`: the relay serves it until `unblocked`.
    #[inline]
    pub(crate) fn blocking(&self) {
        if let Relay::Local(r) = self {
            r.blocking();
        }
    }

    /// The thread of [`Relay::blocking`] returned.
    #[inline]
    pub(crate) fn unblocked(&self) {
        if let Relay::Local(r) = self {
            r.unblocked();
        }
    }

    /// Lets the calling thread, about to block in `recv`, watch the doorbell and read the log
    /// itself while it waits (`local://` only; `None` when another thread does).
    #[inline]
    pub(crate) fn lead(&self) -> Option<local::relay::Lead<'_>> {
        match self {
            Relay::Local(r) => r.lead(),
            Relay::Redis(_) => None,
        }
    }

    /// A mailbox's descriptor was handed out (it may be polled from any thread).
    pub(crate) fn external_poller(&self) {
        if let Relay::Local(r) = self {
            r.external_poller();
        }
    }

    /// After the doorbell rang: reads and delivers in the caller's thread; how many entries.
    pub(crate) fn pump(&self) -> usize {
        match self {
            Relay::Local(r) => r.pump(),
            Relay::Redis(_) => 0,
        }
    }
}

/// A backend opened from a URL: the store's flavor and the bus's relay.
pub(crate) struct Opened {
    pub(crate) store: StoreFlavor,
    pub(crate) relay: Option<Relay>,
}

/// The one place that chooses the backend: `""`/`embedded://` (`None`: the caller builds the
/// embedded engine), `local://...` or `redis://...`.
pub(crate) fn open(url: &str) -> Result<Option<Opened>> {
    let url = url.trim();
    if url.is_empty() || url.starts_with("embedded:") || url.starts_with("mem:") {
        return Ok(None);
    }
    if url.starts_with("local:") {
        let shared = local::open(&local::parse_url(url)?)?;
        return Ok(Some(Opened {
            store: StoreFlavor::Local(Arc::new(local::store::LocalStore::new(shared.clone()))),
            relay: Some(Relay::Local(local::relay::LocalRelay::new(shared))),
        }));
    }
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://")
    {
        let r = redis::Redis::open(url)?;
        let store = Arc::new(redis::store::RedisStore::new(r.clone()));
        return Ok(Some(Opened {
            store: StoreFlavor::Redis(store.clone()),
            relay: Some(Relay::Redis(redis::relay::RedisRelay::new(r, store))),
        }));
    }
    Err(Error::InvalidArgument(format!(
        "{}={:?}: unsupported backend (use local:///abs/dir, redis://host:port/db, embedded://, \
         or leave it unset)",
        crate::config::URL_ENV,
        redis::hide_password(url)
    )))
}

/// In a child right after `fork()`: forget what the parent's backends hold (see
/// [`local::after_fork_in_child`]).
pub(crate) fn after_fork_in_child() {
    local::after_fork_in_child();
}

/// A node id unique to one relay (process, time and a counter, hashed with random keys).
pub(crate) fn new_node_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed),
    ))
}
