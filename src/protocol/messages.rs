//! The messages of the wire protocol (see `PROTOCOL.md`), as typed values.
//!
//! Requests are decoded leniently into a flat shape first (unknown fields are ignored so later
//! versions can add some), then checked, so that every mistake gets a sentence of its own
//! ("JOIN needs data.port") instead of a serde variant name.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::protocol::file_record::{Digest, FileRecord};

/// A request from a peer to the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerRequest {
    /// Register: the peer's upload port and the files it shares.
    Join {
        /// The peer's upload port.
        port: u16,
        /// The files it shares.
        files: Vec<FileRecord>,
    },
    /// A JOIN in the Python original's dialect: the tracker is asked to list a folder.
    LegacyJoin {
        /// The folder the original's peer shares, on the tracker's own disk.
        folder: String,
    },
    /// Which peers share a file with exactly this name, and which names hold these words?
    Search {
        /// A file name, or words of names.
        query: String,
    },
    /// Change the list of files this peer shares.
    Update(FileUpdate),
    /// Which files does this peer share? (browse)
    List {
        /// The peer, `IP:PORT` as SEARCH lists it.
        peer: String,
    },
}

/// What an UPDATE changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileUpdate {
    /// `files`: the whole new list, replacing the old one (the original's UPDATE).
    Replace(Vec<FileRecord>),
    /// `add` and `remove`: records added or replaced (by name), names no longer shared.
    Change {
        /// Records to add, or to replace the record of the same name.
        add: Vec<FileRecord>,
        /// Names to forget.
        remove: Vec<String>,
    },
}

/// A request from a peer to another peer's upload port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadRequest {
    /// The file asked for: a plain name in the uploader's folder.
    pub filename: String,
    /// The uploader's port, as the downloader dialled it (the original's field).
    pub port: u16,
    /// Resume from this byte, if the uploader's file has `digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The digest of the whole file the partial download belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The downloader's own upload port, so the uploader's user sees who asks as the tracker
    /// lists it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<u16>,
    /// `true`: the downloader asks for a range session (pieces from several peers, see
    /// [`crate::protocol::ranges`]) instead of the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<bool>,
    /// The downloader understands `waiting` replies (PROTOCOL.md D11): the uploader may say
    /// what it is doing before the file, and how long it may take.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accepts_waiting: bool,
    /// The downloader takes the digest after the data (PROTOCOL.md D12): an uploader that does
    /// not know it yet may start sending at once and hash while it sends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub digest_after_data: bool,
    /// Resume without a digest (D6): the size of the file the partial download belongs to...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// ...and the BLAKE3 (hex) of its first `offset` bytes, which the uploader's file must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_digest: Option<String>,
}

/// The envelope every request travels in.
#[derive(Serialize)]
pub struct Envelope<'a, T> {
    /// `JOIN`, `SEARCH`, `UPDATE` or `DOWNLOAD_REQUEST`.
    pub method: &'a str,
    /// The method's fields.
    pub data: T,
}

/// The flat shape any request is first decoded into.
#[derive(Deserialize)]
struct RawRequest {
    method: String,
    data: Option<ObjectData>,
}

/// `data` as a JSON object only: serde would otherwise also fill a struct from an array
/// (`"data":[1234,["a"]]`), which the protocol does not allow.
struct ObjectData(Box<RawData>);

impl<'de> Deserialize<'de> for ObjectData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
            type Value = ObjectData;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ObjectData, A::Error> {
                RawData::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|data| ObjectData(Box::new(data)))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawData {
    port: Option<u16>,
    files: Option<Vec<FileRecord>>,
    add: Option<Vec<FileRecord>>,
    remove: Option<Vec<String>>,
    peer: Option<String>,
    query: Option<String>,
    files_path: Option<String>,
    file_path: Option<String>,
    filename: Option<String>,
    offset: Option<u64>,
    digest: Option<String>,
    from_port: Option<u16>,
    ranges: Option<bool>,
    accepts_waiting: Option<bool>,
    digest_after_data: Option<bool>,
    file_size: Option<u64>,
    prefix_digest: Option<String>,
}

