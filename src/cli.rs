//! The command line: `napster server`, `napster peer`, and the one-shot `napster get` and
//! `napster share` for scripts.
//!
//! clap parses; the peer's values are then checked here ([`PeerArgs::config`] and friends), so
//! that a mistake such as `--server 127.0.0.1` (no port) or a `--dir` naming a file is refused
//! at start with a Portuguese sentence, not at the first JOIN.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::peer::tracker_client::DialectChoice;
use crate::peer::{ApproveMode, PeerConfig, Reading};
use crate::tracker::TrackerConfig;

/// A Napster-style file sharing system: a tracker and peers.
#[derive(Debug, Parser)]
#[command(name = "napster", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Mode,
}

const EXAMPLES: &str = "\
Examples (three terminals on one machine):
  napster server
  napster peer --dir alice --join
  napster peer --dir bob --join      then type SEARCH aula-01.mp4 and DOWNLOAD aula-01.mp4

For scripts:
  napster share alice --approve yes  serve the folder until Ctrl-C or SIGTERM
  napster get aula-01.mp4 --dir bob  download it from whoever has it; exit 0 if it arrived

`napster help peer` lists the console's commands, `napster help get` the exit codes.";

/// The programs.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Run the tracker (the original's "servidor").
    Server(ServerArgs),
    /// Run a peer with its console: JOIN, SEARCH, DOWNLOAD, answer upload requests.
    #[command(after_help = PEER_HELP)]
    Peer(PeerArgs),
    /// Download one file and exit; the exit code says whether it arrived, verified.
    #[command(after_help = GET_HELP)]
    Get(GetArgs),
    /// Share a folder with no console until Ctrl-C or SIGTERM, answering every request as
    /// --approve says.
    #[command(after_help = SHARE_HELP)]
    Share(ShareArgs),
}

const PEER_HELP: &str = "\
Console commands (case-insensitive; typed, or piped on stdin):
  JOIN                    register with the tracker, sharing the folder's files
  SEARCH [name]           which peers share this exact name
  DOWNLOAD [name [peer]]  fetch it; peer is IP:PORT or a port. Asked for when missing, or
                          taken from the last SEARCH when it found exactly one peer
  SIM / NAO               approve / refuse the oldest upload request
  HELP                    list the commands
  QUIT                    leave (Ctrl-D too); asks first while transfers are running

Examples:
  napster peer --dir alice --join
  napster peer --server 192.168.0.10:12346 --dir ~/compartilhado
  printf 'JOIN\\nSEARCH aula.mp4\\nDOWNLOAD aula.mp4\\nQUIT\\n' | napster peer --dir bob

Piped, QUIT and the end of input wait for running downloads to finish, and the exit code is
0 only if every command succeeded (`napster help get` lists the codes).";

const GET_HELP: &str = "\
Examples:
  napster get aula-01.mp4                        from the peer the tracker lists
  napster get aula-01.mp4 --from 127.0.0.1:5001 --dir bob
  napster get aula-01.mp4 && echo 'arrived, verified'

