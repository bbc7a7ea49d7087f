//! Partial downloads: where a download's bytes wait until they are verified, and the rules that
//! keep one download's bytes out of another's file.
//!
//! A download is written to `.napster/partial/` inside the shared folder (a sub-folder, so it is
//! never shared, and on the same file system as the final names, so the final step is a link),
//! beside a small record of the file's size, digest and name. A cut-off download stays there and
//! is resumed next time; the user lists and clears them with `PARCIAIS` / `LIMPAR`.
//!
//! The rules:
//! - **One stored name per name, and no two names share one.** A name of up to 200 bytes is
//!   stored as itself (`NAME.part`); a longer one under a digest of it in the sub-folder `long/`
//!   (`long/<32 hex>.part`). A shared name holds no `/`, so it can never reach a long name's
//!   file, and the suffixes (`.part`, `.json`, `.json.tmp`) keep every file of one name apart
//!   from every file of another. The "already downloading" lock is taken on this stored name.
//! - **One writer per partial.** A partial is opened only with an exclusive `flock`, held until
//!   the download ends, so two downloads (in this process or another peer sharing the folder)
//!   never write one file; the second is told the file is already being downloaded.
//! - **A file reaches its final name only from its own writer.** The download's own open file is
//!   linked to the final name (`linkat` of `/proc/self/fd/N`), never whatever is at the partial's
//!   path, so the bytes verified are the bytes published; the link never replaces a file.
//! - **Space is promised.** A download starting counts the bytes the running downloads still have
//!   to write against the free space, so two downloads cannot each pass the check alone and
//!   both stop at "disco cheio" half way.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustix::fs::{AtFlags, CWD, FlockOperation};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::numbers::human_size;
use crate::piece_map;
use crate::transfer::{self, DigestHex};

/// Names up to this many bytes are stored as they are (room for `.json.tmp` in 255 bytes).
const LONGEST_PLAIN_STEM: usize = 200;
/// The sub-folder for names longer than [`LONGEST_PLAIN_STEM`].
const LONG_NAMES: &str = "long";

/// What a partial download belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialRecord {
    /// The size of the whole file.
    pub size: u64,
    /// The digest of the whole file.
    pub digest: DigestHex,
    /// The file's name (partials of very long names are stored under a digest of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A partial download found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// What it belongs to.
    pub record: PartialRecord,
    /// How many bytes are already on disk.
    pub have: u64,
}

/// A partial download as the user is shown it (`PARCIAIS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPartial {
    /// The file's name (or the stored name, when its record is missing or unreadable).
    pub name: String,
    /// Bytes on disk.
    pub have: u64,
    /// The whole file's size, when its record says.
    pub size: Option<u64>,
    /// A download is writing it now.
    pub in_use: bool,
    /// Its stored name (see [`PartialStore::key`]).
    pub stored: String,
}

/// Why a partial could not be opened for writing.
#[derive(Debug)]
pub enum OpenError {
    /// Another download (here or in another process sharing the folder) is writing it.
    InUse,
    /// The file system failed.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::InUse => write!(f, "another download is writing this partial file"),
            OpenError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io(e) => Some(e),
            OpenError::InUse => None,
        }
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> OpenError {
        OpenError::Io(e)
    }
}

/// Not enough room for a download, counting what running downloads were promised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSpace {
    /// Bytes this download still has to receive.
    pub need: u64,
    /// Bytes free in the folder's file system.
    pub free: u64,
    /// Of those, bytes that running downloads still have to write.
    pub promised: u64,
    /// Bytes held by partial downloads that no download is writing (what `LIMPAR` frees).
    pub kept: u64,
}

