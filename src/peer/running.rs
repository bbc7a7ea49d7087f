//! The transfers running in this peer: QUIT stops them all, the user can list them and cancel
//! one, and one that stops moving is given up. (How the bytes move is [`crate::transfer`].)
//!
//! Each transfer registers itself (a [`TransferGuard`]) and then its socket. Stopping one sets
//! its flag, which the transfer checks between chunks, and shuts its socket down, which wakes
//! a blocked read or `sendfile` at once. A stopped download keeps what it received under its
//! temporary name, ready for resume.
//!
//! The flag and the socket are checked and set under one lock, so a transfer that attaches
//! its socket while [`Transfers::stop_all`] runs is either seen and shut down by it or sees the
//! stop itself: none is left running while QUIT waits for it.
//!
//! A transfer moving its data is watched ([`Transfers::watch`]): a watchdog thread reads how
//! many bytes the kernel has delivered on its socket (`TCP_INFO`, no cost on the data path)
//! and shuts down one that moved less than a minimum over a whole window, so a peer that
//! trickles bytes cannot hold a transfer, its thread and its name for ever.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// This peer receives.
    Download,
    /// This peer sends.
    Upload,
    /// One source's connection of a download from several peers.
    Source,
}

/// What the user is shown about a running transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferInfo {
    /// Its number, for `CANCELAR`.
    pub id: u64,
    /// Which way it goes.
    pub direction: Direction,
    /// The file's name.
    pub name: String,
    /// The other peer (for an upload, the address it connected from); none for a download
    /// from several peers (its sources are listed apart).
    pub peer: Option<SocketAddr>,
}

impl fmt::Display for TransferInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (id, name) = (self.id, &self.name);
        match (self.direction, self.peer) {
            (Direction::Download, Some(peer)) => write!(f, "[{id}] download de {name} de {peer}"),
            (Direction::Download, None) => write!(f, "[{id}] download de {name} em partes"),
            (Direction::Upload, Some(peer)) => write!(f, "[{id}] upload de {name} para {peer}"),
            (Direction::Upload, None) => write!(f, "[{id}] upload de {name}"),
            (Direction::Source, Some(peer)) => {
                write!(f, "[{id}] fonte {peer} do download de {name}")
            }
            (Direction::Source, None) => write!(f, "[{id}] fonte do download de {name}"),
        }
    }
}

/// Why a transfer was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Nobody stopped it.
    Running,
    /// The peer is leaving (QUIT, a signal).
    Stopped,
    /// The user cancelled it.
    Cancelled,
    /// It moved less than the minimum rate over a whole window.
    TooSlow,
}

impl Ending {
    fn from_u8(value: u8) -> Ending {
        match value {
            1 => Ending::Stopped,
            2 => Ending::Cancelled,
            3 => Ending::TooSlow,
            _ => Ending::Running,
        }
    }
}

/// The least a transfer must move over a window, or it is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second, averaged over the window.
    pub bytes_per_sec: u64,
    /// How long the average is taken over.
    pub window: Duration,
}

impl MinRate {
    /// The minimum for transfers of a peer whose `--liveness` bound is `liveness`:
    /// [`MIN_RATE`] bytes per second over windows of half that bound (at least 1 s). Half, so
    /// that a partner that trickles is given up for what it is, before the kernel's
    /// `TCP_USER_TIMEOUT` (the whole bound) would end the connection for want of an ACK.
    pub fn for_liveness(liveness: Duration) -> MinRate {
        MinRate {
            bytes_per_sec: MIN_RATE,
            window: (liveness / 2).max(Duration::from_secs(1)),
        }
    }

    fn bytes_per_window(&self) -> u64 {
        (self.bytes_per_sec as f64 * self.window.as_secs_f64()) as u64
    }
}

impl fmt::Display for MinRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "menos de {} KiB/s durante {} s",
            self.bytes_per_sec / 1024,
            self.window.as_secs()
        )
    }
}

