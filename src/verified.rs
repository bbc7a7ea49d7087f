//! Verified pieces: a file's BLAKE3 tree, kept beside the file, proves any piece of it.
//!
//! BLAKE3 hashes a file as a binary tree of 1 KiB chunks; its root is the file's digest. The
//! *outboard* ([`bao_tree`]) stores the tree's inner hashes down to chunk groups of
//! [`CHUNK_GROUP`] bytes: 64 bytes per group, 0.1 % of the file. With it, the bytes of any
//! chunk group can be checked against the root digest on their own, so a download from several
//! peers trusts nothing it has not checked, and a wrong byte is pinned to its group.
//!
//! - The uploader computes the outboard once per file ([`create_outboard`]) and sends it as is.
//! - The downloader checks every hash pair of a received outboard against the root as it
//!   streams in ([`receive_outboard`]): a lying outboard is refused before it is used.
//! - Each piece received is checked group by group against that outboard ([`verify_piece`])
//!   before it is written as good.
//!
//! Synchronous I/O only (`bao_tree::io::sync`); this module knows no sockets' meaning.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicBool;

use crate::digests::read_blocks;
use bao_tree::io::EncodeError;
use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::io::sync::{ReadAt, encode_ranges_validated, outboard_post_order};
use bao_tree::iter::BaoChunk;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

/// Chunk groups are 2^6 chunks of 1 KiB.
const CHUNK_GROUP_LOG: u8 = 6;
/// Bytes in a chunk group: the unit a lie is detected in, and the alignment of every range.
pub const CHUNK_GROUP: u64 = 1024 << CHUNK_GROUP_LOG;

/// The tree of a file of `size` bytes, in groups of [`CHUNK_GROUP`].
pub fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BlockSize::from_chunk_log(CHUNK_GROUP_LOG))
}

/// Bytes in the outboard of a file of `size` bytes (64 per inner node; none for one group).
pub fn outboard_len(size: u64) -> u64 {
    tree(size).outboard_size()
}

/// Computes the outboard of the `size` bytes read from `data`, writing it to `out`; returns
/// the root, which is the file's BLAKE3 digest.
pub fn create_outboard(data: impl Read, size: u64, out: impl Write) -> io::Result<blake3::Hash> {
    outboard_post_order(data, tree(size), out)
}

/// Bytes read per call when hashing a file for its digest and outboard: whole chunk groups.
const READ_BUFFER: usize = 16 * CHUNK_GROUP as usize;

/// Computes the digest and the outboard of the first `size` bytes of `file` in one read: the
/// outboard's root *is* the file's BLAKE3 digest, so hashing a file for its digest and for its
/// outboard is one pass, not two. Reads are positional, 1 MiB at a time (the file's own
/// position is neither used nor moved, so an upload may send from the same file meanwhile),
/// and each chunk group is hashed in place in that buffer: this costs the CPU of the plain
/// hash (`scripts/bench.sh hash`). Stops with `Interrupted` when `stop` is set; a file shorter
/// than `size` fails with `UnexpectedEof`.
pub fn digest_and_outboard(
    file: &File,
    size: u64,
    out: impl Write,
    stop: &AtomicBool,
) -> io::Result<blake3::Hash> {
    let mut tree = TreeBuilder::new(size, out);
    let read = read_blocks(file, (0, size), READ_BUFFER, stop, |block| {
        block
            .chunks(CHUNK_GROUP as usize)
            .try_for_each(|group| tree.add_group(group))
    })?;
    if read < size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file ended after {read} of {size} bytes"),
        ));
    }
    tree.finish()
}

/// Builds a post-order outboard from the chunk groups of a file, in order, and its root: each
/// group's hash goes on a stack, and a completed subtree is merged (its hash pair written) when
/// the next group arrives, as BLAKE3's own hasher merges its chaining values; what is left at
/// the end is merged right to left, the last merge being the root. Parents are thereby written
/// in post order, exactly as [`create_outboard`] writes them.
struct TreeBuilder<W: Write> {
    out: W,
    size: u64,
    groups: u64,
    stack: Vec<blake3::Hash>,
}

impl<W: Write> TreeBuilder<W> {
    fn new(size: u64, out: W) -> TreeBuilder<W> {
        TreeBuilder {
            out,
            size,
            groups: 0,
            stack: Vec::new(),
        }
    }

