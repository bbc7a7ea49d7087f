//! One download from several peers at once, every piece verified.
//!
//! `DOWNLOAD name` with no peer named, when several peers hold the same content, runs here:
//! one thread per source (at most `--sources` at once, one connection to each uploader, each
//! approved by its own user), each in a range session ([`crate::protocol::ranges`]). The first
//! source to be approved fetches the file's outboard, which is checked against the digest
//! before anything else happens; from then on every piece is checked group by group
//! ([`crate::verified`]) before it is written as good and marked in the piece map
//! ([`crate::piece_map`]). Which source fetches which piece is the [`planner`]'s business: a
//! source that says NAO, times out, fails, stalls, leaves or lies gives its pieces back, the
//! next candidate takes its place, and the download completes while any one holder remains.
//! A cut download keeps its verified pieces and resumes from them next time, from whichever
//! holders are there.
//!
//! The coordinator (this module's [`download`]) only starts sources, draws the progress bar and
//! finishes the file; the sources share a [`Swarm`]: the plan and the open files, behind one
//! mutex held for a few instructions at a time, never across I/O.

pub mod planner;
mod prepare;
mod source;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use parking_lot::{Condvar, Mutex};

use crate::exit::Failure;
use crate::os_error::describe;
use crate::peer::PeerContext;
use crate::peer::download_error::DownloadError;
use crate::peer::downloader::{self, Finished};
use crate::peer::progress::{Progress, human_bytes};
use crate::piece_map::PieceMap;
use crate::share::NameError;
use crate::verified::Outboard;
use planner::{Planner, SourceId};
use source::{Outcome, SourceReport};

/// Sources used at once when `--sources` is not given.
pub const DEFAULT_SOURCES: usize = 4;
/// How often the bar is redrawn and completion checked.
const TICK: Duration = Duration::from_millis(250);
/// How long finishing waits for the sources' threads to wind down (their connections are cut;
/// one still dialling is left to end on its own).
const WIND_DOWN: Duration = Duration::from_secs(2);

/// The content being downloaded: its size and BLAKE3 digest (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Bytes.
    pub size: u64,
    /// BLAKE3 of the whole file, lower-case hex.
    pub digest: String,
}

/// What to download and from whom.
#[derive(Debug, Clone)]
pub struct SwarmRequest {
    /// The file's name.
    pub name: String,
    /// The peers that hold it, best first.
    pub holders: Vec<SocketAddr>,
    /// The content, when the tracker said (else the first source's word is taken, and every
    /// other source must agree).
    pub expected: Option<Identity>,
    /// Sources used at once.
    pub max_sources: usize,
}

/// Why a swarm download did not complete.
#[derive(Debug)]
pub enum SwarmError {
    /// The name is not a plain name.
    Name(NameError),
    /// A file of that name is already in the folder.
    Exists(PathBuf),
    /// A download of that name is already running.
    AlreadyRunning,
    /// No holder could be used; with the only one that answers whole-file downloads, if any.
    NoSource(Option<SocketAddr>),
    /// Every holder's user said NAO (or did not answer).
    Rejected,
    /// No holder has the file any more.
    NotFound,
    /// Every source is gone before the end; the verified pieces are kept.
    Incomplete {
        /// Verified bytes kept.
        have: u64,
        /// The file's size.
        size: u64,
    },
    /// The folder has not the room.
    NoSpace {
        /// Bytes still to receive.
        need: u64,
        /// Bytes free.
        free: u64,
        /// Of those, bytes that running downloads still have to write.
        promised: u64,
    },
    /// A local file operation failed.
    Disk(io::Error),
    /// The peer is leaving; the verified pieces are kept.
    Stopped,
    /// The user cancelled it (`CANCELAR`); the verified pieces are kept.
    Cancelled,
}

