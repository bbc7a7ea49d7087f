//! Partial downloads: each download writes only its own partial file, and what is reported as
//! downloaded holds its own bytes (issue 10 item 4); space promised to running downloads and
//! the user's view of partials (item 6).
//!
//! Interleavings are fixed without sleeping: stand-in uploaders stop at a gate after some bytes
//! and go on only when the test says.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stand_in::*;
use common::*;

/// The largest partial file (any `.part` under `.napster/partial`, at any depth) in `root`.
fn largest_partial(root: &Path) -> u64 {
    fn walk(dir: &Path, best: &mut u64) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, best);
            } else if path.extension().is_some_and(|e| e == "part") {
                *best = (*best).max(entry.metadata().map(|m| m.len()).unwrap_or(0));
            }
        }
    }
    let mut best = 0;
    walk(&root.join(".napster").join("partial"), &mut best);
    best
}

/// Waits until a partial file in `root` holds at least `bytes` (the download is writing).
fn wait_for_partial(root: &Path, bytes: u64) {
    let deadline = Instant::now() + WAIT;
    while largest_partial(root) < bytes {
        assert!(
            Instant::now() < deadline,
            "no partial of {bytes} bytes in {}",
            root.display()
        );
        // Files have no "grew" notification to wait on without inotify; poll briefly.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tracker and a joined downloader sharing `dir`.
fn downloader(name: &str, t: &TrackerProc, dir: &Path) -> PeerProc {
    let mut peer = start_peer(name, t.addr, dir, &[]);
    peer.join();
    peer
}

/// A name over 200 bytes and a short name equal to what the old scheme stored the long one
/// under (`long-<32 hex>`) are downloaded at the same time: each gets its own partial, and
/// each file ends with its own bytes, even though the long one keeps writing after the short
/// one finished.
#[test]
fn a_short_name_cannot_share_the_partial_of_a_long_name() {
    let tmp = tempfile::tempdir().unwrap();
    let [db] = folders(tmp.path(), ["b"]);
    let t = start_tracker(&[]);
    let mut b = downloader("b", &t, &db);

    let long = format!("{}.bin", "L".repeat(230));
    let short = format!("long-{}", &blake3::hash(long.as_bytes()).to_hex()[..32]);
    let long_bytes = pattern(6 << 20, 1);
    let short_bytes = pattern(3 << 20, 2);

    let gate = Arc::new(Gate::new());
    let (long_addr, long_up) =
        serving_uploader(long_bytes.clone(), Some((2 << 20, Arc::clone(&gate))));
    b.send(&format!("DOWNLOAD {long} {long_addr}"));
    gate.wait_reached();
    wait_for_partial(&db, 1 << 20);

    let (short_addr, short_up) = serving_uploader(short_bytes.clone(), None);
    b.send(&format!("DOWNLOAD {short} {short_addr}"));
    b.wait_for(&format!("Arquivo {short} baixado com sucesso"));
    short_up.join().unwrap();

    // The long download goes on writing after the short one got its final name.
    gate.open();
    let outcome = b.wait_for(&long);
    long_up.join().unwrap();
    assert!(
        fs::read(db.join(&short)).unwrap() == short_bytes,
        "the file reported as downloaded holds other bytes"
    );
    assert!(outcome.contains("baixado com sucesso"), "{outcome}");
    assert!(fs::read(db.join(&long)).unwrap() == long_bytes);
}

/// A partial that another process is writing (it holds the partial's lock: another program,
/// or a peer from a folder shared some other way) is never touched: a download of that name is
/// refused as already running, and the partial keeps its bytes. Once the lock is let go, the
/// same download runs.
#[test]
fn a_partial_being_written_by_another_process_is_not_touched() {
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let [db] = folders(tmp.path(), ["b"]);
    let t = start_tracker(&[]);
    let mut b = downloader("b", &t, &db);
    let partials = db.join(".napster").join("partial");
    fs::create_dir_all(&partials).unwrap();
    let part = partials.join("f.bin.part");
    fs::write(&part, b"another writer's bytes").unwrap();
    let other = fs::OpenOptions::new().write(true).open(&part).unwrap();
    // SAFETY: flock only reads the descriptor, which `other` keeps open.
    assert_eq!(
        unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let bytes = pattern(3 << 20, 3);

    let (addr, up) = serving_uploader(bytes.clone(), None);
    b.send(&format!("DOWNLOAD f.bin {addr}"));
    b.wait_for("este arquivo já está sendo baixado");
    drop(up);
    assert_eq!(fs::read(&part).unwrap(), b"another writer's bytes");

    drop(other);
    let (addr, up) = serving_uploader(bytes.clone(), None);
    b.send(&format!("DOWNLOAD f.bin {addr}"));
    b.wait_for("Arquivo f.bin baixado com sucesso");
    up.join().unwrap();
    assert!(fs::read(db.join("f.bin")).unwrap() == bytes);
}

/// Item 6: the user sees which partials hold how much and clears them from the console. A
/// partial being written is listed as running and cannot be cleared until its download is
/// cancelled (`CANCELAR`), which keeps its bytes; then `LIMPAR TUDO` frees them.
#[test]
fn partials_are_listed_and_cleared_from_the_console() {
    let tmp = tempfile::tempdir().unwrap();
    let [db] = folders(tmp.path(), ["b"]);
    let t = start_tracker(&[]);
    let mut b = downloader("b", &t, &db);
    let gate = Arc::new(Gate::new());
    let (addr, up) = serving_uploader(pattern(4 << 20, 5), Some((2 << 20, Arc::clone(&gate))));
    b.send(&format!("DOWNLOAD p.bin {addr}"));
    gate.wait_reached();
    wait_for_partial(&db, 1 << 20);

    b.send("PARCIAIS");
    let listed = b.wait_for("p.bin: ");
    assert!(listed.contains(" de 4,0 MiB ("), "{listed}");
    assert!(listed.ends_with("(em andamento)"), "{listed}");
    b.wait_for("download(s) parcial(is) ocupam");
    b.send("LIMPAR p.bin");
    b.wait_for("O download de p.bin está em andamento; cancele-o antes com CANCELAR p.bin.");

    b.send("CANCELAR p.bin");
    let cancelled = b.wait_for("Erro ao processar download de p.bin: download cancelado");
    assert!(
        cancelled.contains("a parte recebida foi guardada para retomar depois"),
        "{cancelled}"
    );
    gate.open();
    up.join().unwrap();
    b.send("PARCIAIS");
    let listed = b.wait_for("p.bin: ");
    assert!(!listed.contains("em andamento"), "{listed}");
    b.send("LIMPAR TUDO");
    b.wait_for("1 download(s) parcial(is) apagado(s), ");
    assert_eq!(largest_partial(&db), 0);
    b.send("PARCIAIS");
    b.wait_for("Nenhum download parcial guardado.");
}

/// True if this process may give a child a private tmpfs (`unshare --mount`, as root).
fn private_tmpfs_available(probe: &Path) -> bool {
    Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
        ])
        .arg("napster-probe")
        .arg(probe)
        .status()
        .is_ok_and(|s| s.success())
}

/// `path` as the process `pid` sees it (inside its own mount namespace).
fn seen_by(pid: u32, path: &Path) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap())
}

