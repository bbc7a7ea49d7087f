//! Large, verified, resumable transfers between real peers over real sockets (issue 5).
//!
//! Mid-transfer failures are made deterministic without sleeping: either a raw uploader in the
//! test speaks the protocol and stops where the test says, or a [`PausingProxy`] between the
//! peers forwards a fixed number of bytes and then holds the rest back until the test has
//! killed the uploader (or quit the downloader), so the transfer cannot finish first.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use tempfile::TempDir;

use common::*;
use napster::numbers::{human_size, thousands};

/// Bigger than every buffer on the way: the 8 MiB send chunk, the 1 MiB receive buffer and the
/// 64 KiB message buffer, and not a multiple of any of them.
const BIG: u64 = (20 << 20) + 12_345;

/// The partial download of `name` in a peer's folder.
fn part_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(".napster")
        .join("partial")
        .join(format!("{name}.part"))
}

/// The BLAKE3 digest, as hex, of a file.
fn digest_of(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&fs::read(path).unwrap());
    hasher.finalize().to_hex().to_string()
}

/// True if the two folders hold the same `video.bin`, byte for byte.
fn same_video(a: &Path, b: &Path) -> bool {
    same_file(&a.join("video.bin"), &b.join("video.bin"))
}

/// One test's world: a tracker, and a temporary folder in which each peer gets a shared folder
/// of its own.
struct Lab {
    tmp: TempDir,
    t: TrackerProc,
}

impl Lab {
    /// A fresh temporary folder and a tracker on a free port.
    fn new() -> Lab {
        let tmp = TempDir::new().unwrap();
        let t = start_tracker(&[]);
        Lab { tmp, t }
    }

    /// Creates the empty shared folder `name` and returns its path.
    fn folder(&self, name: &str) -> PathBuf {
        let [dir] = folders(self.tmp.path(), [name]);
        dir
    }

    /// Creates the shared folder `name` holding `video.bin`: `len` pattern bytes from `seed`.
    fn folder_with_video(&self, name: &str, len: u64, seed: u64) -> PathBuf {
        let dir = self.folder(name);
        write_pattern(&dir.join("video.bin"), len, seed);
        dir
    }

    /// Starts a peer named `name` with `--approve yes` sharing `dir` (which exists), and JOINs.
    fn peer(&self, name: &str, dir: &Path) -> PeerProc {
        let mut peer = start_peer(name, self.t.addr, dir, &["--approve", "yes"]);
        peer.join();
        peer
    }

    /// The usual pair, both joined: alice shares `video.bin` (`len` pattern bytes from
    /// `seed`), bob starts with an empty folder.
    fn alice_and_bob(&self, len: u64, seed: u64) -> (PeerProc, PeerProc) {
        let alice = self.peer("alice", &self.folder_with_video("alice", len, seed));
        let bob = self.peer("bob", &self.folder("bob"));
        (alice, bob)
    }
}

/// Starts `bob` downloading `video.bin` from `from` through a [`PausingProxy`] that forwards
/// `limit` bytes, and returns the proxy once it holds the rest back.
fn download_until_paused(bob: &mut PeerProc, from: &PeerProc, limit: u64) -> PausingProxy {
    let proxy = PausingProxy::start(from.addr().parse().unwrap(), limit);
    bob.send(&format!("DOWNLOAD video.bin {}", proxy.addr));
    proxy.wait_paused();
    proxy
}

/// The size of the partial `video.bin` kept in `dir`, checked to be some but not all of the
/// `total` bytes.
fn kept_partial(dir: &Path, total: u64) -> u64 {
    let kept = fs::metadata(part_path(dir, "video.bin")).unwrap().len();
    assert!(kept > 0 && kept < total, "kept {kept} bytes");
    kept
}

/// `bob` asks `from` (which has the same `video.bin`) for the file again: both sides say the
/// transfer resumes at byte `kept`, the copy is verified whole and no partial is left.
fn resume_from(bob: &mut PeerProc, from: &PeerProc, kept: u64) {
    bob.send(&format!("DOWNLOAD video.bin {}", from.addr()));
    from.wait_for(&format!("retomando do byte {}", thousands(kept)));
    bob.wait_for(&format!(
        "Retomando o download de video.bin a partir do byte {kept}"
    ));
    bob.wait_for("Arquivo video.bin baixado com sucesso");
    assert!(same_video(&from.dir, &bob.dir));
    assert!(!part_path(&bob.dir, "video.bin").exists());
}

/// A proxy between a downloader and an uploader that forwards the first `limit` bytes coming
/// from the uploader, then stops reading from it, reports "paused", and on "release" closes
/// both sides (what a killed uploader or a cut network looks like to the downloader).
struct PausingProxy {
    addr: SocketAddr,
    paused: Receiver<()>,
    /// `true`: reset the downloader's connection instead of closing it.
    release: Sender<bool>,
}

