//! Rate-limited warnings: a flood of the same event costs a few log lines, not one each.
//!
//! A hostile peer can make the same warning happen thousands of times a second (refused names,
//! connections over a cap, an accept loop out of descriptors). Each kind of warning gets a
//! [`Throttle`]: a few lines per period pass, the rest are counted and the count is told with
//! the next line that passes.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Lets at most `burst` events per `period` through.
pub struct Throttle {
    burst: u32,
    period: Duration,
    state: Mutex<State>,
}

struct State {
    window_start: Option<Instant>,
    passed: u32,
    held_back: u64,
}

impl Throttle {
    /// A throttle passing `burst` events per `period`.
    pub const fn new(burst: u32, period: Duration) -> Throttle {
        Throttle {
            burst,
            period,
            state: Mutex::new(State {
                window_start: None,
                passed: 0,
                held_back: 0,
            }),
        }
    }

    /// Whether this event may be logged: `Some(n)` with the number of events held back since
    /// the last one that passed, `None` if this one is held back.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        let new_window = state
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.period);
        if new_window {
            state.window_start = Some(now);
            state.passed = 0;
        }
        if state.passed >= self.burst {
            state.held_back += 1;
            return None;
        }
        state.passed += 1;
        Some(std::mem::take(&mut state.held_back))
    }
}

/// ` (N more like it not logged)` when `held_back` is not zero, for the end of a log line.
pub fn held_back_note(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more like it not logged)")
    }
}

/// Logs a warning through `throttle`: `warn_throttled!(THROTTLE, "format", args...)`.
#[macro_export]
macro_rules! warn_throttled {
    ($throttle:expr, $($arg:tt)+) => {
        if let Some(held_back) = $throttle.allow() {
            log::warn!("{}{}", format_args!($($arg)+), $crate::throttle::held_back_note(held_back));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst passes, the rest of the period is held back and counted, and the count is
    /// handed to the first event of the next period.
    #[test]
    fn a_flood_is_cut_to_a_burst_per_period_and_counted() {
        let throttle = Throttle::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let passed: Vec<Option<u64>> = (0..1000).map(|_| throttle.allow_at(t0)).collect();
        assert_eq!(passed.iter().filter(|p| p.is_some()).count(), 3);
        assert_eq!(throttle.allow_at(t0 + Duration::from_secs(11)), Some(997));
        assert_eq!(throttle.allow_at(t0 + Duration::from_secs(11)), Some(0));
    }

    #[test]
    fn a_throttle_lets_a_burst_through_then_counts() {
        let t = Throttle::new(3, Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.allow(), None);
        }
        let t = Throttle::new(1, Duration::ZERO);
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), Some(0));
    }
}