/// Bytes per second a transfer in progress must move, averaged over the window: far below any
/// real network, far above a peer that trickles bytes to keep a transfer open.
pub const MIN_RATE: u64 = 16 * 1024;

/// How often the watchdog looks at the watched transfers.
const WATCH_TICK: Duration = Duration::from_millis(500);

/// The registry of running transfers.
#[derive(Default)]
pub struct Transfers {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    registry: Mutex<Registry>,
    next: AtomicU64,
    stop: AtomicBool,
    /// Stops the upload port's accept loop when every transfer is stopped: no new upload
    /// starts while the peer winds down.
    accepting: Arc<crate::accept::Shutdown>,
    /// A transfer ended, or one started being watched.
    changed: Condvar,
    watchdog: OnceLock<()>,
}

#[derive(Default)]
struct Registry {
    entries: HashMap<u64, Entry>,
    /// Stored names of the running downloads.
    downloads: HashSet<String>,
}

struct Entry {
    info: TransferInfo,
    control: Arc<Control>,
    socket: Option<TcpStream>,
    watch: Option<Watch>,
}

/// What a transfer and the ones who may stop it share.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    ending: AtomicU8,
}

impl Control {
    /// Stops the transfer for `why`; the first reason given is the one kept.
    fn end(&self, why: Ending) {
        let _ = self.ending.compare_exchange(
            Ending::Running as u8,
            why as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A watched transfer's current window.
struct Watch {
    rate: MinRate,
    direction: Direction,
    window_start: Instant,
    bytes_at_start: u64,
}

/// Keeps a transfer registered until dropped.
pub struct TransferGuard<'a> {
    owner: &'a Transfers,
    id: u64,
    control: Arc<Control>,
    download: Option<String>,
}

impl TransferGuard<'_> {
    /// The transfer's number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The flag the transfer checks between chunks: set when it is stopped for any reason.
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.control.stop
    }

    /// Why it was stopped, if it was.
    pub fn ending(&self) -> Ending {
        Ending::from_u8(self.control.ending.load(Ordering::SeqCst))
    }
}

impl Drop for TransferGuard<'_> {
    fn drop(&mut self) {
        let shared = &self.owner.shared;
        let mut registry = shared.registry.lock();
        registry.entries.remove(&self.id);
        if let Some(key) = &self.download {
            registry.downloads.remove(key);
        }
        shared.changed.notify_all();
    }
}

impl Transfers {
    /// An empty registry.
    pub fn new() -> Transfers {
        Transfers::default()
    }

    /// True once [`Transfers::stop_all`] was called.
    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    /// The signal that ends the upload port's accept loop, given by [`Transfers::stop_all`].
    pub fn accepting(&self) -> &crate::accept::Shutdown {
        &self.shared.accepting
    }

    /// Set once [`Transfers::stop_all`] was called: long work outside any transfer (hashing a
    /// shared file) stops on it.
    pub fn shutdown_flag(&self) -> &AtomicBool {
        &self.shared.stop
    }

