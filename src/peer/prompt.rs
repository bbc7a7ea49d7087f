//! The interactive console: a `rustyline` prompt with history, completion and a live count of
//! the upload requests waiting for SIM/NAO.
//!
//! The prompt runs on its own thread and sends each line to the console thread, then waits
//! for the console to say it has handled the line before it draws the next prompt. That way
//! the next prompt already shows what the line changed (a `SIM` took a request off the
//! count), QUIT never draws a prompt that nobody reads, and the terminal is back in its normal
//! mode when the peer exits.
//!
//! Everything the peer prints goes through rustyline's external printer, which clears the
//! prompt line, prints above it and redraws the prompt with whatever the user had typed, so a
//! request arriving half way through a command never destroys it.
//!
//! ## Why the prompt has a fixed width
//!
//! rustyline 19 measures the prompt once, when `readline` starts, and places the cursor from
//! that measure (`"\r" + "ESC[<col>C"`), but it asks the [`Prompt`] for its text again at every
//! redraw, including the redraw after each external print. There is no public way to replace
//! the prompt of a running `readline` or to make it return with the typed text kept (a known
//! limitation: rustyline issues #417, #605, #881). So the prompt here is a [`Prompt`] whose
//! text follows the pending count and whose every variant has the same width
//! (`[sem pedido] > `, `[1 pendente] > `, ...): the count shown changes at the very redraw that
//! prints the request above the prompt, and the cursor arithmetic stays right because the width
//! never changes.

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use rustix::termios::{self, OptionalActions, Termios};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{
    Cmd, CompletionType, ConditionalEventHandler, Config, Context, Editor, Event, EventContext,
    EventHandler, ExternalPrinter, Helper, KeyEvent, Prompt, RepeatCount,
};

use crate::peer::PeerConfig;
use crate::peer::commands::COMMAND_NAMES;
use crate::peer::console::{ConsoleState, Input, prompt_text};
use crate::peer::output::{
    ConsoleQueue, FLUSH_WAIT, LiveOutput, Output, QUEUE_BYTES, Queued, SharedOutput, console_text,
    dropped_note, terminal_columns,
};
use crate::peer::search_results;

/// The prompt, redrawn with the current pending count at every refresh.
struct LivePrompt {
    state: Arc<ConsoleState>,
    /// `prompt_text(n)` for every `n` it can show; all the same width.
    variants: Vec<String>,
}

impl LivePrompt {
    fn new(state: Arc<ConsoleState>) -> LivePrompt {
        LivePrompt {
            state,
            variants: (0..=crate::peer::console::PROMPT_MAX_COUNT)
                .map(prompt_text)
                .collect(),
        }
    }
}

impl Prompt for LivePrompt {
    fn raw(&self) -> &str {
        let n = self.state.pending().min(self.variants.len() - 1);
        &self.variants[n]
    }
}

/// Lines and progress bars drawn above the prompt ([`LiveOutput`]), queued (bounded by bytes)
/// for the printer thread so no thread ever waits on the terminal.
struct PromptOutput {
    live: LiveOutput,
    queue: Arc<ConsoleQueue>,
}

impl Output for PromptOutput {
    fn line(&self, text: &str) {
        self.live.line(&console_text(text));
    }

    fn live_bars(&self) -> bool {
        true
    }

    fn bar(&self, id: u64, bar: Option<(&str, &str)>) {
        match bar {
            Some((label, figures)) => self.live.bar(id, Some((&console_text(label), figures))),
            None => self.live.bar(id, None),
        }
    }

    fn input_accepted(&self) {
        self.live.input_accepted();
    }

    fn flush(&self) {
        self.queue.flush(FLUSH_WAIT);
    }

    fn leaving(&self) {
        self.live.clear_bars();
        self.queue.flush(FLUSH_WAIT);
        self.queue.push_control(Queued::Direct);
    }
}

impl PromptOutput {
    /// The prompt and the user's line `shown` stand on screen: move the bars below them.
    fn line_accepted(&self, shown: &str) {
        let columns = terminal_columns().max(1);
        let rows = shown.chars().count().div_ceil(columns).max(1);
        self.live.line_accepted(rows);
    }
}