impl PausingProxy {
    fn start(target: SocketAddr, limit: u64) -> PausingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (paused_tx, paused) = bounded(1);
        let (release, release_rx) = bounded::<bool>(1);
        thread::spawn(move || {
            let (client, _) = listener.accept().unwrap();
            let server = TcpStream::connect(target).unwrap();
            let (mut up_from, mut up_to) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let upward = thread::spawn(move || {
                let _ = std::io::copy(&mut up_from, &mut up_to);
            });
            let mut from_server = (&server).take(limit);
            let mut to_client = &client;
            let _ = std::io::copy(&mut from_server, &mut to_client);
            let _ = paused_tx.send(());
            if release_rx.recv() == Ok(true) {
                // Linger 0: closing sends RST, as a broken network path eventually does. The
                // upward copy holds a clone of the socket: wake it and let it end first, so
                // that dropping `client` really closes the socket.
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                let _ = client.shutdown(Shutdown::Read);
                let _ = upward.join();
                drop(client);
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        });
        PausingProxy {
            addr,
            paused,
            release,
        }
    }

    /// Waits until the proxy has forwarded its bytes and holds the rest back.
    fn wait_paused(&self) {
        self.paused
            .recv_timeout(WAIT)
            .expect("the proxy forwarded its bytes");
    }

    /// Closes both connections.
    fn cut(&self) {
        self.release.send(false).unwrap();
    }

    /// Resets the downloader's connection (it reads an error, not an end).
    fn reset(&self) {
        self.release.send(true).unwrap();
    }
}

/// Reads a DOWNLOAD_REQUEST line from a raw connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> serde_json::Value {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let request: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(request["method"], "DOWNLOAD_REQUEST", "{request}");
    request
}

/// Sends one JSON reply line.
fn send_json(stream: &mut TcpStream, value: serde_json::Value) {
    let mut line = serde_json::to_vec(&value).unwrap();
    line.push(b'\n');
    stream.write_all(&line).unwrap();
}

/// A stand-in uploader on a free port: it takes one connection, reads its DOWNLOAD_REQUEST
/// and hands the stream and the request to `serve`. Join the handle to see `serve`'s checks.
fn raw_uploader(
    serve: impl FnOnce(TcpStream, serde_json::Value) + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let request = read_request(&mut reader);
        serve(stream, request);
    });
    (addr, handle)
}

/// A listener standing in for an uploader that must never be asked: the downloader refuses
/// before it dials. Call [`NeverAsked::assert_never_dialled`] once the downloader printed the
/// refusal: a dial made before that line (the only order in which a downloader could ask and
/// then refuse) is already in the listener's queue, since on loopback the handshake, and the
/// queueing of the connection on this side, are done before `connect` returns.
struct NeverAsked {
    listener: TcpListener,
}

