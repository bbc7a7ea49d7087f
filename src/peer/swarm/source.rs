//! One source of a swarm download: one connection to one uploader, approved by its user once,
//! then a range session. Up to [`PIPELINE`] ranges are asked ahead so the link never idles;
//! every piece is checked before it is written; a piece that fails the check ends this source
//! (it lied) and goes back to the plan for another.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use rustix::net::RecvFlags;

use crate::peer::swarm::planner::{PIECE_LEN, SourceId};
use crate::peer::swarm::prepare::{self, Fetched};
use crate::peer::swarm::{Identity, Next, OutboardRole, Pieces, Swarm, SwarmError};
use crate::protocol::messages::{
    DownloadRequest, Reply, Status, UNKNOWN_METHOD, parse_reply, range_session_line,
};
use crate::protocol::ranges;
use crate::protocol::{CodecError, FrameReader};
use crate::verified::{self, CHUNK_GROUP, PieceError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The uploader may compute the outboard of a large file before its first reply.
const FIRST_REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// The uploader's user may take long to answer (the uploader enforces its own limit).
const DECISION_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a reply that has started to arrive may take to arrive whole.
const REPLY_COMPLETION_TIMEOUT: Duration = Duration::from_secs(30);
/// A source that sends nothing for this long has stalled: its pieces go to others.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Ranges asked ahead of the one being received.
const PIPELINE: usize = 2;
/// The longest reply line read in a session.
const MAX_REPLY_LINE: u64 = 4096;

const _: () = assert!(PIPELINE <= ranges::MAX_AHEAD);

/// How a source ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Nothing more to fetch (the download is complete or over).
    Done,
    /// It does not share the name.
    NotFound,
    /// Its user said NAO, or did not answer in time.
    Rejected(Option<String>),
    /// It answered ERROR.
    Refused(String),
    /// It knows only whole-file downloads.
    Legacy,
    /// Its file with that name is another content.
    OtherContent,
    /// It sent bytes that failed the check at this byte of the file (or an outboard that does
    /// not lead to the digest, `None`).
    Lied(Option<u64>),
    /// It closed the connection while this source had nothing asked of it (an uploader ends a
    /// range session that asks nothing for a while): nothing was lost.
    Idle,
    /// It closed the connection before answering what was asked.
    Closed,
    /// The connection failed, stalled or broke the protocol.
    Failed(String),
}

