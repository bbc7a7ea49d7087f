//! The Python original's dialect, as its peer speaks it to the tracker.
//!
//! The original's peer sends JSON with no newline and reads bare replies: the bytes `JOIN_OK`
//! and `UPDATE_OK`, and for SEARCH the Python `str()` of a list of port numbers. A connection
//! whose JOIN names a folder (`filesPath`/`filePath`) instead of a port is answered this way.

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
}
