//! The Python original against our programs, both ways, byte for byte.
//!
//! **The original's peer on our tracker and our peers.** [`OriginalPeer`] sends exactly the
//! bytes the original's peer sends (its complete script, run: see docs/original.md):
//! `json.dumps` of the JOIN with `filesPath` (`", "` and `": "` separators, no newline), the
//! SEARCH built with `%` (the name pasted in unescaped), the DOWNLOAD_REQUEST and UPDATE built
//! with `str.format` on templates whose braces are escaped (both valid JSON). It reads as the
//! original does: one `recv(1024)` per reply, parsed alone.
//!
//! **Our peers on the original's tracker.** [`OriginalTracker`] is the project's own stand-in
//! for the original's tracker: the same bytes back, the same silences, the same console lines
//! (see its documentation for what the real one was seen to do).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

/// A client that speaks and reads exactly as the original's peer.
struct OriginalPeer {
    stream: TcpStream,
}

impl OriginalPeer {
    /// Connects as the original's peer does at start (its folder is named after this port).
    fn connect(addr: SocketAddr) -> OriginalPeer {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_read_timeout(Some(WAIT)).expect("timeout set");
        OriginalPeer { stream }
    }

    /// The port of this connection: the original's key for the peer.
    fn port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("sends");
    }

    /// One `recv(1024)`: whatever one read returns (empty at end of stream).
    fn recv(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 1024];
        let n = self.stream.read(&mut buf).expect("a reply arrives");
        buf[..n].to_vec()
    }

    /// `recv(1024).decode()` then `json.loads` of exactly that.
    fn recv_json(&mut self) -> serde_json::Value {
        let got = self.recv();
        serde_json::from_slice(&got).unwrap_or_else(|e| {
            panic!(
                "one recv did not hold exactly one reply ({e}): {:?}",
                String::from_utf8_lossy(&got)
            )
        })
    }

    /// `json.dumps({"method": "JOIN", "data": {FIELD: folder}})`, sent bare.
    fn send_join(&mut self, field: &str, folder: &Path) {
        let folder = py_json_str(folder.to_str().expect("UTF-8 test path"));
        let msg = format!(r#"{{"method": "JOIN", "data": {{"{field}": {folder}}}}}"#);
        self.send(msg.as_bytes());
    }

    /// JOIN as the original's peer sends it (`filesPath`); returns the bytes of one recv.
    fn join(&mut self, folder: &Path) -> Vec<u8> {
        self.send_join("filesPath", folder);
        self.recv()
    }

    /// `'{"method":"SEARCH","data":{"query":"%s"}}' % name`, sent bare; the reply as printed.
    fn search(&mut self, name: &str) -> String {
        let msg = format!(r#"{{"method":"SEARCH","data":{{"query":"{name}"}}}}"#);
        self.send(msg.as_bytes());
        String::from_utf8(self.recv()).expect("the reply is text")
    }
}

/// Python's `json.dumps` of a string (ASCII only, as its default `ensure_ascii`).
fn py_json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the original's downloader meant to send:
/// `{"method": "DOWNLOAD_REQUEST", "data": {"filename": "NAME", "port": PORT}}`, bare.
fn original_download_request(name: &str, port: u16) -> Vec<u8> {
    format!(r#"{{"method": "DOWNLOAD_REQUEST", "data": {{"filename": "{name}", "port": {port}}}}}"#)
        .into_bytes()
}

/// A folder holding `files`, each with its name as content.
fn folder_with(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in files {
        std::fs::write(dir.path().join(name), name.as_bytes()).unwrap();
    }
    dir
}

/// An original peer that JOINed `t` with a new folder holding `files`. The folder is returned
/// too: it must live as long as the tracker may read it.
fn joined_original(t: &TrackerProc, files: &[&str]) -> (OriginalPeer, tempfile::TempDir) {
    let dir = folder_with(files);
    let mut p = OriginalPeer::connect(t.addr);
    assert_eq!(p.join(dir.path()), b"JOIN_OK");
    (p, dir)
}

/// The message of an ERROR reply; fails the test if `reply` is not an ERROR with a message.
fn error_message(reply: &serde_json::Value) -> &str {
    assert_eq!(reply["status"], "ERROR", "{reply}");
    reply["message"]
        .as_str()
        .unwrap_or_else(|| panic!("a message in {reply}"))
}

/// A `napster peer` named `uploader`, sharing `dir` with the options `extra`, JOINed to `t`.
fn joined_uploader(t: &TrackerProc, dir: &Path, extra: &[&str]) -> PeerProc {
    let mut up = start_peer("uploader", t.addr, dir, extra);
    up.join();
    up
}

/// The original's downloader asking `up` for `name`: it connects to the upload port and sends
/// its bare DOWNLOAD_REQUEST.
fn original_download(up: &PeerProc, name: &str) -> OriginalPeer {
    let mut d = OriginalPeer::connect(SocketAddr::from(([127, 0, 0, 1], up.port)));
    d.send(&original_download_request(name, up.port));
    d
}

/// The original's JOIN (`filesPath`, no newline) is answered with exactly the bytes `JOIN_OK`;
/// the tracker lists the folder's plain files and keys the peer by its connection's port.
#[test]
fn original_join_gets_bare_join_ok_and_its_folder_is_listed() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let dir = folder_with(&["b.txt", "a.txt"]);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let mut p = OriginalPeer::connect(t.addr);
    assert_eq!(p.join(dir.path()), b"JOIN_OK");
    t.proc.wait_for(&format!(
        "Peer 127.0.0.1:{} adicionado com os arquivos ['a.txt', 'b.txt']",
        p.port()
    ));
}

/// The seed's spelling `filePath` (its report's excerpt; the original's script sends
/// `filesPath`) is accepted too.
#[test]
fn original_join_with_the_seeds_file_path_spelling_is_accepted() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let dir = folder_with(&["x.bin"]);
    let mut p = OriginalPeer::connect(t.addr);
    p.send_join("filePath", dir.path());
    assert_eq!(p.recv(), b"JOIN_OK");
    assert_eq!(p.search("x.bin"), format!("[{}]", p.port()));
}

