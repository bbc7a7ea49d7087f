//! `napster`: parse the command line, start logging, hand off.

use std::io::IsTerminal;
use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser;

use napster::cli::{Cli, Mode};
use napster::{peer, tracker};

fn main() -> ExitCode {
    napster::logging::init();
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        Mode::Server(args) => run_server(&args),
        Mode::Peer(args) => {
            peer::run(args.config(std::io::stdin().is_terminal())).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("napster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(args: &napster::cli::ServerArgs) -> Result<(), String> {
    let mut config = args.config();
    match tracker::raise_open_file_limit() {
        Ok(limit) => {
            log::debug!("open-file limit: {limit}");
            if let Some(asked) = config.fit_open_file_limit(limit) {
                log::warn!(
                    "--max-connections {asked} lowered to {}: the open-file limit is {limit}",
                    config.max_connections
                );
            }
        }
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("Servidor ouvindo em {addr}");
    let tracker = tracker::Tracker::new(config);
    tracker.run(listener).map_err(|e| e.to_string())
}
