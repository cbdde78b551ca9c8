//! Complexity checks: a cost that must follow the matches, not the size of what surrounds them.
//! Timed, so they run in release mode only (`make test-rust` runs them with `--release`); in a
//! debug build this file holds no test. The margins are wide (the bound is 2x; a full
//! scan would be about 100x): these are about complexity, not speed.
#![cfg(not(debug_assertions))]

use std::time::{Duration, Instant};

use hornbeam_core::{Config, Engine, MailboxConfig, Store, Value};

/// `keys(prefix)` costs what the matches cost: 100 matches in 1,000,000 keys vs in 10,000.
#[test]
fn prefix_scan_cost_does_not_grow_with_store_size() {
    fn build(n: usize) -> Store {
        let engine = Engine::new(Config::default());
        let st = engine.store().clone();
        for i in 0..n {
            st.set(&format!("filler:{i:08}"), Value::Int(0), None)
                .unwrap();
        }
        for i in 0..100 {
            st.set(&format!("room:42:user:{i:03}"), Value::Int(0), None)
                .unwrap();
        }
        st
    }
    fn best_of(st: &Store) -> Duration {
        (0..30)
            .map(|_| {
                let t = Instant::now();
                assert_eq!(st.keys("room:42:").unwrap().len(), 100);
                t.elapsed()
            })
            .min()
            .unwrap()
    }
    let small = build(10_000);
    let big = build(1_000_000);
    let (a, b) = (best_of(&small), best_of(&big));
    // The bound is 2x (see BENCHMARKS.md); a wide margin keeps this test about complexity,
    // not timing: a full scan of 1,000,000 keys would be about 100x.
    assert!(
        b < a * 6 + Duration::from_micros(200),
        "10k keys: {a:?}, 1M keys: {b:?}"
    );
}

/// Publishing among 100,000 unrelated subscriptions costs about what it costs among 10.
#[test]
fn publish_cost_does_not_grow_with_unrelated_subscriptions() {
    fn cost(unrelated: usize) -> Duration {
        let engine = Engine::new(Config::default());
        let bus = engine.bus();
        let mut keep = Vec::new();
        for i in 0..unrelated {
            let mb = bus.mailbox();
            mb.subscribe(&format!("other:{i}:*")).unwrap();
            keep.push(mb);
        }
        let target = bus.mailbox_with(MailboxConfig {
            capacity: 1 << 20,
            max_bytes: usize::MAX,
        });
        target.subscribe("room:lobby").unwrap();
        (0..20)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..200 {
                    bus.publish("room:lobby", b"x").unwrap();
                }
                t.elapsed()
            })
            .min()
            .unwrap()
    }
    let (few, many) = (cost(10), cost(100_000));
    assert!(
        many < few * 5 + Duration::from_micros(500),
        "10 subs: {few:?}, 100k subs: {many:?}"
    );
}
