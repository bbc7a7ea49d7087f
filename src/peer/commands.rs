//! Parsing what the user types at the peer's console.
//!
//! Commands are case-insensitive. The commands about transfers and partial downloads are
//! parsed in [`crate::peer::transfer_commands`]. `SEARCH` takes the rest of the line as the name (names may
//! hold spaces). `DOWNLOAD name peer` takes the last word as the peer when it looks like a port
//! or `HOST:PORT`, and everything before it as the name.

/// Where to download from, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSpec {
    /// A bare port, as the original asked for: the host comes from the last search or the
    /// tracker.
    Port(u16),
    /// `HOST:PORT`.
    Addr(String),
}

impl PeerSpec {
    /// Reads a peer as typed: `5000`, `10.0.0.2:5000`, `[::1]:5000` or `host:5000`.
    pub fn parse(text: &str) -> Option<PeerSpec> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .map(PeerSpec::Port);
        }
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse::<u16>().ok().filter(|&p| p != 0)?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return None;
        }
        Some(PeerSpec::Addr(format!("{host}:{port}")))
    }
}

/// One command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Register with the tracker.
    Join,
    /// Ask the tracker who has a name; without one, the console asks for it.
    Search(Option<String>),
    /// Download a name from a peer; missing parts are asked for.
    Download {
        /// The file name.
        name: Option<String>,
        /// The peer to download from.
        peer: Option<PeerSpec>,
    },
    /// Show this peer's shared files, or (with a peer) what that peer shares.
    List(Option<String>),
    /// Approve the oldest pending upload request.
    Sim,
    /// Refuse the oldest pending upload request.
    Nao,
    /// Leave.
    Quit,
    /// List the commands.
    Help,
    /// Show the sources of the downloads from several peers running now, with their rates.
    Sources,
    /// A blank line.
    Empty,
    /// `TRANSFERENCIAS`, `CANCELAR`, `PARCIAIS`, `LIMPAR`.
    Transfers(crate::peer::transfer_commands::TransferCommand),
    /// Anything else.
    Unknown(String),
}

/// The command names, for help and completion.
pub const COMMAND_NAMES: [&str; 13] = [
    "JOIN",
    "SEARCH",
    "DOWNLOAD",
    "LIST",
    "SIM",
    "NAO",
    "QUIT",
    "HELP",
    "TRANSFERENCIAS",
    "CANCELAR",
    "PARCIAIS",
    "LIMPAR",
    "FONTES",
];

/// Parses one line.
pub fn parse(line: &str) -> Command {
    let line = line.trim();
    if line.is_empty() {
        return Command::Empty;
    }
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (line, ""),
    };
    let rest = (!rest.is_empty()).then(|| rest.to_string());
    match word.to_uppercase().as_str() {
        "JOIN" => Command::Join,
        "SEARCH" => Command::Search(rest),
        "DOWNLOAD" => parse_download(rest),
        "LIST" => Command::List(rest),
        "SIM" => Command::Sim,
        "NAO" | "NÃO" => Command::Nao,
        "QUIT" | "EXIT" => Command::Quit,
        "HELP" | "?" => Command::Help,
        "FONTES" | "SOURCES" => Command::Sources,
        other => match crate::peer::transfer_commands::parse(other, rest) {
            Some(command) => Command::Transfers(command),
            None => Command::Unknown(word.to_string()),
        },
    }
}

fn parse_download(rest: Option<String>) -> Command {
    let Some(rest) = rest else {
        return Command::Download {
            name: None,
            peer: None,
        };
    };
    if let Some((name, last)) = rest.rsplit_once(char::is_whitespace)
        && let Some(peer) = PeerSpec::parse(last)
    {
        return Command::Download {
            name: Some(name.trim().to_string()),
            peer: Some(peer),
        };
    }
    Command::Download {
        name: Some(rest),
        peer: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_case_insensitive() {
        assert_eq!(parse("join"), Command::Join);
        assert_eq!(parse("  Quit "), Command::Quit);
        assert_eq!(parse("sim"), Command::Sim);
        assert_eq!(parse("nao"), Command::Nao);
        assert_eq!(parse("não"), Command::Nao);
        assert_eq!(parse(""), Command::Empty);
        assert_eq!(parse("foo bar"), Command::Unknown("foo".into()));
    }

    #[test]
    fn search_keeps_spaces() {
        assert_eq!(
            parse("SEARCH my file.txt"),
            Command::Search(Some("my file.txt".into()))
        );
        assert_eq!(parse("search"), Command::Search(None));
    }

    #[test]
    fn list_takes_an_optional_peer() {
        assert_eq!(parse("list"), Command::List(None));
        assert_eq!(
            parse("LIST 10.0.0.2:5000"),
            Command::List(Some("10.0.0.2:5000".into()))
        );
    }

    #[test]
    fn download_takes_the_last_word_as_peer() {
        assert_eq!(
            parse("DOWNLOAD a b.txt 10.0.0.2:5000"),
            Command::Download {
                name: Some("a b.txt".into()),
                peer: Some(PeerSpec::Addr("10.0.0.2:5000".into()))
            }
        );
        assert_eq!(
            parse("download x 5000"),
            Command::Download {
                name: Some("x".into()),
                peer: Some(PeerSpec::Port(5000))
            }
        );
        assert_eq!(
            parse("DOWNLOAD x"),
            Command::Download {
                name: Some("x".into()),
                peer: None
            }
        );
        assert_eq!(
            PeerSpec::parse("[::1]:7"),
            Some(PeerSpec::Addr("[::1]:7".into()))
        );
        assert_eq!(PeerSpec::parse("70000"), None);
        assert_eq!(PeerSpec::parse("0"), None);
    }
}
