//! Stand-in peers for hostile and integrity tests: a raw uploader that speaks the protocol as
//! the test script says, and raw downloaders connecting from a chosen loopback address.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;

use super::{PeerProc, Proc};

use crossbeam_channel::{Receiver, Sender, bounded};

/// A stand-in uploader on a free loopback port: takes one connection, reads its
/// DOWNLOAD_REQUEST and hands the stream and the request to `serve`. Join the handle to see
/// `serve`'s checks.
pub fn stand_in_uploader(
    serve: impl FnOnce(TcpStream, serde_json::Value) + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let request: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(request["method"], "DOWNLOAD_REQUEST", "{request}");
        serve(stream, request);
    });
    (addr, handle)
}

/// Sends one JSON reply line.
pub fn send_json(stream: &mut TcpStream, value: serde_json::Value) {
    let mut line = serde_json::to_vec(&value).unwrap();
    line.push(b'\n');
    stream.write_all(&line).unwrap();
}

/// The BLAKE3 digest of `bytes` as hex.
pub fn digest_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A pause in a stand-in's script: the stand-in calls [`Gate::reached`] and waits there until
/// the test calls [`Gate::open`].
pub struct Gate {
    reached_tx: Sender<()>,
    reached_rx: Receiver<()>,
    open_tx: Sender<()>,
    open_rx: Receiver<()>,
}

impl Gate {
    pub fn new() -> Gate {
        let (reached_tx, reached_rx) = bounded(1);
        let (open_tx, open_rx) = bounded(1);
        Gate {
            reached_tx,
            reached_rx,
            open_tx,
            open_rx,
        }
    }

    /// The stand-in's side: says it got here, then waits for the test (at most `WAIT` × 4).
    pub fn reached(&self) {
        let _ = self.reached_tx.send(());
        let _ = self.open_rx.recv_timeout(super::WAIT * 4);
    }

    /// The test's side: waits until the stand-in got to the gate.
    pub fn wait_reached(&self) {
        self.reached_rx
            .recv_timeout(super::WAIT)
            .expect("the stand-in reached its gate");
    }

    /// The test's side: lets the stand-in go on.
    pub fn open(&self) {
        let _ = self.open_tx.send(());
    }
}

/// A stand-in uploader that approves at once and sends `bytes` (announcing their digest),
/// stopping at the gate after the first `pause_at` bytes when a gate is given.
pub fn serving_uploader(
    bytes: Vec<u8>,
    pause: Option<(u64, std::sync::Arc<Gate>)>,
) -> (SocketAddr, thread::JoinHandle<()>) {
    stand_in_uploader(move |mut stream, _request| {
        let digest = digest_hex(&bytes);
        send_json(
            &mut stream,
            serde_json::json!({"status":"OK","fileSize":bytes.len(),"digest":digest,"offset":0}),
        );
        send_json(
            &mut stream,
            serde_json::json!({"status":"downloadAccepted"}),
        );
        let mut from = 0usize;
        if let Some((at, gate)) = pause {
            let at = at as usize;
            if stream.write_all(&bytes[..at]).is_err() {
                return;
            }
            gate.reached();
            from = at;
        }
        let _ = stream.write_all(&bytes[from..]);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Hold the connection until the downloader closes it.
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
    })
}

/// A TCP connection to `to` leaving from the loopback address `from_ip` (127.0.0.0/8 is all
/// loopback on Linux, so each address is another "host" to the peer).
pub fn connect_from(from_ip: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from_ip}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Pseudo-random bytes (the same generator as `write_pattern`).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Starts a peer from a prepared command (a wrapper such as `sh -c` or `unshare` that ends by
/// running the binary; the arguments after `peer` are `args`) and reads its upload port back,
/// as `start_peer` does.
pub fn peer_from_command(name: &str, mut cmd: Command, args: &[&str], dir: &Path) -> PeerProc {
    cmd.arg("peer").args(args);
    let proc = Proc::from_command(name, cmd);
    PeerProc::ready(proc, dir)
}
