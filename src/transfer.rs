//! Moving a file's bytes over a socket: streaming in bounded chunks, digests, partial files.
//!
//! - Sending uses `sendfile(2)` on Linux: the bytes never enter user space on the uploader.
//!   It is done in chunks so that progress can be reported and a stop request honoured
//!   between them.
//! - Receiving a large transfer on Linux reads into a few buffers of ours and writes them
//!   with `O_DIRECT`, straight to the disk, hashing (BLAKE3) each buffer once written (see
//!   `direct.rs`); a small one, or where the file system refuses `O_DIRECT`, moves the bytes
//!   socket → pipe → file with `splice(2)` while a second thread hashes each piece back from
//!   the page cache just after it landed. Either way the digest is of the bytes in the file,
//!   and memory does not grow with the file.
//! - A download is written under a temporary name (see [`crate::partial`], re-exported here)
//!   and given its final name only when all bytes arrived and the digest matched.
//!
//! This module knows nothing of the protocol's messages.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;

use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::digests::{DigestHex, hash_range};
pub use crate::partial::{Partial, PartialRecord, PartialStore};

#[cfg(target_os = "linux")]
mod direct;

/// Bytes handed to one `sendfile` call: small enough to report progress and notice a stop.
const SEND_CHUNK: u64 = 8 << 20;
/// Bytes moved per step when receiving (the pipe's size with `splice`, the buffer's without).
pub const RECEIVE_CHUNK: usize = 1 << 20;
/// Received bytes are handed to the disk (write-back started) in windows of this size.
const WRITE_BEHIND: u64 = 8 << 20;

/// Sends `len` bytes of `file` starting at `offset` to `stream`, calling `progress` with the
/// total sent after each chunk. Stops with `Interrupted` when `stop` is set, and with
/// `UnexpectedEof` if the file ends early (it shrank while being sent).
///
/// On Linux the bytes go with `sendfile(2)` straight from the page cache to the socket: they
/// never enter user space. (`std::io::copy` does not do this for a `TcpStream`: traced, it
/// moves 8 KiB at a time through `read` and `sendto`.) Elsewhere, or on a file system that
/// refuses `sendfile`, a buffered copy does the same job.
pub fn send_range(
    file: &File,
    offset: u64,
    len: u64,
    stream: &TcpStream,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let mut sent = 0u64;
    let mut zero_copy = cfg!(target_os = "linux");
    while sent < len {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the transfer was stopped",
            ));
        }
        let chunk = (len - sent).min(SEND_CHUNK);
        let n = if zero_copy {
            match sendfile_chunk(file, offset + sent, chunk, stream) {
                Ok(n) => n,
                // Only before the first byte: then nothing is lost by switching.
                Err(e) if sent == 0 && sendfile_unsupported(&e) => {
                    log::debug!("sendfile unavailable ({e}); copying through a buffer");
                    zero_copy = false;
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            copy_chunk(file, offset + sent, chunk, stream)?
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file shrank while being sent ({sent} of {len} bytes)"),
            ));
        }
        sent += n;
        progress(sent);
    }
    Ok(())
}

/// True when `sendfile` cannot be used for this file or socket at all.
fn sendfile_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

/// Sends up to `len` bytes of `file` from `offset` with `sendfile`; returns how many were sent
/// (0 only at the end of the file). The file's own position is neither used nor moved.
#[cfg(target_os = "linux")]
fn sendfile_chunk(file: &File, offset: u64, len: u64, stream: &TcpStream) -> io::Result<u64> {
    let mut done = 0u64;
    while done < len {
        let mut at = offset + done;
        // The kernel's offset is signed: past that, the same error libc's off64_t gave.
        if i64::try_from(at).is_err() {
            return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
        }
        let want = usize::try_from(len - done).unwrap_or(usize::MAX);
        match rustix::fs::sendfile(stream, file, Some(&mut at), want) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(e) => {
                let e = io::Error::from(e);
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    // SO_SNDTIMEO expired: the downloader stopped reading.
                    io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the downloader stopped receiving",
                        ));
                    }
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(done)
}

