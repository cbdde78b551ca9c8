//! One helper that runs a test body across engine configurations (shard counts, mailbox bounds)
//! and, when `HORNBEAM_TEST_REDIS_URL` is set (see `tests/with-redis.sh`), on Redis too.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use hornbeam_core::{Config, Engine, MailboxConfig};

/// Environment variable naming the Redis the tests may use (`redis://127.0.0.1:PORT/0`).
pub(crate) const REDIS_ENV: &str = "HORNBEAM_TEST_REDIS_URL";

/// The configurations every store and bus test runs under.
pub(crate) fn configs() -> Vec<(&'static str, Config)> {
    vec![
        (
            "1 shard, tiny mailboxes",
            Config {
                shards: 1,
                mailbox: MailboxConfig {
                    capacity: 8,
                    max_bytes: 4096,
                },
                ..Config::default()
            },
        ),
        ("default", Config::default()),
        (
            "256 shards",
            Config {
                shards: 256,
                ..Config::default()
            },
        ),
    ]
}

/// Set to `off` to run the shared suites on the embedded engine alone (the memory checkers do:
/// valgrind makes the Redis round trips too slow). Anything else leaves Redis required.
pub(crate) const REDIS_OFF_ENV: &str = "HORNBEAM_TEST_REDIS";

/// The test Redis URL. A missing URL fails the test, saying how to run it: a missing server is
/// never a pass. `HORNBEAM_TEST_REDIS=off` (said out loud, never by default) gives `None`.
pub(crate) fn redis_url() -> Option<String> {
    if let Some(url) = std::env::var(REDIS_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        return Some(url);
    }
    if std::env::var(REDIS_OFF_ENV).is_ok_and(|v| v == "off") {
        return None;
    }
    panic!(
        "{REDIS_ENV} is not set: run the tests with a Redis, `tests/with-redis.sh cargo test` \
         (apt-get install redis-server), or set {REDIS_OFF_ENV}=off to leave Redis out"
    )
}

/// The test Redis URL, whatever `HORNBEAM_TEST_REDIS` says (for the Redis-only tests).
pub(crate) fn require_redis_url() -> String {
    std::env::var(REDIS_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{REDIS_ENV} is not set: run `tests/with-redis.sh cargo test -p hornbeam-core \
                 --test redis` (apt-get install redis-server)"
            )
        })
}

/// A key prefix no other test (nor another run) uses, so tests sharing one Redis never collide.
pub(crate) fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "hbtest:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with `?prefix=...` (or `&prefix=...`) added.
pub(crate) fn with_prefix(url: &str, prefix: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}prefix={prefix}")
}

/// A Redis engine with its own prefix, or `None` when no test Redis is set.
pub(crate) fn redis_engine(config: Config) -> Option<(Engine, String)> {
    let url = with_prefix(&redis_url()?, &unique_prefix());
    let engine = Engine::open(&url, config).unwrap_or_else(|e| panic!("open {url}: {e}"));
    Some((engine, url))
}

/// A fresh directory for a `local://` engine (under the temporary directory; removed by the
/// caller when done).
pub(crate) fn local_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_prefix().replace(':', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `local://` engine on a fresh directory, and the directory.
pub(crate) fn local_engine(config: Config) -> (Engine, std::path::PathBuf) {
    let dir = local_dir();
    let url = format!("local://{}", dir.display());
    let engine = Engine::open(&url, config).unwrap_or_else(|e| panic!("open {url}: {e}"));
    assert_eq!(
        engine.backend_name(),
        "local",
        "the local run must run on local://"
    );
    (engine, dir)
}

/// Runs `body` once per configuration with a fresh engine, naming the configuration on failure:
/// the embedded configurations, `local://` (LMDB, on a fresh directory) with tiny mailboxes, then
/// Redis with tiny mailboxes, on a key prefix of its own.
pub(crate) fn with_engine(body: impl Fn(&Engine, &Config)) {
    let mut engines: Vec<(&str, Engine, Config)> = configs()
        .into_iter()
        .map(|(name, config)| (name, Engine::new(config.clone()), config))
        .collect();
    let redis_config = Config {
        mailbox: MailboxConfig {
            capacity: 8,
            max_bytes: 4096,
        },
        ..Config::default()
    };
    let (local, local_dir) = local_engine(redis_config.clone());
    engines.push(("local://, tiny mailboxes", local, redis_config.clone()));
    if let Some((engine, _)) = redis_engine(redis_config.clone()) {
        assert_eq!(
            engine.backend_name(),
            "redis",
            "the Redis run must run on Redis"
        );
        engines.push(("redis, tiny mailboxes", engine, redis_config));
    }
    for (name, engine, config) in engines {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&engine, &config)));
        if engine.backend_name() != "embedded" {
            engine.store().clear();
        }
        if let Err(e) = result {
            eprintln!("failed under configuration: {name}");
            std::panic::resume_unwind(e);
        }
    }
    let _ = std::fs::remove_dir_all(local_dir);
}