/// SEARCH on an original-dialect connection is answered with the Python `str()` of a list of
/// ports, in join order, with our own peers' upload ports among them; nothing found is `[]`.
#[test]
fn original_search_gets_a_list_of_ports_including_our_peers() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let (mut a, _dir_a) = joined_original(&t, &["song.mp3"]);
    let mut ours = RawClient::connect(t.addr);
    assert_eq!(
        ours.ask(&join_msg(4001, &["song.mp3"]))["status"],
        "JOIN_OK"
    );
    let (mut b, _dir_b) = joined_original(&t, &["song.mp3", "other.txt"]);

    assert_eq!(
        b.search("song.mp3"),
        format!("[{}, 4001, {}]", a.port(), b.port())
    );
    assert_eq!(a.search("other.txt"), format!("[{}]", b.port()));
    assert_eq!(a.search("nothing.here"), "[]");
    t.proc.wait_for(&format!(
        "Peer 127.0.0.1:{} solicitou arquivo song.mp3",
        b.port()
    ));
}

/// Our own dialect on the same tracker sees an original peer as `127.0.0.1:PORT`.
#[test]
fn our_clients_see_an_original_peer_as_loopback_and_its_port() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let (a, _dir) = joined_original(&t, &["song.mp3"]);
    let mut ours = RawClient::connect(t.addr);
    assert_eq!(ours.ask(&join_msg(4002, &["x"]))["status"], "JOIN_OK");
    assert_eq!(
        peers_of(&ours.ask(&search_msg("song.mp3"))),
        vec![format!("127.0.0.1:{}", a.port())]
    );
}

/// UPDATE from an original peer, in its bytes (`"a","b"`, no newline), is answered with
/// exactly `UPDATE_OK` and changes what SEARCH finds.
#[test]
fn original_update_gets_bare_update_ok_and_changes_search() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let (mut p, _dir) = joined_original(&t, &["a.txt"]);
    p.send(br#"{"method": "UPDATE", "data": {"files": ["a.txt","new.txt"]}}"#);
    assert_eq!(p.recv(), b"UPDATE_OK");
    assert_eq!(p.search("new.txt"), format!("[{}]", p.port()));
}

/// An UPDATE that is not JSON (the names unquoted, as the seed's excerpt would build it; the
/// original's script quotes them) gets a clear ERROR, the list is left as it was, and the
/// connection keeps working.
#[test]
fn an_update_that_is_not_json_is_refused_clearly_and_the_connection_goes_on() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let (mut p, _dir) = joined_original(&t, &["a.txt"]);
    p.send(br#"{"method": "UPDATE", "data": {"files": [a.txt,b.txt]}}"#);
    let reply = p.recv_json();
    assert!(error_message(&reply).contains("not valid JSON"), "{reply}");
    assert_eq!(p.search("a.txt"), format!("[{}]", p.port()));
    assert_eq!(p.search("b.txt"), "[]");
}

/// A JOIN naming a file, or a path that does not exist, gets an ERROR naming it, the same for
/// both (it does not tell whether the path exists); nothing is registered and the connection
/// stays usable for a correct JOIN.
#[test]
fn original_join_of_a_file_or_a_missing_path_is_refused_clearly() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let dir = folder_with(&["a.txt"]);
    let mut p = OriginalPeer::connect(t.addr);

    p.send_join("filePath", &dir.path().join("a.txt"));
    let reply = p.recv_json();
    let unlistable = "it does not exist, is not a folder, or cannot be read";
    assert!(error_message(&reply).contains(unlistable), "{reply}");
    p.send_join("filePath", &dir.path().join("missing"));
    let reply = p.recv_json();
    assert!(error_message(&reply).contains(unlistable), "{reply}");
    let mut ours = RawClient::connect(t.addr);
    assert_eq!(ours.ask(&join_msg(4003, &["x"]))["status"], "JOIN_OK");
    assert!(peers_of(&ours.ask(&search_msg("a.txt"))).is_empty());

    assert_eq!(p.join(dir.path()), b"JOIN_OK");
}

/// An address of this machine that is not loopback, if it has one.
fn non_loopback_ipv4() -> Option<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we only read and then free.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_unspecified() {
                    found = Some(IpAddr::V4(ip));
                    break;
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

/// A JOIN with a folder from a client that is not on loopback is refused before the folder
/// is read: the tracker listens on all addresses and the client connects to (and so from)
/// this machine's non-loopback address. Without such an address this test cannot build a
/// remote client and says so; the decision itself is also unit-tested in
/// `tracker::original_peers::tests`.
#[test]
fn original_join_from_a_non_loopback_address_is_refused_and_nothing_is_listed() {
    let Some(ip) = non_loopback_ipv4() else {
        skip("this machine has no non-loopback IPv4 address to connect from");
        return;
    };
    let t = start_tracker_on("0.0.0.0:0", &["--legacy-folder-join"]);
    let dir = folder_with(&["secret.txt"]);
    let mut remote = OriginalPeer::connect(SocketAddr::new(ip, t.addr.port()));
    assert_eq!(remote.stream.local_addr().unwrap().ip(), ip);
    remote.send_join("filePath", dir.path());
    let reply = remote.recv_json();
    assert!(
        error_message(&reply).contains("only accepted from this machine"),
        "{reply}"
    );
    // Its SEARCH is answered in our dialect: it never became an original-dialect peer.
    let mut local = OriginalPeer::connect(t.addr_on_loopback());
    assert_eq!(local.join(dir.path()), b"JOIN_OK");
    assert_eq!(local.search("secret.txt"), format!("[{}]", local.port()));
    // The tracker prints its lines in order, from one thread: once the local peer's line is
    // there, a line registering the refused one would be there before it.
    t.proc
        .wait_for(&format!("Peer 127.0.0.1:{} adicionado", local.port()));
    assert_eq!(
        t.proc.count_printed("adicionado"),
        1,
        "nothing may be registered for the remote client\n{}",
        t.proc.transcript()
    );
}

/// An original peer that disconnects is gone from every search at once, and the tracker says
/// so (the original kept it for ever).
#[test]
fn an_original_peer_that_leaves_is_forgotten() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let (gone, _dir) = joined_original(&t, &["a.txt"]);
    let port = gone.port();
    drop(gone);
    t.proc.wait_for(&format!("Peer 127.0.0.1:{port} saiu"));
    let mut p = OriginalPeer::connect(t.addr);
    assert_eq!(p.join(folder_with(&["b.txt"]).path()), b"JOIN_OK");
    assert_eq!(p.search("a.txt"), "[]");
}

