//! What an outboard costs on top of the digest (`scripts/bench.sh hash`).
//!
//! The uploader hashes each shared file once. Since the BLAKE3 outboard's root is the file's
//! digest, one read can give both; this measures what that read costs against the plain hash
//! it replaces, on the same file in the page cache, in alternating rounds:
//!
//! - `plain`: BLAKE3 of the whole file, read with 1 MiB positional reads
//!   ([`napster::digests::hash_range`], what the digest cache did);
//! - `outboard`: digest and outboard from one read ([`napster::verified::digest_and_outboard`],
//!   64 KiB positional reads, the outboard written through a buffer to a file beside it).
//!
//! Each round prints the thread's CPU seconds (user + system) per GiB and the wall time; the
//! end prints the medians, the spread and the ratio outboard / plain within each round, with
//! the 1-minute load average. Usage: `bench_hash [SIZE_MIB] [ROUNDS]` (default 1024 and 7);
//! `BENCH_FILE=PATH` uses an existing file (in the page cache or not) instead of writing one.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use napster::digests::hash_range;
use napster::verified::digest_and_outboard;

const GIB: f64 = (1u64 << 30) as f64;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size_mib: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(7);
    let dir = std::env::temp_dir().join(format!("napster-bench-hash-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outcome = run(&dir, size_mib, rounds);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn run(dir: &std::path::Path, size_mib: u64, rounds: usize) -> std::io::Result<()> {
    let path = match std::env::var_os("BENCH_FILE") {
        Some(path) => PathBuf::from(path),
        None => {
            let path = dir.join("data.bin");
            write_file(&path, size_mib << 20)?;
            path
        }
    };
    let file = File::open(&path)?;
    let size = file.metadata()?.len();
    // Into the page cache, so that both read the same way.
    let mut sink = vec![0u8; 1 << 20];
    let mut reader = File::open(&path)?;
    while reader.read(&mut sink)? > 0 {}
    println!(
        "file {} ({:.2} GiB), {rounds} rounds, load {}",
        path.display(),
        size as f64 / GIB,
        load()
    );
    let never = AtomicBool::new(false);
    let mut plain = Vec::new();
    let mut outboard = Vec::new();
    for round in 1..=rounds {
        // Alternate which goes first, so neither always finds a warmer machine.
        let order: [bool; 2] = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        let mut digests = Vec::new();
        for with_outboard in order {
            let (cpu, wall, digest) = if with_outboard {
                timed(|| {
                    let out = BufWriter::new(File::create(dir.join("data.obao"))?);
                    digest_and_outboard(&file, size, out, &never)
                })?
            } else {
                timed(|| {
                    let mut hasher = blake3::Hasher::new();
                    hash_range(&file, 0, size, &mut hasher, &never)?;
                    Ok(hasher.finalize())
                })?
            };
            digests.push(digest);
            let per_gib = |s: f64| s * GIB / size as f64;
            let kind = if with_outboard { "outboard" } else { "plain" };
            println!(
                "round {round} {kind:>8}: cpu {:.3} s/GiB, wall {:.3} s/GiB",
                per_gib(cpu),
                per_gib(wall)
            );
            if with_outboard {
                outboard.push(per_gib(cpu));
            } else {
                plain.push(per_gib(cpu));
            }
        }
        assert_eq!(digests[0], digests[1], "the root is the digest");
    }
    let ratios: Vec<f64> = outboard.iter().zip(&plain).map(|(o, p)| o / p).collect();
    println!(
        "plain    cpu s/GiB: median {:.3}, spread {:.3}-{:.3}",
        median(&plain),
        min(&plain),
        max(&plain)
    );
    println!(
        "outboard cpu s/GiB: median {:.3}, spread {:.3}-{:.3}",
        median(&outboard),
        min(&outboard),
        max(&outboard)
    );
    println!(
        "outboard / plain (same round): median {:.2}, spread {:.2}-{:.2}; load {}",
        median(&ratios),
        min(&ratios),
        max(&ratios),
        load()
    );
    Ok(())
}

/// Runs `f`, returning this thread's CPU seconds (user + system), the wall seconds and its
/// result.
fn timed(
    f: impl FnOnce() -> std::io::Result<blake3::Hash>,
) -> std::io::Result<(f64, f64, blake3::Hash)> {
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let digest = f()?;
    Ok((thread_cpu() - cpu0, t0.elapsed().as_secs_f64(), digest))
}

fn thread_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn write_file(path: &std::path::Path, len: u64) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut written = 0;
    while written < len {
        for b in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        let n = block.len().min((len - written) as usize);
        out.write_all(&block[..n])?;
        written += n as u64;
    }
    out.flush()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
