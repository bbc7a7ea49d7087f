//! Detecting a vanished host: TCP keepalive plus `TCP_USER_TIMEOUT`.
//!
//! A peer whose machine freezes or whose cable is cut never closes its connection; without help
//! the tracker would list it for ever. Keepalive probes an idle connection and
//! `TCP_USER_TIMEOUT` bounds how long sent data may stay unacknowledged, so either way the
//! kernel reports the connection dead within about the configured bound and the blocked read
//! returns an error. No application heartbeat is needed, so the original's peers (which send
//! none) are covered too.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// The default bound for detecting a vanished host.
pub const DEFAULT_LIVENESS: Duration = Duration::from_secs(30);

/// Makes the kernel declare `stream` dead after about `bound` without an answer from the other
/// host: first probe after a third of it, then four probes a sixth of it apart.
pub fn set_liveness(stream: &TcpStream, bound: Duration) -> io::Result<()> {
    let bound = bound.max(Duration::from_secs(3));
    let idle = bound / 3;
    let interval = bound / 6;
    let keepalive = TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval)
        .with_retries(4);
    let sock = SockRef::from(stream);
    sock.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    sock.set_tcp_user_timeout(Some(bound))?;
    Ok(())
}
