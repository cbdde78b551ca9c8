//! Topic and pattern parsing, and delivery through the subscription trie, against a naive
//! reference.
//!
//! The input becomes a few patterns and topics over a small alphabet (so they often match) with
//! raw strings mixed in. The reference rules: a pattern is non-empty, within the length limit,
//! and has `>` only as its last segment; a topic is the same with no `*` or `>` segment; `*`
//! matches one segment, a final `>` one or more. Publishing must reach exactly the mailboxes with
//! a matching subscription, once each, with the payload intact, and unsubscribing must stop it.

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use hornbeam_core::bus::topic;
use hornbeam_core::{Config, Engine, Limits, RecvError};

const MAX_LEN: usize = 24;

/// A string over `a b * > :` (and, now and then, any string).
fn name(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(1, 8)? {
        return String::arbitrary(u);
    }
    let n = u.int_in_range(0..=MAX_LEN + 2)?;
    let mut s = String::with_capacity(n);
    for _ in 0..n {
        s.push(*u.choose(&['a', 'b', '*', '>', ':', ':'])?);
    }
    Ok(s)
}

/// Reference: is `p` a valid subscription pattern?
pub fn valid_pattern(p: &str) -> bool {
    let segs: Vec<&str> = p.split(':').collect();
    !p.is_empty()
        && p.len() <= MAX_LEN
        && segs
            .iter()
            .enumerate()
            .all(|(i, s)| *s != ">" || i == segs.len() - 1)
}

/// Reference: is `t` a valid topic to publish to?
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_LEN && t.split(':').all(|s| s != "*" && s != ">")
}

/// Reference matcher, by recursion over the segment lists.
pub fn reference_match(p: &[&str], t: &[&str]) -> bool {
    match (p.split_first(), t.split_first()) {
        (None, None) => true,
        (Some((&">", [])), Some(_)) => true,
        (Some((ps, prest)), Some((ts, trest))) => {
            (*ps == "*" || ps == ts) && reference_match(prest, trest)
        }
        _ => false,
    }
}

fn matches(p: &str, t: &str) -> bool {
    let p: Vec<&str> = p.split(':').collect();
    let t: Vec<&str> = t.split(':').collect();
    reference_match(&p, &t)
}

/// Runs one input (see the module docs).
pub fn check(data: &[u8]) {
    let _ = run(&mut Unstructured::new(data));
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let patterns: Vec<String> = (0..u.int_in_range(1..=6)?)
        .map(|_| name(u))
        .collect::<arbitrary::Result<_>>()?;
    let topics: Vec<String> = (0..u.int_in_range(1..=6)?)
        .map(|_| name(u))
        .collect::<arbitrary::Result<_>>()?;
    let engine = Engine::new(Config {
        shards: 1,
        limits: Limits {
            max_topic_len: MAX_LEN,
            ..Limits::default()
        },
        ..Config::default()
    });
    let bus = engine.bus();
    for p in &patterns {
        assert_eq!(
            topic::check_pattern(p, MAX_LEN).is_ok(),
            valid_pattern(p),
            "pattern {p:?}"
        );
    }
    // One mailbox per pattern, and one mailbox subscribed to all of them.
    let single: Vec<_> = patterns.iter().map(|_| bus.mailbox()).collect();
    let all = bus.mailbox();
    for (p, mb) in patterns.iter().zip(&single) {
        let ok = mb.subscribe(p);
        assert_eq!(ok.is_ok(), valid_pattern(p), "subscribe {p:?}: {ok:?}");
        if valid_pattern(p) {
            all.subscribe(p).expect("valid pattern");
        }
    }
    let mut removed = BTreeSet::new();
    for round in 0..2 {
        for (n, t) in topics.iter().enumerate() {
            let valid = valid_topic(t);
            assert_eq!(topic::check_topic(t, MAX_LEN).is_ok(), valid, "topic {t:?}");
            let payload = [round as u8, n as u8];
            let delivered = bus.publish(t, payload);
            if !valid {
                assert!(delivered.is_err(), "publish to {t:?} must be refused");
                continue;
            }
            let live = |i: usize| valid_pattern(&patterns[i]) && !removed.contains(&i);
            let expect: Vec<bool> = (0..patterns.len())
                .map(|i| live(i) && matches(&patterns[i], t))
                .collect();
            for p in &patterns {
                if valid_pattern(p) {
                    assert_eq!(topic::matches(p, t), matches(p, t), "{p:?} vs {t:?}");
                }
            }
            // The all-patterns mailbox keeps every pattern: it gets the message when any matches.
            let to_all = patterns.iter().any(|p| valid_pattern(p) && matches(p, t));
            let count = expect.iter().filter(|&&e| e).count() + usize::from(to_all);
            assert_eq!(
                delivered.expect("valid topic"),
                count,
                "deliveries of {t:?}"
            );
            for (i, mb) in single.iter().enumerate() {
                let got = mb.try_recv();
                if expect[i] {
                    let m = got.unwrap_or_else(|e| panic!("{:?} missed {t:?}: {e:?}", patterns[i]));
                    assert_eq!((m.topic(), m.payload()), (t.as_str(), &payload[..]));
                    assert_eq!(mb.try_recv().err(), Some(RecvError::Empty), "exactly once");
                } else {
                    assert_eq!(
                        got.err(),
                        Some(RecvError::Empty),
                        "{:?} got {t:?}",
                        patterns[i]
                    );
                }
            }
            if to_all {
                assert_eq!(
                    all.try_recv().expect("the all-patterns mailbox").payload(),
                    payload
                );
            }
            assert_eq!(
                all.try_recv().err(),
                Some(RecvError::Empty),
                "once, however many match"
            );
        }
        // Second round: unsubscribe every other pattern (from its own mailbox only).
        for (i, (p, mb)) in patterns.iter().zip(&single).enumerate() {
            if round == 0 && i % 2 == 0 && valid_pattern(p) {
                assert!(mb.unsubscribe(p).expect("unsubscribe"));
                assert!(!mb.unsubscribe(p).expect("unsubscribe twice"));
                removed.insert(i);
            }
        }
    }
    Ok(())
}
