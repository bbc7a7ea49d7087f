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
//!
//! The console never waits on the network: JOIN and SEARCH are handed to the tracker link and
//! their answers arrive later as link events; a host name typed in DOWNLOAD is resolved on a
//! thread of its own. Meanwhile upload questions appear at once and SIM/NAO, HELP and QUIT
//! work; other lines wait for the answer and then run in the order typed (a `DOWNLOAD name
//! PORT` typed after a SEARCH still finds the peer that search listed).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::Mutex;

use crate::exit::{Failure, Outcome};
use crate::peer::approval::{ApprovalQueue, ApprovalRequest, Decision};
use crate::peer::commands::{self, Command, PeerSpec};
use crate::peer::downloader::{self, Finished};
use crate::peer::output::short_list;
use crate::peer::search_results::{self, Found};
use crate::peer::tracker_client::{Dialect, Joined, LinkEvent, Outage};
use crate::peer::{ApproveMode, PeerContext, Reading, swarm, transfer_commands};
use crate::protocol::FileRecord;
use crate::protocol::messages::Reply;

/// Resolves `host` on a thread of its own, then starts the download; true if that thread
/// started. Either way, once started, the download's end reaches the console as a
/// [`Finished`], like any download's.
fn resolve_then_download(ctx: &Arc<PeerContext>, name: String, host: String) -> bool {
    let thread_ctx = Arc::clone(ctx);
    let spawned = std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let resolved = host.to_socket_addrs().map_err(|e| {
                log::debug!("cannot resolve {host}: {e}");
            });
            let result = match resolved.ok().and_then(|mut addrs| addrs.next()) {
                Some(addr) => match downloader::start(&thread_ctx, name.clone(), addr) {
                    // The download reports its own end.
                    Ok(()) => return,
                    Err(failure) => Err(failure),
                },
                None => {
                    thread_ctx.out.line(&format!(
                        "Erro ao processar download: endereço {host} não encontrado"
                    ));
                    Err(Failure::Command)
                }
            };
            let _ = thread_ctx.finished.send(Finished { name, result });
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            log::error!("cannot start a thread to resolve a peer's address: {e}");
            ctx.out.line(&format!(
                "Erro ao processar download: não foi possível iniciar uma thread: {}",
                crate::os_error::describe(&e)
            ));
            false
        }
    }
}

/// Bytes of names the JOIN line lists before `... e mais N`.
const JOIN_LINE_NAMES: usize = 1024;

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
    /// The peer to download `name` from; an empty answer takes `default`, when there is one.
    DownloadPeer {
        name: String,
        default: Option<Sources>,
    },
}

/// Where a download goes when the user names no peer: what the last search found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sources {
    /// The one peer found.
    One(SocketAddr),
    /// Several peers found: from all of them at once.
    All(usize),
}

impl Sources {
    /// The line after the original's question, saying what an empty answer does.
    fn hint(&self) -> String {
        match self {
            Sources::One(addr) => {
                format!("(Enter sem nada baixa de {addr}, o peer encontrado na última busca)")
            }
            Sources::All(n) => format!(
                "(Enter sem nada baixa dos {n} peers encontrados na última busca, ao mesmo tempo)"
            ),
        }
    }
}

