//! Where the peer's console lines go, and how transfer progress is shown.
//!
//! Any thread may print a whole line through [`Output`]. In plain mode (stdin not a terminal)
//! that is stdout; the interactive console prints above its prompt instead, so that a line
//! arriving while the user types never destroys what was typed.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A sink for whole console lines.
pub trait Output: Send + Sync {
    /// Prints one line (no newline needed).
    fn line(&self, text: &str);
}

/// Plain stdout.
pub struct PlainOutput;

impl Output for PlainOutput {
    fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// Text that came from another host, made safe to print: control characters (which could
/// move the cursor or recolour the terminal) are shown as `\u{..}` escapes.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Shared handle to the console output.
pub type SharedOutput = Arc<dyn Output>;

/// Files smaller than this get no progress lines: they finish at once.
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// Reports a transfer's progress as a few lines: at each quarter, with rate and time left.
pub struct Progress {
    out: SharedOutput,
    label: String,
    total: u64,
    start_at: u64,
    started: Instant,
    next_quarter: u64,
    enabled: bool,
}

impl Progress {
    /// Progress of `label` (e.g. "Download de video.bin"), `total` bytes, starting at
    /// `start_at` (resume).
    pub fn new(out: SharedOutput, label: String, total: u64, start_at: u64) -> Progress {
        let next_quarter = start_at
            .saturating_mul(4)
            .checked_div(total)
            .map_or(5, |q| q + 1);
        Progress {
            out,
            label,
            total,
            start_at,
            started: Instant::now(),
            next_quarter,
            enabled: total >= PROGRESS_MIN_BYTES,
        }
    }

    /// Records that `done` bytes of the whole file are now transferred.
    pub fn update(&mut self, done: u64) {
        if !self.enabled || self.next_quarter > 4 {
            return;
        }
        if done * 4 < self.next_quarter * self.total {
            return;
        }
        while self.next_quarter <= 4 && done * 4 >= self.next_quarter * self.total {
            self.next_quarter += 1;
        }
        let elapsed = self.started.elapsed().max(Duration::from_millis(1));
        let moved = done.saturating_sub(self.start_at);
        let rate = moved as f64 / elapsed.as_secs_f64();
        let left = if rate > 0.0 {
            (self.total.saturating_sub(done)) as f64 / rate
        } else {
            0.0
        };
        self.out.line(&format!(
            "{}: {}% ({} de {} MiB, {:.1} MiB/s, faltam {:.0} s)",
            self.label,
            done * 100 / self.total.max(1),
            done >> 20,
            self.total >> 20,
            rate / (1024.0 * 1024.0),
            left
        ));
    }
}
