//! Every tracker rule of PROTOCOL.md, checked byte for byte against a live tracker.

mod common;

use std::time::Duration;

use common::*;

/// JOIN is answered JOIN_OK; SEARCH lists IP:PORT built from the connection's IP and the
/// JOINed port; UPDATE is answered UPDATE_OK and changes what SEARCH finds.
#[test]
fn join_search_update_round_trip() {
    let t = start_tracker(&[]);
    let mut a = RawClient::connect(t.addr);
    assert_eq!(
        a.ask(&join_msg(4001, &["a.txt", "b.txt"])),
        serde_json::json!({"status":"JOIN_OK"})
    );
    let mut b = RawClient::connect(t.addr);
    assert_eq!(b.ask(&join_msg(4002, &["b.txt"]))["status"], "JOIN_OK");
    assert_eq!(
        peers_of(&b.ask(&search_msg("b.txt"))),
        vec!["127.0.0.1:4001", "127.0.0.1:4002"]
    );
    assert_eq!(
        peers_of(&b.ask(&search_msg("a.txt"))),
        vec!["127.0.0.1:4001"]
    );
    assert!(peers_of(&b.ask(&search_msg("nothing"))).is_empty());
    assert_eq!(
        a.ask(&update_msg(&["c.txt"])),
        serde_json::json!({"status":"UPDATE_OK"})
    );
    assert_eq!(
        peers_of(&b.ask(&search_msg("b.txt"))),
        vec!["127.0.0.1:4002"]
    );
    assert_eq!(
        peers_of(&b.ask(&search_msg("c.txt"))),
        vec!["127.0.0.1:4001"]
    );
    t.proc
        .wait_for("Peer 127.0.0.1:4001 adicionado com os arquivos ['a.txt', 'b.txt']");
    t.proc
        .wait_for("Peer 127.0.0.1:4002 solicitou arquivo b.txt");
}

