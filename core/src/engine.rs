//! The engine: one store and one bus, and the process-wide default engine the bindings share.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::bus::Bus;
use crate::config::Config;
use crate::error::Result;
use crate::store::Store;
use crate::sync::GlobalSlot;

pub use crate::config::URL_ENV;

/// A store and a bus. Cloning gives another handle to the same engine.
///
/// ```
/// use hornbeam_core::{Engine, Value};
/// let engine = Engine::new(Default::default());
/// engine.store().set("greeting", Value::encode("hello").unwrap(), None).unwrap();
/// let mb = engine.bus().mailbox();
/// mb.subscribe("chat:>").unwrap();
/// engine.bus().publish("chat:lobby", b"hi").unwrap();
/// assert_eq!(mb.try_recv().unwrap().topic(), "chat:lobby");
/// ```
#[derive(Clone, Debug)]
pub struct Engine {
    store: Store,
    bus: Bus,
}

impl Engine {
    /// An embedded (in-process) engine.
    pub fn new(config: Config) -> Engine {
        let bus = Bus::new(&config);
        Engine {
            store: Store::with_changes(config, bus.changes()),
            bus,
        }
    }

    /// Opens the engine a URL names: `""` or `embedded://` for the embedded engine;
    /// `local:///abs/dir[?map_size=256m&max_readers=1022&sync=0]` (or `local://` alone, a per-user
    /// directory under `$XDG_RUNTIME_DIR` or `/dev/shm`) for an engine shared by every process on
    /// this machine that opens the same directory (LMDB, no server; see the `local` backend's docs);
    /// or `redis://[user:password@]host:port/db[?prefix=myapp:&timeout_ms=3000]` (or
    /// `redis+unix:///path/to/socket?db=0`) for an engine shared by every process opening the same
    /// Redis. `rediss://` (TLS) is refused: no TLS support is built in.
    ///
    /// Redis: `prefix` (default `hb:`) is put before every Redis key and channel, so apps sharing
    /// one Redis stay apart; `timeout_ms` (default 3000) bounds connecting and every call: an
    /// unreachable or hung Redis gives [`Error::Backend`] within about twice that, never a hang.
    /// Opening checks that the backend answers. No thread starts until the first subscription.
    pub fn open(url: &str, config: Config) -> Result<Engine> {
        Ok(match crate::backend::open(url)? {
            None => Engine::new(config),
            Some(opened) => Engine {
                bus: match opened.relay {
                    Some(relay) => Bus::with_relay(&config, relay),
                    None => Bus::new(&config),
                },
                store: Store::with_flavor(config.limits, opened.store),
            },
        })
    }

    /// `"embedded"`, `"local"` or `"redis"`: where the store and bus keep their data.
    pub fn backend_name(&self) -> &'static str {
        self.store.backend_name()
    }

    /// Opens the engine `HORNBEAM_URL` names (embedded when unset).
    pub fn from_env(config: Config) -> Result<Engine> {
        Engine::open(&std::env::var(URL_ENV).unwrap_or_default(), config)
    }

    /// The key/value store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The pub/sub bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The process-wide default engine, opened from `HORNBEAM_URL` on first use. Python's
    /// `hornbeam_erlang` and C's `hb_engine_default()` both use it, so they share data.
    ///
    /// Creating it starts no thread. After a `fork()`, call [`Engine::reset_global_after_fork`]
    /// in the child: the child then gets a fresh engine on next use.
    pub fn global() -> Result<&'static Engine> {
        GLOBAL.get_or_try_init(|| Engine::from_env(Config::default()))
    }

    /// Forgets the default engine in a forked child, without touching its locks (another thread
    /// may have held one at fork time). The old engine is leaked, never used again.
    pub fn reset_global_after_fork() {
        crate::backend::after_fork_in_child();
        GLOBAL.forget();
        GENERATION.fetch_add(1, Ordering::AcqRel);
    }

    /// A number that changes every time the default engine is reset (so bindings can tell that an
    /// object belongs to the parent's engine).
    pub fn global_generation() -> u64 {
        GENERATION.load(Ordering::Acquire)
    }
}

#[cfg(not(loom))]
static GLOBAL: GlobalSlot<Engine> = GlobalSlot::new();
#[cfg(loom)]
loom::lazy_static! {
    static ref GLOBAL: GlobalSlot<Engine> = GlobalSlot::new();
}
static GENERATION: AtomicU64 = AtomicU64::new(0);
