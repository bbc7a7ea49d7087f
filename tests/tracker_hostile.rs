//! Hostile input against a live tracker. Each test does something a broken or malicious client
//! might do, checks the tracker's answer, and then checks that a well-behaved peer on another
//! connection still JOINs and SEARCHes normally: bad input never wins.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A well-behaved peer on a fresh connection JOINs with `port` and finds itself by SEARCH.
fn assert_well_behaved_peer_is_served(tracker: SocketAddr, port: u16) {
    let name = format!("still-served-{port}");
    let mut c = RawClient::connect(tracker);
    assert_eq!(c.ask(&join_msg(port, &[&name]))["status"], "JOIN_OK");
    assert_eq!(
        peers_of(&c.ask(&search_msg(&name))),
        vec![format!("127.0.0.1:{port}")]
    );
}

/// Asserts `reply` is an ERROR whose message contains `expected`.
fn assert_error(reply: &serde_json::Value, expected: &str, what: &str) {
    assert_eq!(reply["status"], "ERROR", "{what} → {reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.contains(expected), "{what} → {message:?}");
}

/// The peak resident memory of a process, in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("VmHWM in {status}"))
}

/// Lines that are not JSON, JSON values that are not objects, wrong types, unknown methods,
/// missing fields and UPDATE before JOIN each get an ERROR with a sentence on the same
/// connection, which stays usable; another peer is served throughout.
#[test]
fn every_malformed_request_is_answered_with_an_error_and_others_are_served() {
    let t = start_tracker(&[]);
    let mut c = RawClient::connect(t.addr);
    let cases: &[(&[u8], &str)] = &[
        // Not JSON.
        (b"hello tracker\n", "not a JSON object"),
        (b"{hello}\n", "not valid JSON"),
        (b"{\"method\":\"JOIN\",}\n", "not valid JSON"),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":1,\"files\":[\"a\"]]}\n",
            "not valid JSON",
        ),
        (b"{]\n", "not valid JSON"),
        // JSON that is not an object.
        (b"[{\"method\":\"JOIN\"}]\n", "not a JSON object"),
        (b"\"JOIN\"\n", "not a JSON object"),
        (b"42\n", "not a JSON object"),
        (b"null\n", "not a JSON object"),
        (b"true\n", "not a JSON object"),
        // Wrong types.
        (b"{\"method\":5,\"data\":{}}\n", "wrong type"),
        (b"{\"method\":null,\"data\":{}}\n", "wrong type"),
        (b"{\"method\":\"SEARCH\",\"data\":\"x\"}\n", "wrong type"),
        (
            b"{\"method\":\"SEARCH\",\"data\":{\"query\":5}}\n",
            "wrong type",
        ),
        (
            b"{\"method\":\"SEARCH\",\"data\":{\"query\":{\"a\":1}}}\n",
            "wrong type",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":-1,\"files\":[]}}\n",
            "wrong type",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":1.5,\"files\":[]}}\n",
            "wrong type",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":1,\"files\":\"a.txt\"}}\n",
            "wrong type",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":1,\"files\":[1,2]}}\n",
            "wrong type",
        ),
        // Unknown methods.
        (b"{\"method\":\"DELETE\",\"data\":{}}\n", "unknown method"),
        (b"{\"method\":\"\",\"data\":{}}\n", "unknown method"),
        (
            b"{\"method\":\"DOWNLOAD_REQUEST\",\"data\":{\"filename\":\"x\",\"port\":1}}\n",
            "upload port, not to the tracker",
        ),
        // Missing fields.
        (b"{}\n", "lacks a required field"),
        (b"{\"data\":{}}\n", "lacks a required field"),
        (b"{\"method\":\"JOIN\"}\n", "needs a \"data\" object"),
        (
            b"{\"method\":\"JOIN\",\"data\":null}\n",
            "needs a \"data\" object",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":1}}\n",
            "data.files",
        ),
        (b"{\"method\":\"UPDATE\",\"data\":{}}\n", "data.files"),
        // UPDATE before JOIN.
        (
            b"{\"method\":\"UPDATE\",\"data\":{\"files\":[\"x\"]}}\n",
            "JOIN before UPDATE",
        ),
        // Nesting far deeper than any message needs.
        (
            &[
                b"{\"deep\":".as_slice(),
                &[b'['; 5000],
                &[b']'; 5000],
                b"}\n",
            ]
            .concat(),
            "missing field `method`",
        ),
        (
            &[
                b"{\"method\":\"JOIN\",\"data\":{\"port\":1,\"files\":".as_slice(),
                &[b'['; 5000],
                &[b']'; 5000],
                b"}}\n",
            ]
            .concat(),
            "wrong type",
        ),
    ];
    for (i, (bytes, expected)) in cases.iter().enumerate() {
        let what = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
        assert_error(&c.ask(bytes), expected, &what);
        assert_well_behaved_peer_is_served(t.addr, 6000 + i as u16);
    }
    // The same connection is still in sync and can JOIN after all of that.
    assert_eq!(c.ask(&join_msg(5001, &["mine"]))["status"], "JOIN_OK");
    assert_eq!(
        peers_of(&c.ask(&search_msg("mine"))),
        vec!["127.0.0.1:5001"]
    );
}