    /// Adds the next group: [`CHUNK_GROUP`] bytes, fewer only for the file's last one.
    fn add_group(&mut self, group: &[u8]) -> io::Result<()> {
        use blake3::hazmat::HasherExt;
        // Subtrees complete before this group are merged now, no later: the root must be
        // known to be the root when it is merged.
        while self.stack.len() > self.groups.count_ones() as usize {
            self.merge(false)?;
        }
        let hash = if self.size <= CHUNK_GROUP {
            blake3::hash(group)
        } else {
            let mut hasher = blake3::Hasher::new();
            hasher.set_input_offset(self.groups * CHUNK_GROUP);
            hasher.update(group);
            blake3::Hash::from(hasher.finalize_non_root())
        };
        self.stack.push(hash);
        self.groups += 1;
        Ok(())
    }

    fn merge(&mut self, is_root: bool) -> io::Result<()> {
        let (Some(right), Some(left)) = (self.stack.pop(), self.stack.pop()) else {
            return Err(io::Error::other("outboard: nothing to merge"));
        };
        self.out.write_all(left.as_bytes())?;
        self.out.write_all(right.as_bytes())?;
        self.stack.push(parent_hash(&left, &right, is_root));
        Ok(())
    }

    /// Merges what is left; returns the root.
    fn finish(mut self) -> io::Result<blake3::Hash> {
        if self.groups == 0 {
            return Ok(blake3::hash(b""));
        }
        while self.stack.len() > 1 {
            let is_root = self.stack.len() == 2;
            self.merge(is_root)?;
        }
        self.out.flush()?;
        self.stack
            .pop()
            .ok_or_else(|| io::Error::other("outboard: no root"))
    }
}

/// Why a received outboard was refused.
#[derive(Debug)]
pub enum OutboardError {
    /// It ended early or could not be read.
    Read(io::Error),
    /// It could not be stored.
    Write(io::Error),
    /// A hash pair does not lead to the root digest: the sender lied.
    Mismatch,
}

impl fmt::Display for OutboardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboardError::Read(e) => write!(f, "a árvore de hashes não chegou inteira: {e}"),
            OutboardError::Write(e) => {
                write!(f, "não foi possível guardar a árvore de hashes: {e}")
            }
            OutboardError::Mismatch => write!(f, "a árvore de hashes não confere com o digest"),
        }
    }
}

impl std::error::Error for OutboardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OutboardError::Read(e) | OutboardError::Write(e) => Some(e),
            OutboardError::Mismatch => None,
        }
    }
}

/// Reads the outboard of a file of `size` bytes from `input` (exactly [`outboard_len`] bytes),
/// checking every hash pair against `root` as it arrives, and copies it to `out`. Memory is a
/// few hashes whatever the size. On `Mismatch` part of it may have been copied: discard `out`.
pub fn receive_outboard(
    input: &mut impl Read,
    size: u64,
    root: &blake3::Hash,
    out: &mut impl Write,
) -> Result<(), OutboardError> {
    // Post order: each parent's pair follows its children, exactly as the pairs are stored.
    // A child hash known from below must equal the one its parent's pair claims; a leaf's hash
    // is not known here (no data), so it is taken from the pair and checked with the data.
    let mut known: Vec<Option<blake3::Hash>> = Vec::new();
    for item in tree(size).post_order_chunks_iter() {
        match item {
            BaoChunk::Leaf { .. } => known.push(None),
            BaoChunk::Parent { is_root, .. } => {
                let mut pair = [0u8; 64];
                input.read_exact(&mut pair).map_err(OutboardError::Read)?;
                let (left, right) = split_pair(&pair);
                let claimed_right = known.pop().flatten();
                let claimed_left = known.pop().flatten();
                if claimed_left.is_some_and(|h| h != left)
                    || claimed_right.is_some_and(|h| h != right)
                {
                    return Err(OutboardError::Mismatch);
                }
                out.write_all(&pair).map_err(OutboardError::Write)?;
                known.push(Some(parent_hash(&left, &right, is_root)));
            }
        }
    }
    match known.pop().flatten() {
        Some(top) if top != *root => Err(OutboardError::Mismatch),
        // One group: no pairs; the data is checked against the root itself.
        _ => Ok(()),
    }
}

/// Checks a whole stored outboard of a file of `size` bytes against `root`.
pub fn check_outboard(
    outboard: &File,
    size: u64,
    root: &blake3::Hash,
) -> Result<(), OutboardError> {
    if outboard.metadata().map_err(OutboardError::Read)?.len() != outboard_len(size) {
        return Err(OutboardError::Mismatch);
    }
    let mut reader = io::BufReader::new(outboard);
    receive_outboard(&mut reader, size, root, &mut io::sink())
}

