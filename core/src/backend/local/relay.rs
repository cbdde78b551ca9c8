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
//! # Reading in the consumer's own thread
//!
//! Through the relay thread each hop costs two wake-ups: the doorbell wakes the relay thread,
//! whose deliveries then wake the consumer. So consumers that wait read the log themselves:
//!
//! - an event loop (the Python asyncio hub) watches the doorbell ([`LocalRelay::doorbell_fd`]) and,
//!   when it rings, reads the log in its own thread ([`LocalRelay::pump`]);
//! - the first thread of a process that blocks in a mailbox's `recv` *leads* ([`LocalRelay::lead`]):
//!   it waits on its mailbox's descriptor and the doorbell at once and reads the log when the
//!   doorbell rings, delivering to every local mailbox. Other threads that block meanwhile wait
//!   on their mailbox as before (the leader's reads serve them); an idle server's wait can be
//!   marked background (`Mailbox::recv_timeout_background`) so that it never leads.
//!
//! While someone reads for the process, the relay thread stays off the doorbell (it waits on a
//! condition variable): a datagram wakes every thread that polls its socket, and on two cores the
//! second wake-up costs the writer and the reader about as much as it saves. It watches the
//! doorbell again (giving a reader [`PUMP_GRACE`] to go first) whenever somebody else may need it:
//! a thread blocked in `recv` with no leader ([`LocalRelay::blocking`]; a leader leaving tells it
//! at once), or a mailbox descriptor handed out to be polled from any thread
//! ([`LocalRelay::external_poller`]). After a leader leaves and nobody else waits, the relay
//! thread stays off the doorbell until a whole [`TICK`] passes without a read (the leader usually
//! comes back to `recv` at once): a message for a mailbox that nobody waits on, read without
//! waiting, may then be up to one TICK late. A ring nobody read for a whole TICK (a stuck event
//! loop) is read by the relay thread. Reads take one lock, so each entry is delivered once, in
//! order; whoever reads last marks the process asleep after checking the log's end, as below,
//! and a pump that keeps finding more rings this process's own doorbell rather than loop in its
//! caller's thread.
//!
//! Measured here (p50 publish -> receive at one message every 2 ms): an asyncio subscriber
//! 107-114 µs with the relay thread in between, 97-114 µs with it and the loop both on the
//! doorbell, 58-68 µs with the loop alone; a thread blocked in `recv` 61-67 µs through the relay
//! thread, 26-32 µs leading.
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

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{be_u64, open_log_entry, set_member_watching, Shared};
use crate::backend::{new_node_id, ChangeKind, Sink};
use crate::error::{Error, Result};

/// How often the relay thread wakes when no doorbell rings (to notice a dropped bus, and to read
/// the log even if a wake-up was lost), unless the URL says otherwise (`?tick_ms=`).
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
    /// The log reader and the doorbell, shared by the relay thread and [`LocalRelay::pump`]
    /// (set when this process joins).
    reading: OnceLock<(Arc<Mutex<LogReader>>, Arc<UnixDatagram>)>,
    /// Set once a consumer watches the doorbell ([`LocalRelay::doorbell_fd`]), and signalled by
    /// each [`LocalRelay::pump`]: the relay thread then gives the consumer a head start.
    pumper: Arc<Pumper>,
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
            reading: OnceLock::new(),
            pumper: Arc::new(Pumper::default()),
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
        bell.set_read_timeout(Some(self.shared.settings.tick))
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
        let bell = Arc::new(bell);
        let flag = self.shared.flag(self.node, true);
        let log = Arc::new(Mutex::new(LogReader {
            shared: self.shared.clone(),
            node: self.node,
            sink,
            cursor,
            flag: flag.clone(),
            pumps: 0,
            relay_waits: false,
        }));
        let _ = self.reading.set((log.clone(), bell.clone()));
        let reader = Reader {
            shared: self.shared.clone(),
            node: self.node,
            log,
            bell,
            path,
            stop: self.stop.clone(),
            watching: self.watching.clone(),
            store: super::store::LocalStore::new(self.shared.clone()),
            flag,
            pumper: self.pumper.clone(),
        };
        std::thread::Builder::new()
            .name("hornbeam-local-relay".into())
            .spawn(move || reader.run())
            .map_err(|e| Error::Backend(format!("cannot start the local relay thread: {e}")))?;
        *joined = true;
        Ok(())
    }
}

