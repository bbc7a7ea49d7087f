//! The tracker's accept loop and its per-connection request loop.
//!
//! One OS thread per connection, as the original; the accepting thread only accepts, counts and
//! hands off. Each connection is one request → one reply, in order. A connection's peer is
//! forgotten the moment its connection ends, however it ends.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::console_out::ConsoleOut;
use crate::liveness;
use crate::protocol::codec::MemoryBudget;
use crate::protocol::legacy;
use crate::protocol::messages::{
    FileRecord, FileUpdate, Reply, TrackerRequest, parse_tracker_request, status,
};
use crate::protocol::words;
use crate::protocol::{CodecError, FrameReader};
use crate::share;
use crate::tracker::legacy as legacy_join;
use crate::tracker::table::{ConnId, PeerTable};

/// The tracker's limits; each has a command-line option.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Largest message accepted, in bytes.
    pub max_message: usize,
    /// Most names one peer may share.
    pub max_names: usize,
    /// Most names all peers together may list (a name listed by two peers counts twice):
    /// bounds the index's memory.
    pub max_listed_names: usize,
    /// Longest name, in bytes.
    pub max_name_len: usize,
    /// Most connections at once; more are answered with an error and closed.
    pub max_connections: usize,
    /// A started message must be complete within this time (slow senders are closed).
    pub message_timeout: Duration,
    /// A new connection must JOIN within this time.
    pub join_timeout: Duration,
    /// A host that stops answering is dropped within about this time.
    pub liveness: Duration,
    /// Stack size of connection threads.
    pub thread_stack: usize,
    /// Memory all connections together may use to buffer large messages, in bytes.
    pub max_buffered: usize,
    /// Most results one SEARCH returns (the reply says when more matched).
    pub max_results: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_message: crate::protocol::DEFAULT_MAX_MESSAGE,
            max_names: 10_000,
            max_listed_names: 5_000_000,
            max_name_len: share::MAX_NAME_BYTES,
            max_connections: 16_384,
            message_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(300),
            liveness: liveness::DEFAULT_LIVENESS,
            thread_stack: 128 * 1024,
            max_buffered: 256 << 20,
            max_results: 100,
        }
    }
}

/// A running tracker's shared state.
pub struct Tracker {
    table: PeerTable,
    config: TrackerConfig,
    connections: AtomicUsize,
    next_conn: AtomicU64,
    out: ConsoleOut,
    buffers: Arc<MemoryBudget>,
}

impl Tracker {
    /// A tracker with an empty table.
    pub fn new(config: TrackerConfig) -> Arc<Tracker> {
        // Before the connection threads allocate: so memory freed when peers leave goes back.
        crate::tracker::memory::keep_trim_thresholds_fixed();
        Arc::new(Tracker {
            table: PeerTable::with_limits(config.max_listed_names, config.max_names),
            buffers: MemoryBudget::new(config.max_buffered),
            config,
            connections: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            out: ConsoleOut::start(),
        })
    }

    /// The peer table (for tests and benchmarks).
    pub fn table(&self) -> &PeerTable {
        &self.table
    }

