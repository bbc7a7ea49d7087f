//! Serving other peers' downloads: one thread per request, each approved by this peer's user.
//!
//! The request is checked before anything is opened: only a plain name directly in the shared
//! folder is served (no separators, no `..`, no links). The reply gives the size and the file's
//! digest; the user's answer comes over the approval channel; the bytes go out with
//! `sendfile`, streamed, from the requested offset when resuming.
//!
//! A request without `fromPort` comes from the Python original's downloader, which reads each
//! reply with one `recv` and the file with one more: its replies are spaced and a small file
//! goes in one write (see [`crate::protocol::legacy`]).
//!
//! One host cannot deny service to others: connections are capped in all and per host, a
//! request must arrive whole within a deadline that trickled bytes do not extend, an upload in
//! progress must keep a minimum rate ([`MinRate`]), and a flood of refusals or failed accepts
//! costs a few log lines, not one each.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use crossbeam_channel::bounded;

use crate::accept::{self, Refusal, Slots};
use crate::digests::FileIdentity;
use crate::peer::PeerContext;
use crate::peer::approval::{ApprovalRequest, Decision};
use crate::peer::deadline::Deadline;
use crate::peer::output::log_prefix;
use crate::peer::progress::Progress;
use crate::peer::range_server;
use crate::peer::running::{Ending, MinRate, TransferGuard};
use crate::protocol::FrameReader;
use crate::protocol::legacy::{self, ReplyPacer};
use crate::protocol::messages::{
    DownloadRequest, Reply, Status, parse_digest_mismatch, parse_download_request, waiting_for,
};
use crate::protocol::ranges;
use crate::throttle::Throttle;
use crate::transfer::{self, DigestHex};
use crate::verified::CHUNK_GROUP;
use crate::warn_throttled;

/// The largest DOWNLOAD_REQUEST accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// A downloader that accepts no data for this long is given up (it can resume later).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections refused over a cap: a few lines per 10 s.
static CAP_WARNINGS: Throttle = Throttle::new(3, Duration::from_secs(10));
/// Requests for unsafe names: a few lines per 10 s.
static NAME_WARNINGS: Throttle = Throttle::new(3, Duration::from_secs(10));

/// Accepts upload connections until the peer stops, one thread each (see [`accept`]).
pub fn serve(listener: TcpListener, ctx: Arc<PeerContext>) {
    let slots = Slots::new(MAX_UPLOAD_CONNECTIONS);
    let served = accept::serve(
        listener,
        ctx.transfers.accepting(),
        "upload",
        |stream, remote| {
            // A connection accepted just before the signal: not served either.
            if ctx.transfers.stopping() {
                return ControlFlow::Break(());
            }
            hand_off(&slots, &ctx, stream, remote);
            ControlFlow::Continue(())
        },
    );
    if let Err(e) = served {
        log::error!("cannot serve uploads: {e}");
    }
}

/// Starts a thread serving `stream`, if its host has room: a flood of connections must not
/// cost a thread (and a console line) each, nor one host's connections keep every other out.
fn hand_off(slots: &Arc<Slots>, ctx: &Arc<PeerContext>, stream: TcpStream, remote: SocketAddr) {
    let host = remote.ip().to_canonical();
    let share = if from_this_machine(&stream) {
        MAX_UPLOAD_CONNECTIONS_FROM_THIS_MACHINE
    } else {
        MAX_UPLOAD_CONNECTIONS_PER_HOST
    };
    let slot = match slots.take(host, share) {
        Ok(slot) => slot,
        Err(refusal) => {
            warn_throttled!(
                CAP_WARNINGS,
                "refusing an upload connection from {host}: {refusal}"
            );
            let _ = reply(&stream, &Reply::error(refusal_message(refusal)));
            return;
        }
    };
    let ctx = Arc::clone(ctx);
    let spawned = thread::Builder::new()
        .name("upload".into())
        .stack_size(UPLOAD_THREAD_STACK)
        .spawn(move || {
            let _slot = slot;
            serve_one(stream, &ctx);
        });
    if let Err(e) = spawned {
        log::error!("cannot start an upload thread: {e}");
    }
}

