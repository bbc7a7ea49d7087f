//! Upload approvals: requests from upload threads, answered by the console's user.
//!
//! Each upload thread sends an [`ApprovalRequest`] over a crossbeam channel to the one console
//! thread and waits on the request's own reply channel. The console queues requests in arrival
//! order; `SIM`/`NAO` answer the oldest; a request not answered in time is refused. This is what
//! replaces the original's `input()` calls from upload threads, which fought the menu for stdin.
//!
//! Who asks is shown as far as it is known: the address the connection came from, and the
//! upload port the downloader claims (`fromPort`), marked as claimed, since any program can
//! send any number there. The queue is bounded, per host too, and keeps room for hosts that
//! have nothing queued yet, so a few hosts cannot fill it for everyone.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

/// The answer to an upload request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The user said SIM (or `--approve yes`).
    Accept,
    /// The user said NAO (or `--approve no`).
    Reject,
    /// Nobody answered within the time limit.
    TimedOut,
    /// The peer is shutting down.
    ShuttingDown,
    /// Too many requests already wait for an answer.
    Busy,
}

impl Decision {
    /// Why the request was refused, for the downloader, when it was not a plain NAO. Sent in
    /// `downloadRejected`'s `reason` and shown by the downloader after `Download Rejeitado: `,
    /// so it is written for the downloader's user, in the console's language.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Decision::TimedOut => Some("o usuário do outro peer não respondeu a tempo"),
            Decision::ShuttingDown => Some("o outro peer está encerrando"),
            Decision::Busy => Some("o outro peer tem pedidos demais aguardando resposta"),
            Decision::Accept | Decision::Reject => None,
        }
    }
}

/// Seconds a request waits for SIM/NAO unless `--approval-timeout` says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// Requests that may wait for an answer at once; more are refused at once.
pub const MAX_PENDING: usize = 16;
/// Requests from one other host that may wait at once.
pub const MAX_PENDING_PER_HOST: usize = 4;
/// Places kept for hosts with no request waiting: a host that already has one may not take the
/// last of these.
pub const KEPT_FOR_NEW_HOSTS: usize = 4;
/// Requests from this very machine that may wait at once: every place but those kept for new
/// hosts (its peers share one address; a classroom demo runs many of them).
pub const MAX_PENDING_FROM_THIS_MACHINE: usize = MAX_PENDING - KEPT_FOR_NEW_HOSTS;

/// Warnings about refused requests: a few per minute, the rest counted.
static BUSY_WARNINGS: crate::throttle::Throttle =
    crate::throttle::Throttle::new(5, Duration::from_secs(60));

/// An upload waiting for its user's answer.
#[derive(Debug)]
pub struct ApprovalRequest {
    /// Where the connection came from (known).
    pub from: SocketAddr,
    /// The connection came from this very machine (see
    /// [`crate::peer::uploader::from_this_machine`]).
    pub from_this_machine: bool,
    /// The upload port the downloader says it listens on (`fromPort`; not checked).
    pub claimed_port: Option<u16>,
    /// The file asked for.
    pub filename: String,
    /// Its size in bytes.
    pub size: u64,
    /// The byte the upload would resume from (0: from the start).
    pub offset: u64,
    /// Where the answer goes.
    pub reply: Sender<Decision>,
}

impl fmt::Display for ApprovalRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Peer {}", self.from)?;
        if let Some(port) = self.claimed_port {
            write!(f, " (porta de upload declarada: {port})")?;
        }
        write!(
            f,
            " solicitou o arquivo {} ({})",
            self.filename,
            crate::peer::progress::human_size(self.size)
        )?;
        if self.offset > 0 {
            write!(
                f,
                ", retomando do byte {}",
                crate::numbers::thousands(self.offset)
            )?;
        }
        Ok(())
    }
}

struct Pending {
    request: ApprovalRequest,
    deadline: Instant,
}

/// The console's queue of requests, oldest first.
pub struct ApprovalQueue {
    items: VecDeque<Pending>,
    timeout: Duration,
}

impl ApprovalQueue {
    /// An empty queue whose requests expire after `timeout`.
    pub fn new(timeout: Duration) -> ApprovalQueue {
        ApprovalQueue {
            items: VecDeque::new(),
            timeout,
        }
    }

