//! Property tests of the tracker's message decoder (framing + request parsing) and of the peer
//! table with its name index. The same decoder is fuzzed by `fuzz/fuzz_targets/decoder.rs`.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Duration;

use napster::protocol::messages::{
    join_line, list_line, parse_tracker_request, search_line, update_change_line, update_line,
};
use napster::protocol::{
    CodecError, Digest, FileRecord, FileUpdate, FrameReader, TimedRead, TrackerRequest,
};
use napster::tracker::table::{ConnId, PeerTable, TableError};
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

/// One change to the table.
#[derive(Debug, Clone)]
enum Op {
    Join(ConnId, usize, Vec<usize>),
    Update(ConnId, usize, Vec<usize>),
    Leave(ConnId, usize),
}

const NAMES: [&str; 6] = ["a", "b", "c", "video.mp4", "e", "ф"];

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, (i % 2) as u8 + 1], 4000 + (i / 2) as u16))
}

fn op() -> impl Strategy<Value = Op> {
    let files = prop::collection::vec(0..NAMES.len(), 0..5);
    prop_oneof![
        (0u64..3, 0usize..5, files.clone()).prop_map(|(c, a, f)| Op::Join(c, a, f)),
        (0u64..3, 0usize..5, files).prop_map(|(c, a, f)| Op::Update(c, a, f)),
        (0u64..3, 0usize..5).prop_map(|(c, a)| Op::Leave(c, a)),
    ]
}

/// The obvious model: address → (owning connection, set of names).
type Model = HashMap<SocketAddr, (ConnId, BTreeSet<&'static str>)>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Under any sequence of JOIN, UPDATE and leave from a few connections over a few
    /// addresses, the peer table and its name index never disagree, every SEARCH answers what
    /// a plain map of address → names says, and only an address's owner can change it.
    #[test]
    fn table_and_index_never_disagree(ops in prop::collection::vec(op(), 1..60)) {
        let table = PeerTable::new();
        let mut model: Model = HashMap::new();
        for op in ops {
            match op {
                Op::Join(conn, a, files) => {
                    let names: Vec<FileRecord> = files.iter().map(|&i| FileRecord::named(NAMES[i])).collect();
                    let got = table.join(conn, addr(a), &names);
                    let expected = match model.get(&addr(a)) {
                        Some((owner, _)) if *owner != conn => Err(TableError::AddressTaken(addr(a))),
                        _ => {
                            model.insert(addr(a), (conn, files.iter().map(|&i| NAMES[i]).collect()));
                            Ok(())
                        }
                    };
                    prop_assert_eq!(got, expected);
                }
                Op::Update(conn, a, files) => {
                    let names: Vec<FileRecord> = files.iter().map(|&i| FileRecord::named(NAMES[i])).collect();
                    let got = table.update(conn, addr(a), &names);
                    let expected = match model.get_mut(&addr(a)) {
                        Some((owner, held)) if *owner == conn => {
                            *held = files.iter().map(|&i| NAMES[i]).collect();
                            Ok(())
                        }
                        _ => Err(TableError::NotJoined),
                    };
                    prop_assert_eq!(got, expected);
                }
                Op::Leave(conn, a) => {
                    let owned = model.get(&addr(a)).is_some_and(|(owner, _)| *owner == conn);
                    if owned {
                        model.remove(&addr(a));
                    }
                    prop_assert_eq!(table.leave(conn, addr(a)), owned);
                }
            }
            prop_assert_eq!(table.check_consistency(), Ok(()));
            prop_assert_eq!(table.len(), model.len());
            for name in NAMES {
                let mut got = table.search_addrs(name);
                got.sort();
                let mut expected: Vec<SocketAddr> = model
                    .iter()
                    .filter(|(_, (_, held))| held.contains(name))
                    .map(|(a, _)| *a)
                    .collect();
                expected.sort();
                prop_assert_eq!(got, expected);
            }
        }
    }
}
