//! Dialling out from the address this peer serves uploads on.
//!
//! The tracker lists a peer under the IP it sees on the peer's connection, and an uploader
//! shows who asks by the IP it sees. On a host with several addresses, both connections must
//! leave from the address the peer listens on, or the tracker would list an address where
//! nothing is served.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Connects to `addr`, from `local_ip` when one is given (and of the same family).
pub fn connect_from(
    local_ip: Option<IpAddr>,
    addr: &SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) else {
        return TcpStream::connect_timeout(addr, timeout);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(*addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.connect_timeout(&(*addr).into(), timeout)?;
    Ok(socket.into())
}
