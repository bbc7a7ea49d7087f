//! Where the peer's console lines go, and how progress bars are drawn among them.
//!
//! Any thread may print a whole line through [`Output`]. In plain mode (stdin not a terminal)
//! that is stdout; the interactive console prints above its prompt instead, so that a line
//! arriving while the user types never destroys what was typed.
//!
//! Transfers report progress through [`crate::peer::progress::Progress`]: on a terminal
//! ([`LiveOutput`]) as one bar
//! per transfer with bytes, rate and time left, redrawn in place just above the prompt;
//! elsewhere as a few plain percentage lines.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;

/// A sink for whole console lines, and optionally for live progress bars.
pub trait Output: Send + Sync {
    /// Prints one line (no newline needed).
    fn line(&self, text: &str);

    /// Returns once every line printed before has reached the terminal (or a short bound has
    /// passed). Plain output is written at once and needs nothing.
    fn flush(&self) {}

    /// The peer is leaving: from now on lines must reach the terminal before the process
    /// ends, so an interactive console stops printing through the prompt (which only draws
    /// them when its own thread next wakes up) and writes them directly.
    fn leaving(&self) {}

    /// True if this output can redraw progress bars in place (a terminal); otherwise transfers
    /// print a few plain percentage lines through [`Output::line`].
    fn live_bars(&self) -> bool {
        false
    }

    /// Shows or replaces the bar of transfer `id`, given as its label and its figures (the
    /// label is shortened if the line would not fit); `None` removes it (the line that reports
    /// the transfer's end then takes its place).
    fn bar(&self, _id: u64, _bar: Option<(&str, &str)>) {}

    /// Tells the output that the user's typed line was accepted (Enter): it now stands between
    /// the bars and the prompt, so the bars are left where they are and drawn anew below it.
    fn input_accepted(&self) {}
}

/// Plain stdout.
pub struct PlainOutput;

impl Output for PlainOutput {
    fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", printable(text));
        let _ = out.flush();
    }
}

/// `text` with every control character (newlines, escapes, ...) replaced by `?`.
///
/// Console lines quote what other peers sent (a refusal's reason, a file name): a newline
/// there would forge a console line of its own, an escape sequence would move the cursor or
/// recolour the terminal and corrupt the prompt.
pub fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
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
    /// Label and figures of each bar.
    bars: BTreeMap<u64, (String, String)>,
    /// Rows of bars on screen directly above the prompt.
    drawn: usize,
    /// Set when the peer leaves: bars are erased and no longer drawn.
    closed: bool,
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
                closed: false,
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
        for (label, figures) in state.bars.values() {
            out.push_str(&fit(label, figures, width));
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

    fn bar(&self, id: u64, bar: Option<(&str, &str)>) {
        let mut state = self.inner.lock();
        match bar {
            Some(_) if state.closed => {}
            Some((label, figures)) => {
                state
                    .bars
                    .insert(id, (label.to_string(), figures.to_string()));
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

impl LiveOutput {
    /// The user's line was accepted (Enter, Ctrl-C, Ctrl-D) and now stands, `rows` rows high,
    /// between the bars and the cursor. The bars' rows above it are deleted (what is below
    /// moves up), so no stale copy of a bar stays on screen, and the bars are drawn again
    /// below the line.
    pub fn line_accepted(&self, rows: usize) {
        let mut state = self.inner.lock();
        let drawn = std::mem::take(&mut state.drawn);
        if drawn == 0 {
            return;
        }
        let rows = rows.max(1);
        (state.print)(format!("\x1b[{}A\r\x1b[{drawn}M\x1b[{rows}B", drawn + rows));
        self.redraw(&mut state, None);
    }

    /// Erases the bars on screen and draws no more: the peer is leaving, and a frozen bar
    /// left above the shell's prompt would say a transfer still runs.
    pub fn clear_bars(&self) {
        let mut state = self.inner.lock();
        state.bars.clear();
        state.closed = true;
        self.redraw(&mut state, None);
    }
}

/// `label figures` in at most `width` characters: the label is shortened (with `…`) first,
/// then, on a very narrow terminal, the figures are cut.
fn fit(label: &str, figures: &str, width: usize) -> String {
    let room = width.saturating_sub(figures.chars().count() + 1);
    let label_len = label.chars().count();
    let label: String = if label_len <= room {
        label.to_string()
    } else if room >= 2 {
        label.chars().take(room - 1).chain(['…']).collect()
    } else {
        String::new()
    };
    let line = if label.is_empty() {
        figures.to_string()
    } else {
        format!("{label} {figures}")
    };
    line.chars().take(width).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Newlines, escapes and C1 controls in a console line become `?`; plain text is kept.
    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("plain line"), "plain line");
        assert_eq!(
            printable("a\nArquivo x baixado\x1b[2J\u{9b}"),
            "a?Arquivo x baixado?[2J?"
        );
    }

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
        out.bar(1, Some(("down a", "1%")));
        out.bar(2, Some(("up b", "2%")));
        out.bar(1, Some(("down a", "50%")));
        out.line("Peer x solicitou o arquivo y");
        out.bar(1, None);
        out.line("Arquivo a baixado com sucesso");
        let printed = printed.lock();
        let up = ERASE_ROW_ABOVE;
        assert_eq!(printed[0], "down a 1%\n");
        // The second bar erases the one row drawn, then draws both.
        assert_eq!(printed[1], format!("{up}down a 1%\nup b 2%\n"));
        assert_eq!(printed[2], format!("{up}{up}down a 50%\nup b 2%\n"));
        assert_eq!(
            printed[3],
            format!("{up}{up}Peer x solicitou o arquivo y\ndown a 50%\nup b 2%\n")
        );
        // Removing a bar prints nothing; the next line replaces the finished bar.
        assert_eq!(
            printed[4],
            format!("{up}{up}Arquivo a baixado com sucesso\nup b 2%\n")
        );
        assert_eq!(printed.len(), 5);
    }

    #[test]
    fn leaving_erases_the_bars_and_draws_no_more() {
        let (out, printed) = recording();
        out.bar(1, Some(("down a", "1%")));
        out.bar(2, Some(("up b", "2%")));
        out.clear_bars();
        out.bar(1, Some(("down a", "3%")));
        let printed = printed.lock();
        assert_eq!(printed.last().unwrap(), &ERASE_ROW_ABOVE.repeat(2));
        assert_eq!(printed.len(), 3);
    }

    #[test]
    fn bars_move_below_an_accepted_line_and_leave_no_copy_above_it() {
        let (out, printed) = recording();
        out.bar(1, Some(("down a", "1%")));
        out.line_accepted(2);
        let printed = printed.lock();
        // Up over the two rows of the line and the bar, delete the bar's row, back down.
        assert_eq!(printed[1], "\x1b[3A\r\x1b[1M\x1b[2B");
        assert_eq!(printed[2], "down a 1%\n");
    }

    #[test]
    fn a_typed_line_is_never_erased() {
        let (out, printed) = recording();
        out.bar(1, Some(("down a", "1%")));
        out.input_accepted();
        out.bar(1, Some(("down a", "60%")));
        assert_eq!(printed.lock()[1], "down a 60%\n");
    }

    #[test]
    fn a_long_label_is_shortened_so_the_bar_never_wraps() {
        let (out, printed) = recording();
        out.bar(1, Some((&"x".repeat(100), "[##>-]  50% 1.0 MiB/s")));
        assert_eq!(
            printed.lock()[0],
            format!("{}… [##>-]  50% 1.0 MiB/s\n", "x".repeat(16))
        );
        assert_eq!(fit("label", &"9".repeat(50), 39), "9".repeat(39));
    }
}