/// Hands queued lines to rustyline's external printer (which prints them above the prompt
/// while `readline` runs, and straight to the terminal between two `readline`s). A count of
/// lines dropped is printed as a line of `output`'s, so it goes above the bars like any other.
fn print_lines(
    queue: Arc<ConsoleQueue>,
    output: Arc<PromptOutput>,
    mut printer: Box<dyn ExternalPrinter + Send>,
) {
    let mut direct = false;
    loop {
        match queue.next() {
            Queued::Dropped(count) => output.line(&dropped_note(count)),
            Queued::Direct => {
                // Clear the prompt row; "\r\n" because a terminal left in raw mode (a signal
                // arrived while `readline` ran) does not return the carriage on "\n".
                let mut out = io::stdout().lock();
                let _ = out.write_all(b"\r\x1b[2K");
                let _ = out.flush();
                direct = true;
            }
            Queued::Text(text) if direct => {
                let mut out = io::stdout().lock();
                let _ = out.write_all(text.replace('\n', "\r\n").as_bytes());
                let _ = out.flush();
            }
            Queued::Text(text) => {
                if printer.print(text.clone()).is_err() {
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
            }
            Queued::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Notes the line as it stood when Ctrl-C was pressed (empty: the console says how to leave;
/// its length: how many rows it fills), and lets rustyline cancel the line as usual.
struct NoteLineAtCtrlC(Arc<parking_lot::Mutex<String>>);

impl ConditionalEventHandler for NoteLineAtCtrlC {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        *self.0.lock() = ctx.line().to_string();
        None
    }
}

/// Completion of command names, of the file names the last SEARCH or LIST found (any case)
/// and of their peers.
struct ConsoleHelper {
    state: Arc<ConsoleState>,
}

impl ConsoleHelper {
    /// Where the word to replace starts, and what may replace it.
    fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before.len() - before.trim_start().len();
        let typed = &before[start..];
        let Some((command, args)) = typed.split_once(char::is_whitespace) else {
            let upper = typed.to_uppercase();
            let names = COMMAND_NAMES
                .iter()
                .filter(|c| c.starts_with(&upper))
                .map(|c| format!("{c} "))
                .collect();
            return (start, names);
        };
        let known = search_results::completion_names(self.state.last_search(), &self.state.found());
        let args = args.trim_start();
        let args_start = pos - args.len();
        let typed_lower = args.to_lowercase();
        let names = known
            .iter()
            .filter(|(name, _)| name.to_lowercase().starts_with(&typed_lower));
        match command.to_uppercase().as_str() {
            "SEARCH" => (args_start, names.map(|(name, _)| name.clone()).collect()),
            "DOWNLOAD" => {
                let found: Vec<String> = names.map(|(name, _)| format!("{name} ")).collect();
                if !found.is_empty() {
                    return (args_start, found);
                }
                // A name typed whole: complete the peer after it.
                for (name, peers) in &known {
                    let Some(rest) = args.strip_prefix(name.as_str()) else {
                        continue;
                    };
                    if !rest.starts_with(char::is_whitespace) {
                        continue;
                    }
                    let peer = rest.trim_start();
                    let found = peers.iter().filter(|p| p.starts_with(peer)).cloned();
                    return (pos - peer.len(), found.collect());
                }
                (pos, Vec::new())
            }
            _ => (pos, Vec::new()),
        }
    }
}

impl Completer for ConsoleHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = self.candidates(line, pos);
        Ok((
            start,
            found
                .into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for ConsoleHelper {
    type Hint = String;
}

impl Highlighter for ConsoleHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ConsoleHelper {}

impl Helper for ConsoleHelper {}

/// Where history is kept when no file is given: the user's data folder
/// (`$XDG_DATA_HOME/napster/history`, else `~/.local/share/napster/history`), never the
/// shared folder, whose every file is offered to other peers.
fn default_history() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("napster").join("history"))
}

/// Where history is kept: the file to use (`None`: no place for it), or `Err` with the file
/// asked for when it would sit directly in the shared folder, where JOIN would offer it to
/// everyone.
fn history_path(config: &PeerConfig, shared: &Path) -> Result<Option<PathBuf>, PathBuf> {
    let Some(path) = config.history.clone().or_else(default_history) else {
        return Ok(None);
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    let _ = std::fs::create_dir_all(parent);
    let same = match (parent.canonicalize(), shared.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same { Err(path) } else { Ok(Some(path)) }
}

/// The terminal's settings before the prompt first changed them, to put back on leaving.
struct SavedTerminal(Option<Termios>);

impl SavedTerminal {
    fn save() -> SavedTerminal {
        SavedTerminal(termios::tcgetattr(io::stdin()).ok())
    }

    fn restore(&self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, saved);
        }
    }
}

/// A started prompt: [`crate::peer::line_reader`] chooses it (or plain lines) and hands both on
/// the same way; this module knows nothing of the other readers.
pub struct StartedPrompt {
    /// Where console lines go: above the prompt.
    pub output: SharedOutput,
    /// Restores the terminal if a signal left it mid-line.
    pub finish: Box<dyn FnOnce() + Send>,
}

/// The line editor and what its reading thread needs beside it.
struct Editing {
    editor: Editor<ConsoleHelper, DefaultHistory>,
    /// The history file, if history is kept.
    history: Option<PathBuf>,
    /// The line as it was when Ctrl-C was pressed (rustyline returns none).
    at_ctrl_c: Arc<parking_lot::Mutex<String>>,
}

/// Whether the prompt is being left, and whether its thread is inside `readline` (then only
/// the leaving thread can give the terminal back).
#[derive(Clone, Default)]
struct PromptFlags {
    closing: Arc<AtomicBool>,
    reading: Arc<AtomicBool>,
}

/// Starts the prompt thread. `ready` carries the console's word that it has handled the last
/// line sent.
pub fn start(
    config: &PeerConfig,
    shared: &Path,
    state: Arc<ConsoleState>,
    tx: Sender<Input>,
    ready: Receiver<()>,
) -> io::Result<StartedPrompt> {
    let (history, refused_history) = match history_path(config, shared) {
        Ok(history) => (history, None),
        Err(refused) => (None, Some(refused)),
    };
    let mut editing = editing(Arc::clone(&state), history)?;
    let printer = editing
        .editor
        .create_external_printer()
        .map_err(io::Error::other)?;
    let (output, queue) = start_printing(Box::new(printer))?;
    if let Some(path) = refused_history {
        output.line(&format!(
            "Histórico não guardado em {}: é a pasta compartilhada, que o JOIN ofereceria a todos",
            path.display()
        ));
    }
    let terminal = SavedTerminal::save();
    let flags = PromptFlags::default();
    let typed = Arc::clone(&output);
    let reader_flags = flags.clone();
    let prompt = LivePrompt::new(state);
    thread::Builder::new()
        .name("prompt".into())
        .spawn(move || read_lines(editing, prompt, typed, reader_flags, tx, ready))?;
    Ok(StartedPrompt {
        output,
        finish: Box::new(move || leave(flags, &queue, terminal)),
    })
}

/// The line editor: list completion, history loaded, Ctrl-C noting the line it interrupts.
fn editing(state: Arc<ConsoleState>, history: Option<PathBuf>) -> io::Result<Editing> {
    // List completion, as in a shell: Tab completes as far as the candidates agree, a second
    // Tab lists them; the name's trailing space lets the next Tab go on to the peer.
    let editor_config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .build();
    let mut editor: Editor<ConsoleHelper, DefaultHistory> =
        Editor::with_config(editor_config).map_err(io::Error::other)?;
    editor.set_helper(Some(ConsoleHelper { state }));
    if let Some(path) = &history
        && let Err(e) = editor.load_history(path)
    {
        log::debug!("no history loaded from {}: {e}", path.display());
    }
    let at_ctrl_c = Arc::new(parking_lot::Mutex::new(String::new()));
    editor.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(NoteLineAtCtrlC(Arc::clone(&at_ctrl_c)))),
    );
    Ok(Editing {
        editor,
        history,
        at_ctrl_c,
    })
}

/// Lines and transfer progress bars are drawn above the prompt (see LiveOutput), through the
/// printer thread started here.
fn start_printing(
    printer: Box<dyn ExternalPrinter + Send>,
) -> io::Result<(Arc<PromptOutput>, Arc<ConsoleQueue>)> {
    let queue = ConsoleQueue::new(QUEUE_BYTES);
    let sink = Arc::clone(&queue);
    let live = LiveOutput::new(
        Box::new(move |text: String| sink.push_text(text)),
        terminal_columns,
    );
    let output = Arc::new(PromptOutput {
        live,
        queue: Arc::clone(&queue),
    });
    let (printer_queue, printer_output) = (Arc::clone(&queue), Arc::clone(&output));
    thread::Builder::new()
        .name("prompt-output".into())
        .spawn(move || print_lines(printer_queue, printer_output, printer))?;
    Ok((output, queue))
}

/// The prompt thread: reads a line, sends it to the console, and reads the next only when the
/// console says it has handled this one.
fn read_lines(
    mut editing: Editing,
    prompt: LivePrompt,
    typed: Arc<PromptOutput>,
    flags: PromptFlags,
    tx: Sender<Input>,
    ready: Receiver<()>,
) {
    loop {
        flags.reading.store(true, Ordering::SeqCst);
        if flags.closing.load(Ordering::SeqCst) {
            flags.reading.store(false, Ordering::SeqCst);
            break;
        }
        let shown_prompt = prompt.raw().to_string();
        let line = editing.editor.readline(&prompt);
        flags.reading.store(false, Ordering::SeqCst);
        let (input, typed_text) = match line {
            Ok(line) => {
                remember(&mut editing.editor, editing.history.as_deref(), &line);
                (Input::Line(line.clone()), line)
            }
            Err(ReadlineError::Interrupted) => {
                let text = std::mem::take(&mut *editing.at_ctrl_c.lock());
                let empty_line = text.trim().is_empty();
                (Input::Interrupted { empty_line }, text)
            }
            Err(ReadlineError::Eof) => (Input::Eof, String::new()),
            Err(e) => {
                log::warn!("prompt failed: {e}");
                (Input::Eof, String::new())
            }
        };
        typed.line_accepted(&format!("{shown_prompt}{typed_text}"));
        // After Ctrl-D too the console may go on (it asks before stopping transfers):
        // read again only when it says so.
        if tx.send(input).is_err() || ready.recv().is_err() {
            break;
        }
    }
}

/// Leaves the prompt: the last lines are printed, and a terminal left mid-line is given back.
fn leave(flags: PromptFlags, queue: &ConsoleQueue, terminal: SavedTerminal) {
    flags.closing.store(true, Ordering::SeqCst);
    queue.flush(FLUSH_WAIT);
    if flags.reading.load(Ordering::SeqCst) {
        // Left by a signal while `readline` runs: end the prompt line and give the
        // terminal back its normal mode (and turn off bracketed paste, which rustyline
        // turned on), since that thread will never return to do it.
        terminal.restore();
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\x1b[?2004l\r\n");
        let _ = out.flush();
    }
}

/// Adds a line to the history and appends it to the file at once, so history survives even a
/// peer that is killed, and several peers of one user share one file (rustyline locks it).
fn remember(editor: &mut Editor<ConsoleHelper, DefaultHistory>, file: Option<&Path>, line: &str) {
    if line.trim().is_empty() {
        return;
    }
    if let Err(e) = editor.add_history_entry(line) {
        log::debug!("history entry not added: {e}");
        return;
    }
    if let Some(path) = file
        && let Err(e) = editor.append_history(path)
    {
        log::warn!("cannot write history to {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper_after_search(name: &str, peers: &[&str]) -> ConsoleHelper {
        let state = Arc::new(ConsoleState::default());
        state.set_last_search(
            name.to_string(),
            peers.iter().map(|p| p.to_string()).collect(),
        );
        ConsoleHelper { state }
    }

    /// rustyline places the cursor from the width measured when a line starts: every variant
    /// the prompt may switch to mid-line must have that width.
    #[test]
    fn every_prompt_variant_has_the_same_width() {
        let prompt = LivePrompt::new(Arc::new(ConsoleState::default()));
        let width = prompt.variants[0].chars().count();
        for v in &prompt.variants {
            assert_eq!(v.chars().count(), width, "{v:?}");
            assert!(v.is_ascii(), "{v:?}");
        }
    }

    /// Command names complete from a prefix typed in either case, after leading blanks.
    #[test]
    fn command_names_complete_in_any_case() {
        let h = helper_after_search("x", &[]);
        assert_eq!(h.candidates("se", 2), (0, vec!["SEARCH ".to_string()]));
        assert_eq!(h.candidates("  D", 3), (2, vec!["DOWNLOAD ".to_string()]));
    }

    /// After a search, SEARCH and DOWNLOAD complete its name (spaces included) and DOWNLOAD
    /// then completes its peers; another name gets nothing.
    #[test]
    fn names_with_spaces_and_peers_complete_after_a_search() {
        let h = helper_after_search("my video.mp4", &["10.0.0.2:5000", "10.0.0.3:6000"]);
        let line = "SEARCH my v";
        assert_eq!(
            h.candidates(line, line.len()),
            (7, vec!["my video.mp4".to_string()])
        );
        let line = "download my";
        assert_eq!(
            h.candidates(line, line.len()),
            (9, vec!["my video.mp4 ".to_string()])
        );
        let line = "DOWNLOAD my video.mp4 10.0.0.3";
        assert_eq!(
            h.candidates(line, line.len()),
            (22, vec!["10.0.0.3:6000".to_string()])
        );
        let line = "DOWNLOAD my video.mp4 ";
        assert_eq!(h.candidates(line, line.len()).1.len(), 2);
        let line = "DOWNLOAD other ";
        assert!(h.candidates(line, line.len()).1.is_empty());
    }

    /// The files a keyword SEARCH numbered complete too, whatever the case typed, and their
    /// peers after them.
    #[test]
    fn names_found_by_words_complete_in_any_case() {
        let h = helper_after_search("aula", &[]);
        h.state.set_found(search_results::Found {
            entries: vec![search_results::Numbered {
                name: "Aula-01.mp4".into(),
                size: None,
                digest: None,
                holders: 1,
                peers: vec!["10.0.0.2:5000".into()],
            }],
        });
        let line = "DOWNLOAD aula-";
        assert_eq!(
            h.candidates(line, line.len()),
            (9, vec!["Aula-01.mp4 ".to_string()])
        );
        let line = "DOWNLOAD Aula-01.mp4 ";
        assert_eq!(
            h.candidates(line, line.len()),
            (21, vec!["10.0.0.2:5000".to_string()])
        );
        let line = "SEARCH AU";
        assert_eq!(h.candidates(line, line.len()).1, ["aula", "Aula-01.mp4"]);
    }
}
