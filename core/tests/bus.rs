//! Bus behaviour, run across configurations.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::with_engine;
use hornbeam_core::{Config, Engine, Error, MailboxConfig, RecvError};

fn payloads(mb: &hornbeam_core::Mailbox) -> Vec<String> {
    mb.drain()
        .into_iter()
        .map(|r| match r {
            Ok(m) => String::from_utf8(m.payload().to_vec()).unwrap(),
            Err(RecvError::Lagged(n)) => format!("lagged:{n}"),
            Err(e) => format!("{e:?}"),
        })
        .collect()
}

#[test]
fn exact_star_and_tail_patterns() {
    with_engine(|e, _| {
        let bus = e.bus();
        let exact = bus.mailbox();
        let star = bus.mailbox();
        let tail = bus.mailbox();
        exact.subscribe("room:lobby").unwrap();
        star.subscribe("room:*").unwrap();
        tail.subscribe("room:>").unwrap();
        assert_eq!(bus.publish("room:lobby", b"1").unwrap(), 3);
        assert_eq!(
            bus.publish("room:a:b", b"2").unwrap(),
            1,
            "only '>' matches two segments"
        );
        assert_eq!(
            bus.publish("room", b"3").unwrap(),
            0,
            "'>' needs at least one segment"
        );
        assert_eq!(bus.publish("other:lobby", b"4").unwrap(), 0);
        assert_eq!(payloads(&exact), ["1"]);
        assert_eq!(payloads(&star), ["1"]);
        assert_eq!(payloads(&tail), ["1", "2"]);
    });
}

#[test]
fn overlapping_patterns_deliver_once() {
    with_engine(|e, _| {
        let mb = e.bus().mailbox();
        for p in ["a:b", "a:*", "a:>", "*:b", ">"] {
            assert!(mb.subscribe(p).unwrap());
        }
        assert!(!mb.subscribe("a:b").unwrap(), "second subscribe is a no-op");
        assert_eq!(e.bus().publish("a:b", b"x").unwrap(), 1);
        assert_eq!(payloads(&mb), ["x"]);
    });
}

