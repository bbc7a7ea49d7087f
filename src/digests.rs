//! The BLAKE3 digests of shared files: each version of a file is hashed once, and what was
//! learnt is kept in memory and, per file, in `.napster/digests/` inside the shared folder, so a
//! restarted peer answers its first request at once.
//!
//! A digest belongs to one version of a file, recognised without reading it by its
//! [`FileIdentity`]: device, inode, size, modification time and change time (`ctime`, which
//! every write, truncation, `chmod` or rename moves, and which no program can set back). A file
//! rewritten with its size and modification time kept still gets a new `ctime`, so it is hashed
//! again. A downloader that reports a mismatch makes the uploader [`DigestCache::forget`] the
//! digest and hash the file again.
//!
//! On disk each shared name has one record, `<key>.json` (key: 32 hex digits of the name's
//! BLAKE3), holding the name, the identity and the digest; it is replaced atomically (written
//! beside, then renamed). Data derived from the same version of the file sits beside it under
//! the same key with another extension ([`DigestCache::sidecar_path`]) and is valid exactly
//! while the record is: a record written for a new version of the file,
//! [`DigestCache::forget`] and pruning remove it. `.napster/` is never shared (only regular
//! files directly in the folder are).
//!
//! **One read per version.** The BLAKE3 outboard a range session serves (see
//! [`crate::verified`]) has the digest as its root, so the pass that computes a digest also
//! writes the outboard, `<key>.obao` beside the record, at the CPU cost of the plain hash
//! (`scripts/bench.sh hash`). [`DigestCache::outboard`] hands it out, checked against the
//! digest once per run; a file hashed before outboards were kept is read once more, for both.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::verified;

/// A BLAKE3 digest as lower-case hex.
pub type DigestHex = String;

/// Bytes read per call when hashing a file.
const HASH_BUFFER: usize = 1 << 20;
/// A record file larger than this is not ours: it is ignored.
const MAX_RECORD: u64 = 4096;

/// What tells one version of a file from another without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// The device holding the file.
    pub device: u64,
    /// The file's inode number.
    pub inode: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Last modification, nanoseconds since the epoch.
    pub modified_ns: i128,
    /// Last change of contents or metadata (`ctime`), nanoseconds since the epoch.
    pub changed_ns: i128,
}

impl FileIdentity {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &Metadata) -> FileIdentity {
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        FileIdentity {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified_ns: ns(meta.mtime(), meta.mtime_nsec()),
            changed_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// What is known of one shared file, as stored in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The shared name.
    pub name: String,
    /// The version of the file the digest belongs to.
    pub identity: FileIdentity,
    /// BLAKE3 of the whole file, hex.
    pub digest: DigestHex,
}

/// Hashes up to `len` bytes of `file` from `offset` into `hasher` with positional reads (the
/// file's own position is neither used nor moved, so another thread may send from the same
/// file at the same time). Returns how many bytes were read: fewer than `len` only at the end
/// of the file. Stops with `Interrupted` when `stop` is set.
pub fn hash_range(
    file: &File,
    offset: u64,
    len: u64,
    hasher: &mut blake3::Hasher,
    stop: &AtomicBool,
) -> io::Result<u64> {
    read_blocks(file, (offset, len), HASH_BUFFER, stop, |block| {
        hasher.update(block);
        Ok(())
    })
}

/// Reads up to `len` bytes of `file` from `offset` (`range`) with positional reads, in blocks
/// of `block_size` bytes, each full but the last, and hands each block to `each`. Returns how
/// many bytes were read: fewer than `len` only at the end of the file. Stops with
/// `Interrupted` when `stop` is set, or with the first error of `each`.
pub fn read_blocks(
    file: &File,
    (offset, len): (u64, u64),
    block_size: usize,
    stop: &AtomicBool,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; block_size.min(usize::try_from(len).unwrap_or(usize::MAX))];
    let mut total = 0u64;
    while total < len {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "hashing was stopped",
            ));
        }
        let want = buf
            .len()
            .min(usize::try_from(len - total).unwrap_or(usize::MAX));
        let got = fill_at(file, &mut buf[..want], offset + total)?;
        if got > 0 {
            each(&buf[..got])?;
        }
        total += got as u64;
        if got < want {
            break;
        }
    }
    Ok(total)
}

