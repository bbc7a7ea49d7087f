//! Framing: turns a byte stream into whole JSON objects, one at a time.
//!
//! A message is one JSON object, normally followed by `\n`. The Python original sends its objects
//! back to back with no newline and relies on each `recv` returning exactly one of them; we never
//! rely on how TCP splits bytes. The reader buffers, scans for the end of one complete object
//! (tracking braces, brackets and strings), enforces the size limit before anything is parsed,
//! and hands the object's bytes to the caller.
//!
//! Two kinds of failure, as in tiny-http's request reader:
//! - the stream is still in sync (a complete line that is not an object, or an object cut by a
//!   raw newline): [`CodecError::Malformed`], the caller answers and goes on;
//! - the stream is not (a frame over the size limit, a frame that never ends in time, a
//!   connection closed half way): the caller answers if it can and closes.

use std::fmt;
use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The default largest message, in bytes (1 MiB): room for 10,000 names of about 100 bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// Read issued while a frame is in progress; the buffer never holds more than the limit plus this.
const READ_CHUNK: usize = 16 * 1024;

/// Read issued when no frame is in progress: enough for any small request in one read.
const IDLE_CHUNK: usize = 2 * 1024;

/// What went wrong while reading a frame.
#[derive(Debug)]
pub enum CodecError {
    /// A complete frame that is not one JSON object; the stream is still in sync.
    Malformed(String),
    /// A frame larger than the limit; the stream can no longer be trusted.
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// A frame was started but not finished within the time allowed (slow sender).
    Timeout,
    /// Nothing arrived between frames within the idle limit.
    Idle,
    /// The deadline set with [`FrameReader::set_deadline`] passed, whatever arrived before it.
    Deadline,
    /// Buffering this frame would exceed the memory shared by all connections.
    Busy,
    /// The other side closed the connection half way through a frame.
    Truncated,
    /// The socket failed.
    Io(io::Error),
}