Exit codes (all of napster's commands):
  0   every command succeeded
  1   any other error
  2   invalid command line (unknown option, --server without a port, --dir naming a file)
  3   a console command was not understood or not possible then (unknown, bad argument,
      SEARCH before JOIN, SIM with no request waiting)
  4   could not start: upload port taken, folder unusable or used by another napster
  5   the tracker could not be reached, or refused
  6   nobody shares the file, or the other peer does not have it
  7   download rejected (NAO, no answer in time, the other peer leaving or busy)
  8   the other peer could not be reached or did not answer in time
  9   transfer cut half way; what arrived is kept and the next DOWNLOAD resumes it
  10  the copy does not match the announced digest; discarded
  11  local file problem: the file exists already, disk full, write error
  20  left (QUIT confirmed, Ctrl-C, SIGTERM) while downloads ran; partials kept";

const SHARE_HELP: &str = "\
Examples:
  napster share alice --approve yes &      serve in the background
  napster share /srv/aulas --approve yes --listen 0.0.0.0:5001 --server 10.0.0.1:12346";

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
    /// every limit on threads (open files, vm.max_map_count, threads-max, pid_max, ulimit -u,
    /// the cgroup's pids.max, memory); the start line says which one set it.
    #[arg(long, default_value_t = 16_384)]
    pub max_connections: usize,
    /// Most connections at once from one host (an IPv4 address or an IPv6 /64); more are told
    /// so and closed. The default lets a classroom behind one NAT connect.
    #[arg(long, default_value_t = crate::tracker::server::DEFAULT_PER_HOST)]
    pub max_connections_per_host: usize,
    /// Seconds a started message may take to arrive whole.
    #[arg(long, default_value_t = 10)]
    pub message_timeout: u64,
    /// Seconds a new connection has to JOIN, counted from connect (whatever it sends before).
    /// Generous by default: the original's peers connect at start and JOIN only when their
    /// user types it; silent connections are bounded by --max-connections anyway.
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
    /// List the folder named by the original's JOIN (filePath), for clients on this machine.
    /// Off by default: the tracker reads with its own rights, so another local user could see
    /// names in folders only the tracker's user may list (docs/original.md).
    #[arg(long)]
    pub legacy_folder_join: bool,
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
            max_connections: self.max_connections.max(1),
            max_connections_per_host: self.max_connections_per_host.max(1),
            message_timeout: seconds(self.message_timeout),
            join_timeout: seconds(self.join_timeout),
            liveness: seconds(self.liveness),
            thread_stack: self.thread_stack_kib.max(32).saturating_mul(1024),
            max_results: self.max_results.max(1),
            legacy_folder_join: self.legacy_folder_join,
        }
    }
}

/// `--tracker-dialect` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TrackerDialect {
    /// Find out on the first connection (one extra message, answered by both trackers).
    Auto,
    /// This project's tracker.
    Napster,
    /// The Python original's tracker (on this machine only: it lists the shared folder on its
    /// own disk).
    Original,
}

/// `--approve` values when there is no console to ask.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Unattended {
    /// Accept every request.
    Yes,
    /// Refuse every request.
    No,
}

/// Where the tracker is and how the peer is reached: shared by `peer`, `get` and `share`.
#[derive(Debug, clap::Args)]
pub struct NetArgs {
    /// The tracker's address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:12346")]
    pub server: String,
    /// Address to listen on for uploads, IP:PORT (port 0: any free port).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: String,
    /// Seconds that bound a silent or stalled partner: a vanished tracker or transfer partner
    /// is given up after about this long (TCP keepalive); a tracker's answer is awaited at most
    /// this long (and at most 15 s); an upload request must arrive whole within it of
    /// connecting, whatever bytes come meanwhile (PROTOCOL.md D12); a whole-file transfer must
    /// move at least 16 KiB/s over windows of half of it (D13); a JOIN refused because the
    /// tracker still holds this peer's address (a restart) is retried this long (at least 5 s).
    #[arg(long, default_value_t = 30)]
    pub liveness: u64,
    /// The tracker's dialect: this project's, the Python original's, or found out.
    #[arg(long, value_enum, default_value = "auto")]
    pub tracker_dialect: TrackerDialect,
}

/// `napster peer` options.
#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    /// The tracker and the upload address.
    #[command(flatten)]
    pub net: NetArgs,
    /// The host this peer calls itself in its console lines (default: the local address of
    /// its connection to the tracker).
    #[arg(long)]
    pub advertise: Option<String>,
    /// The shared folder; downloads land there too (default: p2p in the current folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How upload requests are answered.
    #[arg(long, value_enum, default_value = "ask")]
    pub approve: ApproveMode,
    /// JOIN at start.
    #[arg(long)]
    pub join: bool,
    /// Seconds an upload request waits for SIM/NAO before it is refused.
    #[arg(long, default_value_t = crate::peer::approval::DEFAULT_TIMEOUT_SECS)]
    pub approval_timeout: u64,
    /// History file of the interactive prompt (default ~/.local/share/napster/history).
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Read plain lines even when stdin is a terminal.
    #[arg(long)]
    pub plain: bool,
    /// Peers a download fetches from at once when several hold the file (DOWNLOAD name).
    #[arg(long, default_value_t = crate::peer::swarm::DEFAULT_SOURCES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub sources: usize,
}

