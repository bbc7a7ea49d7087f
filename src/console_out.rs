//! Lines written by one writer thread within a byte budget: the tracker's console lines on
//! stdout, and every log line on stderr (see [`crate::logging`]).
//!
//! Every connection thread of the tracker prints a line per request. Writing them through one
//! thread keeps lines whole and in order, and batches them into few `write` calls under load:
//! after writing, the writer lets lines gather for [`LINGER`] before it looks again, so a busy
//! tracker wakes it a few hundred times a second rather than once a line (each wake-up was a
//! system call in the SEARCH path). An idle console is behind by at most that.
//!
//! Printing never waits for the output: a slow terminal, an SSH session or a pipe nobody reads
//! must not hold up a reply. Lines wait, as bytes, in a buffer bounded by [`QUEUE_BYTES`]; a line
//! that does not fit is dropped, and the next line written says how many were. Lines are
//! shortened before they are queued: a name list keeps its first names and says how many more
//! there were ([`name_list`]), and any line is cut at [`MAX_LINE`] bytes.

use std::io::{self, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::numbers::count;
pub use crate::numbers::thousands;
use crate::protocol::legacy::python_list;

/// Bytes of console lines that may wait for stdout; beyond it lines are dropped.
pub const QUEUE_BYTES: usize = 256 * 1024;

/// The longest console line, in bytes; a longer one is cut and marked.
pub const MAX_LINE: usize = 4096;

/// Bytes of names shown in a console line's list before the rest is only counted.
pub const LIST_BYTES: usize = 1024;

/// How long the writer lets lines gather after writing a batch.
pub const LINGER: Duration = Duration::from_millis(2);

/// A cheap handle for printing whole lines to stdout, in order, without ever waiting.
#[derive(Clone)]
pub struct ConsoleOut {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Told whenever the writer has written all it took.
    written: Condvar,
    budget: usize,
    /// The line that says how many lines were dropped.
    dropped_note: fn(u64) -> String,
}

#[derive(Default)]
struct Queue {
    /// Lines waiting, each with its newline.
    text: Vec<u8>,
    /// Lines dropped since the last line was queued.
    dropped: u64,
    /// The writer waits for a printer's signal (it found nothing to write); otherwise it
    /// looks again by itself.
    asleep: bool,
    /// The writer holds lines it took and has not written yet.
    writing: bool,
}

impl Queue {
    /// Queues the line that says how many lines were dropped (worded by `note`).
    fn push_dropped_note(&mut self, note: fn(u64) -> String) {
        let dropped = std::mem::take(&mut self.dropped);
        self.text.extend_from_slice(note(dropped).as_bytes());
        self.text.push(b'\n');
    }
}

impl ConsoleOut {
    /// Starts the writer thread, writing to stdout.
    pub fn start() -> ConsoleOut {
        ConsoleOut::start_with(io::stdout, QUEUE_BYTES)
    }

    /// Starts the writer thread, writing to what `open` returns, with `budget` bytes of queue.
    pub fn start_with<W, F>(open: F, budget: usize) -> ConsoleOut
    where
        W: Write,
        F: FnOnce() -> W + Send + 'static,
    {
        ConsoleOut::start_named("stdout", open, budget, console_lines_dropped)
    }

    /// Starts a writer thread called `name`, writing to what `open` returns, with `budget`
    /// bytes of queue; `dropped_note` words the line that counts dropped lines.
    pub fn start_named<W, F>(
        name: &str,
        open: F,
        budget: usize,
        dropped_note: fn(u64) -> String,
    ) -> ConsoleOut
    where
        W: Write,
        F: FnOnce() -> W + Send + 'static,
    {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            budget,
            dropped_note,
        });
        let theirs = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(name.into())
            .spawn(move || write_lines(&theirs, open()));
        if let Err(e) = spawned {
            log::error!("cannot start the {name} writer: {e}");
        }
        ConsoleOut { shared }
    }

    /// Waits until every line queued so far is written, at most `wait`; false if some are
    /// not (the output does not keep up). For the last lines of a process.
    pub fn drain(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut queue = self.shared.queue.lock();
        while !queue.text.is_empty() || queue.writing {
            if self
                .shared
                .written
                .wait_until(&mut queue, deadline)
                .timed_out()
            {
                return false;
            }
        }
        true
    }

    /// Queues one line (a newline is added); drops it if the queue is full.
    pub fn line(&self, text: String) {
        let text = cut_line(text);
        self.queue(&[&text]);
    }

    /// Queues the line made of `parts` (a newline is added), copied straight into the queue:
    /// no `String` is made for a line of usual length.
    pub fn line_of(&self, parts: &[&str]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_LINE {
            self.line(parts.concat());
        } else {
            self.queue(parts);
        }
    }

    fn queue(&self, parts: &[&str]) {
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        let mut queue = self.shared.queue.lock();
        if queue.text.len() + len > self.shared.budget {
            queue.dropped += 1;
            return;
        }
        if queue.dropped > 0 {
            queue.push_dropped_note(self.shared.dropped_note);
        }
        for part in parts {
            queue.text.extend_from_slice(part.as_bytes());
        }
        queue.text.push(b'\n');
        let wake = std::mem::take(&mut queue.asleep);
        drop(queue);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

/// Writes queued lines until the process ends; a closed stdout makes lines vanish quietly.
fn write_lines<W: Write>(shared: &Shared, mut out: W) {
    let mut closed = false;
    let mut batch = Vec::new();
    loop {
        {
            let mut queue = shared.queue.lock();
            while queue.text.is_empty() {
                if queue.dropped > 0 {
                    queue.push_dropped_note(shared.dropped_note);
                    break;
                }
                queue.asleep = true;
                shared.wake.wait(&mut queue);
            }
            queue.asleep = false;
            queue.writing = true;
            std::mem::swap(&mut queue.text, &mut batch);
        }
        let written = out.write_all(&batch).is_ok() && out.flush().is_ok();
        shared.queue.lock().writing = false;
        shared.written.notify_all();
        if !written && !closed {
            closed = true;
            // Said once; through the log, which may be this very output (then it is dropped).
            log::debug!("an output is closed; its lines are dropped");
        }
        batch.clear();
        if batch.capacity() > shared.budget.max(64 * 1024) {
            batch = Vec::new();
        }
        thread::sleep(LINGER);
    }
}

/// The line that says how many console lines were dropped.
fn console_lines_dropped(n: u64) -> String {
    format!(
        "({} do console {}: a saída não acompanhou)",
        count(n, "linha", "linhas"),
        if n == 1 { "descartada" } else { "descartadas" }
    )
}

/// `text` cut to at most [`MAX_LINE`] bytes (on a character boundary), marked when cut.
fn cut_line(mut text: String) -> String {
    if text.len() <= MAX_LINE {
        return text;
    }
    let total = text.len();
    let mut end = MAX_LINE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!(" ... ({} bytes)", thousands(total as u64)));
    text
}

