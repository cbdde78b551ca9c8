//! The store: a sharded, concurrent key/value map with counters, prefix scans and TTLs.
//!
//! Keys are UTF-8 strings; values are MessagePack ([`Value`]). The map is split into shards,
//! each behind its own `parking_lot::RwLock`; a key's shard is picked from its hash.
//!
//! **Locking behaviour:** a read (`get`, `get_many`, `ttl`, `keys`, `len`) takes a shared lock on
//! the shards it touches, so readers never wait for each other. A write (`set`, `delete`, `incr`,
//! `expire`, ...) takes the exclusive lock of its key's shard only, so writers to different keys
//! rarely contend. Every operation is atomic for its key. No lock is held while calling user code,
//! and no call holds two shard locks at once, so the store cannot deadlock.
//!
//! **Prefix scans** seek in each shard's ordered index and walk only the matching keys: their cost
//! grows with the number of matches (and the number of shards), not with the size of the store.
//!
//! **Expiry:** a key set with a TTL is gone for every operation once its deadline passes. Its
//! memory is reclaimed by the store's reaper thread (started on the first TTL, stopped when the
//! store is dropped), and opportunistically by writes to the same shard.
//!
//! **Backends:** a store opened on Redis ([`crate::Engine::open`] with a `redis://` URL) keeps the
//! same methods, limits and errors; its data lives in Redis, shared by every process that opens
//! the same URL (see the crate's `remote` module docs for the layout). The locking notes below
//! describe the embedded store; on Redis each call is one round trip (one `MULTI`/`EXEC` or Lua
//! script for writes, so each is atomic), and a failed or timed-out call is
//! [`Error::Backend`]. Limits are checked before any I/O.

mod shard;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::clock::Clock;
use crate::config::{Config, Limits};
use crate::error::{shorten, Error, Result};
use crate::remote::store::RedisStore;
use crate::value::Value;
use shard::Shard;

/// Hash of a key; the same for every store in the process (seeded once, at random).
#[inline]
pub(crate) fn hash_key(key: &str) -> u64 {
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(key)
}

/// Remaining lifetime of a key, as [`Store::ttl`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist (or has expired).
    Missing,
    /// The key exists and never expires.
    Persistent,
    /// The key expires after this long.
    Expires(Duration),
}

/// A shard padded to its own cache lines, so locks of neighbouring shards do not false-share.
#[repr(align(128))]
struct Padded(RwLock<Shard>);

