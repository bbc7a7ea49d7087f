//! What SEARCH and LIST print at the console, and the numbered results `DOWNLOAD N` refers to.
//!
//! SEARCH keeps the original's line for the exact name first (`Peers com arquivo solicitado:
//! [...]`, unchanged, so transcripts still compare with the original's), then numbers the other
//! files whose names hold the query's words: `1) aula-01.mp4  3,0 MiB  2 peers`. `LIST peer`
//! numbers that peer's files the same way. `DOWNLOAD 1` then downloads result 1 from its first
//! holder, `DOWNLOAD 1 IP:PORT` (or a port) from the holder named.

use std::net::SocketAddr;

use crate::numbers;
use crate::peer::commands::PeerSpec;
use crate::protocol::legacy::python_list;
use crate::protocol::words;
use crate::protocol::{Digest, FileRecord, Reply};

/// Most numbered results a SEARCH prints (the tracker sends at most `--max-results`).
pub const MAX_SHOWN: usize = 100;

/// One numbered file: what `DOWNLOAD N` downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    /// The file's name.
    pub name: String,
    /// Its size, when announced.
    pub size: Option<u64>,
    /// Its digest, when announced.
    pub digest: Option<Digest>,
    /// How many peers hold it.
    pub holders: usize,
    /// Some of them, `IP:PORT`, first choice first.
    pub peers: Vec<String>,
}

/// The numbered files of the last SEARCH or LIST.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Result `N` is `entries[N - 1]`.
    pub entries: Vec<Numbered>,
}

impl Found {
    /// The entry `text` names, if `text` is a number from 1 to the number of entries.
    pub fn numbered(&self, text: &str) -> Option<&Numbered> {
        let n: usize = text.trim().parse().ok()?;
        self.entries.get(n.checked_sub(1)?)
    }

    /// Every name found, each once (for completion).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.entries.iter().map(|e| e.name.clone()).collect();
        names.dedup();
        names
    }
}

/// The names Tab may complete, each with its peers: the last SEARCH's exact name, then the
/// numbered files found.
pub fn completion_names(
    last_search: Option<(String, Vec<String>)>,
    found: &Found,
) -> Vec<(String, Vec<String>)> {
    let mut names: Vec<(String, Vec<String>)> = last_search.into_iter().collect();
    for entry in &found.entries {
        match names.iter_mut().find(|(name, _)| *name == entry.name) {
            Some((_, peers)) => {
                for p in &entry.peers {
                    if !peers.contains(p) {
                        peers.push(p.clone());
                    }
                }
            }
            None => names.push((entry.name.clone(), entry.peers.clone())),
        }
    }
    names
}

/// `3,0 MiB`, `12 B`: the size as the console shows it ([`crate::numbers`]).
pub fn human_size(size: Option<u64>) -> String {
    match size {
        Some(size) => numbers::human_size(size),
        None => "tamanho desconhecido".to_string(),
    }
}

fn holders_text(holders: usize) -> String {
    if holders == 1 {
        "1 peer".to_string()
    } else {
        format!("{holders} peers")
    }
}

/// The lines a SEARCH for `query` prints, and its numbered files.
pub fn search_lines(query: &str, reply: &Reply, max_shown: usize) -> (Vec<String>, Found) {
    let peers = reply.peers.as_deref().unwrap_or_default();
    let mut lines = vec![format!(
        "Peers com arquivo solicitado: {}",
        python_list(peers)
    )];
    let others: Vec<Numbered> = reply
        .results
        .iter()
        .flatten()
        .filter(|r| r.name != query)
        .map(|r| Numbered {
            name: r.name.clone(),
            size: r.size,
            digest: r.digest,
            holders: r.holders,
            peers: r.peers.clone(),
        })
        .collect();
    if !others.is_empty() {
        lines.push("Arquivos com essas palavras (DOWNLOAD N baixa o arquivo N):".to_string());
        for (i, entry) in others.iter().enumerate().take(max_shown) {
            lines.push(format!(
                "{}) {}  {}  {}",
                i + 1,
                entry.name,
                human_size(entry.size),
                holders_text(entry.holders)
            ));
        }
    }
    if reply.truncated || others.len() > max_shown {
        lines.push(format!(
            "Há mais resultados que os {} mostrados; refine a busca com mais palavras.",
            numbers::thousands(others.len().min(max_shown) as u64)
        ));
    }
    if peers.is_empty() && others.is_empty() && words::words(query).is_empty() {
        lines.push(
            "Busque por palavras do nome (SEARCH aula) ou veja os arquivos de um peer \
             (LIST IP:PORTA)."
                .to_string(),
        );
    }
    (lines, Found { entries: others })
}

