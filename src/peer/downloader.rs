//! Downloading a file from another peer, verified and resumable.
//!
//! The bytes land in a temporary file that this download alone writes (see [`crate::partial`]);
//! only when all of them arrived and their BLAKE3 digest matches the uploader's does that file
//! get its final name, and never over an existing file. A download cut off half way is kept and
//! resumed the next time the same file (same size and digest) is asked for, from any peer.
//!
//! No uploader can hold a download for ever: the waits for its replies are deadlines that bytes
//! between replies do not extend (one `waiting` reply per stage may move them), the data must
//! keep a minimum rate ([`MinRate`]), and the user can cancel it (`CANCELAR`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::exit::Failure;
use crate::os_error::{closed_by_other_side, describe};
use crate::partial::{OpenError, OpenPartial, PartialRecord, PartialStore};
use crate::peer::PeerContext;
use crate::peer::deadline::Deadline;
use crate::peer::download_error::{DownloadError, Stage, Violation};
use crate::peer::progress::{Progress, elapsed_text, human_bytes, human_duration, human_size};
use crate::peer::running::{MinRate, TransferGuard};
use crate::protocol::messages::{
    DigestMismatch, DownloadRequest, Reply, Status, digest_mismatch_line, download_line,
    parse_reply, waiting_for,
};
use crate::protocol::{CodecError, FrameReader};
use crate::transfer::{self, ReceiveError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The uploader's first reply comes at once (a `waiting` reply first if it must hash the
/// file), so a few seconds of silence mean it is not answering.
const FIRST_REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for the decision of an uploader that does not say how long it may take
/// (one without `waiting` replies): its user's default 60 s to answer, and a margin.
const SILENT_DECISION_TIMEOUT: Duration = Duration::from_secs(120);
/// Added to the time a `waiting` reply announces: the network's share.
const WAITING_MARGIN: Duration = Duration::from_secs(5);
/// A transfer that receives nothing for this long is abandoned (and kept for resume); one that
/// receives too little is given up by the transfer watchdog ([`MinRate`]).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest any one `waiting` reply may make the downloader wait: our own default time to
/// answer a request (60 s) and ten minutes more (PROTOCOL.md D11). A hostile uploader could
/// otherwise claim a day and pin the download that long; `CANCELAR` frees it earlier anyway.
pub const LONGEST_WAITING: Duration =
    Duration::from_secs(crate::peer::approval::DEFAULT_TIMEOUT_SECS + 10 * 60);

/// How long a `waiting` reply announcing `timeout` seconds makes the downloader wait for the
/// next reply: that, at least 1 s and at most [`LONGEST_WAITING`], plus [`WAITING_MARGIN`].
fn accepted_wait(timeout: Option<u64>) -> Duration {
    let secs = timeout.unwrap_or(0).clamp(1, LONGEST_WAITING.as_secs());
    Duration::from_secs(secs) + WAITING_MARGIN
}

/// How long a reply that has started to arrive may take to arrive whole.
const REPLY_COMPLETION_TIMEOUT: Duration = Duration::from_secs(30);

/// The end of a download, sent to the console (which counts running downloads and keeps the
/// first failure for the exit code) after its outcome was printed.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The file's name.
    pub name: String,
    /// `Ok` if it arrived whole and verified, else the kind of failure.
    pub result: Result<(), Failure>,
}

/// A completed download.
pub struct Received {
    /// Bytes received in this run (less than `size` when resumed).
    pub bytes: u64,
    /// The file's size.
    pub size: u64,
    /// From the uploader's acceptance to the file verified and in place: the transfer itself.
    pub took: Duration,
    /// From the request to the acceptance: connecting, the uploader's user deciding, the
    /// uploader hashing the file first.
    pub waited: Duration,
    /// True if the digest was announced and matched.
    pub verified: bool,
}

