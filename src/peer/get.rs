//! `napster get NAME [--from PEER]`: one download, no console, an exit code that says how it
//! went. For scripts: `napster get aula.mp4 --dir bob && ...`.
//!
//! It asks the tracker who shares the name (without JOINing: it shares nothing) through the
//! same tracker link as the console, so it speaks the original's dialect to the original's
//! tracker too, and downloads as `DOWNLOAD name` does: from every holder of the same content at
//! once when several hold it ([`crate::peer::swarm`]), else from the one there is. It prints
//! the same lines as the console. Ctrl-C or SIGTERM stops the download and keeps what arrived
//! for the next try.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select, unbounded};

use crate::digests::DigestCache;
use crate::exit::Failure;
use crate::peer::catalog::Catalog;
use crate::peer::commands::PeerSpec;
use crate::peer::downloader::{self, Finished};
use crate::peer::output::{PlainOutput, SharedOutput};
use crate::peer::running::Transfers;
use crate::peer::swarm::{self, SwarmRequest};
use crate::peer::tracker_client::{LinkConfig, LinkEvent, TrackerLink};
use crate::peer::{Opened, PeerConfig, PeerContext, PeerError, open, start_signal_thread};
use crate::protocol::legacy::python_list;
use crate::protocol::messages::Reply;
use crate::transfer::PartialStore;

/// How long the tracker link may take to dial, find the dialect and answer the search (the
/// link gives up sooner on its own and says why; this only bounds a link that says nothing).
const TRACKER_WAIT: Duration = Duration::from_secs(60);
/// How long a stopped download may take to say where it stopped.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Downloads `name` (from `from`, or from the holders the tracker lists) into the configured
/// folder; returns the failure, if any.
pub fn get(
    config: PeerConfig,
    name: &str,
    from: Option<&str>,
) -> Result<Option<Failure>, PeerError> {
    // The upload port is only this peer's name in the uploader's question ("Peer IP:PORT
    // solicitou ..."); nothing is served on it.
    let opened = open(&config)?;
    let plain = Arc::new(PlainOutput::start().map_err(PeerError::Thread)?);
    // Every line printed reaches stdout before this returns (and the process ends).
    let _drained = plain.drain_on_return();
    let (finished_tx, finished_rx) = unbounded();
    let (link_events, link_answers) = unbounded();
    let ctx = download_context(&config, &opened, plain, (finished_tx, link_events))?;
    let started = match from {
        Some(from) => resolve_from(&config, from)
            .map_err(|why| {
                ctx.out.line(&format!("Erro ao processar download: {why}"));
                Failure::Unreachable
            })
            .and_then(|peer| downloader::start(&ctx, name.to_string(), peer)),
        None => search_then_download(&ctx, name, &link_answers),
    };
    if let Err(failure) = started {
        ctx.link.close();
        return Ok(Some(failure));
    }
    let finished = wait_for_the_end(&ctx, &finished_rx);
    ctx.link.close();
    finished
}

/// What a download needs of a peer, for one that never JOINs and serves nothing: the folder
/// `opened`, a tracker link (for the search), and `out` for every line.
fn download_context(
    config: &PeerConfig,
    opened: &Opened,
    out: SharedOutput,
    (finished, link_events): (Sender<Finished>, Sender<LinkEvent>),
) -> Result<Arc<PeerContext>, PeerError> {
    let bind_ip = Some(config.listen.ip()).filter(|ip| !ip.is_unspecified());
    let (approvals, _) = unbounded();
    // Never joined: the UPDATE a download sends afterwards has nobody to tell.
    let link = TrackerLink::start(
        LinkConfig {
            server: config.server.clone(),
            upload_port: opened.port,
            local_ip: bind_ip,
            liveness: config.liveness,
            dialect: config.tracker_dialect,
            folder: opened.folder.shared.path().to_path_buf(),
            list_files: Box::new(Vec::new),
        },
        link_events,
    )
    .map_err(PeerError::Thread)?;
    Ok(Arc::new(PeerContext {
        port: opened.port,
        advertise: None,
        bind_ip,
        partials: PartialStore::new(opened.folder.shared.path()),
        // No announcer runs here: it never JOINs, so there is nothing to announce to.
        catalog: Arc::new(Catalog::new(opened.folder.shared.clone())),
        shared: opened.folder.shared.clone(),
        digests: DigestCache::new(),
        link: Arc::new(link),
        out,
        transfers: Transfers::new(),
        approvals,
        asks_within: None,
        finished,
        liveness: config.liveness,
        sources: config.sources,
        swarms: Default::default(),
    }))
}

