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
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use crossbeam_channel::bounded;

use crate::accept::{self, Refusal, Shutdown, Slots};
use crate::digests::FileIdentity;
use crate::peer::PeerContext;
use crate::peer::approval::{ApprovalRequest, Decision};
use crate::peer::deadline::Deadline;
use crate::peer::output::log_prefix;
use crate::peer::progress::Progress;
use crate::peer::range_server;
use crate::peer::transfers::{Ending, MinRate};
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
    let served = accept::serve(listener, &Shutdown::new(), "upload", |stream, remote| {
        if ctx.transfers.stopping() {
            return ControlFlow::Break(());
        }
        hand_off(&slots, &ctx, stream, remote);
        ControlFlow::Continue(())
    });
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

/// Serves one download request.
fn serve_one(stream: TcpStream, ctx: &PeerContext) {
    let Ok(remote) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    // A downloader whose host vanishes, or that stops reading, must not hold this thread
    // (without it a write blocks until the kernel gives up retransmitting, ~15 minutes).
    if let Err(e) = crate::liveness::set_liveness(&stream, ctx.liveness) {
        log::debug!("{remote}: cannot set keepalive: {e}");
    }
    let _ = stream.set_write_timeout(Some(STALL_TIMEOUT));
    // The whole request within the liveness bound, from the connection's start: bytes that are
    // not a request (a newline every few seconds) do not extend it.
    let request_time = ctx.liveness;
    let mut reader = FrameReader::new(Deadline::new(&stream), MAX_REQUEST);
    reader.get_mut().expire_in(request_time);
    reader.set_message_timeout(Some(request_time));
    reader.set_idle_timeout(Some(request_time));
    let request = match reader.next_frame() {
        Ok(Some(frame)) => parse_download_request(frame).map_err(|e| e.to_string()),
        Ok(None) => return,
        Err(e) => Err(e.to_string()),
    };
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            log::debug!(
                "upload request from {remote} refused: {}",
                log_prefix(&message)
            );
            let _ = reply(&stream, &Reply::error(message));
            return;
        }
    };
    // What is known: the connection's address. The downloader's upload port is only claimed.
    let from = SocketAddr::new(remote.ip().to_canonical(), remote.port());
    let found = match ctx.shared.shared_file(&request.filename) {
        Ok(found) => found,
        Err(e) => {
            warn_throttled!(
                NAME_WARNINGS,
                "{from} asked for an unsafe name {}: {e}",
                log_prefix(&request.filename)
            );
            let _ = reply(
                &stream,
                &Reply::error(format!("DOWNLOAD_REQUEST refused: {e}")),
            );
            return;
        }
    };
    let opened = found.and_then(|(path, _)| open_regular(&path).ok().map(|f| (path, f)));
    let Some((path, file)) = opened else {
        log::debug!(
            "{from} asked for {}, which is not shared",
            log_prefix(&request.filename)
        );
        let _ = reply(&stream, &Reply::status(Status::FileNotFound));
        return;
    };
    let (size, digest) = match answer_digest(ctx, &stream, &path, &file, &request) {
        Ok(found) => found,
        Err(e) => {
            log::warn!("cannot read {}: {e}", path.display());
            let _ = reply(&stream, &Reply::status(Status::FileNotFound));
            return;
        }
    };
    // A range session needs the file's outboard, kept beside its digest (the read that gave
    // the digest wrote it), before the OK that offers it (a range request always gets the
    // digest before the data).
    let outboard = match (&digest, request.ranges == Some(true)) {
        (Some(digest), true) => {
            match ctx
                .digests
                .outboard(&path, &file, ctx.transfers.shutdown_flag())
            {
                Ok((of, outboard)) if of == *digest => Some(outboard),
                found => {
                    let why = match found {
                        Ok(_) => "the file changed since it was hashed".to_string(),
                        Err(e) => e.to_string(),
                    };
                    log::warn!("no outboard for {}: {why}", path.display());
                    let _ = reply(
                        &stream,
                        &Reply::error(format!("cannot serve ranges of this file now: {why}")),
                    );
                    return;
                }
            }
        }
        _ => None,
    };
    let resumed = match outboard {
        Some(_) => Ok(0),
        None => resume_offset(ctx, &stream, &file, &request, size, digest.as_deref()),
    };
    let offset = match resumed {
        Ok(offset) => offset,
        Err(e) => {
            log::warn!("cannot read {}: {e}", path.display());
            let _ = reply(&stream, &Reply::status(Status::FileNotFound));
            return;
        }
    };
    let digest_after_data = digest.is_none();
    let ok = Reply {
        status: Status::Ok,
        file_size: Some(size),
        digest,
        offset: Some(offset),
        digest_after_data: digest_after_data.then_some(true),
        chunk_group: outboard.as_ref().map(|_| CHUNK_GROUP),
        max_range: outboard.as_ref().map(|_| ranges::MAX_RANGE),
        ..Reply::default()
    };
    // The original's downloader parses each `recv` as one reply: space the writes for it.
    let mut pacer = ReplyPacer::new(request.from_port.is_some());
    if reply(&stream, &ok).is_err() {
        return;
    }
    pacer.wrote();
    if request.accepts_waiting
        && let Some(within) = ctx.asks_within
    {
        let _ = reply(
            &stream,
            &Reply::waiting(waiting_for::APPROVAL, within + DECISION_MARGIN),
        );
    }
    let (tx, rx) = bounded(1);
    let asked = ApprovalRequest {
        from,
        from_this_machine: from_this_machine(&stream),
        claimed_port: request.from_port,
        filename: request.filename.clone(),
        size,
        offset,
        reply: tx,
    };
    let decision = if ctx.approvals.send(asked).is_ok() {
        rx.recv().unwrap_or(Decision::ShuttingDown)
    } else {
        Decision::ShuttingDown
    };
    if decision != Decision::Accept {
        let rejected = Reply {
            status: Status::DownloadRejected,
            reason: decision.reason().map(str::to_string),
            ..Reply::default()
        };
        pacer.before_write();
        let _ = reply(&stream, &rejected);
        return;
    }
    let guard = ctx.transfers.start_upload(&request.filename, from);
    ctx.transfers.attach(&guard, &stream);
    pacer.before_write();
    if reply(&stream, &Reply::status(Status::DownloadAccepted)).is_err() {
        return;
    }
    pacer.wrote();
    if let Some(outboard) = outboard {
        let session = range_server::SessionFile {
            file: &file,
            size,
            outboard: &outboard,
        };
        // The session's requests have their own limits (idle, per request); a swarm source
        // may rightly wait between ranges, so it is not held to the minimum rate either.
        reader.get_mut().set(None);
        range_server::serve_session(
            ctx,
            &stream,
            &mut reader,
            &request.filename,
            from,
            &session,
            guard.stop_flag(),
        );
        return;
    }
    pacer.before_write();
    let rate = MinRate::for_liveness(ctx.liveness);
    ctx.transfers.watch(&guard, rate);
    let label = format!("Upload de {} para {from}", request.filename);
    let mut progress = Progress::new(Arc::clone(&ctx.out), label, size, offset);
    let sent = if pacer.is_pacing() && size - offset <= legacy::ONE_WRITE_MAX {
        send_in_one_write(&file, offset, size - offset, &stream)
    } else if digest_after_data {
        send_then_digest(
            ctx,
            &path,
            &file,
            size,
            &stream,
            guard.stop_flag(),
            &mut progress,
        )
    } else {
        transfer::send_range(
            &file,
            offset,
            size - offset,
            &stream,
            guard.stop_flag(),
            &mut |sent| progress.update(offset + sent),
        )
    };
    // The line below takes the place of the bar.
    drop(progress);
    match sent {
        Ok(()) => {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            log::info!("sent {} ({size} bytes) to {from}", request.filename);
            ctx.out.line(&format!(
                "Upload do arquivo {} para {from} concluído",
                request.filename
            ));
            if request.from_port.is_some() {
                await_mismatch_report(ctx, &mut reader, &path, &request.filename, from);
            }
        }
        Err(e) => {
            log::debug!("upload of {} to {from} failed: {e}", request.filename);
            let why = match guard.ending() {
                Ending::Cancelled => "cancelado".to_string(),
                Ending::TooSlow => format!("o peer recebeu {rate}"),
                Ending::Stopped => "este peer está encerrando".to_string(),
                Ending::Running if crate::os_error::closed_by_other_side(&e) => {
                    "o outro peer encerrou".to_string()
                }
                Ending::Running => crate::os_error::describe(&e),
            };
            ctx.out.line(&format!(
                "Upload do arquivo {} para {from} interrompido: {why}",
                request.filename
            ));
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
