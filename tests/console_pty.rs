//! The peer's interactive console, driven through a real pseudo-terminal.
//!
//! Each test starts the real `napster peer` binary on a pty (expectrl's process layer), feeds
//! everything it writes to a terminal emulator (vt100), and asserts on the *screen* a person
//! would see: which lines stand above the prompt, what the prompt line reads, where the
//! cursor is. The other side of each upload request is a raw TCP client speaking the protocol,
//! or a second real peer. Waits are for the screen to show something, with a deadline; nothing
//! sleeps.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU16;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Instant;

use common::*;
use crossbeam_channel::{Receiver, RecvTimeoutError, unbounded};
use expectrl::process::Process;
use expectrl::process::unix::{PtyStream, Signal, UnixProcess, WaitStatus};

const ROWS: u16 = 60;
const COLS: u16 = 120;

/// The prompt with `n` upload requests waiting: `[sem pedidos] > `, `[1 pendente] > `, ...
/// (padded to one width).
fn prompt(n: usize) -> String {
    napster::peer::console::prompt_text(n)
}

/// The idle prompt.
fn idle() -> String {
    prompt(0)
}

/// A `napster` process on a pseudo-terminal, and the screen it has drawn so far.
struct Term {
    cols: u16,
    proc: UnixProcess,
    input: PtyStream,
    chunks: Receiver<Vec<u8>>,
    parser: vt100::Parser,
    exited: bool,
}

impl Term {
    /// Starts `napster ARGS` on a fresh pty of ROWS x COLS, with extra environment variables.
    fn spawn_with_env(args: &[&str], env: &[(&str, &Path)]) -> Term {
        Term::spawn_sized(args, env, COLS)
    }

    /// [`Term::spawn_with_env`] on a terminal `cols` columns wide.
    fn spawn_sized(args: &[&str], env: &[(&str, &Path)], cols: u16) -> Term {
        let mut cmd = Command::new(napster_bin());
        cmd.args(args)
            .env("TERM", "xterm-256color")
            .env("RUST_LOG", "warn")
            .env_remove("NO_COLOR");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut proc = UnixProcess::spawn_command(cmd).expect("napster starts on a pty");
        proc.set_window_size(cols, ROWS).expect("window size set");
        let input = proc.open_stream().expect("pty stream");
        let mut output = proc.open_stream().expect("pty stream");
        let (tx, rx) = unbounded();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match output.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Term {
            cols,
            proc,
            input,
            chunks: rx,
            parser: vt100::Parser::new(
                NonZeroU16::new(ROWS).unwrap(),
                NonZeroU16::new(cols).unwrap(),
                0,
            ),
            exited: false,
        }
    }

    /// Starts a peer on a pty, talking to `tracker`, sharing `dir`, keeping history in
    /// `history`; returns it with its upload port.
    fn peer(tracker: SocketAddr, dir: &Path, history: &Path, extra: &[&str]) -> (Term, u16) {
        Term::peer_sized(tracker, dir, history, extra, COLS)
    }

    /// [`Term::peer`] on a terminal `cols` columns wide.
    fn peer_sized(
        tracker: SocketAddr,
        dir: &Path,
        history: &Path,
        extra: &[&str],
        cols: u16,
    ) -> (Term, u16) {
        let server = tracker.to_string();
        let mut args = peer_args(&server, dir);
        args.extend(["--history", history.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let mut term = Term::spawn_sized(&args, &[], cols);
        term.wait_for("Digite 'JOIN' para iniciar.");
        let text = term.text();
        let port = text
            .split("na porta ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("upload port on screen:\n{text}"));
        term.wait_prompt(&idle(), "");
        (term, port)
    }

    /// Types JOIN and waits for the confirmation and the idle prompt after it.
    fn join(&mut self) {
        self.keys("JOIN\r");
        self.wait_for("Sou o Peer 127.0.0.1:");
        self.wait_prompt(&idle(), "");
    }

    /// Types bytes, as keys.
    fn keys(&mut self, keys: &str) {
        self.input
            .write_all(keys.as_bytes())
            .expect("types on the pty");
        self.input.flush().expect("flushes the pty");
    }

    /// The whole screen, rows joined by newlines, trailing blanks dropped.
    fn text(&self) -> String {
        let rows: Vec<String> = self
            .parser
            .screen()
            .rows(0, self.cols)
            .map(|r| r.trim_end().to_string())
            .collect();
        rows.join("\n").trim_end().to_string()
    }

    /// The row the cursor is on, and the cursor's column.
    fn cursor_row(&self) -> (String, u16) {
        let (row, col) = self.parser.screen().cursor_position();
        let text = self
            .parser
            .screen()
            .rows(0, self.cols)
            .nth(row as usize)
            .unwrap_or_default();
        (text, col)
    }

    /// Reads output until `done` holds for the screen; fails after WAIT with the screen.
    fn wait_until(&mut self, what: &str, done: impl Fn(&Term) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if done(self) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(bytes) => self.parser.process(&bytes),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the screen never showed {what}:\n{}", self.text())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.exited = true;
                    if done(self) {
                        return;
                    }
                    panic!("napster exited before showing {what}:\n{}", self.text());
                }
            }
        }
    }

    /// Waits for `needle` anywhere on the screen.
    fn wait_for(&mut self, needle: &str) {
        self.wait_until(&format!("{needle:?}"), |t| t.text().contains(needle));
    }

