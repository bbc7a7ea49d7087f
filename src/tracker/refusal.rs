//! Why the tracker refuses a request: one type for every refusal, whose text is the `message`
//! of the `ERROR` reply, sent as it is (PROTOCOL.md). The connection goes on after a refusal.

use std::fmt;
use std::net::SocketAddr;

use crate::protocol::messages::RequestError;
use crate::share::NameError;
use crate::tracker::original_peers::FolderRefused;
use crate::tracker::table::TableError;

/// Why a request was refused.
#[derive(Debug)]
pub enum RequestRefused {
    /// The frame is not a request the tracker knows.
    Malformed(RequestError),
    /// The peer table refused the change (an address already held, an index full, ...).
    Table(TableError),
    /// The folder of an original-dialect JOIN was not listed.
    Folder(FolderRefused),
    /// A list longer than one peer may share.
    TooManyNames {
        /// The names in the list.
        len: usize,
        /// `--max-names`.
        max: usize,
    },
    /// A name no file can have, or longer than `--max-name-len`.
    Name {
        /// The name (only its start is shown).
        name: String,
        /// What is wrong with it.
        source: NameError,
    },
    /// A record whose size no file can have.
    Size {
        /// The record's name (only its start is shown).
        name: String,
        /// The size it gave.
        size: u64,
    },
    /// A SEARCH query holding control or invisible formatting characters.
    QueryHidden,
    /// A SEARCH query with nothing but spaces.
    QueryEmpty,
    /// A SEARCH query longer than a name may be.
    QueryTooLong {
        /// The longest name, in bytes.
        max: usize,
    },
    /// A SEARCH query of more words than the tracker looks up.
    QueryWords {
        /// The query's words.
        len: usize,
        /// The most looked up.
        max: usize,
    },
    /// LIST's `data.peer` is not `IP:PORT`.
    PeerAddress(String),
    /// LIST of a peer not registered.
    UnknownPeer(SocketAddr),
}

impl From<TableError> for RequestRefused {
    fn from(e: TableError) -> Self {
        RequestRefused::Table(e)
    }
}

impl From<FolderRefused> for RequestRefused {
    fn from(e: FolderRefused) -> Self {
        RequestRefused::Folder(e)
    }
}

impl From<RequestError> for RequestRefused {
    fn from(e: RequestError) -> Self {
        RequestRefused::Malformed(e)
    }
}

impl fmt::Display for RequestRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestRefused::Malformed(e) => write!(f, "{e}"),
            RequestRefused::Table(e) => write!(f, "{e}"),
            RequestRefused::Folder(e) => write!(f, "{e}"),
            RequestRefused::TooManyNames { len, max } => {
                write!(f, "the list has {len} names; the limit is {max}")
            }
            RequestRefused::Name { name, source } => {
                write!(f, "name {:?} refused: {source}", bounded(name))
            }
            RequestRefused::Size { name, size } => write!(
                f,
                "file {:?}: size {size} is not a file size (at most 2^63 - 1)",
                bounded(name)
            ),
            RequestRefused::QueryHidden => write!(
                f,
                "SEARCH refused: the query holds control or invisible formatting characters"
            ),
            RequestRefused::QueryEmpty => write!(f, "SEARCH refused: the query is empty"),
            RequestRefused::QueryTooLong { max } => {
                write!(f, "SEARCH refused: the query is longer than {max} bytes")
            }
            RequestRefused::QueryWords { len, max } => write!(
                f,
                "SEARCH refused: the query has {len} words; the limit is {max}"
            ),
            RequestRefused::PeerAddress(peer) => {
                write!(
                    f,
                    "LIST needs data.peer as IP:PORT, not {:?}",
                    bounded(peer)
                )
            }
            RequestRefused::UnknownPeer(addr) => {
                write!(f, "peer {addr} is not registered with this tracker")
            }
        }
    }
}

impl std::error::Error for RequestRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestRefused::Table(e) => Some(e),
            RequestRefused::Folder(e) => Some(e),
            RequestRefused::Name { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// At most the first 64 characters of `text`, for messages about hostile input.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}
