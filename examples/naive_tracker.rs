//! The benchmark's baseline: the barest tracker that answers the same JOIN and SEARCH.
//!
//! `scripts/bench.sh tracker` runs this and `napster server` under the same load and prints
//! ours/baseline ratios. It is what a first port would look like: one thread per connection
//! with the default stack, `BufReader::lines`, `serde_json::Value`, a naive index (a set of
//! address strings per name) under a std `RwLock`, `println!` per request, and no validation,
//! limits or timeouts at all. It is a yardstick, never a server to run.
//!
//! Usage: `naive_tracker [LISTEN]` (default `127.0.0.1:0`); prints `listening on ADDR` first.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, RwLock};
use std::thread;

use serde_json::{Value, json};

#[derive(Default)]
struct State {
    /// name → addresses of the peers sharing it.
    index: HashMap<String, HashSet<String>>,
    /// address → names it shares.
    peers: HashMap<String, Vec<String>>,
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let _ = napster::tracker::raise_open_file_limit();
    let listener = TcpListener::bind(&listen)?;
    println!("listening on {}", listener.local_addr()?);
    let state = Arc::new(RwLock::new(State::default()));
    for stream in listener.incoming().flatten() {
        let state = Arc::clone(&state);
        thread::spawn(move || serve(&stream, &state));
    }
    Ok(())
}

fn serve(stream: &TcpStream, state: &RwLock<State>) {
    let Ok(remote) = stream.peer_addr() else {
        return;
    };
    let mut me: Option<String> = None;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let reply = match msg["method"].as_str() {
            Some("JOIN") => {
                let addr = format!("{}:{}", remote.ip(), msg["data"]["port"]);
                let files: Vec<String> =
                    serde_json::from_value(msg["data"]["files"].clone()).unwrap_or_default();
                let mut s = state.write().unwrap_or_else(|e| e.into_inner());
                for f in &files {
                    s.index.entry(f.clone()).or_default().insert(addr.clone());
                }
                println!("Peer {addr} adicionado com os arquivos {files:?}");
                s.peers.insert(addr.clone(), files);
                me = Some(addr);
                json!({"status": "JOIN_OK"})
            }
            Some("SEARCH") => {
                let query = msg["data"]["query"].as_str().unwrap_or_default();
                let peers: Vec<String> = state
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .index
                    .get(query)
                    .map(|set| set.iter().cloned().collect())
                    .unwrap_or_default();
                println!(
                    "Peer {} solicitou arquivo {query}",
                    me.as_deref().unwrap_or("?")
                );
                json!({"status": "OK", "peers": peers})
            }
            _ => json!({"status": "ERROR"}),
        };
        let mut bytes = reply.to_string().into_bytes();
        bytes.push(b'\n');
        if (&*stream).write_all(&bytes).is_err() {
            break;
        }
    }
    if let Some(addr) = me {
        let mut s = state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(files) = s.peers.remove(&addr) {
            for f in files {
                if let Some(set) = s.index.get_mut(&f) {
                    set.remove(&addr);
                    if set.is_empty() {
                        s.index.remove(&f);
                    }
                }
            }
        }
    }
}
