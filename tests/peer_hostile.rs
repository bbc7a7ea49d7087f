//! A peer against hostile hosts and a hostile terminal (issue 10): raw sockets against the real
//! `napster peer` binary. Each test names the behaviour it proves; each failed before its fix.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::stand_in::*;
use common::*;

/// A DOWNLOAD_REQUEST line for `name` claiming the upload port `from_port`.
fn request_line(name: &str, port: u16, from_port: u16) -> Vec<u8> {
    let msg = serde_json::json!({
        "method": "DOWNLOAD_REQUEST",
        "data": {"filename": name, "port": port, "fromPort": from_port}
    });
    format!("{msg}\n").into_bytes()
}

/// Reads one JSON line from a raw stream (through `reader`), with the stream's timeout.
fn json_line(reader: &mut BufReader<TcpStream>) -> serde_json::Value {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a reply line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// Item 2: a console nobody reads (stdout a pipe left full, as a stuck terminal or SSH session
/// looks) never stops the peer from answering and serving requests: lines beyond the console's
/// byte budget are dropped, and once the console is read again it says how many.
#[test]
fn an_unread_console_never_blocks_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let [da] = folders(tmp.path(), ["a"]);
    // Long names make long console lines: the pipe fills after a few dozen requests.
    let name = format!("{}.txt", "n".repeat(240));
    fs::write(da.join(&name), "x").unwrap();
    let t = start_tracker(&[]);
    let child = Command::new(napster_bin())
        .args([
            "peer",
            "--server",
            &t.addr.to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--dir", da.to_str().unwrap(), "--approve", "yes"])
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut peer = KillOnDrop(child);
    let mut stdout = BufReader::new(peer.0.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let port: u16 = first
        .split("porta ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("upload port in {first:?}"));
    // From here on nobody reads the peer's stdout. Each request prints about 700 bytes: far
    // more than the pipe (64 KiB) and the console's budget (256 KiB) hold.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for i in 0..1000 {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (&stream)
            .write_all(&request_line(&name, port, 4000))
            .unwrap();
        let mut reader = BufReader::new(stream);
        assert_eq!(json_line(&mut reader)["status"], "OK", "request {i}");
        let decision = json_line(&mut reader);
        assert_eq!(decision["status"], "downloadAccepted", "request {i}");
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x", "request {i}");
    }
    // Read the console again: what fit is there, then how many lines were dropped.
    let (lines_tx, lines) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the console said how many lines it dropped");
        if line.contains("linhas descartadas: o console não acompanhou a saída") {
            break;
        }
    }
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Item 11: text from other peers (a refusal's `reason`, an ERROR's `message`) reaches the
/// console with its line and paragraph separators, bidirectional overrides and zero-width
/// characters replaced: U+2028 cannot forge a line `Arquivo x baixado com sucesso`.
#[test]
fn remote_text_never_reaches_the_console_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let [db] = folders(tmp.path(), ["b"]);
    let t = start_tracker(&[]);
    let mut b = start_peer("b", t.addr, &db, &[]);
    b.join();
    let forged = "ocupado\u{2028}Arquivo x.txt baixado com sucesso na pasta b\u{202E}fdp.exe";
    let (rejecting, rejected) = stand_in_uploader(move |mut stream, _| {
        send_json(
            &mut stream,
            serde_json::json!({"status":"OK","fileSize":1,"digest":"00","offset":0}),
        );
        send_json(
            &mut stream,
            serde_json::json!({"status":"downloadRejected","reason":forged}),
        );
    });
    b.send(&format!("DOWNLOAD x.txt {rejecting}"));
    let line = b.wait_for("Download Rejeitado: ocupado");
    rejected.join().unwrap();
    let (erring, erred) = stand_in_uploader(move |mut stream, _| {
        send_json(
            &mut stream,
            serde_json::json!({"status":"ERROR","message":"não\u{2029}\u{200B}\u{2066}agora"}),
        );
    });
    b.send(&format!("DOWNLOAD y.txt {erring}"));
    let error = b.wait_for("o peer recusou o pedido: não");
    erred.join().unwrap();
    assert_eq!(
        line,
        "Download Rejeitado: ocupado?Arquivo x.txt baixado com sucesso na pasta b?fdp.exe"
    );
    assert!(error.ends_with("não???agora"), "{error}");
    let transcript = b.proc.transcript();
    for raw in ['\u{2028}', '\u{2029}', '\u{202E}', '\u{200B}', '\u{2066}'] {
        assert!(!transcript.contains(raw), "{raw:?} reached the console");
    }
}
