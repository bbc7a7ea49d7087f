//! The console: the one thread that reads the user's commands and answers upload requests.
//!
//! Lines arrive from a line reader (plain stdin, or the interactive prompt) over a channel;
//! upload requests arrive over another; tracker link events over a third. One `select!` loop
//! handles them in order, so a `SIM` always answers the request the user saw first, and the
//! questions never fight the menu for the keyboard as they did in the original.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::Mutex;

use crate::peer::approval::{ApprovalQueue, ApprovalRequest, Decision};
use crate::peer::commands::{self, Command, PeerSpec};
use crate::peer::search_results::{self, Found};
use crate::peer::tracker_client::LinkEvent;
use crate::peer::{ApproveMode, PeerContext, downloader};

/// One thing the line reader saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its newline.
    Line(String),
    /// Ctrl-C at the prompt: the line was cancelled.
    Interrupted,
    /// End of input (Ctrl-D, or the end of a script).
    Eof,
}

/// What the console is asking for, when a command was typed without its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asking {
    SearchName,
    DownloadName,
    DownloadPeer(String),
}

impl Asking {
    /// The original's prompt for it.
    fn prompt(&self) -> &'static str {
        match self {
            Asking::SearchName => "Insira o arquivo que deseja buscar:",
            Asking::DownloadName => "Insira o nome do arquivo que deseja baixar:",
            Asking::DownloadPeer(_) => {
                "Insira a porta do peer a partir do qual deseja baixar o arquivo:"
            }
        }
    }
}

/// What the line reader may show: the pending count in the prompt, and completions.
#[derive(Default)]
pub struct ConsoleState {
    /// Upload requests waiting for SIM/NAO.
    pending: AtomicUsize,
    /// The file name and peers of the last search, for completion.
    last_search: Mutex<Option<(String, Vec<String>)>>,
    /// The numbered files of the last SEARCH or LIST (`DOWNLOAD N`, completion).
    found: Mutex<Arc<Found>>,
}

impl ConsoleState {
    /// How many upload requests wait for SIM/NAO.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// The prompt to show now (see [`prompt_text`]).
    pub fn prompt(&self) -> String {
        prompt_text(self.pending())
    }

    /// The name and peers of the last search that succeeded.
    pub fn last_search(&self) -> Option<(String, Vec<String>)> {
        self.last_search.lock().clone()
    }

    /// Records the last search.
    pub fn set_last_search(&self, name: String, peers: Vec<String>) {
        *self.last_search.lock() = Some((name, peers));
    }

    /// The numbered files of the last SEARCH or LIST.
    pub fn found(&self) -> Arc<Found> {
        Arc::clone(&self.found.lock())
    }

    /// Records the numbered files of a SEARCH or LIST.
    pub fn set_found(&self, found: Found) {
        *self.found.lock() = Arc::new(found);
    }
}

/// The largest count the prompt spells out; more show as `[9+ pedidos]`.
pub const PROMPT_MAX_COUNT: usize = 10;

/// The interactive prompt for `pending` waiting requests: `[sem pedido] > `,
/// `[1 pendente] > `, ... `[9+ pedidos] > `. Every variant has the same width, because
/// rustyline measures the prompt only when a line starts (see [`crate::peer::prompt`]).
pub fn prompt_text(pending: usize) -> String {
    match pending {
        0 => "[sem pedido] > ".to_string(),
        n if n < PROMPT_MAX_COUNT => format!("[{n} pendente] > "),
        _ => "[9+ pedidos] > ".to_string(),
    }
}

/// How long leaving waits for the upload threads it refused to tell their downloaders.
const SHUTDOWN_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The accepted commands, printed after JOIN and for HELP.
pub const MENU: &str = "Comandos: SEARCH [arquivo ou palavras] | DOWNLOAD [arquivo ou N [peer]] | \
                        LIST [peer] | SIM | NAO | QUIT";

/// The console loop's inputs.
pub struct ConsoleChannels {
    /// Lines from the line reader.
    pub inputs: Receiver<Input>,
    /// Told after each handled line that the line reader may read the next one.
    pub ready: Sender<()>,
    /// Upload requests.
    pub approvals: Receiver<ApprovalRequest>,
    /// Tracker link events.
    pub link: Receiver<LinkEvent>,
    /// SIGINT/SIGTERM.
    pub signals: Receiver<i32>,
}

struct Console {
    ctx: Arc<PeerContext>,
    state: Arc<ConsoleState>,
    approve: ApproveMode,
    queue: ApprovalQueue,
    joined: bool,
    asking: Option<Asking>,
    input_done: bool,
}