    /// Queues a request, or refuses it at once ([`Decision::Busy`], returning false) when
    /// [`MAX_PENDING`] requests already wait, or [`MAX_PENDING_PER_HOST`] from its host
    /// ([`MAX_PENDING_FROM_THIS_MACHINE`] from this machine), or its host already has one
    /// waiting and only the [`KEPT_FOR_NEW_HOSTS`] places are left.
    pub fn push(&mut self, request: ApprovalRequest) -> bool {
        let from_host = self
            .items
            .iter()
            .filter(|p| p.request.from.ip() == request.from.ip())
            .count();
        let share = if request.from_this_machine {
            MAX_PENDING_FROM_THIS_MACHINE
        } else {
            MAX_PENDING_PER_HOST
        };
        let free = MAX_PENDING.saturating_sub(self.items.len());
        if free == 0 || from_host >= share || (from_host > 0 && free <= KEPT_FOR_NEW_HOSTS) {
            crate::warn_throttled!(
                BUSY_WARNINGS,
                "upload request from {} refused: {} requests wait, {from_host} from its host",
                request.from,
                self.items.len()
            );
            let _ = request.reply.send(Decision::Busy);
            return false;
        }
        let now = Instant::now();
        self.items.push_back(Pending {
            request,
            // A timeout too large to add (from a huge option) means "no deadline".
            deadline: now
                .checked_add(self.timeout)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        });
        true
    }

    /// The oldest request, the one SIM/NAO will answer.
    pub fn oldest(&self) -> Option<&ApprovalRequest> {
        self.items.front().map(|p| &p.request)
    }

    /// How many requests wait.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Answers the oldest request; returns it, or `None` if none waits.
    pub fn answer_oldest(&mut self, decision: Decision) -> Option<ApprovalRequest> {
        let request = self.take_oldest()?;
        // The upload thread may be gone (its downloader hung up); nothing is owed then.
        let _ = request.reply.send(decision);
        Some(request)
    }

    /// Takes the oldest request out of the queue without answering it: the caller prints the
    /// verdict first and then sends it on `reply`.
    pub fn take_oldest(&mut self) -> Option<ApprovalRequest> {
        self.items.pop_front().map(|p| p.request)
    }

    /// Refuses every request whose time is up; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<ApprovalRequest> {
        let mut expired = Vec::new();
        while self.items.front().is_some_and(|p| p.deadline <= now) {
            if let Some(request) = self.answer_oldest(Decision::TimedOut) {
                expired.push(request);
            }
        }
        expired
    }

    /// How long until the oldest request expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.items.front().map(|p| p.deadline)
    }

    /// Refuses everything (on shutdown), then waits up to `wait` for the upload threads to
    /// have told their downloaders, so that leaving does not cut them off before the refusal
    /// and its reason are sent. Returns how many were refused.
    pub fn refuse_all(&mut self, decision: Decision, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let refused: Vec<Pending> = self.items.drain(..).collect();
        for pending in &refused {
            let _ = pending.request.reply.send(decision);
        }
        for pending in &refused {
            wait_until_answered(&pending.request.reply, decision, deadline);
        }
        refused.len()
    }
}

