//! The engine: one store and one bus, and the process-wide default engine the bindings share.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::bus::Bus;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::sync::GlobalSlot;

/// Environment variable that selects the backend (`redis://...`); unset means embedded.
pub const URL_ENV: &str = "HORNBEAM_URL";

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
            store: Store::new(config),
            bus,
        }
    }

    /// Opens the engine a URL names: `""` or `embedded://` for the embedded engine, or
    /// `redis://[user:password@]host:port/db[?prefix=myapp:&timeout_ms=3000]` (or
    /// `redis+unix:///path/to/socket?db=0`) for an engine whose store and bus are shared by every
    /// process opening the same URL. `rediss://` (TLS) is refused: no TLS support is built in.
    ///
    /// `prefix` (default `hb:`) is put before every Redis key and channel, so apps sharing one
    /// Redis stay apart; `timeout_ms` (default 3000) bounds connecting and every call: an
    /// unreachable or hung Redis gives [`Error::Backend`] within about twice that, never a hang.
    /// Opening checks that Redis answers. No thread starts until the first subscription.
    pub fn open(url: &str, config: Config) -> Result<Engine> {
        let url = url.trim();
        if url.is_empty() || url.starts_with("embedded:") || url.starts_with("mem:") {
            return Ok(Engine::new(config));
        }
        if url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://")
        {
            let redis = crate::remote::Redis::open(url)?;
            return Ok(Engine {
                bus: Bus::with_redis(&config, redis.clone()),
                store: Store::with_redis(config, redis),
            });
        }
        Err(Error::InvalidArgument(format!(
            "{URL_ENV}={:?}: unsupported backend (use redis://host:port/db, embedded://, or leave \
             {URL_ENV} unset)",
            crate::remote::hide_password(url)
        )))
    }

    /// `"embedded"` or `"redis"`: where the store and bus keep their data.
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
