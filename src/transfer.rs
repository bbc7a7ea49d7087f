//! Moving a file's bytes over a socket: streaming in bounded chunks, digests, partial files.
//!
//! - Sending uses `sendfile(2)` on Linux: the bytes never enter user space on the uploader.
//!   It is done in chunks so that progress can be reported and a stop request honoured
//!   between them.
//! - Receiving reads into one fixed buffer, hashes it (BLAKE3) and writes it out in large
//!   writes. Memory does not grow with the file.
//! - A download is written under a temporary name (see [`crate::partial`], re-exported here)
//!   and given its final name only when all bytes arrived and the digest matched.
//!
//! This module knows nothing of the protocol's messages.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use parking_lot::{Condvar, Mutex};

pub use crate::partial::{Partial, PartialRecord, PartialStore};

/// Bytes handed to one `sendfile` call: small enough to report progress and notice a stop.
const SEND_CHUNK: u64 = 8 << 20;
/// The receiving buffer: large writes, fixed memory.
pub const RECEIVE_BUFFER: usize = 1 << 20;

/// A BLAKE3 digest as lower-case hex.
pub type DigestHex = String;

/// Hashes the whole of an open file from its start.
pub fn hash_file(file: &File) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    hash_range(file, 0, u64::MAX, &mut hasher)?;
    Ok(hasher.finalize())
}

/// Feeds up to `len` bytes of `file`, from `offset`, to `hasher`; returns how many were read.
pub fn hash_range(
    file: &File,
    offset: u64,
    len: u64,
    hasher: &mut blake3::Hasher,
) -> io::Result<u64> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    let mut reader = reader.take(len);
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    let mut total = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(total)
}

/// Remembers the digest of each shared file while its size and modification time stay the
/// same, so a file is hashed once, not on every request. A file being hashed is hashed by one
/// thread only: others asking for it wait for that result.
#[derive(Default)]
pub struct DigestCache {
    known: Mutex<HashMap<PathBuf, CachedDigest>>,
    /// Paths being hashed right now.
    busy: Mutex<HashSet<PathBuf>>,
    done: Condvar,
}

/// A digest with the size and modification time of the file it was computed from.
type CachedDigest = (u64, Option<SystemTime>, DigestHex);

impl DigestCache {
    /// An empty cache.
    pub fn new() -> DigestCache {
        DigestCache::default()
    }

    /// The digest of the open `file` found at `path`.
    pub fn digest(&self, path: &Path, file: &File) -> io::Result<DigestHex> {
        let meta = file.metadata()?;
        let stamp = (meta.len(), meta.modified().ok());
        {
            let mut busy = self.busy.lock();
            loop {
                if let Some((len, modified, digest)) = self.known.lock().get(path)
                    && (*len, *modified) == stamp
                {
                    return Ok(digest.clone());
                }
                if busy.insert(path.to_path_buf()) {
                    break;
                }
                self.done.wait(&mut busy);
            }
        }
        let hashed = hash_file(file).map(|h| h.to_hex().to_string());
        if let Ok(digest) = &hashed {
            // Known before the waiters wake, so none of them hashes the file again.
            self.known
                .lock()
                .insert(path.to_path_buf(), (stamp.0, stamp.1, digest.clone()));
        }
        self.busy.lock().remove(path);
        self.done.notify_all();
        hashed
    }
}

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
    use std::os::fd::AsRawFd;
    let mut done = 0u64;
    while done < len {
        let mut at = libc::off64_t::try_from(offset + done)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        let want = usize::try_from(len - done).unwrap_or(usize::MAX);
        // SAFETY: both descriptors are open for the duration of the call (borrowed from live
        // `File` and `TcpStream`), and `at` is a valid, exclusively borrowed offset.
        let n = unsafe { libc::sendfile64(stream.as_raw_fd(), file.as_raw_fd(), &mut at, want) };
        match n {
            0 => break,
            n if n > 0 => done += n as u64,
            _ => {
                let e = io::Error::last_os_error();
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

impl std::fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiveError::Short { got, expected } => {
                write!(f, "o peer fechou a conexão após {got} de {expected} bytes")
            }
            ReceiveError::Disk { written, error } => {
                if is_disk_full(error) {
                    write!(f, "disco cheio ({written} bytes gravados)")
                } else {
                    write!(f, "não foi possível gravar após {written} bytes: {error}")
                }
            }
            ReceiveError::Network { got, error } => {
                write!(f, "a conexão falhou após {got} bytes: {error}")
            }
            ReceiveError::Stopped { got } => {
                write!(f, "transferência interrompida após {got} bytes")
            }
        }
    }
}