#[cfg(not(target_os = "linux"))]
fn sendfile_chunk(_: &File, _: u64, _: u64, _: &TcpStream) -> io::Result<u64> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Sends up to `len` bytes of `file` from `offset` through a buffer.
fn copy_chunk(file: &File, offset: u64, len: u64, stream: &TcpStream) -> io::Result<u64> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    let mut writer = stream;
    io::copy(&mut reader.take(len), &mut writer)
}

/// Why receiving stopped early.
#[derive(Debug)]
pub enum ReceiveError {
    /// The sender closed after this many bytes (of the expected count).
    Short {
        /// Bytes received in this transfer.
        got: u64,
        /// Bytes expected in this transfer.
        expected: u64,
    },
    /// Writing to disk failed (disk full, file too large, ...) after this many bytes.
    Disk {
        /// Bytes received and written before the failure.
        written: u64,
        /// The write error.
        error: io::Error,
    },
    /// Reading from the network failed.
    Network {
        /// Bytes received before the failure.
        got: u64,
        /// The read error.
        error: io::Error,
    },
    /// A stop was requested.
    Stopped {
        /// Bytes received before the stop.
        got: u64,
    },
}

/// For logs and error chains; the peer tells the user in its own words (the downloader's
/// `receive_problem`), since this module knows nothing of who reads it.
impl std::fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiveError::Short { got, expected } => {
                write!(f, "the sender closed after {got} of {expected} bytes")
            }
            ReceiveError::Disk { written, .. } => {
                write!(f, "writing failed after {written} bytes")
            }
            ReceiveError::Network { got, .. } => {
                write!(f, "receiving failed after {got} bytes")
            }
            ReceiveError::Stopped { got } => write!(f, "stopped after {got} bytes"),
        }
    }
}

impl std::error::Error for ReceiveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReceiveError::Disk { error, .. } | ReceiveError::Network { error, .. } => Some(error),
            ReceiveError::Short { .. } | ReceiveError::Stopped { .. } => None,
        }
    }
}

impl ReceiveError {
    /// The same error counted from byte `start` of the whole file instead of from the start of
    /// this transfer (a resumed download), so that the user sees positions in the file.
    pub fn offset_by(self, start: u64) -> ReceiveError {
        match self {
            ReceiveError::Short { got, expected } => ReceiveError::Short {
                got: got + start,
                expected: expected + start,
            },
            ReceiveError::Disk { written, error } => ReceiveError::Disk {
                written: written + start,
                error,
            },
            ReceiveError::Network { got, error } => ReceiveError::Network {
                got: got + start,
                error,
            },
            ReceiveError::Stopped { got } => ReceiveError::Stopped { got: got + start },
        }
    }

    /// Bytes of this transfer that are whole on disk.
    pub fn kept(&self) -> u64 {
        match self {
            ReceiveError::Short { got, .. }
            | ReceiveError::Network { got, .. }
            | ReceiveError::Stopped { got } => *got,
            ReceiveError::Disk { written, .. } => *written,
        }
    }
}

/// True for "no space left" and "file too large" (`RLIMIT_FSIZE`, quota).
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT)
    )
}

/// Where received bytes land: a file open for writing and reading, positioned at `start`, and
/// the BLAKE3 state of its first `start` bytes (a resumed download; empty otherwise).
pub struct Landing<'a> {
    /// The partial file.
    pub file: &'a File,
    /// The byte the received bytes start at.
    pub start: u64,
    /// The digest state of the bytes before `start`.
    pub hasher: blake3::Hasher,
}

/// Receives exactly `expected` bytes into the landing file: first `already` (bytes that
/// arrived with the last message), then from `stream`. Returns the BLAKE3 of the whole file as
/// it now is on disk: the landing's hasher holds the bytes before, the rest is hashed from
/// what was written.
///
/// A transfer of 8 MiB or more on Linux is written with `O_DIRECT` from buffers that are
/// hashed once written (`transfer/direct.rs`): no copy into the page cache and no reading back,
/// which on the machine measured cost less CPU and time. Otherwise (a small transfer, a
/// file system that refuses `O_DIRECT`) the bytes go through the page cache (`splice`), as below.
///
/// On error, the bytes counted in the error are whole in the file.
pub fn receive_exact(
    already: &[u8],
    stream: &TcpStream,
    expected: u64,
    landing: Landing<'_>,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<blake3::Hash, ReceiveError> {
    #[cfg(target_os = "linux")]
    if expected >= direct::WORTH_IT
        && let Some(file) = direct::DirectFile::open(landing.file)
    {
        return direct::receive(already, stream, expected, (landing, file), stop, progress);
    }
    receive_through_page_cache(already, stream, expected, landing, stop, progress)
}

