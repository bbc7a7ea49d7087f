//! The interactive console: a `rustyline` prompt with history and completion.
//!
//! The prompt runs on its own thread and sends each line to the console thread. Everything the
//! peer prints goes through rustyline's external printer, which draws it above the prompt and
//! redraws the prompt with whatever the user had typed, so an upload request arriving half way
//! through a command never destroys it.

use std::borrow::Cow;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter, Helper};

use crate::peer::PeerConfig;
use crate::peer::commands::COMMAND_NAMES;
use crate::peer::console::{ConsoleState, Input};
use crate::peer::line_reader::LineReader;
use crate::peer::output::{LiveOutput, Output, terminal_columns};

/// Completion of command names, and of file names and peers from the last search.
struct ConsoleHelper {
    state: Arc<ConsoleState>,
}

impl ConsoleHelper {
    fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let word_start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[word_start..];
        if word_start == 0 {
            let upper = word.to_ascii_uppercase();
            let names = COMMAND_NAMES
                .iter()
                .filter(|c| c.starts_with(&upper))
                .map(|c| format!("{c} "))
                .collect();
            return (0, names);
        }
        let command = before
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let last = self.state.last_search.lock().clone();
        let Some((name, peers)) = last else {
            return (word_start, Vec::new());
        };
        let args_before =
            before[command.len()..].split_whitespace().count() - usize::from(!word.is_empty());
        let options: Vec<String> = match (command.as_str(), args_before) {
            ("SEARCH", 0) | ("DOWNLOAD", 0) => vec![name],
            ("DOWNLOAD", _) => peers,
            _ => Vec::new(),
        };
        let found = options
            .into_iter()
            .filter(|o| o.starts_with(word))
            .collect();
        (word_start, found)
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

/// Where history is kept when no file is given: the user's data folder, not the shared one.
fn default_history() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("napster").join("history"))
}

/// Starts the prompt thread.
pub fn start(
    config: &PeerConfig,
    state: Arc<ConsoleState>,
    tx: Sender<Input>,
) -> io::Result<LineReader> {
    let mut editor: Editor<ConsoleHelper, DefaultHistory> =
        Editor::new().map_err(io::Error::other)?;
    editor.set_helper(Some(ConsoleHelper {
        state: Arc::clone(&state),
    }));
    let history = config.history.clone().or_else(default_history);
    if let Some(path) = &history {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = editor.load_history(path);
    }
    let mut printer = editor.create_external_printer().map_err(io::Error::other)?;
    // Lines and transfer progress bars are drawn above the prompt (see LiveOutput).
    let output = Arc::new(LiveOutput::new(
        Box::new(move |text: String| {
            if printer.print(text.clone()).is_err() {
                print!("{text}");
            }
        }),
        terminal_columns,
    ));
    let typed = Arc::clone(&output);
    let editor = Arc::new(Mutex::new(editor));
    let reading = Arc::clone(&editor);
    thread::Builder::new()
        .name("prompt".into())
        .spawn(move || {
            loop {
                let prompt = state.prompt();
                let line = reading.lock().readline(&prompt);
                typed.input_accepted();
                let input = match line {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = reading.lock().add_history_entry(line.as_str());
                        }
                        Input::Line(line)
                    }
                    Err(ReadlineError::Interrupted) => Input::Interrupted,
                    Err(ReadlineError::Eof) => Input::Eof,
                    Err(e) => {
                        log::warn!("prompt failed: {e}");
                        Input::Eof
                    }
                };
                let last = input == Input::Eof;
                if tx.send(input).is_err() || last {
                    break;
                }
            }
        })?;
    let finish = move || {
        if let Some(path) = &history
            && let Some(mut editor) = editor.try_lock()
        {
            let _ = editor.save_history(path);
        }
    };
    Ok(LineReader {
        output,
        quit_at_eof: true,
        finish: Box::new(finish),
    })
}