    /// Registers a download of `name` from `peer`, claiming its stored name `key` (see
    /// [`crate::transfer::PartialStore::key`]); `None` if a download of it is already running.
    pub fn start_download(
        &self,
        key: &str,
        name: &str,
        peer: Option<SocketAddr>,
    ) -> Option<TransferGuard<'_>> {
        let mut registry = self.shared.registry.lock();
        if !registry.downloads.insert(key.to_string()) {
            return None;
        }
        Some(self.register(
            &mut registry,
            Direction::Download,
            name,
            peer,
            Some(key.to_string()),
        ))
    }

    /// Registers an upload of `name` to `peer`.
    pub fn start_upload(&self, name: &str, peer: SocketAddr) -> TransferGuard<'_> {
        let mut registry = self.shared.registry.lock();
        self.register(&mut registry, Direction::Upload, name, Some(peer), None)
    }

    /// Registers one source's connection of the download from several peers of `name`.
    pub fn start_source(&self, name: &str, peer: SocketAddr) -> TransferGuard<'_> {
        let mut registry = self.shared.registry.lock();
        self.register(&mut registry, Direction::Source, name, Some(peer), None)
    }

    fn register(
        &self,
        registry: &mut Registry,
        direction: Direction,
        name: &str,
        peer: Option<SocketAddr>,
        download: Option<String>,
    ) -> TransferGuard<'_> {
        let id = self.shared.next.fetch_add(1, Ordering::Relaxed) + 1;
        let control = Arc::new(Control::default());
        if self.stopping() {
            control.end(Ending::Stopped);
        }
        registry.entries.insert(
            id,
            Entry {
                info: TransferInfo {
                    id,
                    direction,
                    name: name.to_string(),
                    peer,
                },
                control: Arc::clone(&control),
                socket: None,
                watch: None,
            },
        );
        TransferGuard {
            owner: self,
            id,
            control,
            download,
        }
    }

    /// Attaches the transfer's socket, so that a stop can interrupt it. A transfer already
    /// stopped has its socket shut down at once.
    pub fn attach(&self, guard: &TransferGuard<'_>, stream: &TcpStream) {
        let Ok(clone) = stream.try_clone() else {
            return;
        };
        let mut registry = self.shared.registry.lock();
        if guard.stop_flag().load(Ordering::SeqCst) {
            let _ = clone.shutdown(Shutdown::Both);
        }
        if let Some(entry) = registry.entries.get_mut(&guard.id) {
            entry.socket = Some(clone);
        }
    }

    /// Starts watching the attached transfer's data: from now on it must move at least `rate`,
    /// or it is shut down and ends as [`Ending::TooSlow`].
    pub fn watch(&self, guard: &TransferGuard<'_>, rate: MinRate) {
        let mut registry = self.shared.registry.lock();
        let Some(entry) = registry.entries.get_mut(&guard.id) else {
            return;
        };
        let Some(bytes) = entry
            .socket
            .as_ref()
            .and_then(|s| moved(s, entry.info.direction))
        else {
            log::debug!("transfer {}: TCP_INFO unavailable, not watched", guard.id);
            return;
        };
        entry.watch = Some(Watch {
            rate,
            direction: entry.info.direction,
            window_start: Instant::now(),
            bytes_at_start: bytes,
        });
        drop(registry);
        self.start_watchdog();
        self.shared.changed.notify_all();
    }

    fn start_watchdog(&self) {
        self.shared.watchdog.get_or_init(|| {
            let shared = Arc::clone(&self.shared);
            let spawned = thread::Builder::new()
                .name("transfer-watchdog".into())
                .stack_size(64 * 1024)
                .spawn(move || watchdog(&shared));
            if let Err(e) = spawned {
                log::warn!(
                    "cannot start the transfer watchdog ({e}): slow transfers are not given up"
                );
            }
        });
    }

    /// Uploads sending right now (QUIT asks before stopping them).
    pub fn uploads_running(&self) -> usize {
        let registry = self.shared.registry.lock();
        registry
            .entries
            .values()
            .filter(|e| e.info.direction == Direction::Upload)
            .count()
    }

    /// The running transfers, oldest first.
    pub fn list(&self) -> Vec<TransferInfo> {
        let registry = self.shared.registry.lock();
        let mut list: Vec<TransferInfo> =
            registry.entries.values().map(|e| e.info.clone()).collect();
        list.sort_by_key(|info| info.id);
        list
    }

    /// Cancels the transfer numbered `id`; returns it, or `None` if no such transfer runs.
    pub fn cancel(&self, id: u64) -> Option<TransferInfo> {
        let registry = self.shared.registry.lock();
        let entry = registry.entries.get(&id)?;
        entry.control.end(Ending::Cancelled);
        if let Some(socket) = &entry.socket {
            let _ = socket.shutdown(Shutdown::Both);
        }
        Some(entry.info.clone())
    }

    /// Stops every transfer and waits up to `wait` for those with a socket to wind down.
    pub fn stop_all(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        self.shared.accepting.stop();
        let mut registry = self.shared.registry.lock();
        self.shared.stop.store(true, Ordering::SeqCst);
        for entry in registry.entries.values() {
            entry.control.end(Ending::Stopped);
            if let Some(socket) = &entry.socket {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        while registry.entries.values().any(|e| e.socket.is_some()) {
            if self
                .shared
                .changed
                .wait_until(&mut registry, deadline)
                .timed_out()
            {
                break;
            }
        }
    }
}

/// Bytes the kernel has delivered on `socket` in `direction`: acknowledged by the other side
/// for an upload, received for a download. `None` where `TCP_INFO` is unavailable.
#[cfg(target_os = "linux")]
fn moved(socket: &TcpStream, direction: Direction) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a plain C struct for which
    // all-zero is a valid value; the descriptor is open for the duration of the call.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let got = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // Kernels before 4.1 return a shorter struct without the byte counters.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_segs_out);
    if got != 0 || (len as usize) < needed {
        return None;
    }
    Some(match direction {
        Direction::Upload => info.tcpi_bytes_acked,
        Direction::Download | Direction::Source => info.tcpi_bytes_received,
    })
}

