//! The `local://` bus relay: a bounded log in LMDB and one Unix datagram doorbell per process.
//!
//! `publish` appends one entry (this relay's node id, the topic, the payload) to the `log`
//! database in one write transaction, which also reads the live members, and after the commit
//! sends each other member's doorbell a zero-byte datagram (non-blocking: a full doorbell queue
//! means a wake-up is already pending). LMDB serialises writers, so the log is one total order:
//! every process sees every publisher's messages in the order they were published.
//!
//! A process joins when its bus gets its first subscription: it binds `bells/<node>.sock` in the
//! directory, records itself in `members` with the log's current end as its cursor, and starts one
//! thread that blocks on the doorbell (no polling; it also wakes every [`TICK`] to notice a dropped
//! bus). Woken, it reads the log past its cursor in one read transaction and hands every entry of
//! another node to the process's own bus through the narrow [`Sink`] interface, which fans it out
//! to the matching local mailboxes (patterns, bounds and lag notices exactly as embedded).
//!
//! # Bounds and lagging
//!
//! The log keeps at most [`LOG_ENTRIES`] entries and [`LOG_BYTES`] bytes; the oldest go first. A
//! process whose cursor fell behind the oldest entry (it was stopped, or far too slow) gives every
//! subscribed mailbox a lag notice of the number of entries it missed, and carries on.
//!
//! # Processes dying
//!
//! A member that died (even by SIGKILL) keeps its entry and socket file until a publisher rings it
//! and gets `ECONNREFUSED` or `ENOENT`; that publisher removes the entry and the file and clears
//! stale reader slots. A publish that was killed before its commit never happened; after it, it
//! is in the log for everyone (the doorbells only wake readers early).

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::Shared;
use crate::backend::{new_node_id, Sink};
use crate::error::{Error, Result};

/// How often the relay thread wakes when no doorbell rings (to notice a dropped bus, and to read
/// the log even if a wake-up was lost).
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// Most entries the log keeps.
pub(crate) const LOG_ENTRIES: u64 = 65_536;
/// Most payload bytes the log keeps (topics and payloads).
pub(crate) const LOG_BYTES: u64 = 64 << 20;

const LOG_BYTES_KEY: &[u8] = b"log_bytes";

fn entry(node: u64, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + topic.len() + payload.len());
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn open_entry(bytes: &[u8]) -> Option<(u64, &str, &[u8])> {
    let node = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(bytes.get(12..12usize.checked_add(len)?)?).ok()?;
    Some((node, topic, &bytes[12 + len..]))
}

fn seq_of(k: &[u8]) -> u64 {
    k.try_into().map_or(0, u64::from_be_bytes)
}

