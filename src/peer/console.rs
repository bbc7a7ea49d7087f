//! The console: the one thread that reads the user's commands and answers upload requests.
//!
//! Lines arrive from a line reader (plain stdin, or the interactive prompt) over a channel;
//! upload requests arrive over another; tracker link events over a third; the end of each
//! download over a fourth. One `select!` loop handles them in order, so a `SIM` always answers
//! the request the user saw first, and the questions never fight the menu for the keyboard as
//! they did in the original.
//!
//! Leaving depends on who is typing. At a terminal, QUIT or Ctrl-D while transfers run asks
//! once (`Há 1 download em andamento. Sair mesmo? (SIM/NAO)`). From a script, QUIT and the
//! end of input wait for the running downloads to finish, so `printf 'JOIN\nDOWNLOAD ...\nQUIT\n'`
//! gets its file. Every command that fails records its [`Failure`], and the first one becomes
//! the exit code.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::Mutex;

use crate::exit::{Failure, Outcome};
use crate::peer::approval::{ApprovalQueue, ApprovalRequest, Decision};
use crate::peer::commands::{self, Command, PeerSpec};
use crate::peer::downloader::{self, Finished};
use crate::peer::search_results::{self, Found};
use crate::peer::tracker_client::LinkEvent;
use crate::peer::{ApproveMode, PeerContext, Reading};

/// One thing the line reader saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its newline.
    Line(String),
    /// Ctrl-C at the prompt: the line was cancelled. `empty_line`: nothing had been typed.
    Interrupted {
        /// True when the line was empty, so Ctrl-C was most likely meant to leave.
        empty_line: bool,
    },
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

/// Where leaving stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// Asked `Sair mesmo? (SIM/NAO)`; the next line answers.
    Confirming,
    /// A script said QUIT (or ended): leave once the running downloads have finished.
    AfterDownloads,
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

/// The largest count the prompt spells out; more show as `[99+ pedidos]`.
pub const PROMPT_MAX_COUNT: usize = 99;

/// The width every prompt variant is padded to: that of `[10 pendentes] > `.
const PROMPT_WIDTH: usize = 17;

/// The interactive prompt for `pending` waiting requests: `[sem pedidos] > `,
/// `[1 pendente] > `, `[2 pendentes] > ` ... `[99+ pedidos] > `, each padded with spaces after
/// the `>` to one width, because rustyline measures the prompt only when a line starts (see
/// [`crate::peer::prompt`]). What the user types therefore always starts in the same column.
pub fn prompt_text(pending: usize) -> String {
    let text = match pending {
        0 => "[sem pedidos] > ".to_string(),
        1 => "[1 pendente] > ".to_string(),
        n if n < PROMPT_MAX_COUNT => format!("[{n} pendentes] > "),
        _ => "[99+ pedidos] > ".to_string(),
    };
    format!("{text:<PROMPT_WIDTH$}")
}

/// `1 download`, `2 downloads`: a count with its noun in the right number.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {plural}")
    }
}

/// How long leaving waits for the upload threads it refused to tell their downloaders.
const SHUTDOWN_ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How long leaving waits for stopped transfers to wind down and report where they stopped.
const SHUTDOWN_TRANSFER_WAIT: Duration = Duration::from_secs(5);

/// What Ctrl-C on an empty line prints: Ctrl-C cancels, it does not leave.
pub const HOW_TO_LEAVE: &str = "Para sair, digite QUIT ou tecle Ctrl-D.";

/// The accepted commands once joined, printed after JOIN and for HELP.
pub const MENU: &str = "Comandos: SEARCH [arquivo ou palavras] | DOWNLOAD [arquivo ou N [peer]] | \
                        LIST [peer] | SIM | NAO | HELP | QUIT";
/// The accepted commands before JOIN.
pub const MENU_BEFORE_JOIN: &str =
    "Comandos: JOIN | LIST | SIM | NAO | HELP | QUIT (SEARCH e DOWNLOAD depois do JOIN)";

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
    /// The end of each download.
    pub finished: Receiver<Finished>,
    /// SIGINT/SIGTERM.
    pub signals: Receiver<i32>,
}

/// How the console was started.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleOptions {
    /// How upload requests are answered.
    pub approve: ApproveMode,
    /// How long a request may wait for SIM/NAO.
    pub approval_timeout: Duration,
    /// JOIN before reading anything.
    pub join_at_start: bool,
    /// Who types: a person at a terminal, a script, or nobody (`napster share`).
    pub reading: Reading,
}

