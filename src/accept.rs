//! The accept loop both servers share: the tracker's port and the peer's upload port.
//!
//! The accepting thread only accepts, counts and hands off ([`serve`]); each server starts its
//! own connection threads. Three things every such loop needs are written once here:
//! - **a bound on connections** ([`Slots`]), in all and per host, each counted by a [`Slot`]
//!   until the connection's thread drops it, so a flood of connections costs a refusal each,
//!   not a thread each, and one host cannot keep every other out;
//! - **a pause when the machine is out of descriptors or memory**: the failed connection stays
//!   queued and `accept` would fail again at once, so the loop backs off (from
//!   [`BACKOFF_FIRST`], doubling up to [`BACKOFF_MAX`]) instead of spinning and logging;
//! - **a shutdown signal** ([`Shutdown`]): a server that can be stopped can be tested, and a
//!   blocked `accept` is woken by shutting the listening socket down for reading.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;

use crate::throttle::Throttle;
use crate::warn_throttled;

/// The first pause after an accept failed for lack of descriptors or memory.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// The longest pause between two accepts that fail for lack of descriptors or memory.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Failed accepts: a few lines per 10 s (out of descriptors, they repeat at every pause).
static ACCEPT_WARNINGS: Throttle = Throttle::new(3, Duration::from_secs(10));

/// Tells running accept loops to stop; shared by whoever may stop a server.
#[derive(Default)]
pub struct Shutdown {
    stopped: AtomicBool,
    /// Handles on the sockets of the loops running, to wake their blocked `accept`.
    listeners: Mutex<Vec<TcpListener>>,
}

impl Shutdown {
    /// A signal not yet given.
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    /// Stops every loop serving with this signal: each returns, closing its listener, instead
    /// of accepting another connection. Connections already handed off are not touched.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for listener in self.listeners.lock().drain(..) {
            // A listening socket shut down for reading fails every accept, blocked or to come.
            if let Err(e) = socket2::SockRef::from(&listener).shutdown(std::net::Shutdown::Read) {
                log::debug!("cannot wake an accept loop: {e}");
            }
        }
    }

    /// True once [`Shutdown::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Keeps a handle on `listener`, so that [`Shutdown::stop`] can wake its `accept`.
    fn watch(&self, listener: &TcpListener) -> io::Result<()> {
        let handle = listener.try_clone()?;
        // Pushed before the flag is read by the loop: a stop given meanwhile either finds this
        // handle or is seen by the loop's first check.
        self.listeners.lock().push(handle);
        Ok(())
    }
}

/// Accepts connections on `listener` until `shutdown` is given or `hand_off` breaks, handing
/// each to `hand_off` with the remote address. `what` names the server in log lines.
///
/// An accept that fails is logged (a few lines per 10 s) and the loop goes on: a connection
/// reset before it was accepted must not stop a server.
pub fn serve<F>(
    listener: TcpListener,
    shutdown: &Shutdown,
    what: &str,
    hand_off: F,
) -> io::Result<()>
where
    F: FnMut(TcpStream, SocketAddr) -> ControlFlow<()>,
{
    shutdown.watch(&listener)?;
    accept_loop(
        || listener.accept(),
        || shutdown.is_stopped(),
        thread::sleep,
        what,
        hand_off,
    );
    Ok(())
}

