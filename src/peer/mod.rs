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
pub mod deadline;
pub mod download_error;
pub mod downloader;
pub mod folder;
pub mod get;
pub mod line_reader;
pub mod output;
pub mod progress;
pub mod prompt;
pub mod range_server;
pub mod running;
pub mod search_results;
pub mod swarm;
pub mod tracker_client;
pub mod transfer_commands;
pub mod uploader;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, unbounded};

use crate::digests::DigestCache;
use crate::exit::Failure;
use crate::os_error::describe;
use crate::peer::approval::ApprovalRequest;
use crate::peer::catalog::Catalog;
use crate::peer::console::{ConsoleChannels, ConsoleOptions, ConsoleState};
use crate::peer::downloader::Finished;
use crate::peer::folder::PeerFolder;
use crate::peer::output::SharedOutput;
use crate::peer::running::Transfers;
use crate::peer::tracker_client::{DialectChoice, LinkConfig, LinkEvent, TrackerLink};
use crate::share::SharedDir;
use crate::transfer::PartialStore;

/// How upload requests are answered (`--approve`: yes and no are for scripts). The variants'
/// comments are the values' help in `napster peer --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApproveMode {
    /// Ask the user (SIM/NAO).
    Ask,
    /// Accept every request.
    Yes,
    /// Refuse every request.
    No,
}

/// Who types the peer's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// A person at a terminal: the interactive prompt. Leaving asks first while transfers
    /// run; Ctrl-C cancels.
    Terminal,
    /// Plain lines (a script, a pipe, `--plain`): QUIT and the end of input wait for running
    /// downloads; SIGINT leaves.
    Lines,
    /// Nobody (`napster share`): serves until SIGINT or SIGTERM.
    Nothing,
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
    /// The shared folder (default [`DEFAULT_DIR`]).
    pub dir: Option<PathBuf>,
    /// How upload requests are answered.
    pub approve: ApproveMode,
    /// JOIN at start.
    pub join: bool,
    /// How long an upload request waits for SIM/NAO.
    pub approval_timeout: Duration,
    /// Who types the commands.
    pub reading: Reading,
    /// Where the interactive prompt keeps its history.
    pub history: Option<PathBuf>,
    /// A tracker or transfer partner that stops answering is given up after about this long.
    pub liveness: Duration,
    /// The dialect spoken to the tracker.
    pub tracker_dialect: DialectChoice,
    /// Sources a download from several peers uses at once.
    pub sources: usize,
}

/// The shared folder when `--dir` is not given: the same every run, in the current folder.
/// (The original used `p2p/<port>`, a new folder whenever the port changed.)
pub const DEFAULT_DIR: &str = "p2p";

/// Why the peer could not start.
#[derive(Debug)]
pub enum PeerError {
    /// The upload port could not be opened.
    Listen(SocketAddr, io::Error),
    /// The shared folder could not be created or used.
    Folder(PathBuf, io::Error),
    /// Another napster on this machine uses the folder (its process id, when known).
    FolderInUse(PathBuf, Option<u32>),
    /// A thread could not be started.
    Thread(io::Error),
}