/// Item 6: two downloads into one disk cannot each pass the free-space check alone. The
/// downloader's folder is a 24 MiB tmpfs; while a 16 MiB download runs, a second 16 MiB one is
/// refused up front, and told how much running downloads were promised.
#[test]
fn space_promised_to_a_running_download_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let [db, probe] = folders(tmp.path(), ["b", "probe"]);
    if !private_tmpfs_available(&probe) {
        skip("needs a private tmpfs (unshare --mount and mount, as root)");
        return;
    }
    let t = start_tracker(&[]);
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=24m napster-test \"$NAPSTER_DIR\" && exec \"$0\" \"$@\"")
        .arg(napster_bin())
        .env("NAPSTER_DIR", &db);
    let server = t.addr.to_string();
    let mut b = peer_from_command(
        "b",
        cmd,
        &[
            "--server",
            &server,
            "--listen",
            "127.0.0.1:0",
            "--dir",
            db.to_str().unwrap(),
        ],
        &db,
    );
    b.join();
    let inside = seen_by(b.proc.pid(), &db);

    let first = pattern(16 << 20, 6);
    let gate = Arc::new(Gate::new());
    let (addr1, up1) = serving_uploader(first.clone(), Some((2 << 20, Arc::clone(&gate))));
    b.send(&format!("DOWNLOAD first.bin {addr1}"));
    gate.wait_reached();
    wait_for_partial(&inside, 1 << 20);

    let (addr2, up2) = serving_uploader(pattern(16 << 20, 7), None);
    b.send(&format!("DOWNLOAD second.bin {addr2}"));
    let refused = b.wait_for("espaço insuficiente");
    assert!(
        refused.contains("prometidos a downloads em andamento"),
        "{refused}"
    );
    up2.join().unwrap();

    gate.open();
    b.wait_for("Arquivo first.bin baixado com sucesso");
    up1.join().unwrap();
    assert!(fs::read(inside.join("first.bin")).unwrap() == first);
    assert!(!inside.join("second.bin").exists());
}
