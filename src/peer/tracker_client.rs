//! The peer's connection to the tracker, owned by one thread so that nobody else waits on it.
//!
//! [`TrackerLink`] is a handle: the console and the download threads put a request on a channel
//! and go on at once. The link thread resolves and dials the tracker, writes one request at a
//! time and matches each answer to it (a reader thread per connection turns bytes into
//! answers). Answers the console asked for come back as [`LinkEvent`]s on the console's own
//! channel, beside typed lines and upload requests, so the console never waits on DNS, a
//! connect or a silent tracker, and an upload question is shown the moment it arrives. No lock
//! is ever held across socket I/O: the only mutex guards a copy of the connection's addresses.
//!
//! **Dialects.** The tracker may be ours or the Python original's ([`Dialect`]). Unless the
//! user chose one (`--tracker-dialect`), the first connection starts with an UPDATE of no files
//! (and so does a reconnection after a JOIN went unanswered):
//! our tracker refuses it with a JSON `ERROR` (no JOIN yet), the original's answers the bare
//! bytes `UPDATE_OK` (and prints nothing). The original's JOIN names the shared folder, which
//! that tracker lists on its own disk: it only works with the tracker on this machine. It lists
//! a peer under the port of its tracker connection, so that connection leaves from the upload
//! port (see [`crate::dial`]).
//!
//! **Silence and loss.** A request not answered within the reply timeout fails with
//! [`LinkError::Silent`], told apart from a connection that broke ([`LinkError::Lost`]). In our
//! dialect an unanswered request leaves replies out of step, so the connection is replaced; the
//! original's tracker never answers late (a request it cannot handle kills the thread that
//! would answer) and its answers have shapes of their own, so its connection is kept: closing
//! it would make that tracker spin a core on the closed socket for ever. Once JOINed, a lost
//! or replaced connection is dialled again with growing pauses and JOINed with the files
//! shared *now*.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, never, select, unbounded};
use parking_lot::Mutex;

use crate::liveness;
use crate::peer::output::printable;
use crate::protocol::FileRecord;
use crate::protocol::legacy::{self, BareReply, ORIGINAL_MAX_MESSAGE};
use crate::protocol::messages::{self, Reply, Status, parse_reply};

/// Answers received and not yet matched that are tolerated.
const UNREAD_REPLIES: usize = 8;
/// The longest wait for an answer (shorter when `--liveness` is).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long dialling the tracker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest pause between reconnection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The shortest time a JOIN refused because the tracker still holds this peer's address is
/// tried again (otherwise `--liveness`: the tracker forgets a vanished connection within its
/// own, by default the same).
const MIN_TAKEN_RETRY: Duration = Duration::from_secs(5);
/// Requests that may wait behind the one in flight; more are refused at once.
const MAX_QUEUED: usize = 32;
/// How long [`TrackerLink::close`] waits for the link thread to close the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The most bytes of records one JOIN or UPDATE carries (the tracker takes up to 1 MiB): a
/// longer list goes as a JOIN and UPDATEs adding the rest.
const MESSAGE_PART: usize = 256 * 1024;

/// Which dialect the user asked the peer to speak to the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialectChoice {
    /// Find out on the first connection (and again after a JOIN goes unanswered).
    Auto,
    /// Always this project's.
    Napster,
    /// Always the Python original's.
    Original,
}

/// The dialect a tracker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// This project's: JSON lines both ways, JOIN with the upload port and the names.
    Napster,
    /// The Python original's: JOIN with the folder's path, bare answers.
    Original,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dialect::Napster => write!(f, "napster"),
            Dialect::Original => write!(f, "do original (Python)"),
        }
    }
}

/// What a silent tracker was asked, for a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Silence {
    /// An ordinary request.
    Request,
    /// The first message of a connection, which finds out the dialect.
    Probe,
    /// The original's JOIN, naming this folder.
    OriginalJoin(String),
    /// Our JOIN, with the dialect forced to ours.
    ForcedNapsterJoin,
}

