//! Why a download from one peer did not complete, told in the console's language: one line
//! for the user, the cause chained as `source()` for `RUST_LOG=debug`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::exit::Failure;
use crate::numbers::thousands;
use crate::os_error::{closed_by_other_side, describe};
use crate::partial::{CLEAR_HINT, NoSpace};
use crate::peer::output::printable;
use crate::peer::progress::{elapsed_text, human_size};
use crate::peer::running::{Ending, MinRate};
use crate::protocol::CodecError;
use crate::protocol::messages::RequestError;
use crate::share::NameError;
use crate::transfer::{self, ReceiveError};

/// What the downloader was waiting for when the uploader went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The first reply (OK, fileNotFound, ...).
    Reply,
    /// The uploader's user's decision.
    Decision,
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
    /// The uploader broke the protocol.
    Protocol(Violation),
    /// The uploader said nothing for `waited` while this side waited for `stage`.
    Timeout {
        /// What was awaited.
        stage: Stage,
        /// For how long.
        waited: Duration,
    },
    /// The uploader closed the connection before sending the file (it left, or crashed).
    ClosedEarly,
    /// The data stopped early or could not be written; the partial file is kept there.
    Receive(ReceiveError, PathBuf),
    /// This peer is leaving: the download was stopped, its partial (if any) kept there.
    Stopped(Option<(u64, u64, PathBuf)>),
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
    /// The user cancelled it (`CANCELAR`); what arrived is kept (bytes, size, where).
    Cancelled(Option<(u64, u64, PathBuf)>),
    /// It received less than the minimum rate over a whole window; what arrived is kept.
    TooSlow(MinRate, Option<(u64, u64, PathBuf)>),
}

impl DownloadError {
    /// The kind of failure, for the exit code.
    pub fn failure(&self) -> Failure {
        match self {
            DownloadError::Name(_) | DownloadError::AlreadyRunning => Failure::Command,
            DownloadError::Exists(_) | DownloadError::Disk(_) | DownloadError::NoSpace(_) => {
                Failure::Disk
            }
            DownloadError::Cancelled(_) => Failure::Interrupted,
            DownloadError::TooSlow(..) => Failure::Cut,
            DownloadError::Connect(..)
            | DownloadError::Protocol(_)
            | DownloadError::Timeout { .. }
            | DownloadError::ClosedEarly => Failure::Unreachable,
            DownloadError::NotFound => Failure::NotFound,
            DownloadError::Rejected(_) | DownloadError::Refused(_) => Failure::Rejected,
            DownloadError::Receive(ReceiveError::Disk { .. }, _) => Failure::Disk,
            DownloadError::Receive(..) => Failure::Cut,
            DownloadError::Stopped(_) => Failure::Interrupted,
            DownloadError::Corrupt { .. } => Failure::Corrupt,
        }
    }
}

/// A plain name's problem, in the console's language.
fn name_problem(e: &NameError) -> String {
    match e {
        NameError::Empty => "o nome está vazio".into(),
        NameError::TooLong(limit) => format!("o nome tem mais de {limit} bytes"),
        NameError::Dots => "o nome não pode ser '.' nem '..'".into(),
        NameError::Separator => "o nome não pode conter '/' nem '\\'".into(),
        NameError::Control => "o nome não pode conter caracteres de controle ou invisíveis".into(),
    }
}

/// `o outro peer encerrou após 1.0 MiB de 4.0 MiB; ...`: why the data stopped.
fn receive_problem(e: &ReceiveError) -> String {
    let of = |got: u64, total: Option<u64>| match total {
        Some(total) => format!("{} de {}", human_size(got), human_size(total)),
        None => human_size(got),
    };
    match e {
        ReceiveError::Short { got, expected } => {
            format!("o outro peer encerrou após {}", of(*got, Some(*expected)))
        }
        ReceiveError::Network { got, error } if closed_by_other_side(error) => {
            format!("o outro peer encerrou após {}", of(*got, None))
        }
        ReceiveError::Network { got, error }
            if matches!(
                error.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            format!(
                "tempo esgotado: o outro peer parou de responder após {}",
                of(*got, None)
            )
        }
        ReceiveError::Network { got, error } => {
            format!(
                "a conexão falhou após {}: {}",
                of(*got, None),
                describe(error)
            )
        }
        ReceiveError::Disk { written, error } if transfer::is_disk_full(error) => {
            format!("disco cheio após {} gravados", of(*written, None))
        }
        ReceiveError::Disk { written, error } => {
            format!(
                "não foi possível gravar após {}: {}",
                of(*written, None),
                describe(error)
            )
        }
        ReceiveError::Stopped { got } => format!("interrompido após {}", of(*got, None)),
    }
}

