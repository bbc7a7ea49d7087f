//! The whole system, end to end: a real tracker and real peers, driven through their stdin
//! as a script would, over real sockets on port 0.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Starts the peer `name` sharing `dir` with `--join` and the options `extra`, and waits
/// until it has joined `t`.
fn joined_at_start(name: &str, t: &TrackerProc, dir: &Path, extra: &[&str]) -> PeerProc {
    let mut args = vec!["--join"];
    args.extend_from_slice(extra);
    let peer = start_peer(name, t.addr, dir, &args);
    peer.wait_for("Sou o Peer");
    peer
}

/// A tracker and the peer `a` (not joined) with the options `extra`, sharing a new folder that
/// holds the file `name` with `contents`. Keep all three as long as the test runs.
fn lone_uploader(
    (name, contents): (&str, &str),
    extra: &[&str],
) -> (tempfile::TempDir, TrackerProc, PeerProc) {
    let tmp = tempfile::tempdir().unwrap();
    let [da] = folders(tmp.path(), ["a"]);
    fs::write(da.join(name), contents).unwrap();
    let t = start_tracker(&[]);
    let a = start_peer("a", t.addr, &da, extra);
    (tmp, t, a)
}

/// Three peers: JOIN, SEARCH, DOWNLOAD with SIM (a file larger than the transfer buffer,
/// byte-exact), UPDATE after the download, a NAO rejection, and a second download.
#[test]
fn three_peers_join_search_download_update_and_reject() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db, dc] = folders(tmp.path(), ["a", "b", "c"]);
    fs::write(da.join("notes.txt"), "olá\n").unwrap();
    write_pattern(&da.join("video.bin"), 3 * 1024 * 1024 + 17, 1);

    let t = start_tracker(&[]);
    let mut alice = start_peer("alice", t.addr, &da, &[]);
    let mut bob = start_peer("bob", t.addr, &db, &[]);
    let mut carol = start_peer("carol", t.addr, &dc, &[]);
    assert!(alice.join().ends_with(&format!(
        ":{} com arquivos: \"notes.txt\",\"video.bin\"",
        alice.port
    )));
    bob.join();
    carol.join();
    t.proc.wait_for(&format!(
        "Peer {} adicionado com os arquivos ['notes.txt', 'video.bin']",
        alice.addr()
    ));

    bob.search_finds("video.bin", &[&alice.addr()]);
    bob.send(&format!("DOWNLOAD video.bin {}", alice.port));
    // Who asks: the connection's address as known, bob's upload port as he claims it.
    let asked = alice.wait_for(&format!(
        "(porta de upload declarada: {}) solicitou o arquivo video.bin (3,0 MiB)",
        bob.port
    ));
    assert!(asked.starts_with("Peer 127.0.0.1:"), "{asked}");
    alice.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    alice.send("SIM");
    bob.wait_for(&format!(
        "Arquivo video.bin baixado com sucesso na pasta {}",
        db.display()
    ));
    assert!(same_file(&da.join("video.bin"), &db.join("video.bin")));
    t.proc.wait_for(&format!(
        "Peer {} atualizou os arquivos: +['video.bin']",
        bob.addr()
    ));

    carol.search_finds("video.bin", &[&alice.addr(), &bob.addr()]);
    carol.send(&format!("DOWNLOAD video.bin {}", bob.port));
    bob.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    bob.send("nao");
    carol.wait_for("Download Rejeitado");
    assert!(!dc.join("video.bin").exists());

    carol.send(&format!("DOWNLOAD video.bin 127.0.0.1:{}", alice.port));
    alice.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    alice.send("sim");
    carol.wait_for("Arquivo video.bin baixado com sucesso");
    assert!(same_file(&da.join("video.bin"), &dc.join("video.bin")));
    // Nothing is left in the temporary folder after a verified download.
    assert_eq!(
        fs::read_dir(dc.join(".napster/partial")).unwrap().count(),
        0
    );
}