impl Outcome {
    /// The words for the line at the end (empty for a source that simply finished).
    pub(crate) fn describe(&self) -> String {
        match self {
            Outcome::Done => String::new(),
            Outcome::NotFound => "não tem o arquivo".into(),
            Outcome::Rejected(None) => "recusou (NAO)".into(),
            Outcome::Rejected(Some(why)) => {
                format!("recusou ({})", crate::peer::output::printable(why))
            }
            Outcome::Refused(why) => format!("erro: {}", crate::peer::output::printable(why)),
            Outcome::Legacy => "só envia o arquivo inteiro".into(),
            Outcome::OtherContent => "tem outro conteúdo com esse nome".into(),
            Outcome::Lied(_) => "enviou dados inválidos; descartada".into(),
            Outcome::Idle => "sem partes a buscar; o outro peer encerrou a sessão".into(),
            Outcome::Closed => format!("falhou: {CLOSED}"),
            Outcome::Failed(why) => format!("falhou: {}", crate::peer::output::printable(why)),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What a source thread reports when it ends.
pub(crate) struct SourceReport {
    pub id: SourceId,
    pub addr: SocketAddr,
    pub outcome: Outcome,
    /// Verified bytes it delivered first.
    pub bytes: u64,
    /// From its user's approval to its end.
    pub active: Duration,
}

/// Runs one source until the download no longer needs it.
pub(crate) fn run(swarm: &Swarm, id: SourceId, addr: SocketAddr) -> SourceReport {
    let mut source = Source {
        swarm,
        id,
        addr,
        bytes: 0,
        accepted: None,
    };
    let mut outcome = source.session();
    // Cut by the end of the download (complete, or another source's fatal error): not its
    // failure.
    if matches!(outcome, Outcome::Failed(_) | Outcome::Closed) && swarm.state.lock().over {
        outcome = Outcome::Done;
    }
    SourceReport {
        id,
        addr,
        outcome,
        bytes: source.bytes,
        active: source.accepted.map_or(Duration::ZERO, |t| t.elapsed()),
    }
}

struct Source<'a> {
    swarm: &'a Swarm,
    id: SourceId,
    addr: SocketAddr,
    bytes: u64,
    accepted: Option<Instant>,
}

/// A failure that ends this source.
type Ended = Outcome;

/// The connection's receiving side once the session starts: bytes already buffered, then the
/// socket.
type SessionInput<'s> = BufReader<io::Chain<Cursor<Vec<u8>>, &'s TcpStream>>;

impl Source<'_> {
    fn session(&mut self) -> Outcome {
        let ctx = &self.swarm.ctx;
        let stream = match crate::dial::connect_from(ctx.bind_ip, &self.addr, CONNECT_TIMEOUT) {
            Ok(stream) => stream,
            Err(e) => return Outcome::Failed(format!("não foi possível conectar: {e}")),
        };
        // Registered twice: QUIT cuts it (transfers), and so does the end of the download.
        let guard = ctx.transfers.start_source(&self.swarm.name, self.addr);
        ctx.transfers.attach(&guard, &stream);
        self.swarm.register(self.id, &stream);
        let _ = stream.set_nodelay(true);
        let _ = crate::liveness::set_liveness(&stream, ctx.liveness);
        match self.approved(&stream) {
            Ok((identity, input)) => self.fetch(&stream, &identity, input),
            Err(ended) => ended,
        }
    }

    /// Asks for a range session; returns the content and the stream positioned after the
    /// user's approval.
    fn approved<'s>(
        &mut self,
        stream: &'s TcpStream,
    ) -> Result<(Identity, SessionInput<'s>), Ended> {
        self.ask(stream)?;
        let mut reader = FrameReader::new(stream, 64 * 1024);
        reader.set_idle_timeout(Some(FIRST_REPLY_TIMEOUT));
        reader.set_message_timeout(Some(REPLY_COMPLETION_TIMEOUT));
        let offered = offered_content(next_reply(&mut reader)?)?;
        let identity = self
            .swarm
            .adopt(&offered)
            .map_err(|_| Outcome::OtherContent)?;
        reader.set_idle_timeout(Some(DECISION_TIMEOUT));
        accepted(next_reply(&mut reader)?)?;
        self.accepted = Some(Instant::now());
        self.swarm.went_live(self.id, self.addr);
        let early = reader
            .take_payload()
            .map_err(|e| Outcome::Failed(e.to_string()))?;
        if !early.is_empty() {
            return Err(Outcome::Failed(
                "enviou dados antes de qualquer pedido".into(),
            ));
        }
        let _ = stream.set_read_timeout(Some(STALL_TIMEOUT));
        let input = BufReader::with_capacity(64 * 1024, Cursor::new(early).chain(stream));
        Ok((identity, input))
    }

    /// Sends the request for a range session of the file (with the digest expected, once the
    /// swarm knows it).
    fn ask(&self, stream: &TcpStream) -> Result<(), Ended> {
        let expected = self.swarm.state.lock().identity.clone();
        let request = DownloadRequest {
            filename: self.swarm.name.clone(),
            port: self.addr.port(),
            offset: None,
            digest: expected.map(|e| e.digest),
            from_port: Some(self.swarm.ctx.port),
            ranges: Some(true),
            // Several sources saying what they wait for would be noise; each waits quietly.
            accepts_waiting: false,
            // A range session needs the digest before the data.
            digest_after_data: false,
            file_size: None,
            prefix_digest: None,
        };
        // Its own method: a peer that sends whole files only refuses it before its user is
        // asked (PROTOCOL.md R9).
        (&*stream)
            .write_all(&range_session_line(&request))
            .map_err(|e| Outcome::Failed(e.to_string()))
    }

    /// Gets the outboard (fetching it if nobody has), then fetches pieces until none is left.
    fn fetch(
        &mut self,
        stream: &TcpStream,
        identity: &Identity,
        mut input: impl BufRead,
    ) -> Outcome {
        let pieces = loop {
            match self.swarm.outboard_role() {
                OutboardRole::Over => return Outcome::Done,
                OutboardRole::Ready(pieces) => break pieces,
                OutboardRole::Fetch => match self.fetch_outboard(stream, identity, &mut input) {
                    Ok(()) => continue,
                    Err(ended) => {
                        self.swarm.outboard_failed();
                        return ended;
                    }
                },
            }
        };
        let mut asked: VecDeque<(usize, u64, u64)> = VecDeque::new();
        let outcome = self.fetch_pieces(stream, &pieces, &mut input, &mut asked);
        self.swarm
            .release(asked.iter().map(|(i, _, _)| *i), self.id);
        outcome
    }

