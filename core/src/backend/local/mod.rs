//! The `local://` flavor: every process on one machine that opens the same directory shares one
//! store and one bus, with no server. LMDB (through `heed`) holds both.
//!
//! # Why LMDB, and this design
//!
//! LMDB is a crash-safe, multi-process B+tree in a memory map: readers take no lock and see a
//! snapshot; one writer at a time holds a robust mutex, so a process killed inside a write
//! transaction leaves no lock behind and its uncommitted writes vanish (the next writer recovers
//! the mutex). Measured here through py-lmdb on tmpfs: get 0.36 µs, put 0.73 µs, read-modify-write
//! 1.1 µs (`../shared/research/local-backend.md`). A leader process serving the others over a
//! socket costs a round trip per call (~50 µs from Python) and must fail over; SQLite-based stores
//! serialise writers for milliseconds; raw shared memory with home-made locks hangs when a holder
//! dies. iceoryx2 was looked at for the bus: its 0.x API breaks every release, it has no async
//! API, and it preallocates worst-case shared memory (Docker's /dev/shm is 64 MB); the bus here
//! instead rides on the same LMDB file (a bounded log) plus one Unix datagram "doorbell" per
//! process, which asyncio can wait on through the mailboxes' descriptors.
//!
//! # Layout (one LMDB environment in the directory)
//!
//! - `kv`: key → 8-byte big-endian deadline (Unix ms, 0 = none) + the value's MessagePack.
//! - `exp`: deadline (8 bytes BE) + key → nothing: the keys with a TTL in deadline order, so expired
//!   keys are found without a scan.
//! - `log`: sequence number (8 bytes BE) → node id, topic length, topic, payload: the bus's bounded
//!   log (see [`relay`]). `meta` holds the log's byte count; `members` the live processes' doorbells.
//!
//! Beside it, `bells/` holds each member's doorbell (`<node>.sock`) and its "asleep" flag
//! (`<node>.flag`, one word mapped shared, see [`flag`]): a writer rings only members that wait
//! on their doorbell, so a burst of publishes costs one datagram and one wake-up per reader, not
//! one per publish (see [`relay`]).
//!
//! # Durability
//!
//! By default (fast) writes go straight into the shared memory map (`MDB_WRITEMAP`) and commits
//! are not flushed to disk (`MDB_NOSYNC | MDB_NOMETASYNC`). Every commit is atomic and visible to
//! every process at once; a process that dies (even by SIGKILL, even inside a write) loses
//! nothing committed and leaves the file consistent; the data survives every process stopping
//! and starting again. A power loss or kernel crash, however, may lose the last commits *or
//! corrupt the file* (LMDB's documented trade of these flags): treat a disk directory as a cache
//! unless you open it with `?sync=1`, which writes each commit with write(2) and flushes it
//! (durable across power loss, at the cost of a disk flush per write). On tmpfs (`/dev/shm`,
//! `$XDG_RUNTIME_DIR`, the default directory) there is nothing to flush: the data lives as long
//! as the machine.
//!
//! # Bounds
//!
//! `?map_size=` (bytes, or with a `k`/`m`/`g` suffix; default 256 MiB) bounds the file: a full store
//! answers [`Error::Backend`] saying so, stays readable, and deletes still work. `?max_readers=`
//! (default 1022) bounds concurrent readers across processes; slots of dead processes are reclaimed
//! at open and whenever a dead process is found. `?tick_ms=` (default 250, from 10 to 60000) is
//! how often a relay thread looks at the log without a ring: the bound on how late a message can
//! be when a wake-up went missing (a writer killed between its commit and its ring) or when the
//! consumer that reads for the process is busy (see [`relay`]).
//!
//! # Fork
//!
//! An LMDB environment must not be used after `fork()`, and `heed` refuses to open one path twice
//! in a process. [`after_fork_in_child`] (called by [`crate::Engine::reset_global_after_fork`])
//! closes every environment the child inherited, without touching the parent's locks or reader
//! slots, so the child opens the directory afresh; handles from before the fork then fail with a
//! clear error instead of touching the parent's state.

