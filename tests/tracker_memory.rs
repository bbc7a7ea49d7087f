//! The tracker gives memory back: after millions of names and every peer leaving, its resident
//! size returns near where it started (issue 10, item 3). Measured from `/proc/PID/status`
//! of the real binary, with generous bounds.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;

use common::*;

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc is readable");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

const PEERS: usize = 200;
const NAMES_EACH: usize = 10_000;

/// Connects and JOINs as peer `p` with its 10,000 names (about 300 KB of JSON); returns the
/// open connection.
fn join_peer(addr: std::net::SocketAddr, p: usize) -> TcpStream {
    // Written out by hand: building two million JSON values is slow in a debug build.
    let files: Vec<String> = (0..NAMES_EACH)
        .map(|i| format!(r#"{{"name":"p{p:03} faixa {i:05} ao vivo.mp3","size":{i}}}"#))
        .collect();
    let line = format!(
        "{{\"method\":\"JOIN\",\"data\":{{\"port\":{},\"files\":[{}]}}}}\n",
        20_000 + p,
        files.join(",")
    );
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).unwrap();
    assert!(reply.contains("JOIN_OK"), "peer {p}: {reply}");
    stream
}

/// 200 peers JOIN with 10,000 distinct names each (2 million names, 10 million words); then
/// every peer leaves. The tracker's RSS must come back to within a quarter of what the names
/// took (it held 71% before the tables were compacted and the allocator trimmed).
#[test]
fn two_million_names_leave_and_the_memory_comes_back() {
    let t = start_tracker(&[]);
    let pid = t.proc.pid();
    let idle = rss_kib(pid);
    let streams: Vec<TcpStream> = thread::scope(|s| {
        let joiners: Vec<_> = (0..4)
            .map(|k| {
                s.spawn(move || {
                    (k..PEERS)
                        .step_by(4)
                        .map(|p| join_peer(t.addr, p))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        joiners
            .into_iter()
            .flat_map(|j| j.join().expect("a joiner panicked"))
            .collect()
    });
    let mut asker = RawClient::connect(t.addr);
    let found = asker.ask(&search_msg("faixa 00042 p007"));
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    let full = rss_kib(pid);
    drop(streams);
    for _ in 0..PEERS {
        t.proc.wait_for(" saiu");
    }
    let after = rss_kib(pid);
    eprintln!(
        "tracker RSS: idle {idle} KiB, with 2,000,000 names {full} KiB, after all left {after} KiB"
    );
    assert!(
        full > idle + 200 * 1024,
        "the names took memory: idle {idle} KiB, full {full} KiB"
    );
    assert!(
        after < idle + (full - idle) / 4,
        "idle {idle} KiB, with the names {full} KiB, after every peer left {after} KiB"
    );
    let found = asker.ask(&search_msg("faixa"));
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(0),
        "{found}"
    );
}