/// Invalid UTF-8 and NUL bytes, inside strings or as whole lines, get an ERROR and leave the
/// connection usable; nothing is registered from them.
#[test]
fn invalid_utf8_and_nul_bytes_are_refused() {
    let t = start_tracker(&[]);
    let mut c = RawClient::connect(t.addr);
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"method\":\"SEARCH\",\"data\":{\"query\":\"\xff\xfe\"}}\n",
            "not valid JSON",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":5100,\"files\":[\"caf\xc3\"]}}\n",
            "not valid JSON",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":5100,\"files\":[\"a\x00b\"]}}\n",
            "not valid JSON",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":5100,\"files\":[\"a\\u0000b\"]}}\n",
            "control",
        ),
        (
            b"{\"method\":\"SEARCH\",\"data\":{\"query\":\"\\udc00\"}}\n",
            "not valid JSON",
        ),
        (b"\x00\x00\x00\x00\n", "not a JSON object"),
        (b"\xff\xfe\xfd\n", "not a JSON object"),
        (
            b"\x00{\"method\":\"JOIN\",\"data\":{\"port\":5100,\"files\":[\"x\"]}}\n",
            "not a JSON object",
        ),
    ];
    for (bytes, expected) in cases {
        let what = String::from_utf8_lossy(bytes).into_owned();
        assert_error(&c.ask(bytes), expected, &what);
    }
    assert!(peers_of(&c.ask(&search_msg("x"))).is_empty());
    assert_well_behaved_peer_is_served(t.addr, 5101);
    assert_eq!(c.ask(&join_msg(5102, &["fine"]))["status"], "JOIN_OK");
}

/// A 100 MiB line (an object that never closes, and a line of junk) is refused with an ERROR
/// once it passes the size limit, the connection is closed, and the tracker never holds more
/// than about the limit in memory.
#[test]
fn a_100_mib_line_is_refused_without_buffering_it() {
    let t = start_tracker(&[]);
    let before = peak_rss_kib(t.proc.pid());
    let hundred_mib = 100usize << 20;
    for prefix in [
        br#"{"method":"SEARCH","data":{"query":""#.as_slice(),
        b"junk that never ends ".as_slice(),
    ] {
        let mut c = RawClient::connect(t.addr);
        let mut writer = c.stream.try_clone().unwrap();
        let prefix_len = prefix.len();
        let prefix = prefix.to_vec();
        let sender = thread::spawn(move || {
            send_ignoring_reset(&mut writer, &prefix);
            let block = vec![b'x'; 1 << 20];
            let mut sent = 0;
            while sent < hundred_mib {
                if writer.write_all(&block).is_err() {
                    break;
                }
                sent += block.len();
            }
            if sent >= hundred_mib {
                send_ignoring_reset(&mut writer, b"\"}}\n");
            }
        });
        assert_error(&c.json(), "larger than the limit", "100 MiB line");
        assert!(c.closed_within(WAIT), "the oversized connection is closed");
        sender.join().unwrap();
        assert_well_behaved_peer_is_served(t.addr, 5200 + prefix_len as u16);
    }
    let after = peak_rss_kib(t.proc.pid());
    assert!(
        after < before + 32 * 1024,
        "tracker peak RSS grew from {before} KiB to {after} KiB"
    );
}