/// A command typed without its arguments asks for them with the original's prompts.
#[test]
fn commands_without_arguments_ask_with_the_original_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db] = folders(tmp.path(), ["a", "b"]);
    fs::write(da.join("f.txt"), "x").unwrap();
    let t = start_tracker(&[]);
    let mut a = start_peer("a", t.addr, &da, &["--approve", "yes"]);
    let mut b = start_peer("b", t.addr, &db, &[]);
    b.wait_for("Digite 'JOIN' para iniciar.");
    b.send("SEARCH f.txt");
    b.wait_for("Digite 'JOIN' para iniciar.");
    a.join();
    b.join();
    b.send("search");
    b.wait_for("Insira o arquivo que deseja buscar:");
    b.send("f.txt");
    b.wait_for(&format!("Peers com arquivo solicitado: ['{}']", a.addr()));
    // The original's keystrokes typed ahead, as a script (or the side-by-side run) types
    // them: the last SEARCH found one peer, and the port is still asked for and answered.
    b.send("download");
    b.send("f.txt");
    b.send(&a.port.to_string());
    b.wait_for("Insira o nome do arquivo que deseja baixar:");
    b.wait_for("Insira a porta do peer a partir do qual deseja baixar o arquivo:");
    b.wait_for(&format!(
        "(Enter sem nada baixa de {}, o peer encontrado na última busca)",
        a.addr()
    ));
    b.wait_for(&format!("Aguardando resposta de {}...", a.addr()));
    b.wait_for("Arquivo f.txt baixado com sucesso");
    assert_eq!(fs::read(db.join("f.txt")).unwrap(), b"x");
    b.send("QUIT");
    // 3: the SEARCH before JOIN; a port taken for a command would say so too.
    assert_eq!(b.proc.wait_exit(WAIT).code(), Some(3));
    assert!(
        !b.proc.printed("Comando desconhecido"),
        "{}",
        b.proc.transcript()
    );
}

/// A name the uploader does not share gives the original's "Arquivo não encontrado.".
#[test]
fn a_missing_file_is_reported_as_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db] = folders(tmp.path(), ["a", "b"]);
    let t = start_tracker(&[]);
    let a = joined_at_start("a", &t, &da, &[]);
    let mut b = joined_at_start("b", &t, &db, &[]);
    b.send(&format!("DOWNLOAD ghost.txt {}", a.port));
    b.wait_for("Arquivo não encontrado.");
    assert!(!db.join("ghost.txt").exists());
}

/// A peer that QUITs is gone from SEARCH at once; the other peers keep working.
#[test]
fn a_peer_that_leaves_disappears_from_search() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db] = folders(tmp.path(), ["a", "b"]);
    fs::write(da.join("f"), "1").unwrap();
    let t = start_tracker(&[]);
    let mut a = joined_at_start("a", &t, &da, &[]);
    let mut b = joined_at_start("b", &t, &db, &[]);
    b.search_finds("f", &[&a.addr()]);
    a.send("QUIT");
    a.wait_for("Peer encerrado.");
    t.proc.wait_for(&format!("Peer {} saiu", a.addr()));
    b.search_finds("f", &[]);
}

/// A download never replaces a file already in the folder.
#[test]
fn an_existing_file_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db] = folders(tmp.path(), ["a", "b"]);
    fs::write(da.join("f"), "theirs").unwrap();
    fs::write(db.join("f"), "mine").unwrap();
    let t = start_tracker(&[]);
    let a = joined_at_start("a", &t, &da, &["--approve", "yes"]);
    let mut b = joined_at_start("b", &t, &db, &[]);
    b.send(&format!("DOWNLOAD f {}", a.port));
    b.wait_for("não será sobrescrito");
    assert_eq!(fs::read(db.join("f")).unwrap(), b"mine");
}