/// A `napster peer` sees an original peer in its search results as `127.0.0.1:PORT`, and the
/// original peer's SEARCH sees the napster peer's upload port.
#[test]
fn napster_peers_and_original_peers_find_each_other() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let (mut original, _legacy_dir) = joined_original(&t, &["from-original.txt"]);

    let ours_dir = folder_with(&["from-napster.txt"]);
    let mut ours = start_peer("ours", t.addr, ours_dir.path(), &[]);
    ours.join();
    ours.search_finds(
        "from-original.txt",
        &[&format!("127.0.0.1:{}", original.port())],
    );
    assert_eq!(
        original.search("from-napster.txt"),
        format!("[{}]", ours.port)
    );
}

/// The original's downloader against a `napster peer`: its bare DOWNLOAD_REQUEST is
/// understood; the OK (with fileSize), then after SIM the downloadAccepted, each arrive in a
/// recv of their own and parse alone, and the file's bytes follow.
#[test]
fn original_downloader_gets_each_reply_in_its_own_recv_then_the_file() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let dir = tempfile::tempdir().unwrap();
    write_pattern(&dir.path().join("video.bin"), 5000, 7);
    let mut up = joined_uploader(&t, dir.path(), &[]);

    let mut d = original_download(&up, "video.bin");
    let first = d.recv_json();
    assert_eq!(first["status"], "OK", "{first}");
    assert_eq!(first["fileSize"], 5000);
    up.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    up.send("SIM");
    let second = d.recv_json();
    assert_eq!(second, serde_json::json!({"status": "downloadAccepted"}));
    let mut data = vec![0u8; 5000];
    d.stream.read_exact(&mut data).unwrap();
    assert_eq!(data, std::fs::read(dir.path().join("video.bin")).unwrap());
    up.wait_for("Upload do arquivo video.bin");
}

/// With `--approve yes` the uploader answers at once, yet the original's downloader still
/// reads the OK and the downloadAccepted each in one recv, five times over: replies to a
/// request without `fromPort` are spaced (see `protocol::legacy::ReplyPacer`). This reader
/// wakes too fast to lose the race even without the spacing (tried: it passed with a zero
/// gap); `python_reading_like_the_original_downloads_from_a_napster_peer` is the one that
/// fails without it.
#[test]
fn original_downloader_parses_each_reply_alone_even_when_approval_is_automatic() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let dir = tempfile::tempdir().unwrap();
    write_pattern(&dir.path().join("clip.bin"), 3000, 9);
    let up = joined_uploader(&t, dir.path(), &["--approve", "yes"]);
    let want = std::fs::read(dir.path().join("clip.bin")).unwrap();
    for _ in 0..5 {
        let mut d = original_download(&up, "clip.bin");
        assert_eq!(d.recv_json()["fileSize"], 3000);
        assert_eq!(d.recv_json()["status"], "downloadAccepted");
        let mut data = vec![0u8; 3000];
        d.stream.read_exact(&mut data).unwrap();
        assert_eq!(data, want);
    }
}

/// NAO reaches the original's downloader as one bare `downloadRejected`; a name the peer does
/// not share as `fileNotFound`, which the original prints as "Arquivo não encontrado.".
#[test]
fn original_downloader_sees_rejection_and_file_not_found() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let dir = folder_with(&["a.txt"]);
    let mut up = joined_uploader(&t, dir.path(), &[]);

    let mut d = original_download(&up, "a.txt");
    assert_eq!(d.recv_json()["status"], "OK");
    up.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    up.send("NAO");
    assert_eq!(
        d.recv_json(),
        serde_json::json!({"status": "downloadRejected"})
    );

    let mut d = original_download(&up, "missing.txt");
    assert_eq!(d.recv_json(), serde_json::json!({"status": "fileNotFound"}));
}

