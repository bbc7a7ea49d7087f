//! The tracker's state: the peer table and the name index beside it, under one lock.
//!
//! SEARCH looks a name up in the index instead of walking every peer, so it does not slow down
//! as peers are added. Both structures change together under the same write lock, so they never
//! disagree ([`PeerTable::check_consistency`] proves it in the property tests). The lock is held
//! only for the in-memory change, never across socket I/O.
//!
//! Compactness matters at 10,000 peers × 100 names (a million names if all differ): each
//! distinct name's text is stored once and known by a 4-byte number; a peer lists its names as
//! numbers, the hash table holds only numbers, and a name's holders are peer numbers, not
//! address strings. About 95 bytes per distinct name in all, text included (see `Names`).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use parking_lot::RwLock;

/// Identifies one tracker connection, so that only it can change its own entry.
pub type ConnId = u64;

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
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::AddressTaken(addr) => write!(
                f,
                "peer {addr} is already registered by another connection; choose another port"
            ),
            TableError::NotJoined => write!(f, "send JOIN before UPDATE"),
            TableError::IndexFull { limit } => write!(
                f,
                "the tracker's index is full ({limit} names listed by all peers together); \
                 share fewer names or try again later"
            ),
        }
    }
}

impl std::error::Error for TableError {}

/// The peers that share one name: almost always few, often one. 16 bytes.
#[derive(Debug, Default)]
enum Holders {
    /// A forgotten name's number, waiting to be reused.
    #[default]
    None,
    One(u32),
    // Boxed so that the enum stays 16 bytes: a million names mostly have one holder.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<u32>>),
}

// What the memory figures in the module documentation rely on.
const _: () = assert!(std::mem::size_of::<Holders>() == 16);
const _: () = assert!(std::mem::size_of::<NameEntry>() == 32);

impl Holders {
    fn push(&mut self, id: u32) {
        match self {
            Holders::None => *self = Holders::One(id),
            Holders::One(first) => *self = Holders::Many(Box::new(vec![*first, id])),
            Holders::Many(ids) => ids.push(id),
        }
    }

    /// Removes `id`, keeping the others in the order they came; true when none is left.
    fn remove(&mut self, id: u32) -> bool {
        match self {
            Holders::None => true,
            Holders::One(only) => {
                if *only == id {
                    *self = Holders::None;
                }
                matches!(self, Holders::None)
            }
            Holders::Many(ids) => {
                if let Some(pos) = ids.iter().position(|&x| x == id) {
                    ids.remove(pos);
                }
                if let [only] = ids.as_slice() {
                    *self = Holders::One(*only);
                }
                false
            }
        }
    }

    fn ids(&self) -> &[u32] {
        match self {
            Holders::None => &[],
            Holders::One(id) => std::slice::from_ref(id),
            Holders::Many(ids) => ids,
        }
    }
}

/// One distinct name: its text, stored once, and who shares it. 32 bytes plus the text.
#[derive(Debug, Default)]
struct NameEntry {
    text: Box<str>,
    holders: Holders,
}

/// The name index: every distinct name is known by a small number.
///
/// Peers list their names as numbers (4 bytes each) and the hash table holds only numbers,
/// hashed by the text they stand for. That is what `hashbrown::HashTable` offers and std's
/// `HashMap` does not: with `HashMap<Arc<str>, _>` every entry costs a 16-byte key plus the
/// value, twice over once the table has grown; here the table costs 5 bytes a slot.
#[derive(Default)]
struct Names {
    /// Name number → entry; numbers of forgotten names are reused.
    entries: Vec<NameEntry>,
    free: Vec<u32>,
    /// Numbers of the live names, found by their text.
    lookup: HashTable<u32>,
    hasher: RandomState,
}

impl Names {
    fn find(&self, text: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(text);
        self.lookup
            .find(hash, |&n| &*self.entries[n as usize].text == text)
            .copied()
    }