    /// Waits until the cursor's row reads `prompt` followed by `typed`, with the cursor
    /// right after the typed text.
    fn wait_prompt(&mut self, prompt: &str, typed: &str) {
        let line = format!("{prompt}{typed}");
        let col = line.chars().count() as u16;
        self.wait_until(&format!("the prompt line {line:?}"), |t| {
            let (row, at) = t.cursor_row();
            row.trim_end() == line.trim_end() && at == col
        });
    }

    /// The screen's text without any blank or row break, for lines that wrap.
    fn squeezed(&self) -> String {
        squeeze(&self.text())
    }

    /// How many times `needle` stands on the screen.
    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }

    /// True if the terminal is in its normal line-by-line mode (ICANON), false in raw mode.
    fn canonical(&self) -> bool {
        let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the termios when it returns 0, checked before reading it.
        let termios = unsafe {
            assert_eq!(
                libc::tcgetattr(self.input.as_raw_fd(), termios.as_mut_ptr()),
                0
            );
            termios.assume_init()
        };
        termios.c_lflag & libc::ICANON != 0
    }

    /// Waits for the process to exit (its pty closes) and returns its status.
    fn wait_exit(&mut self) -> WaitStatus {
        self.wait_until("the process exiting", |t| t.exited);
        self.proc.wait().expect("waitpid works")
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.proc.kill(Signal::SIGKILL);
        }
    }
}

/// `text` without blanks or row breaks.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect()
}

/// The arguments of `napster peer` talking to the tracker at `server`, sharing `dir`, its
/// upload port on any free loopback port.
fn peer_args<'a>(server: &'a str, dir: &'a Path) -> Vec<&'a str> {
    vec![
        "peer",
        "--server",
        server,
        "--listen",
        "127.0.0.1:0",
        "--dir",
        dir.to_str().unwrap(),
    ]
}

/// A line-mode peer `alice` (stdin a pipe, not a pty) with the options `extra`, sharing a new
/// folder holding the file `name` with `bytes`, JOINed to `tracker`. The folder is returned:
/// keep it as long as the peer runs.
fn joined_alice(
    tracker: &TrackerProc,
    (name, bytes): (&str, &[u8]),
    extra: &[&str],
) -> (PeerProc, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), bytes).unwrap();
    let mut alice = start_peer("alice", tracker.addr, dir.path(), extra);
    alice.join();
    (alice, dir)
}

/// A DOWNLOAD_REQUEST from a raw client that says its own upload port is `from_port`.
fn download_request(name: &str, port: u16, from_port: u16) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({
        "method": "DOWNLOAD_REQUEST",
        "data": {"filename": name, "port": port, "fromPort": from_port}
    }))
    .unwrap();
    v.push(b'\n');
    v
}

/// A raw downloader that asked `port` for `name` and got its `OK`.
fn ask(port: u16, name: &str, from_port: u16) -> RawClient {
    let mut client = RawClient::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    let ok = client.ask(&download_request(name, port, from_port));
    assert_eq!(ok["status"], "OK", "first reply {ok}");
    client
}

/// A temporary folder with `files` (name, contents) in a `share` subfolder.
fn folder(files: &[(&str, &[u8])]) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    for (name, bytes) in files {
        std::fs::write(share.join(name), bytes).unwrap();
    }
    (tmp, share)
}

/// A request that arrives while the user sits at an empty prompt is printed above the prompt
/// (who, which file, how big, the original's question), the prompt then shows the pending
/// count, and SIM sends the file and brings the prompt back to idle.
#[test]
fn request_while_idle_appears_above_the_prompt_and_sim_sends_the_file() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[("notes.txt", b"hello, world\n")]);
    let (mut alice, port) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    alice.join();

    let mut bob = ask(port, "notes.txt", 4999);
    let from = bob.stream.local_addr().unwrap();
    alice.wait_for(&format!(
        "Peer {from} (porta de upload declarada: 4999) solicitou o arquivo notes.txt (13 B)"
    ));
    alice.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    alice.wait_prompt(&prompt(1), "");
    let screen = alice.text();
    let question = screen.find("Gostaria de Aprovar").unwrap();
    let prompt_at = screen.rfind("[1 pendente] >").unwrap();
    assert!(
        question < prompt_at,
        "the question stands above the prompt:\n{screen}"
    );

    alice.keys("SIM\r");
    assert_eq!(bob.json()["status"], "downloadAccepted");
    assert_eq!(bob.bytes(13), b"hello, world\n");
    alice.wait_for(&format!("Download de notes.txt por {from} aprovado"));
    alice.wait_prompt(&idle(), "");
}

/// A request arriving half way through typing a SEARCH leaves the typed text on the prompt
/// line, cursor after it; finishing the line runs the search; NAO then refuses the request.
#[test]
fn request_arriving_while_typing_keeps_the_typed_text_and_the_command_runs() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[("notes.txt", b"some notes")]);
    let (mut alice, port) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    alice.join();
    alice.keys("SEARCH no");
    alice.wait_prompt(&idle(), "SEARCH no");

    let mut bob = ask(port, "notes.txt", 4998);
    let from = bob.stream.local_addr().unwrap();
    alice.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    alice.wait_prompt(&prompt(1), "SEARCH no");
    assert_eq!(
        alice.count("SEARCH no"),
        1,
        "no stale copy:\n{}",
        alice.text()
    );

    alice.keys("tes.txt\r");
    alice.wait_for(&format!(
        "Peers com arquivo solicitado: ['127.0.0.1:{port}']"
    ));
    alice.wait_prompt(&prompt(1), "");

    alice.keys("NAO\r");
    let rejected = bob.json();
    assert_eq!(rejected["status"], "downloadRejected");
    assert!(rejected.get("reason").is_none(), "a plain NAO: {rejected}");
    alice.wait_for(&format!("Download de notes.txt por {from} recusado"));
    alice.wait_prompt(&idle(), "");
}

