//! The load generator of `scripts/bench.sh tracker`: many peers JOINed, then clients SEARCHing.
//!
//! Against a tracker at `--addr` (ours or the naive baseline; both speak JOIN/SEARCH lines):
//! 1. JOINs `--small` peers (default 1,000), each with `--files` names (default 100) and holds
//!    their connections open;
//! 2. JOINs `--clients` searching peers (default 32) and measures SEARCH latency: one client
//!    alone, then all of them at once;
//! 3. JOINs more peers up to `--peers` (default 10,000) and measures again, the all-clients run
//!    lasting `--secs` seconds (default 10);
//! 4. reads the tracker's RSS and thread count from `/proc/--pid/status`.
//!
//! Two kinds of SEARCH are measured with the full peer count (`--kinds exact,keyword`):
//! - `exact`: a whole name (`track-0001234-artist-title.mp3`), what the original asks;
//! - `keyword`: two words, `0001234 title`: one held by a single name, one held by every name
//!   (the half-the-index case): the rarest word's list is walked, so it costs one candidate.
//!
//! With `--records 1` each peer JOINs `{name, size}` records and then sends one UPDATE adding
//! every file's digest, as a real peer does once it has hashed its files (the naive baseline
//! understands only plain names, so the script gives this to our tracker only).
//!
//! Each client is in lockstep with the tracker: it sends one SEARCH, waits for the whole reply,
//! then sends the next, so SEARCH/s is replies received and latency is send → reply. The
//! tracker's CPU time (user + system, from `/proc/--pid/stat`) per SEARCH is reported too: on a
//! shared machine it swings less than wall time.
//! Each name is shared by `--replicas` peers (default 1: every peer's names are its own, the
//! largest index; with 4, peers 4k..4k+3 share the same names), so a SEARCH answer has the same
//! size whatever the number of peers: only the index grows. Every reply is
//! checked (status OK, the expected peers, the expected result); a wrong one is counted and
//! reported.
//!
//! Results are printed as `RESULT key value` lines for the script, after a readable summary.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

struct Args {
    addr: SocketAddr,
    pid: Option<u32>,
    peers: usize,
    small: usize,
    files: usize,
    clients: usize,
    secs: u64,
    replicas: usize,
    records: bool,
    kinds: Vec<Kind>,
    probe: bool,
}

/// What a SEARCH asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The whole name.
    Exact,
    /// Two words of the name: a rare one and one every name holds.
    Keyword,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::Keyword => "keyword",
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:12346".parse().map_err(|e| format!("{e}"))?,
        pid: None,
        peers: 10_000,
        small: 1_000,
        files: 100,
        clients: 32,
        secs: 10,
        replicas: 1,
        records: false,
        kinds: vec![Kind::Exact],
        probe: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--pid" => args.pid = Some(value.parse().map_err(|e| bad(&e))?),
            "--peers" => args.peers = value.parse().map_err(|e| bad(&e))?,
            "--small" => args.small = value.parse().map_err(|e| bad(&e))?,
            "--files" => args.files = value.parse().map_err(|e| bad(&e))?,
            "--clients" => args.clients = value.parse().map_err(|e| bad(&e))?,
            "--secs" => args.secs = value.parse().map_err(|e| bad(&e))?,
            "--replicas" => args.replicas = value.parse().map_err(|e| bad(&e))?,
            "--records" => args.records = value == "1" || value == "true",
            "--probe" => args.probe = value == "1" || value == "true",
            "--kinds" => {
                args.kinds = value
                    .split(',')
                    .map(|k| match k {
                        "exact" => Ok(Kind::Exact),
                        "keyword" => Ok(Kind::Keyword),
                        other => Err(format!("--kinds: unknown kind {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if args.small > args.peers || args.peers > 40_000 || args.clients == 0 || args.replicas == 0 {
        return Err("need --small <= --peers <= 40000, --clients >= 1 and --replicas >= 1".into());
    }
    Ok(args)
}

/// The `j`-th name of peer `i`: peers `r*k .. r*k + r - 1` share the same names.
fn name(i: usize, j: usize, files: usize, replicas: usize) -> String {
    format!("track-{:07}-artist-title.mp3", (i / replicas) * files + j)
}

/// Reads one reply line (without the newline).
fn read_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<()> {
    line.clear();
    if reader.read_line(line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the tracker closed the connection",
        ));
    }
    Ok(())
}

/// Connects and JOINs as peer `i` (upload port `port`) sharing `names`: plain names, or with
/// `records`, `{name, size}` records followed by an UPDATE adding every digest.
fn join(addr: SocketAddr, port: u16, names: &[String], records: bool) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(&stream);
    let files = if records {
        let list: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(k, name)| serde_json::json!({"name": name, "size": 3_000_000 + k}))
            .collect();
        serde_json::to_string(&list).map_err(io::Error::other)?
    } else {
        serde_json::to_string(names).map_err(io::Error::other)?
    };
    let msg = format!("{{\"method\":\"JOIN\",\"data\":{{\"port\":{port},\"files\":{files}}}}}\n");
    (&stream).write_all(msg.as_bytes())?;
    let mut line = String::new();
    read_line(&mut reader, &mut line)?;
    if !line.contains("JOIN_OK") {
        return Err(io::Error::other(format!("JOIN refused: {}", line.trim())));
    }
    if records {
        let add: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let digest = blake3::hash(name.as_bytes()).to_hex().to_string();
                serde_json::json!({"name": name, "size": 3_000_000 + k, "digest": digest})
            })
            .collect();
        let msg = serde_json::json!({"method": "UPDATE", "data": {"add": add}});
        (&stream).write_all(format!("{msg}\n").as_bytes())?;
        read_line(&mut reader, &mut line)?;
        if !line.contains("UPDATE_OK") {
            return Err(io::Error::other(format!("UPDATE refused: {}", line.trim())));
        }
    }
    Ok(stream)
}

