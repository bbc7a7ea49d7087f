//! `napster`: parse the command line, start logging, hand off, and turn the outcome into an
//! exit code (see [`napster::exit`]): one line of what failed, then `ajuda:` with what to do.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use napster::cli::{ArgError, Cli, Mode};
use napster::exit::Failure;
use napster::{peer, tracker};

fn main() -> ExitCode {
    let cli = Cli::try_parse();
    // A peer's user reads its console lines, in Portuguese; diagnostics (English, with the
    // detail) only when asked for with RUST_LOG. The tracker's operator sees warnings.
    let default_log = match &cli {
        Ok(Cli {
            command: Mode::Server(_),
        }) => "warn",
        _ => "error",
    };
    napster::logging::init(default_log);
    let cli = match cli {
        Ok(cli) => cli,
        Err(e) => {
            // clap's own messages (and --help) stay English; a usage error exits with our code.
            let _ = e.print();
            return if e.use_stderr() {
                Failure::Usage.into()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let code = match run(cli.command) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(failure)) => failure.into(),
        Err((failure, message)) => {
            // Behind the log lines already queued, never blocking on a full stderr.
            napster::logging::stderr_line(&format!("napster: {message}"));
            failure.into()
        }
    };
    napster::logging::flush(LAST_LINES_WAIT);
    code
}

/// How long the last lines for stderr may take to get out before the process ends anyway.
const LAST_LINES_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the chosen program: `Ok` with the first failure of its commands, or `Err` when it
/// could not start (with the message to print).
fn run(mode: Mode) -> Result<Option<Failure>, (Failure, String)> {
    let usage = |e: ArgError| (Failure::Usage, e.to_string());
    let start = |e: peer::PeerError| {
        log::debug!("{e:?}");
        (e.failure(), format!("{e}\najuda: {}", e.help()))
    };
    match mode {
        Mode::Server(args) => tracker::start::run(args.config(), args.listen)
            .map(|()| None)
            .map_err(|e| {
                log::debug!("{e:?}");
                let message = match e.help() {
                    Some(help) => format!("{e}\najuda: {help}"),
                    None => e.to_string(),
                };
                (e.failure(), message)
            }),
        Mode::Peer(args) => {
            let config = args.config(std::io::stdin().is_terminal()).map_err(usage)?;
            peer::run(config).map_err(start)
        }
        Mode::Get(args) => {
            let config = args.config().map_err(usage)?;
            peer::get::get(config, &args.name, args.from.as_deref()).map_err(start)
        }
        Mode::Share(args) => {
            let config = args.config().map_err(usage)?;
            peer::run(config).map_err(start)
        }
    }
}