/// A connection that closes without a request (a port scan; the seed's excerpt, whose
/// `str.format` would raise before sending) gets no reply: the uploader says nothing to its
/// user and keeps serving.
#[test]
fn a_connection_that_sends_nothing_gets_no_reply_and_the_uploader_keeps_serving() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let dir = folder_with(&["a.txt"]);
    let up = joined_uploader(&t, dir.path(), &["--approve", "yes"]);
    let mut empty = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], up.port))).unwrap();
    empty.shutdown(Shutdown::Write).unwrap();
    empty.set_read_timeout(Some(WAIT)).unwrap();
    // The end of this read is the uploader closing its side: whatever its thread printed for
    // this connection is queued on its console by then, ahead of every line below.
    let mut reply = Vec::new();
    empty
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("the uploader keeps the empty connection: {e}"));
    assert!(
        reply.is_empty(),
        "no reply to a connection that asked nothing: {:?}",
        String::from_utf8_lossy(&reply)
    );

    let mut d = original_download(&up, "a.txt");
    assert_eq!(d.recv_json()["status"], "OK");
    assert_eq!(d.recv_json()["status"], "downloadAccepted");
    let mut data = Vec::new();
    d.stream.read_to_end(&mut data).unwrap();
    assert_eq!(data, b"a.txt");
    // Printed after the empty connection was closed, so after anything said about it.
    up.wait_for("Gostaria de Aprovar o download? (SIM/NAO) SIM (automático)");
    assert!(
        !up.proc.printed("Erro"),
        "the empty connection is not an error for the user\n{}",
        up.proc.transcript()
    );
}

/// A name with a path in the original's request is refused (the original would have served
/// it from outside its folder), and the uploader's user is never asked.
#[test]
fn original_downloader_asking_for_a_path_is_refused_without_asking_the_user() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let dir = folder_with(&["a.txt"]);
    let up = joined_uploader(&t, dir.path(), &[]);
    let mut d = original_download(&up, "../a.txt");
    let reply = d.recv_json();
    assert_eq!(reply["status"], "ERROR", "{reply}");
    // Questions reach the console in the order they are asked: once a valid request's question
    // is printed, one for the refused request would have been printed before it.
    let _valid = original_download(&up, "a.txt");
    up.wait_for("Gostaria de Aprovar o download?");
    assert_eq!(
        up.proc.count_printed("Gostaria"),
        1,
        "only the valid request is asked\n{}",
        up.proc.transcript()
    );
    assert!(!up.proc.printed("../a.txt"), "{}", up.proc.transcript());
}

