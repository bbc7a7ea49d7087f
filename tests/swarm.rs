//! Downloads from several peers at once (`DOWNLOAD name` with no peer named), every piece
//! verified: byte-exact from three sources, a lying source detected and its pieces fetched
//! elsewhere, a source killed half way, a source answering NAO, and a cut download resumed
//! from its verified pieces with other holders.
//!
//! The scenarios run twice where they can: on loopback (anywhere), and across hosts in network
//! namespaces with each uploader behind a shaped link (`tc tbf`), where every source really
//! sends its share and a source can be killed half way. Without root, `ip netns` or `tc` the
//! namespace tests are skipped with the reason ([`skip`]). Lying, stalling and cut sources are
//! stand-ins of our own ([`StandIn`]): they speak the range protocol and misbehave as told.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use common::stand_in::{Gate, digest_hex};
use common::*;
use napster::verified;

/// Where the file lives in every folder.
const NAME: &str = "video.bin";

// ---------------------------------------------------------------------------------------------
// The range-serving stand-in.

/// How a [`StandIn`] serves the ranges asked of it.
#[derive(Clone)]
enum Behaviour {
    /// Every range as it is in the file.
    Honest,
    /// The byte this far into every range inverted (whichever pieces it is given, it lies).
    Lie(u64),
    /// The first range's header, then nothing: a stalled source.
    Stall,
    /// This many ranges honestly, then the connection closed: a source cut half way.
    CutAfter(usize),
    /// Reads requests and answers none; at the second, stops at the gate, and once the test
    /// opens it, closes the connection.
    Silent(Arc<Gate>),
    /// Every range honestly, but a session with no request for this long is ended (as a real
    /// uploader ends one after 60 s), stopping at the gate once closed.
    EndsIdle(std::time::Duration, Arc<Gate>),
}

/// An uploader that speaks the range protocol as `behaviour` says. It JOINs the tracker as a
/// peer of today does, with the file's record (name, size and BLAKE3), so that SEARCH lists it
/// and groups it with the real holders of the same content.
struct StandIn {
    addr: SocketAddr,
    _tracker: TcpStream,
    /// Ranges asked of it so far.
    asked: Arc<AtomicUsize>,
}

impl StandIn {
    /// Starts the stand-in listening on `ip` (created by `sockets`, so a namespace can own
    /// them), sharing `file` under [`NAME`].
    fn start(
        ip: &str,
        tracker: SocketAddr,
        file: &Path,
        behaviour: Behaviour,
        sockets: impl Fn(&mut (dyn FnMut() + Send)),
    ) -> StandIn {
        StandIn::start_announcing(ip, tracker, file, behaviour, sockets, true, None)
    }

    /// A stand-in on loopback whose user answers SIM only once the test opens `approval`.
    fn approving_at(
        tracker: SocketAddr,
        file: &Path,
        behaviour: Behaviour,
        approval: Arc<Gate>,
    ) -> StandIn {
        StandIn::start_announcing(
            "127.0.0.1",
            tracker,
            file,
            behaviour,
            |f| f(),
            true,
            Some(approval),
        )
    }

    /// An honest stand-in on loopback that JOINs with the file's name and size only, as a peer
    /// still hashing it does: the tracker cannot group it by content.
    fn still_hashing(tracker: SocketAddr, file: &Path) -> StandIn {
        StandIn::start_announcing(
            "127.0.0.1",
            tracker,
            file,
            Behaviour::Honest,
            |f| f(),
            false,
            None,
        )
    }

    fn start_announcing(
        ip: &str,
        tracker: SocketAddr,
        file: &Path,
        behaviour: Behaviour,
        sockets: impl Fn(&mut (dyn FnMut() + Send)),
        digest_known: bool,
        approval: Option<Arc<Gate>>,
    ) -> StandIn {
        // Computed once, so that it answers as fast as a real uploader whose outboard is kept.
        let data = Arc::new(std::fs::read(file).unwrap());
        let mut outboard = Vec::new();
        let root = verified::create_outboard(&data[..], data.len() as u64, &mut outboard).unwrap();
        let mut record = serde_json::json!({"name": NAME, "size": data.len()});
        if digest_known {
            record["digest"] = root.to_hex().to_string().into();
        }
        let mut made = None;
        sockets(&mut || {
            let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut link = TcpStream::connect(tracker).unwrap();
            let join = serde_json::json!({"method": "JOIN",
                "data": {"port": port, "files": [record.clone()]}});
            link.write_all(format!("{join}\n").as_bytes()).unwrap();
            let mut line = String::new();
            BufReader::new(link.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.contains("JOIN_OK"), "{line}");
            made = Some((listener, link));
        });
        let (listener, link) = made.unwrap();
        let addr = listener.local_addr().unwrap();
        let outboard = Arc::new(outboard);
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&asked);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (data, outboard) = (Arc::clone(&data), Arc::clone(&outboard));
                let counter = Arc::clone(&counter);
                let (behaviour, approval) = (behaviour.clone(), approval.clone());
                thread::spawn(move || {
                    let _ = serve_ranges(
                        stream,
                        &data,
                        (&outboard, root),
                        (&behaviour, approval.as_deref()),
                        &counter,
                    );
                });
            }
        });
        StandIn {
            addr,
            _tracker: link,
            asked,
        }
    }
}

