//! The wire: message types, framing, and the Python original's dialect.
//!
//! This module knows neither the tracker nor the peer; both speak through it.

pub mod codec;
pub mod file_record;
pub mod legacy;
pub mod messages;
pub mod ranges;
pub mod words;

pub use codec::{CodecError, DEFAULT_MAX_MESSAGE, FrameReader, TimedRead};
pub use file_record::{Digest, FileRecord};
pub use messages::{DownloadRequest, FileUpdate, Reply, SearchResult, TrackerRequest};