impl PeerError {
    /// The kind of failure, for the exit code.
    pub fn failure(&self) -> Failure {
        match self {
            PeerError::Thread(_) => Failure::Other,
            _ => Failure::Start,
        }
    }

    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            PeerError::Listen(..) => {
                "escolha outra porta com --listen IP:PORTA (porta 0: qualquer uma livre)".into()
            }
            PeerError::Folder(..) => "escolha outra pasta com --dir PASTA".into(),
            PeerError::FolderInUse(..) => {
                "cada peer precisa da sua pasta: use --dir PASTA, ou encerre o outro".into()
            }
            PeerError::Thread(_) => "feche outros programas e tente de novo".into(),
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Listen(addr, e) => write!(
                f,
                "não foi possível abrir a porta de upload {addr}: {}",
                describe(e)
            ),
            PeerError::Folder(path, e) => write!(
                f,
                "não foi possível usar a pasta {}: {}",
                path.display(),
                describe(e)
            ),
            PeerError::FolderInUse(path, pid) => {
                write!(f, "a pasta {} já é usada por outro napster", path.display())?;
                match pid {
                    Some(pid) => write!(f, " (processo {pid})"),
                    None => Ok(()),
                }
            }
            PeerError::Thread(e) => {
                write!(f, "não foi possível iniciar uma thread: {}", describe(e))
            }
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PeerError::Listen(_, e) | PeerError::Folder(_, e) | PeerError::Thread(e) => Some(e),
            PeerError::FolderInUse(..) => None,
        }
    }
}

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
    pub catalog: Arc<Catalog>,
    /// Partial downloads.
    pub partials: PartialStore,
    /// Digests of shared files, and their outboards for range sessions.
    pub digests: DigestCache,
    /// The tracker connection.
    pub link: Arc<TrackerLink>,
    /// Console output.
    pub out: SharedOutput,
    /// Running transfers.
    pub transfers: Transfers,
    /// Where upload threads send their approval requests.
    pub approvals: Sender<ApprovalRequest>,
    /// How long this peer's user may take to answer an upload request, when asked
    /// (`--approve ask`); told to downloaders in a `waiting` reply.
    pub asks_within: Option<Duration>,
    /// Where each download reports its end.
    pub finished: Sender<Finished>,
    /// The bound for detecting a vanished tracker or transfer partner.
    pub liveness: Duration,
    /// Sources a download from several peers uses at once.
    pub sources: usize,
    /// Downloads from several peers running now.
    pub swarms: swarm::Running,
}

/// What a peer opens before anything else: its upload port and its folder.
pub(crate) struct Opened {
    pub(crate) listener: TcpListener,
    pub(crate) port: u16,
    pub(crate) folder: PeerFolder,
}

/// Opens the upload port and the folder (created if missing, locked for this process).
pub(crate) fn open(config: &PeerConfig) -> Result<Opened, PeerError> {
    // A download hitting RLIMIT_FSIZE must get EFBIG (reported, partial kept), not be killed.
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // The original's tracker announces the port of the tracker connection: unless the tracker
    // is known to be ours, that connection leaves from the upload port, which is shared.
    let share_port = config.tracker_dialect != DialectChoice::Napster;
    let listener = crate::dial::listen_for_uploads(config.listen, share_port)
        .map_err(|e| PeerError::Listen(config.listen, e))?;
    let port = listener
        .local_addr()
        .map_err(|e| PeerError::Listen(config.listen, e))?
        .port();
    let folder = PeerFolder::open(config.dir.clone())?;
    Ok(Opened {
        listener,
        port,
        folder,
    })
}

/// Runs a peer until it leaves (QUIT, end of input, a signal); returns the first failure of
/// the commands it ran, if any (see [`crate::exit`]).
pub fn run(config: PeerConfig) -> Result<Option<Failure>, PeerError> {
    let Opened {
        listener,
        port,
        folder,
    } = open(&config)?;
    let (input_tx, input_rx) = unbounded();
    let (ready_tx, ready_rx) = unbounded();
    let state = Arc::new(ConsoleState::default());
    let reader = start_reading(&config, &folder, Arc::clone(&state), input_tx, ready_rx)?;
    let (link_tx, link_rx) = unbounded();
    let (approval_tx, approval_rx) = unbounded();
    let (finished_tx, finished_rx) = unbounded();
    let to_console = ToConsole {
        link: link_tx,
        approvals: approval_tx,
        finished: finished_tx,
    };
    let out = Arc::clone(&reader.output);
    let ctx = Arc::new(shared_context(&config, port, &folder, out, to_console)?);
    start_serving(&ctx, &folder, listener)?;
    let signals = start_signal_thread().map_err(PeerError::Thread)?;
    let failure = console::run(
        Arc::clone(&ctx),
        state,
        ConsoleChannels {
            inputs: input_rx,
            ready: ready_tx,
            approvals: approval_rx,
            link: link_rx,
            finished: finished_rx,
            signals,
        },
        ConsoleOptions {
            approve: config.approve,
            approval_timeout: config.approval_timeout,
            join_at_start: config.join,
            reading: reader.reading,
        },
    );
    (reader.finish)();
    Ok(failure)
}

