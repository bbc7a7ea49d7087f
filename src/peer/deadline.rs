//! Deadlines that data cannot keep alive.
//!
//! A socket's read timeout is an idle timer: every byte restarts it, so a peer sending a space
//! every few seconds holds a read for ever. [`Deadline`] reads a socket with a fixed end: each
//! read may block only until the deadline, whatever arrived before, and a read after it fails
//! with `TimedOut` (which [`crate::protocol::FrameReader`] reports as a timeout).

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::protocol::codec::TimedRead;

/// A socket read with an optional fixed deadline.
pub struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Option<Instant>,
    /// The idle limit asked for by the reader, applied within the deadline.
    idle: Option<Duration>,
}

impl<'a> Deadline<'a> {
    /// Reads `stream` with no deadline yet.
    pub fn new(stream: &'a TcpStream) -> Deadline<'a> {
        Deadline {
            stream,
            until: None,
            idle: None,
        }
    }

    /// Sets (or with `None` removes) the moment after which reads fail.
    pub fn set(&mut self, until: Option<Instant>) {
        self.until = until;
    }

    /// Sets the deadline `limit` from now.
    pub fn expire_in(&mut self, limit: Duration) {
        let now = Instant::now();
        self.until = Some(
            now.checked_add(limit)
                .unwrap_or(now + Duration::from_secs(86_400)),
        );
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(until) = self.until {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the deadline passed",
                ));
            }
            let limit = self.idle.map_or(left, |idle| idle.min(left));
            self.stream.set_read_timeout(Some(limit))?;
        }
        (&*self.stream).read(buf)
    }
}

impl TimedRead for Deadline<'_> {
    fn set_read_limit(&mut self, limit: Option<Duration>) -> io::Result<()> {
        self.idle = limit;
        if self.until.is_none() {
            self.stream.set_read_timeout(limit)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CodecError, FrameReader};
    use std::io::Write;
    use std::net::TcpListener;

    /// A sender that keeps the connection busy with spaces (never a whole message) is cut at
    /// the deadline, although its bytes reset any idle timer.
    #[test]
    fn trickled_bytes_do_not_keep_a_read_alive_past_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut far, _) = listener.accept().unwrap();
        let trickle = std::thread::spawn(move || {
            // Until the reader gives up and closes: a space every 20 ms.
            while far.write_all(b" ").is_ok() {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut reader = FrameReader::new(Deadline::new(&near), 1024);
        reader.set_idle_timeout(Some(Duration::from_secs(60)));
        let started = Instant::now();
        reader.get_mut().expire_in(Duration::from_millis(500));
        let got = reader.next_frame().map(|f| f.map(<[u8]>::to_vec));
        let took = started.elapsed();
        assert!(
            matches!(got, Err(CodecError::Idle | CodecError::Timeout)),
            "{got:?}"
        );
        assert!(took < Duration::from_secs(20), "took {took:?}");
        drop(reader);
        drop(near);
        trickle.join().unwrap();
    }
}
