//! The `local://` store: keys in LMDB's `kv` database, TTLs in `exp` (see the module docs).
//!
//! Every call is one LMDB transaction: reads a read transaction (no lock, a snapshot), writes one
//! short write transaction (LMDB's single writer lock, a robust mutex), never held across user
//! code or an `await`. A batch (`set_items` with several keys) is one transaction: all or nothing,
//! even when the process is killed in the middle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heed::RwTxn;

use super::{unix_ms, Shared};
use crate::backend::{ChangeKind, Ttl};
use crate::error::{shorten, Error, Result};
use crate::value::{decode_int, encode_int, Value};

/// Most expired keys one write reclaims in passing.
const REAP_BATCH: usize = 256;

/// The store half of a `local://` engine.
pub(crate) struct LocalStore {
    shared: Arc<Shared>,
    /// When a write last reaped (Unix ms), so writes reap at most every 100 ms.
    last_reap: AtomicU64,
}

/// The changes of one write transaction, kept only when some process watches: they go into the
/// bus log in the same transaction (so every watcher sees them in commit order), and the
/// watching processes are rung after the commit.
struct Changes {
    on: bool,
    events: Vec<(ChangeKind, String, Vec<u8>)>,
}

impl Changes {
    fn note(&mut self, kind: ChangeKind, key: &str, value: impl FnOnce() -> Vec<u8>) {
        if self.on {
            self.events.push((kind, key.to_owned(), value()));
        }
    }
}

/// A stored record: deadline (Unix ms, 0 = none) and the value's MessagePack.
fn record(deadline: u64, value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.encoded_len());
    out.extend_from_slice(&deadline.to_be_bytes());
    value.write_msgpack(&mut out);
    out
}

/// [`record`] of a counter, on the stack: the record's bytes are `.0[..len]`.
fn int_record(deadline: u64, n: i64) -> ([u8; 8 + 9], usize) {
    let value = encode_int(n);
    let mut rec = [0u8; 8 + 9];
    rec[..8].copy_from_slice(&deadline.to_be_bytes());
    rec[8..8 + value.len()].copy_from_slice(&value);
    (rec, 8 + value.len())
}