/// Two requests queue in arrival order: the prompt counts both (`[2 pendentes]`), SIM answers
/// the older and says who asks next and for what, NAO answers the newer.
#[test]
fn two_requests_are_answered_oldest_first() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[("a.txt", b"AAAA"), ("b.txt", b"BB")]);
    let (mut alice, port) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);

    let mut first = ask(port, "a.txt", 4001);
    let first_from = first.stream.local_addr().unwrap();
    alice.wait_for(&format!(
        "Peer {first_from} (porta de upload declarada: 4001) solicitou o arquivo a.txt (4 B)"
    ));
    alice.wait_prompt(&prompt(1), "");
    let mut second = ask(port, "b.txt", 4002);
    let second_from = second.stream.local_addr().unwrap();
    alice.wait_for(&format!(
        "Peer {second_from} (porta de upload declarada: 4002) solicitou o arquivo b.txt (2 B)"
    ));
    alice.wait_prompt(&prompt(2), "");

    alice.keys("sim\r");
    assert_eq!(first.json()["status"], "downloadAccepted");
    assert_eq!(first.bytes(4), b"AAAA");
    alice.wait_for(&format!("Download de a.txt por {first_from} aprovado"));
    alice.wait_for(&format!(
        "Próximo pedido: Peer {second_from} (porta de upload declarada: 4002) solicitou o arquivo b.txt (2 B)"
    ));
    alice.wait_prompt(&prompt(1), "");

    alice.keys("nao\r");
    assert_eq!(second.json()["status"], "downloadRejected");
    alice.wait_for(&format!("Download de b.txt por {second_from} recusado"));
    alice.wait_prompt(&idle(), "");
}

/// A request nobody answers is refused when the time limit passes: the uploader's screen says
/// so and the prompt returns to idle; the downloader, a second real peer, prints the reason.
#[test]
fn an_unanswered_request_times_out_and_both_sides_are_told() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[("notes.txt", b"late")]);
    let (mut alice, port) = Term::peer(
        tracker.addr,
        &share,
        &tmp.path().join("hist"),
        &["--approval-timeout", "1"],
    );
    alice.join();

    let bob_dir = tempfile::tempdir().unwrap();
    let mut bob = start_peer("bob", tracker.addr, bob_dir.path(), &[]);
    bob.join();
    bob.send(&format!("DOWNLOAD notes.txt 127.0.0.1:{port}"));
    alice.wait_prompt(&prompt(1), "");
    // The request's connection leaves from an ephemeral port of bob's host.
    alice.wait_for("para notes.txt expirou sem resposta: recusado");
    alice.wait_prompt(&idle(), "");
    bob.wait_for("Download Rejeitado: o usuário do outro peer não respondeu a tempo");
    assert!(!bob_dir.path().join("notes.txt").exists());
}

/// Ctrl-D with a request pending leaves cleanly: the request is refused with a reason before
/// the peer exits (status 0), and the tracker forgets the peer.
#[test]
fn ctrl_d_with_a_request_pending_refuses_it_and_leaves_the_tracker() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[("notes.txt", b"bye")]);
    let (mut alice, port) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    alice.join();
    let mut bob = ask(port, "notes.txt", 4003);
    alice.wait_prompt(&prompt(1), "");

    alice.keys("\x04");
    let rejected = bob.json();
    assert_eq!(rejected["status"], "downloadRejected");
    assert_eq!(rejected["reason"], "o outro peer está encerrando");
    alice.wait_for("1 pedido pendente recusado");
    alice.wait_for("Peer encerrado.");
    assert_eq!(alice.wait_exit(), WaitStatus::Exited(alice.proc.pid(), 0));

    tracker
        .proc
        .wait_for(&format!("Peer 127.0.0.1:{port} saiu"));
    let mut carol = RawClient::connect(tracker.addr);
    assert_eq!(carol.ask(&join_msg(4100, &[]))["status"], "JOIN_OK");
    assert!(peers_of(&carol.ask(&search_msg("notes.txt"))).is_empty());
}

/// Tab completes command names, then the file name of the last search, then the peer that
/// search found; the completed DOWNLOAD runs.
#[test]
fn tab_completes_the_searched_file_name_and_its_peer() {
    let tracker = start_tracker(&[]);
    let (alice, _alice_dir) = joined_alice(
        &tracker,
        ("relatorio-2024.pdf", b"%PDF-1.4 tiny"),
        &["--approve", "yes"],
    );

    let (tmp, share) = folder(&[]);
    let (mut bob, _) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    bob.keys("jo\t");
    bob.wait_prompt(&idle(), "JOIN ");
    bob.keys("\r");
    bob.wait_for("Sou o Peer ");
    bob.keys("SEARCH relatorio-2024.pdf\r");
    bob.wait_for(&format!(
        "Peers com arquivo solicitado: ['127.0.0.1:{}']",
        alice.port
    ));
    bob.wait_prompt(&idle(), "");

    bob.keys("DOWNLOAD rel\t");
    bob.wait_prompt(&idle(), "DOWNLOAD relatorio-2024.pdf ");
    bob.keys("\t");
    let full = format!("DOWNLOAD relatorio-2024.pdf 127.0.0.1:{}", alice.port);
    bob.wait_prompt(&idle(), &full);
    bob.keys("\r");
    bob.wait_for("Arquivo relatorio-2024.pdf baixado com sucesso na pasta ");
    assert_eq!(
        std::fs::read(share.join("relatorio-2024.pdf")).unwrap(),
        b"%PDF-1.4 tiny"
    );
}

