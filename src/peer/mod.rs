//! The peer: shares a folder, searches the tracker, downloads from other peers, and serves
//! uploads its user approves.
//!
//! Threads: the console (this module's [`run`], the only one that decides), a line reader
//! feeding it, the upload listener with one thread per upload, one thread per download, and
//! the tracker connection's reader.

pub mod announcer;
pub mod approval;
pub mod catalog;
pub mod commands;
pub mod console;
pub mod downloader;
pub mod line_reader;
pub mod output;
pub mod progress;
pub mod prompt;
pub mod search_results;
pub mod tracker_client;
pub mod transfers;
pub mod uploader;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, unbounded};

use crate::peer::approval::ApprovalRequest;
use crate::peer::catalog::Catalog;
use crate::peer::console::{ConsoleChannels, ConsoleState};
use crate::peer::output::SharedOutput;
use crate::peer::tracker_client::TrackerLink;
use crate::peer::transfers::Transfers;
use crate::share::SharedDir;
use crate::transfer::{DigestCache, PartialStore};

/// How upload requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApproveMode {
    /// Ask the user (SIM/NAO).
    Ask,
    /// Accept every request (for scripts).
    Yes,
    /// Refuse every request (for scripts).
    No,
}

/// Everything `napster peer` is started with.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The tracker, `HOST:PORT`.
    pub server: String,
    /// Where to listen for uploads.
    pub listen: SocketAddr,
    /// The host this peer calls itself in its console lines.
    pub advertise: Option<String>,
    /// The shared folder (default `p2p/<upload port>`).
    pub dir: Option<PathBuf>,
    /// How upload requests are answered.
    pub approve: ApproveMode,
    /// JOIN at start.
    pub join: bool,
    /// How long an upload request waits for SIM/NAO.
    pub approval_timeout: Duration,
    /// Use the interactive prompt (stdin is a terminal).
    pub interactive: bool,
    /// Where the interactive prompt keeps its history.
    pub history: Option<PathBuf>,
    /// A tracker or transfer partner that stops answering is given up after about this long.
    pub liveness: Duration,
}

/// Why the peer could not start.
#[derive(Debug)]
pub enum PeerError {
    /// The upload port could not be opened.
    Listen(SocketAddr, io::Error),
    /// The shared folder could not be created.
    Folder(io::Error),
    /// A thread could not be started.
    Thread(io::Error),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Listen(addr, e) => write!(f, "cannot listen for uploads on {addr}: {e}"),
            PeerError::Folder(e) => write!(f, "{e}"),
            PeerError::Thread(e) => write!(f, "cannot start a thread: {e}"),
        }
    }
}

impl std::error::Error for PeerError {}

/// What the peer's threads share.
pub struct PeerContext {
    /// The upload port.
    pub port: u16,
    /// The host to call itself, if given.
    pub advertise: Option<String>,
    /// The specific address uploads are served on, if any: outgoing connections leave from it.
    pub bind_ip: Option<std::net::IpAddr>,
    /// The shared folder.
    pub shared: SharedDir,
    /// The shared files as announced to the tracker, and changes not yet announced.
    pub catalog: Catalog,
    /// Partial downloads.
    pub partials: PartialStore,
    /// Digests of shared files.
    pub digests: DigestCache,
    /// The tracker connection.
    pub link: Arc<TrackerLink>,
    /// Console output.
    pub out: SharedOutput,
    /// Running transfers.
    pub transfers: Transfers,
    /// Where upload threads send their approval requests.
    pub approvals: Sender<ApprovalRequest>,
    /// The bound for detecting a vanished tracker or transfer partner.
    pub liveness: Duration,
}

/// Runs a peer until QUIT or a signal.
pub fn run(config: PeerConfig) -> Result<(), PeerError> {
    // A download hitting RLIMIT_FSIZE must get EFBIG (reported, partial kept), not be killed.
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let listener =
        TcpListener::bind(config.listen).map_err(|e| PeerError::Listen(config.listen, e))?;
    let port = listener
        .local_addr()
        .map_err(|e| PeerError::Listen(config.listen, e))?
        .port();
    let dir = config
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("p2p").join(port.to_string()));
    let shared = SharedDir::open(dir).map_err(PeerError::Folder)?;

    let (link_tx, link_rx) = unbounded();
    let (approval_tx, approval_rx) = unbounded();
    let (input_tx, input_rx) = unbounded();
    let (ready_tx, ready_rx) = unbounded();
    let state = Arc::new(ConsoleState::default());
    let reader = line_reader::start(
        &config,
        shared.path(),
        Arc::clone(&state),
        input_tx,
        ready_rx,
    )
    .map_err(PeerError::Thread)?;
    let bind_ip = Some(config.listen.ip()).filter(|ip| !ip.is_unspecified());
    let ctx = Arc::new(PeerContext {
        port,
        bind_ip,
        advertise: config.advertise.clone(),
        partials: PartialStore::new(shared.path()),
        catalog: Catalog::new(shared.clone()),
        shared,
        digests: DigestCache::new(),
        link: Arc::new(TrackerLink::new(
            config.server.clone(),
            link_tx,
            config.liveness,
            bind_ip,
        )),
        out: reader.output,
        transfers: Transfers::new(),
        approvals: approval_tx,
        liveness: config.liveness,
    });
    ctx.out.line(&format!(
        "Aguardando pedidos de download na porta {port}; pasta {}",
        ctx.shared.path().display()
    ));

    // Hash the shared files now, so the first request for a large one is answered at once,
    // and keep the tracker told of new, changed and removed files and of digests learned.
    announcer::start(&ctx).map_err(PeerError::Thread)?;

    let upload_ctx = Arc::clone(&ctx);
    thread::Builder::new()
        .name("upload-listener".into())
        .spawn(move || uploader::serve(listener, upload_ctx))
        .map_err(PeerError::Thread)?;

    let signals = start_signal_thread().map_err(PeerError::Thread)?;
    console::run(
        Arc::clone(&ctx),
        state,
        ConsoleChannels {
            inputs: input_rx,
            ready: ready_tx,
            approvals: approval_rx,
            link: link_rx,
            signals,
        },
        config.approve,
        config.approval_timeout,
        config.join,
        reader.quit_at_eof,
    );
    (reader.finish)();
    Ok(())
}

/// Forwards SIGINT and SIGTERM to the console as events.
fn start_signal_thread() -> io::Result<crossbeam_channel::Receiver<i32>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (tx, rx) = unbounded();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}
