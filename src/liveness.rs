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
/// host: the first keepalive probe after a third of it, then up to four probes spread over the
/// rest; `TCP_USER_TIMEOUT` bounds unacknowledged sent data by the same `bound`.
///
/// The kernel takes keepalive times in whole seconds, at least one: the times are computed in
/// seconds so that a small bound (a few seconds, as tests use) still sets every option instead
/// of being refused as zero.
pub fn set_liveness(stream: &TcpStream, bound: Duration) -> io::Result<()> {
    let (idle, interval, retries) = keepalive_plan(bound);
    let sock = SockRef::from(stream);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    sock.set_tcp_user_timeout(Some(bound.max(Duration::from_secs(1))))?;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(idle))
        .with_interval(Duration::from_secs(interval))
        .with_retries(retries);
    sock.set_tcp_keepalive(&keepalive)
}

/// Idle seconds before the first probe, seconds between probes, and the number of probes, so
/// that `idle + interval * retries` is at most `bound` (and at least 2 s).
fn keepalive_plan(bound: Duration) -> (u64, u64, u32) {
    let total = bound.as_secs().max(2);
    let idle = (total / 3).max(1);
    let rest = total - idle;
    let interval = (rest / 4).max(1);
    let retries = (rest / interval).clamp(1, 4) as u32;
    (idle, interval, retries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Every bound, however small, gives whole-second times the kernel accepts, and the
    /// probes end within the bound.
    #[test]
    fn keepalive_plan_fits_within_the_bound() {
        for secs in 0..200 {
            let (idle, interval, retries) = keepalive_plan(Duration::from_secs(secs));
            assert!(idle >= 1 && interval >= 1 && retries >= 1, "{secs}");
            assert!(
                idle + interval * u64::from(retries) <= secs.max(2),
                "{secs}"
            );
        }
        assert_eq!(keepalive_plan(Duration::from_secs(30)), (10, 5, 4));
    }

    /// A small bound is applied to a real socket instead of failing (it used to round the
    /// probe interval down to zero seconds, which the kernel refuses).
    #[test]
    fn a_small_bound_is_accepted_by_the_kernel() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        for secs in [1, 3, 5, 6, 30] {
            set_liveness(&stream, Duration::from_secs(secs)).unwrap();
            let sock = SockRef::from(&stream);
            assert!(sock.keepalive().unwrap());
            #[cfg(target_os = "linux")]
            assert_eq!(
                sock.tcp_user_timeout().unwrap(),
                Some(Duration::from_secs(secs))
            );
        }
    }
}