impl LocalRelay {
    /// A thread is about to block in a mailbox's `recv`: until [`LocalRelay::unblocked`], the
    /// relay thread watches the doorbell too (and serves it).
    pub(crate) fn blocking(&self) {
        if self.pumper.blocked.fetch_add(1, Ordering::AcqRel) == 0 {
            self.tell_relay_thread();
        }
    }

    /// The thread of [`LocalRelay::blocking`] returned.
    pub(crate) fn unblocked(&self) {
        self.pumper.blocked.fetch_sub(1, Ordering::AcqRel);
    }

    /// A mailbox's descriptor was handed out (it may be polled from any thread): the relay thread
    /// watches the doorbell from now on.
    pub(crate) fn external_poller(&self) {
        if !self.pumper.external.swap(true, Ordering::AcqRel) {
            self.tell_relay_thread();
        }
    }

    /// Makes a relay thread that waits without watching the doorbell look again. The lock orders
    /// this after its check (it then sees the change) or after it started waiting (it is woken).
    fn tell_relay_thread(&self) {
        if let Some((log, _)) = self.reading.get() {
            drop(log.lock());
            self.pumper.done.notify_all();
        }
    }

    /// Makes the calling thread, about to block in a mailbox's `recv`, the one that watches the
    /// doorbell and reads the log while it waits; `None` when another thread does already (or
    /// this process has not joined). Dropping the lead gives it up.
    pub(crate) fn lead(&self) -> Option<Lead<'_>> {
        let (_, bell) = self.reading.get()?;
        if self.pumper.leader.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.pumper.led.store(true, Ordering::Release);
        Some(Lead {
            relay: self,
            fd: bell.as_raw_fd(),
        })
    }

    /// The doorbell's descriptor once this process has joined: readable when a writer rang (for
    /// a consumer's own `poll`, followed by [`LocalRelay::pump`]). Owned by the relay.
    pub(crate) fn doorbell_fd(&self) -> Option<i32> {
        let fd = self.reading.get().map(|(_, bell)| bell.as_raw_fd());
        if fd.is_some() {
            self.pumper.watched.store(true, Ordering::Release);
        }
        fd
    }

    /// Reads the log past this process's cursor in the caller's thread and delivers it (after
    /// the doorbell rang), then marks the process asleep as the relay thread does; returns how
    /// many entries it read. Safe to call at any time, from any thread.
    pub(crate) fn pump(&self) -> usize {
        let Some((log, bell)) = self.reading.get() else {
            return 0;
        };
        take_rings(bell);
        let mut log = log.lock();
        let Some(sink) = log.sink.upgrade() else {
            return 0;
        };
        log.pumps += 1;
        let mut total = 0;
        // Bounded: a few turns, then the doorbell is left ringing for the next turn of whoever
        // waits on it (this caller's loop, or the relay thread) instead of holding this thread.
        let mut asleep = false;
        for _ in 0..PUMP_TURNS {
            match log.drain(&*sink) {
                Ok(n) => total += n,
                Err(_) => return total,
            }
            // An error (the environment is gone after a fork) ends the pump, as a sleep does.
            asleep = log.fall_asleep().unwrap_or(true);
            if asleep {
                break;
            }
        }
        let waits = log.relay_waits;
        drop(log);
        if waits {
            self.pumper.done.notify_all();
        }
        if !asleep {
            self.shared.ring(&[self.node]);
        }
        total
    }
}