/// Half a message and then a disconnect registers nothing and leaves nothing behind; a peer
/// that had joined and then disconnects half way through a message is forgotten at once.
#[test]
fn half_a_message_then_disconnect_is_forgotten() {
    let t = start_tracker(&[]);
    let mut half = TcpStream::connect(t.addr).unwrap();
    half.write_all(br#"{"method":"JOIN","data":{"port":5300,"files":["ha"#)
        .unwrap();
    drop(half);

    let mut joined = RawClient::connect(t.addr);
    assert_eq!(joined.ask(&join_msg(5301, &["half"]))["status"], "JOIN_OK");
    joined.send(br#"{"method":"UPDATE","data":{"files":["#);
    joined.stream.shutdown(Shutdown::Both).unwrap();
    t.proc.wait_for("Peer 127.0.0.1:5301 saiu");

    let mut c = RawClient::connect(t.addr);
    assert!(peers_of(&c.ask(&search_msg("half"))).is_empty());
    assert!(peers_of(&c.ask(&search_msg("ha"))).is_empty());
    assert_well_behaved_peer_is_served(t.addr, 5302);
}

/// A client sending one byte per second is closed once the message timeout passes, long
/// before its message would be complete, while other peers are served during the drip.
#[test]
fn one_byte_per_second_is_closed_after_the_message_timeout() {
    let t = start_tracker(&["--message-timeout", "2"]);
    let mut slow = RawClient::connect(t.addr);
    slow.stream.set_nodelay(true).unwrap();
    let mut writer = slow.stream.try_clone().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent2 = Arc::clone(&sent);
    let message = join_msg(5400, &["drip"]);
    let total = message.len();
    let started = Instant::now();
    let dripper = thread::spawn(move || {
        for byte in message {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            sent2.fetch_add(1, Ordering::SeqCst);
            // The pacing is the behaviour under test, not a synchronisation.
            thread::sleep(Duration::from_secs(1));
        }
    });
    assert_well_behaved_peer_is_served(t.addr, 5401);
    assert_error(&slow.json(), "not completed in time", "one byte per second");
    assert!(slow.closed_within(WAIT));
    let elapsed = started.elapsed();
    let got = sent.load(Ordering::SeqCst);
    assert!(
        got < total / 2,
        "closed only after {got} of {total} bytes ({elapsed:?})"
    );
    dripper.join().unwrap();
    let mut c = RawClient::connect(t.addr);
    assert!(peers_of(&c.ask(&search_msg("drip"))).is_empty());
    assert_well_behaved_peer_is_served(t.addr, 5402);
}

/// Two thousand connections that send nothing do not stop a well-behaved peer from being
/// served while they are open, and the join timeout closes every one of them.
#[test]
fn thousands_of_silent_connections_are_closed_by_the_join_timeout() {
    let t = start_tracker(&[
        "--join-timeout",
        "3",
        "--max-connections-per-host",
        "100000",
    ]);
    let silent: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(t.addr).unwrap())
        .collect();
    assert_well_behaved_peer_is_served(t.addr, 5500);
    let deadline = Instant::now() + WAIT;
    for mut stream in silent {
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => assert!(
                String::from_utf8_lossy(&rest).contains("no JOIN within 3 s"),
                "a silent connection was closed without saying why: {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a silent connection was not closed within {WAIT:?}: {e}"),
        }
    }
    assert_well_behaved_peer_is_served(t.addr, 5501);
}

/// Over the connection limit, a new connection is answered "full" and closed; once the join
/// timeout has closed the silent ones, a well-behaved peer is served again.
#[test]
fn over_the_connection_limit_new_connections_are_told_the_tracker_is_full() {
    let t = start_tracker(&["--max-connections", "100", "--join-timeout", "10"]);
    let held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(t.addr).unwrap())
        .collect();
    for _ in 0..50 {
        let mut extra = RawClient::connect(t.addr);
        assert_error(&extra.json(), "full", "connection over the limit");
        assert!(extra.closed_within(WAIT));
    }
    for mut stream in held {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            !String::from_utf8_lossy(&rest).contains("full"),
            "a connection within the limit was refused"
        );
    }
    // The tracker counts a connection out just after closing it: wait for a free slot.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = RawClient::connect(t.addr);
        let reply = c.ask(&join_msg(5600, &["after-full"]));
        if reply["status"] == "JOIN_OK" {
            assert_eq!(
                peers_of(&c.ask(&search_msg("after-full"))),
                vec!["127.0.0.1:5600"]
            );
            break;
        }
        assert_error(&reply, "full", "JOIN after the flood");
        assert!(Instant::now() < deadline, "the tracker stayed full");
        thread::yield_now();
    }
}

