//! The peer's console never waits on the tracker.
//!
//! The tracker here is a stand-in speaking our dialect whose answers each test scripts: it can
//! answer at once, later, or never. The peer is the real binary, driven through its stdin.

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

use common::*;
use crossbeam_channel::{Receiver, Sender, unbounded};
use serde_json::{Value, json};

/// A tracker stand-in: every request is handed to `answer`, which returns the reply line
/// (or `None`: no answer, ever) and may take its time. Each line received is also sent on
/// `requests`, with the number of the connection it came on.
struct ScriptedTracker {
    addr: SocketAddr,
    requests: Receiver<(usize, Value)>,
}

impl ScriptedTracker {
    fn start(answer: impl Fn(&Value) -> Option<Value> + Send + Sync + 'static) -> ScriptedTracker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = unbounded();
        let answer = std::sync::Arc::new(answer);
        thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { return };
                let (tx, answer) = (tx.clone(), std::sync::Arc::clone(&answer));
                thread::spawn(move || serve(n, conn, &tx, &*answer));
            }
        });
        ScriptedTracker { addr, requests }
    }

    /// Waits for the next request and returns it with its connection's number.
    fn next_request(&self) -> (usize, Value) {
        self.requests
            .recv_timeout(WAIT)
            .expect("the peer sends a request")
    }

    /// Waits for the next request whose method is `method`.
    fn next(&self, method: &str) -> (usize, Value) {
        loop {
            let (n, request) = self.next_request();
            if request["method"] == method {
                return (n, request);
            }
        }
    }
}

fn serve(
    n: usize,
    conn: TcpStream,
    tx: &Sender<(usize, Value)>,
    answer: &(dyn Fn(&Value) -> Option<Value> + Send + Sync),
) {
    let mut writer = conn.try_clone().unwrap();
    // Objects one after another, with or without a newline between them, as our tracker reads.
    for request in serde_json::Deserializer::from_reader(BufReader::new(conn)).into_iter::<Value>()
    {
        let Ok(request) = request else { return };
        let _ = tx.send((n, request.clone()));
        if let Some(reply) = answer(&request) {
            let mut bytes = serde_json::to_vec(&reply).unwrap();
            bytes.push(b'\n');
            if writer.write_all(&bytes).is_err() {
                return;
            }
        }
    }
}

/// Our tracker's answer to the probe (an UPDATE before JOIN) and to JOIN; `None` otherwise.
fn probe_and_join(request: &Value) -> Option<Value> {
    match request["method"].as_str() {
        Some("UPDATE") => Some(json!({"status": "ERROR", "message": "send JOIN before UPDATE"})),
        Some("JOIN") => Some(json!({"status": "JOIN_OK"})),
        _ => None,
    }
}

/// A DOWNLOAD_REQUEST line for `name` at `port`, from a downloader at `from_port`.
fn download_request(name: &str, port: u16, from_port: u16) -> Vec<u8> {
    let mut v = serde_json::to_vec(&json!({
        "method": "DOWNLOAD_REQUEST",
        "data": {"filename": name, "port": port, "fromPort": from_port}
    }))
    .unwrap();
    v.push(b'\n');
    v
}