/// The Python `json.dumps` imitation escapes as Python does.
#[test]
fn py_json_str_escapes_like_python() {
    assert_eq!(py_json_str("/tmp/a b"), r#""/tmp/a b""#);
    assert_eq!(py_json_str("v\u{ed}deo\"\\"), r#""v\u00eddeo\"\\""#);
    assert_eq!(py_json_str("\u{1f600}"), r#""\ud83d\ude00""#);
}

trait LoopbackAddr {
    fn addr_on_loopback(&self) -> SocketAddr;
}

impl LoopbackAddr for TrackerProc {
    /// The tracker's port on 127.0.0.1 (it may listen on all addresses).
    fn addr_on_loopback(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.addr.port()))
    }
}

/// The original's keystrokes for a download work unchanged on `napster peer`: `DOWNLOAD`,
/// then the name at the first prompt, then the bare port at the second, also right after a
/// SEARCH that found exactly that one peer (the side-by-side run's sequence).
#[test]
fn the_originals_download_keystrokes_work_on_a_napster_peer() {
    let t = start_tracker(&["--legacy-folder-join"]);
    let up_dir = folder_with(&["song.txt"]);
    let up = joined_uploader(&t, up_dir.path(), &["--approve", "yes"]);
    let down_dir = tempfile::tempdir().unwrap();
    let mut down = start_peer("downloader", t.addr, down_dir.path(), &[]);
    down.join();
    down.send("SEARCH");
    down.wait_for("Insira o arquivo que deseja buscar:");
    down.send("song.txt");
    down.wait_for(&format!(
        "Peers com arquivo solicitado: ['127.0.0.1:{}']",
        up.port
    ));
    down.send("DOWNLOAD");
    down.wait_for("Insira o nome do arquivo que deseja baixar:");
    down.send("song.txt");
    down.wait_for("Insira a porta do peer a partir do qual deseja baixar o arquivo:");
    down.send(&up.port.to_string());
    down.wait_for("Arquivo song.txt baixado com sucesso na pasta");
    assert_eq!(
        std::fs::read(down_dir.path().join("song.txt")).unwrap(),
        b"song.txt"
    );
    down.send("QUIT");
    assert_eq!(down.proc.wait_exit(WAIT).code(), Some(0));
    assert!(
        !down.proc.printed("Comando desconhecido"),
        "{}",
        down.proc.transcript()
    );
}

/// Real Python reading as the original's downloader does (`tests/legacy/original_downloader.py`:
/// one `recv(1024)` + `json.loads` per reply, one `recv(fileSize)` for the data), against an
/// uploader that approves at once. What the uploader can guarantee, and what is checked:
/// every reply is its own write, 300 ms after the previous one, so each `recv(1024)` parses
/// alone (with no gap it failed in round 1); the file follows in one write and nothing else,
/// byte-exact; a file that fits in one TCP segment (at most half the reader's window: 32,000
/// bytes here, where the original's window is 64 KiB) is whole in the one `recv`. A larger
/// one (60,000 bytes) leaves in two segments, and the one `recv` gets both only if the second
/// has landed when it reads: it always did on a quiet machine, but once 32,768 bytes under
/// heavy load; that count is printed, not asserted, since TCP promises nothing more. Without
/// `python3` the test says so and checks nothing.
#[test]
fn python_reading_like_the_original_downloads_from_a_napster_peer() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("python3 is not installed");
        return;
    }
    let t = start_tracker(&["--legacy-folder-join"]);
    let dir = tempfile::tempdir().unwrap();
    let files: [(&str, usize, usize); 3] = [
        ("clip.bin", 3000, 3),
        ("half.bin", ONE_SEGMENT, 3),
        ("song.bin", 60_000, 10),
    ];
    for (i, (name, size, _)) in files.iter().enumerate() {
        write_pattern(&dir.path().join(name), *size as u64, 11 + i as u64);
    }
    let up = joined_uploader(&t, dir.path(), &["--approve", "yes"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/legacy/original_downloader.py");
    let out_dir = tempfile::tempdir().unwrap();
    for (name, size, rounds) in files {
        let mut whole = 0;
        for round in 0..rounds {
            let out = out_dir.path().join(format!("{name}-{round}"));
            let run = std::process::Command::new("python3")
                .arg(&script)
                .arg(up.port.to_string())
                .arg(name)
                .arg(&out)
                .output()
                .unwrap();
            let printed = String::from_utf8_lossy(&run.stdout);
            let lines: Vec<&str> = printed.lines().collect();
            let context = || {
                format!(
                    "{name} round {round}: {printed}; stderr: {}",
                    String::from_utf8_lossy(&run.stderr)
                )
            };
            assert_eq!(
                lines.get(..2),
                Some(&[&*format!("reply OK {size}"), "reply downloadAccepted"][..]),
                "{}",
                context()
            );
            let counts: Vec<usize> = lines
                .get(2)
                .and_then(|l| l.strip_prefix("data "))
                .map(|l| l.split(' ').filter_map(|n| n.parse().ok()).collect())
                .unwrap_or_default();
            let [single, total] = counts[..] else {
                panic!("{}", context());
            };
            assert_eq!(total, size, "{}", context());
            assert!(same_file(&out, &dir.path().join(name)), "{}", context());
            assert!(single > 0, "{}", context());
            if size <= ONE_SEGMENT {
                assert_eq!(single, size, "{}", context());
            }
            whole += usize::from(single == size);
        }
        eprintln!("{name}: whole in the one recv in {whole} of {rounds} rounds");
    }
}

/// The largest file that leaves as one TCP segment towards the original's downloader: half its
/// receive window (64 KiB by default on Linux), less headers.
const ONE_SEGMENT: usize = 32_000;

// ---------------------------------------------------------------------------------------------
// Our peers on the original's tracker.
// ---------------------------------------------------------------------------------------------

/// The project's own stand-in for the Python original's tracker (`server.py`), written from
/// running the real one (never from its code): what a client sees is the same, byte for byte.
///
/// - Each message is read with one `recv(1024)` and parsed alone (`json.loads`): one that does
///   not parse (cut in two by the 1024 bytes, two back to back, not JSON) is printed as
///   `Error decoding JSON data: ...` and never answered.
/// - A message that is not an object with a `method` kills the connection's thread: nothing on
///   that connection is ever answered again, and the socket stays open.
/// - JOIN lists `data.filesPath` on the tracker's own disk (every entry, directory order), keys
///   the peer by the port of its connection, prints `Peer 127.0.0.1:PORT adicionado com os
///   arquivos [...]` and answers the bare `JOIN_OK`. Without `filesPath` (our JOIN, the seed's
///   `filePath`), or with a folder it cannot list, the thread answering it dies: no answer,
///   ever, while the connection goes on.
/// - SEARCH prints the query, then `Peer IP:PORT solicitou arquivo NAME`, and answers `str()`
///   of the list of ports whose list holds exactly that name, in the order the ports first
///   appeared (a Python dict).
/// - UPDATE with `data.files` makes that the port's list, whatever it holds, and answers the
///   bare `UPDATE_OK`, before any JOIN too; without it, prints `Json Inválido` and answers
///   nothing.
/// - It never forgets a peer. Where the real one then spins a core on the closed socket, the
///   stand-in's thread ends.
struct OriginalTracker {
    addr: SocketAddr,
    printed: crossbeam_channel::Receiver<String>,
    received: crossbeam_channel::Receiver<(u16, Vec<u8>)>,
    table: Arc<Mutex<Vec<(u16, serde_json::Value)>>>,
}

/// A port's entry in the stand-in's table.
type Table = Arc<Mutex<Vec<(u16, serde_json::Value)>>>;

impl OriginalTracker {
    /// Starts the stand-in on a free loopback port. With `disk`, folders are looked up under
    /// that root, as on another machine's disk.
    fn start(disk: Option<PathBuf>) -> OriginalTracker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (print_tx, printed) = crossbeam_channel::unbounded();
        let (recv_tx, received) = crossbeam_channel::unbounded();
        let table: Table = Arc::default();
        let shared = Arc::clone(&table);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (print_tx, recv_tx) = (print_tx.clone(), recv_tx.clone());
                let (table, disk) = (Arc::clone(&shared), disk.clone());
                thread::spawn(move || {
                    serve_like_the_original(conn, &table, disk, print_tx, recv_tx)
                });
            }
        });
        OriginalTracker {
            addr,
            printed,
            received,
            table,
        }
    }

    /// Waits for a printed line containing `needle` (earlier lines are passed over).
    fn wait_printed(&self, needle: &str) -> String {
        loop {
            match self.printed.recv_timeout(WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the stand-in never printed {needle:?}"),
            }
        }
    }

    /// Waits for the next message received from `port` and returns it.
    fn next_message_from(&self, port: u16) -> Vec<u8> {
        loop {
            match self.received.recv_timeout(WAIT) {
                Ok((from, bytes)) if from == port => return bytes,
                Ok(_) => {}
                Err(_) => panic!("no message from port {port}"),
            }
        }
    }

    /// The list the stand-in holds for `port`.
    fn list_of(&self, port: u16) -> Option<serde_json::Value> {
        let table = self.table.lock().unwrap();
        table
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, v)| v.clone())
    }
}

