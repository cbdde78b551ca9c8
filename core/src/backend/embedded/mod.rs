//! The embedded flavor: a sharded, concurrent key/value map in this process.
//!
//! The map is split into shards, each behind its own `parking_lot::RwLock`; a key's shard is
//! picked from its hash. A read takes a shared lock on the shards it touches, a write the
//! exclusive lock of its key's shard only; no call holds two shard locks at once.
//!
//! Prefix scans seek in each shard's ordered index and walk only the matching keys. Expired keys
//! are invisible at once and reclaimed by a reaper thread (started on the first TTL, stopped when
//! the store is dropped) and opportunistically by writes to the same shard.
//!
//! Arguments arrive checked by the front ([`crate::Store`]): lengths and limits are not checked
//! again here.

mod shard;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use super::{ChangeKind, Changes, Ttl};
use crate::clock::Clock;
use crate::error::{shorten, Error, Result};
use crate::keyhash::hash_key;
use crate::value::Value;
use shard::Shard;

/// A shard padded to its own cache lines, so locks of neighbouring shards do not false-share.
#[repr(align(128))]
struct Padded(RwLock<Shard>);

struct Inner {
    shards: Box<[Padded]>,
    mask: u64,
    clock: Clock,
    /// Where changes go (the engine's bus), reported under the key's shard lock so that the
    /// events of one key are in commit order.
    changes: Option<Arc<dyn Changes>>,
    reaper_started: AtomicBool,
    reaper: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set when the store is dropped; the reaper waits on it between rounds.
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (flag, cv) = &*self.stop;
        *flag.lock() = true;
        cv.notify_all();
        if let Some(handle) = self.reaper.lock().take() {
            // The reaper may itself hold the last handle (it upgrades between rounds): it must not
            // join itself.
            if !ON_REAPER.with(|r| r.get()) {
                let _ = handle.join();
            }
        }
    }
}