/// The ERROR message for a downloader refused a connection.
fn refusal_message(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Full(_) => "this peer is serving too many requests; try again later",
        Refusal::HostFull(_) => {
            "this peer is serving too many requests from your host; try again later"
        }
    }
}

/// Added to the user's time to answer in the `waiting` reply: the answer still has to reach
/// this thread and be written.
const DECISION_MARGIN: Duration = Duration::from_secs(10);
/// The slowest hashing rate assumed when telling a downloader how long hashing may take (a
/// slow disk; BLAKE3 itself is far faster), in bytes per second.
const SLOWEST_HASHING: u64 = 50 << 20;

/// How long hashing `size` bytes may take, at most (see [`SLOWEST_HASHING`]).
fn hashing_bound(size: u64) -> Duration {
    Duration::from_secs(10 + size / SLOWEST_HASHING)
}

/// Upload connections served at once; more are answered with an ERROR and closed.
pub const MAX_UPLOAD_CONNECTIONS: usize = 64;
/// Upload connections from one other host (IP address) at once: no host keeps the others out.
pub const MAX_UPLOAD_CONNECTIONS_PER_HOST: usize = 8;
/// Upload connections from this very machine at once: all but one other host's share. Peers
/// on one machine share its address, and a classroom demo runs many of them, all downloading
/// from one peer at once; they are this machine's users, not a remote host to keep in check.
pub const MAX_UPLOAD_CONNECTIONS_FROM_THIS_MACHINE: usize =
    MAX_UPLOAD_CONNECTIONS - MAX_UPLOAD_CONNECTIONS_PER_HOST;
/// Stack of an upload thread: it parses one small request and streams with `sendfile`.
const UPLOAD_THREAD_STACK: usize = 256 * 1024;

/// True when `stream` comes from this very machine: its two ends have one address (loopback,
/// or a machine dialling its own address, which the kernel routes over loopback with that
/// address as the source). No remote host can open such a connection: the kernel drops
/// packets from outside that claim one of this machine's addresses as their source.
pub fn from_this_machine(stream: &TcpStream) -> bool {
    match (stream.peer_addr(), stream.local_addr()) {
        (Ok(peer), Ok(local)) => peer.ip().to_canonical() == local.ip().to_canonical(),
        _ => false,
    }
}

/// Opens a shared file for reading without following a link and without blocking on a FIFO
/// (the name was checked to be a regular file, but it may have been swapped since).
fn open_regular(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(std::io::Error::other("not a regular file"))
    }
}

/// Computes the digest of every shared file into the cache (in the background, at start and
/// when new files appear), telling the catalog each one so it is announced.
pub fn hash_shared_files(ctx: &PeerContext) {
    let names = match ctx.shared.list() {
        Ok(names) => names,
        Err(e) => {
            log::warn!("cannot list the shared folder: {e}");
            return;
        }
    };
    ctx.digests.prune(&names);
    for name in names {
        if ctx.transfers.stopping() {
            return;
        }
        let Ok(Some((path, _))) = ctx.shared.shared_file(&name) else {
            continue;
        };
        let hashed = File::open(&path).and_then(|file| {
            let digest = ctx
                .digests
                .digest(&path, &file, ctx.transfers.shutdown_flag())?;
            // Taken after hashing: a file changed meanwhile is not the version listed.
            let identity = FileIdentity::of(&file.metadata()?);
            Ok((identity, digest))
        });
        match hashed {
            Ok((identity, digest)) => {
                log::debug!("{name}: BLAKE3 {digest}");
                ctx.catalog.digest_known(&name, identity, &digest);
            }
            Err(e) => log::warn!("cannot hash {}: {e}", path.display()),
        }
    }
}

fn reply(stream: &TcpStream, reply: &Reply) -> std::io::Result<()> {
    // Each reply in its own write: the original's downloader parses one `recv` as one reply.
    (&*stream).write_all(&reply.to_line())
}