/// Fills `buf` from `file` at `at`; returns how much it holds: less only at the end of the file.
fn fill_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Remembers the digest of each shared file per version (see the module documentation). A
/// file being hashed is hashed by one thread only: others asking for it wait for that result.
#[derive(Default)]
pub struct DigestCache {
    known: Mutex<HashMap<PathBuf, FileRecord>>,
    /// Paths whose outboard beside their record was written or checked in this run.
    outboards: Mutex<HashSet<PathBuf>>,
    /// Paths being hashed (or whose outboard is being checked) right now.
    busy: Mutex<HashSet<PathBuf>>,
    done: Condvar,
    /// Where records are kept across restarts; `None`: memory only.
    dir: Option<PathBuf>,
    /// Whole-file reads started, counted so that a test can check the promise above.
    #[cfg(test)]
    reads: AtomicU64,
}

/// Makes temporary record names unique within this process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

impl DigestCache {
    /// A cache kept in memory only (it keeps no outboards).
    pub fn new() -> DigestCache {
        DigestCache::default()
    }

    /// A cache that also keeps its records (and outboards) in `dir` (created when first
    /// written), across restarts. Temporary files a stopped process left there are deleted.
    pub fn persistent(dir: PathBuf) -> DigestCache {
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().contains(".tmp-") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        DigestCache {
            dir: Some(dir),
            ..DigestCache::default()
        }
    }

    /// The digest of the open `file` found at `path`, if this version of it was hashed
    /// before (in this run or, with a persistent cache, an earlier one). Never reads the file.
    pub fn known(&self, path: &Path, file: &File) -> io::Result<Option<DigestHex>> {
        let identity = FileIdentity::of(&file.metadata()?);
        Ok(self.lookup(path, &identity))
    }

    /// The digest of the open `file` found at `path`: remembered, or computed now (once, even
    /// if several threads ask at the same time; the same read keeps the outboard). Stops with
    /// `Interrupted` when `stop` is set.
    pub fn digest(&self, path: &Path, file: &File, stop: &AtomicBool) -> io::Result<DigestHex> {
        if let Some(digest) = self.known(path, file)? {
            return Ok(digest);
        }
        self.exclusively(path, || {
            // Hashed by another thread while this one waited?
            if let Some(digest) = self.known(path, file)? {
                return Ok(digest);
            }
            self.hash_once(path, file, stop)
        })
    }