/// Starts downloading `name` from `peer`: says at once what it waits for, then runs on its
/// own thread, prints the outcome and sends a [`Finished`] to `ctx.finished`. `Err` (already
/// printed) when it could not start; then no `Finished` follows.
pub fn start(ctx: &Arc<PeerContext>, name: String, peer: SocketAddr) -> Result<(), Failure> {
    if let Err(e) = check_target(ctx, &name) {
        let failure = e.failure();
        report(ctx, &name, Err(e));
        return Err(failure);
    }
    ctx.out.line(&format!("Aguardando resposta de {peer}..."));
    let thread_ctx = Arc::clone(ctx);
    let spawned = thread::Builder::new()
        .name("download".into())
        .spawn(move || {
            // Whatever happens here, the console must hear that this download ended: a piped
            // QUIT waits for it.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let outcome = download(&thread_ctx, &name, peer);
                let result = outcome.as_ref().map(|_| ()).map_err(DownloadError::failure);
                report(&thread_ctx, &name, outcome);
                result
            }));
            let result = run.unwrap_or(Err(Failure::Other));
            let _ = thread_ctx.finished.send(Finished { name, result });
        });
    spawned.map(|_| ()).map_err(|e| {
        log::error!("cannot start a download thread: {e}");
        ctx.out.line(&format!(
            "Erro ao processar download: não foi possível iniciar uma thread: {}",
            describe(&e)
        ));
        Failure::Other
    })
}

/// The name is a plain name and nothing by that name is in the folder yet.
fn check_target(ctx: &PeerContext, name: &str) -> Result<PathBuf, DownloadError> {
    let final_path = ctx.shared.final_path(name).map_err(DownloadError::Name)?;
    if std::fs::symlink_metadata(&final_path).is_ok() {
        return Err(DownloadError::Exists(final_path));
    }
    Ok(final_path)
}

/// Prints the outcome with the original's words, then has the tracker told after a success.
pub(crate) fn report(ctx: &PeerContext, name: &str, outcome: Result<Received, DownloadError>) {
    match outcome {
        Ok(received) => {
            ctx.out.line(&format!(
                "Arquivo {name} baixado com sucesso na pasta {}",
                ctx.shared.path().display()
            ));
            ctx.out.line(&summary(&received));
            // The announcer rescans the folder and sends the new file's UPDATE at once.
            ctx.catalog.announce_now();
        }
        Err(e @ (DownloadError::NotFound | DownloadError::Rejected(_))) => {
            ctx.out.line(&e.to_string());
        }
        Err(e) => {
            log::debug!("download of {name} failed: {e:?}");
            ctx.out
                .line(&format!("Erro ao processar download de {name}: {e}"));
        }
    }
}

/// A wait before the data shorter than this goes unsaid in the summary.
const NOTICEABLE_WAIT: Duration = Duration::from_secs(1);

/// `3,0 MiB em 0,4 s (7,5 MiB/s), verificado (BLAKE3)`: what a success took. Time and rate
/// are the transfer's own, so that the rate says what the link gave; a wait before it that a
/// person would notice (the uploader's user deciding) is said after.
fn summary(received: &Received) -> String {
    let secs = received.took.as_secs_f64().max(0.001);
    let amount = if received.bytes == received.size {
        human_size(received.size)
    } else {
        format!(
            "{} (retomado; {} no total)",
            human_size(received.bytes),
            human_size(received.size)
        )
    };
    let check = if received.verified {
        "verificado (BLAKE3)"
    } else {
        "NÃO verificado: o outro peer não enviou o digest"
    };
    let waited = if received.waited >= NOTICEABLE_WAIT {
        format!(
            ", após {} de espera pelo outro peer",
            elapsed_text(received.waited)
        )
    } else {
        String::new()
    };
    format!(
        "{amount} em {} ({}/s), {check}{waited}",
        elapsed_text(received.took),
        human_bytes(received.bytes as f64 / secs)
    )
}

/// Downloads `name` from `peer` into the shared folder.
pub fn download(
    ctx: &PeerContext,
    name: &str,
    peer: SocketAddr,
) -> Result<Received, DownloadError> {
    let started = Instant::now();
    let final_path = check_target(ctx, name)?;
    // One download per stored name in this peer, and none while another process writes it.
    let guard = ctx
        .transfers
        .start_download(&PartialStore::key(name), name, Some(peer))
        .ok_or(DownloadError::AlreadyRunning)?;
    if ctx.partials.in_use(name) {
        return Err(DownloadError::AlreadyRunning);
    }
    let rate = MinRate::for_liveness(ctx.liveness);
    let mut size = None;
    // Stopped from outside (CANCELAR, too slow): say so, whatever error the stop caused.
    fetch(
        ctx,
        name,
        peer,
        &final_path,
        &guard,
        rate,
        started,
        &mut size,
    )
    .map_err(|e| e.stopped(guard.ending(), rate, size))
}