#[cfg(not(target_os = "linux"))]
fn moved(_: &TcpStream, _: Direction) -> Option<u64> {
    None
}

/// Gives up every watched transfer that moved less than its minimum over a whole window.
/// Sleeps on the registry's condition while nothing is watched.
fn watchdog(shared: &Shared) {
    let mut registry = shared.registry.lock();
    loop {
        if !registry.entries.values().any(|e| e.watch.is_some()) {
            shared.changed.wait(&mut registry);
            continue;
        }
        shared.changed.wait_for(&mut registry, WATCH_TICK);
        let now = Instant::now();
        for entry in registry.entries.values_mut() {
            let (Some(watch), Some(socket)) = (&mut entry.watch, &entry.socket) else {
                continue;
            };
            if now.duration_since(watch.window_start) < watch.rate.window {
                continue;
            }
            // A getsockopt: a query of the kernel's counters, not I/O on the connection.
            let Some(bytes) = moved(socket, watch.direction) else {
                entry.watch = None;
                continue;
            };
            if bytes.saturating_sub(watch.bytes_at_start) < watch.rate.bytes_per_window() {
                log::info!(
                    "transfer {} ({:?}) moved {} bytes in {:?}: too slow, giving up",
                    entry.info.id,
                    entry.info.peer,
                    bytes.saturating_sub(watch.bytes_at_start),
                    now.duration_since(watch.window_start)
                );
                entry.control.end(Ending::TooSlow);
                let _ = socket.shutdown(Shutdown::Both);
                entry.watch = None;
            } else {
                watch.window_start = now;
                watch.bytes_at_start = bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Barrier;

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    /// A connected pair: the transfer's socket and the far end that sees it shut down.
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let near = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (far, _) = listener.accept().unwrap();
        (near, far)
    }

    /// `stop_all` also ends the upload port's accept loop, blocked in `accept` with no
    /// connection coming: no new upload starts while the peer winds down.
    #[test]
    fn stop_all_ends_the_upload_accept_loop() {
        let transfers = Transfers::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (ended, ends) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                // A connection ends the loop too: how the test wakes a loop the stop missed.
                let served =
                    crate::accept::serve(listener, transfers.accepting(), "upload", |_, _| {
                        std::ops::ControlFlow::Break(())
                    });
                ended.send(served.is_ok()).unwrap();
            });
            transfers.stop_all(Duration::from_millis(10));
            let ended = ends.recv_timeout(Duration::from_secs(30));
            if ended.is_err() {
                let _ = TcpStream::connect(addr);
            }
            assert_eq!(ended, Ok(true), "the accept loop was still running");
        });
    }

    /// A transfer that attaches its socket while `stop_all` runs is shut down all the same:
    /// either `stop_all` sees the socket or the attach sees the stop. Other transfers starting
    /// and ending at the same time (as on a busy peer) make the registry's lock contended,
    /// which is what widens the gap between the two.
    #[test]
    fn a_transfer_attached_while_stop_all_runs_is_shut_down() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut missed = 0;
        for _ in 0..300 {
            let transfers = Transfers::new();
            let (near, mut far) = pair(&listener);
            let start = Barrier::new(3);
            let others_done = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    start.wait();
                    while !others_done.load(Ordering::SeqCst) {
                        drop(transfers.start_upload("other", peer()));
                    }
                });
                s.spawn(|| {
                    start.wait();
                    transfers.stop_all(Duration::from_millis(200));
                    others_done.store(true, Ordering::SeqCst);
                });
                let guard = transfers.start_upload("f", peer());
                start.wait();
                transfers.attach(&guard, &near);
                // The transfer ends only once its socket is shut down, as a real one does.
                far.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut byte = [0u8; 1];
                if !matches!(far.read(&mut byte), Ok(0)) {
                    missed += 1;
                }
                drop(guard);
            });
        }
        assert_eq!(missed, 0, "attached sockets never shut down by stop_all");
    }

    /// Cancelling one transfer shuts its socket down and marks it cancelled; the others go on.
    #[test]
    fn cancelling_one_transfer_leaves_the_others_running() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let transfers = Transfers::new();
        let (near_a, mut far_a) = pair(&listener);
        let (near_b, far_b) = pair(&listener);
        let a = transfers.start_download("a", "a", Some(peer())).unwrap();
        let b = transfers.start_upload("b", peer());
        transfers.attach(&a, &near_a);
        transfers.attach(&b, &near_b);
        let listed: Vec<u64> = transfers.list().iter().map(|t| t.id).collect();
        assert_eq!(listed, vec![a.id(), b.id()]);
        assert_eq!(transfers.cancel(a.id()).unwrap().name, "a");
        assert_eq!(a.ending(), Ending::Cancelled);
        assert!(a.stop_flag().load(Ordering::SeqCst));
        let mut byte = [0u8; 1];
        assert_eq!(far_a.read(&mut byte).unwrap(), 0);
        assert_eq!(b.ending(), Ending::Running);
        far_b.set_nonblocking(true).unwrap();
        assert!(
            (&far_b).read(&mut byte).is_err(),
            "b's socket is still open"
        );
        assert!(transfers.cancel(999).is_none());
    }

    /// A download claims its stored name until its guard is dropped.
    #[test]
    fn a_stored_name_is_claimed_by_one_download_at_a_time() {
        let transfers = Transfers::new();
        let first = transfers
            .start_download("long/abc", "x", Some(peer()))
            .unwrap();
        assert!(
            transfers
                .start_download("long/abc", "y", Some(peer()))
                .is_none()
        );
        drop(first);
        assert!(
            transfers
                .start_download("long/abc", "y", Some(peer()))
                .is_some()
        );
    }

    /// A transfer that moves less than its minimum over a window is shut down as too slow;
    /// one that keeps up is left alone.
    #[test]
    fn a_transfer_below_the_minimum_rate_is_given_up() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let transfers = Transfers::new();
        let (near, mut far) = pair(&listener);
        let guard = transfers
            .start_download("slow", "slow", Some(peer()))
            .unwrap();
        transfers.attach(&guard, &near);
        let rate = MinRate {
            bytes_per_sec: 1 << 20,
            window: Duration::from_secs(1),
        };
        transfers.watch(&guard, rate);
        // The far side sends one byte: far below a MiB in a second.
        std::io::Write::write_all(&mut far, b"x").unwrap();
        far.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(far.read(&mut byte).unwrap(), 0, "shut down by the watchdog");
        assert_eq!(guard.ending(), Ending::TooSlow);
    }
}