fn serve_ranges(
    stream: TcpStream,
    data: &[u8],
    (outboard, root): (&[u8], blake3::Hash),
    (behaviour, approval): (&Behaviour, Option<&Gate>),
    asked: &AtomicUsize,
) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    let mut line = String::new();
    input.read_line(&mut line)?;
    let ok = serde_json::json!({
        "status": "OK", "fileSize": data.len(), "digest": root.to_hex().to_string(),
        "offset": 0, "chunkGroup": verified::CHUNK_GROUP, "maxRange": 16 << 20,
    });
    out.write_all(format!("{ok}\n").as_bytes())?;
    if let Some(approval) = approval {
        approval.reached();
    }
    out.write_all(b"{\"status\":\"downloadAccepted\"}\n")?;
    let mut served = 0;
    if let Behaviour::EndsIdle(idle, _) = behaviour {
        input.get_ref().set_read_timeout(Some(*idle))?;
    }
    // A clean end (FIN, not a reset that could discard what was already sent): the
    // downloader reads every range served, then the end of the stream.
    let hang_up = |out: &TcpStream, input: &mut BufReader<TcpStream>| {
        out.shutdown(std::net::Shutdown::Write)?;
        input.get_ref().set_read_timeout(None)?;
        std::io::copy(input, &mut std::io::sink()).map(drop)
    };
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let Behaviour::EndsIdle(_, closed) = behaviour else {
                    return Err(e);
                };
                out.shutdown(std::net::Shutdown::Write)?;
                closed.reached();
                input.get_ref().set_read_timeout(None)?;
                return std::io::copy(&mut input, &mut std::io::sink()).map(drop);
            }
            Err(e) => return Err(e),
        }
        let request: serde_json::Value = serde_json::from_str(&line)?;
        if request["method"] == "OUTBOARD" {
            let head = serde_json::json!({"status": "OK", "length": outboard.len()});
            out.write_all(format!("{head}\n").as_bytes())?;
            out.write_all(outboard)?;
            continue;
        }
        if matches!(behaviour, Behaviour::CutAfter(n) if *n == served) {
            return hang_up(&out, &mut input);
        }
        served += 1;
        asked.fetch_add(1, Ordering::SeqCst);
        if let Behaviour::Silent(gate) = behaviour {
            if served == 2 {
                gate.reached();
                return hang_up(&out, &mut input);
            }
            continue;
        }
        let offset = request["data"]["offset"].as_u64().unwrap();
        let length = request["data"]["length"].as_u64().unwrap();
        let head = serde_json::json!({"status": "OK", "offset": offset, "length": length});
        out.write_all(format!("{head}\n").as_bytes())?;
        let mut piece = data[offset as usize..(offset + length) as usize].to_vec();
        match behaviour {
            Behaviour::Stall => {
                out.flush()?;
                thread::park();
                return Ok(());
            }
            Behaviour::Lie(at) => {
                if let Some(byte) = piece.get_mut(*at as usize) {
                    *byte ^= 0xff;
                }
            }
            _ => {}
        }
        out.write_all(&piece)?;
    }
}

/// SEARCHes [`NAME`], then `DOWNLOAD name` with no peer: from every holder the search found
/// (a name not searched last gets the original's question for the port instead).
fn search_and_download(down: &mut Proc) {
    down.send(&format!("SEARCH {NAME}"));
    down.wait_for("Peers com arquivo solicitado:");
    down.send(&format!("DOWNLOAD {NAME}"));
}

// ---------------------------------------------------------------------------------------------
// Loopback.

fn holder(name: &str, tracker: &TrackerProc, dir: &Path, approve: &str) -> PeerProc {
    let mut peer = start_peer(name, tracker.addr, dir, &["--approve", approve]);
    peer.join();
    tracker
        .proc
        .wait_for(&format!("Peer {} adicionado com os arquivos", peer.addr()));
    peer
}

/// Three peers hold the file; `DOWNLOAD name` fetches it from them and it is byte-exact, with
/// one line per source at the end.
#[test]
fn three_sources_on_loopback_give_the_exact_file() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db, dc, dd] = folders(tmp.path(), ["a", "b", "c", "d"]);
    write_pattern(&da.join(NAME), 12 << 20, 7);
    for d in [&db, &dc] {
        std::fs::copy(da.join(NAME), d.join(NAME)).unwrap();
    }
    let t = start_tracker(&[]);
    let holders: Vec<PeerProc> = [("a", &da), ("b", &db), ("c", &dc)]
        .into_iter()
        .map(|(n, d)| holder(n, &t, d, "yes"))
        .collect();
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    search_and_download(&mut down.proc);
    down.wait_for("em partes: 3 fonte(s)");
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    let addrs: Vec<String> = holders.iter().map(PeerProc::addr).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    source_lines(&down.proc, &addrs);
    assert!(same_file(&da.join(NAME), &dd.join(NAME)));
    assert!(
        !dd.join(".napster/partial")
            .join(format!("{NAME}.part"))
            .exists()
    );
}

/// A source that sends one wrong byte is named (`peer X enviou dados inválidos`) and dropped;
/// its pieces come from the others and the file is byte-exact.
#[test]
fn a_lying_source_on_loopback_is_detected_and_the_file_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, dd] = folders(tmp.path(), ["a", "d"]);
    write_pattern(&da.join(NAME), 16 << 20, 8);
    let t = start_tracker(&[]);
    // Joined first, so its holder is asked first and gets the first pieces.
    let liar = StandIn::start(
        "127.0.0.1",
        t.addr,
        &da.join(NAME),
        Behaviour::Lie(100_000),
        |f| f(),
    );
    let _a = holder("a", &t, &da, "yes");
    let mut down = start_peer("d", t.addr, &dd, &["--sources", "2"]);
    down.join();
    search_and_download(&mut down.proc);
    down.wait_for(&format!("peer {} enviou dados inválidos", liar.addr));
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    assert!(same_file(&da.join(NAME), &dd.join(NAME)));
}

/// A source that stalls in the middle of a range does not hold the download: its pieces are
/// fetched again by another source and the file is exact (well before the stall timeout).
#[test]
fn a_stalled_source_on_loopback_does_not_hold_the_download() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, dd] = folders(tmp.path(), ["a", "d"]);
    write_pattern(&da.join(NAME), 24 << 20, 10);
    let t = start_tracker(&[]);
    let staller = StandIn::start("127.0.0.1", t.addr, &da.join(NAME), Behaviour::Stall, |f| {
        f()
    });
    let _a = holder("a", &t, &da, "yes");
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    let started = std::time::Instant::now();
    search_and_download(&mut down.proc);
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    let staller_line = source_lines(&down.proc, &[&staller.addr.to_string()]).remove(0);
    assert!(staller_line.contains(": 0 B em"), "{staller_line}");
    assert!(
        staller.asked.load(Ordering::SeqCst) > 0,
        "the staller was never asked"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "waited for the stall timeout: {:?}",
        started.elapsed()
    );
    assert!(same_file(&da.join(NAME), &dd.join(NAME)));
}

