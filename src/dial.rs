//! Dialling out from the address (and, for the original's tracker, the port) this peer serves
//! uploads on.
//!
//! The tracker lists a peer under the IP it sees on the peer's connection, and an uploader
//! shows who asks by the IP it sees. On a host with several addresses, both connections must
//! leave from the address the peer listens on, or the tracker would list an address where
//! nothing is served.
//!
//! The Python original's tracker goes further: it lists a peer under the *port* of its tracker
//! connection, and every SEARCH answer is that port. So that other peers who dial that port
//! reach our uploads, a peer that may talk to that tracker opens its upload port with
//! `SO_REUSEPORT` ([`listen_for_uploads`]) and dials the tracker from that very port
//! ([`connect_from_port`]). Linux lets two sockets share a port only when both set the option
//! and belong to the same user; a connecting socket never receives the listener's connections.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Connects to `addr`, from `local_ip` when one is given (and of the same family).
pub fn connect_from(
    local_ip: Option<IpAddr>,
    addr: &SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) else {
        return TcpStream::connect_timeout(addr, timeout);
    };
    let socket = tcp_socket(addr)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.connect_timeout(&(*addr).into(), timeout)?;
    Ok(socket.into())
}

/// Connects to `addr` from `port` (the upload port, opened by [`listen_for_uploads`] with
/// `shared` set), on `local_ip` if given. Fails if the port cannot be shared, for example when
/// the previous connection from it to `addr` is still in TIME_WAIT; callers then dial from any
/// port with [`connect_from`].
pub fn connect_from_port(
    local_ip: Option<IpAddr>,
    port: u16,
    addr: &SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let ip = local_ip
        .filter(|ip| ip.is_ipv4() == addr.is_ipv4())
        .unwrap_or_else(|| unspecified_like(addr));
    let socket = tcp_socket(addr)?;
    socket.set_reuse_address(true)?;
    set_reuse_port(&socket)?;
    socket.bind(&SocketAddr::new(ip, port).into())?;
    socket.connect_timeout(&(*addr).into(), timeout)?;
    Ok(socket.into())
}

/// Opens the upload port. With `shared`, the port can also be the source port of the tracker
/// connection ([`connect_from_port`]); a port given explicitly is first bound alone, so that a
/// port another program (or another peer of this user) already holds is still refused with
/// "address in use" instead of being silently shared.
pub fn listen_for_uploads(addr: SocketAddr, shared: bool) -> io::Result<TcpListener> {
    if !shared || !cfg!(target_os = "linux") {
        return TcpListener::bind(addr);
    }
    if addr.port() != 0 {
        // Binding alone, as std does (SO_REUSEADDR, no SO_REUSEPORT), fails if the port is
        // held; the probe is closed before the real bind.
        drop(TcpListener::bind(addr)?);
    }
    let socket = tcp_socket(&addr)?;
    socket.set_reuse_address(true)?;
    set_reuse_port(&socket)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

fn tcp_socket(addr: &SocketAddr) -> io::Result<Socket> {
    Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )
}

fn unspecified_like(addr: &SocketAddr) -> IpAddr {
    if addr.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    }
}

#[cfg(target_os = "linux")]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(target_os = "linux"))]
fn set_reuse_port(_socket: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sharing the upload port is only done on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tracker sees a connection from the upload port, and the upload port still accepts
    /// downloaders: what the original's tracker needs to list a reachable port.
    #[test]
    #[cfg(target_os = "linux")]
    fn the_tracker_connection_leaves_from_the_upload_port() {
        let tracker = TcpListener::bind("127.0.0.1:0").unwrap();
        let uploads = listen_for_uploads("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let port = uploads.local_addr().unwrap().port();
        let _conn = connect_from_port(
            None,
            port,
            &tracker.local_addr().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        let (_, seen) = tracker.accept().unwrap();
        assert_eq!(seen.port(), port);
        let _downloader = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_, from) = uploads.accept().unwrap();
        assert_ne!(from.port(), port);
    }

    /// A port already held (by anyone, shared or not) is refused, as without sharing.
    #[test]
    fn a_held_port_is_still_refused() {
        let first = listen_for_uploads("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let held = first.local_addr().unwrap();
        for shared in [true, false] {
            let e = listen_for_uploads(held, shared).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "shared: {shared}");
        }
    }
}