/// The uploader refuses names with separators or `..` with an ERROR, and only serves plain
/// files directly in its folder (not links, not sub-folders); it keeps serving afterwards.
#[test]
fn the_uploader_refuses_unsafe_names() {
    let tmp = tempfile::tempdir().unwrap();
    let [da] = folders(tmp.path(), ["a"]);
    fs::create_dir(da.join("sub")).unwrap();
    fs::write(tmp.path().join("secret"), "s").unwrap();
    fs::write(da.join("ok"), "fine").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret"), da.join("link")).unwrap();
    let t = start_tracker(&[]);
    let a = start_peer("a", t.addr, &da, &["--approve", "yes"]);
    for name in ["../secret", "sub/x", "..", "a\\b"] {
        let reply = ask_for(a.port, name).json();
        assert_eq!(reply["status"], "ERROR", "{name}: {reply}");
    }
    for name in ["link", "sub", "missing"] {
        assert_eq!(
            ask_for(a.port, name).json()["status"],
            "fileNotFound",
            "{name}"
        );
    }
    let mut c = ask_for(a.port, "ok");
    let reply = c.json();
    assert_eq!(reply["status"], "OK");
    assert_eq!(reply["fileSize"], 4);
    assert_eq!(reply["digest"], blake3::hash(b"fine").to_hex().as_str());
    assert_eq!(c.json()["status"], "downloadAccepted");
    assert_eq!(c.bytes(4), b"fine");
}

/// The downloader refuses unsafe names before connecting anywhere.
#[test]
fn the_downloader_refuses_unsafe_names() {
    let tmp = tempfile::tempdir().unwrap();
    let [db] = folders(tmp.path(), ["b"]);
    let t = start_tracker(&[]);
    let mut b = joined_at_start("b", &t, &db, &[]);
    // A listener in the uploader's place: a dial made before the refusal is in its queue by the
    // time the refusal is printed (on loopback the handshake is done before `connect` returns).
    let uploader = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    uploader.set_nonblocking(true).unwrap();
    b.send(&format!(
        "DOWNLOAD ../evil {}",
        uploader.local_addr().unwrap()
    ));
    b.wait_for("nome inválido");
    match uploader.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        dialled => panic!(
            "the downloader dialled: {dialled:?}\n{}",
            b.proc.transcript()
        ),
    }
    assert!(!tmp.path().join("evil").exists());
}

/// Upload request protocol by hand: OK with size and digest, then downloadRejected on NAO.
#[test]
fn a_rejected_request_gets_download_rejected() {
    let (_tmp, _t, mut a) = lone_uploader(("x", "data"), &[]);
    let mut c = RawClient::connect(a.addr().parse().unwrap());
    // No newline: the original sends its request bare.
    let reply = c.ask(
        format!(
            "{{\"method\": \"DOWNLOAD_REQUEST\", \"data\": {{\"filename\": \"x\", \"port\": {}}}}}",
            a.port
        )
        .as_bytes(),
    );
    assert_eq!(reply["status"], "OK");
    a.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    a.send("NAO");
    assert_eq!(c.json(), serde_json::json!({"status":"downloadRejected"}));
}

/// Nothing assumes one host: the tracker and two peers on three different addresses
/// (127.0.0.1, .2, .3). The tracker lists each peer under the address it really serves
/// uploads on, and a download between them works.
#[test]
fn peers_on_different_addresses_find_and_download_from_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db] = folders(tmp.path(), ["a", "b"]);
    write_pattern(&da.join("f.bin"), 100_000, 3);
    let t = start_tracker(&[]);
    let mut a = common::start_peer_on("a", "127.0.0.2", t.addr, &da, &["--approve", "yes"]);
    let mut b = common::start_peer_on("b", "127.0.0.3", t.addr, &db, &[]);
    assert!(
        a.join()
            .contains(&format!("Sou o Peer 127.0.0.2:{}", a.port))
    );
    assert!(
        b.join()
            .contains(&format!("Sou o Peer 127.0.0.3:{}", b.port))
    );
    b.search_finds("f.bin", &[&format!("127.0.0.2:{}", a.port)]);
    // A bare port takes its host from the last search.
    b.send(&format!("DOWNLOAD f.bin {}", a.port));
    let asked = a.wait_for(&format!(
        "(porta de upload declarada: {}) solicitou o arquivo f.bin",
        b.port
    ));
    assert!(asked.starts_with("Peer 127.0.0.3:"), "{asked}");
    b.wait_for("Arquivo f.bin baixado com sucesso");
    assert!(same_file(&da.join("f.bin"), &db.join("f.bin")));
    t.proc.wait_for(&format!(
        "Peer 127.0.0.3:{} atualizou os arquivos: +['f.bin']",
        b.port
    ));
}

