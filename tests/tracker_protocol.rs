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
    send_ignoring_reset(&mut big.stream, &msg);
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

// ---- The file record, keyword search and LIST (PROTOCOL.md T1–T3, T11–T16) ----

/// One request line from a JSON value.
fn line(value: serde_json::Value) -> Vec<u8> {
    let mut v = serde_json::to_vec(&value).unwrap();
    v.push(b'\n');
    v
}

fn join_records(port: u16, files: serde_json::Value) -> Vec<u8> {
    line(serde_json::json!({"method": "JOIN", "data": {"port": port, "files": files}}))
}

fn change(add: serde_json::Value, remove: serde_json::Value) -> Vec<u8> {
    line(serde_json::json!({"method": "UPDATE", "data": {"add": add, "remove": remove}}))
}

fn list_msg(peer: &str) -> Vec<u8> {
    line(serde_json::json!({"method": "LIST", "data": {"peer": peer}}))
}

/// The results of a SEARCH reply as (name, size, digest, holders, peers).
fn results_of(
    reply: &serde_json::Value,
) -> Vec<(
    String,
    serde_json::Value,
    serde_json::Value,
    u64,
    Vec<String>,
)> {
    assert_eq!(reply["status"], "OK", "SEARCH reply {reply}");
    reply["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results in {reply}"))
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["size"].clone(),
                r["digest"].clone(),
                r["holders"].as_u64().unwrap(),
                r["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn result_names(reply: &serde_json::Value) -> Vec<String> {
    results_of(reply).into_iter().map(|r| r.0).collect()
}

const DIGEST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// T1/T11: JOIN's `files` holds record objects `{name, size, digest?}` and plain names (the
/// old form) side by side; SEARCH's `results` gives each file's size and digest when known,
/// and the exact name's `peers` stays the original's list.
#[test]
fn join_takes_records_and_plain_names_and_search_returns_them() {
    let t = start_tracker(&[]);
    let mut a = RawClient::connect(t.addr);
    let reply = a.ask(&join_records(
        5001,
        serde_json::json!([
            {"name": "aula-01.mp4", "size": 3145728, "digest": DIGEST_A},
            {"name": "notas.txt", "size": 12},
            "velho.txt"
        ]),
    ));
    assert_eq!(reply, serde_json::json!({"status": "JOIN_OK"}));
    let reply = a.ask(&search_msg("aula-01.mp4"));
    assert_eq!(peers_of(&reply), vec!["127.0.0.1:5001"]);
    assert_eq!(
        results_of(&reply),
        vec![(
            "aula-01.mp4".to_string(),
            serde_json::json!(3145728),
            serde_json::json!(DIGEST_A),
            1,
            vec!["127.0.0.1:5001".to_string()]
        )]
    );
    assert!(reply.get("truncated").is_none(), "{reply}");
    let reply = a.ask(&search_msg("velho.txt"));
    let found = results_of(&reply);
    assert_eq!(
        found[0].1,
        serde_json::Value::Null,
        "unknown size is left out"
    );
    assert_eq!(found[0].2, serde_json::Value::Null);
    t.proc.wait_for(
        "Peer 127.0.0.1:5001 adicionado com os arquivos ['aula-01.mp4', 'notas.txt', 'velho.txt']",
    );
}

/// T11: a record that is not a record is refused whole with a sentence naming the problem:
/// a digest that is not 64 hex digits, a negative or too large size, a missing name.
#[test]
fn malformed_records_are_refused_with_a_reason() {
    let t = start_tracker(&[]);
    let mut c = RawClient::connect(t.addr);
    let cases = [
        (
            serde_json::json!([{"name": "a", "size": 1, "digest": "abc"}]),
            "64 hexadecimal digits",
        ),
        (serde_json::json!([{"name": "a", "size": -1}]), "wrong type"),
        (
            serde_json::json!([{"name": "a", "size": 9223372036854775808u64}]),
            "not a file size",
        ),
        (serde_json::json!([{"size": 1}]), "name"),
        (serde_json::json!([7]), "a file name or"),
    ];
    for (files, needle) in cases {
        let reply = c.ask(&join_records(5002, files.clone()));
        assert_eq!(reply["status"], "ERROR", "{files}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{files}: {reply}"
        );
    }
    assert_eq!(
        c.ask(&join_records(5002, serde_json::json!(["ok"])))["status"],
        "JOIN_OK"
    );
}

