//! The Python original's dialect, both ways.
//!
//! **The original's peers on our tracker.** The original's peer sends JSON with no newline and
//! reads bare replies: the bytes `JOIN_OK` and `UPDATE_OK`, and for SEARCH the Python `str()` of
//! a list of port numbers. A connection whose JOIN names a folder (`filesPath`, or the seed's
//! `filePath`) instead of a port is answered this way.
//!
//! Its downloader reads each reply of an uploader with one `recv(1024)` and parses exactly what
//! that call returned, then takes the file with one `recv(fileSize)`. That only works when the
//! replies and the data arrive in separate reads, which TCP does not promise; [`ReplyPacer`]
//! makes it very likely for such a downloader, and costs our own peers nothing.
//!
//! **Our peers on the original's tracker.** [`join_request`], [`search_request`] and
//! [`update_request`] are the exact bytes the original's peer sends, and [`split_bare_reply`]
//! reads the tracker's bare answers back. That tracker reads each message with one `recv(1024)` and
//! parses it alone, so a message must fit in [`ORIGINAL_MAX_MESSAGE`] bytes and be written once.

use std::time::{Duration, Instant};

/// The bare reply to an accepted JOIN.
pub const JOIN_OK: &[u8] = b"JOIN_OK";
/// The bare reply to an accepted UPDATE.
pub const UPDATE_OK: &[u8] = b"UPDATE_OK";

/// A SEARCH result as the original prints it: `[54321, 54322]`.
pub fn search_reply(ports: &[u16]) -> Vec<u8> {
    let items: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("[{}]", items.join(", ")).into_bytes()
}

/// Formats names as Python's `str(list)` does (`['a.txt', "it's"]`), so console lines read
/// exactly like the original's.
pub fn python_list<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| python_str(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

/// Python's `repr()` of a string: single quotes unless the text holds one and no double quote.
fn python_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The most the original's tracker reads of one message (one `recv(1024)`): a longer message
/// is cut in two, neither part parses, and it is never answered.
pub const ORIGINAL_MAX_MESSAGE: usize = 1024;

/// The original peer's JOIN, `json.dumps({"method": "JOIN", "data": {"filesPath": folder}})`:
/// the folder's path, which the original's tracker lists on its own disk.
pub fn join_request(folder: &str) -> Vec<u8> {
    format!(
        r#"{{"method": "JOIN", "data": {{"filesPath": {}}}}}"#,
        python_json_str(folder)
    )
    .into_bytes()
}

/// The original peer's SEARCH, `'{"method":"SEARCH","data":{"query":"%s"}}' % name`. The
/// original pastes the name in unescaped; here it is escaped as JSON, which gives the same bytes
/// for every name without a quote, a backslash or a control character, and valid JSON for those.
pub fn search_request(name: &str) -> Vec<u8> {
    format!(
        r#"{{"method":"SEARCH","data":{{"query":{}}}}}"#,
        json_str(name)
    )
    .into_bytes()
}

/// The original peer's UPDATE after a download:
/// `'{"method": "UPDATE", "data": {"files": [%s]}}'` with the names as `"a","b"` (no spaces).
/// Names are escaped as in [`search_request`].
pub fn update_request<S: AsRef<str>>(names: &[S]) -> Vec<u8> {
    let quoted: Vec<String> = names.iter().map(|n| json_str(n.as_ref())).collect();
    format!(
        r#"{{"method": "UPDATE", "data": {{"files": [{}]}}}}"#,
        quoted.join(",")
    )
    .into_bytes()
}

/// A JSON string as serde writes it: UTF-8 kept, quotes, backslashes and controls escaped.
fn json_str(s: &str) -> String {
    // Serializing a `str` cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// A JSON string as Python's `json.dumps` writes it (`ensure_ascii`): everything outside
/// printable ASCII as `\uXXXX` (UTF-16 units), with the short forms for the usual controls.
pub fn python_json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// One answer of the original's tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BareReply {
    /// `JOIN_OK`.
    JoinOk,
    /// `UPDATE_OK`.
    UpdateOk,
    /// A SEARCH result: `[54321, 54322]`, the ports of its peers' tracker connections.
    Ports(Vec<u16>),
}

/// The longest SEARCH result read back (about 9,000 ports).
pub const MAX_BARE_REPLY: usize = 64 * 1024;

/// The first of the original tracker's answers in `buf`, and how many bytes it took.
///
/// The answers carry no delimiter, but each has a shape of its own, so answers that arrive
/// together, or in pieces, are told apart. `None`: the answer is not complete yet. An error
/// means the bytes are none of the original's answers (it takes the whole buffer, whose end
/// can no longer be found).
pub fn split_bare_reply(buf: &[u8]) -> Option<(Result<BareReply, String>, usize)> {
    if buf.is_empty() {
        return None;
    }
    for (token, reply) in [
        (JOIN_OK, BareReply::JoinOk),
        (UPDATE_OK, BareReply::UpdateOk),
    ] {
        if buf.starts_with(token) {
            return Some((Ok(reply), token.len()));
        }
        if token.starts_with(buf) {
            return None;
        }
    }
    if buf[0] != b'[' {
        return Some((Err(unexpected(buf)), buf.len()));
    }
    let Some(end) = buf.iter().position(|&b| b == b']') else {
        return (buf.len() > MAX_BARE_REPLY).then(|| (Err(unexpected(buf)), buf.len()));
    };
    let list = &buf[..=end];
    let reply = parse_ports(&list[1..end]).ok_or_else(|| unexpected(list));
    Some((reply, end + 1))
}

/// Describes (a bounded prefix of) bytes that are not an answer.
fn unexpected(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(80)];
    format!(
        "resposta inesperada do servidor: {:?}",
        String::from_utf8_lossy(shown)
    )
}

