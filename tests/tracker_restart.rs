//! Tracker restarts, with real processes: running peers notice, tell their user, reconnect
//! with backoff, JOIN again with the files they share *now*, and keep answering what the user
//! types in the meantime. The tracker saves nothing: the peers are the source of truth.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

/// A loopback address with a port that was free a moment ago, for a tracker that must come
/// back on the same address.
fn free_loopback_addr() -> String {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}

/// Kill the tracker under two joined peers: both print the loss, a SEARCH typed during the
/// outage gets a clear error line, a download between the peers still works without the
/// tracker, and once a new tracker listens on the same address both peers print the
/// reconnect line and are found again, each with its current files (including the file
/// downloaded while the tracker was away).
#[test]
fn peers_rejoin_a_restarted_tracker_with_their_current_files() {
    let listen = free_loopback_addr();
    let mut tracker = start_tracker_on(&listen, &[]);
    let addr = tracker.addr;
    let dir = tempfile::tempdir().unwrap();
    let (alice_dir, bob_dir) = (dir.path().join("alice"), dir.path().join("bob"));
    std::fs::create_dir_all(&alice_dir).unwrap();
    std::fs::create_dir_all(&bob_dir).unwrap();
    std::fs::write(alice_dir.join("a.txt"), b"alice's text\n").unwrap();
    std::fs::write(bob_dir.join("b.txt"), b"bob's text\n").unwrap();
    let mut alice = start_peer("alice", addr, &alice_dir, &["--approve", "yes"]);
    let mut bob = start_peer("bob", addr, &bob_dir, &[]);
    alice.join();
    bob.join();
    bob.send("SEARCH a.txt");
    bob.wait_for(&format!(
        "Peers com arquivo solicitado: ['{}']",
        alice.addr()
    ));

    tracker.proc.kill();
    alice.wait_for("Conexão com o servidor perdida");
    bob.wait_for("Conexão com o servidor perdida");

    // What the user types while the tracker is away is answered, not swallowed.
    bob.send("SEARCH a.txt");
    bob.wait_for("Erro ao buscar arquivo: sem conexão com o servidor");
    // Peers talk to each other directly: a download needs no tracker.
    bob.send(&format!("DOWNLOAD a.txt {}", alice.addr()));
    bob.wait_for("Arquivo a.txt baixado com sucesso");
    // A file that appears while the tracker is away is part of the next JOIN.
    std::fs::write(alice_dir.join("new.txt"), b"added during the outage\n").unwrap();

    let tracker = start_tracker_on(&listen, &[]);
    assert_eq!(
        tracker.addr, addr,
        "the new tracker listens where the old one did"
    );
    alice.wait_for("Reconectado ao servidor");
    bob.wait_for("Reconectado ao servidor");
    // The two rejoin in either order.
    for line in [
        format!(
            "Peer {} adicionado com os arquivos ['a.txt', 'new.txt']",
            alice.addr()
        ),
        format!(
            "Peer {} adicionado com os arquivos ['a.txt', 'b.txt']",
            bob.addr()
        ),
    ] {
        if !tracker.proc.printed(&line) {
            tracker.proc.wait_for(&line);
        }
    }

    bob.send("SEARCH a.txt");
    let line = bob.wait_for("Peers com arquivo solicitado:");
    assert!(
        line.contains(&alice.addr()) && line.contains(&bob.addr()),
        "both copies of a.txt are found again: {line}"
    );
    bob.send("SEARCH new.txt");
    bob.wait_for(&format!(
        "Peers com arquivo solicitado: ['{}']",
        alice.addr()
    ));
    alice.send("SEARCH b.txt");
    alice.wait_for(&format!("Peers com arquivo solicitado: ['{}']", bob.addr()));
}

/// While the tracker is away the peer keeps dialling with growing pauses, each attempt a
/// JOIN with its current files: a stand-in listener on the tracker's address accepts four
/// attempts and closes each without answering. When the real tracker returns the peer
/// rejoins by itself and says so.
#[test]
fn a_peer_retries_with_growing_pauses_until_the_tracker_returns() {
    let listen = free_loopback_addr();
    let mut tracker = start_tracker_on(&listen, &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kept.txt"), b"x").unwrap();
    let mut peer = start_peer("peer", tracker.addr, dir.path(), &[]);
    peer.join();
    tracker.proc.kill();
    // Listen at once, so that the first retry already reaches the stand-in.
    let stand_in = TcpListener::bind(&listen).unwrap();
    peer.wait_for("Conexão com o servidor perdida");
    let mut attempts = Vec::new();
    for _ in 0..5 {
        let (stream, _) = stand_in.accept().unwrap();
        attempts.push(Instant::now());
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        assert!(
            line.contains("\"JOIN\"") && line.contains("kept.txt"),
            "each attempt JOINs with the current files: {line:?}"
        );
    }
    drop(stand_in);
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    println!("pauses between attempts: {gaps:?}");
    assert!(
        gaps[3] > gaps[0] * 2,
        "the pause between attempts grows: {gaps:?}"
    );

    let tracker = start_tracker_on(&listen, &[]);
    peer.wait_for("Reconectado ao servidor");
    tracker.proc.wait_for(&format!(
        "Peer {} adicionado com os arquivos ['kept.txt']",
        peer.addr()
    ));
    peer.send("SEARCH kept.txt");
    peer.wait_for(&format!(
        "Peers com arquivo solicitado: ['{}']",
        peer.addr()
    ));
    let transcript = peer.proc.transcript();
    assert_eq!(
        transcript.matches("Conexão com o servidor perdida").count(),
        1,
        "one outage is told once, however many retries fail:\n{transcript}"
    );
}
