//! Starting the tracker: fit the connection limit to this machine, listen, say where, serve.
//!
//! `main` only parses the command line and hands the configuration here; what can go wrong at
//! start is a [`StartError`], whose text is the one line the operator sees (in Portuguese) and
//! whose [`StartError::failure`] is the exit code.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};

use crate::accept::Shutdown;
use crate::exit::Failure;
use crate::os_error::describe;
use crate::tracker::limits::{self, Fitted};
use crate::tracker::{Tracker, TrackerConfig};

/// Why the tracker could not start, or stopped.
#[derive(Debug)]
pub enum StartError {
    /// The address could not be listened on (taken, not this machine's, not allowed).
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The address listened on could not be read back.
    Address(io::Error),
    /// The tracker stopped serving.
    Stopped(io::Error),
}

impl StartError {
    /// The exit code for this failure.
    pub fn failure(&self) -> Failure {
        match self {
            StartError::Listen { .. } => Failure::Start,
            StartError::Address(_) | StartError::Stopped(_) => Failure::Other,
        }
    }

    /// What the operator can do about it, when there is something.
    pub fn help(&self) -> Option<&'static str> {
        match self {
            StartError::Listen { .. } => Some("escolha outro endereço com --listen IP:PORTA"),
            StartError::Address(_) | StartError::Stopped(_) => None,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Listen { addr, source } => {
                write!(
                    f,
                    "não foi possível escutar em {addr}: {}",
                    describe(source)
                )
            }
            StartError::Address(e) => write!(f, "{}", describe(e)),
            StartError::Stopped(e) => write!(f, "o servidor parou: {}", describe(e)),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Listen { source, .. } => Some(source),
            StartError::Address(e) | StartError::Stopped(e) => Some(e),
        }
    }
}

/// Runs a tracker on `listen` with `config`, its connection limit first lowered to what this
/// machine allows; prints the original's first line (where it listens) and the limit.
/// Returns only if it cannot start or stops.
pub fn run(mut config: TrackerConfig, listen: SocketAddr) -> Result<(), StartError> {
    let fitted = fit_connection_limit(&config);
    config.max_connections = fitted.cap;
    let listener = TcpListener::bind(listen).map_err(|source| {
        log::debug!("cannot listen on {listen}: {source:?}");
        StartError::Listen {
            addr: listen,
            source,
        }
    })?;
    let addr = listener.local_addr().map_err(StartError::Address)?;
    println!("Servidor ouvindo em {addr}");
    println!("{}", fitted.summary());
    Tracker::new(config)
        .run(listener, &Shutdown::new())
        .map_err(StartError::Stopped)
}

/// The connection limit asked for, lowered to fit every limit on threads of this machine; each
/// limit measured is logged (`RUST_LOG=debug`).
fn fit_connection_limit(config: &TrackerConfig) -> Fitted {
    let fitted = Fitted::new(
        config.max_connections,
        limits::measure(
            limits::open_file_limit_in_force(),
            config.thread_stack,
            config.max_buffered,
        ),
    );
    for limit in &fitted.limits {
        log::debug!(
            "connection limit {}: room for {} ({})",
            limit.name,
            limit.room,
            limit.detail
        );
    }
    fitted
}
