//! Which source fetches which piece: the swarm's plan, with no I/O in it.
//!
//! The file is cut into pieces of [`PIECE_LEN`] bytes (whole chunk groups). A source asks for
//! the next piece when it has room in its pipeline and gets the lowest piece nobody fetches.
//! A source that fails, lies, stalls or leaves gives its pieces back and the next source to
//! ask takes them. When every piece is either done or being fetched, a source with room gets
//! a piece another source is still fetching (the *end game*, as in BitTorrent): the first
//! verified copy wins, so one slow or stalled source cannot hold the end of the download.
//! The same idea as iroh-blobs' downloader: plan from what is missing, re-plan when a
//! provider drops.

use std::time::Instant;

use crate::verified::CHUNK_GROUP;

/// Bytes in a piece (the last one may be shorter): 16 chunk groups.
pub const PIECE_LEN: u64 = 16 * CHUNK_GROUP;
/// Sources fetching one piece at once in the end game.
const MAX_COPIES: usize = 2;

/// Identifies a source within one download.
pub type SourceId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Missing,
    /// Being fetched by these sources, since the first was given it.
    Fetching(Vec<SourceId>, Instant),
    Done,
}

/// The state of every piece of one file.
#[derive(Debug)]
pub struct Planner {
    size: u64,
    pieces: Vec<Piece>,
    done: usize,
    /// Lowest piece that may still be missing (everything before is fetching or done).
    first_missing: usize,
}

impl Planner {
    /// A plan for a file of `size` bytes, every piece missing.
    pub fn new(size: u64) -> Planner {
        let count = size.div_ceil(PIECE_LEN).max(1) as usize;
        Planner {
            size,
            pieces: vec![Piece::Missing; count],
            done: 0,
            first_missing: 0,
        }
    }

    /// How many pieces the file has.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Always false: a file has at least one piece (an empty file has one empty piece).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The byte range of piece `index`: its first byte and its length.
    pub fn range(&self, index: usize) -> (u64, u64) {
        let start = index as u64 * PIECE_LEN;
        (start, PIECE_LEN.min(self.size - start.min(self.size)))
    }

    /// Records piece `index` as already verified (found on disk when resuming).
    pub fn mark_done(&mut self, index: usize) {
        if self.pieces[index] != Piece::Done {
            self.pieces[index] = Piece::Done;
            self.done += 1;
        }
    }

    /// True when every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.done == self.pieces.len()
    }

    /// Bytes of verified pieces.
    pub fn done_bytes(&self) -> u64 {
        (0..self.pieces.len())
            .filter(|&i| self.pieces[i] == Piece::Done)
            .map(|i| self.range(i).1)
            .sum()
    }

    /// True if piece `index` is verified.
    pub fn is_done(&self, index: usize) -> bool {
        self.pieces[index] == Piece::Done
    }

    /// The next piece for `source` to fetch, if any: the lowest missing one, else (end game)
    /// the piece fetched by the fewest others for the longest, which `source` does not fetch.
    pub fn next(&mut self, source: SourceId, now: Instant) -> Option<usize> {
        while self.first_missing < self.pieces.len() {
            let i = self.first_missing;
            if self.pieces[i] == Piece::Missing {
                self.pieces[i] = Piece::Fetching(vec![source], now);
                return Some(i);
            }
            self.first_missing += 1;
        }
        let (index, _) = self
            .pieces
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Piece::Fetching(by, since) if by.len() < MAX_COPIES && !by.contains(&source) => {
                    Some((i, (by.len(), *since)))
                }
                _ => None,
            })
            .min_by_key(|(_, key)| *key)?;
        if let Piece::Fetching(by, _) = &mut self.pieces[index] {
            by.push(source);
        }
        Some(index)
    }

    /// Piece `index` arrived verified from `source`; true if it was not done before (the
    /// first copy wins; a later one is thrown away).
    pub fn complete(&mut self, index: usize, _source: SourceId) -> bool {
        if self.pieces[index] == Piece::Done {
            return false;
        }
        self.pieces[index] = Piece::Done;
        self.done += 1;
        true
    }

    /// `source` will not deliver piece `index` (failed, lied, stalled or left): the piece is
    /// missing again unless another source is fetching it too.
    pub fn release(&mut self, index: usize, source: SourceId) {
        if let Piece::Fetching(by, _) = &mut self.pieces[index] {
            by.retain(|&s| s != source);
            if by.is_empty() {
                self.pieces[index] = Piece::Missing;
                self.first_missing = self.first_missing.min(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planner(pieces: u64) -> Planner {
        Planner::new(pieces * PIECE_LEN - 10)
    }

    /// Sources get disjoint pieces in order; the last piece is short.
    #[test]
    fn sources_get_disjoint_pieces() {
        let mut p = planner(5);
        let now = Instant::now();
        assert_eq!(p.next(0, now), Some(0));
        assert_eq!(p.next(1, now), Some(1));
        assert_eq!(p.next(0, now), Some(2));
        assert_eq!(p.range(4), (4 * PIECE_LEN, PIECE_LEN - 10));
        assert_eq!(p.len(), 5);
    }

    /// A released piece goes to the next source that asks, before any later piece.
    #[test]
    fn a_released_piece_is_fetched_by_another_source() {
        let mut p = planner(4);
        let now = Instant::now();
        assert_eq!(p.next(0, now), Some(0));
        assert_eq!(p.next(1, now), Some(1));
        p.release(0, 0);
        assert_eq!(p.next(2, now), Some(0));
        assert_eq!(p.next(2, now), Some(2));
    }

    /// With nothing missing, an idle source duplicates the oldest piece another is fetching,
    /// never its own, at most two copies; the first copy completes it.
    #[test]
    fn the_end_game_duplicates_the_slowest_piece_once() {
        let mut p = planner(2);
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        assert_eq!(p.next(0, t0), Some(0));
        assert_eq!(p.next(1, t1), Some(1));
        assert_eq!(p.next(2, t1), Some(0));
        assert_eq!(p.next(2, t1), Some(1));
        assert_eq!(p.next(3, t1), None);
        assert_eq!(p.next(0, t1), None);
        assert!(p.complete(0, 2));
        assert!(!p.complete(0, 0));
        p.release(1, 1);
        assert!(!p.is_complete());
        assert!(p.complete(1, 2));
        assert!(p.is_complete());
        assert_eq!(p.done_bytes(), 2 * PIECE_LEN - 10);
    }

    /// Pieces found on disk are not fetched again.
    #[test]
    fn resumed_pieces_are_skipped() {
        let mut p = planner(3);
        p.mark_done(0);
        p.mark_done(2);
        assert_eq!(p.next(0, Instant::now()), Some(1));
        assert!(p.complete(1, 0));
        assert!(p.is_complete());
    }

    /// An empty file is one empty piece.
    #[test]
    fn an_empty_file_has_one_empty_piece() {
        let p = Planner::new(0);
        assert_eq!(p.len(), 1);
        assert_eq!(p.range(0), (0, 0));
    }
}