/// The download itself, registered as `guard`; `size` is set once the uploader told it.
#[allow(clippy::too_many_arguments)]
fn fetch(
    ctx: &PeerContext,
    name: &str,
    peer: SocketAddr,
    final_path: &std::path::Path,
    guard: &TransferGuard<'_>,
    rate: MinRate,
    started: Instant,
    size_told: &mut Option<u64>,
) -> Result<Received, DownloadError> {
    let fetch = Fetch {
        ctx,
        name,
        peer,
        guard,
    };
    let partial = ctx.partials.find(name);
    let proof = fetch.what_the_partial_proves(partial.as_ref())?;
    let stream = fetch.connect()?;
    fetch.send_request(&stream, partial.as_ref(), proof)?;
    let mut replies = Replies {
        reader: reply_reader(&stream),
        ctx,
        peer,
    };
    let offer = fetch.read_offer(&mut replies)?;
    *size_told = Some(offer.size);
    let resume_at = resume_point(partial.as_ref(), &offer)?;
    // Counted against the free space with what running downloads still have to write; held
    // until this download ends.
    let _promise = ctx
        .partials
        .promise(name, offer.size, resume_at.unwrap_or(0))
        .map_err(DownloadError::NoSpace)?;
    let record = PartialRecord {
        size: offer.size,
        digest: offer.digest.clone().unwrap_or_default(),
        name: Some(name.to_string()),
    };
    let mut hasher = blake3::Hasher::new();
    let resumed = fetch.prepare_resume(&record, resume_at, &mut hasher)?;
    fetch.await_acceptance(&mut replies)?;
    let accepted = Instant::now();
    let mut file = fetch.open_landing(resumed, &record, resume_at, offer.size)?;
    let already = replies
        .reader
        .take_payload()
        .map_err(|e| DownloadError::Protocol(Violation::Framing(e)))?;
    drop(replies);
    let _ = stream.set_read_timeout(Some(STALL_TIMEOUT));
    ctx.transfers.watch(guard, rate);
    let start = resume_at.unwrap_or(0);
    let landing = transfer::Landing {
        file: file.file(),
        start,
        hasher,
    };
    let got = fetch.receive(&stream, &already, offer.size, landing);
    let got = got.map_err(|e| fetch.cut(e, &file, start, offer.size))?;
    let rest = already
        .get(usize::try_from(offer.size - start).unwrap_or(usize::MAX)..)
        .unwrap_or_default();
    let (file, digest) = fetch.verify(stream, file, &offer, &got, rest)?;
    fetch.keep(file, final_path, digest.as_ref())?;
    Ok(Received {
        bytes: offer.size - start,
        size: offer.size,
        took: accepted.elapsed(),
        waited: accepted.duration_since(started),
        verified: digest.is_some(),
    })
}

/// One download's steps, registered as `guard`.
struct Fetch<'a> {
    ctx: &'a PeerContext,
    name: &'a str,
    peer: SocketAddr,
    guard: &'a TransferGuard<'a>,
}

/// What a partial tells the uploader to prove it holds a prefix of the same file: its file's
/// digest when known, else the digest of its prefix.
#[derive(Clone)]
enum Proof {
    /// The partial's record holds its file's digest (or there is no partial).
    DigestKnown,
    /// The digest of the partial's first bytes, if it has any.
    Prefix(Option<String>),
}

/// What the uploader's OK says.
struct OfferSeen {
    size: u64,
    digest: Option<String>,
    /// The digest follows the data (D14).
    digest_after_data: bool,
    /// The byte the uploader will start from.
    offset: u64,
}