impl fmt::Display for SwarmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwarmError::Name(e) => write!(f, "nome inválido: {e}"),
            SwarmError::Exists(path) => write!(
                f,
                "o arquivo {} já existe; não será sobrescrito",
                path.display()
            ),
            SwarmError::AlreadyRunning => write!(f, "este arquivo já está sendo baixado"),
            SwarmError::NoSource(_) => write!(f, "nenhum peer pôde enviar o arquivo"),
            SwarmError::Rejected => write!(f, "Download Rejeitado"),
            SwarmError::NotFound => write!(f, "Arquivo não encontrado."),
            SwarmError::Incomplete { have, size } => write!(
                f,
                "as fontes acabaram antes do fim ({have} de {size} bytes verificados); as partes verificadas foram guardadas para retomar depois"
            ),
            SwarmError::NoSpace {
                need,
                free,
                promised,
            } => {
                write!(
                    f,
                    "espaço insuficiente: faltam {need} bytes e há {free} livres na pasta"
                )?;
                if *promised > 0 {
                    write!(f, ", {promised} deles prometidos a downloads em andamento")?;
                }
                Ok(())
            }
            SwarmError::Disk(e) => write!(f, "erro no disco: {e}"),
            SwarmError::Stopped => write!(
                f,
                "transferência interrompida; as partes verificadas foram guardadas para retomar depois"
            ),
            SwarmError::Cancelled => write!(
                f,
                "download cancelado; as partes verificadas foram guardadas para retomar depois ({})",
                crate::partial::CLEAR_HINT
            ),
        }
    }
}

impl std::error::Error for SwarmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SwarmError::Name(e) => Some(e),
            SwarmError::Disk(e) => Some(e),
            _ => None,
        }
    }
}

/// The files of a download once its outboard is known.
pub(crate) struct Pieces {
    identity: Identity,
    outboard: Outboard,
    /// The partial file, held (and locked) by this download until it gets its final name.
    part: crate::partial::OpenPartial,
    map: PieceMap,
}

/// Where the swarm is.
enum Phase {
    /// Nobody is fetching the outboard: the next approved source does.
    NeedOutboard,
    /// A source is fetching it.
    Fetching,
    /// Pieces can be fetched.
    Ready(Arc<Pieces>),
}

struct State {
    identity: Option<Identity>,
    phase: Phase,
    planner: Option<Planner>,
    /// Finished, failed or stopped: sources hand out nothing more.
    over: bool,
    /// A failure that ends the whole download (disk full, no room).
    fatal: Option<SwarmError>,
    /// Sources' sockets, to cut them when the download ends.
    sockets: Vec<(SourceId, TcpStream)>,
    /// Sources approved and sending, for `FONTES`: address, verified bytes, since when.
    live: Vec<(SourceId, SocketAddr, u64, Instant)>,
}

/// What the sources of one download share.
pub struct Swarm {
    ctx: Arc<PeerContext>,
    name: String,
    state: Mutex<State>,
    changed: Condvar,
    /// Bytes verified and written (for the bar).
    verified: AtomicU64,
    /// The space promised to this download, held until it ends.
    promise: Mutex<Option<crate::partial::Promise>>,
}

/// What a source should do about the outboard.
pub(crate) enum OutboardRole {
    /// Fetch it over its own connection.
    Fetch,
    /// It is there.
    Ready(Arc<Pieces>),
    /// The download is over.
    Over,
}

/// What a source should do next.
pub(crate) enum Next {
    /// Fetch piece `.0`: `.2` bytes from byte `.1`.
    Piece(usize, u64, u64),
    /// Nothing now; ask again after a change.
    Wait,
    /// The download is over (complete, failed or stopped).
    Over,
}

impl Swarm {
    fn new(ctx: Arc<PeerContext>, name: String, expected: Option<Identity>) -> Swarm {
        Swarm {
            ctx,
            name,
            state: Mutex::new(State {
                identity: expected,
                phase: Phase::NeedOutboard,
                planner: None,
                over: false,
                fatal: None,
                sockets: Vec::new(),
                live: Vec::new(),
            }),
            changed: Condvar::new(),
            verified: AtomicU64::new(0),
            promise: Mutex::new(None),
        }
    }

    /// Keeps the space promised to this download until it ends.
    pub(crate) fn keep_promise(&self, promise: crate::partial::Promise) {
        *self.promise.lock() = Some(promise);
    }

    /// Takes `found` as the content if none is known yet; false if another one is.
    pub(crate) fn adopt(&self, found: &Identity) -> Result<Identity, Identity> {
        let mut state = self.state.lock();
        match &state.identity {
            Some(known) if known != found => Err(known.clone()),
            Some(known) => Ok(known.clone()),
            None => {
                state.identity = Some(found.clone());
                Ok(found.clone())
            }
        }
    }