/// `napster get` options.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The file's exact name.
    pub name: String,
    /// The peer to download from, IP:PORT or a port (default: the peer the tracker lists; of
    /// several, the first).
    #[arg(long)]
    pub from: Option<String>,
    /// Where the file lands (default: p2p in the current folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The tracker and the upload address.
    #[command(flatten)]
    pub net: NetArgs,
}

/// `napster share` options.
#[derive(Debug, clap::Args)]
pub struct ShareArgs {
    /// The folder to share.
    pub dir: PathBuf,
    /// How every upload request is answered (there is no console to ask).
    #[arg(long, value_enum)]
    pub approve: Unattended,
    /// The host this peer calls itself in its console lines.
    #[arg(long)]
    pub advertise: Option<String>,
    /// The tracker and the upload address.
    #[command(flatten)]
    pub net: NetArgs,
}

/// A command-line value that cannot work, told in Portuguese, with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// What is wrong.
    pub problem: String,
    /// What to do instead.
    pub help: String,
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\najuda: {}", self.problem, self.help)
    }
}

impl std::error::Error for ArgError {}

impl PeerArgs {
    /// The peer configuration these options describe, or why they cannot work.
    pub fn config(&self, stdin_is_terminal: bool) -> Result<PeerConfig, ArgError> {
        let reading = if stdin_is_terminal && !self.plain {
            Reading::Terminal
        } else {
            Reading::Lines
        };
        Ok(PeerConfig {
            advertise: self.advertise.clone(),
            dir: checked_dir(self.dir.as_ref())?,
            approve: self.approve,
            join: self.join,
            approval_timeout: seconds(self.approval_timeout),
            reading,
            history: self.history.clone(),
            sources: self.sources,
            ..self.net.config()?
        })
    }
}

impl GetArgs {
    /// The configuration of the downloading peer, or why the options cannot work.
    pub fn config(&self) -> Result<PeerConfig, ArgError> {
        if let Some(from) = &self.from
            && crate::peer::commands::PeerSpec::parse(from).is_none()
        {
            return Err(ArgError {
                problem: format!("--from {from} não é um peer"),
                help: "use IP:PORTA (por exemplo 127.0.0.1:5001) ou só a PORTA".into(),
            });
        }
        Ok(PeerConfig {
            dir: checked_dir(self.dir.as_ref())?,
            approve: ApproveMode::No,
            reading: Reading::Nothing,
            ..self.net.config()?
        })
    }
}

impl ShareArgs {
    /// The configuration of the sharing peer, or why the options cannot work.
    pub fn config(&self) -> Result<PeerConfig, ArgError> {
        Ok(PeerConfig {
            advertise: self.advertise.clone(),
            dir: checked_dir(Some(&self.dir))?,
            approve: match self.approve {
                Unattended::Yes => ApproveMode::Yes,
                Unattended::No => ApproveMode::No,
            },
            join: true,
            reading: Reading::Nothing,
            ..self.net.config()?
        })
    }
}

impl NetArgs {
    /// The network part of a peer's configuration, the rest at its defaults.
    fn config(&self) -> Result<PeerConfig, ArgError> {
        Ok(PeerConfig {
            server: checked_server(&self.server)?,
            listen: checked_listen(&self.listen)?,
            advertise: None,
            dir: None,
            approve: ApproveMode::Ask,
            join: false,
            approval_timeout: seconds(crate::peer::approval::DEFAULT_TIMEOUT_SECS),
            reading: Reading::Lines,
            history: None,
            liveness: seconds(self.liveness),
            tracker_dialect: match self.tracker_dialect {
                TrackerDialect::Auto => DialectChoice::Auto,
                TrackerDialect::Napster => DialectChoice::Napster,
                TrackerDialect::Original => DialectChoice::Original,
            },
            sources: crate::peer::swarm::DEFAULT_SOURCES,
        })
    }
}