/// JOINs peers `from..to` with a few threads; returns their open connections.
fn join_peers(args: &Args, from: usize, to: usize) -> io::Result<Vec<TcpStream>> {
    let threads = 4;
    let per = (to - from).div_ceil(threads).max(1);
    let mut handles = Vec::new();
    for start in (from..to).step_by(per) {
        let end = (start + per).min(to);
        let (addr, files, replicas, records) = (args.addr, args.files, args.replicas, args.records);
        handles.push(thread::spawn(move || -> io::Result<Vec<TcpStream>> {
            (start..end)
                .map(|i| {
                    let names: Vec<String> =
                        (0..files).map(|j| name(i, j, files, replicas)).collect();
                    join(addr, 10_000 + i as u16, &names, records)
                })
                .collect()
        }));
    }
    let mut all = Vec::with_capacity(to - from);
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| io::Error::other("a joiner panicked"))??,
        );
    }
    Ok(all)
}

/// What one measurement saw.
struct Run {
    searches: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<u64>,
    /// The tracker's CPU time (user, system) during the run, in µs, when its pid is known.
    cpu_us: Option<(f64, f64)>,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.searches as f64 / self.elapsed.as_secs_f64()
    }

    /// The tracker's CPU µs per SEARCH: (user + system, user).
    fn cpu_us_per_search(&self) -> (f64, f64) {
        match self.cpu_us {
            Some((user, system)) if self.searches > 0 => {
                let n = self.searches as f64;
                ((user + system) / n, user / n)
            }
            _ => (f64::NAN, f64::NAN),
        }
    }

    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }
}

/// The tracker's CPU time so far (user, system), in µs, from `/proc/PID/stat`.
fn cpu_us(pid: Option<u32>) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((user / hz * 1e6, system / hz * 1e6))
}

/// `clients` searchers SEARCH in lockstep for `dur`, over names of the first `peers` peers.
fn measure(
    clients: &[TcpStream],
    args: &Args,
    peers: usize,
    dur: Duration,
    kind: Kind,
) -> io::Result<Run> {
    let barrier = Arc::new(Barrier::new(clients.len() + 1));
    let universe = (peers / args.replicas) * args.files;
    let expect_peers = args.replicas.min(peers);
    let check = Check {
        kind,
        expect_peers,
        digests: args.records,
    };
    let cpu_before = cpu_us(args.pid);
    let results = thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(k, stream)| {
                let barrier = Arc::clone(&barrier);
                s.spawn(move || search_loop(stream, k, universe, check, dur, &barrier))
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (results, start.elapsed())
    });
    let (results, elapsed) = results;
    let cpu = cpu_before
        .zip(cpu_us(args.pid))
        .map(|(a, b)| (b.0 - a.0, b.1 - a.1));
    let mut run = Run {
        searches: 0,
        errors: 0,
        first_error: None,
        elapsed,
        latencies: Vec::new(),
        cpu_us: cpu,
    };
    for r in results {
        let (lat, errors, first) = r.map_err(|_| io::Error::other("a searcher panicked"))??;
        run.searches += lat.len();
        run.errors += errors;
        run.first_error = run.first_error.or(first);
        run.latencies.extend(lat);
    }
    run.latencies.sort_unstable();
    Ok(run)
}

/// Restricts every thread of process `pid` (`None`: this process) to the CPUs in `cpus`.
fn set_affinity(pid: Option<u32>, cpus: &[usize]) -> io::Result<()> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_string(),
    };
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    for entry in std::fs::read_dir(dir)? {
        let Ok(tid) = entry?.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        // SAFETY: sched_setaffinity reads the set we pass; a thread that has exited meanwhile
        // gives ESRCH, which is fine to ignore.
        unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    }
    Ok(())
}

