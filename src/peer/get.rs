//! `napster get NAME [--from PEER]`: one download, no console, an exit code that says how it
//! went. For scripts: `napster get aula.mp4 --dir bob && ...`.
//!
//! It asks the tracker who shares the name (without JOINing: it shares nothing), downloads
//! from the peer listed (the first, when several are), and prints the same lines as the
//! console. Ctrl-C or SIGTERM stops the download and keeps what arrived for the next try.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded};

use crate::digests::DigestCache;
use crate::exit::Failure;
use crate::os_error::describe;
use crate::peer::catalog::Catalog;
use crate::peer::commands::PeerSpec;
use crate::peer::output::{PlainOutput, SharedOutput};
use crate::peer::tracker_client::{LinkConfig, TrackerLink};
use crate::peer::transfers::Transfers;
use crate::peer::{PeerConfig, PeerContext, PeerError, downloader, open, start_signal_thread};
use crate::protocol::FrameReader;
use crate::protocol::legacy::python_list;
use crate::protocol::messages::{parse_reply, search_line, status};
use crate::transfer::PartialStore;

/// How long the tracker may take to connect and to answer the search.
const TRACKER_WAIT: Duration = Duration::from_secs(15);
/// How long a stopped download may take to say where it stopped.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Downloads `name` (from `from`, or from the peer the tracker lists) into the configured
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
    let out: SharedOutput = plain;
    let bind_ip = Some(config.listen.ip()).filter(|ip| !ip.is_unspecified());
    let (finished_tx, finished_rx) = unbounded();
    let (approvals, _) = unbounded();
    let (link_events, _) = unbounded();
    let ctx = Arc::new(PeerContext {
        port: opened.port,
        advertise: None,
        bind_ip,
        partials: PartialStore::new(opened.folder.shared.path()),
        // No announcer runs here: it never JOINs, so there is nothing to announce to.
        catalog: Arc::new(Catalog::new(opened.folder.shared.clone())),
        shared: opened.folder.shared.clone(),
        digests: DigestCache::new(),
        // Never joined: the UPDATE a download sends afterwards has nobody to tell.
        link: Arc::new(
            TrackerLink::start(
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
            .map_err(PeerError::Thread)?,
        ),
        out: Arc::clone(&out),
        transfers: Transfers::new(),
        approvals,
        asks_within: None,
        finished: finished_tx,
        liveness: config.liveness,
        sources: config.sources,
        swarms: Default::default(),
    });
    let peer = match choose_peer(&config, name, from, bind_ip, out.as_ref()) {
        Ok(peer) => peer,
        Err(failure) => return Ok(Some(failure)),
    };
    if let Err(failure) = downloader::start(&ctx, name.to_string(), peer) {
        return Ok(Some(failure));
    }
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

/// The peer to download from: `--from`, else the one the tracker lists (the first of
/// several). Problems are printed; the failure is returned.
fn choose_peer(
    config: &PeerConfig,
    name: &str,
    from: Option<&str>,
    bind_ip: Option<IpAddr>,
    out: &dyn crate::peer::output::Output,
) -> Result<SocketAddr, Failure> {
    if let Some(from) = from {
        return resolve_from(config, from).map_err(|why| {
            out.line(&format!("Erro ao processar download: {why}"));
            Failure::Unreachable
        });
    }
    let peers = search(&config.server, name, bind_ip).map_err(|why| {
        out.line(&format!("Erro ao buscar arquivo: {why}"));
        Failure::Tracker
    })?;
    out.line(&format!(
        "Peers com arquivo solicitado: {}",
        python_list(&peers)
    ));
    let listed: Vec<SocketAddr> = peers.iter().filter_map(|p| p.parse().ok()).collect();
    match listed.as_slice() {
        [] => {
            out.line(&format!("Nenhum peer compartilha {name}."));
            Err(Failure::NotFound)
        }
        [only] => Ok(*only),
        [first, ..] => {
            out.line(&format!(
                "Baixando de {first}, o primeiro de {} peers (outro: --from IP:PORTA)",
                listed.len()
            ));
            Ok(*first)
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

/// Asks the tracker at `server` who shares `name`, on a connection of its own (no JOIN).
fn search(server: &str, name: &str, bind_ip: Option<IpAddr>) -> Result<Vec<String>, String> {
    let unreachable = |e: &std::io::Error| {
        log::debug!("tracker {server}: {e}");
        format!("não foi possível conectar a {server}: {}", describe(e))
    };
    let addrs: Vec<SocketAddr> = server
        .to_socket_addrs()
        .map_err(|e| unreachable(&e))?
        .collect();
    let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
    let stream = addrs
        .iter()
        .find_map(
            |addr| match crate::dial::connect_from(bind_ip, addr, TRACKER_WAIT) {
                Ok(stream) => Some(stream),
                Err(e) => {
                    last = e;
                    None
                }
            },
        )
        .ok_or_else(|| unreachable(&last))?;
    (&stream)
        .write_all(&search_line(name))
        .map_err(|e| unreachable(&e))?;
    let mut reader = FrameReader::new(&stream, crate::protocol::DEFAULT_MAX_MESSAGE * 16);
    reader.set_idle_timeout(Some(TRACKER_WAIT));
    reader.set_message_timeout(Some(TRACKER_WAIT));
    let reply = match reader.next_frame() {
        Ok(Some(frame)) => parse_reply(frame).map_err(|e| {
            log::debug!("tracker reply: {e}");
            "resposta inesperada do servidor".to_string()
        })?,
        Ok(None) => return Err("o servidor fechou a conexão sem responder".into()),
        Err(e) => {
            log::debug!("tracker reply: {e}");
            return Err("o servidor não respondeu a tempo".into());
        }
    };
    match reply.status.as_str() {
        status::OK => Ok(reply.peers.unwrap_or_default()),
        status::ERROR => Err(format!(
            "o servidor recusou: {}",
            crate::peer::output::printable(&reply.message.unwrap_or_default())
        )),
        other => Err(format!("resposta inesperada do servidor: {other}")),
    }
}