impl fmt::Display for NoSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "espaço insuficiente: faltam {} e há {} livres na pasta",
            human_size(self.need),
            human_size(self.free)
        )?;
        if self.promised > 0 {
            write!(
                f,
                ", {} deles prometidos a downloads em andamento",
                human_size(self.promised)
            )?;
        }
        if self.kept > 0 {
            write!(
                f,
                "; downloads parciais guardados ocupam {} ({CLEAR_HINT})",
                human_size(self.kept)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for NoSpace {}

/// What the user can do about partials taking space.
pub const CLEAR_HINT: &str = "PARCIAIS lista, LIMPAR nome ou LIMPAR TUDO apaga";

/// Why a partial could not be removed.
#[derive(Debug)]
pub enum RemoveError {
    /// No partial of that name.
    NotFound,
    /// A download is writing it.
    InUse,
    /// The file system failed.
    Io(io::Error),
}

/// The folder of partial downloads; see the module documentation.
#[derive(Debug, Clone)]
pub struct PartialStore {
    root: PathBuf,
    dir: PathBuf,
    /// Stored name → (promise number, size of the file), for each running download that was
    /// promised space.
    promises: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    /// Held while a download is checked against the free space, so two cannot both pass.
    admission: Arc<Mutex<()>>,
}

impl PartialStore {
    /// The store for a shared folder (created when first used).
    pub fn new(shared_root: &Path) -> PartialStore {
        PartialStore {
            root: shared_root.to_path_buf(),
            dir: shared_root.join(".napster").join("partial"),
            promises: Arc::default(),
            admission: Arc::default(),
        }
    }

    /// The stored name of `name` (which must already be a checked, plain name): the name itself,
    /// or for a name too long to take a suffix, `long/` and a digest of it. Distinct names give
    /// distinct stored names; the "already downloading" lock is taken on it.
    pub fn key(name: &str) -> String {
        if name.len() <= LONGEST_PLAIN_STEM {
            name.to_string()
        } else {
            format!(
                "{LONG_NAMES}/{}",
                &blake3::hash(name.as_bytes()).to_hex()[..32]
            )
        }
    }

    /// The temporary file of `name`.
    pub fn part_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.part", Self::key(name)))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.json", Self::key(name)))
    }

    /// The partial download of `name`, if a usable one exists.
    pub fn find(&self, name: &str) -> Option<Partial> {
        let record = read_record(&self.record_path(name))?;
        if record.name.as_deref().is_some_and(|n| n != name) {
            return None;
        }
        let part = self.part_path(name);
        let mut have = fs::symlink_metadata(&part)
            .ok()
            .filter(|m| m.file_type().is_file())?
            .len();
        // A download from several peers writes pieces out of order: only its verified prefix
        // is whole.
        if let Some(prefix) = piece_map::verified_prefix(&piece_map::path_for(&part), record.size) {
            have = have.min(prefix);
        }
        (have <= record.size).then_some(Partial { record, have })
    }

    /// True if a download (here or in another process sharing the folder) is writing `name`.
    pub fn in_use(&self, name: &str) -> bool {
        is_locked(&self.part_path(name))
    }

    /// Opens `name`'s partial for writing, exclusively: from `resume_at` if resuming (what lies
    /// beyond is cut off), or empty with a new record. [`OpenError::InUse`] if another download
    /// holds it.
    pub fn open(
        &self,
        name: &str,
        record: &PartialRecord,
        resume_at: Option<u64>,
    ) -> Result<OpenPartial, OpenError> {
        let part = self.part_path(name);
        if let Some(parent) = part.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut file = open_locked(&part)?;
        match resume_at {
            Some(offset) => {
                if file.metadata()?.len() < offset {
                    return Err(OpenError::Io(io::Error::other("the partial file shrank")));
                }
                file.set_len(offset)?;
                // From here on the partial is a plain prefix again.
                piece_map::remove_beside(&part);
                file.seek(SeekFrom::Start(offset))?;
            }
            None => self.start_afresh(name, &file, record)?,
        }
        Ok(OpenPartial {
            file,
            part,
            record: self.record_path(name),
        })
    }

    /// Opens `name`'s partial for a download written in pieces (out of order), exclusively as
    /// [`PartialStore::open`] does: kept as it is when `fresh` is false (its piece map says
    /// what is good), emptied with a new record when true.
    pub fn open_pieces(
        &self,
        name: &str,
        record: &PartialRecord,
        fresh: bool,
    ) -> Result<OpenPartial, OpenError> {
        let part = self.part_path(name);
        if let Some(parent) = part.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = open_locked(&part)?;
        if fresh {
            self.start_afresh(name, &file, record)?;
        }
        Ok(OpenPartial {
            file,
            part,
            record: self.record_path(name),
        })
    }

    /// Empties the locked partial `file` of `name` and gives it a new record.
    fn start_afresh(&self, name: &str, file: &File, record: &PartialRecord) -> io::Result<()> {
        file.set_len(0)?;
        piece_map::remove_beside(&self.part_path(name));
        let tmp = self.dir.join(format!("{}.json.tmp", Self::key(name)));
        fs::write(&tmp, serde_json::to_vec(record).map_err(io::Error::other)?)?;
        fs::rename(&tmp, self.record_path(name))
    }

    /// Promises the space `name` still needs (`size` less the `have` bytes on disk) to its
    /// download, or refuses when the free space, less what running downloads still have to
    /// write, is too small. The promise lasts until the returned guard is dropped.
    pub fn promise(&self, name: &str, size: u64, have: u64) -> Result<Promise, NoSpace> {
        let key = Self::key(name);
        let need = size.saturating_sub(have);
        // Held across a statvfs and the lstat of each running partial (file-system metadata,
        // no network): only downloads being admitted wait on it.
        let _admission = self.admission.lock();
        if let Some(free) = free_space(&self.root) {
            // Other downloads' promises: this one's own earlier promise (a swarm download
            // fetching its outboard again) is replaced, not counted.
            let running: Vec<(String, u64)> = self
                .promises
                .lock()
                .iter()
                .filter(|(k, _)| **k != key)
                .map(|(k, (_, size))| (k.clone(), *size))
                .collect();
            let promised: u64 = running
                .iter()
                .map(|(k, size)| size.saturating_sub(self.len_of_key(k)))
                .sum();
            if need > free.saturating_sub(promised) {
                let kept = self
                    .list()
                    .iter()
                    .filter(|p| !p.in_use)
                    .map(|p| p.have)
                    .sum();
                return Err(NoSpace {
                    need,
                    free,
                    promised,
                    kept,
                });
            }
        }
        let id = NEXT_PROMISE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.promises.lock().insert(key.clone(), (id, size));
        Ok(Promise {
            promises: Arc::clone(&self.promises),
            key,
            id,
        })
    }

    fn len_of_key(&self, key: &str) -> u64 {
        fs::symlink_metadata(self.dir.join(format!("{key}.part")))
            .map(|m| on_disk(&m))
            .unwrap_or(0)
    }

    /// Every partial download on disk, by name, with the bytes it holds.
    pub fn list(&self) -> Vec<StoredPartial> {
        let mut found = Vec::new();
        for (dir, prefix) in [
            (self.dir.clone(), String::new()),
            (self.dir.join(LONG_NAMES), format!("{LONG_NAMES}/")),
        ] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(stem) = file_name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".part"))
                    .map(str::to_string)
                else {
                    continue;
                };
                let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                    continue;
                };
                if !meta.file_type().is_file() {
                    continue;
                }
                let record = read_record(&dir.join(format!("{stem}.json")));
                found.push(StoredPartial {
                    name: record
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .unwrap_or_else(|| stem.clone()),
                    have: on_disk(&meta),
                    size: record.map(|r| r.size),
                    in_use: is_locked(&entry.path()),
                    stored: format!("{prefix}{stem}"),
                });
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }

    /// Deletes the partial of `name` (as listed by [`PartialStore::list`]) unless a download is
    /// writing it; returns the bytes freed.
    pub fn remove(&self, name: &str) -> Result<u64, RemoveError> {
        let key = self
            .list()
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| p.stored)
            .ok_or(RemoveError::NotFound)?;
        let part = self.dir.join(format!("{key}.part"));
        let file = match try_lock(&part) {
            Ok(Some(file)) => file,
            Ok(None) => return Err(RemoveError::InUse),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RemoveError::NotFound),
            Err(e) => return Err(RemoveError::Io(e)),
        };
        let freed = file.metadata().map(|m| on_disk(&m)).unwrap_or(0);
        // Unlinked while locked: a download that opened it meanwhile finds it unlinked when it
        // gets the lock, and opens a new one.
        fs::remove_file(&part).map_err(RemoveError::Io)?;
        let _ = fs::remove_file(self.dir.join(format!("{key}.json")));
        piece_map::remove_beside(&part);
        Ok(freed)
    }
}