/// One connection, as the original's tracker serves it.
fn serve_like_the_original(
    mut conn: TcpStream,
    table: &Table,
    disk: Option<PathBuf>,
    print: crossbeam_channel::Sender<String>,
    received: crossbeam_channel::Sender<(u16, Vec<u8>)>,
) {
    let port = conn.peer_addr().unwrap().port();
    let mut buf = [0u8; 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let _ = received.send((port, buf[..n].to_vec()));
        let Ok(text) = std::str::from_utf8(&buf[..n]) else {
            continue; // `.decode()` raises inside its try: the read is dropped
        };
        let data: serde_json::Value = match serde_json::from_str(text) {
            Ok(data) => data,
            Err(e) => {
                let _ = print.send(format!("Error decoding JSON data: {e}"));
                continue;
            }
        };
        let Some(method) = data.get("method") else {
            // `data['method']` raises outside the try: this connection is never served again.
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
            return;
        };
        let reply: Option<Vec<u8>> = match method.as_str() {
            Some("JOIN") => {
                let folder = data["data"]["filesPath"].as_str().map(|f| match &disk {
                    Some(root) => root.join(f.trim_start_matches('/')),
                    None => PathBuf::from(f),
                });
                let listing = folder
                    .and_then(|f| std::fs::read_dir(f).ok())
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok()?.file_name().into_string().ok())
                            .collect::<Vec<String>>()
                    });
                listing.map(|names| {
                    set_list(table, port, serde_json::json!(names));
                    let _ = print.send(format!(
                        "Peer 127.0.0.1:{port} adicionado com os arquivos {}",
                        napster::protocol::legacy::python_list(&names)
                    ));
                    b"JOIN_OK".to_vec()
                })
            }
            Some("SEARCH") => data["data"]["query"].as_str().map(|query| {
                let _ = print.send(query.to_string());
                let _ = print.send(format!("Peer 127.0.0.1:{port} solicitou arquivo {query}"));
                let ports: Vec<String> = table
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, list)| {
                        list.as_array()
                            .is_some_and(|l| l.iter().any(|n| n.as_str() == Some(query)))
                    })
                    .map(|(p, _)| p.to_string())
                    .collect();
                format!("[{}]", ports.join(", ")).into_bytes()
            }),
            Some("UPDATE") => match data["data"].get("files") {
                Some(files) => {
                    set_list(table, port, files.clone());
                    Some(b"UPDATE_OK".to_vec())
                }
                None => {
                    let _ = print.send("Json Inválido".to_string());
                    None
                }
            },
            _ => None,
        };
        if let Some(reply) = reply {
            conn.write_all(&reply).unwrap();
        }
    }
}

/// `listOfPeers[port] = list`: a new port goes last, a known one keeps its place.
fn set_list(table: &Table, port: u16, list: serde_json::Value) {
    let mut table = table.lock().unwrap();
    match table.iter_mut().find(|(p, _)| *p == port) {
        Some(entry) => entry.1 = list,
        None => table.push((port, list)),
    }
}

/// A `napster peer` on the stand-in, sharing `dir`, with the options `extra`.
fn peer_on_original(name: &str, t: &OriginalTracker, dir: &Path, extra: &[&str]) -> PeerProc {
    start_peer(name, t.addr, dir, extra)
}

/// The shared folder's path as the peer sends it (absolute, symbolic links resolved).
fn sent_path(dir: &Path) -> String {
    dir.canonicalize().unwrap().to_str().unwrap().to_string()
}

