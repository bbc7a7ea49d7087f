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
//! beside, then renamed). Data derived from the same version of the file can sit beside it
//! under the same key with another extension ([`DigestCache::sidecar_path`], e.g. a BLAKE3
//! outboard `<key>.obao`): it is valid exactly while the record is. Writing it is the caller's
//! job, after the record exists ([`DigestCache::known`] says so); a record written for a new
//! version of the file, [`DigestCache::forget`] and pruning remove it. `.napster/` is never shared (only regular files directly in the
//! folder are).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

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
    let mut buf = vec![0u8; HASH_BUFFER.min(usize::try_from(len).unwrap_or(usize::MAX))];
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
        let n = match file.read_at(&mut buf[..want], offset + total) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(total)
}

/// The digest of the whole of `file`, with the identity it had before and after hashing, or
/// `None` for the identity if the file changed meanwhile (the digest may then mix versions).
fn hash_version(file: &File, stop: &AtomicBool) -> io::Result<(DigestHex, Option<FileIdentity>)> {
    let before = FileIdentity::of(&file.metadata()?);
    let mut hasher = blake3::Hasher::new();
    let read = hash_range(file, 0, u64::MAX, &mut hasher, stop)?;
    let after = FileIdentity::of(&file.metadata()?);
    let digest = hasher.finalize().to_hex().to_string();
    let stable = before == after && read == after.size;
    Ok((digest, stable.then_some(after)))
}

/// Remembers the digest of each shared file per version (see the module documentation). A
/// file being hashed is hashed by one thread only: others asking for it wait for that result.
#[derive(Default)]
pub struct DigestCache {
    known: Mutex<HashMap<PathBuf, FileRecord>>,
    /// Paths being hashed right now.
    busy: Mutex<HashSet<PathBuf>>,
    done: Condvar,
    /// Where records are kept across restarts; `None`: memory only.
    dir: Option<PathBuf>,
}

/// Makes temporary record names unique within this process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

impl DigestCache {
    /// A cache kept in memory only.
    pub fn new() -> DigestCache {
        DigestCache::default()
    }

    /// A cache that also keeps its records in `dir` (created when first written), across
    /// restarts.
    pub fn persistent(dir: PathBuf) -> DigestCache {
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
    /// if several threads ask at the same time). Stops with `Interrupted` when `stop` is set.
    pub fn digest(&self, path: &Path, file: &File, stop: &AtomicBool) -> io::Result<DigestHex> {
        let identity = FileIdentity::of(&file.metadata()?);
        {
            let mut busy = self.busy.lock();
            loop {
                if let Some(digest) = self.lookup(path, &identity) {
                    return Ok(digest);
                }
                if busy.insert(path.to_path_buf()) {
                    break;
                }
                self.done.wait(&mut busy);
            }
        }
        let hashed = hash_version(file, stop);
        if let Ok((digest, Some(identity))) = &hashed {
            // Known before the waiters wake, so none of them hashes the file again.
            self.remember(path, *identity, digest);
        } else if let Ok((_, None)) = &hashed {
            log::debug!(
                "{} changed while it was hashed; its digest is not kept",
                path.display()
            );
        }
        self.busy.lock().remove(path);
        self.done.notify_all();
        hashed.map(|(digest, _)| digest)
    }

    /// Remembers `digest` for the open `file` at `path` without reading it: its bytes were
    /// hashed as they arrived (a verified download), so hashing them again would only cost.
    pub fn learned(&self, path: &Path, file: &File, digest: &str) -> io::Result<()> {
        let identity = FileIdentity::of(&file.metadata()?);
        self.remember(path, identity, digest);
        Ok(())
    }

    /// Forgets what is known of `path` (a downloader found that the bytes did not match the
    /// digest): the record and everything beside it go, and the next request hashes again.
    pub fn forget(&self, path: &Path) {
        self.known.lock().remove(path);
        if let Some(key) = self.key_of(path) {
            self.remove_stored(&key, None);
        }
    }

    /// Deletes the stored files of `key` (its record and what is beside it), except `keep`.
    fn remove_stored(&self, key: &str, keep: Option<&Path>) {
        let Some(dir) = &self.dir else {
            return;
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.split('.').next() == Some(key) && keep != Some(entry.path().as_path()) {
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

    fn remember(&self, path: &Path, identity: FileIdentity, digest: &str) {
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
        match self.store(&record) {
            // What sat beside an older record belongs to another version of the file.
            Ok(Some(stored)) if replaces => self.remove_stored(&record_key(name), Some(&stored)),
            Ok(_) => {}
            Err(e) => log::debug!("cannot keep the digest of {name} on disk: {e}"),
        }
        self.known.lock().insert(path.to_path_buf(), record);
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
        // No temporary files are left beside the record.
        let names: Vec<_> = fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
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
    /// version is hashed, it goes.
    #[test]
    fn a_new_version_removes_what_was_beside_the_old_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let cache = DigestCache::persistent(dir.path().join("store"));
        fs::write(&path, b"one").unwrap();
        digest_at(&cache, &path);
        let outboard = cache.sidecar_path("f", "obao").unwrap();
        fs::write(&outboard, b"tree of one").unwrap();
        fs::write(&path, b"two, longer").unwrap();
        assert_eq!(digest_at(&cache, &path), hex(b"two, longer"));
        assert!(!outboard.exists());
        assert!(cache.sidecar_path("f", "json").unwrap().exists());
    }

    #[test]
    fn records_of_names_no_longer_shared_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DigestCache::persistent(dir.path().join("store"));
        for name in ["kept", "gone"] {
            fs::write(dir.path().join(name), name).unwrap();
            digest_at(&cache, &dir.path().join(name));
        }
        cache.prune(&["kept".to_string()]);
        assert!(cache.sidecar_path("kept", "json").unwrap().exists());
        assert!(!cache.sidecar_path("gone", "json").unwrap().exists());
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