pub(crate) mod flag;
pub(crate) mod relay;
pub(crate) mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;

use heed::types::Bytes;
use heed::RwTxn;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, WithoutTls};
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Default size of the memory map (the store's bound).
pub(crate) const DEFAULT_MAP_SIZE: usize = 256 << 20;
/// Default number of reader slots (LMDB's default is 126; gunicorn's recycled workers need more).
pub(crate) const DEFAULT_MAX_READERS: u32 = 1022;

/// Settings read from a `local://` URL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) dir: PathBuf,
    pub(crate) map_size: usize,
    pub(crate) max_readers: u32,
    pub(crate) sync: bool,
    /// How often a relay thread looks at the log when no doorbell rings (`?tick_ms=`).
    pub(crate) tick: std::time::Duration,
}

/// The per-user default directory of `local://` with no path: `$XDG_RUNTIME_DIR/hornbeam`, else
/// `/dev/shm/hornbeam-<uid>`, else the temporary directory's `hornbeam-<uid>`.
pub(crate) fn default_dir() -> PathBuf {
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&run).join("hornbeam");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.join(format!("hornbeam-{uid}"));
    }
    std::env::temp_dir().join(format!("hornbeam-{uid}"))
}

fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim().to_ascii_lowercase();
    let (num, mul) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1usize << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (&v[..], 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mul)
}

/// Reads `local:///abs/dir?map_size=1g&max_readers=2000&sync=1&tick_ms=250` (or `local://`
/// alone).
pub(crate) fn parse_url(url: &str) -> Result<Settings> {
    let bad = |why: String| Error::InvalidArgument(format!("{url:?}: {why}"));
    let rest = url
        .strip_prefix("local://")
        .ok_or_else(|| bad("a local URL starts with local://".into()))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let dir = if path.is_empty() {
        default_dir()
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        return Err(bad(format!(
            "the directory must be absolute (local:///abs/dir, three slashes), not {path:?}"
        )));
    };
    let mut s = Settings {
        dir,
        map_size: DEFAULT_MAP_SIZE,
        max_readers: DEFAULT_MAX_READERS,
        sync: false,
        tick: relay::TICK,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "map_size" => {
                s.map_size = parse_size(v)
                    .filter(|n| *n >= 1 << 20)
                    .ok_or_else(|| bad(format!("map_size={v:?}: a size of at least 1m")))?;
            }
            "max_readers" => {
                s.max_readers = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 8)
                    .ok_or_else(|| bad(format!("max_readers={v:?}: a number of at least 8")))?;
            }
            "sync" => s.sync = matches!(v, "1" | "true" | "yes"),
            "tick_ms" => {
                s.tick = v
                    .parse()
                    .ok()
                    .filter(|n| (10..=60_000).contains(n))
                    .map(std::time::Duration::from_millis)
                    .ok_or_else(|| bad(format!("tick_ms={v:?}: a number from 10 to 60000")))?;
            }
            _ => return Err(bad(format!("unknown parameter {k:?}"))),
        }
    }
    Ok(s)
}

/// Bumped by [`after_fork_in_child`]: an environment opened in an earlier generation belongs to
/// the parent process.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Environments open in this process, by directory: heed (and LMDB) allow one per path per
/// process, so every engine opened on the same directory shares it.
static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Shared>>>> = Mutex::new(None);

/// The databases of one directory.
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    pub(crate) kv: Database<'static, Bytes, Bytes>,
    pub(crate) exp: Database<'static, Bytes, Bytes>,
    pub(crate) log: Database<'static, Bytes, Bytes>,
    pub(crate) meta: Database<'static, Bytes, Bytes>,
    pub(crate) members: Database<'static, Bytes, Bytes>,
}

/// The members a write may have to wake, read in its transaction (see [`Shared::wake_list`]):
/// node id and process id of each.
pub(crate) type Bells = Vec<(u64, u32)>;