/// History is kept in the given file (outside the shared folder) and comes back after a
/// restart: Up recalls the last command of the previous run.
#[test]
fn history_survives_a_restart() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[]);
    let history = tmp.path().join("data").join("history");
    let (mut first, _) = Term::peer(tracker.addr, &share, &history, &[]);
    first.keys("HELP\r");
    first.wait_for("Comandos: JOIN");
    first.wait_prompt(&idle(), "");
    first.keys("\x04");
    first.wait_exit();
    assert!(std::fs::read_to_string(&history).unwrap().contains("HELP"));
    let shared: Vec<_> = std::fs::read_dir(&share)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(shared, [".napster"], "only the peer's own sub-folder");

    let (mut second, _) = Term::peer(tracker.addr, &share, &history, &[]);
    second.keys("\x1b[A");
    second.wait_prompt(&idle(), "HELP");
}

/// An uploader on a raw socket that accepts a download of `size` bytes (no digest), sends
/// `sent` of them and then stalls, holding the connection until the downloader hangs up.
/// `sent` is far more than the sockets buffer, so the `sent` signal comes only once the
/// downloader has written most of it to disk. The thread returns what it saw at the end.
struct StallingUploader {
    port: u16,
    sent: Receiver<()>,
    thread: thread::JoinHandle<()>,
}

impl StallingUploader {
    fn start(size: usize, sent: usize) -> StallingUploader {
        const MIB: usize = 1 << 20;
        let uploader = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = uploader.local_addr().unwrap().port();
        let (sent_tx, sent_rx) = unbounded();
        let thread = thread::spawn(move || {
            let (mut conn, _) = uploader.accept().unwrap();
            let mut byte = [0u8; 1];
            let mut request = Vec::new();
            while !request.ends_with(b"\n") {
                assert_eq!(conn.read(&mut byte).unwrap(), 1, "request cut short");
                request.push(byte[0]);
            }
            conn.write_all(format!("{{\"status\":\"OK\",\"fileSize\":{size}}}\n").as_bytes())
                .unwrap();
            conn.write_all(b"{\"status\":\"downloadAccepted\"}\n")
                .unwrap();
            let chunk = vec![7u8; MIB];
            for _ in 0..sent / MIB {
                conn.write_all(&chunk).unwrap();
            }
            sent_tx.send(()).unwrap();
            // Hold the connection open until the downloader hangs up.
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
        });
        StallingUploader {
            port,
            sent: sent_rx,
            thread,
        }
    }

    fn wait_sent(&self) {
        self.sent
            .recv_timeout(WAIT)
            .expect("the uploader sent its part");
    }
}

/// Options for a peer downloading from a [`StallingUploader`]: a transfer that moves nothing
/// is ended by the minimum rate after half `--liveness` (15 s by default, D13), which a test
/// typing a dozen lines on a loaded machine could reach; with this the download stays stalled
/// (not ended) for as long as the test needs it to.
const STALLED_LONGER: [&str; 2] = ["--liveness", "600"];

/// While a download runs its progress is printed above the prompt and the prompt stays
/// usable (a SEARCH answers); Ctrl-C cancels a half-typed line. QUIT (here Ctrl-D) with the
/// download running asks once; NAO goes on; QUIT again and SIM leave: the stopped download is
/// listed with where its partial is kept, no bar is left on screen, the exit status is 20
/// (interrupted), and what arrived stays under the temporary name, nothing under the final one.
#[test]
fn quit_with_a_running_download_asks_lists_the_partial_and_clears_the_bar() {
    const MIB: usize = 1 << 20;
    const SIZE: usize = 64 * MIB;
    const SENT: usize = 40 * MIB;
    let tracker = start_tracker(&[]);
    let uploader = StallingUploader::start(SIZE, SENT);

    let (tmp, share) = folder(&[]);
    let (mut bob, _) = Term::peer(
        tracker.addr,
        &share,
        &tmp.path().join("hist"),
        &STALLED_LONGER,
    );
    bob.join();
    bob.keys(&format!("DOWNLOAD big.bin 127.0.0.1:{}\r", uploader.port));
    bob.wait_for(&format!(
        "Aguardando resposta de 127.0.0.1:{}...",
        uploader.port
    ));
    // On a terminal, progress is a bar (bytes, rate, time left) drawn above the prompt.
    bob.wait_for("/64,0 MiB");
    bob.wait_for("Download de big.bin [");
    bob.wait_prompt(&idle(), "");
    uploader.wait_sent();

    bob.keys("SEARCH big.bin\r");
    bob.wait_for("Peers com arquivo solicitado: []");
    bob.wait_prompt(&idle(), "");
    bob.keys("SEARCH oops");
    bob.wait_prompt(&idle(), "SEARCH oops");
    bob.keys("\x03");
    bob.wait_prompt(&idle(), "");
    assert_eq!(
        bob.count("Download de big.bin ["),
        1,
        "one bar:\n{}",
        bob.text()
    );

    bob.keys("\x04");
    let question = "Há 1 download em andamento. Sair mesmo? (SIM/NAO)";
    bob.wait_for(question);
    bob.wait_prompt(&idle(), "");
    bob.keys("NAO\r");
    bob.wait_for("Continuando; nada foi interrompido.");
    bob.wait_prompt(&idle(), "");
    bob.keys("QUIT\r");
    bob.wait_until("the question asked again", |t| t.count(question) == 2);
    bob.wait_prompt(&idle(), "");
    bob.keys("SIM\r");
    let part = napster::transfer::PartialStore::new(&share).part_path("big.bin");
    bob.wait_for("Erro ao processar download de big.bin: interrompido ao sair com ");
    bob.wait_for("Peer encerrado.");
    // The line is longer than the terminal: compare without the row breaks.
    let where_kept = format!(
        "a parte recebida foi guardada para retomar depois ({})",
        part.display()
    );
    assert!(
        bob.squeezed().contains(&squeeze(&where_kept)),
        "{where_kept:?} on screen:\n{}",
        bob.text()
    );
    assert_eq!(bob.wait_exit(), WaitStatus::Exited(bob.proc.pid(), 20));
    assert_eq!(
        bob.count("Peers com arquivo solicitado"),
        1,
        "the cancelled SEARCH never ran:\n{}",
        bob.text()
    );
    assert_eq!(
        bob.count("Download de big.bin ["),
        0,
        "bar left:\n{}",
        bob.text()
    );
    uploader.thread.join().unwrap();
    assert!(
        !share.join("big.bin").exists(),
        "nothing under the final name"
    );
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(
        (SIZE / 2) as u64 <= kept && kept <= SENT as u64,
        "kept {kept} bytes"
    );
}