fn split_pair(pair: &[u8; 64]) -> (blake3::Hash, blake3::Hash) {
    let mut left = [0u8; 32];
    let mut right = [0u8; 32];
    left.copy_from_slice(&pair[..32]);
    right.copy_from_slice(&pair[32..]);
    (blake3::Hash::from(left), blake3::Hash::from(right))
}

/// The hash of a tree node from its children's (BLAKE3's parent node).
fn parent_hash(left: &blake3::Hash, right: &blake3::Hash, is_root: bool) -> blake3::Hash {
    use blake3::hazmat::{Mode, merge_subtrees_non_root, merge_subtrees_root};
    if is_root {
        merge_subtrees_root(left.as_bytes(), right.as_bytes(), Mode::Hash)
    } else {
        blake3::Hash::from(merge_subtrees_non_root(
            left.as_bytes(),
            right.as_bytes(),
            Mode::Hash,
        ))
    }
}

/// A file's outboard, checked against its root, read from disk as pieces are verified.
pub struct Outboard {
    inner: PostOrderOutboard<File>,
}

impl Outboard {
    /// The outboard stored in `file` for a file of `size` bytes with digest `root`. The caller
    /// has checked it ([`receive_outboard`] or [`check_outboard`]).
    pub fn new(file: File, size: u64, root: blake3::Hash) -> Outboard {
        Outboard {
            inner: PostOrderOutboard {
                root,
                tree: tree(size),
                data: file,
            },
        }
    }

    /// The size of the file it describes.
    pub fn size(&self) -> u64 {
        bao_tree::io::sync::Outboard::tree(&self.inner).size()
    }
}

/// Why a piece failed its check.
#[derive(Debug)]
pub enum PieceError {
    /// The bytes of the chunk group starting at this byte of the file are wrong.
    BadGroup(u64),
    /// The outboard on disk no longer proves anything (changed or damaged since checked).
    BadOutboard,
    /// The piece is not whole chunk groups, or reading the outboard failed.
    Io(io::Error),
}

impl fmt::Display for PieceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PieceError::BadGroup(at) => write!(f, "dados inválidos no byte {at}"),
            PieceError::BadOutboard => write!(f, "a árvore de hashes guardada não confere"),
            PieceError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PieceError {}

/// Checks `data`, the bytes of the file from `offset`, against `outboard`, one chunk group at
/// a time. `offset` must start a chunk group, and the piece must end at a group's end or at
/// the end of the file.
pub fn verify_piece(outboard: &Outboard, offset: u64, data: &[u8]) -> Result<(), PieceError> {
    let end = offset + data.len() as u64;
    if !offset.is_multiple_of(CHUNK_GROUP)
        || (!end.is_multiple_of(CHUNK_GROUP) && end != outboard.size())
    {
        return Err(PieceError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("piece {offset}..{end} is not whole chunk groups"),
        )));
    }
    let ranges = ChunkRanges::from(ChunkNum::full_chunks(offset)..ChunkNum::chunks(end));
    // The validating encoder checks each group it reads against the path of hashes from the
    // root; its output (the proof) is not needed here.
    let piece = PieceAt { offset, data };
    match encode_ranges_validated(piece, &outboard.inner, &ranges, io::sink()) {
        Ok(()) => Ok(()),
        Err(EncodeError::LeafHashMismatch(chunk)) => Err(PieceError::BadGroup(chunk.to_bytes())),
        Err(EncodeError::ParentHashMismatch(_)) => Err(PieceError::BadOutboard),
        Err(e) => Err(PieceError::Io(io::Error::from(e))),
    }
}

/// Verifies the bytes stored in `file` from `offset` for `len` bytes.
pub fn verify_stored(
    outboard: &Outboard,
    file: &File,
    offset: u64,
    len: usize,
) -> Result<(), PieceError> {
    let mut buf = vec![0u8; len];
    FileExt::read_exact_at(file, &mut buf, offset).map_err(PieceError::Io)?;
    verify_piece(outboard, offset, &buf)
}

/// A piece in memory seen at its place in the file.
struct PieceAt<'a> {
    offset: u64,
    data: &'a [u8],
}