/// Starts reading the user's lines; with the interactive prompt, log lines go above it.
fn start_reading(
    config: &PeerConfig,
    folder: &PeerFolder,
    state: Arc<ConsoleState>,
    inputs: Sender<console::Input>,
    ready: crossbeam_channel::Receiver<()>,
) -> Result<line_reader::LineReader, PeerError> {
    let reader = line_reader::start(config, folder.shared.path(), state, inputs, ready)
        .map_err(PeerError::Thread)?;
    if reader.reading == Reading::Terminal {
        // The interactive prompt: log lines go above it, not onto the row being typed.
        let out = Arc::clone(&reader.output);
        crate::logging::route_to(move |line| out.line(line));
    }
    Ok(reader)
}

/// Where the peer's threads tell the console what happened.
struct ToConsole {
    link: Sender<LinkEvent>,
    approvals: Sender<ApprovalRequest>,
    finished: Sender<Finished>,
}

/// What the peer's threads share, with the tracker link started.
fn shared_context(
    config: &PeerConfig,
    port: u16,
    folder: &PeerFolder,
    out: SharedOutput,
    to_console: ToConsole,
) -> Result<PeerContext, PeerError> {
    let bind_ip = Some(config.listen.ip()).filter(|ip| !ip.is_unspecified());
    let catalog = Arc::new(Catalog::new(folder.shared.clone()));
    let listing = Arc::clone(&catalog);
    let link = TrackerLink::start(
        LinkConfig {
            server: config.server.clone(),
            upload_port: port,
            local_ip: bind_ip,
            liveness: config.liveness,
            dialect: config.tracker_dialect,
            folder: folder.shared.path().to_path_buf(),
            // A reconnection JOINs with every record known now.
            list_files: Box::new(move || listing.snapshot_for_join().unwrap_or_default()),
        },
        to_console.link,
    )
    .map_err(PeerError::Thread)?;
    Ok(PeerContext {
        port,
        bind_ip,
        advertise: config.advertise.clone(),
        partials: PartialStore::new(folder.shared.path()),
        digests: open_digests(folder.shared.path()),
        catalog,
        shared: folder.shared.clone(),
        link: Arc::new(link),
        out,
        transfers: Transfers::new(),
        approvals: to_console.approvals,
        asks_within: (config.approve == ApproveMode::Ask).then_some(config.approval_timeout),
        finished: to_console.finished,
        liveness: config.liveness,
        sources: config.sources.max(1),
        swarms: Default::default(),
    })
}

/// Says where uploads are awaited, starts hashing and announcing the shared files, and starts
/// serving uploads.
fn start_serving(
    ctx: &Arc<PeerContext>,
    folder: &PeerFolder,
    listener: TcpListener,
) -> Result<(), PeerError> {
    ctx.out.line(&format!(
        "Aguardando pedidos de download na porta {}; {}",
        ctx.port,
        folder.describe()
    ));
    // Hash the shared files now, so the first request for a large one is answered at once,
    // and keep the tracker told of new, changed and removed files and of digests learned.
    announcer::start(ctx).map_err(PeerError::Thread)?;
    let upload_ctx = Arc::clone(ctx);
    thread::Builder::new()
        .name("upload-listener".into())
        .spawn(move || uploader::serve(listener, upload_ctx))
        .map_err(PeerError::Thread)?;
    Ok(())
}

/// The shared folder's digest cache, which keeps each file's outboard beside its digest.
/// Outboards used to be kept by digest in `.napster/outboard/`, where nothing ever removed
/// them: that folder is deleted.
fn open_digests(shared: &std::path::Path) -> DigestCache {
    let napster = shared.join(".napster");
    if let Err(e) = std::fs::remove_dir_all(napster.join("outboard"))
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!(
            "cannot remove the old outboards in {}: {e}",
            napster.display()
        );
    }
    DigestCache::persistent(napster.join("digests"))
}

/// Forwards SIGINT and SIGTERM as events.
pub(crate) fn start_signal_thread() -> io::Result<crossbeam_channel::Receiver<i32>> {
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