    /// Keeps a clone of a source's socket so that the end of the download can cut it.
    pub(crate) fn register(&self, id: SourceId, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            let mut state = self.state.lock();
            if state.over {
                let _ = clone.shutdown(Shutdown::Both);
            }
            state.sockets.push((id, clone));
        }
    }

    fn forget(&self, id: SourceId) {
        let mut state = self.state.lock();
        state.sockets.retain(|(s, _)| *s != id);
        state.live.retain(|(s, ..)| *s != id);
    }

    /// `source` (at `addr`) was approved and starts sending.
    pub(crate) fn went_live(&self, source: SourceId, addr: SocketAddr) {
        self.state
            .lock()
            .live
            .push((source, addr, 0, Instant::now()));
    }

    /// Who fetches the outboard: the first source to ask while nobody does.
    pub(crate) fn outboard_role(&self) -> OutboardRole {
        let mut state = self.state.lock();
        loop {
            if state.over {
                return OutboardRole::Over;
            }
            match &state.phase {
                Phase::Ready(pieces) => return OutboardRole::Ready(Arc::clone(pieces)),
                Phase::NeedOutboard => {
                    state.phase = Phase::Fetching;
                    return OutboardRole::Fetch;
                }
                Phase::Fetching => {
                    self.changed.wait_for(&mut state, TICK);
                }
            }
        }
    }

    /// The outboard fetch failed: the next source tries.
    pub(crate) fn outboard_failed(&self) {
        let mut state = self.state.lock();
        if matches!(state.phase, Phase::Fetching) {
            state.phase = Phase::NeedOutboard;
        }
        self.changed.notify_all();
    }

    /// The outboard is checked and the files are open: pieces can be fetched.
    pub(crate) fn publish(&self, pieces: Pieces, planner: Planner) {
        self.verified.store(planner.done_bytes(), Ordering::Relaxed);
        let mut state = self.state.lock();
        state.phase = Phase::Ready(Arc::new(pieces));
        state.planner = Some(planner);
        self.changed.notify_all();
    }

    /// Ends the whole download with `error`.
    pub(crate) fn fail(&self, error: SwarmError) {
        let mut state = self.state.lock();
        if state.fatal.is_none() {
            state.fatal = Some(error);
        }
        state.over = true;
        self.changed.notify_all();
    }

    /// The next piece for `source`.
    pub(crate) fn next_piece(&self, source: SourceId) -> Next {
        let mut state = self.state.lock();
        if state.over || self.ctx.transfers.stopping() {
            return Next::Over;
        }
        let Some(planner) = state.planner.as_mut() else {
            return Next::Wait;
        };
        if planner.is_complete() {
            return Next::Over;
        }
        match planner.next(source, Instant::now()) {
            Some(i) => {
                let (offset, len) = planner.range(i);
                Next::Piece(i, offset, len)
            }
            None => Next::Wait,
        }
    }

    /// Waits until a piece is given back or the download ends (or a tick passes).
    pub(crate) fn wait_for_change(&self) {
        let mut state = self.state.lock();
        if !state.over {
            self.changed.wait_for(&mut state, TICK);
        }
    }

    /// True if piece `index` is already verified (an end-game copy that lost the race).
    pub(crate) fn is_done(&self, index: usize) -> bool {
        let state = self.state.lock();
        state.planner.as_ref().is_some_and(|p| p.is_done(index))
    }

    /// Piece `index` from `source` was verified and written.
    pub(crate) fn delivered(&self, index: usize, source: SourceId, len: u64) -> bool {
        let mut state = self.state.lock();
        let Some(planner) = state.planner.as_mut() else {
            return false;
        };
        let first = planner.complete(index, source);
        let complete = planner.is_complete();
        if first {
            self.verified.fetch_add(len, Ordering::Relaxed);
            if let Some(live) = state.live.iter_mut().find(|(s, ..)| *s == source) {
                live.2 += len;
            }
        }
        if complete {
            self.changed.notify_all();
        }
        first
    }

    /// `source` will not deliver these pieces.
    pub(crate) fn release(&self, pieces: impl IntoIterator<Item = usize>, source: SourceId) {
        let mut state = self.state.lock();
        if let Some(planner) = state.planner.as_mut() {
            for i in pieces {
                planner.release(i, source);
            }
        }
        self.changed.notify_all();
    }

    fn is_complete(&self) -> bool {
        let state = self.state.lock();
        state.planner.as_ref().is_some_and(Planner::is_complete)
    }

    /// Ends the download: nothing more is handed out and every source's connection is cut.
    fn end(&self) {
        let mut state = self.state.lock();
        state.over = true;
        for (_, stream) in &state.sockets {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.changed.notify_all();
    }

    fn pieces(&self) -> Option<Arc<Pieces>> {
        match &self.state.lock().phase {
            Phase::Ready(pieces) => Some(Arc::clone(pieces)),
            _ => None,
        }
    }
}

