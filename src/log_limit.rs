//! Keeping stderr bounded when the network repeats itself: text from the network is logged as a
//! short prefix ([`prefix`]). A warning that can repeat without end goes through a
//! [`crate::throttle::Throttle`].

use std::borrow::Cow;

/// Bytes of network-supplied text (a name, a path) shown in a log line.
pub const LOGGED_TEXT: usize = 120;

/// `text` cut to at most `max` bytes on a character boundary, with how long it was when cut.
pub fn prefix(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}... ({} bytes)", &text[..end], text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_cut_on_character_boundaries() {
        assert_eq!(prefix("short", 10), "short");
        assert_eq!(prefix("abcdef", 3), "abc... (6 bytes)");
        assert_eq!(prefix("ééé", 3), "é... (6 bytes)");
    }
}