/// What went wrong talking to the tracker. The texts are shown to the user, in Portuguese.
#[derive(Debug)]
pub enum LinkError {
    /// Not connected (never joined).
    NotConnected,
    /// The connection was lost and is being dialled again.
    Reconnecting,
    /// Dialling failed.
    Connect(String, io::Error),
    /// The connection broke during the request.
    Lost(Cut),
    /// The tracker took the request and answered nothing in time.
    Silent {
        /// How long the request waited.
        waited: Duration,
        /// What it was.
        what: Silence,
    },
    /// The tracker answered ERROR.
    Refused(String),
    /// The tracker refused the JOIN: another live connection holds this peer's address (the
    /// tracker's message).
    AddressTaken(String),
    /// The tracker answered something unexpected.
    Unexpected(String),
    /// The request is longer than the original's tracker reads at once.
    TooLong(usize),
    /// The shared folder cannot be found (to name it absolutely).
    Folder(PathBuf, io::Error),
    /// The shared folder's absolute path is not UTF-8, which JSON cannot carry.
    FolderNotUtf8(std::ffi::OsString),
    /// Too many requests already wait for the tracker.
    Busy,
    /// The peer is leaving.
    Closed,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::NotConnected => write!(f, "sem conexão com o servidor"),
            LinkError::Reconnecting => {
                write!(f, "sem conexão com o servidor no momento (reconectando)")
            }
            LinkError::Connect(addr, e) => write!(
                f,
                "não foi possível conectar a {addr}: {}",
                crate::os_error::describe(e)
            ),
            LinkError::Lost(why) => write!(f, "conexão com o servidor perdida: {why}"),
            LinkError::Silent { waited, what } => {
                let secs = waited.as_secs_f64().round();
                match what {
                    Silence::Request => write!(f, "o servidor não respondeu em {secs} s"),
                    Silence::Probe => write!(
                        f,
                        "o servidor aceitou a conexão mas não respondeu em {secs} s \
                         (nem à mensagem que identifica o dialeto)"
                    ),
                    Silence::OriginalJoin(folder) => write!(
                        f,
                        "o servidor original não respondeu ao JOIN em {secs} s; ele lista a \
                         pasta {} no próprio disco, então só responde se estiver nesta mesma \
                         máquina e puder ler essa pasta",
                        printable(folder)
                    ),
                    Silence::ForcedNapsterJoin => write!(
                        f,
                        "o servidor não respondeu ao JOIN em {secs} s; se ele for o original \
                         em Python, use --tracker-dialect original (ou auto)"
                    ),
                }
            }
            LinkError::Refused(why) => write!(f, "o servidor recusou: {}", printable(why)),
            LinkError::AddressTaken(why) => write!(
                f,
                "o servidor continua registrando este endereço por outra conexão (outro \
                 napster com a mesma porta?); escolha outra porta com --listen ({})",
                printable(why)
            ),
            LinkError::Unexpected(what) => {
                write!(f, "resposta inesperada do servidor: {}", printable(what))
            }
            LinkError::TooLong(len) => write!(
                f,
                "a mensagem teria {} bytes, e o servidor original lê no máximo \
                 {} de uma vez (o resto a tornaria ilegível)",
                crate::numbers::thousands(*len as u64),
                crate::numbers::thousands(ORIGINAL_MAX_MESSAGE as u64)
            ),
            LinkError::Folder(path, e) => write!(
                f,
                "a pasta compartilhada não pode ser enviada: {}: {e}",
                path.display()
            ),
            LinkError::FolderNotUtf8(path) => write!(
                f,
                "a pasta compartilhada não pode ser enviada: o caminho {path:?} não é UTF-8"
            ),
            LinkError::Busy => write!(f, "pedidos demais aguardando o servidor"),
            LinkError::Closed => write!(f, "o peer está encerrando"),
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::Connect(_, e) | LinkError::Folder(_, e) => Some(e),
            LinkError::Lost(cut) => Some(cut),
            _ => None,
        }
    }
}

/// Why the connection to the tracker ended; told to the user inside a line of the console's.
#[derive(Debug, Clone)]
pub enum Cut {
    /// The tracker closed it.
    ClosedByTracker,
    /// The tracker sent bytes that are no answer.
    Unreadable,
    /// In the original's dialect, bytes that are none of that tracker's answers.
    NotAnOriginalAnswer,
    /// An answer longer than `MAX_JSON_ANSWER` bytes.
    TooLarge,
    /// More answers than requests.
    Unasked,
    /// The link stopped taking answers (the peer is leaving).
    LinkGone,
    /// The thread reading the connection ended.
    ReaderGone,
    /// Reading or writing failed (shared: the same cut fails a request and replaces the
    /// connection).
    Io(Arc<io::Error>),
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::ClosedByTracker => write!(f, "o servidor fechou a conexão"),
            Cut::Unreadable => write!(f, "resposta ilegível do servidor"),
            Cut::NotAnOriginalAnswer => write!(f, "resposta ilegível"),
            Cut::TooLarge => write!(f, "resposta grande demais do servidor"),
            Cut::Unasked => write!(f, "o servidor enviou respostas que ninguém pediu"),
            Cut::LinkGone => write!(f, "conexão encerrada pelo peer"),
            Cut::ReaderGone => write!(f, "o leitor da conexão terminou"),
            Cut::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Cut {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Cut::Io(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// A JOIN that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The names announced (the original's tracker lists the folder itself).
    pub files: Vec<String>,
    /// This host's address on the tracker connection.
    pub local_ip: IpAddr,
}

/// Why the link is reconnecting.
#[derive(Debug, Clone)]
pub enum Outage {
    /// The connection ended or broke.
    Closed(Cut),
    /// The tracker stopped answering in our dialect; the connection was replaced.
    Silent(Duration),
}

/// What the link tells the console.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// The answer to the console's JOIN.
    Joined(Result<Joined, String>),
    /// The answer to the console's SEARCH: the whole reply (from the original's tracker: its
    /// peers only).
    Found {
        /// The name searched.
        name: String,
        /// The reply, or why there is none.
        result: Result<Box<Reply>, String>,
    },
    /// The answer to the console's LIST of a peer's files.
    Listed {
        /// The peer, `IP:PORT`.
        peer: String,
        /// Its files, or why there is no answer.
        result: Result<Vec<FileRecord>, String>,
    },
    /// The answer to a SEARCH made to start a download ([`TrackerLink::search_for_download`]).
    FoundForDownload {
        /// The name searched.
        name: String,
        /// The whole reply (from the original's tracker: its peers only), or why there is none.
        result: Result<Box<Reply>, String>,
    },
    /// The tracker's dialect, when the first connection learns it and whenever it changes.
    Dialect {
        /// The dialect.
        dialect: Dialect,
        /// Found out (true) or chosen with `--tracker-dialect` (false).
        detected: bool,
        /// The shared folder the original's JOIN names.
        folder: PathBuf,
        /// The tracker connection leaves from the upload port, so the port the original's
        /// tracker lists reaches this peer's uploads.
        from_upload_port: bool,
    },
    /// A joined peer lost the tracker; the link is dialling again.
    Outage(Outage),
    /// Reconnected and joined again with this many files.
    Rejoined(usize),
    /// The tracker still holds this peer's address for an older connection (this peer
    /// restarted before the tracker saw the old connection close): the JOIN is tried again
    /// for up to this long. Told once per JOIN.
    AddressStillTaken(Duration),
}

/// How the link is set up.
pub struct LinkConfig {
    /// The tracker, `HOST:PORT`.
    pub server: String,
    /// This peer's upload port.
    pub upload_port: u16,
    /// The address uploads are served on, when it is a specific one: the connection leaves
    /// from it, since the tracker lists a peer under the IP it sees.
    pub local_ip: Option<IpAddr>,
    /// The bound for detecting a vanished tracker; answers are awaited at most this long
    /// (and at most [`REPLY_TIMEOUT`]).
    pub liveness: Duration,
    /// The dialect to speak.
    pub dialect: DialectChoice,
    /// The shared folder (the original's JOIN names it).
    pub folder: PathBuf,
    /// The files shared now, for JOINing again after a reconnection.
    pub list_files: Box<dyn Fn() -> Vec<FileRecord> + Send>,
}

enum Command {
    Request(Request),
    Close,
}

/// The connection to the tracker, as the other threads see it.
pub struct TrackerLink {
    server: String,
    commands: Sender<Command>,
    addresses: Arc<Mutex<Option<(IpAddr, IpAddr)>>>,
    done: Receiver<()>,
}

impl TrackerLink {
    /// Starts the link thread; it dials at the first JOIN. Answers and news go to `events`.
    pub fn start(config: LinkConfig, events: Sender<LinkEvent>) -> io::Result<TrackerLink> {
        let (commands, rx) = unbounded();
        let (done_tx, done) = bounded::<()>(0);
        let addresses = Arc::new(Mutex::new(None));
        let server = config.server.clone();
        let link = Link {
            reply_timeout: REPLY_TIMEOUT.min(config.liveness),
            config,
            events,
            addresses: Arc::clone(&addresses),
            conn: None,
            joined: false,
            announced: None,
            learned: None,
            waiting: None,
            queue: VecDeque::new(),
            retry: None,
            join_rest: Vec::new(),
            taken_until: None,
        };
        thread::Builder::new()
            .name("tracker-link".into())
            .spawn(move || {
                link.run(rx);
                drop(done_tx);
            })?;
        Ok(TrackerLink {
            server,
            commands,
            addresses,
            done,
        })
    }

