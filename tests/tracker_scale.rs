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
    let mut t = start_tracker(&["--max-connections", "2"]);
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
    assert!(
        !t.proc.kill_and_printed_anywhere("panicked"),
        "{}",
        t.proc.transcript()
    );
}

/// A tracker started through `sh` after `limit` (a `ulimit` command); killed on drop.
struct LimitedTracker {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    /// The start line saying how many connections it serves and which limit set that.
    summary: String,
}

impl LimitedTracker {
    fn start(nofile: u32) -> LimitedTracker {
        LimitedTracker::start_after(&format!("ulimit -n {nofile}"), "warn")
    }

    fn start_after(limit: &str, log: &str) -> LimitedTracker {
        use std::process::{Command, Stdio};
        let script = format!("{limit} && exec \"$0\" server --listen 127.0.0.1:0");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(napster_bin())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", log)
            .spawn()
            .expect("sh starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("the tracker prints its address");
        let mut summary = String::new();
        stdout
            .read_line(&mut summary)
            .expect("the tracker prints its connection limit");
        let addr = line
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("tracker address in {line:?}"));
        LimitedTracker {
            child,
            addr,
            summary,
        }
    }

    /// What the tracker wrote on stderr up to the first line containing `needle` (log lines
    /// reach stderr from a writer thread, a moment after they are logged), then stops it.
    /// Fails the test after [`WAIT`] without such a line.
    fn stderr_until_then_stop(mut self, needle: &str) -> String {
        use std::io::BufRead;
        let err = self.child.stderr.take().expect("stderr is piped");
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + WAIT;
        let mut text = String::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    text.push_str(&line);
                    text.push('\n');
                    if line.contains(needle) {
                        break;
                    }
                }
                Err(_) => panic!("no {needle:?} on stderr within {WAIT:?}:\n{text}"),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        text
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
/// 64 spare = 16) and says so in its start line; the 17th connection is told the tracker is
/// full instead of stalling on "too many open files", and the 16 connected peers keep working.
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
    assert_eq!(
        t.summary.trim_end(),
        "Até 16 conexões ao mesmo tempo (limite: arquivos abertos (ulimit -n), 80 descritores; \
         --max-connections pedia 16.384)"
    );
    let stderr = t.stop_and_stderr();
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
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

/// Raises this test process's open-file limit to its hard limit; returns the new soft limit.
fn raise_own_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

/// Builds a preload library that, when `NAPSTER_TEST_EAT_MAPS` is set, makes that many memory
/// mappings in the process at start (alternating page protections), so a test can bring a
/// tracker near `vm.max_map_count` without thousands of threads. `None` without a C compiler.
fn map_eating_library(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let source = dir.join("eat_maps.c");
    std::fs::write(
        &source,
        r#"
#include <stdlib.h>
#include <sys/mman.h>
__attribute__((constructor)) static void eat_maps(void) {
    const char *n = getenv("NAPSTER_TEST_EAT_MAPS");
    if (!n) return;
    long count = atol(n), page = 4096;
    char *p = mmap(0, count * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return;
    for (long i = 1; i < count; i += 2) mprotect(p + i * page, page, PROT_NONE);
}
"#,
    )
    .unwrap();
    let library = dir.join("libeat_maps.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source)
        .status();
    matches!(built, Ok(status) if status.success()).then_some(library)
}

/// The crash of issue 10: near `vm.max_map_count`, a new connection thread used to be created
/// and then abort the whole tracker while setting up its signal stack ("failed to set up
/// alternative stack guard page", SIGABRT). Here the tracker starts with all but a few thousand
/// mappings taken: it fits its connection limit to the mappings left, says so at start, and a
/// flood of connections well past where the old tracker aborted is answered "full" while the
/// tracker lives on and serves a peer afterwards.
#[test]
fn near_the_mapping_limit_connections_are_refused_instead_of_aborting() {
    let Some(max_map_count) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    else {
        return skip("no /proc/sys/vm/max_map_count");
    };
    let tmp = tempfile::tempdir().unwrap();
    let Some(library) = map_eating_library(tmp.path()) else {
        return skip("no C compiler (cc) to build the preload library that takes up mappings");
    };
    // Leave the tracker its reserve plus room for about 800 connection threads of 4 mappings.
    let reserve = 2048 + max_map_count / 20;
    let free = reserve + 3200;
    let eat = max_map_count.saturating_sub(250 + free);
    // Where the old tracker aborted: every free mapping taken by threads.
    let old_crash = free / 4;
    let flood = old_crash + 600;
    if raise_own_open_files() < (flood + 200) as u64 {
        return skip("the open-file hard limit is too low for the connection flood");
    }
    let mut cmd = std::process::Command::new(napster_bin());
    cmd.args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--max-connections-per-host",
        "100000",
    ])
    .env("LD_PRELOAD", &library)
    .env("NAPSTER_TEST_EAT_MAPS", eat.to_string());
    let proc = Proc::from_command("tracker", cmd);
    let line = proc.wait_for("Servidor ouvindo em ");
    let addr: std::net::SocketAddr = line.rsplit(' ').next().unwrap().parse().unwrap();
    let summary = proc.wait_for("conexões ao mesmo tempo");
    assert!(summary.contains("limite: vm.max_map_count"), "{summary}");
    let cap: usize = summary
        .trim_start_matches("Até ")
        .split(' ')
        .next()
        .unwrap()
        .replace('.', "")
        .parse()
        .unwrap();
    assert!(
        cap > 100 && cap + 200 < old_crash,
        "cap {cap}, old crash at {old_crash}"
    );

    let held: Vec<std::net::TcpStream> = (0..flood)
        .map(|_| std::net::TcpStream::connect(addr).expect("connects"))
        .collect();
    // Everything past the cap was told the tracker is full.
    for stream in held.iter().skip(cap + 100) {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("no reply past the cap ({e}):\n{}", proc.transcript()));
        assert!(
            line.contains("\"ERROR\"") && line.contains("full"),
            "{line}"
        );
    }
    drop(held);
    let t = TrackerProc { proc, addr };
    let deadline = std::time::Instant::now() + WAIT;
    let mut c = loop {
        if let Some(c) = try_join(&t, 7100, &["after-flood"]) {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tracker stayed full"
        );
    };
    assert_eq!(
        peers_of(&c.ask(&search_msg("after-flood"))),
        vec!["127.0.0.1:7100"]
    );
}