/// Numbers promises, so that a replaced one, dropped later, takes nothing with it.
static NEXT_PROMISE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Keeps space promised to a running download until dropped.
#[derive(Debug)]
pub struct Promise {
    promises: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    key: String,
    id: u64,
}

impl Drop for Promise {
    fn drop(&mut self) {
        let mut promises = self.promises.lock();
        if promises
            .get(&self.key)
            .is_some_and(|(id, _)| *id == self.id)
        {
            promises.remove(&self.key);
        }
    }
}

/// A partial file open for writing by its one download (the lock goes with it).
pub struct OpenPartial {
    file: File,
    part: PathBuf,
    record: PathBuf,
}

impl OpenPartial {
    /// The open file, positioned where the next byte goes.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The open file, for positional reads and writes (a download written in pieces).
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// Feeds the first `len` bytes on disk to `hasher` (a resumed download's prefix) and leaves
    /// the file positioned after them; returns how many were read.
    pub fn hash_prefix(&mut self, len: u64, hasher: &mut blake3::Hasher) -> io::Result<u64> {
        let never = std::sync::atomic::AtomicBool::new(false);
        let read = transfer::hash_range(&self.file, 0, len, hasher, &never)?;
        self.file.seek(SeekFrom::Start(read))?;
        Ok(read)
    }