impl NeverAsked {
    fn new() -> NeverAsked {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        NeverAsked { listener }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    fn assert_never_dialled(&self, downloader: &Proc) {
        match self.listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, from)) => panic!(
                "the downloader dialled the uploader (from {from})\n{}",
                downloader.transcript()
            ),
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Answers as an uploader that approves at once: OK with `size` and `digest` from byte 0,
/// then downloadAccepted.
fn accept_download(stream: &mut TcpStream, size: u64, digest: &str) {
    send_json(
        stream,
        serde_json::json!({"status":"OK","fileSize":size,"digest":digest,"offset":0}),
    );
    send_json(stream, serde_json::json!({"status":"downloadAccepted"}));
}

/// Asks `peer`'s upload port for `name` on a new raw connection; returns the first reply.
fn raw_request(peer: &PeerProc, name: &str) -> serde_json::Value {
    let mut c = RawClient::connect(peer.addr().parse().unwrap());
    let request = serde_json::json!({
        "method": "DOWNLOAD_REQUEST", "data": {"filename": name, "port": peer.port}
    });
    c.ask(format!("{request}\n").as_bytes())
}

/// A file larger than every buffer arrives byte for byte, the partial folder is left empty,
/// progress is reported as plain percentage lines without a terminal, and the downloader
/// UPDATEs the tracker so that it is found as a source too.
#[test]
fn a_file_larger_than_every_buffer_arrives_byte_exact() {
    let lab = Lab::new();
    let (alice, mut bob) = lab.alice_and_bob(BIG, 7);

    bob.send(&format!("DOWNLOAD video.bin {}", alice.addr()));
    let first = bob.wait_for("Download de video.bin: ");
    assert!(!first.contains("100%"), "{first}");
    bob.wait_for("Download de video.bin: 100% (20,0/20,0 MiB");
    bob.wait_for(&format!(
        "Arquivo video.bin baixado com sucesso na pasta {}",
        bob.dir.display()
    ));
    alice.wait_for("Upload do arquivo video.bin para");
    assert!(same_video(&alice.dir, &bob.dir));
    assert!(!part_path(&bob.dir, "video.bin").exists());
    lab.t.proc.wait_for(&format!(
        "Peer {} atualizou os arquivos: +['video.bin']",
        bob.addr()
    ));
}

/// An uploader that announces the right digest but flips one byte of the data is caught: the
/// user is told the digests differ, and neither the final name nor a partial file is left.
#[test]
fn a_flipped_byte_is_detected_and_nothing_is_kept() {
    let lab = Lab::new();
    let source = lab.tmp.path().join("source.bin");
    write_pattern(&source, BIG, 11);
    let digest = digest_of(&source);
    let db = lab.folder("bob");
    let mut bob = lab.peer("bob", &db);

    let (addr, uploader) = raw_uploader(move |mut stream, request| {
        assert_eq!(request["data"]["filename"], "video.bin");
        accept_download(&mut stream, BIG, &digest);
        let mut bytes = fs::read(&source).unwrap();
        bytes[(BIG / 2) as usize] ^= 0x01;
        stream.write_all(&bytes).unwrap();
    });

    bob.send(&format!("DOWNLOAD video.bin {addr}"));
    let line = bob.wait_for("Erro ao processar download de video.bin");
    assert!(line.contains("não confere"), "{line}");
    assert!(line.contains("descartado"), "{line}");
    uploader.join().unwrap();
    assert!(!db.join("video.bin").exists());
    assert!(!part_path(&db, "video.bin").exists());
}

/// The uploader process is killed (SIGKILL) in the middle of a transfer: the downloader says
/// the connection ended early and keeps what arrived; the next DOWNLOAD of the same file from
/// the restarted uploader (same folder, new port) is approved as a resume from exactly the
/// bytes on disk, and the result is verified whole.
#[test]
fn a_killed_uploader_is_resumed_from_the_bytes_on_disk() {
    let lab = Lab::new();
    let (mut alice, mut bob) = lab.alice_and_bob(48 << 20, 3);

    let proxy = download_until_paused(&mut bob, &alice, 12 << 20);
    alice.proc.kill();
    proxy.cut();
    let line = bob.wait_for("Erro ao processar download de video.bin");
    assert!(line.contains("guardada para retomar"), "{line}");
    assert!(!bob.dir.join("video.bin").exists());
    let kept = kept_partial(&bob.dir, 48 << 20);

    let alice = lab.peer("alice-again", &alice.dir);
    resume_from(&mut bob, &alice, kept);
}

/// The network fails mid-transfer (the connection is reset); the downloader reports the
/// failure with the position reached and keeps the partial; the download then resumes from a
/// *different* peer that has the same file (same size and digest), verified whole.
#[test]
fn a_cut_download_resumes_from_another_peer_with_the_same_file() {
    let lab = Lab::new();
    let da = lab.folder_with_video("alice", BIG, 5);
    let dc = lab.folder("carol");
    fs::copy(da.join("video.bin"), dc.join("video.bin")).unwrap();
    let alice = lab.peer("alice", &da);
    let carol = lab.peer("carol", &dc);
    let mut bob = lab.peer("bob", &lab.folder("bob"));

    let proxy = download_until_paused(&mut bob, &alice, 5 << 20);
    proxy.reset();
    let line = bob.wait_for("Erro ao processar download de video.bin");
    let kept = kept_partial(&bob.dir, BIG);
    assert!(
        line.contains(&format!("o outro peer encerrou após {}", human_size(kept))),
        "{line}"
    );
    assert!(line.contains("guardada para retomar"), "{line}");

    resume_from(&mut bob, &carol, kept);
}

/// A partial download is never glued to a different file of the same name: when the new
/// uploader's file has another digest, the download starts again from byte 0 and the result
/// is that file, verified.
#[test]
fn a_partial_of_another_file_with_the_same_name_is_not_resumed() {
    let lab = Lab::new();
    let alice = lab.peer("alice", &lab.folder_with_video("alice", BIG, 5));
    let carol = lab.peer("carol", &lab.folder_with_video("carol", BIG, 6));
    let mut bob = lab.peer("bob", &lab.folder("bob"));

    let proxy = download_until_paused(&mut bob, &alice, 5 << 20);
    proxy.cut();
    bob.wait_for("Erro ao processar download de video.bin");
    assert!(part_path(&bob.dir, "video.bin").exists());

    bob.send(&format!("DOWNLOAD video.bin {}", carol.addr()));
    let asked = carol.wait_for("solicitou o arquivo video.bin");
    assert!(!asked.contains("retomando"), "{asked}");
    bob.wait_for("Arquivo video.bin baixado com sucesso");
    assert!(!bob.proc.printed("Retomando o download"));
    assert!(same_video(&carol.dir, &bob.dir));
}

/// The downloader QUITs in the middle of a transfer: it exits cleanly, keeps the partial, and
/// a new downloader process on the same folder resumes it and verifies the whole file.
#[test]
fn a_download_stopped_by_quit_resumes_in_the_next_run() {
    let lab = Lab::new();
    let (alice, mut bob) = lab.alice_and_bob(BIG, 9);

    let proxy = download_until_paused(&mut bob, &alice, 5 << 20);
    // Piped, QUIT would wait for the download; a signal stops it (exit 20: interrupted).
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &bob.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    bob.wait_for("guardada para retomar depois");
    bob.wait_for("Peer encerrado.");
    assert_eq!(bob.proc.wait_exit(WAIT).code(), Some(20));
    proxy.cut();
    let kept = kept_partial(&bob.dir, BIG);

    let mut bob = lab.peer("bob-again", &bob.dir);
    resume_from(&mut bob, &alice, kept);
}

/// Limits the size of files the process `pid` may write (`RLIMIT_FSIZE`, soft limit only, so
/// it can be raised again): writes past it fail with EFBIG, as on a full disk.
fn limit_file_size(pid: u32, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit only reads `limit`; the old limit is not asked for.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A full disk (here `RLIMIT_FSIZE`, which gives EFBIG) is reported as a full disk with the
/// number of bytes written; the partial file keeps exactly those bytes, nothing appears under
/// the final name, and once there is room again the download resumes and verifies.
#[test]
fn a_full_disk_is_reported_and_the_partial_is_kept_for_resume() {
    full_disk_then_resume(5 << 20, 13);
}

/// The same when the room ends inside a disk block: a large download is written around the
/// page cache (`O_DIRECT`), whose writes cannot stop mid-block, and still keeps exactly the
/// bytes that fit.
#[test]
fn a_disk_full_inside_a_block_keeps_exactly_the_bytes_that_fit() {
    full_disk_then_resume((5 << 20) + 1000, 14);
}

/// A large download cancelled mid-buffer (`CANCELAR`) keeps exactly a prefix of the file: the
/// bytes received before the stop, every one of them right, none past them. It is written
/// around the page cache (`O_DIRECT`) from buffers of several MiB, and the proxy stops an odd
/// number of bytes into one of them; the resume then starts from that odd byte and verifies.
#[test]
fn a_cancelled_large_download_keeps_exactly_a_prefix_and_resumes() {
    let lab = Lab::new();
    let (alice, mut bob) = lab.alice_and_bob(BIG, 15);
    let proxy = download_until_paused(&mut bob, &alice, (6 << 20) + 777);
    bob.send("CANCELAR video.bin");
    let cancelled = bob.wait_for("download cancelado");
    assert!(
        cancelled.contains("a parte recebida foi guardada para retomar depois"),
        "{cancelled}"
    );
    proxy.cut();
    let kept = kept_partial(&bob.dir, BIG);
    let partial = fs::read(part_path(&bob.dir, "video.bin")).unwrap();
    let whole = fs::read(alice.dir.join("video.bin")).unwrap();
    assert!(
        partial[..] == whole[..kept as usize],
        "the partial is not a prefix"
    );
    resume_from(&mut bob, &alice, kept);
}

/// True if this process may give a child a private ramfs (`unshare --mount`, as root).
fn private_ramfs_available(probe: &Path) -> bool {
    std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "mount",
            "-t",
            "ramfs",
        ])
        .arg("napster-probe")
        .arg(probe)
        .status()
        .is_ok_and(|s| s.success())
}

