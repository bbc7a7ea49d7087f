//! Where the peer's console lines go, and how progress bars are drawn among them.
//!
//! Any thread may print a whole line through [`Output`]. In plain mode (stdin not a terminal)
//! that is stdout; the interactive console prints above its prompt instead, so that a line
//! arriving while the user types never destroys what was typed.
//!
//! Printing never waits for the terminal. Lines go into a [`ConsoleQueue`] bounded by bytes
//! ([`QUEUE_BYTES`]) that one writer thread empties; when the terminal falls behind (a slow
//! SSH session, a pipe nobody reads) lines beyond the budget are dropped and counted, and the
//! count is printed as soon as there is room (`[37 linhas descartadas: ...]`). So a transfer, an
//! upload thread or the console thread never blocks on a print, and memory stays bounded. Every
//! line is first made safe ([`printable`]: one sanitiser for all text, local or remote) and cut
//! to [`MAX_LINE_BYTES`].
//!
//! Transfers report progress through [`crate::peer::progress::Progress`]: on a terminal
//! ([`LiveOutput`]) as one bar
//! per transfer with bytes, rate and time left, redrawn in place just above the prompt;
//! elsewhere as a few plain percentage lines.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};
use parking_lot::{Condvar, Mutex};

use crate::numbers::thousands;

/// Bytes of console text that may wait for a slow terminal; lines beyond it are dropped and
/// counted.
pub const QUEUE_BYTES: usize = 256 * 1024;
/// The longest console line, in bytes; a longer one is cut and says how much was left out.
pub const MAX_LINE_BYTES: usize = 4096;
/// How long leaving waits for queued lines to reach the terminal.
pub const FLUSH_WAIT: Duration = Duration::from_secs(2);

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

/// Plain stdout, written by its own thread from a [`ConsoleQueue`].
pub struct PlainOutput {
    queue: Arc<ConsoleQueue>,
}

impl PlainOutput {
    /// Starts the thread that writes queued lines to stdout.
    pub fn start() -> io::Result<PlainOutput> {
        let queue = ConsoleQueue::new(QUEUE_BYTES);
        let writer = Arc::clone(&queue);
        thread::Builder::new()
            .name("console-output".into())
            .spawn(move || {
                loop {
                    let text = match writer.next() {
                        Queued::Text(text) => text,
                        Queued::Dropped(count) => format!("{}\n", dropped_note(count)),
                        Queued::Flush(done) => {
                            let _ = done.send(());
                            continue;
                        }
                        Queued::Direct => continue,
                    };
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
            })?;
        Ok(PlainOutput { queue })
    }

    /// Waits (at most [`FLUSH_WAIT`]) until every line queued so far was written.
    pub fn drain(&self) {
        self.queue.flush(FLUSH_WAIT);
    }

    /// A guard that drains the output when dropped: for a function that prints and returns
    /// from several places before the process ends.
    pub fn drain_on_return(&self) -> Drained {
        Drained(Arc::clone(&self.queue))
    }
}

/// Drains a [`PlainOutput`] when dropped (see [`PlainOutput::drain_on_return`]).
pub struct Drained(Arc<ConsoleQueue>);

impl Drop for Drained {
    fn drop(&mut self) {
        self.0.flush(FLUSH_WAIT);
    }
}

impl Output for PlainOutput {
    fn line(&self, text: &str) {
        let mut text = console_text(text).into_owned();
        text.push('\n');
        self.queue.push_text(text);
    }