/// Names with newlines, carriage returns, escapes, NUL, DEL or C1 control characters are
/// refused in JOIN, UPDATE and SEARCH; the peer's earlier list stays; nothing of them reaches
/// the tracker's console.
#[test]
fn names_with_newlines_or_control_characters_are_refused() {
    let t = start_tracker(&[]);
    let mut c = RawClient::connect(t.addr);
    assert_eq!(c.ask(&join_msg(5700, &["clean"]))["status"], "JOIN_OK");
    let bad = [
        "two\nlines",
        "carriage\rreturn",
        "tab\there",
        "\u{1b}[2Jclear",
        "nul\u{0}byte",
        "del\u{7f}",
        "c1\u{85}next-line",
        "\n",
    ];
    for name in bad {
        let what = format!("{name:?}");
        assert_error(&c.ask(&join_msg(5700, &[name])), "control", &what);
        assert_error(&c.ask(&update_msg(&["ok", name])), "control", &what);
        assert_error(&c.ask(&search_msg(name)), "control", &what);
    }
    assert_eq!(
        peers_of(&c.ask(&search_msg("clean"))),
        vec!["127.0.0.1:5700"]
    );
    assert!(peers_of(&c.ask(&search_msg("ok"))).is_empty());
    assert_well_behaved_peer_is_served(t.addr, 5701);
    t.proc
        .wait_for("Peer 127.0.0.1:5701 solicitou arquivo still-served-5701");
    let transcript = t.proc.transcript();
    for needle in ["lines", "return", "\u{1b}", "nul", "\u{85}"] {
        assert!(
            !transcript.contains(needle),
            "{needle:?} reached the tracker's output:\n{transcript}"
        );
    }
}

/// A connection that joined cannot move onto an address another live connection holds: the
/// re-JOIN is refused, and its own earlier entry stays registered and updatable.
#[test]
fn a_refused_rejoin_onto_a_taken_address_keeps_the_old_entry() {
    let t = start_tracker(&[]);
    let mut owner = RawClient::connect(t.addr);
    assert_eq!(owner.ask(&join_msg(5800, &["owned"]))["status"], "JOIN_OK");
    let mut other = RawClient::connect(t.addr);
    assert_eq!(other.ask(&join_msg(5801, &["theirs"]))["status"], "JOIN_OK");
    assert_error(
        &other.ask(&join_msg(5800, &["stolen"])),
        "already registered",
        "JOIN onto a taken address",
    );
    assert_eq!(
        peers_of(&other.ask(&search_msg("owned"))),
        vec!["127.0.0.1:5800"]
    );
    assert!(peers_of(&other.ask(&search_msg("stolen"))).is_empty());
    assert_eq!(
        peers_of(&other.ask(&search_msg("theirs"))),
        vec!["127.0.0.1:5801"]
    );
    assert_eq!(other.ask(&update_msg(&["renewed"]))["status"], "UPDATE_OK");
    assert_eq!(
        peers_of(&owner.ask(&search_msg("renewed"))),
        vec!["127.0.0.1:5801"]
    );
}

/// An address becomes free for another connection only once its owner's connection ended.
#[test]
fn an_address_is_free_again_only_after_its_owner_left() {
    let t = start_tracker(&[]);
    let mut owner = RawClient::connect(t.addr);
    assert_eq!(owner.ask(&join_msg(5900, &["first"]))["status"], "JOIN_OK");
    let mut next = RawClient::connect(t.addr);
    assert_error(
        &next.ask(&join_msg(5900, &["second"])),
        "already registered",
        "JOIN while the owner is live",
    );
    drop(owner);
    t.proc.wait_for("Peer 127.0.0.1:5900 saiu");
    assert_eq!(next.ask(&join_msg(5900, &["second"]))["status"], "JOIN_OK");
    assert!(peers_of(&next.ask(&search_msg("first"))).is_empty());
    assert_eq!(
        peers_of(&next.ask(&search_msg("second"))),
        vec!["127.0.0.1:5900"]
    );
}