/// When every holder's user says NAO, the downloader sees the original's `Download Rejeitado`,
/// then why each source was left out.
#[test]
fn when_every_holder_says_nao_the_download_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db, dd] = folders(tmp.path(), ["a", "b", "d"]);
    write_pattern(&da.join(NAME), 1 << 20, 12);
    std::fs::copy(da.join(NAME), db.join(NAME)).unwrap();
    let t = start_tracker(&[]);
    let a = holder("a", &t, &da, "no");
    let b = holder("b", &t, &db, "no");
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    search_and_download(&mut down.proc);
    down.wait_for("Download Rejeitado");
    for line in source_lines(&down.proc, &[&a.addr(), &b.addr()]) {
        assert!(line.contains("recusou (NAO)"), "{line}");
    }
    assert!(!dd.join(NAME).exists());
}

/// A holder whose user says NAO only removes that source: the others complete the file. The
/// other holder's user says SIM only once the refusal was reported, so the download cannot
/// end before it (it did under load, and the refusal then went unsaid).
#[test]
fn a_source_answering_nao_on_loopback_is_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db, dd] = folders(tmp.path(), ["a", "b", "d"]);
    write_pattern(&da.join(NAME), 3 << 20, 9);
    std::fs::copy(da.join(NAME), db.join(NAME)).unwrap();
    let t = start_tracker(&[]);
    let refuser = holder("a", &t, &da, "no");
    let mut b = holder("b", &t, &db, "ask");
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    search_and_download(&mut down.proc);
    down.wait_for(&format!("peer {} recusou o pedido", refuser.addr()));
    b.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    b.send("SIM");
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    let line = source_lines(&down.proc, &[&refuser.addr()]).remove(0);
    assert!(line.contains("recusou (NAO)"), "{line}");
    assert!(same_file(&da.join(NAME), &dd.join(NAME)));
}

/// `DOWNLOAD N` of a result several peers hold downloads from all of them at once, its size
/// and digest known from the tracker's results, which group holders by content: three holders
/// of one content send it; a fourth peer, whose file of the same name and size is another
/// content (another result), is never asked. `DOWNLOAD name` takes the group most peers hold:
/// the same three and the copy just made.
#[test]
fn download_n_takes_every_holder_of_that_content_and_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db, dc, de, dd, df] = folders(tmp.path(), ["a", "b", "c", "e", "d", "f"]);
    write_pattern(&da.join(NAME), 3 << 20, 21);
    for d in [&db, &dc] {
        std::fs::copy(da.join(NAME), d.join(NAME)).unwrap();
    }
    write_pattern(&de.join(NAME), 3 << 20, 22);
    let hex = |dir: &Path| digest_hex(&std::fs::read(dir.join(NAME)).unwrap());
    let t = start_tracker(&[]);
    let holders: Vec<PeerProc> = [("a", &da), ("b", &db), ("c", &dc)]
        .into_iter()
        .map(|(n, d)| holder(n, &t, d, "yes"))
        .collect();
    let _other = holder("e", &t, &de, "ask");
    t.wait_for_group(NAME, &hex(&da), 3);
    t.wait_for_group(NAME, &hex(&de), 1);
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    down.send("SEARCH video");
    down.wait_for("1) video.bin  3,0 MiB  3 peers");
    down.wait_for("2) video.bin  3,0 MiB  1 peer");
    down.send("DOWNLOAD 1");
    // The other content's holder is never asked: the swarm dials only its candidates, and
    // these are three, each of them one of the three holders (a summary line each). Its own
    // console cannot show it: an upload thread asks its user at no time the test can wait for.
    let started = down.wait_for("Download de video.bin em partes: ");
    assert!(started.contains(": 3 fonte(s)"), "{started}");
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    let addrs: Vec<String> = holders.iter().map(PeerProc::addr).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    source_lines(&down.proc, &addrs);
    assert!(same_file(&da.join(NAME), &dd.join(NAME)));

    // The copy just made is announced, and hashed, like any other: four holders now.
    t.wait_for_group(NAME, &hex(&da), 4);
    let mut by_name = start_peer("f", t.addr, &df, &[]);
    by_name.join();
    search_and_download(&mut by_name.proc);
    let started = by_name.wait_for("Download de video.bin em partes: ");
    assert!(started.contains(": 4 fonte(s)"), "{started}");
    by_name.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    source_lines(&by_name.proc, &[addrs[0], addrs[1], addrs[2], &down.addr()]);
    assert!(same_file(&da.join(NAME), &df.join(NAME)));
}

/// A cut download resumed when the tracker gives the content's size and digest (its results
/// group the holders by content): the pieces already verified are checked again and counted
/// before any holder is even asked (`Retomando ...` is printed while both holders' users still
/// have the question in front of them), then the rest comes from the holders there now.
#[test]
fn a_cut_download_resumes_from_its_pieces_before_any_holder_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db, dc, dd] = folders(tmp.path(), ["a", "b", "c", "d"]);
    write_pattern(&da.join(NAME), 8 << 20, 23);
    for d in [&db, &dc] {
        std::fs::copy(da.join(NAME), d.join(NAME)).unwrap();
    }
    let digest = digest_hex(&std::fs::read(da.join(NAME)).unwrap());
    let t = start_tracker(&[]);
    // Two sources that send two pieces each, then hang up.
    let cutters: Vec<StandIn> = (0..2)
        .map(|_| {
            StandIn::start(
                "127.0.0.1",
                t.addr,
                &da.join(NAME),
                Behaviour::CutAfter(2),
                |f| f(),
            )
        })
        .collect();
    t.wait_for_group(NAME, &digest, 2);
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    search_and_download(&mut down.proc);
    down.wait_for("as fontes acabaram antes do fim (4194304 de 8388608 bytes verificados)");
    let mut gone: Vec<String> = cutters.iter().map(|c| c.addr.to_string()).collect();
    drop(cutters);
    // They leave in either order, and a line waited for is passed over once seen.
    while !gone.is_empty() {
        let left = t.proc.wait_for(" saiu");
        gone.retain(|addr| !left.contains(&format!("Peer {addr} saiu")));
    }

    let mut b = holder("b", &t, &db, "ask");
    let mut c = holder("c", &t, &dc, "ask");
    t.wait_for_group(NAME, &digest, 2);
    search_and_download(&mut down.proc);
    down.wait_for("Retomando o download de video.bin com 4194304 de 8388608 bytes já verificados");
    for holder in [&mut b, &mut c] {
        holder.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
        holder.send("SIM");
    }
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    assert!(same_file(&da.join(NAME), &dd.join(NAME)));
}