/// Why a message could not be understood. Its text is sent to the other side as it is (the
/// `message` of an `ERROR` reply), so it says what was expected.
#[derive(Debug)]
pub enum RequestError {
    /// Not JSON, or a field missing or of the wrong type.
    Json(serde_json::Error),
    /// A range session's line that is not JSON or has a field of the wrong type.
    RangeJson(serde_json::Error),
    /// The method needs a `data` object and none came.
    NoData {
        /// The method.
        method: String,
    },
    /// A field the method needs is missing or wrong.
    Needs {
        /// The method.
        method: String,
        /// What it needs, in words (`data.filename`).
        what: &'static str,
    },
    /// An UPDATE with both the whole list and changes.
    BothUpdateForms,
    /// A peer's method sent to the tracker.
    NotForTheTracker {
        /// The method.
        method: String,
    },
    /// A method this side does not know; `known` says which it does. Its text begins with
    /// [`UNKNOWN_METHOD`].
    UnknownMethod {
        /// The method asked for.
        method: String,
        /// The methods known here, in words.
        known: &'static str,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Json(e) => describe_json_error(e, f),
            RequestError::RangeJson(e) => {
                write!(f, "the request is not a valid range request ({e})")
            }
            RequestError::NoData { method } => write!(f, "{method} needs a \"data\" object"),
            RequestError::Needs { method, what } => write!(f, "{method} needs {what}"),
            RequestError::BothUpdateForms => write!(
                f,
                "UPDATE takes either data.files (the whole list) or data.add / data.remove, not both"
            ),
            RequestError::NotForTheTracker { method } => write!(
                f,
                "{method} goes to a peer's upload port, not to the tracker"
            ),
            RequestError::UnknownMethod { method, known } => {
                write!(f, "{UNKNOWN_METHOD} {method:?}; {known}")
            }
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Json(e) | RequestError::RangeJson(e) => Some(e),
            _ => None,
        }
    }
}

/// `method` needs `what`.
fn needs(method: &str, what: &'static str) -> RequestError {
    RequestError::Needs {
        method: method.to_string(),
        what,
    }
}

fn decode_raw(bytes: &[u8]) -> Result<(String, Box<RawData>), RequestError> {
    let raw: RawRequest = serde_json::from_slice(bytes).map_err(RequestError::Json)?;
    let Some(data) = raw.data else {
        return Err(RequestError::NoData { method: raw.method });
    };
    Ok((raw.method, data.0))
}

/// A serde error in a sentence for a person.
fn describe_json_error(e: &serde_json::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => write!(f, "the message is not valid JSON ({e})"),
        Category::Data if e.to_string().starts_with("missing field") => {
            write!(f, "the message lacks a required field ({e})")
        }
        Category::Data => write!(f, "the message has a field of the wrong type ({e})"),
        Category::Io => write!(f, "the message could not be read ({e})"),
    }
}

/// Decodes one frame sent to the tracker.
pub fn parse_tracker_request(bytes: &[u8]) -> Result<TrackerRequest, RequestError> {
    let (method, data) = decode_raw(bytes)?;
    match method.as_str() {
        "JOIN" => {
            if let Some(port) = data.port {
                let files = data
                    .files
                    .ok_or_else(|| needs("JOIN", "data.files, a list of files"))?;
                if port == 0 {
                    return Err(needs("JOIN", "a non-zero data.port"));
                }
                Ok(TrackerRequest::Join { port, files })
            } else if let Some(folder) = data.files_path.or(data.file_path) {
                Ok(TrackerRequest::LegacyJoin { folder })
            } else {
                Err(needs("JOIN", "data.port (the upload port) and data.files"))
            }
        }
        "SEARCH" => {
            let query = data
                .query
                .ok_or_else(|| needs("SEARCH", "data.query, a file name"))?;
            Ok(TrackerRequest::Search { query })
        }
        "UPDATE" => match (data.files, data.add, data.remove) {
            (Some(files), None, None) => Ok(TrackerRequest::Update(FileUpdate::Replace(files))),
            (None, None, None) => Err(needs(
                "UPDATE",
                "data.files (the whole list) or data.add / data.remove (changes)",
            )),
            (None, add, remove) => Ok(TrackerRequest::Update(FileUpdate::Change {
                add: add.unwrap_or_default(),
                remove: remove.unwrap_or_default(),
            })),
            (Some(_), _, _) => Err(RequestError::BothUpdateForms),
        },
        "LIST" => {
            let peer = data
                .peer
                .ok_or_else(|| needs("LIST", "data.peer, a peer as IP:PORT"))?;
            Ok(TrackerRequest::List { peer })
        }
        "DOWNLOAD_REQUEST" | "DOWNLOAD_RANGES" => Err(RequestError::NotForTheTracker { method }),
        _ => Err(RequestError::UnknownMethod {
            method,
            known: "the tracker knows JOIN, SEARCH, UPDATE and LIST",
        }),
    }
}

