//! Scripts get what they ask for: piped commands run to the end (QUIT and the end of input
//! wait for running downloads), and the exit code says whether every command succeeded, with
//! one code per kind of failure (`napster help get`, README). Also `napster get` and
//! `napster share`, and the arguments checked at start. Real tracker and peers on port 0.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::thread;

use common::*;

/// Runs `napster peer` against `tracker` sharing `dir`, types `lines` on its stdin, closes
/// it, and waits for the exit; returns the process (for its transcript) and its exit code.
fn piped_peer(name: &str, tracker: &TrackerProc, dir: &Path, lines: &[&str]) -> (Proc, i32) {
    let server = tracker.addr.to_string();
    let args = [
        "peer",
        "--server",
        &server,
        "--listen",
        "127.0.0.1:0",
        "--dir",
        dir.to_str().unwrap(),
    ];
    let mut proc = Proc::spawn(name, &args, None);
    for line in lines {
        proc.send(line);
    }
    proc.close_stdin();
    let status = proc.wait_exit(WAIT);
    let code = status
        .code()
        .unwrap_or_else(|| panic!("{name} killed by a signal\n{}", proc.transcript()));
    (proc, code)
}

/// Runs `napster ARGS` with nothing on stdin and returns its exit code, stdout and stderr.
fn napster(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(napster_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("napster runs");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tracker and `napster share` of a folder holding `aula-01.mp4` (`len` pattern bytes),
/// answering every request with `approve`. Keep all three as long as the test runs.
fn shared_video(len: u64, approve: &str) -> (tempfile::TempDir, TrackerProc, PeerProc) {
    let tmp = tempfile::tempdir().unwrap();
    let [alice] = folders(tmp.path(), ["alice"]);
    write_pattern(&alice.join("aula-01.mp4"), len, 7);
    let t = start_tracker(&[]);
    let server = t.addr.to_string();
    let args = [
        "share",
        alice.to_str().unwrap(),
        "--approve",
        approve,
        "--server",
        &server,
        "--listen",
        "127.0.0.1:0",
    ];
    let peer = PeerProc::ready(Proc::spawn("alice", &args, None), &alice);
    peer.proc.wait_for("Sou o Peer ");
    (tmp, t, peer)
}

/// The script, `printf 'JOIN\nDOWNLOAD aula-01.mp4 PORT\nQUIT\n' | napster peer`:
/// QUIT waits for the download, the copy arrives verified, and the exit code is 0.
#[test]
fn a_piped_download_then_quit_gets_the_file_and_exits_0() {
    let (tmp, t, alice) = shared_video(24 << 20, "yes");
    let [bob] = folders(tmp.path(), ["bob"]);
    let download = format!("DOWNLOAD aula-01.mp4 {}", alice.port);
    let (proc, code) = piped_peer("bob", &t, &bob, &["JOIN", &download, "QUIT"]);
    assert_eq!(code, 0, "{}", proc.transcript());
    assert!(proc.printed(&format!("Aguardando resposta de {}...", alice.addr())));
    assert!(proc.printed("Arquivo aula-01.mp4 baixado com sucesso na pasta"));
    assert!(proc.printed("24,0 MiB em "));
    assert!(proc.printed("verificado (BLAKE3)"));
    assert!(proc.printed("Peer encerrado."));
    assert!(same_file(
        &alice.dir.join("aula-01.mp4"),
        &bob.join("aula-01.mp4")
    ));
}

/// Without QUIT, the end of input waits for the download too, then the peer leaves (it used
/// to serve for ever) and the tracker forgets it.
#[test]
fn the_end_of_input_waits_for_the_download_then_leaves() {
    let (tmp, t, alice) = shared_video(24 << 20, "yes");
    let [bob] = folders(tmp.path(), ["bob"]);
    let download = format!("DOWNLOAD aula-01.mp4 {}", alice.port);
    let (proc, code) = piped_peer("bob", &t, &bob, &["JOIN", &download]);
    assert_eq!(code, 0, "{}", proc.transcript());
    assert!(same_file(
        &alice.dir.join("aula-01.mp4"),
        &bob.join("aula-01.mp4")
    ));
    t.proc.wait_for(" saiu");
}

/// A refused download (the other side's `--approve no`) exits 7; the line is the original's.
#[test]
fn a_rejected_download_exits_7() {
    let (tmp, t, alice) = shared_video(1000, "no");
    let [bob] = folders(tmp.path(), ["bob"]);
    let download = format!("DOWNLOAD aula-01.mp4 {}", alice.port);
    let (proc, code) = piped_peer("bob", &t, &bob, &["JOIN", &download, "QUIT"]);
    assert_eq!(code, 7, "{}", proc.transcript());
    assert!(proc.printed("Download Rejeitado"));
}

/// A name the other peer does not have exits 6 with the original's `Arquivo não encontrado.`;
/// a command after it still runs (and succeeds) but the first failure sets the code.
#[test]
fn a_file_not_found_exits_6_and_later_commands_still_run() {
    let (tmp, t, alice) = shared_video(1000, "yes");
    let [bob] = folders(tmp.path(), ["bob"]);
    let missing = format!("DOWNLOAD nada.mp4 {}", alice.port);
    let (proc, code) = piped_peer(
        "bob",
        &t,
        &bob,
        &["JOIN", &missing, "SEARCH aula-01.mp4", "QUIT"],
    );
    assert_eq!(code, 6, "{}", proc.transcript());
    assert!(proc.printed("Arquivo não encontrado."));
    assert!(proc.printed(&format!(
        "Peers com arquivo solicitado: ['{}']",
        alice.addr()
    )));
}

/// An unknown command, and a command before JOIN, are command failures: exit 3. Before JOIN
/// an unknown command is answered as unknown (it used to say "Digite 'JOIN'").
#[test]
fn unknown_commands_and_commands_before_join_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let [bob] = folders(tmp.path(), ["bob"]);
    let t = start_tracker(&[]);
    let (proc, code) = piped_peer("bob", &t, &bob, &["LISTAR", "QUIT"]);
    assert_eq!(code, 3, "{}", proc.transcript());
    assert!(proc.printed("Comando desconhecido: LISTAR. Comandos: JOIN |"));

    let (proc, code) = piped_peer("bob", &t, &bob, &["SEARCH x", "QUIT"]);
    assert_eq!(code, 3, "{}", proc.transcript());
    assert_eq!(
        proc.transcript()
            .matches("Digite 'JOIN' para iniciar.")
            .count(),
        2,
        "{}",
        proc.transcript()
    );

    let (proc, code) = piped_peer("bob", &t, &bob, &["HELP", "JOIN", "QUIT"]);
    assert_eq!(code, 0, "{}", proc.transcript());
}

/// A peer nobody listens on exits 8, with the OS error in Portuguese; a tracker nobody
/// listens on makes JOIN fail with 5.
#[test]
fn an_unreachable_peer_exits_8_and_an_unreachable_tracker_5() {
    let tmp = tempfile::tempdir().unwrap();
    let [bob] = folders(tmp.path(), ["bob"]);
    let t = start_tracker(&[]);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let download = format!("DOWNLOAD x.mp4 127.0.0.1:{port}");
    let (proc, code) = piped_peer("bob", &t, &bob, &["JOIN", &download, "QUIT"]);
    assert_eq!(code, 8, "{}", proc.transcript());
    assert!(
        proc.printed(&format!(
            "Erro ao processar download de x.mp4: não foi possível conectar a 127.0.0.1:{port}: conexão recusada"
        )),
        "{}",
        proc.transcript()
    );

    let server = format!("127.0.0.1:{port}");
    let mut proc = Proc::spawn(
        "carol",
        &["peer", "--server", &server, "--dir", bob.to_str().unwrap()],
        None,
    );
    proc.send("JOIN");
    proc.close_stdin();
    let status = proc.wait_exit(WAIT);
    assert_eq!(status.code(), Some(5), "{}", proc.transcript());
    assert!(proc.printed(&format!(
        "Falha na Conexao! não foi possível conectar a {server}: conexão recusada"
    )));
}

/// Downloading a name that is already in the folder is refused at once (exit 11): nothing is
/// overwritten.
#[test]
fn an_existing_file_exits_11() {
    let (tmp, t, alice) = shared_video(1000, "yes");
    let [bob] = folders(tmp.path(), ["bob"]);
    fs::write(bob.join("aula-01.mp4"), "mine").unwrap();
    let download = format!("DOWNLOAD aula-01.mp4 {}", alice.port);
    let (proc, code) = piped_peer("bob", &t, &bob, &["JOIN", &download, "QUIT"]);
    assert_eq!(code, 11, "{}", proc.transcript());
    assert!(proc.printed("já existe; não será sobrescrito"));
    assert_eq!(fs::read(bob.join("aula-01.mp4")).unwrap(), b"mine");
}

/// SIGTERM while a piped QUIT waits for a download stops it, keeps the partial, and exits 20.
#[test]
fn a_signal_during_a_download_exits_20_and_keeps_the_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let [bob] = folders(tmp.path(), ["bob"]);
    let t = start_tracker(&[]);
    // An uploader that sends 20 MiB of 64 and then holds the connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap();
    let uploader = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\n") {
            assert_eq!(conn.read(&mut byte).unwrap(), 1);
            request.push(byte[0]);
        }
        conn.write_all(
            b"{\"status\":\"OK\",\"fileSize\":67108864}\n{\"status\":\"downloadAccepted\"}\n",
        )
        .unwrap();
        // The downloader is killed once it has 16 MiB, maybe before the last of these are
        // taken: a failed write here is that kill, not an error (the partial is checked below).
        let _ = conn.write_all(&vec![1u8; 20 << 20]);
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
    });
    let server = t.addr.to_string();
    let mut proc = Proc::spawn(
        "bob",
        &["peer", "--server", &server, "--dir", bob.to_str().unwrap()],
        None,
    );
    proc.send("JOIN");
    proc.send(&format!("DOWNLOAD big.bin {up}"));
    proc.send("QUIT");
    // The end of the script right after QUIT: both wait behind the JOIN's answer, and the
    // wait is said once, not once for each.
    proc.close_stdin();
    proc.wait_for("Aguardando 1 download em andamento terminar antes de sair...");
    proc.wait_for("Download de big.bin: 25%");
    let killed = Command::new("kill")
        .args(["-TERM", &proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let line = proc.wait_for("Erro ao processar download de big.bin: interrompido ao sair com ");
    assert!(line.contains("guardada para retomar depois"), "{line}");
    assert_eq!(
        proc.wait_exit(WAIT).code(),
        Some(20),
        "{}",
        proc.transcript()
    );
    assert_eq!(
        proc.transcript().matches("Aguardando 1 download").count(),
        1,
        "{}",
        proc.transcript()
    );
    uploader.join().unwrap();
    let part = napster::transfer::PartialStore::new(&bob).part_path("big.bin");
    let kept = fs::metadata(part).unwrap().len();
    assert!((16 << 20..=20 << 20).contains(&kept), "kept {kept} bytes");
}

/// `napster get NAME` finds the one peer, downloads, verifies and exits 0; again it exits 11
/// (the file is there); a name nobody shares exits 6; `--from` names the peer.
#[test]
fn get_downloads_one_file_and_its_exit_code_says_how_it_went() {
    let (tmp, t, alice) = shared_video(3 << 20, "yes");
    let [bob, carol] = folders(tmp.path(), ["bob", "carol"]);
    let server = t.addr.to_string();
    let dir = bob.to_str().unwrap();
    let (code, out, err) = napster(&["get", "aula-01.mp4", "--server", &server, "--dir", dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!(
        "Peers com arquivo solicitado: ['{}']",
        alice.addr()
    )));
    assert!(out.contains("Arquivo aula-01.mp4 baixado com sucesso na pasta"));
    assert!(out.contains("3,0 MiB em "), "{out}");
    assert!(out.contains("verificado (BLAKE3)"), "{out}");
    assert!(same_file(
        &alice.dir.join("aula-01.mp4"),
        &bob.join("aula-01.mp4")
    ));

    let (code, out, _) = napster(&["get", "aula-01.mp4", "--server", &server, "--dir", dir]);
    assert_eq!(code, 11, "{out}");

    let (code, out, _) = napster(&["get", "nada.mp4", "--server", &server, "--dir", dir]);
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("Nenhum peer compartilha nada.mp4."), "{out}");

    let from = alice.addr();
    let carol_dir = carol.to_str().unwrap();
    let (code, out, err) = napster(&[
        "get",
        "aula-01.mp4",
        "--from",
        &from,
        "--server",
        &server,
        "--dir",
        carol_dir,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("Peers com arquivo solicitado"),
        "no search with --from"
    );
    assert!(same_file(
        &alice.dir.join("aula-01.mp4"),
        &carol.join("aula-01.mp4")
    ));
}

/// A mistaken argument is refused at start, in Portuguese with what to do, exit 2: a
/// `--server` without a port, a `--dir` that is a file, a `--listen` without a port.
#[test]
fn arguments_are_checked_at_start_with_portuguese_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("notas.txt");
    fs::write(&file, "x").unwrap();

    let (code, _, err) = napster(&["peer", "--server", "127.0.0.1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("napster: --server 127.0.0.1 não tem a forma HOST:PORTA\najuda: "),
        "{err}"
    );
    let (code, _, err) = napster(&["peer", "--dir", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("não é uma pasta: é um arquivo"), "{err}");
    let (code, _, err) = napster(&["get", "x", "--listen", "0.0.0.0"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--listen 0.0.0.0 não é um endereço IP:PORTA"),
        "{err}"
    );
    let (code, _, _) = napster(&["peer", "--no-such-option"]);
    assert_eq!(code, 2);
    assert!(!tmp.path().join("p2p").exists());
}

/// An upload port already in use, or a folder another napster uses, stops the start: exit 4,
/// said in Portuguese.
#[test]
fn a_port_or_folder_in_use_exits_4() {
    let tmp = tempfile::tempdir().unwrap();
    let [alice, bob] = folders(tmp.path(), ["alice", "bob"]);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let (code, _, err) = napster(&["peer", "--listen", &listen, "--dir", bob.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!(
            "não foi possível abrir a porta de upload {listen}: endereço já em uso"
        )),
        "{err}"
    );

    let t = start_tracker(&[]);
    let first = start_share("alice", t.addr, &alice, &[]);
    let (code, _, err) = napster(&["peer", "--dir", alice.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!(
            "já é usada por outro napster (processo {})",
            first.proc.pid()
        )),
        "{err}"
    );
}

/// Without `--dir` the folder is `p2p` in the current folder, the same every run; the start
/// line says which folder, that it was just created, and how to choose another.
#[test]
fn the_default_folder_is_p2p_and_the_start_line_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let t = start_tracker(&[]);
    let server = t.addr.to_string();
    for expected in [
        "(padrão, criada agora; para outra: --dir PASTA)",
        "(padrão, vazia;",
    ] {
        let mut proc = Proc::spawn(
            "bob",
            &["peer", "--server", &server, "--listen", "127.0.0.1:0"],
            Some(tmp.path()),
        );
        let line = proc.wait_for("Aguardando pedidos de download na porta ");
        assert!(line.contains(&format!("; pasta p2p {expected}")), "{line}");
        proc.close_stdin();
        assert_eq!(proc.wait_exit(WAIT).code(), Some(0));
    }
    assert!(tmp.path().join("p2p").is_dir());
}