/// A folder on a file system that refuses `O_DIRECT` (ramfs: it has no disk to write to
/// directly, and since Linux 6.6 tmpfs accepts it) still receives a large download: the
/// receiver sees the refusal and writes through the page cache, verified as ever.
#[test]
fn a_folder_refusing_o_direct_receives_through_the_page_cache() {
    let lab = Lab::new();
    let alice = lab.peer("alice", &lab.folder_with_video("alice", BIG, 16));
    let [db, probe] = folders(lab.tmp.path(), ["bob", "probe"]);
    if !private_ramfs_available(&probe) {
        skip("needs a private ramfs (unshare --mount and mount, as root)");
        return;
    }
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t ramfs napster-test \"$NAPSTER_DIR\" && export RUST_LOG=debug \
             && exec \"$0\" \"$@\"",
        )
        .arg(napster_bin())
        .env("NAPSTER_DIR", &db);
    let server = lab.t.addr.to_string();
    let args = ["--server", &server, "--listen", "127.0.0.1:0", "--dir"];
    let mut bob = common::stand_in::peer_from_command(
        "bob",
        cmd,
        &[&args[..], &[db.to_str().unwrap()]].concat(),
        &db,
    );
    bob.join();
    // Bob's folder as seen from inside his mount namespace.
    let inside =
        PathBuf::from(format!("/proc/{}/root", bob.proc.pid())).join(db.strip_prefix("/").unwrap());

    bob.send(&format!("DOWNLOAD video.bin {}", alice.addr()));
    bob.wait_for("Arquivo video.bin baixado com sucesso");
    assert!(same_file(
        &alice.dir.join("video.bin"),
        &inside.join("video.bin")
    ));
    assert!(
        !db.join("video.bin").exists(),
        "the ramfs was not Bob's folder"
    );
    let transcript = bob.proc.transcript();
    assert!(
        transcript.contains("cannot switch O_DIRECT"),
        "the receiver did not meet the refusal:\n{transcript}"
    );
}

/// Bob downloads `BIG` bytes with room for `room`, is told, keeps them, then resumes.
fn full_disk_then_resume(room: u64, seed: u64) {
    let lab = Lab::new();
    let (alice, mut bob) = lab.alice_and_bob(BIG, seed);
    limit_file_size(bob.proc.pid(), room);

    bob.send(&format!("DOWNLOAD video.bin {}", alice.addr()));
    let line = bob.wait_for("Erro ao processar download de video.bin");
    assert!(
        line.contains(&format!("disco cheio após {} gravados", human_size(room))),
        "{line}"
    );
    assert!(line.contains("guardada para retomar"), "{line}");
    assert!(!bob.dir.join("video.bin").exists());
    assert_eq!(
        fs::metadata(part_path(&bob.dir, "video.bin"))
            .unwrap()
            .len(),
        room
    );

    limit_file_size(bob.proc.pid(), libc::RLIM_INFINITY);
    resume_from(&mut bob, &alice, room);
}

