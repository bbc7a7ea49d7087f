//! Which pieces of a partial download are verified: a small file beside the partial.
//!
//! A download from several peers writes pieces out of order into a file of the final size, so
//! the partial's length no longer says how much of it is good. `NAME.pieces` does: 8 bytes
//! (the piece length, little-endian) then one byte per piece, 1 once the piece was verified
//! and written. It is a hint, not a proof: a resumed download checks every marked piece
//! against the file's outboard again before trusting it, so a mark that outlived its data (a
//! crash before the data reached the disk) only costs a refetch.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The piece map beside the partial file `part` (`NAME.part` → `NAME.pieces`).
pub fn path_for(part: &Path) -> PathBuf {
    part.with_extension("pieces")
}

/// The outboard kept beside the partial file `part` (`NAME.part` → `NAME.obao`).
pub fn outboard_path_for(part: &Path) -> PathBuf {
    part.with_extension("obao")
}

/// A piece map open for marking.
pub struct PieceMap {
    file: File,
}

const HEADER: u64 = 8;

impl PieceMap {
    /// Creates (or resets) the map at `path` for pieces of `piece_len` bytes.
    pub fn create(path: &Path, piece_len: u64) -> io::Result<PieceMap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.write_all_at(&piece_len.to_le_bytes(), 0)?;
        Ok(PieceMap { file })
    }

    /// Opens the map at `path` if it describes pieces of `piece_len` bytes; returns it with the
    /// pieces it marks (of `count`).
    pub fn open(path: &Path, piece_len: u64, count: usize) -> io::Result<(PieceMap, Vec<bool>)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0)?;
        if u64::from_le_bytes(header) != piece_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the piece map is for another piece length",
            ));
        }
        let mut marks = vec![0u8; count];
        let n = read_up_to(&file, &mut marks, HEADER)?;
        marks.truncate(n);
        let mut marked: Vec<bool> = marks.iter().map(|&b| b == 1).collect();
        marked.resize(count, false);
        Ok((PieceMap { file }, marked))
    }

    /// Marks piece `index` as verified and written.
    pub fn mark(&self, index: usize) -> io::Result<()> {
        self.file.write_all_at(&[1], HEADER + index as u64)
    }
}

/// Bytes from the start of a partial that the map at `path` marks as verified, without gaps,
/// for a file of `size` bytes: where a download of the whole file may resume.
pub fn verified_prefix(path: &Path, size: u64) -> Option<u64> {
    let text = fs::read(path).ok()?;
    let piece_len = u64::from_le_bytes(text.get(..HEADER as usize)?.try_into().ok()?);
    if piece_len == 0 {
        return None;
    }
    let marked = text[HEADER as usize..]
        .iter()
        .take_while(|&&b| b == 1)
        .count() as u64;
    Some(marked.saturating_mul(piece_len).min(size))
}

/// Removes the piece map and the outboard kept beside the partial file `part`.
pub fn remove_beside(part: &Path) {
    let _ = fs::remove_file(path_for(part));
    let _ = fs::remove_file(outboard_path_for(part));
}

fn read_up_to(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks survive a reopen; the verified prefix stops at the first gap; another piece
    /// length is refused.
    #[test]
    fn marks_survive_and_the_prefix_stops_at_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("a.b.part");
        let path = path_for(&part);
        assert_eq!(path, dir.path().join("a.b.pieces"));
        let map = PieceMap::create(&path, 100).unwrap();
        for i in [0, 1, 3] {
            map.mark(i).unwrap();
        }
        let (_, marked) = PieceMap::open(&path, 100, 5).unwrap();
        assert_eq!(marked, [true, true, false, true, false]);
        assert_eq!(verified_prefix(&path, 450), Some(200));
        assert!(PieceMap::open(&path, 64, 5).is_err());
        map.mark(2).unwrap();
        map.mark(4).unwrap();
        assert_eq!(verified_prefix(&path, 450), Some(450));
        remove_beside(&part);
        assert!(!path.exists());
    }
}
