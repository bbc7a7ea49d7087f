//! Fuzzes the tracker's message decoder: the framing reader (`FrameReader`) fed arbitrary
//! bytes in arbitrary read sizes, and every frame it yields parsed by `parse_tracker_request`.
//!
//! Run with `cargo +nightly fuzz run decoder` from the repository root. The property checked
//! besides "never panics": every frame handed out is within the size limit and starts with
//! `{`, and the reader always makes progress (a bounded number of calls per input).
#![no_main]

use std::io::{self, Read};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use napster::protocol::messages::parse_tracker_request;
use napster::protocol::{CodecError, FrameReader, TimedRead};

/// Hands out the input a few bytes per read, as TCP may split it anywhere.
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl TimedRead for Chunked<'_> {
    fn set_read_limit(&mut self, _limit: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    // The control byte picks the read size (1..=16, or everything) and a small or the
    // default size limit, so that both paths of the limit are reached.
    let step = match control & 0x1f {
        0 => usize::MAX,
        n => usize::from(n & 0x0f) + 1,
    };
    let limit = if control & 0x80 != 0 {
        64
    } else {
        napster::protocol::DEFAULT_MAX_MESSAGE
    };
    let mut reader = FrameReader::new(Chunked { data, step }, limit);
    // Each call consumes at least one byte or ends the stream.
    for _ in 0..=data.len() + 1 {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                assert!(
                    frame.len() <= limit,
                    "a frame over the limit was handed out"
                );
                assert_eq!(frame.first(), Some(&b'{'), "a frame must be an object");
                let _ = parse_tracker_request(frame);
            }
            Ok(None) => return,
            Err(CodecError::Malformed(_)) => continue,
            Err(_) => return,
        }
    }
    panic!("the reader did not finish {} bytes", data.len());
});