    /// The tracker's address as given.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The tracker's IP and this host's IP on the connection, when connected.
    pub fn addresses(&self) -> Option<(IpAddr, IpAddr)> {
        *self.addresses.lock()
    }

    /// Asks to JOIN with `files` (dialling first); the answer comes as [`LinkEvent::Joined`].
    pub fn join(&self, files: Vec<FileRecord>) {
        self.send(Request::Join(files));
    }

    /// Asks who shares `name`; the answer comes as [`LinkEvent::Found`].
    pub fn search(&self, name: String) {
        self.send(Request::Search {
            name,
            for_download: false,
        });
    }

    /// Asks who holds `name` now, to download it from them; the whole reply (holders of the
    /// exact name and, when the tracker gives them, the results grouped by content) comes as
    /// [`LinkEvent::FoundForDownload`].
    pub fn search_for_download(&self, name: String) {
        self.send(Request::Search {
            name,
            for_download: true,
        });
    }

    /// Tells the tracker about files added (or whose record changed) and removed. Nobody
    /// waits: a failure is logged, and a later reconnection JOINs with the files shared then
    /// anyway. (To the original's tracker this is an UPDATE with every name shared now.)
    pub fn change(&self, add: Vec<FileRecord>, remove: Vec<String>) {
        self.send(Request::Change { add, remove });
    }

    /// Asks which files `peer` (`IP:PORT`) shares; the answer comes as [`LinkEvent::Listed`].
    pub fn list(&self, peer: String) {
        self.send(Request::List { peer });
    }

    /// Closes the connection for good (the tracker forgets this peer at once); waits a moment
    /// for the link thread to do it.
    pub fn close(&self) {
        if self.commands.send(Command::Close).is_ok() {
            let _ = self.done.recv_timeout(CLOSE_WAIT);
        }
    }

