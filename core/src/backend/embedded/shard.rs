//! One shard of the store: a hash table for point operations, an ordered index for prefix scans
//! and an expiry queue for TTLs, all behind the shard's lock (held by the caller).

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::keyhash::{hash_key, same_key};
use crate::value::Value;

/// An entry of the hash table.
pub(crate) struct Entry {
    pub(crate) key: Arc<str>,
    pub(crate) value: Value,
    /// Deadline in clock milliseconds; 0 means the key never expires.
    pub(crate) expires_at: u64,
}

impl Entry {
    #[inline]
    pub(crate) fn is_live(&self, now: impl FnOnce() -> u64) -> bool {
        self.expires_at == 0 || self.expires_at > now()
    }
}

/// The data of one shard. Every method expects the caller to hold the shard's lock (read for
/// `&self`, write for `&mut self`).
#[derive(Default)]
pub(crate) struct Shard {
    table: HashTable<Entry>,
    /// Every key of the shard, ordered, so a prefix scan seeks instead of scanning.
    index: BTreeSet<Arc<str>>,
    /// Keys with a deadline, ordered by deadline, so expired keys are found without a scan.
    expiries: BTreeSet<(u64, Arc<str>)>,
    /// Bytes held by values (keys excluded), for `memory()`.
    pub(crate) value_bytes: usize,
}

impl Shard {
    #[inline]
    pub(crate) fn find(&self, hash: u64, key: &str) -> Option<&Entry> {
        self.table.find(hash, |e| same_key(&e.key, key))
    }

    #[inline]
    pub(crate) fn find_mut(&mut self, hash: u64, key: &str) -> Option<&mut Entry> {
        self.table.find_mut(hash, |e| same_key(&e.key, key))
    }

    /// Finds a live entry for writing, removing it first when it has expired.
    #[inline]
    pub(crate) fn find_live_mut(&mut self, hash: u64, key: &str, now: u64) -> Option<&mut Entry> {
        let expired = match self.find(hash, key) {
            None => return None,
            Some(e) => !e.is_live(|| now),
        };
        if expired {
            self.remove(hash, key);
            return None;
        }
        self.find_mut(hash, key)
    }

    /// Inserts or replaces; returns the previous live value's presence.
    pub(crate) fn upsert(
        &mut self,
        hash: u64,
        hasher: impl Fn(&str) -> u64,
        key: &str,
        value: Value,
        expires_at: u64,
    ) {
        let new_len = value.encoded_len();
        if let Some(e) = self.table.find_mut(hash, |e| same_key(&e.key, key)) {
            let old_len = e.value.encoded_len();
            e.value = value;
            let old_exp = std::mem::replace(&mut e.expires_at, expires_at);
            let k = e.key.clone();
            self.value_bytes = self.value_bytes + new_len - old_len;
            self.retime(k, old_exp, expires_at);
            return;
        }
        let k: Arc<str> = Arc::from(key);
        self.index.insert(k.clone());
        if expires_at != 0 {
            self.expiries.insert((expires_at, k.clone()));
        }
        self.value_bytes += new_len;
        self.table.insert_unique(
            hash,
            Entry {
                key: k,
                value,
                expires_at,
            },
            |e| hasher(&e.key),
        );
    }

    /// Moves a key in the expiry queue from `old` to `new` (0 = none).
    pub(crate) fn retime(&mut self, key: Arc<str>, old: u64, new: u64) {
        if old == new {
            return;
        }
        if old != 0 {
            self.expiries.remove(&(old, key.clone()));
        }
        if new != 0 {
            self.expiries.insert((new, key));
        }
    }

    /// Removes a key (live or expired); returns the entry.
    pub(crate) fn remove(&mut self, hash: u64, key: &str) -> Option<Entry> {
        let entry = match self.table.find_entry(hash, |e| same_key(&e.key, key)) {
            Ok(occupied) => occupied.remove().0,
            Err(_) => return None,
        };
        self.index.remove(&entry.key);
        if entry.expires_at != 0 {
            self.expiries.remove(&(entry.expires_at, entry.key.clone()));
        }
        self.value_bytes -= entry.value.encoded_len();
        Some(entry)
    }

    /// Live keys starting with `prefix`, in order, appended to `out`.
    pub(crate) fn keys_with_prefix(&self, prefix: &str, now: u64, out: &mut Vec<Arc<str>>) {
        let range = self
            .index
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded));
        for key in range {
            if !key.starts_with(prefix) {
                break;
            }
            if self.expiries.is_empty() {
                out.push(key.clone());
                continue;
            }
            let live = self
                .table
                .find(hash_key(key), |e| Arc::ptr_eq(&e.key, key))
                .is_some_and(|e| e.is_live(|| now));
            if live {
                out.push(key.clone());
            }
        }
    }

    /// Removes up to `budget` expired keys; returns how many it removed.
    pub(crate) fn reap(
        &mut self,
        now: u64,
        budget: usize,
        on_removed: &mut dyn FnMut(&str),
    ) -> usize {
        let mut removed = 0;
        while removed < budget {
            let key = match self.expiries.first() {
                Some((at, key)) if *at <= now => key.clone(),
                _ => break,
            };
            self.remove(hash_key(&key), &key);
            on_removed(&key);
            removed += 1;
        }
        removed
    }

    /// The earliest deadline in the shard, if any.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.expiries.first().map(|(at, _)| *at)
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn clear(&mut self) {
        *self = Shard::default();
    }

    /// Number of entries whose deadline has passed but that are still held.
    pub(crate) fn expired_count(&self, now: u64) -> usize {
        self.expiries.range(..(now + 1, Arc::from(""))).count()
    }

    /// Size of the ordered index, for tests that check nothing is left behind.
    #[cfg(test)]
    pub(crate) fn index_len(&self) -> usize {
        self.index.len()
    }
}