/// `napster get NAME` goes the console's way: the tracker's grouped results give the holders
/// of one content, and the file comes from all of them at once, with one line per source and
/// exit code 0.
#[test]
fn get_downloads_from_every_holder_of_the_same_content() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, db, dc, dd] = folders(tmp.path(), ["a", "b", "c", "d"]);
    write_pattern(&da.join(NAME), 3 << 20, 24);
    for d in [&db, &dc] {
        std::fs::copy(da.join(NAME), d.join(NAME)).unwrap();
    }
    let t = start_tracker(&[]);
    let holders: Vec<PeerProc> = [("a", &da), ("b", &db), ("c", &dc)]
        .into_iter()
        .map(|(n, d)| holder(n, &t, d, "yes"))
        .collect();
    t.wait_for_group(NAME, &digest_hex(&std::fs::read(da.join(NAME)).unwrap()), 3);
    let server = t.addr.to_string();
    let out = Command::new(napster_bin())
        .args(["get", NAME, "--server", &server, "--dir"])
        .arg(&dd)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("Download de video.bin em partes: 3 fonte(s)"),
        "{printed}"
    );
    for h in &holders {
        assert!(
            printed.contains(&format!("  fonte {}: ", h.addr())),
            "{printed}"
        );
    }
    assert!(same_file(&da.join(NAME), &dd.join(NAME)));
}

/// A source left with nothing to fetch near the end (every missing piece is being fetched by
/// two others) whose uploader ends the idle session (a real one after 60 s) is not reported as
/// failed: it had nothing in flight, nothing was lost. When the two others hang up, their
/// pieces come from a fourth source.
#[test]
fn a_source_whose_idle_session_is_ended_is_not_reported_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, dd] = folders(tmp.path(), ["a", "d"]);
    let file = da.join(NAME);
    write_pattern(&file, 2 << 20, 25);
    let t = start_tracker(&[]);
    let hold: Vec<Arc<Gate>> = (0..2).map(|_| Arc::new(Gate::new())).collect();
    let silent: Vec<StandIn> = hold
        .iter()
        .map(|g| {
            let behaviour = Behaviour::Silent(Arc::clone(g));
            StandIn::start("127.0.0.1", t.addr, &file, behaviour, |f| f())
        })
        .collect();
    let (idle_approval, idle_closed) = (Arc::new(Gate::new()), Arc::new(Gate::new()));
    let ends_idle = Behaviour::EndsIdle(
        std::time::Duration::from_millis(300),
        Arc::clone(&idle_closed),
    );
    let idle = StandIn::approving_at(t.addr, &file, ends_idle, Arc::clone(&idle_approval));
    let last_approval = Arc::new(Gate::new());
    let _last = StandIn::approving_at(t.addr, &file, Behaviour::Honest, Arc::clone(&last_approval));
    t.wait_for_group(NAME, &digest_hex(&std::fs::read(&file).unwrap()), 4);
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    search_and_download(&mut down.proc);
    down.wait_for("em partes: 4 fonte(s)");
    // Both pieces are asked of both silent sources.
    for gate in &hold {
        gate.wait_reached();
    }
    // The third is approved now: nothing is left for it to fetch, and its uploader ends the
    // session that asks nothing.
    idle_approval.wait_reached();
    idle_approval.open();
    idle_closed.wait_reached();
    idle_closed.open();
    // The silent ones hang up: their pieces go back to the plan.
    for gate in &hold {
        gate.open();
    }
    let mut failed = Vec::new();
    while failed.len() < 2 {
        failed.push(down.wait_for(" falhou ("));
    }
    for source in &silent {
        let named = format!("peer {} falhou", source.addr);
        assert!(failed.iter().any(|l| l.contains(&named)), "{failed:?}");
    }
    last_approval.wait_reached();
    last_approval.open();
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    let line = source_lines(&down.proc, &[&idle.addr.to_string()]).remove(0);
    assert!(
        line.contains("sem partes a buscar; o outro peer encerrou a sessão"),
        "{line}"
    );
    assert!(
        !down.proc.printed(&format!("peer {} falhou", idle.addr)),
        "{}",
        down.proc.transcript()
    );
    assert!(same_file(&file, &dd.join(NAME)));
}

// ---------------------------------------------------------------------------------------------
// Across hosts.

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Hosts in network namespaces on one bridge (in a namespace of its own); host `i` is
/// `10.78.0.<i+1>`. Dropping it deletes every namespace it made.
struct Lab {
    prefix: String,
    roles: Vec<String>,
    created: Vec<String>,
}