/// How a consumer that watches the doorbell and the relay thread share the rings.
#[derive(Default)]
struct Pumper {
    /// Whether a consumer watches the doorbell (from then on, for the process's life).
    watched: AtomicBool,
    /// Threads blocked in a mailbox's `recv` now, not leading: the relay thread serves them
    /// unless a leader does.
    blocked: AtomicUsize,
    /// Whether a thread blocked in `recv` watches the doorbell and reads the log ([`Lead`]).
    leader: AtomicBool,
    /// Whether a thread led since the relay thread last went a whole TICK without a pump.
    led: AtomicBool,
    /// Whether a mailbox's descriptor was handed out (someone else may poll it, in a thread of
    /// its own): the relay thread then serves it, for the process's life.
    external: AtomicBool,
    /// Signalled after a pump the relay thread waits for, and when it should look again.
    done: parking_lot::Condvar,
}

impl Pumper {
    /// Whether the watching consumer is the only reader the doorbell needs now.
    fn pumps_alone(&self) -> bool {
        if self.external.load(Ordering::Acquire) {
            return false;
        }
        if self.leader.load(Ordering::Acquire) {
            return true;
        }
        // A thread that led recently (it comes back to `recv` soon) or an event loop reads the
        // rings, unless threads wait that only the relay thread would serve.
        (self.watched.load(Ordering::Acquire) || self.led.load(Ordering::Acquire))
            && self.blocked.load(Ordering::Acquire) == 0
    }

    /// Whether a consumer reads the log when the doorbell rings (so the relay thread, woken by
    /// the same ring, gives it a head start).
    fn someone_pumps(&self) -> bool {
        self.leader.load(Ordering::Acquire) || self.watched.load(Ordering::Acquire)
    }
}

/// A thread blocked in a mailbox's `recv` that watches the doorbell and reads the log itself
/// (at most one per process at a time): see "Reading in the consumer's own thread".
pub(crate) struct Lead<'a> {
    relay: &'a LocalRelay,
    fd: i32,
}

impl Lead<'_> {
    /// Waits up to `timeout` for `mailbox_fd` (the waiting mailbox's descriptor) or the doorbell;
    /// when the doorbell rang, reads the log and delivers, in this thread.
    pub(crate) fn wait(&self, mailbox_fd: i32, timeout: Duration) {
        if poll_in([mailbox_fd, self.fd], timeout)[1] {
            self.relay.pump();
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.relay.pumper.leader.store(false, Ordering::Release);
        // Threads still blocked need the relay thread now; anyone else (a mailbox read without
        // waiting) is served by the next waiter, a watching event loop, or the relay's TICK.
        if self.relay.pumper.blocked.load(Ordering::Acquire) > 0 {
            self.relay.tell_relay_thread();
        }
    }
}

/// How long the relay thread lets a ring wait for the consumer that watches the doorbell before
/// it reads the log itself (that consumer is busy): what a message for a thread blocked in
/// `recv` may wait longer, in a process whose event loop is busy.
const PUMP_GRACE: Duration = Duration::from_micros(300);

/// Waits up to `timeout` for the doorbell to become readable, without taking the ring (so a
/// consumer polling the same descriptor sees it too); whether it is.
fn wait_readable(bell: &UnixDatagram, timeout: Duration) -> bool {
    poll_in([bell.as_raw_fd()], timeout)[0]
}

