//! Reading the user's lines: plain stdin for scripts, or the interactive prompt.
//!
//! Either way a thread reads and sends [`Input`]s to the console over a channel, and the
//! console prints through the [`Output`](crate::peer::output::Output) this module returns.

use std::io::{self, BufRead};
use std::path::Path;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};

use crate::peer::console::{ConsoleState, Input};
use crate::peer::output::{PlainOutput, SharedOutput};
use crate::peer::prompt;
use crate::peer::{PeerConfig, Reading};

/// The longest line accepted from stdin; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 64 * 1024;

/// A started line reader.
pub struct LineReader {
    /// Where console lines go.
    pub output: SharedOutput,
    /// Who is actually typing: a terminal whose prompt could not start reads plain lines.
    pub reading: Reading,
    /// Restores the terminal and saves history.
    pub finish: Box<dyn FnOnce() + Send>,
}

/// Starts the reader that suits `config`. The interactive prompt waits for a message on
/// `ready` after each line it sends (the console has handled it); plain lines need no wait.
pub fn start(
    config: &PeerConfig,
    shared: &Path,
    state: Arc<ConsoleState>,
    tx: Sender<Input>,
    ready: Receiver<()>,
) -> io::Result<LineReader> {
    match config.reading {
        Reading::Terminal => {
            match prompt::start(config, shared, state, tx.clone(), ready) {
                Ok(prompt) => {
                    return Ok(LineReader {
                        output: prompt.output,
                        reading: Reading::Terminal,
                        finish: prompt.finish,
                    });
                }
                Err(e) => log::warn!("interactive prompt unavailable ({e}); reading plain lines"),
            }
            start_plain(tx)
        }
        Reading::Lines => start_plain(tx),
        Reading::Nothing => {
            let output = Arc::new(PlainOutput::start()?);
            let drained = Arc::clone(&output);
            Ok(LineReader {
                output,
                reading: Reading::Nothing,
                // Holding the sender keeps the input open: no line and no end of input, ever.
                finish: Box::new(move || {
                    drop(tx);
                    drained.drain();
                }),
            })
        }
    }
}

/// Reads plain lines from stdin: no prompt, no escape codes.
pub fn start_plain(tx: Sender<Input>) -> io::Result<LineReader> {
    thread::Builder::new().name("stdin".into()).spawn(move || {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        loop {
            match read_bounded_line(&mut input, MAX_LINE) {
                Ok(Some(line)) => {
                    if tx.send(Input::Line(line)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!("cannot read stdin: {e}");
                    break;
                }
            }
        }
        let _ = tx.send(Input::Eof);
    })?;
    let output = Arc::new(PlainOutput::start()?);
    let drained = Arc::clone(&output);
    Ok(LineReader {
        output,
        reading: Reading::Lines,
        // The last lines (`Peer encerrado.`) reach stdout before the process ends.
        finish: Box::new(move || drained.drain()),
    })
}

/// Reads one line of at most `max` bytes (the rest of a longer line is skipped), decoding it
/// leniently. `None` at end of input.
pub fn read_bounded_line(input: &mut dyn BufRead, max: usize) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut saw_any = false;
    loop {
        let available = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        saw_any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        input.consume(used);
        if done {
            break;
        }
    }
    if !saw_any {
        return Ok(None);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_the_next_line_survives() {
        let text = format!("{}\nSEARCH x\r\n", "a".repeat(100));
        let mut input = io::Cursor::new(text.into_bytes());
        assert_eq!(
            read_bounded_line(&mut input, 10).unwrap().unwrap(),
            "a".repeat(10)
        );
        assert_eq!(
            read_bounded_line(&mut input, 10).unwrap().unwrap(),
            "SEARCH x"
        );
        assert_eq!(read_bounded_line(&mut input, 10).unwrap(), None);
    }
}
