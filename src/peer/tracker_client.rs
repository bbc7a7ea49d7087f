//! The peer's long-lived connection to the tracker, and getting it back when it breaks.
//!
//! A reader thread owns the receiving half and forwards each reply to whoever is waiting; when
//! the connection ends it tells the console, which starts [`TrackerLink::reconnect`]: with
//! growing pauses it dials again and JOINs with the files shared *now*. Requests are written
//! and answered one at a time under a mutex, so replies never cross.

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use parking_lot::Mutex;

use crate::liveness;
use crate::peer::output::printable;
use crate::protocol::FileRecord;
use crate::protocol::messages::{self, Reply, parse_reply, status};
use crate::protocol::{CodecError, FrameReader};

/// Replies received and not yet read that are tolerated.
const UNREAD_REPLIES: usize = 8;
/// How long a request waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long dialling the tracker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most bytes of records one JOIN or UPDATE carries (the tracker takes up to 1 MiB).
const MESSAGE_PART: usize = 256 * 1024;

/// What went wrong talking to the tracker.
#[derive(Debug)]
pub enum LinkError {
    /// Not connected (never joined, or the connection was lost).
    NotConnected,
    /// Dialling failed.
    Connect(String, io::Error),
    /// The connection broke during the request.
    Lost(String),
    /// No reply in time.
    Timeout,
    /// The tracker answered ERROR.
    Refused(String),
    /// The tracker answered something unexpected.
    Unexpected(String),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::NotConnected => write!(f, "sem conexão com o servidor"),
            LinkError::Connect(addr, e) => write!(
                f,
                "não foi possível conectar a {addr}: {}",
                crate::os_error::describe(e)
            ),
            LinkError::Lost(why) => write!(f, "conexão com o servidor perdida: {why}"),
            LinkError::Timeout => write!(f, "o servidor não respondeu a tempo"),
            LinkError::Refused(why) => write!(f, "o servidor recusou: {}", printable(why)),
            LinkError::Unexpected(what) => {
                write!(f, "resposta inesperada do servidor: {}", printable(what))
            }
        }
    }
}

impl std::error::Error for LinkError {}

/// Something the console should know about the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connection number `generation` ended (tracker gone or restarted).
    Lost {
        /// Which connection.
        generation: u64,
        /// Why, for the user.
        why: String,
    },
    /// Reconnected and joined again with this many files.
    Rejoined(usize),
}

struct Connection {
    stream: TcpStream,
    replies: Receiver<Result<Reply, String>>,
    generation: u64,
}

/// The connection to the tracker; shared by the console and download threads.
pub struct TrackerLink {
    server: String,
    conn: Mutex<Option<Connection>>,
    generation: AtomicU64,
    closing: AtomicBool,
    reconnecting: AtomicBool,
    events: Sender<LinkEvent>,
    liveness: Duration,
    local_ip: Option<IpAddr>,
}

impl TrackerLink {
    /// A link to `server` (`HOST:PORT`), not yet connected. Events go to `events`.
    ///
    /// `local_ip`: the address the peer's upload port listens on, when it is a specific one.
    /// The tracker lists a peer under the IP it sees on this connection, so on a host with
    /// several addresses the connection must leave from the address uploads are served on.
    pub fn new(
        server: String,
        events: Sender<LinkEvent>,
        liveness: Duration,
        local_ip: Option<IpAddr>,
    ) -> TrackerLink {
        TrackerLink {
            local_ip,
            server,
            conn: Mutex::new(None),
            generation: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            reconnecting: AtomicBool::new(false),
            events,
            liveness,
        }
    }

    /// The tracker's address as given.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// True while [`TrackerLink::reconnect`] is trying to get the connection back.
    pub fn is_reconnecting(&self) -> bool {
        self.reconnecting.load(Ordering::SeqCst)
    }

    /// The tracker's IP and this host's IP on the connection, when connected.
    pub fn addresses(&self) -> Option<(IpAddr, IpAddr)> {
        let guard = self.conn.lock();
        let conn = guard.as_ref()?;
        Some((
            conn.stream.peer_addr().ok()?.ip().to_canonical(),
            conn.stream.local_addr().ok()?.ip().to_canonical(),
        ))
    }

