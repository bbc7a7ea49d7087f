//! The tracker's state: the peer table, the name index and the word index, under one lock.
//!
//! SEARCH looks a name up in the name index and its words up in the word index instead of
//! walking every peer, so it does not slow down as peers are added. All three change together
//! under the same write lock, so they never disagree ([`PeerTable::check_consistency`] proves it
//! in the property tests). The lock is held only for the in-memory change, never across I/O.
//!
//! Compactness matters at 10,000 peers × 100 files (a million names if all differ):
//! - each distinct name's text is stored once and known by a 4-byte number ([`names`]);
//! - a peer lists its files as [`FileRef`]s: the name number, the size and the digest
//!   (48 bytes); holders of one name are grouped by content, so a name held by one peer costs
//!   no group at all;
//! - each distinct word is a 64-bit key and a list of name numbers ([`word_index`]).
//!
//! When most names or peers are gone the tables are renumbered densely and sized to what is
//! live, and the allocator is asked to hand the freed pages back to the system, so a tracker
//! that held millions of names returns near its idle size ([`PeerTable::heap_bytes`]).
//!
//! [`names`]: crate::tracker::names
//! [`word_index`]: crate::tracker::word_index

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use parking_lot::RwLock;

use crate::protocol::messages::SearchReplyWriter;
use crate::protocol::words::{self, QueryWords};
use crate::protocol::{Digest, FileRecord, SearchResult};
use crate::tracker::memory::release_free_memory;
use crate::tracker::names::{FileRef, Holders, Names, UNKNOWN_SIZE};
use crate::tracker::word_index::{MAX_INDEXED_WORDS, WordIndex, WordKeys, WordSlot};

/// Identifies one tracker connection, so that only it can change its own entry.
pub type ConnId = u64;

/// Most peers listed in one SEARCH result; `holders` still counts them all.
pub const MAX_LISTED_HOLDERS: usize = 32;

/// Candidates a keyword SEARCH may examine for each result it may return: bounds the work of
/// a query whose words are common but rarely together.
pub const EXAMINED_PER_RESULT: usize = 20;

/// A word list this short is walked without looking up the query's other words.
const FEW_CANDIDATES: usize = 4;

/// Why the table refused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// Another live connection already holds this address.
    AddressTaken(SocketAddr),
    /// UPDATE from a connection that has not joined.
    NotJoined,
    /// The change would take the names listed by all peers together over the limit.
    IndexFull {
        /// The limit, in names (a name listed by two peers counts twice).
        limit: usize,
    },
    /// The change would take the distinct words of all names over the limit.
    WordsFull {
        /// The limit, in distinct words.
        limit: usize,
    },
    /// The change would give this peer more names than one peer may list.
    TooManyNames {
        /// How many it would list.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::AddressTaken(addr) => write!(
                f,
                "peer {addr} {}; choose another port",
                crate::protocol::messages::ADDRESS_TAKEN
            ),
            TableError::NotJoined => write!(f, "send JOIN before UPDATE"),
            TableError::IndexFull { limit } => write!(
                f,
                "the tracker's index is full ({limit} names listed by all peers together); \
                 share fewer names or try again later"
            ),
            TableError::WordsFull { limit } => write!(
                f,
                "the tracker's word index is full ({limit} distinct words); \
                 share fewer names or try again later"
            ),
            TableError::TooManyNames { count, limit } => {
                write!(f, "the list would have {count} names; the limit is {limit}")
            }
        }
    }
}

impl std::error::Error for TableError {}

/// What SEARCH found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchAnswer {
    /// Peers sharing exactly the name asked for, as `IP:PORT`.
    pub peers: Vec<String>,
    /// Distinct files matching: the exact name first, then by holders, most first.
    pub results: Vec<SearchResult>,
    /// More files matched (or may have) than were returned.
    pub truncated: bool,
}

/// Space one connection reuses for every SEARCH it asks (see [`PeerTable::search_reply`]):
/// what a search collects before it writes the reply, kept between searches so that a SEARCH
/// allocates nothing. Its size is bounded by `--max-results` and the longest name.
#[derive(Default)]
pub struct SearchScratch {
    /// The exact name's holders: (when joined, peer number).
    exact_holders: Vec<(u64, u32)>,
    /// Names matching the words, by number.
    matched: Vec<u32>,
    /// The files found, in the answer's order.
    hits: Vec<Hit>,
    /// A candidate name, folded.
    fold: String,
}

/// One file a SEARCH found, before any text is written: a name and one of its contents.
#[derive(Debug, Clone, Copy)]
struct Hit {
    name: u32,
    /// How many peers hold this content.
    holders: u32,
    /// The size, or [`UNKNOWN_SIZE`].
    size: u64,
    content: Content,
}

/// Where a [`Hit`]'s content is recorded.
#[derive(Debug, Clone, Copy)]
enum Content {
    /// The one holder's own record: `files[file]` of peer `peer` (`u32::MAX`: none).
    One { peer: u32, file: u32 },
    /// Group `g` of the name's holders.
    Group(u32),
}

struct Slot {
    addr: SocketAddr,
    /// `IP:PORT`, formatted once for every SEARCH that returns this peer.
    text: AddrText,
    owner: ConnId,
    /// When it joined (a counter): SEARCH lists a name's holders in this order.
    joined: u64,
    /// The files it shares, sorted by name number, each name once.
    files: Box<[FileRef]>,
}

struct Inner {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    by_addr: HashMap<SocketAddr, u32>,
    names: Names,
    words: WordIndex,
    keys: WordKeys,
    /// Names listed by all peers together (a name listed by two peers counts twice).
    listed: usize,
    /// The most `listed` may reach: what bounds the table's memory.
    max_listed: usize,
    /// The most names one peer may list.
    max_per_peer: usize,
    /// The next peer's `joined`.
    next_join: u64,
    /// The most names listed since the table was last empty (worth trimming when it empties).
    listed_high: usize,
}

/// The peer table and indexes; cheap to share between connection threads.
pub struct PeerTable {
    inner: RwLock<Inner>,
}

impl Default for PeerTable {
    fn default() -> Self {
        PeerTable::new()
    }
}

impl PeerTable {
    /// An empty table with no limit on the names listed.
    pub fn new() -> PeerTable {
        PeerTable::with_limits(usize::MAX, usize::MAX)
    }

    /// An empty table that refuses a JOIN or UPDATE taking the names listed by all peers
    /// together over `max_listed` ([`TableError::IndexFull`]), or the distinct words of all
    /// names over as many ([`TableError::WordsFull`]). A listed name costs at most about 600
    /// bytes (a distinct 255-byte name of 32 words), typically about 170 (see
    /// docs/tracker.md), and a word about 45, so this bounds the table's memory whatever peers
    /// send.
    pub fn with_limit(max_listed: usize) -> PeerTable {
        PeerTable::with_limits(max_listed, usize::MAX)
    }

    /// [`PeerTable::with_limit`], and at most `max_per_peer` names for one peer after an
    /// UPDATE that adds ([`TableError::TooManyNames`]; whole lists are checked by the caller).
    pub fn with_limits(max_listed: usize, max_per_peer: usize) -> PeerTable {
        PeerTable {
            inner: RwLock::new(Inner {
                slots: Vec::new(),
                free: Vec::new(),
                by_addr: HashMap::new(),
                names: Names::default(),
                words: WordIndex::default(),
                keys: WordKeys::default(),
                listed: 0,
                max_listed,
                max_per_peer,
                next_join: 0,
                listed_high: 0,
            }),
        }
    }