struct Inner {
    shards: Box<[Padded]>,
    mask: u64,
    limits: Limits,
    clock: Clock,
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

/// A concurrent key/value store. Cloning gives another handle to the same store.
///
/// ```
/// use hornbeam_core::{Store, Value};
/// let store = Store::new(Default::default());
/// store.set("room:lobby:count", Value::Int(1), None).unwrap();
/// assert_eq!(store.incr("room:lobby:count", 2).unwrap(), 3);
/// assert_eq!(store.keys("room:").unwrap(), vec!["room:lobby:count".to_string()]);
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Set when the data lives in Redis; every public method then forwards to it (after the
    /// same argument checks as the embedded store).
    remote: Option<Arc<RedisStore>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

impl Store {
    /// A new, empty store.
    pub fn new(config: Config) -> Store {
        let n = config.shards.clamp(1, 1 << 16).next_power_of_two();
        let shards = (0..n)
            .map(|_| Padded(RwLock::new(Shard::default())))
            .collect();
        Store {
            inner: Arc::new(Inner {
                shards,
                mask: (n - 1) as u64,
                limits: config.limits,
                clock: config.clock,
                reaper_started: AtomicBool::new(false),
                reaper: Mutex::new(None),
                stop: Arc::new((Mutex::new(false), Condvar::new())),
            }),
            remote: None,
        }
    }

    /// A store whose data lives in Redis (the embedded part only holds the limits).
    pub(crate) fn with_redis(config: Config, redis: Arc<crate::remote::Redis>) -> Store {
        let mut store = Store::new(Config {
            shards: 1,
            ..config
        });
        store.remote = Some(Arc::new(RedisStore::new(redis)));
        store
    }

    /// `"embedded"` or `"redis"`.
    pub fn backend_name(&self) -> &'static str {
        if self.remote.is_some() {
            "redis"
        } else {
            "embedded"
        }
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // The high bits pick the shard; hashbrown uses the low and top-7 bits inside it.
        &self.inner.shards[((hash >> 40) & self.inner.mask) as usize].0
    }

    #[inline]
    fn check_key(&self, key: &str) -> Result<u64> {
        if key.len() > self.inner.limits.max_key_len {
            return Err(Error::InvalidKey {
                key: shorten(key),
                reason: format!(
                    "key is {} bytes, over the limit of {} bytes",
                    key.len(),
                    self.inner.limits.max_key_len
                ),
            });
        }
        Ok(hash_key(key))
    }

    #[inline]
    fn check_value(&self, key: &str, value: &Value) -> Result<()> {
        let len = value.encoded_len();
        if len > self.inner.limits.max_value_len {
            return Err(Error::ValueTooLarge {
                key: shorten(key),
                len,
                max: self.inner.limits.max_value_len,
            });
        }
        Ok(())
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

    /// The value of `key`, or `None` when it is missing or expired.
    ///
    /// **Locking behaviour:** shared lock on the key's shard.
    #[inline]
    pub fn get(&self, key: &str) -> Result<Option<Value>> {
        let hash = self.check_key(key)?;
        if let Some(r) = &self.remote {
            return r.get(key);
        }
        let shard = self.shard(hash).read();
        Ok(shard
            .find(hash, key)
            .filter(|e| e.is_live(|| self.now()))
            .map(|e| e.value.clone()))
    }

    /// Sets `key` to `value`, with an optional time to live (replacing any previous TTL).
    ///
    /// **Locking behaviour:** exclusive lock on the key's shard.
    #[inline]
    pub fn set(&self, key: &str, value: Value, ttl: Option<Duration>) -> Result<()> {
        let hash = self.check_key(key)?;
        self.check_value(key, &value)?;
        if let Some(r) = &self.remote {
            return r.set_items(&[(key, &value)], ttl, false).map(|_| ());
        }
        let expires_at = self.deadline(ttl);
        self.shard(hash)
            .write()
            .upsert(hash, hash_key, key, value, expires_at);
        Ok(())
    }

    /// Sets `key` from MessagePack bytes (checked to be one well-formed value).
    ///
    /// **Locking behaviour:** as [`Store::set`]; the bytes are checked before the lock is taken.
    pub fn set_msgpack(&self, key: &str, bytes: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.check_key(key)?;
        if bytes.len() > self.inner.limits.max_value_len {
            return Err(Error::ValueTooLarge {
                key: shorten(key),
                len: bytes.len(),
                max: self.inner.limits.max_value_len,
            });
        }
        self.set(key, Value::from_msgpack(bytes, key)?, ttl)
    }

    /// Sets `key` only when it is missing (or expired); returns whether it was set.
    ///
    /// **Locking behaviour:** exclusive lock on the key's shard.
    pub fn set_if_absent(&self, key: &str, value: Value, ttl: Option<Duration>) -> Result<bool> {
        let hash = self.check_key(key)?;
        self.check_value(key, &value)?;
        if let Some(r) = &self.remote {
            return r.set_items(&[(key, &value)], ttl, true).map(|n| n == 1);
        }
        let expires_at = self.deadline(ttl);
        let now = self.now();
        let mut shard = self.shard(hash).write();
        if shard.find_live_mut(hash, key, now).is_some() {
            return Ok(false);
        }
        shard.upsert(hash, hash_key, key, value, expires_at);
        Ok(true)
    }

    /// Removes `key`; returns whether a live key was there. A missing key is fine.
    ///
    /// **Locking behaviour:** exclusive lock on the key's shard.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let hash = self.check_key(key)?;
        if let Some(r) = &self.remote {
            return r.delete(key);
        }
        let now = self.now();
        let removed = self.shard(hash).write().remove(hash, key);
        Ok(removed.is_some_and(|e| e.is_live(|| now)))
    }

    /// Adds `delta` to the counter at `key` and returns the new value. A missing key counts from 0.
    ///
    /// A value that is not an integer is [`Error::NotAnInteger`] and a result outside `i64` is
    /// [`Error::Overflow`]; in both cases the value is left unchanged. The key keeps its TTL.
    ///
    /// **Locking behaviour:** exclusive lock on the key's shard; atomic for the key.
    #[inline]
    pub fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let hash = self.check_key(key)?;
        if let Some(r) = &self.remote {
            return r.incr(key, delta);
        }
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
                return Ok(new);
            }
            shard.remove(hash, key);
        }
        shard.upsert(hash, hash_key, key, Value::Int(delta), 0);
        Ok(delta)
    }

    /// Values of several keys, in order; missing keys give `None`.
    ///
    /// **Locking behaviour:** one shared shard lock at a time; not a snapshot across keys.
    pub fn get_many<S: AsRef<str>>(&self, keys: &[S]) -> Result<Vec<Option<Value>>> {
        if let Some(r) = &self.remote {
            let names: Vec<&str> = keys.iter().map(|k| k.as_ref()).collect();
            for k in &names {
                self.check_key(k)?;
            }
            return r.get_many(&names);
        }
        keys.iter().map(|k| self.get(k.as_ref())).collect()
    }

    /// Sets several keys. Every key and value is checked first, so on error nothing is written.
    ///
    /// **Locking behaviour:** one exclusive shard lock at a time; each key is atomic, the batch is
    /// not a transaction.
    pub fn set_many<S: AsRef<str>>(
        &self,
        items: Vec<(S, Value)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        for (k, v) in &items {
            self.check_key(k.as_ref())?;
            self.check_value(k.as_ref(), v)?;
        }
        if let Some(r) = &self.remote {
            let pairs: Vec<(&str, &Value)> = items.iter().map(|(k, v)| (k.as_ref(), v)).collect();
            return r.set_items(&pairs, ttl, false).map(|_| ());
        }
        for (k, v) in items {
            self.set(k.as_ref(), v, ttl)?;
        }
        Ok(())
    }

    /// Live keys starting with `prefix` (all keys for `""`), sorted.
    ///
    /// Cost grows with the number of matches, not with the size of the store: each shard's
    /// ordered index is searched for the prefix and walked only while keys match.
    ///
    /// **Locking behaviour:** one shared shard lock at a time; keys written during the scan may or
    /// may not appear.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.check_key(prefix)?;
        if let Some(r) = &self.remote {
            return r.keys(prefix);
        }
        let now = self.now();
        let mut found = Vec::new();
        for shard in self.inner.shards.iter() {
            shard.0.read().keys_with_prefix(prefix, now, &mut found);
        }
        found.sort_unstable();
        Ok(found.iter().map(|k| k.to_string()).collect())
    }

    /// Sets or replaces the TTL of an existing key; returns whether the key exists.
    ///
    /// **Locking behaviour:** exclusive lock on the key's shard.
    pub fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        let hash = self.check_key(key)?;
        if let Some(r) = &self.remote {
            return r.expire(key, ttl);
        }
        let deadline = self.deadline(Some(ttl));
        self.retime(hash, key, deadline)
    }

    /// Removes the TTL of a key, so it never expires; returns whether the key exists.
    ///
    /// **Locking behaviour:** exclusive lock on the key's shard.
    pub fn persist(&self, key: &str) -> Result<bool> {
        let hash = self.check_key(key)?;
        if let Some(r) = &self.remote {
            return r.persist(key);
        }
        self.retime(hash, key, 0)
    }

    fn retime(&self, hash: u64, key: &str, deadline: u64) -> Result<bool> {
        let now = self.now();
        let mut shard = self.shard(hash).write();
        let Some(e) = shard.find_live_mut(hash, key, now) else {
            return Ok(false);
        };
        let old = std::mem::replace(&mut e.expires_at, deadline);
        let k = e.key.clone();
        shard.retime(k, old, deadline);
        Ok(true)
    }

    /// The remaining lifetime of a key.
    ///
    /// **Locking behaviour:** shared lock on the key's shard.
    pub fn ttl(&self, key: &str) -> Result<Ttl> {
        let hash = self.check_key(key)?;
        if let Some(r) = &self.remote {
            return r.ttl(key);
        }
        let now = self.now();
        let shard = self.shard(hash).read();
        Ok(match shard.find(hash, key) {
            Some(e) if e.expires_at == 0 => Ttl::Persistent,
            Some(e) if e.expires_at > now => {
                Ttl::Expires(Duration::from_millis(e.expires_at - now))
            }
            _ => Ttl::Missing,
        })
    }

    /// Number of keys held, counting expired keys not yet reclaimed by the reaper.
    ///
    /// **Locking behaviour:** one shared shard lock at a time.
    ///
    /// On Redis: the live keys (expired index entries are dropped first); 0 when Redis cannot be
    /// reached (use [`Store::try_len`] to see the error).
    pub fn len(&self) -> usize {
        if self.remote.is_some() {
            return self.try_len().unwrap_or(0);
        }
        self.inner.shards.iter().map(|s| s.0.read().len()).sum()
    }

    /// Number of live keys, or the backend's error (the embedded store never fails).
    pub fn try_len(&self) -> Result<usize> {
        match &self.remote {
            Some(r) => r.len(),
            None => Ok(self.live_len()),
        }
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of live keys (expired keys not yet reclaimed are not counted).
    pub fn live_len(&self) -> usize {
        if self.remote.is_some() {
            return self.len();
        }
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

    /// Bytes held by values (keys and bookkeeping excluded). On Redis this reads every value's
    /// length (a cost that grows with the store), and is 0 when Redis cannot be reached.
    pub fn value_bytes(&self) -> usize {
        if let Some(r) = &self.remote {
            return r.value_bytes().unwrap_or(0);
        }
        self.inner
            .shards
            .iter()
            .map(|s| s.0.read().value_bytes)
            .sum()
    }

    /// Removes every key.
    ///
    /// **Locking behaviour:** one exclusive shard lock at a time.
    ///
    /// On Redis: removes every key this store's prefix holds, in batches; a failure is ignored
    /// here (use [`Store::try_clear`] to see it).
    pub fn clear(&self) {
        let _ = self.try_clear();
    }

    /// Removes every key, or returns the backend's error (the embedded store never fails).
    pub fn try_clear(&self) -> Result<()> {
        if let Some(r) = &self.remote {
            return r.clear();
        }
        for s in self.inner.shards.iter() {
            s.0.write().clear();
        }
        Ok(())
    }

    /// Reclaims expired keys now; returns how many were removed. The reaper thread calls this on
    /// its own; a store on a manual clock has no reaper thread, so its owner calls this. On Redis (which reclaims expired
    /// values itself) this drops the key index's entries of expired keys.
    pub fn reap_expired(&self) -> usize {
        if let Some(r) = &self.remote {
            return r.reap().map_or(0, |(n, _)| n);
        }
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

fn reap(inner: &Inner) -> usize {
    let now = inner.clock.now_ms();
    let mut total = 0;
    for s in inner.shards.iter() {
        loop {
            if s.0.read().next_deadline().is_none_or(|d| d > now) {
                break;
            }
            let n = s.0.write().reap(now, REAP_BUDGET);
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

    fn manual() -> (Store, ManualClock) {
        let clock = ManualClock::new();
        let store = Store::new(Config {
            clock: Clock::Manual(clock.clone()),
            ..Default::default()
        });
        (store, clock)
    }

    #[test]
    fn index_follows_deletes_and_expiry() {
        let (s, clock) = manual();
        s.set("a", Value::Int(1), None).unwrap();
        s.set("b", Value::Int(1), Some(Duration::from_secs(1)))
            .unwrap();
        assert!(s.delete("a").unwrap());
        clock.advance(Duration::from_secs(2));
        assert_eq!(s.reap_expired(), 1);
        let idx: usize = s.inner.shards.iter().map(|p| p.0.read().index_len()).sum();
        assert_eq!(idx, 0);
        assert_eq!(s.value_bytes(), 0);
    }
}
