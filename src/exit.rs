//! Exit codes: one per kind of failure, so a script can branch on what went wrong (as rsync
//! documents its own). `napster --help` and README list them.
//!
//! A run exits 0 only if every command it was given succeeded. When several fail, the code is
//! the first failure's: that is usually the cause of the rest.

use std::process::ExitCode;

use parking_lot::Mutex;

/// A kind of failure, with its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Failure {
    /// Anything not listed below (a thread that could not start, ...).
    Other = 1,
    /// The command line is invalid (an unknown option, `--server` without a port, ...).
    Usage = 2,
    /// A console command was not understood or not possible now (unknown command, invalid
    /// argument, SEARCH before JOIN, SIM with no request waiting).
    Command = 3,
    /// The peer could not start here: the upload port is taken, the folder is unusable.
    Start = 4,
    /// The tracker could not be reached, or refused (JOIN, SEARCH).
    Tracker = 5,
    /// Nobody shares the file, or the other peer does not have it.
    NotFound = 6,
    /// The other peer's user refused, did not answer in time, or was leaving.
    Rejected = 7,
    /// The other peer could not be reached, or stopped answering before sending the file.
    Unreachable = 8,
    /// The transfer was cut half way; what arrived is kept and the next DOWNLOAD resumes it.
    Cut = 9,
    /// Every byte arrived but the copy is not what the other peer announced: discarded.
    Corrupt = 10,
    /// A local file problem: the file exists already, the disk is full, it cannot be written.
    Disk = 11,
    /// Left (QUIT confirmed, Ctrl-C, SIGTERM) while downloads ran; their partials are kept.
    Interrupted = 20,
}

impl Failure {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Every kind, in code order, with what it means (English, like `--help`, whose list a
    /// test keeps equal to this one).
    pub const ALL: [(Failure, &'static str); 12] = [
        (Failure::Other, "any other error"),
        (
            Failure::Usage,
            "invalid command line (unknown option, --server without a port, --dir naming a file)",
        ),
        (
            Failure::Command,
            "a console command was not understood or not possible then (unknown, bad argument, SEARCH before JOIN)",
        ),
        (
            Failure::Start,
            "could not start: upload port taken, folder unusable or used by another napster",
        ),
        (
            Failure::Tracker,
            "the tracker could not be reached, or refused",
        ),
        (
            Failure::NotFound,
            "nobody shares the file, or the other peer does not have it",
        ),
        (
            Failure::Rejected,
            "download rejected (NAO, no answer in time, the other peer leaving or busy)",
        ),
        (
            Failure::Unreachable,
            "the other peer could not be reached or did not answer in time",
        ),
        (
            Failure::Cut,
            "transfer cut half way; what arrived is kept and the next DOWNLOAD resumes it",
        ),
        (
            Failure::Corrupt,
            "the copy does not match the announced digest; discarded",
        ),
        (
            Failure::Disk,
            "local file problem: the file exists already, disk full, write error",
        ),
        (
            Failure::Interrupted,
            "left (QUIT confirmed, Ctrl-C, SIGTERM) while downloads ran; partials kept",
        ),
    ];
}

impl From<Failure> for ExitCode {
    fn from(failure: Failure) -> ExitCode {
        ExitCode::from(failure.code())
    }
}

/// What a run has come to: the first failure recorded, if any. Shared by the threads that
/// finish commands (the console, download threads).
#[derive(Debug, Default)]
pub struct Outcome {
    first: Mutex<Option<Failure>>,
}

impl Outcome {
    /// No failure yet.
    pub fn new() -> Outcome {
        Outcome::default()
    }

    /// Records a failure; only the first one sets the exit code.
    pub fn fail(&self, failure: Failure) {
        self.first.lock().get_or_insert(failure);
    }

    /// The first failure recorded, or `None` when everything succeeded.
    pub fn failure(&self) -> Option<Failure> {
        *self.first.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes are distinct, listed in order, and the first failure is the one reported.
    #[test]
    fn codes_are_distinct_and_the_first_failure_wins() {
        let codes: Vec<u8> = Failure::ALL.iter().map(|(f, _)| f.code()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
        let outcome = Outcome::new();
        assert_eq!(outcome.failure(), None);
        outcome.fail(Failure::Rejected);
        outcome.fail(Failure::Disk);
        assert_eq!(outcome.failure(), Some(Failure::Rejected));
    }
}