/// [`receive_exact`] through the page cache. On Linux the bytes go socket → pipe → file with
/// `splice(2)`: they never enter user space, which halves the copying a `read` and `write`
/// cost. A second thread hashes each piece from the page cache just after it landed, so the
/// digest is of what is in the file, not of what was meant to be, and hashing runs beside
/// receiving. Every 8 MiB the kernel is asked to start writing the window to disk, so that
/// write-back keeps pace instead of piling up for the final `fsync`. Elsewhere, or where
/// `splice` is refused, a buffer does the same job.
fn receive_through_page_cache(
    already: &[u8],
    stream: &TcpStream,
    expected: u64,
    landing: Landing<'_>,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<blake3::Hash, ReceiveError> {
    let Landing {
        file: out,
        start,
        hasher,
    } = landing;
    let (landed_tx, landed_rx) = crossbeam_channel::bounded::<u64>(HASH_QUEUE);
    let abandon = AtomicBool::new(false);
    let stop_hashing = &abandon;
    std::thread::scope(|scope| {
        // The receiver end moves into the thread: if hashing fails, the channel closes and the
        // receiving side's notices stop blocking.
        let hashing = std::thread::Builder::new()
            .name("download-hash".into())
            .spawn_scoped(scope, move || {
                hash_as_it_lands(out, start, hasher, landed_rx, stop_hashing)
            })
            .map_err(|error| ReceiveError::Disk { written: 0, error })?;
        let mut on_landed = move |end| {
            let _ = landed_tx.send(end);
        };
        let target = (out, start);
        let received = land_all(
            already,
            stream,
            expected,
            target,
            stop,
            progress,
            &mut on_landed,
        );
        // The hashing thread ends when the last sender is gone.
        drop(on_landed);
        if received.is_err() {
            abandon.store(true, Ordering::Relaxed);
        }
        let hashed = hashing
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the hashing thread panicked")));
        received?;
        hashed.map_err(|error| ReceiveError::Disk {
            written: expected,
            error,
        })
    })
}

/// Landed-byte notices the receiver may queue ahead of the hashing thread (each up to
/// [`RECEIVE_CHUNK`]): a bound on how far hashing may fall behind, in the page cache.
const HASH_QUEUE: usize = 16;

/// The hashing thread: reads each newly landed piece of `out` back and hashes it, until the
/// receiver hangs up. `landed` carries the file offset up to which bytes are in the file.
fn hash_as_it_lands(
    out: &File,
    start: u64,
    mut hasher: blake3::Hasher,
    landed: crossbeam_channel::Receiver<u64>,
    abandon: &AtomicBool,
) -> io::Result<blake3::Hash> {
    let mut hashed = start;
    for end in landed {
        let len = end - hashed;
        if hash_range(out, hashed, len, &mut hasher, abandon)? != len {
            return Err(io::Error::other(
                "the file shrank while it was being received",
            ));
        }
        hashed = end;
    }
    Ok(hasher.finalize())
}

/// [`RECEIVE_CHUNK`] as a byte count.
const CHUNK: u64 = RECEIVE_CHUNK as u64;

