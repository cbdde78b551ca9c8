//! Store behaviour, run across configurations.

mod common;

use std::time::{Duration, Instant};

use common::with_engine;
use hornbeam_core::{Clock, Config, Engine, Error, Limits, ManualClock, Store, Ttl, Value};

fn s(v: &str) -> Value {
    Value::encode(v).unwrap()
}

#[test]
fn get_set_delete() {
    with_engine(|e, _| {
        let st = e.store();
        assert_eq!(st.get("k").unwrap(), None);
        st.set("k", s("v"), None).unwrap();
        assert_eq!(st.get("k").unwrap(), Some(s("v")));
        st.set("k", s("w"), None).unwrap();
        assert_eq!(st.get("k").unwrap(), Some(s("w")));
        assert!(st.delete("k").unwrap());
        assert!(!st.delete("k").unwrap(), "missing key is fine and says so");
        assert_eq!(st.get("k").unwrap(), None);
        assert_eq!(st.len(), 0);
    });
}

#[test]
fn incr_counts_from_zero_and_rejects_non_integers() {
    with_engine(|e, _| {
        let st = e.store();
        assert_eq!(st.incr("c", 1).unwrap(), 1);
        assert_eq!(st.incr("c", -5).unwrap(), -4);
        assert_eq!(st.get("c").unwrap(), Some(Value::Int(-4)));
        st.set("text", s("hello"), None).unwrap();
        let err = st.incr("text", 1).unwrap_err();
        assert_eq!(err, Error::NotAnInteger { key: "text".into() });
        assert!(err.to_string().contains("\"text\""), "names the key: {err}");
        assert_eq!(st.get("text").unwrap(), Some(s("hello")), "unchanged");
        // A counter written as MessagePack bytes by another language is a counter too.
        st.set_msgpack("m", &[0xcd, 0x01, 0x00], None).unwrap();
        assert_eq!(st.incr("m", 1).unwrap(), 257);
        // A float is not an integer.
        st.set("f", Value::encode(&1.5f64).unwrap(), None).unwrap();
        assert!(matches!(st.incr("f", 1), Err(Error::NotAnInteger { .. })));
    });
}

#[test]
fn incr_overflow_leaves_value_unchanged() {
    with_engine(|e, _| {
        let st = e.store();
        st.set("max", Value::Int(i64::MAX), None).unwrap();
        assert_eq!(
            st.incr("max", 1).unwrap_err(),
            Error::Overflow { key: "max".into() }
        );
        assert_eq!(st.get("max").unwrap(), Some(Value::Int(i64::MAX)));
        st.set("min", Value::Int(i64::MIN), None).unwrap();
        assert!(matches!(st.incr("min", -1), Err(Error::Overflow { .. })));
        assert_eq!(st.get("min").unwrap(), Some(Value::Int(i64::MIN)));
        assert!(st.incr("min", i64::MAX).is_ok());
    });
}

#[test]
fn many_keys_and_prefix_scan_sorted() {
    with_engine(|e, _| {
        let st = e.store();
        for i in (0..50).rev() {
            st.set(&format!("room:a:user:{i:02}"), Value::Int(i), None)
                .unwrap();
            st.set(&format!("room:b:user:{i:02}"), Value::Int(i), None)
                .unwrap();
        }
        st.set("room:a:user_count", Value::Int(50), None).unwrap();
        let keys = st.keys("room:a:user:").unwrap();
        assert_eq!(keys.len(), 50);
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys[0], "room:a:user:00");
        assert_eq!(st.keys("").unwrap().len(), 101);
        assert!(st.keys("zzz").unwrap().is_empty());
        let got = st.get_many(&["room:a:user:01", "missing"]).unwrap();
        assert_eq!(got, vec![Some(Value::Int(1)), None]);
        st.clear();
        assert!(st.is_empty());
        assert!(st.keys("").unwrap().is_empty());
    });
}

#[test]
fn set_many_writes_nothing_when_one_item_is_bad() {
    with_engine(|e, c| {
        let st = e.store();
        let long = "k".repeat(c.limits.max_key_len + 1);
        let err = st.set_many(
            vec![("ok".to_string(), Value::Int(1)), (long, Value::Int(2))],
            None,
        );
        assert!(matches!(err, Err(Error::InvalidKey { .. })));
        assert_eq!(st.get("ok").unwrap(), None);
        st.set_many(vec![("a", Value::Int(1)), ("b", Value::Int(2))], None)
            .unwrap();
        assert_eq!(st.len(), 2);
    });
}

#[test]
fn set_if_absent() {
    with_engine(|e, _| {
        let st = e.store();
        assert!(st.set_if_absent("lock", s("me"), None).unwrap());
        assert!(!st.set_if_absent("lock", s("you"), None).unwrap());
        assert_eq!(st.get("lock").unwrap(), Some(s("me")));
    });
}

#[test]
fn limits_are_errors_not_truncation() {
    let engine = Engine::new(Config {
        limits: Limits {
            max_key_len: 8,
            max_value_len: 16,
            ..Limits::default()
        },
        ..Config::default()
    });
    let st = engine.store();
    let err = st.set("123456789", Value::Int(1), None).unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    assert!(err.to_string().contains("over the limit of 8 bytes"));
    let big = Value::encode(&"x".repeat(100)).unwrap();
    let err = st.set("k", big, None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ValueTooLarge {
                len: 102,
                max: 16,
                ..
            }
        ),
        "{err}"
    );
    assert!(st.is_empty(), "nothing stored");
    assert!(matches!(
        st.set_msgpack("k", &[0xc1], None),
        Err(Error::InvalidValue { .. })
    ));
    assert!(matches!(
        st.set_msgpack("k", &[0x92, 0x01], None),
        Err(Error::InvalidValue { .. })
    ));
    assert!(st.is_empty());
}