/// Serves one download request: read it, find the file, offer it, ask this peer's user, and
/// send it (or serve its ranges).
fn serve_one(stream: TcpStream, ctx: &PeerContext) {
    let Ok(remote) = stream.peer_addr() else {
        return;
    };
    prepare_connection(&stream, remote, ctx.liveness);
    let mut reader = request_reader(&stream, ctx.liveness);
    let Some(request) = read_request(&stream, &mut reader, remote) else {
        return;
    };
    // What is known: the connection's address. The downloader's upload port is only claimed.
    let from = SocketAddr::new(remote.ip().to_canonical(), remote.port());
    let upload = Upload {
        ctx,
        stream: &stream,
        request,
        from,
    };
    let Some(offer) = upload.find_offer() else {
        return;
    };
    // The original's downloader parses each `recv` as one reply: space the writes for it.
    let mut pacer = ReplyPacer::new(upload.request.from_port.is_some());
    if upload.send_offer(&offer, &mut pacer).is_err() {
        return;
    }
    let decision = upload.ask_user(&offer);
    if decision != Decision::Accept {
        upload.refuse(decision, &mut pacer);
        return;
    }
    let guard = ctx.transfers.start_upload(&upload.request.filename, from);
    ctx.transfers.attach(&guard, &stream);
    pacer.before_write();
    if reply(&stream, &Reply::status(Status::DownloadAccepted)).is_err() {
        return;
    }
    pacer.wrote();
    if let Some(outboard) = &offer.outboard {
        upload.serve_ranges(&offer, outboard, &mut reader, guard.stop_flag());
        return;
    }
    pacer.before_write();
    let rate = MinRate::for_liveness(ctx.liveness);
    ctx.transfers.watch(&guard, rate);
    let sent = upload.send_file(&offer, pacer.is_pacing(), guard.stop_flag());
    upload.tell_outcome(&offer, sent, &guard, rate, &mut reader);
}

/// Keeps a vanished or stalled downloader from holding the upload's thread.
fn prepare_connection(stream: &TcpStream, remote: SocketAddr, liveness: Duration) {
    let _ = stream.set_nodelay(true);
    // A downloader whose host vanishes, or that stops reading, must not hold this thread
    // (without it a write blocks until the kernel gives up retransmitting, ~15 minutes).
    if let Err(e) = crate::liveness::set_liveness(stream, liveness) {
        log::debug!("{remote}: cannot set keepalive: {e}");
    }
    let _ = stream.set_write_timeout(Some(STALL_TIMEOUT));
}

/// The connection's reader, held to the liveness bound for the whole request.
fn request_reader(stream: &TcpStream, liveness: Duration) -> FrameReader<Deadline<'_>> {
    // The whole request within the liveness bound, from the connection's start: bytes that are
    // not a request (a newline every few seconds) do not extend it.
    let mut reader = FrameReader::new(Deadline::new(stream), MAX_REQUEST);
    reader.get_mut().expire_in(liveness);
    reader.set_message_timeout(Some(liveness));
    reader.set_idle_timeout(Some(liveness));
    reader
}

/// The connection's request; `None` when it closed first or sent something else (answered
/// ERROR).
fn read_request(
    stream: &TcpStream,
    reader: &mut FrameReader<Deadline<'_>>,
    remote: SocketAddr,
) -> Option<DownloadRequest> {
    let request = match reader.next_frame() {
        Ok(Some(frame)) => parse_download_request(frame).map_err(|e| e.to_string()),
        Ok(None) => return None,
        Err(e) => Err(e.to_string()),
    };
    match request {
        Ok(request) => Some(request),
        Err(message) => {
            log::debug!(
                "upload request from {remote} refused: {}",
                log_prefix(&message)
            );
            let _ = reply(stream, &Reply::error(message));
            None
        }
    }
}

/// One download request being served.
struct Upload<'a> {
    ctx: &'a PeerContext,
    stream: &'a TcpStream,
    request: DownloadRequest,
    /// The downloader's connection address.
    from: SocketAddr,
}