/// The in-process store. Cloning gives another handle to the same map.
#[derive(Clone)]
pub(crate) struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl EmbeddedStore {
    /// A new, empty store of `shards` shards (rounded up to a power of two), reporting its
    /// changes to `changes` when given.
    pub(crate) fn new(
        shards: usize,
        clock: Clock,
        changes: Option<Arc<dyn Changes>>,
    ) -> EmbeddedStore {
        let n = shards.clamp(1, 1 << 16).next_power_of_two();
        let shards = (0..n)
            .map(|_| Padded(RwLock::new(Shard::default())))
            .collect();
        EmbeddedStore {
            inner: Arc::new(Inner {
                shards,
                mask: (n - 1) as u64,
                clock,
                changes,
                reaper_started: AtomicBool::new(false),
                reaper: Mutex::new(None),
                stop: Arc::new((Mutex::new(false), Condvar::new())),
            }),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // The high bits pick the shard; hashbrown uses the low and top-7 bits inside it.
        &self.inner.shards[((hash >> 40) & self.inner.mask) as usize].0
    }

    /// The change sink, when somebody watches (one atomic load when nobody does).
    #[inline]
    fn watched(&self) -> Option<&dyn Changes> {
        self.inner.changes.as_deref().filter(|c| c.watching())
    }

    #[inline]
    fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn deadline(&self, ttl: Option<Duration>) -> u64 {
        match ttl {
            None => 0,
            Some(ttl) => {
                self.start_reaper();
                self.inner.clock.deadline(ttl)
            }
        }
    }

    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Value> {
        let hash = hash_key(key);
        let shard = self.shard(hash).read();
        shard
            .find(hash, key)
            .filter(|e| e.is_live(|| self.now()))
            .map(|e| e.value.clone())
    }

    #[inline]
    pub(crate) fn set(&self, key: &str, value: Value, ttl: Option<Duration>) {
        let hash = hash_key(key);
        let expires_at = self.deadline(ttl);
        let mut shard = self.shard(hash).write();
        if let Some(c) = self.watched() {
            report(c, ChangeKind::Set, key, &value);
        }
        shard.upsert(hash, hash_key, key, value, expires_at);
    }

    pub(crate) fn set_if_absent(&self, key: &str, value: Value, ttl: Option<Duration>) -> bool {
        let hash = hash_key(key);
        let expires_at = self.deadline(ttl);
        let now = self.now();
        let mut shard = self.shard(hash).write();
        if shard.find_live_mut(hash, key, now).is_some() {
            return false;
        }
        if let Some(c) = self.watched() {
            report(c, ChangeKind::Set, key, &value);
        }
        shard.upsert(hash, hash_key, key, value, expires_at);
        true
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        let hash = hash_key(key);
        let now = self.now();
        let mut shard = self.shard(hash).write();
        let live = shard.remove(hash, key).is_some_and(|e| e.is_live(|| now));
        if live {
            if let Some(c) = self.watched() {
                c.changed(ChangeKind::Delete, key, &[]);
            }
        }
        live
    }

    #[inline]
    pub(crate) fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let hash = hash_key(key);
        let mut shard = self.shard(hash).write();
        // Fast path: a live counter, updated in place with no clock read for persistent keys.
        if let Some(e) = shard.find_mut(hash, key) {
            if e.expires_at == 0 || e.expires_at > self.now() {
                let Value::Int(cur) = e.value else {
                    return Err(Error::NotAnInteger { key: shorten(key) });
                };
                let new = cur
                    .checked_add(delta)
                    .ok_or_else(|| Error::Overflow { key: shorten(key) })?;
                let old_len = e.value.encoded_len();
                e.value = Value::Int(new);
                let new_len = e.value.encoded_len();
                shard.value_bytes = shard.value_bytes + new_len - old_len;
                if let Some(c) = self.watched() {
                    report(c, ChangeKind::Incr, key, &Value::Int(new));
                }
                return Ok(new);
            }
            shard.remove(hash, key);
        }
        if let Some(c) = self.watched() {
            report(c, ChangeKind::Incr, key, &Value::Int(delta));
        }
        shard.upsert(hash, hash_key, key, Value::Int(delta), 0);
        Ok(delta)
    }

    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        let now = self.now();
        let mut found = Vec::new();
        for shard in self.inner.shards.iter() {
            shard.0.read().keys_with_prefix(prefix, now, &mut found);
        }
        found.sort_unstable();
        found.iter().map(|k| k.to_string()).collect()
    }

    pub(crate) fn expire(&self, key: &str, ttl: Duration) -> bool {
        let deadline = self.deadline(Some(ttl));
        self.retime(key, deadline)
    }

    pub(crate) fn persist(&self, key: &str) -> bool {
        self.retime(key, 0)
    }

    fn retime(&self, key: &str, deadline: u64) -> bool {
        let hash = hash_key(key);
        let now = self.now();
        let mut shard = self.shard(hash).write();
        let Some(e) = shard.find_live_mut(hash, key, now) else {
            return false;
        };
        let old = std::mem::replace(&mut e.expires_at, deadline);
        shard.retime(key, old, deadline);
        true
    }

    pub(crate) fn ttl(&self, key: &str) -> Ttl {
        let hash = hash_key(key);
        let now = self.now();
        let shard = self.shard(hash).read();
        match shard.find(hash, key) {
            Some(e) if e.expires_at == 0 => Ttl::Persistent,
            Some(e) if e.expires_at > now => {
                Ttl::Expires(Duration::from_millis(e.expires_at - now))
            }
            _ => Ttl::Missing,
        }
    }

    /// Live keys (expired keys not yet reclaimed are not counted).
    pub(crate) fn len(&self) -> usize {
        let now = self.now();
        self.inner
            .shards
            .iter()
            .map(|s| {
                let s = s.0.read();
                s.len() - s.expired_count(now)
            })
            .sum()
    }

    /// Bytes held by values, expired values not yet reclaimed included.
    pub(crate) fn value_bytes(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.0.read().value_bytes)
            .sum()
    }

    pub(crate) fn clear(&self) {
        for s in self.inner.shards.iter() {
            s.0.write().clear();
        }
        if let Some(c) = self.watched() {
            c.changed(ChangeKind::Clear, "", &[]);
        }
    }

    pub(crate) fn reap_expired(&self) -> usize {
        reap(&self.inner)
    }

    fn start_reaper(&self) {
        // A manual clock moves only when its owner says so: its owner reaps (`reap_expired`).
        if matches!(self.inner.clock, Clock::Manual(_)) {
            return;
        }
        if self.inner.reaper_started.load(Ordering::Relaxed)
            || self.inner.reaper_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let stop = self.inner.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("hornbeam-reaper".into())
            .spawn(move || loop {
                ON_REAPER.with(|r| r.set(true));
                // Bounded by the store's life: the store's drop sets the flag and wakes us.
                {
                    let (flag, cv) = &*stop;
                    let mut stopped = flag.lock();
                    if !*stopped {
                        cv.wait_for(&mut stopped, REAP_INTERVAL);
                    }
                    if *stopped {
                        return;
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                reap(&inner);
            });
        match spawned {
            Ok(handle) => *self.inner.reaper.lock() = Some(handle),
            // No thread: expired keys are still invisible and are reclaimed by `reap_expired`.
            Err(_) => self.inner.reaper_started.store(false, Ordering::Release),
        }
    }
}

thread_local! {
    /// Whether this thread is a reaper (which must not join itself when it drops the store).
    static ON_REAPER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How often the reaper looks for expired keys.
const REAP_INTERVAL: Duration = Duration::from_millis(100);
/// Most keys one shard gives up per lock hold, so a mass expiry never stalls writers for long.
const REAP_BUDGET: usize = 1024;

/// Reports a change carrying a value (its MessagePack, on the stack for counters).
fn report(c: &dyn Changes, kind: ChangeKind, key: &str, value: &Value) {
    match value {
        Value::Int(i) => c.changed(kind, key, &crate::value::encode_int(*i)),
        Value::Bytes(b) => c.changed(kind, key, b),
    }
}

fn reap(inner: &Inner) -> usize {
    let now = inner.clock.now_ms();
    let mut total = 0;
    for s in inner.shards.iter() {
        loop {
            if s.0.read().next_deadline().is_none_or(|d| d > now) {
                break;
            }
            // Expiry events are reported under the shard's lock, in order with the key's writes.
            let watched = inner.changes.as_deref().filter(|c| c.watching());
            let n = s.0.write().reap(now, REAP_BUDGET, &mut |key| {
                if let Some(c) = watched {
                    c.changed(ChangeKind::Expire, key, &[]);
                }
            });
            total += n;
            if n < REAP_BUDGET {
                break;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn index_follows_deletes_and_expiry() {
        let clock = ManualClock::new();
        let s = EmbeddedStore::new(64, Clock::Manual(clock.clone()), None);
        s.set("a", Value::Int(1), None);
        s.set("b", Value::Int(1), Some(Duration::from_secs(1)));
        assert!(s.delete("a"));
        clock.advance(Duration::from_secs(2));
        assert_eq!(s.reap_expired(), 1);
        let idx: usize = s.inner.shards.iter().map(|p| p.0.read().index_len()).sum();
        assert_eq!(idx, 0);
        assert_eq!(s.value_bytes(), 0);
    }

    /// Keys on both sides of the inline limit (22 bytes) behave alike through every operation
    /// that touches the ordered index and the expiry queue, and leave neither behind.
    #[test]
    fn inline_and_shared_keys_keep_index_and_expiries_exact() {
        let clock = ManualClock::new();
        let s = EmbeddedStore::new(64, Clock::Manual(clock.clone()), None);
        let keys: Vec<String> = [1, 21, 22, 23, 40].iter().map(|&n| "k".repeat(n)).collect();
        let ttl = Some(Duration::from_secs(5));
        for k in &keys {
            s.set(k, Value::Int(1), ttl);
            assert_eq!(s.incr(k, 1).unwrap(), 2, "{k}");
            assert!(
                matches!(s.ttl(k), Ttl::Expires(_)),
                "incr keeps the deadline of {k}"
            );
            s.set(k, Value::Int(3), ttl); // a new deadline: the expiry entry moves
            assert!(s.persist(k));
            assert!(s.expire(k, Duration::from_secs(1)));
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(s.keys("k"), sorted);
        assert!(s.delete(&keys[0]) && s.delete(&keys[3]));
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            s.reap_expired(),
            keys.len() - 2,
            "one expiry entry per live key"
        );
        let idx: usize = s.inner.shards.iter().map(|p| p.0.read().index_len()).sum();
        assert_eq!(idx, 0);
        let left: usize = s
            .inner
            .shards
            .iter()
            .map(|p| p.0.read().expired_count(u64::MAX - 1))
            .sum();
        assert_eq!(left, 0, "no expiry entry left behind");
        assert_eq!(s.value_bytes(), 0);
    }
}