/// The method asking for a range session (PROTOCOL.md R1). A peer that knows only whole files
/// refuses it as an unknown method *before* asking its user, which `DOWNLOAD_REQUEST` with
/// `ranges` (the first form, still accepted) could not make it do: it ignored the field, asked
/// its user, and the downloader then closed the connection.
pub const DOWNLOAD_RANGES: &str = "DOWNLOAD_RANGES";

/// How every napster peer, older ones included, begins the `ERROR` message for a method it
/// does not know: a downloader that gets it for [`DOWNLOAD_RANGES`] has found a peer that sends
/// whole files only.
pub const UNKNOWN_METHOD: &str = "unknown method";

/// Decodes the request a peer's upload port accepts: `DOWNLOAD_REQUEST`, or `DOWNLOAD_RANGES`
/// (a range session).
pub fn parse_download_request(bytes: &[u8]) -> Result<DownloadRequest, RequestError> {
    let (method, data) = decode_raw(bytes)?;
    let ranges = match method.as_str() {
        "DOWNLOAD_REQUEST" => data.ranges,
        DOWNLOAD_RANGES => Some(true),
        _ => {
            return Err(RequestError::UnknownMethod {
                method,
                known: "a peer's upload port knows DOWNLOAD_REQUEST and DOWNLOAD_RANGES",
            });
        }
    };
    let filename = data
        .filename
        .ok_or_else(|| needs(&method, "data.filename"))?;
    let port = data.port.ok_or_else(|| needs(&method, "data.port"))?;
    Ok(DownloadRequest {
        filename,
        port,
        offset: data.offset,
        digest: data.digest,
        from_port: data.from_port,
        ranges,
        accepts_waiting: data.accepts_waiting.unwrap_or(false),
        digest_after_data: data.digest_after_data.unwrap_or(false),
        file_size: data.file_size,
        prefix_digest: data.prefix_digest,
    })
}

/// A downloader's report, sent after the data, that what arrived does not match the digest
/// the uploader announced (PROTOCOL.md D13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestMismatch {
    /// The file asked for.
    pub filename: String,
    /// The BLAKE3 (hex) of what arrived.
    pub digest: String,
}

/// Parses a `DIGEST_MISMATCH` report.
pub fn parse_digest_mismatch(bytes: &[u8]) -> Result<DigestMismatch, RequestError> {
    let (method, data) = decode_raw(bytes)?;
    if method != "DIGEST_MISMATCH" {
        return Err(RequestError::UnknownMethod {
            method,
            known: "only DIGEST_MISMATCH may follow a download",
        });
    }
    Ok(DigestMismatch {
        filename: data
            .filename
            .ok_or_else(|| needs(&method, "data.filename"))?,
        digest: data.digest.ok_or_else(|| needs(&method, "data.digest"))?,
    })
}

/// A reply, from the tracker or from an uploader. Only the fields of its status are present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    /// What the reply is; the fields present depend on it.
    pub status: Status,
    /// SEARCH: the peers sharing exactly the name asked for, as `IP:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    /// SEARCH: every name matching the query, one entry per distinct (name, size, digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<SearchResult>>,
    /// SEARCH: true when there were more results than the tracker sends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// LIST: the files the peer shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileRecord>>,
    /// ERROR: one sentence saying what was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// DOWNLOAD_REQUEST → OK: the size of the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// DOWNLOAD_REQUEST → OK: BLAKE3 digest (hex) of the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// DOWNLOAD_REQUEST → OK: the byte the data will start from (resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// downloadRejected: why, when it was not the user's plain NAO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// waiting: what the uploader is doing (`digest`: hashing the file; `approval`: asking
    /// its user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// waiting: seconds within which the uploader's next reply will come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// DOWNLOAD_REQUEST → OK: the digest is not known yet and follows the data (D12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_after_data: Option<bool>,
    /// DOWNLOAD_REQUEST with `ranges` → OK: the chunk group in bytes; present only when the
    /// uploader serves ranges (see [`crate::protocol::ranges`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_group: Option<u64>,
    /// DOWNLOAD_REQUEST with `ranges` → OK: the longest range one RANGE may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_range: Option<u64>,
    /// RANGE or OUTBOARD → OK: how many raw bytes follow the reply's line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

/// One SEARCH result: a distinct file (name, size, digest) and the peers holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The file's name.
    pub name: String,
    /// Its size in bytes, when its holders announced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// BLAKE3 of the whole file, when its holders announced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// How many peers hold this very file.
    pub holders: usize,
    /// Some of them (all, up to a limit), as `IP:PORT`.
    pub peers: Vec<String>,
}

/// The words of the tracker's `ERROR` to a JOIN onto an address another live connection holds
/// (PROTOCOL.md T7): a peer restarted at once may meet its own old connection there, and
/// retries on these words.
pub const ADDRESS_TAKEN: &str = "is already registered by another connection";