impl Fetch<'_> {
    /// A download's error as told once this peer is leaving.
    fn stopped(&self, e: DownloadError) -> DownloadError {
        if self.ctx.transfers.stopping() {
            DownloadError::Stopped(None)
        } else {
            e
        }
    }

    /// A partial whose file's digest is not known (its download took the digest after the
    /// data, D14, and was cut) proves what it holds by the digest of its prefix (D6), hashed
    /// before the request so that the uploader's request deadline does not run meanwhile.
    fn what_the_partial_proves(
        &self,
        partial: Option<&transfer::Partial>,
    ) -> Result<Proof, DownloadError> {
        match partial {
            Some(p) if p.record.digest.is_empty() => Ok(Proof::Prefix(if p.have > 0 {
                Some(hash_partial(self.ctx, self.name, p.have)?)
            } else {
                None
            })),
            _ => Ok(Proof::DigestKnown),
        }
    }

    /// Dials the uploader; the connection is the transfer's, so a stop shuts it down.
    fn connect(&self) -> Result<TcpStream, DownloadError> {
        let peer = self.peer;
        let stream =
            crate::dial::connect_from(self.ctx.bind_ip, &peer, CONNECT_TIMEOUT).map_err(|e| {
                log::debug!("connecting to {peer}: {e}");
                DownloadError::Connect(peer, e)
            })?;
        self.ctx.transfers.attach(self.guard, &stream);
        let _ = stream.set_nodelay(true);
        let _ = crate::liveness::set_liveness(&stream, self.ctx.liveness);
        Ok(stream)
    }

    /// Sends the DOWNLOAD request, with what resumes the partial if there is one.
    fn send_request(
        &self,
        stream: &TcpStream,
        partial: Option<&transfer::Partial>,
        proof: Proof,
    ) -> Result<(), DownloadError> {
        let digest_known = matches!(proof, Proof::DigestKnown);
        let prefix_digest = match proof {
            Proof::Prefix(digest) => digest,
            Proof::DigestKnown => None,
        };
        let request = DownloadRequest {
            filename: self.name.to_string(),
            port: self.peer.port(),
            offset: partial.map(|p| p.have),
            digest: partial
                .filter(|_| digest_known)
                .map(|p| p.record.digest.clone()),
            from_port: Some(self.ctx.port),
            ranges: None,
            accepts_waiting: true,
            digest_after_data: true,
            file_size: partial.filter(|_| !digest_known).map(|p| p.record.size),
            prefix_digest,
        };
        let mut writer = stream;
        writer.write_all(&download_line(&request)).map_err(|e| {
            log::debug!("sending the request to {}: {e}", self.peer);
            self.stopped(DownloadError::ClosedEarly)
        })
    }

    /// The uploader's first reply, which must be an OK with the file's size.
    fn read_offer(&self, replies: &mut Replies<'_>) -> Result<OfferSeen, DownloadError> {
        let first = replies
            .next(Stage::Reply, FIRST_REPLY_TIMEOUT)
            .map_err(|e| self.stopped(e))?;
        match &first.status {
            Status::Ok => {}
            Status::FileNotFound => return Err(DownloadError::NotFound),
            Status::Error => {
                return Err(DownloadError::Refused(first.message.unwrap_or_default()));
            }
            other => {
                return Err(DownloadError::Protocol(Violation::Status(
                    other.as_str().to_string(),
                )));
            }
        }
        let size = first
            .file_size
            .ok_or(DownloadError::Protocol(Violation::NoSize))?;
        let digest_after_data = first.digest.is_none() && first.digest_after_data == Some(true);
        Ok(OfferSeen {
            size,
            digest: first.digest,
            digest_after_data,
            offset: first.offset.unwrap_or(0),
        })
    }

    /// A resumed download opens (and locks) its partial and hashes the part on disk while the
    /// uploader's user decides, so that the data, once accepted, is read at once (an uploader
    /// gives up a transfer that takes too little for too long). A fresh one touches the
    /// partial of this name (perhaps another file's) only once accepted.
    fn prepare_resume(
        &self,
        record: &PartialRecord,
        resume_at: Option<u64>,
        hasher: &mut blake3::Hasher,
    ) -> Result<Option<OpenPartial>, DownloadError> {
        let Some(offset) = resume_at else {
            return Ok(None);
        };
        let mut file = open_partial(self.ctx, self.name, record, resume_at)?;
        let have = file
            .hash_prefix(offset, hasher)
            .map_err(DownloadError::Disk)?;
        if have != offset {
            return Err(DownloadError::Disk(io::Error::other(
                "a parte guardada encolheu",
            )));
        }
        Ok(Some(file))
    }

    /// The uploader's user's decision, which must be an acceptance.
    fn await_acceptance(&self, replies: &mut Replies<'_>) -> Result<(), DownloadError> {
        let decision = replies
            .next(Stage::Decision, SILENT_DECISION_TIMEOUT)
            .map_err(|e| self.stopped(e))?;
        match &decision.status {
            Status::DownloadAccepted => Ok(()),
            Status::DownloadRejected => Err(DownloadError::Rejected(decision.reason)),
            other => Err(DownloadError::Protocol(Violation::Status(
                other.as_str().to_string(),
            ))),
        }
    }

    /// The partial the data lands in: the resumed one (said so), or a fresh one.
    fn open_landing(
        &self,
        resumed: Option<OpenPartial>,
        record: &PartialRecord,
        resume_at: Option<u64>,
        size: u64,
    ) -> Result<OpenPartial, DownloadError> {
        let Some(file) = resumed else {
            return open_partial(self.ctx, self.name, record, None);
        };
        let offset = resume_at.unwrap_or(0);
        self.ctx.out.line(&format!(
            "Retomando o download de {} a partir do byte {offset} de {size} ({} de {})",
            self.name,
            human_size(offset),
            human_size(size)
        ));
        Ok(file)
    }

    /// Receives the data under a progress bar; the BLAKE3 of the whole file as on disk.
    fn receive(
        &self,
        stream: &TcpStream,
        already: &[u8],
        size: u64,
        landing: transfer::Landing<'_>,
    ) -> Result<String, ReceiveError> {
        let start = landing.start;
        let mut progress = Progress::new(
            Arc::clone(&self.ctx.out),
            format!("Download de {}", self.name),
            size,
            start,
        );
        let receiving = Instant::now();
        let received = transfer::receive_exact(
            already,
            stream,
            size - start,
            landing,
            self.guard.stop_flag(),
            &mut |got| progress.update(start + got),
        );
        drop(progress);
        // The hashing thread read back exactly the bytes in this file, and no other download
        // can write it (it is locked): the digest is that of what is on disk.
        let hash = received?;
        log::debug!(
            "{}: {} bytes received and hashed in {:.3} s",
            self.name,
            size - start,
            receiving.elapsed().as_secs_f64()
        );
        Ok(hash.to_hex().to_string())
    }

    /// A cut transfer: the partial trimmed to what arrived whole, kept to resume.
    fn cut(&self, e: ReceiveError, file: &OpenPartial, start: u64, size: u64) -> DownloadError {
        let e = e.offset_by(start);
        if let Err(te) = file.truncate(e.kept()) {
            log::warn!("cannot trim the partial download of {}: {te}", self.name);
        }
        let part = self.ctx.partials.part_path(self.name);
        if self.ctx.transfers.stopping() {
            return DownloadError::Stopped(Some((e.kept(), size, part)));
        }
        DownloadError::Receive(e, part)
    }

    /// Checks what arrived (`got`) against the announced digest, or the one that follows the
    /// data (whose first bytes may be in `rest`); a mismatch is reported to the uploader and
    /// the copy discarded. Ends the connection. The copy, and the digest if the uploader gave
    /// one.
    fn verify(
        &self,
        stream: TcpStream,
        file: OpenPartial,
        offer: &OfferSeen,
        got: &str,
        rest: &[u8],
    ) -> Result<(OpenPartial, Option<String>), DownloadError> {
        let digest = if offer.digest_after_data {
            Some(read_trailing_digest(rest, &stream)?)
        } else {
            offer.digest.clone()
        };
        match &digest {
            Some(expected) if expected != got => {
                report_mismatch(&stream, self.name, got);
                drop(stream);
                file.discard();
                return Err(DownloadError::Corrupt {
                    expected: expected.clone(),
                    got: got.to_string(),
                });
            }
            Some(_) => {}
            None => log::warn!(
                "{} sent no digest for {}; the copy is not verified",
                self.peer,
                self.name
            ),
        }
        // The uploader waits for this end (or a mismatch report) before it lets go.
        drop(stream);
        Ok((file, digest))
    }

    /// Puts the verified copy on disk under its final name, and remembers its digest.
    fn keep(
        &self,
        mut file: OpenPartial,
        final_path: &std::path::Path,
        digest: Option<&String>,
    ) -> Result<(), DownloadError> {
        let name = self.name;
        let syncing = Instant::now();
        file.file().sync_all().map_err(DownloadError::Disk)?;
        log::debug!(
            "{name}: on disk after {:.3} s of fsync",
            syncing.elapsed().as_secs_f64()
        );
        match file.finish(final_path) {
            Ok(()) => {
                // Its digest is known: the announcer need not read the file again to tell it.
                // (Taken after the link: linking and unlinking the partial's name move `ctime`.)
                if let Some(digest) = digest
                    && let Err(e) = self.ctx.digests.learned(final_path, file.as_file(), digest)
                {
                    log::debug!("the digest of {name} is not kept: {e}");
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(DownloadError::Exists(final_path.to_path_buf()))
            }
            Err(e) => Err(DownloadError::Disk(e)),
        }
    }
}

