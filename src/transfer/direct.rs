//! Receiving a large transfer straight to the disk (`O_DIRECT`, Linux), hashing each buffer
//! once it is written, while it is still in the processor's cache.
//!
//! Why: on the machine this was measured on, copying a GiB into the page cache (what `write`
//! and `splice` into a file do) cost 0.5–3 CPU seconds depending on how much memory the rest of
//! the machine was using, and reading it back to hash it 0.4 more; a buffer of ours written with
//! `O_DIRECT` goes from memory to the disk without that copy, and hashing it from the cache
//! costs what BLAKE3 costs (0.18 s/GiB). See docs/transfers.md for the figures.
//!
//! Three threads hand a small pool of buffers along bounded channels:
//! - the **receiving** thread (the caller's) fills a buffer from the socket, or passes on what
//!   it has once the socket has kept it waiting for [`HOLD`];
//! - the **writing** thread writes it at its place in the file, in order, so the file always
//!   holds exactly the bytes received so far, from its start (what a resume relies on);
//! - the **hashing** thread hashes it, once written, and gives it back to the pool.
//!
//! The digest is therefore of exactly the bytes the kernel took into the file, in order.
//! Direct writes need file offsets, lengths and memory addresses aligned to the disk's block:
//! each buffer is placed in memory so that aligned file offsets fall on aligned addresses, and
//! the unaligned head (a resume from an odd byte) and tail (the file's last block) go through
//! the page cache. Any failure of a direct write is retried through the page cache, and the
//! rest of the transfer goes that way: the page cache's answer (a full disk, a size limit) is
//! the one reported, exactly as without `O_DIRECT`.

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use rustix::net::RecvFlags;
use std::fs::File;
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use super::{Landing, ReceiveError, timeout_as_such};

/// Bytes per buffer (and the most one write or one hashing step handles). The disk takes one
/// write at a time from us, so each should be large (measured here with `dd`: 4 MiB direct
/// writes 1.0-1.85 GB/s, 2 MiB ones 1.1-1.2 GB/s). Four of them: 16 MiB resident at most.
const BLOCK: usize = 4 << 20;
/// Buffers in the pool: one being filled, one being written, one being hashed, one spare.
const POOL: usize = 4;
/// Direct writes start on, and last, multiples of this; their buffers start on multiples of
/// it too. 4096 bytes suits disks of 512- and 4096-byte blocks.
const ALIGN: usize = 4096;
/// Transfers of at least this many bytes are received this way; smaller ones through the
/// page cache, where they cost little.
pub(super) const WORTH_IT: u64 = 8 << 20;
/// The longest received bytes wait in a buffer for the rest of it before they are written.
const HOLD: Duration = Duration::from_millis(100);

/// `O_DIRECT` turned on for a file while it receives, and off again when dropped.
pub(super) struct DirectFile<'a> {
    file: &'a File,
    /// The file's status flags without `O_DIRECT`.
    flags: OFlags,
    /// False once a direct write has failed: the rest goes through the page cache.
    usable: bool,
    /// Whether `O_DIRECT` is set on the file right now.
    direct: bool,
}

