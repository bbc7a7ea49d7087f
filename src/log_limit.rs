//! Keeping stderr bounded when the network repeats itself: text from the network is logged as a
//! short prefix ([`prefix`]), and a warning that can repeat without end (an accept loop out of
//! descriptors, a flood of refused requests) goes through a [`Throttle`] that lets a few per
//! interval through and then says how many were held back.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Bytes of network-supplied text (a name, a path) shown in a log line.
pub const LOGGED_TEXT: usize = 120;

/// `text` cut to at most `max` bytes on a character boundary, with how long it was when cut.
pub fn prefix(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}... ({} bytes)", &text[..end], text.len()))
}

/// Lets at most `burst` events through per `interval`; counts the rest.
pub struct Throttle {
    burst: u32,
    interval: Duration,
    state: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    passed: u32,
    held: u64,
}

impl Throttle {
    /// A throttle letting `burst` events through every `interval`.
    pub const fn new(burst: u32, interval: Duration) -> Throttle {
        Throttle {
            burst,
            interval,
            state: Mutex::new(Window {
                start: None,
                passed: 0,
                held: 0,
            }),
        }
    }

    /// `Some(held)` if this event may be logged, with how many were held back since the last
    /// one that was (to be said in the line); `None` if it must not.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut w = self.state.lock();
        if w.start
            .is_none_or(|start| now.duration_since(start) >= self.interval)
        {
            w.start = Some(now);
            w.passed = 0;
        }
        if w.passed >= self.burst {
            w.held += 1;
            return None;
        }
        w.passed += 1;
        Some(std::mem::take(&mut w.held))
    }
}

/// ` (N similar messages not shown)` when `held` > 0, for the end of a throttled line.
pub fn held_note(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} similar messages not shown)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_cut_on_character_boundaries() {
        assert_eq!(prefix("short", 10), "short");
        assert_eq!(prefix("abcdef", 3), "abc... (6 bytes)");
        assert_eq!(prefix("ééé", 3), "é... (6 bytes)");
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