/// T3/T12: UPDATE `add` adds a record or replaces the record of the same name (a digest
/// learned later), `remove` forgets names; `files` and `add`/`remove` together are refused;
/// a peer may not grow past `--max-names` by adding.
#[test]
fn update_adds_replaces_and_removes_records() {
    let t = start_tracker(&["--max-names", "3"]);
    let mut c = RawClient::connect(t.addr);
    assert_eq!(
        c.ask(&join_records(
            5003,
            serde_json::json!([{"name": "a.bin", "size": 5}, "b.bin"])
        ))["status"],
        "JOIN_OK"
    );
    let reply = c.ask(&change(
        serde_json::json!([{"name": "a.bin", "size": 5, "digest": DIGEST_A}, {"name": "c.bin", "size": 1}]),
        serde_json::json!(["b.bin"]),
    ));
    assert_eq!(reply, serde_json::json!({"status": "UPDATE_OK"}));
    let reply = c.ask(&list_msg("127.0.0.1:5003"));
    assert_eq!(
        reply,
        serde_json::json!({"status": "OK", "files": [
            {"name": "a.bin", "size": 5, "digest": DIGEST_A},
            {"name": "c.bin", "size": 1}
        ]})
    );
    assert!(peers_of(&c.ask(&search_msg("b.bin"))).is_empty());
    let reply = c.ask(&change(
        serde_json::json!(["d", "e"]),
        serde_json::json!([]),
    ));
    assert!(
        reply["message"].as_str().unwrap().contains("limit is 3"),
        "{reply}"
    );
    let reply = c.ask(&line(serde_json::json!(
        {"method": "UPDATE", "data": {"files": [], "add": []}}
    )));
    assert!(
        reply["message"].as_str().unwrap().contains("not both"),
        "{reply}"
    );
    t.proc
        .wait_for("Peer 127.0.0.1:5003 atualizou os arquivos: +['a.bin', 'c.bin'] -['b.bin']");
}

/// T13: SEARCH finds every name holding all the query's words, case- and
/// accent-insensitive, words split on anything not a letter or digit; the exact name's
/// holders stay in `peers`.
#[test]
fn keyword_search_ignores_case_and_accents_and_needs_every_word() {
    let t = start_tracker(&[]);
    let mut a = RawClient::connect(t.addr);
    a.ask(&join_records(
        5004,
        serde_json::json!([
            "Música Ao Vivo.mp3",
            "aula-01.mp4",
            "Aula 02 (final).MP4",
            "outra.txt"
        ]),
    ));
    let mut b = RawClient::connect(t.addr);
    assert_eq!(
        b.ask(&join_msg(5005, &["aula-01.mp4"]))["status"],
        "JOIN_OK"
    );
    assert_eq!(
        result_names(&b.ask(&search_msg("musica"))),
        ["Música Ao Vivo.mp3"]
    );
    assert_eq!(
        result_names(&b.ask(&search_msg("AO VIVO"))),
        ["Música Ao Vivo.mp3"]
    );
    assert_eq!(
        result_names(&b.ask(&search_msg("aula-01"))),
        ["aula-01.mp4"]
    );
    let reply = b.ask(&search_msg("AULA-01.MP4"));
    assert!(
        peers_of(&reply).is_empty(),
        "the exact name is case-sensitive: {reply}"
    );
    assert_eq!(result_names(&reply), ["aula-01.mp4"]);
    assert_eq!(results_of(&reply)[0].3, 2);
    // More-held first: aula-01.mp4 (2 peers) before Aula 02 (1 peer).
    assert_eq!(
        result_names(&b.ask(&search_msg("aula mp4"))),
        ["aula-01.mp4", "Aula 02 (final).MP4"]
    );
    assert!(result_names(&b.ask(&search_msg("aula txt"))).is_empty());
    assert!(
        result_names(&b.ask(&search_msg("aul"))).is_empty(),
        "whole words only"
    );
}

/// T13: the exact name comes first, then the others by how many peers hold them; holders
/// of the same name with different content are separate results.
#[test]
fn results_put_the_exact_name_first_and_group_by_content() {
    let t = start_tracker(&[]);
    let mut peers: Vec<RawClient> = Vec::new();
    let files = [
        serde_json::json!([{"name": "aula", "size": 1}, {"name": "aula 3", "size": 3}]),
        serde_json::json!([{"name": "aula 3", "size": 3}, {"name": "aula 2", "size": 2}]),
        serde_json::json!([{"name": "aula 3", "size": 4}]),
    ];
    for (i, f) in files.into_iter().enumerate() {
        let mut c = RawClient::connect(t.addr);
        assert_eq!(
            c.ask(&join_records(5010 + i as u16, f))["status"],
            "JOIN_OK"
        );
        peers.push(c);
    }
    let reply = peers[0].ask(&search_msg("aula"));
    assert_eq!(peers_of(&reply), vec!["127.0.0.1:5010"]);
    let found: Vec<(String, serde_json::Value, u64)> = results_of(&reply)
        .into_iter()
        .map(|r| (r.0, r.1, r.3))
        .collect();
    assert_eq!(
        found,
        vec![
            ("aula".to_string(), serde_json::json!(1), 1),
            ("aula 3".to_string(), serde_json::json!(3), 2),
            ("aula 2".to_string(), serde_json::json!(2), 1),
            ("aula 3".to_string(), serde_json::json!(4), 1),
        ]
    );
}