    fn leaving(&self) {
        self.drain();
    }
}

/// `text` safe to show: every control character (newlines, escapes, ...) and every invisible
/// formatting character (bidirectional overrides such as U+202E, line and paragraph separators
/// U+2028/U+2029, zero-width marks) replaced by `?`.
///
/// Console lines quote what other peers sent (a refusal's reason, an error message, a file
/// name): a newline or U+2028 there would forge a console line of its own
/// (`Arquivo x baixado com sucesso`), an escape sequence would move the cursor or recolour the
/// terminal, a bidirectional override would make one name look like another. Every console
/// line passes through here, whatever its source; the same characters are refused in names
/// ([`crate::share::check_name`]).
pub fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(unsafe_to_show) {
        Cow::Owned(
            text.chars()
                .map(|c| if unsafe_to_show(c) { '?' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// Characters never shown raw: controls, and those that change how text around them is shown.
fn unsafe_to_show(c: char) -> bool {
    c.is_control()
        || crate::share::is_invisible_format(c)
        || matches!(c, '\u{061C}' | '\u{180E}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A remote string for a log line: at most [`LOG_PREFIX_CHARS`] characters of it, escaped
/// (`{:?}`), with its whole length when it was cut. A peer sending 60 KB names then costs a
/// short line each, not 60 KB of log.
pub fn log_prefix(text: &str) -> String {
    match text.char_indices().nth(LOG_PREFIX_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

/// Characters of a remote string that a log line quotes.
pub const LOG_PREFIX_CHARS: usize = 64;

/// `text` as a console line: made safe ([`printable`]) and cut to [`MAX_LINE_BYTES`].
pub fn console_text(text: &str) -> Cow<'_, str> {
    let safe = printable(text);
    if safe.len() <= MAX_LINE_BYTES {
        return safe;
    }
    let mut cut = MAX_LINE_BYTES - 64;
    while !safe.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!(
        "{}... (e mais {} bytes)",
        &safe[..cut],
        thousands((safe.len() - cut) as u64)
    ))
}

/// The items of a list joined by `separator`, as many as fit in about `budget` bytes, then
/// ` ... e mais 9.873` for the rest: a console line names what fits and counts the rest.
pub fn short_list(items: &[String], separator: &str, budget: usize) -> String {
    let mut out = String::new();
    for (shown, item) in items.iter().enumerate() {
        let extra = if shown == 0 { 0 } else { separator.len() } + item.len();
        if shown > 0 && out.len() + extra > budget {
            out.push_str(&format!(
                " ... e mais {}",
                thousands((items.len() - shown) as u64)
            ));
            return out;
        }
        if shown > 0 {
            out.push_str(separator);
        }
        out.push_str(item);
    }
    out
}

/// The line that says how many lines a slow terminal missed.
pub fn dropped_note(count: u64) -> String {
    if count == 1 {
        "[1 linha descartada: o console não acompanhou a saída]".to_string()
    } else {
        format!(
            "[{} linhas descartadas: o console não acompanhou a saída]",
            thousands(count)
        )
    }
}

/// One thing for a console writer thread.
#[derive(Debug)]
pub enum Queued {
    /// Text as the terminal should get it, newlines included.
    Text(String),
    /// This many lines were dropped here: the writer says so.
    Dropped(u64),
    /// Answered once every line queued before it was handed to the terminal.
    Flush(Sender<()>),
    /// From now on write straight to the terminal (the interactive prompt is leaving).
    Direct,
}

/// Console text waiting for a slow terminal, bounded by bytes: pushing never blocks; text that
/// does not fit is dropped and counted, and the count takes its place in the queue.
pub struct ConsoleQueue {
    budget: usize,
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Queued>,
    /// Bytes of text in `items`.
    bytes: usize,
    /// Lines dropped since the last one queued.
    dropped: u64,
}

impl ConsoleQueue {
    /// An empty queue holding at most `budget` bytes of text.
    pub fn new(budget: usize) -> Arc<ConsoleQueue> {
        Arc::new(ConsoleQueue {
            budget,
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
        })
    }

    /// Queues `text`; false if it did not fit (it is dropped and counted).
    pub fn push_text(&self, text: String) -> bool {
        let mut state = self.state.lock();
        if state.bytes + text.len() > self.budget {
            state.dropped += 1;
            return false;
        }
        if state.dropped > 0 {
            let count = std::mem::take(&mut state.dropped);
            state.items.push_back(Queued::Dropped(count));
        }
        state.bytes += text.len();
        state.items.push_back(Queued::Text(text));
        self.ready.notify_one();
        true
    }

    /// Queues a marker (never dropped; each caller has at most one waiting).
    pub fn push_control(&self, item: Queued) {
        let mut state = self.state.lock();
        state.items.push_back(item);
        self.ready.notify_one();
    }

    /// Waits for the next thing to write. Once the queue is empty, lines dropped since the last
    /// one queued are reported at once rather than with the next line.
    pub fn next(&self) -> Queued {
        let mut state = self.state.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                if let Queued::Text(text) = &item {
                    state.bytes -= text.len();
                }
                return item;
            }
            if state.dropped > 0 {
                return Queued::Dropped(std::mem::take(&mut state.dropped));
            }
            self.ready.wait(&mut state);
        }
    }

    /// Waits, at most `wait`, until everything queued before was handed to the terminal.
    pub fn flush(&self, wait: Duration) {
        let (done_tx, done_rx) = bounded(1);
        self.push_control(Queued::Flush(done_tx));
        let _ = done_rx.recv_timeout(wait);
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
    /// Hands text to the terminal's queue; false if it was dropped.
    print: Box<dyn FnMut(String) -> bool + Send>,
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
    /// An output printing through `print` (which queues text to be written above the prompt,
    /// returning false if it was dropped); `columns` gives the terminal's width, so that a bar
    /// never wraps onto a second row.
    pub fn new(print: Box<dyn FnMut(String) -> bool + Send>, columns: fn() -> usize) -> LiveOutput {
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
        // A redraw dropped by a terminal that fell behind leaves the screen as it was.
        if !out.is_empty() && (state.print)(out) {
            state.drawn = state.bars.len();
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
    match rustix::termios::tcgetwinsize(io::stdout()) {
        Ok(size) if size.ws_col > 0 => usize::from(size.ws_col),
        _ => 80,
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

    /// Line and paragraph separators, bidirectional overrides and isolates and zero-width
    /// characters from another peer never reach the terminal raw.
    #[test]
    fn invisible_formatting_never_reaches_the_terminal() {
        let hostile = "x\u{2028}Arquivo y baixado com sucesso\u{2029}\u{202E}txt.exe\u{2066}\u{200B}\u{FEFF}\u{61C}";
        let shown = printable(hostile);
        assert_eq!(shown, "x?Arquivo y baixado com sucesso??txt.exe????");
        assert_eq!(
            printable("vídeo final — aula 1.mp4"),
            "vídeo final — aula 1.mp4"
        );
    }

    /// A remote string in a log line is a short escaped prefix with its length.
    #[test]
    fn log_lines_quote_a_bounded_prefix() {
        let huge = format!("{}/x", "a".repeat(60_000));
        let logged = log_prefix(&huge);
        assert!(logged.len() < 100, "{logged}");
        assert!(logged.ends_with("... (60002 bytes)"), "{logged}");
        assert_eq!(log_prefix("a\u{202E}b"), "\"a\\u{202e}b\"");
    }

    /// A long line is cut and says how much was left out; a long list names what fits and
    /// counts the rest.
    #[test]
    fn long_lines_and_lists_are_shortened() {
        let line = console_text(&"é".repeat(10_000)).into_owned();
        assert!(line.len() <= MAX_LINE_BYTES, "{}", line.len());
        assert!(line.ends_with(&format!("... (e mais {} bytes)", thousands(20_000 - 4032))));
        let names: Vec<String> = (0..10_000).map(|i| format!("arquivo-{i:05}.mp4")).collect();
        let listed = short_list(&names, ",", 1000);
        assert!(listed.len() < 1100, "{}", listed.len());
        assert!(listed.starts_with("arquivo-00000.mp4,arquivo-00001.mp4,"));
        assert!(listed.ends_with(" ... e mais 9.945"), "{listed}");
        assert_eq!(
            short_list(&names[..2], ",", 1000),
            "arquivo-00000.mp4,arquivo-00001.mp4"
        );
        assert_eq!(thousands(1_048_576), "1.048.576");
        assert_eq!(thousands(999), "999");
    }

    /// Pushing never blocks: past the byte budget lines are dropped and counted, and the count
    /// takes their place in the order the lines were printed.
    #[test]
    fn a_full_queue_drops_lines_and_says_how_many() {
        let queue = ConsoleQueue::new(100);
        assert!(queue.push_text("a".repeat(60)));
        assert!(!queue.push_text("b".repeat(60)));
        assert!(!queue.push_text("c".repeat(60)));
        assert!(matches!(queue.next(), Queued::Text(t) if t.starts_with('a')));
        assert!(queue.push_text("d".repeat(60)));
        assert!(matches!(queue.next(), Queued::Dropped(2)));
        assert!(matches!(queue.next(), Queued::Text(t) if t.starts_with('d')));
        // Dropped with nothing after it: told as soon as the queue is empty.
        assert!(queue.push_text("e".repeat(60)));
        assert!(!queue.push_text("f".repeat(60)));
        assert!(matches!(queue.next(), Queued::Text(_)));
        assert!(matches!(queue.next(), Queued::Dropped(1)));
        assert_eq!(
            dropped_note(1),
            "[1 linha descartada: o console não acompanhou a saída]"
        );
    }

    /// Collects what a [`LiveOutput`] prints.
    fn recording() -> (LiveOutput, Arc<Mutex<Vec<String>>>) {
        let printed = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&printed);
        let out = LiveOutput::new(
            Box::new(move |text| {
                sink.lock().push(text);
                true
            }),
            || 40,
        );
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
        out.bar(1, Some((&"x".repeat(100), "[##>-]  50% 1,0 MiB/s")));
        assert_eq!(
            printed.lock()[0],
            format!("{}… [##>-]  50% 1,0 MiB/s\n", "x".repeat(16))
        );
        assert_eq!(fit("label", &"9".repeat(50), 39), "9".repeat(39));
    }
}
