//! The shared folder: which names are safe, and which files are shared.
//!
//! A peer shares the regular files directly inside its folder. Sub-folders (the peer keeps its
//! partial downloads in one), symbolic links and anything else are never shared or served.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digests::FileIdentity;

/// The longest name accepted, in bytes: the usual file-system limit.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The empty string.
    Empty,
    /// Longer than the limit, in bytes.
    TooLong(usize),
    /// `.` or `..`.
    Dots,
    /// Holds `/` or `\`.
    Separator,
    /// Holds NUL, a newline or another control character.
    Control,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "the file name is empty"),
            NameError::TooLong(limit) => write!(f, "the file name is longer than {limit} bytes"),
            NameError::Dots => write!(f, "the file name cannot be '.' or '..'"),
            NameError::Separator => write!(f, "the file name cannot contain '/' or '\\'"),
            NameError::Control => {
                write!(
                    f,
                    "the file name cannot contain control or invisible formatting characters"
                )
            }
        }
    }
}

impl std::error::Error for NameError {}

/// Unicode characters that change how text around them is shown (bidirectional overrides and
/// isolates, line and paragraph separators, zero-width marks): a name holding one could be
/// printed to look like another name.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// True if `text` holds a control character or one that changes how the text around it is
/// shown: what a console line must never print as is.
pub fn has_hidden_characters(text: &str) -> bool {
    if text.is_ascii() {
        // The common case without decoding: no invisible format character is ASCII, and the
        // ASCII control characters are exactly `char::is_control`'s below 0x80.
        return text.bytes().any(|b| b.is_ascii_control());
    }
    text.chars()
        .any(|c| c.is_control() || is_invisible_format(c))
}

/// Checks that `name` is a plain name that stays inside a folder, at most `max_bytes` long.
pub fn check_name_len(name: &str, max_bytes: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max_bytes {
        return Err(NameError::TooLong(max_bytes));
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    if name.contains(['/', '\\']) {
        return Err(NameError::Separator);
    }
    if has_hidden_characters(name) {
        return Err(NameError::Control);
    }
    Ok(())
}

/// [`check_name_len`] with the usual limit.
pub fn check_name(name: &str) -> Result<(), NameError> {
    check_name_len(name, MAX_NAME_BYTES)
}

/// A shared file as listed: its name, size and identity (what tells a changed file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Which version of the file this is: device, inode, size, modification and change times,
    /// as the digest cache tells versions apart.
    pub identity: FileIdentity,
}

/// A peer's shared folder.
#[derive(Debug, Clone)]
pub struct SharedDir {
    root: PathBuf,
}

impl SharedDir {
    /// Opens (creating it if needed) the folder.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<SharedDir> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create folder {}: {e}", root.display()),
            )
        })?;
        Ok(SharedDir { root })
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The names of the shared files, sorted: regular files directly inside, with safe names.
    pub fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.list_files()?.into_iter().map(|f| f.name).collect())
    }

    /// The shared files with their sizes, sorted by name: regular files directly inside, with
    /// safe names. A file that vanishes while being listed is left out.
    pub fn list_files(&self) -> io::Result<Vec<Listed>> {
        let mut files = Vec::new();
        for shareable in shareable_entries(&self.root)? {
            let (name, entry) = shareable?;
            // metadata() of a directory entry does not follow links either.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            files.push(Listed {
                name,
                size: meta.len(),
                identity: FileIdentity::of(&meta),
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// The path of a shared file, if `name` is safe and names a regular file (not a link).
    pub fn shared_file(&self, name: &str) -> Result<Option<(PathBuf, u64)>, NameError> {
        check_name(name)?;
        let path = self.root.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => Ok(Some((path, meta.len()))),
            _ => Ok(None),
        }
    }

    /// Where a download of `name` lands; `name` must be safe.
    pub fn final_path(&self, name: &str) -> Result<PathBuf, NameError> {
        check_name(name)?;
        Ok(self.root.join(name))
    }
}

/// The entries of the folder `dir` that may be shared, with their names, in the folder's order:
/// regular files directly inside (a link is not followed, so it is not a plain file) whose
/// names are safe ([`check_name`]). What else is there is passed over; an error reading the
/// folder is an item.
pub fn shareable_entries(
    dir: &Path,
) -> io::Result<impl Iterator<Item = io::Result<(String, fs::DirEntry)>>> {
    Ok(fs::read_dir(dir)?.filter_map(|entry| {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return Some(Err(e)),
        };
        match entry.file_type() {
            Ok(kind) if kind.is_file() => {}
            Ok(_) => return None,
            Err(e) => return Some(Err(e)),
        }
        let name = entry.file_name().into_string().ok()?;
        check_name(&name).ok()?;
        Some(Ok((name, entry)))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name(".."), Err(NameError::Dots));
        assert_eq!(check_name("../x"), Err(NameError::Separator));
        assert_eq!(check_name("a/b"), Err(NameError::Separator));
        assert_eq!(check_name("a\\b"), Err(NameError::Separator));
        assert_eq!(check_name("a\nb"), Err(NameError::Control));
        assert_eq!(check_name("a\0b"), Err(NameError::Control));
        assert_eq!(check_name("evil\u{202E}txt.exe"), Err(NameError::Control));
        assert!(check_name(&"x".repeat(256)).is_err());
        assert!(check_name("vídeo final.mp4").is_ok());
        assert!(check_name("..hidden").is_ok());
    }

    /// Only regular files directly inside with safe names are shareable: not a folder, not a
    /// link (even to a file), not a name with a control character.
    #[test]
    fn only_plain_files_with_safe_names_are_shareable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("b.txt"), "b").unwrap();
        fs::write(root.join("a.txt"), "a").unwrap();
        fs::write(root.join("linha\nnova"), "x").unwrap();
        fs::create_dir(root.join("pasta")).unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("link.txt")).unwrap();
        let mut names: Vec<String> = shareable_entries(root)
            .unwrap()
            .map(|item| item.unwrap().0)
            .collect();
        names.sort();
        assert_eq!(names, ["a.txt", "b.txt"]);
        let shared = SharedDir::open(root).unwrap();
        assert_eq!(shared.list().unwrap(), ["a.txt", "b.txt"]);
        assert!(shareable_entries(&root.join("nenhuma")).is_err());
    }

    /// The ASCII shortcut says what the character test says, for every ASCII character.
    #[test]
    fn hidden_ascii_characters_are_the_control_ones() {
        for c in (0u8..0x80).map(char::from) {
            let text = format!("a{c}b");
            assert_eq!(has_hidden_characters(&text), c.is_control(), "{c:?}");
            assert_eq!(
                has_hidden_characters(&format!("{text}é")),
                c.is_control(),
                "{c:?}"
            );
        }
    }
}