    /// Dials the tracker (if not connected) and JOINs with `port` and `files`. A long list
    /// goes as a JOIN with its first part and UPDATEs adding the rest, every message well
    /// under the tracker's size limit.
    pub fn join(&self, port: u16, files: &[FileRecord]) -> Result<(), LinkError> {
        let mut guard = self.conn.lock();
        if guard.is_none() {
            *guard = Some(self.dial()?);
        }
        let mut parts = messages::record_chunks(files, MESSAGE_PART).into_iter();
        let first = parts.next().unwrap_or_default();
        let reply = Self::exchange(&mut guard, &messages::join_line(port, first))?;
        expect_status(reply, status::JOIN_OK)?;
        for part in parts {
            let reply = Self::exchange(&mut guard, &messages::update_change_line(part, &[]))?;
            expect_status(reply, status::UPDATE_OK)?;
        }
        Ok(())
    }

    /// SEARCH: who shares exactly `query`, and which files match its words.
    pub fn search(&self, query: &str) -> Result<Reply, LinkError> {
        let mut guard = self.conn.lock();
        let reply = Self::exchange(&mut guard, &messages::search_line(query))?;
        expect_status(reply, status::OK)
    }

    /// Tells the tracker about files added (or whose record changed) and removed.
    pub fn update_changes(&self, add: &[FileRecord], remove: &[String]) -> Result<(), LinkError> {
        let mut guard = self.conn.lock();
        let reply = Self::exchange(&mut guard, &messages::update_change_line(add, remove))?;
        expect_status(reply, status::UPDATE_OK).map(|_| ())
    }

    /// LIST: the files the peer at `peer` (`IP:PORT`) shares, as the tracker knows them.
    pub fn list(&self, peer: &str) -> Result<Vec<FileRecord>, LinkError> {
        let mut guard = self.conn.lock();
        let reply = Self::exchange(&mut guard, &messages::list_line(peer))?;
        let reply = expect_status(reply, status::OK)?;
        Ok(reply.files.unwrap_or_default())
    }

