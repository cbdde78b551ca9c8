//! Settings of an engine: limits on keys, values and messages, mailbox bounds, sharding.

/// Environment variable that selects the backend (`local://...`, `redis://...`); unset means
/// embedded.
pub const URL_ENV: &str = "HORNBEAM_URL";

/// Size limits. Going past one is an error naming the limit, never a truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes (default 4 KiB).
    pub max_key_len: usize,
    /// Largest stored value, in MessagePack bytes (default 16 MiB).
    pub max_value_len: usize,
    /// Largest published payload, in bytes (default 16 MiB).
    pub max_message_len: usize,
    /// Longest topic or pattern, in bytes (default 1 KiB).
    pub max_topic_len: usize,
    /// Most subscriptions one mailbox may hold (default 100,000).
    pub max_subscriptions_per_mailbox: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_len: 4 * 1024,
            max_value_len: 16 * 1024 * 1024,
            max_message_len: 16 * 1024 * 1024,
            max_topic_len: 1024,
            max_subscriptions_per_mailbox: 100_000,
        }
    }
}

/// Bounds of a mailbox: it never holds more than `capacity` messages nor more than `max_bytes`
/// bytes (topic plus payload). A message that does not fit is dropped and counted (see the bus
/// docs). Two exceptions, both checked by `fuzz/mailbox_model`: a message larger than `max_bytes`
/// is still accepted by an empty mailbox (so it is never undeliverable), and the message that
/// waits behind a lag notice being received has left the queue and no longer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Most messages held (default 1024).
    pub capacity: usize,
    /// Most bytes held, topics and payloads (default 8 MiB, as Redis' soft pub/sub output limit).
    pub max_bytes: usize,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            capacity: 1024,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Everything an [`crate::Engine`] is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of store shards, rounded up to a power of two (default 64).
    pub shards: usize,
    /// Size limits.
    pub limits: Limits,
    /// Default bounds of new mailboxes.
    pub mailbox: MailboxConfig,
    /// Time source for TTLs.
    pub clock: crate::Clock,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shards: 64,
            limits: Limits::default(),
            mailbox: MailboxConfig::default(),
            clock: crate::Clock::default(),
        }
    }
}