impl CodecError {
    /// True when the stream is still in sync and the connection may be used again.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, CodecError::Malformed(_))
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Malformed(why) => write!(f, "{why}"),
            CodecError::TooLarge { limit } => {
                write!(f, "the message is larger than the limit of {limit} bytes")
            }
            CodecError::Timeout => write!(f, "the message was not completed in time"),
            CodecError::Idle => write!(f, "nothing was sent for too long"),
            CodecError::Deadline => write!(f, "the time allowed for this connection ran out"),
            CodecError::Busy => write!(
                f,
                "the server is receiving too much data at once; send the message again later"
            ),
            CodecError::Truncated => write!(f, "the connection closed in the middle of a message"),
            CodecError::Io(e) => write!(f, "connection error: {e}"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A byte source whose blocking reads can be given a time limit.
///
/// Sockets set `SO_RCVTIMEO`; in-memory sources (tests, fuzzing) ignore the limit.
pub trait TimedRead: Read {
    /// Limits how long the next reads may block; `None` blocks for ever.
    fn set_read_limit(&mut self, limit: Option<Duration>) -> io::Result<()>;
}

impl TimedRead for TcpStream {
    fn set_read_limit(&mut self, limit: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(limit)
    }
}

impl TimedRead for &TcpStream {
    fn set_read_limit(&mut self, limit: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(limit)
    }
}

impl TimedRead for &[u8] {
    fn set_read_limit(&mut self, _limit: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

impl TimedRead for io::Chain<&[u8], &[u8]> {
    fn set_read_limit(&mut self, _limit: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// Memory for large frames, shared by every connection of a server.
///
/// Each connection may hold a frame of up to the size limit, so thousands of slow senders
/// could together hold gigabytes. Bytes a reader buffers beyond a small free allowance are
/// taken from this budget; a reader that cannot get them fails with [`CodecError::Busy`]
/// instead of growing.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// What one reader has taken from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug, Default)]
struct Charge {
    budget: Option<Arc<MemoryBudget>>,
    taken: usize,
}

impl Charge {
    /// Adjusts the charge to `wanted` bytes; false if the budget cannot cover an increase.
    fn set(&mut self, wanted: usize) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        if wanted > self.taken {
            if !budget.take(wanted - self.taken) {
                return false;
            }
        } else {
            budget.give(self.taken - wanted);
        }
        self.taken = wanted;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Bytes of buffer a reader may hold without charging the shared budget.
const FREE_BUFFER: usize = 4 * READ_CHUNK;

/// Where the scanner is within the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// Between frames: skipping white space.
    Between,
    /// Inside an object: brace/bracket depth, inside a string, after a backslash.
    Object {
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
    /// Inside a line that does not start with `{`: skipped up to its newline.
    Junk,
}

/// Reads whole JSON objects from a byte stream; see the module documentation.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the current frame (or of unscanned bytes) in `buf`.
    start: usize,
    /// How far `buf` has been scanned.
    scanned: usize,
    scan: Scan,
    max_message: usize,
    /// How long a started frame may take to complete.
    message_timeout: Option<Duration>,
    /// How long the stream may stay silent between frames.
    idle_timeout: Option<Duration>,
    /// When reading must stop, however the stream behaves (bytes do not extend it).
    deadline: Option<Instant>,
    /// When the unfinished frame started arriving.
    partial_since: Option<Instant>,
    /// The limit last given to the socket, to avoid a system call per read.
    current_limit: Option<Option<Duration>>,
    /// Buffer memory taken from a shared budget.
    charge: Charge,
}

impl<R: TimedRead> FrameReader<R> {
    /// A reader with the given size limit and no time limits.
    pub fn new(inner: R, max_message: usize) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            scan: Scan::Between,
            max_message,
            message_timeout: None,
            idle_timeout: None,
            deadline: None,
            partial_since: None,
            current_limit: None,
            charge: Charge::default(),
        }
    }

    /// Takes buffer memory beyond a small allowance from `budget`, shared with other readers.
    pub fn set_budget(&mut self, budget: Arc<MemoryBudget>) {
        self.charge = Charge {
            budget: Some(budget),
            taken: 0,
        };
    }

    /// Closes the stream (with [`CodecError::Timeout`]) when a frame is started but not
    /// finished within `limit`: the defence against slow senders.
    pub fn set_message_timeout(&mut self, limit: Option<Duration>) {
        self.message_timeout = limit;
    }

    /// Limits how long the stream may stay silent between frames (`None`: for ever).
    /// An expired limit is reported as [`CodecError::Idle`].
    pub fn set_idle_timeout(&mut self, limit: Option<Duration>) {
        self.idle_timeout = limit;
    }

    /// Stops reading at `deadline` (`None`: no deadline) with [`CodecError::Deadline`], even
    /// if bytes keep arriving: unlike the idle limit, nothing the other side sends moves it.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The underlying stream, to change how it reads (a deadline, for example).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Takes the bytes received after the last frame and not yet consumed (for example, file
    /// data that followed a reply in the same packet). Leaves the reader between frames.
    fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        self.scan = Scan::Between;
        self.partial_since = None;
        rest
    }

    /// Ends the message phase of a stream whose raw payload follows the last frame (a file
    /// after `downloadAccepted`): consumes the `\n` that ends that frame's line, waiting for it
    /// if it has not arrived yet, and returns the payload bytes already buffered.
    ///
    /// A frame sent with no newline (the Python original's uploader) is followed directly by
    /// its payload; then nothing is consumed.
    pub fn take_payload(&mut self) -> Result<Vec<u8>, CodecError> {
        if self.start >= self.buf.len() && !self.fill()? {
            return Ok(Vec::new());
        }
        if self.buf[self.start..].starts_with(b"\r\n") {
            self.start += 2;
        } else if self.buf[self.start..].starts_with(b"\n") {
            self.start += 1;
        }
        Ok(self.take_buffered())
    }

    /// Reads the next complete frame. `Ok(None)` is a clean end of stream between frames.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, CodecError> {
        loop {
            if let Some((from, to)) = self.scan_buffered()? {
                return Ok(Some(&self.buf[from..to]));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Scans buffered bytes; returns the byte range of a complete object if one is found.
    fn scan_buffered(&mut self) -> Result<Option<(usize, usize)>, CodecError> {
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            match self.scan {
                Scan::Between => {
                    if b.is_ascii_whitespace() {
                        self.start = i + 1;
                    } else if b == b'{' {
                        self.start = i;
                        self.scan = Scan::Object {
                            depth: 1,
                            in_string: false,
                            escaped: false,
                        };
                    } else {
                        self.start = i;
                        self.scan = Scan::Junk;
                    }
                }
                Scan::Junk => {
                    if b == b'\n' {
                        self.finish_frame(i + 1);
                        return Err(CodecError::Malformed(
                            "the message is not a JSON object".to_string(),
                        ));
                    }
                }
                Scan::Object {
                    ref mut depth,
                    ref mut in_string,
                    ref mut escaped,
                } => {
                    if b == b'\n' {
                        // A message is one line: a raw newline before the object closed means
                        // this object is broken, and the next line starts afresh.
                        self.finish_frame(i + 1);
                        return Err(CodecError::Malformed(
                            "the line ended before its JSON object was closed".to_string(),
                        ));
                    }
                    if *in_string {
                        if *escaped {
                            *escaped = false;
                        } else if b == b'\\' {
                            *escaped = true;
                        } else if b == b'"' {
                            *in_string = false;
                        }
                    } else {
                        match b {
                            b'"' => *in_string = true,
                            b'{' | b'[' => *depth += 1,
                            b'}' | b']' => {
                                *depth -= 1;
                                if *depth == 0 {
                                    let from = self.start;
                                    self.finish_frame(i + 1);
                                    if i + 1 - from > self.max_message {
                                        return Err(CodecError::TooLarge {
                                            limit: self.max_message,
                                        });
                                    }
                                    return Ok(Some((from, i + 1)));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            i += 1;
            if self.scan != Scan::Between && i - self.start > self.max_message {
                return Err(CodecError::TooLarge {
                    limit: self.max_message,
                });
            }
        }
        self.scanned = i;
        if self.scan == Scan::Between {
            self.start = self.buf.len();
        }
        Ok(None)
    }

    /// Marks the frame ending at `end` as consumed.
    fn finish_frame(&mut self, end: usize) {
        self.start = end;
        self.scanned = end;
        self.scan = Scan::Between;
        self.partial_since = None;
    }

    /// Reads more bytes into the buffer, applying the time limits. `Ok(false)` is a clean end
    /// of stream between frames.
    fn fill(&mut self) -> Result<bool, CodecError> {
        // Drop consumed bytes so the buffer stays bounded by the frame being read.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        let mid_frame = self.scan != Scan::Between || !self.buf.is_empty();
        let limit = if mid_frame {
            let since = *self.partial_since.get_or_insert_with(Instant::now);
            match self.message_timeout {
                Some(total) => {
                    let left = total.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return Err(CodecError::Timeout);
                    }
                    Some(left)
                }
                None => None,
            }
        } else {
            self.idle_timeout
        };
        let limit = match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(CodecError::Deadline);
                }
                Some(limit.map_or(left, |l| l.min(left)))
            }
            None => limit,
        };
        if self.current_limit != Some(limit) {
            self.inner.set_read_limit(limit).map_err(CodecError::Io)?;
            self.current_limit = Some(limit);
        }
        // Between frames, read into a small buffer: an idle connection (thousands of them on a
        // tracker) then holds about IDLE_CHUNK bytes rather than a large buffer, and a small
        // request costs no large zeroing. A frame that does not fit grows the buffer.
        let len = self.buf.len();
        let chunk = if len == 0 {
            if self.buf.capacity() > 4 * IDLE_CHUNK {
                self.buf = Vec::new();
            }
            IDLE_CHUNK
        } else {
            READ_CHUNK
        };
        self.buf.resize(len + chunk, 0);
        if !self
            .charge
            .set(self.buf.capacity().saturating_sub(FREE_BUFFER))
        {
            self.buf = Vec::new();
            self.charge.set(0);
            return Err(CodecError::Busy);
        }
        let got = loop {
            match self.inner.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    self.buf.truncate(len);
                    let passed = self.deadline.is_some_and(|d| Instant::now() >= d);
                    return Err(if passed {
                        CodecError::Deadline
                    } else if mid_frame {
                        CodecError::Timeout
                    } else {
                        CodecError::Idle
                    });
                }
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(CodecError::Io(e));
                }
            }
        };
        self.buf.truncate(len + got);
        if got == 0 {
            return if self.buf.iter().any(|b| !b.is_ascii_whitespace()) {
                Err(CodecError::Truncated)
            } else {
                Ok(false)
            };
        }
        // Give back memory after an unusually large frame.
        if self.buf.capacity() > 4 * READ_CHUNK && self.buf.len() < READ_CHUNK {
            self.buf.shrink_to(2 * READ_CHUNK);
        }
        self.charge
            .set(self.buf.capacity().saturating_sub(FREE_BUFFER));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every frame (or error) from `bytes`, delivered in pieces of `piece` bytes.
    fn frames(bytes: &[u8], piece: usize, max: usize) -> Vec<Result<String, String>> {
        struct Pieces<'a>(&'a [u8], usize);
        impl Read for Pieces<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        impl TimedRead for Pieces<'_> {
            fn set_read_limit(&mut self, _: Option<Duration>) -> io::Result<()> {
                Ok(())
            }
        }
        let mut reader = FrameReader::new(Pieces(bytes, piece), max);
        let mut out = Vec::new();
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => out.push(Ok(String::from_utf8_lossy(f).into_owned())),
                Ok(None) => break,
                Err(e) => {
                    let fatal = !e.is_recoverable();
                    out.push(Err(e.to_string()));
                    if fatal {
                        break;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn any_split_gives_the_same_frames() {
        let input = br#"{"a":"}{"}{"b":[1,{"c":"\"}"}]}
  {"d":"\\"}"#;
        let expected = vec![
            Ok(r#"{"a":"}{"}"#.to_string()),
            Ok(r#"{"b":[1,{"c":"\"}"}]}"#.to_string()),
            Ok(r#"{"d":"\\"}"#.to_string()),
        ];
        for piece in 1..input.len() {
            assert_eq!(frames(input, piece, 1024), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn junk_lines_and_broken_objects_are_skipped_in_sync() {
        let out = frames(b"hello\n{\"a\":\n{\"ok\":1}\n", 3, 1024);
        assert!(out[0].as_ref().unwrap_err().contains("not a JSON object"));
        assert!(out[1].as_ref().unwrap_err().contains("line ended"));
        assert_eq!(out[2], Ok("{\"ok\":1}".to_string()));
    }

    #[test]
    fn oversized_frames_are_fatal() {
        let mut big = b"{\"q\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'x', 100));
        big.extend_from_slice(b"\"}\n{\"never\":1}\n");
        let out = frames(&big, 7, 50);
        assert_eq!(out.len(), 1);
        assert!(out[0].as_ref().unwrap_err().contains("limit of 50 bytes"));
    }

    #[test]
    fn a_frame_cut_by_the_end_of_stream_is_truncated() {
        let out = frames(b"{\"a\":1}{\"b\"", 4, 1024);
        assert_eq!(out[0], Ok("{\"a\":1}".to_string()));
        assert!(
            out[1]
                .as_ref()
                .unwrap_err()
                .contains("closed in the middle")
        );
    }

    #[test]
    fn payload_after_a_frame_skips_exactly_one_newline() {
        let data: &[u8] = b"{\"status\":\"downloadAccepted\"}\n\nraw";
        let mut reader = FrameReader::new(data, 1024);
        assert!(reader.next_frame().unwrap().is_some());
        assert_eq!(reader.take_payload().unwrap(), b"\nraw");
        // The original sends no newline: the payload starts right after the object.
        let data: &[u8] = b"{\"status\":\"downloadAccepted\"}raw";
        let mut reader = FrameReader::new(data, 1024);
        assert!(reader.next_frame().unwrap().is_some());
        assert_eq!(reader.take_payload().unwrap(), b"raw");
    }
}