struct Console {
    ctx: Arc<PeerContext>,
    state: Arc<ConsoleState>,
    options: ConsoleOptions,
    queue: ApprovalQueue,
    joined: bool,
    asking: Option<Asking>,
    leaving: Option<Leaving>,
    input_done: bool,
    /// Downloads started and not yet finished.
    downloads: usize,
    outcome: Outcome,
}

/// Runs the console until it leaves (QUIT, end of input, a signal), shuts the peer down
/// cleanly, and returns the first failure of the commands it ran, if any.
pub fn run(
    ctx: Arc<PeerContext>,
    state: Arc<ConsoleState>,
    channels: ConsoleChannels,
    options: ConsoleOptions,
) -> Option<Failure> {
    let mut console = Console {
        ctx,
        state,
        options,
        queue: ApprovalQueue::new(options.approval_timeout),
        joined: false,
        asking: None,
        leaving: None,
        input_done: options.reading == Reading::Nothing,
        downloads: 0,
        outcome: Outcome::new(),
    };
    let mut keep_going = true;
    if options.join_at_start {
        console.join();
        // With nobody to type JOIN again, a peer that cannot join has nothing to do.
        keep_going = console.joined || options.reading != Reading::Nothing;
    } else {
        console.say("Digite 'JOIN' para iniciar.");
    }
    while keep_going {
        keep_going = console.step(&channels);
    }
    console.shutdown(&channels.finished);
    console.outcome.failure()
}

impl Console {
    /// Waits for one event and handles it; false means leave now.
    fn step(&mut self, channels: &ConsoleChannels) -> bool {
        let wait = self
            .queue
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let inputs = if self.input_done {
            crossbeam_channel::never()
        } else {
            channels.inputs.clone()
        };
        let mut handled_input = false;
        let keep_going = select! {
            recv(inputs) -> input => {
                handled_input = true;
                self.input(input.unwrap_or(Input::Eof))
            },
            recv(channels.approvals) -> request => {
                if let Ok(request) = request {
                    self.approval(request);
                }
                true
            },
            recv(channels.link) -> event => {
                if let Ok(event) = event {
                    self.link_event(event);
                }
                true
            },
            recv(channels.finished) -> finished => match finished {
                Ok(finished) => self.download_finished(finished),
                Err(_) => true,
            },
            recv(channels.signals) -> signal => self.signal(signal.ok()),
            default(wait) => true,
        };
        for expired in self.queue.expire(Instant::now()) {
            self.say(&format!(
                "Pedido de {} para {} expirou sem resposta: recusado",
                expired.from, expired.filename
            ));
        }
        self.sync_prompt();
        if keep_going && handled_input {
            // The prompt thread may draw the next prompt, under what this line printed and
            // showing what it changed.
            self.ctx.out.flush();
            let _ = channels.ready.send(());
        }
        keep_going
    }

    /// Prints a line. The pending count is published first, so the prompt redrawn under
    /// this line already shows the change the line announces.
    fn say(&self, text: &str) {
        self.sync_prompt();
        self.ctx.out.line(text);
    }

    /// Prints why a command failed and records the failure for the exit code.
    fn fail(&self, failure: Failure, text: &str) {
        self.outcome.fail(failure);
        self.say(text);
    }

    fn sync_prompt(&self) {
        self.state.pending.store(self.queue.len(), Ordering::SeqCst);
    }

    fn interactive(&self) -> bool {
        self.options.reading == Reading::Terminal
    }

    /// Handles what the line reader sent; false means leave now.
    fn input(&mut self, input: Input) -> bool {
        match input {
            Input::Line(line) => self.line(&line),
            Input::Interrupted { empty_line } => {
                self.cancel(empty_line);
                true
            }
            Input::Eof => {
                if !self.interactive() {
                    self.input_done = true;
                }
                if self.leaving == Some(Leaving::Confirming) {
                    // Ctrl-D again: that is a yes.
                    return false;
                }
                self.quit()
            }
        }
    }

    /// Ctrl-C: cancels a question; on an empty line, says how to leave.
    fn cancel(&mut self, empty_line: bool) {
        if self.leaving == Some(Leaving::Confirming) {
            self.leaving = None;
            self.say("Continuando; nada foi interrompido.");
        } else if self.asking.take().is_some() {
            self.say("Comando cancelado.");
        } else if empty_line {
            self.say(HOW_TO_LEAVE);
        }
    }