/// One open environment, shared by the store and the relay of every engine on the directory.
pub(crate) struct Shared {
    /// `None` once closed in a forked child.
    env: std::cell::UnsafeCell<Option<Env<WithoutTls>>>,
    pub(crate) dbs: Dbs,
    pub(crate) settings: Settings,
    generation: u64,
    /// The doorbell-ringing socket (unbound, non-blocking), made on first use.
    ringer: Mutex<Option<UnixDatagram>>,
    /// The members' "asleep" flags this process has mapped, by node id.
    flags: Mutex<HashMap<u64, Peer>>,
    /// This process's id (the engine is opened afresh after a fork).
    pid: u32,
}

// SAFETY: `env` is written only by `after_fork_in_child`, which runs in a child right after
// fork(), where this thread is the only one; everywhere else it is only read, and heed's `Env` is
// itself Send + Sync.
unsafe impl Sync for Shared {}
// SAFETY: as above; every field is Send.
unsafe impl Send for Shared {}

impl Shared {
    /// The environment, or an error when it belongs to the parent of a fork.
    #[inline]
    pub(crate) fn env(&self) -> Result<&Env<WithoutTls>> {
        if self.generation != GENERATION.load(Ordering::Acquire) {
            return Err(self.forked());
        }
        // SAFETY: see the `Sync` impl: no write happens while other threads can read.
        match unsafe { &*self.env.get() } {
            Some(env) => Ok(env),
            None => Err(self.forked()),
        }
    }

    fn forked(&self) -> Error {
        Error::Backend(format!(
            "local://{}: this engine was opened before fork(); open the engine again in the child",
            self.settings.dir.display()
        ))
    }

    /// The doorbell of process `node`.
    pub(crate) fn bell_path(&self, node: u64) -> PathBuf {
        self.settings
            .dir
            .join("bells")
            .join(format!("{node:016x}.sock"))
    }

    /// The "asleep" flag file of process `node`.
    pub(crate) fn flag_path(&self, node: u64) -> PathBuf {
        self.settings
            .dir
            .join("bells")
            .join(format!("{node:016x}.flag"))
    }

    /// Process `node`'s flag, mapped on first use (`create`: this process is `node`, joining).
    pub(crate) fn flag(&self, node: u64, create: bool) -> Option<Arc<flag::Flag>> {
        let mut flags = self.flags.lock();
        self.peer(&mut flags, node, create).map(|p| p.flag.clone())
    }

