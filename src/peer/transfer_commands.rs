//! Console commands about running transfers and kept partial downloads, in the console's
//! Portuguese: `TRANSFERENCIAS` lists the transfers, `CANCELAR` stops one, `PARCIAIS` lists the
//! partial downloads kept for resume with the space they hold, `LIMPAR` deletes them.
//!
//! Parsed and answered here, apart from the console's other commands: the console only hands
//! over the words it does not know ([`parse`]) and prints what [`run`] says.

use crate::partial::{RemoveError, StoredPartial};
use crate::peer::PeerContext;
use crate::peer::progress::human_size;
use crate::peer::running::TransferInfo;

/// One of these commands, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// `TRANSFERENCIAS`: list the running transfers with their numbers.
    List,
    /// `CANCELAR número|arquivo`: stop one running transfer (a download keeps its partial).
    Cancel(Option<String>),
    /// `PARCIAIS`: list the partial downloads on disk and the bytes each holds.
    Partials,
    /// `LIMPAR arquivo|TUDO`: delete a partial download, or all that no download is writing.
    Clear(Option<String>),
}

/// The command names, for help and completion.
pub const NAMES: [&str; 4] = ["TRANSFERENCIAS", "CANCELAR", "PARCIAIS", "LIMPAR"];

/// The line HELP prints for these commands (they work before JOIN too).
pub const MENU: &str = "Transferências e downloads parciais: TRANSFERENCIAS | CANCELAR n|arquivo | PARCIAIS | LIMPAR arquivo|TUDO";

/// The word that makes `LIMPAR` delete every partial not being written.
const ALL: &str = "TUDO";

/// Reads one of these commands from its first word (in upper case) and the rest of the line.
pub fn parse(word: &str, rest: Option<String>) -> Option<TransferCommand> {
    match word {
        "TRANSFERENCIAS" | "TRANSFERÊNCIAS" => Some(TransferCommand::List),
        "CANCELAR" => Some(TransferCommand::Cancel(rest)),
        "PARCIAIS" => Some(TransferCommand::Partials),
        "LIMPAR" => Some(TransferCommand::Clear(rest)),
        _ => None,
    }
}

/// Carries out `command`, printing what happened through `say`.
pub fn run(ctx: &PeerContext, command: TransferCommand, say: &mut dyn FnMut(&str)) {
    match command {
        TransferCommand::List => list(ctx, say),
        TransferCommand::Cancel(None) => {
            say("Use CANCELAR número ou CANCELAR arquivo (TRANSFERENCIAS lista as transferências).")
        }
        TransferCommand::Cancel(Some(which)) => cancel(ctx, &which, say),
        TransferCommand::Partials => partials(ctx, say),
        TransferCommand::Clear(None) => {
            say("Use LIMPAR arquivo ou LIMPAR TUDO (PARCIAIS lista os downloads parciais).")
        }
        TransferCommand::Clear(Some(which)) if which.eq_ignore_ascii_case(ALL) => {
            clear_all(ctx, say)
        }
        TransferCommand::Clear(Some(name)) => clear(ctx, &name, say),
    }
}

fn list(ctx: &PeerContext, say: &mut dyn FnMut(&str)) {
    let running = ctx.transfers.list();
    if running.is_empty() {
        say("Nenhuma transferência em andamento.");
        return;
    }
    for transfer in &running {
        say(&transfer.to_string());
    }
    say("CANCELAR número ou CANCELAR arquivo cancela uma delas.");
}

/// Cancels the transfer numbered `which`, or the one transfer of the file `which`.
fn cancel(ctx: &PeerContext, which: &str, say: &mut dyn FnMut(&str)) {
    let running = ctx.transfers.list();
    let by_number = which
        .parse::<u64>()
        .ok()
        .and_then(|id| running.iter().find(|t| t.id == id));
    let chosen: Vec<&TransferInfo> = match by_number {
        Some(transfer) => vec![transfer],
        None => running.iter().filter(|t| t.name == which).collect(),
    };
    match chosen.as_slice() {
        [] => say(&format!(
            "Nenhuma transferência {which} em andamento (TRANSFERENCIAS lista as transferências)."
        )),
        [one] => match ctx.transfers.cancel(one.id) {
            Some(transfer) => say(&format!("Cancelando {transfer}")),
            None => say(&format!("A transferência {which} já terminou.")),
        },
        several => {
            say(&format!(
                "Há {} transferências de {which}; use CANCELAR com o número:",
                several.len()
            ));
            for transfer in several {
                say(&transfer.to_string());
            }
        }
    }
}

