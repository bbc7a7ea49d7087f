//! Downloading a file from another peer, verified and resumable.
//!
//! The bytes land in a temporary file (see [`crate::transfer::PartialStore`]); only when all of
//! them arrived and their BLAKE3 digest matches the uploader's is the file moved to its final
//! name, and never over an existing file. A download cut off half way is kept and resumed the
//! next time the same file (same size and digest) is asked for, from any peer.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::partial::{CLEAR_HINT, NoSpace, OpenError, OpenPartial, PartialRecord, PartialStore};
use crate::peer::PeerContext;
use crate::peer::deadline::Deadline;
use crate::peer::output::printable;
use crate::peer::progress::Progress;
use crate::peer::transfers::{Ending, MinRate, TransferGuard};
use crate::protocol::messages::{DownloadRequest, Reply, download_line, parse_reply, status};
use crate::protocol::{CodecError, FrameReader};
use crate::share::NameError;
use crate::transfer::{self, ReceiveError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Hashing a very large file before the first reply takes the uploader a while. A deadline:
/// bytes that are not a reply do not extend it.
const FIRST_REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// The uploader's user may take long to answer (the uploader enforces its own limit). A
/// deadline, like the first reply's; `CANCELAR` ends the wait sooner.
const DECISION_TIMEOUT: Duration = Duration::from_secs(3600);
/// A transfer that receives nothing for this long is abandoned (and kept for resume); one that
/// receives too little is given up by the transfer watchdog ([`MinRate`]).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a reply that has started to arrive may take to arrive whole.
const REPLY_COMPLETION_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a download did not complete.
#[derive(Debug)]
pub enum DownloadError {
    /// The name is not a plain name.
    Name(NameError),
    /// A file of that name is already in the folder.
    Exists(PathBuf),
    /// A download of that name is already running.
    AlreadyRunning,
    /// The uploader could not be reached.
    Connect(SocketAddr, io::Error),
    /// The uploader does not share that name.
    NotFound,
    /// The uploader's user refused (with a reason when it was not a plain NAO).
    Rejected(Option<String>),
    /// The uploader answered ERROR.
    Refused(String),
    /// The uploader broke the protocol or the connection before the data.
    Protocol(String),
    /// The data stopped early or could not be written; the partial file is kept.
    Receive(ReceiveError),
    /// All bytes arrived but their digest differs: the copy was discarded.
    Corrupt {
        /// What the uploader announced.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// A local file operation failed.
    Disk(io::Error),
    /// The file is larger than the free space in the folder, less what running downloads
    /// were promised.
    NoSpace(NoSpace),
    /// The user cancelled it (`CANCELAR`); what arrived is kept.
    Cancelled {
        /// Bytes of the file on disk, if the data had started.
        kept: Option<u64>,
    },
    /// It received less than the minimum rate over a whole window; what arrived is kept.
    TooSlow {
        /// The minimum it fell below.
        rate: MinRate,
        /// Bytes of the file on disk.
        kept: Option<u64>,
    },
}

impl DownloadError {
    /// Bytes of the file kept on disk for resume, when the data had started.
    fn kept(&self) -> Option<u64> {
        match self {
            DownloadError::Receive(e) => Some(e.kept()),
            _ => None,
        }
    }

    /// This error as seen once the transfer is known to have been stopped for `why`.
    fn stopped(self, why: Ending, rate: MinRate) -> DownloadError {
        match why {
            Ending::Cancelled => DownloadError::Cancelled { kept: self.kept() },
            Ending::TooSlow => DownloadError::TooSlow {
                rate,
                kept: self.kept(),
            },
            Ending::Running | Ending::Stopped => self,
        }
    }
}

/// Says where the bytes of a stopped download are.
fn write_kept(f: &mut fmt::Formatter<'_>, kept: Option<u64>) -> fmt::Result {
    match kept {
        Some(kept) if kept > 0 => write!(
            f,
            "; {kept} bytes guardados para retomar depois ({CLEAR_HINT})"
        ),
        _ => Ok(()),
    }
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::Name(e) => write!(f, "nome inválido: {e}"),
            DownloadError::NoSpace(e) => write!(f, "{e}"),
            DownloadError::Cancelled { kept } => {
                write!(f, "download cancelado")?;
                write_kept(f, *kept)
            }
            DownloadError::TooSlow { rate, kept } => {
                write!(f, "o peer enviou {rate}; download abandonado")?;
                write_kept(f, *kept)
            }
            DownloadError::Exists(path) => write!(
                f,
                "o arquivo {} já existe; não será sobrescrito",
                path.display()
            ),
            DownloadError::AlreadyRunning => write!(f, "este arquivo já está sendo baixado"),
            DownloadError::Connect(addr, e) => write!(f, "não foi possível conectar a {addr}: {e}"),
            DownloadError::NotFound => write!(f, "Arquivo não encontrado."),
            DownloadError::Rejected(None) => write!(f, "Download Rejeitado"),
            DownloadError::Rejected(Some(why)) => {
                write!(f, "Download Rejeitado: {}", printable(why))
            }
            DownloadError::Refused(why) => write!(f, "o peer recusou o pedido: {}", printable(why)),
            DownloadError::Protocol(why) => {
                write!(f, "resposta inválida do peer: {}", printable(why))
            }
            DownloadError::Receive(e @ ReceiveError::Disk { error, .. })
                if transfer::is_disk_full(error) =>
            {
                write!(
                    f,
                    "{e}; a parte recebida foi guardada para retomar depois ({CLEAR_HINT})"
                )
            }
            DownloadError::Receive(e) => {
                write!(f, "{e}; a parte recebida foi guardada para retomar depois")
            }
            DownloadError::Corrupt { expected, got } => write!(
                f,
                "o arquivo recebido não confere (BLAKE3 {got}, esperado {expected}); descartado"
            ),
            DownloadError::Disk(e) => write!(f, "erro no disco: {e}"),
        }
    }
}

