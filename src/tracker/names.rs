//! The name index: every distinct name is known by a small number, with the peers holding it
//! grouped by content.
//!
//! Peers list their files by name number (see [`FileRef`]) and the hash table holds only
//! numbers, hashed by the text they stand for. That is what `hashbrown::HashTable` offers and
//! std's `HashMap` does not: with `HashMap<Arc<str>, _>` every entry costs a 16-byte key plus
//! the value, twice over once the table has grown; here the table costs 5 bytes a slot.
//!
//! A name held by one peer (most of them) keeps just that peer's number; its size and digest
//! are in the peer's own [`FileRef`]. A name held by several peers keeps them in groups, one
//! per distinct (size, digest), so SEARCH answers "who holds this very file" without looking
//! at each holder.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::protocol::Digest;
use crate::tracker::word_index::WordSlot;

/// Size of a file whose size was not announced.
pub const UNKNOWN_SIZE: u64 = u64::MAX;

/// One file a peer lists: a name number and what the peer said about its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRef {
    /// The name's number.
    pub name: u32,
    /// Its size, or [`UNKNOWN_SIZE`].
    pub size: u64,
    /// Its digest, once announced.
    pub digest: Option<Digest>,
}

impl FileRef {
    /// The content part: what groups holders together.
    pub fn content(&self) -> (u64, Option<Digest>) {
        (self.size, self.digest)
    }
}

/// Holders of one name with the same content.
#[derive(Debug)]
pub struct Group {
    /// The size, or [`UNKNOWN_SIZE`].
    pub size: u64,
    /// The digest, if announced.
    pub digest: Option<Digest>,
    /// Peer numbers, in the order they came.
    pub peers: Vec<u32>,
}

/// The peers that share one name.
#[derive(Debug, Default)]
pub enum Holders {
    /// A forgotten name's number, waiting to be reused.
    #[default]
    None,
    /// One peer; its [`FileRef`] says what it holds.
    One(u32),
    /// Several peers, grouped by content, groups in the order they appeared.
    // Boxed so that the enum stays 16 bytes: a million names mostly have one holder.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Group>>),
}

// What the memory figures in the table's documentation rely on.
const _: () = assert!(std::mem::size_of::<Holders>() == 16);
const _: () = assert!(std::mem::size_of::<NameEntry>() == 40);

impl Holders {
    /// Adds peer `peer` holding `content`. `first` gives the record of the one holder there
    /// already, when there is one (its content lives in its own file list).
    pub fn add(
        &mut self,
        peer: u32,
        content: (u64, Option<Digest>),
        first: impl FnOnce(u32) -> (u64, Option<Digest>),
    ) {
        match self {
            Holders::None => *self = Holders::One(peer),
            Holders::One(only) => {
                let only = *only;
                let (size, digest) = first(only);
                let mut groups = vec![Group {
                    size,
                    digest,
                    peers: vec![only],
                }];
                add_to_groups(&mut groups, peer, content);
                *self = Holders::Many(Box::new(groups));
            }
            Holders::Many(groups) => add_to_groups(groups, peer, content),
        }
    }

    /// Removes peer `peer`, which holds `content`; true when nobody holds the name any more.
    pub fn remove(&mut self, peer: u32, content: (u64, Option<Digest>)) -> bool {
        match self {
            Holders::None => true,
            Holders::One(only) => {
                if *only == peer {
                    *self = Holders::None;
                }
                matches!(self, Holders::None)
            }
            Holders::Many(groups) => {
                if let Some(g) = groups.iter().position(|g| (g.size, g.digest) == content) {
                    let group = &mut groups[g];
                    if let Some(pos) = group.peers.iter().position(|&p| p == peer) {
                        group.peers.remove(pos);
                    }
                    if group.peers.is_empty() {
                        groups.remove(g);
                    }
                }
                match groups.as_slice() {
                    [] => *self = Holders::None,
                    [only] if only.peers.len() == 1 => *self = Holders::One(only.peers[0]),
                    _ => {}
                }
                matches!(self, Holders::None)
            }
        }
    }

    /// How many peers hold the name.
    pub fn count(&self) -> usize {
        match self {
            Holders::None => 0,
            Holders::One(_) => 1,
            Holders::Many(groups) => groups.iter().map(|g| g.peers.len()).sum(),
        }
    }

    /// Every holder, group by group.
    pub fn peers(&self) -> impl Iterator<Item = u32> + '_ {
        let (one, groups): (Option<u32>, &[Group]) = match self {
            Holders::None => (None, &[]),
            Holders::One(p) => (Some(*p), &[]),
            Holders::Many(groups) => (None, groups),
        };
        one.into_iter()
            .chain(groups.iter().flat_map(|g| g.peers.iter().copied()))
    }

    /// Renumbers peers after the peer table was compacted (`map[old]` is the new number).
    pub fn remap_peers(&mut self, map: &[u32]) {
        match self {
            Holders::None => {}
            Holders::One(p) => *p = map[*p as usize],
            Holders::Many(groups) => {
                for group in groups.iter_mut() {
                    for p in &mut group.peers {
                        *p = map[*p as usize];
                    }
                }
            }
        }
    }
}