/// How one source did, for the lines at the end.
#[derive(Debug)]
pub struct SourceSummary {
    /// The source.
    pub addr: SocketAddr,
    /// Verified bytes it delivered.
    pub bytes: u64,
    /// How long it was sending.
    pub active: Duration,
    /// How it ended, in words (empty when it simply finished).
    pub ending: String,
}

impl fmt::Display for SourceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.active.as_secs_f64();
        let rate = if secs > 0.0 {
            self.bytes as f64 / secs
        } else {
            0.0
        };
        write!(
            f,
            "  fonte {}: {} em {} s ({}/s)",
            self.addr,
            human_bytes(self.bytes as f64),
            crate::numbers::decimal(secs, 1),
            human_bytes(rate)
        )?;
        if !self.ending.is_empty() {
            write!(f, "; {}", self.ending)?;
        }
        Ok(())
    }
}

/// The downloads from several peers running in this peer, by name (for `FONTES`).
pub type Running = Mutex<Vec<Arc<Swarm>>>;

/// What `FONTES` prints: for each running download, its progress and sources, then one line
/// per source with its verified bytes and rate.
pub fn status_lines(ctx: &PeerContext) -> Vec<String> {
    let mut lines = Vec::new();
    for swarm in ctx.swarms.lock().iter() {
        let state = swarm.state.lock();
        let size = state.identity.as_ref().map_or(0, |i| i.size);
        lines.push(format!(
            "Download de {}: {} de {} verificados, {}",
            swarm.name,
            human_bytes(swarm.verified.load(Ordering::Relaxed) as f64),
            human_bytes(size as f64),
            crate::numbers::count(state.live.len() as u64, "fonte ativa", "fontes ativas")
        ));
        for (_, addr, bytes, since) in &state.live {
            let secs = since.elapsed().as_secs_f64().max(0.001);
            lines.push(format!(
                "  fonte {addr}: {} ({}/s)",
                human_bytes(*bytes as f64),
                human_bytes(*bytes as f64 / secs)
            ));
        }
    }
    lines
}

/// Keeps a swarm listed for `FONTES` while it runs.
struct Listed<'a> {
    ctx: &'a PeerContext,
    swarm: Arc<Swarm>,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.ctx
            .swarms
            .lock()
            .retain(|s| !Arc::ptr_eq(s, &self.swarm));
    }
}

/// Starts a swarm download on its own thread, like [`downloader::start`]: it prints the
/// outcome and sends a [`Finished`] to `ctx.finished`. `Err` (already printed) when it could
/// not start; then no `Finished` follows.
pub fn start(ctx: &Arc<PeerContext>, request: SwarmRequest) -> Result<(), Failure> {
    let thread_ctx = Arc::clone(ctx);
    let spawned = thread::Builder::new().name("swarm".into()).spawn(move || {
        let name = request.name.clone();
        // Whatever happens here, the console must hear that this download ended.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (outcome, summaries) = download(&thread_ctx, request);
            report(&thread_ctx, &name, outcome, &summaries)
        }));
        let result = run.unwrap_or(Err(Failure::Other));
        let _ = thread_ctx.finished.send(Finished { name, result });
    });
    spawned.map(|_| ()).map_err(|e| {
        log::error!("cannot start a download thread: {e}");
        ctx.out.line(&format!(
            "Erro ao processar download: não foi possível iniciar uma thread: {}",
            describe(&e)
        ));
        Failure::Other
    })
}

impl SwarmError {
    /// The exit code's kind of failure.
    pub fn failure(&self) -> Failure {
        match self {
            SwarmError::Name(_) | SwarmError::AlreadyRunning => Failure::Command,
            SwarmError::Exists(_) | SwarmError::NoSpace { .. } | SwarmError::Disk(_) => {
                Failure::Disk
            }
            SwarmError::NoSource(_) => Failure::Unreachable,
            SwarmError::Rejected => Failure::Rejected,
            SwarmError::NotFound => Failure::NotFound,
            SwarmError::Incomplete { .. } => Failure::Cut,
            SwarmError::Stopped | SwarmError::Cancelled => Failure::Interrupted,
        }
    }
}