/// Waits until the upload thread behind `reply` has dropped its end of the channel, which it
/// does once it has written its answer and returned, or until `deadline`.
///
/// The upload thread's channel holds one decision. Each further send waits for room (the
/// thread took the decision), then for a disconnection (the thread is gone). Three sends at
/// most, so a channel with more room never makes this spin.
fn wait_until_answered(reply: &Sender<Decision>, decision: Decision, deadline: Instant) {
    for _ in 0..3 {
        if reply.send_deadline(decision, deadline).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;
    use std::thread;

    fn request(name: &str) -> (ApprovalRequest, crossbeam_channel::Receiver<Decision>) {
        request_from(name, "127.0.0.1:5000")
    }

    fn request_from(
        name: &str,
        from: &str,
    ) -> (ApprovalRequest, crossbeam_channel::Receiver<Decision>) {
        let (tx, rx) = bounded(1);
        let req = ApprovalRequest {
            from: from.parse().unwrap(),
            from_this_machine: false,
            claimed_port: None,
            filename: name.to_string(),
            size: 3,
            offset: 0,
            reply: tx,
        };
        (req, rx)
    }

    /// SIM/NAO go to the oldest request; the newer one keeps waiting until answered.
    #[test]
    fn answers_go_to_the_oldest_request_first() {
        let mut q = ApprovalQueue::new(Duration::from_secs(60));
        let (a, ra) = request("a");
        let (b, rb) = request("b");
        q.push(a);
        q.push(b);
        assert_eq!(q.answer_oldest(Decision::Reject).unwrap().filename, "a");
        assert_eq!(ra.recv().unwrap(), Decision::Reject);
        assert!(rb.try_recv().is_err());
        assert_eq!(q.answer_oldest(Decision::Accept).unwrap().filename, "b");
        assert_eq!(rb.recv().unwrap(), Decision::Accept);
        assert!(q.answer_oldest(Decision::Accept).is_none());
    }

    /// A request past its deadline is refused as timed out and leaves the queue.
    #[test]
    fn expired_requests_are_refused_as_timed_out() {
        let mut q = ApprovalQueue::new(Duration::from_secs(60));
        let (a, ra) = request("a");
        q.push(a);
        assert!(q.expire(Instant::now()).is_empty());
        let expired = q.expire(Instant::now() + Duration::from_secs(61));
        assert_eq!(expired.len(), 1);
        assert_eq!(ra.recv().unwrap(), Decision::TimedOut);
        assert!(q.is_empty());
    }

    /// Leaving returns only after the upload thread has taken its refusal and finished.
    #[test]
    fn refuse_all_waits_for_the_upload_thread_to_finish_answering() {
        let mut q = ApprovalQueue::new(Duration::from_secs(60));
        let (a, ra) = request("a");
        q.push(a);
        let (written_tx, written_rx) = bounded(1);
        let upload = thread::spawn(move || {
            let decision = ra.recv().unwrap();
            // What the upload thread does after the decision, before it lets go of `ra`.
            written_tx.send(decision).unwrap();
            drop(ra);
        });
        assert_eq!(
            q.refuse_all(Decision::ShuttingDown, Duration::from_secs(30)),
            1
        );
        assert_eq!(written_rx.try_recv().unwrap(), Decision::ShuttingDown);
        upload.join().unwrap();
    }

    /// Four hosts sending four requests each cannot fill the queue: the places kept for new
    /// hosts go one per host that has nothing waiting.
    #[test]
    fn room_is_kept_for_hosts_not_yet_queued() {
        let mut q = ApprovalQueue::new(Duration::from_secs(60));
        let mut waiting = Vec::new();
        for host in 1..=4 {
            for _ in 0..MAX_PENDING_PER_HOST {
                let (r, rx) = request_from("f", &format!("10.0.0.{host}:1"));
                q.push(r);
                waiting.push(rx);
            }
        }
        assert!(q.len() < MAX_PENDING, "{} of {MAX_PENDING} taken", q.len());
        for host in 5..=7 {
            let (r, _rx) = request_from("f", &format!("10.0.0.{host}:1"));
            assert!(q.push(r), "host {host} found no room");
        }
    }

    /// This machine's peers (a classroom demo on one machine) may have 12 requests waiting at
    /// once, not another host's 4; the last 4 places stay for hosts with none waiting.
    #[test]
    fn this_machine_may_queue_all_but_the_places_kept_for_new_hosts() {
        let mut q = ApprovalQueue::new(Duration::from_secs(60));
        let mut waiting = Vec::new();
        for _ in 0..MAX_PENDING_FROM_THIS_MACHINE {
            let (mut r, rx) = request_from("f", "127.0.0.1:1");
            r.from_this_machine = true;
            assert!(q.push(r), "{} queued", q.len());
            waiting.push(rx);
        }
        assert_eq!(q.len(), 12);
        let (mut r, rx) = request_from("f", "127.0.0.1:1");
        r.from_this_machine = true;
        assert!(!q.push(r));
        assert_eq!(rx.try_recv(), Ok(Decision::Busy));
        let (r, _rx) = request_from("f", "10.0.0.9:1");
        assert!(q.push(r), "a new host found no room");
    }

    /// The request line names the connection's address and marks the port the downloader
    /// claims as claimed.
    #[test]
    fn the_claimed_port_is_shown_as_claimed() {
        let (mut r, _rx) = request_from("notes.txt", "127.0.0.1:40122");
        assert_eq!(
            r.to_string(),
            "Peer 127.0.0.1:40122 solicitou o arquivo notes.txt (3 B)"
        );
        r.claimed_port = Some(5002);
        assert_eq!(
            r.to_string(),
            "Peer 127.0.0.1:40122 (porta de upload declarada: 5002) solicitou o arquivo notes.txt (3 B)"
        );
    }
}
