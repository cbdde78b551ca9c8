//! Loom model of the wake-flag protocol (`hornbeam_core::sync::WakeFlag`): whatever the
//! interleaving, a consumer that decides to wait has been (or will be) signalled.
//! Run with `make loom` (`RUSTFLAGS="--cfg loom" cargo test --release --test loom_wake`).
#![cfg(loom)]

use hornbeam_core::sync::WakeFlag;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// One producer queues an item while the consumer, having drained the queue, re-arms.
#[test]
fn no_lost_wakeup() {
    loom::model(|| {
        let queue = Arc::new(AtomicUsize::new(0));
        let signals = Arc::new(AtomicUsize::new(0));
        // The flag starts raised: the consumer was woken for an earlier batch it just drained.
        let flag = Arc::new(WakeFlag::new());
        assert!(flag.raise());

        let producer = {
            let (queue, signals, flag) = (queue.clone(), signals.clone(), flag.clone());
            thread::spawn(move || {
                queue.fetch_add(1, Ordering::Release);
                if flag.raise() {
                    signals.fetch_add(1, Ordering::Release);
                }
            })
        };
        // Consumer: found the queue empty, lowers the flag, looks again.
        flag.lower();
        let saw_item = queue.load(Ordering::Acquire) > 0;
        producer.join().unwrap();
        if !saw_item {
            assert_eq!(
                signals.load(Ordering::Acquire),
                1,
                "consumer waits but nobody signals"
            );
        }
    });
}

/// Two producers: at most one signal per batch, and still none lost.
#[test]
fn one_signal_per_batch() {
    loom::model(|| {
        let queue = Arc::new(AtomicUsize::new(0));
        let signals = Arc::new(AtomicUsize::new(0));
        let flag = Arc::new(WakeFlag::new());
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let (queue, signals, flag) = (queue.clone(), signals.clone(), flag.clone());
                thread::spawn(move || {
                    queue.fetch_add(1, Ordering::Release);
                    if flag.raise() {
                        signals.fetch_add(1, Ordering::Release);
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(
            signals.load(Ordering::Acquire),
            1,
            "two items, one lowered flag: one signal"
        );
    });
}
