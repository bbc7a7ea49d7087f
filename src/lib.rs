//! `napster`: a Rust port of a Napster-style peer-to-peer file-sharing system.
//!
//! A **tracker** ([`tracker`]) knows which peer shares which file: peers JOIN with their list,
//! SEARCH a name (or words) to get the addresses of the peers that have it, and UPDATE their
//! list. A **peer** ([`peer`]) shares a folder, downloads files straight from other peers, and
//! serves each upload only after its own user approves it (SIM/NAO). Threads, not async: one
//! per connection, as the original, with small stacks. The wire is described in `PROTOCOL.md`.
//!
//! # How the code is laid out
//!
//! The layers point one way: `main.rs` parses the command line and hands off to the tracker or
//! the peer; both speak [`protocol`]; [`transfer`], [`partial`], [`verified`], [`digests`] and
//! [`share`] move and keep file bytes without knowing what a message means. One line per
//! module:
//!
//! **The tracker**
//! - [`tracker::start`]: fits the connection limit to the machine, listens, says where, serves.
//! - [`tracker::server`]: one thread per connection, one request → one reply.
//! - [`tracker::refusal`]: why a request is refused: the text of its `ERROR` reply.
//! - [`tracker::table`]: the peer table, the name index and the word index, under one `RwLock`.
//! - [`tracker::names`]: each distinct name stored once, known by a 4-byte number.
//! - [`tracker::word_index`]: each folded word → the names holding it (keyword SEARCH).
//! - [`tracker::limits`]: how many connections this machine can serve, fitted at start.
//! - [`tracker::memory`]: memory handed back to the system when the tables shrink.
//! - [`tracker::original_peers`]: the original's folder JOIN (`--legacy-folder-join`, loopback).
//! - [`console_out`]: the tracker's console lines, written by one thread within a byte budget.
//! - [`accept`]: the accept loop both servers share (caps, back-off, a shutdown signal).
//!
//! **The wire**
//! - [`protocol::codec`]: bytes → whole JSON objects, with size and time limits.
//! - [`protocol::messages`]: the requests and replies as typed values, and their lines.
//! - [`protocol::file_record`]: what a peer announces about a file (name, size, digest).
//! - [`protocol::words`]: how names and queries are folded and cut into words.
//! - [`protocol::ranges`]: the range session of a download from several peers.
//! - [`protocol::legacy`]: the Python original's dialect, both ways.
//!
//! **The peer**
//! - [`peer`] ([`peer::run`]): starts the peer's threads and wires them together.
//! - [`peer::folder`]: which folder is shared, created if needed, one peer per folder.
//! - [`peer::line_reader`]: reads the user's lines (plain stdin, or the prompt) for the console.
//! - [`peer::prompt`]: the interactive `rustyline` prompt with its live count of requests.
//! - [`peer::console`]: the one thread that runs commands and answers upload requests.
//! - [`peer::commands`]: parsing what the user types.
//! - [`peer::output`]: where console lines go, and progress bars drawn among them.
//! - [`peer::progress`]: a transfer's progress, as a bar or as plain lines.
//! - [`peer::search_results`]: what SEARCH and LIST print, and what `DOWNLOAD N` refers to.
//! - [`peer::transfer_commands`]: commands about running transfers and kept partials.
//! - [`peer::tracker_client`]: the connection to the tracker, owned by one thread.
//! - [`peer::catalog`]: what this peer shares and what it has told the tracker.
//! - [`peer::announcer`]: tells the tracker of folder changes and new digests, batched.
//! - [`peer::uploader`]: serves downloads, one thread per request, each approved.
//! - [`peer::approval`]: the queue of requests waiting for SIM/NAO, and its limits.
//! - [`peer::range_server`]: the uploader's side of a range session.
//! - [`peer::downloader`]: a download from one peer, verified and resumable.
//! - [`peer::download_error`]: why a download failed, one Portuguese line with its cause behind.
//! - [`peer::swarm`]: a download from several peers at once, every piece verified.
//! - [`peer::deadline`]: deadlines that trickled bytes cannot keep alive.
//! - [`peer::running`]: the transfers running now, to list, cancel or stop them.
//! - [`peer::get`]: `napster get`, one download and an exit code, no console.
//!
//! **Files and bytes**
//! - [`transfer`]: a file's bytes over a socket (`sendfile`, bounded chunks, `O_DIRECT`
//!   receive in `transfer/direct.rs`).
//! - [`partial`]: where a download waits until verified, and how it gets its final name.
//! - [`piece_map`]: which pieces of a partial download are verified.
//! - [`verified`]: BLAKE3 verified streaming (the outboard proves any piece).
//! - [`digests`]: each shared file's digest, hashed once per version and remembered.
//! - [`share`]: the shared folder: safe names, which files are shared.
//!
//! **Small shared pieces**
//! - [`cli`]: the command line (`napster server`, `peer`, `get`, `share`).
//! - [`dial`]: outgoing connections leave from the upload address.
//! - [`liveness`]: a vanished host detected by keepalive and `TCP_USER_TIMEOUT`.
//! - [`exit`]: an exit code per kind of failure.
//! - [`os_error`]: OS errors told in Portuguese.
//! - [`numbers`]: how numbers read on the console.
//! - [`logging`]: log lines on stderr, kept off the prompt's row.
//! - [`log_limit`]: text from the network cut to a short prefix in log lines.
//! - [`throttle`]: rate-limited warnings.
//!
//! ## A JOIN, through the modules
//! 1. The user types `JOIN`: [`peer::prompt`] (or [`peer::line_reader`]) sends the line to
//!    [`peer::console`], which parses it with [`peer::commands`].
//! 2. The console takes the folder's records from [`peer::catalog`] and hands them to
//!    [`peer::tracker_client`], whose thread writes the JOIN line ([`protocol::messages`], or
//!    [`protocol::legacy`] for the original's tracker) on its connection ([`dial`]).
//! 3. In the tracker, [`accept`] hands the connection to a thread of [`tracker::server`], which
//!    reads the frame ([`protocol::codec`]) and parses the request; [`tracker::table`]
//!    registers the peer under the write lock; [`console_out`] prints
//!    `Peer IP:PORT adicionado ...`; `JOIN_OK` goes back.
//! 4. [`peer::tracker_client`] passes the answer to the console as an event, which prints
//!    `Sou o Peer ...`; later digests and folder changes follow as UPDATEs from
//!    [`peer::announcer`].
//!
//! ## A DOWNLOAD, through the modules
//! 1. `DOWNLOAD name peer` reaches [`peer::console`] as above; [`peer::downloader`] starts a
//!    thread (for several holders of one content, [`peer::swarm`] instead), registered in
//!    [`peer::running`].
//! 2. It looks for a partial to resume ([`partial`]), connects from the upload address
//!    ([`dial`], [`liveness`]) and sends the `DOWNLOAD_REQUEST` ([`protocol::messages`]).
//! 3. On the other peer, [`accept`] hands the connection to a thread of [`peer::uploader`], which
//!    checks the name ([`share`]) and answers `OK` with the size and the digest ([`digests`]);
//!    the downloader checks the size against its free space.
//! 4. The uploader sends the question over a channel to its [`peer::console`], which queues it
//!    ([`peer::approval`]) and prints it; the user's `SIM` goes back the same way.
//! 5. The uploader sends the bytes ([`transfer`]: `sendfile`); the downloader writes them into
//!    the partial, hashing them as they land, its progress on screen ([`peer::progress`]).
//! 6. The BLAKE3 digest matches: the partial takes its final name ([`partial`]), and
//!    [`peer::catalog`] has the new file announced to the tracker at once.

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