fn manual_store() -> (Store, ManualClock) {
    let clock = ManualClock::new();
    let engine = Engine::new(Config {
        clock: Clock::Manual(clock.clone()),
        ..Config::default()
    });
    (engine.store().clone(), clock)
}

#[test]
fn expired_keys_are_gone_for_every_operation() {
    let (st, clock) = manual_store();
    st.set("t", Value::Int(5), Some(Duration::from_secs(10)))
        .unwrap();
    st.set("p", Value::Int(1), None).unwrap();
    assert!(matches!(st.ttl("t").unwrap(), Ttl::Expires(d) if d <= Duration::from_secs(10)));
    assert_eq!(st.ttl("p").unwrap(), Ttl::Persistent);
    assert_eq!(st.ttl("nope").unwrap(), Ttl::Missing);
    clock.advance(Duration::from_secs(11));
    assert_eq!(st.get("t").unwrap(), None);
    assert_eq!(st.keys("").unwrap(), vec!["p".to_string()]);
    assert_eq!(st.ttl("t").unwrap(), Ttl::Missing);
    assert_eq!(st.live_len(), 1);
    assert!(
        !st.delete("t").unwrap(),
        "an expired key does not count as deleted"
    );
    // incr on an expired counter starts again from 0.
    st.set("t2", Value::Int(5), Some(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(st.incr("t2", 1).unwrap(), 1);
    assert_eq!(st.ttl("t2").unwrap(), Ttl::Persistent);
    // set_if_absent sees an expired key as absent.
    st.set("t3", Value::Int(5), Some(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(st.set_if_absent("t3", Value::Int(6), None).unwrap());
}

/// On the real clock of every backend: `incr` keeps a counter's deadline, the counter then
/// expires for every operation (`len` included, which on `local://` counts the expiry index),
/// and an `incr` after that starts again from the delta, with no deadline.
#[test]
fn an_incremented_counter_keeps_its_real_ttl_and_still_expires() {
    with_engine(|e, _| {
        let st = e.store();
        st.set("other", Value::Int(0), None).unwrap();
        st.set("hits", Value::Int(1), Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(st.incr("hits", 1).unwrap(), 2);
        assert_eq!(st.incr("hits", 200).unwrap(), 202, "a longer encoding");
        assert!(
            matches!(st.ttl("hits").unwrap(), Ttl::Expires(d) if d <= Duration::from_millis(300))
        );
        assert_eq!(st.len(), 2);
        let give_up = Instant::now() + Duration::from_secs(10);
        while st.get("hits").unwrap().is_some() {
            assert!(Instant::now() < give_up, "the counter never expired");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(st.len(), 1, "an expired counter is not counted");
        assert_eq!(st.keys("").unwrap(), vec!["other".to_string()]);
        assert_eq!(st.ttl("hits").unwrap(), Ttl::Missing);
        assert_eq!(st.incr("hits", 5).unwrap(), 5);
        assert_eq!(st.ttl("hits").unwrap(), Ttl::Persistent);
        assert_eq!(st.len(), 2);
    });
}

#[test]
fn expire_persist_and_incr_keeps_ttl() {
    let (st, clock) = manual_store();
    st.set("c", Value::Int(1), None).unwrap();
    assert!(st.expire("c", Duration::from_secs(5)).unwrap());
    assert!(!st.expire("missing", Duration::from_secs(5)).unwrap());
    assert_eq!(st.incr("c", 1).unwrap(), 2);
    assert!(
        matches!(st.ttl("c").unwrap(), Ttl::Expires(_)),
        "incr keeps the TTL"
    );
    assert!(st.persist("c").unwrap());
    clock.advance(Duration::from_secs(6));
    assert_eq!(st.get("c").unwrap(), Some(Value::Int(2)));
    st.set("d", Value::Int(1), Some(Duration::from_secs(1)))
        .unwrap();
    st.set("d", Value::Int(2), None).unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        st.get("d").unwrap(),
        Some(Value::Int(2)),
        "a plain set clears the TTL"
    );
}

#[test]
fn expired_memory_is_reclaimed_without_a_call() {
    let engine = Engine::new(Config::default());
    let st = engine.store();
    // Set with a TTL far away first, so nothing can expire before the count below.
    for i in 0..1000 {
        st.set(
            &format!("session:{i}"),
            Value::Int(i),
            Some(Duration::from_secs(3600)),
        )
        .unwrap();
    }
    st.set("keep", Value::Int(1), None).unwrap();
    let one = Value::Int(1).encoded_len();
    assert_eq!(st.len(), 1001, "nothing expired yet");
    assert!(st.value_bytes() > 1000 * one, "nothing reclaimed yet");
    for i in 0..1000 {
        assert!(st
            .expire(&format!("session:{i}"), Duration::from_millis(1))
            .unwrap());
    }
    // Nobody calls the store now: only the reaper thread (every 100 ms) can reclaim the values
    // (`len` stops counting expired keys at once; `value_bytes` counts what is still held). The
    // loop is bounded (30 s: a busy machine, valgrind), not a timing check.
    let deadline = Instant::now() + Duration::from_secs(30);
    while st.value_bytes() > one && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        st.value_bytes(),
        one,
        "expired values reclaimed by the reaper"
    );
    assert_eq!(st.len(), 1);
}