/// A reply's `status`, spelled on the wire as [`Status::as_str`] says. A status this build
/// does not know is kept as it came ([`Status::Other`]): reading a reply never fails on it,
/// and the caller decides what an unexpected status means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `JOIN_OK`: JOIN accepted.
    JoinOk,
    /// `OK`: a SEARCH or LIST result, or DOWNLOAD_REQUEST for a file that exists.
    Ok,
    /// `UPDATE_OK`: UPDATE accepted.
    UpdateOk,
    /// `ERROR`: the request was refused; `message` says why.
    Error,
    /// `fileNotFound`: DOWNLOAD_REQUEST for a name the uploader does not share.
    FileNotFound,
    /// `downloadAccepted`: the uploader's user said SIM; the file's bytes follow.
    DownloadAccepted,
    /// `downloadRejected`: the uploader's user said NAO (or did not answer in time).
    DownloadRejected,
    /// `waiting`: sent only to a downloader that `acceptsWaiting`: the next reply is coming,
    /// within `timeout` seconds; `waitingFor` says what it waits for.
    Waiting,
    /// `DIGEST`: after the data, the digest of the whole file, when the OK said it would follow.
    Digest,
    /// Any other status, as it came.
    Other(String),
}

impl Status {
    /// The status as it is spelled on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Status::JoinOk => "JOIN_OK",
            Status::Ok => "OK",
            Status::UpdateOk => "UPDATE_OK",
            Status::Error => "ERROR",
            Status::FileNotFound => "fileNotFound",
            Status::DownloadAccepted => "downloadAccepted",
            Status::DownloadRejected => "downloadRejected",
            Status::Waiting => "waiting",
            Status::Digest => "DIGEST",
            Status::Other(other) => other,
        }
    }

    /// The status spelled `text` on the wire.
    fn from_wire(text: String) -> Status {
        match text.as_str() {
            "JOIN_OK" => Status::JoinOk,
            "OK" => Status::Ok,
            "UPDATE_OK" => Status::UpdateOk,
            "ERROR" => Status::Error,
            "fileNotFound" => Status::FileNotFound,
            "downloadAccepted" => Status::DownloadAccepted,
            "downloadRejected" => Status::DownloadRejected,
            "waiting" => Status::Waiting,
            "DIGEST" => Status::Digest,
            _ => Status::Other(text),
        }
    }
}

/// Only for `..Reply::default()`: every reply built names its status.
impl Default for Status {
    fn default() -> Status {
        Status::Other(String::new())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Status, D::Error> {
        String::deserialize(deserializer).map(Status::from_wire)
    }
}

/// What a `waiting` reply waits for.
pub mod waiting_for {
    /// The uploader is hashing the file before its `OK`.
    pub const DIGEST: &str = "digest";
    /// The uploader's user is being asked SIM/NAO.
    pub const APPROVAL: &str = "approval";
}

impl Reply {
    /// A reply with only a status.
    pub fn status(status: Status) -> Reply {
        Reply {
            status,
            ..Reply::default()
        }
    }

    /// An `ERROR` reply with its sentence.
    pub fn error(message: impl Into<String>) -> Reply {
        Reply {
            status: Status::Error,
            message: Some(message.into()),
            ..Reply::default()
        }
    }

    /// A SEARCH result with only the exact name's holders (what the original's tracker says).
    pub fn peers(peers: Vec<String>) -> Reply {
        Reply {
            status: Status::Ok,
            peers: Some(peers),
            ..Reply::default()
        }
    }

    /// A SEARCH result: the exact name's holders, the matches, and whether some were left out.
    pub fn search(peers: Vec<String>, results: Vec<SearchResult>, truncated: bool) -> Reply {
        Reply {
            status: Status::Ok,
            peers: Some(peers),
            results: Some(results),
            truncated,
            ..Reply::default()
        }
    }

    /// A LIST result.
    pub fn files(files: Vec<FileRecord>) -> Reply {
        Reply {
            status: Status::Ok,
            files: Some(files),
            ..Reply::default()
        }
    }

    /// A `waiting` reply: the next one comes within `timeout`.
    pub fn waiting(what: &str, timeout: std::time::Duration) -> Reply {
        Reply {
            status: Status::Waiting,
            waiting_for: Some(what.to_string()),
            timeout: Some(timeout.as_secs().max(1)),
            ..Reply::default()
        }
    }

    /// Encodes the reply as one line, `\n` included.
    pub fn to_line(&self) -> Vec<u8> {
        encode_line(self)
    }