/// Large messages share one memory budget (`--max-buffered-mib`): while one connection holds
/// a half-sent message of 1.5 MiB, another connection's 1.5 MiB message does not fit in a
/// 3 MiB budget and is refused with a clear error (the connection is closed); the first
/// message is then read whole, the budget is given back, and a later large message is read
/// whole too. A well-behaved peer is served throughout.
#[test]
fn large_messages_share_one_memory_budget() {
    let t = start_tracker(&["--max-buffered-mib", "3", "--max-message", "4000000"]);
    let head = br#"{"method":"SEARCH","data":{"query":""#;
    let body = vec![b'q'; 1536 * 1024];
    let whole = |c: &mut RawClient| {
        c.send(head);
        let _ = c.stream.write_all(&body);
        // A refused connection may be closed before it is all sent.
        let _ = c.stream.write_all(b"\"}}\n");
        c.json()["message"].as_str().unwrap_or_default().to_string()
    };
    let hold = || {
        let mut holder = RawClient::connect(t.addr);
        holder.send(head);
        holder.send(&body);
        holder
    };
    // True once the tracker has answered the holder: its half message was refused because
    // a probe was growing at the same moment.
    let answered = |holder: &RawClient| {
        holder.stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let got = holder.stream.peek(&mut byte);
        holder.stream.set_nonblocking(false).unwrap();
        matches!(got, Ok(n) if n > 0)
    };
    let mut holder = hold();
    // Until the tracker has buffered the holder's half message, a probe still fits: wait
    // (bounded) for the moment it no longer does.
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = whole(&mut RawClient::connect(t.addr));
        let probe_refused = reply.contains("receiving too much data");
        assert!(
            probe_refused || reply.contains("longer than 255 bytes"),
            "unexpected reply {reply:?}"
        );
        if probe_refused && !answered(&holder) {
            assert_well_behaved_peer_is_served(t.addr, 5900);
            // The holder's refusal may have been on its way when the probe's came: only a
            // holder still unanswered after the well-behaved peer was served is held.
            if !answered(&holder) {
                break;
            }
        }
        if answered(&holder) {
            holder = hold();
        }
        assert!(Instant::now() < deadline, "the budget never filled up");
    }
    holder.send(b"\"}}\n");
    assert_error(
        &holder.json(),
        "longer than 255 bytes",
        "the held message, completed",
    );
    let reply = whole(&mut RawClient::connect(t.addr));
    assert!(
        reply.contains("longer than 255 bytes"),
        "budget not given back: {reply:?}"
    );
}

/// `--join-timeout` is a deadline from connect, not an idle timer: a connection that sends a
/// newline every half second (or a junk line, or SEARCHes) and never JOINs is told "no JOIN
/// within 3 s" and closed about 3 s after it connected, while a peer that JOINed stays.
#[test]
fn the_join_timeout_counts_from_connect_whatever_is_sent() {
    let t = start_tracker(&["--join-timeout", "3"]);
    let mut joined = RawClient::connect(t.addr);
    assert_eq!(joined.ask(&join_msg(6100, &["stays"]))["status"], "JOIN_OK");
    let keepalives: [&[u8]; 3] = [
        b"\n",
        b"junk\n",
        b"{\"method\":\"SEARCH\",\"data\":{\"query\":\"stays\"}}\n",
    ];
    let clients: Vec<_> = keepalives
        .iter()
        .map(|bytes| {
            let c = RawClient::connect(t.addr);
            let mut writer = c.stream.try_clone().unwrap();
            let bytes = bytes.to_vec();
            let started = Instant::now();
            let pinger = thread::spawn(move || {
                // The pacing is the behaviour under test: bytes that are not a JOIN.
                while writer.write_all(&bytes).is_ok() && started.elapsed() < WAIT {
                    thread::sleep(Duration::from_millis(500));
                }
            });
            (c, started, pinger)
        })
        .collect();
    for (mut c, started, pinger) in clients {
        c.stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut text = Vec::new();
        let _ = c.stream.read_to_end(&mut text);
        let elapsed = started.elapsed();
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("no JOIN within 3 s"), "{text:?}");
        assert!(
            elapsed < Duration::from_secs(10),
            "closed only after {elapsed:?}"
        );
        pinger.join().unwrap();
    }
    assert_eq!(
        peers_of(&joined.ask(&search_msg("stays"))),
        vec!["127.0.0.1:6100"]
    );
}