    /// SIGINT or SIGTERM; false means leave now.
    fn signal(&mut self, signal: Option<i32>) -> bool {
        if self.interactive() && signal == Some(signal_hook::consts::SIGINT) {
            // At an interactive prompt Ctrl-C cancels, whenever it is pressed (between two
            // lines the terminal turns it into SIGINT); Ctrl-D and QUIT leave.
            self.cancel(true);
            return true;
        }
        log::info!("signal {signal:?}: shutting down");
        false
    }

    /// QUIT, or the end of input; false means leave now.
    fn quit(&mut self) -> bool {
        if self.interactive() {
            let uploads = self.ctx.transfers.uploads_running();
            if self.downloads + uploads == 0 {
                return false;
            }
            let running = match (self.downloads, uploads) {
                (d, 0) => count(d, "download", "downloads"),
                (0, u) => count(u, "upload", "uploads"),
                (d, u) => format!(
                    "{} e {}",
                    count(d, "download", "downloads"),
                    count(u, "upload", "uploads")
                ),
            };
            self.say(&format!("Há {running} em andamento. Sair mesmo? (SIM/NAO)"));
            self.leaving = Some(Leaving::Confirming);
            return true;
        }
        self.input_done = true;
        if self.downloads == 0 {
            return false;
        }
        self.say(&format!(
            "Aguardando {} em andamento terminar antes de sair...",
            count(self.downloads, "download", "downloads")
        ));
        self.leaving = Some(Leaving::AfterDownloads);
        true
    }

    /// Handles one line; false means leave now.
    fn line(&mut self, line: &str) -> bool {
        let command = commands::parse(line);
        if self.leaving == Some(Leaving::Confirming) {
            self.leaving = None;
            if matches!(command, Command::Sim | Command::Quit) {
                return false;
            }
            self.say("Continuando; nada foi interrompido.");
            return true;
        }
        // SIM/NAO answer a waiting request even in the middle of a prompt.
        if !self.queue.is_empty() && matches!(command, Command::Sim | Command::Nao) {
            return self.command(command);
        }
        if let Some(asking) = self.asking.take() {
            let text = line.trim().to_string();
            if text.is_empty() {
                self.fail(Failure::Command, "Nada digitado; comando cancelado.");
                return true;
            }
            match asking {
                Asking::SearchName => self.search(text),
                Asking::DownloadName => self.download_named(text),
                Asking::DownloadPeer(name) => match PeerSpec::parse(&text) {
                    Some(peer) => self.download(name, &peer),
                    None => self.fail(
                        Failure::Command,
                        &format!(
                            "Erro ao processar download: peer inválido {text:?} (use PORTA ou IP:PORTA)"
                        ),
                    ),
                },
            }
            return true;
        }
        self.command(command)
    }

