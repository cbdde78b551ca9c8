//! Topics and patterns: `:`-separated segments; in a pattern `*` is exactly one segment and a
//! final `>` is one or more trailing segments. `*` and `>` are wildcards only as whole segments.

use crate::error::{shorten, Error, Result};

/// Segment separator.
pub const SEPARATOR: char = ':';
/// Matches exactly one segment, in a pattern.
pub const ONE: &str = "*";
/// Matches one or more trailing segments, as the last segment of a pattern.
pub const TAIL: &str = ">";

fn invalid(topic: &str, reason: &str) -> Error {
    Error::InvalidTopic {
        topic: shorten(topic),
        reason: reason.to_owned(),
    }
}

fn check_len(topic: &str, max_len: usize) -> Result<()> {
    if topic.is_empty() {
        return Err(invalid(topic, "topic is empty"));
    }
    if topic.len() > max_len {
        return Err(invalid(
            topic,
            &format!("{} bytes, over the limit of {max_len} bytes", topic.len()),
        ));
    }
    Ok(())
}

/// Checks a topic to publish to: not empty, not too long, and with no wildcard segment.
pub fn check_topic(topic: &str, max_len: usize) -> Result<()> {
    check_len(topic, max_len)?;
    // A byte scan first (vectorised): most topics hold neither wildcard byte anywhere, and only
    // one that does needs its segments split.
    let maybe = topic.bytes().any(|b| b == b'*' || b == b'>');
    if maybe && is_pattern(topic) {
        return Err(invalid(
            topic,
            "a published topic cannot hold a wildcard segment ('*' or '>')",
        ));
    }
    Ok(())
}

/// Checks a subscription pattern: not empty, not too long, `>` only as the last segment.
pub fn check_pattern(pattern: &str, max_len: usize) -> Result<()> {
    check_len(pattern, max_len)?;
    let mut segments = pattern.split(SEPARATOR).peekable();
    while let Some(s) = segments.next() {
        if s == TAIL && segments.peek().is_some() {
            return Err(invalid(pattern, "'>' may only be the last segment"));
        }
    }
    Ok(())
}

/// Whether a pattern holds a wildcard segment.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.split(SEPARATOR).any(|s| s == ONE || s == TAIL)
}

/// Whether `topic` matches `pattern` (a reference implementation, used by tests and by backends
/// that must filter what a coarser server-side match let through).
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split(SEPARATOR);
    let mut t = topic.split(SEPARATOR);
    loop {
        match (p.next(), t.next()) {
            (None, None) => return true,
            (Some(TAIL), Some(_)) => return true,
            (Some(ONE), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("room:*", "room:lobby"));
        assert!(!matches("room:*", "room:a:b"));
        assert!(!matches("room:*", "room"));
        assert!(matches("room:>", "room:a:b"));
        assert!(matches("room:>", "room:a"));
        assert!(!matches("room:>", "room"));
        assert!(matches("*:x:>", "a:x:b:c"));
        assert!(matches("a:b", "a:b"));
        assert!(!matches("a:b", "a:b:c"));
        assert!(matches(">", "anything:at:all"));
    }

    #[test]
    fn validation() {
        assert!(check_topic("room:*", 100).is_err());
        assert!(check_topic("", 100).is_err());
        assert!(check_topic(&"x".repeat(101), 100).is_err());
        assert!(check_topic("room:lobby", 100).is_ok());
        assert!(check_pattern("a:>:b", 100).is_err());
        assert!(check_pattern("a:*:>", 100).is_ok());
        assert!(is_pattern("a:*") && !is_pattern("a:b*"));
    }
}
