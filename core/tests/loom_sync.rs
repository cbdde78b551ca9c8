//! Loom models of core's other synchronisation protocols (`hornbeam_core::sync`): the ready set's
//! id list and signal, the hand-off of messages waiting behind a lag notice, and the
//! process-wide engine slot. Run with `make loom`.
#![cfg(loom)]

use hornbeam_core::sync::{GlobalSlot, HandOff, ReadyList};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// A mailbox marks itself ready while the event loop takes the previous batch: the id is either
/// in what the loop took, or a wake-up is pending for it (and the next take returns it).
#[test]
fn ready_list_never_strands_an_id() {
    loom::model(|| {
        let list = Arc::new(ReadyList::new());
        let pending = Arc::new(AtomicBool::new(false)); // the descriptor
                                                        // An earlier batch raised the flag and signalled.
        assert!(list.mark(0));
        pending.store(true, Ordering::SeqCst);
        let producer = {
            let (list, pending) = (list.clone(), pending.clone());
            thread::spawn(move || {
                if list.mark(1) {
                    pending.store(true, Ordering::SeqCst);
                }
            })
        };
        // The event loop, woken for batch 0: clear the descriptor, then take.
        pending.store(false, Ordering::SeqCst);
        let got = list.take();
        producer.join().unwrap();
        assert!(got.contains(&0));
        if !got.contains(&1) {
            assert!(
                pending.load(Ordering::SeqCst),
                "id 1 waits, nobody signalled"
            );
            assert_eq!(list.take(), vec![1]);
        }
    });
}

/// Two producers in one batch: one signal between them.
#[test]
fn ready_list_signals_once_per_batch() {
    loom::model(|| {
        let list = Arc::new(ReadyList::new());
        let signals = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (1..=2)
            .map(|id| {
                let (list, signals) = (list.clone(), signals.clone());
                thread::spawn(move || {
                    if list.mark(id) {
                        signals.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(signals.load(Ordering::SeqCst), 1);
        let mut ids = list.take();
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
    });
}

/// Two receivers each hold a message behind a lag notice while a third receives: every message
/// comes out exactly once, and one receiver's messages in the order it put them.
#[test]
fn hand_off_loses_nothing() {
    loom::model(|| {
        let hand = Arc::new(HandOff::new());
        let putter = {
            let hand = hand.clone();
            thread::spawn(move || {
                hand.put(1);
                hand.put(2);
            })
        };
        let other = {
            let hand = hand.clone();
            thread::spawn(move || hand.put(3))
        };
        let early = hand.take();
        putter.join().unwrap();
        other.join().unwrap();
        let mut seen: Vec<u32> = early.into_iter().collect();
        for _ in 0..4 {
            if let Some(x) = hand.take() {
                seen.push(x);
            }
        }
        assert!(hand.is_empty());
        let pos = |x| {
            seen.iter()
                .position(|&y| y == x)
                .expect("every item comes out")
        };
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(
            pos(1) < pos(2),
            "one receiver's items keep their order: {seen:?}"
        );
    });
}

/// Counts the values built and dropped (with std's types: the slot leaks values by design, and
/// loom reports a leaked loom `Arc`).
struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Two threads ask for the process-wide engine at once: both get the same one, the loser's is
/// dropped, and after `forget` the next caller builds a new one.
#[test]
fn global_slot_publishes_one_value() {
    loom::model(|| {
        let slot: &'static GlobalSlot<Counted> = Box::leak(Box::new(GlobalSlot::new()));
        let built = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let get = {
            let (built, dropped) = (built.clone(), dropped.clone());
            move || {
                let v = slot
                    .get_or_try_init(|| {
                        built.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, ()>(Counted(dropped.clone()))
                    })
                    .unwrap();
                v as *const Counted as usize
            }
        };
        let other = thread::spawn(get.clone());
        let mine = get();
        let theirs = other.join().unwrap();
        assert_eq!(mine, theirs, "one value for everybody");
        let count =
            |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::SeqCst);
        let b = count(&built);
        assert!(b == 1 || b == 2);
        assert_eq!(count(&dropped), b - 1, "the loser's value is dropped");
        slot.forget();
        assert_ne!(get(), mine, "a new value after forget");
        assert_eq!(count(&built), b + 1);
    });
}