/// The requested file, opened, and what the OK reply says of it.
struct Offer {
    path: PathBuf,
    file: File,
    size: u64,
    /// `None`: the digest follows the data (D14).
    digest: Option<DigestHex>,
    /// Set for a range session.
    outboard: Option<File>,
    /// Where the data starts (a resume).
    offset: u64,
}

/// The downloader has been told why its request is not served; nothing more to do.
struct Answered;

impl Upload<'_> {
    /// The file to offer; `None` after telling the downloader why not (an unsafe name, a file
    /// not shared or unreadable, ranges that cannot be served now).
    fn find_offer(&self) -> Option<Offer> {
        let (path, file) = self.open_requested()?;
        let (size, digest) = match answer_digest(self.ctx, self.stream, &path, &file, &self.request)
        {
            Ok(found) => found,
            Err(e) => return self.unreadable(&path, e),
        };
        let outboard = self.range_outboard(&path, &file, digest.as_ref()).ok()?;
        let resumed = match outboard {
            Some(_) => Ok(0),
            None => resume_offset(
                self.ctx,
                self.stream,
                &file,
                &self.request,
                size,
                digest.as_deref(),
            ),
        };
        let offset = match resumed {
            Ok(offset) => offset,
            Err(e) => return self.unreadable(&path, e),
        };
        Some(Offer {
            path,
            file,
            size,
            digest,
            outboard,
            offset,
        })
    }

    /// The requested file, opened; `None` after telling the downloader that the name is unsafe
    /// or not shared.
    fn open_requested(&self) -> Option<(PathBuf, File)> {
        let from = self.from;
        let found = match self.ctx.shared.shared_file(&self.request.filename) {
            Ok(found) => found,
            Err(e) => {
                warn_throttled!(
                    NAME_WARNINGS,
                    "{from} asked for an unsafe name {}: {e}",
                    log_prefix(&self.request.filename)
                );
                let _ = reply(
                    self.stream,
                    &Reply::error(format!("DOWNLOAD_REQUEST refused: {e}")),
                );
                return None;
            }
        };
        let opened = found.and_then(|(path, _)| open_regular(&path).ok().map(|f| (path, f)));
        if opened.is_none() {
            log::debug!(
                "{from} asked for {}, which is not shared",
                log_prefix(&self.request.filename)
            );
            let _ = reply(self.stream, &Reply::status(Status::FileNotFound));
        }
        opened
    }

    /// A shared file that cannot be read is, to the downloader, not found.
    fn unreadable<T>(&self, path: &Path, e: io::Error) -> Option<T> {
        log::warn!("cannot read {}: {e}", path.display());
        let _ = reply(self.stream, &Reply::status(Status::FileNotFound));
        None
    }

    /// A range session needs the file's outboard, kept beside its digest (the read that gave
    /// the digest wrote it), before the OK that offers it (a range request always gets the
    /// digest before the data). `Ok(None)` for a whole-file request.
    fn range_outboard(
        &self,
        path: &Path,
        file: &File,
        digest: Option<&DigestHex>,
    ) -> Result<Option<File>, Answered> {
        let (Some(digest), true) = (digest, self.request.ranges == Some(true)) else {
            return Ok(None);
        };
        match self
            .ctx
            .digests
            .outboard(path, file, self.ctx.transfers.shutdown_flag())
        {
            Ok((of, outboard)) if of == *digest => Ok(Some(outboard)),
            found => {
                let why = match found {
                    Ok(_) => "the file changed since it was hashed".to_string(),
                    Err(e) => e.to_string(),
                };
                log::warn!("no outboard for {}: {why}", path.display());
                let _ = reply(
                    self.stream,
                    &Reply::error(format!("cannot serve ranges of this file now: {why}")),
                );
                Err(Answered)
            }
        }
    }

    /// The OK reply, and a word that the user's decision may take a while.
    fn send_offer(&self, offer: &Offer, pacer: &mut ReplyPacer) -> io::Result<()> {
        let ranges = offer.outboard.is_some();
        let ok = Reply {
            status: Status::Ok,
            file_size: Some(offer.size),
            digest: offer.digest.clone(),
            offset: Some(offer.offset),
            digest_after_data: offer.digest.is_none().then_some(true),
            chunk_group: ranges.then_some(CHUNK_GROUP),
            max_range: ranges.then_some(ranges::MAX_RANGE),
            ..Reply::default()
        };
        reply(self.stream, &ok)?;
        pacer.wrote();
        if self.request.accepts_waiting
            && let Some(within) = self.ctx.asks_within
        {
            let _ = reply(
                self.stream,
                &Reply::waiting(waiting_for::APPROVAL, within + DECISION_MARGIN),
            );
        }
        Ok(())
    }

    /// This peer's user's decision, over the approval channel (a peer that is leaving refuses).
    fn ask_user(&self, offer: &Offer) -> Decision {
        let (tx, rx) = bounded(1);
        let asked = ApprovalRequest {
            from: self.from,
            from_this_machine: from_this_machine(self.stream),
            claimed_port: self.request.from_port,
            filename: self.request.filename.clone(),
            size: offer.size,
            offset: offer.offset,
            reply: tx,
        };
        if self.ctx.approvals.send(asked).is_ok() {
            rx.recv().unwrap_or(Decision::ShuttingDown)
        } else {
            Decision::ShuttingDown
        }
    }

    /// Tells the downloader its request was refused, and why when it was not a plain NAO.
    fn refuse(&self, decision: Decision, pacer: &mut ReplyPacer) {
        let rejected = Reply {
            status: Status::DownloadRejected,
            reason: decision.reason().map(str::to_string),
            ..Reply::default()
        };
        pacer.before_write();
        let _ = reply(self.stream, &rejected);
    }

    /// Serves the ranges a swarm source asks for until it is done.
    fn serve_ranges(
        &self,
        offer: &Offer,
        outboard: &File,
        reader: &mut FrameReader<Deadline<'_>>,
        stop: &AtomicBool,
    ) {
        let session = range_server::SessionFile {
            file: &offer.file,
            size: offer.size,
            outboard,
        };
        // The session's requests have their own limits (idle, per request); a swarm source
        // may rightly wait between ranges, so it is not held to the minimum rate either.
        reader.get_mut().set(None);
        range_server::serve_session(
            self.ctx,
            self.stream,
            reader,
            &self.request.filename,
            self.from,
            &session,
            stop,
        );
    }

    /// Sends the file from the offset under a progress bar: in one write to the original's
    /// downloader when it is small, hashing as it goes when the digest follows the data, else
    /// with `sendfile`.
    fn send_file(&self, offer: &Offer, pacing: bool, stop: &AtomicBool) -> io::Result<()> {
        let (file, size, offset) = (&offer.file, offer.size, offer.offset);
        let label = format!("Upload de {} para {}", self.request.filename, self.from);
        let mut progress = Progress::new(Arc::clone(&self.ctx.out), label, size, offset);
        let sent = if pacing && size - offset <= legacy::ONE_WRITE_MAX {
            send_in_one_write(file, offset, size - offset, self.stream)
        } else if offer.digest.is_none() {
            send_then_digest(
                self.ctx,
                &offer.path,
                file,
                size,
                self.stream,
                stop,
                &mut progress,
            )
        } else {
            transfer::send_range(
                file,
                offset,
                size - offset,
                self.stream,
                stop,
                &mut |sent| progress.update(offset + sent),
            )
        };
        // The caller's line takes the place of the bar.
        drop(progress);
        sent
    }

    /// Tells the user how the upload ended; after a whole file sent to one of our downloaders,
    /// waits for its report of a digest mismatch.
    fn tell_outcome(
        &self,
        offer: &Offer,
        sent: io::Result<()>,
        guard: &TransferGuard<'_>,
        rate: MinRate,
        reader: &mut FrameReader<Deadline<'_>>,
    ) {
        let (name, from, size) = (&self.request.filename, self.from, offer.size);
        match sent {
            Ok(()) => {
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
                log::info!("sent {name} ({size} bytes) to {from}");
                self.ctx
                    .out
                    .line(&format!("Upload do arquivo {name} para {from} concluído"));
                if self.request.from_port.is_some() {
                    await_mismatch_report(self.ctx, reader, &offer.path, name, from);
                }
            }
            Err(e) => {
                log::debug!("upload of {name} to {from} failed: {e}");
                let why = match guard.ending() {
                    Ending::Cancelled => "cancelado".to_string(),
                    Ending::TooSlow => format!("o peer recebeu {rate}"),
                    Ending::Stopped => "este peer está encerrando".to_string(),
                    Ending::Running if crate::os_error::closed_by_other_side(&e) => {
                        "o outro peer encerrou".to_string()
                    }
                    Ending::Running => crate::os_error::describe(&e),
                };
                self.ctx.out.line(&format!(
                    "Upload do arquivo {name} para {from} interrompido: {why}"
                ));
            }
        }
    }
}