/// Ctrl-C on an empty line does not leave (it cancels); it says how to leave. On a line with
/// text it only cancels the line.
#[test]
fn ctrl_c_on_an_empty_line_says_how_to_leave() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[]);
    let (mut alice, _) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    alice.keys("\x03");
    alice.wait_for("Para sair, digite QUIT ou tecle Ctrl-D.");
    alice.wait_prompt(&idle(), "");
    alice.keys("SEARCH x");
    alice.wait_prompt(&idle(), "SEARCH x");
    alice.keys("\x03");
    alice.wait_prompt(&idle(), "");
    alice.keys("\x03");
    alice.wait_until("the hint twice", |t| {
        t.count("Para sair, digite QUIT ou tecle Ctrl-D.") == 2
    });
    alice.wait_prompt(&idle(), "");
    alice.keys("\x04");
    alice.wait_for("Peer encerrado.");
    assert_eq!(alice.wait_exit(), WaitStatus::Exited(alice.proc.pid(), 0));
}

/// On a 50-column terminal the bar keeps the file's name and drops whole parts (sizes, rate)
/// to fit one row: no row is cut in the middle of a word, and the prompt stays whole.
#[test]
fn a_50_column_terminal_keeps_the_name_in_the_bar() {
    const MIB: usize = 1 << 20;
    let tracker = start_tracker(&[]);
    let uploader = StallingUploader::start(64 * MIB, 40 * MIB);
    let (tmp, share) = folder(&[]);
    let (mut bob, _) = Term::peer_sized(
        tracker.addr,
        &share,
        &tmp.path().join("hist"),
        &STALLED_LONGER,
        50,
    );
    bob.join();
    bob.keys(&format!(
        "DOWNLOAD aula-01.mp4 127.0.0.1:{}\r",
        uploader.port
    ));
    bob.wait_for("Download de aula-01.mp4 ");
    uploader.wait_sent();
    bob.wait_prompt(&idle(), "");
    let screen = bob.text();
    let bar = screen
        .lines()
        .find(|row| row.starts_with("Download de aula-01.mp4 "))
        .unwrap_or_else(|| panic!("a bar row:\n{screen}"));
    assert!(bar.chars().count() < 50, "{bar:?} fits one row");
    let figures = bar.trim_start_matches("Download de aula-01.mp4").trim();
    assert!(
        starts_with_bar_or_percent(figures),
        "{bar:?}: the figures start with a bar or a percentage"
    );
    let last = figures.split_whitespace().last().unwrap();
    assert!(
        last.ends_with('%') || last.ends_with('s') || last.ends_with('B') || last == "min",
        "{bar:?} ends with a whole word"
    );
    bob.keys("\x04");
    bob.wait_for("Sair mesmo? (SIM/NAO)");
    bob.keys("SIM\r");
    assert_eq!(bob.wait_exit(), WaitStatus::Exited(bob.proc.pid(), 20));
    uploader.thread.join().unwrap();
}

/// True if `figures` starts with `[###>--]` or a percentage.
fn starts_with_bar_or_percent(figures: &str) -> bool {
    let first = figures.split_whitespace().next().unwrap_or("");
    (first.starts_with('[') && first.ends_with(']')) || first.ends_with('%')
}

