//! The benchmark's baseline: the barest tracker that answers the same JOIN and SEARCH.
//!
//! `scripts/bench.sh tracker` runs this and `napster server` under the same load and prints
//! ours/baseline ratios. It is what a first port would look like: one thread per connection
//! with the default stack, `BufReader::lines`, `serde_json::Value`, a naive index (a set of
//! address strings per name) under a std `RwLock`, `println!` per request, and no validation,
//! limits or timeouts at all. It is a yardstick, never a server to run.
//!
//! SEARCH: a name someone shares is answered with its holders only (`peers`, the original's
//! answer: the least work). Any other query is answered through a plain inverted index
//! (lower-cased word → the set of names holding it): the smallest set of the query's words is
//! walked and each name checked for the other words, up to 100 `results` (name, holders,
//! peers), so a word held by every name costs nothing when the query has a rare one too.
//! Plain names only (no sizes or digests), and no accent folding.
//!
//! Usage: `naive_tracker [LISTEN]` (default `127.0.0.1:0`); prints `listening on ADDR` first.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, RwLock};
use std::thread;

use serde::Serialize;
use serde_json::{Value, json};

/// Most results one keyword SEARCH returns.
const MAX_RESULTS: usize = 100;

#[derive(Default)]
struct State {
    /// name → addresses of the peers sharing it.
    index: HashMap<String, HashSet<String>>,
    /// word → names holding it.
    words: HashMap<String, HashSet<String>>,
    /// address → names it shares.
    peers: HashMap<String, Vec<String>>,
}

/// A SEARCH reply, fields in the order our tracker writes them.
#[derive(Serialize)]
struct SearchReply {
    status: &'static str,
    peers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Vec<Found>>,
}

/// One keyword result.
#[derive(Serialize)]
struct Found {
    name: String,
    holders: usize,
    peers: Vec<String>,
}

fn words_of(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

impl State {
    fn add(&mut self, name: &str, addr: &str) {
        let holders = self.index.entry(name.to_string()).or_default();
        if holders.is_empty() {
            for word in words_of(name) {
                self.words.entry(word).or_default().insert(name.to_string());
            }
        }
        holders.insert(addr.to_string());
    }

    fn remove(&mut self, name: &str, addr: &str) {
        let Some(holders) = self.index.get_mut(name) else {
            return;
        };
        holders.remove(addr);
        if holders.is_empty() {
            self.index.remove(name);
            for word in words_of(name) {
                if let Some(names) = self.words.get_mut(&word) {
                    names.remove(name);
                    if names.is_empty() {
                        self.words.remove(&word);
                    }
                }
            }
        }
    }

    fn keyword(&self, query: &str) -> Vec<Found> {
        let want = words_of(query);
        let lists: Option<Vec<&HashSet<String>>> = want.iter().map(|w| self.words.get(w)).collect();
        let Some(smallest) = lists.and_then(|l| l.into_iter().min_by_key(|s| s.len())) else {
            return Vec::new();
        };
        smallest
            .iter()
            .filter(|name| {
                let have = words_of(name);
                want.iter().all(|w| have.contains(w))
            })
            .take(MAX_RESULTS)
            .map(|name| {
                let peers: Vec<String> = self.index[name].iter().cloned().collect();
                Found {
                    name: name.clone(),
                    holders: peers.len(),
                    peers,
                }
            })
            .collect()
    }
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
                    s.add(f, &addr);
                }
                println!("Peer {addr} adicionado com os arquivos {files:?}");
                s.peers.insert(addr.clone(), files);
                me = Some(addr);
                json!({"status": "JOIN_OK"}).to_string()
            }
            Some("SEARCH") => {
                let query = msg["data"]["query"].as_str().unwrap_or_default();
                let s = state.read().unwrap_or_else(|e| e.into_inner());
                let reply = match s.index.get(query) {
                    Some(set) => SearchReply {
                        status: "OK",
                        peers: set.iter().cloned().collect(),
                        results: None,
                    },
                    None => SearchReply {
                        status: "OK",
                        peers: Vec::new(),
                        results: Some(s.keyword(query)),
                    },
                };
                drop(s);
                println!(
                    "Peer {} solicitou arquivo {query}",
                    me.as_deref().unwrap_or("?")
                );
                serde_json::to_string(&reply).unwrap_or_default()
            }
            _ => json!({"status": "ERROR"}).to_string(),
        };
        let mut bytes = reply.into_bytes();
        bytes.push(b'\n');
        if (&*stream).write_all(&bytes).is_err() {
            break;
        }
    }
    if let Some(addr) = me {
        let mut s = state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(files) = s.peers.remove(&addr) {
            for f in files {
                s.remove(&f, &addr);
            }
        }
    }
}
