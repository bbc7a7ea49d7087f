//! The tracker (the original's "servidor"): who shares which names.
//!
//! Peers JOIN with the names they share, SEARCH a name to learn who has it, and UPDATE their
//! list. The tracker never touches files, except for the original's dialect: its JOIN names a
//! folder, listed only for a client on this machine (see [`legacy`] and
//! [`crate::protocol::legacy`]).

pub mod legacy;
pub mod memory;
pub mod names;
pub mod server;
pub mod table;
pub mod word_index;

pub use server::{Tracker, TrackerConfig, raise_open_file_limit};
pub use table::PeerTable;
