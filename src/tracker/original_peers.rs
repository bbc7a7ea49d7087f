//! The tracker's side of the Python original's dialect: the two things it does only for the
//! original's peers.
//!
//! - The original's JOIN names a folder and the original's server lists it
//!   ([`list_client_folder`]). Reading a folder a client names is a privilege: the tracker
//!   reads with its own rights, so a folder JOIN could show another local user (`nobody`) the
//!   names in a folder only the tracker's user may list, and then let SEARCH confirm them. It
//!   is therefore off unless the tracker is started with `--legacy-folder-join`, and even then
//!   granted only to a client on this machine (a loopback connection), only for a directory,
//!   never more names than the tracker's limit, and every use is logged. The client is never
//!   told why a path could not be listed (missing, not a folder, unreadable): the same sentence
//!   for all, so no one learns whether a path exists.
//! - The original's SEARCH reply is a bare list of ports, which its peer dials on `127.0.0.1`.
//!   [`dialable_on_loopback`] keeps the peers such a port would actually reach.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::log_limit::{LOGGED_TEXT, prefix};
use crate::share;
use crate::throttle::{Throttle, held_back_note};

/// Why a folder named in an original-dialect JOIN was not listed. The text is sent to the
/// client as the `message` of an `ERROR` reply.
#[derive(Debug)]
pub enum FolderRefused {
    /// The tracker was not started with `--legacy-folder-join`.
    Disabled,
    /// The client is not on this machine: the tracker never lists a folder for it.
    Remote(IpAddr),
    /// The path cannot be listed: missing, not a folder, or unreadable. Which one is logged,
    /// never told to the client.
    Unlistable(String, io::Error),
    /// The folder holds more shareable files than one peer may share.
    TooManyNames {
        /// The folder.
        folder: String,
        /// The tracker's limit on names per peer.
        limit: usize,
    },
}

impl fmt::Display for FolderRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FolderRefused::Disabled => write!(
                f,
                "JOIN with a folder (filePath) is turned off on this tracker (start it with \
                 --legacy-folder-join to allow it); send data.port and data.files instead"
            ),
            FolderRefused::Remote(_) => write!(
                f,
                "JOIN with a folder (filePath) is only accepted from this machine; \
                 send data.port and data.files instead"
            ),
            FolderRefused::Unlistable(folder, _) => write!(
                f,
                "cannot list {:?}: it does not exist, is not a folder, or cannot be read",
                prefix(folder, LOGGED_TEXT)
            ),
            FolderRefused::TooManyNames { folder, limit } => write!(
                f,
                "folder {:?} holds more than {limit} files, the limit for one peer",
                prefix(folder, LOGGED_TEXT)
            ),
        }
    }
}

impl std::error::Error for FolderRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FolderRefused::Unlistable(_, e) => Some(e),
            _ => None,
        }
    }
}

