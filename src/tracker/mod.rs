//! The tracker (the original's "servidor"): who shares which names.
//!
//! Peers JOIN with the names they share, SEARCH a name to learn who has it, and UPDATE their
//! list. The tracker never touches files, except for the original's dialect: its JOIN names a
//! folder, listed only with `--legacy-folder-join` and only for a client on this machine (see
//! [`original_peers`], what the tracker does only for the original's peers, and
//! [`crate::protocol::legacy`], their wire). [`limits`] fits the connection limit to the machine
//! at start, and [`start`] starts a tracker from its configuration; [`refusal`] says why a
//! request is refused.

pub mod limits;
pub mod memory;
pub mod names;
pub mod original_peers;
pub mod refusal;
pub mod server;
pub mod start;
pub mod table;
pub mod word_index;

pub use limits::raise_open_file_limit;
pub use server::{Tracker, TrackerConfig};
pub use table::PeerTable;
