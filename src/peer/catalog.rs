//! What this peer shares and what it has told the tracker: one [`FileRecord`] per shared file.
//!
//! JOIN never waits for hashing: it sends every file's name and size at once
//! ([`Catalog::snapshot_for_join`]). Digests come later, as the background hashing learns them
//! ([`Catalog::digest_known`]); files appear, change and vanish as the folder is rescanned
//! ([`Catalog::rescan`]). Each of those is a pending change, and pending changes go to the
//! tracker in batches ([`Catalog::take_batch`], sent by [`crate::peer::announcer`]): one UPDATE
//! for many files, never one per file.
//!
//! A rescan costs one directory read and one `stat` per file. A file counts as changed when its
//! [`FileIdentity`] changed — device, inode, size, modification and change times, what the
//! digest cache tells versions apart by — so a file rewritten with its size and modification
//! time kept (its change time moves) is announced again; its digest is then unknown, and
//! withdrawn at the tracker (the record replacing it has none), until it is hashed again.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;

use crate::digests::FileIdentity;
use crate::protocol::{Digest, FileRecord};
use crate::share::SharedDir;

/// A change waits at most this long for others to join it in one UPDATE.
pub const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Most records in one UPDATE (each at most about 400 bytes: well under the tracker's 1 MiB).
pub const BATCH_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    size: u64,
    identity: FileIdentity,
    digest: Option<Digest>,
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, Known>,
    /// Records to add or replace at the tracker.
    added: BTreeMap<String, FileRecord>,
    /// Names to remove at the tracker.
    removed: BTreeSet<String>,
    /// When the oldest pending change was made.
    since: Option<Instant>,
    /// The tracker has our list: changes are worth sending.
    joined: bool,
}

impl State {
    fn pend_add(&mut self, record: FileRecord) {
        self.removed.remove(&record.name);
        self.added.insert(record.name.clone(), record);
        self.since.get_or_insert_with(Instant::now);
    }

    fn pend_remove(&mut self, name: &str) {
        self.added.remove(name);
        self.removed.insert(name.to_string());
        self.since.get_or_insert_with(Instant::now);
    }

    fn pending(&self) -> usize {
        self.added.len() + self.removed.len()
    }

    fn record(name: &str, known: &Known) -> FileRecord {
        FileRecord::sized(name, known.size, known.digest)
    }
}

/// A batch of changes for one UPDATE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Records added or replaced.
    pub add: Vec<FileRecord>,
    /// Names removed.
    pub remove: Vec<String>,
}

/// The peer's shared files and the changes not yet announced; shared by the console, the
/// announcer and the hashing thread.
pub struct Catalog {
    shared: SharedDir,
    state: Mutex<State>,
    /// Wakes the announcer: send pending changes now.
    announce: (Sender<()>, Receiver<()>),
    /// Wakes the hashing thread: files without a digest appeared.
    hash: (Sender<()>, Receiver<()>),
}

impl Catalog {
    /// A catalog of `shared`, empty until the first rescan.
    pub fn new(shared: SharedDir) -> Catalog {
        Catalog {
            shared,
            state: Mutex::new(State::default()),
            announce: bounded(1),
            hash: bounded(1),
        }
    }