    fn fetch_outboard(
        &mut self,
        stream: &TcpStream,
        identity: &Identity,
        input: &mut impl BufRead,
    ) -> Result<(), Ended> {
        send(stream, &ranges::outboard_line())?;
        let header = read_reply(input)?;
        let expected = verified::outboard_len(identity.size);
        if header.status != Status::Ok {
            return Err(Outcome::Refused(header.message.unwrap_or_default()));
        }
        if header.length != Some(expected) {
            return Err(Outcome::Failed(format!(
                "árvore de hashes de {:?} bytes, esperados {expected}",
                header.length
            )));
        }
        match prepare::from_source(self.swarm, identity, &mut input.take(expected)) {
            Ok((pieces, planner)) => {
                self.swarm.publish(pieces, planner);
                Ok(())
            }
            Err(Fetched::Lied) => Err(Outcome::Lied(None)),
            Err(Fetched::Read(e)) => Err(Outcome::Failed(e.to_string())),
            Err(Fetched::Fatal(error)) => {
                let why = error.to_string();
                self.swarm.fail(error);
                Err(Outcome::Failed(why))
            }
        }
    }

    fn fetch_pieces(
        &mut self,
        stream: &TcpStream,
        pieces: &Pieces,
        input: &mut impl BufRead,
        asked: &mut VecDeque<(usize, u64, u64)>,
    ) -> Outcome {
        let mut buf = Vec::with_capacity(PIECE_LEN as usize);
        // This source had nothing asked of its uploader, which may end an idle session (its
        // 60 s without a request): a close then, or in answer to the first request after it,
        // lost nothing and is no failure.
        let mut was_idle = false;
        loop {
            if let Some(ended) = self.ask_more(stream, asked, was_idle) {
                return ended;
            }
            let Some(&(i, offset, len)) = asked.front() else {
                was_idle = true;
                self.swarm.wait_for_change();
                if closed_by_other_side(stream) {
                    return Outcome::Idle;
                }
                continue;
            };
            match receive_piece(input, offset, len, &mut buf) {
                Ok(()) => was_idle = false,
                Err(Outcome::Closed) if was_idle => return Outcome::Idle,
                Err(ended) => return ended,
            }
            asked.pop_front();
            if self.swarm.is_done(i) {
                continue;
            }
            if let Err(ended) = self.keep_piece(pieces, i, offset, &buf) {
                return ended;
            }
            if self.swarm.delivered(i, self.id, len) {
                self.bytes += len;
            }
        }
    }

    /// Asks the uploader for pieces until [`PIPELINE`] are on their way or none is left to
    /// ask; `Some` when this source is done, or its session ended.
    fn ask_more(
        &mut self,
        stream: &TcpStream,
        asked: &mut VecDeque<(usize, u64, u64)>,
        was_idle: bool,
    ) -> Option<Outcome> {
        while asked.len() < PIPELINE {
            match self.swarm.next_piece(self.id) {
                Next::Piece(i, offset, len) => {
                    if was_idle && asked.is_empty() && closed_by_other_side(stream) {
                        self.swarm.release([i], self.id);
                        return Some(Outcome::Idle);
                    }
                    asked.push_back((i, offset, len));
                    if let Err(ended) = send(stream, &ranges::range_line(offset, len)) {
                        return Some(if was_idle { Outcome::Idle } else { ended });
                    }
                }
                Next::Wait => break,
                Next::Over if asked.is_empty() => return Some(Outcome::Done),
                Next::Over => break,
            }
        }
        None
    }

    /// Verifies piece `i` (at `offset`) against the outboard and writes it into the partial.
    /// A piece that does not match means the source lied; a disk that fails ends the swarm.
    /// Either way the piece goes back to be fetched elsewhere.
    fn keep_piece(
        &mut self,
        pieces: &Pieces,
        i: usize,
        offset: u64,
        buf: &[u8],
    ) -> Result<(), Outcome> {
        match verified::verify_piece(&pieces.outboard, offset, buf) {
            Ok(()) => {}
            Err(PieceError::BadGroup(at)) => {
                self.swarm.release([i], self.id);
                return Err(Outcome::Lied(Some(at)));
            }
            Err(e @ PieceError::BadOutboard) | Err(e @ PieceError::Io(_)) => {
                self.swarm.release([i], self.id);
                let why = e.to_string();
                self.swarm
                    .fail(SwarmError::Disk(io::Error::other(why.clone())));
                return Err(Outcome::Failed(why));
            }
        }
        if let Err(e) = pieces
            .part
            .as_file()
            .write_all_at(buf, offset)
            .and_then(|()| pieces.map.mark(i))
        {
            self.swarm.release([i], self.id);
            let why = e.to_string();
            self.swarm.fail(SwarmError::Disk(e));
            return Err(Outcome::Failed(why));
        }
        Ok(())
    }
}

