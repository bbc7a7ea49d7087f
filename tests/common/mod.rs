//! Test harness: starts the real `napster` binary (tracker and peers) on port 0, reads the real
//! ports back from their first lines, and waits for the lines each step expects. Nothing here
//! sleeps to synchronise: every wait is for a line or a socket, with a deadline that fails the
//! test with everything the process printed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, unbounded};

pub mod stand_in;

/// How long any expected line may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn napster_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_napster"))
}

/// A running `napster` process whose stdout is read line by line.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Disconnected once stdout and stderr were read to their end.
    drained: Receiver<()>,
    /// A stderr pipe kept open and never read ([`Proc::with_unread_stderr`]).
    unread_stderr: Option<std::process::ChildStderr>,
}

impl Proc {
    /// Starts `napster ARGS` with piped stdin/stdout/stderr.
    pub fn spawn(name: &str, args: &[&str], cwd: Option<&Path>) -> Proc {
        let mut cmd = Command::new(napster_bin());
        cmd.args(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        Proc::from_command(name, cmd)
    }

    /// Everything printed so far, stdout then stderr, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.seen.lock().unwrap().join("\n"),
            self.name,
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Waits for the next line containing `needle` (lines before it are passed over) and
    /// returns it. Fails the test after [`WAIT`].
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_within(needle, WAIT)
    }

    /// [`Proc::wait_for`] with another deadline.
    pub fn wait_for_within(&self, needle: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line containing {needle:?} within {wait:?}\n{}",
                    self.name,
                    self.transcript()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before printing {needle:?}\n{}",
                    self.name,
                    self.transcript()
                ),
            }
        }
    }

    /// True if some line printed so far contains `needle`.
    pub fn printed(&self, needle: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// How many lines printed so far contain `needle`.
    pub fn count_printed(&self, needle: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|l| l.contains(needle)).count()
    }

    /// Kills the process and waits until everything it wrote to stdout and stderr was read,
    /// then says whether some line on either contains `needle`. An absence check must come
    /// here: a panic's message goes to stderr, and a line still in a pipe is not seen yet.
    pub fn kill_and_printed_anywhere(&mut self, needle: &str) -> bool {
        self.kill();
        let _ = self.drained.recv_timeout(WAIT);
        let on =
            |lines: &Mutex<Vec<String>>| lines.lock().unwrap().iter().any(|l| l.contains(needle));
        on(&self.seen) || on(&self.stderr)
    }

    /// Types one line on the process's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("the process reads its stdin");
        stdin.flush().expect("stdin flushes");
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, wait: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                // Every line it printed is read before the caller looks at them.
                let _ = self.drained.recv_timeout(WAIT);
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not exit within {wait:?}\n{}",
                    self.name,
                    self.transcript()
                );
            }
            // Polling a child's exit status has no blocking-with-timeout form in std.
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tracker on `127.0.0.1:0`, with its real address.
pub struct TrackerProc {
    pub proc: Proc,
    pub addr: SocketAddr,
}

/// Starts a tracker on a free loopback port, plus `extra` options.
pub fn start_tracker(extra: &[&str]) -> TrackerProc {
    start_tracker_on("127.0.0.1:0", extra)
}

/// Starts a tracker listening on `listen`.
pub fn start_tracker_on(listen: &str, extra: &[&str]) -> TrackerProc {
    let mut args = vec!["server", "--listen", listen];
    args.extend_from_slice(extra);
    let proc = Proc::spawn("tracker", &args, None);
    let line = proc.wait_for("Servidor ouvindo em ");
    let addr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("tracker address in {line:?}"));
    TrackerProc { proc, addr }
}

impl TrackerProc {
    /// Waits until a SEARCH for `name` gives the result (`name`, BLAKE3 `digest`) with exactly
    /// `holders` peers: the holders' digests are announced (in their JOIN when hashed already,
    /// else in a later UPDATE, so after each look that did not find it, the tracker's next
    /// UPDATE line is awaited). Returns that result.
    pub fn wait_for_group(&self, name: &str, digest: &str, holders: usize) -> serde_json::Value {
        let mut c = RawClient::connect(self.addr);
        let deadline = Instant::now() + WAIT;
        loop {
            let reply = c.ask(&search_msg(name));
            let found = reply["results"].as_array().and_then(|results| {
                results
                    .iter()
                    .find(|r| r["name"] == name && r["digest"] == digest)
                    .cloned()
            });
            if let Some(result) = found.filter(|r| r["holders"] == holders) {
                return result;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.proc.wait_for_within(" atualizou os arquivos", left);
        }
    }
}

/// A peer with its upload port and folder.
pub struct PeerProc {
    pub proc: Proc,
    pub port: u16,
    pub dir: PathBuf,
}

impl PeerProc {
    /// Types a line.
    pub fn send(&mut self, line: &str) {
        self.proc.send(line);
    }

