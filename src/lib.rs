//! `napster`: a Rust port of a Napster-style peer-to-peer file-sharing system.
//!
//! A **tracker** ([`tracker`]) knows which peer shares which file names: peers JOIN with their
//! list, SEARCH a name to get the addresses of the peers that have it, and UPDATE their list.
//! A **peer** ([`peer`]) shares a folder, downloads files straight from other peers, and
//! serves each upload only after its own user approves it (SIM/NAO).
//!
//! The layers point one way: `tracker` and `peer` speak [`protocol`] (messages and framing);
//! [`transfer`] moves file bytes over a socket, [`partial`] keeps downloads until they are
//! verified, and [`share`] knows the shared folder; none knows what the messages mean. The
//! wire is described in `PROTOCOL.md`.
//!
//! A download from several peers at once ([`peer::swarm`]) checks every piece against the
//! file's digest with [`verified`] (BLAKE3 verified streaming), whose outboards the uploader
//! keeps beside each file's digest in [`digests`], and whose progress a partial download keeps
//! in [`piece_map`].
//!
//! Small shared pieces: [`accept`] (the accept loop both servers share: connection caps,
//! back-off out of descriptors, a shutdown signal), [`liveness`] (how a vanished host is detected: keepalive and
//! `TCP_USER_TIMEOUT`), [`dial`] (outgoing connections leave from the upload address),
//! [`exit`] (an exit code per kind of failure), [`os_error`] (OS errors in Portuguese),
//! [`console_out`] (the tracker's console lines, written by one thread within a byte budget),
//! [`log_limit`] (network text in log lines cut to a short prefix), [`throttle`]
//! (rate-limited warnings), [`logging`] (log lines, kept off the peer's prompt row), [`cli`]
//! (the command line). Threads, not async: one per connection, as the original, with small
//! stacks.

#![warn(missing_docs)]

pub mod accept;
pub mod cli;
pub mod console_out;
pub mod dial;
pub mod digests;
pub mod exit;
pub mod liveness;
pub mod log_limit;
pub mod logging;
pub mod numbers;
pub mod os_error;
pub mod partial;
pub mod peer;
pub mod piece_map;
pub mod protocol;
pub mod share;
pub mod throttle;
pub mod tracker;
pub mod transfer;
pub mod verified;