/// Reads the reply to a RANGE and its bytes into `buf`.
fn receive_piece(
    input: &mut impl BufRead,
    offset: u64,
    len: u64,
    buf: &mut Vec<u8>,
) -> Result<(), Ended> {
    let header = read_reply(input)?;
    if header.status == Status::Error {
        return Err(Outcome::Refused(header.message.unwrap_or_default()));
    }
    if header.status != Status::Ok || header.offset != Some(offset) || header.length != Some(len) {
        return Err(Outcome::Failed(format!(
            "resposta a outra parte: {:?} {:?} {:?}",
            header.status.as_str(),
            header.offset,
            header.length
        )));
    }
    buf.resize(len as usize, 0);
    input
        .read_exact(buf)
        .map_err(|e| Outcome::Failed(network_words(&e)))
}

fn send(stream: &TcpStream, line: &[u8]) -> Result<(), Ended> {
    (&*stream)
        .write_all(line)
        .map_err(|e| Outcome::Failed(network_words(&e)))
}

/// What a source says of an uploader that closed the connection with a request unanswered.
pub(crate) const CLOSED: &str = "o peer fechou a conexão";

/// Reads one reply line of a range session.
fn read_reply(input: &mut impl BufRead) -> Result<Reply, Ended> {
    let mut line = Vec::new();
    match input.take(MAX_REPLY_LINE).read_until(b'\n', &mut line) {
        Ok(_) => {}
        Err(e) if line.is_empty() && closed(&e) => return Err(Outcome::Closed),
        Err(e) => return Err(Outcome::Failed(network_words(&e))),
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.is_empty() {
            Outcome::Closed
        } else {
            Outcome::Failed("resposta longa demais ou cortada".into())
        });
    }
    parse_reply(line.trim_ascii()).map_err(|e| Outcome::Failed(e.to_string()))
}

/// True for the errors of a connection the other side closed (a reset included: a close with
/// a request still unread is sent as one).
fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// True if the uploader has closed (or reset) the connection, as far as is known without
/// waiting: the end of the stream is next, with nothing before it.
fn closed_by_other_side(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // PEEK leaves any byte queued; DONTWAIT makes it return at once.
    match rustix::net::recv(stream, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok((0, _)) => true,
        Ok(_) => false,
        Err(e) => closed(&io::Error::from(e)),
    }
}

fn network_words(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("nada recebido em {} s", STALL_TIMEOUT.as_secs())
        }
        io::ErrorKind::UnexpectedEof => CLOSED.into(),
        _ => e.to_string(),
    }
}

fn next_reply(reader: &mut FrameReader<&TcpStream>) -> Result<Reply, Ended> {
    match reader.next_frame() {
        Ok(Some(frame)) => parse_reply(frame).map_err(|e| Outcome::Failed(e.to_string())),
        Ok(None) => Err(Outcome::Failed(
            "o peer fechou a conexão antes de responder".into(),
        )),
        Err(CodecError::Timeout) => Err(Outcome::Failed("o peer não respondeu a tempo".into())),
        Err(e) => Err(Outcome::Failed(e.to_string())),
    }
}

/// The content a source's first reply offers for a range session: its size and digest, in
/// chunk groups of our size and in pieces no smaller than ours. A peer that sends whole files
/// only, or an older one, is `Legacy`.
fn offered_content(first: Reply) -> Result<Identity, Ended> {
    match &first.status {
        Status::Ok => {}
        Status::FileNotFound => return Err(Outcome::NotFound),
        Status::Error => {
            let message = first.message.unwrap_or_default();
            if message.starts_with(UNKNOWN_METHOD) {
                return Err(Outcome::Legacy);
            }
            return Err(Outcome::Refused(message));
        }
        other => return Err(Outcome::Failed(format!("status {:?}", other.as_str()))),
    }
    let (Some(size), Some(digest)) = (first.file_size, first.digest) else {
        return Err(Outcome::Legacy);
    };
    match first.chunk_group {
        None => return Err(Outcome::Legacy),
        Some(CHUNK_GROUP) => {}
        Some(other) => {
            return Err(Outcome::Failed(format!(
                "grupos de {other} bytes não são suportados"
            )));
        }
    }
    if first.max_range.is_some_and(|max| max < PIECE_LEN) {
        return Err(Outcome::Failed("aceita só partes pequenas demais".into()));
    }
    Ok(Identity { size, digest })
}

/// The source's user's decision: on to the data if accepted.
fn accepted(decision: Reply) -> Result<(), Ended> {
    match &decision.status {
        Status::DownloadAccepted => Ok(()),
        Status::DownloadRejected => Err(Outcome::Rejected(decision.reason)),
        other => Err(Outcome::Failed(format!("status {:?}", other.as_str()))),
    }
}
