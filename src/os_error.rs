//! Operating-system errors told in the console's language.
//!
//! The console speaks Portuguese, like the original; `io::Error`'s text is the C library's
//! English ("Connection refused (os error 111)"). The common ones are translated here; a rare
//! one keeps its own text after a Portuguese lead, so its detail is never lost. Callers log the
//! untranslated error at debug level.

use std::io;

/// `error` as one short Portuguese phrase: `conexão recusada`, `endereço já em uso`, ...
pub fn describe(error: &io::Error) -> String {
    match phrase(error) {
        Some(text) => text.to_string(),
        None => format!("erro do sistema: {error}"),
    }
}

fn phrase(error: &io::Error) -> Option<&'static str> {
    use io::ErrorKind as K;
    if let Some(code) = error.raw_os_error() {
        let by_code = match code {
            libc::ENOSPC | libc::EDQUOT => Some("disco cheio"),
            libc::EFBIG => Some("arquivo grande demais para este sistema de arquivos"),
            libc::EHOSTUNREACH => Some("máquina inalcançável"),
            libc::ENETUNREACH => Some("rede inalcançável"),
            libc::EROFS => Some("sistema de arquivos somente leitura"),
            libc::ENOTDIR => Some("não é uma pasta"),
            libc::EISDIR => Some("é uma pasta"),
            libc::EMFILE | libc::ENFILE => Some("arquivos abertos demais"),
            _ => None,
        };
        if by_code.is_some() {
            return by_code;
        }
    }
    Some(match error.kind() {
        K::ConnectionRefused => "conexão recusada (nada escuta nesse endereço)",
        K::AddrInUse => "endereço já em uso (outro programa usa essa porta)",
        K::AddrNotAvailable => "endereço não disponível nesta máquina",
        K::TimedOut | K::WouldBlock => "tempo esgotado",
        K::NotFound => "não encontrado",
        K::PermissionDenied => "permissão negada",
        K::ConnectionReset => "conexão encerrada pelo outro lado",
        K::ConnectionAborted => "conexão abortada",
        K::BrokenPipe => "conexão encerrada pelo outro lado",
        K::NotConnected => "sem conexão",
        K::AlreadyExists => "já existe",
        K::UnexpectedEof => "a conexão terminou antes do esperado",
        K::InvalidInput => "endereço ou valor inválido",
        K::Interrupted => "interrompido",
        _ => return None,
    })
}

/// True when `error` means the other side of a connection closed it (it left, or its program
/// ended): what a transfer cut by the other peer's QUIT looks like from this side.
pub fn closed_by_other_side(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errors a user meets most are told in Portuguese; a rare one keeps its detail.
    #[test]
    fn common_errors_are_translated_and_rare_ones_keep_their_detail() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            describe(&refused),
            "conexão recusada (nada escuta nesse endereço)"
        );
        let in_use = io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert!(describe(&in_use).starts_with("endereço já em uso"));
        assert_eq!(
            describe(&io::Error::from_raw_os_error(libc::ETIMEDOUT)),
            "tempo esgotado"
        );
        assert_eq!(
            describe(&io::Error::from_raw_os_error(libc::ENOENT)),
            "não encontrado"
        );
        assert_eq!(
            describe(&io::Error::from_raw_os_error(libc::EACCES)),
            "permissão negada"
        );
        assert_eq!(
            describe(&io::Error::from_raw_os_error(libc::ENOSPC)),
            "disco cheio"
        );
        let rare = io::Error::from_raw_os_error(libc::ENOLINK);
        let text = describe(&rare);
        assert!(text.starts_with("erro do sistema: "), "{text}");
        assert!(text.contains("os error"), "{text}");
    }
}