/// Moves the bytes into the file (`target`: the file and the byte it starts at), telling
/// `landed` the file offset up to which bytes are in it after each piece.
fn land_all(
    already: &[u8],
    stream: &TcpStream,
    expected: u64,
    (out, start): (&File, u64),
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
    landed: &mut dyn FnMut(u64),
) -> Result<u64, ReceiveError> {
    let first = &already[..already
        .len()
        .min(usize::try_from(expected).unwrap_or(usize::MAX))];
    let mut written = 0u64;
    if !first.is_empty() {
        write_counting(first, out, &mut written)
            .map_err(|error| ReceiveError::Disk { written, error })?;
        landed(start + written);
    }
    let mut mover = Mover::new();
    let mut behind = WriteBehind::new(start);
    while written < expected {
        if stop.load(Ordering::Relaxed) {
            return Err(ReceiveError::Stopped { got: written });
        }
        // Steps end on whole MiB, so progress is reported at exact figures (25 % of 64 MiB is
        // 16 MiB, not whatever a step happened to reach).
        let to_boundary = CHUNK - written % CHUNK;
        let want = (expected - written).min(to_boundary) as usize;
        let moved = mover.land(stream, out, want);
        written += moved.written;
        if moved.written > 0 {
            landed(start + written);
            behind.landed(out, start + written);
        }
        match moved.outcome {
            Ok(true) if written.is_multiple_of(CHUNK) || written == expected => progress(written),
            Ok(true) => {}
            Ok(false) if stop.load(Ordering::Relaxed) => {
                return Err(ReceiveError::Stopped { got: written });
            }
            Ok(false) => {
                return Err(ReceiveError::Short {
                    got: written,
                    expected,
                });
            }
            Err(Fault::Network(error)) if stop.load(Ordering::Relaxed) => {
                log::debug!("receiving stopped: {error}");
                return Err(ReceiveError::Stopped { got: written });
            }
            Err(Fault::Network(error)) => {
                return Err(ReceiveError::Network {
                    got: written,
                    error: timeout_as_such(error),
                });
            }
            Err(Fault::Disk(error)) => return Err(ReceiveError::Disk { written, error }),
        }
    }
    Ok(written)
}

/// A receive timeout (`SO_RCVTIMEO`) shows as "would block"; say what it means.
fn timeout_as_such(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "the uploader stopped sending")
    } else {
        error
    }
}

/// Writes received bytes, keeping `written` exact even when the disk fills.
fn write_counting(bytes: &[u8], mut out: &File, written: &mut u64) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match out.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *written += n as u64;
                rest = &rest[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why one step of receiving failed.
enum Fault {
    Network(io::Error),
    Disk(io::Error),
}

/// What one step moved: `written` bytes are in the file whatever the outcome; the outcome is
/// `Ok(true)` to go on, `Ok(false)` at the end of the stream.
struct Moved {
    written: u64,
    outcome: Result<bool, Fault>,
}

/// Moves bytes from the socket to the file: through a pipe with `splice`, or a buffer.
enum Mover {
    #[cfg(target_os = "linux")]
    Splice(Pipe),
    Copy(Vec<u8>),
}

impl Mover {
    fn new() -> Mover {
        #[cfg(target_os = "linux")]
        match Pipe::new() {
            Ok(pipe) => return Mover::Splice(pipe),
            Err(e) => log::debug!("no pipe for splice ({e}); receiving through a buffer"),
        }
        Mover::Copy(vec![0u8; RECEIVE_CHUNK])
    }

    /// Moves up to `want` bytes (at least one unless the stream ended or failed).
    fn land(&mut self, stream: &TcpStream, out: &File, want: usize) -> Moved {
        match self {
            #[cfg(target_os = "linux")]
            Mover::Splice(pipe) => {
                let moved = pipe.land(stream, out, want);
                if let Some(buffer) = moved.fallback {
                    *self = Mover::Copy(buffer);
                    if moved.written == 0 && moved.outcome.as_ref().is_ok_and(|&go| go) {
                        return self.land(stream, out, want);
                    }
                }
                Moved {
                    written: moved.written,
                    outcome: moved.outcome,
                }
            }
            Mover::Copy(buf) => copy_step(stream, out, &mut buf[..want]),
        }
    }
}

/// One `read` from the socket, then writing all of it.
fn copy_step(mut stream: &TcpStream, out: &File, buf: &mut [u8]) -> Moved {
    let n = loop {
        match stream.read(buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Moved {
                    written: 0,
                    outcome: Err(Fault::Network(e)),
                };
            }
        }
    };
    if n == 0 {
        return Moved {
            written: 0,
            outcome: Ok(false),
        };
    }
    let mut written = 0u64;
    let outcome = write_counting(&buf[..n], out, &mut written)
        .map(|()| true)
        .map_err(Fault::Disk);
    Moved { written, outcome }
}

