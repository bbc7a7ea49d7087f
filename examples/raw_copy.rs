//! The transfer benchmark's baseline (`scripts/bench-transfer.sh`): copies a file through a
//! plain loopback `TcpStream` into another file with `std::io::copy` and no protocol, no
//! digest, no approval. It is what a DOWNLOAD between two peers is compared against.
//!
//! Usage: `raw_copy SRC DST` — prints one line `bytes=N seconds=S` on stdout.

use std::fs::File;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else {
        eprintln!("usage: raw_copy SRC DST");
        return ExitCode::from(2);
    };
    match copy(src, dst) {
        Ok((bytes, seconds)) => {
            println!("bytes={bytes} seconds={seconds:.6}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raw_copy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends `src` from this thread and receives it into `dst` on another, over loopback.
fn copy(src: &str, dst: &str) -> io::Result<(u64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut out = File::create(dst)?;
    let receiver = thread::spawn(move || -> io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        io::copy(&mut stream, &mut out)
    });
    let started = Instant::now();
    let mut input = File::open(src)?;
    let mut stream = TcpStream::connect(addr)?;
    let sent = io::copy(&mut input, &mut stream)?;
    drop(stream);
    let received = receiver
        .join()
        .map_err(|_| io::Error::other("the receiving thread panicked"))??;
    let seconds = started.elapsed().as_secs_f64();
    if received != sent {
        return Err(io::Error::other(format!(
            "sent {sent} bytes but received {received}"
        )));
    }
    Ok((received, seconds))
}