/// The downloader says at once whom it waits for, then that the other user is being asked;
/// after SIM it reports size, time, rate and that the copy was verified.
#[test]
fn a_download_says_what_it_waits_for_and_how_it_went() {
    let tracker = start_tracker(&[]);
    let (mut alice, _alice_dir) = joined_alice(&tracker, ("notes.txt", b"hello, bob\n"), &[]);
    let (tmp, share) = folder(&[]);
    let (mut bob, _) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    bob.join();
    bob.keys("SEARCH notes.txt\r");
    bob.wait_for(&format!(
        "Peers com arquivo solicitado: ['{}']",
        alice.addr()
    ));
    bob.keys("DOWNLOAD notes.txt\r");
    bob.wait_for(&format!("Aguardando resposta de {}...", alice.addr()));
    bob.wait_for(&format!(
        "Aguardando aprovação do usuário de {}...",
        alice.addr()
    ));
    bob.wait_prompt(&idle(), "");
    alice.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    alice.send("SIM");
    bob.wait_for("Arquivo notes.txt baixado com sucesso na pasta ");
    bob.wait_for("11 B em ");
    bob.wait_for("/s), verificado (BLAKE3)");
    bob.wait_prompt(&idle(), "");
    // One number style: a decimal comma, a space before each unit (`11 B em 0,04 s
    // (0,3 KiB/s)`), as in SEARCH results; never `0.04s` or `2.5 MiB`.
    let screen = bob.text();
    let summary = screen
        .lines()
        .find(|row| row.starts_with("11 B em "))
        .unwrap_or_else(|| panic!("a summary row:\n{screen}"));
    assert!(
        summary.contains(" s (") && summary.contains(',') && !summary.contains('.'),
        "{summary}"
    );
    assert_eq!(
        std::fs::read(share.join("notes.txt")).unwrap(),
        b"hello, bob\n"
    );
}

/// With stdin not a terminal the same questions come as plain lines, without escape codes.
#[test]
fn without_a_terminal_questions_are_plain_lines() {
    let tracker = start_tracker(&[]);
    let (mut alice, _dir) = joined_alice(&tracker, ("notes.txt", b"plain"), &[]);
    let mut bob = ask(alice.port, "notes.txt", 4004);
    let from = bob.stream.local_addr().unwrap();
    alice.wait_for(&format!(
        "Peer {from} (porta de upload declarada: 4004) solicitou o arquivo notes.txt (5 B)"
    ));
    alice.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    alice.send("SIM");
    assert_eq!(bob.json()["status"], "downloadAccepted");
    alice.wait_for(&format!("Download de notes.txt por {from} aprovado"));
    assert!(
        !alice.proc.transcript().contains('\x1b'),
        "{}",
        alice.proc.transcript()
    );
}

/// A command typed without its arguments asks for them with the original's prompts, and the
/// next lines answer them. Before JOIN the menu shows JOIN, and another command says to JOIN.
/// The original's keystrokes for a download (`DOWNLOAD`, the name, the port) keep their
/// meaning right after a SEARCH that found exactly one peer: the port is asked for (the found
/// peer offered for an empty answer) and the typed port downloads, where it used to start at
/// once and answer the port `Comando desconhecido`.
#[test]
fn commands_without_arguments_ask_with_the_originals_prompts() {
    let tracker = start_tracker(&[]);
    let (alice, _alice_dir) =
        joined_alice(&tracker, ("notes.txt", b"asked"), &["--approve", "yes"]);
    std::fs::write(alice.dir.join("extra.txt"), b"more").unwrap();

    let (tmp, share) = folder(&[]);
    let (mut bob, _) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    bob.keys("HELP\r");
    bob.wait_for(
        "Comandos: JOIN | LIST | SIM | NAO | HELP | QUIT (SEARCH e DOWNLOAD depois do JOIN)",
    );
    bob.wait_prompt(&idle(), "");
    bob.keys("SEARCH\r");
    bob.wait_for(&format!("{}SEARCH\nDigite 'JOIN' para iniciar.", idle()));
    bob.keys("JOIN\r");
    bob.wait_for(
        "Comandos: SEARCH [arquivo ou palavras] | DOWNLOAD [arquivo ou N [peer]] | LIST [peer] | SIM | NAO | HELP | QUIT",
    );

    bob.keys("search\r");
    bob.wait_for("Insira o arquivo que deseja buscar:");
    bob.wait_prompt(&idle(), "");
    bob.keys("notes.txt\r");
    let alice_addr = format!("127.0.0.1:{}", alice.port);
    bob.wait_for(&format!("Peers com arquivo solicitado: ['{alice_addr}']"));

    // The original's three keystrokes, after a SEARCH that found one peer.
    bob.keys("DOWNLOAD\r");
    bob.wait_for("Insira o nome do arquivo que deseja baixar:");
    bob.wait_prompt(&idle(), "");
    bob.keys("notes.txt\r");
    bob.wait_for(&format!(
        "notes.txt\nInsira a porta do peer a partir do qual deseja baixar o arquivo:\n\
         (Enter sem nada baixa de {alice_addr}, o peer encontrado na última busca)"
    ));
    bob.wait_prompt(&idle(), "");
    bob.keys(&format!("{}\r", alice.port));
    bob.wait_for(&format!("Aguardando resposta de {alice_addr}..."));
    bob.wait_for("Arquivo notes.txt baixado com sucesso na pasta ");
    assert_eq!(std::fs::read(share.join("notes.txt")).unwrap(), b"asked");
    assert_eq!(bob.count("Comando desconhecido"), 0, "{}", bob.text());

    // An empty answer takes the peer the search found.
    std::fs::remove_file(share.join("notes.txt")).unwrap();
    bob.keys("DOWNLOAD\r");
    bob.wait_until("the second name question", |t| {
        t.count("Insira o nome do arquivo que deseja baixar:") == 2
    });
    bob.wait_prompt(&idle(), "");
    bob.keys("notes.txt\r");
    bob.wait_until("the second hint", |t| {
        t.count("(Enter sem nada baixa de") == 2
    });
    bob.wait_prompt(&idle(), "");
    bob.keys("\r");
    bob.wait_until("the second download", |t| {
        t.count("Arquivo notes.txt baixado com sucesso") == 2
    });

    // `DOWNLOAD name` on one line, right after that search: the found peer, at once.
    std::fs::remove_file(share.join("notes.txt")).unwrap();
    bob.wait_prompt(&idle(), "");
    bob.keys("DOWNLOAD notes.txt\r");
    bob.wait_until("the third download", |t| {
        t.count("Arquivo notes.txt baixado com sucesso") == 3
    });
    assert_eq!(bob.count("Insira a porta"), 2, "{}", bob.text());

    // Not the name searched last: the original's question for the port, with no default.
    bob.wait_prompt(&idle(), "");
    bob.keys("DOWNLOAD extra.txt\r");
    bob.wait_until("the third port question", |t| {
        t.count("Insira a porta") == 3
    });
    bob.wait_prompt(&idle(), "");
    assert_eq!(bob.count("(Enter sem nada"), 2, "{}", bob.text());
    bob.keys(&format!("{}\r", alice.port));
    bob.wait_for("Arquivo extra.txt baixado com sucesso na pasta ");
    assert_eq!(std::fs::read(share.join("extra.txt")).unwrap(), b"more");
}