/// A client connecting from `ip` (a loopback address such as 127.0.0.2).
fn connect_from(ip: &str, to: std::net::SocketAddr) -> RawClient {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    RawClient::from_stream(stream)
}

/// With `--max-connections-per-host 3`, a fourth connection from one address is refused with
/// an ERROR saying so and closed, while another host (127.0.0.2) is served; once one of the
/// three closes, the host may connect again.
#[test]
fn one_host_cannot_take_more_than_its_share_of_connections() {
    let t = start_tracker(&["--max-connections-per-host", "3"]);
    let mut mine: Vec<RawClient> = (0..3).map(|_| RawClient::connect(t.addr)).collect();
    assert_eq!(mine[0].ask(&join_msg(7201, &["m"]))["status"], "JOIN_OK");
    let mut fourth = RawClient::connect(t.addr);
    let reply = fourth.json();
    assert_eq!(reply["status"], "ERROR", "{reply}");
    assert_eq!(
        reply["message"],
        "too many connections from your address (3 at once); close some and try again"
    );
    assert!(fourth.closed_within(WAIT));

    let mut other = connect_from("127.0.0.2", t.addr);
    assert_eq!(other.ask(&join_msg(7202, &["o"]))["status"], "JOIN_OK");
    assert_eq!(
        peers_of(&other.ask(&search_msg("m"))),
        vec!["127.0.0.1:7201"]
    );

    drop(mine.pop());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(mut c) = try_join(&t, 7203, &["again"]) {
            assert_eq!(
                peers_of(&c.ask(&search_msg("again"))),
                vec!["127.0.0.1:7203"]
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the host's slot never came back"
        );
    }
}

/// Under an address-space limit (`ulimit -v`) the tracker counts the room left for thread
/// stacks among its limits (`RUST_LOG=debug` shows the figure) and serves no more connections
/// than fit in it, rather than failing to start threads (or aborting in one) when the address
/// space runs out.
#[test]
fn connection_limit_is_fitted_to_the_address_space() {
    // What the tracker maps at start (allocator arenas, mostly) depends on the machine; 2 GB
    // leaves room for a few thousand thread stacks.
    let t = LimitedTracker::start_after("ulimit -v 2000000", "debug");
    let summary = t.summary.clone();
    let cap: usize = summary
        .trim_start_matches("Até ")
        .split(' ')
        .next()
        .unwrap()
        .replace('.', "")
        .parse()
        .unwrap();
    let stderr = t.stderr_until_then_stop("espaço de endereços (ulimit -v): room for ");
    let room: usize = stderr
        .lines()
        .find_map(|l| {
            l.split("connection limit espaço de endereços (ulimit -v): room for ")
                .nth(1)
        })
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no address-space figure in:\n{stderr}"));
    assert!(room < 16_384, "room {room} under 2 GB of address space");
    assert!(
        cap <= room,
        "cap {cap} over the address-space room {room}: {summary}"
    );
}