/// A file already in the folder is never overwritten: asked for before the download, the
/// downloader refuses at once; appearing while the download runs, the verified copy is not
/// moved over it. Either way the user is told and the existing file is untouched.
#[test]
fn an_existing_file_is_never_overwritten() {
    let lab = Lab::new();
    let da = lab.folder_with_video("alice", BIG, 1);
    let db = lab.folder("bob");
    fs::write(db.join("video.bin"), b"mine").unwrap();
    let mut bob = lab.peer("bob", &db);

    let uploader = NeverAsked::new();
    bob.send(&format!("DOWNLOAD video.bin {}", uploader.addr()));
    let line = bob.wait_for("Erro ao processar download de video.bin");
    assert!(line.contains("já existe; não será sobrescrito"), "{line}");
    uploader.assert_never_dialled(&bob.proc);
    assert_eq!(fs::read(db.join("video.bin")).unwrap(), b"mine");

    // The name is taken while the transfer runs.
    fs::remove_file(db.join("video.bin")).unwrap();
    let source = da.join("video.bin");
    let digest = digest_of(&source);
    let (half_sent, half_rx) = bounded::<()>(1);
    let (go_on, go_rx) = bounded::<()>(1);
    let (addr, uploader) = raw_uploader(move |mut stream, _| {
        accept_download(&mut stream, BIG, &digest);
        let bytes = fs::read(&source).unwrap();
        let half = bytes.len() / 2;
        stream.write_all(&bytes[..half]).unwrap();
        half_sent.send(()).unwrap();
        go_rx.recv().unwrap();
        stream.write_all(&bytes[half..]).unwrap();
    });
    bob.send(&format!("DOWNLOAD video.bin {addr}"));
    half_rx.recv_timeout(WAIT).unwrap();
    fs::write(db.join("video.bin"), b"arrived meanwhile").unwrap();
    go_on.send(()).unwrap();
    uploader.join().unwrap();
    let line = bob.wait_for("Erro ao processar download de video.bin");
    assert!(line.contains("já existe; não será sobrescrito"), "{line}");
    assert_eq!(
        fs::read(db.join("video.bin")).unwrap(),
        b"arrived meanwhile"
    );
}

/// Names that leave the folder are refused on both sides: the downloader refuses to ask for
/// them (and writes nothing outside its folder), and the uploader answers ERROR to a raw
/// request for them, and fileNotFound for a link that points outside, while still serving a
/// plain name on the next connection.
#[test]
fn names_with_separators_or_dots_are_refused_on_both_sides() {
    let lab = Lab::new();
    let tmp = &lab.tmp;
    let da = lab.folder("alice");
    fs::write(tmp.path().join("secret.txt"), b"outside").unwrap();
    fs::write(da.join("ok.txt"), b"inside").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.txt"), da.join("link.txt")).unwrap();
    let alice = lab.peer("alice", &da);
    let mut bob = lab.peer("bob", &lab.folder("bob"));

    // The downloader's side: a stand-in uploader, since Alice would refuse these names before
    // asking her user, so her console cannot show whether Bob asked.
    let uploader = NeverAsked::new();
    for name in ["../secret.txt", "sub/ok.txt", "..", "a\\b"] {
        bob.send(&format!("DOWNLOAD {name} {}", uploader.addr()));
        let line = bob.wait_for(&format!("Erro ao processar download de {name}"));
        assert!(line.contains("nome inválido"), "{line}");
    }
    uploader.assert_never_dialled(&bob.proc);
    assert_eq!(fs::read(tmp.path().join("secret.txt")).unwrap(), b"outside");

    for name in ["../secret.txt", "sub/ok.txt", "..", "/etc/passwd", "a\\b"] {
        let reply = raw_request(&alice, name);
        assert_eq!(reply["status"], "ERROR", "{name}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains("refused"),
            "{reply}"
        );
    }
    assert_eq!(raw_request(&alice, "link.txt")["status"], "fileNotFound");
    let reply = raw_request(&alice, "ok.txt");
    assert_eq!(reply["status"], "OK");
    assert_eq!(reply["fileSize"], 6);
}

/// A file of more than 4 GiB (sizes are u64 end to end) arrives byte for byte, including the
/// bytes on both sides of the 4 GiB boundary. The source is sparse to save disk; the copy is
/// not. Slow (it writes 4 GiB), so run it with `cargo test --test transfers -- --ignored`.
#[test]
#[ignore]
fn a_file_across_the_4_gib_boundary_arrives_byte_exact() {
    let lab = Lab::new();
    let da = lab.folder("alice");
    let size: u64 = (4 << 30) + (3 << 20) + 17;
    let source = da.join("huge.bin");
    {
        let mut f = fs::File::create(&source).unwrap();
        f.set_len(size).unwrap();
        for at in [0u64, (2 << 30) + 5, (4 << 30) - 4096, 4 << 30, size - 4096] {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(at)).unwrap();
            let marker: Vec<u8> = (0..4096u32).map(|i| (i as u64 ^ at) as u8 | 1).collect();
            f.write_all(&marker).unwrap();
        }
    }
    let alice = lab.peer("alice", &da);
    let mut bob = lab.peer("bob", &lab.folder("bob"));
    bob.send(&format!("DOWNLOAD huge.bin {}", alice.addr()));
    bob.proc
        .wait_for_within("Arquivo huge.bin baixado com sucesso", WAIT * 20);
    assert_eq!(fs::metadata(bob.dir.join("huge.bin")).unwrap().len(), size);
    assert!(same_file(&source, &bob.dir.join("huge.bin")));
}