impl std::error::Error for ReceiveError {}

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

/// Receives exactly `expected` bytes: first `already` (bytes that arrived with the last
/// message), then from `stream`. Each byte is hashed and written to `out`. Returns the bytes
/// written; on error, the bytes written so far are whole on disk.
pub fn receive_exact(
    already: &[u8],
    stream: &mut dyn Read,
    expected: u64,
    out: &mut File,
    hasher: &mut blake3::Hasher,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, ReceiveError> {
    let first = &already[..already.len().min(expected as usize)];
    hasher.update(first);
    out.write_all(first)
        .map_err(|error| ReceiveError::Disk { written: 0, error })?;
    let mut written = first.len() as u64;
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    while written < expected {
        let want = (expected - written).min(buf.len() as u64) as usize;
        let mut filled = 0;
        // Fill the buffer before writing: fewer, larger writes and hash calls.
        while filled < want {
            if stop.load(Ordering::Relaxed) {
                return Err(ReceiveError::Stopped { got: written });
            }
            match stream.read(&mut buf[filled..want]) {
                Ok(0) if stop.load(Ordering::Relaxed) => {
                    flush_prefix(&buf[..filled], out, hasher, &mut written)?;
                    return Err(ReceiveError::Stopped { got: written });
                }
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    flush_prefix(&buf[..filled], out, hasher, &mut written)?;
                    return Err(ReceiveError::Network {
                        got: written,
                        error,
                    });
                }
            }
        }
        flush_prefix(&buf[..filled], out, hasher, &mut written)?;
        if filled < want {
            return Err(ReceiveError::Short {
                got: written,
                expected,
            });
        }
        progress(written);
    }
    Ok(written)
}

/// Hashes and writes received bytes, keeping `written` exact even when the disk fills.
fn flush_prefix(
    bytes: &[u8],
    out: &mut File,
    hasher: &mut blake3::Hasher,
    written: &mut u64,
) -> Result<(), ReceiveError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match out.write(rest) {
            Ok(0) => {
                return Err(ReceiveError::Disk {
                    written: *written,
                    error: io::Error::from(io::ErrorKind::WriteZero),
                });
            }
            Ok(n) => {
                hasher.update(&rest[..n]);
                *written += n as u64;
                rest = &rest[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(ReceiveError::Disk {
                    written: *written,
                    error,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn digest_at(cache: &DigestCache, path: &Path) -> DigestHex {
        cache.digest(path, &File::open(path).unwrap()).unwrap()
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let cache = DigestCache::new();
        fs::write(&path, b"first").unwrap();
        assert_eq!(
            digest_at(&cache, &path),
            blake3::hash(b"first").to_hex().to_string()
        );
        fs::write(&path, b"second, longer").unwrap();
        assert_eq!(
            digest_at(&cache, &path),
            blake3::hash(b"second, longer").to_hex().to_string()
        );
    }

    #[test]
    fn threads_asking_at_once_get_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        let expected = blake3::hash(&vec![7u8; 3 << 20]).to_hex().to_string();
        let cache = DigestCache::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| digest_at(&cache, &path)))
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), expected);
            }
        });
        assert!(cache.busy.lock().is_empty());
    }
}