    /// Reads the folder again and records what appeared, changed or vanished as pending
    /// changes. Wakes the hashing thread when some file needs a digest.
    pub fn rescan(&self) -> io::Result<()> {
        let listed = self.shared.list_files()?;
        let mut state = self.state.lock();
        let mut to_hash = false;
        let mut seen = BTreeSet::new();
        for file in listed {
            seen.insert(file.name.clone());
            let unchanged = state
                .files
                .get(&file.name)
                .is_some_and(|k| k.identity == file.identity);
            if unchanged {
                continue;
            }
            let known = Known {
                size: file.size,
                identity: file.identity,
                digest: None,
            };
            let record = State::record(&file.name, &known);
            state.files.insert(file.name, known);
            state.pend_add(record);
            to_hash = true;
        }
        let gone: Vec<String> = state
            .files
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            state.files.remove(&name);
            state.pend_remove(&name);
        }
        drop(state);
        if to_hash {
            let _ = self.hash.0.try_send(());
        }
        Ok(())
    }

    /// Rescans, then returns every record for a JOIN (names and sizes now, digests where
    /// known) and forgets the pending changes: the JOIN carries them.
    pub fn snapshot_for_join(&self) -> io::Result<Vec<FileRecord>> {
        self.rescan()?;
        let mut state = self.state.lock();
        state.added.clear();
        state.removed.clear();
        state.since = None;
        Ok(state
            .files
            .iter()
            .map(|(name, known)| State::record(name, known))
            .collect())
    }

    /// Every record as known now, sorted by name (for LIST of one's own files).
    pub fn records(&self) -> Vec<FileRecord> {
        let state = self.state.lock();
        state
            .files
            .iter()
            .map(|(name, known)| State::record(name, known))
            .collect()
    }

    /// The tracker holds our list (after a JOIN), or lost it: changes are sent only while it
    /// holds it.
    pub fn set_joined(&self, joined: bool) {
        self.state.lock().joined = joined;
    }

    /// Records that the version `identity` of `name` has the digest `hex` (as the hashing
    /// computed it). Ignored when the file has changed since (another version than the one
    /// listed) or the digest is already known.
    pub fn digest_known(&self, name: &str, identity: FileIdentity, hex: &str) {
        let Ok(digest) = hex.parse::<Digest>() else {
            log::warn!("{name}: the digest {hex:?} is not 64 hex digits");
            return;
        };
        let mut state = self.state.lock();
        let Some(known) = state.files.get_mut(name) else {
            return;
        };
        if known.identity != identity || known.digest == Some(digest) {
            return;
        }
        known.digest = Some(digest);
        let record = State::record(name, known);
        state.pend_add(record);
    }

    /// Pending changes due for an UPDATE: when joined, and the oldest waited [`BATCH_DELAY`]
    /// (or `now` is set), at most [`BATCH_MAX`] of them.
    pub fn take_batch(&self, now: bool) -> Option<Batch> {
        let mut state = self.state.lock();
        let due =
            state.since.is_some_and(|t| t.elapsed() >= BATCH_DELAY) || state.pending() >= BATCH_MAX;
        if !state.joined || state.pending() == 0 || !(now || due) {
            return None;
        }
        let mut batch = Batch::default();
        while batch.remove.len() < BATCH_MAX {
            let Some(name) = state.removed.pop_first() else {
                break;
            };
            batch.remove.push(name);
        }
        while batch.add.len() + batch.remove.len() < BATCH_MAX {
            let Some((_, record)) = state.added.pop_first() else {
                break;
            };
            batch.add.push(record);
        }
        state.since = (state.pending() > 0).then(Instant::now);
        Some(batch)
    }

    /// Asks the announcer to rescan and send pending changes now (a download just finished).
    pub fn announce_now(&self) {
        let _ = self.announce.0.try_send(());
    }

    /// What wakes the announcer before its next tick.
    pub fn announce_requests(&self) -> &Receiver<()> {
        &self.announce.1
    }

    /// What wakes the hashing thread.
    pub fn hash_requests(&self) -> &Receiver<()> {
        &self.hash.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let shared = SharedDir::open(dir.path()).unwrap();
        (dir, Catalog::new(shared))
    }

    /// The version of the file at `path` now.
    fn identity(path: &std::path::Path) -> FileIdentity {
        FileIdentity::of(&std::fs::metadata(path).unwrap())
    }

    /// JOIN carries names and sizes at once; digests learned later, a new file and a removed
    /// one then go out as one batch.
    #[test]
    fn changes_after_join_are_batched() {
        let (dir, catalog) = catalog();
        std::fs::write(dir.path().join("a.txt"), b"abc").unwrap();
        std::fs::write(dir.path().join("b.txt"), b"hello").unwrap();
        let joined = catalog.snapshot_for_join().unwrap();
        assert_eq!(
            joined,
            vec![
                FileRecord::sized("a.txt", 3, None),
                FileRecord::sized("b.txt", 5, None)
            ]
        );
        assert_eq!(catalog.take_batch(true), None, "not joined yet");
        catalog.set_joined(true);
        assert_eq!(catalog.take_batch(true), None, "nothing pending");
        let hex = "ab".repeat(32);
        let (a, b) = (
            identity(&dir.path().join("a.txt")),
            identity(&dir.path().join("b.txt")),
        );
        catalog.digest_known("a.txt", a, &hex);
        // Another version than the one listed: the file changed since.
        catalog.digest_known("b.txt", FileIdentity { size: 99, ..b }, &hex);
        std::fs::write(dir.path().join("c.txt"), b"new").unwrap();
        std::fs::remove_file(dir.path().join("b.txt")).unwrap();
        catalog.rescan().unwrap();
        let batch = catalog.take_batch(true).unwrap();
        assert_eq!(
            batch.add,
            vec![
                FileRecord::sized("a.txt", 3, Some(hex.parse().unwrap())),
                FileRecord::sized("c.txt", 3, None)
            ]
        );
        assert_eq!(batch.remove, vec!["b.txt".to_string()]);
        assert_eq!(catalog.take_batch(true), None);
    }

    /// A changed file loses its digest until it is hashed again.
    #[test]
    fn a_rewritten_file_is_announced_again_without_its_old_digest() {
        let (dir, catalog) = catalog();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, b"abc").unwrap();
        catalog.snapshot_for_join().unwrap();
        catalog.set_joined(true);
        catalog.digest_known("a.txt", identity(&path), &"cd".repeat(32));
        catalog.take_batch(true).unwrap();
        std::fs::write(&path, b"abcdef").unwrap();
        catalog.rescan().unwrap();
        let batch = catalog.take_batch(true).unwrap();
        assert_eq!(batch.add, vec![FileRecord::sized("a.txt", 6, None)]);
        assert_eq!(catalog.records(), vec![FileRecord::sized("a.txt", 6, None)]);
    }

    /// Size and modification time are not enough: a file rewritten in place with both kept
    /// gets a new change time, so it is announced again without its old digest (withdrawn at
    /// the tracker: the new record has none) and hashed again; an untouched file is not.
    #[test]
    fn a_file_rewritten_with_its_size_and_mtime_kept_is_announced_again() {
        use std::os::unix::fs::FileExt;
        let (dir, catalog) = catalog();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, b"aaaa").unwrap();
        std::fs::write(dir.path().join("b.txt"), b"bbbb").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        catalog.snapshot_for_join().unwrap();
        catalog.set_joined(true);
        let old = "cd".repeat(32);
        catalog.digest_known("a.txt", identity(&path), &old);
        catalog.digest_known("b.txt", identity(&dir.path().join("b.txt")), &old);
        catalog.take_batch(true).unwrap();
        catalog.rescan().unwrap();
        assert_eq!(catalog.take_batch(true), None, "nothing changed");
        // The change time moves in clock ticks on some file systems: wait for the clock (not
        // for another thread) so that it moves.
        let before = identity(&path).changed_ns;
        let start = std::time::SystemTime::now();
        while start.elapsed().unwrap_or_default() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.write_all_at(b"zzzz", 0).unwrap();
        file.set_modified(mtime).unwrap();
        let now = identity(&path);
        assert_eq!(
            (
                now.size,
                std::fs::metadata(&path).unwrap().modified().unwrap()
            ),
            (4, mtime)
        );
        assert_ne!(now.changed_ns, before, "the change time moved");
        catalog.rescan().unwrap();
        let batch = catalog.take_batch(true).unwrap();
        assert_eq!(batch.add, vec![FileRecord::sized("a.txt", 4, None)]);
        assert!(batch.remove.is_empty());
        // The old version's digest, computed before the rewrite, is not taken for the new one.
        catalog.digest_known(
            "a.txt",
            FileIdentity {
                changed_ns: before,
                ..now
            },
            &old,
        );
        assert_eq!(catalog.take_batch(true), None);
        assert_eq!(
            catalog.records(),
            vec![
                FileRecord::sized("a.txt", 4, None),
                FileRecord::sized("b.txt", 4, Some(old.parse().unwrap()))
            ]
        );
    }
}