fn add_to_groups(groups: &mut Vec<Group>, peer: u32, content: (u64, Option<Digest>)) {
    match groups.iter_mut().find(|g| (g.size, g.digest) == content) {
        Some(group) => group.peers.push(peer),
        None => groups.push(Group {
            size: content.0,
            digest: content.1,
            peers: vec![peer],
        }),
    }
}

/// One distinct name: its text, stored once, and who shares it. 40 bytes plus the text.
#[derive(Debug)]
pub struct NameEntry {
    /// The name.
    pub text: Box<str>,
    /// Who shares it.
    pub holders: Holders,
    /// Where the word index keeps this name's rarest word (when its words were indexed):
    /// SEARCH for this exact name starts there instead of hashing and looking up each word.
    pub rarest_word: WordSlot,
}

impl Default for NameEntry {
    fn default() -> Self {
        NameEntry {
            text: Box::default(),
            holders: Holders::None,
            rarest_word: WordSlot::NONE,
        }
    }
}

/// Name text → number → entry.
///
/// The number of a forgotten name is never given to another name until [`Names::compact`]
/// renumbers everything: so a number listed for a word (see the word index) either still
/// stands for the name that holds the word, or for no name at all, and telling a stale number
/// costs one look at [`Names::is_live`]. Forgotten entries cost 40 bytes each until then, and
/// the table compacts when three quarters are forgotten.
#[derive(Default)]
pub struct Names {
    /// Name number → entry.
    pub entries: Vec<NameEntry>,
    /// Numbers of the live names, found by their text.
    lookup: HashTable<u32>,
    hasher: RandomState,
}

impl Names {
    /// The number of `text`, if some peer shares it.
    pub fn find(&self, text: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(text);
        self.lookup
            .find(hash, |&n| &*self.entries[n as usize].text == text)
            .copied()
    }

    /// The number of `text`, and whether it was created now (with no holders yet).
    pub fn intern(&mut self, text: &str) -> (u32, bool) {
        let Names {
            entries,
            lookup,
            hasher,
        } = self;
        let hash = hasher.hash_one(text);
        match lookup.entry(
            hash,
            |&n| &*entries[n as usize].text == text,
            |&n| hasher.hash_one(&*entries[n as usize].text),
        ) {
            Entry::Occupied(found) => (*found.get(), false),
            Entry::Vacant(slot) => {
                let entry = NameEntry {
                    text: text.into(),
                    ..NameEntry::default()
                };
                entries.push(entry);
                let n = (entries.len() - 1) as u32;
                slot.insert(n);
                (n, true)
            }
        }
    }

    /// Forgets name `n`, which nobody shares any more.
    pub fn release(&mut self, n: u32) {
        let hash = self.hasher.hash_one(&*self.entries[n as usize].text);
        if let Ok(found) = self.lookup.find_entry(hash, |&x| x == n) {
            found.remove();
        }
        self.entries[n as usize] = NameEntry::default();
    }

    /// True if name `n` is shared by someone.
    pub fn is_live(&self, n: u32) -> bool {
        self.entries
            .get(n as usize)
            .is_some_and(|e| !matches!(e.holders, Holders::None))
    }

    /// Live names, and entries allocated (live or free): for the shrink rule.
    pub fn occupancy(&self) -> (usize, usize) {
        (self.lookup.len(), self.entries.len())
    }

    /// Renumbers the live names densely, in their present order, and sizes every table to
    /// what is live. Returns `map`, where `map[old]` is the new number (`u32::MAX`: gone).
    pub fn compact(&mut self) -> Vec<u32> {
        let mut map = vec![u32::MAX; self.entries.len()];
        let old = std::mem::take(&mut self.entries);
        let mut live = Vec::with_capacity(self.lookup.len());
        for (n, entry) in old.into_iter().enumerate() {
            if !matches!(entry.holders, Holders::None) {
                map[n] = live.len() as u32;
                live.push(entry);
            }
        }
        let mut lookup = HashTable::with_capacity(live.len());
        for (n, entry) in live.iter().enumerate() {
            let hash = self.hasher.hash_one(&*entry.text);
            lookup.insert_unique(hash, n as u32, |&m| {
                self.hasher.hash_one(&*live[m as usize].text)
            });
        }
        self.entries = live;
        self.lookup = lookup;
        map
    }

    /// Bytes held by the name index's own tables, texts included (allocator overhead not).
    pub fn heap_bytes(&self) -> usize {
        let texts: usize = self.entries.iter().map(|e| e.text.len()).sum();
        let groups: usize = self
            .entries
            .iter()
            .map(|e| match &e.holders {
                Holders::Many(groups) => {
                    24 + groups
                        .iter()
                        .map(|g| std::mem::size_of::<Group>() + g.peers.capacity() * 4)
                        .sum::<usize>()
                }
                _ => 0,
            })
            .sum();
        self.entries.capacity() * std::mem::size_of::<NameEntry>()
            + self.lookup.capacity() * 5
            + texts
            + groups
    }
}