    /// The digest of the open `file` found at `path` and its outboard, opened for reading.
    /// The outboard kept beside the record is checked against the digest the first time it is
    /// asked for in a run; a missing or damaged one, or a file not hashed yet, costs one read
    /// of the file for both. Fails with `Unsupported` for a cache kept in memory only.
    pub fn outboard(
        &self,
        path: &Path,
        file: &File,
        stop: &AtomicBool,
    ) -> io::Result<(DigestHex, File)> {
        let stored = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|name| self.sidecar_path(name, "obao"))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::Unsupported, "no folder to keep outboards in")
            })?;
        if let Some(digest) = self.known(path, file)?
            && self.outboards.lock().contains(path)
            && let Ok(found) = File::open(&stored)
        {
            return Ok((digest, found));
        }
        self.exclusively(path, || {
            if let Some(digest) = self.known(path, file)?
                && let Ok(found) = File::open(&stored)
            {
                let size = file.metadata()?.len();
                let checked = blake3::Hash::from_hex(&digest)
                    .map_err(|_| verified::OutboardError::Mismatch)
                    .and_then(|root| verified::check_outboard(&found, size, &root));
                match checked {
                    Ok(()) => {
                        self.outboards.lock().insert(path.to_path_buf());
                        return Ok((digest, File::open(&stored)?));
                    }
                    Err(e) => log::warn!("{}: {e}; hashing the file again", stored.display()),
                }
            }
            let digest = self.hash_once(path, file, stop)?;
            match File::open(&stored) {
                Ok(found) if self.outboards.lock().contains(path) => Ok((digest, found)),
                _ => Err(io::Error::other(
                    "the file changed while it was hashed, or its outboard could not be kept",
                )),
            }
        })
    }

    /// Runs `f` as the only thread working on `path` (hashing it or checking its outboard).
    fn exclusively<T>(&self, path: &Path, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        {
            let mut busy = self.busy.lock();
            while !busy.insert(path.to_path_buf()) {
                self.done.wait(&mut busy);
            }
        }
        let result = f();
        self.busy.lock().remove(path);
        self.done.notify_all();
        result
    }

    /// Reads the whole of `file` once for its digest and its outboard, and keeps both (the
    /// outboard beside the record) if the file did not change meanwhile.
    fn hash_once(&self, path: &Path, file: &File, stop: &AtomicBool) -> io::Result<DigestHex> {
        #[cfg(test)]
        self.reads.fetch_add(1, Ordering::Relaxed);
        let before = FileIdentity::of(&file.metadata()?);
        let (tmp, hashed) = match self.outboard_tmp(path) {
            Some((tmp, out)) => (
                Some(tmp),
                verified::digest_and_outboard(file, before.size, out, stop),
            ),
            None => (
                None,
                verified::digest_and_outboard(file, before.size, io::sink(), stop),
            ),
        };
        let root = match hashed {
            Ok(root) => root,
            Err(e) => {
                if let Some(tmp) = &tmp {
                    let _ = fs::remove_file(tmp);
                }
                return Err(e);
            }
        };
        let digest = root.to_hex().to_string();
        let after = FileIdentity::of(&file.metadata()?);
        if before == after {
            // Known before the waiters wake, so none of them hashes the file again.
            self.remember(path, after, &digest, tmp.as_deref());
        } else {
            log::debug!(
                "{} changed while it was hashed; its digest is not kept",
                path.display()
            );
            if let Some(tmp) = &tmp {
                let _ = fs::remove_file(tmp);
            }
        }
        Ok(digest)
    }

    /// A new temporary file for the outboard of `path`, beside the records; `None` when
    /// outboards are not kept (memory only) or it cannot be created (the digest matters more).
    fn outboard_tmp(&self, path: &Path) -> Option<(PathBuf, BufWriter<File>)> {
        let name = path.file_name()?.to_str()?;
        let dir = self.dir.as_ref()?;
        let tmp = dir.join(format!(
            "{}.obao.tmp-{}-{}",
            record_key(name),
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let created = fs::create_dir_all(dir).and_then(|()| File::create(&tmp));
        match created {
            Ok(file) => Some((tmp, BufWriter::new(file))),
            Err(e) => {
                log::debug!("cannot keep the outboard of {name}: {e}");
                None
            }
        }
    }

    /// Remembers `digest` for the open `file` at `path` without reading it: its bytes were
    /// hashed as they arrived (a verified download), so hashing them again would only cost.
    /// No outboard comes with it: the first range session for the file reads it once for one.
    pub fn learned(&self, path: &Path, file: &File, digest: &str) -> io::Result<()> {
        let identity = FileIdentity::of(&file.metadata()?);
        self.remember(path, identity, digest, None);
        Ok(())
    }

    /// Forgets what is known of `path` (a downloader found that the bytes did not match the
    /// digest): the record and everything beside it go, and the next request hashes again.
    pub fn forget(&self, path: &Path) {
        self.known.lock().remove(path);
        self.outboards.lock().remove(path);
        if let Some(key) = self.key_of(path) {
            self.remove_stored(&key, &[]);
        }
    }

    /// Deletes the stored files of `key` (its record and what is beside it), except `keep`.
    fn remove_stored(&self, key: &str, keep: &[&Path]) {
        let Some(dir) = &self.dir else {
            return;
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.split('.').next() == Some(key) && !keep.contains(&entry.path().as_path()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Where data derived from the current version of the shared file `name` is kept, beside
    /// its record, with the extension `ext` (`None` for a memory-only cache).
    pub fn sidecar_path(&self, name: &str, ext: &str) -> Option<PathBuf> {
        Some(
            self.dir
                .as_ref()?
                .join(format!("{}.{ext}", record_key(name))),
        )
    }

    /// Deletes the records (and what is beside them) of names no longer shared.
    pub fn prune(&self, shared: &[String]) {
        let Some(dir) = &self.dir else {
            return;
        };
        let keep: HashSet<String> = shared.iter().map(|name| record_key(name)).collect();
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let key = name.split('.').next().unwrap_or_default();
            if !keep.contains(key) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The remembered digest of `path` if it belongs to `identity`; looks on disk when memory
    /// has nothing.
    fn lookup(&self, path: &Path, identity: &FileIdentity) -> Option<DigestHex> {
        if let Some(record) = self.known.lock().get(path) {
            return (record.identity == *identity).then(|| record.digest.clone());
        }
        let record = self.load(path)?;
        if record.identity != *identity {
            return None;
        }
        let digest = record.digest.clone();
        self.known.lock().insert(path.to_path_buf(), record);
        Some(digest)
    }

    /// Keeps `digest` as that of `path`'s version `identity`, with the outboard written to
    /// `outboard` (a temporary file, moved beside the record) if any.
    fn remember(&self, path: &Path, identity: FileIdentity, digest: &str, outboard: Option<&Path>) {
        self.outboards.lock().remove(path);
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let record = FileRecord {
            name: name.to_string(),
            identity,
            digest: digest.to_string(),
        };
        let replaces = self
            .sidecar_path(name, "json")
            .is_some_and(|old| old.exists());
        let mut kept_outboard = false;
        match self.store(&record) {
            Ok(Some(stored)) => {
                if replaces {
                    // What sat beside an older record belongs to another version of the file.
                    let mut keep = vec![stored.as_path()];
                    keep.extend(outboard);
                    self.remove_stored(&record_key(name), &keep);
                }
                if let (Some(tmp), Some(beside)) = (outboard, self.sidecar_path(name, "obao")) {
                    match fs::rename(tmp, &beside) {
                        Ok(()) => kept_outboard = true,
                        Err(e) => log::debug!("cannot keep the outboard of {name}: {e}"),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => log::debug!("cannot keep the digest of {name} on disk: {e}"),
        }
        if let Some(tmp) = outboard.filter(|_| !kept_outboard) {
            let _ = fs::remove_file(tmp);
        }
        self.known.lock().insert(path.to_path_buf(), record);
        if kept_outboard {
            self.outboards.lock().insert(path.to_path_buf());
        }
    }

    fn key_of(&self, path: &Path) -> Option<String> {
        path.file_name().and_then(|n| n.to_str()).map(record_key)
    }

    /// The stored record of `path`, if there is a valid one for that name.
    fn load(&self, path: &Path) -> Option<FileRecord> {
        let name = path.file_name()?.to_str()?;
        let record_path = self.sidecar_path(name, "json")?;
        let file = File::open(record_path).ok()?;
        let mut text = Vec::new();
        file.take(MAX_RECORD).read_to_end(&mut text).ok()?;
        let record: FileRecord = serde_json::from_slice(&text).ok()?;
        let valid = record.name == name
            && record.digest.len() == 64
            && record.digest.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then_some(record)
    }

    /// Writes `record` under a temporary name, then renames it over the old one: a reader
    /// sees the old record or the new, never half of one. Returns where it is stored.
    fn store(&self, record: &FileRecord) -> io::Result<Option<PathBuf>> {
        let (Some(final_path), Some(dir)) = (self.sidecar_path(&record.name, "json"), &self.dir)
        else {
            return Ok(None);
        };
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            "{}.tmp-{}-{}",
            record_key(&record.name),
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let written = fs::write(&tmp, serde_json::to_vec(record).map_err(io::Error::other)?)
            .and_then(|()| fs::rename(&tmp, &final_path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map(|()| Some(final_path))
    }
}

/// The file name stem of `name`'s record: fixed length, whatever the name.
fn record_key(name: &str) -> String {
    blake3::hash(name.as_bytes()).to_hex()[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    static GO: AtomicBool = AtomicBool::new(false);

    fn digest_at(cache: &DigestCache, path: &Path) -> DigestHex {
        cache.digest(path, &File::open(path).unwrap(), &GO).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let cache = DigestCache::new();
        fs::write(&path, b"first").unwrap();
        assert_eq!(digest_at(&cache, &path), hex(b"first"));
        fs::write(&path, b"second, longer").unwrap();
        assert_eq!(digest_at(&cache, &path), hex(b"second, longer"));
    }

    /// Size and modification time are not enough: a file rewritten in place with both kept
    /// (what the old key missed) has a new change time, and is hashed again.
    #[test]
    fn a_file_rewritten_with_its_size_and_mtime_kept_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let cache = DigestCache::new();
        fs::write(&path, b"aaaa").unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(digest_at(&cache, &path), hex(b"aaaa"));
        // The change time has a clock tick of granularity on some file systems: make sure it
        // moves by waiting for the clock (not for another thread).
        let before = fs::metadata(&path).unwrap().ctime_nsec();
        let start = SystemTime::now();
        while SystemTime::now().duration_since(start).unwrap_or_default()
            < Duration::from_millis(20)
        {
            std::hint::spin_loop();
        }
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"bbbb", 0)
            .unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.modified().unwrap()), (4, mtime));
        assert_ne!(meta.ctime_nsec(), before, "the change time moved");
        assert_eq!(digest_at(&cache, &path), hex(b"bbbb"));
    }

    #[test]
    fn threads_asking_at_once_get_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let expected = hex(&vec![7u8; 3 << 20]);
        let cache = DigestCache::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| digest_at(&cache, &path)))
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), expected);
            }
        });
        assert!(cache.busy.lock().is_empty());
    }

    /// The promise of [`DigestCache`]: threads asking at once for a file not hashed yet read
    /// it once between them; the others wait for that read's result. A barrier releases them
    /// together and the file takes a while to hash, so that the others ask while the first
    /// read is going on: without the exclusion each of them reads the file (tried: with
    /// `exclusively` reduced to calling its closure, 4 to 8 of them read it in each of five runs).
    #[test]
    fn threads_asking_at_once_read_the_file_once() {
        const THREADS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content = vec![3u8; 16 << 20];
        fs::write(&path, &content).unwrap();
        let cache = DigestCache::new();
        let start = std::sync::Barrier::new(THREADS);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        let file = File::open(&path).unwrap();
                        start.wait();
                        cache.digest(&path, &file, &GO).unwrap()
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), hex(&content));
            }
        });
        assert_eq!(cache.reads.load(Ordering::Relaxed), 1);
    }

    /// A persistent cache finds, in a new process (a new cache), the digest of a file it
    /// hashed before without reading the file: the test proves it by planting another digest
    /// in the record, which only a lookup (not a hash) can return.
    #[test]
    fn a_persistent_cache_remembers_across_instances_and_only_for_the_same_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let store = dir.path().join(".napster").join("digests");
        fs::write(&path, b"content").unwrap();
        assert_eq!(
            digest_at(&DigestCache::persistent(store.clone()), &path),
            hex(b"content")
        );
        let record_path = DigestCache::persistent(store.clone())
            .sidecar_path("f", "json")
            .unwrap();
        let mut record: FileRecord =
            serde_json::from_slice(&fs::read(&record_path).unwrap()).unwrap();
        assert_eq!(record.name, "f");
        record.digest = "ab".repeat(32);
        fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();

        let later = DigestCache::persistent(store.clone());
        let file = File::open(&path).unwrap();
        assert_eq!(later.known(&path, &file).unwrap(), Some("ab".repeat(32)));

        // Another version of the file: the record does not apply.
        fs::write(&path, b"other content").unwrap();
        let file = File::open(&path).unwrap();
        let fresh = DigestCache::persistent(store.clone());
        assert_eq!(fresh.known(&path, &file).unwrap(), None);
        assert_eq!(digest_at(&fresh, &path), hex(b"other content"));
        // The record and its outboard, no temporary files.
        let mut names: Vec<_> = fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let key = record_key("f");
        assert_eq!(names, [format!("{key}.json"), format!("{key}.obao")]);
    }

    /// The outboard bao-tree would compute for `bytes`.
    fn outboard_of(bytes: &[u8]) -> Vec<u8> {
        let mut ob = Vec::new();
        verified::create_outboard(bytes, bytes.len() as u64, &mut ob).unwrap();
        ob
    }

    fn read_all(mut file: File) -> Vec<u8> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    /// The read that gives the digest writes the outboard beside the record; it is then handed
    /// out without reading the file again (a set stop flag would end any read), in this run and
    /// after a restart, where it is checked once; a damaged one costs one read, which mends it.
    #[test]
    fn one_read_keeps_the_outboard_beside_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        let store = dir.path().join("store");
        let cache = DigestCache::persistent(store.clone());
        assert_eq!(digest_at(&cache, &path), hex(&data));
        let beside = cache.sidecar_path("f", "obao").unwrap();
        assert_eq!(fs::read(&beside).unwrap(), outboard_of(&data));

        static STOP: AtomicBool = AtomicBool::new(true);
        let file = File::open(&path).unwrap();
        let (digest, ob) = cache.outboard(&path, &file, &STOP).unwrap();
        assert_eq!((digest, read_all(ob)), (hex(&data), outboard_of(&data)));
        let restarted = DigestCache::persistent(store.clone());
        let (_, ob) = restarted.outboard(&path, &file, &STOP).unwrap();
        assert_eq!(read_all(ob), outboard_of(&data));

        let mut bad = outboard_of(&data);
        bad[10] ^= 1;
        fs::write(&beside, &bad).unwrap();
        let damaged = DigestCache::persistent(store.clone());
        let stopped = damaged.outboard(&path, &file, &STOP).unwrap_err();
        assert_eq!(stopped.kind(), io::ErrorKind::Interrupted, "it reads again");
        let (_, ob) = damaged.outboard(&path, &file, &GO).unwrap();
        assert_eq!(read_all(ob), outboard_of(&data));
        assert_eq!(fs::read(&beside).unwrap(), outboard_of(&data));
    }

    /// A record kept before outboards were (none beside it) gets its outboard from one read.
    #[test]
    fn a_record_without_an_outboard_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![3u8; 200_000]).unwrap();
        let store = dir.path().join("store");
        digest_at(&DigestCache::persistent(store.clone()), &path);
        let beside = DigestCache::persistent(store.clone())
            .sidecar_path("f", "obao")
            .unwrap();
        fs::remove_file(&beside).unwrap();
        let cache = DigestCache::persistent(store);
        let file = File::open(&path).unwrap();
        let (digest, ob) = cache.outboard(&path, &file, &GO).unwrap();
        assert_eq!(digest, hex(&[3u8; 200_000]));
        assert_eq!(read_all(ob), outboard_of(&[3u8; 200_000]));
        assert!(beside.exists());
    }

    /// A cache in memory keeps no outboards, and says so.
    #[test]
    fn a_memory_cache_has_no_outboards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let file = File::open(&path).unwrap();
        let e = DigestCache::new().outboard(&path, &file, &GO).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    }

    /// A digest learned without hashing (a verified download) is answered for that version of
    /// the file, in this run and the next, without reading it: a planted digest shows that no
    /// hash was computed.
    #[test]
    fn a_learned_digest_is_kept_without_reading_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let store = dir.path().join("store");
        fs::write(&path, b"downloaded").unwrap();
        let planted = "cd".repeat(32);
        let cache = DigestCache::persistent(store.clone());
        cache
            .learned(&path, &File::open(&path).unwrap(), &planted)
            .unwrap();
        assert_eq!(digest_at(&cache, &path), planted);
        assert_eq!(digest_at(&DigestCache::persistent(store), &path), planted);
        // Another version of the file is hashed.
        fs::write(&path, b"changed").unwrap();
        assert_eq!(digest_at(&cache, &path), hex(b"changed"));
    }

    #[test]
    fn forget_removes_the_record_and_what_is_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let cache = DigestCache::persistent(dir.path().join("store"));
        fs::write(&path, b"x").unwrap();
        digest_at(&cache, &path);
        let outboard = cache.sidecar_path("f", "obao").unwrap();
        fs::write(&outboard, b"tree").unwrap();
        cache.forget(&path);
        assert!(!outboard.exists());
        assert!(!cache.sidecar_path("f", "json").unwrap().exists());
        let file = File::open(&path).unwrap();
        assert_eq!(cache.known(&path, &file).unwrap(), None);
    }

    /// Data kept beside a record (an outboard) belongs to one version of the file: when a new
    /// version is hashed, it goes, and the new version's outboard takes its place.
    #[test]
    fn a_new_version_removes_what_was_beside_the_old_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let cache = DigestCache::persistent(dir.path().join("store"));
        let one = vec![1u8; 200_000];
        fs::write(&path, &one).unwrap();
        digest_at(&cache, &path);
        let outboard = cache.sidecar_path("f", "obao").unwrap();
        assert_eq!(fs::read(&outboard).unwrap(), outboard_of(&one));
        let other = cache.sidecar_path("f", "other").unwrap();
        fs::write(&other, b"derived from one").unwrap();
        let two = vec![2u8; 300_000];
        fs::write(&path, &two).unwrap();
        assert_eq!(digest_at(&cache, &path), hex(&two));
        assert!(!other.exists());
        assert_eq!(fs::read(&outboard).unwrap(), outboard_of(&two));
        assert!(cache.sidecar_path("f", "json").unwrap().exists());
    }

    /// Records of names no longer shared go with their outboards.
    #[test]
    fn records_of_names_no_longer_shared_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DigestCache::persistent(dir.path().join("store"));
        for name in ["kept", "gone"] {
            fs::write(dir.path().join(name), name).unwrap();
            digest_at(&cache, &dir.path().join(name));
        }
        cache.prune(&["kept".to_string()]);
        for ext in ["json", "obao"] {
            assert!(cache.sidecar_path("kept", ext).unwrap().exists());
            assert!(!cache.sidecar_path("gone", ext).unwrap().exists());
        }
    }

    /// Temporary files a stopped process left beside the records are deleted at start.
    #[test]
    fn leftover_temporary_files_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        fs::create_dir_all(&store).unwrap();
        let left = store.join(format!("{}.obao.tmp-1-2", record_key("f")));
        fs::write(&left, b"half").unwrap();
        let _cache = DigestCache::persistent(store);
        assert!(!left.exists());
    }

    #[test]
    fn a_corrupt_or_foreign_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"data").unwrap();
        let cache = DigestCache::persistent(dir.path().join("store"));
        fs::create_dir_all(dir.path().join("store")).unwrap();
        fs::write(cache.sidecar_path("f", "json").unwrap(), b"{not json").unwrap();
        assert_eq!(digest_at(&cache, &path), hex(b"data"));
    }
}