    /// The number of `text`, creating its entry if it is new.
    fn intern(&mut self, text: &str) -> u32 {
        let Names {
            entries,
            free,
            lookup,
            hasher,
        } = self;
        let hash = hasher.hash_one(text);
        match lookup.entry(
            hash,
            |&n| &*entries[n as usize].text == text,
            |&n| hasher.hash_one(&*entries[n as usize].text),
        ) {
            Entry::Occupied(found) => *found.get(),
            Entry::Vacant(slot) => {
                let entry = NameEntry {
                    text: text.into(),
                    holders: Holders::None,
                };
                let n = match free.pop() {
                    Some(n) => {
                        entries[n as usize] = entry;
                        n
                    }
                    None => {
                        entries.push(entry);
                        (entries.len() - 1) as u32
                    }
                };
                slot.insert(n);
                n
            }
        }
    }

    /// Forgets name `n`, which nobody shares any more.
    fn release(&mut self, n: u32) {
        let hash = self.hasher.hash_one(&*self.entries[n as usize].text);
        if let Ok(found) = self.lookup.find_entry(hash, |&x| x == n) {
            found.remove();
        }
        self.entries[n as usize] = NameEntry::default();
        self.free.push(n);
    }
}

struct Slot {
    addr: SocketAddr,
    /// `IP:PORT`, formatted once for every SEARCH that returns this peer.
    text: Box<str>,
    owner: ConnId,
    /// The numbers of the names it shares, each once.
    files: Box<[u32]>,
}

struct Inner {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    by_addr: HashMap<SocketAddr, u32>,
    names: Names,
    /// Names listed by all peers together (a name listed by two peers counts twice).
    listed: usize,
    /// The most `listed` may reach: what bounds the table's memory.
    max_listed: usize,
}

