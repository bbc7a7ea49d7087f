//! The peer's folder at start: which one (`--dir`, or the stable default `p2p`), created if
//! missing, and locked so two peers on one machine never share it by mistake (their partial
//! downloads would overwrite each other).
//!
//! The start line says which folder is shared, whether it was just created (a mistyped
//! `--dir` shows at once) and how to choose another.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::peer::console::count;
use crate::peer::{DEFAULT_DIR, PeerError};
use crate::share::SharedDir;

/// The lock file, inside the folder's `.napster/` (never shared: a sub-folder).
const LOCK_FILE: &str = ".napster/peer.lock";

/// A peer's folder, open and locked for this process.
pub struct PeerFolder {
    /// The shared folder.
    pub shared: SharedDir,
    /// True if it did not exist before this start.
    pub created: bool,
    /// True if it is the default, not `--dir`.
    pub default: bool,
    /// Held open for the process's life: the lock goes with it.
    _lock: File,
}

impl PeerFolder {
    /// Opens `dir` (or the default), creating it if missing, and locks it.
    pub fn open(dir: Option<PathBuf>) -> Result<PeerFolder, PeerError> {
        let default = dir.is_none();
        let path = dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        let created = fs::symlink_metadata(&path).is_err();
        let shared = SharedDir::open(&path).map_err(|e| PeerError::Folder(path.clone(), e))?;
        let lock = lock(&shared).map_err(|e| match e {
            Locked::ByOther(pid) => PeerError::FolderInUse(path.clone(), pid),
            Locked::Failed(e) => PeerError::Folder(path.clone(), e),
        })?;
        Ok(PeerFolder {
            shared,
            created,
            default,
            _lock: lock,
        })
    }

    /// `pasta alice (2 arquivos; para outra: --dir PASTA)`, for the start line.
    pub fn describe(&self) -> String {
        let mut notes = Vec::new();
        if self.default {
            notes.push("padrão".to_string());
        }
        if self.created {
            notes.push("criada agora".to_string());
        } else {
            match self.shared.list() {
                Ok(files) if files.is_empty() => notes.push("vazia".to_string()),
                Ok(files) => notes.push(count(files.len(), "arquivo", "arquivos")),
                Err(e) => log::debug!("cannot list {}: {e}", self.shared.path().display()),
            }
        }
        format!(
            "pasta {} ({}; para outra: --dir PASTA)",
            self.shared.path().display(),
            notes.join(", ")
        )
    }
}

enum Locked {
    /// Another process holds the lock (its process id, when it wrote one).
    ByOther(Option<u32>),
    Failed(io::Error),
}

/// Takes the folder's lock and writes this process's id in it.
fn lock(shared: &SharedDir) -> Result<File, Locked> {
    let path = shared.path().join(LOCK_FILE);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(Locked::Failed)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(Locked::Failed)?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Locked::ByOther(text.trim().parse().ok()));
        }
        Err(e) => return Err(Locked::Failed(e.into())),
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    if let Err(e) = written {
        log::debug!("cannot write the process id in {}: {e}", path.display());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second open of the same folder in this process is refused with our own process id
    /// (flock locks belong to the open file, so this is what another process would see); the
    /// lock goes when the first is dropped.
    #[test]
    fn a_folder_is_used_by_one_peer_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("alice");
        let first = PeerFolder::open(Some(dir.clone())).unwrap();
        assert!(first.created && !first.default);
        assert!(
            first.describe().contains("criada agora"),
            "{}",
            first.describe()
        );
        match PeerFolder::open(Some(dir.clone())) {
            Err(PeerError::FolderInUse(_, pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected FolderInUse, got {:?}", other.err()),
        }
        drop(first);
        fs::write(dir.join("a.txt"), "a").unwrap();
        let again = PeerFolder::open(Some(dir)).unwrap();
        assert!(!again.created);
        assert!(
            again
                .describe()
                .contains("(1 arquivo; para outra: --dir PASTA)")
        );
        assert!(again.shared.list().unwrap() == ["a.txt"]);
    }
}