/// The loop of [`serve`], over any `accept` and `pause`, so that tests can make accept fail
/// and see the pauses taken.
fn accept_loop<A, S, P, F>(mut accept: A, stopped: S, mut pause: P, what: &str, mut hand_off: F)
where
    A: FnMut() -> io::Result<(TcpStream, SocketAddr)>,
    S: Fn() -> bool,
    P: FnMut(Duration),
    F: FnMut(TcpStream, SocketAddr) -> ControlFlow<()>,
{
    let mut backoff = BACKOFF_FIRST;
    while !stopped() {
        match accept() {
            Ok((stream, remote)) => {
                backoff = BACKOFF_FIRST;
                if stopped() || hand_off(stream, remote).is_break() {
                    return;
                }
            }
            Err(_) if stopped() => return,
            Err(e) => {
                warn_throttled!(ACCEPT_WARNINGS, "{what} accept failed: {e}");
                if out_of_resources(&e) {
                    pause(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// True for accept failures that repeat at once until something is freed.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Connections open, in all and per host; each is counted by a [`Slot`] until it is dropped.
pub struct Slots {
    /// Most connections at once, from all hosts together.
    max: usize,
    /// Connections open in all, and per host (a host is removed when its count reaches 0).
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a connection got no [`Slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This many connections are open already, the most allowed.
    Full(usize),
    /// The connection's host has this many open already, its whole share.
    HostFull(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Full(open) => write!(f, "{open} already open"),
            Refusal::HostFull(open) => write!(f, "{open} already open from it"),
        }
    }
}

impl Slots {
    /// No connection counted yet; at most `max` at once.
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Counts a connection from `host`, which may hold at most `share` at once; nothing is
    /// counted when it is refused.
    pub fn take(self: &Arc<Self>, host: IpAddr, share: usize) -> Result<Slot, Refusal> {
        let mut open = self.open.lock();
        let (total, hosts) = &mut *open;
        if *total >= self.max {
            return Err(Refusal::Full(*total));
        }
        let from_host = hosts.entry(host).or_insert(0);
        if *from_host >= share {
            let open = *from_host;
            if open == 0 {
                hosts.remove(&host);
            }
            return Err(Refusal::HostFull(open));
        }
        *from_host += 1;
        *total += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            host,
        })
    }

    /// Connections open now, in all.
    pub fn open(&self) -> usize {
        self.open.lock().0
    }
}

/// One counted connection; dropping it frees its place.
pub struct Slot {
    slots: Arc<Slots>,
    host: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        let (total, hosts) = &mut *open;
        *total -= 1;
        if let Some(n) = hosts.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                hosts.remove(&self.host);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// A connected pair over loopback: what a successful accept returns.
    fn accepted() -> (TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.accept().unwrap()
    }

    fn os_error(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    /// Out of descriptors (or memory), the loop pauses before each new try, longer while the
    /// failures go on, up to the longest pause; a connection accepted starts over from the
    /// first pause; other failures (a connection reset before it was accepted) cost no pause.
    #[test]
    fn out_of_descriptors_the_loop_backs_off_instead_of_spinning() {
        let mut script: Vec<io::Result<(TcpStream, SocketAddr)>> = vec![
            Err(os_error(libc::EMFILE)),
            Err(os_error(libc::EMFILE)),
            Err(os_error(libc::ENFILE)),
            Err(os_error(libc::ENOMEM)),
            Err(os_error(libc::ENOBUFS)),
            Err(os_error(libc::EMFILE)),
            Err(os_error(libc::EMFILE)),
            Err(os_error(libc::ECONNABORTED)),
            Ok(accepted()),
            Err(os_error(libc::EMFILE)),
            Err(os_error(libc::ECONNRESET)),
        ];
        script.reverse();
        let calls = Cell::new(0);
        let pauses = RefCell::new(Vec::new());
        let mut handed = 0;
        accept_loop(
            || {
                calls.set(calls.get() + 1);
                script.pop().unwrap()
            },
            || calls.get() == 11,
            |d| pauses.borrow_mut().push(d.as_millis()),
            "test",
            |_, _| {
                handed += 1;
                ControlFlow::Continue(())
            },
        );
        assert_eq!(handed, 1);
        assert_eq!(
            pauses.into_inner(),
            vec![50, 100, 200, 400, 800, 1000, 1000, 50]
        );
    }

    /// A running loop, back in `accept` after a connection, ends when the signal is given
    /// (without the listener shut down, it would wait in `accept` for ever), and its listener
    /// is closed: a new connection is refused.
    #[test]
    fn a_shutdown_ends_a_running_loop_and_closes_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let theirs = Arc::clone(&shutdown);
        let (handed_tx, handed_rx) = std::sync::mpsc::channel();
        let server = thread::spawn(move || {
            serve(listener, &theirs, "test", |stream, _| {
                let _ = handed_tx.send(stream);
                ControlFlow::Continue(())
            })
        });
        let _first = TcpStream::connect(addr).unwrap();
        handed_rx.recv().unwrap();
        shutdown.stop();
        server.join().unwrap().unwrap();
        assert!(TcpStream::connect(addr).is_err());
    }

    /// A hand-off that breaks ends the loop.
    #[test]
    fn a_hand_off_that_breaks_ends_the_loop() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = thread::spawn(move || TcpStream::connect(addr));
        serve(listener, &Shutdown::new(), "test", |_, _| {
            ControlFlow::Break(())
        })
        .unwrap();
        client.join().unwrap().unwrap();
    }

    /// Slots are bounded in all and per host, and free again when dropped.
    #[test]
    fn slots_are_bounded_in_all_and_per_host() {
        let slots = Slots::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = slots.take(a, 2).unwrap();
        let a2 = slots.take(a, 2).unwrap();
        assert_eq!(slots.take(a, 2).err(), Some(Refusal::HostFull(2)));
        let b1 = slots.take(b, 2).unwrap();
        assert_eq!(slots.take(b, 2).err(), Some(Refusal::Full(3)));
        assert_eq!(slots.open(), 3);
        drop(a1);
        let _b2 = slots.take(b, 2).unwrap();
        drop((a2, b1));
        assert_eq!(slots.open(), 1);
        assert_eq!(slots.take(a, 0).err(), Some(Refusal::HostFull(0)));
        assert!(!slots.open.lock().1.contains_key(&a));
    }
}
