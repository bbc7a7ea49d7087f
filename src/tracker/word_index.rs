//! The inverted index of words: for each folded word (see [`crate::protocol::words`]), the
//! numbers of the names holding it.
//!
//! Compact by design, because a million names bring about a million distinct words (every
//! name has its own number or title word):
//! - a word is known by a 64-bit keyed hash of its folded text, not by the text: 32 bytes a
//!   word plus 5 in the hash table, nothing else. Two words whose hashes collide (about one
//!   chance in 10^7 over a million words) share a list; that costs nothing but a candidate,
//!   because every candidate is checked against the query's words before it is answered;
//! - a list is a plain vector of 4-byte name numbers, one number inline when it is the only.
//!
//! Lists are append-only: when a name is forgotten its number stays in its words' lists until
//! a list holds more than twice as many numbers as it has live names; then that list is
//! compacted (amortised: the numbers dropped paid for it). Name numbers are not reused before
//! the name table is renumbered ([`WordIndex::remap`]), so a number in a list stands for a name
//! holding the word or for no live name: compacting keeps the live ones, and a search skips
//! the others. [`WordIndex::remap`] and [`WordIndex::shrink`] give memory back when most names
//! are gone.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::protocol::words::{fold_into, split_folded};

/// Words of one name that are indexed (the first ones, each once): bounds what one name costs
/// the index, whatever a peer sends. Real names have far fewer.
pub const MAX_INDEXED_WORDS: usize = 32;

/// Turns folded words into the 64-bit keys of the word index (a keyed hash: peers cannot
/// choose words that collide).
#[derive(Clone, Default)]
pub struct WordKeys(RandomState);

impl WordKeys {
    /// The key of one folded word; never 0.
    pub fn key(&self, folded_word: &str) -> u64 {
        self.0.hash_one(folded_word).max(1)
    }

    /// The keys of the first [`MAX_INDEXED_WORDS`] distinct words of `text`, sorted, into
    /// `out`; `buf` is scratch space.
    pub fn keys_of(&self, text: &str, buf: &mut String, out: &mut Vec<u64>) {
        fold_into(text, buf);
        out.clear();
        split_folded(buf, |w| {
            let key = self.key(w);
            if out.len() < MAX_INDEXED_WORDS && !out.contains(&key) {
                out.push(key);
            }
        });
        out.sort_unstable();
    }
}

/// Where a word's entry is kept in the index: a hint, checked on use (see
/// [`WordIndex::postings_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WordSlot(u32);

impl WordSlot {
    /// No slot: a name without words.
    pub const NONE: WordSlot = WordSlot(u32::MAX);

    /// Where this slot went when the index shrank (`map` from [`WordIndex::shrink`]).
    pub fn moved(self, map: &[u32]) -> WordSlot {
        WordSlot(map.get(self.0 as usize).copied().unwrap_or(u32::MAX))
    }
}

/// The names holding one word: most words belong to a single name.
#[derive(Debug, Default)]
enum Postings {
    #[default]
    Empty,
    One(u32),
    // Boxed so that the enum stays 16 bytes.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<u32>>),
}

impl Postings {
    fn push(&mut self, name: u32) {
        match self {
            Postings::Empty => *self = Postings::One(name),
            Postings::One(first) => *self = Postings::Many(Box::new(vec![*first, name])),
            Postings::Many(list) => list.push(name),
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Postings::Empty => &[],
            Postings::One(n) => std::slice::from_ref(n),
            Postings::Many(list) => list,
        }
    }

    /// Keeps the numbers `keep` accepts, each once, in increasing order; frees spare room.
    fn retain_sorted(&mut self, mut keep: impl FnMut(u32) -> Option<u32>) {
        let mut list: Vec<u32> = self.as_slice().iter().filter_map(|&n| keep(n)).collect();
        list.sort_unstable();
        list.dedup();
        *self = match list.as_slice() {
            [] => Postings::Empty,
            [one] => Postings::One(*one),
            _ => {
                list.shrink_to_fit();
                Postings::Many(Box::new(list))
            }
        };
    }
}

#[derive(Debug, Default)]
struct WordEntry {
    /// The keyed hash of the folded word; 0 marks a free entry.
    key: u64,
    /// Live names holding the word (the list may hold more numbers: stale ones).
    live: u32,
    postings: Postings,
}

// What the memory figures in the module documentation rely on.
const _: () = assert!(std::mem::size_of::<WordEntry>() == 32);

/// Word key ([`WordKeys`]) → names. Not synchronised: it lives inside
/// the peer table's lock.
#[derive(Default)]
pub struct WordIndex {
    entries: Vec<WordEntry>,
    free: Vec<u32>,
    lookup: HashTable<u32>,
}

impl WordIndex {
    fn find(&self, key: u64) -> Option<u32> {
        let entries = &self.entries;
        self.lookup
            .find(key, |&i| entries[i as usize].key == key)
            .copied()
    }

    /// Records that name `name` holds the words `keys` (each once). Returns where the word
    /// with the shortest list is kept (see [`WordIndex::postings_at`]), if `keys` has any.
    pub fn add(&mut self, name: u32, keys: &[u64]) -> Option<WordSlot> {
        let mut rarest: Option<(usize, WordSlot)> = None;
        for &key in keys {
            let i = match self.find(key) {
                Some(i) => i,
                None => self.create(key),
            };
            let entry = &mut self.entries[i as usize];
            entry.live += 1;
            entry.postings.push(name);
            let len = entry.postings.as_slice().len();
            if rarest.is_none_or(|(shortest, _)| len < shortest) {
                rarest = Some((len, WordSlot(i)));
            }
        }
        rarest.map(|(_, slot)| slot)
    }