impl Lab {
    /// The hosts `roles`, each uploader's sending side limited to `rate` (`tc tbf`). `Err` says
    /// why that cannot be done here.
    fn new(roles: &[&str], shaped: &[&str], rate: &str) -> Result<Lab, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root, so `ip netns` is not allowed".into());
        }
        let n = NEXT_LAB.fetch_add(1, Ordering::SeqCst);
        let mut lab = Lab {
            prefix: format!("napster-swarm-{}-{n}", std::process::id()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            created: Vec::new(),
        };
        let switch = lab.ns("switch");
        run("ip", &["netns", "add", &switch])
            .map_err(|e| format!("cannot create a network namespace: {e}"))?;
        lab.created.push(switch.clone());
        run("ip", &["netns", "exec", &switch, "true"])
            .map_err(|e| format!("cannot run a program in a network namespace: {e}"))?;
        run(
            "ip",
            &["-n", &switch, "link", "add", "br0", "type", "bridge"],
        )
        .and_then(|()| run("ip", &["-n", &switch, "link", "set", "br0", "up"]))
        .map_err(|e| format!("cannot set up a bridge: {e}"))?;
        for (i, role) in roles.iter().enumerate() {
            let host = lab.ns(role);
            run("ip", &["netns", "add", &host])?;
            lab.created.push(host.clone());
            let port = format!("v-{role}");
            let addr = format!("10.78.0.{}/24", i + 1);
            for args in [
                vec![
                    "link", "add", "eth0", "netns", &host, "type", "veth", "peer", "name", &port,
                    "netns", &switch,
                ],
                vec!["-n", &switch, "link", "set", &port, "master", "br0"],
                vec!["-n", &switch, "link", "set", &port, "up"],
                vec!["-n", &host, "addr", "add", &addr, "dev", "eth0"],
                vec!["-n", &host, "link", "set", "eth0", "up"],
                vec!["-n", &host, "link", "set", "lo", "up"],
            ] {
                run("ip", &args).map_err(|e| format!("cannot plug a host into the bridge: {e}"))?;
            }
        }
        for role in shaped {
            let ns = lab.ns(role);
            run(
                "ip",
                &[
                    "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                    "rate", rate, "burst", "64kb", "latency", "400ms",
                ],
            )
            .map_err(|e| format!("cannot limit a link's rate with tc tbf: {e}"))?;
        }
        Ok(lab)
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn ip(&self, role: &str) -> String {
        let i = self.roles.iter().position(|r| r == role).unwrap();
        format!("10.78.0.{}", i + 1)
    }

    fn napster(&self, role: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(role)])
            .arg(napster_bin())
            .args(args);
        Proc::from_command(role, cmd)
    }

    fn tracker(&self) -> (Proc, SocketAddr) {
        let listen = format!("{}:0", self.ip("tracker"));
        let proc = self.napster("tracker", &["server", "--listen", &listen]);
        let line = proc.wait_for("Servidor ouvindo em ");
        let addr = line.rsplit(' ').next().unwrap().parse().unwrap();
        (proc, addr)
    }

    /// A joined peer on `role`'s host; returns it with its `IP:PORT`.
    fn peer(&self, role: &str, tracker: SocketAddr, dir: &Path, extra: &[&str]) -> (Proc, String) {
        let listen = format!("{}:0", self.ip(role));
        let server = tracker.to_string();
        let mut args = vec![
            "peer",
            "--server",
            &server,
            "--listen",
            &listen,
            "--dir",
            dir.to_str().unwrap(),
            "--join",
        ];
        args.extend_from_slice(extra);
        let proc = self.napster(role, &args);
        let line = proc.wait_for("Aguardando pedidos de download na porta ");
        let port: u16 = line
            .split("porta ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|p| p.parse().ok())
            .unwrap();
        let addr = format!("{}:{port}", self.ip(role));
        proc.wait_for(&format!("Sou o Peer {addr}"));
        (proc, addr)
    }

    /// Runs `f` on a thread inside `role`'s network namespace: sockets it creates live there.
    fn inside(&self, role: &str, f: &mut (dyn FnMut() + Send)) {
        let path = format!("/var/run/netns/{}", self.ns(role));
        thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap();
                // SAFETY: setns on this thread only, with a namespace file kept open.
                let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
                f();
            })
            .join()
            .unwrap();
        });
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

macro_rules! lab_or_skip {
    ($lab:expr) => {
        match $lab {
            Ok(lab) => lab,
            Err(why) => {
                skip(&why);
                return;
            }
        }
    };
}

/// A file in `holders`' folders (new, under `parent`), and an empty folder for the downloader.
fn shared_file(parent: &Path, holders: &[&str], size: u64) -> (Vec<PathBuf>, PathBuf) {
    let dirs: Vec<PathBuf> = holders
        .iter()
        .map(|h| {
            let d = parent.join(h);
            std::fs::create_dir(&d).unwrap();
            d
        })
        .collect();
    write_pattern(&dirs[0].join(NAME), size, 11);
    for d in &dirs[1..] {
        std::fs::copy(dirs[0].join(NAME), d.join(NAME)).unwrap();
    }
    let down = parent.join("down");
    std::fs::create_dir(&down).unwrap();
    (dirs, down)
}

/// The lines at the end of a download for the sources `addrs` (`fonte X: 12,0 MiB em ...`),
/// in that order, whatever order they were printed in.
fn source_lines(down: &Proc, addrs: &[&str]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let line_of = |seen: &[String], addr: &str| {
        seen.iter()
            .find(|l| l.contains(&format!("fonte {addr}:")))
            .cloned()
    };
    while addrs.iter().any(|a| line_of(&seen, a).is_none()) {
        seen.push(down.wait_for("  fonte "));
    }
    addrs.iter().map(|a| line_of(&seen, a).unwrap()).collect()
}