/// SIGINT at the interactive prompt (what Ctrl-C is) cancels the line, not the peer.
#[test]
fn sigint_at_the_prompt_cancels_the_line_and_the_peer_stays() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[]);
    let (mut alice, _) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    alice.keys("SEARCH half");
    alice.wait_prompt(&idle(), "SEARCH half");
    alice.proc.signal(Signal::SIGINT).unwrap();
    alice.wait_prompt(&idle(), "");
    alice.keys("HELP\r");
    alice.wait_for("Comandos: JOIN");
    alice.wait_prompt(&idle(), "");
    alice.keys("QUIT\r");
    alice.wait_for("Peer encerrado.");
    assert_eq!(alice.wait_exit(), WaitStatus::Exited(alice.proc.pid(), 0));
    // A SEARCH before JOIN would have printed this a second time (and exited 3).
    assert_eq!(
        alice.count("Digite 'JOIN' para iniciar."),
        1,
        "{}",
        alice.text()
    );
}

/// SIGTERM while the prompt is reading leaves cleanly and gives the terminal back its normal
/// (line by line) mode, though the prompt thread never returns from rustyline.
#[test]
fn sigterm_at_the_prompt_gives_the_terminal_back() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[]);
    let (mut alice, _) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    alice.join();
    assert!(!alice.canonical(), "raw mode while reading");
    alice.proc.signal(Signal::SIGTERM).unwrap();
    alice.wait_for("Peer encerrado.");
    assert_eq!(alice.wait_exit(), WaitStatus::Exited(alice.proc.pid(), 0));
    assert!(alice.canonical(), "line mode restored");
}

/// Without `--history`, history goes to `$XDG_DATA_HOME/napster/history` (the user's data),
/// and a `--history` file directly in the shared folder is refused, so JOIN never offers the
/// user's commands to other peers.
#[test]
fn history_goes_to_the_users_data_folder_never_the_shared_one() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[]);
    let data = tmp.path().join("xdg-data");
    let server = tracker.addr.to_string();
    let mut alice = Term::spawn_with_env(
        &peer_args(&server, &share),
        &[("XDG_DATA_HOME", &data), ("HOME", tmp.path())],
    );
    alice.wait_prompt(&idle(), "");
    alice.keys("HELP\r");
    alice.wait_for("Comandos: JOIN");
    alice.keys("QUIT\r");
    alice.wait_exit();
    let kept = std::fs::read_to_string(data.join("napster").join("history")).unwrap();
    assert!(kept.contains("HELP"), "{kept}");

    let in_share = share.join("history");
    let (mut bob, _) = Term::peer(tracker.addr, &share, &in_share, &[]);
    bob.wait_for("Histórico não guardado em ");
    bob.keys("HELP\r");
    bob.wait_for("Comandos: JOIN");
    bob.keys("QUIT\r");
    bob.wait_exit();
    assert!(!in_share.exists(), "no history file in the shared folder");
}

/// SEARCH by a word shows the original's line for the exact name, then the matching files
/// numbered with size and holders; Tab completes a name found; `DOWNLOAD 1` downloads result
/// 1 and completes.
#[test]
fn keyword_search_numbers_results_and_download_1_completes() {
    let tracker = start_tracker(&[]);
    let video: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (_alice, _alice_dir) =
        joined_alice(&tracker, ("aula-01.mp4", &video), &["--approve", "yes"]);

    let (tmp, share) = folder(&[]);
    let (mut bob, _) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    bob.join();
    bob.keys("SEARCH AULA\r");
    bob.wait_for("1) aula-01.mp4  3,0 MiB  1 peer");
    bob.wait_prompt(&idle(), "");
    let screen = bob.text();
    let original = screen
        .find("Peers com arquivo solicitado: []")
        .unwrap_or_else(|| panic!("the original's line:\n{screen}"));
    assert!(
        original < screen.find("1) aula-01.mp4").unwrap(),
        "{screen}"
    );

    bob.keys("DOWNLOAD aula-\t");
    bob.wait_prompt(&idle(), "DOWNLOAD aula-01.mp4 ");
    bob.keys("\x15");
    bob.wait_prompt(&idle(), "");
    bob.keys("DOWNLOAD 1\r");
    bob.wait_for("Arquivo aula-01.mp4 baixado com sucesso na pasta ");
    assert_eq!(std::fs::read(share.join("aula-01.mp4")).unwrap(), video);
}

