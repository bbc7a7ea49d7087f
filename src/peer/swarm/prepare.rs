//! Getting a swarm download's files ready: the partial file (new, or resumed with its piece
//! map), the outboard (received and checked, or found beside a partial), and which pieces on
//! disk are already good — each marked piece is checked again before it counts.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};

use crate::partial::{NoSpace, OpenError, OpenPartial, Partial, PartialRecord, free_space};
use crate::peer::swarm::planner::{PIECE_LEN, Planner};
use crate::peer::swarm::{Identity, Pieces, Swarm, SwarmError};
use crate::piece_map::{self, PieceMap};
use crate::verified::{self, Outboard, OutboardError};

/// The largest file downloaded in pieces (1 TiB: a million pieces in the plan).
const MAX_SIZE: u64 = 1 << 40;

/// Why a received outboard could not be used.
pub(crate) enum Fetched {
    /// It does not lead to the digest: the source lied.
    Lied,
    /// It did not arrive whole.
    Read(io::Error),
    /// The download cannot go on (disk).
    Fatal(SwarmError),
}

/// A partial download of this content with a good outboard beside it, made ready without
/// asking any source; `None` when there is none.
pub(crate) fn resume_local(
    swarm: &Swarm,
    identity: &Identity,
) -> Result<Option<(Pieces, Planner)>, SwarmError> {
    let Some(partial) = same_partial(swarm, identity) else {
        return Ok(None);
    };
    check_room(swarm, identity, Some(&partial))?;
    let Ok(root) = blake3::Hash::from_hex(&identity.digest) else {
        return Ok(None);
    };
    let part_path = swarm.ctx.partials.part_path(&swarm.name);
    let Ok(found) = File::open(piece_map::outboard_path_for(&part_path)) else {
        return Ok(None);
    };
    if verified::check_outboard(&found, identity.size, &root).is_err() {
        return Ok(None);
    }
    let part = open_part(swarm, identity, Some(&partial))?;
    let outboard = Outboard::new(found, identity.size, root);
    ready(swarm, identity, outboard, part, Some(&partial)).map(Some)
}

/// Receives the outboard from a source (`input`, exactly its length), checking it against the
/// digest as it arrives, and makes the download ready.
pub(crate) fn from_source(
    swarm: &Swarm,
    identity: &Identity,
    input: &mut impl Read,
) -> Result<(Pieces, Planner), Fetched> {
    let root = blake3::Hash::from_hex(&identity.digest).map_err(|_| Fetched::Lied)?;
    let partial = same_partial(swarm, identity);
    check_room(swarm, identity, partial.as_ref()).map_err(Fetched::Fatal)?;
    // The partial first: a fresh one clears what lay beside an older one.
    let part = open_part(swarm, identity, partial.as_ref()).map_err(Fetched::Fatal)?;
    let part_path = swarm.ctx.partials.part_path(&swarm.name);
    let path = piece_map::outboard_path_for(&part_path);
    let tmp = path.with_extension("obao.tmp");
    let disk = |e: io::Error| Fetched::Fatal(SwarmError::Disk(e));
    let mut out = BufWriter::new(File::create(&tmp).map_err(disk)?);
    match verified::receive_outboard(input, identity.size, &root, &mut out) {
        Ok(()) => {}
        Err(OutboardError::Mismatch) => return Err(Fetched::Lied),
        Err(OutboardError::Read(e)) => return Err(Fetched::Read(e)),
        Err(OutboardError::Write(e)) => return Err(disk(e)),
    }
    out.flush().map_err(disk)?;
    drop(out);
    fs::rename(&tmp, &path).map_err(disk)?;
    let outboard = Outboard::new(File::open(&path).map_err(disk)?, identity.size, root);
    ready(swarm, identity, outboard, part, partial.as_ref()).map_err(Fetched::Fatal)
}

/// Refuses, before anything is written or sized after it, a file (with its outboard) larger
/// than the folder's free space: a size announced by a source is not trusted with the disk or
/// with memory (the plan holds a byte per piece).
fn check_room(
    swarm: &Swarm,
    identity: &Identity,
    partial: Option<&Partial>,
) -> Result<(), SwarmError> {
    if identity.size > MAX_SIZE {
        return Err(SwarmError::Disk(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} bytes anunciados: maior que o limite de {MAX_SIZE} bytes de um download em partes",
                identity.size
            ),
        )));
    }
    // Promised for the whole download (file and outboard), counted against what running
    // downloads were promised: two downloads cannot each pass this alone.
    let whole = identity
        .size
        .saturating_add(verified::outboard_len(identity.size));
    let promise = swarm
        .ctx
        .partials
        .promise(&swarm.name, whole, partial.map_or(0, |p| p.have))
        .map_err(SwarmError::NoSpace)?;
    swarm.keep_promise(promise);
    Ok(())
}