/// One client alone, in 10 windows of 0.3 s; returns the window with the lowest median.
///
/// A lone request-reply is mostly wake-up time, and on an otherwise idle machine that swings
/// between two modes (about 13 µs when the tracker's thread wakes on the client's core, 40–60 µs
/// when it wakes on the other, idle one), whatever the peer count. To compare the peer counts
/// and not the scheduler's placement, both processes are held on CPU 0 while the lone client
/// runs, and let go afterwards; the quietest window is then taken.
fn quietest(client: &TcpStream, args: &Args, peers: usize) -> io::Result<Run> {
    let all: Vec<usize> = (0..thread::available_parallelism().map_or(1, |n| n.get())).collect();
    set_affinity(args.pid, &[0])?;
    set_affinity(None, &[0])?;
    let run = quietest_windows(client, args, peers);
    set_affinity(args.pid, &all)?;
    set_affinity(None, &all)?;
    run
}

fn quietest_windows(client: &TcpStream, args: &Args, peers: usize) -> io::Result<Run> {
    let mut best: Option<Run> = None;
    let mut medians = Vec::new();
    for _ in 0..10 {
        let run = measure(
            std::slice::from_ref(client),
            args,
            peers,
            Duration::from_millis(300),
            Kind::Exact,
        )?;
        medians.push(format!("{:.1}", run.percentile_us(0.5)));
        if best
            .as_ref()
            .is_none_or(|b| run.percentile_us(0.5) < b.percentile_us(0.5))
        {
            best = Some(run);
        }
    }
    println!(
        "one client (both processes on CPU 0), {peers} peers: p50 per 0.3 s window (µs): {}",
        medians.join(" ")
    );
    best.ok_or_else(|| io::Error::other("no window measured"))
}

type SearchResult = (Vec<u64>, usize, Option<String>);

/// What a right reply holds.
#[derive(Debug, Clone, Copy)]
struct Check {
    kind: Kind,
    expect_peers: usize,
    /// The peers announced digests: results carry them (our tracker only).
    digests: bool,
}

impl Check {
    fn query(&self, id: usize) -> String {
        match self.kind {
            Kind::Exact => format!("track-{id:07}-artist-title.mp3"),
            Kind::Keyword => format!("{id:07} title"),
        }
    }

    /// True if `line` is the right answer for name number `id`.
    fn holds(&self, line: &str, id: usize) -> bool {
        let peers = line
            .split_once("\"peers\":[")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list.matches("127.0.0.1:").count());
        let result = format!("\"results\":[{{\"name\":\"track-{id:07}-artist-title.mp3\"");
        let holders = format!("\"holders\":{}", self.expect_peers);
        match self.kind {
            // The baseline has no `results`: for it only `peers` is checked.
            Kind::Exact => {
                line.contains("\"OK\"")
                    && peers == Some(self.expect_peers)
                    && (!line.contains("\"results\"") || line.contains(&result))
                    && (!self.digests || line.contains("\"digest\":\""))
            }
            Kind::Keyword => {
                line.contains("\"OK\"")
                    && peers == Some(0)
                    && line.contains(&result)
                    && line.contains(&holders)
                    && line.matches("\"name\":").count() == 1
                    && (!self.digests || line.contains("\"digest\":\""))
            }
        }
    }
}

fn search_loop(
    stream: &TcpStream,
    k: usize,
    universe: usize,
    check: Check,
    dur: Duration,
    barrier: &Barrier,
) -> io::Result<SearchResult> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut lat = Vec::with_capacity(1 << 16);
    let (mut errors, mut first_error) = (0, None);
    barrier.wait();
    let end = Instant::now() + dur;
    while Instant::now() < end {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = (x % universe.max(1) as u64) as usize;
        let msg = format!(
            "{{\"method\":\"SEARCH\",\"data\":{{\"query\":\"{}\"}}}}\n",
            check.query(id)
        );
        let t0 = Instant::now();
        (&*stream).write_all(msg.as_bytes())?;
        read_line(&mut reader, &mut line)?;
        lat.push(t0.elapsed().as_nanos() as u64);
        if !check.holds(&line, id) {
            errors += 1;
            first_error.get_or_insert_with(|| line.trim().to_string());
        }
    }
    Ok((lat, errors, first_error))
}

/// `(VmRSS in KiB, Threads, VmSize in KiB)` of process `pid`.
fn proc_status(pid: Option<u32>) -> (u64, u64, u64) {
    let Some(pid) = pid else { return (0, 0, 0) };
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"), field("VmSize:"))
}

