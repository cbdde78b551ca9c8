//! A mailbox's bounds and its stream of messages and lag notices, against a `VecDeque` model.
//!
//! The input picks the mailbox's bounds (capacity, bytes) and a sequence of publishes of various
//! sizes and receives. Checked after every step:
//! - nothing accepted is lost or reordered: receives give exactly the accepted messages, in order;
//! - nothing is lost silently: every refused publish is counted in a lag notice, and each notice
//!   sits where the drops happened (before the first message accepted after them);
//! - the bounds hold: never more than `capacity` messages, never more than `max_bytes` bytes
//!   unless the mailbox holds a single message (an oversized message still fits an empty one);
//!   a message whose lag notice was just received has left the queue and is not counted;
//! - the bounds do not refuse what fits: an empty mailbox accepts anything, and a message of at
//!   most `max_bytes / capacity` bytes is refused only when the mailbox is full by count.

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use hornbeam_core::{Config, Engine, MailboxConfig, RecvError};

/// One step.
#[derive(Arbitrary, Debug)]
pub enum Step {
    /// Publish a payload of this many bytes (to the one-byte topic `t`).
    Publish(u8),
    /// Publish a payload of this many bytes times 16.
    PublishLarge(u8),
    /// One non-blocking receive.
    Recv,
    /// Receive everything queued.
    Drain,
}

/// What the model expects the stream to hold.
#[derive(Default)]
struct Model {
    /// Accepted messages not yet received: (sequence number, size, drops just before it).
    queue: VecDeque<(u32, usize, u64)>,
    /// Drops not yet attached to a message.
    dropped: u64,
    /// Whether the front message's lag notice was received (the message waits outside the queue).
    held: bool,
}

impl Model {
    /// The queued messages that count against the bounds (not one waiting behind its notice).
    fn counted(&self) -> impl Iterator<Item = &(u32, usize, u64)> {
        self.queue.iter().skip(usize::from(self.held))
    }
}

/// Runs one input (see the module docs).
pub fn check(data: &[u8]) {
    let _ = run(&mut Unstructured::new(data));
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let capacity = u.int_in_range(1..=8usize)?;
    let max_bytes = u.int_in_range(1..=1024usize)?;
    let steps: Vec<Step> = u.arbitrary()?;
    let engine = Engine::new(Config::default());
    let bus = engine.bus();
    let mb = bus.mailbox_with(MailboxConfig {
        capacity,
        max_bytes,
    });
    mb.subscribe("t").expect("subscribe");
    let small = max_bytes / capacity;
    let mut m = Model::default();
    let mut seq: u32 = 0;
    let recv_one = |m: &mut Model| {
        let got = mb.try_recv();
        match m.queue.front_mut() {
            Some((_, _, lag)) if *lag > 0 => {
                assert_eq!(
                    got,
                    Err(RecvError::Lagged(*lag)),
                    "notice before the message"
                );
                *lag = 0;
                m.held = true;
            }
            Some(&mut (n, size, _)) => {
                let msg = got.expect("an accepted message");
                assert_eq!(msg.payload().get(..4), Some(&n.to_le_bytes()[..]), "order");
                assert_eq!(msg.topic().len() + msg.payload().len(), size);
                m.queue.pop_front();
                m.held = false;
            }
            None if m.dropped > 0 => {
                assert_eq!(got, Err(RecvError::Lagged(m.dropped)), "trailing notice");
                m.dropped = 0;
            }
            None => assert_eq!(got, Err(RecvError::Empty)),
        }
    };
    for step in steps.iter().take(512) {
        match *step {
            Step::Publish(n) | Step::PublishLarge(n) => {
                let len = match step {
                    Step::PublishLarge(_) => usize::from(n) * 16,
                    _ => usize::from(n),
                }
                .max(4);
                let mut payload = vec![0u8; len];
                payload[..4].copy_from_slice(&seq.to_le_bytes());
                let size = len + 1;
                let queued = m.counted().count();
                let queued_bytes: usize = m.counted().map(|q| q.1).sum();
                let all_small = size <= small && m.counted().all(|q| q.1 <= small);
                let accepted = bus.publish("t", &payload).expect("publish") == 1;
                if queued == capacity {
                    assert!(!accepted, "accepted past the capacity");
                } else if queued == 0 {
                    assert!(accepted, "an empty mailbox refused {size} bytes");
                } else if all_small {
                    assert!(accepted, "refused a small message below the capacity");
                }
                if accepted {
                    assert!(
                        queued_bytes + size <= max_bytes || queued == 0,
                        "byte bound broken: {queued_bytes} + {size} > {max_bytes}"
                    );
                    m.queue
                        .push_back((seq, size, std::mem::take(&mut m.dropped)));
                } else {
                    m.dropped += 1;
                }
                seq += 1;
            }
            Step::Recv => recv_one(&mut m),
            Step::Drain => {
                for _ in 0..2 * capacity + 2 {
                    recv_one(&mut m);
                }
                assert!(m.queue.is_empty() && m.dropped == 0);
            }
        }
        assert_eq!(mb.len(), m.queue.len(), "queued count");
    }
    Ok(())
}