#[test]
fn per_publisher_order_is_kept() {
    with_engine(|e, _| {
        let mb = e.bus().mailbox_with(MailboxConfig {
            capacity: 10_000,
            max_bytes: usize::MAX,
        });
        mb.subscribe("t:*").unwrap();
        let bus = e.bus().clone();
        let n = 2000;
        let handles: Vec<_> = (0..2)
            .map(|p| {
                let bus = bus.clone();
                std::thread::spawn(move || {
                    for i in 0..n {
                        bus.publish(&format!("t:{p}"), format!("{p}:{i}").into_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        let mut next = [0usize; 2];
        for s in payloads(&mb) {
            let (p, i) = s.split_once(':').unwrap();
            let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[p], "publisher {p} out of order");
            next[p] += 1;
        }
        assert_eq!(next, [n, n]);
    });
}

#[test]
fn full_mailbox_drops_counts_and_reports_lag_in_place() {
    let engine = Engine::new(Config::default());
    let mb = engine.bus().mailbox_with(MailboxConfig {
        capacity: 4,
        max_bytes: usize::MAX,
    });
    mb.subscribe("t").unwrap();
    let accepted: usize = (0..10)
        .map(|i| engine.bus().publish("t", vec![b'0' + i]).unwrap())
        .sum();
    assert_eq!(accepted, 4, "publish returns how many mailboxes took it");
    assert_eq!(mb.try_recv().unwrap().payload(), b"0");
    engine.bus().publish("t", b"A").unwrap();
    // 1,2,3 then the lag notice for 6 drops, then A.
    assert_eq!(payloads(&mb), ["1", "2", "3", "lagged:6", "A"]);
    assert_eq!(mb.try_recv(), Err(RecvError::Empty));
}

#[test]
fn lag_is_reported_even_when_nothing_follows() {
    let engine = Engine::new(Config::default());
    let mb = engine.bus().mailbox_with(MailboxConfig {
        capacity: 2,
        max_bytes: usize::MAX,
    });
    mb.subscribe("t").unwrap();
    for _ in 0..5 {
        engine.bus().publish("t", b"x").unwrap();
    }
    assert_eq!(payloads(&mb), ["x", "x", "lagged:3"]);
}

#[test]
fn byte_bound_holds() {
    let engine = Engine::new(Config::default());
    let mb = engine.bus().mailbox_with(MailboxConfig {
        capacity: 1000,
        max_bytes: 1000,
    });
    mb.subscribe("t").unwrap();
    let mut accepted = 0;
    for _ in 0..100 {
        accepted += engine.bus().publish("t", vec![0u8; 99]).unwrap();
    }
    assert_eq!(
        accepted, 10,
        "ten messages of 100 bytes (topic included) fill 1000 bytes"
    );
    let got = mb.drain();
    assert_eq!(got.len(), 11);
    assert_eq!(got[10], Err(RecvError::Lagged(90)));
    // Room again after draining.
    assert_eq!(engine.bus().publish("t", vec![0u8; 99]).unwrap(), 1);
}

/// Found by `fuzz/mailbox_model`: small messages (which skip the byte check while only small
/// ones are queued) must not pile up behind a large one past the byte bound.
#[test]
fn small_messages_behind_a_large_one_keep_the_byte_bound() {
    let engine = Engine::new(Config::default());
    let mb = engine.bus().mailbox_with(MailboxConfig {
        capacity: 4,
        max_bytes: 100,
    });
    mb.subscribe("t").unwrap();
    // Oversized, into an empty mailbox: accepted.
    assert_eq!(engine.bus().publish("t", vec![0u8; 199]).unwrap(), 1);
    for _ in 0..3 {
        assert_eq!(engine.bus().publish("t", vec![0u8; 9]).unwrap(), 0);
    }
    let got = mb.drain();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1], Err(RecvError::Lagged(3)));
    // Once the large one is gone, small ones fit again, up to the capacity.
    for _ in 0..4 {
        assert_eq!(engine.bus().publish("t", vec![0u8; 9]).unwrap(), 1);
    }
    assert_eq!(mb.len(), 4);
}

#[test]
fn payload_is_shared_not_copied() {
    let engine = Engine::new(Config::default());
    let a = engine.bus().mailbox();
    let b = engine.bus().mailbox();
    a.subscribe("t").unwrap();
    b.subscribe("t").unwrap();
    engine.bus().publish("t", b"shared").unwrap();
    let (ma, mb) = (a.try_recv().unwrap(), b.try_recv().unwrap());
    assert!(ma.shares_with(&mb));
}

#[test]
fn close_removes_everything_and_wakes_receivers() {
    with_engine(|e, _| {
        let bus = e.bus();
        let mb = Arc::new(bus.mailbox());
        mb.subscribe("a:b:c").unwrap();
        mb.subscribe("a:*:>").unwrap();
        assert_eq!(bus.subscription_count(), 2);
        let waiter = {
            let mb = mb.clone();
            std::thread::spawn(move || mb.recv_timeout(Some(Duration::from_secs(120))))
        };
        std::thread::sleep(Duration::from_millis(50));
        mb.close();
        assert_eq!(waiter.join().unwrap(), Err(RecvError::Closed));
        assert_eq!(bus.subscription_count(), 0);
        assert_eq!(bus.node_count(), 1, "no trie node left behind");
        assert_eq!(mb.subscribe("x"), Err(Error::Closed));
        assert_eq!(bus.publish("a:b:c", b"x").unwrap(), 0);
    });
}

#[test]
fn dropping_a_mailbox_unsubscribes_it() {
    with_engine(|e, _| {
        for i in 0..50_000 {
            let mb = e.bus().mailbox();
            mb.subscribe(&format!("room:{}", i % 100)).unwrap();
            mb.subscribe("room:*").unwrap();
        }
        assert_eq!(e.bus().subscription_count(), 0);
        assert_eq!(e.bus().node_count(), 1);
    });
}

#[test]
fn recv_timeout_times_out_and_receives() {
    let engine = Engine::new(Config::default());
    let mb = engine.bus().mailbox();
    mb.subscribe("t").unwrap();
    let t = Instant::now();
    assert_eq!(
        mb.recv_timeout(Some(Duration::from_millis(30))),
        Err(RecvError::Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(25));
    let bus = engine.bus().clone();
    let p = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        bus.publish("t", b"late").unwrap()
    });
    assert_eq!(
        mb.recv_timeout(Some(Duration::from_secs(5)))
            .unwrap()
            .payload(),
        b"late"
    );
    assert_eq!(p.join().unwrap(), 1);
}

fn readable(fd: i32, timeout_ms: i32) -> bool {
    let mut pfd = libc_poll::PollFd {
        fd,
        events: libc_poll::POLLIN,
        revents: 0,
    };
    libc_poll::poll(&mut pfd, timeout_ms) > 0
}

/// Minimal poll(2) wrapper for the readiness tests.
mod libc_poll {
    #[repr(C)]
    pub(super) struct PollFd {
        pub(super) fd: i32,
        pub(super) events: i16,
        pub(super) revents: i16,
    }
    pub(super) const POLLIN: i16 = 1;
    extern "C" {
        #[link_name = "poll"]
        fn c_poll(fds: *mut PollFd, n: u64, timeout: i32) -> i32;
    }
    pub(super) fn poll(fd: &mut PollFd, timeout_ms: i32) -> i32 {
        // SAFETY: `fd` is one valid, exclusively borrowed pollfd for the duration of the call.
        unsafe { c_poll(fd, 1, timeout_ms) }
    }
}

#[test]
fn readiness_fd_is_coalesced_and_rearmed() {
    let engine = Engine::new(Config::default());
    let mb = engine.bus().mailbox();
    let fd = mb.fd().unwrap();
    mb.subscribe("t").unwrap();
    assert!(!readable(fd, 0));
    for _ in 0..100 {
        engine.bus().publish("t", b"x").unwrap();
    }
    assert!(readable(fd, 1000));
    let mut n = 0;
    while mb.try_recv_arm().is_ok() {
        n += 1;
    }
    assert_eq!(n, 100);
    assert!(!readable(fd, 0), "re-armed after draining");
    engine.bus().publish("t", b"y").unwrap();
    assert!(readable(fd, 1000), "next batch signals again");
}

#[test]
fn fd_made_after_messages_is_ready() {
    let engine = Engine::new(Config::default());
    let mb = engine.bus().mailbox();
    mb.subscribe("t").unwrap();
    engine.bus().publish("t", b"x").unwrap();
    assert!(readable(mb.fd().unwrap(), 1000));
}

#[test]
fn invalid_topics_and_sizes_are_errors() {
    let engine = Engine::new(Config::default());
    let bus = engine.bus();
    assert!(matches!(
        bus.publish("room:*", b"x"),
        Err(Error::InvalidTopic { .. })
    ));
    assert!(matches!(
        bus.publish("", b"x"),
        Err(Error::InvalidTopic { .. })
    ));
    let mb = bus.mailbox();
    assert!(matches!(
        mb.subscribe("a:>:b"),
        Err(Error::InvalidTopic { .. })
    ));
    assert!(matches!(
        mb.subscribe(&"x".repeat(5000)),
        Err(Error::InvalidTopic { .. })
    ));
    let huge = vec![0u8; engine.store().limits().max_message_len + 1];
    assert!(matches!(
        bus.publish("t", huge),
        Err(Error::MessageTooLarge { .. })
    ));
    assert_eq!(bus.subscription_count(), 0);
}

#[test]
fn ready_set_reports_each_mailbox_once_per_batch() {
    let engine = Engine::new(Config::default());
    let set = hornbeam_core::ReadySet::new().unwrap();
    let a = engine.bus().mailbox();
    let b = engine.bus().mailbox();
    a.subscribe("t:a").unwrap();
    b.subscribe("t:b").unwrap();
    engine.bus().publish("t:a", b"early").unwrap();
    a.attach(&set).unwrap();
    b.attach(&set).unwrap();
    assert!(
        readable(set.fd(), 1000),
        "a message queued before attaching is reported"
    );
    assert_eq!(set.take(), vec![a.id()]);
    assert!(!readable(set.fd(), 0));
    for _ in 0..10 {
        engine.bus().publish("t:a", b"x").unwrap();
        engine.bus().publish("t:b", b"y").unwrap();
    }
    assert!(readable(set.fd(), 1000));
    assert_eq!(
        set.take(),
        vec![b.id()],
        "a was not drained yet: it is not reported twice"
    );
    let mut n = 0;
    while a.try_recv_arm().is_ok() {
        n += 1;
    }
    assert_eq!(n, 11);
    engine.bus().publish("t:a", b"z").unwrap();
    assert_eq!(
        set.take(),
        vec![a.id()],
        "drained to empty, so reported again"
    );
    let other = hornbeam_core::ReadySet::new().unwrap();
    assert!(a.attach(&other).is_err());
    b.close();
    assert!(
        set.take().contains(&b.id()),
        "closing reports the mailbox so its waiter wakes"
    );
}

/// A thread that publishes to one topic again and again uses its memo of the lookup (no lock);
/// every kind of subscription change made before a publish (here from other threads, joined
/// first) is seen by it: a new exact subscriber, a new overlapping pattern (still one delivery
/// per mailbox), an unsubscribe, a close, a drop; a second bus with the same topic in the same
/// thread gets its own subscribers.
#[test]
fn a_repeated_publish_sees_every_subscription_change_before_it() {
    with_engine(|e, _| {
        let bus = e.bus();
        let a = bus.mailbox();
        a.subscribe("hot:t").unwrap();
        for _ in 0..3 {
            assert_eq!(bus.publish("hot:t", b"x").unwrap(), 1);
        }
        assert_eq!(payloads(&a), ["x", "x", "x"]);

        let b = std::thread::scope(|s| {
            s.spawn(|| {
                let b = bus.mailbox();
                b.subscribe("hot:t").unwrap();
                b
            })
            .join()
            .unwrap()
        });
        assert_eq!(bus.publish("hot:t", b"1").unwrap(), 2, "a new subscriber");
        assert_eq!(bus.publish("hot:t", b"2").unwrap(), 2);
        assert_eq!(payloads(&b), ["1", "2"]);

        std::thread::scope(|s| s.spawn(|| b.subscribe("hot:*").unwrap()).join().unwrap());
        assert_eq!(
            bus.publish("hot:t", b"3").unwrap(),
            2,
            "a pattern overlapping"
        );
        assert_eq!(bus.publish("hot:t", b"4").unwrap(), 2);
        assert_eq!(payloads(&b), ["3", "4"], "once per mailbox");

        std::thread::scope(|s| s.spawn(|| a.unsubscribe("hot:t").unwrap()).join().unwrap());
        assert_eq!(bus.publish("hot:t", b"5").unwrap(), 1, "an unsubscribe");
        assert_eq!(bus.publish("hot:t", b"6").unwrap(), 1);
        assert_eq!(
            payloads(&a),
            ["1", "2", "3", "4"],
            "nothing after its unsubscribe"
        );
        assert_eq!(payloads(&b), ["5", "6"]);

        let c = bus.mailbox();
        c.subscribe("hot:t").unwrap();
        assert_eq!(bus.publish("hot:t", b"7").unwrap(), 2);
        std::thread::scope(|s| s.spawn(|| c.close()).join().unwrap());
        assert_eq!(bus.publish("hot:t", b"8").unwrap(), 1, "a close");
        drop(b);
        assert_eq!(bus.publish("hot:t", b"9").unwrap(), 0, "a drop");
        assert_eq!(bus.publish("hot:t", b"10").unwrap(), 0);

        let other = Engine::new(Config::default());
        let d = other.bus().mailbox();
        d.subscribe("hot:t").unwrap();
        let a2 = bus.mailbox();
        a2.subscribe("hot:t").unwrap();
        for i in 0..3 {
            assert_eq!(other.bus().publish("hot:t", b"o").unwrap(), 1, "round {i}");
            assert_eq!(bus.publish("hot:t", b"b").unwrap(), 1, "round {i}");
        }
        assert_eq!(
            payloads(&d),
            ["o", "o", "o"],
            "each bus its own subscribers"
        );
        assert_eq!(payloads(&a2), ["b", "b", "b"]);
    });
}

/// Publishing to nobody is remembered too, and a first subscriber is then seen.
#[test]
fn a_repeated_publish_to_nobody_sees_a_first_subscriber() {
    with_engine(|e, _| {
        let bus = e.bus();
        for _ in 0..3 {
            assert_eq!(bus.publish("empty:t", b"x").unwrap(), 0);
        }
        let a = bus.mailbox();
        a.subscribe("empty:>").unwrap();
        assert_eq!(bus.publish("empty:t", b"y").unwrap(), 1);
        assert_eq!(payloads(&a), ["y"]);
    });
}
