//! Watches: which mailboxes want the store's changes of which key prefixes.
//!
//! A change of key `k` goes to every mailbox watching a prefix of `k` (once per mailbox, however
//! many of its prefixes match). Lookup probes `k`'s prefixes only at the lengths some watch has,
//! so its cost follows the number of distinct prefix lengths, not the number of watches; with no
//! watch at all a change costs one atomic load.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::mailbox::{remove_subscriber, Shared};

#[derive(Default)]
struct Map {
    by_prefix: HashMap<Box<str>, Vec<Arc<Shared>>>,
    /// Prefix length -> how many prefixes of that length are watched.
    lengths: BTreeMap<usize, usize>,
}

/// The watch registry of one bus.
#[derive(Default)]
pub(crate) struct Watches {
    count: AtomicUsize,
    map: RwLock<Map>,
}

impl Watches {
    /// Whether anything is watched (one atomic load).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) != 0
    }

    /// Adds a watch; false when the mailbox already watched that prefix.
    pub(crate) fn add(&self, prefix: &str, shared: &Arc<Shared>) -> bool {
        let mut map = self.map.write();
        let list = map.by_prefix.entry(prefix.into()).or_default();
        if list.iter().any(|s| s.id == shared.id) {
            return false;
        }
        let first = list.is_empty();
        list.push(shared.clone());
        if first {
            *map.lengths.entry(prefix.len()).or_default() += 1;
        }
        self.count.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Removes a watch; false when it was not there.
    pub(crate) fn remove(&self, prefix: &str, id: u64) -> bool {
        let mut map = self.map.write();
        let Some(list) = map.by_prefix.get_mut(prefix) else {
            return false;
        };
        if !remove_subscriber(list, id) {
            return false;
        }
        if list.is_empty() {
            map.by_prefix.remove(prefix);
            if let Some(n) = map.lengths.get_mut(&prefix.len()) {
                *n -= 1;
                if *n == 0 {
                    map.lengths.remove(&prefix.len());
                }
            }
        }
        self.count.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// Calls `f` once for each mailbox watching a prefix of `key` (every watcher when `all`).
    pub(crate) fn matching(&self, key: &str, all: bool, mut f: impl FnMut(&Arc<Shared>)) {
        let map = self.map.read();
        let mut found: Vec<&Arc<Shared>> = Vec::new();
        if all {
            found.extend(map.by_prefix.values().flatten());
        } else {
            for &len in map.lengths.range(..=key.len()).map(|(l, _)| l) {
                if !key.is_char_boundary(len) {
                    continue;
                }
                if let Some(list) = map.by_prefix.get(&key[..len]) {
                    found.extend(list.iter());
                }
            }
        }
        if found.len() > 1 {
            found.sort_unstable_by_key(|s| s.id);
            found.dedup_by_key(|s| s.id);
        }
        for s in found {
            f(s);
        }
    }
}
