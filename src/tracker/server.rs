//! The tracker's accept loop and its per-connection request loop.
//!
//! One OS thread per connection, as the original; the accepting thread only accepts, counts and
//! hands off. Each connection is one request → one reply, in order. A connection's peer is
//! forgotten the moment its connection ends, however it ends.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::accept::{self, Refusal, Shutdown, Slots};
use crate::console_out::{self, ConsoleOut};
use crate::liveness;
use crate::log_limit;
use crate::protocol::codec::MemoryBudget;
use crate::protocol::legacy;
use crate::protocol::messages::{
    FileRecord, FileUpdate, Reply, Status, TrackerRequest, parse_tracker_request,
};
use crate::protocol::words;
use crate::protocol::{CodecError, FrameReader};
use crate::share;
use crate::throttle::{Throttle, held_back_note};
use crate::tracker::original_peers;
use crate::tracker::refusal::RequestRefused;
use crate::tracker::table::{ConnId, PeerTable, SearchScratch, TableError};

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
    /// Most connections at once; more are answered with an error and closed. Fitted at start
    /// to what the machine allows (see [`crate::tracker::limits`]).
    pub max_connections: usize,
    /// Most connections at once from one host (an IPv4 address, or an IPv6 /64).
    pub max_connections_per_host: usize,
    /// A started message must be complete within this time (slow senders are closed).
    pub message_timeout: Duration,
    /// A new connection must JOIN within this time of connecting.
    pub join_timeout: Duration,
    /// A host that stops answering is dropped within about this time.
    pub liveness: Duration,
    /// Stack size of connection threads.
    pub thread_stack: usize,
    /// Memory all connections together may use to buffer large messages, in bytes.
    pub max_buffered: usize,
    /// Most results one SEARCH returns (the reply says when more matched).
    pub max_results: usize,
    /// List the folder an original-dialect JOIN names (`--legacy-folder-join`); off, such a
    /// JOIN is refused.
    pub legacy_folder_join: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_message: crate::protocol::DEFAULT_MAX_MESSAGE,
            max_names: 10_000,
            max_listed_names: 5_000_000,
            max_name_len: share::MAX_NAME_BYTES,
            max_connections: 16_384,
            max_connections_per_host: DEFAULT_PER_HOST,
            message_timeout: Duration::from_secs(10),
            join_timeout: Duration::from_secs(300),
            liveness: liveness::DEFAULT_LIVENESS,
            thread_stack: 128 * 1024,
            max_buffered: 256 << 20,
            max_results: 100,
            legacy_folder_join: false,
        }
    }
}