/// The peer table and name index; cheap to share between connection threads.
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
        PeerTable::with_limit(usize::MAX)
    }

    /// An empty table that refuses a JOIN or UPDATE taking the names listed by all peers
    /// together over `max_listed` ([`TableError::IndexFull`]). Each listed name costs at most
    /// about 350 bytes (a distinct 255-byte name), typically about 100, so this bounds the
    /// table's memory whatever peers send.
    pub fn with_limit(max_listed: usize) -> PeerTable {
        PeerTable {
            inner: RwLock::new(Inner {
                slots: Vec::new(),
                free: Vec::new(),
                by_addr: HashMap::new(),
                names: Names::default(),
                listed: 0,
                max_listed,
            }),
        }
    }

    /// Registers (or re-registers) the peer at `addr` for connection `conn` with `files`.
    /// Duplicate names count once.
    pub fn join(&self, conn: ConnId, addr: SocketAddr, files: &[String]) -> Result<(), TableError> {
        let names = unique(files);
        let mut inner = self.inner.write();
        if let Some(&id) = inner.by_addr.get(&addr) {
            let slot = inner.slots[id as usize].as_ref();
            if slot.is_some_and(|s| s.owner != conn) {
                return Err(TableError::AddressTaken(addr));
            }
            inner.check_room(Some(id), names.len())?;
            inner.set_names(id, names);
            return Ok(());
        }
        inner.check_room(None, names.len())?;
        let slot = Slot {
            addr,
            text: addr.to_string().into_boxed_str(),
            owner: conn,
            files: Box::new([]),
        };
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
        inner.set_names(id, names);
        Ok(())
    }

    /// Replaces the names shared by the peer at `addr`, which `conn` must own.
    pub fn update(
        &self,
        conn: ConnId,
        addr: SocketAddr,
        files: &[String],
    ) -> Result<(), TableError> {
        let names = unique(files);
        let mut inner = self.inner.write();
        let id = inner.owned(conn, addr).ok_or(TableError::NotJoined)?;
        inner.check_room(Some(id), names.len())?;
        inner.set_names(id, names);
        Ok(())
    }

    /// Forgets the peer at `addr` if `conn` owns it; true if it was there.
    pub fn leave(&self, conn: ConnId, addr: SocketAddr) -> bool {
        let mut inner = self.inner.write();
        let Some(id) = inner.owned(conn, addr) else {
            return false;
        };
        inner.set_names(id, Vec::new());
        inner.by_addr.remove(&addr);
        inner.slots[id as usize] = None;
        inner.free.push(id);
        true
    }

    /// The peers sharing exactly `name`, as `IP:PORT`, in the order they joined with it.
    pub fn search(&self, name: &str) -> Vec<String> {
        self.search_with(name, |slot| slot.text.to_string())
    }

    /// The peers sharing exactly `name`, as socket addresses.
    pub fn search_addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.search_with(name, |slot| slot.addr)
    }

    fn search_with<T>(&self, name: &str, f: impl Fn(&Slot) -> T) -> Vec<T> {
        let inner = self.inner.read();
        let Some(n) = inner.names.find(name) else {
            return Vec::new();
        };
        inner.names.entries[n as usize]
            .holders
            .ids()
            .iter()
            .filter_map(|&id| inner.slots[id as usize].as_ref().map(&f))
            .collect()
    }

    /// How many peers are registered.
    pub fn len(&self) -> usize {
        self.inner.read().by_addr.len()
    }

    /// True when no peer is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that the index says exactly what the peer entries say. For tests.
    pub fn check_consistency(&self) -> Result<(), String> {
        let inner = self.inner.read();
        let names = &inner.names;
        let mut expected: HashMap<u32, Vec<u32>> = HashMap::new();
        for (id, slot) in inner.slots.iter().enumerate() {
            if let Some(slot) = slot {
                if inner.by_addr.get(&slot.addr) != Some(&(id as u32)) {
                    return Err(format!("peer {} missing from the address map", slot.addr));
                }
                for &n in slot.files.iter() {
                    expected.entry(n).or_default().push(id as u32);
                }
            }
        }
        if inner.by_addr.len() != inner.slots.iter().flatten().count() {
            return Err("address map holds addresses with no peer".into());
        }
        let listed: usize = inner.slots.iter().flatten().map(|s| s.files.len()).sum();
        if listed != inner.listed {
            return Err(format!("{listed} names listed, {} counted", inner.listed));
        }
        let live = names
            .entries
            .iter()
            .filter(|e| !matches!(e.holders, Holders::None))
            .count();
        if live != expected.len() || names.lookup.len() != live {
            return Err(format!(
                "index has {live} names ({} findable), peers have {}",
                names.lookup.len(),
                expected.len()
            ));
        }
        if names.free.len() + live != names.entries.len() {
            return Err("a forgotten name number is neither free nor in use".into());
        }
        for (n, mut ids) in expected {
            let entry = names
                .entries
                .get(n as usize)
                .ok_or_else(|| format!("name number {n} out of range"))?;
            if names.find(&entry.text) != Some(n) {
                return Err(format!("name {:?} cannot be found by its text", entry.text));
            }
            let mut got = entry.holders.ids().to_vec();
            ids.sort_unstable();
            got.sort_unstable();
            if ids != got {
                return Err(format!(
                    "name {:?}: index {got:?}, peers {ids:?}",
                    entry.text
                ));
            }
        }
        Ok(())
    }
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

    /// Replaces slot `id`'s names with `names` (each once), keeping the index in step.
    fn set_names(&mut self, id: u32, names: Vec<&str>) {
        let Some(slot) = self.slots[id as usize].as_mut() else {
            return;
        };
        let old = std::mem::take(&mut slot.files);
        self.listed -= old.len();
        for &n in old.iter() {
            if self.names.entries[n as usize].holders.remove(id) {
                self.names.release(n);
            }
        }
        self.listed += names.len();
        let numbers: Box<[u32]> = names
            .into_iter()
            .map(|name| {
                let n = self.names.intern(name);
                self.names.entries[n as usize].holders.push(id);
                n
            })
            .collect();
        if let Some(slot) = self.slots[id as usize].as_mut() {
            slot.files = numbers;
        }
    }
}