/// Prints the outcome (the original's success line, then one line per source), UPDATEs the
/// tracker after a success, and falls back to a whole-file download when only peers that
/// know nothing of ranges hold the file. Returns how it ended, for the exit code.
fn report(
    ctx: &PeerContext,
    name: &str,
    outcome: Result<PathBuf, SwarmError>,
    summaries: &[SourceSummary],
) -> Result<(), Failure> {
    match outcome {
        Ok(_) => {
            ctx.out.line(&format!(
                "Arquivo {name} baixado com sucesso na pasta {}",
                ctx.shared.path().display()
            ));
            for summary in summaries {
                ctx.out.line(&summary.to_string());
            }
            // The announcer rescans the folder and sends the new file's UPDATE at once.
            ctx.catalog.announce_now();
            Ok(())
        }
        Err(SwarmError::NoSource(Some(whole_file))) => {
            ctx.out.line(&format!(
                "Nenhum peer aceita download em partes; baixando {name} inteiro de {whole_file}"
            ));
            let outcome = downloader::download(ctx, name, whole_file);
            let result = outcome.as_ref().map(|_| ()).map_err(DownloadError::failure);
            downloader::report(ctx, name, outcome);
            result
        }
        Err(e @ (SwarmError::Rejected | SwarmError::NotFound)) => {
            // The original's own lines, as for a download from one peer.
            ctx.out.line(&e.to_string());
            for summary in summaries {
                ctx.out.line(&summary.to_string());
            }
            Err(e.failure())
        }
        Err(e) => {
            log::debug!("swarm download of {name} failed: {e:?}");
            ctx.out
                .line(&format!("Erro ao processar download de {name}: {e}"));
            for summary in summaries {
                ctx.out.line(&summary.to_string());
            }
            Err(e.failure())
        }
    }
}

/// A running source thread.
struct Started {
    id: SourceId,
}

/// Downloads `request.name` from its holders into the shared folder; returns the final path,
/// with how each source did.
pub fn download(
    ctx: &Arc<PeerContext>,
    request: SwarmRequest,
) -> (Result<PathBuf, SwarmError>, Vec<SourceSummary>) {
    let mut summaries = Vec::new();
    let outcome = run(ctx, request, &mut summaries);
    (outcome, summaries)
}

/// The swarm download: claim the name, take what a partial already verified, run the sources
/// until the file is whole or none is left, then tell why or give the file its name.
fn run(
    ctx: &Arc<PeerContext>,
    request: SwarmRequest,
    summaries: &mut Vec<SourceSummary>,
) -> Result<PathBuf, SwarmError> {
    let name = request.name.clone();
    let final_path = ctx.shared.final_path(&name).map_err(SwarmError::Name)?;
    if std::fs::symlink_metadata(&final_path).is_ok() {
        return Err(SwarmError::Exists(final_path));
    }
    // One download per stored name in this peer, and none while another process writes it.
    let guard = ctx
        .transfers
        .start_download(&crate::partial::PartialStore::key(&name), &name, None)
        .ok_or(SwarmError::AlreadyRunning)?;
    if ctx.partials.in_use(&name) {
        return Err(SwarmError::AlreadyRunning);
    }
    let swarm = Arc::new(Swarm::new(
        Arc::clone(ctx),
        name.clone(),
        request.expected.clone(),
    ));
    ctx.swarms.lock().push(Arc::clone(&swarm));
    let _listed = Listed {
        ctx,
        swarm: Arc::clone(&swarm),
    };
    // A partial of this content with its outboard: ready before any source answers.
    if let Some(identity) = request.expected.clone()
        && let Some((pieces, planner)) = prepare::resume_local(&swarm, &identity)?
    {
        swarm.publish(pieces, planner);
    }
    let stopped =
        || ctx.transfers.stopping() || guard.stop_flag().load(std::sync::atomic::Ordering::SeqCst);
    let tally = run_sources(&swarm, &request, &stopped, summaries);
    if let Some(fatal) = swarm.state.lock().fatal.take() {
        return Err(fatal);
    }
    let stop_error = || {
        if guard.ending() == crate::peer::running::Ending::Cancelled {
            SwarmError::Cancelled
        } else {
            SwarmError::Stopped
        }
    };
    let Some(pieces) = swarm.pieces() else {
        return Err(if stopped() {
            stop_error()
        } else {
            tally.why_nothing_arrived()
        });
    };
    if !swarm.is_complete() {
        if stopped() {
            return Err(stop_error());
        }
        return Err(SwarmError::Incomplete {
            have: swarm.verified.load(Ordering::Relaxed),
            size: pieces.identity.size,
        });
    }
    give_final_name(pieces, swarm, final_path)
}

/// How the sources that ended did, for the error when no piece arrived.
#[derive(Default)]
struct Tally {
    ended: usize,
    rejected: usize,
    not_found: usize,
    /// The first source that answers only whole-file downloads.
    legacy: Option<SocketAddr>,
}