    /// Closes the connection for good: the tracker forgets this peer at once.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        if let Some(conn) = self.conn.lock().take() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Dials again with growing pauses until it can JOIN with what `files` returns, or the
    /// link is closed. Runs on its own thread; only one runs at a time.
    pub fn reconnect(
        self: &Arc<Self>,
        port: u16,
        files: impl Fn() -> Vec<FileRecord> + Send + 'static,
    ) {
        if self.reconnecting.swap(true, Ordering::SeqCst) {
            return;
        }
        let link = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("reconnect".into())
            .spawn(move || {
                let mut pause = Duration::from_millis(200);
                while !link.closing.load(Ordering::SeqCst) {
                    let list = files();
                    match link.join(port, &list) {
                        Ok(()) => {
                            let _ = link.events.send(LinkEvent::Rejoined(list.len()));
                            break;
                        }
                        Err(e) => {
                            log::debug!("reconnect to {} failed: {e}", link.server);
                            if matches!(e, LinkError::Refused(_)) {
                                // e.g. our address still held by the old connection: retry.
                                link.drop_connection();
                            }
                        }
                    }
                    thread::sleep(pause);
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                link.reconnecting.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            log::error!("cannot start the reconnection thread: {e}");
            self.reconnecting.store(false, Ordering::SeqCst);
        }
    }

    /// Handles the end of connection `generation`: true if it was the current one (now
    /// dropped), false if it was already replaced or the link is closing.
    pub fn connection_lost(&self, generation: u64) -> bool {
        let mut guard = self.conn.lock();
        if self.closing.load(Ordering::SeqCst) {
            return false;
        }
        match guard.as_ref() {
            Some(conn) if conn.generation == generation => {
                let _ = conn.stream.shutdown(std::net::Shutdown::Both);
                *guard = None;
                true
            }
            Some(_) => false,
            // Dropped by a failed request: still ours to restore.
            None => self.generation.load(Ordering::SeqCst) == generation,
        }
    }

    fn drop_connection(&self) {
        if let Some(conn) = self.conn.lock().take() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn dial(&self) -> Result<Connection, LinkError> {
        let connect_err = |e| LinkError::Connect(self.server.clone(), e);
        let addrs: Vec<SocketAddr> = self
            .server
            .to_socket_addrs()
            .map_err(connect_err)?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let stream = addrs
            .iter()
            .find_map(
                |a| match crate::dial::connect_from(self.local_ip, a, CONNECT_TIMEOUT) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        last = e;
                        None
                    }
                },
            )
            .ok_or_else(|| LinkError::Connect(self.server.clone(), last))?;
        let _ = stream.set_nodelay(true);
        if let Err(e) = liveness::set_liveness(&stream, self.liveness) {
            log::debug!("cannot set keepalive on the tracker connection: {e}");
        }
        let reading = stream.try_clone().map_err(connect_err)?;
        // Requests are answered one at a time; a tracker that sends more than a few replies
        // nobody asked for is broken, and the reader drops it rather than queue them.
        let (tx, rx) = bounded(UNREAD_REPLIES);
        let _ = stream.set_write_timeout(Some(REPLY_TIMEOUT));
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let events = self.events.clone();
        thread::Builder::new()
            .name("tracker-reader".into())
            .spawn(move || read_replies(reading, generation, tx, events))
            .map_err(connect_err)?;
        Ok(Connection {
            stream,
            replies: rx,
            generation,
        })
    }

    /// Writes one request and waits for its reply. A broken connection is dropped.
    fn exchange(guard: &mut Option<Connection>, line: &[u8]) -> Result<Reply, LinkError> {
        let conn = guard.as_mut().ok_or(LinkError::NotConnected)?;
        // Replies left over from a request that timed out would answer the wrong question.
        while conn.replies.try_recv().is_ok() {}
        let result = (&conn.stream)
            .write_all(line)
            .map_err(|e| LinkError::Lost(e.to_string()))
            .and_then(|()| match conn.replies.recv_timeout(REPLY_TIMEOUT) {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(why)) => Err(LinkError::Lost(why)),
                Err(RecvTimeoutError::Timeout) => Err(LinkError::Timeout),
                Err(RecvTimeoutError::Disconnected) => {
                    Err(LinkError::Lost("connection closed".into()))
                }
            });
        // A tracker that does not answer in time is as good as gone: drop the connection, so
        // the reader reports it and the peer reconnects, instead of timing out for ever.
        if let Err(LinkError::Lost(_) | LinkError::Timeout) = &result {
            log::debug!("tracker connection {} dropped", conn.generation);
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            *guard = None;
        }
        result
    }
}

/// Forwards replies until the connection ends, then reports it.
fn read_replies(
    stream: TcpStream,
    generation: u64,
    tx: Sender<Result<Reply, String>>,
    events: Sender<LinkEvent>,
) {
    let mut reader = FrameReader::new(&stream, crate::protocol::DEFAULT_MAX_MESSAGE * 16);
    reader.set_message_timeout(Some(REPLY_TIMEOUT));
    let why = loop {
        let reply = match reader.next_frame() {
            Ok(Some(frame)) => parse_reply(frame),
            Ok(None) => break "o servidor fechou a conexão".to_string(),
            Err(CodecError::Malformed(why)) => Err(why),
            Err(e) => break e.to_string(),
        };
        match tx.try_send(reply) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                break "o servidor enviou respostas que ninguém pediu".to_string();
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = tx.try_send(Err(why.clone()));
    let _ = events.send(LinkEvent::Lost { generation, why });
}

fn expect_status(reply: Reply, wanted: &str) -> Result<Reply, LinkError> {
    if reply.status == wanted {
        Ok(reply)
    } else if reply.status == status::ERROR {
        Err(LinkError::Refused(reply.message.unwrap_or_default()))
    } else {
        Err(LinkError::Unexpected(reply.status))
    }
}