/// `--server` must be HOST:PORT: without the port it would fail only at the first JOIN.
fn checked_server(text: &str) -> Result<String, ArgError> {
    let wrong = || ArgError {
        problem: format!("--server {text} não tem a forma HOST:PORTA"),
        help: "por exemplo --server 127.0.0.1:12346 (a porta padrão do servidor é 12346)".into(),
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(wrong)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    // An IPv6 address needs its brackets, or its last group would be taken for the port.
    let host_ok = !host.is_empty()
        && !host.contains(char::is_whitespace)
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    if port_ok && host_ok {
        Ok(text.to_string())
    } else {
        Err(wrong())
    }
}

/// `--listen` must be IP:PORT.
fn checked_listen(text: &str) -> Result<SocketAddr, ArgError> {
    text.parse().map_err(|_| ArgError {
        problem: format!("--listen {text} não é um endereço IP:PORTA"),
        help: "por exemplo --listen 0.0.0.0:5001, ou 0.0.0.0:0 para qualquer porta livre".into(),
    })
}

/// A `--dir` that exists must be a folder (a file there used to end in "cannot create
/// folder ...: File exists").
fn checked_dir(dir: Option<&PathBuf>) -> Result<Option<PathBuf>, ArgError> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(ArgError {
            problem: format!("--dir {} não é uma pasta: é um arquivo", dir.display()),
            help: "dê a pasta dos arquivos a compartilhar, por exemplo --dir alice".into(),
        }),
        _ => Ok(Some(dir.clone())),
    }
}

/// The longest time any option may give: a day. Longer values are taken as a day, so that
/// deadlines computed from them (`now + limit`) can never overflow.
const LONGEST: u64 = 24 * 60 * 60;

/// `secs` as a duration of at least one second and at most [`LONGEST`].
fn seconds(secs: u64) -> Duration {
    Duration::from_secs(secs.clamp(1, LONGEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--server` needs a port, an IPv6 host its brackets; `--listen` needs IP:PORT.
    #[test]
    fn addresses_without_a_port_are_refused_at_start() {
        assert!(checked_server("127.0.0.1:12346").is_ok());
        assert!(checked_server("tracker.lan:12346").is_ok());
        assert!(checked_server("[::1]:12346").is_ok());
        let e = checked_server("127.0.0.1").unwrap_err();
        assert_eq!(e.problem, "--server 127.0.0.1 não tem a forma HOST:PORTA");
        assert!(checked_server("::1").is_err());
        assert!(checked_server("host:0").is_err());
        assert!(checked_server(":12346").is_err());
        assert!(checked_listen("0.0.0.0").is_err());
        assert!(checked_listen("127.0.0.1:0").is_ok());
    }

    /// A `--dir` naming a file is refused; a missing one is accepted (it will be created).
    #[test]
    fn a_dir_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("notas.txt");
        std::fs::write(&file, "x").unwrap();
        let e = checked_dir(Some(&file)).unwrap_err();
        assert!(e.problem.ends_with("não é uma pasta: é um arquivo"), "{e}");
        assert!(checked_dir(Some(&tmp.path().join("new"))).is_ok());
        assert!(checked_dir(Some(&tmp.path().to_path_buf())).is_ok());
    }

    /// `--liveness` says everything it bounds: the request's arrival (D12) and the minimum
    /// rate's window (D13) as well as a vanished partner and the tracker's answers.
    #[test]
    fn the_liveness_help_names_everything_it_bounds() {
        use clap::CommandFactory;
        assert_eq!(
            crate::peer::running::MIN_RATE,
            16 * 1024,
            "the help's figure"
        );
        let mut cli = Cli::command();
        for mode in ["peer", "get", "share"] {
            let help = cli
                .find_subcommand_mut(mode)
                .unwrap_or_else(|| panic!("{mode} is a subcommand"))
                .render_long_help()
                .to_string();
            let squeezed = help.split_whitespace().collect::<Vec<_>>().join(" ");
            for bound in [
                "vanished tracker or transfer partner",
                "a tracker's answer is awaited at most this long",
                "an upload request must arrive whole within it",
                "at least 16 KiB/s over windows of half of it",
                "is retried this long",
            ] {
                assert!(squeezed.contains(bound), "{mode} --help lacks {bound:?}");
            }
        }
    }

    /// The exit codes `napster help get` lists are the ones the program uses.
    #[test]
    fn the_help_lists_every_exit_code() {
        for (failure, meaning) in crate::exit::Failure::ALL {
            let start: String = meaning.chars().take(20).collect();
            let line = format!("  {:<3} {start}", failure.code());
            assert!(GET_HELP.contains(&line), "{line:?} missing from GET_HELP");
        }
    }
}