impl Tally {
    fn count(&mut self, outcome: &Outcome, addr: SocketAddr) {
        match outcome {
            Outcome::Legacy if self.legacy.is_none() => self.legacy = Some(addr),
            Outcome::Rejected(_) => self.rejected += 1,
            Outcome::NotFound => self.not_found += 1,
            _ => {}
        }
        self.ended += 1;
    }

    /// Every holder said NAO, or none has the file, or none could be used.
    fn why_nothing_arrived(&self) -> SwarmError {
        match self.legacy {
            None if self.ended > 0 && self.rejected == self.ended => SwarmError::Rejected,
            None if self.ended > 0 && self.not_found == self.ended => SwarmError::NotFound,
            _ => SwarmError::NoSource(self.legacy),
        }
    }
}

/// Runs up to `max_sources` sources at once, starting the next holder as one ends, under a
/// progress bar, until the file is whole, a fatal error, a stop, or no holder is left; then
/// waits briefly for the sources still running.
fn run_sources(
    swarm: &Arc<Swarm>,
    request: &SwarmRequest,
    stopped: &dyn Fn() -> bool,
    summaries: &mut Vec<SourceSummary>,
) -> Tally {
    let ctx = &swarm.ctx;
    let name = &request.name;
    let mut candidates: VecDeque<SocketAddr> = request.holders.iter().copied().collect();
    let (reports_tx, reports_rx) = unbounded();
    let mut running: Vec<Started> = Vec::new();
    let mut next_id: SourceId = 0;
    let max_sources = request.max_sources.max(1);
    let mut tally = Tally::default();
    let mut bar = SwarmBar::default();
    ctx.out.line(&format!(
        "Download de {name} em partes: {} fonte(s), até {max_sources} ao mesmo tempo",
        candidates.len()
    ));
    loop {
        while running.len() < max_sources && !swarm.state.lock().over {
            let Some(addr) = candidates.pop_front() else {
                break;
            };
            let id = next_id;
            next_id += 1;
            start_source(swarm, id, addr, reports_tx.clone());
            running.push(Started { id });
        }
        if running.is_empty() {
            break;
        }
        match reports_rx.recv_timeout(TICK) {
            Ok(report) => {
                running.retain(|r| r.id != report.id);
                swarm.forget(report.id);
                tally.count(&report.outcome, report.addr);
                tell_source_end(swarm, &report);
                summaries.push(summary_of(&report));
            }
            Err(_) => {
                if stopped() {
                    swarm.end();
                }
            }
        }
        bar.show(swarm, name);
        if swarm.is_complete() || swarm.state.lock().fatal.is_some() {
            // Not waiting for every source: one may still be dialling an unreachable holder.
            swarm.end();
            break;
        }
    }
    drop(reports_tx);
    wind_down(&reports_rx, &mut running, summaries);
    drop(bar);
    tally
}

/// The swarm's progress bar, shown once the file's size is known, labelled with the number
/// of live sources.
#[derive(Default)]
struct SwarmBar {
    bar: Option<Progress>,
    shown_sources: Option<usize>,
}

impl SwarmBar {
    fn show(&mut self, swarm: &Swarm, name: &str) {
        let Some(pieces) = swarm.pieces() else {
            return;
        };
        let bar = self.bar.get_or_insert_with(|| {
            Progress::new(
                Arc::clone(&swarm.ctx.out),
                format!("Download de {name}"),
                pieces.identity.size,
                swarm.verified.load(Ordering::Relaxed),
            )
        });
        let active = swarm.state.lock().live.len();
        if self.shown_sources != Some(active) {
            self.shown_sources = Some(active);
            bar.set_label(format!("Download de {name} ({active} fontes)"));
        }
        bar.update(swarm.verified.load(Ordering::Relaxed));
    }
}

/// Every piece was checked as it arrived, into this locked file: it gets the final name.
fn give_final_name(
    pieces: Arc<Pieces>,
    swarm: Arc<Swarm>,
    final_path: PathBuf,
) -> Result<PathBuf, SwarmError> {
    pieces.part.as_file().sync_all().map_err(SwarmError::Disk)?;
    let finished = pieces.part.finish(&final_path);
    drop(pieces);
    drop(swarm);
    match finished {
        Ok(()) => Ok(final_path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SwarmError::Exists(final_path)),
        Err(e) => Err(SwarmError::Disk(e)),
    }
}