fn report(label: &str, run: &Run) {
    println!(
        "{label}: {} SEARCH in {:.2} s = {:.0}/s, p50 {:.1} µs, p99 {:.1} µs, {} wrong replies",
        run.searches,
        run.elapsed.as_secs_f64(),
        run.per_sec(),
        run.percentile_us(0.50),
        run.percentile_us(0.99),
        run.errors
    );
    if let Some(e) = &run.first_error {
        println!("{label}: first wrong reply: {e}");
    }
    println!("RESULT {label}_per_sec {:.0}", run.per_sec());
    println!("RESULT {label}_p50_us {:.1}", run.percentile_us(0.50));
    println!("RESULT {label}_p99_us {:.1}", run.percentile_us(0.99));
    println!("RESULT {label}_errors {}", run.errors);
    let (cpu, user) = run.cpu_us_per_search();
    println!("RESULT {label}_cpu_us {cpu:.2}");
    println!("RESULT {label}_user_us {user:.2}");
    println!("RESULT {label}_sys_us {:.2}", cpu - user);
}

fn main() {
    if let Err(e) = run() {
        eprintln!("tracker_load: {e}");
        std::process::exit(1);
    }
}

/// What the tracker at `addr` understands: `{name, size}` records in JOIN, and keyword SEARCH
/// (a word of a shared name finds it in `results`). Printed as `RESULT records 0|1` and
/// `RESULT keyword 0|1`, so that the script can compare an older build on what it supports.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let names = ["probe-wordcheck.txt".to_string()];
    let records = join(addr, 9, &names, true).is_ok();
    let stream = join(addr, 10, &names, false)?;
    let mut reader = BufReader::new(&stream);
    (&stream).write_all(b"{\"method\":\"SEARCH\",\"data\":{\"query\":\"wordcheck\"}}\n")?;
    let mut line = String::new();
    read_line(&mut reader, &mut line)?;
    let keyword = line.contains("\"results\"") && line.contains(&names[0]);
    println!("RESULT records {}", u8::from(records));
    println!("RESULT keyword {}", u8::from(keyword));
    Ok(())
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    if args.probe {
        return probe(args.addr).map_err(|e| format!("probe: {e}"));
    }
    let fds = napster::tracker::raise_open_file_limit().map_err(|e| e.to_string())?;
    let needed = (args.peers + args.clients + 64) as u64;
    if fds < needed {
        return Err(format!(
            "the open-file limit is {fds}; {needed} are needed (raise the hard limit)"
        ));
    }
    let e = |what: &str| {
        let what = what.to_string();
        move |err: io::Error| format!("{what}: {err}")
    };
    let t = Instant::now();
    let mut held = join_peers(&args, 0, args.small).map_err(e("joining peers"))?;
    println!(
        "{} peers joined in {:.1} s",
        held.len(),
        t.elapsed().as_secs_f64()
    );
    let clients: Vec<TcpStream> = (0..args.clients)
        .map(|k| {
            join(
                args.addr,
                30_000 + k as u16,
                &[format!("client-{k}.txt")],
                false,
            )
        })
        .collect::<io::Result<_>>()
        .map_err(e("joining clients"))?;
    let short = Duration::from_secs(3);
    let one_small = quietest(&clients[0], &args, args.small).map_err(e("search"))?;
    report("one_client_small", &one_small);
    let all_small =
        measure(&clients, &args, args.small, short, Kind::Exact).map_err(e("search"))?;
    report("clients_small", &all_small);

    let t = Instant::now();
    held.extend(join_peers(&args, args.small, args.peers).map_err(e("joining peers"))?);
    println!(
        "{} peers joined in {:.1} s",
        held.len(),
        t.elapsed().as_secs_f64()
    );
    let (rss, threads, virt) = proc_status(args.pid);
    println!(
        "tracker after JOINs: RSS {} MiB, {threads} threads, virtual {} MiB",
        rss / 1024,
        virt / 1024
    );
    println!("RESULT rss_joined_kib {rss}");
    println!("RESULT threads_joined {threads}");

    let one_big = quietest(&clients[0], &args, args.peers).map_err(e("search"))?;
    report("one_client_big", &one_big);
    for &kind in &args.kinds {
        let run = measure(
            &clients,
            &args,
            args.peers,
            Duration::from_secs(args.secs),
            kind,
        )
        .map_err(e("search"))?;
        // `clients_big` is the exact kind, as before keyword search existed.
        let label = match kind {
            Kind::Exact => "clients_big".to_string(),
            other => format!("{}_big", other.label()),
        };
        report(&label, &run);
    }
    let (rss, threads, virt) = proc_status(args.pid);
    println!(
        "tracker after SEARCHes: RSS {} MiB, {threads} threads, virtual {} MiB",
        rss / 1024,
        virt / 1024
    );
    println!("RESULT rss_kib {rss}");
    println!("RESULT threads {threads}");
    println!("RESULT virtual_kib {virt}");
    drop(held);
    Ok(())
}