    fn send(&self, request: Request) {
        if self.commands.send(Command::Request(request)).is_err() {
            log::debug!("tracker link already closed");
        }
    }
}

#[derive(Debug)]
enum Request {
    Join(Vec<FileRecord>),
    Search {
        name: String,
        for_download: bool,
    },
    Change {
        add: Vec<FileRecord>,
        remove: Vec<String>,
    },
    List {
        peer: String,
    },
    /// A reconnection attempt (the link's own).
    Rejoin,
}

/// What the request in flight waits for.
#[derive(Debug)]
enum Pending {
    /// The dialect-finding UPDATE; `then` is sent once the dialect is known.
    Probe(Request),
    Join {
        files: Vec<String>,
        rejoin: bool,
    },
    Search {
        name: String,
        for_download: bool,
    },
    Update,
    List {
        peer: String,
    },
    /// The original's JOIN sent again in place of an UPDATE too long for that tracker: it lists
    /// the folder again.
    Relist,
}

struct Waiting {
    pending: Pending,
    deadline: Instant,
}

/// An answer read off the connection.
enum Answer {
    Json(Result<Box<Reply>, String>),
    Bare(Result<BareReply, String>),
}

enum Incoming {
    Answer(Answer),
    Closed(Cut),
}

struct Connection {
    stream: TcpStream,
    incoming: Receiver<Incoming>,
    dialect: Option<Dialect>,
    tracker_ip: IpAddr,
    from_upload_port: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The reader thread sees the end and stops; the tracker forgets this peer.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

struct Link {
    config: LinkConfig,
    reply_timeout: Duration,
    events: Sender<LinkEvent>,
    addresses: Arc<Mutex<Option<(IpAddr, IpAddr)>>>,
    conn: Option<Connection>,
    /// The user JOINed: keep the membership up across lost connections.
    joined: bool,
    /// The dialect last told to the console.
    announced: Option<Dialect>,
    /// The dialect found out on an earlier connection: a reconnection assumes the same
    /// tracker and sends no probe, until a JOIN goes unanswered.
    learned: Option<Dialect>,
    waiting: Option<Waiting>,
    queue: VecDeque<Request>,
    /// When to dial again, and the pause after that attempt.
    retry: Option<(Instant, Duration)>,
    /// Parts of a JOIN's list too long for one message, sent as UPDATEs once it is answered.
    join_rest: Vec<Vec<FileRecord>>,
    /// A JOIN the user asked for found this peer's address still held by an older connection:
    /// it is tried again (see [`Link::retry_taken_address`]) until then.
    taken_until: Option<Instant>,
}

impl Link {
    fn run(mut self, commands: Receiver<Command>) {
        loop {
            self.start_next();
            let incoming = match &self.conn {
                Some(conn) => conn.incoming.clone(),
                None => never(),
            };
            let wait = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            select! {
                recv(commands) -> command => match command {
                    Ok(Command::Request(request)) => self.enqueue(request),
                    Ok(Command::Close) | Err(_) => break,
                },
                recv(incoming) -> message => match message {
                    Ok(Incoming::Answer(answer)) => self.answered(answer),
                    Ok(Incoming::Closed(why)) => self.connection_closed(why),
                    Err(_) => self.connection_closed(Cut::ReaderGone),
                },
                default(wait) => self.deadline_passed(),
            }
        }
        self.set_connection(None);
        if let Some(waiting) = self.waiting.take() {
            self.fail(waiting.pending, LinkError::Closed);
        }
        for request in std::mem::take(&mut self.queue) {
            self.fail_request(request, LinkError::Closed);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let answer = self.waiting.as_ref().map(|w| w.deadline);
        // No attempt starts while an answer is awaited.
        let retry = self.retry.filter(|_| answer.is_none()).map(|(at, _)| at);
        match (answer, retry) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    fn enqueue(&mut self, request: Request) {
        if self.queue.len() >= MAX_QUEUED {
            self.fail_request(request, LinkError::Busy);
            return;
        }
        self.queue.push_back(request);
    }

    /// Sends queued requests until one waits for its answer.
    fn start_next(&mut self) {
        while self.waiting.is_none() {
            let Some(request) = self.queue.pop_front() else {
                return;
            };
            self.start(request);
        }
    }

    fn start(&mut self, request: Request) {
        match request {
            // A JOIN dials; so does a search by a peer that never joins (`napster get`).
            Request::Join(_) | Request::Rejoin if self.conn.is_none() => {
                self.dial_then_start(request);
            }
            Request::Search { .. } if self.conn.is_none() && !self.joined => {
                self.dial_then_start(request);
            }
            Request::Search { .. } | Request::Change { .. } | Request::List { .. }
                if self.conn.is_none() =>
            {
                let e = if self.retry.is_some() {
                    LinkError::Reconnecting
                } else {
                    LinkError::NotConnected
                };
                self.fail_request(request, e);
            }
            request => {
                let dialect = self.conn.as_ref().and_then(|c| c.dialect);
                let Some(dialect) = dialect else {
                    let probe = legacy::update_request::<&str>(&[]);
                    self.send(&probe, Pending::Probe(request));
                    return;
                };
                match self.encode(dialect, request) {
                    Ok((bytes, pending)) => self.send(&bytes, pending),
                    Err((pending, e)) => self.fail(pending, e),
                }
            }
        }
    }

    /// Dials the tracker, then sends `request` on the new connection.
    fn dial_then_start(&mut self, request: Request) {
        match self.dial() {
            Ok(conn) => self.set_connection(Some(conn)),
            Err(e) => {
                self.fail_request(request, e);
                return;
            }
        }
        self.start(request);
    }

    /// The bytes of `request` in `dialect`, and what its answer will be.
    fn encode(
        &mut self,
        dialect: Dialect,
        request: Request,
    ) -> Result<(Vec<u8>, Pending), (Pending, LinkError)> {
        let rejoining = matches!(request, Request::Rejoin);
        let (bytes, mut pending) = match dialect {
            Dialect::Napster => self.encode_napster(request),
            Dialect::Original => self.encode_original(request)?,
        };
        if dialect == Dialect::Original && bytes.len() > ORIGINAL_MAX_MESSAGE {
            return Err((pending, LinkError::TooLong(bytes.len())));
        }
        // A JOIN typed again, or sent after the tracker came back, is answered as a re-join.
        if let Pending::Join { rejoin, .. } = &mut pending {
            *rejoin = rejoining;
        }
        Ok((bytes, pending))
    }

    /// `request` in this project's own messages.
    fn encode_napster(&mut self, request: Request) -> (Vec<u8>, Pending) {
        match request {
            Request::Join(files) => {
                let mut parts = messages::record_chunks(&files, MESSAGE_PART).into_iter();
                let first = parts.next().unwrap_or_default();
                let line = messages::join_line(self.config.upload_port, first);
                // The rest goes as UPDATEs adding it, once the JOIN is answered.
                self.join_rest = parts.map(<[FileRecord]>::to_vec).collect();
                (
                    line,
                    Pending::Join {
                        files: names(&files),
                        rejoin: false,
                    },
                )
            }
            Request::Search { name, for_download } => (
                messages::search_line(&name),
                Pending::Search { name, for_download },
            ),
            Request::Change { add, remove } => {
                (messages::update_change_line(&add, &remove), Pending::Update)
            }
            Request::List { peer } => (messages::list_line(&peer), Pending::List { peer }),
            Request::Rejoin => self.encode_napster(Request::Join((self.config.list_files)())),
        }
    }

    /// `request` in the original tracker's messages, where it has one.
    fn encode_original(
        &mut self,
        request: Request,
    ) -> Result<(Vec<u8>, Pending), (Pending, LinkError)> {
        Ok(match request {
            Request::Join(files) => {
                let pending = Pending::Join {
                    files: names(&files),
                    rejoin: false,
                };
                match self.folder_text() {
                    Ok(folder) => (legacy::join_request(&folder), pending),
                    Err(e) => return Err((pending, e)),
                }
            }
            Request::Search { name, for_download } => (
                legacy::search_request(&name),
                Pending::Search { name, for_download },
            ),
            Request::List { peer } => {
                return Err((
                    Pending::List { peer },
                    LinkError::Refused(
                        "o servidor original não lista os arquivos de um peer".into(),
                    ),
                ));
            }
            Request::Change { .. } => {
                // That tracker keeps whole lists of names: send the one shared now.
                let files = names(&(self.config.list_files)());
                let update = legacy::update_request(&files);
                if update.len() <= ORIGINAL_MAX_MESSAGE {
                    (update, Pending::Update)
                } else {
                    // Too long for the one recv(1024) that tracker reads; the JOIN names only
                    // the folder, and that tracker lists the folder again.
                    log::debug!("UPDATE of {} bytes sent as a JOIN", update.len());
                    match self.folder_text() {
                        Ok(folder) => (legacy::join_request(&folder), Pending::Relist),
                        Err(e) => return Err((Pending::Relist, e)),
                    }
                }
            }
            Request::Rejoin => {
                return self.encode_original(Request::Join((self.config.list_files)()));
            }
        })
    }

    /// The shared folder as the original's JOIN names it, for the user.
    fn shown_folder(&self) -> PathBuf {
        std::fs::canonicalize(&self.config.folder).unwrap_or_else(|_| self.config.folder.clone())
    }

    /// The shared folder as the original's JOIN names it: absolute, UTF-8.
    fn folder_text(&self) -> Result<String, LinkError> {
        let folder = std::fs::canonicalize(&self.config.folder)
            .map_err(|e| LinkError::Folder(self.config.folder.clone(), e))?;
        folder
            .into_os_string()
            .into_string()
            .map_err(LinkError::FolderNotUtf8)
    }

    /// Writes one request and waits for its answer.
    fn send(&mut self, bytes: &[u8], pending: Pending) {
        let Some(conn) = &self.conn else {
            self.fail(pending, LinkError::NotConnected);
            return;
        };
        match (&conn.stream).write_all(bytes) {
            Ok(()) => {
                self.waiting = Some(Waiting {
                    pending,
                    deadline: Instant::now() + self.reply_timeout,
                });
            }
            Err(e) => {
                let cut = Cut::Io(Arc::new(e));
                self.fail(pending, LinkError::Lost(cut.clone()));
                self.connection_closed(cut);
            }
        }
    }

    fn dial(&mut self) -> Result<Connection, LinkError> {
        let server = &self.config.server;
        let connect_err = |e| LinkError::Connect(server.clone(), e);
        let addrs: Vec<SocketAddr> = server.to_socket_addrs().map_err(connect_err)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "nenhum endereço");
        let stream = addrs
            .iter()
            .find_map(|addr| match self.connect(addr) {
                Ok(s) => Some(s),
                Err(e) => {
                    last = e;
                    None
                }
            })
            .ok_or_else(|| LinkError::Connect(server.clone(), last))?;
        let _ = stream.set_nodelay(true);
        if let Err(e) = liveness::set_liveness(&stream, self.config.liveness) {
            log::debug!("cannot set keepalive on the tracker connection: {e}");
        }
        let _ = stream.set_write_timeout(Some(self.reply_timeout));
        let tracker_ip = stream.peer_addr().map_err(connect_err)?.ip().to_canonical();
        let from_upload_port = stream
            .local_addr()
            .is_ok_and(|a| a.port() == self.config.upload_port);
        let reading = stream.try_clone().map_err(connect_err)?;
        // One request is answered at a time; a tracker that sends more than a few answers
        // nobody asked for is broken, and the reader drops it rather than queue them.
        let (tx, incoming) = bounded(UNREAD_REPLIES);
        thread::Builder::new()
            .name("tracker-reader".into())
            .spawn(move || read_answers(reading, tx))
            .map_err(connect_err)?;
        let dialect = match self.config.dialect {
            DialectChoice::Auto => self.learned,
            DialectChoice::Napster => Some(Dialect::Napster),
            DialectChoice::Original => Some(Dialect::Original),
        };
        let conn = Connection {
            stream,
            incoming,
            dialect,
            tracker_ip,
            from_upload_port,
        };
        if let Some(dialect) = dialect {
            self.announce(dialect, false, from_upload_port);
        }
        Ok(conn)
    }

    /// Dials `addr`, from the upload port unless the dialect is known to be ours (falling back
    /// to any port if the upload port cannot be shared for this connection).
    fn connect(&self, addr: &SocketAddr) -> io::Result<TcpStream> {
        let local_ip = self.config.local_ip;
        if self.config.dialect != DialectChoice::Napster {
            match crate::dial::connect_from_port(
                local_ip,
                self.config.upload_port,
                addr,
                CONNECT_TIMEOUT,
            ) {
                Ok(stream) => return Ok(stream),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::AddrInUse
                            | io::ErrorKind::AddrNotAvailable
                            | io::ErrorKind::Unsupported
                    ) =>
                {
                    log::debug!("cannot dial {addr} from the upload port ({e}); any port then");
                }
                Err(e) => return Err(e),
            }
        }
        crate::dial::connect_from(local_ip, addr, CONNECT_TIMEOUT)
    }