/// `54321, 54322` (inside the brackets) as ports; `None` if any item is not a port.
fn parse_ports(inner: &[u8]) -> Option<BareReply> {
    let text = std::str::from_utf8(inner).ok()?;
    if text.trim().is_empty() {
        return Some(BareReply::Ports(Vec::new()));
    }
    text.split(',')
        .map(|item| item.trim().parse::<u16>().ok())
        .collect::<Option<Vec<u16>>>()
        .map(BareReply::Ports)
}

/// The least time an uploader leaves between two replies to the original's downloader, and
/// between its last reply and the file's bytes: ample for a woken reader to have taken the
/// reply out of the socket on its own, even on a busy machine.
pub const REPLY_GAP: Duration = Duration::from_millis(300);

/// The largest file an uploader sends the original's downloader in a single write, right
/// after the accept reply. The downloader takes the file with a single `recv(fileSize)`, which
/// returns what has landed when it runs. TCP cuts what is sent into segments of at most half
/// the reader's window (32 KiB for the original's default 64 KiB): a file that fits in one
/// segment is whole in that `recv` however loaded the machine; up to this size, one write
/// sends both segments back to back, and the `recv` got both in 100 of 100 tries of a
/// 60,000-byte file (quiet, with 8 busy loops, and with bulk loopback traffic too), but a
/// full test run under heavy load once saw only the first 32,768 bytes. Larger files (more
/// segments, sent as the window opens) reach it cut short, whatever the uploader does.
pub const ONE_WRITE_MAX: u64 = 60 * 1024;

/// Spaces an uploader's writes by [`REPLY_GAP`] when the downloader is the original's.
///
/// The original's downloader is recognised by its DOWNLOAD_REQUEST, which has no `fromPort`
/// (our own downloader always sends one and reads a byte stream, so it is never paced).
#[derive(Debug)]
pub struct ReplyPacer {
    gap: Option<Duration>,
    last: Option<Instant>,
}

impl ReplyPacer {
    /// A pacer for a downloader that did (`true`) or did not send `fromPort`.
    pub fn new(sent_from_port: bool) -> ReplyPacer {
        ReplyPacer {
            gap: (!sent_from_port).then_some(REPLY_GAP),
            last: None,
        }
    }