/// On a terminal (a real pseudo-terminal running the interactive prompt) a download shows a
/// progress bar with bytes, rate and time left, and the bar and the lines that follow it never
/// destroy what the user is typing: text typed while the bar is shown survives the download's
/// end message and is run as typed. The cut download then resumes to a verified copy.
#[test]
fn a_terminal_shows_a_progress_bar_without_breaking_the_prompt() {
    use expectrl::{Expect, Regex, Session};

    let lab = Lab::new();
    let alice = lab.peer("alice", &lab.folder_with_video("alice", 48 << 20, 21));
    let db = lab.folder("bob");

    let mut cmd = std::process::Command::new(napster_bin());
    cmd.args([
        "peer",
        "--server",
        &lab.t.addr.to_string(),
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--dir")
    .arg(&db)
    .arg("--history")
    .arg(lab.tmp.path().join("history"))
    .args(["--approve", "yes", "--join"])
    .env("RUST_LOG", "warn");
    let mut bob = Session::spawn(cmd).unwrap();
    bob.set_expect_timeout(Some(WAIT));
    bob.expect("Sou o Peer ").unwrap();

    let proxy = PausingProxy::start(alice.addr().parse().unwrap(), 24 << 20);
    bob.send_line(format!("DOWNLOAD video.bin {}", proxy.addr))
        .unwrap();
    bob.expect(Regex(
        r"Download de video\.bin \[#*>?-*\] +\d+% [0-9.,]+/48,0 MiB( [0-9.,]+ [KMG]iB/s faltam \d+ s)?",
    ))
    .unwrap();
    proxy.wait_paused();
    bob.send("SEARCH vid").unwrap();
    bob.expect("SEARCH vid").unwrap();
    proxy.cut();
    bob.expect("guardada para retomar depois").unwrap();
    // The prompt is drawn again below the message, with what was typed.
    bob.expect("SEARCH vid").unwrap();
    bob.send_line("eo.bin").unwrap();
    bob.expect(format!(
        "Peers com arquivo solicitado: ['{}']",
        alice.addr()
    ))
    .unwrap();

    bob.send_line(format!("DOWNLOAD video.bin {}", alice.addr()))
        .unwrap();
    bob.expect("Retomando o download de video.bin").unwrap();
    bob.expect("Arquivo video.bin baixado com sucesso").unwrap();
    assert!(same_video(&alice.dir, &db));
    bob.send_line("QUIT").unwrap();
    bob.expect(expectrl::Eof).unwrap();
}

/// An uploader that answers OK with an offset the downloader never asked for (it has no
/// partial) is refused as a protocol error before any byte is written.
#[test]
fn an_offset_that_was_not_asked_for_is_refused() {
    let lab = Lab::new();
    let db = lab.folder("bob");
    let mut bob = lab.peer("bob", &db);

    let (addr, uploader) = raw_uploader(move |mut stream, request| {
        assert!(request["data"].get("offset").is_none(), "{request}");
        let digest = blake3::hash(b"whatever").to_hex().to_string();
        send_json(
            &mut stream,
            serde_json::json!({"status":"OK","fileSize":1000,"digest":digest,"offset":100}),
        );
    });
    bob.send(&format!("DOWNLOAD video.bin {addr}"));
    let line = bob.wait_for("Erro ao processar download de video.bin");
    assert!(line.contains("resposta inválida do peer"), "{line}");
    assert!(line.contains("byte 100"), "{line}");
    uploader.join().unwrap();
    assert!(!db.join("video.bin").exists());
    assert!(!part_path(&db, "video.bin").exists());
}

/// Asks `peer`'s upload port for `name` on a new raw connection, as a napster downloader
/// (with `fromPort`) that takes the digest after the data if `digest_after_data`; returns the
/// connection and the first reply.
fn raw_napster_request(
    peer: &PeerProc,
    name: &str,
    digest_after_data: bool,
) -> (RawClient, serde_json::Value) {
    let mut c = RawClient::connect(peer.addr().parse().unwrap());
    let mut data = serde_json::json!({"filename": name, "port": peer.port, "fromPort": 1});
    if digest_after_data {
        data["digestAfterData"] = true.into();
    }
    let request = serde_json::json!({"method": "DOWNLOAD_REQUEST", "data": data});
    let first = c.ask(format!("{request}\n").as_bytes());
    (c, first)
}

/// The record in which a peer sharing `dir` keeps the digest of `name` across restarts.
fn digest_record(dir: &Path, name: &str) -> PathBuf {
    let key = &blake3::hash(name.as_bytes()).to_hex()[..32];
    dir.join(".napster")
        .join("digests")
        .join(format!("{key}.json"))
}

/// The first request for a file the uploader has not hashed yet is answered at once, without
/// the digest (`digestAfterData`), when the downloader takes the digest after the data: the
/// data follows the approval, then one `DIGEST` line with the BLAKE3 of the whole file, then
/// the end. The digest computed while sending is kept: the next request gets it in its OK.
/// (The file is created after the peer started, so no background hashing has seen it.)
#[test]
fn the_first_download_starts_at_once_and_the_digest_follows_the_data() {
    let lab = Lab::new();
    let alice = lab.peer("alice", &lab.folder("alice"));
    write_pattern(&alice.dir.join("video.bin"), BIG, 21);
    let digest = digest_of(&alice.dir.join("video.bin"));

    let (mut c, ok) = raw_napster_request(&alice, "video.bin", true);
    assert_eq!(ok["status"], "OK", "{ok}");
    assert_eq!(ok["fileSize"], BIG, "{ok}");
    assert_eq!(ok["offset"], 0, "{ok}");
    assert_eq!(ok["digestAfterData"], true, "{ok}");
    assert!(ok.get("digest").is_none(), "{ok}");
    assert_eq!(c.json()["status"], "downloadAccepted");
    let data = c.bytes(BIG as usize);
    assert_eq!(blake3::hash(&data).to_hex().to_string(), digest);
    let trailer = c.json();
    assert_eq!(
        trailer,
        serde_json::json!({"status": "DIGEST", "digest": digest})
    );
    drop(c);

    let (_c, ok) = raw_napster_request(&alice, "video.bin", true);
    assert_eq!(ok["digest"], digest.as_str(), "{ok}");
    assert!(ok.get("digestAfterData").is_none(), "{ok}");
}

/// A downloader that does not take the digest after the data (an older napster peer) gets it
/// in the OK, as before, even for a file not hashed yet: then exactly the file's bytes and the
/// end, no DIGEST line.
#[test]
fn a_request_without_digest_after_data_gets_the_digest_before_the_data() {
    let lab = Lab::new();
    let alice = lab.peer("alice", &lab.folder("alice"));
    write_pattern(&alice.dir.join("video.bin"), BIG, 22);
    let digest = digest_of(&alice.dir.join("video.bin"));

    let (mut c, ok) = raw_napster_request(&alice, "video.bin", false);
    assert_eq!(ok["status"], "OK", "{ok}");
    assert_eq!(ok["digest"], digest.as_str(), "{ok}");
    assert!(ok.get("digestAfterData").is_none(), "{ok}");
    assert_eq!(c.json()["status"], "downloadAccepted");
    let data = c.bytes(BIG as usize);
    assert_eq!(blake3::hash(&data).to_hex().to_string(), digest);
    assert!(c.closed_within(WAIT));
}

/// A downloader asks for the digest after the data, and checks the one that follows it as it
/// checks one in the OK: the file is kept, verified.
#[test]
fn a_digest_after_the_data_is_verified() {
    let lab = Lab::new();
    let source = lab.tmp.path().join("source.bin");
    write_pattern(&source, BIG, 23);
    let digest = digest_of(&source);
    let db = lab.folder("bob");
    let mut bob = lab.peer("bob", &db);

    let (addr, uploader) = raw_uploader(move |mut stream, request| {
        assert_eq!(request["data"]["digestAfterData"], true, "{request}");
        send_json(
            &mut stream,
            serde_json::json!({"status":"OK","fileSize":BIG,"offset":0,"digestAfterData":true}),
        );
        send_json(
            &mut stream,
            serde_json::json!({"status":"downloadAccepted"}),
        );
        stream.write_all(&fs::read(&source).unwrap()).unwrap();
        send_json(
            &mut stream,
            serde_json::json!({"status":"DIGEST","digest":digest}),
        );
    });
    bob.send(&format!("DOWNLOAD video.bin {addr}"));
    bob.wait_for("Arquivo video.bin baixado com sucesso");
    uploader.join().unwrap();
    assert!(same_file(
        &lab.tmp.path().join("source.bin"),
        &db.join("video.bin")
    ));
}

/// A digest after the data that does not match what arrived: the copy is discarded, and the
/// downloader tells the uploader with a DIGEST_MISMATCH line giving what it received.
#[test]
fn a_wrong_digest_after_the_data_is_reported_to_the_uploader() {
    let lab = Lab::new();
    let source = lab.tmp.path().join("source.bin");
    write_pattern(&source, BIG, 24);
    let got = digest_of(&source);
    let db = lab.folder("bob");
    let mut bob = lab.peer("bob", &db);

    let (addr, uploader) = raw_uploader(move |mut stream, _request| {
        send_json(
            &mut stream,
            serde_json::json!({"status":"OK","fileSize":BIG,"offset":0,"digestAfterData":true}),
        );
        send_json(
            &mut stream,
            serde_json::json!({"status":"downloadAccepted"}),
        );
        stream.write_all(&fs::read(&source).unwrap()).unwrap();
        let wrong = "0".repeat(64);
        send_json(
            &mut stream,
            serde_json::json!({"status":"DIGEST","digest":wrong}),
        );
        let mut report = String::new();
        BufReader::new(&stream).read_line(&mut report).unwrap();
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(
            report,
            serde_json::json!({"method":"DIGEST_MISMATCH","data":{"filename":"video.bin","digest":got}})
        );
    });
    bob.send(&format!("DOWNLOAD video.bin {addr}"));
    let line = bob.wait_for("Erro ao processar download de video.bin");
    assert!(line.contains("não confere"), "{line}");
    uploader.join().unwrap();
    assert!(!db.join("video.bin").exists());
    assert!(!part_path(&db, "video.bin").exists());
}

/// Digests are kept across restarts, and a stale one heals itself: the uploader's record holds
/// a wrong digest for the file's exact version (what a cache keyed too loosely produced), so a
/// restarted uploader announces it at once — proof that the record is used without hashing —
/// and the download is discarded as corrupt. The downloader reports the mismatch, the uploader
/// says so, forgets the digest and hashes again, and the next download succeeds.
#[test]
fn digests_persist_across_restarts_and_a_reported_mismatch_makes_the_uploader_hash_again() {
    let lab = Lab::new();
    let da = lab.folder_with_video("alice", BIG, 25);
    let digest = digest_of(&da.join("video.bin"));
    let mut alice = lab.peer("alice", &da);
    let (_c, ok) = raw_napster_request(&alice, "video.bin", false);
    assert_eq!(ok["digest"], digest.as_str(), "{ok}");
    alice.send("QUIT");
    assert!(alice.proc.wait_exit(WAIT).success());

    let record_path = digest_record(&da, "video.bin");
    let mut record: serde_json::Value =
        serde_json::from_slice(&fs::read(&record_path).unwrap()).unwrap();
    assert_eq!(record["digest"], digest.as_str(), "{record}");
    let stale = "ab".repeat(32);
    record["digest"] = stale.as_str().into();
    fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();

    let alice = lab.peer("alice-again", &da);
    let (_c, ok) = raw_napster_request(&alice, "video.bin", true);
    assert_eq!(ok["digest"], stale.as_str(), "the record was used: {ok}");
    drop(_c);

    let mut bob = lab.peer("bob", &lab.folder("bob"));
    bob.send(&format!("DOWNLOAD video.bin {}", alice.addr()));
    let line = bob.wait_for("Erro ao processar download de video.bin");
    assert!(line.contains("não confere"), "{line}");
    // Named by the address it connects from (the port it declares is only a claim).
    let told = alice.wait_for("informou que video.bin chegou diferente do BLAKE3 anunciado");
    assert!(told.starts_with("O peer 127.0.0.1:"), "{told}");

    bob.send(&format!("DOWNLOAD video.bin {}", alice.addr()));
    bob.wait_for("Arquivo video.bin baixado com sucesso");
    assert!(same_video(&da, &bob.dir));
}

/// Leaves in `bob`'s folder a partial `video.bin` whose file's digest is not known: a
/// stand-in uploader sends the digest-after-the-data form, then only the first `kept` bytes of
/// `source` (`BIG` bytes), and closes. Returns `kept`.
fn partial_without_digest(bob: &mut PeerProc, source: PathBuf, kept: u64) -> u64 {
    let (addr, uploader) = raw_uploader(move |mut stream, _request| {
        send_json(
            &mut stream,
            serde_json::json!({"status":"OK","fileSize":BIG,"offset":0,"digestAfterData":true}),
        );
        send_json(
            &mut stream,
            serde_json::json!({"status":"downloadAccepted"}),
        );
        let bytes = fs::read(&source).unwrap();
        stream.write_all(&bytes[..kept as usize]).unwrap();
    });
    bob.send(&format!("DOWNLOAD video.bin {addr}"));
    let line = bob.wait_for("Erro ao processar download de video.bin");
    assert!(line.contains("guardada para retomar"), "{line}");
    uploader.join().unwrap();
    assert_eq!(kept_partial(&bob.dir, BIG), kept);
    kept
}

/// A download that took the digest after the data and was cut has a partial whose file's
/// digest is not known. It is resumed by the digest of its prefix: a peer whose file has the
/// same size and the same first bytes goes on from the bytes on disk, and the whole is
/// verified against that peer's digest.
#[test]
fn a_partial_without_a_digest_resumes_from_a_file_with_the_same_prefix() {
    let lab = Lab::new();
    let da = lab.folder_with_video("alice", BIG, 26);
    let mut bob = lab.peer("bob", &lab.folder("bob"));
    let kept = partial_without_digest(&mut bob, da.join("video.bin"), 3 << 20);

    let alice = lab.peer("alice", &da);
    resume_from(&mut bob, &alice, kept);
}

/// The same partial is not continued from a file of the same size whose first bytes differ:
/// the download starts again from byte 0 and the result is that file, verified.
#[test]
fn a_partial_without_a_digest_is_not_resumed_from_another_file_of_the_same_size() {
    let lab = Lab::new();
    let da = lab.folder_with_video("alice", BIG, 26);
    let mut bob = lab.peer("bob", &lab.folder("bob"));
    partial_without_digest(&mut bob, da.join("video.bin"), 3 << 20);

    let carol = lab.peer("carol", &lab.folder_with_video("carol", BIG, 27));
    bob.send(&format!("DOWNLOAD video.bin {}", carol.addr()));
    let asked = carol.wait_for("solicitou o arquivo video.bin");
    assert!(!asked.contains("retomando"), "{asked}");
    bob.wait_for("Arquivo video.bin baixado com sucesso");
    assert!(!bob.proc.printed("Retomando o download"));
    assert!(same_video(&carol.dir, &bob.dir));
}