/// The file's size, and its digest if the OK reply must carry it: always, unless the
/// downloader takes the digest after the data (D12), the digest is not known yet, and the
/// request is not a resume (whose digest must be compared before the first byte).
fn answer_digest(
    ctx: &PeerContext,
    stream: &TcpStream,
    path: &Path,
    file: &File,
    request: &DownloadRequest,
) -> io::Result<(u64, Option<DigestHex>)> {
    let size = file.metadata()?.len();
    let known = ctx.digests.known(path, file)?;
    let resuming = request.offset.is_some_and(|offset| offset > 0)
        && (request.digest.is_some() || request.prefix_digest.is_some());
    if known.is_none() && request.digest_after_data && !resuming && request.ranges != Some(true) {
        return Ok((size, None));
    }
    if request.accepts_waiting {
        // The OK carries the digest, and hashing a large file not hashed yet takes a while:
        // say so (D11), so the downloader's first-reply timeout can stay short.
        let _ = reply(
            stream,
            &Reply::waiting(waiting_for::DIGEST, hashing_bound(size)),
        );
    }
    let digest = match known {
        Some(digest) => digest,
        None => ctx
            .digests
            .digest(path, file, ctx.transfers.shutdown_flag())?,
    };
    Ok((size, Some(digest)))
}

