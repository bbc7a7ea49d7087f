//! Where the peer's console lines go, and how transfer progress is shown.
//!
//! Any thread may print a whole line through [`Output`]. In plain mode (stdin not a terminal)
//! that is stdout; the interactive console prints above its prompt instead, so that a line
//! arriving while the user types never destroys what was typed.
//!
//! Transfers report progress through [`Progress`]: on a terminal ([`LiveOutput`]) as one bar
//! per transfer with bytes, rate and time left, redrawn in place just above the prompt;
//! elsewhere as a few plain percentage lines.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A sink for whole console lines, and optionally for live progress bars.
pub trait Output: Send + Sync {
    /// Prints one line (no newline needed).
    fn line(&self, text: &str);

    /// True if this output can redraw progress bars in place (a terminal); otherwise transfers
    /// print a few plain percentage lines through [`Output::line`].
    fn live_bars(&self) -> bool {
        false
    }

    /// Shows or replaces the bar of transfer `id`; `None` removes it (the line that reports the
    /// transfer's end then takes its place).
    fn bar(&self, _id: u64, _text: Option<&str>) {}

    /// Tells the output that the user's typed line was accepted (Enter): it now stands between
    /// the bars and the prompt, so the bars are left where they are and drawn anew below it.
    fn input_accepted(&self) {}
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

/// Shared handle to the console output.
pub type SharedOutput = Arc<dyn Output>;

/// Draws lines and live progress bars above an interactive prompt.
///
/// Everything goes through one `print` function that writes text just above the prompt (for
/// rustyline, its external printer: it clears the prompt, writes the text, and redraws the
/// prompt with what the user had typed). The bars form a block directly above the prompt; to
/// redraw them the text starts by moving up over the old block and erasing it, and a line
/// printed meanwhile goes above the new block. So the prompt and the user's typing are never
/// touched, and lines never interleave with bars.
pub struct LiveOutput {
    inner: Mutex<LiveState>,
    columns: fn() -> usize,
}

struct LiveState {
    print: Box<dyn FnMut(String) + Send>,
    bars: BTreeMap<u64, String>,
    /// Rows of bars on screen directly above the prompt.
    drawn: usize,
}

/// Moves up one row and erases it.
const ERASE_ROW_ABOVE: &str = "\x1b[A\x1b[2K\r";

impl LiveOutput {
    /// An output printing through `print` (which writes above the prompt); `columns` gives the
    /// terminal's width, so that a bar never wraps onto a second row.
    pub fn new(print: Box<dyn FnMut(String) + Send>, columns: fn() -> usize) -> LiveOutput {
        LiveOutput {
            inner: Mutex::new(LiveState {
                print,
                bars: BTreeMap::new(),
                drawn: 0,
            }),
            columns,
        }
    }

    /// Erases the drawn bars, writes `text` (whole lines, or nothing), draws the bars again.
    fn redraw(&self, state: &mut LiveState, text: Option<&str>) {
        let width = (self.columns)().saturating_sub(1).max(20);
        let mut out = ERASE_ROW_ABOVE.repeat(state.drawn);
        if let Some(text) = text {
            out.push_str(text);
            out.push('\n');
        }
        for bar in state.bars.values() {
            out.extend(bar.chars().take(width));
            out.push('\n');
        }
        state.drawn = state.bars.len();
        if !out.is_empty() {
            (state.print)(out);
        }
    }
}

impl Output for LiveOutput {
    fn line(&self, text: &str) {
        let mut state = self.inner.lock();
        self.redraw(&mut state, Some(text));
    }

    fn live_bars(&self) -> bool {
        true
    }

    fn bar(&self, id: u64, text: Option<&str>) {
        let mut state = self.inner.lock();
        match text {
            Some(text) => {
                state.bars.insert(id, text.to_string());
                self.redraw(&mut state, None);
            }
            // Erased by the next line, which reports how the transfer ended.
            None => {
                state.bars.remove(&id);
            }
        }
    }

