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

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::bounded;

use crate::peer::PeerContext;
use crate::peer::approval::{ApprovalRequest, Decision};
use crate::peer::progress::Progress;
use crate::peer::range_server;
use crate::protocol::FrameReader;
use crate::protocol::legacy::{self, ReplyPacer};
use crate::protocol::messages::{Reply, parse_download_request, status, waiting_for};
use crate::protocol::ranges;
use crate::transfer;
use crate::verified::CHUNK_GROUP;

/// The largest DOWNLOAD_REQUEST accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// How long a downloader may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A downloader that accepts no data for this long is given up (it can resume later).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Accepts upload connections for ever, one thread each.
pub fn serve(listener: TcpListener, ctx: Arc<PeerContext>) {
    let active = Arc::new(AtomicUsize::new(0));
    for incoming in listener.incoming() {
        let stream = match incoming {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("upload accept failed: {e}");
                continue;
            }
        };
        if ctx.transfers.stopping() {
            break;
        }
        // Bounded: a flood of requests must not cost a thread (and a console line) each.
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_UPLOAD_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            log::warn!("refusing an upload connection: {MAX_UPLOAD_CONNECTIONS} already open");
            let _ = reply(
                &stream,
                &Reply::error("this peer is serving too many requests; try again later"),
            );
            continue;
        }
        let slot = UploadSlot(Arc::clone(&active));
        let ctx = Arc::clone(&ctx);
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
/// Stack of an upload thread: it parses one small request and streams with `sendfile`.
const UPLOAD_THREAD_STACK: usize = 256 * 1024;

/// Counts an upload connection until its thread ends.
struct UploadSlot(Arc<AtomicUsize>);

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    for name in names {
        if ctx.transfers.stopping() {
            return;
        }
        let Ok(Some((path, _))) = ctx.shared.shared_file(&name) else {
            continue;
        };
        let hashed = File::open(&path)
            .and_then(|file| Ok((file.metadata()?.len(), ctx.digests.digest(&path, &file)?)));
        match hashed {
            Ok((size, digest)) => {
                log::debug!("{name}: BLAKE3 {digest}");
                ctx.catalog.digest_known(&name, size, &digest);
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
    let mut reader = FrameReader::new(&stream, MAX_REQUEST);
    reader.set_message_timeout(Some(REQUEST_TIMEOUT));
    reader.set_idle_timeout(Some(REQUEST_TIMEOUT));
    let request = match reader.next_frame() {
        Ok(Some(frame)) => parse_download_request(frame),
        Ok(None) => return,
        Err(e) => Err(e.to_string()),
    };
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            log::debug!("upload request from {remote} refused: {message}");
            let _ = reply(&stream, &Reply::error(message));
            return;
        }
    };
    let from = SocketAddr::new(
        remote.ip().to_canonical(),
        request.from_port.unwrap_or(remote.port()),
    );
    let found = match ctx.shared.shared_file(&request.filename) {
        Ok(found) => found,
        Err(e) => {
            log::warn!(
                "{from} asked for an unsafe name {:?}: {e}",
                request.filename
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
            "{from} asked for {:?}, which is not shared",
            request.filename
        );
        let _ = reply(&stream, &Reply::status(status::FILE_NOT_FOUND));
        return;
    };
    if request.accepts_waiting {
        // Hashing a large file not hashed yet takes a while: say so, so the downloader's
        // first-reply timeout can stay short.
        let size = file.metadata().map_or(0, |m| m.len());
        let _ = reply(
            &stream,
            &Reply::waiting(waiting_for::DIGEST, hashing_bound(size)),
        );
    }
    let (size, digest) = match file
        .metadata()
        .and_then(|meta| Ok((meta.len(), ctx.digests.digest(&path, &file)?)))
    {
        Ok(found) => found,
        Err(e) => {
            log::warn!("cannot read {}: {e}", path.display());
            let _ = reply(&stream, &Reply::status(status::FILE_NOT_FOUND));
            return;
        }
    };
    // A range session needs the file's outboard: computed once, before the OK that offers it.
    let outboard = if request.ranges == Some(true) {
        match ctx.outboards.open(&file, size, &digest) {
            Ok(outboard) => Some(outboard),
            Err(e) => {
                log::warn!("no outboard for {}: {e}", path.display());
                let _ = reply(
                    &stream,
                    &Reply::error(format!("cannot serve ranges of this file now: {e}")),
                );
                return;
            }
        }
    } else {
        None
    };
    // Resume only a download of this very file (same digest) and within it.
    let offset = match (request.offset, &request.digest) {
        (Some(offset), Some(wanted))
            if *wanted == digest && offset <= size && outboard.is_none() =>
        {
            offset
        }
        _ => 0,
    };
    let ok = Reply {
        status: status::OK.to_string(),
        file_size: Some(size),
        digest: Some(digest),
        offset: Some(offset),
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
            status: status::DOWNLOAD_REJECTED.to_string(),
            reason: decision.reason().map(str::to_string),
            ..Reply::default()
        };
        pacer.before_write();
        let _ = reply(&stream, &rejected);
        return;
    }
    let guard = ctx.transfers.start_upload();
    ctx.transfers.attach(&guard, &stream);
    pacer.before_write();
    if reply(&stream, &Reply::status(status::DOWNLOAD_ACCEPTED)).is_err() {
        return;
    }
    pacer.wrote();
    if let Some(outboard) = outboard {
        let session = range_server::SessionFile {
            file: &file,
            size,
            outboard: &outboard,
        };
        range_server::serve_session(ctx, &stream, &mut reader, &request.filename, from, &session);
        return;
    }
    pacer.before_write();
    let label = format!("Upload de {} para {from}", request.filename);
    let mut progress = Progress::new(Arc::clone(&ctx.out), label, size, offset);
    let sent = if pacer.is_pacing() && size - offset <= legacy::ONE_WRITE_MAX {
        send_in_one_write(&file, offset, size - offset, &stream)
    } else {
        transfer::send_range(
            &file,
            offset,
            size - offset,
            &stream,
            ctx.transfers.stop_flag(),
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
        }
        Err(e) => {
            log::debug!("upload of {} to {from} failed: {e}", request.filename);
            let why = if ctx.transfers.stopping() {
                "este peer está encerrando".to_string()
            } else if crate::os_error::closed_by_other_side(&e) {
                "o outro peer encerrou".to_string()
            } else {
                crate::os_error::describe(&e)
            };
            ctx.out.line(&format!(
                "Upload do arquivo {} para {from} interrompido: {why}",
                request.filename
            ));
        }
    }
}

/// Sends a small file to the original's downloader in one write. It takes the file with a
/// single `recv(fileSize)`, which returns what the first segment brought: one write of at most
/// [`legacy::ONE_WRITE_MAX`] bytes leaves loopback as one segment, so the file arrives whole
/// (measured with a Python reader on loopback: streamed, a 60,000-byte file arrived whole in 17
/// of 20 tries, 2 of 10 under heavier load; in one write, 20 of 20).
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