/// A running tracker's shared state.
pub struct Tracker {
    table: PeerTable,
    config: TrackerConfig,
    /// Connections open, in all and per host (see [`host_key`]).
    slots: Arc<Slots>,
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
            slots: Slots::new(config.max_connections),
            config,
            next_conn: AtomicU64::new(1),
            out: ConsoleOut::start(),
        })
    }

    /// Accepts connections on `listener`, one thread each, until `shutdown` is given; then
    /// stops accepting and closes the listener (connections already open are served until
    /// they end).
    pub fn run(self: &Arc<Self>, listener: TcpListener, shutdown: &Shutdown) -> io::Result<()> {
        accept::serve(listener, shutdown, "tracker", |stream, remote| {
            self.hand_off(stream, remote);
            ControlFlow::Continue(())
        })
    }

    fn hand_off(self: &Arc<Self>, stream: TcpStream, remote: SocketAddr) {
        let host = host_key(remote.ip());
        let guard = match self.slots.take(host, self.config.max_connections_per_host) {
            Ok(slot) => slot,
            Err(refusal) => return self.refuse(&stream, remote, refusal),
        };
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
            if let Some(held) = REFUSAL_WARNINGS.allow() {
                log::error!(
                    "cannot start a connection thread: {e}{}",
                    held_back_note(held)
                );
            }
            if let Some(stream) = handed.lock().take() {
                let reply = Reply::error(format!(
                    "the tracker cannot serve another connection now ({e}); try again later"
                ));
                let _ = (&stream).write_all(&reply.to_line());
            }
        }
    }

    /// Tells a connection over a limit why it is closed.
    fn refuse(&self, stream: &TcpStream, remote: SocketAddr, refusal: Refusal) {
        if let Some(held) = REFUSAL_WARNINGS.allow() {
            log::warn!(
                "refusing a connection from {remote}: {refusal}{}",
                held_back_note(held)
            );
        }
        let reply = Reply::error(match refusal {
            Refusal::Full(_) => format!(
                "the tracker is full ({} connections); try again later",
                self.config.max_connections
            ),
            Refusal::HostFull(_) => format!(
                "too many connections from your address ({} at once); close some and try again",
                self.config.max_connections_per_host
            ),
        });
        let _ = (&*stream).write_all(&reply.to_line());
    }

    /// Serves one connection until it closes or breaks a rule it cannot recover from.
    fn serve(&self, stream: TcpStream, conn: ConnId) {
        let connected = Instant::now();
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
            who: remote.to_string(),
            conn,
            joined: None,
            legacy: false,
            search: None,
        };
        // Grown by the first replies, not sized up front: most connections are idle peers,
        // whose only replies are a few bytes long.
        let mut reply = Vec::new();
        let mut reader = FrameReader::new(&stream, self.config.max_message);
        reader.set_budget(Arc::clone(&self.buffers));
        reader.set_message_timeout(Some(self.config.message_timeout));
        // A real deadline from connect: bytes that are not a JOIN do not buy more time.
        reader.set_deadline(Some(connected + self.config.join_timeout));
        loop {
            reply.clear();
            match reader.next_frame() {
                Ok(Some(frame)) => self.handle(&mut session, frame, &mut reply),
                Ok(None) => break,
                Err(e) => {
                    log::debug!("{remote}: {e}");
                    let fatal = !e.is_recoverable();
                    if matches!(e, CodecError::Io(_) | CodecError::Truncated) {
                        break;
                    }
                    let message = match e {
                        CodecError::Deadline | CodecError::Idle => format!(
                            "no JOIN within {} s; closing the connection",
                            self.config.join_timeout.as_secs()
                        ),
                        other => other.to_string(),
                    };
                    reply.clear();
                    Reply::write_error(message, &mut reply);
                    let _ = (&stream).write_all(&reply);
                    if fatal {
                        break;
                    }
                    continue;
                }
            }
            if session.joined.is_some() {
                reader.set_deadline(None);
            }
            if let Err(e) = (&stream).write_all(&reply) {
                log::debug!("{remote}: cannot reply: {e}");
                break;
            }
            if reply.capacity() > REPLY_BUFFER {
                // A long reply (a LIST, many results) is not kept for the next ones.
                reply = Vec::new();
            }
        }
        if let Some(addr) = session.joined
            && self.table.leave(conn, addr)
        {
            self.out.line(format!("Peer {addr} saiu"));
        }
        log::debug!("{remote}: closed");
    }

    /// Answers one frame: the reply's bytes are appended to `reply` (empty on entry) and
    /// written back as they are.
    ///
    /// Kept out of line, as is [`Tracker::apply`]: every connection thread keeps the deepest
    /// stack it ever used resident (4 KiB a page, 10,000 threads), and decoding a JOIN's
    /// records is the deepest path, so the frames under it stay small.
    #[inline(never)]
    fn handle(&self, session: &mut Session, frame: &[u8], reply: &mut Vec<u8>) {
        let answered = parse_tracker_request(frame)
            .map_err(RequestRefused::from)
            .and_then(|request| self.apply(session, request, reply));
        match answered {
            Ok(Some(bytes)) => reply.extend_from_slice(&bytes),
            Ok(None) => {}
            Err(refused) => {
                let message = refused.to_string();
                log_refusal(session.remote, &message);
                reply.clear();
                Reply::write_error(message, reply);
            }
        }
    }

    /// Carries out one request; its reply is returned, or (`None`) already in `reply`.
    #[inline(never)]
    fn apply(
        &self,
        session: &mut Session,
        request: TrackerRequest,
        reply: &mut Vec<u8>,
    ) -> Result<Option<Vec<u8>>, RequestRefused> {
        match request {
            TrackerRequest::Join { port, files } => self.on_join(session, port, &files),
            TrackerRequest::LegacyJoin { folder } => self.on_legacy_join(session, &folder),
            TrackerRequest::Search { query } => self.on_search(session, &query, reply),
            TrackerRequest::Update(FileUpdate::Replace(files)) => self.on_update(session, &files),
            TrackerRequest::Update(FileUpdate::Change { add, remove }) => {
                self.on_change(session, &add, &remove)
            }
            TrackerRequest::List { peer } => self.on_list(session, &peer, reply),
        }
    }

    /// JOIN with this project's records: the peer is known by its address and upload port.
    fn on_join(
        &self,
        session: &mut Session,
        port: u16,
        files: &[FileRecord],
    ) -> Result<Option<Vec<u8>>, RequestRefused> {
        self.check_records(files)?;
        let addr = SocketAddr::new(session.remote.ip(), port);
        self.join(session, addr, files)?;
        session.legacy = false;
        Ok(Some(Reply::status(Status::JoinOk).to_line()))
    }

    /// The original's JOIN, naming a folder the tracker lists itself (where it may).
    fn on_legacy_join(
        &self,
        session: &mut Session,
        folder: &str,
    ) -> Result<Option<Vec<u8>>, RequestRefused> {
        let names = original_peers::list_client_folder(
            session.remote,
            folder,
            self.config.max_names,
            self.config.legacy_folder_join,
        )?;
        let files: Vec<FileRecord> = names.into_iter().map(FileRecord::named).collect();
        self.check_records(&files)?;
        // The original keys a peer by the port of its tracker connection.
        let addr = session.remote;
        self.join(session, addr, &files)?;
        session.legacy = true;
        Ok(Some(legacy::JOIN_OK.to_vec()))
    }

    /// SEARCH: the original's port list for its peers, else our reply written into `reply`
    /// straight from the table.
    fn on_search(
        &self,
        session: &mut Session,
        query: &str,
        reply: &mut Vec<u8>,
    ) -> Result<Option<Vec<u8>>, RequestRefused> {
        let search = session.search.get_or_insert_default();
        self.check_query(query, &mut search.query_words)?;
        self.out
            .line_of(&["Peer ", &session.who, " solicitou arquivo ", query]);
        if session.legacy {
            let ports: Vec<u16> = self
                .table
                .search_addrs(query)
                .iter()
                .filter(|addr| original_peers::dialable_on_loopback(addr))
                .map(SocketAddr::port)
                .collect();
            return Ok(Some(legacy::search_reply(&ports)));
        }
        self.table.search_reply(
            query,
            &search.query_words,
            self.config.max_results,
            &mut search.scratch,
            reply,
        );
        Ok(None)
    }

    /// UPDATE with the whole list.
    fn on_update(
        &self,
        session: &Session,
        files: &[FileRecord],
    ) -> Result<Option<Vec<u8>>, RequestRefused> {
        self.check_records(files)?;
        let addr = session.joined.ok_or(TableError::NotJoined)?;
        self.table.update(session.conn, addr, files)?;
        self.out.line(format!(
            "Peer {addr} atualizou os arquivos {}",
            console_out::name_list(&names_of(files))
        ));
        Ok(Some(self.update_ok(session)))
    }

    /// UPDATE adding and removing names.
    fn on_change(
        &self,
        session: &Session,
        add: &[FileRecord],
        remove: &[String],
    ) -> Result<Option<Vec<u8>>, RequestRefused> {
        self.check_records(add)?;
        self.check_list_len(remove.len())?;
        for name in remove {
            self.check_name(name)?;
        }
        let addr = session.joined.ok_or(TableError::NotJoined)?;
        self.table.change(session.conn, addr, add, remove)?;
        let mut changed = Vec::new();
        if !add.is_empty() {
            changed.push(format!("+{}", console_out::name_list(&names_of(add))));
        }
        if !remove.is_empty() {
            changed.push(format!("-{}", console_out::name_list(remove)));
        }
        self.out.line(format!(
            "Peer {addr} atualizou os arquivos: {}",
            changed.join(" ")
        ));
        Ok(Some(self.update_ok(session)))
    }

    /// LIST: what one peer shares, from the table.
    fn on_list(
        &self,
        session: &Session,
        peer: &str,
        reply: &mut Vec<u8>,
    ) -> Result<Option<Vec<u8>>, RequestRefused> {
        let Ok(addr) = peer.trim().parse::<SocketAddr>() else {
            return Err(RequestRefused::PeerAddress(peer.to_string()));
        };
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let files = self
            .table
            .list(addr)
            .ok_or(RequestRefused::UnknownPeer(addr))?;
        self.out
            .line(format!("Peer {} listou os arquivos de {addr}", session.who));
        Reply::files(files).write_line(reply);
        Ok(None)
    }

    fn update_ok(&self, session: &Session) -> Vec<u8> {
        if session.legacy {
            legacy::UPDATE_OK.to_vec()
        } else {
            Reply::status(Status::UpdateOk).to_line()
        }
    }

    fn join(
        &self,
        session: &mut Session,
        addr: SocketAddr,
        files: &[FileRecord],
    ) -> Result<(), RequestRefused> {
        self.table.join(session.conn, addr, files)?;
        // Only once the new address is ours: a refused re-JOIN keeps the old entry.
        if let Some(old) = session.joined
            && old != addr
        {
            self.table.leave(session.conn, old);
        }
        session.joined = Some(addr);
        session.who = addr.to_string();
        self.out.line(format!(
            "Peer {addr} adicionado com os arquivos {}",
            console_out::name_list(&names_of(files))
        ));
        Ok(())
    }

    fn check_list_len(&self, len: usize) -> Result<(), RequestRefused> {
        if len > self.config.max_names {
            return Err(RequestRefused::TooManyNames {
                len,
                max: self.config.max_names,
            });
        }
        Ok(())
    }

    fn check_name(&self, name: &str) -> Result<(), RequestRefused> {
        share::check_name_len(name, self.config.max_name_len).map_err(|source| {
            RequestRefused::Name {
                name: name.to_string(),
                source,
            }
        })
    }

    /// A list of records: not too many, plain names, sizes a file can have.
    fn check_records(&self, files: &[FileRecord]) -> Result<(), RequestRefused> {
        self.check_list_len(files.len())?;
        for file in files {
            self.check_name(&file.name)?;
            if let Some(size) = file.size.filter(|&size| size > MAX_FILE_SIZE) {
                return Err(RequestRefused::Size {
                    name: file.name.clone(),
                    size,
                });
            }
        }
        Ok(())
    }

    /// A SEARCH query: a name, or words of names (PROTOCOL.md, T15). Leaves its words in
    /// `query_words`.
    fn check_query(
        &self,
        query: &str,
        query_words: &mut words::QueryWords,
    ) -> Result<(), RequestRefused> {
        if share::has_hidden_characters(query) {
            return Err(RequestRefused::QueryHidden);
        }
        if query.trim().is_empty() {
            return Err(RequestRefused::QueryEmpty);
        }
        if query.len() > self.config.max_name_len {
            return Err(RequestRefused::QueryTooLong {
                max: self.config.max_name_len,
            });
        }
        query_words.fill(query);
        if query_words.len() > words::MAX_QUERY_WORDS {
            return Err(RequestRefused::QueryWords {
                len: query_words.len(),
                max: words::MAX_QUERY_WORDS,
            });
        }
        Ok(())
    }
}