/// Objects sent back to back with no newline (as the original sends) are each answered.
#[test]
fn back_to_back_objects_without_newlines_are_all_answered() {
    let t = start_tracker(&[]);
    let mut c = RawClient::connect(t.addr);
    let mut msg = Vec::new();
    msg.extend_from_slice(br#"{"method":"JOIN","data":{"port":4100,"files":["x"]}}"#);
    msg.extend_from_slice(br#"{"method":"SEARCH","data":{"query":"x"}}"#);
    msg.extend_from_slice(br#"{"method":"UPDATE","data":{"files":["y"]}}"#);
    c.send(&msg);
    assert_eq!(c.json()["status"], "JOIN_OK");
    assert_eq!(peers_of(&c.json()), vec!["127.0.0.1:4100"]);
    assert_eq!(c.json()["status"], "UPDATE_OK");
}

/// A message split at every byte (TCP may split anywhere) is still one message.
#[test]
fn a_message_split_into_single_bytes_is_reassembled() {
    let t = start_tracker(&[]);
    let mut c = RawClient::connect(t.addr);
    c.stream.set_nodelay(true).unwrap();
    for byte in join_msg(4200, &["braces {in} \"names\""]) {
        c.send(&[byte]);
    }
    assert_eq!(c.json()["status"], "JOIN_OK");
    assert_eq!(
        peers_of(&c.ask(&search_msg("braces {in} \"names\""))),
        vec!["127.0.0.1:4200"]
    );
}

/// Bad JSON, a non-object, an unknown method, missing fields and wrong types each get an
/// ERROR with a sentence, and the same connection keeps working.
#[test]
fn malformed_requests_get_errors_and_the_connection_stays_usable() {
    let t = start_tracker(&[]);
    let mut c = RawClient::connect(t.addr);
    let cases: &[(&[u8], &str)] = &[
        (b"this is not json\n", "not a JSON object"),
        (b"{\"method\": JOIN}\n", "not valid JSON"),
        (b"[1,2,3]\n", "not a JSON object"),
        (b"{\"method\":\"FOO\",\"data\":{}}\n", "unknown method"),
        (b"{\"method\":\"SEARCH\"}\n", "needs a \"data\" object"),
        (b"{\"method\":\"SEARCH\",\"data\":{}}\n", "data.query"),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"files\":[]}}\n",
            "data.port",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":\"x\",\"files\":[]}}\n",
            "wrong type",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":70000,\"files\":[]}}\n",
            "wrong type",
        ),
        (
            b"{\"method\":\"UPDATE\",\"data\":{\"files\":[]}}\n",
            "JOIN before UPDATE",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":5,\"files\":[\"../x\"]}}\n",
            "refused",
        ),
        (
            b"{\"method\":\"JOIN\",\"data\":{\"port\":5,\"files\":[\"a\\nb\"]}}\n",
            "control",
        ),
        (
            b"{\"method\":\"SEARCH\",\"data\":{\"query\":\"a\n",
            "line ended",
        ),
    ];
    for (bytes, expected) in cases {
        let reply = c.ask(bytes);
        assert_eq!(
            reply["status"],
            "ERROR",
            "{:?} → {reply}",
            String::from_utf8_lossy(bytes)
        );
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{:?} → {message:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(c.ask(&join_msg(4300, &["ok"]))["status"], "JOIN_OK");
    assert_eq!(peers_of(&c.ask(&search_msg("ok"))), vec!["127.0.0.1:4300"]);
}

/// A peer whose connection closes disappears from SEARCH at once, and the tracker says so.
#[test]
fn search_forgets_a_peer_that_disconnected() {
    let t = start_tracker(&[]);
    let mut a = RawClient::connect(t.addr);
    a.ask(&join_msg(4400, &["f"]));
    let mut b = RawClient::connect(t.addr);
    b.ask(&join_msg(4401, &["g"]));
    assert_eq!(peers_of(&b.ask(&search_msg("f"))), vec!["127.0.0.1:4400"]);
    drop(a);
    t.proc.wait_for("Peer 127.0.0.1:4400 saiu");
    assert!(peers_of(&b.ask(&search_msg("f"))).is_empty());
}

/// Another connection cannot take over, change or remove a live peer's entry.
#[test]
fn a_live_peer_entry_cannot_be_taken_over() {
    let t = start_tracker(&[]);
    let mut owner = RawClient::connect(t.addr);
    owner.ask(&join_msg(4500, &["mine"]));
    let mut thief = RawClient::connect(t.addr);
    let reply = thief.ask(&join_msg(4500, &["evil"]));
    assert_eq!(reply["status"], "ERROR");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("already registered")
    );
    assert_eq!(thief.ask(&update_msg(&["evil"]))["status"], "ERROR");
    drop(thief);
    assert_eq!(
        peers_of(&owner.ask(&search_msg("mine"))),
        vec!["127.0.0.1:4500"]
    );
    assert!(peers_of(&owner.ask(&search_msg("evil"))).is_empty());
}

/// A message over the size limit is answered with ERROR and the connection is closed (the
/// stream is out of sync); other peers are unaffected.
#[test]
fn an_oversized_message_is_refused_and_closed() {
    let t = start_tracker(&["--max-message", "1000"]);
    let mut good = RawClient::connect(t.addr);
    good.ask(&join_msg(4600, &["still-here"]));
    let mut big = RawClient::connect(t.addr);
    let mut msg = br#"{"method":"SEARCH","data":{"query":""#.to_vec();
    msg.extend(std::iter::repeat_n(b'x', 5000));
    msg.extend_from_slice(b"\"}}\n");
    let _ = big.stream.write_all_ignoring_reset(&msg);
    let reply = big.json();
    assert_eq!(reply["status"], "ERROR");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("limit of 1000 bytes")
    );
    assert!(big.closed_within(Duration::from_secs(10)));
    assert_eq!(
        peers_of(&good.ask(&search_msg("still-here"))),
        vec!["127.0.0.1:4600"]
    );
}

/// Limits on names per peer and name length are enforced with a clear error.
#[test]
fn name_limits_are_enforced() {
    let t = start_tracker(&["--max-names", "2", "--max-name-len", "8"]);
    let mut c = RawClient::connect(t.addr);
    let reply = c.ask(&join_msg(4700, &["a", "b", "c"]));
    assert!(
        reply["message"].as_str().unwrap().contains("limit is 2"),
        "{reply}"
    );
    let reply = c.ask(&join_msg(4700, &["123456789"]));
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("longer than 8 bytes"),
        "{reply}"
    );
    assert_eq!(c.ask(&join_msg(4700, &["a", "b"]))["status"], "JOIN_OK");
}

/// A connection that starts a message and never finishes it is closed after the message
/// timeout (slow-loris), while others are served.
#[test]
fn a_message_never_finished_is_closed_after_the_timeout() {
    let t = start_tracker(&["--message-timeout", "1"]);
    let mut slow = RawClient::connect(t.addr);
    slow.send(br#"{"method":"JOIN","#);
    let mut good = RawClient::connect(t.addr);
    assert_eq!(good.ask(&join_msg(4800, &["x"]))["status"], "JOIN_OK");
    let reply = slow.json();
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("not completed in time"),
        "{reply}"
    );
    assert!(slow.closed_within(Duration::from_secs(10)));
}

/// Extra fields are ignored, so later versions can add some: a JOIN carrying them is
/// accepted and takes effect (its file is found by SEARCH).
#[test]
fn unknown_fields_are_ignored() {
    let t = start_tracker(&[]);
    let mut c = RawClient::connect(t.addr);
    let reply = c.ask(
        b"{\"method\":\"JOIN\",\"version\":2,\"data\":{\"port\":4900,\"files\":[\"z\"],\"extra\":true}}\n",
    );
    assert_eq!(reply["status"], "JOIN_OK");
    assert_eq!(peers_of(&c.ask(&search_msg("z"))), vec!["127.0.0.1:4900"]);
}

trait WriteIgnoringReset {
    fn write_all_ignoring_reset(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

impl WriteIgnoringReset for std::net::TcpStream {
    /// The tracker may close before reading everything; that is the behaviour under test.
    fn write_all_ignoring_reset(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self.write_all(bytes) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionReset
                    || e.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Ok(())
            }
            other => other,
        }
    }
}