/// Waits up to `timeout` (rounded up to whole milliseconds: a shorter wait would come back early
/// and spin) for any of `fds` to become readable; which are (or closed, or failed).
fn poll_in<const N: usize>(fds: [i32; N], timeout: Duration) -> [bool; N] {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = libc::c_int::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
    // SAFETY: N valid pollfds that live for the call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
    pfds.map(|p| n > 0 && p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
}

/// How many read-then-check turns one [`LocalRelay::pump`] takes before it leaves the rest to the
/// next wake-up.
const PUMP_TURNS: usize = 4;

/// Takes the queued rings off a doorbell without waiting (a bounded number: the queue is small
/// and one read of the log answers them all).
fn take_rings(bell: &UnixDatagram) {
    let mut buf = [0u8; 16];
    for _ in 0..1024 {
        // SAFETY: a valid descriptor and buffer; MSG_DONTWAIT makes this one call non-blocking
        // without changing the descriptor's mode, which the relay thread's blocking wait uses.
        let n = unsafe {
            libc::recv(
                bell.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break;
        }
    }
}

/// This process's place in the log: read by the relay thread and by [`LocalRelay::pump`], one
/// at a time.
struct LogReader {
    shared: Arc<Shared>,
    node: u64,
    sink: Weak<dyn Sink>,
    /// The last entry delivered.
    cursor: u64,
    /// This process's "asleep" flag (None if it could not be made: writers then always ring).
    flag: Option<Arc<super::flag::Flag>>,
    /// How many pumps ran (the relay thread waits for the next one).
    pumps: u64,
    /// Whether the relay thread waits for a pump (a pump then signals `Pumper::done`).
    relay_waits: bool,
}

/// The relay thread's state.
struct Reader {
    shared: Arc<Shared>,
    node: u64,
    log: Arc<Mutex<LogReader>>,
    bell: Arc<UnixDatagram>,
    path: PathBuf,
    stop: Arc<AtomicU64>,
    watching: Arc<AtomicBool>,
    /// For reclaiming expired keys while this process watches.
    store: super::store::LocalStore,
    /// The same flag as the [`LogReader`]'s.
    flag: Option<Arc<super::flag::Flag>>,
    pumper: Arc<Pumper>,
}

impl Reader {
    fn run(self) {
        let mut reaped = Instant::now();
        // Bounded by the bus's life: every wait is at most TICK, followed by a liveness check;
        // without a wait, each turn reads entries that were not there on the turn before.
        loop {
            if self.stop.load(Ordering::Acquire) != 0 {
                break;
            }
            let mut log = self.log.lock();
            let Some(sink) = log.sink.upgrade() else {
                break;
            };
            let read = match log.drain(&*sink) {
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
            match log.fall_asleep() {
                Ok(false) => continue, // more was written meanwhile: read it first
                Ok(true) => {}
                Err(_) => break,
            }
            if self.pumper.pumps_alone() {
                // Only the watching consumer waits on the doorbell (waking a second thread per
                // ring costs the writer and the reader a context switch each). At each TICK, or
                // when a thread starts blocking in `recv`, look again; a ring the consumer left
                // unread for a whole TICK (it is busy) is read here.
                let before = log.pumps;
                let timed_out = self
                    .pumper
                    .done
                    .wait_for(&mut log, self.shared.settings.tick)
                    .timed_out();
                if timed_out && log.pumps == before {
                    // A whole TICK without a pump: nobody leads any more.
                    self.pumper.led.store(false, Ordering::Release);
                    if wait_readable(&self.bell, Duration::ZERO) {
                        drop(log);
                        take_rings(&self.bell);
                    }
                }
                continue;
            }
            drop(log);
            if !wait_readable(&self.bell, self.shared.settings.tick) {
                continue; // the TICK: look anyway
            }
            if self.pumper.someone_pumps() || self.pumper.led.load(Ordering::Acquire) {
                // A consumer watches the doorbell too: let it read first, in its own thread (one
                // wake-up sooner for its messages); read here only if it does not in time.
                let mut log = self.log.lock();
                let before = log.pumps;
                if wait_readable(&self.bell, Duration::ZERO) {
                    log.relay_waits = true;
                    let _ = self.pumper.done.wait_for(&mut log, PUMP_GRACE);
                    log.relay_waits = false;
                }
                if log.pumps != before {
                    continue; // the pump read the log and marked the process asleep
                }
            } else if let Some(flag) = &self.flag {
                flag.set(false); // woken by a ring (a writer took the mark)
            }
            // Take the rings that queued meanwhile: one read of the log covers them all.
            take_rings(&self.bell);
        }
        self.leave();
    }

    fn leave(&self) {
        self.shared.remove_members(&[self.node]);
        let _ = std::fs::remove_file(&self.path);
    }
}

impl LogReader {
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
