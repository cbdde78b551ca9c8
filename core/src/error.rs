//! The one error type of the engine.
//!
//! Every fallible operation of the store and the bus returns [`Error`]. Each binding maps it
//! once, at its boundary (Python exceptions, C status codes), so the rules behind each variant live
//! here and nowhere else.

use std::fmt;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A key is empty or longer than [`crate::Limits::max_key_len`].
    InvalidKey {
        /// The key (shortened when very long, for the message).
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value is larger than [`crate::Limits::max_value_len`].
    ValueTooLarge {
        /// The key the value was meant for.
        key: String,
        /// Size of the value in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// `incr` on a value that is not a MessagePack integer (the value is unchanged).
    NotAnInteger {
        /// The key holding the value.
        key: String,
    },
    /// `incr` would go past `i64::MIN..=i64::MAX` (the value is unchanged).
    Overflow {
        /// The key holding the counter.
        key: String,
    },
    /// A value handed to the engine is not valid MessagePack.
    InvalidValue {
        /// The key or topic it was meant for.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A topic or pattern that cannot be used (empty segment, wildcard in a published topic, ...).
    InvalidTopic {
        /// The topic as given (shortened when very long).
        topic: String,
        /// Why it was refused.
        reason: String,
    },
    /// A payload larger than [`crate::Limits::max_message_len`].
    MessageTooLarge {
        /// The topic it was published to.
        topic: String,
        /// Size of the payload in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A mailbox holds [`crate::Limits::max_subscriptions_per_mailbox`] subscriptions already.
    TooManySubscriptions {
        /// The configured limit.
        max: usize,
    },
    /// The mailbox was closed.
    Closed,
    /// The configuration or an argument is out of range.
    InvalidArgument(String),
    /// The backend (e.g. Redis) failed or could not be reached.
    Backend(String),
    /// No function is registered under this name ([`crate::calls`]).
    NoFunction {
        /// The name called (shortened when very long).
        name: String,
    },
    /// A registered function reported a failure ([`crate::calls`]).
    FunctionFailed {
        /// The function's name.
        name: String,
        /// What the function said.
        message: String,
    },
}

/// Shortens user-supplied text for an error message, so a 10 MB key does not become a 10 MB message.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidKey { key, reason } => write!(f, "invalid key {key:?}: {reason}"),
            Error::ValueTooLarge { key, len, max } => {
                write!(
                    f,
                    "value for key {key:?} is {len} bytes, over the limit of {max} bytes"
                )
            }
            Error::NotAnInteger { key } => {
                write!(f, "value of key {key:?} is not an integer or out of range")
            }
            Error::Overflow { key } => {
                write!(f, "increment or decrement of key {key:?} would overflow")
            }
            Error::InvalidValue { key, reason } => {
                write!(f, "value for {key:?} is not valid MessagePack: {reason}")
            }
            Error::InvalidTopic { topic, reason } => write!(f, "invalid topic {topic:?}: {reason}"),
            Error::MessageTooLarge { topic, len, max } => write!(
                f,
                "message for topic {topic:?} is {len} bytes, over the limit of {max} bytes"
            ),
            Error::TooManySubscriptions { max } => {
                write!(
                    f,
                    "mailbox already holds the maximum of {max} subscriptions"
                )
            }
            Error::Closed => f.write_str("mailbox is closed"),
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::Backend(msg) => write!(f, "backend error: {msg}"),
            Error::NoFunction { name } => write!(f, "no function registered as {name:?}"),
            Error::FunctionFailed { name, message } => {
                write!(f, "function {name:?} failed: {message}")
            }
        }
    }
}

impl std::error::Error for Error {}
