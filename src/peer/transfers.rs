//! The transfers running in this peer, so that QUIT can stop them cleanly.
//!
//! Each transfer registers its socket; stopping sets a flag checked between chunks and shuts
//! the sockets down, which wakes any blocked read or `sendfile` at once. The downloader then
//! keeps what it received under the temporary name, ready for resume.

use std::collections::{HashMap, HashSet};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The registry of running transfers.
#[derive(Default)]
pub struct Transfers {
    sockets: Mutex<HashMap<u64, TcpStream>>,
    downloads: Mutex<HashSet<String>>,
    next: AtomicU64,
    uploads: AtomicUsize,
    stop: AtomicBool,
    done: Condvar,
}

/// Keeps a transfer registered until dropped.
pub struct TransferGuard<'a> {
    owner: &'a Transfers,
    id: u64,
    download: Option<String>,
}

impl Drop for TransferGuard<'_> {
    fn drop(&mut self) {
        let mut sockets = self.owner.sockets.lock();
        sockets.remove(&self.id);
        match &self.download {
            Some(name) => {
                self.owner.downloads.lock().remove(name);
            }
            None => {
                self.owner.uploads.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.owner.done.notify_all();
    }
}

impl Transfers {
    /// An empty registry.
    pub fn new() -> Transfers {
        Transfers::default()
    }

    /// The flag transfers check between chunks.
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// True once [`Transfers::stop_all`] was called.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Claims the name `name` for a download; `None` if one of it is already running.
    pub fn start_download(&self, name: &str) -> Option<TransferGuard<'_>> {
        if !self.downloads.lock().insert(name.to_string()) {
            return None;
        }
        Some(TransferGuard {
            owner: self,
            id: self.next.fetch_add(1, Ordering::Relaxed),
            download: Some(name.to_string()),
        })
    }

    /// Registers an upload.
    pub fn start_upload(&self) -> TransferGuard<'_> {
        self.uploads.fetch_add(1, Ordering::SeqCst);
        TransferGuard {
            owner: self,
            id: self.next.fetch_add(1, Ordering::Relaxed),
            download: None,
        }
    }

    /// Uploads sending right now (QUIT asks before stopping them).
    pub fn uploads_running(&self) -> usize {
        self.uploads.load(Ordering::SeqCst)
    }

    /// Attaches the transfer's socket, so a stop can interrupt it.
    pub fn attach(&self, guard: &TransferGuard<'_>, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            if self.stopping() {
                let _ = clone.shutdown(Shutdown::Both);
            }
            self.sockets.lock().insert(guard.id, clone);
        }
    }

    /// Stops every transfer and waits up to `wait` for them to wind down.
    pub fn stop_all(&self, wait: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + wait;
        let mut sockets = self.sockets.lock();
        for stream in sockets.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        while !sockets.is_empty() {
            if self.done.wait_until(&mut sockets, deadline).timed_out() {
                break;
            }
        }
    }
}