/// The stand-in behaves as the real tracker was seen to: bare answers, the probe UPDATE
/// accepted before any JOIN, silence for our JOIN, for a folder it cannot list, for a cut
/// message and for a message without a method (after which the connection is dead).
#[test]
fn the_stand_in_answers_and_stays_silent_as_the_original_tracker_does() {
    let t = OriginalTracker::start(None);
    let dir = folder_with(&["a.txt"]);
    let mut p = OriginalPeer::connect(t.addr);
    p.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let silent = |p: &mut OriginalPeer| {
        let mut byte = [0u8; 1];
        let e = p.stream.read(&mut byte).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        );
    };
    p.send(br#"{"method": "UPDATE", "data": {"files": []}}"#);
    assert_eq!(p.recv(), b"UPDATE_OK");
    p.send(br#"{"method":"JOIN","data":{"port":4000,"files":["a.txt"]}}"#);
    silent(&mut p);
    p.send_join("filesPath", &dir.path().join("missing"));
    silent(&mut p);
    assert_eq!(p.join(dir.path()), b"JOIN_OK");
    t.wait_printed(&format!(
        "Peer 127.0.0.1:{} adicionado com os arquivos ['a.txt']",
        p.port()
    ));
    assert_eq!(p.search("a.txt"), format!("[{}]", p.port()));
    p.send(
        format!(
            r#"{{"method": "UPDATE", "data": {{"files": [{}]}}}}"#,
            "\"x\",".repeat(300)
        )
        .as_bytes(),
    );
    silent(&mut p);
    t.wait_printed("Error decoding JSON data");
    p.send(br#"{"data": {}}"#);
    silent(&mut p);
    p.send(br#"{"method":"SEARCH","data":{"query":"a.txt"}}"#);
    silent(&mut p);
}

/// A `napster peer` finds out that the tracker is the original's, says so (and that it only
/// works on this machine), and JOINs with exactly the original peer's bytes: the probe UPDATE,
/// then `json.dumps` of the JOIN naming its folder. The tracker lists the folder itself and
/// keys the peer by the port of its connection, which is the peer's upload port.
#[test]
fn a_napster_peer_joins_the_originals_tracker_with_its_folder_and_says_which_dialect() {
    let t = OriginalTracker::start(None);
    let dir = folder_with(&["b.txt", "a.txt"]);
    let mut peer = peer_on_original("peer", &t, dir.path(), &[]);
    peer.send("JOIN");
    let said = peer.wait_for("dialeto do original em Python (detectado)");
    assert!(said.contains(&sent_path(dir.path())), "{said}");
    assert!(
        said.contains("só funciona com ele nesta mesma máquina"),
        "{said}"
    );
    peer.wait_for(&format!(
        "Sou o Peer 127.0.0.1:{} com arquivos: \"a.txt\",\"b.txt\"",
        peer.port
    ));
    assert_eq!(
        t.next_message_from(peer.port),
        br#"{"method": "UPDATE", "data": {"files": []}}"#
    );
    assert_eq!(
        t.next_message_from(peer.port),
        format!(
            r#"{{"method": "JOIN", "data": {{"filesPath": "{}"}}}}"#,
            sent_path(dir.path())
        )
        .into_bytes()
    );
    t.wait_printed(&format!(
        "Peer 127.0.0.1:{} adicionado com os arquivos",
        peer.port
    ));
    assert!(!peer.proc.printed("Aviso"), "{}", peer.proc.transcript());
}

/// Two `napster peer`s through the original's tracker: SEARCH is answered with a list of
/// ports, read back as peers on the tracker's host; a NAO and then a SIM download of a file
/// over 64 KiB from the port it listed; the downloader's UPDATE is the original peer's bytes,
/// answered `UPDATE_OK`, and the uploader's next SEARCH lists both.
#[test]
fn napster_peers_search_download_and_update_through_the_originals_tracker() {
    let t = OriginalTracker::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let [da, db] = folders(tmp.path(), ["a", "b"]);
    write_pattern(&da.join("aula.bin"), 300_000, 3);
    let mut a = peer_on_original("a", &t, &da, &[]);
    let mut b = peer_on_original("b", &t, &db, &[]);
    a.join();
    b.join();
    assert_eq!(
        t.next_message_from(b.port),
        br#"{"method": "UPDATE", "data": {"files": []}}"#,
        "the probe first"
    );
    let _join = t.next_message_from(b.port);

    b.search_finds("aula.bin", &[&a.addr()]);
    assert_eq!(
        t.next_message_from(b.port),
        br#"{"method":"SEARCH","data":{"query":"aula.bin"}}"#
    );
    b.send(&format!("DOWNLOAD aula.bin {}", a.port));
    a.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    a.send("NAO");
    b.wait_for("Download Rejeitado");
    b.send(&format!("DOWNLOAD aula.bin {}", a.port));
    a.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    a.send("SIM");
    b.wait_for("Arquivo aula.bin baixado com sucesso");
    assert!(same_file(&da.join("aula.bin"), &db.join("aula.bin")));
    assert_eq!(
        t.next_message_from(b.port),
        br#"{"method": "UPDATE", "data": {"files": ["aula.bin"]}}"#
    );
    a.search_finds("aula.bin", &[&a.addr(), &b.addr()]);
    assert_eq!(t.list_of(b.port), Some(serde_json::json!(["aula.bin"])));
}

/// `napster get` asks the original's tracker in its own dialect (the probe, then the original
/// peer's SEARCH bytes), reads its list of ports as peers on the tracker's host, and, both
/// listed peers holding the file, downloads from the two at once.
#[test]
fn get_searches_the_originals_tracker_in_its_dialect_and_downloads_from_every_holder() {
    let t = OriginalTracker::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let [da, db, dc] = folders(tmp.path(), ["a", "b", "c"]);
    write_pattern(&da.join("aula.bin"), 3 << 20, 4);
    std::fs::copy(da.join("aula.bin"), db.join("aula.bin")).unwrap();
    let mut a = peer_on_original("a", &t, &da, &["--approve", "yes"]);
    let mut b = peer_on_original("b", &t, &db, &["--approve", "yes"]);
    a.join();
    b.join();
    let server = t.addr.to_string();
    let out = std::process::Command::new(napster_bin())
        .args(["get", "aula.bin", "--server", &server, "--dir"])
        .arg(&dc)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains(&format!(
            "Peers com arquivo solicitado: ['{}', '{}']",
            a.addr(),
            b.addr()
        )),
        "{printed}"
    );
    assert!(
        printed.contains("Download de aula.bin em partes: 2 fonte(s)"),
        "{printed}"
    );
    assert!(same_file(&da.join("aula.bin"), &dc.join("aula.bin")));
    let mut asked = Vec::new();
    while let Ok((_, bytes)) = t.received.try_recv() {
        asked.push(bytes);
    }
    assert!(
        asked
            .iter()
            .any(|m| m == br#"{"method":"SEARCH","data":{"query":"aula.bin"}}"#),
        "{asked:?}"
    );
}

/// An UPDATE too long for the one `recv(1024)` of the original's tracker is not sent cut in
/// two (which that tracker would drop); the JOIN naming the folder is sent again instead, and
/// the tracker lists the folder anew.
#[test]
fn an_update_too_long_for_the_originals_tracker_is_sent_as_a_join_again() {
    let t = OriginalTracker::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let [da, db] = folders(tmp.path(), ["a", "b"]);
    std::fs::write(da.join("new.txt"), b"new").unwrap();
    for i in 0..80 {
        std::fs::write(db.join(format!("arquivo-numero-{i:03}.txt")), b"x").unwrap();
    }
    let mut a = peer_on_original("a", &t, &da, &["--approve", "yes"]);
    let mut b = peer_on_original("b", &t, &db, &[]);
    a.join();
    b.join();
    b.send(&format!("DOWNLOAD new.txt {}", a.port));
    b.wait_for("Arquivo new.txt baixado com sucesso");
    t.wait_printed(&format!(
        "Peer 127.0.0.1:{} adicionado com os arquivos",
        b.port
    ));
    t.wait_printed(&format!(
        "Peer 127.0.0.1:{} adicionado com os arquivos",
        b.port
    ));
    let list = t.list_of(b.port).unwrap();
    assert!(
        list.as_array().unwrap().iter().any(|n| n == "new.txt"),
        "{list}"
    );
    // The JOIN sent in place of the UPDATE was answered, not given up on. The link sends one
    // request at a time, in order: once a SEARCH typed now is answered, that JOIN's answer, or
    // its giving up (said on the console, logged on stderr), came before. Leaving flushes the
    // log before the process ends.
    b.send("SEARCH new.txt");
    let found = b.wait_for("Peers com arquivo solicitado:");
    assert!(found.contains(&format!("127.0.0.1:{}", b.port)), "{found}");
    b.send("QUIT");
    b.proc.wait_exit(WAIT);
    let transcript = b.proc.transcript();
    for needle in [
        "não respondeu",
        "reconectando",
        "was not told",
        "refused",
        "Erro",
    ] {
        assert!(!transcript.contains(needle), "{needle:?}:\n{transcript}");
    }
}

/// With `--tracker-dialect original` no probe is sent: the first message is the JOIN, and the
/// user is told the dialect was chosen.
#[test]
fn the_original_dialect_chosen_by_option_sends_no_probe() {
    let t = OriginalTracker::start(None);
    let dir = folder_with(&["a.txt"]);
    let mut peer = peer_on_original("peer", &t, dir.path(), &["--tracker-dialect", "original"]);
    peer.send("JOIN");
    peer.wait_for("dialeto do original em Python (escolhido com --tracker-dialect)");
    peer.wait_for("Sou o Peer");
    assert!(
        t.next_message_from(peer.port)
            .starts_with(br#"{"method": "JOIN", "data": {"filesPath": "#)
    );
}

/// The original's tracker on another machine cannot list the folder and answers nothing: the
/// peer says the tracker did not answer and why that happens (not that the connection was
/// lost), keeps the connection (closing it would make that tracker spin a core), and a second
/// JOIN goes on the same connection.
#[test]
fn a_folder_the_originals_tracker_cannot_list_is_reported_as_silence_on_a_kept_connection() {
    let elsewhere = tempfile::tempdir().unwrap();
    let t = OriginalTracker::start(Some(elsewhere.path().to_path_buf()));
    let dir = folder_with(&["a.txt"]);
    let mut peer = peer_on_original("peer", &t, dir.path(), &["--liveness", "2"]);
    peer.send("JOIN");
    let failed = peer.wait_for("Falha na Conexao!");
    assert!(
        failed.contains("o servidor original não respondeu ao JOIN em 2 s")
            && failed.contains("só responde se estiver nesta mesma máquina"),
        "{failed}"
    );
    peer.send("JOIN");
    peer.wait_for("Falha na Conexao!");
    let messages: Vec<Vec<u8>> = (0..3).map(|_| t.next_message_from(peer.port)).collect();
    assert!(messages[1].starts_with(br#"{"method": "JOIN""#));
    assert_eq!(
        messages[1], messages[2],
        "the second JOIN, on the same connection"
    );
    assert!(!peer.proc.printed("perdida"), "{}", peer.proc.transcript());
}

/// Our JOIN forced on the original's tracker (`--tracker-dialect napster`) gets no answer: the
/// user is told so, with what to do.
#[test]
fn our_dialect_forced_on_the_originals_tracker_is_reported_with_what_to_do() {
    let t = OriginalTracker::start(None);
    let dir = folder_with(&["a.txt"]);
    let mut peer = peer_on_original(
        "peer",
        &t,
        dir.path(),
        &["--tracker-dialect", "napster", "--liveness", "2"],
    );
    peer.send("JOIN");
    peer.wait_for("dialeto napster (escolhido com --tracker-dialect)");
    let failed = peer.wait_for("Falha na Conexao!");
    assert!(
        failed.contains("não respondeu ao JOIN em 2 s")
            && failed.contains("use --tracker-dialect original"),
        "{failed}"
    );
}

/// A tracker that accepts and answers nothing at all is reported as such: it did not answer
/// (not even the message that finds out its dialect), not as a lost connection.
#[test]
fn a_tracker_that_answers_nothing_is_reported_as_silent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink);
    });
    let dir = folder_with(&["a.txt"]);
    let mut peer = start_peer("peer", addr, dir.path(), &["--liveness", "2"]);
    peer.send("JOIN");
    let failed = peer.wait_for("Falha na Conexao!");
    assert!(
        failed.contains("não respondeu em 2 s (nem à mensagem que identifica o dialeto)"),
        "{failed}"
    );
    assert!(!peer.proc.printed("perdida"), "{}", peer.proc.transcript());
    peer.send("QUIT");
    held.join().unwrap();
}

/// The original's downloader (its bytes, its one recv per reply) fetches from a `napster peer`
/// at the port the original's tracker listed for it: the upload port, since the peer's tracker
/// connection leaves from it.
#[test]
fn the_originals_downloader_reaches_a_napster_peer_at_the_port_the_originals_tracker_lists() {
    let t = OriginalTracker::start(None);
    let dir = tempfile::tempdir().unwrap();
    write_pattern(&dir.path().join("clip.bin"), 3000, 5);
    let mut up = peer_on_original("up", &t, dir.path(), &["--approve", "yes"]);
    up.join();
    let mut searcher = OriginalPeer::connect(t.addr);
    let listed = searcher.search("clip.bin");
    assert_eq!(listed, format!("[{}]", up.port));
    let mut d = OriginalPeer::connect(SocketAddr::from(([127, 0, 0, 1], up.port)));
    d.send(&original_download_request("clip.bin", up.port));
    assert_eq!(d.recv_json()["fileSize"], 3000);
    assert_eq!(d.recv_json()["status"], "downloadAccepted");
    let mut data = vec![0u8; 3000];
    d.stream.read_exact(&mut data).unwrap();
    assert_eq!(data, std::fs::read(dir.path().join("clip.bin")).unwrap());
}