/// `napster share` (no console; its stdin at its end) keeps serving uploads; SIGTERM then
/// shuts it down cleanly, with exit status 0, and the tracker forgets it.
#[test]
fn share_keeps_serving_until_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db] = folders(tmp.path(), ["a", "b"]);
    fs::write(da.join("f"), "still here").unwrap();
    let t = start_tracker(&[]);
    let mut a = start_share("a", t.addr, &da, &[]);
    a.proc.close_stdin();
    let mut b = joined_at_start("b", &t, &db, &[]);
    b.send(&format!("DOWNLOAD f {}", a.port));
    b.wait_for("Arquivo f baixado com sucesso");
    assert_eq!(fs::read(db.join("f")).unwrap(), b"still here");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &a.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    a.wait_for("Peer encerrado.");
    t.proc.wait_for(&format!("Peer {} saiu", a.addr()));
    assert!(
        a.proc
            .wait_exit(std::time::Duration::from_secs(10))
            .success()
    );
}

/// Sends a DOWNLOAD_REQUEST for `name` to the peer listening on `port`.
fn ask_for(port: u16, name: &str) -> RawClient {
    ask_from("127.0.0.1", port, name)
}

/// [`ask_for`] from the loopback address `ip` (another host than 127.0.0.1, the uploader's own
/// address, when it is not 127.0.0.1).
fn ask_from(ip: &str, port: u16, name: &str) -> RawClient {
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    let stream = common::stand_in::connect_from(ip, to);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut c = RawClient::from_stream(stream);
    let msg = serde_json::json!({"method":"DOWNLOAD_REQUEST","data":{"filename":name,"port":port}});
    c.send(format!("{msg}\n").as_bytes());
    c
}

/// A flood of requests from another host cannot fill the console's queue: four may wait at
/// once, the fifth is refused at once with a reason (and not printed), and the first ones are
/// still answered normally.
#[test]
fn requests_waiting_for_an_answer_are_capped_per_host() {
    let (_tmp, _t, mut a) = lone_uploader(("f", "data"), &[]);
    let mut waiting: Vec<RawClient> = Vec::new();
    for _ in 0..4 {
        let mut c = ask_from("127.0.0.2", a.port, "f");
        assert_eq!(c.json()["status"], "OK");
        a.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
        waiting.push(c);
    }
    let mut fifth = ask_from("127.0.0.2", a.port, "f");
    assert_eq!(fifth.json()["status"], "OK");
    let refused = fifth.json();
    assert_eq!(refused["status"], "downloadRejected", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("pedidos demais"),
        "{refused}"
    );
    a.send("SIM");
    assert_eq!(waiting[0].json()["status"], "downloadAccepted");
    assert_eq!(waiting[0].bytes(4), b"data");
}

