//! The console: the one thread that reads the user's commands and answers upload requests.
//!
//! Lines arrive from a line reader (plain stdin, or the interactive prompt) over a channel;
//! upload requests arrive over another; tracker link events over a third. One `select!` loop
//! handles them in order, so a `SIM` always answers the request the user saw first, and the
//! questions never fight the menu for the keyboard as they did in the original.
//!
//! The console never waits on the network: JOIN and SEARCH are handed to the tracker link and
//! their answers arrive later as link events. Meanwhile upload questions appear at once and
//! SIM/NAO, HELP and QUIT work; other lines wait for the answer and then run in the order typed
//! (a `DOWNLOAD name PORT` typed after a SEARCH still finds the peer that search listed).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::Mutex;

use crate::peer::approval::{ApprovalQueue, ApprovalRequest, Decision};
use crate::peer::commands::{self, Command, PeerSpec};
use crate::peer::tracker_client::{Dialect, Joined, LinkEvent, Outage};
use crate::peer::{ApproveMode, PeerContext, downloader};
use crate::protocol::legacy::python_list;

/// Resolves `host` on a thread of its own, then starts the download (or says why not).
fn resolve_then_download(ctx: &Arc<PeerContext>, name: String, host: String) {
    let ctx2 = Arc::clone(ctx);
    let spawned = std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let resolved = host
                .to_socket_addrs()
                .map_err(|e| format!("endereço {host}: {e}"))
                .and_then(|mut addrs| {
                    addrs
                        .next()
                        .ok_or_else(|| format!("endereço {host} não encontrado"))
                });
            match resolved {
                Ok(addr) => downloader::spawn(&ctx2, name, addr),
                Err(why) => ctx2.out.line(&format!("Erro ao processar download: {why}")),
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start a thread to resolve a peer's address: {e}");
    }
}

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

/// Lines that may wait for the tracker's answer; more are dropped (and the user told).
const MAX_HELD_LINES: usize = 64;

