//! Finding files as Napster users did, end to end with real peers: new and removed files
//! announced without typing, digests announced once hashed, JOIN typed again, LIST of one's
//! own files and of another peer's, numbered results and `DOWNLOAD N`, and a folder too large
//! for one message.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

/// How long a change in the folder may take to reach the tracker: the peer rescans every 2 s;
/// the rest is slack for a loaded machine.
const ANNOUNCED_WITHIN: Duration = Duration::from_secs(15);

fn list_msg(peer: &str) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({
        "method": "LIST", "data": {"peer": peer}
    }))
    .unwrap();
    v.push(b'\n');
    v
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Waits until the tracker's record of `name` shared by `peer` carries `digest`. The digest
/// rides in the JOIN when the peer had hashed the file already, else in a later UPDATE: after
/// each look that did not find it, wait for the tracker's next UPDATE line.
fn wait_for_digest(t: &TrackerProc, peer: &str, name: &str, digest: &str) {
    let mut c = RawClient::connect(t.addr);
    let deadline = std::time::Instant::now() + ANNOUNCED_WITHIN;
    loop {
        let reply = c.ask(&list_msg(peer));
        let files = reply["files"].as_array().cloned().unwrap_or_default();
        if files
            .iter()
            .any(|f| f["name"] == name && f["digest"] == digest)
        {
            return;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        t.proc
            .wait_for_within(&format!("Peer {peer} atualizou os arquivos"), left);
    }
}

/// JOIN announces names and sizes at once; the digest follows once hashed (in the JOIN when
/// already known); a file put into the folder later, and one removed, reach the tracker within
/// seconds with nobody typing anything.
#[test]
fn folder_changes_and_digests_are_announced_without_typing() {
    let tmp = tempfile::tempdir().unwrap();
    let [da] = folders(tmp.path(), ["a"]);
    fs::write(da.join("aula-01.mp4"), b"video bytes").unwrap();
    let t = start_tracker(&[]);
    let mut alice = start_peer("alice", t.addr, &da, &[]);
    alice.join();
    let me = alice.addr();
    t.proc.wait_for(&format!(
        "Peer {me} adicionado com os arquivos ['aula-01.mp4']"
    ));
    wait_for_digest(&t, &me, "aula-01.mp4", &blake3_hex(b"video bytes"));
    let mut c = RawClient::connect(t.addr);
    assert_eq!(
        c.ask(&list_msg(&me)),
        serde_json::json!({"status": "OK", "files": [
            {"name": "aula-01.mp4", "size": 11, "digest": blake3_hex(b"video bytes")}
        ]})
    );

    fs::write(da.join("aula-02.mp4"), b"more").unwrap();
    t.proc.wait_for_within(
        &format!("Peer {me} atualizou os arquivos: +['aula-02.mp4']"),
        ANNOUNCED_WITHIN,
    );
    assert_eq!(
        peers_of(&c.ask(&search_msg("aula-02.mp4"))),
        vec![me.clone()]
    );
    fs::remove_file(da.join("aula-01.mp4")).unwrap();
    t.proc.wait_for_within(
        &format!("Peer {me} atualizou os arquivos: -['aula-01.mp4']"),
        ANNOUNCED_WITHIN,
    );
    assert!(peers_of(&c.ask(&search_msg("aula-01.mp4"))).is_empty());
}

/// `JOIN` typed again announces the current list (digests included) instead of refusing.
#[test]
fn join_typed_again_announces_again() {
    let tmp = tempfile::tempdir().unwrap();
    let [da] = folders(tmp.path(), ["a"]);
    fs::write(da.join("a.txt"), b"abc").unwrap();
    let t = start_tracker(&[]);
    let mut alice = start_peer("alice", t.addr, &da, &[]);
    alice.join();
    let me = alice.addr();
    wait_for_digest(&t, &me, "a.txt", &blake3_hex(b"abc"));
    fs::write(da.join("b.txt"), b"b").unwrap();
    assert!(alice.join().ends_with(r#"com arquivos: "a.txt","b.txt""#));
    assert!(!alice.proc.printed("Já registrado"));
    t.proc.wait_for(&format!(
        "Peer {me} adicionado com os arquivos ['a.txt', 'b.txt']"
    ));
    let mut c = RawClient::connect(t.addr);
    let files = c.ask(&list_msg(&me));
    assert_eq!(files["files"][0]["digest"], blake3_hex(b"abc"), "{files}");
}

/// `LIST` shows one's own files with their sizes, before JOIN too; `LIST peer` shows what
/// another peer shares, numbered, and `DOWNLOAD 1` downloads the first of them from it.
#[test]
fn list_own_files_before_join_and_browse_another_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db] = folders(tmp.path(), ["a", "b"]);
    fs::write(da.join("notas.txt"), b"0123456789ab").unwrap();
    write_pattern(&da.join("video.bin"), 3 * 1024 * 1024, 7);
    let t = start_tracker(&[]);
    let mut alice = start_peer("alice", t.addr, &da, &["--approve", "yes"]);
    alice.send("LIST");
    alice.wait_for(&format!("Você compartilha 2 arquivos em {}:", da.display()));
    alice.wait_for("  notas.txt  12 B");
    alice.wait_for("  video.bin  3,0 MiB");
    alice.join();

    let mut bob = start_peer("bob", t.addr, &db, &[]);
    bob.send("LIST");
    bob.wait_for("Nenhum arquivo compartilhado em");
    bob.join();
    bob.send(&format!("LIST {}", alice.addr()));
    bob.wait_for(&format!("Arquivos de {} (2)", alice.addr()));
    bob.wait_for("1) notas.txt  12 B");
    bob.wait_for("2) video.bin  3,0 MiB");
    bob.send("DOWNLOAD 2");
    bob.wait_for("Arquivo video.bin baixado com sucesso na pasta");
    assert!(same_file(&da.join("video.bin"), &db.join("video.bin")));
    bob.send("LIST 127.0.0.1:1");
    bob.wait_for("Erro ao listar os arquivos de 127.0.0.1:1");
}

/// SEARCH by a word prints the original's line for the exact name (empty here), then the
/// matching files numbered with size and holders; `DOWNLOAD 1 PORT` downloads result 1 from
/// the holder named; a query without words gets a hint.
#[test]
fn keyword_search_numbers_results_and_download_n_takes_one() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db, dc] = folders(tmp.path(), ["a", "b", "c"]);
    write_pattern(&da.join("Aula-01.mp4"), 3 * 1024 * 1024 + 5, 3);
    fs::copy(da.join("Aula-01.mp4"), db.join("Aula-01.mp4")).unwrap();
    fs::write(da.join("Música Ao Vivo.mp3"), b"la la").unwrap();
    let t = start_tracker(&[]);
    let mut alice = start_peer("alice", t.addr, &da, &["--approve", "yes"]);
    alice.join();
    let mut bob = start_peer("bob", t.addr, &db, &["--approve", "yes"]);
    bob.join();
    // Both holders' digests known: one result with 2 peers.
    let digest = blake3_hex(&fs::read(da.join("Aula-01.mp4")).unwrap());
    for who in [alice.addr(), bob.addr()] {
        wait_for_digest(&t, &who, "Aula-01.mp4", &digest);
    }
    let mut carol = start_peer("carol", t.addr, &dc, &[]);
    carol.join();
    carol.send("SEARCH aula");
    carol.wait_for("Peers com arquivo solicitado: []");
    carol.wait_for("1) Aula-01.mp4  3,0 MiB  2 peers");
    carol.send("SEARCH MUSICA");
    carol.wait_for("1) Música Ao Vivo.mp3  5 B  1 peer");
    carol.send("SEARCH aula");
    carol.wait_for("1) Aula-01.mp4");
    carol.send(&format!("DOWNLOAD 1 {}", bob.port));
    carol.wait_for("Arquivo Aula-01.mp4 baixado com sucesso na pasta");
    // Carol names the peer she asks before asking it, so before her success line: she asked
    // bob alone. (Alice's console cannot show it: her upload lines come at no time the test
    // can wait for.)
    assert_eq!(
        carol.proc.count_printed("Aguardando resposta de "),
        1,
        "{}",
        carol.proc.transcript()
    );
    assert!(
        carol
            .proc
            .printed(&format!("Aguardando resposta de {}...", bob.addr())),
        "{}",
        carol.proc.transcript()
    );
    // From the holder named (bob), not the first one listed (alice).
    bob.wait_for("Upload do arquivo Aula-01.mp4 para 127.0.0.1:");
    assert!(bob.proc.printed(&format!(
        "(porta de upload declarada: {}) solicitou o arquivo Aula-01.mp4",
        carol.port
    )));
    assert!(same_file(&da.join("Aula-01.mp4"), &dc.join("Aula-01.mp4")));
    carol.send("SEARCH *");
    carol.wait_for("Busque por palavras do nome");
}