    /// Appends the reply to `out` as one line, `\n` included.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        encode_line_into(self, out);
    }

    /// Appends an `ERROR` reply with its sentence to `out` as one line. Out of line: a
    /// [`Reply`] is a few hundred bytes, which would otherwise sit in the frame of every
    /// caller, error or not (a tracker keeps each connection thread's deepest stack resident).
    #[inline(never)]
    pub fn write_error(message: String, out: &mut Vec<u8>) {
        Reply::error(message).write_line(out);
    }
}

/// Encodes any message as one JSON line, `\n` included.
pub fn encode_line<T: Serialize>(message: &T) -> Vec<u8> {
    // Sized for a typical reply, so most are written without growing the buffer.
    let mut line = Vec::with_capacity(512);
    encode_line_into(message, &mut line);
    line
}

/// Appends any message to `out` as one JSON line, `\n` included.
pub fn encode_line_into<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    let start = out.len();
    // Serializing these plain structs cannot fail: no maps with non-string keys, no I/O.
    if serde_json::to_writer(&mut *out, message).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"{}");
    }
    out.push(b'\n');
}

/// Writes a SEARCH reply straight into a buffer, byte for byte the line
/// `Reply::search(peers, results, truncated).to_line()` gives, without building the
/// [`Reply`] first: the tracker writes it from its table, with no `String` per peer or result.
///
/// The parts come in the reply's order: [`SearchReplyWriter::peer`] for each exact-name
/// holder, then [`SearchReplyWriter::results`], one [`ResultsWriter::result`] each, and
/// [`ResultsWriter::finish`].
pub struct SearchReplyWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

/// The `results` part of a SEARCH reply being written (see [`SearchReplyWriter`]).
pub struct ResultsWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> SearchReplyWriter<'a> {
    /// Starts the reply at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> SearchReplyWriter<'a> {
        out.extend_from_slice(br#"{"status":"OK","peers":["#);
        SearchReplyWriter { out, first: true }
    }

    /// One holder of the exact name, `IP:PORT`.
    pub fn peer(&mut self, peer: &str) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        write_json_str(self.out, peer);
    }

    /// Ends the peers and starts the results.
    pub fn results(self) -> ResultsWriter<'a> {
        self.out.extend_from_slice(br#"],"results":["#);
        ResultsWriter {
            out: self.out,
            first: true,
        }
    }
}

impl ResultsWriter<'_> {
    /// One result: a distinct file and (some of) its holders; see [`SearchResult`].
    pub fn result<'p>(
        &mut self,
        name: &str,
        size: Option<u64>,
        digest: Option<&Digest>,
        holders: usize,
        peers: impl IntoIterator<Item = &'p str>,
    ) {
        let out = &mut *self.out;
        if !std::mem::take(&mut self.first) {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"name":"#);
        write_json_str(out, name);
        if let Some(size) = size {
            out.extend_from_slice(br#","size":"#);
            write_decimal(out, size);
        }
        if let Some(digest) = digest {
            out.extend_from_slice(br#","digest":""#);
            digest.write_hex(out);
            out.push(b'"');
        }
        out.extend_from_slice(br#","holders":"#);
        write_decimal(out, holders as u64);
        out.extend_from_slice(br#","peers":["#);
        for (i, peer) in peers.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(out, peer);
        }
        out.extend_from_slice(b"]}");
    }

    /// Ends the reply (saying whether results were left out) and its line.
    pub fn finish(self, truncated: bool) {
        self.out.push(b']');
        if truncated {
            self.out.extend_from_slice(br#","truncated":true"#);
        }
        self.out.extend_from_slice(b"}\n");
    }
}

/// Writes `text` as a JSON string, escaped exactly as `serde_json` does (`"`, `\` and control
/// characters; nothing else), so that both encoders give the same bytes.
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.push(b'"');
    // Not `any`: without the early exit the compiler checks many bytes at once.
    let plain = bytes.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        // The common case: nothing to escape, one copy.
        out.extend_from_slice(bytes);
    } else {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in bytes {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x09 => out.extend_from_slice(b"\\t"),
                0x0a => out.extend_from_slice(b"\\n"),
                0x0c => out.extend_from_slice(b"\\f"),
                0x0d => out.extend_from_slice(b"\\r"),
                0..0x20 => out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]),
                _ => out.push(b),
            }
        }
    }
    out.push(b'"');
}

/// Writes `n` in decimal.
fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Decodes a reply frame.
pub fn parse_reply(bytes: &[u8]) -> Result<Reply, RequestError> {
    serde_json::from_slice(bytes).map_err(RequestError::Json)
}