    fn set_connection(&mut self, conn: Option<Connection>) {
        let addresses = conn.as_ref().and_then(|c| {
            let local = c.stream.local_addr().ok()?.ip().to_canonical();
            Some((c.tracker_ip, local))
        });
        *self.addresses.lock() = addresses;
        self.conn = conn;
    }

    /// Tells the console the dialect when it is new to it.
    fn announce(&mut self, dialect: Dialect, detected: bool, from_upload_port: bool) {
        if self.announced == Some(dialect) {
            return;
        }
        self.announced = Some(dialect);
        let _ = self.events.send(LinkEvent::Dialect {
            dialect,
            detected,
            folder: self.shown_folder(),
            from_upload_port,
        });
    }

    fn answered(&mut self, answer: Answer) {
        let Some(waiting) = self.waiting.take() else {
            log::debug!("tracker answer nobody waits for: {}", describe(&answer));
            return;
        };
        let tracker_ip = self.conn.as_ref().map(|c| c.tracker_ip);
        match (waiting.pending, answer) {
            (Pending::Probe(then), answer) => self.probed(then, answer),
            (pending, Answer::Json(Err(why)) | Answer::Bare(Err(why))) => {
                self.fail(pending, LinkError::Unexpected(why));
                if self.conn.as_ref().and_then(|c| c.dialect) == Some(Dialect::Original) {
                    // Bytes that are none of the original's answers: the stream is lost.
                    self.replace_connection(Outage::Closed(Cut::NotAnOriginalAnswer));
                }
            }
            (Pending::Join { files, rejoin }, Answer::Json(Ok(reply))) => {
                match expect_status(*reply, Status::JoinOk) {
                    Ok(_) => self.joined_ok(files, rejoin),
                    Err(LinkError::Refused(why)) if why.contains(messages::ADDRESS_TAKEN) => {
                        self.fail(
                            Pending::Join { files, rejoin },
                            LinkError::AddressTaken(why),
                        );
                    }
                    Err(e) => self.fail(Pending::Join { files, rejoin }, e),
                }
            }
            (Pending::Join { files, rejoin }, Answer::Bare(Ok(BareReply::JoinOk))) => {
                self.joined_ok(files, rejoin);
            }
            (Pending::Search { name, for_download }, Answer::Json(Ok(reply))) => {
                let result = expect_status(*reply, Status::Ok)
                    .map(Box::new)
                    .map_err(|e| e.to_string());
                self.found(name, for_download, result);
            }
            (Pending::Search { name, for_download }, Answer::Bare(Ok(BareReply::Ports(ports)))) => {
                // The original's peers dial every port on the tracker's host.
                let ip = tracker_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
                let peers = ports
                    .iter()
                    .map(|&port| SocketAddr::new(ip, port).to_string())
                    .collect();
                self.found(name, for_download, Ok(Box::new(Reply::peers(peers))));
            }
            (Pending::Update, Answer::Json(Ok(reply))) => {
                if let Err(e) = expect_status(*reply, Status::UpdateOk) {
                    log::warn!("UPDATE refused by the tracker: {e}");
                }
            }
            (Pending::List { peer }, Answer::Json(Ok(reply))) => {
                let result = expect_status(*reply, Status::Ok)
                    .map(|reply| reply.files.unwrap_or_default())
                    .map_err(|e| e.to_string());
                let _ = self.events.send(LinkEvent::Listed { peer, result });
            }
            (Pending::Update, Answer::Bare(Ok(BareReply::UpdateOk)))
            | (Pending::Relist, Answer::Bare(Ok(BareReply::JoinOk))) => {}
            (Pending::Relist, Answer::Json(Ok(reply))) => {
                if let Err(e) = expect_status(*reply, Status::JoinOk) {
                    log::warn!("JOIN in place of an UPDATE refused by the tracker: {e}");
                }
            }
            (pending, Answer::Bare(Ok(stale))) => {
                // An answer of another shape: not this request's (the original's answers are
                // never late, but they are told apart anyway).
                log::debug!("ignored an answer that is not for {pending:?}: {stale:?}");
                self.waiting = Some(Waiting {
                    pending,
                    deadline: waiting.deadline,
                });
            }
        }
    }