/// A folder whose list is larger than one message (5,000 names of 200 bytes, about 1.6 MB of
/// JSON against the tracker's 1 MiB) JOINs in parts: every file reaches the tracker.
#[test]
fn a_folder_too_large_for_one_message_joins_in_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let [da] = folders(tmp.path(), ["a"]);
    for i in 0..5000 {
        fs::write(da.join(format!("{i:0>200}")), b"").unwrap();
    }
    let t = start_tracker(&[]);
    let mut alice = start_peer("alice", t.addr, &da, &[]);
    alice.join();
    // The JOIN carries the first part; UPDATEs adding the rest follow its answer.
    let mut c = RawClient::connect(t.addr);
    let me = alice.addr();
    let deadline = std::time::Instant::now() + ANNOUNCED_WITHIN;
    loop {
        let reply = c.ask(&list_msg(&me));
        let listed = reply["files"].as_array().map_or(0, Vec::len);
        if listed == 5000 {
            break;
        }
        assert!(listed < 5000, "{listed} files listed");
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        t.proc
            .wait_for_within(&format!("Peer {me} atualizou os arquivos"), left);
    }
    assert!(
        t.proc
            .printed(&format!("Peer {me} adicionado com os arquivos"))
    );
}

/// Fifty files put into the folder at once, and their fifty digests, reach the tracker in a
/// few batched UPDATEs, not one per file and per digest.
#[test]
fn many_new_files_are_announced_in_a_few_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let [da] = folders(tmp.path(), ["a"]);
    let t = start_tracker(&[]);
    let mut alice = start_peer("alice", t.addr, &da, &[]);
    alice.join();
    let me = alice.addr();
    for i in 0..50 {
        fs::write(da.join(format!("f{i:02}.txt")), format!("file {i}")).unwrap();
    }
    for i in 0..50 {
        let name = format!("f{i:02}.txt");
        wait_for_digest(&t, &me, &name, &blake3_hex(format!("file {i}").as_bytes()));
    }
    let updates = t.proc.transcript().matches("atualizou os arquivos").count();
    assert!(
        updates <= 10,
        "{updates} UPDATEs for 50 files:\n{}",
        t.proc.transcript()
    );
}
