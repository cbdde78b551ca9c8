//! Watches: every store operation produces its event, per-key order under concurrent writers,
//! expiry, lag notices, unwatch; on every backend (embedded, local://, Redis).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::with_engine;
use hornbeam_core::{ChangeKind, Engine, Error, Mailbox, MailboxConfig, RecvError, Value};

/// The next event: (kind, key, value as an integer or a string, or "" when empty).
fn next(mb: &Mailbox) -> (ChangeKind, String, String) {
    let m = mb
        .recv_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("no event: {e}"));
    let kind = m.change_kind().expect("a watch event, not a message");
    let value = if m.payload().is_empty() {
        String::new()
    } else {
        let v = Value::from_msgpack(m.payload(), m.topic()).unwrap();
        match v.as_int() {
            Some(i) => i.to_string(),
            None => v.decode::<String>().unwrap(),
        }
    };
    (kind, m.topic().to_owned(), value)
}

fn ev(kind: ChangeKind, key: &str, value: &str) -> (ChangeKind, String, String) {
    (kind, key.to_owned(), value.to_owned())
}

fn s(v: &str) -> Value {
    Value::encode(v).unwrap()
}

#[test]
fn every_operation_produces_its_event_with_the_committed_value() {
    with_engine(|e, _| {
        let st = e.store();
        let mb = e.bus().mailbox_with(MailboxConfig {
            capacity: 64,
            max_bytes: 1 << 20,
        });
        assert!(mb.watch("room:").unwrap());
        assert!(!mb.watch("room:").unwrap(), "already watched");
        assert_eq!(mb.watches(), vec!["room:".to_string()]);
        st.set("room:a", s("ann"), None).unwrap();
        assert_eq!(next(&mb), ev(ChangeKind::Set, "room:a", "ann"));
        st.set("other", s("x"), None).unwrap(); // outside the prefix: nothing
        assert!(!st.set_if_absent("room:a", s("bob"), None).unwrap());
        assert!(st.set_if_absent("room:b", s("bob"), None).unwrap());
        assert_eq!(next(&mb), ev(ChangeKind::Set, "room:b", "bob"));
        assert_eq!(st.incr("room:n", 5).unwrap(), 5);
        assert_eq!(next(&mb), ev(ChangeKind::Incr, "room:n", "5"));
        assert_eq!(st.incr("room:n", -2).unwrap(), 3);
        assert_eq!(next(&mb), ev(ChangeKind::Incr, "room:n", "3"));
        assert!(st.delete("room:a").unwrap());
        assert!(!st.delete("room:a").unwrap()); // nothing was there: no event
        assert_eq!(next(&mb), ev(ChangeKind::Delete, "room:a", ""));
        st.set_many(vec![("room:c", s("c")), ("elsewhere", s("e"))], None)
            .unwrap();
        assert_eq!(next(&mb), ev(ChangeKind::Set, "room:c", "c"));
        st.clear();
        assert_eq!(next(&mb), ev(ChangeKind::Clear, "", ""));
        assert!(mb.unwatch("room:").unwrap());
        st.set("room:z", s("z"), None).unwrap();
        st.set("marker", s("m"), None).unwrap();
        assert!(mb.watch("marker").unwrap());
        st.set("marker", s("m2"), None).unwrap();
        // The unwatched change never came: the next event is the marker's.
        assert_eq!(next(&mb), ev(ChangeKind::Set, "marker", "m2"));
        assert_eq!(mb.try_recv().unwrap_err(), RecvError::Empty);
    });
}

#[test]
fn events_of_one_key_arrive_in_commit_order_under_concurrent_writers() {
    with_engine(|e, _| {
        let mb = e.bus().mailbox_with(MailboxConfig {
            capacity: 10_000,
            max_bytes: 1 << 24,
        });
        mb.watch("hot").unwrap();
        let store = Arc::new(e.store().clone());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let st = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        st.incr("hot", 1).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let seen: Vec<i64> = (0..1000).map(|_| next(&mb).2.parse().unwrap()).collect();
        assert_eq!(seen, (1..=1000).collect::<Vec<i64>>());
    });
}

#[test]
fn expiry_is_an_event() {
    with_engine(|e, _| {
        let mb = e.bus().mailbox();
        mb.watch("session:").unwrap();
        e.store()
            .set("session:1", s("x"), Some(Duration::from_millis(1)))
            .unwrap();
        assert_eq!(next(&mb), ev(ChangeKind::Set, "session:1", "x"));
        // The reaper (or any later write) reclaims it; reaping here makes it happen now. Bounded.
        let mut got = None;
        for _ in 0..500 {
            std::thread::sleep(Duration::from_millis(2));
            e.store().reap_expired();
            if let Ok(m) = mb.recv_timeout(Some(Duration::from_millis(10))) {
                got = Some(m);
                break;
            }
        }
        let m = got.expect("an expiry event");
        assert_eq!(
            (m.change_kind(), m.topic()),
            (Some(ChangeKind::Expire), "session:1")
        );
    });
}

#[test]
fn expiry_events_come_without_anyone_reaping_or_writing() {
    // Embedded: the reaper thread; local:// and Redis: the watching process's relay reaps about
    // once a second. Nobody calls `reap_expired` and nothing else is written.
    with_engine(|e, _| {
        let mb = e.bus().mailbox();
        mb.watch("ttl:").unwrap();
        e.store()
            .set("ttl:a", s("x"), Some(Duration::from_millis(20)))
            .unwrap();
        assert_eq!(next(&mb), ev(ChangeKind::Set, "ttl:a", "x"));
        assert_eq!(next(&mb), ev(ChangeKind::Expire, "ttl:a", ""));
    });
}

#[test]
fn a_watcher_that_falls_behind_gets_a_lag_notice_never_unbounded_memory() {
    with_engine(|e, _| {
        let mb = e.bus().mailbox_with(MailboxConfig {
            capacity: 8,
            max_bytes: 1 << 20,
        });
        mb.watch("k").unwrap();
        for i in 0..100 {
            e.store().incr("k", 1).unwrap();
            let _ = i;
        }
        // Wait (bounded) until all 100 events were offered: the lag count then settles at 92.
        let mut items = Vec::new();
        for _ in 0..200 {
            if mb.len() == 8 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        loop {
            match mb.try_recv() {
                Ok(m) => items.push(Ok(m.change_kind())),
                Err(RecvError::Empty) => break,
                Err(other) => items.push(Err(other)),
            }
        }
        assert_eq!(items.len(), 9, "{items:?}");
        assert!(items[..8].iter().all(|i| *i == Ok(Some(ChangeKind::Incr))));
        assert_eq!(items[8], Err(RecvError::Lagged(92)));
    });
}

#[test]
fn closing_a_watching_mailbox_removes_its_watches() {
    let engine = Engine::new(Default::default());
    let mb = engine.bus().mailbox();
    mb.watch("a").unwrap();
    let other = engine.bus().mailbox();
    other.watch("a").unwrap();
    mb.close();
    engine.store().set("a", Value::Int(1), None).unwrap();
    assert_eq!(
        other.try_recv().unwrap().change_kind(),
        Some(ChangeKind::Set)
    );
    assert!(matches!(mb.watch("b"), Err(Error::Closed)));
}
