//! The `local://` bus relay: a bounded log in LMDB and one Unix datagram doorbell per process.
//!
//! `publish` appends one entry (this relay's node id, the topic, the payload) to the `log`
//! database in one write transaction, which also takes out of `asleep` the other members that
//! wait on their doorbell, and after the commit sends each of those a zero-byte datagram
//! (non-blocking: a full doorbell queue means a wake-up is already pending). LMDB serialises
//! writers, so the log is one total order: every process sees every publisher's messages in the
//! order they were published.
//!
//! A process joins when its bus gets its first subscription: it binds `bells/<node>.sock` in the
//! directory, records itself in `members` with the log's current end as its cursor, and starts one
//! thread that reads the log past its cursor in one read transaction and hands every entry of
//! another node to the process's own bus through the narrow [`Sink`] interface, which fans it out
//! to the matching local mailboxes (patterns, bounds and lag notices exactly as embedded).
//!
//! # Sleeping and ringing
//!
//! Having read everything, the thread marks itself in `asleep` in a write transaction that first
//! checks the log's end: if something was appended meanwhile it reads again instead. Then it
//! blocks on its doorbell (no polling; it also wakes every [`TICK`] to notice a dropped bus). A
//! writer that commits after the mark finds it, removes it in its own transaction and rings; a
//! writer that committed before is seen by the check. So no wake-up is lost, and a burst of
//! publishes rings a reader only when it has caught up, not once per message. (Spinning a while
//! before sleeping, to be found awake more often, was measured and made writers slower: the
//! spinning core's reads of the map compete with the writer.)
//!
//! # Bounds and lagging
//!
//! The log keeps at most [`super::LOG_ENTRIES`] entries and [`super::LOG_BYTES`] bytes; the oldest go first. A
//! process whose cursor fell behind the oldest entry (it was stopped, or far too slow) gives every
//! subscribed mailbox a lag notice of the number of entries it missed, and carries on.
//!
//! # Processes dying
//!
//! A member that died (even by SIGKILL) keeps its entry and socket file until a publisher finds
//! it gone: by ringing it (`ECONNREFUSED` or `ENOENT`) when it was asleep, or, when it was not,
//! because its process no longer exists (`kill(pid, 0)`). That publisher removes the entry, the
//! mark and the file and clears stale reader slots. A publish that was killed before its commit
//! never happened; after it, it is in the log for everyone (the doorbells only wake readers
//! early; a ring lost with a writer killed between its commit and its ring is made up by the
//! reader's next [`TICK`]).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{be_u64, open_log_entry, set_member_watching, Shared};
use crate::backend::{new_node_id, ChangeKind, Sink};
use crate::error::{Error, Result};

/// How often the relay thread wakes when no doorbell rings (to notice a dropped bus, and to read
/// the log even if a wake-up was lost).
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// How often a watching process reclaims expired keys (expiries become events even when nobody
/// writes).
const REAP_EVERY: Duration = Duration::from_secs(1);

/// The local half of a bus opened on `local://`.
pub(crate) struct LocalRelay {
    shared: Arc<Shared>,
    node: u64,
    /// Set once this process has joined (its thread runs).
    joined: Mutex<bool>,
    stop: Arc<AtomicU64>,
    /// Whether this process watches store changes (its relay thread then reaps expired keys).
    watching: Arc<AtomicBool>,
}

impl std::fmt::Debug for LocalRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRelay")
            .field("dir", &self.shared.settings.dir)
            .field("node", &self.node)
            .finish()
    }
}

impl Drop for LocalRelay {
    fn drop(&mut self) {
        self.stop.store(1, Ordering::Release);
    }
}

