//! The store: a key/value map with counters, prefix scans and TTLs, on the backend the engine was
//! opened on.
//!
//! Keys are UTF-8 strings; values are MessagePack ([`Value`]). [`Store`] is the one front: every
//! method checks its arguments against the [`Limits`] once, here, then makes one dispatch to the
//! backend's flavor (`crate::backend`): the embedded map in this process, LMDB shared by the
//! processes of one machine (`local://`), or Redis (`redis://`). Every flavor answers every
//! operation the same way (the shared suite in `core/tests` runs on each).
//!
//! **Locking behaviour:** embedded: a read (`get`, `get_many`, `ttl`, `keys`, `len`) takes a shared
//! lock on the shards it touches, so readers never wait for each other; a write (`set`, `delete`,
//! `incr`, `expire`, ...) takes the exclusive lock of its key's shard only. Every operation is
//! atomic for its key; no lock is held while calling user code, and no call holds two shard locks
//! at once, so the store cannot deadlock. `local://`: reads take no lock (an LMDB read
//! transaction); writes take LMDB's one writer lock (a robust mutex: a process killed while holding
//! it does not block the others) for one short transaction. Redis: one round trip per call (one
//! `MULTI`/`EXEC` or Lua script for writes).
//!
//! **Prefix scans** cost what their matches cost, on every backend: a seek in an ordered index (the
//! shards' indexes, an LMDB cursor, a Redis sorted set), then a walk over the matching keys only.
//!
//! **Expiry:** a key set with a TTL is gone for every operation once its deadline passes; its
//! memory is reclaimed in the background (see each flavor).
//!
//! **Errors:** limits are checked before any I/O; a backend that fails or times out gives
//! [`Error::Backend`]; a full `local://` store gives [`Error::StoreFull`].

use std::sync::Arc;
use std::time::Duration;

pub use crate::backend::Ttl;
use crate::backend::{embedded::EmbeddedStore, Changes, StoreFlavor};
use crate::config::{Config, Limits};
use crate::error::{shorten, Error, Result};
use crate::value::Value;

/// A key/value store. Cloning gives another handle to the same store.
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
    limits: Limits,
    flavor: StoreFlavor,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

impl Store {
    /// A new, empty embedded (in-process) store (with no bus: nobody can watch it; an
    /// [`crate::Engine`]'s store reports its changes to the engine's bus).
    pub fn new(config: Config) -> Store {
        Store {
            flavor: StoreFlavor::Embedded(EmbeddedStore::new(config.shards, config.clock, None)),
            limits: config.limits,
        }
    }

    /// An embedded store whose changes go to `changes` (the engine's bus).
    pub(crate) fn with_changes(config: Config, changes: Arc<dyn Changes>) -> Store {
        Store {
            flavor: StoreFlavor::Embedded(EmbeddedStore::new(
                config.shards,
                config.clock,
                Some(changes),
            )),
            limits: config.limits,
        }
    }

    /// A store on a backend's flavor (for [`crate::Engine::open`]). A backend with a shorter
    /// key limit than the configured one lowers it (`local://`: LMDB's, about 1.9 KiB on 4 KiB
    /// pages), so every flavor refuses an over-long key the same way, before any I/O.
    pub(crate) fn with_flavor(mut limits: Limits, flavor: StoreFlavor) -> Store {
        if let StoreFlavor::Local(s) = &flavor {
            limits.max_key_len = limits.max_key_len.min(s.max_key_len());
        }
        Store { limits, flavor }
    }

    /// `"embedded"`, `"local"` or `"redis"`.
    pub fn backend_name(&self) -> &'static str {
        self.flavor.name()
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    #[inline]
    fn check_key(&self, key: &str) -> Result<()> {
        if key.len() > self.limits.max_key_len {
            return Err(Error::InvalidKey {
                key: shorten(key),
                reason: format!(
                    "key is {} bytes, over the limit of {} bytes",
                    key.len(),
                    self.limits.max_key_len
                ),
            });
        }
        Ok(())
    }

    #[inline]
    fn check_value(&self, key: &str, len: usize) -> Result<()> {
        if len > self.limits.max_value_len {
            return Err(Error::ValueTooLarge {
                key: shorten(key),
                len,
                max: self.limits.max_value_len,
            });
        }
        Ok(())
    }

    /// The value of `key`, or `None` when it is missing or expired.
    ///
    /// **Locking behaviour:** embedded: shared lock on the key's shard.
    #[inline]
    pub fn get(&self, key: &str) -> Result<Option<Value>> {
        self.check_key(key)?;
        match &self.flavor {
            StoreFlavor::Embedded(s) => Ok(s.get(key)),
            StoreFlavor::Local(s) => s.get(key),
            StoreFlavor::Redis(s) => s.get(key),
        }
    }