/// A warning logged while the prompt is up (here: an uploader that sent no digest) is printed
/// above the prompt like any other console line, never onto the prompt's row; what the user
/// types afterwards stands alone on that row.
#[test]
fn a_log_line_is_printed_above_the_prompt_not_onto_its_row() {
    let tracker = start_tracker(&[]);
    let uploader = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = uploader.local_addr().unwrap().port();
    let serving = thread::spawn(move || {
        let (mut conn, _) = uploader.accept().unwrap();
        let mut byte = [0u8; 1];
        while conn.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {}
        conn.write_all(
            b"{\"status\":\"OK\",\"fileSize\":5}\n{\"status\":\"downloadAccepted\"}\nhello",
        )
        .unwrap();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
    });
    let (tmp, share) = folder(&[]);
    let (mut bob, _) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    bob.join();
    bob.keys(&format!("DOWNLOAD x.bin 127.0.0.1:{up_port}\r"));
    bob.wait_for("Arquivo x.bin baixado com sucesso");
    bob.wait_for("sent no digest for x.bin");
    bob.keys("SEARCH abc");
    bob.wait_prompt(&idle(), "SEARCH abc");
    let screen = bob.text();
    let warning = screen
        .lines()
        .find(|row| row.contains("sent no digest for x.bin"))
        .unwrap();
    assert!(
        warning.starts_with("[WARN napster::peer::downloader] 127.0.0.1:"),
        "the warning is a line of its own:\n{screen}"
    );
    assert!(
        !screen.contains("> ["),
        "nothing printed after a prompt:\n{screen}"
    );
    bob.keys("\x03");
    bob.wait_prompt(&idle(), "");
    bob.keys("\x04");
    bob.wait_exit();
    serving.join().unwrap();
}

/// SIM prints the verdict before the upload thread is told, so `Download ... aprovado` always
/// stands above `Upload ... concluído`, however fast a small upload ends (it used to come the
/// other way round now and then).
#[test]
fn the_verdict_is_printed_before_the_upload_ends() {
    let tracker = start_tracker(&[]);
    let (tmp, share) = folder(&[("notes.txt", b"hi")]);
    let (mut alice, port) = Term::peer(tracker.addr, &share, &tmp.path().join("hist"), &[]);
    alice.join();
    for round in 0..5u16 {
        let claimed = 4900 + round;
        let mut bob = ask(port, "notes.txt", claimed);
        // The lines name the connection's address; the claimed port is marked as claimed.
        let from = bob.stream.local_addr().unwrap();
        alice.wait_for(&format!(
            "Peer {from} (porta de upload declarada: {claimed}) solicitou o arquivo notes.txt"
        ));
        alice.wait_prompt(&prompt(1), "");
        alice.keys("SIM\r");
        assert_eq!(bob.json()["status"], "downloadAccepted");
        assert_eq!(bob.bytes(2), b"hi");
        let done = format!("Upload do arquivo notes.txt para {from} concluído");
        alice.wait_for(&done);
        let screen = alice.text();
        let verdict = screen
            .find(&format!("Download de notes.txt por {from} aprovado"))
            .unwrap_or_else(|| panic!("round {round}: no verdict:\n{screen}"));
        assert!(
            verdict < screen.find(&done).unwrap(),
            "round {round}: the verdict stands above the end:\n{screen}"
        );
        alice.wait_prompt(&idle(), "");
    }
}

/// `--plain` on a terminal: the peer reads lines as the terminal's own line mode gives them
/// (it never switches the terminal to raw mode and draws no prompt), and a download's
/// progress comes as plain percentage lines (`Download de big.bin: 50% (...)`), not as a bar
/// redrawn in place.
#[test]
fn plain_on_a_terminal_reads_lines_and_prints_progress_as_lines() {
    let tracker = start_tracker(&[]);
    let big = vec![5u8; 16 << 20];
    let (alice, _alice_dir) = joined_alice(&tracker, ("big.bin", &big), &["--approve", "yes"]);
    let (_tmp, share) = folder(&[]);
    let server = tracker.addr.to_string();
    let mut args = peer_args(&server, &share);
    args.push("--plain");
    let mut bob = Term::spawn_with_env(&args, &[]);
    bob.wait_for("Digite 'JOIN' para iniciar.");
    assert!(bob.canonical(), "line mode kept:\n{}", bob.text());
    bob.keys("JOIN\r");
    bob.wait_for("Sou o Peer 127.0.0.1:");
    bob.keys(&format!("DOWNLOAD big.bin 127.0.0.1:{}\r", alice.port));
    bob.wait_for("Arquivo big.bin baixado com sucesso");
    let screen = bob.text();
    assert!(
        screen
            .lines()
            .any(|row| row.starts_with("Download de big.bin: ") && row.contains("% (")),
        "a plain progress line:\n{screen}"
    );
    assert!(
        !screen.contains("Download de big.bin ["),
        "no bar:\n{screen}"
    );
    assert!(
        !screen.contains(idle().trim_end()),
        "no prompt drawn:\n{screen}"
    );
    assert!(bob.canonical(), "line mode kept:\n{screen}");
    bob.keys("QUIT\r");
    bob.wait_for("Peer encerrado.");
    assert_eq!(bob.wait_exit(), WaitStatus::Exited(bob.proc.pid(), 0));
    assert_eq!(std::fs::read(share.join("big.bin")).unwrap(), big);
}
