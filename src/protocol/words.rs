//! How names and queries are cut into words for keyword search (PROTOCOL.md, T2). The
//! tracker indexes these words; the peer uses the same rules to tell a query without words.
//!
//! A text is first *folded*: lower-cased, decomposed (Unicode NFD) and stripped of combining
//! marks, so `Música`, `MUSICA` and `musica` fold alike, and a name saved in decomposed form
//! (as macOS writes them) folds like its composed twin. The folded text is then split on every
//! character that is not a letter or a digit: `Aula-01 (final).MP4` has the words `aula`,
//! `01`, `final` and `mp4`.
//!
//! Folding comes before splitting because a combining accent is not a letter: splitting first
//! would cut a decomposed `Mu\u{301}sica` into `mu` and `sica`.
//!
//! ASCII text, the common case, is folded byte by byte without the Unicode tables.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Most words a SEARCH query may hold (all must match, so more would only narrow it).
pub const MAX_QUERY_WORDS: usize = 16;

/// The distinct words of a query, folded, in one buffer (a SEARCH allocates twice, not once
/// per word; nothing at all when the value is reused with [`QueryWords::fill`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryWords {
    folded: String,
    spans: Vec<(usize, usize)>,
    /// Indexes into `spans`, longest word first (ties in query order).
    by_length: Vec<u32>,
}

impl QueryWords {
    /// The distinct words of `query`, folded, in order.
    pub fn of(query: &str) -> QueryWords {
        let mut words = QueryWords::default();
        words.fill(query);
        words
    }

    /// Makes these the distinct words of `query`, reusing the buffers.
    pub fn fill(&mut self, query: &str) {
        fold_into(query, &mut self.folded);
        let base = self.folded.as_ptr() as usize;
        let (folded, spans) = (&self.folded, &mut self.spans);
        spans.clear();
        split_folded(folded, |w| {
            let start = w.as_ptr() as usize - base;
            if !spans.iter().any(|&(a, b)| &folded[a..b] == w) {
                spans.push((start, start + w.len()));
            }
        });
        self.by_length.clear();
        self.by_length.extend(0..self.spans.len() as u32);
        let spans = &self.spans;
        self.by_length.sort_by_key(|&i| {
            let (a, b) = spans[i as usize];
            std::cmp::Reverse(b - a)
        });
    }

    /// How many distinct words.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when the query has no word at all (`*`, `---`).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The words, folded, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.spans.iter().map(|&(a, b)| &self.folded[a..b])
    }

    /// The words, longest first (they tend to be the rarer: a number, a title word).
    pub fn longest_first(&self) -> impl Iterator<Item = &str> {
        self.by_length.iter().map(|&i| self.get(i as usize))
    }

    /// Word `i`.
    fn get(&self, i: usize) -> &str {
        let (a, b) = self.spans[i];
        &self.folded[a..b]
    }
}

/// True if `text` holds every word of `query`; `buf` is scratch space.
pub fn holds_all(text: &str, query: &QueryWords, buf: &mut String) -> bool {
    fold_into(text, buf);
    let mut found = 0u64;
    let all = if query.len() >= 64 {
        u64::MAX
    } else {
        (1u64 << query.len()) - 1
    };
    split_folded(buf, |w| {
        for i in 0..query.len().min(64) {
            if query.get(i) == w {
                found |= 1 << i;
            }
        }
    });
    found & all == all
}

/// Folds `text` into `buf` (cleared first): lower case, no accents.
pub fn fold_into(text: &str, buf: &mut String) {
    buf.clear();
    if text.is_ascii() {
        buf.push_str(text);
        buf.make_ascii_lowercase();
        return;
    }
    // Lower-case first: some capitals lower-case to a letter plus a combining mark
    // (`İ` → `i` + U+0307), which the decomposition then strips.
    let lower = text.to_lowercase();
    buf.extend(lower.nfd().filter(|&c| !is_combining_mark(c)));
}

/// Calls `each` with every word of the folded text `folded`, in order, repeats included.
pub fn split_folded(folded: &str, mut each: impl FnMut(&str)) {
    if folded.is_ascii() {
        // The common case, byte by byte: every ASCII byte is a whole character, so any
        // byte offset is a character boundary.
        let mut start = None;
        for (i, b) in folded.bytes().enumerate() {
            if b.is_ascii_alphanumeric() {
                start.get_or_insert(i);
            } else if let Some(from) = start.take() {
                each(&folded[from..i]);
            }
        }
        if let Some(from) = start {
            each(&folded[from..]);
        }
        return;
    }
    for word in folded.split(|c: char| !c.is_alphanumeric()) {
        if !word.is_empty() {
            each(word);
        }
    }
}

/// The words of `text`, folded, in order, each once (see [`QueryWords`] for the search path).
pub fn words(text: &str) -> Vec<String> {
    QueryWords::of(text).iter().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_accents_fold_away() {
        assert_eq!(words("Música Ao Vivo.mp3"), ["musica", "ao", "vivo", "mp3"]);
        assert_eq!(words("MUSICA"), ["musica"]);
        assert_eq!(words("Mu\u{301}sica"), ["musica"]);
        assert_eq!(words("AÇÃO é Ótima"), ["acao", "e", "otima"]);
        assert_eq!(words("İstanbul"), ["istanbul"]);
    }

    #[test]
    fn anything_not_a_letter_or_digit_separates_words() {
        assert_eq!(words("Aula-01 (final).MP4"), ["aula", "01", "final", "mp4"]);
        assert_eq!(words("a_b+c  a"), ["a", "b", "c"]);
        assert_eq!(words("---"), Vec::<String>::new());
        assert_eq!(words("*"), Vec::<String>::new());
        assert_eq!(words("日本語 ファイル"), ["日本語", "ファイル"]);
        assert_eq!(
            words("--Faixa 07__(ao vivo)"),
            ["faixa", "07", "ao", "vivo"]
        );
        assert_eq!(words("x"), ["x"]);
        assert_eq!(words(""), Vec::<String>::new());
    }

    /// ASCII text is folded and split byte by byte; the result is what the Unicode path gives.
    #[test]
    fn the_ascii_path_agrees_with_the_unicode_path() {
        for text in [
            "Aula-01 (FINAL).mp4",
            "--a--b--",
            "a",
            "",
            " 9 ",
            "x_Y+z",
            "~`!@#$%^&*",
        ] {
            let mut buf = String::new();
            fold_into(text, &mut buf);
            assert_eq!(buf, text.to_lowercase(), "{text}");
            let mut got = Vec::new();
            split_folded(&buf, |w| got.push(w.to_string()));
            let want: Vec<String> = buf
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect();
            assert_eq!(got, want, "{text}");
        }
    }
}