/// How long leaving waits for the upload threads it refused to tell their downloaders.
const SHUTDOWN_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The accepted commands, printed after JOIN and for HELP.
pub const MENU: &str = "Comandos: SEARCH [arquivo] | DOWNLOAD [arquivo [peer]] | SIM | NAO | QUIT";

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
    /// A JOIN was sent and its answer has not come yet.
    joining: bool,
    /// SEARCHes sent whose answers have not come yet.
    searching: usize,
    /// Lines typed while an answer was awaited, to run once it comes.
    held: VecDeque<String>,
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
        joining: false,
        searching: 0,
        held: VecDeque::new(),
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
            recv(channels.link) -> event => match event {
                Ok(event) => console.link_event(event),
                Err(_) => true,
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
        if self.awaiting_tracker() && !self.runs_at_once(&command) {
            self.hold(line);
            return true;
        }
        if let Some(asking) = self.asking.take() {
            let text = line.trim().to_string();
            if text.is_empty() {
                self.say("Nada digitado; comando cancelado.");
                return true;
            }
            match asking {
                Asking::SearchName => self.search(text),
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

    /// True while an answer of the tracker is awaited.
    fn awaiting_tracker(&self) -> bool {
        self.joining || self.searching > 0
    }

    /// Lines that need nothing from the tracker run even while an answer is awaited.
    fn runs_at_once(&self, command: &Command) -> bool {
        self.asking.is_none()
            && matches!(
                command,
                Command::Quit | Command::Help | Command::Sim | Command::Nao | Command::Empty
            )
    }

    fn hold(&mut self, line: &str) {
        if self.held.len() >= MAX_HELD_LINES {
            self.say(&format!(
                "Comando descartado: {MAX_HELD_LINES} comandos já aguardam a resposta do servidor."
            ));
            return;
        }
        self.held.push_back(line.to_string());
    }

    /// Runs the held lines once no answer is awaited (a line may send a request, and the rest
    /// wait again); false means one of them was QUIT.
    fn run_held(&mut self) -> bool {
        while !self.awaiting_tracker() {
            let Some(line) = self.held.pop_front() else {
                break;
            };
            if !self.line(&line) {
                return false;
            }
        }
        true
    }

    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Quit => return false,
            Command::Empty => {}
            Command::Sim => self.answer(Decision::Accept),
            Command::Nao => self.answer(Decision::Reject),
            Command::Help => self.say(MENU),
            Command::Join => self.join(),
            _ if !self.joined => self.say("Digite 'JOIN' para iniciar."),
            Command::Search(None) => self.ask(Asking::SearchName),
            Command::Search(Some(name)) => self.search(name),
            Command::Download { name: None, .. } => self.ask(Asking::DownloadName),
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

    fn join(&mut self) {
        if self.joined {
            self.say("Já registrado no servidor.");
            return;
        }
        let files = match self.ctx.shared.list() {
            Ok(files) => files,
            Err(e) => {
                self.say(&format!(
                    "Erro ao ler a pasta {}: {e}",
                    self.ctx.shared.path().display()
                ));
                return;
            }
        };
        self.ctx.link.join(files);
        self.joining = true;
    }

    /// The answer to JOIN.
    fn joined(&mut self, result: Result<Joined, String>) {
        self.joining = false;
        match result {
            Ok(joined) => {
                self.joined = true;
                let host = match &self.ctx.advertise {
                    Some(host) => host.clone(),
                    None => joined.local_ip.to_string(),
                };
                // The original's line: each name quoted, separated by commas.
                let names: Vec<String> = joined.files.iter().map(|f| format!("\"{f}\"")).collect();
                self.say(&format!(
                    "Sou o Peer {}:{} com arquivos: {}",
                    host,
                    self.ctx.port,
                    names.join(",")
                ));
                self.say(MENU);
            }
            Err(e) => self.say(&format!("Falha na Conexao! {e}")),
        }
    }

    fn search(&mut self, name: String) {
        self.ctx.link.search(name);
        self.searching += 1;
    }

    /// The answer to SEARCH.
    fn found(&mut self, name: String, result: Result<Vec<String>, String>) {
        self.searching = self.searching.saturating_sub(1);
        match result {
            Ok(peers) => {
                self.say(&format!(
                    "Peers com arquivo solicitado: {}",
                    python_list(&peers)
                ));
                self.state.set_last_search(name, peers);
            }
            Err(e) => self.say(&format!("Erro ao buscar arquivo: {e}")),
        }
    }

    fn download(&mut self, name: Option<String>, peer: Option<PeerSpec>) {
        let (Some(name), Some(peer)) = (name, peer) else {
            return;
        };
        if let PeerSpec::Addr(text) = &peer
            && text.parse::<SocketAddr>().is_err()
        {
            // A host name: resolving it may take long, so not on this thread.
            resolve_then_download(&self.ctx, name, text.clone());
            return;
        }
        match self.resolve(&name, &peer) {
            Ok(addr) => downloader::spawn(&self.ctx, name, addr),
            Err(why) => self.say(&format!("Erro ao processar download: {why}")),
        }
    }

    /// Turns what the user typed into an address: a bare port takes its host from the last
    /// search (a peer with that port), else from the tracker's address.
    fn resolve(&self, name: &str, peer: &PeerSpec) -> Result<SocketAddr, String> {
        match peer {
            // Host names are resolved off this thread (see `download`).
            PeerSpec::Addr(text) => text.parse().map_err(|e| format!("endereço {text}: {e}")),
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
        match self.queue.take_oldest() {
            Some(request) => {
                let verdict = if decision == Decision::Accept {
                    "aprovado"
                } else {
                    "recusado"
                };
                // Printed before the upload thread hears it, so the verdict always comes
                // before what that thread prints next (`Upload ... concluído`).
                self.say(&format!(
                    "Download de {} por {} {verdict}",
                    request.filename, request.from
                ));
                // The upload thread may be gone (its downloader hung up); nothing is owed then.
                let _ = request.reply.send(decision);
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

    /// Handles news from the tracker link; false means a held line was QUIT.
    fn link_event(&mut self, event: LinkEvent) -> bool {
        match event {
            LinkEvent::Joined(result) => self.joined(result),
            LinkEvent::Found { name, result } => self.found(name, result),
            LinkEvent::Dialect {
                dialect,
                detected,
                folder,
                from_upload_port,
            } => self.dialect(dialect, detected, &folder, from_upload_port),
            LinkEvent::Outage(outage) => {
                if self.joined {
                    self.say(&match outage {
                        Outage::Closed(why) => {
                            format!("Conexão com o servidor perdida ({why}); reconectando...")
                        }
                        Outage::Silent(waited) => format!(
                            "O servidor não respondeu em {} s; reconectando...",
                            waited.as_secs()
                        ),
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
        self.run_held()
    }

    /// Tells the user which dialect the tracker speaks, and what that means.
    fn dialect(&self, dialect: Dialect, detected: bool, folder: &Path, from_upload_port: bool) {
        let how = if detected {
            "detectado"
        } else {
            "escolhido com --tracker-dialect"
        };
        let server = self.ctx.link.server();
        match dialect {
            Dialect::Napster => self.say(&format!("Servidor {server}: dialeto napster ({how}).")),
            Dialect::Original => {
                self.say(&format!(
                    "Servidor {server}: dialeto do original em Python ({how}). O JOIN envia a \
                     pasta {}, que esse servidor lista no próprio disco: só funciona com ele \
                     nesta mesma máquina.",
                    folder.display()
                ));
                if !from_upload_port {
                    self.say(&format!(
                        "Aviso: a conexão com o servidor não saiu da porta de upload {}; esse \
                         servidor vai anunciar outra porta, onde os outros peers não encontram \
                         este.",
                        self.ctx.port
                    ));
                }
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
