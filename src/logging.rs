//! Where log lines go, without ever making the thread that logs wait.
//!
//! `env_logger` writes each line to stderr while the thread that logs waits: a stderr pipe
//! nobody reads (a service manager's, a script's `2>&1 | head`) fills, and then every thread
//! that logs blocks — an upload, a tracker connection, the console. So [`init`] keeps
//! `env_logger`'s filter (`RUST_LOG`) and format, but hands each formatted line to a queue
//! bounded by bytes that one thread writes to stderr ([`ConsoleOut`], the writer the tracker's
//! console uses): a line that finds the queue full is dropped and counted, and the count is
//! written as soon as there is room (`[log] 37 linhas de log descartadas: o stderr não
//! acompanhou`). Repeated warnings are also rate-limited where they are logged
//! ([`crate::throttle`], [`crate::log_limit`]).
//!
//! While the peer's interactive prompt owns the terminal, a line written to stderr would land
//! on the prompt row, in the middle of what the user types. Once [`route_to`] is called, this
//! crate's log lines go to a thread that prints them through the console's printer, like any
//! other console line, again dropping and counting what does not fit. Other crates' log lines
//! (rustyline's among them) keep going to the stderr queue, so printing a line can never log
//! another one through the same path.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError, bounded};

use crate::console_out::ConsoleOut;
use crate::numbers::count;

/// Log lines that may wait for the console's printing thread.
const QUEUE: usize = 256;
/// Bytes of log lines that may wait for stderr.
const STDERR_QUEUE_BYTES: usize = 256 * 1024;

static ROUTE: OnceLock<Sender<String>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
static STDERR: OnceLock<ConsoleOut> = OnceLock::new();

/// Starts logging with `env_logger`'s filter from `RUST_LOG` (`default` when it is not set),
/// every line through the stderr queue.
pub fn init(default: &str) {
    let out = stderr_queue();
    let env = env_logger::Env::default().default_filter_or(default);
    let mut builder = env_logger::Builder::from_env(env);
    builder.target(env_logger::Target::Pipe(Box::new(Queued {
        out,
        partial: Vec::new(),
    })));
    // A pipe gets no colours from env_logger; stderr itself may want them.
    if colours_wanted() {
        builder.write_style(env_logger::WriteStyle::Always);
    }
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(RoutedLogger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// Writes `line` to stderr through the same queue as the log lines, so it neither waits nor
/// jumps ahead of them (the last words of a process; see [`flush`]).
pub fn stderr_line(line: &str) {
    stderr_queue().line(line.to_string());
}

/// Waits at most `wait` for the lines queued for stderr to be written: called before the
/// process exits, so its last lines are not lost, and never longer (a stderr nobody reads
/// must not keep the process from ending).
pub fn flush(wait: Duration) {
    if let Some(out) = STDERR.get() {
        out.drain(wait);
    }
}

fn stderr_queue() -> &'static ConsoleOut {
    STDERR.get_or_init(|| {
        ConsoleOut::start_named("stderr", io::stderr, STDERR_QUEUE_BYTES, |n| {
            format!("[log] {}: o stderr não acompanhou", dropped_lines(n))
        })
    })
}

/// `1 linha de log descartada`, `37 linhas de log descartadas`.
fn dropped_lines(n: u64) -> String {
    if n == 1 {
        "1 linha de log descartada".to_string()
    } else {
        format!("{} de log descartadas", count(n, "linha", "linhas"))
    }
}

/// Colours, as `env_logger` would choose them for stderr: unless `RUST_LOG_STYLE` says,
/// when stderr is a terminal and `NO_COLOR` is not set.
fn colours_wanted() -> bool {
    std::env::var_os("RUST_LOG_STYLE").is_none()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && io::stderr().is_terminal()
}

/// What `env_logger` writes to: whole lines, queued for stderr.
struct Queued {
    out: &'static ConsoleOut,
    /// A line not yet ended (`env_logger` writes each record whole, ending in a newline; this
    /// only guards against a record written in pieces).
    partial: Vec<u8>,
}

impl Write for Queued {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        let end = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(end) => end,
            // A piece of a line: kept, within the longest line the queue takes.
            None if self.partial.len() <= crate::console_out::MAX_LINE => return Ok(buf.len()),
            None => self.partial.len(),
        };
        let rest = self.partial.split_off((end + 1).min(self.partial.len()));
        let whole = std::mem::replace(&mut self.partial, rest);
        let text = String::from_utf8_lossy(&whole);
        self.out.line(text.trim_end_matches('\n').to_string());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// From now on, prints this crate's log lines with `print` (one call per line, without the
/// newline), if stderr is a terminal; otherwise (stderr redirected to a file, say) they stay
/// on stderr. Only the first call has an effect.
pub fn route_to(print: impl Fn(&str) + Send + 'static) {
    if !io::stderr().is_terminal() || ROUTE.get().is_some() {
        return;
    }
    let (tx, rx) = bounded::<String>(QUEUE);
    let spawned = thread::Builder::new()
        .name("log-lines".into())
        .spawn(move || {
            for line in rx {
                let dropped = DROPPED.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    print(&format!("[log] {}", dropped_lines(dropped)));
                }
                print(&line);
            }
        });
    match spawned {
        Ok(_) => {
            let _ = ROUTE.set(tx);
        }
        Err(e) => log::debug!("log lines stay on stderr: {e}"),
    }
}

struct RoutedLogger {
    inner: env_logger::Logger,
}

impl log::Log for RoutedLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        let ours = record.target().split("::").next() == Some(env!("CARGO_CRATE_NAME"));
        match ROUTE.get() {
            Some(route) if ours => {
                let line = format!("[{} {}] {}", record.level(), record.target(), record.args());
                if let Err(TrySendError::Full(_)) = route.try_send(line) {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => self.inner.log(record),
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_log_lines_are_counted_in_portuguese() {
        assert_eq!(dropped_lines(1), "1 linha de log descartada");
        assert_eq!(dropped_lines(9873), "9.873 linhas de log descartadas");
    }
}