impl ReadAt for PieceAt<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = pos
            .checked_sub(self.offset)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s <= self.data.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let n = buf.len().min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    fn outboard_of(data: &[u8]) -> (Vec<u8>, blake3::Hash) {
        let mut ob = Vec::new();
        let root = create_outboard(data, data.len() as u64, &mut ob).unwrap();
        (ob, root)
    }

    fn stored(ob: &[u8], size: u64, root: blake3::Hash) -> (tempfile::NamedTempFile, Outboard) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(ob).unwrap();
        let file = f.reopen().unwrap();
        (f, Outboard::new(file, size, root))
    }

    /// The root of the outboard is the file's plain BLAKE3 digest, for any size.
    #[test]
    fn the_root_is_the_files_digest() {
        for len in [0, 1, 1024, 65536, 65537, 3 * 65536 + 5, 1 << 20] {
            let data = pattern(len);
            let (ob, root) = outboard_of(&data);
            assert_eq!(root, blake3::hash(&data), "len {len}");
            assert_eq!(ob.len() as u64, outboard_len(len as u64));
        }
    }

    /// A received outboard is accepted whole and refused when any byte of it is changed.
    #[test]
    fn a_changed_outboard_byte_is_refused() {
        let data = pattern(10 * 65536 + 100);
        let (ob, root) = outboard_of(&data);
        let mut copy = Vec::new();
        receive_outboard(&mut &ob[..], data.len() as u64, &root, &mut copy).unwrap();
        assert_eq!(copy, ob);
        for at in [0, 31, 32, 64, ob.len() / 2, ob.len() - 1] {
            let mut bad = ob.clone();
            bad[at] ^= 1;
            let got = receive_outboard(&mut &bad[..], data.len() as u64, &root, &mut io::sink());
            assert!(
                matches!(got, Err(OutboardError::Mismatch)),
                "byte {at}: {got:?}"
            );
        }
        let short = receive_outboard(
            &mut &ob[..ob.len() - 1],
            data.len() as u64,
            &root,
            &mut io::sink(),
        );
        assert!(matches!(short, Err(OutboardError::Read(_))));
    }

    /// One read gives the digest and the very outboard bao-tree computes, for any size.
    #[test]
    fn one_read_gives_the_digest_and_bao_trees_outboard() {
        let never = AtomicBool::new(false);
        for len in [
            0,
            1,
            1024,
            65535,
            65536,
            65537,
            2 * 65536,
            3 * 65536 + 5,
            5 * 65536,
            6 * 65536,
            16 * 65536,
            16 * 65536 + 1,
            (1 << 20) + 17,
            (3 << 20) + 12345,
        ] {
            let data = pattern(len);
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&data).unwrap();
            let mut ob = Vec::new();
            let root = digest_and_outboard(f.as_file(), len as u64, &mut ob, &never).unwrap();
            let (expected, digest) = outboard_of(&data);
            assert_eq!(root, digest, "len {len}");
            assert_eq!(ob, expected, "len {len}");
        }
    }

    /// A file shorter than announced, and a stop, end the pass with an error.
    #[test]
    fn a_short_file_or_a_stop_ends_the_pass() {
        let data = pattern(200_000);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        let never = AtomicBool::new(false);
        let short = digest_and_outboard(f.as_file(), 300_000, io::sink(), &never).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        let stop = AtomicBool::new(true);
        let stopped = digest_and_outboard(f.as_file(), 200_000, io::sink(), &stop).unwrap_err();
        assert_eq!(stopped.kind(), io::ErrorKind::Interrupted);
    }

    /// Every piece of the right bytes passes; one flipped byte is pinned to its chunk group.
    #[test]
    fn a_flipped_byte_is_found_in_its_chunk_group() {
        let size = 20 * 65536 + 4321;
        let data = pattern(size);
        let (ob, root) = outboard_of(&data);
        let (_keep, outboard) = stored(&ob, size as u64, root);
        let piece = 4 * CHUNK_GROUP as usize;
        for start in (0..size).step_by(piece) {
            let end = (start + piece).min(size);
            verify_piece(&outboard, start as u64, &data[start..end]).unwrap();
        }
        let mut bad = data[8 * 65536..12 * 65536].to_vec();
        bad[2 * 65536 + 17] ^= 0x40;
        match verify_piece(&outboard, 8 * 65536, &bad) {
            Err(PieceError::BadGroup(at)) => assert_eq!(at, 10 * 65536),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verify_piece(&outboard, 100, &data[100..200]),
            Err(PieceError::Io(_))
        ));
    }

    /// A file of one chunk group has no outboard: its one piece is checked against the root.
    #[test]
    fn a_small_file_is_checked_against_the_root() {
        let data = pattern(5000);
        let (ob, root) = outboard_of(&data);
        assert!(ob.is_empty());
        let (_keep, outboard) = stored(&ob, 5000, root);
        verify_piece(&outboard, 0, &data).unwrap();
        let mut bad = data.clone();
        bad[4999] ^= 1;
        assert!(matches!(
            verify_piece(&outboard, 0, &bad),
            Err(PieceError::BadGroup(0))
        ));
    }
}