/// An uploader announcing a file larger than the free space is refused before anything is
/// written, with a clear line.
#[test]
fn a_file_larger_than_the_free_space_is_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let [db] = folders(tmp.path(), ["b"]);
    let uploader = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = uploader.local_addr().unwrap().port();
    let serving = std::thread::spawn(move || {
        let (conn, _) = uploader.accept().unwrap();
        let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
        let mut request = String::new();
        std::io::BufRead::read_line(&mut reader, &mut request).unwrap();
        let huge =
            serde_json::json!({"status":"OK","fileSize": 1u64 << 62,"digest":"00","offset":0});
        std::io::Write::write_all(&mut &conn, format!("{huge}\n").as_bytes()).unwrap();
        // The downloader hangs up instead of waiting for an answer.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    });
    let t = start_tracker(&[]);
    let mut b = joined_at_start("b", &t, &db, &[]);
    b.send(&format!("DOWNLOAD huge.bin 127.0.0.1:{up_port}"));
    b.wait_for("espaço insuficiente");
    serving.join().unwrap();
    assert!(!db.join("huge.bin").exists());
}

/// An absurdly large `--approval-timeout` is taken as a day instead of crashing the peer when
/// the first request arrives.
#[test]
fn a_huge_approval_timeout_does_not_crash_the_peer() {
    let (_tmp, _t, mut a) =
        lone_uploader(("f", "x"), &["--approval-timeout", "18446744073709551615"]);
    let mut c = ask_for(a.port, "f");
    assert_eq!(c.json()["status"], "OK");
    a.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    a.send("NAO");
    assert_eq!(c.json()["status"], "downloadRejected");
}

/// At most 64 upload connections are served at once (8 per host, so here from 8 hosts): the
/// next one is told the peer is busy and closed, without a thread of its own; once the others
/// leave, requests are served again.
#[test]
fn upload_connections_are_capped() {
    let (_tmp, _t, a) = lone_uploader(("f", "x"), &["--approve", "yes"]);
    let addr: std::net::SocketAddr = a.addr().parse().unwrap();
    let silent: Vec<std::net::TcpStream> = (2..10)
        .flat_map(|host| {
            (0..8).map(move |_| common::stand_in::connect_from(&format!("127.0.0.{host}"), addr))
        })
        .collect();
    let mut extra = RawClient::connect(addr);
    let reply = extra.json();
    assert_eq!(reply["status"], "ERROR", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("serving too many requests; try again later"),
        "{reply}"
    );
    drop(silent);
    // The slots come back as the silent connections' threads end.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let mut c = ask_for(a.port, "f");
        if c.json()["status"] == "OK" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upload slots never came back"
        );
    }
}

/// A classroom demo: many peers on one machine download from one peer at once. Connections
/// from the uploader's own machine (both ends on one address) may take 56 of the 64 upload
/// slots, not another host's 8: twenty at once all get the file. The 8 left stay for other
/// hosts: with 56 open from this machine the 57th is refused, and another host is served.
#[test]
fn many_peers_on_one_machine_download_from_one_peer_at_once() {
    let (_tmp, _t, a) = lone_uploader(("f", "data"), &["--approve", "yes"]);
    let addr: std::net::SocketAddr = a.addr().parse().unwrap();
    let mut class: Vec<RawClient> = (0..20).map(|_| RawClient::connect(addr)).collect();
    for c in &mut class {
        let msg =
            serde_json::json!({"method":"DOWNLOAD_REQUEST","data":{"filename":"f","port":a.port}});
        c.send(format!("{msg}\n").as_bytes());
    }
    for c in &mut class {
        let reply = c.json();
        assert_eq!(reply["status"], "OK", "{reply}");
        assert_eq!(c.json()["status"], "downloadAccepted");
        assert_eq!(c.bytes(4), b"data");
    }
    drop(class);

    // Slots come back as the served connections' threads end.
    let deadline = std::time::Instant::now() + WAIT;
    let idle: Vec<RawClient> = loop {
        let idle: Vec<RawClient> = (0..56).map(|_| RawClient::connect(addr)).collect();
        let mut probe = ask_for(a.port, "f");
        let reply = probe.json();
        if reply["status"] == "ERROR" {
            let message = reply["message"].as_str().unwrap_or_default().to_string();
            if message.contains("from your host") {
                break idle;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "this machine was never capped at 56: {reply}"
        );
    };
    let mut other = ask_from("127.0.0.2", a.port, "f");
    assert_eq!(other.json()["status"], "OK");
    assert_eq!(other.json()["status"], "downloadAccepted");
    assert_eq!(other.bytes(4), b"data");
    drop(idle);
}

/// `--advertise HOST` is the name the peer gives itself in its own lines (`Sou o Peer
/// HOST:PORT`, for a peer others reach by another name or address), in `napster peer` and in
/// `napster share`; the tracker still lists the address it sees the connection come from.
#[test]
fn advertise_names_the_peer_in_its_lines_and_the_tracker_lists_what_it_sees() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, ds] = folders(tmp.path(), ["a", "s"]);
    fs::write(da.join("a.txt"), "a").unwrap();
    fs::write(ds.join("s.txt"), "s").unwrap();
    let t = start_tracker(&[]);
    let mut a = start_peer("a", t.addr, &da, &["--advertise", "sala-3.example"]);
    a.send("JOIN");
    a.wait_for(&format!(
        "Sou o Peer sala-3.example:{} com arquivos: \"a.txt\"",
        a.port
    ));
    let s = start_share("s", t.addr, &ds, &["--advertise", "192.0.2.33"]);
    assert!(
        s.proc.printed(&format!(
            "Sou o Peer 192.0.2.33:{} com arquivos: \"s.txt\"",
            s.port
        )),
        "{}",
        s.proc.transcript()
    );
    let mut c = RawClient::connect(t.addr);
    assert_eq!(peers_of(&c.ask(&search_msg("a.txt"))), vec![a.addr()]);
    assert_eq!(peers_of(&c.ask(&search_msg("s.txt"))), vec![s.addr()]);
}