    /// Runs one command; false means leave now.
    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Quit => return self.quit(),
            Command::Empty => {}
            Command::Sim => self.answer(Decision::Accept),
            Command::Nao => self.answer(Decision::Reject),
            Command::Help => self.say(self.menu()),
            Command::Join => self.join(),
            Command::Unknown(word) => self.fail(
                Failure::Command,
                &format!("Comando desconhecido: {word}. {}", self.menu()),
            ),
            Command::List(None) => self.list_own(),
            _ if !self.joined => self.fail(Failure::Command, "Digite 'JOIN' para iniciar."),
            Command::List(Some(peer)) => self.list_peer(&peer),
            Command::Search(None) => self.ask(Asking::SearchName),
            Command::Search(Some(name)) => self.search(name),
            Command::Download { name: None, .. } => self.ask(Asking::DownloadName),
            Command::Download {
                name: Some(name),
                peer: None,
            } => self.download_named(name),
            Command::Download {
                name: Some(name),
                peer: Some(peer),
            } => self.download(name, &peer),
        }
        true
    }

    fn menu(&self) -> &'static str {
        if self.joined { MENU } else { MENU_BEFORE_JOIN }
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
                log::debug!("cannot list {}: {e}", self.ctx.shared.path().display());
                self.fail(
                    Failure::Start,
                    &format!(
                        "Erro ao ler a pasta {}: {}",
                        self.ctx.shared.path().display(),
                        crate::os_error::describe(&e)
                    ),
                );
                return;
            }
        };
        match self.ctx.link.join(self.ctx.port, &files) {
            Ok(()) => {
                self.ctx.catalog.set_joined(true);
                let host = self.advertised_host();
                let listed = if files.is_empty() {
                    // The original printed nothing after the colon.
                    "(nenhum)".to_string()
                } else {
                    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
                    names.join(",")
                };
                self.say(&format!(
                    "Sou o Peer {}:{} com arquivos: {listed}",
                    host, self.ctx.port,
                ));
                if !self.joined && self.options.reading != Reading::Nothing {
                    self.say(MENU);
                }
                self.joined = true;
            }
            Err(e) => {
                log::debug!("JOIN failed: {e:?}");
                self.fail(Failure::Tracker, &format!("Falha na Conexao! {e}"));
            }
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
            Err(e) => {
                log::debug!("SEARCH failed: {e:?}");
                self.fail(Failure::Tracker, &format!("Erro ao buscar arquivo: {e}"));
            }
        }
    }

    /// LIST: this peer's own files (works before JOIN).
    fn list_own(&mut self) {
        if let Err(e) = self.ctx.catalog.rescan() {
            log::debug!("cannot list {}: {e}", self.ctx.shared.path().display());
            self.fail(
                Failure::Start,
                &format!(
                    "Erro ao ler a pasta {}: {}",
                    self.ctx.shared.path().display(),
                    crate::os_error::describe(&e)
                ),
            );
            return;
        }
        let files = self.ctx.catalog.records();
        for line in search_results::own_lines(self.ctx.shared.path(), &files) {
            self.say(&line);
        }
    }

    /// LIST peer: what that peer shares, numbered for `DOWNLOAD N`.
    fn list_peer(&mut self, typed: &str) {
        let Some(spec) = PeerSpec::parse(typed) else {
            return self.fail(
                Failure::Command,
                &format!("Erro ao listar: peer inválido {typed:?} (use PORTA ou IP:PORTA)"),
            );
        };
        let peer = match self.resolve("", &spec) {
            Ok(addr) => addr.to_string(),
            Err(why) => return self.fail(Failure::Command, &format!("Erro ao listar: {why}")),
        };
        match self.ctx.link.list(&peer) {
            Ok(files) => {
                let (lines, found) = search_results::list_lines(&peer, &files);
                for line in &lines {
                    self.say(line);
                }
                self.state.set_found(found);
            }
            Err(e) => {
                log::debug!("LIST failed: {e:?}");
                self.fail(
                    Failure::Tracker,
                    &format!("Erro ao listar os arquivos de {peer}: {e}"),
                );
            }
        }
    }

    /// The result numbered `text` by the last SEARCH or LIST, downloaded from its first holder
    /// or from the one `peer` names; false if `text` is not such a number.
    fn download_numbered(&mut self, text: &str, peer: Option<&PeerSpec>) -> bool {
        let found = self.state.found();
        let Some(entry) = found.numbered(text) else {
            return false;
        };
        let addr = match search_results::holder(entry, peer) {
            Some(addr) => Ok(addr),
            None => match peer {
                Some(spec) => self.resolve(&entry.name, spec),
                None => Err(format!("nenhum peer listado para {}", entry.name)),
            },
        };
        match addr {
            Ok(addr) => self.start_download(entry.name.clone(), addr),
            Err(why) => self.fail(
                Failure::Command,
                &format!("Erro ao processar download: {why}"),
            ),
        }
        true
    }

    /// `DOWNLOAD name` without a peer: result N of the last SEARCH or LIST when `name` is its
    /// number, else the one peer the last search of that name found, or the original's
    /// question.
    fn download_named(&mut self, name: String) {
        if self.download_numbered(&name, None) {
            return;
        }
        match self.only_holder(&name) {
            Some(peer) => self.start_download(name, peer),
            None => self.ask(Asking::DownloadPeer(name)),
        }
    }

    /// The only other peer the last search for `name` listed, if it listed exactly one.
    fn only_holder(&self, name: &str) -> Option<SocketAddr> {
        let (searched, peers) = self.state.last_search()?;
        if searched != name {
            return None;
        }
        let own = self
            .ctx
            .link
            .addresses()
            .map(|(_, local)| SocketAddr::new(local, self.ctx.port));
        let mut others = peers
            .iter()
            .filter_map(|p| p.parse::<SocketAddr>().ok())
            .filter(|p| Some(*p) != own);
        match (others.next(), others.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    fn download(&mut self, name: String, peer: &PeerSpec) {
        if self.download_numbered(&name, Some(peer)) {
            return;
        }
        match self.resolve(&name, peer) {
            Ok(addr) => self.start_download(name, addr),
            Err(why) => self.fail(
                Failure::Command,
                &format!("Erro ao processar download: {why}"),
            ),
        }
    }

    fn start_download(&mut self, name: String, addr: SocketAddr) {
        match downloader::start(&self.ctx, name, addr) {
            Ok(()) => self.downloads += 1,
            Err(failure) => self.outcome.fail(failure),
        }
    }

    /// A download ended (its outcome is already printed); false means leave now.
    fn download_finished(&mut self, finished: Finished) -> bool {
        self.downloads = self.downloads.saturating_sub(1);
        log::debug!("download of {} ended: {:?}", finished.name, finished.result);
        if let Err(failure) = finished.result {
            self.outcome.fail(failure);
        }
        !(self.leaving == Some(Leaving::AfterDownloads) && self.downloads == 0)
    }

    /// Turns what the user typed into an address: a bare port takes its host from the last
    /// search (a peer with that port), else from the tracker's address.
    fn resolve(&self, name: &str, peer: &PeerSpec) -> Result<SocketAddr, String> {
        match peer {
            PeerSpec::Addr(text) => text
                .to_socket_addrs()
                .map_err(|e| {
                    log::debug!("cannot resolve {text}: {e}");
                    format!("endereço {text} não encontrado")
                })?
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
        match self.options.approve {
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
                if let Some(next) = self.queue.oldest() {
                    self.say(&format!("Próximo pedido: {next}"));
                }
            }
            None => self.fail(Failure::Command, "Nenhum pedido de download pendente."),
        }
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
            LinkEvent::Rejoined(files) => {
                self.say(&format!(
                    "Reconectado ao servidor {}; JOIN refeito com {}",
                    self.ctx.link.server(),
                    count(files, "arquivo", "arquivos")
                ));
            }
        }
    }

    /// Leaves cleanly: refuse what waits, stop transfers (partials are kept, each stopped
    /// download says where), leave the tracker.
    fn shutdown(&mut self, finished: &Receiver<Finished>) {
        self.ctx.out.leaving();
        let refused = self
            .queue
            .refuse_all(Decision::ShuttingDown, SHUTDOWN_ANSWER_WAIT);
        if refused > 0 {
            let text = if refused == 1 {
                "1 pedido pendente recusado".to_string()
            } else {
                format!("{refused} pedidos pendentes recusados")
            };
            self.say(&text);
        }
        self.sync_prompt();
        self.ctx.transfers.stop_all(SHUTDOWN_TRANSFER_WAIT);
        // Each stopped download prints where its partial is kept before it reports here.
        let deadline = Instant::now() + SHUTDOWN_TRANSFER_WAIT;
        while self.downloads > 0 {
            match finished.recv_deadline(deadline) {
                Ok(done) => {
                    self.download_finished(done);
                }
                Err(_) => break,
            }
        }
        if self.downloads > 0 {
            self.outcome.fail(Failure::Interrupted);
        }
        self.ctx.link.close();
        self.say("Peer encerrado.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prompt variant has one width, so the cursor arithmetic of a running `readline`
    /// stays right when the count changes; and the count is in the right number.
    #[test]
    fn prompts_agree_in_number_and_share_one_width() {
        assert_eq!(prompt_text(0).trim_end(), "[sem pedidos] >");
        assert_eq!(prompt_text(1).trim_end(), "[1 pendente] >");
        assert_eq!(prompt_text(2).trim_end(), "[2 pendentes] >");
        assert_eq!(prompt_text(16).trim_end(), "[16 pendentes] >");
        assert_eq!(prompt_text(500).trim_end(), "[99+ pedidos] >");
        for n in 0..=PROMPT_MAX_COUNT + 1 {
            assert_eq!(prompt_text(n).chars().count(), PROMPT_WIDTH, "{n}");
        }
        assert_eq!(count(1, "download", "downloads"), "1 download");
        assert_eq!(count(3, "arquivo", "arquivos"), "3 arquivos");
    }
}