/// The lines `LIST peer` prints, and that peer's files numbered.
pub fn list_lines(peer: &str, files: &[FileRecord]) -> (Vec<String>, Found) {
    if files.is_empty() {
        return (
            vec![format!("O peer {peer} não compartilha nenhum arquivo.")],
            Found::default(),
        );
    }
    let mut lines = vec![format!(
        "Arquivos de {peer} ({}) (DOWNLOAD N baixa o arquivo N):",
        files.len()
    )];
    let entries: Vec<Numbered> = files
        .iter()
        .map(|f| Numbered {
            name: f.name.clone(),
            size: f.size,
            digest: f.digest,
            holders: 1,
            peers: vec![peer.to_string()],
        })
        .collect();
    for (i, entry) in entries.iter().enumerate() {
        lines.push(format!(
            "{}) {}  {}",
            i + 1,
            entry.name,
            human_size(entry.size)
        ));
    }
    (lines, Found { entries })
}

/// The lines `LIST` prints for this peer's own files.
pub fn own_lines(dir: &std::path::Path, files: &[FileRecord]) -> Vec<String> {
    if files.is_empty() {
        return vec![format!(
            "Nenhum arquivo compartilhado em {}.",
            dir.display()
        )];
    }
    let mut lines = vec![format!(
        "Você compartilha {} em {}:",
        numbers::count(files.len() as u64, "arquivo", "arquivos"),
        dir.display()
    )];
    for f in files {
        lines.push(format!("  {}  {}", f.name, human_size(f.size)));
    }
    lines
}

/// The holder of `entry` to download from: the first, or the one `spec` names when it is
/// among them. `None` when `spec` names a peer not listed (the caller resolves it) or no
/// holder is listed.
pub fn holder(entry: &Numbered, spec: Option<&PeerSpec>) -> Option<SocketAddr> {
    let mut listed = entry
        .peers
        .iter()
        .filter_map(|p| p.parse::<SocketAddr>().ok());
    match spec {
        None => listed.next(),
        Some(PeerSpec::Port(port)) => listed.find(|a| a.port() == *port),
        Some(PeerSpec::Addr(text)) => {
            let wanted: SocketAddr = text.parse().ok()?;
            listed.find(|a| *a == wanted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SearchResult;

    fn result(name: &str, size: Option<u64>, peers: &[&str]) -> SearchResult {
        SearchResult {
            name: name.into(),
            size,
            digest: None,
            holders: peers.len(),
            peers: peers.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The original's line stays first and unchanged; the other files are numbered with
    /// their size and holders; the exact name is not numbered again.
    #[test]
    fn search_prints_the_originals_line_then_numbered_matches() {
        let reply = Reply::search(
            vec!["10.0.0.1:5000".into()],
            vec![
                result("aula", Some(7), &["10.0.0.1:5000"]),
                result("aula-01.mp4", Some(3 << 20), &["10.0.0.2:1", "10.0.0.3:2"]),
                result("Aula 2.txt", None, &["10.0.0.2:1"]),
            ],
            true,
        );
        let (lines, found) = search_lines("aula", &reply, 100);
        assert_eq!(lines[0], "Peers com arquivo solicitado: ['10.0.0.1:5000']");
        assert_eq!(lines[2], "1) aula-01.mp4  3,0 MiB  2 peers");
        assert_eq!(lines[3], "2) Aula 2.txt  tamanho desconhecido  1 peer");
        assert!(lines[4].contains("refine a busca"), "{lines:?}");
        assert_eq!(found.numbered("2").unwrap().name, "Aula 2.txt");
        assert_eq!(found.numbered("0"), None);
        assert_eq!(found.numbered("3"), None);
    }

    /// A search with nothing but the exact name prints exactly the original's one line.
    #[test]
    fn an_exact_only_answer_prints_one_line() {
        let reply = Reply::search(
            vec!["10.0.0.1:5000".into()],
            vec![result("a.txt", Some(1), &["10.0.0.1:5000"])],
            false,
        );
        let (lines, found) = search_lines("a.txt", &reply, 100);
        assert_eq!(lines, ["Peers com arquivo solicitado: ['10.0.0.1:5000']"]);
        assert!(found.entries.is_empty());
        let (lines, _) = search_lines("*", &Reply::search(vec![], vec![], false), 100);
        assert!(lines[1].contains("LIST IP:PORTA"), "{lines:?}");
    }

    #[test]
    fn the_holder_is_the_first_or_the_one_named() {
        let entry = Numbered {
            name: "x".into(),
            size: None,
            digest: None,
            holders: 2,
            peers: vec!["10.0.0.2:1".into(), "10.0.0.3:2".into()],
        };
        assert_eq!(holder(&entry, None), "10.0.0.2:1".parse().ok());
        assert_eq!(
            holder(&entry, Some(&PeerSpec::Port(2))),
            "10.0.0.3:2".parse().ok()
        );
        assert_eq!(
            holder(&entry, Some(&PeerSpec::Addr("10.0.0.3:2".into()))),
            "10.0.0.3:2".parse().ok()
        );
        assert_eq!(holder(&entry, Some(&PeerSpec::Port(9))), None);
    }
}