impl<'a> DirectFile<'a> {
    /// Turns `O_DIRECT` on for `file`; `None` where the file system refuses it.
    pub(super) fn open(file: &'a File) -> Option<DirectFile<'a>> {
        let flags = rustix::fs::fcntl_getfl(file).ok()?;
        let mut direct = DirectFile {
            file,
            flags: flags - OFlags::DIRECT,
            usable: true,
            direct: flags.contains(OFlags::DIRECT),
        };
        direct.set_direct(true).then_some(direct)
    }

    /// Sets or clears `O_DIRECT`; returns whether it is set now.
    fn set_direct(&mut self, on: bool) -> bool {
        if self.direct != on {
            let flags = if on {
                self.flags | OFlags::DIRECT
            } else {
                self.flags
            };
            match rustix::fs::fcntl_setfl(self.file, flags) {
                Ok(()) => self.direct = on,
                Err(e) => {
                    log::debug!(
                        "cannot switch O_DIRECT: {}; writing through the page cache",
                        io::Error::from(e)
                    );
                    self.usable = false;
                }
            }
        }
        self.direct
    }

    /// Writes `bytes` at `at`, adding to `written` what reached the file even on error. The
    /// bytes' memory is aligned as their file offsets are (see [`Piece`]).
    fn write_at(&mut self, bytes: &[u8], at: u64, written: &mut u64) -> io::Result<()> {
        let mut done = 0;
        while done < bytes.len() {
            let pos = at + done as u64;
            let left = bytes.len() - done;
            let off_block = (pos % ALIGN as u64) as usize;
            let (len, want_direct) = if off_block != 0 {
                ((ALIGN - off_block).min(left), false)
            } else if self.usable && left >= ALIGN {
                (left - left % ALIGN, true)
            } else {
                (left, false)
            };
            let direct = self.set_direct(want_direct && self.usable);
            match self.file.write_at(&bytes[done..done + len], pos) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    *written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if direct => {
                    log::debug!("direct write refused ({e}); writing through the page cache");
                    self.usable = false;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for DirectFile<'_> {
    fn drop(&mut self) {
        self.set_direct(false);
    }
}

/// One buffer of the pool: `BLOCK` bytes starting on an `ALIGN` boundary, inside a plain
/// vector a little larger.
struct Block {
    bytes: Vec<u8>,
}

impl Block {
    fn new() -> Block {
        Block {
            bytes: vec![0u8; BLOCK + ALIGN],
        }
    }

    /// The aligned window of `BLOCK` bytes.
    fn window(&mut self) -> &mut [u8] {
        let misaligned = self.bytes.as_ptr().addr() % ALIGN;
        let skip = (ALIGN - misaligned) % ALIGN;
        &mut self.bytes[skip..skip + BLOCK]
    }
}

/// Received bytes on their way to the file: `len` bytes for file offset `at`, held in the
/// block's window from `at % ALIGN` on, so that aligned file offsets sit on aligned addresses.
struct Piece {
    block: Block,
    at: u64,
    len: usize,
}

impl Piece {
    fn bytes(&mut self) -> &[u8] {
        let lead = (self.at % ALIGN as u64) as usize;
        &self.block.window()[lead..lead + self.len]
    }
}

/// Why receiving stopped before the end.
enum Ended {
    /// The sender closed the connection.
    Closed,
    /// Reading from the socket failed.
    Network(io::Error),
    /// A stop was requested.
    Stopped,
    /// The writing or hashing thread is gone (its error is reported instead).
    Downstream,
}

/// Where the bytes come from: those that arrived with the last message, then the socket.
struct Incoming<'a> {
    already: &'a [u8],
    stream: &'a TcpStream,
}

impl Incoming<'_> {
    /// Fills `buf`; returns how many bytes it holds, and why it is not full when it is not.
    /// Bytes in hand are not held back longer than [`HOLD`] waiting for the rest: a sender
    /// that pauses or a slow link still sees them reach the file (and the progress shown).
    fn fill(&mut self, buf: &mut [u8], stop: &AtomicBool) -> (usize, Option<Ended>) {
        let mut got = self.already.len().min(buf.len());
        buf[..got].copy_from_slice(&self.already[..got]);
        self.already = &self.already[got..];
        let held_since = Instant::now();
        while got < buf.len() {
            if stop.load(Ordering::Relaxed) {
                return (got, Some(Ended::Stopped));
            }
            let read = if got == 0 {
                (&mut &*self.stream).read(&mut buf[got..])
            } else {
                match self.read_ready(&mut buf[got..]) {
                    Ok(None) => match HOLD.checked_sub(held_since.elapsed()) {
                        Some(left) if self.readable_within(left) => continue,
                        _ => return (got, None),
                    },
                    Ok(Some(n)) => Ok(n),
                    Err(e) => Err(e),
                }
            };
            match read {
                Ok(0) => return (got, Some(Ended::Closed)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (got, Some(Ended::Network(e))),
            }
        }
        (got, None)
    }

    /// Reads what the socket holds now without waiting: `None` when it holds nothing.
    fn read_ready(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match rustix::net::recv(self.stream, buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => Ok(Some(n)),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the socket has something to read (bytes, an end, an error) within `wait`. A
    /// failed wait says no: the bytes in hand are passed on and the next read tells.
    fn readable_within(&self, wait: Duration) -> bool {
        let mut fds = [PollFd::new(self.stream, PollFlags::IN)];
        let wait = Timespec::try_from(wait.max(Duration::from_millis(1))).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        matches!(rustix::event::poll(&mut fds, Some(&wait)), Ok(n) if n > 0)
    }
}

/// Receives `expected` bytes into the landing's file with `direct` writes (see the module
/// documentation); the same contract as [`super::receive_exact`].
pub(super) fn receive(
    already: &[u8],
    stream: &TcpStream,
    expected: u64,
    (landing, direct): (Landing<'_>, DirectFile<'_>),
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<blake3::Hash, ReceiveError> {
    let Landing { start, hasher, .. } = landing;
    let (to_write, writing) = bounded::<Piece>(POOL);
    let (to_hash, hashing) = bounded::<Piece>(POOL);
    let (to_reuse, reusable) = bounded::<Block>(POOL);
    let spawn_failed = |error| ReceiveError::Disk { written: 0, error };
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("download-write".into())
            .spawn_scoped(scope, move || write_pieces(direct, start, writing, to_hash))
            .map_err(spawn_failed)?;
        let hasher = std::thread::Builder::new()
            .name("download-hash".into())
            .spawn_scoped(scope, move || hash_pieces(hasher, hashing, to_reuse))
            .map_err(spawn_failed)?;
        let incoming = Incoming {
            already: &already[..already
                .len()
                .min(usize::try_from(expected).unwrap_or(usize::MAX))],
            stream,
        };
        let span = (start, start + expected);
        let began = Instant::now();
        let mut starved = Duration::ZERO;
        let received = receive_pieces(
            incoming,
            span,
            stop,
            progress,
            (&to_write, &reusable),
            &mut starved,
        );
        // The writing thread ends once it has written everything it was handed.
        drop(to_write);
        let (written_to, write_error, writing) = writer.join().unwrap_or_else(|_| {
            let panicked = io::Error::other("the writing thread panicked");
            (start, Some(panicked), Duration::ZERO)
        });
        let (digest, hashing) = match hasher.join() {
            Ok((digest, hashing)) => (Ok(digest), hashing),
            Err(panicked) => (Err(panicked), Duration::ZERO),
        };
        let written = written_to - start;
        // Which stage set the pace: the receiving thread waits for a free buffer when the
        // writing or the hashing thread is behind.
        log::debug!(
            "direct receive: {written} bytes in {:.2} s; waiting for a free buffer {:.2} s, \
             writing {:.2} s, hashing {:.2} s",
            began.elapsed().as_secs_f64(),
            starved.as_secs_f64(),
            writing.as_secs_f64(),
            hashing.as_secs_f64()
        );
        if let Some(error) = write_error {
            return Err(ReceiveError::Disk { written, error });
        }
        let stopped = stop.load(Ordering::Relaxed);
        match received {
            Ok(()) => digest.map_err(|_| ReceiveError::Disk {
                written,
                error: io::Error::other("the hashing thread panicked"),
            }),
            Err(Ended::Stopped) => Err(ReceiveError::Stopped { got: written }),
            Err(Ended::Closed | Ended::Network(_)) if stopped => {
                Err(ReceiveError::Stopped { got: written })
            }
            Err(Ended::Closed) => Err(ReceiveError::Short {
                got: written,
                expected,
            }),
            Err(Ended::Network(error)) => Err(ReceiveError::Network {
                got: written,
                error: timeout_as_such(error),
            }),
            Err(Ended::Downstream) => Err(ReceiveError::Disk {
                written,
                error: io::Error::other("the hashing thread stopped"),
            }),
        }
    })
}

/// The receiving side: fills buffers from the pool (up to [`POOL`] of them, made as needed)
/// with the file's bytes from `span.0` to `span.1` and hands them to the writing thread. Each
/// buffer ends on a multiple of [`BLOCK`] in the file, so only the first may start unaligned.
/// What was received before an early end is handed over too, so that it reaches the file.
fn receive_pieces(
    mut incoming: Incoming<'_>,
    (start, end): (u64, u64),
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
    (to_write, reusable): (&Sender<Piece>, &Receiver<Block>),
    starved: &mut Duration,
) -> Result<(), Ended> {
    let mut at = start;
    let mut made = 0;
    while at < end {
        let mut block = match reusable.try_recv() {
            Ok(block) => block,
            Err(_) if made < POOL => {
                made += 1;
                Block::new()
            }
            Err(_) => {
                let waiting = Instant::now();
                let block = reusable.recv().map_err(|_| Ended::Downstream)?;
                *starved += waiting.elapsed();
                block
            }
        };
        let piece_end = ((at / BLOCK as u64 + 1) * BLOCK as u64).min(end);
        let lead = (at % ALIGN as u64) as usize;
        let want = (piece_end - at) as usize;
        let (got, ended) = incoming.fill(&mut block.window()[lead..lead + want], stop);
        if got > 0 {
            let piece = Piece {
                block,
                at,
                len: got,
            };
            to_write.send(piece).map_err(|_| Ended::Downstream)?;
            at += got as u64;
            progress(at - start);
        }
        if let Some(ended) = ended {
            return Err(ended);
        }
    }
    Ok(())
}

/// The writing thread: writes each piece at its place, in order, and passes it on to be
/// hashed. Returns the file offset up to which the bytes are in the file, the error that
/// stopped it, if one did, and the time spent writing.
fn write_pieces(
    mut file: DirectFile<'_>,
    start: u64,
    pieces: Receiver<Piece>,
    to_hash: Sender<Piece>,
) -> (u64, Option<io::Error>, Duration) {
    let mut written = 0u64;
    let mut writing = Duration::ZERO;
    for mut piece in pieces {
        let at = piece.at;
        let began = Instant::now();
        let wrote = file.write_at(piece.bytes(), at, &mut written);
        writing += began.elapsed();
        if let Err(e) = wrote {
            return (start + written, Some(e), writing);
        }
        if to_hash.send(piece).is_err() {
            break;
        }
    }
    (start + written, None, writing)
}

/// The hashing thread: hashes each written piece and gives its buffer back. Returns the digest
/// and the time spent hashing.
fn hash_pieces(
    mut hasher: blake3::Hasher,
    pieces: Receiver<Piece>,
    to_reuse: Sender<Block>,
) -> (blake3::Hash, Duration) {
    let mut hashing = Duration::ZERO;
    for mut piece in pieces {
        let began = Instant::now();
        hasher.update(piece.bytes());
        hashing += began.elapsed();
        // The receiving side may have stopped already; then the buffer is simply freed.
        let _ = to_reuse.send(piece.block);
    }
    (hasher.finalize(), hashing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::os::unix::fs::FileExt;

    /// Bytes that differ at every position, so a misplaced block shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// A connected pair: the receiving end, and a thread writing `bytes` into the other end
    /// then closing it.
    fn sender(bytes: Vec<u8>) -> (TcpStream, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sending = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // A receiver that stops early closes its end: the rest is not wanted.
            let _ = stream.write_all(&bytes);
        });
        (TcpStream::connect(addr).unwrap(), sending)
    }

    /// Receives `whole[start..]` into a file already holding `whole[..start]`: `already` bytes
    /// from the last message, the rest from the socket; `sent` of them are sent at all.
    fn land(
        whole: &[u8],
        start: usize,
        already: usize,
        sent: usize,
    ) -> (File, Result<blake3::Hash, ReceiveError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all_at(&whole[..start], 0).unwrap();
        let mut hasher = blake3::Hasher::new();
        hasher.update(&whole[..start]);
        let (stream, sending) = sender(whole[start + already..start + sent].to_vec());
        let direct = DirectFile::open(&file).expect("O_DIRECT where the tests run");
        let landing = Landing {
            file: &file,
            start: start as u64,
            hasher,
        };
        let never = AtomicBool::new(false);
        let got = receive(
            &whole[start..start + already],
            &stream,
            (whole.len() - start) as u64,
            (landing, direct),
            &never,
            &mut |_| {},
        );
        sending.join().unwrap();
        (file, got)
    }

    /// Receives `whole`, sent by another thread, into `file` from its start with `stop` as
    /// given; the sender is ended (its connection closed) before this returns.
    fn receive_from_start(
        file: &File,
        whole: Vec<u8>,
        stop: &AtomicBool,
    ) -> Result<blake3::Hash, ReceiveError> {
        let len = whole.len() as u64;
        let (stream, sending) = sender(whole);
        let direct = DirectFile::open(file).expect("O_DIRECT where the tests run");
        let landing = Landing {
            file,
            start: 0,
            hasher: blake3::Hasher::new(),
        };
        let got = receive(&[], &stream, len, (landing, direct), stop, &mut |_| {});
        drop(stream);
        let _ = sending.join();
        got
    }

    fn contents(file: &File) -> Vec<u8> {
        let mut bytes = Vec::new();
        (&mut &*file).read_to_end(&mut bytes).unwrap();
        bytes
    }

    /// A file that refuses every write ends the receive with the disk's error: the receiving
    /// side, waiting for buffers the failed writer will never pass on, is told.
    #[test]
    fn a_failed_write_ends_the_receive_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, b"").unwrap();
        let read_only = File::open(&path).unwrap();
        let got = receive_from_start(&read_only, pattern(8 * BLOCK), &AtomicBool::new(false));
        match got {
            Err(ReceiveError::Disk { written: 0, .. }) => {}
            other => panic!("expected the disk's error, got {other:?}"),
        }
    }

    /// A whole file whose end is not on a block boundary arrives exact, with its digest.
    #[test]
    fn a_whole_file_arrives_exact_with_its_digest() {
        let whole = pattern(3 * BLOCK + 12_345);
        let (file, got) = land(&whole, 0, 0, whole.len());
        assert_eq!(got.unwrap(), blake3::hash(&whole));
        assert!(contents(&file) == whole);
    }

    /// A resume from an odd byte, with bytes that came with the last message: the unaligned
    /// head goes through the page cache, the rest direct; the digest covers the whole file.
    #[test]
    fn a_resume_from_an_odd_byte_arrives_exact() {
        let whole = pattern(2 * BLOCK + 5 * ALIGN + 77);
        let start = BLOCK / 2 + 1001;
        let (file, got) = land(&whole, start, 5000, whole.len() - start);
        assert_eq!(got.unwrap(), blake3::hash(&whole));
        assert!(contents(&file) == whole);
    }

    /// A transfer cut mid-buffer keeps every byte that arrived, and exactly those.
    #[test]
    fn a_cut_transfer_keeps_exactly_what_arrived() {
        let whole = pattern(3 * BLOCK);
        let start = 777;
        let sent = BLOCK + 3333;
        let (file, got) = land(&whole, start, 100, sent);
        match got {
            Err(ReceiveError::Short { got, expected }) => {
                assert_eq!(got, sent as u64);
                assert_eq!(expected, (whole.len() - start) as u64);
            }
            other => panic!("expected a short transfer, got {other:?}"),
        }
        assert!(contents(&file) == whole[..start + sent]);
    }

    /// A stop asked for before the first byte ends the transfer at once, with nothing kept.
    #[test]
    fn a_stop_ends_the_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("partial")).unwrap();
        let got = receive_from_start(&file, pattern(2 * BLOCK), &AtomicBool::new(true));
        assert!(
            matches!(got, Err(ReceiveError::Stopped { got: 0 })),
            "{got:?}"
        );
    }

    /// Bytes from a sender that pauses mid-buffer reach the file while it waits; the rest
    /// follows them exactly.
    #[test]
    fn bytes_of_a_paused_sender_reach_the_file() {
        let whole = pattern(2 * BLOCK);
        let first = BLOCK / 4 + 5;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_on, paused) = bounded::<()>(0);
        let to_send = whole.clone();
        let sending = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(&to_send[..first]).unwrap();
            paused.recv().unwrap();
            stream.write_all(&to_send[first..]).unwrap();
        });
        let stream = TcpStream::connect(addr).unwrap();
        let never = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let receiving = scope.spawn(|| {
                let direct = DirectFile::open(&file).unwrap();
                let landing = Landing {
                    file: &file,
                    start: 0,
                    hasher: blake3::Hasher::new(),
                };
                let expected = whole.len() as u64;
                receive(
                    &[],
                    &stream,
                    expected,
                    (landing, direct),
                    &never,
                    &mut |_| {},
                )
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            while std::fs::metadata(&path).unwrap().len() < first as u64 {
                assert!(
                    Instant::now() < deadline,
                    "the first bytes never reached the file"
                );
                // A file has no "grew" notification to wait on; poll briefly.
                std::thread::sleep(Duration::from_millis(5));
            }
            go_on.send(()).unwrap();
            let got = receiving.join().unwrap();
            assert_eq!(got.unwrap(), blake3::hash(&whole));
        });
        sending.join().unwrap();
        assert!(contents(&file) == whole);
    }

    /// O_DIRECT is off again once receiving is over.
    #[test]
    fn the_file_is_left_without_o_direct() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        drop(DirectFile::open(&file).unwrap());
        let flags = rustix::fs::fcntl_getfl(&file).unwrap();
        assert!(!flags.contains(OFlags::DIRECT));
    }
}