/// Runs the console until QUIT, a signal, or (for an interactive console, `quit_at_eof`) end
/// of input. An interactive console takes SIGINT as Ctrl-C, which cancels the line being
/// typed; SIGTERM always leaves. Returns when the peer has shut down cleanly.
pub fn run(
    ctx: Arc<PeerContext>,
    state: Arc<ConsoleState>,
    channels: ConsoleChannels,
    approve: ApproveMode,
    approval_timeout: Duration,
    join_at_start: bool,
    quit_at_eof: bool,
) {
    let mut console = Console {
        ctx,
        state,
        approve,
        queue: ApprovalQueue::new(approval_timeout),
        joined: false,
        asking: None,
        input_done: false,
    };
    if join_at_start {
        console.join();
    } else {
        console.say("Digite 'JOIN' para iniciar.");
    }
    loop {
        let wait = console
            .queue
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let inputs = if console.input_done {
            crossbeam_channel::never()
        } else {
            channels.inputs.clone()
        };
        let mut handled_input = false;
        let keep_going = select! {
            recv(inputs) -> input => match input {
                Ok(Input::Line(line)) => {
                    handled_input = true;
                    console.line(&line)
                }
                Ok(Input::Interrupted) => {
                    handled_input = true;
                    console.asking = None;
                    true
                }
                Ok(Input::Eof) | Err(_) => {
                    console.input_done = true;
                    if quit_at_eof {
                        false
                    } else {
                        log::info!("end of input: still serving uploads until QUIT, SIGINT or SIGTERM");
                        true
                    }
                }
            },
            recv(channels.approvals) -> request => {
                if let Ok(request) = request {
                    console.approval(request);
                }
                true
            },
            recv(channels.link) -> event => {
                if let Ok(event) = event {
                    console.link_event(event);
                }
                true
            },
            recv(channels.signals) -> signal => {
                if quit_at_eof && signal == Ok(signal_hook::consts::SIGINT) {
                    // At an interactive prompt Ctrl-C cancels, whenever it is pressed (between
                    // two lines the terminal turns it into SIGINT); Ctrl-D and QUIT leave.
                    console.asking = None;
                    true
                } else {
                    log::info!("signal {signal:?}: shutting down");
                    false
                }
            },
            default(wait) => true,
        };
        for expired in console.queue.expire(Instant::now()) {
            console.say(&format!(
                "Pedido de {} para {} expirou sem resposta: recusado",
                expired.from, expired.filename
            ));
        }
        console.sync_prompt();
        if !keep_going {
            break;
        }
        if handled_input {
            // The prompt thread may draw the next prompt, under what this line printed and
            // showing what it changed.
            console.ctx.out.flush();
            let _ = channels.ready.send(());
        }
    }
    console.shutdown();
}

impl Console {
    /// Prints a line. The pending count is published first, so the prompt redrawn under
    /// this line already shows the change the line announces.
    fn say(&self, text: &str) {
        self.sync_prompt();
        self.ctx.out.line(text);
    }

    fn sync_prompt(&self) {
        self.state.pending.store(self.queue.len(), Ordering::SeqCst);
    }