/// Three uploaders behind 50 Mbit/s links: each sends part of the file and the copy is
/// byte-exact.
#[test]
fn three_sources_across_hosts_each_send_part_and_the_file_is_exact() {
    let lab = lab_or_skip!(Lab::new(
        &["tracker", "a", "b", "c", "down"],
        &["a", "b", "c"],
        "50mbit"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, down_dir) = shared_file(tmp.path(), &["a", "b", "c"], 24 << 20);
    let (_t, taddr) = lab.tracker();
    let sources: Vec<(Proc, String)> = ["a", "b", "c"]
        .iter()
        .zip(&dirs)
        .map(|(role, dir)| lab.peer(role, taddr, dir, &["--approve", "yes"]))
        .collect();
    let (mut down, _) = lab.peer("down", taddr, &down_dir, &[]);
    search_and_download(&mut down);
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    let addrs: Vec<&str> = sources.iter().map(|(_, a)| a.as_str()).collect();
    for line in source_lines(&down, &addrs) {
        assert!(!line.contains(": 0 B em"), "a source sent nothing: {line}");
    }
    assert!(same_file(&dirs[0].join(NAME), &down_dir.join(NAME)));
}

/// A lying source among two honest ones, across hosts: named, dropped, the file exact.
#[test]
fn a_lying_source_across_hosts_is_detected_and_the_file_is_exact() {
    let lab = lab_or_skip!(Lab::new(
        &["tracker", "liar", "a", "b", "down"],
        &["a", "b"],
        "50mbit"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, down_dir) = shared_file(tmp.path(), &["a", "b"], 16 << 20);
    let (_t, taddr) = lab.tracker();
    let ip = lab.ip("liar");
    let liar = StandIn::start(
        &ip,
        taddr,
        &dirs[0].join(NAME),
        Behaviour::Lie(70_000),
        |f| lab.inside("liar", f),
    );
    let _a = lab.peer("a", taddr, &dirs[0], &["--approve", "yes"]);
    let _b = lab.peer("b", taddr, &dirs[1], &["--approve", "yes"]);
    let (mut down, _) = lab.peer("down", taddr, &down_dir, &[]);
    search_and_download(&mut down);
    down.wait_for(&format!("peer {} enviou dados inválidos", liar.addr));
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    assert!(same_file(&dirs[0].join(NAME), &down_dir.join(NAME)));
}

/// Waits for a progress line of `label` (`LABEL: P% ...`, one per quarter in plain mode) at
/// `at_least` percent or more, and returns it. A quarter may be passed over when the bar moves
/// more than that between two redraws (a loaded machine), so this never waits for one figure.
fn wait_for_progress(proc: &Proc, label: &str, at_least: u32) -> String {
    loop {
        let line = proc.wait_for(&format!("{label}: "));
        let percent: Option<u32> = line
            .split(": ")
            .nth(1)
            .and_then(|rest| rest.split('%').next())
            .and_then(|p| p.trim().parse().ok());
        if percent.is_some_and(|p| p >= at_least) {
            return line;
        }
    }
}

/// One of three uploaders is killed part way: its pieces are fetched from the other two and
/// the file is exact. Before that, `FONTES` shows the three sources and their rates. (Links
/// of 10 Mbit/s: the download takes about 7 s, so a loaded machine still kills the source
/// well before the end.)
#[test]
fn a_source_killed_half_way_across_hosts_is_replaced() {
    let lab = lab_or_skip!(Lab::new(
        &["tracker", "a", "b", "c", "down"],
        &["a", "b", "c"],
        "10mbit"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, down_dir) = shared_file(tmp.path(), &["a", "b", "c"], 24 << 20);
    let (_t, taddr) = lab.tracker();
    let mut sources: Vec<(Proc, String)> = ["a", "b", "c"]
        .iter()
        .zip(&dirs)
        .map(|(role, dir)| lab.peer(role, taddr, dir, &["--approve", "yes"]))
        .collect();
    let (mut down, _) = lab.peer("down", taddr, &down_dir, &[]);
    search_and_download(&mut down);
    wait_for_progress(&down, &format!("Download de {NAME} (3 fontes)"), 25);
    // On request, the sources at work and the rate of each.
    down.send("FONTES");
    down.wait_for(&format!("Download de {NAME}: "));
    for _ in 0..3 {
        let line = down.wait_for("  fonte 10.78.0.");
        assert!(line.ends_with("/s)"), "{line}");
    }
    let killed = sources[1].1.clone();
    sources[1].0.kill();
    down.wait_for(&format!("peer {killed} falhou"));
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    assert!(same_file(&dirs[0].join(NAME), &down_dir.join(NAME)));
}

/// One of three uploaders answers NAO: the download goes on with the other two.
#[test]
fn a_source_answering_nao_across_hosts_is_left_out() {
    let lab = lab_or_skip!(Lab::new(
        &["tracker", "a", "b", "c", "down"],
        &["a", "b", "c"],
        "50mbit"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, down_dir) = shared_file(tmp.path(), &["a", "b", "c"], 16 << 20);
    let (_t, taddr) = lab.tracker();
    let (_a, _) = lab.peer("a", taddr, &dirs[0], &["--approve", "yes"]);
    let (mut b, baddr) = lab.peer("b", taddr, &dirs[1], &[]);
    let (_c, _) = lab.peer("c", taddr, &dirs[2], &["--approve", "yes"]);
    let (mut down, _) = lab.peer("down", taddr, &down_dir, &[]);
    search_and_download(&mut down);
    b.wait_for("Gostaria de Aprovar o download? (SIM/NAO)");
    b.send("NAO");
    down.wait_for(&format!("peer {baddr} recusou o pedido"));
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    assert!(same_file(&dirs[0].join(NAME), &down_dir.join(NAME)));
}

/// A swarm download cut when both its sources are killed keeps its verified pieces; the next
/// `DOWNLOAD` resumes from them with the holder that is there then, and the file is exact.
#[test]
fn a_cut_swarm_download_resumes_from_its_pieces_with_other_holders() {
    let lab = lab_or_skip!(Lab::new(
        &["tracker", "a", "b", "c", "down"],
        &["a", "b", "c"],
        "20mbit"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, down_dir) = shared_file(tmp.path(), &["a", "b", "c"], 16 << 20);
    let (_t, taddr) = lab.tracker();
    let (mut a, _) = lab.peer("a", taddr, &dirs[0], &["--approve", "yes"]);
    let (mut b, _) = lab.peer("b", taddr, &dirs[1], &["--approve", "yes"]);
    let (mut down, _) = lab.peer("down", taddr, &down_dir, &[]);
    search_and_download(&mut down);
    down.wait_for(&format!("Download de {NAME} (2 fontes): 25%"));
    a.kill();
    b.kill();
    down.wait_for("as fontes acabaram antes do fim");
    assert!(!down_dir.join(NAME).exists());

    let (_c, caddr) = lab.peer("c", taddr, &dirs[2], &["--approve", "yes"]);
    let _d = lab.peer("a", taddr, &dirs[0], &["--approve", "yes"]);
    search_and_download(&mut down);
    let line = down.wait_for(&format!("Retomando o download de {NAME} com "));
    let kept: u64 = line
        .split(" com ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(kept >= 4 << 20, "{line}");
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    source_lines(&down, &[&caddr]);
    assert!(same_file(&dirs[0].join(NAME), &down_dir.join(NAME)));
}

// ---------------------------------------------------------------------------------------------
// The range protocol, byte for byte, against a real uploader.

/// A range session request (`DOWNLOAD_RANGES`) is answered with the chunk group and range
/// limit, then (after SIM)
/// OUTBOARD and RANGE requests, pipelined, on the one connection: the outboard checks against
/// the digest, each range is the file's bytes; a range that is not whole groups, too long, or
/// past the end, and an unknown method, get ERROR with no bytes and the session goes on; when
/// the downloader closes, the uploader says what it served.
#[test]
fn a_range_session_answers_outboard_and_ranges_and_refuses_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let [da] = folders(tmp.path(), ["a"]);
    let size: u64 = 3 * 65536 + 1000;
    write_pattern(&da.join(NAME), size, 5);
    let data = std::fs::read(da.join(NAME)).unwrap();
    let digest = blake3::hash(&data);
    let t = start_tracker(&[]);
    let up = holder("a", &t, &da, "yes");
    let mut c = RawClient::connect(format!("127.0.0.1:{}", up.port).parse().unwrap());
    let request = serde_json::json!({"method": "DOWNLOAD_RANGES", "data": {
        "filename": NAME, "port": up.port, "fromPort": 1}});
    let ok = c.ask(format!("{request}\n").as_bytes());
    assert_eq!(ok["status"], "OK", "{ok}");
    assert_eq!(ok["fileSize"], size);
    assert_eq!(ok["digest"], digest.to_hex().as_str());
    assert_eq!(ok["chunkGroup"], 65536);
    assert_eq!(ok["maxRange"], 16 << 20);
    assert_eq!(c.json()["status"], "downloadAccepted");

    c.send(b"{\"method\":\"OUTBOARD\",\"data\":{}}\n");
    let head = c.json();
    let len = head["length"].as_u64().unwrap();
    assert_eq!(len, verified::outboard_len(size));
    let outboard = c.bytes(len as usize);
    verified::receive_outboard(&mut &outboard[..], size, &digest, &mut std::io::sink()).unwrap();

    // Two ranges sent before reading either answer.
    c.send(b"{\"method\":\"RANGE\",\"data\":{\"offset\":65536,\"length\":65536}}\n{\"method\":\"RANGE\",\"data\":{\"offset\":196608,\"length\":1000}}\n");
    for (offset, length) in [(65536usize, 65536usize), (196608, 1000)] {
        let head = c.json();
        assert_eq!(
            (head["offset"].clone(), head["length"].clone()),
            (offset.into(), length.into())
        );
        assert_eq!(c.bytes(length), &data[offset..offset + length]);
    }
    for bad in [
        r#"{"method":"RANGE","data":{"offset":1,"length":65536}}"#,
        r#"{"method":"RANGE","data":{"offset":0,"length":65537}}"#,
        r#"{"method":"RANGE","data":{"offset":0,"length":33554432}}"#,
        r#"{"method":"RANGE","data":{"offset":262144,"length":65536}}"#,
        r#"{"method":"GET","data":{}}"#,
    ] {
        let reply = c.ask(format!("{bad}\n").as_bytes());
        assert_eq!(reply["status"], "ERROR", "{bad} → {reply}");
    }
    c.send(b"{\"method\":\"RANGE\",\"data\":{\"offset\":0,\"length\":65536}}\n");
    assert_eq!(c.json()["length"], 65536);
    assert_eq!(c.bytes(65536), &data[..65536]);
    // The uploader names the connection's address (the claimed port is only claimed).
    let from = c.stream.local_addr().unwrap();
    drop(c);
    up.wait_for(&format!(
        "Upload do arquivo {NAME} para {from} concluído ({} de {}, em partes)",
        napster::numbers::human_size(65536 + 1000 + 65536),
        napster::numbers::human_size(size)
    ));
}

/// The uploader's outboard comes from the read that gave the file's digest and is kept beside
/// the digest's record (`.napster/digests/<key>.obao`, key: the name's BLAKE3), ready before
/// any range session asks: that is what OUTBOARD sends. The old store by digest
/// (`.napster/outboard/`), which nothing ever cleaned, is deleted at start.
#[test]
fn the_outboard_is_kept_beside_the_digest_from_the_same_read() {
    let tmp = tempfile::tempdir().unwrap();
    let [da] = folders(tmp.path(), ["a"]);
    let size: u64 = 5 * 65536 + 77;
    write_pattern(&da.join(NAME), size, 26);
    let data = std::fs::read(da.join(NAME)).unwrap();
    let digest = blake3::hash(&data);
    let old_store = da.join(".napster/outboard");
    std::fs::create_dir_all(&old_store).unwrap();
    std::fs::write(
        old_store.join(format!("{}.obao", digest.to_hex())),
        b"stale",
    )
    .unwrap();
    let t = start_tracker(&[]);
    let up = holder("a", &t, &da, "yes");
    t.wait_for_group(NAME, digest.to_hex().as_str(), 1);
    assert!(!old_store.exists(), "the old store is gone");
    let key = &blake3::hash(NAME.as_bytes()).to_hex()[..32];
    let beside = da.join(".napster/digests").join(format!("{key}.obao"));
    let mut expected = Vec::new();
    verified::create_outboard(&data[..], size, &mut expected).unwrap();
    assert_eq!(std::fs::read(&beside).unwrap(), expected);

    let mut c = RawClient::connect(format!("127.0.0.1:{}", up.port).parse().unwrap());
    let request = serde_json::json!({"method": "DOWNLOAD_RANGES", "data": {
        "filename": NAME, "port": up.port, "fromPort": 1}});
    let ok = c.ask(format!("{request}\n").as_bytes());
    assert_eq!(ok["digest"], digest.to_hex().as_str(), "{ok}");
    assert_eq!(c.json()["status"], "downloadAccepted");
    let head = c.ask(b"{\"method\":\"OUTBOARD\",\"data\":{}}\n");
    assert_eq!(head["length"], expected.len());
    assert_eq!(c.bytes(expected.len()), expected);
}

/// An uploader that knows only whole-file downloads (it refuses the range session's method
/// as unknown) is not used for pieces; when no holder serves ranges, the download is the whole
/// file from one of them, verified end to end as before, and only that one's user is asked.
#[test]
fn without_range_holders_the_file_comes_whole_from_an_older_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, dd] = folders(tmp.path(), ["a", "d"]);
    write_pattern(&da.join(NAME), 1 << 20, 6);
    let data = std::fs::read(da.join(NAME)).unwrap();
    let t = start_tracker(&[]);
    let old: Vec<OlderUploader> = (0..2)
        .map(|_| OlderUploader::start(t.addr, data.clone()))
        .collect();
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    search_and_download(&mut down.proc);
    let line = down.wait_for("Nenhum peer aceita download em partes; baixando");
    assert!(
        old.iter().any(|o| line.contains(&o.addr.to_string())),
        "{line}"
    );
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    assert!(same_file(&da.join(NAME), &dd.join(NAME)));
    let asked: usize = old.iter().map(|o| o.asked.load(Ordering::SeqCst)).sum();
    assert_eq!(asked, 1, "only the peer the whole file came from was asked");
}

/// An older peer among holders that serve ranges: its user is never asked to approve a
/// request the downloader would close right after its OK (the range session's own method is
/// refused before anyone is asked); the others send the file. No holder has announced a
/// digest (the others are still hashing), so the tracker cannot group them by content and the
/// downloader asks each one (with digests known, the group would leave the older peer out).
#[test]
fn an_older_peer_among_range_holders_is_never_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let [da, dd] = folders(tmp.path(), ["a", "d"]);
    write_pattern(&da.join(NAME), 3 << 20, 13);
    let t = start_tracker(&[]);
    // Joined first, so it is the first holder the downloader asks.
    let old = OlderUploader::start(t.addr, std::fs::read(da.join(NAME)).unwrap());
    let _honest: Vec<StandIn> = (0..2)
        .map(|_| StandIn::still_hashing(t.addr, &da.join(NAME)))
        .collect();
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    search_and_download(&mut down.proc);
    down.wait_for("em partes: 3 fonte(s)");
    down.wait_for(&format!("Arquivo {NAME} baixado com sucesso"));
    let line = source_lines(&down.proc, &[&old.addr.to_string()]).remove(0);
    assert!(line.contains("só envia o arquivo inteiro"), "{line}");
    assert_eq!(old.asked.load(Ordering::SeqCst), 0, "its user was asked");
    assert!(same_file(&da.join(NAME), &dd.join(NAME)));
}

/// A stand-in for an uploader of an earlier version, JOINed with [`NAME`], behaving as those
/// did: a method other than `DOWNLOAD_REQUEST` gets `ERROR` ("unknown method ...") at once;
/// a `DOWNLOAD_REQUEST` (whatever else it holds) gets OK with size and digest (no chunk group),
/// then its user is asked (counted in `asked`; it always says yes), then the file.
struct OlderUploader {
    addr: SocketAddr,
    asked: Arc<AtomicUsize>,
}

impl OlderUploader {
    fn start(tracker: SocketAddr, data: Vec<u8>) -> OlderUploader {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut link = TcpStream::connect(tracker).unwrap();
        link.write_all(&join_msg(addr.port(), &[NAME])).unwrap();
        let mut line = String::new();
        BufReader::new(link.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("JOIN_OK"), "{line}");
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&asked);
        thread::spawn(move || {
            let _link = link;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let data = data.clone();
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    let mut line = String::new();
                    let _ = BufReader::new(stream).read_line(&mut line);
                    let request: serde_json::Value =
                        serde_json::from_str(&line).unwrap_or_default();
                    if request["method"] != "DOWNLOAD_REQUEST" {
                        let error = serde_json::json!({"status": "ERROR", "message": format!(
                            "unknown method {}; a peer's upload port only knows DOWNLOAD_REQUEST",
                            request["method"])});
                        let _ = out.write_all(format!("{error}\n").as_bytes());
                        return;
                    }
                    let ok = serde_json::json!({"status": "OK", "fileSize": data.len(),
                        "digest": blake3::hash(&data).to_hex().to_string(), "offset": 0});
                    let _ = out.write_all(format!("{ok}\n").as_bytes());
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = out.write_all(b"{\"status\":\"downloadAccepted\"}\n");
                    let _ = out.write_all(&data);
                });
            }
        });
        OlderUploader { addr, asked }
    }
}