/// The resident memory of a process now, in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("VmRSS in {status}"))
}

/// The console never holds up a reply nor grows: with the tracker's stdout a pipe nobody
/// reads, 100 UPDATEs of 10,000 names (each console line would be about 1 MB) and then 5,000
/// SEARCHes (more lines than the old queue held) are all answered, and the tracker's memory
/// stays within 48 MiB of what it was after the JOIN. Once stdout drains, the lines show
/// shortened lists (`... e mais 9.9xx`) and say how many lines were dropped.
#[test]
fn a_stdout_nobody_reads_never_blocks_replies_nor_grows_memory() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(napster_bin())
        .args(["server", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let child = Kill(child);
    let pid = child.0.id();
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr: SocketAddr = first
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // From here on nobody reads stdout until the end.

    let names: Vec<String> = (0..10_000)
        .map(|i| format!("{i:05}-{}", "n".repeat(84)))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut a = RawClient::connect(addr);
    assert_eq!(a.ask(&join_msg(6200, &names))["status"], "JOIN_OK");
    let baseline = rss_kib(pid);
    let update = update_msg(&names);
    for i in 0..100 {
        assert_eq!(a.ask(&update)["status"], "UPDATE_OK", "UPDATE {i}");
        if i % 10 == 0 {
            let rss = rss_kib(pid);
            assert!(
                rss < baseline + 48 * 1024,
                "after {i} UPDATEs RSS is {rss} KiB (after the JOIN: {baseline} KiB)"
            );
        }
    }
    let mut b = RawClient::connect(addr);
    let search = search_msg(names[0]);
    for i in 0..5000 {
        assert_eq!(
            peers_of(&b.ask(&search)),
            vec!["127.0.0.1:6200"],
            "SEARCH {i}"
        );
    }
    let rss = rss_kib(pid);
    assert!(
        rss < baseline + 48 * 1024,
        "RSS {rss} KiB (after the JOIN: {baseline} KiB)"
    );
    // A new peer still JOINs at once.
    assert_eq!(
        RawClient::connect(addr).ask(&join_msg(6201, &["late"]))["status"],
        "JOIN_OK"
    );

    // Now drain stdout: shortened lists, and a line counting what was dropped.
    let (tx, rx) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut saw_short_list = false;
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("a line saying how many console lines were dropped");
        assert!(line.len() < 5000, "a console line of {} bytes", line.len());
        saw_short_list |=
            line.contains("atualizou os arquivos ['00000-") && line.contains(", ... e mais 9.");
        if line.contains(" do console descartada") {
            break;
        }
    }
    assert!(saw_short_list, "no shortened list line");
    drop(child);
}