/// May the tracker read a folder on behalf of a client at `ip`? Only when the client is on
/// this machine, which for the original's peers (they can only reach `127.0.0.1`) is always
/// the case.
pub fn may_list_folder_for(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Lists `folder` for the client at `client`, as the original's server does with
/// `os.listdir`, when `enabled` (`--legacy-folder-join`) and with the checks described in the
/// module documentation.
///
/// Only what a peer could serve is listed: regular files directly inside with plain names
/// (the original listed everything, sub-folders included). At most `max_names` names are
/// collected, so a huge folder cannot make the tracker hold a huge list.
pub fn list_client_folder(
    client: SocketAddr,
    folder: &str,
    max_names: usize,
    enabled: bool,
) -> Result<Vec<String>, FolderRefused> {
    let shown = prefix(folder, LOGGED_TEXT);
    // A client can repeat a folder JOIN as fast as it likes: a few lines per 10 s, then a count.
    let warn = |what: std::fmt::Arguments| {
        if let Some(held) = FOLDER_WARNINGS.allow() {
            log::warn!("{client}: {what}{}", held_back_note(held));
        }
    };
    if !enabled {
        log::info!("{client}: refused a folder JOIN ({shown:?}): --legacy-folder-join is off");
        return Err(FolderRefused::Disabled);
    }
    if !may_list_folder_for(client.ip()) {
        warn(format_args!(
            "refused to list folder {shown:?}: the client is not on this machine"
        ));
        return Err(FolderRefused::Remote(client.ip()));
    }
    let unlistable = |e: io::Error| {
        warn(format_args!("cannot list {shown:?}: {e}"));
        FolderRefused::Unlistable(folder.to_string(), e)
    };
    let meta = fs::metadata(folder).map_err(unlistable)?;
    if !meta.is_dir() {
        return Err(unlistable(io::Error::other("not a folder")));
    }
    warn(format_args!(
        "listing folder {shown:?} for an original-dialect JOIN"
    ));
    let mut names = Vec::new();
    for shareable in share::shareable_entries(Path::new(folder)).map_err(unlistable)? {
        let (name, _) = shareable.map_err(unlistable)?;
        if names.len() == max_names {
            return Err(FolderRefused::TooManyNames {
                folder: folder.to_string(),
                limit: max_names,
            });
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Warnings about folder JOINs.
static FOLDER_WARNINGS: Throttle = Throttle::new(10, Duration::from_secs(10));

/// Would the original's peer, which dials every port of a SEARCH reply on `127.0.0.1`, reach
/// the peer at `addr`? Yes when `addr` is a loopback address or an address of this machine
/// (a peer here that reached the tracker through a LAN address). A port of a peer elsewhere
/// would lead the original's peer to whatever listens on that port here, so it is left out.
///
/// The machine's addresses are read at most once every [`LOCAL_ADDRS_TTL`], not per result:
/// a SEARCH costs no socket and no system call per peer.
pub fn dialable_on_loopback(addr: &SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    if ip.is_loopback() {
        return true;
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    LOCAL_ADDRS.contains(ip)
}

/// How long the list of this machine's addresses is trusted before it is read again.
pub const LOCAL_ADDRS_TTL: Duration = Duration::from_secs(5);

static LOCAL_ADDRS: LocalAddrs = LocalAddrs {
    known: RwLock::new(None),
};

/// This machine's addresses, read with `getifaddrs` and kept for [`LOCAL_ADDRS_TTL`].
struct LocalAddrs {
    known: RwLock<Option<(Instant, HashSet<IpAddr>)>>,
}

impl LocalAddrs {
    fn contains(&self, ip: IpAddr) -> bool {
        if let Some((read, addrs)) = &*self.known.read()
            && read.elapsed() < LOCAL_ADDRS_TTL
        {
            return addrs.contains(&ip);
        }
        let mut known = self.known.write();
        // Another thread may have refreshed it while this one waited for the lock.
        if let Some((read, addrs)) = &*known
            && read.elapsed() < LOCAL_ADDRS_TTL
        {
            return addrs.contains(&ip);
        }
        let addrs = interface_addresses().unwrap_or_else(|e| {
            log::warn!("cannot list this machine's addresses: {e}");
            HashSet::new()
        });
        let found = addrs.contains(&ip);
        *known = Some((Instant::now(), addrs));
        found
    }
}

/// Every address assigned to an interface of this machine.
pub fn interface_addresses() -> io::Result<HashSet<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addrs = HashSet::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*node };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says how to read it.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                addrs.insert(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                addrs.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        node = entry.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn addr(ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, 50000)
    }

    /// Only loopback clients (v4, v6, v4-mapped v6) may have a folder listed.
    #[test]
    fn only_loopback_clients_may_have_a_folder_listed() {
        assert!(may_list_folder_for(Ipv4Addr::LOCALHOST.into()));
        assert!(may_list_folder_for(Ipv4Addr::new(127, 0, 0, 2).into()));
        assert!(may_list_folder_for(Ipv6Addr::LOCALHOST.into()));
        assert!(may_list_folder_for(
            Ipv4Addr::LOCALHOST.to_ipv6_mapped().into()
        ));
        assert!(!may_list_folder_for(Ipv4Addr::new(192, 0, 2, 7).into()));
        assert!(!may_list_folder_for(Ipv4Addr::new(10, 0, 0, 1).into()));
        assert!(!may_list_folder_for(Ipv4Addr::UNSPECIFIED.into()));
        assert!(!may_list_folder_for(
            "fd00::2".parse::<Ipv6Addr>().unwrap().into()
        ));
    }

    /// A remote client is refused even for a folder that exists, before the disk is read.
    #[test]
    fn a_remote_client_is_refused_an_existing_folder() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), b"a").unwrap();
        let folder = dir.path().to_str().unwrap();
        let e = list_client_folder(addr(Ipv4Addr::new(192, 0, 2, 7).into()), folder, 10, true)
            .unwrap_err();
        assert!(matches!(e, FolderRefused::Remote(_)), "{e:?}");
        assert!(
            e.to_string().contains("only accepted from this machine"),
            "{e}"
        );
    }

    /// A loopback client gets the plain files only; a file, a missing path and a folder the
    /// tracker may not read are refused with one and the same sentence (nothing tells which);
    /// more files than the limit are refused.
    #[test]
    fn a_loopback_client_gets_plain_files_and_clear_refusals() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.txt"), b"b").unwrap();
        fs::write(dir.path().join("a.txt"), b"a").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.txt"), dir.path().join("link")).unwrap();
        let folder = dir.path().to_str().unwrap();
        let local = addr(Ipv4Addr::LOCALHOST.into());
        assert_eq!(
            list_client_folder(local, folder, 10, true).unwrap(),
            vec!["a.txt", "b.txt"]
        );
        let too_many = list_client_folder(local, folder, 1, true).unwrap_err();
        assert!(matches!(
            too_many,
            FolderRefused::TooManyNames { limit: 1, .. }
        ));

        let refusal = |path: &std::path::Path| {
            let e = list_client_folder(local, path.to_str().unwrap(), 10, true).unwrap_err();
            e.to_string().replace(path.to_str().unwrap(), "PATH")
        };
        let same = "cannot list \"PATH\": it does not exist, is not a folder, or cannot be read";
        assert_eq!(refusal(&dir.path().join("a.txt")), same);
        assert_eq!(refusal(&dir.path().join("missing")), same);
        assert_eq!(refusal(&dir.path().join("a.txt/below")), same);
    }

    /// Without --legacy-folder-join nothing is read: an existing folder and a missing one get
    /// the same refusal, which names neither.
    #[test]
    fn without_the_option_no_folder_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), b"a").unwrap();
        let local = addr(Ipv4Addr::LOCALHOST.into());
        for path in [dir.path().to_path_buf(), dir.path().join("missing")] {
            let e = list_client_folder(local, path.to_str().unwrap(), 10, false).unwrap_err();
            assert!(matches!(e, FolderRefused::Disabled), "{e:?}");
            assert!(e.to_string().contains("--legacy-folder-join"), "{e}");
            assert!(!e.to_string().contains(path.to_str().unwrap()), "{e}");
        }
    }

    /// A path sent by a client is shown in a refusal only as a bounded prefix.
    #[test]
    fn a_huge_path_is_shown_as_a_prefix() {
        let local = addr(Ipv4Addr::LOCALHOST.into());
        let path = format!("/{}", "x".repeat(60_000));
        let e = list_client_folder(local, &path, 10, true).unwrap_err();
        assert!(e.to_string().len() < 400, "{}", e.to_string().len());
    }

    /// Loopback peers are dialable by the original's peer, and so are peers at another address
    /// of this machine; a peer at an address that is not this machine's is not.
    #[test]
    fn only_peers_on_this_machine_are_dialable_on_loopback() {
        let mine = interface_addresses().unwrap();
        for ip in &mine {
            assert!(dialable_on_loopback(&addr(*ip)), "{ip}");
        }
        assert!(dialable_on_loopback(&addr(Ipv4Addr::LOCALHOST.into())));
        assert!(dialable_on_loopback(&addr(Ipv6Addr::LOCALHOST.into())));
        // TEST-NET-3 (RFC 5737) is never assigned to a machine.
        assert!(!dialable_on_loopback(&addr(
            Ipv4Addr::new(203, 0, 113, 77).into()
        )));
        assert!(!dialable_on_loopback(&addr(Ipv4Addr::UNSPECIFIED.into())));
    }
}