    /// Registers (or re-registers) the peer at `addr` for connection `conn` with `files`.
    /// A name listed twice counts once (its first record).
    pub fn join(
        &self,
        conn: ConnId,
        addr: SocketAddr,
        files: &[FileRecord],
    ) -> Result<(), TableError> {
        let files = first_of_each_name(files);
        let mut inner = self.inner.write();
        if let Some(&id) = inner.by_addr.get(&addr) {
            let slot = inner.slots[id as usize].as_ref();
            if slot.is_some_and(|s| s.owner != conn) {
                return Err(TableError::AddressTaken(addr));
            }
            inner.check_room(Some(id), files.len())?;
            inner.check_words(&files)?;
            inner.replace_files(id, &files);
            finish(inner);
            return Ok(());
        }
        inner.check_room(None, files.len())?;
        inner.check_words(&files)?;
        let slot = Slot {
            addr,
            text: AddrText::new(addr),
            owner: conn,
            joined: inner.next_join,
            files: Box::new([]),
        };
        inner.next_join += 1;
        let id = match inner.free.pop() {
            Some(id) => {
                inner.slots[id as usize] = Some(slot);
                id
            }
            None => {
                inner.slots.push(Some(slot));
                (inner.slots.len() - 1) as u32
            }
        };
        inner.by_addr.insert(addr, id);
        inner.replace_files(id, &files);
        Ok(())
    }

    /// Replaces the files shared by the peer at `addr`, which `conn` must own.
    pub fn update(
        &self,
        conn: ConnId,
        addr: SocketAddr,
        files: &[FileRecord],
    ) -> Result<(), TableError> {
        let files = first_of_each_name(files);
        let mut inner = self.inner.write();
        let id = inner.owned(conn, addr).ok_or(TableError::NotJoined)?;
        inner.check_room(Some(id), files.len())?;
        inner.check_words(&files)?;
        inner.replace_files(id, &files);
        finish(inner);
        Ok(())
    }

    /// Adds `add` to the files of the peer at `addr` (a name it lists already gets the new
    /// record) and forgets the names in `remove`; `conn` must own the peer. A name both added
    /// and removed is removed.
    pub fn change(
        &self,
        conn: ConnId,
        addr: SocketAddr,
        add: &[FileRecord],
        remove: &[String],
    ) -> Result<(), TableError> {
        let add = first_of_each_name(add);
        let mut inner = self.inner.write();
        let id = inner.owned(conn, addr).ok_or(TableError::NotJoined)?;
        let count = inner.count_after_change(id, &add, remove);
        if count > inner.max_per_peer {
            return Err(TableError::TooManyNames {
                count,
                limit: inner.max_per_peer,
            });
        }
        inner.check_room(Some(id), count)?;
        inner.check_words(&add)?;
        inner.change_files(id, &add, remove);
        finish(inner);
        Ok(())
    }

    /// Forgets the peer at `addr` if `conn` owns it; true if it was there.
    pub fn leave(&self, conn: ConnId, addr: SocketAddr) -> bool {
        let mut inner = self.inner.write();
        let Some(id) = inner.owned(conn, addr) else {
            return false;
        };
        inner.replace_files(id, &[]);
        inner.by_addr.remove(&addr);
        inner.slots[id as usize] = None;
        inner.free.push(id);
        finish(inner);
        true
    }

    /// SEARCH: the peers sharing exactly `query`, and up to `max_results` distinct files whose
    /// names hold every word of `query` (folded: case and accents do not matter), the exact
    /// name's first, then by how many peers hold them.
    ///
    /// The word lists are not intersected whole: the rarest word's list is walked and each
    /// name in it checked for the other words, stopping at `max_results` (plus one, to know
    /// whether there were more) or after [`EXAMINED_PER_RESULT`] × `max_results` candidates.
    /// So a word that matches half the index costs no more than the cap.
    pub fn search(&self, query: &str, max_results: usize) -> SearchAnswer {
        self.search_words(query, &QueryWords::of(query), max_results)
    }

    /// [`PeerTable::search`] with the query's words already folded and split
    /// ([`QueryWords`]), as the caller that checked the query has them.
    pub fn search_words(
        &self,
        query: &str,
        query_words: &QueryWords,
        max_results: usize,
    ) -> SearchAnswer {
        let mut scratch = SearchScratch::default();
        let inner = self.inner.read();
        let truncated = inner.find(query, query_words, max_results, &mut scratch);
        SearchAnswer {
            peers: scratch
                .exact_holders
                .iter()
                .map(|&(_, id)| inner.slot_text(id).to_string())
                .collect(),
            results: scratch
                .hits
                .iter()
                .map(|hit| {
                    let (size, digest, holders, peers) = inner.describe(hit);
                    SearchResult {
                        name: inner.names.entries[hit.name as usize].text.to_string(),
                        size,
                        digest,
                        holders,
                        peers: peers.map(str::to_string).collect(),
                    }
                })
                .collect(),
            truncated,
        }
    }

    /// [`PeerTable::search_words`] written straight into `out` as the SEARCH reply's line,
    /// byte for byte what [`Reply::search`] of that answer encodes to, but with no `String`
    /// per peer or result: the reply is written from the table under the read lock (memory
    /// only, no I/O), and `scratch`, kept by the connection, makes a SEARCH allocate nothing
    /// once the buffers have grown.
    ///
    /// [`Reply::search`]: crate::protocol::Reply::search
    pub fn search_reply(
        &self,
        query: &str,
        query_words: &QueryWords,
        max_results: usize,
        scratch: &mut SearchScratch,
        out: &mut Vec<u8>,
    ) {
        let inner = self.inner.read();
        let truncated = inner.find(query, query_words, max_results, scratch);
        let mut reply = SearchReplyWriter::new(out);
        for &(_, id) in &scratch.exact_holders {
            reply.peer(inner.slot_text(id));
        }
        let mut results = reply.results();
        for hit in &scratch.hits {
            let (size, digest, holders, peers) = inner.describe(hit);
            let name = &inner.names.entries[hit.name as usize].text;
            results.result(name, size, digest.as_ref(), holders, peers);
        }
        drop(inner);
        results.finish(truncated);
    }

