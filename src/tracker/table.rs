//! The tracker's state: the peer table and the name index beside it, under one lock.
//!
//! SEARCH looks a name up in the index instead of walking every peer, so it does not slow down
//! as peers are added. Both structures change together under the same write lock, so they never
//! disagree ([`PeerTable::check_consistency`] proves it in the property tests). The lock is held
//! only for the in-memory change, never across socket I/O.
//!
//! Compactness matters at 10,000 peers × 100 names: each distinct name is stored once (an
//! `Arc<str>` shared by the index key and every peer that has it), and the index maps it to
//! small peer numbers rather than to address strings.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

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
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::AddressTaken(addr) => write!(
                f,
                "peer {addr} is already registered by another connection; choose another port"
            ),
            TableError::NotJoined => write!(f, "send JOIN before UPDATE"),
        }
    }
}

impl std::error::Error for TableError {}

/// The peers that share one name: almost always few, often one.
#[derive(Debug, Clone)]
enum Holders {
    One(u32),
    Many(Vec<u32>),
}

impl Holders {
    fn push(&mut self, id: u32) {
        match self {
            Holders::One(first) => *self = Holders::Many(vec![*first, id]),
            Holders::Many(ids) => ids.push(id),
        }
    }

    /// Removes `id`; true when no holder is left.
    fn remove(&mut self, id: u32) -> bool {
        match self {
            Holders::One(only) => *only == id,
            Holders::Many(ids) => {
                if let Some(pos) = ids.iter().position(|&x| x == id) {
                    ids.swap_remove(pos);
                }
                match ids.as_slice() {
                    [] => true,
                    [only] => {
                        *self = Holders::One(*only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    fn ids(&self) -> &[u32] {
        match self {
            Holders::One(id) => std::slice::from_ref(id),
            Holders::Many(ids) => ids,
        }
    }
}

struct Slot {
    addr: SocketAddr,
    /// `IP:PORT`, formatted once for every SEARCH that returns this peer.
    text: Box<str>,
    owner: ConnId,
    files: Box<[Arc<str>]>,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    by_addr: HashMap<SocketAddr, u32>,
    index: HashMap<Arc<str>, Holders>,
}

/// The peer table and name index; cheap to share between connection threads.
#[derive(Default)]
pub struct PeerTable {
    inner: RwLock<Inner>,
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> PeerTable {
        PeerTable::default()
    }

    /// Registers (or re-registers) the peer at `addr` for connection `conn` with `files`.
    /// Duplicate names count once.
    pub fn join(&self, conn: ConnId, addr: SocketAddr, files: &[String]) -> Result<(), TableError> {
        let mut inner = self.inner.write();
        if let Some(&id) = inner.by_addr.get(&addr) {
            let slot = inner.slots[id as usize].as_ref();
            if slot.is_some_and(|s| s.owner != conn) {
                return Err(TableError::AddressTaken(addr));
            }
            inner.set_files(id, files);
            return Ok(());
        }
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
        inner.set_files(id, files);
        Ok(())
    }

    /// Replaces the names shared by the peer at `addr`, which `conn` must own.
    pub fn update(
        &self,
        conn: ConnId,
        addr: SocketAddr,
        files: &[String],
    ) -> Result<(), TableError> {
        let mut inner = self.inner.write();
        let id = inner.owned(conn, addr).ok_or(TableError::NotJoined)?;
        inner.set_files(id, files);
        Ok(())
    }

    /// Forgets the peer at `addr` if `conn` owns it; true if it was there.
    pub fn leave(&self, conn: ConnId, addr: SocketAddr) -> bool {
        let mut inner = self.inner.write();
        let Some(id) = inner.owned(conn, addr) else {
            return false;
        };
        inner.set_files(id, &[]);
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
        let Some(holders) = inner.index.get(name) else {
            return Vec::new();
        };
        holders
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
        let mut expected: HashMap<&str, Vec<u32>> = HashMap::new();
        for (id, slot) in inner.slots.iter().enumerate() {
            if let Some(slot) = slot {
                if inner.by_addr.get(&slot.addr) != Some(&(id as u32)) {
                    return Err(format!("peer {} missing from the address map", slot.addr));
                }
                for name in slot.files.iter() {
                    expected.entry(name).or_default().push(id as u32);
                }
            }
        }
        if inner.by_addr.len() != inner.slots.iter().flatten().count() {
            return Err("address map holds addresses with no peer".into());
        }
        if expected.len() != inner.index.len() {
            return Err(format!(
                "index has {} names, peers have {}",
                inner.index.len(),
                expected.len()
            ));
        }
        for (name, mut ids) in expected {
            let mut got = inner
                .index
                .get(name)
                .ok_or_else(|| format!("name {name:?} missing from the index"))?
                .ids()
                .to_vec();
            ids.sort_unstable();
            got.sort_unstable();
            if ids != got {
                return Err(format!("name {name:?}: index {got:?}, peers {ids:?}"));
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

    /// Replaces slot `id`'s names, keeping the index in step.
    fn set_files(&mut self, id: u32, files: &[String]) {
        let Some(slot) = self.slots[id as usize].as_mut() else {
            return;
        };
        let old = std::mem::take(&mut slot.files);
        for name in old.iter() {
            if let Some(holders) = self.index.get_mut(name)
                && holders.remove(id)
            {
                self.index.remove(name);
            }
        }
        let mut sorted: Vec<&str> = files.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut names = Vec::with_capacity(sorted.len());
        for name in sorted {
            if let Some(key) = self.index.get_key_value(name).map(|(k, _)| Arc::clone(k)) {
                if let Some(holders) = self.index.get_mut(&key) {
                    holders.push(id);
                }
                names.push(key);
            } else {
                let key: Arc<str> = Arc::from(name);
                self.index.insert(Arc::clone(&key), Holders::One(id));
                names.push(key);
            }
        }
        if let Some(slot) = self.slots[id as usize].as_mut() {
            slot.files = names.into_boxed_slice();
        }
    }
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