    fn input_accepted(&self) {
        self.inner.lock().drawn = 0;
    }
}

/// The width of the terminal on stdout, or 80 if it cannot be known.
pub fn terminal_columns() -> usize {
    // SAFETY: TIOCGWINSZ only writes a `winsize` into the struct it is given.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) == 0 && size.ws_col > 0 {
            usize::from(size.ws_col)
        } else {
            80
        }
    }
}

/// Files smaller than this get no progress lines: they finish at once.
const PROGRESS_MIN_BYTES: u64 = 8 << 20;
/// The shortest time between two redraws of a bar.
const BAR_INTERVAL: Duration = Duration::from_millis(250);
/// Characters in a bar.
const BAR_WIDTH: usize = 24;

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
            let text = bar_text(&self.label, done, self.total, rate, left);
            self.out.bar(id, Some(&text));
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

/// One bar: `label [#####>------] 45% 1.8 GiB/4.0 GiB 310.2 MiB/s faltam 7s`.
pub fn bar_text(label: &str, done: u64, total: u64, rate: f64, left: f64) -> String {
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
        "{label} [{bar}] {:>3}% {}/{} {}/s faltam {}",
        (fraction * 100.0) as u32,
        human_bytes(done as f64),
        human_bytes(total as f64),
        human_bytes(rate),
        human_duration(left)
    )
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

    /// Collects what a [`LiveOutput`] prints.
    fn recording() -> (LiveOutput, Arc<Mutex<Vec<String>>>) {
        let printed = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&printed);
        let out = LiveOutput::new(Box::new(move |text| sink.lock().push(text)), || 40);
        (out, printed)
    }

    #[test]
    fn bars_are_redrawn_in_place_and_lines_go_above_them() {
        let (out, printed) = recording();
        out.bar(1, Some("download a"));
        out.bar(2, Some("upload b"));
        out.bar(1, Some("download a 50%"));
        out.line("Peer x solicitou o arquivo y");
        out.bar(1, None);
        out.line("Arquivo a baixado com sucesso");
        let printed = printed.lock();
        assert_eq!(printed[0], "download a\n");
        // The second bar erases the one row drawn, then draws both.
        assert_eq!(
            printed[1],
            format!("{ERASE_ROW_ABOVE}download a\nupload b\n")
        );
        assert_eq!(
            printed[2],
            format!("{0}{0}download a 50%\nupload b\n", ERASE_ROW_ABOVE)
        );
        assert_eq!(
            printed[3],
            format!(
                "{0}{0}Peer x solicitou o arquivo y\ndownload a 50%\nupload b\n",
                ERASE_ROW_ABOVE
            )
        );
        // Removing a bar prints nothing; the next line replaces the finished bar.
        assert_eq!(
            printed[4],
            format!(
                "{0}{0}Arquivo a baixado com sucesso\nupload b\n",
                ERASE_ROW_ABOVE
            )
        );
        assert_eq!(printed.len(), 5);
    }

    #[test]
    fn a_typed_line_is_never_erased() {
        let (out, printed) = recording();
        out.bar(1, Some("download a"));
        out.input_accepted();
        out.bar(1, Some("download a 60%"));
        assert_eq!(printed.lock()[1], "download a 60%\n");
    }

    #[test]
    fn bars_never_wrap() {
        let (out, printed) = recording();
        out.bar(1, Some(&"x".repeat(100)));
        assert_eq!(printed.lock()[0], format!("{}\n", "x".repeat(39)));
    }

    #[test]
    fn a_bar_shows_bytes_rate_and_time_left() {
        let text = bar_text(
            "Download de v.bin",
            1 << 30,
            4 << 30,
            100.0 * 1048576.0,
            30.5,
        );
        assert_eq!(
            text,
            "Download de v.bin [######>-----------------]  25% 1.0 GiB/4.0 GiB 100.0 MiB/s faltam 31s"
        );
        assert_eq!(human_duration(125.0), "2m05s");
        assert_eq!(human_bytes(512.0), "512 B");
    }
}
