//! Property tests of the tracker's message decoder (framing + request parsing). The same decoder
//! is fuzzed by `fuzz/fuzz_targets/decoder.rs`; the peer table's properties are tested beside it
//! (`tracker::table::properties`), where the word index and the listed-names limit are seen too.

use std::io::{self, Read};
use std::time::Duration;

use napster::protocol::messages::{
    join_line, list_line, parse_tracker_request, search_line, update_change_line, update_line,
};
use napster::protocol::{
    CodecError, Digest, FileRecord, FileUpdate, FrameReader, TimedRead, TrackerRequest,
};
use proptest::prelude::*;

/// Hands out its bytes in the given read sizes (cycled), as TCP may split them anywhere.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    next: usize,
}

impl Chunked {
    fn new(data: Vec<u8>, sizes: Vec<usize>) -> Chunked {
        Chunked {
            data,
            pos: 0,
            sizes,
            next: 0,
        }
    }
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes.get(self.next).copied().unwrap_or(usize::MAX);
        self.next = (self.next + 1) % self.sizes.len().max(1);
        let n = size.max(1).min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl TimedRead for Chunked {
    fn set_read_limit(&mut self, _limit: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// What the reader produced for one stream.
#[derive(Debug, PartialEq)]
enum Item {
    Request(TrackerRequest),
    Refused,
    Malformed,
}

/// Reads a whole stream the way the tracker does: parse each frame, go on after `Malformed`,
/// stop at the end or at an error that breaks the stream.
fn decode_all(reader: &mut FrameReader<Chunked>, limit: usize) -> (Vec<Item>, Option<String>) {
    let mut items = Vec::new();
    let total = reader.get_ref().data.len();
    for _ in 0..=total + 1 {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                assert!(frame.len() <= limit, "frame of {} > {limit}", frame.len());
                assert_eq!(frame.first(), Some(&b'{'));
                items.push(match parse_tracker_request(frame) {
                    Ok(request) => Item::Request(request),
                    Err(_) => Item::Refused,
                });
            }
            Ok(None) => return (items, None),
            Err(CodecError::Malformed(_)) => items.push(Item::Malformed),
            Err(e) => return (items, Some(e.to_string())),
        }
    }
    panic!("the reader did not finish a stream of {total} bytes");
}

/// Names with the characters that matter to framing and JSON: braces, brackets, quotes,
/// backslashes, newlines, control characters and non-ASCII.
fn name() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[a-z{}\[\]"\\\n\t\x00é😀 .-]{1,12}"#).unwrap()
}

/// File records in both forms: a name alone (the old plain string), or with a size and
/// maybe a digest.
fn record() -> impl Strategy<Value = FileRecord> {
    (name(), prop::option::of(any::<u64>()), any::<u8>()).prop_map(|(name, size, d)| {
        let digest = (d % 2 == 1).then_some(Digest([d; 32]));
        FileRecord {
            name,
            size,
            digest: size.and(digest),
        }
    })
}

fn records() -> impl Strategy<Value = Vec<FileRecord>> {
    prop::collection::vec(record(), 0..5)
}

fn request() -> impl Strategy<Value = TrackerRequest> {
    prop_oneof![
        (1u16.., records()).prop_map(|(port, files)| TrackerRequest::Join { port, files }),
        name().prop_map(|query| TrackerRequest::Search { query }),
        records().prop_map(|files| TrackerRequest::Update(FileUpdate::Replace(files))),
        (records(), prop::collection::vec(name(), 0..3)).prop_map(|(add, remove)| {
            TrackerRequest::Update(FileUpdate::Change { add, remove })
        }),
        name().prop_map(|peer| TrackerRequest::List { peer }),
    ]
}

fn encode(request: &TrackerRequest) -> Vec<u8> {
    match request {
        TrackerRequest::Join { port, files } => join_line(*port, files),
        TrackerRequest::Search { query } => search_line(query),
        TrackerRequest::Update(FileUpdate::Replace(files)) => update_line(files),
        TrackerRequest::Update(FileUpdate::Change { add, remove }) => {
            update_change_line(add, remove)
        }
        TrackerRequest::List { peer } => list_line(peer),
        TrackerRequest::LegacyJoin { .. } => unreachable!("not generated"),
    }
}

/// Removes the line's trailing newline, to send objects back to back as the original does.
fn without_newline(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    line
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes, split anywhere, never panic the decoder; every frame it hands out is an
    /// object within the size limit, and it always reaches the end of the stream.
    #[test]
    fn arbitrary_bytes_never_break_the_decoder(
        data in prop::collection::vec(
            prop_oneof![
                any::<u8>(),
                Just(b'{'), Just(b'}'), Just(b'['), Just(b']'),
                Just(b'"'), Just(b'\\'), Just(b'\n'),
            ],
            0..2000,
        ),
        sizes in prop::collection::vec(1usize..64, 1..8),
        small_limit in any::<bool>(),
    ) {
        let limit = if small_limit { 64 } else { napster::protocol::DEFAULT_MAX_MESSAGE };
        let mut reader = FrameReader::new(Chunked::new(data, sizes), limit);
        decode_all(&mut reader, limit);
    }

    /// Valid requests sent with a newline, back to back with none, or with CRLF, split at any
    /// points, decode to exactly the requests sent, in order.
    #[test]
    fn valid_requests_round_trip_however_they_are_split(
        requests in prop::collection::vec(request(), 1..12),
        separators in prop::collection::vec(0u8..3, 12),
        sizes in prop::collection::vec(1usize..40, 1..8),
    ) {
        let mut stream = Vec::new();
        for (request, sep) in requests.iter().zip(separators.iter().cycle()) {
            let line = without_newline(encode(request));
            stream.extend_from_slice(&line);
            stream.extend_from_slice(match sep {
                0 => b"\n".as_slice(),
                1 => b"".as_slice(),
                _ => b"\r\n".as_slice(),
            });
        }
        let limit = napster::protocol::DEFAULT_MAX_MESSAGE;
        let mut reader = FrameReader::new(Chunked::new(stream, sizes), limit);
        let (items, error) = decode_all(&mut reader, limit);
        prop_assert_eq!(error, None);
        let expected: Vec<Item> = requests.into_iter().map(Item::Request).collect();
        prop_assert_eq!(items, expected);
    }

    /// A junk line between valid requests costs exactly one `Malformed`; the requests around
    /// it still decode (the stream resynchronises at the newline).
    #[test]
    fn a_junk_line_is_one_error_and_the_stream_resynchronises(
        before in prop::collection::vec(request(), 0..4),
        junk in "[^{\\s][^\n]{0,40}",
        after in prop::collection::vec(request(), 0..4),
        sizes in prop::collection::vec(1usize..40, 1..8),
    ) {
        let mut stream = Vec::new();
        for request in &before {
            stream.extend(encode(request));
        }
        stream.extend_from_slice(junk.as_bytes());
        stream.push(b'\n');
        for request in &after {
            stream.extend(encode(request));
        }
        let limit = napster::protocol::DEFAULT_MAX_MESSAGE;
        let mut reader = FrameReader::new(Chunked::new(stream, sizes), limit);
        let (items, error) = decode_all(&mut reader, limit);
        prop_assert_eq!(error, None);
        let mut expected: Vec<Item> = before.into_iter().map(Item::Request).collect();
        expected.push(Item::Malformed);
        expected.extend(after.into_iter().map(Item::Request));
        prop_assert_eq!(items, expected);
    }
}