/// The reader of the uploader's replies.
fn reply_reader(stream: &TcpStream) -> FrameReader<Deadline<'_>> {
    let mut reader = FrameReader::new(Deadline::new(stream), 64 * 1024);
    // An uploader that starts a reply and never finishes it must not hold this download (and
    // its name) for ever.
    reader.set_message_timeout(Some(REPLY_COMPLETION_TIMEOUT));
    reader
}

/// Resume only when the uploader agreed to the offset of a partial of this same file (the
/// same digest, or for a partial without one, the same size and prefix: D6); an offset not
/// asked for is refused.
fn resume_point(
    partial: Option<&transfer::Partial>,
    offer: &OfferSeen,
) -> Result<Option<u64>, DownloadError> {
    let offset = offer.offset;
    let same_file = |p: &transfer::Partial| match &offer.digest {
        _ if p.record.digest.is_empty() => true,
        Some(d) => p.record.digest == *d,
        None => false,
    };
    match partial {
        Some(p)
            if offset > 0 && offset == p.have && p.record.size == offer.size && same_file(p) =>
        {
            Ok(Some(offset))
        }
        _ if offset == 0 => Ok(None),
        _ => Err(DownloadError::Protocol(Violation::UnaskedResume(offset))),
    }
}

/// Opens `name`'s partial for this download alone.
fn open_partial(
    ctx: &PeerContext,
    name: &str,
    record: &PartialRecord,
    resume_at: Option<u64>,
) -> Result<OpenPartial, DownloadError> {
    ctx.partials
        .open(name, record, resume_at)
        .map_err(|e| match e {
            OpenError::InUse => DownloadError::AlreadyRunning,
            OpenError::Io(e) => DownloadError::Disk(e),
        })
}