impl DownloadError {
    /// What was kept of a download whose data had started (bytes, size, where).
    fn kept(&self) -> Option<(u64, u64, PathBuf)> {
        match self {
            DownloadError::Receive(e, partial) => Some((e.kept(), 0, partial.clone())),
            DownloadError::Stopped(kept) => kept.clone(),
            _ => None,
        }
    }

    /// This error as told once the transfer is known to have been stopped for `why`.
    pub(crate) fn stopped(self, why: Ending, rate: MinRate, size: Option<u64>) -> DownloadError {
        let kept = self.kept().map(|(got, total, part)| {
            (
                got,
                if total == 0 { size.unwrap_or(0) } else { total },
                part,
            )
        });
        match why {
            Ending::Cancelled => DownloadError::Cancelled(kept),
            Ending::TooSlow => DownloadError::TooSlow(rate, kept),
            Ending::Running | Ending::Stopped => self,
        }
    }
}

/// `; 1.0 MiB de 4.0 MiB recebidos; a parte recebida foi guardada ...`: where a stopped
/// download is, in the words of any cut download.
fn write_kept(f: &mut fmt::Formatter<'_>, kept: &Option<(u64, u64, PathBuf)>) -> fmt::Result {
    match kept {
        Some((got, total, partial)) if *got > 0 => write!(
            f,
            "; {} de {} recebidos; a parte recebida foi guardada para retomar depois ({}; {CLEAR_HINT})",
            human_size(*got),
            human_size(*total),
            partial.display()
        ),
        _ => write!(f, "; nada foi recebido"),
    }
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::Name(e) => write!(f, "nome inválido: {}", name_problem(e)),
            DownloadError::NoSpace(e) => {
                write!(
                    f,
                    "espaço insuficiente: faltam {} e há {} livres na pasta",
                    human_size(e.need),
                    human_size(e.free)
                )?;
                if e.promised > 0 {
                    write!(
                        f,
                        ", {} deles prometidos a downloads em andamento",
                        human_size(e.promised)
                    )?;
                }
                if e.kept > 0 {
                    write!(
                        f,
                        "; downloads parciais guardados ocupam {} ({CLEAR_HINT})",
                        human_size(e.kept)
                    )?;
                }
                Ok(())
            }
            DownloadError::Cancelled(kept) => {
                write!(f, "download cancelado")?;
                write_kept(f, kept)
            }
            DownloadError::TooSlow(rate, kept) => {
                write!(f, "o outro peer enviou {rate}; download abandonado")?;
                write_kept(f, kept)
            }
            DownloadError::Exists(path) => write!(
                f,
                "o arquivo {} já existe; não será sobrescrito",
                path.display()
            ),
            DownloadError::AlreadyRunning => write!(f, "este arquivo já está sendo baixado"),
            DownloadError::Connect(addr, e) => {
                write!(f, "não foi possível conectar a {addr}: {}", describe(e))
            }
            DownloadError::NotFound => write!(f, "Arquivo não encontrado."),
            DownloadError::Rejected(None) => write!(f, "Download Rejeitado"),
            DownloadError::Rejected(Some(why)) => {
                write!(f, "Download Rejeitado: {}", printable(why))
            }
            DownloadError::Refused(why) => {
                write!(f, "o outro peer recusou o pedido: \"{}\"", printable(why))
            }
            DownloadError::Protocol(why) => write!(f, "resposta inválida do peer: {why}"),
            DownloadError::Timeout { stage, waited } => {
                let what = match stage {
                    Stage::Reply => "o outro peer não respondeu",
                    Stage::Decision => "o outro peer não enviou a decisão do usuário",
                };
                write!(f, "tempo esgotado: {what} em {}", elapsed_text(*waited))
            }
            DownloadError::ClosedEarly => {
                write!(
                    f,
                    "o outro peer encerrou a conexão antes de enviar o arquivo"
                )
            }
            DownloadError::Receive(e @ ReceiveError::Disk { error, .. }, partial)
                if transfer::is_disk_full(error) =>
            {
                write!(
                    f,
                    "{}; a parte recebida foi guardada para retomar depois ({}; {CLEAR_HINT})",
                    receive_problem(e),
                    partial.display()
                )
            }
            DownloadError::Receive(e, partial) => write!(
                f,
                "{}; a parte recebida foi guardada para retomar depois ({})",
                receive_problem(e),
                partial.display()
            ),
            DownloadError::Stopped(None) => write!(f, "cancelado ao sair; nada foi recebido"),
            DownloadError::Stopped(Some((got, total, partial))) => write!(
                f,
                "interrompido ao sair com {} de {}; a parte recebida foi guardada para retomar depois ({})",
                human_size(*got),
                human_size(*total),
                partial.display()
            ),
            DownloadError::Corrupt { expected, got } => write!(
                f,
                "o arquivo recebido não confere (BLAKE3 {got}, esperado {expected}); descartado"
            ),
            DownloadError::Disk(e) => write!(f, "erro no disco: {}", describe(e)),
        }
    }
}

