//! The wire: message types, framing, and the Python original's dialect.
//!
//! This module knows neither the tracker nor the peer; both speak through it.

pub mod codec;
pub mod legacy;
pub mod messages;
pub mod ranges;

pub use codec::{CodecError, DEFAULT_MAX_MESSAGE, FrameReader, TimedRead};
pub use messages::{DownloadRequest, Reply, TrackerRequest};