/// Where the data starts (D6): resume only a download of this very file and within it — the
/// same digest, or, for a partial whose digest is not known, the same size and the same first
/// `offset` bytes (BLAKE3 of the prefix).
fn resume_offset(
    ctx: &PeerContext,
    stream: &TcpStream,
    file: &File,
    request: &DownloadRequest,
    size: u64,
    digest: Option<&str>,
) -> io::Result<u64> {
    let Some(offset) = request
        .offset
        .filter(|&offset| offset > 0 && offset <= size)
    else {
        return Ok(0);
    };
    if let Some(wanted) = &request.digest {
        return Ok(if Some(wanted.as_str()) == digest {
            offset
        } else {
            0
        });
    }
    let (Some(prefix), Some(file_size)) = (&request.prefix_digest, request.file_size) else {
        return Ok(0);
    };
    if file_size != size {
        return Ok(0);
    }
    if request.accepts_waiting {
        let _ = reply(
            stream,
            &Reply::waiting(waiting_for::DIGEST, hashing_bound(offset)),
        );
    }
    let mut hasher = blake3::Hasher::new();
    transfer::hash_range(file, 0, offset, &mut hasher, ctx.transfers.shutdown_flag())?;
    let same = hasher.finalize().to_hex().as_str() == prefix.as_str();
    Ok(if same { offset } else { 0 })
}

