//! Keeps the tracker's view of this peer's files current, without anyone typing.
//!
//! Two threads:
//! - **announcer**: rescans the shared folder every [`RESCAN_EVERY`] and sends the pending
//!   changes of the [`Catalog`](crate::peer::catalog::Catalog) (new, changed and removed files,
//!   digests learned) as batched UPDATEs. A finished download wakes it at once.
//! - **digests**: hashes the shared files in the background (through the uploader's digest
//!   cache, so an upload request finds the digest ready), and again whenever a rescan finds
//!   files without one; each digest learned becomes a pending change.
//!
//! Why a periodic rescan and not a file-system watcher (`notify`): a rescan is one directory
//! read and one `stat` per file, needs no dependency, works the same on every file system
//! (network and FUSE mounts included, where inotify sees nothing) and cannot lose events: a
//! watcher's queue overflows and it then needs a rescan anyway. Every two seconds is within
//! "a few seconds".

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::select;

use crate::peer::{PeerContext, uploader};

/// How often the shared folder is read again.
pub const RESCAN_EVERY: Duration = Duration::from_secs(2);
/// How often pending changes are looked at (they wait at most `BATCH_DELAY` once due).
const TICK: Duration = Duration::from_millis(250);

/// Reads the folder once, then starts the announcer and the hashing thread.
pub fn start(ctx: &Arc<PeerContext>) -> io::Result<()> {
    if let Err(e) = ctx.catalog.rescan() {
        log::warn!("cannot list the shared folder: {e}");
    }
    let hashing = Arc::clone(ctx);
    thread::Builder::new()
        .name("digests".into())
        .spawn(move || hash_loop(&hashing))?;
    let announcing = Arc::clone(ctx);
    thread::Builder::new()
        .name("announcer".into())
        .spawn(move || announce_loop(&announcing))?;
    Ok(())
}

/// Hashes every shared file, then again each time the catalog asks for it.
fn hash_loop(ctx: &PeerContext) {
    loop {
        uploader::hash_shared_files(ctx);
        if ctx.catalog.hash_requests().recv().is_err() || ctx.transfers.stopping() {
            return;
        }
    }
}

fn announce_loop(ctx: &PeerContext) {
    let mut last_scan = Instant::now();
    let mut scan_failed = false;
    loop {
        let woken = select! {
            recv(ctx.catalog.announce_requests()) -> _ => true,
            default(TICK) => false,
        };
        if ctx.transfers.stopping() {
            return;
        }
        if woken || last_scan.elapsed() >= RESCAN_EVERY {
            last_scan = Instant::now();
            match ctx.catalog.rescan() {
                Ok(()) => scan_failed = false,
                // Said once, not every two seconds.
                Err(e) if !scan_failed => {
                    scan_failed = true;
                    log::warn!("cannot list the shared folder: {e}");
                }
                Err(e) => log::debug!("cannot list the shared folder: {e}"),
            }
        }
        // Handed to the tracker link, which sends them in order and logs a refusal; a
        // connection lost meanwhile is JOINed again with every record, so nothing is lost.
        while let Some(batch) = ctx.catalog.take_batch(woken) {
            log::debug!(
                "announcing {} file(s) and {} removal(s)",
                batch.add.len(),
                batch.remove.len()
            );
            ctx.link.change(batch.add, batch.remove);
        }
    }
}