/// The partial of `name` if it holds this very content.
fn same_partial(swarm: &Swarm, identity: &Identity) -> Option<Partial> {
    swarm
        .ctx
        .partials
        .find(&swarm.name)
        .filter(|p| p.record.digest == identity.digest && p.record.size == identity.size)
}

/// Opens the partial file for reading and writing at its full size (sparse), for this
/// download alone (locked, see [`crate::partial`]): the one found, or a new one with its
/// record.
fn open_part(
    swarm: &Swarm,
    identity: &Identity,
    partial: Option<&Partial>,
) -> Result<OpenPartial, SwarmError> {
    let partials = &swarm.ctx.partials;
    let record = PartialRecord {
        size: identity.size,
        digest: identity.digest.clone(),
        name: Some(swarm.name.clone()),
    };
    let part = partials
        .open_pieces(&swarm.name, &record, partial.is_none())
        .map_err(|e| match e {
            OpenError::InUse => SwarmError::AlreadyRunning,
            OpenError::Io(e) => SwarmError::Disk(e),
        })?;
    if partial.is_none() {
        // At once, so that the full-size (sparse) file is never taken for a whole one.
        PieceMap::create(
            &piece_map::path_for(&partials.part_path(&swarm.name)),
            PIECE_LEN,
        )
        .map_err(SwarmError::Disk)?;
    }
    part.as_file()
        .set_len(identity.size)
        .map_err(SwarmError::Disk)?;
    Ok(part)
}

/// Checks the pieces a partial claims, counts the room needed, and opens the piece map.
fn ready(
    swarm: &Swarm,
    identity: &Identity,
    outboard: Outboard,
    part: OpenPartial,
    partial: Option<&Partial>,
) -> Result<(Pieces, Planner), SwarmError> {
    let size = identity.size;
    let mut planner = Planner::new(size);
    let map_path = piece_map::path_for(&swarm.ctx.partials.part_path(&swarm.name));
    let (map, claimed) = match partial.map(|_| PieceMap::open(&map_path, PIECE_LEN, planner.len()))
    {
        Some(Ok(found)) => found,
        _ => {
            // A whole-file partial: the pieces wholly inside its prefix.
            let have = partial.map_or(0, |p| p.have);
            let claimed = (0..planner.len())
                .map(|i| {
                    let (start, len) = planner.range(i);
                    start + len <= have && len > 0
                })
                .collect();
            let map = PieceMap::create(&map_path, PIECE_LEN).map_err(SwarmError::Disk)?;
            (map, claimed)
        }
    };
    if size == 0 {
        if identity.digest != blake3::hash(b"").to_hex().as_str() {
            return Err(SwarmError::Disk(io::Error::new(
                io::ErrorKind::InvalidData,
                "an empty file announced with the digest of a non-empty one",
            )));
        }
        planner.mark_done(0);
    }
    for (i, claimed) in claimed.iter().enumerate() {
        if !claimed {
            continue;
        }
        let (start, len) = planner.range(i);
        match verified::verify_stored(&outboard, part.as_file(), start, len as usize) {
            Ok(()) => {
                planner.mark_done(i);
                map.mark(i).map_err(SwarmError::Disk)?;
            }
            Err(e) => log::debug!("{}: piece {i} on disk is not good ({e})", swarm.name),
        }
    }
    let kept = planner.done_bytes();
    if kept > 0 {
        swarm.ctx.out.line(&format!(
            "Retomando o download de {} com {kept} de {size} bytes já verificados no disco",
            swarm.name
        ));
    }
    let need = size - kept;
    if let Some(free) = free_space(swarm.ctx.shared.path())
        && need > free
    {
        return Err(SwarmError::NoSpace(NoSpace {
            need,
            free,
            promised: 0,
            kept: 0,
        }));
    }
    let pieces = Pieces {
        identity: identity.clone(),
        outboard,
        part,
        map,
    };
    Ok((pieces, planner))
}