    /// The peers sharing exactly `name`, as `IP:PORT`, in the order they joined the tracker.
    pub fn holders(&self, name: &str) -> Vec<String> {
        let inner = self.inner.read();
        inner
            .names
            .find(name)
            .map(|n| {
                inner
                    .holder_slots(n)
                    .into_iter()
                    .map(|slot| slot.text.as_str().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The peers sharing exactly `name`, as socket addresses (same order as [`holders`]).
    ///
    /// [`holders`]: PeerTable::holders
    pub fn search_addrs(&self, name: &str) -> Vec<SocketAddr> {
        let inner = self.inner.read();
        let Some(n) = inner.names.find(name) else {
            return Vec::new();
        };
        inner
            .holder_slots(n)
            .into_iter()
            .map(|slot| slot.addr)
            .collect()
    }

    /// LIST: the files the peer at `addr` shares, sorted by name; `None` if it is not joined.
    pub fn list(&self, addr: SocketAddr) -> Option<Vec<FileRecord>> {
        let inner = self.inner.read();
        let id = *inner.by_addr.get(&addr)?;
        let slot = inner.slots[id as usize].as_ref()?;
        let mut files: Vec<FileRecord> = slot
            .files
            .iter()
            .map(|f| FileRecord {
                name: inner.names.entries[f.name as usize].text.to_string(),
                size: known_size(f.size),
                digest: f.digest,
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Some(files)
    }

    /// How many peers are registered.
    pub fn len(&self) -> usize {
        self.inner.read().by_addr.len()
    }

    /// True when no peer is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the table's own structures (allocator overhead not counted): what the
    /// shrink rule gives back, measured without asking the system.
    pub fn heap_bytes(&self) -> usize {
        let inner = self.inner.read();
        let slots: usize = inner
            .slots
            .iter()
            .flatten()
            .map(|s| s.text.heap_bytes() + s.files.len() * std::mem::size_of::<FileRef>())
            .sum();
        inner.slots.capacity() * std::mem::size_of::<Option<Slot>>()
            + inner.free.capacity() * 4
            + inner.by_addr.capacity() * (std::mem::size_of::<(SocketAddr, u32)>() + 1)
            + slots
            + inner.names.heap_bytes()
            + inner.words.heap_bytes()
    }

    /// Checks that the indexes say exactly what the peer entries say. For tests.
    pub fn check_consistency(&self) -> Result<(), String> {
        self.inner.read().check_consistency()
    }
}

/// Ends a change: renumbers and resizes the tables when most of what they hold is gone, and
/// once the lock is released asks the allocator to return free pages to the system (also when
/// the last peer has left). Cheap when nothing is sparse; when it compacts, the cost
/// (proportional to what is live) is paid for by the removals since the last compaction, which
/// were at least three times as many.
fn finish(mut inner: parking_lot::RwLockWriteGuard<'_, Inner>) {
    let shrunk = inner.shrink_if_sparse();
    let emptied = inner.by_addr.is_empty() && inner.listed_high > 0;
    if emptied {
        inner.listed_high = 0;
    }
    drop(inner);
    if shrunk || emptied {
        release_free_memory();
    }
}

/// The records of `files`, the first of each name only, in the order given.
fn first_of_each_name(files: &[FileRecord]) -> Vec<&FileRecord> {
    let mut seen = std::collections::HashSet::with_capacity(files.len());
    files.iter().filter(|f| seen.insert(&*f.name)).collect()
}

/// Where name `n` is in `files` (sorted by name number, each once).
///
/// A peer's names usually have consecutive numbers (new names are numbered in turn as its
/// JOIN interns them), so the place the first number predicts is looked at first: one or two
/// cache misses in a table of a million names, where a binary search of 100 records takes
/// five or six. Any other list is searched.
fn position(files: &[FileRef], n: u32) -> Option<usize> {
    let guess = n.wrapping_sub(files.first()?.name) as usize;
    if files.get(guess).is_some_and(|f| f.name == n) {
        return Some(guess);
    }
    files.binary_search_by_key(&n, |f| f.name).ok()
}

/// A peer's `IP:PORT` as SEARCH lists it, kept inside its slot, so that listing a peer reads
/// no other memory (the longest, an IPv6 address with a scope and a port, is 58 bytes).
enum AddrText {
    Inline {
        len: u8,
        bytes: [u8; 62],
    },
    /// Never expected; kept so that no address can be cut.
    Heap(Box<str>),
}

impl AddrText {
    fn new(addr: SocketAddr) -> AddrText {
        let text = addr.to_string();
        let mut bytes = [0u8; 62];
        match bytes.get_mut(..text.len()) {
            Some(room) => {
                room.copy_from_slice(text.as_bytes());
                AddrText::Inline {
                    len: text.len() as u8,
                    bytes,
                }
            }
            None => AddrText::Heap(text.into_boxed_str()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `String`, whole: valid UTF-8 (ASCII in fact).
            AddrText::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            AddrText::Heap(text) => text,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            AddrText::Inline { .. } => 0,
            AddrText::Heap(text) => text.len(),
        }
    }
}

fn known_size(size: u64) -> Option<u64> {
    (size != UNKNOWN_SIZE).then_some(size)
}

impl Inner {
    fn owned(&self, conn: ConnId, addr: SocketAddr) -> Option<u32> {
        let id = *self.by_addr.get(&addr)?;
        let slot = self.slots[id as usize].as_ref()?;
        (slot.owner == conn).then_some(id)
    }

    /// Refuses to give slot `id` (or a new slot) `count` names if that would list too many.
    fn check_room(&self, id: Option<u32>, count: usize) -> Result<(), TableError> {
        let current = id
            .and_then(|id| self.slots[id as usize].as_ref())
            .map_or(0, |slot| slot.files.len());
        if self.listed - current + count > self.max_listed {
            return Err(TableError::IndexFull {
                limit: self.max_listed,
            });
        }
        Ok(())
    }

    /// Refuses `records` if the words their new names would add take the word index over its
    /// limit (the same number as names listed). Counts generously: words of names some other
    /// peer drops in the same change are not subtracted.
    fn check_words(&self, records: &[&FileRecord]) -> Result<(), TableError> {
        let (live_words, _) = self.words.occupancy();
        let most_new = records.len().saturating_mul(MAX_INDEXED_WORDS);
        if live_words.saturating_add(most_new) <= self.max_listed {
            return Ok(());
        }
        let (mut buf, mut keys) = (String::new(), Vec::new());
        let mut new_words: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for record in records {
            if self
                .names
                .find(&record.name)
                .is_some_and(|n| self.names.is_live(n))
            {
                continue;
            }
            self.keys.keys_of(&record.name, &mut buf, &mut keys);
            new_words.extend(keys.iter().filter(|&&k| !self.words.contains(k)));
            if live_words + new_words.len() > self.max_listed {
                return Err(TableError::WordsFull {
                    limit: self.max_listed,
                });
            }
        }
        Ok(())
    }

    fn files_of(&self, id: u32) -> &[FileRef] {
        self.slots[id as usize]
            .as_ref()
            .map_or(&[], |slot| &slot.files)
    }

    /// How many names slot `id` would list after adding `add` and removing `remove`.
    fn count_after_change(&self, id: u32, add: &[&FileRecord], remove: &[String]) -> usize {
        let files = self.files_of(id);
        let listed = |name: &str| {
            self.names
                .find(name)
                .is_some_and(|n| position(files, n).is_some())
        };
        let removed: std::collections::HashSet<&str> = remove
            .iter()
            .map(String::as_str)
            .filter(|name| listed(name))
            .collect();
        let added = add
            .iter()
            .filter(|f| !listed(&f.name) && !remove.contains(&f.name))
            .count();
        files.len() - removed.len() + added
    }

    /// The record peer `id` holds for name `n`. Holders and files never disagree, so a miss
    /// (reported as unknown content) would be a bug caught by the consistency check.
    fn record_of(&self, id: u32, n: u32) -> FileRef {
        let files = self.files_of(id);
        match position(files, n) {
            Some(i) => files[i],
            None => FileRef {
                name: n,
                size: UNKNOWN_SIZE,
                digest: None,
            },
        }
    }

    /// Interns each record's name and returns the records as references sorted by number.
    fn intern_records(&mut self, records: &[&FileRecord]) -> Vec<FileRef> {
        let mut refs: Vec<FileRef> = records
            .iter()
            .map(|r| FileRef {
                name: self.names.intern(&r.name).0,
                size: r.size.unwrap_or(UNKNOWN_SIZE),
                digest: r.digest,
            })
            .collect();
        refs.sort_unstable_by_key(|f| f.name);
        refs
    }

    /// Gives slot `id` exactly `records` (one per name).
    fn replace_files(&mut self, id: u32, records: &[&FileRecord]) {
        let desired = self.intern_records(records);
        self.set_files(id, desired);
    }

    /// Adds `add` to slot `id`'s files (replacing records of the same name), then removes the
    /// names in `remove`.
    fn change_files(&mut self, id: u32, add: &[&FileRecord], remove: &[String]) {
        let added = self.intern_records(add);
        let removed: Vec<u32> = remove.iter().filter_map(|n| self.names.find(n)).collect();
        let old = self.files_of(id);
        let mut desired: Vec<FileRef> = Vec::with_capacity(old.len() + added.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < added.len() {
            let next = match (old.get(i), added.get(j)) {
                (Some(o), Some(a)) if o.name == a.name => {
                    i += 1;
                    j += 1;
                    *a
                }
                (Some(o), Some(a)) if o.name < a.name => {
                    i += 1;
                    *o
                }
                (Some(o), None) => {
                    i += 1;
                    *o
                }
                (_, Some(a)) => {
                    j += 1;
                    *a
                }
                (None, None) => break,
            };
            if !removed.contains(&next.name) {
                desired.push(next);
            }
        }
        self.set_files(id, desired);
        // A name interned for `add` but also removed is held by nobody: forget it again.
        for f in &added {
            if removed.contains(&f.name) && !self.names.is_live(f.name) {
                self.names.release(f.name);
            }
        }
    }

    /// Replaces slot `id`'s files with `desired` (sorted by number, each name once), keeping
    /// the indexes in step: only names whose record changed are touched.
    fn set_files(&mut self, id: u32, desired: Vec<FileRef>) {
        let Some(slot) = self.slots[id as usize].as_mut() else {
            return;
        };
        let old = std::mem::take(&mut slot.files);
        self.listed = self.listed - old.len() + desired.len();
        self.listed_high = self.listed_high.max(self.listed);
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < desired.len() {
            match (old.get(i), desired.get(j)) {
                (Some(o), Some(d)) if o.name == d.name => {
                    if o.content() != d.content() {
                        self.regroup(id, *o, *d);
                    }
                    i += 1;
                    j += 1;
                }
                (Some(o), Some(d)) if o.name < d.name => {
                    self.unlink(id, *o);
                    i += 1;
                }
                (Some(o), None) => {
                    self.unlink(id, *o);
                    i += 1;
                }
                (_, Some(d)) => {
                    self.link(id, *d);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        if let Some(slot) = self.slots[id as usize].as_mut() {
            slot.files = desired.into_boxed_slice();
        }
    }

    /// Makes slot `id` a holder of `file`; a name that had no holder gets its words indexed.
    fn link(&mut self, id: u32, file: FileRef) {
        let n = file.name as usize;
        let was_unheld = matches!(self.names.entries[n].holders, Holders::None);
        let mut holders = std::mem::take(&mut self.names.entries[n].holders);
        holders.add(id, file.content(), |first| {
            self.record_of(first, file.name).content()
        });
        self.names.entries[n].holders = holders;
        if was_unheld {
            let mut buf = String::new();
            let mut keys = Vec::new();
            self.keys
                .keys_of(&self.names.entries[n].text, &mut buf, &mut keys);
            let rarest = self.words.add(file.name, &keys);
            self.names.entries[n].rarest_word = rarest.unwrap_or(WordSlot::NONE);
        }
    }

    /// Moves slot `id` from the holders of `old` to those of `new`, same name, other content.
    /// The name stays held throughout, so its words are untouched.
    fn regroup(&mut self, id: u32, old: FileRef, new: FileRef) {
        let n = old.name as usize;
        let mut holders = std::mem::take(&mut self.names.entries[n].holders);
        holders.remove(id, old.content());
        holders.add(id, new.content(), |first| {
            self.record_of(first, new.name).content()
        });
        self.names.entries[n].holders = holders;
    }

    /// Removes slot `id` from the holders of `file`; a name nobody holds any more is forgotten,
    /// words included.
    fn unlink(&mut self, id: u32, file: FileRef) {
        let n = file.name;
        if !self.names.entries[n as usize]
            .holders
            .remove(id, file.content())
        {
            return;
        }
        let mut buf = String::new();
        let mut keys = Vec::new();
        self.keys
            .keys_of(&self.names.entries[n as usize].text, &mut buf, &mut keys);
        let names = &self.names;
        self.words.remove(n, &keys, |m| names.is_live(m));
        self.names.release(n);
    }

    /// The holders of name `n`, in the order they joined the tracker (not grouped by
    /// content: the original's list does not know content).
    fn holder_slots(&self, n: u32) -> Vec<&Slot> {
        let mut slots: Vec<&Slot> = self.names.entries[n as usize]
            .holders
            .peers()
            .filter_map(|id| self.slots[id as usize].as_ref())
            .collect();
        slots.sort_unstable_by_key(|slot| slot.joined);
        slots
    }

    /// A live peer's `IP:PORT` (empty for a free slot, which no index lists).
    fn slot_text(&self, id: u32) -> &str {
        self.slots[id as usize]
            .as_ref()
            .map_or("", |slot| slot.text.as_str())
    }

    /// The search itself (see [`PeerTable::search`]): leaves in `scratch` the exact name's
    /// holders in the order they joined, and the files found in the order of the answer,
    /// at most `max_results`; returns whether more matched (or may have).
    fn find(
        &self,
        query: &str,
        query_words: &QueryWords,
        max_results: usize,
        scratch: &mut SearchScratch,
    ) -> bool {
        scratch.exact_holders.clear();
        scratch.hits.clear();
        let exact = self.names.find(query);
        if let Some(n) = exact {
            let holders = &self.names.entries[n as usize].holders;
            scratch.exact_holders.extend(
                holders
                    .peers()
                    .filter_map(|id| self.slots[id as usize].as_ref().map(|s| (s.joined, id))),
            );
            scratch.exact_holders.sort_unstable();
            self.hits_of(n, &mut scratch.hits);
            scratch
                .hits
                .sort_by_key(|hit| std::cmp::Reverse(hit.holders));
        }
        let exact_hits = scratch.hits.len();
        let more = self.match_words(query_words, exact, max_results, scratch);
        for i in 0..scratch.matched.len() {
            self.hits_of(scratch.matched[i], &mut scratch.hits);
        }
        let names = &self.names.entries;
        scratch.hits[exact_hits..].sort_by(|a, b| {
            b.holders
                .cmp(&a.holders)
                .then_with(|| {
                    names[a.name as usize]
                        .text
                        .cmp(&names[b.name as usize].text)
                })
                .then_with(|| known_size(a.size).cmp(&known_size(b.size)))
        });
        let cut = scratch.hits.len() > max_results;
        scratch.hits.truncate(max_results);
        more || cut
    }

    /// Appends one hit per distinct content of name `n`.
    fn hits_of(&self, n: u32, hits: &mut Vec<Hit>) {
        match &self.names.entries[n as usize].holders {
            Holders::None => {}
            Holders::One(id) => {
                let files = self.files_of(*id);
                // Holders and files never disagree (the consistency check proves it); a miss
                // would be reported as unknown content.
                let (file, size) = match position(files, n) {
                    Some(i) => (i as u32, files[i].size),
                    None => (u32::MAX, UNKNOWN_SIZE),
                };
                hits.push(Hit {
                    name: n,
                    holders: 1,
                    size,
                    content: Content::One { peer: *id, file },
                });
            }
            Holders::Many(groups) => {
                hits.extend(groups.iter().enumerate().map(|(g, group)| Hit {
                    name: n,
                    holders: group.peers.len() as u32,
                    size: group.size,
                    content: Content::Group(g as u32),
                }));
            }
        }
    }

    /// What a result says about `hit`: size, digest, how many hold it, and the first
    /// [`MAX_LISTED_HOLDERS`] of them as `IP:PORT`.
    fn describe(
        &self,
        hit: &Hit,
    ) -> (
        Option<u64>,
        Option<Digest>,
        usize,
        impl Iterator<Item = &str> + '_,
    ) {
        let (digest, peers): (Option<Digest>, &[u32]) = match hit.content {
            Content::One { peer, file } => (
                self.files_of(peer)
                    .get(file as usize)
                    .and_then(|f| f.digest),
                match &self.names.entries[hit.name as usize].holders {
                    Holders::One(id) => std::slice::from_ref(id),
                    _ => &[],
                },
            ),
            Content::Group(g) => match &self.names.entries[hit.name as usize].holders {
                Holders::Many(groups) => {
                    let group = &groups[g as usize];
                    (group.digest, &group.peers)
                }
                _ => (None, &[]),
            },
        };
        let texts = peers
            .iter()
            .filter_map(|&id| self.slots[id as usize].as_ref().map(|s| s.text.as_str()))
            .take(MAX_LISTED_HOLDERS);
        (known_size(hit.size), digest, hit.holders as usize, texts)
    }

    /// Names (other than `exact`) holding every word of `query`, left in `scratch.matched`:
    /// at most `cap`, and whether there were more (or may be: the examination budget ran out).
    fn match_words(
        &self,
        query: &QueryWords,
        exact: Option<u32>,
        cap: usize,
        scratch: &mut SearchScratch,
    ) -> bool {
        let matched = &mut scratch.matched;
        matched.clear();
        if query.is_empty() || cap == 0 {
            return false;
        }
        let shortcut = exact.and_then(|n| self.rarest_list_of(n));
        let mut rarest: Option<&[u32]> = shortcut;
        // Longer words first: they tend to be the rarer (a number, a title word), so the loop
        // below usually stops at once.
        for word in query.longest_first().filter(|_| shortcut.is_none()) {
            let Some(list) = self.words.postings(self.keys.key(word)) else {
                return false;
            };
            if rarest.is_none_or(|r| list.len() < r.len()) {
                rarest = Some(list);
            }
            // Any word's list holds every match, and each candidate is checked for all the
            // words: once a list this short is found, looking the others up saves nothing.
            if list.len() <= FEW_CANDIDATES {
                break;
            }
        }
        let rarest = rarest.unwrap_or_default();
        let budget = cap.saturating_mul(EXAMINED_PER_RESULT).max(1000);
        let mut pos = 0;
        while pos < rarest.len() && matched.len() <= cap && pos < budget {
            // Take candidates until one more than the cap matched, then drop repeats (a
            // number can be listed twice after reuse) and go on if that left too few.
            while pos < rarest.len() && matched.len() <= cap && pos < budget {
                let n = rarest[pos];
                pos += 1;
                if Some(n) == exact || !self.names.is_live(n) {
                    continue;
                }
                if words::holds_all(
                    &self.names.entries[n as usize].text,
                    query,
                    &mut scratch.fold,
                ) {
                    matched.push(n);
                }
            }
            matched.sort_unstable();
            matched.dedup();
        }
        let more = matched.len() > cap || (pos < rarest.len() && pos >= budget);
        matched.truncate(cap);
        more
    }

    /// The list of name `n`'s rarest word, when it is short: every name holding all the
    /// words of `n` is in it. Found from the name's own entry, without hashing a word; a list
    /// that no longer lists `n` is from a word that took the slot since (see
    /// [`WordIndex::postings_at`]), and a list grown long is no shortcut.
    fn rarest_list_of(&self, n: u32) -> Option<&[u32]> {
        let list = self
            .words
            .postings_at(self.names.entries[n as usize].rarest_word);
        (list.len() <= FEW_CANDIDATES && list.contains(&n)).then_some(list)
    }

    /// Compacts what is mostly empty; true if anything was compacted.
    fn shrink_if_sparse(&mut self) -> bool {
        let sparse =
            |(live, total): (usize, usize), floor: usize| total >= floor && live * 4 < total;
        let mut shrunk = false;
        if sparse(self.names.occupancy(), 1024) {
            let map = self.names.compact();
            for slot in self.slots.iter_mut().flatten() {
                // The new numbers keep the old order, so each list stays sorted.
                for f in slot.files.iter_mut() {
                    f.name = map[f.name as usize];
                }
            }
            self.words.remap(&map);
            shrunk = true;
        }
        if sparse(self.words.occupancy(), 1024) {
            let map = self.words.shrink();
            for entry in &mut self.names.entries {
                entry.rarest_word = entry.rarest_word.moved(&map);
            }
            shrunk = true;
        }
        let live_peers = self.by_addr.len();
        if sparse((live_peers, self.slots.len()), 256) {
            self.compact_slots();
            shrunk = true;
        }
        shrunk
    }

    /// Renumbers the peers densely, in their present order.
    fn compact_slots(&mut self) {
        let mut map = vec![u32::MAX; self.slots.len()];
        let old = std::mem::take(&mut self.slots);
        let mut live = Vec::with_capacity(self.by_addr.len());
        for (id, slot) in old.into_iter().enumerate() {
            if let Some(slot) = slot {
                map[id] = live.len() as u32;
                live.push(Some(slot));
            }
        }
        self.slots = live;
        self.free = Vec::new();
        for id in self.by_addr.values_mut() {
            *id = map[*id as usize];
        }
        self.by_addr.shrink_to_fit();
        for entry in &mut self.names.entries {
            entry.holders.remap_peers(&map);
        }
    }

    fn check_consistency(&self) -> Result<(), String> {
        let names = &self.names;
        let mut expected: HashMap<u32, Vec<(u32, FileRef)>> = HashMap::new();
        for (id, slot) in self.slots.iter().enumerate() {
            if let Some(slot) = slot {
                if self.by_addr.get(&slot.addr) != Some(&(id as u32)) {
                    return Err(format!("peer {} missing from the address map", slot.addr));
                }
                if !slot.files.windows(2).all(|w| w[0].name < w[1].name) {
                    return Err(format!("peer {}: files not sorted or repeated", slot.addr));
                }
                for f in slot.files.iter() {
                    expected.entry(f.name).or_default().push((id as u32, *f));
                }
            }
        }
        if self.by_addr.len() != self.slots.iter().flatten().count() {
            return Err("address map holds addresses with no peer".into());
        }
        let listed: usize = self.slots.iter().flatten().map(|s| s.files.len()).sum();
        if listed != self.listed {
            return Err(format!("{listed} names listed, {} counted", self.listed));
        }
        let live = names
            .entries
            .iter()
            .filter(|e| !matches!(e.holders, Holders::None))
            .count();
        let (findable, _) = names.occupancy();
        if live != expected.len() || findable != live {
            return Err(format!(
                "index has {live} names ({findable} findable), peers have {}",
                expected.len()
            ));
        }
        let mut word_names: HashMap<u64, Vec<u32>> = HashMap::new();
        let (mut buf, mut keys) = (String::new(), Vec::new());
        for (n, holders) in expected {
            let entry = names
                .entries
                .get(n as usize)
                .ok_or_else(|| format!("name number {n} out of range"))?;
            if names.find(&entry.text) != Some(n) {
                return Err(format!("name {:?} cannot be found by its text", entry.text));
            }
            let mut got: Vec<(u32, u64, Option<crate::protocol::Digest>)> = match &entry.holders {
                Holders::None => Vec::new(),
                Holders::One(id) => {
                    let f = self.record_of(*id, n);
                    vec![(*id, f.size, f.digest)]
                }
                Holders::Many(groups) => {
                    if groups.iter().map(|g| g.peers.len()).sum::<usize>() < 2 {
                        return Err(format!("name {:?}: one holder kept as many", entry.text));
                    }
                    groups
                        .iter()
                        .flat_map(|g| g.peers.iter().map(|&p| (p, g.size, g.digest)))
                        .collect()
                }
            };
            let mut want: Vec<_> = holders
                .iter()
                .map(|(id, f)| (*id, f.size, f.digest))
                .collect();
            got.sort_unstable();
            want.sort_unstable();
            if got != want {
                return Err(format!(
                    "name {:?}: index {got:?}, peers {want:?}",
                    entry.text
                ));
            }
            self.keys.keys_of(&entry.text, &mut buf, &mut keys);
            for &key in &keys {
                word_names.entry(key).or_default().push(n);
            }
        }
        self.words.check(&word_names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Digest;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn names(list: &[&str]) -> Vec<FileRecord> {
        list.iter().map(|s| FileRecord::named(*s)).collect()
    }

    #[test]
    fn join_search_update_leave() {
        let t = PeerTable::new();
        t.join(1, addr(1), &names(&["a", "b"])).unwrap();
        t.join(2, addr(2), &names(&["b"])).unwrap();
        assert_eq!(t.holders("b"), vec!["10.0.0.1:1", "10.0.0.1:2"]);
        t.update(2, addr(2), &names(&["c"])).unwrap();
        assert_eq!(t.holders("b"), vec!["10.0.0.1:1"]);
        assert!(t.leave(1, addr(1)));
        assert!(t.holders("b").is_empty());
        assert_eq!(t.holders("c"), vec!["10.0.0.1:2"]);
        t.check_consistency().unwrap();
    }

    #[test]
    fn another_connection_cannot_take_an_address() {
        let t = PeerTable::new();
        t.join(1, addr(1), &names(&["a"])).unwrap();
        assert_eq!(
            t.join(2, addr(1), &names(&["evil"])),
            Err(TableError::AddressTaken(addr(1)))
        );
        assert_eq!(
            t.update(2, addr(1), &names(&["evil"])),
            Err(TableError::NotJoined)
        );
        assert!(!t.leave(2, addr(1)));
        assert_eq!(t.holders("a"), vec!["10.0.0.1:1"]);
    }

    /// Holders of the same name are grouped by (size, digest), most held first, with counts.
    #[test]
    fn results_group_holders_by_content() {
        let t = PeerTable::new();
        let d = Some(Digest([1; 32]));
        let same = [FileRecord::sized("aula-01.mp4", 3, d)];
        t.join(1, addr(1), &same).unwrap();
        t.join(2, addr(2), &[FileRecord::sized("aula-01.mp4", 5, None)])
            .unwrap();
        t.join(3, addr(3), &same).unwrap();
        let found = t.search("AULA", 100);
        assert!(found.peers.is_empty());
        assert_eq!(found.results.len(), 2);
        assert_eq!(found.results[0].holders, 2);
        assert_eq!(found.results[0].peers, vec!["10.0.0.1:1", "10.0.0.1:3"]);
        assert_eq!(found.results[0].digest, d);
        assert_eq!(found.results[1].size, Some(5));
        t.change(2, addr(2), &same, &[]).unwrap();
        let found = t.search("aula-01.mp4", 100);
        assert_eq!(found.peers.len(), 3);
        assert_eq!(found.results.len(), 1);
        assert_eq!(found.results[0].holders, 3);
        t.check_consistency().unwrap();
    }

    /// Names made of many distinct words cannot grow the word index past its limit; only a
    /// name's first 32 words are indexed.
    #[test]
    fn the_word_index_is_bounded() {
        let t = PeerTable::with_limit(100);
        let wordy: Vec<FileRecord> = (0..4)
            .map(|i| {
                let words: Vec<String> = (0..40).map(|w| format!("w{i}x{w}")).collect();
                FileRecord::named(words.join(" "))
            })
            .collect();
        assert_eq!(
            t.join(1, addr(1), &wordy),
            Err(TableError::WordsFull { limit: 100 })
        );
        t.join(1, addr(1), &wordy[..3]).unwrap();
        assert_eq!(t.search("w0x31", 10).results.len(), 1);
        assert!(t.search("w0x32", 10).results.is_empty());
        t.check_consistency().unwrap();
    }

    /// A word held by every name costs the cap, and the answer says it was cut.
    #[test]
    fn a_common_word_is_cut_at_the_cap() {
        let t = PeerTable::new();
        let files: Vec<FileRecord> = (0..500)
            .map(|i| FileRecord::named(format!("Faixa {i:03} ao vivo.mp3")))
            .collect();
        t.join(1, addr(1), &files).unwrap();
        let found = t.search("VIVO", 10);
        assert_eq!(found.results.len(), 10);
        assert!(found.truncated);
        let found = t.search("faixa 007", 10);
        assert_eq!(found.results.len(), 1);
        assert!(!found.truncated);
        assert_eq!(found.results[0].name, "Faixa 007 ao vivo.mp3");
    }

    /// SEARCH for an exact name starts from the list of its rarest word, kept in its entry:
    /// still found after the word index is renumbered, and given up (the words looked up
    /// instead) once that list has grown long. Names holding all its words are found either way.
    #[test]
    fn an_exact_name_starts_from_its_rarest_word() {
        let t = PeerTable::new();
        // Words indexed before the name's own move when the index shrinks.
        let filler: Vec<FileRecord> = (0..2000)
            .map(|i| FileRecord::named(format!("x{i} y{i}")))
            .collect();
        t.join(2, addr(2), &filler).unwrap();
        t.join(1, addr(1), &names(&["aula 01.mp4"])).unwrap();
        assert!(t.leave(2, addr(2)));
        let shortcut = |t: &PeerTable| {
            let inner = t.inner.read();
            let n = inner.names.find("aula 01.mp4").unwrap();
            inner.rarest_list_of(n).map(<[u32]>::to_vec)
        };
        assert!(
            t.inner.read().words.occupancy().1 < 100,
            "the index did not shrink"
        );
        assert_eq!(shortcut(&t).map(|l| l.len()), Some(1));

        t.join(3, addr(3), &names(&["Aula 01.mp4 (legendas).srt"]))
            .unwrap();
        let found = t.search("aula 01.mp4", 10);
        let order: Vec<&str> = found.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(order, ["aula 01.mp4", "Aula 01.mp4 (legendas).srt"]);

        let common: Vec<FileRecord> = (0..10)
            .map(|i| FileRecord::named(format!("aula {i} 01 mp4")))
            .collect();
        t.join(4, addr(4), &common).unwrap();
        assert_eq!(shortcut(&t), None);
        assert_eq!(t.search("aula 01.mp4", 20).results.len(), 12);
        t.check_consistency().unwrap();
    }

    /// The exact name comes first, then more-held names.
    #[test]
    fn the_exact_name_comes_first_then_the_most_held() {
        let t = PeerTable::new();
        t.join(1, addr(1), &names(&["aula", "aula 2", "aula 3"]))
            .unwrap();
        t.join(2, addr(2), &names(&["aula 3"])).unwrap();
        let found = t.search("aula", 10);
        assert_eq!(found.peers, vec!["10.0.0.1:1"]);
        let order: Vec<&str> = found.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(order, ["aula", "aula 3", "aula 2"]);
    }

    /// UPDATE add/remove changes only what it names, and LIST shows each record.
    #[test]
    fn changes_add_replace_and_remove_records() {
        let t = PeerTable::with_limits(usize::MAX, 3);
        t.join(1, addr(1), &names(&["a", "b"])).unwrap();
        let d = Some(Digest([9; 32]));
        t.change(1, addr(1), &[FileRecord::sized("a", 7, d)], &["b".into()])
            .unwrap();
        assert_eq!(t.list(addr(1)).unwrap(), vec![FileRecord::sized("a", 7, d)]);
        assert_eq!(
            t.change(1, addr(1), &names(&["c", "d", "e"]), &[]),
            Err(TableError::TooManyNames { count: 4, limit: 3 })
        );
        t.change(1, addr(1), &names(&["x"]), &["x".into()]).unwrap();
        assert!(t.holders("x").is_empty());
        assert_eq!(t.list(addr(2)), None);
        t.check_consistency().unwrap();
    }

    /// A record is found whether or not the peer's numbers are consecutive.
    #[test]
    fn records_are_found_by_guess_or_by_search() {
        let refs = |names: &[u32]| -> Vec<FileRef> {
            names
                .iter()
                .map(|&name| FileRef {
                    name,
                    size: name.into(),
                    digest: None,
                })
                .collect()
        };
        let consecutive = refs(&[7, 8, 9, 10]);
        let gaps = refs(&[3, 5, 6, 40, 41]);
        for (files, present, absent) in [
            (&consecutive, &[7, 8, 9, 10][..], &[0, 6, 11, u32::MAX][..]),
            (&gaps, &[3, 5, 6, 40, 41][..], &[0, 4, 7, 39, 42][..]),
        ] {
            for &n in present {
                assert_eq!(position(files, n).map(|i| files[i].name), Some(n));
            }
            for &n in absent {
                assert_eq!(position(files, n), None, "{n}");
            }
        }
        assert_eq!(position(&[], 1), None);
    }

    /// Addresses are listed as `SocketAddr` writes them, the longest included.
    #[test]
    fn peer_addresses_are_kept_whole() {
        let v6 = std::net::SocketAddrV6::new(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            65535,
            0,
            u32::MAX,
        );
        for addr in [addr(1), SocketAddr::V6(v6), "[::1]:7".parse().unwrap()] {
            let text = AddrText::new(addr);
            assert_eq!(text.as_str(), addr.to_string());
            assert!(matches!(text, AddrText::Inline { .. }), "{addr}");
        }
    }

    /// After many names come and go, the tables are compacted back to what is live.
    #[test]
    fn memory_is_given_back_when_the_peers_leave() {
        let t = PeerTable::new();
        let idle = t.heap_bytes();
        for p in 0..20u16 {
            let files: Vec<FileRecord> = (0..2000)
                .map(|i| FileRecord::sized(format!("peer{p} file {i} take.bin"), i, None))
                .collect();
            t.join(p.into(), addr(p), &files).unwrap();
        }
        let full = t.heap_bytes();
        for p in 0..20u16 {
            assert!(t.leave(p.into(), addr(p)));
        }
        t.check_consistency().unwrap();
        let after = t.heap_bytes();
        assert!(
            after < idle + (full - idle) / 20,
            "idle {idle}, full {full}, after {after}"
        );
        t.join(1, addr(1), &names(&["again"])).unwrap();
        assert_eq!(t.holders("again"), vec!["10.0.0.1:1"]);
        t.check_consistency().unwrap();
    }
}

#[cfg(test)]
mod properties {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;
    use unicode_normalization::UnicodeNormalization;

    use super::*;
    use crate::protocol::Reply;

    /// Names made of a few words, in varied case and accents, so that keyword search has
    /// something to find and to fold.
    const WORDS: [&str; 8] = [
        "Música", "MUSICA", "aula", "Aula", "01", "ao", "vivo", "Ação",
    ];

    #[derive(Debug, Clone)]
    enum Op {
        Join(ConnId, u16, Vec<(u8, u8)>),
        Update(ConnId, u16, Vec<(u8, u8)>),
        Change(ConnId, u16, Vec<(u8, u8)>, Vec<u8>),
        Leave(ConnId, u16),
    }

    /// A name from a small set: word pairs joined in a few ways.
    fn name_of(id: u8) -> String {
        let a = WORDS[(id % 8) as usize];
        let b = WORDS[((id / 8) % 8) as usize];
        match id / 64 {
            0 => format!("{a} {b}.mp3"),
            1 => format!("{a}-{b}"),
            2 => a.nfd().collect(),
            // Quotes and backslashes: the reply must escape them.
            _ => format!("{b}_{a}\\\"x"),
        }
    }

    /// A record: name `id`, content `c` (0: name only; else size and maybe a digest).
    fn record(id: u8, c: u8) -> FileRecord {
        match c % 4 {
            0 => FileRecord::named(name_of(id)),
            1 => FileRecord::sized(name_of(id), 10, None),
            2 => FileRecord::sized(name_of(id), 10, Some(Digest([c; 32]))),
            _ => FileRecord::sized(name_of(id), 20, Some(Digest([1; 32]))),
        }
    }

    fn records(list: &[(u8, u8)]) -> Vec<FileRecord> {
        list.iter().map(|&(id, c)| record(id, c)).collect()
    }

    fn op() -> impl Strategy<Value = Op> {
        let files = prop::collection::vec((0u8..255, 0u8..4), 0..7);
        prop_oneof![
            (1u64..4, 1u16..5, files.clone()).prop_map(|(c, p, n)| Op::Join(c, p, n)),
            (1u64..4, 1u16..5, files.clone()).prop_map(|(c, p, n)| Op::Update(c, p, n)),
            (
                1u64..4,
                1u16..5,
                files,
                prop::collection::vec(0u8..255, 0..3)
            )
                .prop_map(|(c, p, a, r)| Op::Change(c, p, a, r)),
            (1u64..4, 1u16..5).prop_map(|(c, p)| Op::Leave(c, p)),
        ]
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    /// The model: port → (owner, name → record), first record of each name kept.
    type Model = HashMap<u16, (ConnId, BTreeMap<String, FileRecord>)>;

    fn first_each(list: Vec<FileRecord>) -> BTreeMap<String, FileRecord> {
        let mut map = BTreeMap::new();
        for r in list {
            map.entry(r.name.clone()).or_insert(r);
        }
        map
    }

    /// Plain folding, written independently of the index: NFD, marks out, lower case.
    fn naive_words(text: &str) -> Vec<String> {
        let folded: String = text
            .to_lowercase()
            .nfd()
            .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
            .collect();
        folded
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// One expected result: name, size, digest, holders sorted.
    type Expected = (String, Option<u64>, Option<Digest>, Vec<SocketAddr>);

    /// What SEARCH must find by a naive scan of every record.
    fn naive_search(model: &Model, query: &str) -> Vec<Expected> {
        let want = naive_words(query);
        let mut found: BTreeMap<(String, Option<u64>, Option<Digest>), Vec<SocketAddr>> =
            BTreeMap::new();
        for (&port, (_, files)) in model {
            for r in files.values() {
                let have = naive_words(&r.name);
                let matches =
                    r.name == query || (!want.is_empty() && want.iter().all(|w| have.contains(w)));
                if matches {
                    found
                        .entry((r.name.clone(), r.size, r.digest))
                        .or_default()
                        .push(addr(port));
                }
            }
        }
        found
            .into_iter()
            .map(|((n, s, d), mut peers)| {
                peers.sort();
                (n, s, d, peers)
            })
            .collect()
    }

    proptest! {
        /// After any sequence of JOIN, UPDATE (whole lists and changes) and leave from a few
        /// connections, the name and word indexes agree with the peer entries, and SEARCH
        /// answers exactly what a naive scan of every record finds (case and accents folded,
        /// holders grouped by content), owner rules and the listed-names limit included.
        #[test]
        fn index_and_peers_never_disagree(ops in prop::collection::vec(op(), 1..60)) {
            const LIMIT: usize = 12;
            let table = PeerTable::with_limit(LIMIT);
            let mut scratch = SearchScratch::default();
            let mut model: Model = HashMap::new();
            let others = |model: &Model, port| -> usize {
                model.iter().filter(|(p, _)| **p != port).map(|(_, (_, f))| f.len()).sum()
            };
            for op in ops {
                match op {
                    Op::Join(conn, port, files) => {
                        let list = records(&files);
                        let result = table.join(conn, addr(port), &list);
                        let taken = model.get(&port).is_some_and(|(owner, _)| *owner != conn);
                        let mine = first_each(list);
                        let full = !taken && others(&model, port) + mine.len() > LIMIT;
                        match result {
                            Err(TableError::AddressTaken(_)) => prop_assert!(taken),
                            Err(TableError::IndexFull { limit }) => {
                                prop_assert!(full);
                                prop_assert_eq!(limit, LIMIT);
                            }
                            Err(e) => prop_assert!(false, "JOIN said {:?}", e),
                            Ok(()) => {
                                prop_assert!(!taken && !full);
                                model.insert(port, (conn, mine));
                            }
                        }
                    }
                    Op::Update(conn, port, files) => {
                        let list = records(&files);
                        let result = table.update(conn, addr(port), &list);
                        let owned = model.get(&port).is_some_and(|(owner, _)| *owner == conn);
                        let mine = first_each(list);
                        let full = owned && others(&model, port) + mine.len() > LIMIT;
                        prop_assert_eq!(result.is_ok(), owned && !full);
                        if owned && !full {
                            model.insert(port, (conn, mine));
                        }
                    }
                    Op::Change(conn, port, add, remove) => {
                        let add = records(&add);
                        let remove: Vec<String> = remove.iter().map(|&id| name_of(id)).collect();
                        let result = table.change(conn, addr(port), &add, &remove);
                        let owned = model.get(&port).is_some_and(|(owner, _)| *owner == conn);
                        let mut mine = model.get(&port).map(|(_, f)| f.clone()).unwrap_or_default();
                        for (name, r) in first_each(add) {
                            mine.insert(name, r);
                        }
                        for name in &remove {
                            mine.remove(name);
                        }
                        let full = owned && others(&model, port) + mine.len() > LIMIT;
                        prop_assert_eq!(result.is_ok(), owned && !full, "{:?}", result);
                        if owned && !full {
                            model.insert(port, (conn, mine));
                        }
                    }
                    Op::Leave(conn, port) => {
                        let owned = model.get(&port).is_some_and(|(owner, _)| *owner == conn);
                        prop_assert_eq!(table.leave(conn, addr(port)), owned);
                        if owned {
                            model.remove(&port);
                        }
                    }
                }
                prop_assert_eq!(table.check_consistency(), Ok(()));
                prop_assert_eq!(table.len(), model.len());
                for query in ["musica", "AULA 01", "ação", "Acao vivo", "vivo", "aula-aula", "nada", "01 ao.mp3"] {
                    let found = table.search(query, 1000);
                    // The reply written straight from the table is the answer's encoding.
                    for cap in [1000, 2] {
                        let answer = table.search(query, cap);
                        let mut line = Vec::new();
                        table.search_reply(query, &QueryWords::of(query), cap, &mut scratch, &mut line);
                        let encoded =
                            Reply::search(answer.peers, answer.results, answer.truncated).to_line();
                        prop_assert_eq!(
                            String::from_utf8_lossy(&line),
                            String::from_utf8_lossy(&encoded)
                        );
                    }
                    prop_assert!(!found.truncated);
                    let mut got: Vec<_> = found
                        .results
                        .iter()
                        .map(|r| {
                            let mut peers: Vec<SocketAddr> =
                                r.peers.iter().map(|p| p.parse().unwrap()).collect();
                            peers.sort();
                            prop_assert_eq!(r.holders, peers.len());
                            Ok((r.name.clone(), r.size, r.digest, peers))
                        })
                        .collect::<Result<_, TestCaseError>>()?;
                    got.sort();
                    prop_assert_eq!(got, naive_search(&model, query), "query {:?}", query);
                }
                for id in [0u8, 9, 70, 130, 200] {
                    let name = name_of(id);
                    let mut got = table.search_addrs(&name);
                    got.sort();
                    let mut want: Vec<SocketAddr> = model
                        .iter()
                        .filter(|(_, (_, files))| files.contains_key(&name))
                        .map(|(&port, _)| addr(port))
                        .collect();
                    want.sort();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