    /// Accepts connections on `listener` for ever, one thread each.
    pub fn run(self: &Arc<Self>, listener: TcpListener) -> io::Result<()> {
        for incoming in listener.incoming() {
            let stream = match incoming {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: keep serving.
                    log::warn!("accept failed: {e}");
                    if e.raw_os_error() == Some(libc::EMFILE)
                        || e.raw_os_error() == Some(libc::ENFILE)
                    {
                        thread::sleep(Duration::from_millis(50));
                    }
                    continue;
                }
            };
            self.hand_off(stream);
        }
        Ok(())
    }

    fn hand_off(self: &Arc<Self>, stream: TcpStream) {
        let count = self.connections.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = ConnectionSlot(Arc::clone(self));
        if count > self.config.max_connections {
            log::warn!("refusing a connection: {count} would exceed the limit");
            let reply = Reply::error(format!(
                "the tracker is full ({} connections); try again later",
                self.config.max_connections
            ));
            let _ = (&stream).write_all(&reply.to_line());
            return;
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let tracker = Arc::clone(self);
        // The stream is handed over through a cell so that, if the thread cannot start (out of
        // memory or of tasks), it is still here to be told why.
        let handed = Arc::new(parking_lot::Mutex::new(Some(stream)));
        let theirs = Arc::clone(&handed);
        let spawned = thread::Builder::new()
            .name(format!("conn-{conn}"))
            .stack_size(self.config.thread_stack)
            .spawn(move || {
                let _guard = guard;
                let stream = theirs.lock().take();
                if let Some(stream) = stream {
                    tracker.serve(stream, conn);
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start a connection thread: {e}");
            if let Some(stream) = handed.lock().take() {
                let reply = Reply::error(format!(
                    "the tracker cannot serve another connection now ({e}); try again later"
                ));
                let _ = (&stream).write_all(&reply.to_line());
            }
        }
    }

    /// Serves one connection until it closes or breaks a rule it cannot recover from.
    fn serve(&self, stream: TcpStream, conn: ConnId) {
        let Ok(remote) = stream.peer_addr() else {
            return;
        };
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        if let Err(e) = liveness::set_liveness(&stream, self.config.liveness) {
            log::debug!("{remote}: cannot set keepalive: {e}");
        }
        let _ = stream.set_nodelay(true);
        log::debug!("{remote}: connected");
        let mut session = Session {
            remote,
            conn,
            joined: None,
            legacy: false,
        };
        let mut reader = FrameReader::new(&stream, self.config.max_message);
        reader.set_budget(Arc::clone(&self.buffers));
        reader.set_message_timeout(Some(self.config.message_timeout));
        reader.set_idle_timeout(Some(self.config.join_timeout));
        loop {
            let answer = match reader.next_frame() {
                Ok(Some(frame)) => self.handle(&mut session, frame),
                Ok(None) => break,
                Err(e) => {
                    log::debug!("{remote}: {e}");
                    let fatal = !e.is_recoverable();
                    if matches!(e, CodecError::Io(_) | CodecError::Truncated) {
                        break;
                    }
                    let message = match e {
                        CodecError::Idle => format!(
                            "no JOIN within {} s; closing the connection",
                            self.config.join_timeout.as_secs()
                        ),
                        other => other.to_string(),
                    };
                    let _ = (&stream).write_all(&Reply::error(message).to_line());
                    if fatal {
                        break;
                    }
                    continue;
                }
            };
            if session.joined.is_some() {
                reader.set_idle_timeout(None);
            }
            if let Err(e) = (&stream).write_all(&answer) {
                log::debug!("{remote}: cannot reply: {e}");
                break;
            }
        }
        if let Some(addr) = session.joined
            && self.table.leave(conn, addr)
        {
            self.out.line(format!("Peer {addr} saiu"));
        }
        log::debug!("{remote}: closed");
    }

    /// Answers one frame; the bytes returned are written back as they are.
    fn handle(&self, session: &mut Session, frame: &[u8]) -> Vec<u8> {
        let request = match parse_tracker_request(frame) {
            Ok(request) => request,
            Err(message) => {
                log::debug!("{}: {message}", session.remote);
                return Reply::error(message).to_line();
            }
        };
        match self.apply(session, request) {
            Ok(bytes) => bytes,
            Err(message) => {
                log::debug!("{}: {message}", session.remote);
                Reply::error(message).to_line()
            }
        }
    }

    fn apply(&self, session: &mut Session, request: TrackerRequest) -> Result<Vec<u8>, String> {
        match request {
            TrackerRequest::Join { port, files } => {
                self.check_records(&files)?;
                let addr = SocketAddr::new(session.remote.ip(), port);
                self.join(session, addr, &files)?;
                session.legacy = false;
                Ok(Reply::status(status::JOIN_OK).to_line())
            }
            TrackerRequest::LegacyJoin { folder } => {
                let names =
                    legacy_join::list_client_folder(session.remote, &folder, self.config.max_names)
                        .map_err(|e| e.to_string())?;
                let files: Vec<FileRecord> = names.into_iter().map(FileRecord::named).collect();
                self.check_records(&files)?;
                // The original keys a peer by the port of its tracker connection.
                let addr = session.remote;
                self.join(session, addr, &files)?;
                session.legacy = true;
                Ok(legacy::JOIN_OK.to_vec())
            }
            TrackerRequest::Search { query } => {
                let query_words = self.check_query(&query)?;
                let who = session.joined.unwrap_or(session.remote);
                self.out
                    .line(format!("Peer {who} solicitou arquivo {query}"));
                if session.legacy {
                    let ports: Vec<u16> = self
                        .table
                        .search_addrs(&query)
                        .iter()
                        .filter(|addr| legacy_join::dialable_on_loopback(addr))
                        .map(SocketAddr::port)
                        .collect();
                    Ok(legacy::search_reply(&ports))
                } else {
                    let found =
                        self.table
                            .search_words(&query, &query_words, self.config.max_results);
                    Ok(Reply::search(found.peers, found.results, found.truncated).to_line())
                }
            }
            TrackerRequest::Update(FileUpdate::Replace(files)) => {
                self.check_records(&files)?;
                let addr = session.joined.ok_or("send JOIN before UPDATE")?;
                self.table
                    .update(session.conn, addr, &files)
                    .map_err(|e| e.to_string())?;
                self.out.line(format!(
                    "Peer {addr} atualizou os arquivos {}",
                    legacy::python_list(&names_of(&files))
                ));
                Ok(self.update_ok(session))
            }
            TrackerRequest::Update(FileUpdate::Change { add, remove }) => {
                self.check_records(&add)?;
                self.check_list_len(remove.len())?;
                for name in &remove {
                    self.check_name(name)?;
                }
                let addr = session.joined.ok_or("send JOIN before UPDATE")?;
                self.table
                    .change(session.conn, addr, &add, &remove)
                    .map_err(|e| e.to_string())?;
                let mut changed = Vec::new();
                if !add.is_empty() {
                    changed.push(format!("+{}", legacy::python_list(&names_of(&add))));
                }
                if !remove.is_empty() {
                    changed.push(format!("-{}", legacy::python_list(&remove)));
                }
                self.out.line(format!(
                    "Peer {addr} atualizou os arquivos: {}",
                    changed.join(" ")
                ));
                Ok(self.update_ok(session))
            }
            TrackerRequest::List { peer } => {
                let addr: SocketAddr = peer.trim().parse().map_err(|_| {
                    format!("LIST needs data.peer as IP:PORT, not {:?}", bounded(&peer))
                })?;
                let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                let files = self
                    .table
                    .list(addr)
                    .ok_or_else(|| format!("peer {addr} is not registered with this tracker"))?;
                let who = session.joined.unwrap_or(session.remote);
                self.out
                    .line(format!("Peer {who} listou os arquivos de {addr}"));
                Ok(Reply::files(files).to_line())
            }
        }
    }

    fn update_ok(&self, session: &Session) -> Vec<u8> {
        if session.legacy {
            legacy::UPDATE_OK.to_vec()
        } else {
            Reply::status(status::UPDATE_OK).to_line()
        }
    }

    fn join(
        &self,
        session: &mut Session,
        addr: SocketAddr,
        files: &[FileRecord],
    ) -> Result<(), String> {
        self.table
            .join(session.conn, addr, files)
            .map_err(|e| e.to_string())?;
        // Only once the new address is ours: a refused re-JOIN keeps the old entry.
        if let Some(old) = session.joined
            && old != addr
        {
            self.table.leave(session.conn, old);
        }
        session.joined = Some(addr);
        self.out.line(format!(
            "Peer {addr} adicionado com os arquivos {}",
            legacy::python_list(&names_of(files))
        ));
        Ok(())
    }

    fn check_list_len(&self, len: usize) -> Result<(), String> {
        if len > self.config.max_names {
            return Err(format!(
                "the list has {len} names; the limit is {}",
                self.config.max_names
            ));
        }
        Ok(())
    }

    fn check_name(&self, name: &str) -> Result<(), String> {
        share::check_name_len(name, self.config.max_name_len)
            .map_err(|e| format!("name {:?} refused: {e}", bounded(name)))
    }

    /// A list of records: not too many, plain names, sizes a file can have.
    fn check_records(&self, files: &[FileRecord]) -> Result<(), String> {
        self.check_list_len(files.len())?;
        for file in files {
            self.check_name(&file.name)?;
            if file.size.is_some_and(|size| size > MAX_FILE_SIZE) {
                return Err(format!(
                    "file {:?}: size {} is not a file size (at most 2^63 - 1)",
                    bounded(&file.name),
                    file.size.unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// A SEARCH query: a name, or words of names (PROTOCOL.md, T15). Returns its words.
    fn check_query(&self, query: &str) -> Result<words::QueryWords, String> {
        if query.trim().is_empty() {
            return Err("SEARCH refused: the query is empty".into());
        }
        if query.len() > self.config.max_name_len {
            return Err(format!(
                "SEARCH refused: the query is longer than {} bytes",
                self.config.max_name_len
            ));
        }
        if share::has_hidden_characters(query) {
            return Err(
                "SEARCH refused: the query holds control or invisible formatting characters".into(),
            );
        }
        let query_words = words::QueryWords::of(query);
        if query_words.len() > words::MAX_QUERY_WORDS {
            return Err(format!(
                "SEARCH refused: the query has {} words; the limit is {}",
                query_words.len(),
                words::MAX_QUERY_WORDS
            ));
        }
        Ok(query_words)
    }
}

/// The largest size a record may give: what a signed 64-bit number holds, as file systems use.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// The names of `files`, for console lines.
fn names_of(files: &[FileRecord]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}

/// At most the first 64 characters of `text`, for error messages about hostile input.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// What the tracker knows about one connection.
struct Session {
    remote: SocketAddr,
    conn: ConnId,
    /// The peer address this connection registered, once it has joined.
    joined: Option<SocketAddr>,
    /// The connection speaks the original's dialect.
    legacy: bool,
}

/// Counts a connection until its thread ends.
struct ConnectionSlot(Arc<Tracker>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Descriptors kept for the listener, stdio, logs and the odd file, beside one per connection.
pub const SPARE_DESCRIPTORS: usize = 64;

impl TrackerConfig {
    /// Lowers `max_connections` to what `open_file_limit` descriptors can serve (one per
    /// connection plus [`SPARE_DESCRIPTORS`]), so that a full tracker answers "full" instead of
    /// stalling in `accept` on "too many open files". Returns the asked value if it was lowered.
    pub fn fit_open_file_limit(&mut self, open_file_limit: u64) -> Option<usize> {
        let room = usize::try_from(open_file_limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(SPARE_DESCRIPTORS)
            .max(1);
        let asked = self.max_connections;
        (asked > room).then(|| {
            self.max_connections = room;
            asked
        })
    }
}

/// Raises the soft open-file limit to the hard one, so that thousands of peers fit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}
