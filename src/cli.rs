//! The command line: `napster server` and `napster peer`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::peer::{ApproveMode, PeerConfig};
use crate::tracker::TrackerConfig;

/// A Napster-style file sharing system: a tracker and peers.
#[derive(Debug, Parser)]
#[command(name = "napster", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Mode,
}

/// The two programs.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Run the tracker (the original's "servidor").
    Server(ServerArgs),
    /// Run a peer.
    Peer(PeerArgs),
}

/// `napster server` options.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:12346")]
    pub listen: SocketAddr,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = crate::protocol::DEFAULT_MAX_MESSAGE)]
    pub max_message: usize,
    /// MiB all connections together may use to buffer large messages; a connection that would
    /// need more is told to try later and closed.
    #[arg(long, default_value_t = 256)]
    pub max_buffered_mib: usize,
    /// Most names one peer may share.
    #[arg(long, default_value_t = 10_000)]
    pub max_names: usize,
    /// Most names all peers together may list (a name listed by two peers counts twice);
    /// bounds the index's memory: about 100 bytes a name, at most about 350.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_listed_names: usize,
    /// Longest file name, in bytes.
    #[arg(long, default_value_t = crate::share::MAX_NAME_BYTES)]
    pub max_name_len: usize,
    /// Most connections at once; more are told the tracker is full. Lowered at start to fit
    /// the open-file limit (one descriptor per connection, 64 spare).
    #[arg(long, default_value_t = 16_384)]
    pub max_connections: usize,
    /// Seconds a started message may take to arrive whole.
    #[arg(long, default_value_t = 10)]
    pub message_timeout: u64,
    /// Seconds a new connection has to JOIN. Generous by default: the original's peers
    /// connect at start and JOIN only when their user types it; silent connections are
    /// bounded by --max-connections anyway.
    #[arg(long, default_value_t = 300)]
    pub join_timeout: u64,
    /// Seconds after which a silent, vanished host is dropped.
    #[arg(long, default_value_t = 30)]
    pub liveness: u64,
    /// Stack size of each connection thread, in KiB (small, so 10,000 peers fit; see docs/tracker.md).
    #[arg(long, default_value_t = 128)]
    pub thread_stack_kib: usize,
    /// Most results one SEARCH returns; the reply says when more matched.
    #[arg(long, default_value_t = 100)]
    pub max_results: usize,
}

impl ServerArgs {
    /// The tracker configuration these options describe.
    pub fn config(&self) -> TrackerConfig {
        TrackerConfig {
            max_message: self.max_message,
            max_names: self.max_names,
            max_listed_names: self.max_listed_names,
            max_buffered: self.max_buffered_mib.saturating_mul(1 << 20),
            max_name_len: self.max_name_len,
            max_connections: self.max_connections,
            message_timeout: seconds(self.message_timeout),
            join_timeout: seconds(self.join_timeout),
            liveness: seconds(self.liveness),
            thread_stack: self.thread_stack_kib.max(32).saturating_mul(1024),
            max_results: self.max_results.max(1),
        }
    }
}

/// `--approve` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Approve {
    /// Ask the user (SIM/NAO).
    Ask,
    /// Accept every request.
    Yes,
    /// Refuse every request.
    No,
}

/// `napster peer` options.
#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    /// The tracker's address.
    #[arg(long, default_value = "127.0.0.1:12346")]
    pub server: String,
    /// Address to listen on for uploads (port 0: any free port).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// The host this peer calls itself in its console lines (default: the local address of
    /// its connection to the tracker).
    #[arg(long)]
    pub advertise: Option<String>,
    /// The shared folder (default p2p/UPLOAD_PORT).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How upload requests are answered.
    #[arg(long, value_enum, default_value = "ask")]
    pub approve: Approve,
    /// JOIN at start.
    #[arg(long)]
    pub join: bool,
    /// Seconds an upload request waits for SIM/NAO before it is refused.
    #[arg(long, default_value_t = 60)]
    pub approval_timeout: u64,
    /// History file of the interactive prompt (default ~/.local/share/napster/history).
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Read plain lines even when stdin is a terminal.
    #[arg(long)]
    pub plain: bool,
    /// Seconds after which a silent, vanished tracker or transfer partner is given up.
    #[arg(long, default_value_t = 30)]
    pub liveness: u64,
}

impl PeerArgs {
    /// The peer configuration these options describe.
    pub fn config(&self, stdin_is_terminal: bool) -> PeerConfig {
        PeerConfig {
            server: self.server.clone(),
            listen: self.listen,
            advertise: self.advertise.clone(),
            dir: self.dir.clone(),
            approve: match self.approve {
                Approve::Ask => ApproveMode::Ask,
                Approve::Yes => ApproveMode::Yes,
                Approve::No => ApproveMode::No,
            },
            join: self.join,
            approval_timeout: seconds(self.approval_timeout),
            interactive: stdin_is_terminal && !self.plain,
            history: self.history.clone(),
            liveness: seconds(self.liveness),
        }
    }
}

/// The longest time any option may give: a day. Longer values are taken as a day, so that
/// deadlines computed from them (`now + limit`) can never overflow.
const LONGEST: u64 = 24 * 60 * 60;

/// `secs` as a duration of at least one second and at most [`LONGEST`].
fn seconds(secs: u64) -> Duration {
    Duration::from_secs(secs.clamp(1, LONGEST))
}