    /// Hands a SEARCH's answer to the console, as the kind of event it asked for.
    fn found(&self, name: String, for_download: bool, result: Result<Box<Reply>, String>) {
        let event = if for_download {
            LinkEvent::FoundForDownload { name, result }
        } else {
            LinkEvent::Found { name, result }
        };
        let _ = self.events.send(event);
    }

    /// The dialect-finding answer arrived: our tracker answers JSON, the original `UPDATE_OK`.
    fn probed(&mut self, then: Request, answer: Answer) {
        let dialect = match answer {
            Answer::Json(_) => Dialect::Napster,
            Answer::Bare(Ok(BareReply::UpdateOk)) => Dialect::Original,
            Answer::Bare(Ok(other)) => {
                self.fail_request(then, LinkError::Unexpected(format!("{other:?}")));
                self.set_connection(None);
                return;
            }
            Answer::Bare(Err(why)) => {
                self.fail_request(then, LinkError::Unexpected(why));
                self.set_connection(None);
                return;
            }
        };
        let from_upload_port = match &mut self.conn {
            Some(conn) => {
                conn.dialect = Some(dialect);
                conn.from_upload_port
            }
            None => false,
        };
        log::debug!("the tracker speaks the {dialect:?} dialect");
        self.learned = Some(dialect);
        self.announce(dialect, true, from_upload_port);
        self.start(then);
    }

    fn joined_ok(&mut self, files: Vec<String>, rejoin: bool) {
        // A JOIN the user asked for, retried while the address was still taken, is answered
        // as the JOIN it is.
        let rejoin = rejoin && self.taken_until.take().is_none();
        self.joined = true;
        self.retry = None;
        // A list longer than one message: the rest follows at once, before anything queued.
        for part in std::mem::take(&mut self.join_rest).into_iter().rev() {
            self.queue.push_front(Request::Change {
                add: part,
                remove: Vec::new(),
            });
        }
        let local_ip = self
            .addresses
            .lock()
            .map(|(_, local)| local)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let event = if rejoin {
            LinkEvent::Rejoined(files.len())
        } else {
            LinkEvent::Joined(Ok(Joined { files, local_ip }))
        };
        let _ = self.events.send(event);
    }

