//! The Python original's dialect, as its peer speaks it to the tracker.
//!
//! The original's peer sends JSON with no newline and reads bare replies: the bytes `JOIN_OK`
//! and `UPDATE_OK`, and for SEARCH the Python `str()` of a list of port numbers. A connection
//! whose JOIN names a folder (`filesPath`/`filePath`) instead of a port is answered this way.
//!
//! Its downloader reads each reply of an uploader with one `recv(1024)` and parses exactly what
//! that call returned, then takes the file with one `recv(fileSize)`. That only works when the
//! replies and the data arrive in separate reads, which TCP does not promise; [`ReplyPacer`]
//! makes it very likely for such a downloader, and costs our own peers nothing.

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

/// The least time an uploader leaves between two replies to the original's downloader, and
/// between its last reply and the file's bytes: ample for a woken reader to have taken the
/// reply out of the socket on its own, even on a busy machine.
pub const REPLY_GAP: Duration = Duration::from_millis(300);

/// The largest file an uploader sends the original's downloader in a single write, so that it
/// leaves as one loopback segment (the loopback MTU is 64 KiB) and the downloader's single
/// `recv(fileSize)` gets all of it. Larger files reach it cut short, whatever the uploader does.
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