/// Refused names and folders from the network are logged as short prefixes, and folder
/// warnings are throttled: 200 JOINs with a 60 KB name, 200 original-dialect JOINs naming a
/// 60 KB path and 400 naming a file behind a 3,000-byte path, with every log line shown
/// (`RUST_LOG=debug`), write under 256 KB of stderr (whole, they would be over 13 MB).
#[test]
fn refused_names_and_folders_are_logged_as_short_prefixes() {
    let mut cmd = std::process::Command::new("env");
    cmd.arg("RUST_LOG=debug").arg(napster_bin()).args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--legacy-folder-join",
    ]);
    let proc = Proc::from_command("tracker", cmd);
    let line = proc.wait_for("Servidor ouvindo em ");
    let addr: SocketAddr = line.rsplit(' ').next().unwrap().parse().unwrap();
    let long = "x".repeat(60_000);
    let mut c = RawClient::connect(addr);
    for _ in 0..200 {
        assert_error(
            &c.ask(&join_msg(6300, &[&long])),
            "longer than",
            "long name",
        );
    }
    let legacy = format!("{{\"method\":\"JOIN\",\"data\":{{\"filePath\":\"/tmp/{long}\"}}}}\n");
    for _ in 0..200 {
        assert_error(&c.ask(legacy.as_bytes()), "cannot list", "long folder");
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut deep = tmp.path().to_path_buf();
    for i in 0..12 {
        deep.push(format!("{i:02}{}", "d".repeat(240)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let file = deep.join("file");
    std::fs::write(&file, b"x").unwrap();
    let join = serde_json::json!({"method": "JOIN", "data": {"filePath": file}});
    for _ in 0..400 {
        assert_error(
            &c.ask(format!("{join}\n").as_bytes()),
            "cannot list",
            "a file",
        );
    }
    assert_well_behaved_peer_is_served(addr, 6301);
    let transcript = proc.transcript();
    assert!(
        transcript.len() < 256 << 10,
        "{} bytes of output",
        transcript.len()
    );
    assert!(
        transcript.contains("cannot list"),
        "the refusals are logged"
    );
}

/// Without `--legacy-folder-join` the original's folder JOIN lists nothing: an existing folder
/// and a missing one get the same ERROR, which names the option and neither path; SEARCH
/// finds nothing of the folder; a normal JOIN works on the same connection.
#[test]
fn a_folder_join_is_refused_unless_the_option_is_given() {
    let t = start_tracker(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("salaries-2026.xlsx"), b"x").unwrap();
    let mut c = RawClient::connect(t.addr);
    let mut replies = Vec::new();
    for path in [dir.path().to_path_buf(), dir.path().join("missing")] {
        let join = serde_json::json!({"method": "JOIN", "data": {"filePath": path}});
        let reply = c.ask(format!("{join}\n").as_bytes());
        assert_error(&reply, "--legacy-folder-join", "folder JOIN");
        let message = reply["message"].as_str().unwrap().to_string();
        assert!(!message.contains(dir.path().to_str().unwrap()), "{message}");
        replies.push(message);
    }
    assert_eq!(replies[0], replies[1]);
    assert!(peers_of(&c.ask(&search_msg("salaries-2026.xlsx"))).is_empty());
    assert_eq!(c.ask(&join_msg(6400, &["ok"]))["status"], "JOIN_OK");
}

/// Logging never blocks a reply: with the tracker's stderr a pipe nobody reads and
/// `RUST_LOG=debug`, 3,000 refused requests (each logged with 240 bytes of its text: about
/// 900 KB, fourteen times what the pipe holds) from three connections at once are all
/// answered, and the tracker then still serves a JOIN and a SEARCH on a new connection. Before,
/// replies stopped once the pipe was full: each connection thread waited in `env_logger` for
/// stderr.
#[test]
fn a_stderr_nobody_reads_never_blocks_replies() {
    let mut cmd = std::process::Command::new(napster_bin());
    cmd.args(["server", "--listen", "127.0.0.1:0"]);
    let tracker = Proc::with_unread_stderr("tracker", cmd, "debug");
    let line = tracker.wait_for("Servidor ouvindo em ");
    let addr: SocketAddr = line.rsplit(' ').next().unwrap().parse().unwrap();
    let junk = "x".repeat(300);
    let askers: Vec<_> = (0..3)
        .map(|n| {
            let junk = junk.clone();
            thread::spawn(move || {
                let mut c = RawClient::connect(addr);
                for i in 0..1000 {
                    let request = format!(
                        "{{\"method\":\"SEARCH\",\"data\":{{\"query\":{i}}}, \"x{n}{junk}\":1}}\n"
                    );
                    let reply = c.ask(request.as_bytes());
                    assert_eq!(reply["status"], "ERROR", "{reply}");
                }
            })
        })
        .collect();
    for asker in askers {
        asker.join().expect("every refused request is answered");
    }
    let mut c = RawClient::connect(addr);
    assert_eq!(c.ask(&join_msg(4000, &["a.txt"]))["status"], "JOIN_OK");
    assert_eq!(
        peers_of(&c.ask(&search_msg("a.txt"))),
        vec!["127.0.0.1:4000"]
    );
}
