//! The tracker's scale limits, against a live tracker: the connection limit refuses clearly
//! and never hurts the peers already connected. (Throughput and memory are measured by
//! `scripts/bench.sh tracker`, not here.)

mod common;

use std::io::{BufRead, BufReader, Write};

use common::*;

/// JOINs on a new connection; `None` if the tracker refused it (an ERROR, or a reset from a
/// tracker that closed the refused connection before reading the JOIN).
fn try_join(t: &TrackerProc, port: u16, files: &[&str]) -> Option<RawClient> {
    let mut c = RawClient::connect(t.addr);
    c.stream.write_all(&join_msg(port, files)).ok()?;
    let mut line = String::new();
    let mut reader = BufReader::new(c.stream.try_clone().ok()?);
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    let reply: serde_json::Value = serde_json::from_str(line.trim_end()).ok()?;
    match reply["status"].as_str() {
        Some("JOIN_OK") => Some(c),
        Some("ERROR") => None,
        other => panic!("unexpected reply status {other:?}"),
    }
}

/// With `--max-connections 2`, a third connection gets an ERROR saying the tracker is full and
/// is closed; the two peers already connected keep JOINing, SEARCHing and UPDATEing; and once
/// one of them leaves, a new connection is served again.
#[test]
fn connection_over_the_limit_is_refused_clearly_and_others_keep_working() {
    let t = start_tracker(&["--max-connections", "2"]);
    let mut a = RawClient::connect(t.addr);
    assert_eq!(a.ask(&join_msg(5001, &["a.txt"]))["status"], "JOIN_OK");
    let mut b = RawClient::connect(t.addr);
    assert_eq!(b.ask(&join_msg(5002, &["b.txt"]))["status"], "JOIN_OK");

    let mut refused = RawClient::connect(t.addr);
    let reply = refused.json();
    assert_eq!(reply["status"], "ERROR");
    let message = reply["message"].as_str().expect("the error has a message");
    assert!(
        message.contains("full") && message.contains('2'),
        "the message names the limit: {message:?}"
    );
    assert!(
        refused.closed_within(WAIT),
        "the refused connection is closed"
    );

    // The connected peers are untouched.
    assert_eq!(
        peers_of(&a.ask(&search_msg("b.txt"))),
        vec!["127.0.0.1:5002"]
    );
    assert_eq!(b.ask(&update_msg(&["c.txt"]))["status"], "UPDATE_OK");
    assert_eq!(
        peers_of(&a.ask(&search_msg("c.txt"))),
        vec!["127.0.0.1:5002"]
    );

    // A slot frees when a peer leaves. The slot is released just after the leave line is
    // printed, so a connection made in between may still be refused: retry a bounded number
    // of times (each attempt is answered at once; nothing sleeps).
    drop(b);
    t.proc.wait_for("Peer 127.0.0.1:5002 saiu");
    let served = (0..1000).find_map(|_| try_join(&t, 5003, &["d.txt"]));
    let mut c = served.expect("a new connection is served once a slot is free");
    assert_eq!(
        peers_of(&c.ask(&search_msg("d.txt"))),
        vec!["127.0.0.1:5003"]
    );
    assert_eq!(
        peers_of(&a.ask(&search_msg("a.txt"))),
        vec!["127.0.0.1:5001"]
    );
    assert!(!t.proc.printed("panicked"), "{}", t.proc.transcript());
}

/// A tracker started through `sh` with its open-file limit set to `nofile`; killed on drop.
struct LimitedTracker {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl LimitedTracker {
    fn start(nofile: u32) -> LimitedTracker {
        use std::process::{Command, Stdio};
        let script = format!("ulimit -n {nofile} && exec \"$0\" server --listen 127.0.0.1:0");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(napster_bin())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("sh starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the tracker prints its address");
        let addr = line
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("tracker address in {line:?}"));
        LimitedTracker { child, addr }
    }