    /// Waits, for the original's downloader, until the gap since the last write has passed.
    /// After a user's SIM/NAO the gap has usually passed already and this returns at once.
    pub fn before_write(&mut self) {
        if let (Some(gap), Some(last)) = (self.gap, self.last) {
            let wait = gap.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    /// Notes that a reply was just written.
    pub fn wrote(&mut self) {
        self.last = Some(Instant::now());
    }

    /// True when writes are spaced (the downloader is the original's).
    pub fn is_pacing(&self) -> bool {
        self.gap.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_like_python() {
        assert_eq!(python_list::<&str>(&[]), "[]");
        assert_eq!(python_list(&["a.txt", "b c"]), "['a.txt', 'b c']");
        assert_eq!(python_list(&["it's"]), "[\"it's\"]");
        assert_eq!(python_list(&["a\nb"]), "['a\\nb']");
        assert_eq!(search_reply(&[54321, 54322]), b"[54321, 54322]".to_vec());
    }

    /// Our peer's messages are the original peer's bytes: `json.dumps` spacing and escaping for
    /// JOIN, none for SEARCH, `"a","b"` for UPDATE.
    #[test]
    fn requests_are_the_original_peers_bytes() {
        assert_eq!(
            join_request("/tmp/p2p/5000"),
            br#"{"method": "JOIN", "data": {"filesPath": "/tmp/p2p/5000"}}"#.to_vec()
        );
        assert_eq!(
            join_request("/tmp/v\u{ed}deo \"x\"\u{1f600}"),
            br#"{"method": "JOIN", "data": {"filesPath": "/tmp/v\u00eddeo \"x\"\ud83d\ude00"}}"#
                .to_vec()
        );
        assert_eq!(
            search_request("song.mp3"),
            br#"{"method":"SEARCH","data":{"query":"song.mp3"}}"#.to_vec()
        );
        assert_eq!(
            update_request(&["a.txt", "v\u{ed}deo.mp4"]),
            "{\"method\": \"UPDATE\", \"data\": {\"files\": [\"a.txt\",\"v\u{ed}deo.mp4\"]}}"
                .as_bytes()
                .to_vec()
        );
        assert_eq!(
            update_request::<&str>(&[]),
            br#"{"method": "UPDATE", "data": {"files": []}}"#.to_vec()
        );
        // A name with a quote stays valid JSON.
        let v: serde_json::Value = serde_json::from_slice(&search_request("a\"b")).unwrap();
        assert_eq!(v["data"]["query"], "a\"b");
    }

    /// Reads every answer buffered in `buf`, draining what they took.
    fn drain(buf: &mut Vec<u8>) -> Vec<Result<BareReply, String>> {
        let mut got = Vec::new();
        while let Some((reply, used)) = split_bare_reply(buf) {
            buf.drain(..used);
            got.push(reply);
        }
        got
    }

    /// Answers are told apart whether they arrive together or one byte at a time.
    #[test]
    fn bare_replies_are_read_back_however_they_arrive() {
        let stream = b"JOIN_OK[54321, 4001][]UPDATE_OK[7]";
        let want = vec![
            BareReply::JoinOk,
            BareReply::Ports(vec![54321, 4001]),
            BareReply::Ports(vec![]),
            BareReply::UpdateOk,
            BareReply::Ports(vec![7]),
        ];
        let mut whole = stream.to_vec();
        assert_eq!(
            drain(&mut whole),
            want.iter().cloned().map(Ok).collect::<Vec<_>>()
        );
        assert!(whole.is_empty());

        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in stream {
            buf.push(*b);
            got.extend(drain(&mut buf).into_iter().map(Result::unwrap));
        }
        assert_eq!(got, want);
    }

    /// Anything else is an error naming what came, never a panic or an endless wait.
    #[test]
    fn other_bytes_are_refused() {
        for junk in [
            &b"{\"status\":\"OK\"}"[..],
            b"JOIN_NO",
            b"[1, x]",
            b"[70000]",
        ] {
            let (reply, _) = split_bare_reply(junk).unwrap();
            let e = reply.unwrap_err();
            assert!(e.starts_with("resposta inesperada do servidor"), "{e}");
        }
        let mut open = b"[1, 2".to_vec();
        assert!(split_bare_reply(&open).is_none());
        open.extend(vec![b' '; MAX_BARE_REPLY]);
        let (reply, used) = split_bare_reply(&open).unwrap();
        assert!(reply.is_err());
        assert_eq!(used, open.len());
    }

    /// Only a downloader without `fromPort` is paced, and the second write waits the gap.
    #[test]
    fn only_the_originals_downloader_is_paced() {
        assert!(!ReplyPacer::new(true).is_pacing());
        let mut original = ReplyPacer::new(false);
        assert!(original.is_pacing());
        let before_write = Instant::now();
        original.wrote();
        original.before_write();
        assert!(before_write.elapsed() >= REPLY_GAP);
    }
}