/// The BLAKE3 (hex) of the first `have` bytes of `name`'s partial download.
fn hash_partial(ctx: &PeerContext, name: &str, have: u64) -> Result<String, DownloadError> {
    let file = std::fs::File::open(ctx.partials.part_path(name)).map_err(DownloadError::Disk)?;
    let mut hasher = blake3::Hasher::new();
    let read = transfer::hash_range(&file, 0, have, &mut hasher, ctx.transfers.shutdown_flag())
        .map_err(DownloadError::Disk)?;
    if read != have {
        return Err(DownloadError::Disk(io::Error::other(
            "a parte guardada encolheu",
        )));
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// The largest line accepted after the data (a DIGEST reply is about 90 bytes).
const MAX_TRAILER: usize = 4096;

/// Reads the `DIGEST` reply that follows the data (D12): first from `rest` (bytes that came
/// with the last message, beyond the data), then from the stream.
fn read_trailing_digest(rest: &[u8], stream: &TcpStream) -> Result<String, DownloadError> {
    let _ = stream.set_read_timeout(Some(REPLY_COMPLETION_TIMEOUT));
    let mut line = rest.to_vec();
    let mut buf = [0u8; 512];
    let mut source = stream;
    while !line.contains(&b'\n') && line.len() <= MAX_TRAILER {
        match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DownloadError::Protocol(Violation::Trailer(e)));
            }
        }
    }
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    if end > MAX_TRAILER {
        return Err(DownloadError::Protocol(Violation::LongTrailer));
    }
    let trailer = parse_reply(line[..end].trim_ascii())
        .map_err(|e| DownloadError::Protocol(Violation::Reply(e)))?;
    match (trailer.status, trailer.digest) {
        (Status::Digest, Some(digest)) if is_digest_hex(&digest) => Ok(digest),
        _ => Err(DownloadError::Protocol(Violation::NoTrailerDigest)),
    }
}