fn start_source(swarm: &Arc<Swarm>, id: SourceId, addr: SocketAddr, reports: Sender<SourceReport>) {
    let swarm = Arc::clone(swarm);
    let spawned = thread::Builder::new()
        .name(format!("source-{id}"))
        .spawn(move || {
            let report = source::run(&swarm, id, addr);
            let _ = reports.send(report);
        });
    if let Err(e) = spawned {
        log::error!("cannot start a source thread: {e}");
    }
}

/// Waits for the sources still running after the end (their connections were cut).
fn wind_down(
    reports: &Receiver<SourceReport>,
    running: &mut Vec<Started>,
    summaries: &mut Vec<SourceSummary>,
) {
    let deadline = Instant::now() + WIND_DOWN;
    while !running.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match reports.recv_timeout(left) {
            Ok(report) => {
                running.retain(|r| r.id != report.id);
                summaries.push(summary_of(&report));
            }
            Err(_) => break,
        }
    }
}

/// Tells the user why a source stopped before the end, when it matters to them.
fn tell_source_end(swarm: &Swarm, report: &SourceReport) {
    let out = &swarm.ctx.out;
    let addr = report.addr;
    match &report.outcome {
        Outcome::Lied(at) => out.line(&format!(
            "peer {addr} enviou dados inválidos ({}); suas partes serão buscadas em outra fonte",
            at.map_or("árvore de hashes".to_string(), |at| format!("byte {at}"))
        )),
        Outcome::Rejected(reason) => out.line(&format!(
            "peer {addr} recusou o pedido{}; seguindo com as outras fontes",
            reason
                .as_deref()
                .map(|r| format!(" ({})", crate::peer::output::printable(r)))
                .unwrap_or_default()
        )),
        Outcome::Failed(why) if !swarm.state.lock().over => out.line(&format!(
            "peer {addr} falhou ({}); suas partes serão buscadas em outra fonte",
            crate::peer::output::printable(why)
        )),
        Outcome::Closed if !swarm.state.lock().over => out.line(&format!(
            "peer {addr} falhou ({}); suas partes serão buscadas em outra fonte",
            source::CLOSED
        )),
        _ => {}
    }
}

fn summary_of(report: &SourceReport) -> SourceSummary {
    SourceSummary {
        addr: report.addr,
        bytes: report.bytes,
        active: report.active,
        ending: report.outcome.describe(),
    }
}

/// The holders of `name` a download should use, from a SEARCH reply, leaving out this peer
/// (`me`): the content held by the most peers when the tracker groups holders by content
/// (its size and digest are then known) plus the holders of that name and size whose digest is
/// not known yet, else every peer listing the name (the first source to answer then says what
/// the content is).
pub fn holders_from_search(
    name: &str,
    reply: &crate::protocol::messages::Reply,
    me: &[SocketAddr],
) -> (Vec<SocketAddr>, Option<Identity>) {
    let others = |peers: &[String]| -> Vec<SocketAddr> {
        peers
            .iter()
            .filter_map(|p| p.parse::<SocketAddr>().ok())
            .filter(|a| !me.contains(a))
            .collect()
    };
    let best = reply
        .results
        .iter()
        .flatten()
        .filter(|r| r.name == name)
        .filter_map(|r| {
            let identity = Identity {
                size: r.size?,
                digest: r.digest?.to_hex(),
            };
            Some((others(&r.peers), identity))
        })
        .filter(|(holders, _)| !holders.is_empty())
        .max_by_key(|(holders, _)| holders.len());
    match best {
        Some((mut holders, identity)) => {
            // Holders of the same name and size that have not announced their digest yet
            // (they are still hashing) may well hold this content: every piece they send is
            // checked against the digest, so a different file costs only a dropped source.
            let unhashed = reply
                .results
                .iter()
                .flatten()
                .filter(|r| r.name == name && r.size == Some(identity.size) && r.digest.is_none())
                .flat_map(|r| others(&r.peers));
            for peer in unhashed {
                if !holders.contains(&peer) {
                    holders.push(peer);
                }
            }
            (holders, Some(identity))
        }
        None => (others(reply.peers.as_deref().unwrap_or_default()), None),
    }
}