    /// Everything the tracker wrote on stderr, after stopping it.
    fn stop_and_stderr(mut self) -> String {
        use std::io::Read;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for LimitedTracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With only 80 open files allowed, the tracker lowers its connection limit to fit (80 minus
/// 64 spare = 16) and says so on stderr; the 17th connection is told the tracker is full
/// instead of stalling on "too many open files", and the 16 connected peers keep working.
#[test]
fn connection_limit_is_lowered_to_fit_the_open_file_limit() {
    let t = LimitedTracker::start(80);
    let mut peers: Vec<RawClient> = (0..16)
        .map(|i| {
            let mut c = RawClient::connect(t.addr);
            assert_eq!(c.ask(&join_msg(6000 + i, &["f"]))["status"], "JOIN_OK");
            c
        })
        .collect();
    let mut refused = RawClient::connect(t.addr);
    let reply = refused.json();
    assert_eq!(reply["status"], "ERROR", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("full (16 connections)")),
        "{reply}"
    );
    assert_eq!(peers_of(&peers[0].ask(&search_msg("f"))).len(), 16);
    assert_eq!(peers[15].ask(&update_msg(&["g"]))["status"], "UPDATE_OK");
    drop(peers);
    let stderr = t.stop_and_stderr();
    assert!(
        stderr.contains("--max-connections 16384 lowered to 16: the open-file limit is 80"),
        "stderr: {stderr}"
    );
}

/// When the thread for a new connection cannot start (here: a stack larger than the address
/// space), the client is told why with an ERROR instead of being dropped silently, and the
/// tracker keeps accepting.
#[test]
fn a_connection_whose_thread_cannot_start_is_told_why() {
    let t = start_tracker(&["--thread-stack-kib", "1099511627776"]);
    for _ in 0..2 {
        let mut c = RawClient::connect(t.addr);
        let reply = c.json();
        assert_eq!(reply["status"], "ERROR", "{reply}");
        assert!(
            reply["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot serve another connection now")),
            "{reply}"
        );
        assert!(c.closed_within(WAIT), "the connection is closed");
    }
}

/// With `--max-listed-names 5`, a JOIN or UPDATE that would take the names listed by all peers
/// over 5 is refused with an ERROR saying the index is full; the refused peer's connection
/// stays usable, the old list stays in force, and room freed by a leaving peer can be used.
#[test]
fn the_index_limit_refuses_clearly_and_frees_room_when_peers_leave() {
    let t = start_tracker(&["--max-listed-names", "5"]);
    let mut a = RawClient::connect(t.addr);
    assert_eq!(
        a.ask(&join_msg(7001, &["a1", "a2", "a3"]))["status"],
        "JOIN_OK"
    );
    let mut b = RawClient::connect(t.addr);
    let reply = b.ask(&join_msg(7002, &["b1", "b2", "b3"]));
    assert_eq!(reply["status"], "ERROR", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("index is full (5 names")),
        "{reply}"
    );
    assert!(peers_of(&b.ask(&search_msg("b1"))).is_empty());
    assert_eq!(peers_of(&b.ask(&search_msg("a1"))), vec!["127.0.0.1:7001"]);
    assert_eq!(b.ask(&join_msg(7002, &["b1", "b2"]))["status"], "JOIN_OK");

    let reply = a.ask(&update_msg(&["a1", "a2", "a3", "a4"]));
    assert_eq!(reply["status"], "ERROR", "{reply}");
    assert_eq!(peers_of(&b.ask(&search_msg("a3"))), vec!["127.0.0.1:7001"]);
    assert!(peers_of(&b.ask(&search_msg("a4"))).is_empty());

    drop(a);
    t.proc.wait_for("Peer 127.0.0.1:7001 saiu");
    assert_eq!(
        b.ask(&update_msg(&["b1", "b2", "b3", "b4", "b5"]))["status"],
        "UPDATE_OK"
    );
    assert_eq!(peers_of(&b.ask(&search_msg("b5"))), vec!["127.0.0.1:7002"]);
}