/// D9's global cap: at most 16 requests wait for an answer in all. Four hosts with three
/// each and four more hosts with one each fill the 16 places without any host reaching its own
/// cap (4) or asking for one of the places kept for new hosts; a 17th request, from a host
/// with none waiting, is refused at once with the reason, and the oldest is still answered.
#[test]
fn requests_waiting_for_an_answer_are_capped_at_sixteen_in_all() {
    let (_tmp, _t, mut a) = lone_uploader(("f", "data"), &[]);
    let hosts = [
        ("127.0.0.2", 3),
        ("127.0.0.3", 3),
        ("127.0.0.4", 3),
        ("127.0.0.5", 3),
        ("127.0.0.6", 1),
        ("127.0.0.7", 1),
        ("127.0.0.8", 1),
        ("127.0.0.9", 1),
    ];
    let mut waiting: Vec<RawClient> = Vec::new();
    for (host, requests) in hosts {
        for _ in 0..requests {
            let mut c = ask_from(host, a.port, "f");
            assert_eq!(c.json()["status"], "OK");
            a.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
            waiting.push(c);
        }
    }
    assert_eq!(waiting.len(), 16);
    let mut seventeenth = ask_from("127.0.0.10", a.port, "f");
    assert_eq!(seventeenth.json()["status"], "OK");
    let refused = seventeenth.json();
    assert_eq!(refused["status"], "downloadRejected", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("pedidos demais")),
        "{refused}"
    );
    assert_eq!(a.proc.count_printed("Gostaria de Aprovar"), 16);
    a.send("SIM");
    assert_eq!(waiting[0].json()["status"], "downloadAccepted");
    assert_eq!(waiting[0].bytes(4), b"data");
}

/// D3: a request from byte 0 is answered `OK` with the file's size, the BLAKE3 of the whole
/// file and `"offset":0`.
#[test]
fn a_fresh_request_is_answered_with_size_digest_and_offset_zero() {
    let (_tmp, _t, a) = lone_uploader(("f", "data"), &["--approve", "yes"]);
    let mut c = ask_for(a.port, "f");
    let ok = c.json();
    assert_eq!(ok["status"], "OK", "{ok}");
    assert_eq!(ok["fileSize"], 4, "{ok}");
    assert_eq!(
        ok["digest"],
        blake3::hash(b"data").to_hex().as_str(),
        "{ok}"
    );
    assert_eq!(ok["offset"], 0, "{ok}");
    assert_eq!(c.json()["status"], "downloadAccepted");
    assert_eq!(c.bytes(4), b"data");
}
