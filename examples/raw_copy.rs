//! The transfer benchmark's baseline (`scripts/bench-transfer.sh`): the fastest plain copy of a
//! file over TCP into another file that we know how to write on Linux, with no protocol, no
//! digest and no approval. A DOWNLOAD between two peers is compared against it.
//!
//! Two processes, so that each side's CPU time and peak memory are its own:
//!
//! - `raw_copy recv LISTEN DST STRATEGY` listens on `LISTEN` (e.g. `127.0.0.1:0`), prints
//!   `listening PORT`, takes one connection, writes everything it receives to `DST` (created,
//!   never replaced), `fsync`s it, and prints
//!   `bytes=N end=UNIX_SECONDS fsync=SECONDS cpu=SECONDS rss_kib=K` (and `blake3=HEX`, the
//!   digest of what it received, with `+verify`).
//! - `raw_copy send ADDR SRC` sends `SRC` with `sendfile(2)` in 8 MiB calls (what the uploader
//!   does) and prints `bytes=N cpu=SECONDS rss_kib=K`.
//!
//! Receiving strategies (`STRATEGY`):
//! - `read:SIZE` — `read` into one buffer of SIZE bytes (`64k`, `1m`, ...) until it is full,
//!   then one `write`;
//! - `splice` — `splice(2)` from the socket into a 1 MiB pipe and from the pipe into the file:
//!   the bytes never enter user space;
//! - either with `+wb` — every 8 MiB written, ask the kernel to start writing them to disk
//!   (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that the final `fsync` has less to do;
//! - `splice+wb+verify` — not a candidate for the baseline but a reference beside it: what the
//!   fastest plain copy costs once it verifies what it received. A second thread reads back
//!   each MiB the splice has put in the file (positional reads into one 1 MiB buffer) and
//!   hashes it with BLAKE3, as a page-cache receiver that checks a digest must;
//! - `direct:SIZE` — `read` into one of four SIZE-byte buffers (aligned to 4 KiB) until it is
//!   full, while a second thread writes the previous ones with `O_DIRECT` (no copy into the
//!   page cache; the file's last, partial block through the page cache). No write-back to
//!   ask for: the bytes are on the disk when each write returns.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes per `sendfile` call, as the uploader.
const SEND_CHUNK: usize = 8 << 20;
/// Write-behind window for `+wb`.
const WRITE_BEHIND: u64 = 8 << 20;
/// Pipe size for `splice`.
const PIPE_SIZE: libc::c_int = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["recv", listen, dst, strategy] => {
            Strategy::parse(strategy).and_then(|s| receive(listen, dst, s))
        }
        ["send", addr, src] => send(addr, src),
        _ => {
            eprintln!("usage: raw_copy recv LISTEN DST STRATEGY | raw_copy send ADDR SRC");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw_copy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How the receiver moves bytes from the socket to the file.
#[derive(Clone, Copy)]
struct Strategy {
    how: Receiving,
    write_behind: bool,
    /// Hash what was received, read back from the file (`splice` only).
    verify: bool,
}

#[derive(Clone, Copy)]
enum Receiving {
    Splice,
    /// `read` into a buffer of this many bytes, then `write`.
    Read(usize),
    /// `read` into buffers of this many bytes, written with `O_DIRECT` by a second thread.
    Direct(usize),
}

impl Strategy {
    fn parse(text: &str) -> io::Result<Strategy> {
        let (text, verify) = match text.strip_suffix("+verify") {
            Some(base) => (base, true),
            None => (text, false),
        };
        let (base, write_behind) = match text.strip_suffix("+wb") {
            Some(base) => (base, true),
            None => (text, false),
        };
        let unknown = || io::Error::other(format!("unknown strategy {text:?}"));
        let how = if base == "splice" {
            Receiving::Splice
        } else if let Some(size) = base.strip_prefix("read:") {
            Receiving::Read(parse_size(size).ok_or_else(unknown)?)
        } else if let Some(size) = base.strip_prefix("direct:") {
            let size = parse_size(size).filter(|s| *s > 0 && s % ALIGN == 0);
            Receiving::Direct(size.ok_or_else(unknown)?)
        } else {
            return Err(unknown());
        };
        if verify && !matches!(how, Receiving::Splice) {
            return Err(unknown());
        }
        Ok(Strategy {
            how,
            write_behind,
            verify,
        })
    }
}

/// `64k`, `1m`, `4m` or a plain number of bytes.
fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1 << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1 << 20),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