/// Sources announcing a file larger than the folder's free space: refused before anything is
/// written (no partial, no outboard), with the original's error line.
#[test]
fn a_file_larger_than_the_free_space_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let [dd] = folders(tmp.path(), ["d"]);
    let t = start_tracker(&[]);
    let size: u64 = 1 << 39;
    for _ in 0..2 {
        boaster(t.addr, size);
    }
    let mut down = start_peer("d", t.addr, &dd, &[]);
    down.join();
    search_and_download(&mut down.proc);
    down.wait_for(&format!(
        "Erro ao processar download de {NAME}: espaço insuficiente"
    ));
    let partial = dd.join(".napster/partial");
    let left: Vec<_> = std::fs::read_dir(&partial)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// A stand-in JOINed with [`NAME`] that offers a range session of a `size`-byte file (a made-up
/// digest) and answers OUTBOARD with the right length, then nothing.
fn boaster(tracker: SocketAddr, size: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut link = TcpStream::connect(tracker).unwrap();
    link.write_all(&join_msg(addr.port(), &[NAME])).unwrap();
    let mut line = String::new();
    BufReader::new(link.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    thread::spawn(move || {
        let _link = link;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut input = BufReader::new(stream);
                let mut line = String::new();
                let _ = input.read_line(&mut line);
                let ok = serde_json::json!({"status": "OK", "fileSize": size,
                    "digest": blake3::hash(b"boast").to_hex().to_string(), "offset": 0,
                    "chunkGroup": 65536, "maxRange": 16 << 20});
                let _ = out
                    .write_all(format!("{ok}\n{{\"status\":\"downloadAccepted\"}}\n").as_bytes());
                line.clear();
                let _ = input.read_line(&mut line);
                let head =
                    serde_json::json!({"status": "OK", "length": verified::outboard_len(size)});
                let _ = out.write_all(format!("{head}\n").as_bytes());
                let _ = input.read_line(&mut line);
            });
        }
    });
    addr
}
