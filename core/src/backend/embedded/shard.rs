//! One shard of the store: a hash table for point operations, an ordered index for prefix scans
//! and an expiry queue for TTLs, all behind the shard's lock (held by the caller).

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::keyhash::{hash_key, same_key};
use crate::value::Value;

/// Longest key an entry holds inline.
const INLINE: usize = 22;

/// A key as an entry of the hash table holds it: one of up to [`INLINE`] bytes sits in the entry
/// itself, so a lookup compares it without following a pointer (at 1,000,000 keys that pointer is
/// a cache miss on every lookup); a longer one shares the ordered index's allocation. The ordered
/// index and the expiry queue hold every key as an `Arc<str>`.
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl Key {
    fn new(key: &Arc<str>) -> Key {
        if key.len() > INLINE {
            return Key::Shared(key.clone());
        }
        let mut bytes = [0u8; INLINE];
        bytes[..key.len()].copy_from_slice(key.as_bytes());
        Key::Inline {
            len: key.len() as u8,
            bytes,
        }
    }

    #[inline(always)]
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Inline { len, bytes } => {
                // SAFETY: the first `len` bytes were copied whole from a `&str` in `Key::new`.
                unsafe { std::str::from_utf8_unchecked(&bytes[..*len as usize]) }
            }
            Key::Shared(k) => k,
        }
    }

    #[inline(always)]
    fn is(&self, key: &str) -> bool {
        same_key(self.as_str(), key)
    }
}

/// An entry of the hash table.
pub(crate) struct Entry {
    pub(crate) key: Key,
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
        self.table.find(hash, |e| e.key.is(key))
    }

    #[inline]
    pub(crate) fn find_mut(&mut self, hash: u64, key: &str) -> Option<&mut Entry> {
        self.table.find_mut(hash, |e| e.key.is(key))
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
        if let Some(e) = self.table.find_mut(hash, |e| e.key.is(key)) {
            let old_len = e.value.encoded_len();
            e.value = value;
            let old_exp = std::mem::replace(&mut e.expires_at, expires_at);
            self.value_bytes = self.value_bytes + new_len - old_len;
            self.retime(key, old_exp, expires_at);
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
                key: Key::new(&k),
                value,
                expires_at,
            },
            |e| hasher(e.key.as_str()),
        );
    }

    /// Moves a key of the shard in the expiry queue from `old` to `new` (0 = none).
    pub(crate) fn retime(&mut self, key: &str, old: u64, new: u64) {
        if old == new {
            return;
        }
        let Some(key) = self.index.get(key).cloned() else {
            debug_assert!(false, "a key of the table is in the index");
            return;
        };
        if old != 0 {
            self.expiries.remove(&(old, key.clone()));
        }
        if new != 0 {
            self.expiries.insert((new, key));
        }
    }

    /// Removes a key (live or expired); returns the entry.
    pub(crate) fn remove(&mut self, hash: u64, key: &str) -> Option<Entry> {
        let entry = match self.table.find_entry(hash, |e| e.key.is(key)) {
            Ok(occupied) => occupied.remove().0,
            Err(_) => return None,
        };
        let key = self.index.take(entry.key.as_str());
        if let (Some(key), true) = (key, entry.expires_at != 0) {
            self.expiries.remove(&(entry.expires_at, key));
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
                .find(hash_key(key), |e| e.key.is(key))
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