impl std::error::Error for DownloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DownloadError::Name(e) => Some(e),
            DownloadError::Connect(_, e) | DownloadError::Disk(e) => Some(e),
            DownloadError::Receive(e, _) => Some(e),
            DownloadError::NoSpace(e) => Some(e),
            DownloadError::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

/// How an uploader broke the protocol, before the data or just after it.
#[derive(Debug)]
pub enum Violation {
    /// A reply could not be read whole (malformed, too large, cut, too slow).
    Framing(CodecError),
    /// A reply that is not one this side understands.
    Reply(RequestError),
    /// A status with no place at this step (the uploader's own word for it).
    Status(String),
    /// An OK without the file's size.
    NoSize,
    /// An offer to resume from a byte that was not asked for.
    UnaskedResume(u64),
    /// The line after the data could not be read.
    Trailer(io::Error),
    /// The line after the data is longer than any digest line.
    LongTrailer,
    /// What came after the data is not the file's digest.
    NoTrailerDigest,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Framing(e) => f.write_str(&codec_problem(e)),
            Violation::Reply(_) => f.write_str("a mensagem não é uma resposta conhecida"),
            Violation::Status(status) => write!(f, "status \"{}\"", printable(status)),
            Violation::NoSize => f.write_str("OK sem fileSize"),
            Violation::UnaskedResume(offset) => write!(
                f,
                "o peer ofereceu retomar do byte {}, o que não foi pedido",
                thousands(*offset)
            ),
            Violation::Trailer(e) => {
                write!(f, "o BLAKE3 não veio depois dos dados: {}", describe(e))
            }
            Violation::LongTrailer => f.write_str("a linha depois dos dados é longa demais"),
            Violation::NoTrailerDigest => {
                f.write_str("esperava o BLAKE3 do arquivo depois dos dados")
            }
        }
    }
}

impl std::error::Error for Violation {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Violation::Framing(e) => Some(e),
            Violation::Reply(e) => Some(e),
            Violation::Trailer(e) => Some(e),
            _ => None,
        }
    }
}