fn receive(listen: &str, dst: &str, strategy: Strategy) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    println!("listening {}", listener.local_addr()?.port());
    io::stdout().flush()?;
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dst)?;
    let (stream, _) = listener.accept()?;
    let mut behind = WriteBehind::new(strategy.write_behind);
    let (bytes, digest) = match strategy.how {
        Receiving::Read(size) => (receive_read(&stream, &mut out, size, &mut behind)?, None),
        Receiving::Splice if strategy.verify => {
            let (bytes, digest) = receive_verified(&stream, &out, &mut behind)?;
            (bytes, Some(digest))
        }
        Receiving::Splice => (receive_splice(&stream, &out, &mut behind, &|_| {})?, None),
        Receiving::Direct(size) => (receive_direct(&stream, &out, size)?, None),
    };
    let syncing = std::time::Instant::now();
    out.sync_all()?;
    let fsync = syncing.elapsed().as_secs_f64();
    drop(out);
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(io::Error::other)?
        .as_secs_f64();
    let (cpu, rss) = usage();
    // The digest is printed so that the hashing is real work, and can be checked by hand.
    let digest = digest.map(|d| format!(" blake3={d}")).unwrap_or_default();
    println!("bytes={bytes} end={end:.6} fsync={fsync:.6} cpu={cpu:.6} rss_kib={rss}{digest}");
    Ok(())
}

/// Reads into one buffer until it is full (or the stream ends), then writes it.
fn receive_read(
    mut stream: &TcpStream,
    out: &mut File,
    size: usize,
    behind: &mut WriteBehind,
) -> io::Result<u64> {
    let mut buf = vec![0u8; size];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < size {
            match stream.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        out.write_all(&buf[..filled])?;
        total += filled as u64;
        behind.written(out, total);
        if filled < size {
            return Ok(total);
        }
    }
}

/// `splice` (below), while a second thread reads back and hashes what it has put in the file.
fn receive_verified(
    stream: &TcpStream,
    out: &File,
    behind: &mut WriteBehind,
) -> io::Result<(u64, blake3::Hash)> {
    let spliced = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let reader = out.try_clone()?;
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| read_back_and_hash(&reader, &spliced, &done));
        let received = receive_splice(stream, out, behind, &|total| {
            spliced.store(total, Ordering::Release)
        });
        done.store(true, Ordering::Release);
        let (hashed, digest) = hashing
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))??;
        let total = received?;
        if hashed != total {
            return Err(io::Error::other(format!(
                "hashed {hashed} of {total} bytes"
            )));
        }
        Ok((total, digest))
    })
}

