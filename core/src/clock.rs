//! Time for TTLs: the real monotonic clock, or a manual one that tests and fuzzers move by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the store reads the time for expiry.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The monotonic system clock.
    System(Instant),
    /// A clock that only moves when told to (see [`ManualClock`]).
    Manual(ManualClock),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::System(Instant::now())
    }
}

impl Clock {
    /// Milliseconds since the clock's origin; never 0, so 0 can mean "no expiry".
    pub(crate) fn now_ms(&self) -> u64 {
        match self {
            Clock::System(origin) => origin.elapsed().as_millis() as u64 + 1,
            Clock::Manual(m) => m.0.load(Ordering::Acquire) + 1,
        }
    }

    /// The deadline `ttl` from now, in the clock's milliseconds (at least 1 ms ahead).
    pub(crate) fn deadline(&self, ttl: Duration) -> u64 {
        let ms = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX / 2)
            .max(1);
        self.now_ms().saturating_add(ms)
    }
}

/// A clock moved by hand, shared between a test and the store it drives.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::AcqRel);
    }
}