    /// Keeps only the first `len` bytes (after a failed write, so the partial is exact).
    pub fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// Gives this very file its final name `final_path`, failing with `AlreadyExists` rather
    /// than replacing a file there; the partial's name and record are then removed.
    pub fn finish(&self, final_path: &Path) -> io::Result<()> {
        match link_open_file(&self.file, final_path) {
            Ok(()) => self.forget_partial_name(),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            Err(e) => {
                log::debug!("cannot link the open partial ({e}); linking its path");
                self.finish_by_path(final_path)?;
            }
        }
        let _ = fs::remove_file(&self.record);
        piece_map::remove_beside(&self.part);
        Ok(())
    }

    /// Where `/proc` is missing: the partial's path is linked after checking it is still this
    /// file (no other download can replace it while the lock is held); on file systems without
    /// hard links, renamed if the final name is free.
    fn finish_by_path(&self, final_path: &Path) -> io::Result<()> {
        if !self.still_at_its_path() {
            return Err(io::Error::other("the partial file was replaced"));
        }
        match fs::hard_link(&self.part, final_path) {
            Ok(()) => {
                self.forget_partial_name();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
            Err(_) => {
                if fs::symlink_metadata(final_path).is_ok() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                fs::rename(&self.part, final_path)
            }
        }
    }

    /// True while the partial's path names this open file.
    fn still_at_its_path(&self) -> bool {
        match (self.file.metadata(), fs::symlink_metadata(&self.part)) {
            (Ok(open), Ok(at_path)) => open.dev() == at_path.dev() && open.ino() == at_path.ino(),
            _ => false,
        }
    }

    /// Removes the partial's path once the file has its final name (only if it still names
    /// this file).
    fn forget_partial_name(&self) {
        if self.still_at_its_path()
            && let Err(e) = fs::remove_file(&self.part)
        {
            log::warn!("cannot remove {}: {e}", self.part.display());
        }
    }

    /// Deletes this partial (its digest did not match).
    pub fn discard(self) {
        if self.still_at_its_path() {
            let _ = fs::remove_file(&self.part);
        }
        let _ = fs::remove_file(&self.record);
        piece_map::remove_beside(&self.part);
    }
}

/// Bytes free for this user in the file system holding `dir`, if it can be known. A file
/// system of no size at all (ramfs, many FUSE file systems) does not know: it says 0 blocks
/// free however much it can take.
pub fn free_space(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    if stat.f_blocks == 0 {
        return None;
    }
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Bytes a file really holds on disk: its length, or less when it is sparse (a download in
/// pieces sizes its file in full before the pieces arrive).
fn on_disk(meta: &fs::Metadata) -> u64 {
    meta.len().min(meta.blocks().saturating_mul(512))
}

fn read_record(path: &Path) -> Option<PartialRecord> {
    let text = fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Opens (creating it) and locks the partial at `path` for its one writer. The file is never
/// truncated before the lock is held, and a file unlinked while we waited for it is let go and
/// the new one at the path opened instead.
fn open_locked(path: &Path) -> Result<File, OpenError> {
    for _ in 0..3 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        if !file.metadata()?.is_file() {
            return Err(OpenError::Io(io::Error::other("not a regular file")));
        }
        if !lock_writer(&file)? {
            return Err(OpenError::InUse);
        }
        match (file.metadata(), fs::symlink_metadata(path)) {
            (Ok(open), Ok(at_path))
                if open.ino() == at_path.ino() && open.dev() == at_path.dev() =>
            {
                return Ok(file);
            }
            _ => continue,
        }
    }
    Err(OpenError::InUse)
}

/// Takes the writer's exclusive lock on `file`; false if another download holds it. A listing
/// (`PARCIAIS`) holds a shared lock for an instant to see whether a partial is in use, so a
/// refusal is retried for a moment before it is believed.
fn lock_writer(file: &File) -> io::Result<bool> {
    for _ in 0..LOCK_TRIES {
        if flock(file, FlockOperation::NonBlockingLockExclusive)? {
            return Ok(true);
        }
        std::thread::sleep(LOCK_RETRY);
    }
    Ok(false)
}

/// Attempts at a partial's lock before it is taken to be another download's.
const LOCK_TRIES: u32 = 20;
/// The pause between two attempts (a listing's probe lasts microseconds).
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// The partial at `path` opened and locked, or `None` if a download holds it.
fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    Ok(flock(&file, FlockOperation::NonBlockingLockExclusive)?.then_some(file))
}

/// True if a download holds the partial at `path`.
fn is_locked(path: &Path) -> bool {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => matches!(
            flock(&file, FlockOperation::NonBlockingLockShared),
            Ok(false)
        ),
        Err(_) => false,
    }
}

/// `flock(2)`; false when the lock is held elsewhere (with `LOCK_NB`).
fn flock(file: &File, operation: FlockOperation) -> io::Result<bool> {
    loop {
        match rustix::fs::flock(file, operation) {
            Ok(()) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(Errno::WOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Links the open `file` itself to `to` (never replacing `to`), through `/proc/self/fd`.
fn link_open_file(file: &File, to: &Path) -> io::Result<()> {
    let from = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(CWD, from.as_str(), CWD, to, AtFlags::SYMLINK_FOLLOW)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(size: u64) -> PartialRecord {
        PartialRecord {
            size,
            digest: "d".into(),
            name: None,
        }
    }

    /// No name can reach another name's files: a short name spelled like a long name's
    /// stored name is stored elsewhere, and the suffixes keep names apart.
    #[test]
    fn distinct_names_never_share_a_stored_file() {
        let long = "L".repeat(230);
        let spelled_like_it = format!("long-{}", &blake3::hash(long.as_bytes()).to_hex()[..32]);
        let store = PartialStore::new(Path::new("/x"));
        assert_ne!(store.part_path(&long), store.part_path(&spelled_like_it));
        assert!(PartialStore::key(&long).starts_with("long/"));
        let names = [
            long.as_str(),
            spelled_like_it.as_str(),
            "long",
            "a",
            "a.json",
            "a.part",
            "a.json.tmp",
        ];
        let mut paths = std::collections::HashSet::new();
        for name in names {
            for path in [
                store.part_path(name),
                store.record_path(name),
                store
                    .dir
                    .join(format!("{}.json.tmp", PartialStore::key(name))),
            ] {
                assert!(
                    paths.insert(path.clone()),
                    "{} reached twice",
                    path.display()
                );
            }
        }
    }

    /// A partial open for writing cannot be opened again, listed as free or removed; once its
    /// writer is done it can.
    #[test]
    fn a_partial_has_one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartialStore::new(dir.path());
        let mut first = store.open("f", &record(10), None).unwrap();
        first.file().write_all(b"12345").unwrap();
        assert!(matches!(
            store.open("f", &record(10), None),
            Err(OpenError::InUse)
        ));
        assert_eq!(
            store.list(),
            vec![StoredPartial {
                name: "f".into(),
                have: 5,
                size: Some(10),
                in_use: true,
                stored: "f".into(),
            }]
        );
        assert!(matches!(store.remove("f"), Err(RemoveError::InUse)));
        drop(first);
        assert!(!store.list()[0].in_use);
        assert_eq!(store.remove("f").unwrap(), 5);
        assert!(store.list().is_empty());
        assert!(matches!(store.remove("f"), Err(RemoveError::NotFound)));
    }

    /// The final name gets the writer's own file, even if something else now sits at the
    /// partial's path; an existing final name is never replaced.
    #[test]
    fn finishing_publishes_the_writers_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartialStore::new(dir.path());
        let taken = dir.path().join("taken");
        fs::write(&taken, b"old").unwrap();
        let mut open = store.open("f", &record(4), None).unwrap();
        open.file().write_all(b"mine").unwrap();
        let refused = open.finish(&taken).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&taken).unwrap(), b"old");

        let mut open = store.open("h", &record(4), None).unwrap();
        open.file().write_all(b"mine").unwrap();
        // Something else now sits at the partial's path; the writer's file is elsewhere.
        fs::rename(store.part_path("h"), dir.path().join("moved")).unwrap();
        fs::write(store.part_path("h"), b"evil").unwrap();
        open.finish(&dir.path().join("h")).unwrap();
        assert_eq!(fs::read(dir.path().join("h")).unwrap(), b"mine");
        // The file at the partial's path was not this download's: it is left alone.
        assert_eq!(fs::read(store.part_path("h")).unwrap(), b"evil");

        // The writer's file was deleted behind its back: nothing is published.
        let mut open = store.open("k", &record(4), None).unwrap();
        open.file().write_all(b"mine").unwrap();
        fs::remove_file(store.part_path("k")).unwrap();
        fs::write(store.part_path("k"), b"evil").unwrap();
        assert!(open.finish(&dir.path().join("k")).is_err());
        assert!(!dir.path().join("k").exists());
    }

    /// Space promised to a running download is counted for the next one, and given back when
    /// the first ends.
    #[test]
    fn promised_space_is_counted_until_the_download_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartialStore::new(dir.path());
        let free = free_space(dir.path()).unwrap();
        // Most of the free space for the first, then as much again for the second.
        let first_size = free / 4 * 3;
        let first = store.promise("a", first_size, 0).unwrap();
        let refused = store.promise("b", first_size, 0).unwrap_err();
        assert!(refused.promised >= first_size - (1 << 20), "{refused:?}");
        assert!(
            refused
                .to_string()
                .contains("prometidos a downloads em andamento")
        );
        drop(first);
        assert!(store.promise("b", first_size, 0).is_ok());
        // A download promising again replaces its own promise instead of counting it.
        let again = store.promise("c", first_size, 0).unwrap();
        let replaced = store.promise("c", first_size, 0).unwrap();
        drop(again);
        assert!(
            store.promise("d", first_size, 0).is_err(),
            "c's promise was lost"
        );
        drop(replaced);
    }
}