/// Hashes the file from its start as far as `spliced` says it is written, a MiB at a time,
/// until `done` and all of it is hashed; returns how many bytes were hashed, and their digest.
fn read_back_and_hash(
    file: &File,
    spliced: &AtomicU64,
    done: &AtomicBool,
) -> io::Result<(u64, blake3::Hash)> {
    const STEP: u64 = 1 << 20;
    let mut buf = vec![0u8; STEP as usize];
    let mut hasher = blake3::Hasher::new();
    let mut hashed = 0u64;
    loop {
        let finished = done.load(Ordering::Acquire);
        let written = spliced.load(Ordering::Acquire);
        while written - hashed >= STEP || (finished && written > hashed) {
            let len = (written - hashed).min(STEP) as usize;
            file.read_exact_at(&mut buf[..len], hashed)?;
            hasher.update(&buf[..len]);
            hashed += len as u64;
        }
        if finished {
            return Ok((hashed, hasher.finalize()));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Moves the bytes socket → pipe → file with `splice`; tells `spliced` the total so far after
/// each step.
fn receive_splice(
    stream: &TcpStream,
    out: &File,
    behind: &mut WriteBehind,
    spliced: &dyn Fn(u64),
) -> io::Result<u64> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (pipe_r, pipe_w) = (fds[0], fds[1]);
    // SAFETY: fcntl on a descriptor we own; a failure only leaves the default size.
    unsafe { libc::fcntl(pipe_w, libc::F_SETPIPE_SZ, PIPE_SIZE) };
    let result = (|| {
        let mut total = 0u64;
        loop {
            // SAFETY: plain descriptors, null offsets (the socket and the pipe have none; the
            // file's own position is used and advanced).
            let n = unsafe {
                libc::splice(
                    stream.as_raw_fd(),
                    std::ptr::null_mut(),
                    pipe_w,
                    std::ptr::null_mut(),
                    PIPE_SIZE as usize,
                    libc::SPLICE_F_MOVE,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(total);
            }
            let mut left = n as usize;
            while left > 0 {
                // SAFETY: as above.
                let m = unsafe {
                    libc::splice(
                        pipe_r,
                        std::ptr::null_mut(),
                        out.as_raw_fd(),
                        std::ptr::null_mut(),
                        left,
                        libc::SPLICE_F_MOVE,
                    )
                };
                if m < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                left -= m as usize;
                total += m as u64;
            }
            spliced(total);
            behind.written(out, total);
        }
    })();
    // SAFETY: closing the two descriptors created above, once.
    unsafe {
        libc::close(pipe_r);
        libc::close(pipe_w);
    }
    result
}

/// Memory addresses, file offsets and lengths of `O_DIRECT` writes are multiples of this.
const ALIGN: usize = 4096;
/// Buffers in flight with `direct:SIZE`.
const DIRECT_BUFFERS: usize = 4;

/// A buffer of `size` bytes starting on an `ALIGN` boundary, inside a plain vector.
struct AlignedBuffer {
    bytes: Vec<u8>,
    skip: usize,
    size: usize,
}

impl AlignedBuffer {
    fn new(size: usize) -> AlignedBuffer {
        let bytes = vec![0u8; size + ALIGN];
        let skip = (ALIGN - bytes.as_ptr().addr() % ALIGN) % ALIGN;
        AlignedBuffer { bytes, skip, size }
    }

    fn window(&mut self) -> &mut [u8] {
        &mut self.bytes[self.skip..self.skip + self.size]
    }
}

/// Reads into aligned buffers while a second thread writes the full ones with `O_DIRECT`.
fn receive_direct(stream: &TcpStream, out: &File, size: usize) -> io::Result<u64> {
    use std::sync::mpsc::sync_channel;
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(out.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0
        || unsafe { libc::fcntl(out.as_raw_fd(), libc::F_SETFL, flags | libc::O_DIRECT) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let (full_tx, full_rx) = sync_channel::<(AlignedBuffer, usize, u64)>(DIRECT_BUFFERS);
    let (free_tx, free_rx) = sync_channel::<AlignedBuffer>(DIRECT_BUFFERS);
    for _ in 0..DIRECT_BUFFERS {
        free_tx
            .send(AlignedBuffer::new(size))
            .map_err(io::Error::other)?;
    }
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> io::Result<()> {
            for (mut buffer, len, at) in full_rx {
                let aligned = len - len % ALIGN;
                out.write_all_at(&buffer.window()[..aligned], at)?;
                if aligned < len {
                    // The file's last block is not whole: through the page cache.
                    // SAFETY: fcntl on a descriptor we own.
                    unsafe { libc::fcntl(out.as_raw_fd(), libc::F_SETFL, flags) };
                    out.write_all_at(&buffer.window()[aligned..len], at + aligned as u64)?;
                }
                let _ = free_tx.send(buffer);
            }
            Ok(())
        });
        let mut total = 0u64;
        let mut reader = stream;
        let received = loop {
            let Ok(mut buffer) = free_rx.recv() else {
                break Ok(total);
            };
            let window = buffer.window();
            let mut filled = 0;
            while filled < size {
                match reader.read(&mut window[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if filled > 0 && full_tx.send((buffer, filled, total)).is_err() {
                break Ok(total);
            }
            total += filled as u64;
            if filled < size {
                break Ok(total);
            }
        };
        drop(full_tx);
        writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer panicked")))?;
        received
    })
}

/// Starts write-back of each full window as soon as it is written.
struct WriteBehind {
    on: bool,
    started: u64,
}

impl WriteBehind {
    fn new(on: bool) -> WriteBehind {
        WriteBehind { on, started: 0 }
    }

    fn written(&mut self, out: &File, total: u64) {
        while self.on && total - self.started >= WRITE_BEHIND {
            // SAFETY: sync_file_range only reads its arguments; failure is harmless here.
            unsafe {
                libc::sync_file_range(
                    out.as_raw_fd(),
                    self.started as libc::off64_t,
                    WRITE_BEHIND as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.started += WRITE_BEHIND;
        }
    }
}

fn send(addr: &str, src: &str) -> io::Result<()> {
    let file = File::open(src)?;
    let len = file.metadata()?.len();
    let stream = TcpStream::connect(addr)?;
    let mut offset: libc::off64_t = 0;
    while (offset as u64) < len {
        let want = (len - offset as u64).min(SEND_CHUNK as u64) as usize;
        // SAFETY: both descriptors are open; `offset` is ours.
        let n =
            unsafe { libc::sendfile64(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, want) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::other("the file shrank"));
        }
    }
    drop(stream);
    let (cpu, rss) = usage();
    println!("bytes={len} cpu={cpu:.6} rss_kib={rss}");
    Ok(())
}

/// CPU seconds (user + system, all threads) and peak resident KiB of this process.
fn usage() -> (f64, i64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime) + secs(ru.ru_stime), ru.ru_maxrss)
}