fn deadline_of(rec: &[u8]) -> u64 {
    rec.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn live(rec: &[u8], now: u64) -> bool {
    let d = deadline_of(rec);
    d == 0 || d > now
}

/// The value of a record (written by us: trusted to be well-formed MessagePack).
fn value_of(rec: &[u8]) -> Value {
    let bytes = rec.get(8..).unwrap_or_default();
    match decode_int(bytes) {
        Some(i) => Value::Int(i),
        None => Value::Bytes(Arc::from(bytes)),
    }
}

fn exp_key(deadline: u64, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&deadline.to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

fn ttl_deadline(now: u64, ttl: Duration) -> u64 {
    let ms = u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX / 4)
        .max(1);
    now.saturating_add(ms).min(u64::MAX / 2)
}

impl LocalStore {
    pub(crate) fn new(shared: Arc<Shared>) -> LocalStore {
        LocalStore {
            shared,
            last_reap: AtomicU64::new(0),
        }
    }

    /// The longest key LMDB takes here (its page size sets it), less the 8 bytes of a deadline
    /// that the `exp` index puts in front of a key: the front enforces it with the other limits.
    pub(crate) fn max_key_len(&self) -> usize {
        self.shared
            .env()
            .map_or(0, |env| env.max_key_size().saturating_sub(8))
    }

    fn read<T>(&self, f: impl FnOnce(&heed::RoTxn<'_>, u64) -> heed::Result<T>) -> Result<T> {
        let env = self.shared.env()?;
        let rtxn = env.read_txn().map_err(|e| self.shared.error(e))?;
        f(&rtxn, unix_ms()).map_err(|e| self.shared.error(e))
    }

    /// Runs `f` in one write transaction and commits it; an error (ours or LMDB's) aborts it.
    /// When some process watches, the changes `f` notes go into the bus log in the same
    /// transaction, and the watching processes are rung after the commit.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut RwTxn<'_>, u64, &mut Changes) -> Result<T>,
    ) -> Result<T> {
        let env = self.shared.env()?;
        let mut wtxn = env.write_txn().map_err(self.h())?;
        let now = unix_ms();
        let mut changes = Changes {
            on: self.shared.watchers(&wtxn).map_err(self.h())? > 0,
            events: Vec::new(),
        };
        let out = f(&mut wtxn, now, &mut changes)?;
        if now.saturating_sub(self.last_reap.load(Ordering::Relaxed)) >= 100 {
            self.last_reap.store(now, Ordering::Relaxed);
            self.reap_in(&mut wtxn, now, REAP_BATCH, &mut changes)?;
        }
        let mut bells = super::Bells::new();
        if !changes.events.is_empty() {
            for (kind, key, value) in &changes.events {
                self.shared
                    .append(&mut wtxn, 0, *kind as u8, key, value)
                    .map_err(self.h())?;
            }
            bells = self.shared.wake_list(&wtxn, None, true).map_err(self.h())?;
        }
        wtxn.commit().map_err(self.h())?;
        self.shared.wake(&bells);
        Ok(out)
    }

    fn h(&self) -> impl Fn(heed::Error) -> Error + '_ {
        |e| self.shared.error(e)
    }

    /// The live record of `key` in a write transaction (an expired one is removed on the way).
    fn take_live(&self, wtxn: &mut RwTxn<'_>, key: &str, now: u64) -> Result<Option<Vec<u8>>> {
        let dbs = self.shared.dbs;
        let Some(rec) = dbs.kv.get(wtxn, key.as_bytes()).map_err(self.h())? else {
            return Ok(None);
        };
        let rec = rec.to_vec();
        if live(&rec, now) {
            return Ok(Some(rec));
        }
        self.remove_expired(wtxn, key, deadline_of(&rec))?;
        Ok(None)
    }

    /// Removes an expired key's record and its expiry entry.
    fn remove_expired(&self, wtxn: &mut RwTxn<'_>, key: &str, deadline: u64) -> Result<()> {
        let dbs = self.shared.dbs;
        dbs.kv.delete(wtxn, key.as_bytes()).map_err(self.h())?;
        dbs.exp
            .delete(wtxn, &exp_key(deadline, key))
            .map_err(self.h())?;
        Ok(())
    }

    fn put(&self, wtxn: &mut RwTxn<'_>, key: &str, old: Option<&[u8]>, rec: &[u8]) -> Result<()> {
        let dbs = self.shared.dbs;
        if let Some(old) = old {
            let d = deadline_of(old);
            if d != 0 && d != deadline_of(rec) {
                dbs.exp.delete(wtxn, &exp_key(d, key)).map_err(self.h())?;
            }
        }
        dbs.kv.put(wtxn, key.as_bytes(), rec).map_err(self.h())?;
        let d = deadline_of(rec);
        if d != 0 {
            dbs.exp.put(wtxn, &exp_key(d, key), &[]).map_err(self.h())?;
        }
        Ok(())
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<Value>> {
        let kv = self.shared.dbs.kv;
        self.read(|rtxn, now| {
            Ok(kv
                .get(rtxn, key.as_bytes())?
                .filter(|rec| live(rec, now))
                .map(value_of))
        })
    }

    pub(crate) fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Value>>> {
        let kv = self.shared.dbs.kv;
        self.read(|rtxn, now| {
            keys.iter()
                .map(|k| {
                    Ok(kv
                        .get(rtxn, k.as_bytes())?
                        .filter(|rec| live(rec, now))
                        .map(value_of))
                })
                .collect()
        })
    }

    /// Sets every item (one transaction); with `only_if_absent`, a live key is left alone.
    /// Returns how many keys were written.
    pub(crate) fn set_items(
        &self,
        items: &[(&str, &Value)],
        ttl: Option<Duration>,
        only_if_absent: bool,
    ) -> Result<usize> {
        self.write(|wtxn, now, changes| {
            let deadline = ttl.map_or(0, |t| ttl_deadline(now, t));
            let mut n = 0;
            for (key, value) in items {
                let old = self.take_live(wtxn, key, now)?;
                if only_if_absent && old.is_some() {
                    continue;
                }
                let rec = record(deadline, value);
                self.put(wtxn, key, old.as_deref(), &rec)?;
                changes.note(ChangeKind::Set, key, || rec[8..].to_vec());
                n += 1;
            }
            Ok(n)
        })
    }

    pub(crate) fn delete(&self, key: &str) -> Result<bool> {
        self.write(|wtxn, now, changes| {
            let Some(old) = self.take_live(wtxn, key, now)? else {
                return Ok(false);
            };
            changes.note(ChangeKind::Delete, key, Vec::new);
            let dbs = self.shared.dbs;
            dbs.kv.delete(wtxn, key.as_bytes()).map_err(self.h())?;
            let d = deadline_of(&old);
            if d != 0 {
                dbs.exp.delete(wtxn, &exp_key(d, key)).map_err(self.h())?;
            }
            Ok(true)
        })
    }

    pub(crate) fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.write(|wtxn, now, changes| {
            let dbs = self.shared.dbs;
            // The record is read where it lies in the map (no copy); a counter's is 9 to 17 bytes.
            let found = dbs
                .kv
                .get(wtxn, key.as_bytes())
                .map_err(self.h())?
                .map(|rec| {
                    let counter = decode_int(rec.get(8..).unwrap_or_default());
                    (deadline_of(rec), live(rec, now), counter)
                });
            let (deadline, new) = match found {
                Some((d, true, Some(cur))) => {
                    let new = cur
                        .checked_add(delta)
                        .ok_or_else(|| Error::Overflow { key: shorten(key) })?;
                    (d, new)
                }
                Some((_, true, None)) => return Err(Error::NotAnInteger { key: shorten(key) }),
                Some((d, false, _)) => {
                    // Expired: gone, and the counter starts again with no deadline.
                    self.remove_expired(wtxn, key, d)?;
                    (0, delta)
                }
                None => (0, delta),
            };
            // The deadline is unchanged, so its expiry entry (if any) stays as it is.
            let (rec, len) = int_record(deadline, new);
            let rec = &rec[..len];
            dbs.kv.put(wtxn, key.as_bytes(), rec).map_err(self.h())?;
            changes.note(ChangeKind::Incr, key, || rec[8..].to_vec());
            Ok(new)
        })
    }

    pub(crate) fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let kv = self.shared.dbs.kv;
        self.read(|rtxn, now| {
            let mut out = Vec::new();
            let mut take = |k: &[u8], rec: &[u8]| {
                if live(rec, now) {
                    // Keys are written from `&str` only.
                    out.push(String::from_utf8_lossy(k).into_owned());
                }
            };
            // LMDB refuses an empty key to seek to: "" walks everything.
            if prefix.is_empty() {
                for item in kv.iter(rtxn)? {
                    let (k, rec) = item?;
                    take(k, rec);
                }
            } else {
                for item in kv.prefix_iter(rtxn, prefix.as_bytes())? {
                    let (k, rec) = item?;
                    take(k, rec);
                }
            }
            Ok(out)
        })
    }

    /// Sets (`Some`) or removes (`None`) the TTL of a live key; returns whether it exists.
    pub(crate) fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.write(|wtxn, now, _| {
            let Some(old) = self.take_live(wtxn, key, now)? else {
                return Ok(false);
            };
            let deadline = ttl.map_or(0, |t| ttl_deadline(now, t));
            let mut rec = old.clone();
            rec[..8].copy_from_slice(&deadline.to_be_bytes());
            self.put(wtxn, key, Some(&old), &rec)?;
            Ok(true)
        })
    }

    pub(crate) fn ttl(&self, key: &str) -> Result<Ttl> {
        let kv = self.shared.dbs.kv;
        self.read(|rtxn, now| {
            Ok(match kv.get(rtxn, key.as_bytes())?.map(deadline_of) {
                Some(0) => Ttl::Persistent,
                Some(d) if d > now => Ttl::Expires(Duration::from_millis(d - now)),
                _ => Ttl::Missing,
            })
        })
    }

    /// Live keys: all entries less the expired ones not yet reclaimed (found through `exp`, so
    /// the cost follows those, not the store).
    pub(crate) fn len(&self) -> Result<usize> {
        let dbs = self.shared.dbs;
        self.read(|rtxn, now| {
            let all = dbs.kv.len(rtxn)? as usize;
            let mut expired = 0;
            for item in dbs.exp.iter(rtxn)? {
                let (k, _) = item?;
                if deadline_of(k) > now {
                    break;
                }
                expired += 1;
            }
            Ok(all.saturating_sub(expired))
        })
    }

    pub(crate) fn value_bytes(&self) -> Result<usize> {
        let kv = self.shared.dbs.kv;
        self.read(|rtxn, _| {
            let mut n = 0;
            for item in kv.iter(rtxn)? {
                n += item?.1.len().saturating_sub(8);
            }
            Ok(n)
        })
    }

    pub(crate) fn clear(&self) -> Result<()> {
        self.write(|wtxn, _, changes| {
            let dbs = self.shared.dbs;
            dbs.kv.clear(wtxn).map_err(self.h())?;
            dbs.exp.clear(wtxn).map_err(self.h())?;
            changes.note(ChangeKind::Clear, "", Vec::new);
            Ok(())
        })
    }

    /// Reclaims every expired key now; returns how many.
    pub(crate) fn reap_expired(&self) -> Result<usize> {
        let mut total = 0;
        // Bounded: each round removes up to a batch, and stops when a batch is not full.
        loop {
            let n = self.write(|wtxn, now, changes| self.reap_in(wtxn, now, 4096, changes))?;
            total += n;
            if n < 4096 {
                return Ok(total);
            }
        }
    }

    fn reap_in(
        &self,
        wtxn: &mut RwTxn<'_>,
        now: u64,
        limit: usize,
        changes: &mut Changes,
    ) -> Result<usize> {
        let dbs = self.shared.dbs;
        let mut due: Vec<Vec<u8>> = Vec::new();
        for item in dbs.exp.iter(wtxn).map_err(self.h())? {
            let (k, _) = item.map_err(self.h())?;
            if deadline_of(k) > now || due.len() >= limit {
                break;
            }
            due.push(k.to_vec());
        }
        for k in &due {
            dbs.exp.delete(wtxn, k).map_err(self.h())?;
            let key = &k[8..];
            // The key may have been set again since: only a record with this deadline goes.
            let same = dbs
                .kv
                .get(wtxn, key)
                .map_err(self.h())?
                .is_some_and(|rec| deadline_of(rec) == deadline_of(k));
            if same {
                dbs.kv.delete(wtxn, key).map_err(self.h())?;
                if let Ok(key) = std::str::from_utf8(key) {
                    changes.note(ChangeKind::Expire, key, Vec::new);
                }
            }
        }
        Ok(due.len())
    }
}