impl std::error::Error for DownloadError {}

/// Starts downloading `name` from `peer` on its own thread; the outcome is printed.
pub fn spawn(ctx: &Arc<PeerContext>, name: String, peer: SocketAddr) {
    let ctx = Arc::clone(ctx);
    let spawned = thread::Builder::new()
        .name("download".into())
        .spawn(move || report(&ctx, &name, download(&ctx, &name, peer)));
    if let Err(e) = spawned {
        log::error!("cannot start a download thread: {e}");
    }
}

/// Prints the outcome with the original's words, then UPDATEs the tracker after a success.
fn report(ctx: &PeerContext, name: &str, outcome: Result<PathBuf, DownloadError>) {
    match outcome {
        Ok(_) => {
            ctx.out.line(&format!(
                "Arquivo {name} baixado com sucesso na pasta {}",
                ctx.shared.path().display()
            ));
            match ctx.shared.list() {
                Ok(files) => {
                    if let Err(e) = ctx.link.update(&files) {
                        log::warn!("UPDATE after downloading {name} failed: {e}");
                    }
                }
                Err(e) => log::warn!("cannot list the shared folder: {e}"),
            }
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

/// Downloads `name` from `peer` into the shared folder; returns the final path.
pub fn download(ctx: &PeerContext, name: &str, peer: SocketAddr) -> Result<PathBuf, DownloadError> {
    let final_path = ctx.shared.final_path(name).map_err(DownloadError::Name)?;
    if std::fs::symlink_metadata(&final_path).is_ok() {
        return Err(DownloadError::Exists(final_path));
    }
    // One download per stored name in this peer, and none while another process writes it.
    let guard = ctx
        .transfers
        .start_download(&PartialStore::key(name), name, peer)
        .ok_or(DownloadError::AlreadyRunning)?;
    if ctx.partials.in_use(name) {
        return Err(DownloadError::AlreadyRunning);
    }
    let rate = MinRate::over(ctx.liveness);
    // Stopped from outside (CANCELAR, too slow): say so, whatever error the stop caused.
    fetch(ctx, name, peer, &final_path, &guard, rate).map_err(|e| e.stopped(guard.ending(), rate))
}

/// The download itself, registered as `guard`.
fn fetch(
    ctx: &PeerContext,
    name: &str,
    peer: SocketAddr,
    final_path: &std::path::Path,
    guard: &TransferGuard<'_>,
    rate: MinRate,
) -> Result<PathBuf, DownloadError> {
    let stream = crate::dial::connect_from(ctx.bind_ip, &peer, CONNECT_TIMEOUT)
        .map_err(|e| DownloadError::Connect(peer, e))?;
    ctx.transfers.attach(guard, &stream);
    let _ = stream.set_nodelay(true);
    let _ = crate::liveness::set_liveness(&stream, ctx.liveness);

    let partial = ctx.partials.find(name);
    let request = DownloadRequest {
        filename: name.to_string(),
        port: peer.port(),
        offset: partial.as_ref().map(|p| p.have),
        digest: partial.as_ref().map(|p| p.record.digest.clone()),
        from_port: Some(ctx.port),
    };
    (&stream)
        .write_all(&download_line(&request))
        .map_err(|e| DownloadError::Protocol(e.to_string()))?;

    let mut reader = FrameReader::new(Deadline::new(&stream), 64 * 1024);
    reader.get_mut().expire_in(FIRST_REPLY_TIMEOUT);
    // An uploader that starts a reply and never finishes it must not hold this download (and
    // its name) for ever.
    reader.set_message_timeout(Some(REPLY_COMPLETION_TIMEOUT));
    let first = next_reply(&mut reader)?;
    match first.status.as_str() {
        status::OK => {}
        status::FILE_NOT_FOUND => return Err(DownloadError::NotFound),
        status::ERROR => return Err(DownloadError::Refused(first.message.unwrap_or_default())),
        other => return Err(DownloadError::Protocol(format!("status {other:?}"))),
    }
    let size = first
        .file_size
        .ok_or_else(|| DownloadError::Protocol("OK without fileSize".into()))?;
    let digest = first.digest.clone();
    let offset = first.offset.unwrap_or(0);
    // Resume only when the uploader agreed to the offset of a partial of this same file.
    let resume_at = match (&partial, &digest) {
        (Some(p), Some(d))
            if offset > 0 && offset == p.have && p.record.digest == *d && p.record.size == size =>
        {
            Some(offset)
        }
        _ if offset == 0 => None,
        _ => {
            return Err(DownloadError::Protocol(format!(
                "the uploader offered to resume from byte {offset}, which was not asked for"
            )));
        }
    };

    // Counted against the free space with what running downloads still have to write; held
    // until this download ends.
    let _promise = ctx
        .partials
        .promise(name, size, resume_at.unwrap_or(0))
        .map_err(DownloadError::NoSpace)?;

    let record = PartialRecord {
        size,
        digest: digest.clone().unwrap_or_default(),
        name: Some(name.to_string()),
    };
    // A resumed download opens (and locks) its partial and hashes the part on disk while the
    // uploader's user decides, so that the data, once accepted, is read at once (the uploader
    // holds a transfer that takes nothing for long to be too slow). A fresh one touches the
    // partial of this name (perhaps another file's) only once accepted.
    let mut hasher = blake3::Hasher::new();
    let mut resumed = match resume_at {
        Some(offset) => {
            let mut file = open_partial(ctx, name, &record, resume_at)?;
            let have = file
                .hash_prefix(offset, &mut hasher)
                .map_err(DownloadError::Disk)?;
            if have != offset {
                return Err(DownloadError::Disk(io::Error::other(
                    "the partial file shrank",
                )));
            }
            Some(file)
        }
        None => None,
    };

    reader.get_mut().expire_in(DECISION_TIMEOUT);
    let decision = next_reply(&mut reader)?;
    match decision.status.as_str() {
        status::DOWNLOAD_ACCEPTED => {}
        status::DOWNLOAD_REJECTED => return Err(DownloadError::Rejected(decision.reason)),
        other => return Err(DownloadError::Protocol(format!("status {other:?}"))),
    }
    let mut file = match resumed.take() {
        Some(file) => {
            ctx.out.line(&format!(
                "Retomando o download de {name} a partir do byte {} de {size}",
                resume_at.unwrap_or(0)
            ));
            file
        }
        None => open_partial(ctx, name, &record, None)?,
    };
    let already = reader
        .take_payload()
        .map_err(|e| DownloadError::Protocol(e.to_string()))?;
    drop(reader);
    let _ = stream.set_read_timeout(Some(STALL_TIMEOUT));
    ctx.transfers.watch(guard, rate);
    let start = resume_at.unwrap_or(0);
    let mut progress = Progress::new(
        Arc::clone(&ctx.out),
        format!("Download de {name}"),
        size,
        start,
    );
    let mut source = &stream;
    let received = transfer::receive_exact(
        &already,
        &mut source,
        size - start,
        file.file(),
        &mut hasher,
        guard.stop_flag(),
        &mut |got| progress.update(start + got),
    );
    if let Err(e) = received {
        let e = e.offset_by(start);
        if let Err(te) = file.truncate(e.kept()) {
            log::warn!("cannot trim the partial download of {name}: {te}");
        }
        return Err(DownloadError::Receive(e));
    }
    file.file().sync_all().map_err(DownloadError::Disk)?;
    // The hasher saw exactly the bytes written to this file, and no other download can write
    // it (it is locked): the digest is that of what is on disk.
    let got = hasher.finalize().to_hex().to_string();
    match digest {
        Some(expected) if expected != got => {
            file.discard();
            return Err(DownloadError::Corrupt { expected, got });
        }
        Some(_) => {}
        None => log::warn!("{peer} sent no digest for {name}; the copy is not verified"),
    }
    match file.finish(final_path) {
        Ok(()) => Ok(final_path.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(DownloadError::Exists(final_path.to_path_buf()))
        }
        Err(e) => Err(DownloadError::Disk(e)),
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

fn next_reply(reader: &mut FrameReader<Deadline<'_>>) -> Result<Reply, DownloadError> {
    match reader.next_frame() {
        Ok(Some(frame)) => parse_reply(frame).map_err(DownloadError::Protocol),
        Ok(None) => Err(DownloadError::Protocol(
            "the peer closed the connection before answering".into(),
        )),
        Err(CodecError::Timeout) => Err(DownloadError::Protocol(
            "the peer did not answer in time".into(),
        )),
        Err(e) => Err(DownloadError::Protocol(e.to_string())),
    }
}
