//! Concurrency stress tests: `make stress` runs them (they are `#[ignore]`d in `make test`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hornbeam_core::{Config, Engine, MailboxConfig, RecvError};

#[test]
#[ignore]
fn million_increments_on_one_key_are_exact() {
    let engine = Engine::new(Config::default());
    let threads = 4;
    let per = 1_000_000 / threads;
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let st = engine.store().clone();
            std::thread::spawn(move || {
                for _ in 0..per {
                    st.incr("hot", 1).unwrap();
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(
        engine.store().get("hot").unwrap().unwrap().as_int(),
        Some(1_000_000)
    );
}

#[test]
#[ignore]
fn million_subscribe_close_cycles_leave_nothing() {
    let engine = Engine::new(Config::default());
    for i in 0..1_000_000u32 {
        let mb = engine.bus().mailbox();
        mb.subscribe(&format!("room:{}", i % 1000)).unwrap();
        mb.subscribe("room:*:typing").unwrap();
        mb.close();
    }
    assert_eq!(engine.bus().subscription_count(), 0);
    assert_eq!(engine.bus().node_count(), 1);
}

/// Publishers and subscribers race subscribe/close: every message a mailbox accepted is received.
#[test]
#[ignore]
fn racing_subscribers_lose_no_accepted_message() {
    let engine = Engine::new(Config::default());
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let (bus, stop, accepted) = (engine.bus().clone(), stop.clone(), accepted.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let n = bus
                        .publish(&format!("room:{}", i % 4), format!("{p}:{i}").into_bytes())
                        .unwrap();
                    accepted.fetch_add(n, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let subscribers: Vec<_> = (0..3)
        .map(|_| {
            let (bus, received) = (engine.bus().clone(), received.clone());
            std::thread::spawn(move || {
                for round in 0..2000 {
                    let mb = bus.mailbox_with(MailboxConfig {
                        capacity: 1 << 16,
                        max_bytes: usize::MAX,
                    });
                    mb.subscribe(if round % 2 == 0 { "room:*" } else { "room:>" })
                        .unwrap();
                    for _ in 0..20 {
                        match mb.recv_timeout(Some(Duration::from_millis(1))) {
                            Ok(_) => {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            // A full mailbox drops (publish did not count those as accepted).
                            Err(RecvError::Timeout) | Err(RecvError::Lagged(_)) => {}
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                    // After unsubscribing nothing new arrives; what was accepted is still there.
                    mb.unsubscribe(if round % 2 == 0 { "room:*" } else { "room:>" })
                        .unwrap();
                    for r in mb.drain() {
                        match r {
                            Ok(_) => {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(RecvError::Lagged(_)) => {}
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                    mb.close();
                }
            })
        })
        .collect();
    subscribers.into_iter().for_each(|h| h.join().unwrap());
    stop.store(true, Ordering::Relaxed);
    publishers.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(
        received.load(Ordering::Relaxed),
        accepted.load(Ordering::Relaxed)
    );
    assert_eq!(engine.bus().subscription_count(), 0);
    assert_eq!(engine.bus().node_count(), 1);
}