fn partials(ctx: &PeerContext, say: &mut dyn FnMut(&str)) {
    let stored = ctx.partials.list();
    if stored.is_empty() {
        say("Nenhum download parcial guardado.");
        return;
    }
    for partial in &stored {
        say(&describe(partial));
    }
    let total: u64 = stored.iter().map(|p| p.have).sum();
    say(&format!(
        "{} download(s) parcial(is) ocupam {} em {}; DOWNLOAD do mesmo arquivo retoma, LIMPAR arquivo ou LIMPAR TUDO apaga.",
        stored.len(),
        human_size(total),
        ctx.shared.path().join(".napster").join("partial").display()
    ));
}

/// `nome: 12.0 MiB de 48.0 MiB (25%)`, and whether a download is writing it.
fn describe(partial: &StoredPartial) -> String {
    let mut line = match partial.size {
        Some(size) if size > 0 => format!(
            "{}: {} de {} ({}%)",
            partial.name,
            human_size(partial.have),
            human_size(size),
            partial.have.saturating_mul(100) / size
        ),
        _ => format!("{}: {}", partial.name, human_size(partial.have)),
    };
    if partial.in_use {
        line.push_str(" (em andamento)");
    }
    line
}

fn clear(ctx: &PeerContext, name: &str, say: &mut dyn FnMut(&str)) {
    match ctx.partials.remove(name) {
        Ok(freed) => say(&format!(
            "Download parcial de {name} apagado ({} liberados).",
            human_size(freed)
        )),
        Err(RemoveError::InUse) => say(&format!(
            "O download de {name} está em andamento; cancele-o antes com CANCELAR {name}."
        )),
        Err(RemoveError::NotFound) => say(&format!(
            "Nenhum download parcial de {name} (PARCIAIS lista os downloads parciais)."
        )),
        Err(RemoveError::Io(e)) => {
            log::debug!("cannot remove the partial of {name}: {e:?}");
            say(&format!(
                "Não foi possível apagar o download parcial de {name}: {e}"
            ));
        }
    }
}

fn clear_all(ctx: &PeerContext, say: &mut dyn FnMut(&str)) {
    let (mut removed, mut freed, mut running) = (0, 0, 0);
    for partial in ctx.partials.list() {
        match ctx.partials.remove(&partial.name) {
            Ok(bytes) => {
                removed += 1;
                freed += bytes;
            }
            Err(RemoveError::InUse) => running += 1,
            Err(RemoveError::NotFound) => {}
            Err(RemoveError::Io(e)) => {
                say(&format!(
                    "Não foi possível apagar o download parcial de {}: {e}",
                    partial.name
                ));
            }
        }
    }
    let mut line = format!(
        "{removed} download(s) parcial(is) apagado(s), {} liberados",
        human_size(freed)
    );
    if running > 0 {
        line.push_str(&format!(
            "; {running} em andamento mantido(s) (CANCELAR para pará-los antes)"
        ));
    }
    line.push('.');
    say(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_are_read_with_their_argument() {
        assert_eq!(parse("TRANSFERENCIAS", None), Some(TransferCommand::List));
        assert_eq!(parse("TRANSFERÊNCIAS", None), Some(TransferCommand::List));
        assert_eq!(
            parse("CANCELAR", Some("a b.mp4".into())),
            Some(TransferCommand::Cancel(Some("a b.mp4".into())))
        );
        assert_eq!(parse("PARCIAIS", None), Some(TransferCommand::Partials));
        assert_eq!(
            parse("LIMPAR", Some("TUDO".into())),
            Some(TransferCommand::Clear(Some("TUDO".into())))
        );
        assert_eq!(parse("SEARCH", None), None);
    }

    #[test]
    fn a_partial_is_described_with_its_share_of_the_file() {
        let partial = StoredPartial {
            name: "video.bin".into(),
            have: 12_582_912,
            size: Some(50_331_648),
            in_use: true,
            stored: "video.bin".into(),
        };
        assert_eq!(
            describe(&partial),
            "video.bin: 12,0 MiB de 48,0 MiB (25%) (em andamento)"
        );
    }
}