/// Issue 10, item 14. A SEARCH goes to a tracker that has stopped answering; meanwhile an
/// upload request arrives. The question is shown at once, SIM is taken and the file is
/// served, all while the SEARCH still waits; only then does the SEARCH fail, saying the
/// tracker did not answer, and the peer dials again (and JOINs again) on its own. (The console
/// used to wait on the tracker connection for the whole 15 s, question and all.)
#[test]
fn upload_questions_are_shown_and_answered_while_the_tracker_is_silent() {
    let tracker = ScriptedTracker::start(probe_and_join);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let mut peer = start_peer("peer", tracker.addr, dir.path(), &[]);
    peer.join();
    peer.send("SEARCH anything");
    let (first, _) = tracker.next("SEARCH");

    let mut downloader = RawClient::connect(SocketAddr::from(([127, 0, 0, 1], peer.port)));
    assert_eq!(
        downloader.ask(&download_request("notes.txt", peer.port, 4999))["status"],
        "OK"
    );
    // The lines name the connection's address; the claimed port is marked as claimed.
    let from = downloader.stream.local_addr().unwrap();
    peer.wait_for(&format!(
        "Peer {from} (porta de upload declarada: 4999) solicitou o arquivo notes.txt (5 B)"
    ));
    peer.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    peer.send("SIM");
    assert_eq!(downloader.json()["status"], "downloadAccepted");
    assert_eq!(downloader.bytes(5), b"hello");
    peer.wait_for(&format!("Download de notes.txt por {from} aprovado"));
    assert!(
        !peer.proc.printed("Erro ao buscar arquivo"),
        "the SEARCH is still waiting\n{}",
        peer.proc.transcript()
    );

    peer.wait_for("Erro ao buscar arquivo: o servidor não respondeu em 15 s");
    peer.wait_for("O servidor não respondeu em 15 s; reconectando...");
    let (second, _) = tracker.next("JOIN");
    assert_ne!(first, second, "a new connection");
    peer.wait_for("Reconectado ao servidor");
    assert!(!peer.proc.printed("perdida"), "{}", peer.proc.transcript());
}

/// Lines typed while a SEARCH waits for its answer run after it, in order: a `DOWNLOAD name
/// PORT` typed right after the SEARCH goes to the host that search listed, not to the
/// tracker's. Lines that need no tracker run at once: HELP, and NAO to an upload request that
/// arrives meanwhile (which also shows that the DOWNLOAD line, typed before it, was read and
/// kept waiting).
#[test]
fn lines_typed_while_a_search_waits_run_after_its_answer_in_the_order_typed() {
    // The uploader is on 127.0.0.2 (its own tracker), so the port alone would be wrong on
    // 127.0.0.1, the downloader's tracker host.
    let own_tracker = start_tracker(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let [up_dir, down_dir] = folders(tmp.path(), ["up", "down"]);
    std::fs::write(up_dir.join("song.txt"), b"la la la").unwrap();
    std::fs::write(down_dir.join("x.txt"), b"x").unwrap();
    let mut up = start_peer_on(
        "up",
        "127.0.0.2",
        own_tracker.addr,
        &up_dir,
        &["--approve", "yes"],
    );
    up.join();

    let (release, gate) = unbounded::<()>();
    let listed = format!("127.0.0.2:{}", up.port);
    let answer_listed = listed.clone();
    let tracker = ScriptedTracker::start(move |request| match request["method"].as_str() {
        Some("SEARCH") => {
            gate.recv_timeout(WAIT)
                .expect("the test releases the answer");
            Some(json!({"status": "OK", "peers": [answer_listed]}))
        }
        _ => probe_and_join(request),
    });
    let mut down = start_peer("down", tracker.addr, &down_dir, &[]);
    down.join();
    down.wait_for("Comandos: SEARCH"); // the menu printed after JOIN
    down.send("SEARCH song.txt");
    tracker.next("SEARCH");
    down.send("HELP");
    down.wait_for("Comandos: SEARCH"); // HELP's, while the SEARCH waits
    down.send(&format!("DOWNLOAD song.txt {}", up.port));

    let mut asking = RawClient::connect(SocketAddr::from(([127, 0, 0, 1], down.port)));
    assert_eq!(
        asking.ask(&download_request("x.txt", down.port, 4998))["status"],
        "OK"
    );
    let from = asking.stream.local_addr().unwrap();
    down.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    down.send("NAO");
    down.wait_for(&format!("Download de x.txt por {from} recusado"));
    assert!(
        !down.proc.printed("Erro") && !down.proc.printed("Aguardando resposta de"),
        "the DOWNLOAD waits for the SEARCH\n{}",
        down.proc.transcript()
    );

    release.send(()).unwrap();
    down.wait_for(&format!("Peers com arquivo solicitado: ['{listed}']"));
    down.wait_for(&format!("Aguardando resposta de {listed}..."));
    down.wait_for("Arquivo song.txt baixado com sucesso");
    assert_eq!(
        std::fs::read(down_dir.join("song.txt")).unwrap(),
        b"la la la"
    );
}