/// The holders of a numbered result (`DOWNLOAD N`) other than this peer (`me`), with its
/// content when the tracker announced it: a result is one (name, size, digest), so when its
/// digest is known every holder listed has that very content.
pub fn holders_of_result(
    entry: &crate::peer::search_results::Numbered,
    me: &[SocketAddr],
) -> (Vec<SocketAddr>, Option<Identity>) {
    let holders = entry
        .peers
        .iter()
        .filter_map(|p| p.parse::<SocketAddr>().ok())
        .filter(|a| !me.contains(a))
        .collect();
    let identity = entry.size.zip(entry.digest).map(|(size, digest)| Identity {
        size,
        digest: digest.to_hex(),
    });
    (holders, identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::{Reply, SearchResult, Status};

    /// A numbered result's holders, this peer left out, with its size and digest when known.
    #[test]
    fn a_numbered_result_gives_its_holders_and_content() {
        let digest: crate::protocol::Digest = blake3::hash(b"one").to_hex().parse().unwrap();
        let mut entry = crate::peer::search_results::Numbered {
            name: "v.bin".into(),
            size: Some(3),
            digest: Some(digest),
            holders: 3,
            peers: vec![
                "10.0.0.1:1".into(),
                "10.0.0.2:2".into(),
                "10.0.0.3:3".into(),
            ],
        };
        let (holders, identity) = holders_of_result(&entry, &[addr("10.0.0.2:2")]);
        assert_eq!(holders, [addr("10.0.0.1:1"), addr("10.0.0.3:3")]);
        assert_eq!(
            identity,
            Some(Identity {
                size: 3,
                digest: digest.to_hex()
            })
        );
        entry.digest = None;
        assert_eq!(holders_of_result(&entry, &[]).1, None);
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// Holders of the same name and size still hashing (no digest announced) join the group.
    #[test]
    fn holders_still_hashing_the_same_size_join_the_group() {
        let digest: crate::protocol::Digest = blake3::hash(b"one").to_hex().parse().unwrap();
        let result = |size, digest, peers: &[&str]| SearchResult {
            name: "v.bin".into(),
            size: Some(size),
            digest,
            holders: peers.len(),
            peers: peers.iter().map(|p| p.to_string()).collect(),
        };
        let reply = Reply {
            status: Status::Ok,
            results: Some(vec![
                result(3, Some(digest), &["10.0.0.1:1", "10.0.0.2:2"]),
                result(3, None, &["10.0.0.3:3"]),
                result(4, None, &["10.0.0.4:4"]),
            ]),
            ..Reply::default()
        };
        let (holders, identity) = holders_from_search("v.bin", &reply, &[]);
        assert_eq!(
            holders,
            [addr("10.0.0.1:1"), addr("10.0.0.2:2"), addr("10.0.0.3:3")]
        );
        assert_eq!(identity.map(|i| i.size), Some(3));
    }

    /// Grouped results: the content most peers hold, without this peer; plain peers otherwise.
    #[test]
    fn holders_are_the_largest_group_of_one_content() {
        let d1 = blake3::hash(b"one").to_hex().to_string();
        let d2 = blake3::hash(b"two").to_hex().to_string();
        let reply = Reply {
            status: Status::Ok,
            peers: Some(vec![
                "10.0.0.1:1".into(),
                "10.0.0.2:2".into(),
                "10.0.0.3:3".into(),
            ]),
            results: Some(vec![
                SearchResult {
                    name: "v.bin".into(),
                    size: Some(3),
                    digest: Some(d1.parse().unwrap()),
                    holders: 1,
                    peers: vec!["10.0.0.1:1".into()],
                },
                SearchResult {
                    name: "v.bin".into(),
                    size: Some(3),
                    digest: Some(d2.parse().unwrap()),
                    holders: 3,
                    peers: vec![
                        "10.0.0.2:2".into(),
                        "10.0.0.3:3".into(),
                        "10.0.0.9:9".into(),
                    ],
                },
                SearchResult {
                    name: "other.bin".into(),
                    size: Some(3),
                    digest: Some(d1.parse().unwrap()),
                    holders: 4,
                    peers: vec![
                        "10.0.0.5:5".into(),
                        "10.0.0.6:6".into(),
                        "10.0.0.7:7".into(),
                        "10.0.0.8:8".into(),
                    ],
                },
            ]),
            ..Reply::default()
        };
        let (holders, identity) = holders_from_search("v.bin", &reply, &[addr("10.0.0.9:9")]);
        assert_eq!(holders, [addr("10.0.0.2:2"), addr("10.0.0.3:3")]);
        assert_eq!(
            identity,
            Some(Identity {
                size: 3,
                digest: d2
            })
        );

        let plain = Reply {
            results: None,
            ..reply
        };
        let (holders, identity) = holders_from_search("v.bin", &plain, &[addr("10.0.0.1:1")]);
        assert_eq!(holders, [addr("10.0.0.2:2"), addr("10.0.0.3:3")]);
        assert_eq!(identity, None);
    }
}
