//! Transfer progress: a bar per transfer on a terminal, a few plain lines elsewhere.
//!
//! A [`Progress`] is fed the bytes done; through `Output::live_bars` it learns whether the
//! console can redraw bars in place ([`crate::peer::output::LiveOutput`]) or needs plain
//! percentage lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::peer::output::SharedOutput;

/// Files smaller than this get no progress lines: they finish at once.
const PROGRESS_MIN_BYTES: u64 = 8 << 20;
/// The shortest time between two redraws of a bar.
const BAR_INTERVAL: Duration = Duration::from_millis(250);
/// Characters in a bar.
const BAR_WIDTH: usize = 12;

/// Distinguishes the bars of transfers running at once.
static NEXT_BAR: AtomicU64 = AtomicU64::new(0);

/// Reports a transfer's progress: a live bar on a terminal, else a line at each quarter, each
/// with rate and time left.
pub struct Progress {
    out: SharedOutput,
    label: String,
    total: u64,
    start_at: u64,
    started: Instant,
    next_quarter: u64,
    enabled: bool,
    /// The bar's id, when drawing bars.
    bar: Option<u64>,
    last_draw: Option<Instant>,
}

impl Progress {
    /// Progress of `label` (e.g. "Download de video.bin"), `total` bytes, starting at
    /// `start_at` (resume).
    pub fn new(out: SharedOutput, label: String, total: u64, start_at: u64) -> Progress {
        let next_quarter = start_at
            .saturating_mul(4)
            .checked_div(total)
            .map_or(5, |q| q + 1);
        let enabled = total >= PROGRESS_MIN_BYTES;
        let bar = (enabled && out.live_bars()).then(|| NEXT_BAR.fetch_add(1, Ordering::Relaxed));
        Progress {
            out,
            label,
            total,
            start_at,
            started: Instant::now(),
            next_quarter,
            enabled,
            bar,
            last_draw: None,
        }
    }

    /// Changes what the bar is called (a swarm download shows its number of sources).
    pub fn set_label(&mut self, label: String) {
        self.label = label;
        self.last_draw = None;
    }

    /// Bytes per second since the start, and seconds left at that rate.
    fn rate_and_left(&self, done: u64) -> (f64, f64) {
        let elapsed = self.started.elapsed().max(Duration::from_millis(1));
        let rate = done.saturating_sub(self.start_at) as f64 / elapsed.as_secs_f64();
        let left = if rate > 0.0 {
            self.total.saturating_sub(done) as f64 / rate
        } else {
            0.0
        };
        (rate, left)
    }

    /// Records that `done` bytes of the whole file are now transferred.
    pub fn update(&mut self, done: u64) {
        if let Some(id) = self.bar {
            let now = Instant::now();
            if done < self.total
                && self
                    .last_draw
                    .is_some_and(|t| now.duration_since(t) < BAR_INTERVAL)
            {
                return;
            }
            self.last_draw = Some(now);
            let (rate, left) = self.rate_and_left(done);
            let figures = bar_figures(done, self.total, rate, left);
            self.out.bar(id, Some((&self.label, &figures)));
            return;
        }
        if !self.enabled || self.next_quarter > 4 {
            return;
        }
        if done * 4 < self.next_quarter * self.total {
            return;
        }
        while self.next_quarter <= 4 && done * 4 >= self.next_quarter * self.total {
            self.next_quarter += 1;
        }
        let (rate, left) = self.rate_and_left(done);
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

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(id) = self.bar {
            self.out.bar(id, None);
        }
    }
}

/// A bar's figures, short enough to leave room for a label on an 80-column terminal:
/// `[#####>------]  45% 1.8/4.0 GiB 310.2 MiB/s faltam 7s`.
pub fn bar_figures(done: u64, total: u64, rate: f64, left: f64) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (fraction * BAR_WIDTH as f64) as usize;
    let mut bar = "#".repeat(filled);
    if filled < BAR_WIDTH {
        bar.push('>');
        bar.push_str(&"-".repeat(BAR_WIDTH - filled - 1));
    }
    format!(
        "[{bar}] {:>3}% {} {}/s faltam {}",
        (fraction * 100.0) as u32,
        done_of_total(done, total),
        human_bytes(rate),
        human_duration(left)
    )
}

/// `1.8/4.0 GiB`: both in the unit of the total.
fn done_of_total(done: u64, total: u64) -> String {
    let unit = human_bytes(total as f64);
    match unit.split_once(' ') {
        Some((figure, "B")) => format!("{done}/{figure} B"),
        Some((figure, name)) => {
            let scale = total as f64 / figure.parse::<f64>().unwrap_or(1.0).max(f64::MIN_POSITIVE);
            format!("{:.1}/{figure} {name}", done as f64 / scale)
        }
        None => format!("{done}/{total}"),
    }
}

/// `1023 B`, `12.0 KiB`, `1.8 GiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024.0 {
        return format!("{} B", bytes.max(0.0) as u64);
    }
    let mut value = bytes / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `7s`, `2m05s`, `1h02m`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_shows_bytes_rate_and_time_left() {
        let text = bar_figures(1 << 30, 4 << 30, 100.0 * 1048576.0, 30.5);
        assert_eq!(
            text,
            "[###>--------]  25% 1.0/4.0 GiB 100.0 MiB/s faltam 31s"
        );
        assert_eq!(human_duration(125.0), "2m05s");
        assert_eq!(human_bytes(512.0), "512 B");
    }
}
