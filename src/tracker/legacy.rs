//! The tracker's side of the Python original's dialect: the two things it does only for the
//! original's peers.
//!
//! - The original's JOIN names a folder and the original's server lists it
//!   ([`list_client_folder`]). Reading a folder a client names is a privilege: it is granted only
//!   to a client on this machine (a loopback connection), only for a directory, never more names
//!   than the tracker's limit, and every use is logged. A remote client is refused before the
//!   disk is touched.
//! - The original's SEARCH reply is a bare list of ports, which its peer dials on `127.0.0.1`.
//!   [`dialable_on_loopback`] keeps the peers such a port would actually reach.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::share;

/// Why a folder named in an original-dialect JOIN was not listed. The text is sent to the
/// client as the `message` of an `ERROR` reply.
#[derive(Debug)]
pub enum FolderRefused {
    /// The client is not on this machine: the tracker never lists a folder for it.
    Remote(IpAddr),
    /// The path cannot be read (missing, no permission, ...).
    Unreadable(String, io::Error),
    /// The path exists but is not a directory.
    NotAFolder(String),
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
            FolderRefused::Remote(_) => write!(
                f,
                "JOIN with a folder (filePath) is only accepted from this machine; \
                 send data.port and data.files instead"
            ),
            FolderRefused::Unreadable(folder, e) => {
                write!(f, "cannot read folder {folder:?}: {e}")
            }
            FolderRefused::NotAFolder(folder) => write!(f, "{folder:?} is not a folder"),
            FolderRefused::TooManyNames { folder, limit } => write!(
                f,
                "folder {folder:?} holds more than {limit} files, the limit for one peer"
            ),
        }
    }
}

impl std::error::Error for FolderRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FolderRefused::Unreadable(_, e) => Some(e),
            _ => None,
        }
    }
}

/// May the tracker read a folder on behalf of a client at `ip`? Only when the client is on
/// this machine, which for the original's peers (they can only reach `127.0.0.1`) is always
/// the case, and which means the client could read the folder's names itself.
pub fn may_list_folder_for(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Lists `folder` for the client at `client`, as the original's server does with
/// `os.listdir`, with the checks described in the module documentation.
///
/// Only what a peer could serve is listed: regular files directly inside with plain names
/// (the original listed everything, sub-folders included). At most `max_names` names are
/// collected, so a huge folder cannot make the tracker hold a huge list.
pub fn list_client_folder(
    client: SocketAddr,
    folder: &str,
    max_names: usize,
) -> Result<Vec<String>, FolderRefused> {
    if !may_list_folder_for(client.ip()) {
        log::warn!(
            "{client}: refused to list folder {folder:?}: the client is not on this machine"
        );
        return Err(FolderRefused::Remote(client.ip()));
    }
    let unreadable = |e| FolderRefused::Unreadable(folder.to_string(), e);
    let meta = fs::metadata(folder).map_err(unreadable)?;
    if !meta.is_dir() {
        log::warn!("{client}: refused to list {folder:?}: not a folder");
        return Err(FolderRefused::NotAFolder(folder.to_string()));
    }
    log::warn!("{client}: listing folder {folder:?} for an original-dialect JOIN");
    let mut names = Vec::new();
    for entry in fs::read_dir(folder).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        // file_type() does not follow symbolic links: a link is not a plain file.
        if !entry.file_type().map_err(unreadable)?.is_file() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if share::check_name(&name).is_err() {
            continue;
        }
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

/// Would the original's peer, which dials every port of a SEARCH reply on `127.0.0.1`, reach
/// the peer at `addr`? Yes when `addr` is a loopback address or an address of this machine
/// (a peer here that reached the tracker through a LAN address). A port of a peer elsewhere
/// would lead the original's peer to whatever listens on that port here, so it is left out.
pub fn dialable_on_loopback(addr: &SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    if ip.is_loopback() {
        return true;
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    // Binding succeeds only for an address assigned to this machine.
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
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
        let e =
            list_client_folder(addr(Ipv4Addr::new(192, 0, 2, 7).into()), folder, 10).unwrap_err();
        assert!(matches!(e, FolderRefused::Remote(_)), "{e:?}");
        assert!(
            e.to_string().contains("only accepted from this machine"),
            "{e}"
        );
    }

    /// A loopback client gets the plain files only; a file or a missing path is refused with
    /// a sentence naming it; more files than the limit are refused.
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
            list_client_folder(local, folder, 10).unwrap(),
            vec!["a.txt", "b.txt"]
        );
        let too_many = list_client_folder(local, folder, 1).unwrap_err();
        assert!(matches!(
            too_many,
            FolderRefused::TooManyNames { limit: 1, .. }
        ));

        let file = dir.path().join("a.txt");
        let e = list_client_folder(local, file.to_str().unwrap(), 10).unwrap_err();
        assert!(e.to_string().contains("is not a folder"), "{e}");
        let missing = dir.path().join("missing");
        let e = list_client_folder(local, missing.to_str().unwrap(), 10).unwrap_err();
        assert!(e.to_string().starts_with("cannot read folder"), "{e}");
    }

    /// Loopback peers are dialable by the original's peer; a peer at an address that is not
    /// this machine's is not.
    #[test]
    fn only_peers_on_this_machine_are_dialable_on_loopback() {
        assert!(dialable_on_loopback(&addr(Ipv4Addr::LOCALHOST.into())));
        assert!(dialable_on_loopback(&addr(Ipv6Addr::LOCALHOST.into())));
        // TEST-NET-3 (RFC 5737) is never assigned to a machine.
        assert!(!dialable_on_loopback(&addr(
            Ipv4Addr::new(203, 0, 113, 77).into()
        )));
        assert!(!dialable_on_loopback(&addr(Ipv4Addr::UNSPECIFIED.into())));
    }
}