/// A framing error, in the console's language.
fn codec_problem(e: &CodecError) -> String {
    match e {
        CodecError::Malformed(why) => format!("mensagem malformada ({why})"),
        CodecError::TooLarge { limit } => {
            format!("mensagem maior que {} bytes", thousands(*limit as u64))
        }
        CodecError::Timeout => "a mensagem não chegou inteira a tempo".into(),
        CodecError::Idle | CodecError::Deadline => "tempo esgotado".into(),
        CodecError::Busy => "o outro lado está ocupado".into(),
        CodecError::Truncated => "a conexão terminou no meio de uma mensagem".into(),
        CodecError::Io(e) => describe(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broken protocol is one Portuguese line for the user; what exactly was wrong stays
    /// reachable as the error's source (shown with `RUST_LOG=debug`).
    #[test]
    fn a_broken_protocol_is_told_in_one_line_with_its_cause_behind() {
        use std::error::Error;
        let not_json = crate::protocol::messages::parse_reply(b"{\"status\":").unwrap_err();
        let e = DownloadError::Protocol(Violation::Reply(not_json));
        assert_eq!(
            e.to_string(),
            "resposta inválida do peer: a mensagem não é uma resposta conhecida"
        );
        let cause = e.source().and_then(Error::source).map(ToString::to_string);
        assert!(cause.is_some_and(|c| !c.is_empty()), "no cause behind {e}");
        let slow = DownloadError::Protocol(Violation::Framing(CodecError::Timeout));
        assert_eq!(
            slow.to_string(),
            "resposta inválida do peer: a mensagem não chegou inteira a tempo"
        );
        assert_eq!(
            DownloadError::Protocol(Violation::UnaskedResume(5 << 20)).to_string(),
            "resposta inválida do peer: o peer ofereceu retomar do byte 5.242.880, o que não foi pedido"
        );
        assert_eq!(slow.failure(), Failure::Unreachable);
    }

    /// A cut transfer says who ended it and how far it got, in one unit style; a full disk is
    /// a full disk.
    #[test]
    fn a_cut_transfer_is_told_in_portuguese() {
        let short = ReceiveError::Short {
            got: 12 << 20,
            expected: 48 << 20,
        };
        assert_eq!(
            receive_problem(&short),
            "o outro peer encerrou após 12,0 MiB de 48,0 MiB"
        );
        let reset = ReceiveError::Network {
            got: 1 << 20,
            error: io::Error::from(io::ErrorKind::ConnectionReset),
        };
        assert_eq!(
            receive_problem(&reset),
            "o outro peer encerrou após 1,0 MiB"
        );
        let silent = ReceiveError::Network {
            got: 0,
            error: io::Error::from_raw_os_error(libc::ETIMEDOUT),
        };
        assert_eq!(
            receive_problem(&silent),
            "tempo esgotado: o outro peer parou de responder após 0 B"
        );
        let full = ReceiveError::Disk {
            written: 5 << 20,
            error: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(receive_problem(&full), "disco cheio após 5,0 MiB gravados");
        let timeout = DownloadError::Timeout {
            stage: Stage::Reply,
            waited: Duration::from_secs(15),
        };
        assert_eq!(
            timeout.to_string(),
            "tempo esgotado: o outro peer não respondeu em 15 s"
        );
        assert_eq!(timeout.failure(), Failure::Unreachable);
    }

    /// The user's line is the peer's; `RUST_LOG=debug` can still walk down to the OS error.
    #[test]
    fn a_cut_transfer_keeps_its_cause() {
        use std::error::Error as _;
        let cut = DownloadError::Receive(
            ReceiveError::Network {
                got: 0,
                error: io::Error::from_raw_os_error(libc::EHOSTUNREACH),
            },
            PathBuf::from("p2p/a.part"),
        );
        let receive = cut
            .source()
            .expect("a cut transfer has its receive error as source");
        assert_eq!(receive.to_string(), "receiving failed after 0 bytes");
        let os = receive
            .source()
            .expect("a network failure has its io error as source");
        let os = os
            .downcast_ref::<io::Error>()
            .expect("the source is an io::Error");
        assert_eq!(os.raw_os_error(), Some(libc::EHOSTUNREACH));
        assert!(cut.to_string().starts_with("a conexão falhou após 0 B: "));
    }
}
