//! The original's console lines, written to stdout by one writer thread.
//!
//! Every connection thread of the tracker prints a line per request. Writing them through one
//! thread keeps lines whole and in order, and batches them into few `write` calls under load
//! (a flush happens whenever the queue runs empty, so an idle console is never behind).
//! The queue is bounded: if stdout stops draining, printers wait rather than grow memory.

use std::io::{self, Write};
use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded};

/// A cheap handle for printing whole lines to stdout, in order.
#[derive(Clone)]
pub struct ConsoleOut {
    tx: Sender<String>,
}

impl ConsoleOut {
    /// Starts the writer thread.
    pub fn start() -> ConsoleOut {
        let (tx, rx) = bounded::<String>(4096);
        let spawned = thread::Builder::new()
            .name("stdout".into())
            .spawn(move || write_lines(rx));
        if let Err(e) = spawned {
            log::error!("cannot start the stdout writer: {e}");
        }
        ConsoleOut { tx }
    }

    /// Prints one line (a newline is added).
    pub fn line(&self, text: String) {
        if let Err(e) = self.tx.send(text) {
            // The writer is gone (stdout closed): fall back to a direct write.
            println!("{}", e.into_inner());
        }
    }
}

fn write_lines(rx: Receiver<String>) {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(line) = rx.recv() {
        let mut ok = writeln!(out, "{line}").is_ok();
        while let Ok(more) = rx.try_recv() {
            ok &= writeln!(out, "{more}").is_ok();
        }
        if !(ok && out.flush().is_ok()) {
            log::debug!("stdout is closed; console lines are dropped");
        }
    }
}