/// Sends the whole file while another thread hashes it, then the digest (D12). Hashing reads
/// the file from the page cache beside `sendfile`, on the other core; the digest is kept for
/// the next request even if this transfer fails.
fn send_then_digest(
    ctx: &PeerContext,
    path: &Path,
    file: &File,
    size: u64,
    stream: &TcpStream,
    stop: &AtomicBool,
    progress: &mut Progress,
) -> io::Result<()> {
    let (sent, hashed) = thread::scope(|scope| {
        // Stopped only by the peer leaving: a digest finished after a cancelled transfer is
        // kept for the next request.
        let hashing = thread::Builder::new()
            .name("upload-hash".into())
            .spawn_scoped(scope, || {
                ctx.digests
                    .digest(path, file, ctx.transfers.shutdown_flag())
            });
        let sent = transfer::send_range(file, 0, size, stream, stop, &mut |sent| {
            progress.update(sent)
        });
        let hashed = match hashing {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the hashing thread panicked"))),
            Err(e) => Err(e),
        };
        (sent, hashed)
    });
    let digest = hashed?;
    announce_digest(ctx, path, file, &digest);
    sent?;
    let trailer = Reply {
        status: Status::Digest,
        digest: Some(digest),
        ..Reply::default()
    };
    reply(stream, &trailer)
}

/// How long an uploader waits, after the data, for a downloader's DIGEST_MISMATCH report.
const MISMATCH_REPORT_WAIT: Duration = Duration::from_secs(30);

/// Waits (briefly) for the downloader to close or to report that the bytes did not match
/// (D13); a report makes this peer forget the file's digest and hash it again.
fn await_mismatch_report(
    ctx: &PeerContext,
    reader: &mut FrameReader<Deadline<'_>>,
    path: &Path,
    name: &str,
    from: SocketAddr,
) {
    reader.get_mut().expire_in(MISMATCH_REPORT_WAIT);
    reader.set_idle_timeout(Some(MISMATCH_REPORT_WAIT));
    let report = match reader.next_frame() {
        Ok(Some(frame)) => parse_digest_mismatch(frame),
        Ok(None) | Err(_) => return,
    };
    match report {
        Ok(report) if report.filename == name => {
            log::warn!("{from} reports that {name} arrived with another digest; hashing it again");
            ctx.out.line(&format!(
                "O peer {from} informou que {name} chegou diferente do BLAKE3 anunciado; o arquivo será verificado de novo"
            ));
            ctx.digests.forget(path);
            rehash(ctx, path);
        }
        Ok(report) => log::debug!(
            "{from} reported a mismatch for {:?} after downloading {name}; ignored",
            report.filename
        ),
        Err(e) => log::debug!("{from} sent something else after the data: {e}"),
    }
}

/// Hashes `path` again now (on the upload thread, which has nothing left to do), so that the
/// next request finds the new digest.
fn rehash(ctx: &PeerContext, path: &Path) {
    let hashed = open_regular(path).and_then(|file| {
        let digest = ctx
            .digests
            .digest(path, &file, ctx.transfers.shutdown_flag())?;
        Ok((file, digest))
    });
    match hashed {
        Ok((file, digest)) => {
            log::info!("{}: BLAKE3 {digest}", path.display());
            announce_digest(ctx, path, &file, &digest);
        }
        Err(e) => log::warn!("cannot hash {}: {e}", path.display()),
    }
}

/// Tells the catalog (and so, in its next batch, the tracker) a digest learned while serving
/// `file`, for the version of it open now.
fn announce_digest(ctx: &PeerContext, path: &Path, file: &File, digest: &str) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    match file.metadata() {
        Ok(meta) => ctx
            .catalog
            .digest_known(name, FileIdentity::of(&meta), digest),
        Err(e) => log::debug!("{}: cannot stat after hashing: {e}", path.display()),
    }
}

/// Sends a small file to the original's downloader in one write. It takes the file with a
/// single `recv(fileSize)`, which returns what has landed when it runs: one write of at most
/// [`legacy::ONE_WRITE_MAX`] bytes puts the whole file on the wire at once, one or two
/// segments back to back (measured with a Python reader on loopback: streamed, a 60,000-byte
/// file arrived whole in 17 of 20 tries, 2 of 10 under heavier load; in one write, 20 of 20;
/// what can and cannot be promised is said at [`legacy::ONE_WRITE_MAX`]).
fn send_in_one_write(file: &File, offset: u64, len: u64, stream: &TcpStream) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(len as usize);
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    reader.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the file shrank while being sent ({} of {len} bytes)",
                bytes.len()
            ),
        ));
    }
    (&*stream).write_all(&bytes)
}
