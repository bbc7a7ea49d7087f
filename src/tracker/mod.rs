//! The tracker (the original's "servidor"): who shares which names.
//!
//! Peers JOIN with the names they share, SEARCH a name to learn who has it, and UPDATE their
//! list. The tracker never touches files, except for the original's dialect: its JOIN names a
//! folder, listed only with `--legacy-folder-join` and only for a client on this machine (see
//! [`legacy`] and [`crate::protocol::legacy`]). [`limits`] fits the connection limit to the
//! machine at start.

pub mod legacy;
pub mod limits;
pub mod memory;
pub mod names;
pub mod refusal;
pub mod server;
pub mod table;
pub mod word_index;

pub use limits::raise_open_file_limit;
pub use server::{Tracker, TrackerConfig};
pub use table::PeerTable;
