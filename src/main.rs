//! `napster`: parse the command line, start logging, hand off.

use std::io::IsTerminal;
use std::net::TcpListener;
use std::process::ExitCode;

use clap::Parser;

use napster::cli::{Cli, Mode};
use napster::{peer, tracker};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
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
    let fitted = tracker::limits::Fitted::new(
        config.max_connections,
        tracker::limits::measure(
            tracker::limits::open_file_limit_in_force(),
            config.thread_stack,
            config.max_buffered,
        ),
    );
    for limit in &fitted.limits {
        log::debug!(
            "connection limit {}: room for {} ({})",
            limit.name,
            limit.room,
            limit.detail
        );
    }
    config.max_connections = fitted.cap;
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("Servidor ouvindo em {addr}");
    println!("{}", fitted.summary());
    let tracker = tracker::Tracker::new(config);
    tracker.run(listener).map_err(|e| e.to_string())
}