    /// Waits for a line.
    pub fn wait_for(&self, needle: &str) -> String {
        self.proc.wait_for(needle)
    }

    /// JOINs and waits for the original's confirmation line.
    pub fn join(&mut self) -> String {
        self.send("JOIN");
        self.wait_for("Sou o Peer ")
    }

    /// `IP:PORT` of this peer as the tracker lists it on loopback.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Starts a peer named `name` sharing `dir`, talking to `tracker`, plus `extra` options.
pub fn start_peer(name: &str, tracker: SocketAddr, dir: &Path, extra: &[&str]) -> PeerProc {
    start_peer_on(name, "127.0.0.1", tracker, dir, extra)
}

/// [`start_peer`] with the upload port on the address `ip` (any port).
pub fn start_peer_on(
    name: &str,
    ip: &str,
    tracker: SocketAddr,
    dir: &Path,
    extra: &[&str],
) -> PeerProc {
    let listen = format!("{ip}:0");
    let server = tracker.to_string();
    let dir_text = dir.to_str().expect("test folders have UTF-8 paths");
    let mut args = vec![
        "peer", "--server", &server, "--listen", &listen, "--dir", dir_text,
    ];
    args.extend_from_slice(extra);
    let proc = Proc::spawn(name, &args, None);
    PeerProc::ready(proc, dir)
}

impl PeerProc {
    /// `proc`, a peer just started on `dir`, once it serves uploads (its port read back).
    pub fn ready(proc: Proc, dir: &Path) -> PeerProc {
        let line = proc.wait_for("Aguardando pedidos de download na porta ");
        let port = line
            .split("porta ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("upload port in {line:?}"));
        PeerProc {
            proc,
            port,
            dir: dir.to_path_buf(),
        }
    }
}

/// Starts `napster share DIR --approve yes` (no console: it JOINs at once and serves until
/// SIGTERM) named `name`, talking to `tracker`, plus `extra` options; waits for its JOIN.
pub fn start_share(name: &str, tracker: SocketAddr, dir: &Path, extra: &[&str]) -> PeerProc {
    let server = tracker.to_string();
    let dir_text = dir.to_str().expect("test folders have UTF-8 paths");
    let mut args = vec![
        "share",
        dir_text,
        "--approve",
        "yes",
        "--server",
        &server,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let peer = PeerProc::ready(Proc::spawn(name, &args, None), dir);
    peer.proc.wait_for("Sou o Peer ");
    peer
}

/// A raw connection speaking bytes to a tracker or a peer's upload port.
pub struct RawClient {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RawClient {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_read_timeout(Some(WAIT)).expect("timeout set");
        let reader = BufReader::new(stream.try_clone().expect("clones"));
        RawClient { stream, reader }
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> RawClient {
        let reader = BufReader::new(stream.try_clone().expect("clones"));
        RawClient { stream, reader }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("sends");
    }

    /// Reads one reply line (without its newline); panics on timeout or close.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("reads a reply");
        assert!(n > 0, "connection closed before a reply");
        line.trim_end_matches('\n').to_string()
    }

    /// Reads one reply line as JSON.
    pub fn json(&mut self) -> serde_json::Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"))
    }

    /// Sends `bytes` and returns the JSON reply.
    pub fn ask(&mut self, bytes: &[u8]) -> serde_json::Value {
        self.send(bytes);
        self.json()
    }

    /// True if the other side closes the connection (reads EOF) before `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(wait))
            .expect("timeout set");
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
        }
    }

    /// Reads exactly `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).expect("reads raw bytes");
        buf
    }
}

/// Writes `bytes`, treating a connection the other side already closed (reset, broken pipe)
/// as expected: a tracker or uploader that refuses a message may close before reading it all,
/// which is the behaviour under test. Any other write error fails the test.
pub fn send_ignoring_reset(stream: &mut TcpStream, bytes: &[u8]) {
    match stream.write_all(bytes) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) => {}
        Err(e) => panic!("unexpected write error: {e}"),
    }
}

/// A JOIN line for a raw client.
pub fn join_msg(port: u16, files: &[&str]) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({
        "method": "JOIN", "data": {"port": port, "files": files}
    }))
    .unwrap();
    v.push(b'\n');
    v
}

/// A SEARCH line for a raw client.
pub fn search_msg(name: &str) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({
        "method": "SEARCH", "data": {"query": name}
    }))
    .unwrap();
    v.push(b'\n');
    v
}

/// An UPDATE line for a raw client.
pub fn update_msg(files: &[&str]) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({
        "method": "UPDATE", "data": {"files": files}
    }))
    .unwrap();
    v.push(b'\n');
    v
}