/// The local half of a bus opened on `local://`.
pub(crate) struct LocalRelay {
    shared: Arc<Shared>,
    node: u64,
    /// The doorbell-ringing socket (unbound, non-blocking), made on first publish.
    ringer: Mutex<Option<UnixDatagram>>,
    /// Set once this process has joined (its thread runs).
    joined: Mutex<bool>,
    stop: Arc<AtomicU64>,
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
            ringer: Mutex::new(None),
            joined: Mutex::new(false),
            stop: Arc::new(AtomicU64::new(0)),
        }
    }

    fn bell_path(&self, node: u64) -> PathBuf {
        self.shared
            .settings
            .dir
            .join("bells")
            .join(format!("{node:016x}.sock"))
    }

    /// Appends the message to the log and rings every other member; returns how many other
    /// processes were rung.
    pub(crate) fn publish(&self, topic: &str, payload: &[u8]) -> Result<usize> {
        let env = self.shared.env()?;
        let dbs = self.shared.dbs;
        let h = |e| self.shared.error(e);
        let mut wtxn = env.write_txn().map_err(h)?;
        let seq = dbs
            .log
            .last(&wtxn)
            .map_err(h)?
            .map_or(0, |(k, _)| seq_of(k))
            + 1;
        let e = entry(self.node, topic, payload);
        let mut bytes = dbs
            .meta
            .get(&wtxn, LOG_BYTES_KEY)
            .map_err(h)?
            .map_or(0, seq_of)
            + e.len() as u64;
        dbs.log.put(&mut wtxn, &seq.to_be_bytes(), &e).map_err(h)?;
        // Trim the oldest entries past the bounds (never the one just written).
        let mut first = dbs
            .log
            .first(&wtxn)
            .map_err(h)?
            .map_or(seq, |(k, _)| seq_of(k));
        // Bounded: each turn removes one entry older than `seq`.
        while first < seq && (seq - first >= LOG_ENTRIES || bytes > LOG_BYTES) {
            let key = first.to_be_bytes();
            if let Some(old) = dbs.log.get(&wtxn, &key).map_err(h)? {
                bytes = bytes.saturating_sub(old.len() as u64);
            }
            dbs.log.delete(&mut wtxn, &key).map_err(h)?;
            first += 1;
        }
        dbs.meta
            .put(&mut wtxn, LOG_BYTES_KEY, &bytes.to_be_bytes())
            .map_err(h)?;
        let mut bells = Vec::new();
        for item in dbs.members.iter(&wtxn).map_err(h)? {
            let (k, _) = item.map_err(h)?;
            let node = seq_of(k);
            if node != self.node {
                bells.push(node);
            }
        }
        wtxn.commit().map_err(h)?;
        Ok(self.ring(&bells))
    }

    /// Rings each member's doorbell; removes the members found dead. Returns how many were rung.
    fn ring(&self, nodes: &[u64]) -> usize {
        if nodes.is_empty() {
            return 0;
        }
        let mut ringer = self.ringer.lock();
        if ringer.is_none() {
            let Ok(sock) = UnixDatagram::unbound() else {
                return 0;
            };
            if sock.set_nonblocking(true).is_err() {
                return 0;
            }
            *ringer = Some(sock);
        }
        let Some(sock) = ringer.as_ref() else {
            return 0;
        };
        let mut rung = 0;
        let mut dead = Vec::new();
        for &node in nodes {
            match sock.send_to(&[], self.bell_path(node)) {
                Ok(_) => rung += 1,
                // A full queue: a wake-up is already pending there.
                Err(e) if e.kind() == ErrorKind::WouldBlock => rung += 1,
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) =>
                {
                    dead.push(node)
                }
                Err(_) => {}
            }
        }
        drop(ringer);
        if !dead.is_empty() {
            self.remove_members(&dead);
        }
        rung
    }

    fn remove_members(&self, nodes: &[u64]) {
        let Ok(env) = self.shared.env() else { return };
        let dbs = self.shared.dbs;
        if let Ok(mut wtxn) = env.write_txn() {
            for node in nodes {
                let _ = dbs.members.delete(&mut wtxn, &node.to_be_bytes());
            }
            let _ = wtxn.commit();
        }
        for &node in nodes {
            let _ = std::fs::remove_file(self.bell_path(node));
        }
        // A process that died may have died inside a read transaction.
        let _ = env.clear_stale_readers();
    }

    /// Joins (first subscription): binds the doorbell, records this process as a member with the
    /// log's end as its cursor, and starts the relay thread. Later calls return at once.
    pub(crate) fn ensure_started(&self, sink: Weak<dyn Sink>) -> Result<()> {
        let mut joined = self.joined.lock();
        if *joined {
            return Ok(());
        }
        let path = self.bell_path(self.node);
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
                .map_or(0, |(k, _)| seq_of(k));
            let mut member = std::process::id().to_be_bytes().to_vec();
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
}

impl Reader {
    fn run(mut self) {
        let mut buf = [0u8; 16];
        // Bounded by the bus's life: every wait is at most TICK, followed by a liveness check.
        loop {
            let _ = self.bell.recv(&mut buf);
            // Drain the other rings that queued meanwhile: one read covers them all.
            let _ = self.bell.set_nonblocking(true);
            while self.bell.recv(&mut buf).is_ok() {}
            let _ = self.bell.set_nonblocking(false);
            if self.stop.load(Ordering::Acquire) != 0 {
                break;
            }
            let Some(sink) = self.sink.upgrade() else {
                break;
            };
            if self.drain(&*sink).is_err() {
                // The environment is gone (a fork in this process): nothing more to read.
                break;
            }
        }
        self.leave();
    }

    /// Reads the log past the cursor and hands other nodes' entries to the local bus.
    fn drain(&mut self, sink: &dyn Sink) -> Result<()> {
        let env = self.shared.env()?;
        let dbs = self.shared.dbs;
        let h = |e| self.shared.error(e);
        let rtxn = env.read_txn().map_err(h)?;
        let Some(first) = dbs.log.first(&rtxn).map_err(h)?.map(|(k, _)| seq_of(k)) else {
            return Ok(());
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
        for item in dbs.log.range(&rtxn, &range).map_err(h)? {
            let (k, v) = item.map_err(h)?;
            self.cursor = seq_of(k);
            if let Some((node, topic, payload)) = open_entry(v) {
                if node != self.node {
                    sink.deliver(topic, payload);
                }
            }
        }
        Ok(())
    }

    fn leave(&self) {
        if let Ok(env) = self.shared.env() {
            if let Ok(mut wtxn) = env.write_txn() {
                let _ = self
                    .shared
                    .dbs
                    .members
                    .delete(&mut wtxn, &self.node.to_be_bytes());
                let _ = wtxn.commit();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let e = entry(7, "room:a", b"\x01\x02");
        assert_eq!(open_entry(&e), Some((7, "room:a", &b"\x01\x02"[..])));
        assert_eq!(open_entry(&e[..10]), None);
    }
}
