//! Downloading a file from another peer, verified and resumable.
//!
//! The bytes land in a temporary file (see [`crate::transfer::PartialStore`]); only when all of
//! them arrived and their BLAKE3 digest matches the uploader's is the file moved to its final
//! name, and never over an existing file. A download cut off half way is kept and resumed the
//! next time the same file (same size and digest) is asked for, from any peer.

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::peer::PeerContext;
use crate::peer::output::printable;
use crate::peer::progress::Progress;
use crate::protocol::messages::{DownloadRequest, Reply, download_line, parse_reply, status};
use crate::protocol::{CodecError, FrameReader};
use crate::share::NameError;
use crate::transfer::{self, PartialRecord, ReceiveError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Hashing a very large file before the first reply takes the uploader a while.
const FIRST_REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// The uploader's user may take long to answer (the uploader enforces its own limit).
const DECISION_TIMEOUT: Duration = Duration::from_secs(3600);
/// A transfer that receives nothing for this long is abandoned (and kept for resume).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a reply that has started to arrive may take to arrive whole.
const REPLY_COMPLETION_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes free for this user in the file system holding `dir`, if it can be known.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the struct it is given; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

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
    /// The file is larger than the free space in the folder.
    NoSpace {
        /// Bytes still to receive.
        need: u64,
        /// Bytes free.
        free: u64,
    },
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::Name(e) => write!(f, "nome inválido: {e}"),
            DownloadError::NoSpace { need, free } => write!(
                f,
                "espaço insuficiente: faltam {need} bytes e há {free} livres na pasta"
            ),
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

/// Prints the outcome with the original's words, then has the tracker told after a success.
fn report(ctx: &PeerContext, name: &str, outcome: Result<PathBuf, DownloadError>) {
    match outcome {
        Ok(_) => {
            ctx.out.line(&format!(
                "Arquivo {name} baixado com sucesso na pasta {}",
                ctx.shared.path().display()
            ));
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

/// Downloads `name` from `peer` into the shared folder; returns the final path.
pub fn download(ctx: &PeerContext, name: &str, peer: SocketAddr) -> Result<PathBuf, DownloadError> {
    let final_path = ctx.shared.final_path(name).map_err(DownloadError::Name)?;
    if std::fs::symlink_metadata(&final_path).is_ok() {
        return Err(DownloadError::Exists(final_path));
    }
    let guard = ctx
        .transfers
        .start_download(name)
        .ok_or(DownloadError::AlreadyRunning)?;
    let stream = crate::dial::connect_from(ctx.bind_ip, &peer, CONNECT_TIMEOUT)
        .map_err(|e| DownloadError::Connect(peer, e))?;
    ctx.transfers.attach(&guard, &stream);
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

    let mut reader = FrameReader::new(&stream, 64 * 1024);
    reader.set_idle_timeout(Some(FIRST_REPLY_TIMEOUT));
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

    let need = size.saturating_sub(resume_at.unwrap_or(0));
    if let Some(free) = free_space(ctx.shared.path())
        && need > free
    {
        return Err(DownloadError::NoSpace { need, free });
    }

    reader.set_idle_timeout(Some(DECISION_TIMEOUT));
    let decision = next_reply(&mut reader)?;
    match decision.status.as_str() {
        status::DOWNLOAD_ACCEPTED => {}
        status::DOWNLOAD_REJECTED => return Err(DownloadError::Rejected(decision.reason)),
        other => return Err(DownloadError::Protocol(format!("status {other:?}"))),
    }

    let record = PartialRecord {
        size,
        digest: digest.clone().unwrap_or_default(),
        name: Some(name.to_string()),
    };
    let mut file = ctx
        .partials
        .open(name, &record, resume_at)
        .map_err(DownloadError::Disk)?;
    let mut hasher = blake3::Hasher::new();
    if let Some(offset) = resume_at {
        let have = transfer::hash_range(
            &std::fs::File::open(ctx.partials.part_path(name)).map_err(DownloadError::Disk)?,
            0,
            offset,
            &mut hasher,
        )
        .map_err(DownloadError::Disk)?;
        if have != offset {
            return Err(DownloadError::Disk(io::Error::other(
                "the partial file shrank",
            )));
        }
        ctx.out.line(&format!(
            "Retomando o download de {name} a partir do byte {offset} de {size}"
        ));
    }
    let already = reader
        .take_payload()
        .map_err(|e| DownloadError::Protocol(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(STALL_TIMEOUT));
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
        &mut file,
        &mut hasher,
        ctx.transfers.stop_flag(),
        &mut |got| progress.update(start + got),
    );
    if let Err(e) = received {
        let e = e.offset_by(start);
        if let Err(te) = ctx.partials.truncate(name, e.kept()) {
            log::warn!("cannot trim the partial download of {name}: {te}");
        }
        return Err(DownloadError::Receive(e));
    }
    file.sync_all().map_err(DownloadError::Disk)?;
    drop(file);
    let got = hasher.finalize().to_hex().to_string();
    match digest {
        Some(expected) if expected != got => {
            ctx.partials.discard(name);
            return Err(DownloadError::Corrupt { expected, got });
        }
        Some(_) => {}
        None => log::warn!("{peer} sent no digest for {name}; the copy is not verified"),
    }
    match ctx.partials.finish(name, &final_path) {
        Ok(()) => Ok(final_path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(DownloadError::Exists(final_path))
        }
        Err(e) => Err(DownloadError::Disk(e)),
    }
}

fn next_reply(reader: &mut FrameReader<&TcpStream>) -> Result<Reply, DownloadError> {
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