/// Waits for the download to end, or for Ctrl-C / SIGTERM, which stop it and leave it a
/// moment to say where it stopped. Returns its failure, if any.
fn wait_for_the_end(
    ctx: &PeerContext,
    finished_rx: &Receiver<Finished>,
) -> Result<Option<Failure>, PeerError> {
    let signals = start_signal_thread().map_err(PeerError::Thread)?;
    let finished = select! {
        recv(finished_rx) -> finished => finished.ok(),
        recv(signals) -> _ => {
            ctx.transfers.stop_all(STOP_WAIT);
            finished_rx.recv_deadline(Instant::now() + STOP_WAIT).ok()
        },
    };
    Ok(match finished {
        Some(finished) => finished.result.err(),
        None => Some(Failure::Interrupted),
    })
}

/// Asks the tracker who holds `name` now and starts the download as `DOWNLOAD name` would:
/// from every holder of the same content at once, or from the one there is. Problems are
/// printed; the failure is returned.
fn search_then_download(
    ctx: &Arc<PeerContext>,
    name: &str,
    answers: &Receiver<LinkEvent>,
) -> Result<(), Failure> {
    let reply = search(ctx, name, answers).map_err(|why| {
        ctx.out.line(&format!("Erro ao buscar arquivo: {why}"));
        Failure::Tracker
    })?;
    ctx.out.line(&format!(
        "Peers com arquivo solicitado: {}",
        python_list(reply.peers.as_deref().unwrap_or_default())
    ));
    let me: Vec<SocketAddr> = ctx
        .link
        .addresses()
        .map(|(_, local)| SocketAddr::new(local, ctx.port))
        .into_iter()
        .collect();
    let (holders, expected) = swarm::holders_from_search(name, &reply, &me);
    match holders.as_slice() {
        [] => {
            ctx.out.line(&format!("Nenhum peer compartilha {name}."));
            Err(Failure::NotFound)
        }
        [only] => downloader::start(ctx, name.to_string(), *only),
        _ => swarm::start(
            ctx,
            SwarmRequest {
                name: name.to_string(),
                holders,
                expected,
                max_sources: ctx.sources,
            },
        ),
    }
}

/// The tracker's whole answer to a SEARCH for `name`, through the link (which dials for it).
fn search(ctx: &PeerContext, name: &str, answers: &Receiver<LinkEvent>) -> Result<Reply, String> {
    ctx.link.search_for_download(name.to_string());
    let deadline = Instant::now() + TRACKER_WAIT;
    loop {
        match answers.recv_deadline(deadline) {
            Ok(LinkEvent::FoundForDownload { result, .. }) => return result.map(|r| *r),
            Ok(LinkEvent::Dialect { dialect, .. }) => {
                log::debug!("the tracker speaks the {dialect} dialect");
            }
            Ok(other) => log::debug!("tracker link: {other:?}"),
            Err(_) => {
                return Err(format!(
                    "o servidor não respondeu em {} s",
                    TRACKER_WAIT.as_secs()
                ));
            }
        }
    }
}

/// `--from` as an address; a bare port is on the tracker's host.
fn resolve_from(config: &PeerConfig, from: &str) -> Result<SocketAddr, String> {
    let text = match PeerSpec::parse(from) {
        Some(PeerSpec::Addr(text)) => text,
        Some(PeerSpec::Port(port)) => {
            let host = config.server.rsplit_once(':').map_or("", |(h, _)| h);
            format!("{host}:{port}")
        }
        None => return Err(format!("peer inválido {from:?} (use PORTA ou IP:PORTA)")),
    };
    text.to_socket_addrs()
        .map_err(|e| {
            log::debug!("cannot resolve {text}: {e}");
            format!("endereço {text} não encontrado")
        })?
        .next()
        .ok_or_else(|| format!("endereço {text} não encontrado"))
}