impl LocalRelay {
    pub(crate) fn new(shared: Arc<Shared>) -> LocalRelay {
        LocalRelay {
            shared,
            node: new_node_id(),
            joined: Mutex::new(false),
            stop: Arc::new(AtomicU64::new(0)),
            watching: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Appends the message to the log and rings the other members that wait on their doorbell
    /// (the others are reading the log already); returns how many other processes it reaches.
    pub(crate) fn publish(&self, topic: &str, payload: &[u8]) -> Result<usize> {
        let env = self.shared.env()?;
        let h = |e| self.shared.error(e);
        let mut wtxn = env.write_txn().map_err(h)?;
        self.shared
            .append(&mut wtxn, self.node, 0, topic, payload)
            .map_err(h)?;
        let bells = self
            .shared
            .wake_list(&wtxn, Some(self.node), false)
            .map_err(h)?;
        wtxn.commit().map_err(h)?;
        Ok(self.shared.wake(&bells))
    }

    /// Records whether this process watches store changes (it joins first if needed).
    pub(crate) fn set_watching(&self, on: bool) -> Result<()> {
        if !*self.joined.lock() {
            return Err(Error::Backend(String::from(
                "local: the relay must be started before watching",
            )));
        }
        set_member_watching(&self.shared, self.node, on)?;
        self.watching.store(on, Ordering::Release);
        Ok(())
    }

    /// Joins (first subscription): binds the doorbell, records this process as a member with the
    /// log's end as its cursor, and starts the relay thread. Later calls return at once.
    pub(crate) fn ensure_started(&self, sink: Weak<dyn Sink>) -> Result<()> {
        let mut joined = self.joined.lock();
        if *joined {
            return Ok(());
        }
        let path = self.shared.bell_path(self.node);
        let _ = std::fs::remove_file(&path);
        let bell = UnixDatagram::bind(&path).map_err(|e| {
            Error::Backend(format!(
                "local: cannot bind the doorbell {}: {e}",
                path.display()
            ))
        })?;
        bell.set_read_timeout(Some(TICK))
            .map_err(|e| Error::Backend(format!("local: doorbell timeout: {e}")))?;
        let env = self.shared.env()?;
        let dbs = self.shared.dbs;
        let h = |e| self.shared.error(e);
        let cursor = {
            let mut wtxn = env.write_txn().map_err(h)?;
            let cursor = dbs
                .log
                .last(&wtxn)
                .map_err(h)?
                .map_or(0, |(k, _)| be_u64(k));
            // pid, watching flag, doorbell path
            let mut member = std::process::id().to_be_bytes().to_vec();
            member.push(0);
            member.extend_from_slice(path.as_os_str().as_encoded_bytes());
            dbs.members
                .put(&mut wtxn, &self.node.to_be_bytes(), &member)
                .map_err(h)?;
            wtxn.commit().map_err(h)?;
            cursor
        };
        let reader = Reader {
            shared: self.shared.clone(),
            node: self.node,
            sink,
            bell,
            path,
            cursor,
            stop: self.stop.clone(),
            watching: self.watching.clone(),
            store: super::store::LocalStore::new(self.shared.clone()),
            flag: self.shared.flag(self.node, true),
        };
        std::thread::Builder::new()
            .name("hornbeam-local-relay".into())
            .spawn(move || reader.run())
            .map_err(|e| Error::Backend(format!("cannot start the local relay thread: {e}")))?;
        *joined = true;
        Ok(())
    }
}

/// The relay thread's state.
struct Reader {
    shared: Arc<Shared>,
    node: u64,
    sink: Weak<dyn Sink>,
    bell: UnixDatagram,
    path: PathBuf,
    cursor: u64,
    stop: Arc<AtomicU64>,
    watching: Arc<AtomicBool>,
    /// For reclaiming expired keys while this process watches.
    store: super::store::LocalStore,
    /// This process's "asleep" flag (None if it could not be made: writers then always ring).
    flag: Option<Arc<super::flag::Flag>>,
}

impl Reader {
    fn run(mut self) {
        let mut buf = [0u8; 16];
        let mut reaped = Instant::now();
        // Bounded by the bus's life: every wait is at most TICK, followed by a liveness check;
        // without a wait, each turn reads entries that were not there on the turn before.
        loop {
            if self.stop.load(Ordering::Acquire) != 0 {
                break;
            }
            let Some(sink) = self.sink.upgrade() else {
                break;
            };
            let read = match self.drain(&*sink) {
                Ok(n) => n,
                // The environment is gone (a fork in this process): nothing more to read.
                Err(_) => break,
            };
            drop(sink);
            if self.watching.load(Ordering::Acquire) && reaped.elapsed() >= REAP_EVERY {
                reaped = Instant::now();
                // Best effort; the events come back through the log at the next turn.
                let _ = self.store.reap_expired();
            }
            if read > 0 {
                continue; // writers are busy: look again before sleeping
            }
            match self.fall_asleep() {
                Ok(false) => continue, // more was written meanwhile: read it first
                Ok(true) => {}
                Err(_) => break,
            }
            let _ = self.bell.recv(&mut buf);
            if let Some(flag) = &self.flag {
                flag.set(false); // woken by a ring (a writer took the mark) or by the TICK
            }
            // Drain the other rings that queued meanwhile: one read covers them all.
            let _ = self.bell.set_nonblocking(true);
            while self.bell.recv(&mut buf).is_ok() {}
            let _ = self.bell.set_nonblocking(false);
        }
        self.leave();
    }

    /// Marks this process asleep (writers then ring its doorbell) unless the log has grown past
    /// the cursor. The mark comes first, then a `SeqCst` fence, then the look at the log's end; a
    /// writer commits, fences, then takes the mark. So either the writer sees the mark and rings,
    /// or this look sees the writer's entry (`Ok(false)`: read it). No wake-up is lost.
    fn fall_asleep(&self) -> Result<bool> {
        let Some(flag) = self.flag.as_ref() else {
            return Ok(true); // no flag: writers always ring (see `Shared::wake`)
        };
        flag.set(true);
        let env = self.shared.env()?;
        let h = |e| self.shared.error(e);
        let rtxn = env.read_txn().map_err(h)?;
        let last = self
            .shared
            .dbs
            .log
            .last(&rtxn)
            .map_err(h)?
            .map_or(0, |(k, _)| be_u64(k));
        if last > self.cursor {
            flag.set(false);
            return Ok(false);
        }
        Ok(true)
    }

    /// Reads the log past the cursor and hands other nodes' entries to the local bus; returns
    /// how many entries it read.
    fn drain(&mut self, sink: &dyn Sink) -> Result<usize> {
        let env = self.shared.env()?;
        let dbs = self.shared.dbs;
        let h = |e| self.shared.error(e);
        let rtxn = env.read_txn().map_err(h)?;
        let Some(first) = dbs.log.first(&rtxn).map_err(h)?.map(|(k, _)| be_u64(k)) else {
            return Ok(0);
        };
        if first > self.cursor + 1 {
            sink.note_gap(first - self.cursor - 1);
            self.cursor = first - 1;
        }
        let from = (self.cursor + 1).to_be_bytes();
        let range = (
            std::ops::Bound::Included(&from[..]),
            std::ops::Bound::<&[u8]>::Unbounded,
        );
        let mut read = 0;
        for item in dbs.log.range(&rtxn, &range).map_err(h)? {
            let (k, v) = item.map_err(h)?;
            read += 1;
            self.cursor = be_u64(k);
            match open_log_entry(v) {
                // This process's own messages were delivered locally by `publish`.
                Some((node, 0, topic, payload)) if node != self.node => {
                    sink.deliver(topic, payload);
                }
                // Changes come only through the log, this process's own too: one order per key.
                Some((_, kind, key, value)) => {
                    if let Some(kind) = ChangeKind::from_u8(kind) {
                        sink.changed(kind, key, value);
                    }
                }
                None => {}
            }
        }
        Ok(read)
    }

    fn leave(&self) {
        self.shared.remove_members(&[self.node]);
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{log_entry, open_log_entry};

    #[test]
    fn entries_round_trip() {
        let e = log_entry(7, 0, "room:a", b"\x01\x02");
        assert_eq!(open_log_entry(&e), Some((7, 0, "room:a", &b"\x01\x02"[..])));
        let e = log_entry(0, 3, "k", b"\x05");
        assert_eq!(open_log_entry(&e), Some((0, 3, "k", &b"\x05"[..])));
        assert_eq!(open_log_entry(&e[..10]), None);
    }
}