    fn peer<'a>(
        &self,
        flags: &'a mut HashMap<u64, Peer>,
        node: u64,
        create: bool,
    ) -> Option<&'a mut Peer> {
        match flags.entry(node) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let flag = Arc::new(flag::Flag::open(&self.flag_path(node), create)?);
                Some(e.insert(Peer {
                    flag,
                    checked: None,
                }))
            }
        }
    }

    /// Appends one entry to the bus log (in the caller's write transaction) and trims the oldest
    /// entries past the log's bounds. `kind` 0 is a published message, else a [`ChangeKind`].
    ///
    /// The log's first and last sequence numbers and its byte count live in one `meta` record,
    /// so an append is one read and one write of it, an append at the end of `log` (no search),
    /// and, once the log is full, the removal of its first entry through one cursor.
    pub(crate) fn append(
        &self,
        wtxn: &mut RwTxn<'_>,
        node: u64,
        kind: u8,
        topic: &str,
        payload: &[u8],
    ) -> heed::Result<()> {
        let dbs = self.dbs;
        let (mut first, last, bytes) = self.log_state(wtxn)?;
        let seq = last + 1;
        let e = log_entry(node, kind, topic, payload);
        let mut bytes = bytes + e.len() as u64;
        dbs.log
            .put_with_flags(wtxn, heed::PutFlags::APPEND, &seq.to_be_bytes(), &e)?;
        if first == 0 {
            first = seq;
        }
        if first < seq && (seq - first >= LOG_ENTRIES || bytes > LOG_BYTES) {
            let mut it = dbs.log.iter_mut(wtxn)?;
            // Bounded: each turn removes one entry older than `seq` (never the one just written).
            while first < seq && (seq - first >= LOG_ENTRIES || bytes > LOG_BYTES) {
                let Some(item) = it.next() else { break };
                let (k, v) = item?;
                let (oldest, len) = (be_u64(k), v.len() as u64);
                // SAFETY: `k` and `v` (which borrow the page the entry is on) are not used after
                // the entry is deleted: only the copies above are.
                unsafe { it.del_current()? };
                bytes = bytes.saturating_sub(len);
                first = oldest + 1;
            }
        }
        let mut state = [0u8; 24];
        state[..8].copy_from_slice(&first.to_be_bytes());
        state[8..16].copy_from_slice(&seq.to_be_bytes());
        state[16..].copy_from_slice(&bytes.to_be_bytes());
        dbs.meta.put(wtxn, LOG_STATE_KEY, &state)
    }

    /// The log's first and last sequence numbers (0 when empty) and its byte count, from their
    /// `meta` record (made from the log itself in a directory that predates it).
    fn log_state(&self, txn: &heed::RoTxn<'_>) -> heed::Result<(u64, u64, u64)> {
        let dbs = self.dbs;
        if let Some(s) = dbs.meta.get(txn, LOG_STATE_KEY)?.filter(|s| s.len() == 24) {
            return Ok((be_u64(&s[..8]), be_u64(&s[8..16]), be_u64(&s[16..])));
        }
        let first = dbs.log.first(txn)?.map_or(0, |(k, _)| be_u64(k));
        let last = dbs.log.last(txn)?.map_or(0, |(k, _)| be_u64(k));
        let bytes = dbs.meta.get(txn, LOG_BYTES_KEY)?.map_or(0, be_u64);
        Ok((first, last, bytes))
    }

    /// How many processes watch store changes (writers then log their changes).
    pub(crate) fn watchers(&self, txn: &heed::RoTxn<'_>) -> heed::Result<u64> {
        Ok(self.dbs.meta.get(txn, WATCHERS_KEY)?.map_or(0, be_u64))
    }

    /// The members other than `except` (only the watching ones with `watching_only`) that a write
    /// in `txn` may have to wake; [`Shared::wake`] decides after the commit.
    pub(crate) fn wake_list(
        &self,
        txn: &heed::RoTxn<'_>,
        except: Option<u64>,
        watching_only: bool,
    ) -> heed::Result<Bells> {
        let mut out = Vec::new();
        for item in self.dbs.members.iter(txn)? {
            let (k, v) = item?;
            let node = be_u64(k);
            if Some(node) != except && (!watching_only || v.get(4) == Some(&1)) {
                let pid = v
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u32::from_be_bytes);
                out.push((node, pid));
            }
        }
        Ok(out)
    }

    /// After a write's commit: rings the members of `bells` that wait on their doorbell (taking
    /// their mark, so the next writer does not ring them again); the others are reading the log
    /// and see the write without a ring; one whose process is gone is forgotten. Returns how many
    /// members the write reaches.
    pub(crate) fn wake(&self, bells: &Bells) -> usize {
        if bells.is_empty() {
            return 0;
        }
        // Orders the commit before the reads of the flags (see `flag`).
        std::sync::atomic::fence(Ordering::SeqCst);
        let mut ring = Vec::new();
        let mut awake = 0;
        let mut dead = Vec::new();
        let mut flags = self.flags.lock();
        for &(node, pid) in bells {
            match self.peer(&mut flags, node, false) {
                Some(peer) if !peer.flag.take() => {
                    // Awake, so reading the log; whether its process still exists is checked
                    // (a system call) at most every PEER_CHECK per member.
                    let now = std::time::Instant::now();
                    let fresh = peer
                        .checked
                        .is_some_and(|c| now.duration_since(c) < PEER_CHECK);
                    if fresh || self.pid_alive(pid) {
                        if !fresh {
                            peer.checked = Some(now);
                        }
                        awake += 1;
                    } else {
                        dead.push(node);
                    }
                }
                // Asleep, or no flag to read (it left, died, or is joining): the ring tells.
                _ => ring.push(node),
            }
        }
        drop(flags);
        if !dead.is_empty() {
            self.remove_members(&dead);
        }
        awake + self.ring(&ring)
    }

    /// Rings each member's doorbell (a zero-byte datagram, never blocking: a full queue means a
    /// wake-up is already pending); removes the members found dead. Returns how many were rung.
    pub(crate) fn ring(&self, nodes: &[u64]) -> usize {
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

    /// Removes members (dead, or leaving): their entries, their watch counts, their doorbells.
    pub(crate) fn remove_members(&self, nodes: &[u64]) {
        let Ok(env) = self.env() else { return };
        let dbs = self.dbs;
        if let Ok(mut wtxn) = env.write_txn() {
            let mut unwatched = 0;
            for node in nodes {
                let key = node.to_be_bytes();
                if let Ok(Some(v)) = dbs.members.get(&wtxn, &key) {
                    if v.get(4) == Some(&1) {
                        unwatched += 1;
                    }
                }
                let _ = dbs.members.delete(&mut wtxn, &key);
            }
            if unwatched > 0 {
                let n = self.watchers(&wtxn).unwrap_or(0).saturating_sub(unwatched);
                let _ = dbs.meta.put(&mut wtxn, WATCHERS_KEY, &n.to_be_bytes());
            }
            let _ = wtxn.commit();
        }
        for &node in nodes {
            let _ = std::fs::remove_file(self.bell_path(node));
            let _ = std::fs::remove_file(self.flag_path(node));
            self.flags.lock().remove(&node);
        }
        // A process that died may have died inside a read transaction.
        let _ = env.clear_stale_readers();
    }

    /// Whether process `pid` exists (0: unknown, taken as alive). A member that is not asleep is
    /// checked this way instead of being rung, which would wake it for nothing.
    fn pid_alive(&self, pid: u32) -> bool {
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            return true;
        };
        if raw <= 0 || pid == self.pid {
            return true;
        }
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let r = unsafe { libc::kill(raw, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }

    /// Maps an LMDB error to ours, naming the directory.
    pub(crate) fn error(&self, e: heed::Error) -> Error {
        let dir = self.settings.dir.display();
        match e {
            heed::Error::Mdb(heed::MdbError::MapFull) => Error::Backend(format!(
                "local://{dir}: the store is full (map_size {} MiB): delete keys, or open it with a \
                 larger ?map_size=",
                self.settings.map_size >> 20
            )),
            heed::Error::Mdb(heed::MdbError::ReadersFull) => Error::Backend(format!(
                "local://{dir}: all {} reader slots are taken: raise ?max_readers=",
                self.settings.max_readers
            )),
            other => Error::Backend(format!("local://{dir}: {other}")),
        }
    }
}

/// Opens (or shares) the environment of `settings.dir`, creating the directory when needed.
pub(crate) fn open(settings: &Settings) -> Result<Arc<Shared>> {
    let dir = &settings.dir;
    let at = |what: &str, e: &dyn std::fmt::Display| {
        Error::Backend(format!("local://{}: {what}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| at("cannot create the directory", &e))?;
    std::fs::create_dir_all(dir.join("bells")).map_err(|e| at("cannot create bells/", &e))?;
    let key = dir
        .canonicalize()
        .map_err(|e| at("cannot resolve the directory", &e))?;
    let generation = GENERATION.load(Ordering::Acquire);
    let mut open = OPEN.lock();
    let map = open.get_or_insert_with(HashMap::new);
    if let Some(shared) = map.get(&key).and_then(Weak::upgrade) {
        if shared.generation == generation {
            return Ok(shared);
        }
    }
    // Read transactions are not tied to threads (MDB_NOTLS): a reader slot is held only for the
    // length of a transaction, not for the life of every thread that ever read.
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options
        .map_size(fitting_map_size(settings, &key))
        .max_readers(settings.max_readers)
        .max_dbs(8);
    // Fast by default: writes go straight into the shared map and commits are not flushed.
    // `?sync=1`: every commit written with write(2) and flushed (see "Durability").
    let flags = if settings.sync {
        EnvFlags::empty()
    } else {
        EnvFlags::WRITE_MAP | EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC
    };
    // SAFETY: these flags only change how and when LMDB writes to the file (see "Durability");
    // with WRITE_MAP the map is writable, and nothing here writes to it but LMDB.
    unsafe { options.flags(flags) };
    // SAFETY: one environment per path per process (the map above), never used after fork (the
    // generation check), and the files are LMDB's own.
    let env = unsafe { options.open(&key) }.map_err(|e| match e {
        heed::Error::Mdb(heed::MdbError::Invalid)
        | heed::Error::Mdb(heed::MdbError::VersionMismatch) => at(
            "not an LMDB environment of this version (data.mdb belongs to something else?)",
            &e,
        ),
        other => at("cannot open", &other),
    })?;
    // Slots of readers that died (SIGKILL) would otherwise stay taken.
    let _ = env.clear_stale_readers();
    let wtxn = env.write_txn().map_err(|e| at("cannot write", &e))?;
    let (kv, exp, log, meta, members) = env
        .create_databases_and_commit(wtxn, |o, wtxn| -> heed::Result<_> {
            Ok(CommitOrAbort::<_, ()>::Commit((
                o.create_database::<Bytes, Bytes>(wtxn, Some("kv"))?,
                o.create_database::<Bytes, Bytes>(wtxn, Some("exp"))?,
                o.create_database::<Bytes, Bytes>(wtxn, Some("log"))?,
                o.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?,
                o.create_database::<Bytes, Bytes>(wtxn, Some("members"))?,
            )))
        })
        .map_err(|e| at("cannot create its databases", &e))?
        .unwrap_commit();
    let dbs = Dbs {
        kv,
        exp,
        log,
        meta,
        members,
    };
    let shared = Arc::new(Shared {
        env: std::cell::UnsafeCell::new(Some(env)),
        dbs,
        settings: Settings {
            dir: key.clone(),
            ..settings.clone()
        },
        generation,
        ringer: Mutex::new(None),
        flags: Mutex::new(HashMap::new()),
        pid: std::process::id(),
    });
    map.insert(key, Arc::downgrade(&shared));
    Ok(shared)
}

/// The map size to open with: the one asked for, but never more than the file system can back
/// (the data file as it is, plus the free space, less 1 MiB). With `WRITE_MAP` a map larger than
/// a small tmpfs (Docker's /dev/shm is 64 MB) would end in SIGBUS when the file system runs out;
/// this way LMDB answers "full" first.
fn fitting_map_size(settings: &Settings, dir: &Path) -> usize {
    if settings.sync {
        return settings.map_size; // write(2) reports ENOSPC cleanly
    }
    let used = std::fs::metadata(dir.join("data.mdb")).map_or(0, |m| m.len() as usize);
    let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return settings.map_size;
    };
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_dir` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c_dir.as_ptr(), &mut st) } != 0 {
        return settings.map_size;
    }
    let free = (st.f_bavail as usize).saturating_mul(st.f_frsize as usize);
    let room = used.saturating_add(free).saturating_sub(1 << 20);
    settings.map_size.min(room).max(1 << 20)
}

/// In a child right after `fork()`: closes every environment inherited from the parent (so the
/// child can open the same directories again) and makes handles from before the fork fail
/// cleanly. Touches no lock the parent may hold: LMDB's close only clears reader slots of this
/// process (it has none) and the parent keeps its own file locks.
pub(crate) fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    let guard = match OPEN.try_lock() {
        Some(g) => g,
        None => {
            // Held by a parent thread that does not exist in the child: nobody will release it.
            // SAFETY: in a forked child only this thread runs, so no guard of this mutex is alive
            // in this process; the map is only read below.
            unsafe { OPEN.force_unlock() };
            OPEN.lock()
        }
    };
    if let Some(map) = guard.as_ref() {
        for shared in map.values().filter_map(Weak::upgrade) {
            // SAFETY: only this thread runs in the child (see the `Sync` impl); every later reader
            // sees the generation change first and never dereferences the closed environment.
            let env = unsafe { (*shared.env.get()).take() };
            drop(env);
        }
    }
    drop(guard);
    *OPEN.lock() = None;
}

/// Most entries the bus log keeps.
pub(crate) const LOG_ENTRIES: u64 = 65_536;
/// Most bytes the bus log keeps (topics and payloads).
pub(crate) const LOG_BYTES: u64 = 64 << 20;
/// The byte count of the log in directories made before `LOG_STATE_KEY` (read once, then moved).
const LOG_BYTES_KEY: &[u8] = b"log_bytes";
/// The log's first and last sequence numbers and byte count (8 bytes BE each).
const LOG_STATE_KEY: &[u8] = b"log_state";
const WATCHERS_KEY: &[u8] = b"watchers";

/// A big-endian u64 (a sequence number, a node id, a count); 0 for anything else.
pub(crate) fn be_u64(b: &[u8]) -> u64 {
    b.try_into().map_or(0, u64::from_be_bytes)
}

/// A log entry: node id, kind (0: message, else a change), topic (or key) length, topic, payload.
pub(crate) fn log_entry(node: u64, kind: u8, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + topic.len() + payload.len());
    out.extend_from_slice(&node.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads a log entry: (node, kind, topic, payload).
pub(crate) fn open_log_entry(bytes: &[u8]) -> Option<(u64, u8, &str, &[u8])> {
    let node = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let kind = *bytes.get(8)?;
    let len = u32::from_be_bytes(bytes.get(9..13)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(bytes.get(13..13usize.checked_add(len)?)?).ok()?;
    Some((node, kind, topic, &bytes[13 + len..]))
}

/// Records whether process `node` watches store changes (its member entry's flag and the
/// directory's count of watching processes), in one transaction.
pub(crate) fn set_member_watching(shared: &Shared, node: u64, on: bool) -> Result<()> {
    let env = shared.env()?;
    let h = |e| shared.error(e);
    let dbs = shared.dbs;
    let mut wtxn = env.write_txn().map_err(h)?;
    let key = node.to_be_bytes();
    let Some(mut member) = dbs.members.get(&wtxn, &key).map_err(h)?.map(<[u8]>::to_vec) else {
        return Err(Error::Backend(String::from(
            "local: this process has not joined the bus (subscribe or watch first)",
        )));
    };
    let was = member.get(4) == Some(&1);
    if was == on {
        return Ok(());
    }
    member[4] = u8::from(on);
    dbs.members.put(&mut wtxn, &key, &member).map_err(h)?;
    let n = shared.watchers(&wtxn).map_err(h)?;
    let n = if on { n + 1 } else { n.saturating_sub(1) };
    dbs.meta
        .put(&mut wtxn, WATCHERS_KEY, &n.to_be_bytes())
        .map_err(h)?;
    wtxn.commit().map_err(h)
}

/// What this process knows of another member: its mapped flag, and when its process was last
/// seen to exist.
struct Peer {
    flag: Arc<flag::Flag>,
    checked: Option<std::time::Instant>,
}

/// How often a writer checks that an awake member's process still exists.
const PEER_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Milliseconds since the Unix epoch: deadlines must mean the same in every process.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = parse_url("local:///tmp/x?map_size=64m&max_readers=50&sync=1").unwrap();
        assert_eq!(s.dir, PathBuf::from("/tmp/x"));
        assert_eq!((s.map_size, s.max_readers, s.sync), (64 << 20, 50, true));
        let s = parse_url("local://").unwrap();
        assert_eq!(s.dir, default_dir());
        assert_eq!(s.map_size, 256 << 20);
        assert!(parse_url("local://relative/dir").is_err());
        assert_eq!(s.tick, relay::TICK);
        let s = parse_url("local:///tmp/x?tick_ms=60000").unwrap();
        assert_eq!(s.tick, std::time::Duration::from_secs(60));
        for bad in ["tick_ms=5", "tick_ms=60001", "tick_ms=x"] {
            let e = parse_url(&format!("local:///tmp/x?{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("tick_ms"), "{e}");
        }
        assert!(parse_url("local:///x?map_size=1").is_err());
        assert!(parse_url("local:///x?colour=blue").is_err());
    }
}