impl Asking {
    /// The original's prompt for it.
    fn prompt(&self) -> &'static str {
        match self {
            Asking::SearchName => "Insira o arquivo que deseja buscar:",
            Asking::DownloadName => "Insira o nome do arquivo que deseja baixar:",
            Asking::DownloadPeer { .. } => {
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

    /// Records the last search. Only peers that are addresses are kept: they are offered as
    /// completions, which rustyline shows raw, and the tracker's strings are remote text.
    pub fn set_last_search(&self, name: String, mut peers: Vec<String>) {
        peers.retain(|p| p.parse::<SocketAddr>().is_ok());
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
    crate::numbers::count(n as u64, singular, plural)
}

/// Lines that may wait for the tracker's answer; more are not read until they have run.
const MAX_HELD_LINES: usize = 64;

/// What waits for the tracker's answer.
#[derive(Debug)]
enum Held {
    /// A typed line.
    Line(String),
    /// The end of a script's input, which leaves once the lines before it have run.
    EndOfInput,
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
    /// A JOIN was sent and its answer has not come yet.
    joining: bool,
    /// SEARCHes sent whose answers have not come yet.
    searching: usize,
    /// Lines typed while an answer was awaited, to run once it comes.
    held: VecDeque<Held>,
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
        joining: false,
        searching: 0,
        held: VecDeque::new(),
        asking: None,
        leaving: None,
        input_done: options.reading == Reading::Nothing,
        downloads: 0,
        outcome: Outcome::new(),
    };
    let mut keep_going = true;
    if options.join_at_start {
        // With nobody to type JOIN again, a peer that cannot join has nothing to do (a JOIN
        // the tracker refuses ends it too, see `joined`).
        keep_going = console.join() || options.reading != Reading::Nothing;
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
        // Lines beyond what may wait for the tracker stay in the channel, in order.
        let inputs = if self.input_done || self.held.len() >= MAX_HELD_LINES {
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
            recv(channels.link) -> event => match event {
                Ok(event) => self.link_event(event),
                Err(_) => true,
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
                    if self.awaiting_tracker() || !self.held.is_empty() {
                        // A script's end comes after its last line has run.
                        self.held.push_back(Held::EndOfInput);
                        return true;
                    }
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
        if self.leaving == Some(Leaving::AfterDownloads) {
            // QUIT, then the end of the script: said once.
            return true;
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
        if self.awaiting_tracker() && !self.runs_at_once(&command) {
            self.hold(line);
            return true;
        }
        if let Some(asking) = self.asking.take() {
            let text = line.trim().to_string();
            if let Asking::DownloadPeer {
                name,
                default: Some(sources),
            } = &asking
                && text.is_empty()
            {
                self.download_from_found(name.clone(), sources.clone());
                return true;
            }
            if text.is_empty() {
                self.fail(Failure::Command, "Nada digitado; comando cancelado.");
                return true;
            }
            match asking {
                Asking::SearchName => self.search(text),
                Asking::DownloadName => self.ask_download_peer(text),
                Asking::DownloadPeer { name, .. } => match PeerSpec::parse(&text) {
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

    /// True while an answer of the tracker is awaited.
    fn awaiting_tracker(&self) -> bool {
        self.joining || self.searching > 0
    }

    /// Lines that need nothing from the tracker run even while an answer is awaited, unless
    /// lines typed before them wait (their output keeps the order typed). QUIT leaves at once
    /// only at a terminal; a script's QUIT comes after the answers to its earlier lines.
    fn runs_at_once(&self, command: &Command) -> bool {
        self.asking.is_none()
            && self.held.is_empty()
            && match command {
                Command::Help | Command::Sources | Command::Sim | Command::Nao | Command::Empty => {
                    true
                }
                Command::Quit => self.interactive(),
                _ => false,
            }
    }

    fn hold(&mut self, line: &str) {
        self.held.push_back(Held::Line(line.to_string()));
    }

    /// Runs the held lines once no answer is awaited (a line may send a request, and the rest
    /// wait again); false means one of them said to leave.
    fn run_held(&mut self) -> bool {
        while !self.awaiting_tracker() {
            let keep_going = match self.held.pop_front() {
                None => break,
                Some(Held::Line(line)) => self.line(&line),
                Some(Held::EndOfInput) => self.quit(),
            };
            if !keep_going {
                return false;
            }
        }
        true
    }

    /// Runs one command; false means leave now.
    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Quit => return self.quit(),
            Command::Empty => {}
            Command::Sim => self.answer(Decision::Accept),
            Command::Nao => self.answer(Decision::Reject),
            Command::Help => {
                self.say(self.menu());
                self.say(transfer_commands::MENU);
            }
            Command::Sources => {
                let lines = swarm::status_lines(&self.ctx);
                if lines.is_empty() {
                    self.say("Nenhum download de várias fontes em andamento.");
                }
                for line in lines {
                    self.say(&line);
                }
            }
            Command::Transfers(command) => {
                let ctx = Arc::clone(&self.ctx);
                transfer_commands::run(&ctx, command, &mut |line| self.say(line));
            }
            Command::Join => {
                self.join();
            }
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
        if let Asking::DownloadPeer {
            default: Some(sources),
            ..
        } = &asking
        {
            self.say(&sources.hint());
        }
        self.asking = Some(asking);
    }

    /// Sends JOIN with every shared file's name and size, digests where known (its answer
    /// comes as a link event); typed again, it announces the current list again. False if it
    /// could not be sent.
    fn join(&mut self) -> bool {
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
                return false;
            }
        };
        self.ctx.link.join(files);
        self.joining = true;
        true
    }

    /// The answer to JOIN; false means leave now (nobody could type JOIN again).
    fn joined(&mut self, result: Result<Joined, String>) -> bool {
        self.joining = false;
        match result {
            Ok(joined) => {
                let again = self.joined;
                self.joined = true;
                self.ctx.catalog.set_joined(true);
                let host = match &self.ctx.advertise {
                    Some(host) => host.clone(),
                    None => joined.local_ip.to_string(),
                };
                let listed = if joined.files.is_empty() {
                    // The original printed nothing after the colon.
                    "(nenhum)".to_string()
                } else {
                    // The original's form: each name quoted, separated by commas; as many as
                    // fit in the line, then how many more.
                    let quoted: Vec<String> =
                        joined.files.iter().map(|f| format!("\"{f}\"")).collect();
                    short_list(&quoted, ",", JOIN_LINE_NAMES)
                };
                self.say(&format!(
                    "Sou o Peer {}:{} com arquivos: {listed}",
                    host, self.ctx.port,
                ));
                if !again && self.options.reading != Reading::Nothing {
                    self.say(MENU);
                }
                true
            }
            Err(e) => {
                self.fail(Failure::Tracker, &format!("Falha na Conexao! {e}"));
                self.options.reading != Reading::Nothing
            }
        }
    }

    fn search(&mut self, name: String) {
        self.ctx.link.search(name);
        self.searching += 1;
    }

    /// The answer to SEARCH: the original's line for the exact name, then the other files
    /// holding its words, numbered.
    fn found(&mut self, name: String, result: Result<Box<Reply>, String>) {
        self.searching = self.searching.saturating_sub(1);
        match result {
            Ok(reply) => {
                let (lines, found) =
                    search_results::search_lines(&name, &reply, search_results::MAX_SHOWN);
                for line in &lines {
                    self.say(line);
                }
                self.state
                    .set_last_search(name, reply.peers.unwrap_or_default());
                self.state.set_found(found);
            }
            Err(e) => self.fail(Failure::Tracker, &format!("Erro ao buscar arquivo: {e}")),
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

    /// LIST peer: asks the tracker what that peer shares (the answer comes as a link event).
    fn list_peer(&mut self, typed: &str) {
        let Some(spec) = PeerSpec::parse(typed) else {
            return self.fail(
                Failure::Command,
                &format!("Erro ao listar: peer inválido {typed:?} (use PORTA ou IP:PORTA)"),
            );
        };
        match self.resolve("", &spec) {
            Ok(addr) => {
                self.ctx.link.list(addr.to_string());
                self.searching += 1;
            }
            Err(why) => self.fail(Failure::Command, &format!("Erro ao listar: {why}")),
        }
    }

    /// The answer to LIST peer: its files, numbered for `DOWNLOAD N`.
    fn listed(&mut self, peer: String, result: Result<Vec<FileRecord>, String>) {
        self.searching = self.searching.saturating_sub(1);
        match result {
            Ok(files) => {
                let (lines, found) = search_results::list_lines(&peer, &files);
                for line in &lines {
                    self.say(line);
                }
                self.state.set_found(found);
            }
            Err(e) => self.fail(
                Failure::Tracker,
                &format!("Erro ao listar os arquivos de {peer}: {e}"),
            ),
        }
    }

    /// The result numbered `text` by the last SEARCH or LIST, downloaded from every holder
    /// listed at once when there are several (its size and digest known up front), else from
    /// its holder, or from the one `peer` names; false if `text` is not such a number.
    fn download_numbered(&mut self, text: &str, peer: Option<&PeerSpec>) -> bool {
        let found = self.state.found();
        let Some(entry) = found.numbered(text) else {
            return false;
        };
        let (holders, expected) = swarm::holders_of_result(entry, &self.own_addresses());
        if peer.is_none() && holders.len() > 1 {
            self.swarm(entry.name.clone(), holders, expected);
            return true;
        }
        let addr = match (peer, holders.first()) {
            (Some(spec), _) => search_results::holder(entry, Some(spec))
                .map_or_else(|| self.resolve(&entry.name, spec), Ok),
            (None, Some(only)) => Ok(*only),
            (None, None) => Err(format!("nenhum peer listado para {}", entry.name)),
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

    /// `DOWNLOAD name` typed on one line, without a peer: result N of the last SEARCH or LIST
    /// when `name` is its number; else the one peer the last search of that name found; from
    /// all of them at once when it found several; else the original's question.
    fn download_named(&mut self, name: String) {
        if self.download_numbered(&name, None) {
            return;
        }
        match self.found_sources(&name) {
            Some(sources) => self.download_from_found(name, sources),
            None => self.ask(Asking::DownloadPeer {
                name,
                default: None,
            }),
        }
    }

    /// The name typed at the original's first DOWNLOAD question: the original's second
    /// question follows whatever the last search found, so its keystrokes (`DOWNLOAD`, the
    /// name, the port) mean what they meant there. What the search found is offered as the
    /// answer to an empty line. A number of the last SEARCH or LIST stands for its file.
    fn ask_download_peer(&mut self, typed: String) {
        let found = self.state.found();
        let (name, default) = match found.numbered(&typed) {
            Some(entry) => {
                let first = search_results::holder(entry, None);
                (entry.name.clone(), first.map(Sources::One))
            }
            None => {
                let default = self.found_sources(&typed);
                (typed, default)
            }
        };
        self.ask(Asking::DownloadPeer { name, default });
    }

    /// What the last search of `name` found, as where to download it from.
    fn found_sources(&self, name: &str) -> Option<Sources> {
        match self.searched_holders(name).as_slice() {
            [] => None,
            [only] => Some(Sources::One(*only)),
            several => Some(Sources::All(several.len())),
        }
    }

    fn download_from_found(&mut self, name: String, sources: Sources) {
        match sources {
            Sources::One(addr) => self.start_download(name, addr),
            Sources::All(_) => self.start_swarm(name),
        }
    }

    /// The other peers the last search for `name` listed (none if it was not the last name
    /// searched).
    fn searched_holders(&self, name: &str) -> Vec<SocketAddr> {
        let Some((searched, peers)) = self.state.last_search() else {
            return Vec::new();
        };
        if searched != name {
            return Vec::new();
        }
        let own = self.own_addresses();
        peers
            .iter()
            .filter_map(|p| p.parse::<SocketAddr>().ok())
            .filter(|p| !own.contains(p))
            .collect()
    }

    /// How the tracker may list this peer.
    fn own_addresses(&self) -> Vec<SocketAddr> {
        let from_link = self
            .ctx
            .link
            .addresses()
            .map(|(_, local)| SocketAddr::new(local, self.ctx.port));
        let bound = self
            .ctx
            .bind_ip
            .map(|ip| SocketAddr::new(ip, self.ctx.port));
        from_link.into_iter().chain(bound).collect()
    }

    /// Downloads `name` from every holder of its content at once, asking the tracker again
    /// for who holds it now (and, when it says, the content's size and digest).
    /// The search is handed to the tracker link; the download starts when its answer comes
    /// (see [`Console::found_for_download`]).
    fn start_swarm(&mut self, name: String) {
        self.ctx.link.search_for_download(name);
        self.searching += 1;
    }

    /// The answer to the search a download from several peers starts with.
    fn found_for_download(&mut self, name: String, result: Result<Box<Reply>, String>) {
        self.searching = self.searching.saturating_sub(1);
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                log::debug!("SEARCH before a swarm download failed: {e}");
                return self.fail(
                    Failure::Tracker,
                    &format!("Erro ao processar download: {e}"),
                );
            }
        };
        let (holders, expected) = swarm::holders_from_search(&name, &reply, &self.own_addresses());
        match holders.as_slice() {
            [] => self.fail(Failure::NotFound, "Arquivo não encontrado."),
            [only] => self.start_download(name, *only),
            _ => self.swarm(name, holders, expected),
        }
    }

    /// Starts downloading `name` from several `holders` at once.
    fn swarm(&mut self, name: String, holders: Vec<SocketAddr>, expected: Option<swarm::Identity>) {
        let request = swarm::SwarmRequest {
            name,
            holders,
            expected,
            max_sources: self.ctx.sources,
        };
        match swarm::start(&self.ctx, request) {
            Ok(()) => self.downloads += 1,
            Err(failure) => self.outcome.fail(failure),
        }
    }

    fn download(&mut self, name: String, peer: &PeerSpec) {
        if self.download_numbered(&name, Some(peer)) {
            return;
        }
        if let PeerSpec::Addr(text) = peer
            && text.parse::<SocketAddr>().is_err()
        {
            // A host name: resolving it may take long, so not on this thread.
            if resolve_then_download(&self.ctx, name, text.clone()) {
                self.downloads += 1;
            }
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
            // Host names are resolved off this thread (see `download`).
            PeerSpec::Addr(text) => text
                .parse()
                .map_err(|_| format!("endereço {text} não encontrado")),
            PeerSpec::Port(port) => {
                // A peer the last SEARCH or LIST listed for this very name, with that port.
                let exact = self
                    .state
                    .last_search()
                    .filter(|(searched, _)| searched == name)
                    .map(|(_, peers)| peers)
                    .unwrap_or_default();
                let found = self.state.found();
                let numbered = found
                    .entries
                    .iter()
                    .filter(|entry| entry.name == name)
                    .flat_map(|entry| entry.peers.iter());
                let from_search = exact
                    .iter()
                    .chain(numbered)
                    .filter_map(|p| p.parse::<SocketAddr>().ok())
                    .find(|a| a.port() == *port);
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
                // A refused one is not printed (a flood must not flood the console); the
                // queue logs it, rate-limited.
                if self.queue.push(request) {
                    self.say(&asked);
                    self.say("Gostaria de Aprovar o download? (SIM/NAO)");
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
                if let Some(next) = self.queue.oldest() {
                    self.say(&format!("Próximo pedido: {next}"));
                }
            }
            None => self.fail(Failure::Command, "Nenhum pedido de download pendente."),
        }
    }

    /// Handles news from the tracker link; false means leave now.
    fn link_event(&mut self, event: LinkEvent) -> bool {
        let keep_going = match event {
            LinkEvent::Joined(result) => self.joined(result),
            LinkEvent::Found { name, result } => {
                self.found(name, result);
                true
            }
            LinkEvent::FoundForDownload { name, result } => {
                self.found_for_download(name, result);
                true
            }
            LinkEvent::Listed { peer, result } => {
                self.listed(peer, result);
                true
            }
            LinkEvent::Dialect {
                dialect,
                detected,
                folder,
                from_upload_port,
            } => {
                self.dialect(dialect, detected, &folder, from_upload_port);
                true
            }
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
                true
            }
            LinkEvent::AddressStillTaken(bound) => {
                self.say(&format!(
                    "O servidor ainda registra a porta {} por uma conexão anterior (peer \
                     reiniciado agora?); tentando o JOIN de novo por até {} s...",
                    self.ctx.port,
                    bound.as_secs()
                ));
                true
            }
            LinkEvent::Rejoined(files) => {
                self.say(&format!(
                    "Reconectado ao servidor {}; JOIN refeito com {}",
                    self.ctx.link.server(),
                    count(files, "arquivo", "arquivos")
                ));
                true
            }
        };
        keep_going && self.run_held()
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

    /// A peer string from the tracker that is not an address (here with U+202E) is never
    /// offered as a completion, which the prompt would show raw.
    #[test]
    fn only_addresses_from_a_search_are_kept_for_completion() {
        let state = ConsoleState::default();
        state.set_last_search(
            "f".into(),
            vec!["127.0.0.1:5000".into(), "evil\u{202E}1:2".into()],
        );
        assert_eq!(
            state.last_search(),
            Some(("f".to_string(), vec!["127.0.0.1:5000".to_string()]))
        );
    }

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