/// A pipe for `splice`, closed when dropped.
#[cfg(target_os = "linux")]
struct Pipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
}

/// What one `splice` step did, and a buffer to go on with if `splice` turned out unusable.
#[cfg(target_os = "linux")]
struct PipeMoved {
    written: u64,
    outcome: Result<bool, Fault>,
    fallback: Option<Vec<u8>>,
}

#[cfg(target_os = "linux")]
impl Pipe {
    fn new() -> io::Result<Pipe> {
        use rustix::pipe::{PipeFlags, fcntl_setpipe_size, pipe_with};
        let (read, write) = pipe_with(PipeFlags::CLOEXEC)?;
        // A larger pipe moves more per call; if refused (a per-user limit), the default works.
        let _ = fcntl_setpipe_size(&write, RECEIVE_CHUNK);
        Ok(Pipe { read, write })
    }

    /// Moves up to `want` bytes from the socket into the pipe, then all of them into the file.
    fn land(&mut self, stream: &TcpStream, out: &File, want: usize) -> PipeMoved {
        let fail = |written, fault| PipeMoved {
            written,
            outcome: Err(fault),
            fallback: None,
        };
        let got = match splice(stream, &self.write, want) {
            Ok(0) => {
                return PipeMoved {
                    written: 0,
                    outcome: Ok(false),
                    fallback: None,
                };
            }
            Ok(n) => n,
            Err(e) if sendfile_unsupported(&e) => {
                log::debug!("splice from the socket refused ({e}); receiving through a buffer");
                return PipeMoved {
                    written: 0,
                    outcome: Ok(true),
                    fallback: Some(vec![0u8; RECEIVE_CHUNK]),
                };
            }
            Err(e) => return fail(0, Fault::Network(e)),
        };
        let mut written = 0u64;
        while written < got as u64 {
            let left = got - written as usize;
            match splice(&self.read, out, left) {
                Ok(0) => return fail(written, Fault::Disk(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n as u64,
                Err(e) if sendfile_unsupported(&e) => {
                    // The file system takes no splice: empty the pipe through a buffer.
                    log::debug!("splice into the file refused ({e}); writing through a buffer");
                    let mut buf = vec![0u8; RECEIVE_CHUNK];
                    let mut pipe = std::fs::File::from(match self.read.try_clone() {
                        Ok(fd) => fd,
                        Err(e) => return fail(written, Fault::Disk(e)),
                    });
                    if let Err(e) = pipe.read_exact(&mut buf[..left]) {
                        return fail(written, Fault::Disk(e));
                    }
                    return match write_counting(&buf[..left], out, &mut written) {
                        Ok(()) => PipeMoved {
                            written,
                            outcome: Ok(true),
                            fallback: Some(buf),
                        },
                        Err(e) => fail(written, Fault::Disk(e)),
                    };
                }
                Err(e) => return fail(written, Fault::Disk(e)),
            }
        }
        PipeMoved {
            written,
            outcome: Ok(true),
            fallback: None,
        }
    }
}

/// One `splice` call between two descriptors, neither with an explicit offset (a file's own
/// position is used and moved); retried when interrupted.
#[cfg(target_os = "linux")]
fn splice(
    from: impl std::os::fd::AsFd,
    to: impl std::os::fd::AsFd,
    len: usize,
) -> io::Result<usize> {
    use rustix::pipe::SpliceFlags;
    loop {
        match rustix::pipe::splice(&from, None, &to, None, len, SpliceFlags::MOVE) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Starts write-back of each full window of received bytes as soon as it is in the file.
struct WriteBehind {
    started: u64,
}

impl WriteBehind {
    fn new(start: u64) -> WriteBehind {
        WriteBehind { started: start }
    }

    #[cfg(target_os = "linux")]
    fn landed(&mut self, out: &File, end: u64) {
        use std::os::fd::AsRawFd;
        while end - self.started >= WRITE_BEHIND {
            // SAFETY: sync_file_range only reads its arguments. A failure only means the final
            // fsync has more to do.
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

    #[cfg(not(target_os = "linux"))]
    fn landed(&mut self, _: &File, _: u64) {}
}