/// `files` sorted, each name once.
fn unique(files: &[String]) -> Vec<&str> {
    let mut names: Vec<&str> = files.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn join_search_update_leave() {
        let t = PeerTable::new();
        t.join(1, addr(1), &names(&["a", "b"])).unwrap();
        t.join(2, addr(2), &names(&["b"])).unwrap();
        assert_eq!(t.search("b"), vec!["10.0.0.1:1", "10.0.0.1:2"]);
        t.update(2, addr(2), &names(&["c"])).unwrap();
        assert_eq!(t.search("b"), vec!["10.0.0.1:1"]);
        assert!(t.leave(1, addr(1)));
        assert!(t.search("b").is_empty());
        assert_eq!(t.search("c"), vec!["10.0.0.1:2"]);
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
        assert_eq!(t.search("a"), vec!["10.0.0.1:1"]);
    }
}

#[cfg(test)]
mod properties {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Join(ConnId, u16, Vec<u8>),
        Update(ConnId, u16, Vec<u8>),
        Leave(ConnId, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let names = prop::collection::vec(0u8..12, 0..7);
        prop_oneof![
            (1u64..4, 1u16..5, names.clone()).prop_map(|(c, p, n)| Op::Join(c, p, n)),
            (1u64..4, 1u16..5, names).prop_map(|(c, p, n)| Op::Update(c, p, n)),
            (1u64..4, 1u16..5).prop_map(|(c, p)| Op::Leave(c, p)),
        ]
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn names(ids: &[u8]) -> Vec<String> {
        ids.iter().map(|i| format!("file-{i}")).collect()
    }

    proptest! {
        /// After any sequence of JOIN, UPDATE and leave from a few connections, the name index
        /// agrees with the peer entries, and SEARCH answers exactly what a plain model of
        /// "who registered which names" says (owner rules and the listed-names limit included).
        #[test]
        fn index_and_peers_never_disagree(ops in prop::collection::vec(op(), 1..60)) {
            const LIMIT: usize = 12;
            let table = PeerTable::with_limit(LIMIT);
            let mut model: HashMap<u16, (ConnId, BTreeSet<String>)> = HashMap::new();
            // Would giving `port` the names `ids` list more than LIMIT names in all?
            let too_many = |model: &HashMap<u16, (ConnId, BTreeSet<String>)>, port, ids: &[u8]| {
                let others: usize = model
                    .iter()
                    .filter(|(p, _)| **p != port)
                    .map(|(_, (_, files))| files.len())
                    .sum();
                let mine: BTreeSet<String> = names(ids).into_iter().collect();
                others + mine.len() > LIMIT
            };
            for op in ops {
                match op {
                    Op::Join(conn, port, ids) => {
                        let result = table.join(conn, addr(port), &names(&ids));
                        let taken = model.get(&port).is_some_and(|(owner, _)| *owner != conn);
                        let full = !taken && too_many(&model, port, &ids);
                        match result {
                            Err(TableError::AddressTaken(_)) => prop_assert!(taken),
                            Err(TableError::IndexFull { limit }) => {
                                prop_assert!(full);
                                prop_assert_eq!(limit, LIMIT);
                            }
                            Err(TableError::NotJoined) => prop_assert!(false, "JOIN said NotJoined"),
                            Ok(()) => {
                                prop_assert!(!taken && !full);
                                model.insert(port, (conn, names(&ids).into_iter().collect()));
                            }
                        }
                    }
                    Op::Update(conn, port, ids) => {
                        let result = table.update(conn, addr(port), &names(&ids));
                        let owned = model.get(&port).is_some_and(|(owner, _)| *owner == conn);
                        let full = owned && too_many(&model, port, &ids);
                        prop_assert_eq!(result.is_ok(), owned && !full);
                        if full {
                            prop_assert_eq!(result, Err(TableError::IndexFull { limit: LIMIT }));
                        } else if owned {
                            model.insert(port, (conn, names(&ids).into_iter().collect()));
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
                for i in 0u8..12 {
                    let name = format!("file-{i}");
                    let mut got = table.search_addrs(&name);
                    got.sort();
                    let mut want: Vec<SocketAddr> = model
                        .iter()
                        .filter(|(_, (_, files))| files.contains(&name))
                        .map(|(&port, _)| addr(port))
                        .collect();
                    want.sort();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
