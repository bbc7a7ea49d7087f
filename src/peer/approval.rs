//! Upload approvals: requests from upload threads, answered by the console's user.
//!
//! Each upload thread sends an [`ApprovalRequest`] over a crossbeam channel to the one console
//! thread and waits on the request's own reply channel. The console queues requests in arrival
//! order; `SIM`/`NAO` answer the oldest; a request not answered in time is refused. This is what
//! replaces the original's `input()` calls from upload threads, which fought the menu for stdin.

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
}

impl Decision {
    /// Why the request was refused, for the downloader, when it was not a plain NAO.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Decision::TimedOut => Some("the uploader's user did not answer in time"),
            Decision::ShuttingDown => Some("the uploader is shutting down"),
            Decision::Accept | Decision::Reject => None,
        }
    }
}

/// An upload waiting for its user's answer.
#[derive(Debug)]
pub struct ApprovalRequest {
    /// Who asks: the downloader's IP and upload port.
    pub from: SocketAddr,
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
        write!(
            f,
            "Peer {} solicitou o arquivo {} ({} bytes)",
            self.from, self.filename, self.size
        )?;
        if self.offset > 0 {
            write!(f, ", retomando do byte {}", self.offset)?;
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

    /// Queues a request.
    pub fn push(&mut self, request: ApprovalRequest) {
        self.items.push_back(Pending {
            request,
            deadline: Instant::now() + self.timeout,
        });
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
        let pending = self.items.pop_front()?;
        // The upload thread may be gone (its downloader hung up); nothing is owed then.
        let _ = pending.request.reply.send(decision);
        Some(pending.request)
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

    /// Refuses everything (on shutdown).
    pub fn refuse_all(&mut self, decision: Decision) -> usize {
        let n = self.items.len();
        while self.answer_oldest(decision).is_some() {}
        n
    }
}