/// The JOIN request a peer sends.
pub fn join_line(port: u16, files: &[FileRecord]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Join<'a> {
        port: u16,
        files: &'a [FileRecord],
    }
    encode_line(&Envelope {
        method: "JOIN",
        data: Join { port, files },
    })
}

/// The SEARCH request a peer sends.
pub fn search_line(query: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Search<'a> {
        query: &'a str,
    }
    encode_line(&Envelope {
        method: "SEARCH",
        data: Search { query },
    })
}

/// The UPDATE request replacing the whole list.
pub fn update_line(files: &[FileRecord]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Update<'a> {
        files: &'a [FileRecord],
    }
    encode_line(&Envelope {
        method: "UPDATE",
        data: Update { files },
    })
}

/// The DIGEST_MISMATCH report a downloader sends after the data.
pub fn digest_mismatch_line(report: &DigestMismatch) -> Vec<u8> {
    encode_line(&Envelope {
        method: "DIGEST_MISMATCH",
        data: report,
    })
}

/// The UPDATE request adding (or replacing) `add` and forgetting `remove`.
pub fn update_change_line(add: &[FileRecord], remove: &[String]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Change<'a> {
        add: &'a [FileRecord],
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        remove: &'a [String],
    }
    encode_line(&Envelope {
        method: "UPDATE",
        data: Change { add, remove },
    })
}