/// True for 64 hex digits.
fn is_digest_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Tells the uploader that what arrived does not match its digest (D13), so that it hashes
/// its file again. Best effort: the download has failed either way.
fn report_mismatch(stream: &TcpStream, name: &str, got: &str) {
    let report = DigestMismatch {
        filename: name.to_string(),
        digest: got.to_string(),
    };
    if let Err(e) = (&*stream).write_all(&digest_mismatch_line(&report)) {
        log::debug!("cannot report the mismatch to the uploader: {e}");
    }
}

/// The uploader's replies before the data: `waiting` replies are taken in stride (they say
/// how long the next reply may take, and the user is told when the other user is asked).
///
/// Each wait is a deadline ([`Deadline`]): bytes that are not a reply (a space every few
/// seconds) do not extend it, and only the first `waiting` reply of a stage may move it.
struct Replies<'a> {
    reader: FrameReader<Deadline<'a>>,
    ctx: &'a PeerContext,
    peer: SocketAddr,
}

impl Replies<'_> {
    /// The next reply that is not `waiting`; `default_wait` bounds the wait unless the
    /// uploader announced another bound.
    fn next(&mut self, stage: Stage, default_wait: Duration) -> Result<Reply, DownloadError> {
        let mut may_extend = true;
        let mut wait = default_wait;
        self.reader.get_mut().expire_in(wait);
        loop {
            self.reader.set_idle_timeout(Some(wait));
            let reply = match self.reader.next_frame() {
                Ok(Some(frame)) => {
                    parse_reply(frame).map_err(|e| DownloadError::Protocol(Violation::Reply(e)))?
                }
                Ok(None) => return Err(DownloadError::ClosedEarly),
                Err(CodecError::Idle) => {
                    return Err(DownloadError::Timeout {
                        stage,
                        waited: wait,
                    });
                }
                Err(CodecError::Io(e)) if closed_by_other_side(&e) => {
                    return Err(DownloadError::ClosedEarly);
                }
                Err(e) => return Err(DownloadError::Protocol(Violation::Framing(e))),
            };
            if reply.status != Status::Waiting {
                return Ok(reply);
            }
            // One announcement per stage; more would let an uploader wait for ever (and fill
            // the console).
            if !may_extend {
                continue;
            }
            may_extend = false;
            wait = accepted_wait(reply.timeout);
            self.reader.get_mut().expire_in(wait);
            log::debug!(
                "{}: waiting for {:?}, announced {:?} s, up to {wait:?}",
                self.peer,
                reply.waiting_for,
                reply.timeout
            );
            if reply.waiting_for.as_deref() == Some(waiting_for::APPROVAL) {
                self.ctx.out.line(&format!(
                    "Aguardando aprovação do usuário de {}... (até {})",
                    self.peer,
                    human_duration(wait.as_secs_f64())
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary's time and rate are the transfer's own; a wait before it that a person
    /// notices (the other user deciding) is said apart, and a short one is not.
    #[test]
    fn the_summary_gives_the_transfer_its_own_rate() {
        let received = |took_ms, waited_ms| Received {
            bytes: 3_000_000,
            size: 3_000_000,
            took: Duration::from_millis(took_ms),
            waited: Duration::from_millis(waited_ms),
            verified: true,
        };
        assert_eq!(
            summary(&received(30, 1_500)),
            "2,9 MiB em 0,03 s (95,4 MiB/s), verificado (BLAKE3), após 1,5 s de espera pelo outro peer"
        );
        assert_eq!(
            summary(&received(30, 200)),
            "2,9 MiB em 0,03 s (95,4 MiB/s), verificado (BLAKE3)"
        );
    }

    /// An uploader's `waiting` reply is taken at its word only up to 11 minutes (our default
    /// 60 s to answer, and ten minutes more), plus the network's margin: a claimed day is not.
    #[test]
    fn a_claimed_wait_is_capped() {
        assert_eq!(LONGEST_WAITING, Duration::from_secs(660));
        assert_eq!(accepted_wait(Some(70)), Duration::from_secs(75));
        assert_eq!(accepted_wait(Some(86_400)), Duration::from_secs(665));
        assert_eq!(accepted_wait(Some(u64::MAX)), Duration::from_secs(665));
        assert_eq!(accepted_wait(None), Duration::from_secs(6));
    }
}