    /// Sets `key` to `value`, with an optional time to live (replacing any previous TTL).
    ///
    /// **Locking behaviour:** embedded: exclusive lock on the key's shard.
    #[inline]
    pub fn set(&self, key: &str, value: Value, ttl: Option<Duration>) -> Result<()> {
        self.check_key(key)?;
        self.check_value(key, value.encoded_len())?;
        match &self.flavor {
            StoreFlavor::Embedded(s) => {
                s.set(key, value, ttl);
                Ok(())
            }
            StoreFlavor::Local(s) => s.set_items(&[(key, &value)], ttl, false).map(|_| ()),
            StoreFlavor::Redis(s) => s.set_items(&[(key, &value)], ttl, false).map(|_| ()),
        }
    }

    /// Sets `key` from MessagePack bytes (checked to be one well-formed value).
    ///
    /// **Locking behaviour:** as [`Store::set`]; the bytes are checked before the lock is taken.
    pub fn set_msgpack(&self, key: &str, bytes: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.check_key(key)?;
        self.check_value(key, bytes.len())?;
        self.set(key, Value::from_msgpack(bytes, key)?, ttl)
    }

    /// Sets `key` only when it is missing (or expired); returns whether it was set.
    ///
    /// **Locking behaviour:** embedded: exclusive lock on the key's shard.
    pub fn set_if_absent(&self, key: &str, value: Value, ttl: Option<Duration>) -> Result<bool> {
        self.check_key(key)?;
        self.check_value(key, value.encoded_len())?;
        match &self.flavor {
            StoreFlavor::Embedded(s) => Ok(s.set_if_absent(key, value, ttl)),
            StoreFlavor::Local(s) => s.set_items(&[(key, &value)], ttl, true).map(|n| n == 1),
            StoreFlavor::Redis(s) => s.set_items(&[(key, &value)], ttl, true).map(|n| n == 1),
        }
    }

    /// Removes `key`; returns whether a live key was there. A missing key is fine.
    ///
    /// **Locking behaviour:** embedded: exclusive lock on the key's shard.
    pub fn delete(&self, key: &str) -> Result<bool> {
        self.check_key(key)?;
        match &self.flavor {
            StoreFlavor::Embedded(s) => Ok(s.delete(key)),
            StoreFlavor::Local(s) => s.delete(key),
            StoreFlavor::Redis(s) => s.delete(key),
        }
    }