/// The largest size a record may give: what a signed 64-bit number holds, as file systems use.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// The names of `files`, for console lines.
fn names_of(files: &[FileRecord]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}

/// What the tracker knows about one connection.
struct Session {
    remote: SocketAddr,
    /// The address console lines name it by: its peer's once joined, else the connection's.
    who: String,
    conn: ConnId,
    /// The peer address this connection registered, once it has joined.
    joined: Option<SocketAddr>,
    /// The connection speaks the original's dialect.
    legacy: bool,
    /// What its SEARCHes reuse, from its first SEARCH on (idle peers never search).
    search: Option<Box<SearchSpace>>,
}

/// Kept by a connection that SEARCHes, so that a SEARCH allocates nothing; boxed, so that
/// it takes no room on the connection thread's stack.
#[derive(Default)]
struct SearchSpace {
    /// The last query's words.
    query_words: words::QueryWords,
    scratch: SearchScratch,
}

/// Most bytes of reply buffer a connection keeps between requests (a usual SEARCH reply
/// fits many times).
const REPLY_BUFFER: usize = 4096;

/// The default `--max-connections-per-host`: a classroom of 60 behind one NAT, each with a
/// peer and a few spare reconnections, fits; one host cannot take the whole tracker.
pub const DEFAULT_PER_HOST: usize = 256;