    /// Handles one line; false means quit.
    fn line(&mut self, line: &str) -> bool {
        let command = commands::parse(line);
        // SIM/NAO answer a waiting request even in the middle of a prompt.
        if !self.queue.is_empty() && matches!(command, Command::Sim | Command::Nao) {
            return self.command(command);
        }
        if let Some(asking) = self.asking.take() {
            let text = line.trim().to_string();
            if text.is_empty() {
                self.say("Nada digitado; comando cancelado.");
                return true;
            }
            match asking {
                Asking::SearchName => self.search(text),
                Asking::DownloadName if self.state.found().numbered(&text).is_some() => {
                    self.download(Some(text), None)
                }
                Asking::DownloadName => self.ask(Asking::DownloadPeer(text)),
                Asking::DownloadPeer(name) => match PeerSpec::parse(&text) {
                    Some(peer) => self.download(Some(name), Some(peer)),
                    None => self.say(&format!(
                        "Erro ao processar download: peer inválido {text:?} (use PORTA ou IP:PORTA)"
                    )),
                },
            }
            return true;
        }
        self.command(command)
    }

    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Quit => return false,
            Command::Empty => {}
            Command::Sim => self.answer(Decision::Accept),
            Command::Nao => self.answer(Decision::Reject),
            Command::Help => self.say(MENU),
            Command::Join => self.join(),
            Command::List(None) => self.list_own(),
            _ if !self.joined => self.say("Digite 'JOIN' para iniciar."),
            Command::List(Some(peer)) => self.list_peer(&peer),
            Command::Search(None) => self.ask(Asking::SearchName),
            Command::Search(Some(name)) => self.search(name),
            Command::Download { name: None, .. } => self.ask(Asking::DownloadName),
            Command::Download {
                name: Some(name),
                peer: None,
            } if self.state.found().numbered(&name).is_some() => self.download(Some(name), None),
            Command::Download {
                name: Some(name),
                peer: None,
            } => self.ask(Asking::DownloadPeer(name)),
            Command::Download {
                name: Some(name),
                peer: Some(peer),
            } => self.download(Some(name), Some(peer)),
            Command::Unknown(word) => {
                self.say(&format!("Comando desconhecido: {word}. {MENU}"));
            }
        }
        true
    }

    fn ask(&mut self, asking: Asking) {
        self.say(asking.prompt());
        self.asking = Some(asking);
    }

    /// JOINs with every shared file's name and size (digests where known); typed again, it
    /// announces the current list again.
    fn join(&mut self) {
        let files = match self.ctx.catalog.snapshot_for_join() {
            Ok(files) => files,
            Err(e) => {
                self.say(&format!(
                    "Erro ao ler a pasta {}: {e}",
                    self.ctx.shared.path().display()
                ));
                return;
            }
        };
        match self.ctx.link.join(self.ctx.port, &files) {
            Ok(()) => {
                self.ctx.catalog.set_joined(true);
                let host = self.advertised_host();
                let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
                self.say(&format!(
                    "Sou o Peer {}:{} com arquivos: {}",
                    host,
                    self.ctx.port,
                    names.join(",")
                ));
                if !self.joined {
                    self.say(MENU);
                }
                self.joined = true;
            }
            Err(e) => self.say(&format!("Falha na Conexao! {e}")),
        }
    }

    fn advertised_host(&self) -> String {
        if let Some(host) = &self.ctx.advertise {
            return host.clone();
        }
        match self.ctx.link.addresses() {
            Some((_, local)) => local.to_string(),
            None => "127.0.0.1".to_string(),
        }
    }

    /// SEARCH: the original's line for the exact name, then the other matches numbered.
    fn search(&mut self, query: String) {
        match self.ctx.link.search(&query) {
            Ok(reply) => {
                let (lines, found) =
                    search_results::search_lines(&query, &reply, search_results::MAX_SHOWN);
                for line in &lines {
                    self.say(line);
                }
                self.state
                    .set_last_search(query, reply.peers.unwrap_or_default());
                self.state.set_found(found);
            }
            Err(e) => self.say(&format!("Erro ao buscar arquivo: {e}")),
        }
    }

    /// LIST: this peer's own files (works before JOIN).
    fn list_own(&mut self) {
        if let Err(e) = self.ctx.catalog.rescan() {
            self.say(&format!(
                "Erro ao ler a pasta {}: {e}",
                self.ctx.shared.path().display()
            ));
            return;
        }
        let files = self.ctx.catalog.records();
        for line in search_results::own_lines(self.ctx.shared.path(), &files) {
            self.say(&line);
        }
    }

    /// LIST peer: what that peer shares, numbered for `DOWNLOAD N`.
    fn list_peer(&mut self, typed: &str) {
        let peer = match PeerSpec::parse(typed) {
            Some(spec) => match self.resolve("", &spec) {
                Ok(addr) => addr.to_string(),
                Err(why) => return self.say(&format!("Erro ao listar: {why}")),
            },
            None => {
                return self.say(&format!(
                    "Erro ao listar: peer inválido {typed:?} (use PORTA ou IP:PORTA)"
                ));
            }
        };
        match self.ctx.link.list(&peer) {
            Ok(files) => {
                let (lines, found) = search_results::list_lines(&peer, &files);
                for line in &lines {
                    self.say(line);
                }
                self.state.set_found(found);
            }
            Err(e) => self.say(&format!("Erro ao listar os arquivos de {peer}: {e}")),
        }
    }

    /// Downloads `name` from `peer`; a name that is the number of a result of the last
    /// SEARCH or LIST downloads that file, from its first holder unless `peer` names one.
    fn download(&mut self, name: Option<String>, peer: Option<PeerSpec>) {
        let Some(name) = name else {
            return;
        };
        let found = self.state.found();
        if let Some(entry) = found.numbered(&name) {
            let addr = match search_results::holder(entry, peer.as_ref()) {
                Some(addr) => Ok(addr),
                None => match &peer {
                    Some(spec) => self.resolve(&entry.name, spec),
                    None => Err(format!("nenhum peer listado para {}", entry.name)),
                },
            };
            match addr {
                Ok(addr) => downloader::spawn(&self.ctx, entry.name.clone(), addr),
                Err(why) => self.say(&format!("Erro ao processar download: {why}")),
            }
            return;
        }
        let Some(peer) = peer else {
            return;
        };
        match self.resolve(&name, &peer) {
            Ok(addr) => downloader::spawn(&self.ctx, name, addr),
            Err(why) => self.say(&format!("Erro ao processar download: {why}")),
        }
    }

    /// Turns what the user typed into an address: a bare port takes its host from the last
    /// search (a peer with that port), else from the tracker's address.
    fn resolve(&self, name: &str, peer: &PeerSpec) -> Result<SocketAddr, String> {
        match peer {
            PeerSpec::Addr(text) => text
                .to_socket_addrs()
                .map_err(|e| format!("endereço {text}: {e}"))?
                .next()
                .ok_or_else(|| format!("endereço {text} não encontrado")),
            PeerSpec::Port(port) => {
                let from_search = self.state.last_search().as_ref().and_then(|(n, peers)| {
                    let mut candidates: Vec<SocketAddr> =
                        peers.iter().filter_map(|p| p.parse().ok()).collect();
                    // Prefer a peer listed for this very name.
                    if n.as_str() != name {
                        candidates.clear();
                    }
                    candidates.into_iter().find(|a| a.port() == *port)
                });
                if let Some(addr) = from_search {
                    return Ok(addr);
                }
                let ip: IpAddr = match self.ctx.link.addresses() {
                    Some((tracker, _)) => tracker,
                    None => return Err("sem conexão com o servidor para saber o IP".into()),
                };
                Ok(SocketAddr::new(ip, *port))
            }
        }
    }

    fn approval(&mut self, request: ApprovalRequest) {
        let asked = request.to_string();
        match self.approve {
            ApproveMode::Yes => {
                self.say(&asked);
                self.say("Gostaria de Aprovar o download? (SIM/NAO) SIM (automático)");
                let _ = request.reply.send(Decision::Accept);
            }
            ApproveMode::No => {
                self.say(&asked);
                self.say("Gostaria de Aprovar o download? (SIM/NAO) NAO (automático)");
                let _ = request.reply.send(Decision::Reject);
            }
            ApproveMode::Ask => {
                // Queued before it is printed, so the prompt under the question counts it.
                let from = request.from;
                if self.queue.push(request) {
                    self.say(&asked);
                    self.say("Gostaria de Aprovar o download? (SIM/NAO)");
                } else {
                    // Not printed: a flood of requests must not flood the console.
                    log::warn!("request from {from} refused: too many requests wait");
                }
            }
        }
    }

    fn answer(&mut self, decision: Decision) {
        match self.queue.answer_oldest(decision) {
            Some(request) => {
                let verdict = if decision == Decision::Accept {
                    "aprovado"
                } else {
                    "recusado"
                };
                self.say(&format!(
                    "Download de {} por {} {verdict}",
                    request.filename, request.from
                ));
                if let Some(next) = self.queue_front_text() {
                    self.say(&format!("Próximo pedido: {next}"));
                }
            }
            None => self.say("Nenhum pedido de download pendente."),
        }
    }

    fn queue_front_text(&self) -> Option<String> {
        (!self.queue.is_empty()).then(|| format!("{} pendente(s)", self.queue.len()))
    }

    fn link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Lost { generation, why } => {
                if self.joined && self.ctx.link.connection_lost(generation) {
                    // A retry that reached a tracker and was cut again is the same outage.
                    if !self.ctx.link.is_reconnecting() {
                        self.say(&format!(
                            "Conexão com o servidor perdida ({why}); reconectando..."
                        ));
                    }
                    let ctx = Arc::clone(&self.ctx);
                    self.ctx.link.reconnect(self.ctx.port, move || {
                        ctx.catalog.snapshot_for_join().unwrap_or_default()
                    });
                }
            }
            LinkEvent::Rejoined(count) => {
                self.say(&format!(
                    "Reconectado ao servidor {}; JOIN refeito com {count} arquivo(s)",
                    self.ctx.link.server()
                ));
            }
        }
    }

    /// Leaves cleanly: refuse what waits, stop transfers (partials are kept), leave the tracker.
    fn shutdown(&mut self) {
        self.ctx.out.leaving();
        let refused = self
            .queue
            .refuse_all(Decision::ShuttingDown, SHUTDOWN_ANSWER_WAIT);
        if refused > 0 {
            self.say(&format!("{refused} pedido(s) pendente(s) recusado(s)"));
        }
        self.sync_prompt();
        self.ctx.transfers.stop_all(Duration::from_secs(5));
        self.ctx.link.close();
        self.say("Peer encerrado.");
    }
}