    /// The list kept at `slot`, looked up without hashing any word: what a name remembers of
    /// its rarest word, so that searching for that exact name costs one memory access here.
    /// The slot may hold another word since (a word forgotten, its place reused, or the index
    /// shrunk): a list that lists a live name is a list of one of that name's words, which the
    /// caller checks.
    pub fn postings_at(&self, slot: WordSlot) -> &[u32] {
        self.entries
            .get(slot.0 as usize)
            .map_or(&[], |entry| entry.postings.as_slice())
    }

    fn create(&mut self, key: u64) -> u32 {
        let entry = WordEntry {
            key,
            live: 0,
            postings: Postings::Empty,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = entry;
                i
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        let entries = &self.entries;
        self.lookup
            .insert_unique(key, i, |&j| entries[j as usize].key);
        i
    }

    /// Records that name `name`, holding the words `keys`, is gone. A list that has become
    /// mostly stale is compacted, keeping the numbers of names for which `live` is true.
    pub fn remove(&mut self, name: u32, keys: &[u64], live: impl Fn(u32) -> bool) {
        for &key in keys {
            let Some(i) = self.find(key) else { continue };
            let entry = &mut self.entries[i as usize];
            entry.live = entry.live.saturating_sub(1);
            if entry.live == 0 {
                self.release(i);
                continue;
            }
            let stale = entry.postings.as_slice().len() - entry.live as usize;
            if stale > entry.live as usize + 8 {
                entry
                    .postings
                    .retain_sorted(|n| (n != name && live(n)).then_some(n));
            }
        }
    }

    fn release(&mut self, i: u32) {
        let key = self.entries[i as usize].key;
        if let Ok(found) = self.lookup.find_entry(key, |&j| j == i) {
            found.remove();
        }
        self.entries[i as usize] = WordEntry::default();
        self.free.push(i);
    }

    /// The names listed for the word `key` (possibly stale or repeated numbers; check them),
    /// or `None` if no live name holds it.
    pub fn postings(&self, key: u64) -> Option<&[u32]> {
        self.find(key)
            .map(|i| self.entries[i as usize].postings.as_slice())
    }

    /// Renumbers names after the name table was compacted: `map[old]` is the new number, or
    /// `u32::MAX` for a name that is gone. Stale numbers go; every list is left sorted.
    pub fn remap(&mut self, map: &[u32]) {
        for entry in &mut self.entries {
            entry
                .postings
                .retain_sorted(|n| map.get(n as usize).copied().filter(|&m| m != u32::MAX));
        }
    }

    /// Gives back memory held for words that are gone: the entries are renumbered densely
    /// and the tables sized to what is live. Returns where each slot moved (see
    /// [`WordSlot::moved`]).
    pub fn shrink(&mut self) -> Vec<u32> {
        let entries = std::mem::take(&mut self.entries);
        let mut map = vec![u32::MAX; entries.len()];
        let mut next = 0;
        for (old, entry) in entries.iter().enumerate() {
            if entry.key != 0 {
                map[old] = next;
                next += 1;
            }
        }
        let live: Vec<WordEntry> = entries.into_iter().filter(|e| e.key != 0).collect();
        let mut lookup = HashTable::with_capacity(live.len());
        for (i, entry) in live.iter().enumerate() {
            lookup.insert_unique(entry.key, i as u32, |&j| live[j as usize].key);
        }
        self.entries = live;
        self.entries.shrink_to_fit();
        self.lookup = lookup;
        self.free = Vec::new();
        map
    }

    /// True if the word `key` is indexed.
    pub fn contains(&self, key: u64) -> bool {
        self.find(key).is_some()
    }

    /// Words known, and entries allocated for words (live or free): for the shrink rule.
    pub fn occupancy(&self) -> (usize, usize) {
        (self.entries.len() - self.free.len(), self.entries.len())
    }

    /// Bytes held by the index's own tables (not counting allocator overhead).
    pub fn heap_bytes(&self) -> usize {
        let lists: usize = self
            .entries
            .iter()
            .map(|e| match &e.postings {
                Postings::Many(list) => 24 + list.capacity() * 4,
                _ => 0,
            })
            .sum();
        self.entries.capacity() * std::mem::size_of::<WordEntry>()
            + self.free.capacity() * 4
            + self.lookup.capacity() * 5
            + lists
    }

    /// Checks the index against `expected`: every word key with the live names holding it.
    /// For tests.
    pub fn check(&self, expected: &std::collections::HashMap<u64, Vec<u32>>) -> Result<(), String> {
        let live = self.entries.iter().filter(|e| e.key != 0).count();
        if live != expected.len() || self.lookup.len() != live {
            return Err(format!(
                "{live} words in the index ({} findable), {} expected",
                self.lookup.len(),
                expected.len()
            ));
        }
        for (&key, names) in expected {
            let i = self
                .find(key)
                .ok_or_else(|| format!("word {key:x} missing"))?;
            let entry = &self.entries[i as usize];
            if entry.live as usize != names.len() {
                return Err(format!(
                    "word {key:x}: {} live names counted, {} hold it",
                    entry.live,
                    names.len()
                ));
            }
            let listed = entry.postings.as_slice();
            if let Some(n) = names.iter().find(|n| !listed.contains(n)) {
                return Err(format!("word {key:x}: name {n} not listed"));
            }
            if listed.len() > 2 * names.len() + 8 {
                return Err(format!(
                    "word {key:x}: {} numbers listed for {} names",
                    listed.len(),
                    names.len()
                ));
            }
        }
        Ok(())
    }
}
