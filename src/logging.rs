//! Where log lines go: stderr, or, while the peer's interactive prompt owns the terminal,
//! above the prompt.
//!
//! `env_logger` writes straight to stderr. When stderr is the terminal the prompt is drawn on,
//! such a line lands on the prompt row, in the middle of what the user types. [`init`] installs
//! a logger that keeps `env_logger`'s filter (`RUST_LOG`) and, once [`route_to`] is called,
//! hands this crate's log lines to a thread that prints them through the console's printer,
//! like any other console line. The logging thread never waits: a line that finds the queue
//! full is dropped and counted, and the count is printed with the next line. Other crates' log
//! lines (rustyline's among them) keep going to stderr, so printing a line can never log
//! another one through the same path.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use crossbeam_channel::{Sender, TrySendError, bounded};

/// Log lines that may wait for the printing thread.
const QUEUE: usize = 256;

static ROUTE: OnceLock<Sender<String>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Starts logging with `env_logger`'s filter from `RUST_LOG` (`default` when it is not set).
pub fn init(default: &str) {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
            .build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(RoutedLogger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// From now on, prints this crate's log lines with `print` (one call per line, without the
/// newline), if stderr is a terminal; otherwise (stderr redirected to a file, say) they stay
/// on stderr. Only the first call has an effect.
pub fn route_to(print: impl Fn(&str) + Send + 'static) {
    if !std::io::stderr().is_terminal() || ROUTE.get().is_some() {
        return;
    }
    let (tx, rx) = bounded::<String>(QUEUE);
    let spawned = thread::Builder::new()
        .name("log-lines".into())
        .spawn(move || {
            for line in rx {
                let dropped = DROPPED.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    print(&format!("[log] {dropped} linha(s) de log descartada(s)"));
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