    /// Adds `delta` to the counter at `key` and returns the new value. A missing key counts from 0.
    ///
    /// A value that is not an integer is [`Error::NotAnInteger`] and a result outside `i64` is
    /// [`Error::Overflow`]; in both cases the value is left unchanged. The key keeps its TTL.
    ///
    /// **Locking behaviour:** embedded: exclusive lock on the key's shard; atomic for the key on
    /// every backend.
    #[inline]
    pub fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.check_key(key)?;
        match &self.flavor {
            StoreFlavor::Embedded(s) => s.incr(key, delta),
            StoreFlavor::Local(s) => s.incr(key, delta),
            StoreFlavor::Redis(s) => s.incr(key, delta),
        }
    }

    /// Values of several keys, in order; missing keys give `None`.
    ///
    /// **Locking behaviour:** embedded: one shared shard lock at a time, not a snapshot across
    /// keys; `local://`: one read transaction (a snapshot); Redis: one `MGET`.
    pub fn get_many<S: AsRef<str>>(&self, keys: &[S]) -> Result<Vec<Option<Value>>> {
        let names: Vec<&str> = keys.iter().map(|k| k.as_ref()).collect();
        for k in &names {
            self.check_key(k)?;
        }
        match &self.flavor {
            StoreFlavor::Embedded(s) => Ok(names.iter().map(|k| s.get(k)).collect()),
            StoreFlavor::Local(s) => s.get_many(&names),
            StoreFlavor::Redis(s) => s.get_many(&names),
        }
    }

    /// Sets several keys. Every key and value is checked first, so on error nothing is written.
    ///
    /// **Locking behaviour:** embedded: one exclusive shard lock at a time (each key is atomic, the
    /// batch is not a transaction); `local://` and Redis: one transaction, all or nothing.
    pub fn set_many<S: AsRef<str>>(
        &self,
        items: Vec<(S, Value)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        for (k, v) in &items {
            self.check_key(k.as_ref())?;
            self.check_value(k.as_ref(), v.encoded_len())?;
        }
        match &self.flavor {
            StoreFlavor::Embedded(s) => {
                for (k, v) in items {
                    s.set(k.as_ref(), v, ttl);
                }
                Ok(())
            }
            StoreFlavor::Local(s) => {
                let pairs: Vec<(&str, &Value)> =
                    items.iter().map(|(k, v)| (k.as_ref(), v)).collect();
                s.set_items(&pairs, ttl, false).map(|_| ())
            }
            StoreFlavor::Redis(s) => {
                let pairs: Vec<(&str, &Value)> =
                    items.iter().map(|(k, v)| (k.as_ref(), v)).collect();
                s.set_items(&pairs, ttl, false).map(|_| ())
            }
        }
    }

    /// Live keys starting with `prefix` (all keys for `""`), sorted.
    ///
    /// Cost grows with the number of matches, not with the size of the store.
    ///
    /// **Locking behaviour:** embedded: one shared shard lock at a time; keys written during the
    /// scan may or may not appear.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.check_key(prefix)?;
        match &self.flavor {
            StoreFlavor::Embedded(s) => Ok(s.keys(prefix)),
            StoreFlavor::Local(s) => s.keys(prefix),
            StoreFlavor::Redis(s) => s.keys(prefix),
        }
    }

    /// Sets or replaces the TTL of an existing key; returns whether the key exists.
    ///
    /// **Locking behaviour:** embedded: exclusive lock on the key's shard.
    pub fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.check_key(key)?;
        match &self.flavor {
            StoreFlavor::Embedded(s) => Ok(s.expire(key, ttl)),
            StoreFlavor::Local(s) => s.expire(key, Some(ttl)),
            StoreFlavor::Redis(s) => s.expire(key, ttl),
        }
    }

    /// Removes the TTL of a key, so it never expires; returns whether the key exists.
    ///
    /// **Locking behaviour:** embedded: exclusive lock on the key's shard.
    pub fn persist(&self, key: &str) -> Result<bool> {
        self.check_key(key)?;
        match &self.flavor {
            StoreFlavor::Embedded(s) => Ok(s.persist(key)),
            StoreFlavor::Local(s) => s.expire(key, None),
            StoreFlavor::Redis(s) => s.persist(key),
        }
    }

    /// The remaining lifetime of a key.
    ///
    /// **Locking behaviour:** embedded: shared lock on the key's shard.
    pub fn ttl(&self, key: &str) -> Result<Ttl> {
        self.check_key(key)?;
        match &self.flavor {
            StoreFlavor::Embedded(s) => Ok(s.ttl(key)),
            StoreFlavor::Local(s) => s.ttl(key),
            StoreFlavor::Redis(s) => s.ttl(key),
        }
    }

    /// Number of live keys (expired keys not yet reclaimed are not counted), on every backend;
    /// 0 when the backend cannot be reached (use [`Store::try_len`] to see the error).
    pub fn len(&self) -> usize {
        self.try_len().unwrap_or(0)
    }

    /// Number of live keys, or the backend's error (the embedded store never fails).
    pub fn try_len(&self) -> Result<usize> {
        match &self.flavor {
            StoreFlavor::Embedded(s) => Ok(s.len()),
            StoreFlavor::Local(s) => s.len(),
            StoreFlavor::Redis(s) => s.len(),
        }
    }

    /// Whether the store holds no live key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of live keys: the same as [`Store::len`] (kept for callers of earlier versions).
    pub fn live_len(&self) -> usize {
        self.len()
    }

    /// Bytes held by values (keys and bookkeeping excluded; expired values not yet reclaimed
    /// included). On Redis and `local://` this reads every value's length (a cost that grows with
    /// the store), and is 0 when the backend cannot be reached.
    pub fn value_bytes(&self) -> usize {
        match &self.flavor {
            StoreFlavor::Embedded(s) => s.value_bytes(),
            StoreFlavor::Local(s) => s.value_bytes().unwrap_or(0),
            StoreFlavor::Redis(s) => s.value_bytes().unwrap_or(0),
        }
    }

    /// Removes every key. A backend failure is ignored here (use [`Store::try_clear`]).
    ///
    /// **Locking behaviour:** embedded: one exclusive shard lock at a time.
    pub fn clear(&self) {
        let _ = self.try_clear();
    }

    /// Removes every key, or returns the backend's error (the embedded store never fails).
    pub fn try_clear(&self) -> Result<()> {
        match &self.flavor {
            StoreFlavor::Embedded(s) => {
                s.clear();
                Ok(())
            }
            StoreFlavor::Local(s) => s.clear(),
            StoreFlavor::Redis(s) => s.clear(),
        }
    }

    /// Reclaims expired keys now; returns how many were removed. Every backend also does this on
    /// its own (a reaper thread, writes, Redis itself); a store on a manual clock has no reaper
    /// thread, so its owner calls this.
    pub fn reap_expired(&self) -> usize {
        match &self.flavor {
            StoreFlavor::Embedded(s) => s.reap_expired(),
            StoreFlavor::Local(s) => s.reap_expired().unwrap_or(0),
            StoreFlavor::Redis(s) => s.reap().map_or(0, |(n, _)| n),
        }
    }
}
