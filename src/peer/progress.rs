//! Transfer progress: a bar per transfer on a terminal, a few plain lines elsewhere.
//!
//! A [`Progress`] is fed the bytes done; through `Output::live_bars` it learns whether the
//! console can redraw bars in place ([`crate::peer::output::LiveOutput`]) or needs plain
//! percentage lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::numbers::{done_of_total, human_rate};
use crate::peer::output::{SharedOutput, terminal_columns};
// The console's number style lives in `crate::numbers`; these are used from here too.
pub use crate::numbers::{elapsed_text, human_bytes, human_duration, human_size};

/// Files smaller than this get no progress lines: they finish at once.
const PROGRESS_MIN_BYTES: u64 = 8 << 20;
/// The shortest time between two redraws of a bar.
const BAR_INTERVAL: Duration = Duration::from_millis(250);
/// Characters in a bar.
const BAR_WIDTH: usize = 12;

/// Distinguishes the bars of transfers running at once.
static NEXT_BAR: AtomicU64 = AtomicU64::new(0);

/// Reports a transfer's progress: a live bar on a terminal, else a line at each quarter, each
/// with rate and time left once they mean something.
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
            let figures = self.figures(done);
            let width = terminal_columns().saturating_sub(1).max(20);
            let shown = fit_bar(&self.label, &figures.variants(), width);
            self.out.bar(id, Some((&self.label, &shown)));
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
        let line = self.figures(done).plain_line(&self.label);
        self.out.line(&line);
    }

    /// Where the transfer stands, with rate and time left once they mean something.
    fn figures(&self, done: u64) -> Figures {
        let elapsed = self.started.elapsed();
        let moved = done.saturating_sub(self.start_at);
        // Right at the start a rate is noise: `faltam 0 s` at 50 % came from one.
        let rate = (elapsed >= MIN_ESTIMATE_TIME && moved > 0)
            .then(|| moved as f64 / elapsed.as_secs_f64());
        let left = rate
            .filter(|_| done < self.total)
            .map(|r| self.total.saturating_sub(done) as f64 / r);
        Figures {
            done,
            total: self.total,
            rate,
            left,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(id) = self.bar {
            self.out.bar(id, None);
        }
    }
}

/// How long a transfer must have run before its rate and time left are shown.
const MIN_ESTIMATE_TIME: Duration = Duration::from_millis(250);

/// A transfer's figures at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Bytes of the whole file transferred.
    pub done: u64,
    /// The whole file's size.
    pub total: u64,
    /// Bytes per second, once known.
    pub rate: Option<f64>,
    /// Seconds left at that rate, while some are.
    pub left: Option<f64>,
}

impl Figures {
    fn percent(&self) -> u64 {
        if self.total == 0 {
            100
        } else {
            (u128::from(self.done.min(self.total)) * 100 / u128::from(self.total)) as u64
        }
    }

    /// `[#####>------]` for a bar of `width` characters.
    fn graphic(&self, width: usize) -> String {
        let filled = (self.percent() as usize * width) / 100;
        let mut bar = "#".repeat(filled);
        if filled < width {
            bar.push('>');
            bar.push_str(&"-".repeat(width - filled - 1));
        }
        format!("[{bar}]")
    }

    /// The bar's figures from the fullest to the barest, each made of whole words:
    /// `[#####>------]  45% 1,8/4,0 GiB 310,2 MiB/s faltam 7 s`, then without the sizes, with
    /// a shorter graphic, without the rate, the graphic, the time left, down to ` 45%`.
    pub fn variants(&self) -> Vec<String> {
        let percent = format!("{:>3}%", self.percent());
        let sizes = done_of_total(self.done, self.total);
        let rate = self.rate.map(human_rate);
        let left = self.left.map(|l| format!("faltam {}", human_duration(l)));
        let join = |parts: &[Option<&str>]| -> String {
            parts
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (wide, narrow) = (self.graphic(BAR_WIDTH), self.graphic(BAR_WIDTH / 2));
        let (wide, narrow) = (Some(wide.as_str()), Some(narrow.as_str()));
        let (rate, left) = (rate.as_deref(), left.as_deref());
        let p = Some(percent.as_str());
        vec![
            join(&[wide, p, Some(&sizes), rate, left]),
            join(&[wide, p, rate, left]),
            join(&[narrow, p, rate, left]),
            join(&[narrow, p, left]),
            join(&[p, rate, left]),
            join(&[p, left]),
            join(&[p]),
        ]
    }

    /// A progress line for output without a terminal:
    /// `Download de x: 50% (128,0/256,0 MiB, 310,2 MiB/s, faltam 7 s)`.
    pub fn plain_line(&self, label: &str) -> String {
        let mut details = vec![done_of_total(self.done, self.total)];
        details.extend(self.rate.map(human_rate));
        details.extend(self.left.map(|l| format!("faltam {}", human_duration(l))));
        format!("{label}: {}% ({})", self.percent(), details.join(", "))
    }
}

/// The fullest of `variants` that fits beside `label` in `width` characters (the barest
/// when none does; the output then shortens the label). Parts are dropped whole, so a bar is
/// never cut in the middle of a word.
pub fn fit_bar(label: &str, variants: &[String], width: usize) -> String {
    let room = width.saturating_sub(label.chars().count() + 1);
    variants
        .iter()
        .find(|v| v.chars().count() <= room)
        .or(variants.last())
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(done: u64, total: u64, rate: Option<f64>, left: Option<f64>) -> Figures {
        Figures {
            done,
            total,
            rate,
            left,
        }
    }

    #[test]
    fn a_bar_shows_bytes_rate_and_time_left() {
        let f = figures(1 << 30, 4 << 30, Some(100.0 * 1048576.0), Some(30.5));
        assert_eq!(
            f.variants()[0],
            "[###>--------]  25% 1,0/4,0 GiB 100,0 MiB/s faltam 31 s"
        );
    }

    /// On a narrow terminal whole parts are dropped and the name is kept; nothing is cut
    /// in the middle of a word.
    #[test]
    fn a_narrow_terminal_keeps_the_name_and_drops_whole_parts() {
        let f = figures(1 << 30, 4 << 30, Some(100.0 * 1048576.0), Some(30.5));
        let label = "Download de aula-01.mp4";
        // 50 columns: one is kept free, so 49 for label, space and figures.
        let shown = fit_bar(label, &f.variants(), 49);
        assert_eq!(shown, "[#>----]  25% faltam 31 s");
        assert!(label.len() + 1 + shown.len() <= 49);
        assert_eq!(fit_bar(label, &f.variants(), 30), " 25%");
        assert_eq!(
            fit_bar(label, &f.variants(), 120),
            "[###>--------]  25% 1,0/4,0 GiB 100,0 MiB/s faltam 31 s"
        );
    }

    /// Right at the start there is no rate and no time left to show (no `faltam 0 s` at
    /// 50 %); at the end, no time left.
    #[test]
    fn early_and_final_lines_have_no_meaningless_estimate() {
        let early = figures(128 << 20, 256 << 20, None, None);
        assert_eq!(
            early.plain_line("Download de v"),
            "Download de v: 50% (128,0/256,0 MiB)"
        );
        let done = figures(256 << 20, 256 << 20, Some(300.0 * 1048576.0), None);
        assert_eq!(
            done.plain_line("Download de v"),
            "Download de v: 100% (256,0/256,0 MiB, 300,0 MiB/s)"
        );
    }
}
