//! One helper that runs a test body across engine configurations (shard counts, mailbox bounds).
#![allow(dead_code)]

use hornbeam_core::{Config, Engine, MailboxConfig};

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

/// Runs `body` once per configuration with a fresh engine, naming the configuration on failure.
pub(crate) fn with_engine(body: impl Fn(&Engine, &Config)) {
    for (name, config) in configs() {
        let engine = Engine::new(config.clone());
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&engine, &config)));
        if let Err(e) = result {
            eprintln!("failed under configuration: {name}");
            std::panic::resume_unwind(e);
        }
    }
}
