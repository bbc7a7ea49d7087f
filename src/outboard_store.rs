//! The uploader's outboards: each shared file's BLAKE3 tree, computed once and kept on disk.
//!
//! Outboards live in `.napster/outboard/<digest>.obao` inside the shared folder (a sub-folder,
//! never shared), named by the digest of the content they describe, so a file that changes gets
//! a new one and a restart finds the old one again. An outboard is computed the first time a
//! range session asks for its file (one pass over the file, BLAKE3 at memory speed), checked
//! against the digest, and written under a temporary name first. One found on disk is checked
//! once per run before it is trusted. Memory: a few hashes, whatever the file's size.
//!
//! (Kept apart from [`crate::digests::DigestCache`] while that cache is being reworked; the
//! digest stays the key that ties the two together.)

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex};

use crate::verified;

/// Outboards of the shared files, by digest.
pub struct OutboardStore {
    dir: PathBuf,
    /// Digests whose outboard on disk was checked in this run.
    checked: Mutex<HashSet<String>>,
    /// Digests whose outboard is being computed or checked right now.
    busy: Mutex<HashSet<String>>,
    done: Condvar,
}

impl OutboardStore {
    /// The store of the shared folder `shared_root` (created when first used).
    pub fn new(shared_root: &Path) -> OutboardStore {
        OutboardStore {
            dir: shared_root.join(".napster").join("outboard"),
            checked: Mutex::default(),
            busy: Mutex::default(),
            done: Condvar::new(),
        }
    }

    /// The outboard of `file` (`size` bytes, BLAKE3 `digest` in hex), opened for reading:
    /// computed now if it was never computed. Fails with `InvalidData` if the file's content no
    /// longer has that digest (it changed since it was hashed).
    pub fn open(&self, file: &File, size: u64, digest: &str) -> io::Result<File> {
        let root = parse_digest(digest)?;
        let path = self.dir.join(format!("{digest}.obao"));
        {
            let mut busy = self.busy.lock();
            loop {
                if self.checked.lock().contains(digest)
                    && let Ok(found) = File::open(&path)
                {
                    return Ok(found);
                }
                if busy.insert(digest.to_string()) {
                    break;
                }
                self.done.wait(&mut busy);
            }
        }
        let made = self.check_or_compute(&path, file, size, &root);
        if made.is_ok() {
            self.checked.lock().insert(digest.to_string());
        }
        self.busy.lock().remove(digest);
        self.done.notify_all();
        made?;
        File::open(&path)
    }

    fn check_or_compute(
        &self,
        path: &Path,
        file: &File,
        size: u64,
        root: &blake3::Hash,
    ) -> io::Result<()> {
        if let Ok(found) = File::open(path) {
            match verified::check_outboard(&found, size, root) {
                Ok(()) => return Ok(()),
                Err(e) => log::warn!("{}: {e}; computing it again", path.display()),
            }
        }
        fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension(format!("obao.tmp-{}", std::process::id()));
        let computed = compute(&tmp, file, size);
        match computed {
            Ok(got) if got == *root => fs::rename(&tmp, path),
            Ok(got) => {
                let _ = fs::remove_file(&tmp);
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the file changed since it was hashed (BLAKE3 {got}, announced {root})"
                    ),
                ))
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// Writes the outboard of the first `size` bytes of `file` to `path`; returns the root.
fn compute(path: &Path, file: &File, size: u64) -> io::Result<blake3::Hash> {
    let mut out = BufWriter::new(File::create(path)?);
    let reader = io::BufReader::with_capacity(1 << 20, PositionedReader { file, pos: 0 });
    let root = verified::create_outboard(reader.take(size), size, &mut out)?;
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(root)
}

/// Parses 64 hex digits.
fn parse_digest(digest: &str) -> io::Result<blake3::Hash> {
    blake3::Hash::from_hex(digest).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Reads a file from its start without moving the file's own position (an upload may be
/// sending from the same open file).
struct PositionedReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed once, found again by a new store (a restart), recomputed if damaged, and
    /// refused when the file no longer has the digest.
    #[test]
    fn an_outboard_is_computed_once_and_checked_when_found() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("f");
        fs::write(&path, &data).unwrap();
        let digest = blake3::hash(&data).to_hex().to_string();
        let file = File::open(&path).unwrap();
        let size = data.len() as u64;

        let store = OutboardStore::new(dir.path());
        let mut ob = Vec::new();
        store
            .open(&file, size, &digest)
            .unwrap()
            .read_to_end(&mut ob)
            .unwrap();
        assert_eq!(ob.len() as u64, verified::outboard_len(size));
        let stored = dir
            .path()
            .join(".napster/outboard")
            .join(format!("{digest}.obao"));
        let made = fs::metadata(&stored).unwrap().modified().unwrap();

        let again = OutboardStore::new(dir.path());
        again.open(&file, size, &digest).unwrap();
        assert_eq!(fs::metadata(&stored).unwrap().modified().unwrap(), made);

        let mut bad = ob.clone();
        bad[5] ^= 1;
        fs::write(&stored, &bad).unwrap();
        let third = OutboardStore::new(dir.path());
        let mut fixed = Vec::new();
        third
            .open(&file, size, &digest)
            .unwrap()
            .read_to_end(&mut fixed)
            .unwrap();
        assert_eq!(fixed, ob);

        let other = blake3::hash(b"something else").to_hex().to_string();
        let e = OutboardStore::new(dir.path())
            .open(&file, size, &other)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