/// What counts as one host: an IPv4 address, or an IPv6 /64 (one machine can hold a whole /64).
pub fn host_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Warnings about refused connections: a flood of them must not flood stderr.
static REFUSAL_WARNINGS: Throttle = Throttle::new(10, Duration::from_secs(10));

/// Logs a refused request; the text may hold whole names from the network, so only its start.
fn log_refusal(remote: SocketAddr, message: &str) {
    log::debug!(
        "{remote}: {}",
        log_limit::prefix(message, 2 * log_limit::LOGGED_TEXT)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// A running tracker stops when its shutdown signal is given: `run` returns, the port is
    /// closed, and a connection it was serving still gets its answers.
    #[test]
    fn a_running_tracker_stops_on_its_shutdown_signal() {
        let tracker = Tracker::new(TrackerConfig::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let running = {
            let shutdown = Arc::clone(&shutdown);
            thread::spawn(move || tracker.run(listener, &shutdown))
        };
        let ask = |client: &TcpStream| {
            let mut line = String::new();
            (&*client).write_all(b"{\"method\":\"NOPE\"}\n").unwrap();
            BufReader::new(client).read_line(&mut line).unwrap();
            line
        };
        let client = TcpStream::connect(addr).unwrap();
        assert!(ask(&client).contains("\"ERROR\""));
        shutdown.stop();
        running.join().unwrap().unwrap();
        assert!(TcpStream::connect(addr).is_err());
        assert!(ask(&client).contains("\"ERROR\""));
    }

    /// An IPv4 address is one host, however it arrives (v4-mapped too); an IPv6 /64 is one host.
    #[test]
    fn hosts_are_ipv4_addresses_or_ipv6_prefixes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(host_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(host_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            host_key(ip("2001:db8:1:2::5")),
            host_key(ip("2001:db8:1:2:aaaa::9"))
        );
        assert_eq!(host_key(ip("2001:db8:1:2::5")), ip("2001:db8:1:2::"));
        assert_ne!(
            host_key(ip("2001:db8:1:2::5")),
            host_key(ip("2001:db8:1:3::5"))
        );
    }
}