    fn deadline_passed(&mut self) {
        let now = Instant::now();
        if let Some(waiting) = self.waiting.take_if(|w| w.deadline <= now) {
            self.silent(waiting.pending);
        }
        if self.retry.is_some_and(|(at, _)| at <= now) && self.waiting.is_none() {
            if let Some((_, pause)) = self.retry {
                // Counted from now: an attempt that waits for an answer is not also retried.
                self.retry = Some((now + pause, (pause * 2).min(MAX_BACKOFF)));
            }
            if !self.queue.iter().any(|r| matches!(r, Request::Rejoin)) {
                self.queue.push_front(Request::Rejoin);
            }
        }
    }

    /// The request in flight was not answered in time.
    fn silent(&mut self, pending: Pending) {
        let dialect = self.conn.as_ref().and_then(|c| c.dialect);
        let what = match (&pending, dialect) {
            (Pending::Probe(_), _) => Silence::Probe,
            (Pending::Join { .. } | Pending::Relist, Some(Dialect::Original)) => {
                Silence::OriginalJoin(self.shown_folder().display().to_string())
            }
            (Pending::Join { .. }, Some(Dialect::Napster))
                if self.config.dialect == DialectChoice::Napster =>
            {
                Silence::ForcedNapsterJoin
            }
            _ => Silence::Request,
        };
        let rejoin = matches!(pending, Pending::Join { rejoin: true, .. });
        if matches!(pending, Pending::Join { .. }) {
            // Perhaps another tracker now: the next connection finds out again.
            self.learned = None;
        }
        let joined_request = matches!(
            pending,
            Pending::Search { .. } | Pending::Update | Pending::List { .. } | Pending::Relist
        );
        self.fail(
            pending,
            LinkError::Silent {
                waited: self.reply_timeout,
                what,
            },
        );
        if dialect == Some(Dialect::Original) {
            // Kept: see the module documentation.
            return;
        }
        if joined_request && !rejoin {
            self.replace_connection(Outage::Silent(self.reply_timeout));
        } else {
            self.set_connection(None);
        }
    }

    /// The connection ended.
    fn connection_closed(&mut self, cut: Cut) {
        if self.conn.is_none() {
            return;
        }
        if let Some(waiting) = self.waiting.take() {
            self.fail(waiting.pending, LinkError::Lost(cut.clone()));
        }
        self.replace_connection(Outage::Closed(cut));
    }

    /// Drops the connection and, for a joined peer, starts dialling again.
    fn replace_connection(&mut self, outage: Outage) {
        self.set_connection(None);
        if self.joined && self.retry.is_none() {
            let _ = self.events.send(LinkEvent::Outage(outage));
            self.retry = Some((Instant::now() + FIRST_BACKOFF, FIRST_BACKOFF * 2));
        }
    }

    fn fail_request(&mut self, request: Request, e: LinkError) {
        let pending = match request {
            Request::Join(files) => Pending::Join {
                files: names(&files),
                rejoin: false,
            },
            Request::Rejoin => Pending::Join {
                files: Vec::new(),
                rejoin: true,
            },
            Request::Search { name, for_download } => Pending::Search { name, for_download },
            Request::Change { .. } => Pending::Update,
            Request::List { peer } => Pending::List { peer },
        };
        self.fail(pending, e);
    }