/// Cuts `files` into consecutive parts whose records take at most about `max_bytes` of JSON
/// each (a part holds at least one record). Always at least one part, possibly empty.
pub fn record_chunks(files: &[FileRecord], max_bytes: usize) -> Vec<&[FileRecord]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, file) in files.iter().enumerate() {
        // Name escapes at most double it; the rest of a record is under 120 bytes.
        let size = 2 * file.name.len() + 120;
        if i > start && bytes + size > max_bytes {
            parts.push(&files[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    parts.push(&files[start..]);
    parts
}

/// The LIST request: which files does `peer` (`IP:PORT`) share?
pub fn list_line(peer: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct List<'a> {
        peer: &'a str,
    }
    encode_line(&Envelope {
        method: "LIST",
        data: List { peer },
    })
}

/// The DOWNLOAD_REQUEST a peer sends to an uploader.
pub fn download_line(request: &DownloadRequest) -> Vec<u8> {
    encode_line(&Envelope {
        method: "DOWNLOAD_REQUEST",
        data: request,
    })
}

/// The line asking for a range session of `request.filename` (its `ranges` field is implied
/// by the method and left out).
pub fn range_session_line(request: &DownloadRequest) -> Vec<u8> {
    encode_line(&Envelope {
        method: DOWNLOAD_RANGES,
        data: &DownloadRequest {
            ranges: None,
            ..request.clone()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words of each refusal, which go on the wire as an ERROR's `message`, are the ones
    /// peers and tests know (they were written with `format!` before the error was typed).
    #[test]
    fn request_errors_keep_their_words() {
        let tracker = |line: &str| {
            parse_tracker_request(line.as_bytes())
                .unwrap_err()
                .to_string()
        };
        let upload = |line: &str| {
            parse_download_request(line.as_bytes())
                .unwrap_err()
                .to_string()
        };
        let mismatch = |line: &str| {
            parse_digest_mismatch(line.as_bytes())
                .unwrap_err()
                .to_string()
        };
        let cases = [
            (
                tracker(r#"{"method":"SEARCH"}"#),
                r#"SEARCH needs a "data" object"#,
            ),
            (
                tracker(r#"{"method":"JOIN","data":{"port":5}}"#),
                "JOIN needs data.files, a list of files",
            ),
            (
                tracker(r#"{"method":"JOIN","data":{"port":0,"files":[]}}"#),
                "JOIN needs a non-zero data.port",
            ),
            (
                tracker(r#"{"method":"JOIN","data":{}}"#),
                "JOIN needs data.port (the upload port) and data.files",
            ),
            (
                tracker(r#"{"method":"SEARCH","data":{}}"#),
                "SEARCH needs data.query, a file name",
            ),
            (
                tracker(r#"{"method":"UPDATE","data":{}}"#),
                "UPDATE needs data.files (the whole list) or data.add / data.remove (changes)",
            ),
            (
                tracker(r#"{"method":"UPDATE","data":{"files":[],"remove":[]}}"#),
                "UPDATE takes either data.files (the whole list) or data.add / data.remove, not both",
            ),
            (
                tracker(r#"{"method":"LIST","data":{}}"#),
                "LIST needs data.peer, a peer as IP:PORT",
            ),
            (
                tracker(r#"{"method":"DOWNLOAD_RANGES","data":{}}"#),
                "DOWNLOAD_RANGES goes to a peer's upload port, not to the tracker",
            ),
            (
                tracker(r#"{"method":"FOO","data":{}}"#),
                r#"unknown method "FOO"; the tracker knows JOIN, SEARCH, UPDATE and LIST"#,
            ),
            (
                upload(r#"{"method":"GET","data":{}}"#),
                r#"unknown method "GET"; a peer's upload port knows DOWNLOAD_REQUEST and DOWNLOAD_RANGES"#,
            ),
            (
                upload(r#"{"method":"DOWNLOAD_REQUEST","data":{"port":1}}"#),
                "DOWNLOAD_REQUEST needs data.filename",
            ),
            (
                upload(r#"{"method":"DOWNLOAD_RANGES","data":{"filename":"a"}}"#),
                "DOWNLOAD_RANGES needs data.port",
            ),
            (
                mismatch(r#"{"method":"RANGE","data":{}}"#),
                r#"unknown method "RANGE"; only DIGEST_MISMATCH may follow a download"#,
            ),
            (
                mismatch(r#"{"method":"DIGEST_MISMATCH","data":{"digest":"x"}}"#),
                "DIGEST_MISMATCH needs data.filename",
            ),
            (
                mismatch(r#"{"method":"DIGEST_MISMATCH","data":{"filename":"x"}}"#),
                "DIGEST_MISMATCH needs data.digest",
            ),
        ];
        for (got, words) in cases {
            assert_eq!(got, words);
        }
        let not_json = tracker("{nope");
        assert!(
            not_json.starts_with("the message is not valid JSON ("),
            "{not_json}"
        );
    }

    /// Each status is written as the wire spells it and read back as the same status; a
    /// status this build does not know is read as it came and written back unchanged.
    #[test]
    fn statuses_keep_their_wire_spelling() {
        let known = [
            (Status::JoinOk, "JOIN_OK"),
            (Status::Ok, "OK"),
            (Status::UpdateOk, "UPDATE_OK"),
            (Status::Error, "ERROR"),
            (Status::FileNotFound, "fileNotFound"),
            (Status::DownloadAccepted, "downloadAccepted"),
            (Status::DownloadRejected, "downloadRejected"),
            (Status::Waiting, "waiting"),
            (Status::Digest, "DIGEST"),
            (Status::Other("newerStatus".into()), "newerStatus"),
        ];
        for (status, spelled) in known {
            let line = Reply::status(status.clone()).to_line();
            assert_eq!(line, format!("{{\"status\":\"{spelled}\"}}\n").into_bytes());
            assert_eq!(parse_reply(line.trim_ascii_end()).unwrap().status, status);
        }
        assert!(
            parse_reply(br#"{"peers":[]}"#).is_err(),
            "a reply needs a status"
        );
    }

    #[test]
    fn join_round_trips() {
        let files = vec![
            FileRecord::sized("a.txt", 3, Some(Digest([7; 32]))),
            FileRecord::sized("b.txt", 0, None),
        ];
        let line = join_line(4000, &files);
        let parsed = parse_tracker_request(line.trim_ascii_end()).unwrap();
        assert_eq!(parsed, TrackerRequest::Join { port: 4000, files });
    }

    #[test]
    fn update_is_a_whole_list_or_changes_never_both() {
        let add = vec![FileRecord::sized("n", 1, None)];
        let remove = vec!["old".to_string()];
        let line = update_change_line(&add, &remove);
        assert_eq!(
            parse_tracker_request(line.trim_ascii_end()).unwrap(),
            TrackerRequest::Update(FileUpdate::Change { add, remove })
        );
        let line = update_line(&[FileRecord::named("x")]);
        assert_eq!(
            parse_tracker_request(line.trim_ascii_end()).unwrap(),
            TrackerRequest::Update(FileUpdate::Replace(vec![FileRecord::named("x")]))
        );
        let e = parse_tracker_request(br#"{"method":"UPDATE","data":{"files":[],"add":[]}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
        let e = parse_tracker_request(br#"{"method":"UPDATE","data":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.add"), "{e}");
    }

    #[test]
    fn long_lists_are_cut_into_parts_that_fit() {
        let files: Vec<FileRecord> = (0..1000)
            .map(|i| FileRecord::sized(format!("{i:0>200}"), i, Some(Digest([0xff; 32]))))
            .collect();
        let parts = record_chunks(&files, 64 * 1024);
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), files.len());
        for part in parts {
            assert!(update_change_line(part, &[]).len() <= 64 * 1024);
        }
        assert_eq!(record_chunks(&[], 10), vec![&[] as &[FileRecord]]);
    }

    /// The SEARCH reply the tracker writes itself is, byte for byte, serde's encoding of the
    /// same [`Reply`]: escapes, absent fields, numbers, empty lists, `truncated`.
    #[test]
    fn search_replies_written_directly_are_serdes_bytes() {
        let names = [
            "aula-01.mp4",
            "aspas \" e barra \\ invertida",
            "controle \u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f} e \u{7f}",
            "Música Ação 日本語 \u{2028}",
            "",
        ];
        let contents = [
            (None, None),
            (Some(0), Some(Digest([0xab; 32]))),
            (Some(i64::MAX as u64), None),
        ];
        for name in names {
            for (size, digest) in contents {
                for (peers, count, truncated) in [(0, 0, false), (1, 1, true), (3, 2, false)] {
                    let peers: Vec<String> = ["10.0.0.1:5000", "[::1]:7", name]
                        .iter()
                        .take(peers)
                        .map(|p| p.to_string())
                        .collect();
                    let results: Vec<SearchResult> = (0..count)
                        .map(|i| SearchResult {
                            name: format!("{name}{i}"),
                            size,
                            digest,
                            holders: 40 + i,
                            peers: peers.clone(),
                        })
                        .collect();
                    let mut out = b"earlier bytes".to_vec();
                    let mut reply = SearchReplyWriter::new(&mut out);
                    for peer in &peers {
                        reply.peer(peer);
                    }
                    let mut written = reply.results();
                    for r in &results {
                        let peers = r.peers.iter().map(String::as_str);
                        written.result(&r.name, r.size, r.digest.as_ref(), r.holders, peers);
                    }
                    written.finish(truncated);
                    let expected = Reply::search(peers, results, truncated).to_line();
                    assert_eq!(
                        String::from_utf8_lossy(&out),
                        String::from_utf8_lossy(&[&b"earlier bytes"[..], &expected].concat())
                    );
                }
            }
        }
    }

    /// A range session is asked with its own method (no `ranges` field needed); the first
    /// form, `DOWNLOAD_REQUEST` with `ranges`, is still understood; an upload port names what
    /// it knows when refusing another method, in the words older peers used.
    #[test]
    fn a_range_session_is_its_own_method() {
        let request = DownloadRequest {
            filename: "v.bin".into(),
            port: 5000,
            offset: None,
            digest: None,
            from_port: Some(6000),
            ranges: Some(true),
            accepts_waiting: false,
            digest_after_data: false,
            file_size: None,
            prefix_digest: None,
        };
        let line = range_session_line(&request);
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"method":"DOWNLOAD_RANGES","#),
            "{text}"
        );
        assert!(!text.contains("ranges\":"), "{text}");
        assert_eq!(
            parse_download_request(line.trim_ascii_end()).unwrap(),
            request
        );
        let first_form = download_line(&request);
        assert_eq!(
            parse_download_request(first_form.trim_ascii_end()).unwrap(),
            request
        );
        let e = parse_download_request(br#"{"method":"GET","data":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(UNKNOWN_METHOD), "{e}");
    }

    #[test]
    fn list_names_a_peer() {
        let line = list_line("10.0.0.1:5000");
        assert_eq!(
            parse_tracker_request(line.trim_ascii_end()).unwrap(),
            TrackerRequest::List {
                peer: "10.0.0.1:5000".into()
            }
        );
        let e = parse_tracker_request(br#"{"method":"LIST","data":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.peer"), "{e}");
    }

    #[test]
    fn missing_fields_are_named() {
        let e = parse_tracker_request(br#"{"method":"SEARCH","data":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.query"), "{e}");
        let e = parse_tracker_request(br#"{"method":"JOIN","data":{"port":5}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.files"), "{e}");
        let e = parse_tracker_request(br#"{"method":"FOO","data":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown method"), "{e}");
    }

    #[test]
    fn data_must_be_an_object() {
        let e = parse_tracker_request(br#"{"method":"JOIN","data":[1234,["a"]]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected an object"), "{e}");
    }

    #[test]
    fn wrong_types_are_reported() {
        let e = parse_tracker_request(br#"{"method":"JOIN","data":{"port":"x","files":[]}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrong type"), "{e}");
    }

    #[test]
    fn legacy_join_accepts_both_spellings() {
        for field in ["filesPath", "filePath"] {
            let msg = format!(r#"{{"method": "JOIN", "data": {{"{field}": "/tmp/p"}}}}"#);
            assert_eq!(
                parse_tracker_request(msg.as_bytes()).unwrap(),
                TrackerRequest::LegacyJoin {
                    folder: "/tmp/p".into()
                }
            );
        }
    }
}
