//! The range session: after a `DOWNLOAD_REQUEST` with `"ranges": true` is approved, the
//! downloader asks for the file's outboard and for ranges of the file, one request per line,
//! on the same connection; each answer is a reply line followed by raw bytes.
//!
//! ```text
//! → {"method":"OUTBOARD","data":{}}
//! ← {"status":"OK","length":L}\n  + L bytes: the BLAKE3 tree's hash pairs, post order
//! → {"method":"RANGE","data":{"offset":O,"length":N}}
//! ← {"status":"OK","offset":O,"length":N}\n  + N bytes of the file from O
//! → (more requests, up to MAX_AHEAD unanswered) ... then the downloader closes
//! ```
//!
//! A range starts on a chunk group and ends on one or at the end of the file, and is at most
//! [`MAX_RANGE`] bytes. A request the uploader cannot serve gets `{"status":"ERROR",...}` with
//! no bytes, and the session goes on (the stream is still in sync).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::protocol::messages::{Envelope, RequestError, encode_line};

/// The longest range one request may ask for.
pub const MAX_RANGE: u64 = 16 << 20;
/// Requests a downloader may send before their answers arrive (pipelining), so that the link
/// is never idle between two ranges.
pub const MAX_AHEAD: usize = 4;
/// The longest request line an uploader reads in a session.
pub const MAX_REQUEST: usize = 4096;

/// One request of a range session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole outboard of the file.
    Outboard,
    /// `length` bytes of the file from `offset`.
    Range {
        /// The first byte.
        offset: u64,
        /// How many bytes.
        length: u64,
    },
}

#[derive(Deserialize)]
struct RawRangeRequest {
    method: String,
    #[serde(default)]
    data: Option<RawRangeData>,
}

#[derive(Deserialize, Serialize)]
struct RawRangeData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
}

/// Decodes one request line of a range session.
pub fn parse_range_request(bytes: &[u8]) -> Result<RangeRequest, RequestError> {
    let raw: RawRangeRequest = serde_json::from_slice(bytes).map_err(RequestError::RangeJson)?;
    match raw.method.as_str() {
        "OUTBOARD" => Ok(RangeRequest::Outboard),
        "RANGE" => {
            let Some(data) = raw.data else {
                return Err(RequestError::NoData { method: raw.method });
            };
            match (data.offset, data.length) {
                (Some(offset), Some(length)) => Ok(RangeRequest::Range { offset, length }),
                _ => Err(RequestError::Needs {
                    method: raw.method,
                    what: "data.offset and data.length",
                }),
            }
        }
        _ => Err(RequestError::UnknownMethod {
            method: raw.method,
            known: "a range session knows OUTBOARD and RANGE",
        }),
    }
}

/// Why a range may not be asked for; the text is sent to the downloader as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRefused {
    /// Its end is past what a file size can be.
    PastAnyFile,
    /// Empty, or longer than [`MAX_RANGE`].
    Length,
    /// It ends past the file's end.
    PastTheEnd {
        /// Where it ends.
        end: u64,
        /// The file's size.
        size: u64,
    },
    /// It does not start and end on a chunk group (nor end at the file's end).
    Unaligned {
        /// The chunk group, in bytes.
        group: u64,
    },
}

impl fmt::Display for RangeRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeRefused::PastAnyFile => write!(f, "the range ends past any file"),
            RangeRefused::Length => write!(f, "a range holds 1 to {MAX_RANGE} bytes"),
            RangeRefused::PastTheEnd { end, size } => {
                write!(f, "the range ends at {end}, past the file's {size} bytes")
            }
            RangeRefused::Unaligned { group } => write!(
                f,
                "a range starts and ends on a chunk group of {group} bytes (or at the end of the file)"
            ),
        }
    }
}

impl std::error::Error for RangeRefused {}

/// Checks that `offset..offset + length` is a range that may be asked of a file of `size`
/// bytes in chunk groups of `group` bytes.
pub fn check_range(offset: u64, length: u64, size: u64, group: u64) -> Result<(), RangeRefused> {
    let end = offset
        .checked_add(length)
        .ok_or(RangeRefused::PastAnyFile)?;
    if length == 0 || length > MAX_RANGE {
        return Err(RangeRefused::Length);
    }
    if end > size {
        return Err(RangeRefused::PastTheEnd { end, size });
    }
    if group == 0 || !offset.is_multiple_of(group) || (!end.is_multiple_of(group) && end != size) {
        return Err(RangeRefused::Unaligned { group });
    }
    Ok(())
}

/// The line asking for `length` bytes from `offset`.
pub fn range_line(offset: u64, length: u64) -> Vec<u8> {
    encode_line(&Envelope {
        method: "RANGE",
        data: RawRangeData {
            offset: Some(offset),
            length: Some(length),
        },
    })
}

/// The line asking for the outboard.
pub fn outboard_line() -> Vec<u8> {
    encode_line(&Envelope {
        method: "OUTBOARD",
        data: RawRangeData {
            offset: None,
            length: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let line = range_line(65536, 1 << 20);
        assert_eq!(
            parse_range_request(line.trim_ascii_end()).unwrap(),
            RangeRequest::Range {
                offset: 65536,
                length: 1 << 20
            }
        );
        let line = outboard_line();
        assert_eq!(
            parse_range_request(line.trim_ascii_end()).unwrap(),
            RangeRequest::Outboard
        );
        assert!(parse_range_request(br#"{"method":"RANGE","data":{"offset":1}}"#).is_err());
        assert!(parse_range_request(br#"{"method":"GET","data":{}}"#).is_err());
        assert!(parse_range_request(b"not json").is_err());
        let words = |line: &[u8]| parse_range_request(line).unwrap_err().to_string();
        assert_eq!(
            words(br#"{"method":"RANGE"}"#),
            r#"RANGE needs a "data" object"#
        );
        assert_eq!(
            words(br#"{"method":"RANGE","data":{"offset":1}}"#),
            "RANGE needs data.offset and data.length"
        );
        assert_eq!(
            words(br#"{"method":"GET","data":{}}"#),
            r#"unknown method "GET"; a range session knows OUTBOARD and RANGE"#
        );
        assert!(words(b"not json").starts_with("the request is not a valid range request ("));
    }

    #[test]
    fn ranges_must_be_whole_groups_inside_the_file() {
        let g = 65536;
        let size = 10 * g + 5;
        assert!(check_range(0, g, size, g).is_ok());
        assert!(check_range(9 * g, g + 5, size, g).is_ok());
        assert!(check_range(1, g, size, g).is_err());
        assert!(check_range(0, g + 1, size, g).is_err());
        assert!(check_range(0, 0, size, g).is_err());
        assert!(check_range(10 * g, g, size, g).is_err());
        assert!(check_range(u64::MAX - 10, 20, size, g).is_err());
        assert!(check_range(0, MAX_RANGE + g, u64::MAX, g).is_err());
        // The words go to the downloader as an ERROR's message.
        let words = |r: Result<(), RangeRefused>| r.unwrap_err().to_string();
        assert_eq!(
            words(check_range(u64::MAX - 10, 20, size, g)),
            "the range ends past any file"
        );
        assert_eq!(
            words(check_range(0, 0, size, g)),
            format!("a range holds 1 to {MAX_RANGE} bytes")
        );
        assert_eq!(
            words(check_range(10 * g, g, size, g)),
            format!("the range ends at {}, past the file's {size} bytes", 11 * g)
        );
        assert_eq!(
            words(check_range(1, g, size, g)),
            format!(
                "a range starts and ends on a chunk group of {g} bytes (or at the end of the file)"
            )
        );
    }
}