    /// Tells whoever waits for `pending` that it failed.
    fn fail(&mut self, pending: Pending, e: LinkError) {
        match pending {
            Pending::Probe(then) => self.fail_request(then, e),
            Pending::Join { .. } if !self.joined && self.retry_taken_address(&e) => {}
            Pending::Join { rejoin: true, .. } if !self.joined => {
                // The retries of a JOIN the user asked for ended: tell the console.
                self.taken_until = None;
                self.retry = None;
                let _ = self.events.send(LinkEvent::Joined(Err(e.to_string())));
            }
            Pending::Join { rejoin: true, .. } => {
                log::debug!("reconnection to {} failed: {e}", self.config.server);
                if self.retry.is_none() && self.joined {
                    self.retry = Some((Instant::now() + FIRST_BACKOFF, FIRST_BACKOFF * 2));
                }
            }
            Pending::Join { rejoin: false, .. } => {
                let _ = self.events.send(LinkEvent::Joined(Err(e.to_string())));
            }
            Pending::Search { name, for_download } => {
                self.found(name, for_download, Err(e.to_string()));
            }
            Pending::List { peer } => {
                let result = Err(e.to_string());
                let _ = self.events.send(LinkEvent::Listed { peer, result });
            }
            // Not joined (`napster get` never is): nobody to tell.
            Pending::Update if matches!(e, LinkError::NotConnected) => {}
            Pending::Update | Pending::Relist => {
                log::warn!("the tracker was not told the new list of files: {e}");
            }
        }
    }
}

impl Link {
    /// A JOIN the user asked for failed with `e`: when the tracker still holds this peer's
    /// address for an older connection (a peer restarted before the tracker saw its old
    /// connection close), tries again with the reconnection's pauses, for up to `--liveness`
    /// (at least [`MIN_TAKEN_RETRY`]), telling the console once. True while it retries.
    fn retry_taken_address(&mut self, e: &LinkError) -> bool {
        if !matches!(e, LinkError::AddressTaken(_)) {
            return false;
        }
        let now = Instant::now();
        let until = match self.taken_until {
            Some(until) => until,
            None => {
                let bound = self.config.liveness.max(MIN_TAKEN_RETRY);
                let _ = self.events.send(LinkEvent::AddressStillTaken(bound));
                *self.taken_until.insert(now + bound)
            }
        };
        if now >= until {
            self.taken_until = None;
            self.retry = None;
            return false;
        }
        if self.retry.is_none() {
            self.retry = Some((now + FIRST_BACKOFF, FIRST_BACKOFF * 2));
        }
        true
    }
}

/// The names of `files`.
fn names(files: &[FileRecord]) -> Vec<String> {
    files.iter().map(|f| f.name.clone()).collect()
}

fn describe(answer: &Answer) -> String {
    match answer {
        Answer::Json(reply) => format!("{reply:?}"),
        Answer::Bare(reply) => format!("{reply:?}"),
    }
}

/// The longest JSON answer read back.
const MAX_JSON_ANSWER: usize = crate::protocol::DEFAULT_MAX_MESSAGE * 16;

/// Reads answers until the connection ends, then reports it. Each answer's first byte tells
/// its dialect: `{` starts one of our JSON lines, anything else one of the original's bare
/// answers (a tracker forced into the original's dialect may still answer errors as JSON).
fn read_answers(mut stream: TcpStream, tx: Sender<Incoming>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let why = 'read: loop {
        loop {
            let start = buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(buf.len());
            buf.drain(..start);
            let Some((answer, used)) = split_answer(&buf) else {
                break;
            };
            buf.drain(..used);
            let unreadable = matches!(answer, Answer::Bare(Err(_)));
            if let Err(why) = forward(&tx, answer) {
                break 'read why;
            }
            if unreadable {
                break 'read Cut::Unreadable;
            }
        }
        if buf.len() > MAX_JSON_ANSWER {
            break Cut::TooLarge;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break Cut::ClosedByTracker,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Cut::Io(Arc::new(e)),
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = tx.send(Incoming::Closed(why));
}

/// The first whole answer in `buf` and the bytes it took.
fn split_answer(buf: &[u8]) -> Option<(Answer, usize)> {
    if buf.first() == Some(&b'{') {
        let end = buf.iter().position(|&b| b == b'\n')?;
        let reply = parse_reply(&buf[..end])
            .map(Box::new)
            .map_err(|e| e.to_string());
        return Some((Answer::Json(reply), end + 1));
    }
    let (reply, used) = legacy::split_bare_reply(buf)?;
    Some((Answer::Bare(reply), used))
}

/// Forwards one answer; `Err` with the reason when the connection must end.
fn forward(tx: &Sender<Incoming>, answer: Answer) -> Result<(), Cut> {
    match tx.try_send(Incoming::Answer(answer)) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => Err(Cut::Unasked),
        Err(TrySendError::Disconnected(_)) => Err(Cut::LinkGone),
    }
}

fn expect_status(reply: Reply, wanted: Status) -> Result<Reply, LinkError> {
    if reply.status == wanted {
        Ok(reply)
    } else if reply.status == Status::Error {
        Err(LinkError::Refused(reply.message.unwrap_or_default()))
    } else {
        Err(LinkError::Unexpected(reply.status.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broken tracker connection reads as before to the user, and `RUST_LOG=debug` can
    /// still reach the OS error beneath it.
    #[test]
    fn a_lost_connection_keeps_its_cause() {
        use std::error::Error as _;
        let lost = LinkError::Lost(Cut::Io(Arc::new(io::Error::from_raw_os_error(
            libc::ECONNRESET,
        ))));
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(
            lost.to_string(),
            format!("conexão com o servidor perdida: {reset}")
        );
        let cut = lost
            .source()
            .expect("a lost connection has its cut as source");
        let os = cut.source().expect("an io cut has its io error as source");
        let os = os
            .downcast_ref::<io::Error>()
            .expect("the source is an io::Error");
        assert_eq!(os.raw_os_error(), Some(libc::ECONNRESET));
        assert_eq!(
            LinkError::Lost(Cut::ClosedByTracker).to_string(),
            "conexão com o servidor perdida: o servidor fechou a conexão"
        );
        let folder = LinkError::Folder(
            PathBuf::from("p2p"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        let missing = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            folder.to_string(),
            format!("a pasta compartilhada não pode ser enviada: p2p: {missing}")
        );
        assert!(folder.source().is_some());
    }

    /// Each answer is read by its first byte: our JSON lines and the original's bare answers
    /// follow one another in one stream (a tracker forced into the original's dialect answers
    /// errors as JSON), and an answer not yet whole is waited for.
    #[test]
    fn json_and_bare_answers_are_split_in_one_stream() {
        let stream = b"{\"status\":\"ERROR\",\"message\":\"x\"}\nJOIN_OK[4001, 4002]UPDATE_OK";
        let mut buf = stream.to_vec();
        let mut got = Vec::new();
        while let Some((answer, used)) = split_answer(&buf) {
            buf.drain(..used);
            got.push(describe(&answer));
        }
        assert_eq!(
            got,
            vec![
                format!("{:?}", Ok::<Reply, String>(Reply::error("x"))),
                "Ok(JoinOk)".to_string(),
                "Ok(Ports([4001, 4002]))".to_string(),
                "Ok(UpdateOk)".to_string(),
            ]
        );
        assert!(buf.is_empty());
        assert!(
            split_answer(b"{\"status\":\"OK\"").is_none(),
            "a line not yet ended"
        );
        assert!(
            split_answer(b"UPDATE_").is_none(),
            "a bare answer not yet whole"
        );
    }

    /// The user is told what each silence means, in Portuguese, with what to do.
    #[test]
    fn silences_say_what_to_do() {
        let waited = Duration::from_secs(15);
        let text = |what| LinkError::Silent { waited, what }.to_string();
        assert_eq!(text(Silence::Request), "o servidor não respondeu em 15 s");
        assert!(text(Silence::Probe).contains("nem à mensagem que identifica o dialeto"));
        assert!(text(Silence::OriginalJoin("/p".into())).contains("nesta mesma máquina"));
        assert!(text(Silence::ForcedNapsterJoin).contains("--tracker-dialect original"));
    }
}