/// Peers listed in a SEARCH reply.
pub fn peers_of(reply: &serde_json::Value) -> Vec<String> {
    assert_eq!(reply["status"], "OK", "SEARCH reply {reply}");
    reply["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("peers list in {reply}"))
        .iter()
        .map(|p| p.as_str().expect("peer is a string").to_string())
        .collect()
}

/// Writes a file of `len` deterministic pseudo-random bytes.
pub fn write_pattern(path: &Path, len: u64, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut left = len;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// True if the two files have the same bytes.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let mut fa = BufReader::new(std::fs::File::open(a).unwrap());
    let mut fb = BufReader::new(std::fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut filled = 0;
        while filled < na {
            let n = fb.read(&mut bb[filled..na]).unwrap();
            if n == 0 {
                return false;
            }
            filled += n;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

impl Proc {
    /// Starts an arbitrary command (for example `ip netns exec NS napster ...`) with piped
    /// stdin/stdout/stderr; stdout is read line by line for [`Proc::wait_for`], both are kept
    /// for [`Proc::transcript`]. `RUST_LOG` comes from `TEST_RUST_LOG` (default `warn`).
    pub fn from_command(name: &str, mut cmd: Command) -> Proc {
        cmd.env(
            "RUST_LOG",
            std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        Proc::from_command_reading(name, cmd, true)
    }

    /// Starts `cmd` like [`Proc::from_command`] with `RUST_LOG=rust_log`, but its stderr is a
    /// pipe that nobody reads: once the pipe's buffer is full (64 KiB), a write to stderr
    /// waits for ever. The transcript then shows stdout only.
    pub fn with_unread_stderr(name: &str, mut cmd: Command, rust_log: &str) -> Proc {
        cmd.env("RUST_LOG", rust_log);
        Proc::from_command_reading(name, cmd, false)
    }

    fn from_command_reading(name: &str, mut cmd: Command, read_stderr: bool) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {cmd:?} does not start: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = unbounded();
        let (drained_tx, drained) = crossbeam_channel::bounded::<()>(0);
        let drained_err = drained_tx.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        thread::spawn(move || {
            let _drained = drained_tx;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                seen2.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errs = Arc::new(Mutex::new(Vec::new()));
        let errs2 = Arc::clone(&errs);
        let mut unread_stderr = None;
        if read_stderr {
            thread::spawn(move || {
                let _drained = drained_err;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    errs2.lock().unwrap().push(line);
                }
            });
        } else {
            drop(drained_err);
            unread_stderr = Some(stderr);
        }
        Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            seen,
            stderr: errs,
            drained,
            unread_stderr,
        }
    }
}

/// Skips the calling test for the reason `why`: writes `SKIPPED: <test>: <why>` to stderr and
/// appends `<test binary>/<test name>: <why>` to `$CARGO_TARGET_TMPDIR/skipped.txt` (CI lists
/// that file), because a skip must not pass unseen. The line is written to the stderr handle
/// itself, not with `eprintln!`: libtest captures what the print macros write in a passing
/// test and shows none of it, but not what goes to the handle, so plain `cargo test` shows it.
/// The caller returns right after.
pub fn skip(why: &str) {
    let test = format!(
        "{}/{}",
        env!("CARGO_CRATE_NAME"),
        thread::current().name().unwrap_or("?")
    );
    // One write of one short line: lines from parallel tests do not interleave.
    let _ = std::io::stderr().write_all(format!("SKIPPED: {test}: {why}\n").as_bytes());
    let list = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt");
    // One write of one short line in append mode: lines from parallel tests do not interleave.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&list)
        .and_then(|mut f| f.write_all(format!("{test}: {why}\n").as_bytes()))
        .unwrap_or_else(|e| panic!("cannot record the skip in {}: {e}", list.display()));
}

/// Creates the folders `names` (new and empty) inside `parent`, one per peer, and returns their
/// paths in the same order, so a test names its peers' shared folders in one line:
/// `let [da, db] = folders(tmp.path(), ["alice", "bob"]);`.
pub fn folders<const N: usize>(parent: &Path, names: [&str; N]) -> [PathBuf; N] {
    names.map(|name| {
        let dir = parent.join(name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    })
}

impl PeerProc {
    /// Types `SEARCH name` and waits for the original's answer listing exactly `peers`
    /// (`IP:PORT` each, in the tracker's order; none for `[]`); returns that line.
    pub fn search_finds(&mut self, name: &str, peers: &[&str]) -> String {
        self.send(&format!("SEARCH {name}"));
        let list: Vec<String> = peers.iter().map(|p| format!("'{p}'")).collect();
        self.wait_for(&format!(
            "Peers com arquivo solicitado: [{}]",
            list.join(", ")
        ))
    }
}