/// T14: at most `--max-results` results; `truncated` says more matched.
#[test]
fn results_are_capped_and_the_reply_says_so() {
    let t = start_tracker(&["--max-results", "3"]);
    let mut c = RawClient::connect(t.addr);
    let files: Vec<String> = (0..50).map(|i| format!("faixa {i:02}.mp3")).collect();
    assert_eq!(
        c.ask(&join_records(5020, serde_json::json!(files)))["status"],
        "JOIN_OK"
    );
    let reply = c.ask(&search_msg("FAIXA"));
    assert_eq!(results_of(&reply).len(), 3);
    assert_eq!(reply["truncated"], true);
    let reply = c.ask(&search_msg("faixa 07"));
    assert_eq!(result_names(&reply), ["faixa 07.mp3"]);
    assert!(reply.get("truncated").is_none(), "{reply}");
}

/// T14: a result lists at most 32 of its holders; `holders` counts them all.
#[test]
fn a_result_lists_a_bounded_number_of_holders_and_counts_them_all() {
    let t = start_tracker(&[]);
    let clients: Vec<RawClient> = (0..40u16)
        .map(|i| {
            let mut c = RawClient::connect(t.addr);
            assert_eq!(
                c.ask(&join_msg(5100 + i, &["popular.mp3"]))["status"],
                "JOIN_OK"
            );
            c
        })
        .collect();
    let mut asker = RawClient::connect(t.addr);
    let reply = asker.ask(&search_msg("popular"));
    let found = results_of(&reply);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].3, 40);
    assert_eq!(found[0].4.len(), 32);
    assert_eq!(peers_of(&asker.ask(&search_msg("popular.mp3"))).len(), 40);
    drop(clients);
}

/// T15: a query is at most `--max-name-len` bytes and 16 distinct words, not empty, without control
/// characters; separators are allowed (they only split words). A query without words
/// (`*`, `---`) matches only a file of exactly that name: there is no wildcard.
#[test]
fn query_limits_are_enforced_and_there_is_no_wildcard() {
    let t = start_tracker(&["--max-name-len", "40"]);
    let mut c = RawClient::connect(t.addr);
    assert_eq!(
        c.ask(&join_msg(5030, &["AC DC - live.mp3", "*"]))["status"],
        "JOIN_OK"
    );
    assert_eq!(
        result_names(&c.ask(&search_msg("AC/DC"))),
        ["AC DC - live.mp3"]
    );
    let reply = c.ask(&search_msg("*"));
    assert_eq!(peers_of(&reply), vec!["127.0.0.1:5030"]);
    assert_eq!(result_names(&reply), ["*"]);
    assert!(result_names(&c.ask(&search_msg("---"))).is_empty());
    let seventeen: Vec<String> = (0..17).map(|i| ((b'a' + i) as char).to_string()).collect();
    let seventeen = seventeen.join(" ");
    for (query, needle) in [
        ("x".repeat(41), "longer than 40 bytes"),
        (seventeen, "17 words; the limit is 16"),
        ("  ".to_string(), "empty"),
        ("a\u{202E}b".to_string(), "control or invisible"),
    ] {
        let reply = c.ask(&search_msg(&query));
        assert_eq!(reply["status"], "ERROR", "{query:?}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{query:?}: {reply}"
        );
    }
    assert_eq!(peers_of(&c.ask(&search_msg("*"))), vec!["127.0.0.1:5030"]);
}

/// T16: LIST names a peer `IP:PORT` and gets its records sorted by name; an unknown peer or
/// a malformed address gets `ERROR`; the connection stays usable.
#[test]
fn list_returns_a_peers_records_or_says_why_not() {
    let t = start_tracker(&[]);
    let mut a = RawClient::connect(t.addr);
    a.ask(&join_records(
        5040,
        serde_json::json!([{"name": "z.txt", "size": 2}, {"name": "a.txt", "size": 1, "digest": DIGEST_A}]),
    ));
    let mut b = RawClient::connect(t.addr);
    assert_eq!(
        b.ask(&list_msg("127.0.0.1:5040")),
        serde_json::json!({"status": "OK", "files": [
            {"name": "a.txt", "size": 1, "digest": DIGEST_A},
            {"name": "z.txt", "size": 2}
        ]})
    );
    let reply = b.ask(&list_msg("127.0.0.1:5999"));
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("not registered"),
        "{reply}"
    );
    let reply = b.ask(&list_msg("nobody"));
    assert!(
        reply["message"].as_str().unwrap().contains("IP:PORT"),
        "{reply}"
    );
    let reply = b.ask(&line(serde_json::json!({"method": "LIST", "data": {}})));
    assert!(
        reply["message"].as_str().unwrap().contains("data.peer"),
        "{reply}"
    );
    t.proc.wait_for("listou os arquivos de 127.0.0.1:5040");
}
