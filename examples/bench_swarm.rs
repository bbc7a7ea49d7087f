//! Swarm benchmark driver (not a test; run by `scripts/bench.sh swarm`, as root).
//!
//! Builds five hosts in network namespaces on one bridge: a tracker, three uploaders whose
//! sending side is limited to `--rate` (`tc tbf`, default 50mbit), and a downloader with an
//! unshaped link. All three uploaders share the same file. Then, alternating for `--rounds`
//! rounds, it times from the command to the success line:
//!   (a) the baseline: `DOWNLOAD name IP:PORT`, the whole file from one uploader, and
//!   (b) `DOWNLOAD name`, the same file from all three at once, every piece verified,
//! deleting the copy after each. It prints every round, the medians and spread, the ratio
//! (a)/(b) (target ≥ 2.5), the downloader's CPU seconds per round and the peak resident memory
//! (`VmHWM`) of every peer (target ≤ 32 MiB).
//!
//! Usage: bench_swarm NAPSTER_BINARY [--size-mib N] [--rounds R] [--rate RATE]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};

const WAIT: Duration = Duration::from_secs(600);
const NAME: &str = "video.bin";

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_swarm: {e}");
        std::process::exit(1);
    }
}

struct Options {
    napster: PathBuf,
    size_mib: u64,
    rounds: usize,
    rate: String,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let napster = PathBuf::from(args.next().ok_or("usage: bench_swarm NAPSTER [options]")?);
    let mut o = Options {
        napster,
        size_mib: 200,
        rounds: 5,
        rate: "50mbit".into(),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--size-mib" => o.size_mib = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--rounds" => o.rounds = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--rate" => o.rate = value,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn run() -> Result<(), String> {
    let o = options()?;
    let lab = Lab::new(&["tracker", "a", "b", "c", "down"])?;
    for role in ["a", "b", "c"] {
        lab.shape(role, &o.rate)?;
    }
    let work = tempdir()?;
    let dirs: HashMap<&str, PathBuf> = ["a", "b", "c", "down"]
        .iter()
        .map(|r| (*r, work.join(r)))
        .collect();
    for d in dirs.values() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    println!("creating a {} MiB file of random bytes...", o.size_mib);
    random_file(&dirs["a"].join(NAME), o.size_mib << 20)?;
    for r in ["b", "c"] {
        std::fs::copy(dirs["a"].join(NAME), dirs[r].join(NAME)).map_err(|e| e.to_string())?;
    }

    let tracker = lab.napster(
        "tracker",
        &o.napster,
        &["server", "--listen", &format!("{}:0", lab.ip("tracker"))],
    )?;
    let line = tracker.wait_for("Servidor ouvindo em ")?;
    let taddr = line.rsplit(' ').next().unwrap_or_default().to_string();
    let mut peers = Vec::new();
    let mut addrs = HashMap::new();
    for role in ["a", "b", "c", "down"] {
        let approve = if role == "down" { "no" } else { "yes" };
        let dir = dirs[role].to_string_lossy().to_string();
        let listen = format!("{}:0", lab.ip(role));
        let p = lab.napster(
            role,
            &o.napster,
            &[
                "peer",
                "--server",
                &taddr,
                "--listen",
                &listen,
                "--dir",
                &dir,
                "--approve",
                approve,
                "--join",
            ],
        )?;
        let line = p.wait_for("Sou o Peer ")?;
        let addr = line
            .split("Sou o Peer ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_default()
            .to_string();
        addrs.insert(role, addr);
        peers.push(p);
    }
    // Every uploader hashes its file in the background at start; wait until each has, by
    // asking once (a whole-file download from each would take too long: a tiny warm-up file
    // would not compute the outboard). A first swarm round does the rest, untimed.
    println!("warm-up: one swarm download (outboards computed), not timed");
    let down = peers.last_mut().ok_or("no downloader")?;
    down.send(&format!("SEARCH {NAME}"))?;
    down.wait_for("Peers com arquivo solicitado:")?;
    down.send(&format!("DOWNLOAD {NAME}"))?;
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"))?;
    remove_copy(&dirs["down"])?;

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{} MiB, uploaders limited to {} each, {} rounds; load average {}",
        o.size_mib,
        o.rate,
        o.rounds,
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    let mut single = Vec::new();
    let mut swarm = Vec::new();
    for round in 1..=o.rounds {
        for (kind, command, times) in [
            (
                "single",
                format!("DOWNLOAD {NAME} {}", addrs["a"]),
                &mut single,
            ),
            ("swarm ", format!("DOWNLOAD {NAME}"), &mut swarm),
        ] {
            let down = peers.last_mut().ok_or("no downloader")?;
            let cpu_before = cpu_seconds(down.pid());
            let start = Instant::now();
            if kind.starts_with("swarm") {
                // The search that tells the console who holds the file is part of the time.
                down.send(&format!("SEARCH {NAME}"))?;
                down.wait_for("Peers com arquivo solicitado:")?;
            }
            down.send(&command)?;
            down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"))?;
            let took = start.elapsed().as_secs_f64();
            let cpu = cpu_seconds(down.pid()) - cpu_before;
            remove_copy(&dirs["down"])?;
            let rate = o.size_mib as f64 / took;
            println!(
                "round {round} {kind}: {took:7.2} s  {rate:7.2} MiB/s  downloader CPU {cpu:.2} s"
            );
            times.push(took);
        }
    }
    let (ms, mw) = (median(&single), median(&swarm));
    println!(
        "single-source: median {ms:.2} s (spread {:.2}–{:.2} s); swarm: median {mw:.2} s (spread {:.2}–{:.2} s)",
        min(&single),
        max(&single),
        min(&swarm),
        max(&swarm)
    );
    println!(
        "ratio single/swarm (median): {:.2}x (target >= 2.5); slowest swarm vs fastest single: {:.2}x",
        ms / mw,
        min(&single) / max(&swarm)
    );
    if let Some(bits) = rate_bits(&o.rate) {
        // TCP payload in a full Ethernet frame: 1448 of 1514 bytes (timestamps on).
        let link = bits / 8.0 * 1448.0 / 1514.0 / 1048576.0;
        println!(
            "one link carries at most {link:.2} MiB/s of TCP payload: single-source at {:.0} % of it, swarm at {:.0} % of three",
            o.size_mib as f64 / ms / link * 100.0,
            o.size_mib as f64 / mw / (3.0 * link) * 100.0
        );
    }
    for (role, p) in ["a", "b", "c", "down"].iter().zip(&peers) {
        println!(
            "peak RSS {role}: {:.1} MiB",
            vm_hwm_kib(p.pid()) as f64 / 1024.0
        );
    }
    for p in &mut peers {
        let _ = p.send("QUIT");
    }
    drop(peers);
    drop(tracker);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// `50mbit`, `1gbit`, `800kbit` in bits per second.
fn rate_bits(rate: &str) -> Option<f64> {
    let digits: String = rate
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = digits.parse().ok()?;
    let scale = match &rate[digits.len()..] {
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bit" => 1.0,
        _ => return None,
    };
    Some(value * scale)
}

fn remove_copy(dir: &Path) -> Result<(), String> {
    std::fs::remove_file(dir.join(NAME)).map_err(|e| format!("removing the copy: {e}"))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("napster-bench-swarm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn random_file(path: &Path, len: u64) -> Result<(), String> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    out.flush().map_err(|e| e.to_string())
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Hosts in network namespaces named `napster-swarm-bench-<pid>-<role>`, host `i` at
/// `10.79.0.<i+1>`, on a bridge in a namespace of its own; deleted when dropped.
struct Lab {
    prefix: String,
    roles: Vec<String>,
    created: Vec<String>,
}

impl Lab {
    fn new(roles: &[&str]) -> Result<Lab, String> {
        let mut lab = Lab {
            prefix: format!("napster-swarm-bench-{}", std::process::id()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            created: Vec::new(),
        };
        let switch = lab.ns("switch");
        ip(&["netns", "add", &switch])?;
        lab.created.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, role) in roles.iter().enumerate() {
            let host = lab.ns(role);
            ip(&["netns", "add", &host])?;
            lab.created.push(host.clone());
            let port = format!("v-{role}");
            let addr = format!("10.79.0.{}/24", i + 1);
            ip(&[
                "link", "add", "eth0", "netns", &host, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &port, "up"])?;
            ip(&["-n", &host, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn shape(&self, role: &str, rate: &str) -> Result<(), String> {
        ip(&[
            "netns",
            "exec",
            &self.ns(role),
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "64kb",
            "latency",
            "400ms",
        ])
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn ip(&self, role: &str) -> String {
        let i = self.roles.iter().position(|r| r == role).unwrap_or(0);
        format!("10.79.0.{}", i + 1)
    }

    fn napster(&self, role: &str, napster: &Path, args: &[&str]) -> Result<Proc, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(role)])
            .arg(napster)
            .args(args);
        Proc::spawn(role, cmd)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Result<Proc, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env("RUST_LOG", "warn");
        let mut child = cmd.spawn().map_err(|e| format!("{name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = unbounded();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
        })
    }

    fn wait_for(&self, needle: &str) -> Result<String, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) if line.contains("Erro ao processar download") => {
                    return Err(format!("{}: {line}", self.name));
                }
                Ok(_) => {}
                Err(_) => return Err(format!("{}: no line {needle:?} in time", self.name)),
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{line}").map_err(|e| format!("{}: {e}", self.name))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