/// A name list as the original prints it (`['a.txt', 'b.txt']`), shortened for the console:
/// names are shown until about [`LIST_BYTES`] bytes, then `... e mais 9.873`.
pub fn name_list<S: AsRef<str>>(names: &[S]) -> String {
    let mut shown = 0;
    let mut bytes = 0;
    for name in names {
        bytes += name.as_ref().len() + 4;
        if bytes > LIST_BYTES {
            break;
        }
        shown += 1;
    }
    let list = python_list(&names[..shown]);
    if shown == names.len() {
        return list;
    }
    let more = thousands((names.len() - shown) as u64);
    let open = &list[..list.len() - 1];
    if shown == 0 {
        format!("{open}... e mais {more}]")
    } else {
        format!("{open}, ... e mais {more}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Short lists are printed whole, as the original; long ones keep their first names and
    /// count the rest.
    #[test]
    fn long_lists_are_shortened_with_a_count() {
        assert_eq!(name_list(&["a.txt", "b c"]), "['a.txt', 'b c']");
        let names: Vec<String> = (0..10_000).map(|i| format!("arquivo-{i:05}.txt")).collect();
        let line = name_list(&names);
        assert!(line.len() <= LIST_BYTES + 40, "{}", line.len());
        assert!(line.starts_with("['arquivo-00000.txt', "), "{line}");
        let shown = line.matches(".txt'").count();
        assert!(shown > 10, "{line}");
        assert!(
            line.ends_with(&format!(
                ", ... e mais {}]",
                thousands(10_000 - shown as u64)
            )),
            "{line}"
        );
        let huge = ["x".repeat(5000)];
        assert_eq!(name_list(&huge), "[... e mais 1]");
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let line = cut_line("é".repeat(MAX_LINE));
        assert!(line.len() < MAX_LINE + 30);
        assert!(line.ends_with(&format!(" ... ({} bytes)", thousands(2 * MAX_LINE as u64))));
    }

    /// A writer that blocks until the test lets it go, then forwards what it got.
    struct Gate {
        open: mpsc::Receiver<()>,
        seen: mpsc::Sender<Vec<u8>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.open.recv();
            let _ = self.seen.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// While stdout is stuck, printing never blocks and the queue stays within its budget;
    /// once stdout drains, the lines that fitted come out in order, then how many were dropped.
    #[test]
    fn a_stuck_stdout_drops_lines_and_says_how_many() {
        let (open_tx, open_rx) = mpsc::channel();
        let (seen_tx, seen_rx) = mpsc::channel();
        let out = ConsoleOut::start_with(
            move || Gate {
                open: open_rx,
                seen: seen_tx,
            },
            100,
        );
        // The first line is taken by the writer, which then blocks in write().
        out.line("first".into());
        // Wait until the writer holds it (its queue is empty again).
        while !out.shared.queue.lock().text.is_empty() {
            thread::yield_now();
        }
        for i in 0..1000 {
            out.line(format!("line {i:03} ........"));
        }
        assert!(out.shared.queue.lock().text.len() <= 100);
        for _ in 0..10 {
            open_tx.send(()).unwrap();
        }
        drop(open_tx);
        let mut text = String::new();
        while let Ok(bytes) = seen_rx.recv_timeout(Duration::from_secs(30)) {
            text.push_str(&String::from_utf8_lossy(&bytes));
            if text.contains("descartada") {
                break;
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1], "line 000 ........");
        let kept = lines.iter().filter(|l| l.starts_with("line ")).count();
        assert!((1..=6).contains(&kept), "{text}");
        assert_eq!(
            *lines.last().unwrap(),
            format!(
                "({} linhas do console descartadas: a saída não acompanhou)",
                thousands(1000 - kept as u64)
            ),
            "{text}"
        );
    }
}
