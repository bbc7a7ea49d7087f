//! The uploader's side of a range session (see [`crate::protocol::ranges`]): after its user
//! approved the request once, it answers OUTBOARD and RANGE requests on that connection until
//! the downloader closes it. File bytes and the outboard go out with `sendfile`.

use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::peer::PeerContext;
use crate::peer::progress::Progress;
use crate::protocol::messages::{Reply, Status};
use crate::protocol::ranges::{self, RangeRequest};
use crate::protocol::{CodecError, FrameReader, TimedRead};
use crate::transfer;
use crate::verified::CHUNK_GROUP;

/// How long a session may wait for the downloader's next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request line may take to arrive whole.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests answered with ERROR before the session is closed: a downloader that keeps asking
/// for what cannot be served is not worth a thread.
const MAX_ERRORS: u32 = 16;

/// What a session served.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// File bytes sent.
    pub bytes: u64,
    /// Ranges sent.
    pub ranges: u64,
    /// The downloader asked nothing more for the idle limit, every request answered: the
    /// session was ended as finished (a source left with nothing to fetch near the end of a
    /// long download), not as failed.
    pub ended_idle: bool,
}

/// The file a session serves.
pub struct SessionFile<'a> {
    /// The shared file, open.
    pub file: &'a File,
    /// Its size when the session started.
    pub size: u64,
    /// Its outboard, open.
    pub outboard: &'a File,
}

/// Serves a range session on an approved connection, then says how it ended. `stop` is the
/// upload's own flag (QUIT, or CANCELAR of this upload).
pub fn serve_session<R: TimedRead>(
    ctx: &PeerContext,
    stream: &TcpStream,
    reader: &mut FrameReader<R>,
    name: &str,
    from: SocketAddr,
    session: &SessionFile<'_>,
    stop: &AtomicBool,
) {
    let size = session.size;
    let label = format!("Upload de {name} (partes) para {from}");
    let mut progress = Progress::new(Arc::clone(&ctx.out), label, size, 0);
    let served = serve(stream, reader, session, stop, IDLE_TIMEOUT, &mut |sent| {
        progress.update(sent)
    });
    drop(progress);
    match served {
        Ok(served) => {
            log::info!("sent {} ranges of {name} to {from}", served.ranges);
            let idle = if served.ended_idle {
                format!(
                    "; sessão encerrada após {} s sem pedidos",
                    IDLE_TIMEOUT.as_secs()
                )
            } else {
                String::new()
            };
            ctx.out.line(&format!(
                "Upload do arquivo {name} para {from} concluído ({} de {}, em partes{idle})",
                crate::numbers::human_size(served.bytes),
                crate::numbers::human_size(size)
            ));
        }
        Err(e) => {
            log::debug!("range session for {name} with {from} ended: {e}");
            ctx.out.line(&format!(
                "Upload do arquivo {name} para {from} interrompido: {e}"
            ));
        }
    }
}

/// Serves requests from `stream` until the downloader closes it, or asks nothing more for
/// `idle_timeout` with every request answered (`Ok`: nothing was left undone), or the
/// connection fails, a request stalls half way, or the session is stopped (`Err`, with what
/// was served so far in the log). `reader` is the one the request came through (it may hold
/// the next requests already).
pub fn serve<R: TimedRead>(
    stream: &TcpStream,
    reader: &mut FrameReader<R>,
    served_file: &SessionFile<'_>,
    stop: &AtomicBool,
    idle_timeout: Duration,
    progress: &mut dyn FnMut(u64),
) -> io::Result<Served> {
    reader.set_idle_timeout(Some(idle_timeout));
    reader.set_message_timeout(Some(REQUEST_TIMEOUT));
    let mut served = Served::default();
    let mut errors = 0;
    loop {
        let request = match reader.next_frame() {
            Ok(Some(frame)) => ranges::parse_range_request(frame),
            Ok(None) => return Ok(served),
            Err(CodecError::Idle) => {
                // The connection closes: its thread is given back, and the downloader, which
                // has nothing in flight, sees the session end cleanly.
                served.ended_idle = true;
                return Ok(served);
            }
            Err(CodecError::Io(e)) => return Err(e),
            Err(e) => return Err(io::Error::new(io::ErrorKind::TimedOut, e.to_string())),
        };
        let answered = match request {
            Ok(RangeRequest::Outboard) => send_outboard(stream, served_file, stop),
            Ok(RangeRequest::Range { offset, length }) => {
                match ranges::check_range(offset, length, served_file.size, CHUNK_GROUP) {
                    Ok(()) => {
                        let before = served.bytes;
                        let sent =
                            send_piece(stream, served_file.file, offset, length, stop, &mut |n| {
                                progress(before + n)
                            });
                        if sent.is_ok() {
                            served.bytes += length;
                            served.ranges += 1;
                        }
                        sent.map(|()| true)
                    }
                    Err(why) => refuse(stream, why.to_string()),
                }
            }
            Err(why) => refuse(stream, why.to_string()),
        };
        if !answered? {
            errors += 1;
            if errors >= MAX_ERRORS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{MAX_ERRORS} requests could not be served"),
                ));
            }
        }
    }
}

/// Answers ERROR; `Ok(false)` when that was written.
fn refuse(stream: &TcpStream, why: String) -> io::Result<bool> {
    log::debug!("range request refused: {why}");
    (&*stream).write_all(&Reply::error(why).to_line())?;
    Ok(false)
}

fn send_outboard(
    stream: &TcpStream,
    file: &SessionFile<'_>,
    stop: &AtomicBool,
) -> io::Result<bool> {
    let length = file.outboard.metadata()?.len();
    let header = Reply {
        status: Status::Ok,
        length: Some(length),
        ..Reply::default()
    };
    (&*stream).write_all(&header.to_line())?;
    transfer::send_range(file.outboard, 0, length, stream, stop, &mut |_| {})?;
    Ok(true)
}

fn send_piece(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    length: u64,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let header = Reply {
        status: Status::Ok,
        offset: Some(offset),
        length: Some(length),
        ..Reply::default()
    };
    (&*stream).write_all(&header.to_line())?;
    transfer::send_range(file, offset, length, stream, stop, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;
    use std::os::unix::fs::FileExt;

    /// A session whose downloader, every request answered, asks nothing more for the idle
    /// limit ends as served (with `ended_idle`), not as failed, and the downloader sees the
    /// connection closed after the last range, whole.
    #[test]
    fn an_idle_end_with_every_request_answered_is_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3 * CHUNK_GROUP).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let outboard = File::open(&path).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let downloader = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"{\"method\":\"RANGE\",\"data\":{\"offset\":0,\"length\":65536}}\n")
                .unwrap();
            let mut input = BufReader::new(c.try_clone().unwrap());
            let mut head = String::new();
            input.read_line(&mut head).unwrap();
            let mut piece = vec![0u8; 65536];
            input.read_exact(&mut piece).unwrap();
            // Asks nothing more: the uploader ends the session; the end of the stream follows.
            let mut rest = Vec::new();
            input.read_to_end(&mut rest).unwrap();
            (head, piece, rest)
        });
        let (stream, _) = listener.accept().unwrap();
        let mut reader = FrameReader::new(&stream, 4096);
        let session = SessionFile {
            file: &file,
            size: data.len() as u64,
            outboard: &outboard,
        };
        let never = AtomicBool::new(false);
        let served = serve(
            &stream,
            &mut reader,
            &session,
            &never,
            Duration::from_millis(200),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(
            served,
            Served {
                bytes: 65536,
                ranges: 1,
                ended_idle: true
            }
        );
        // The caller drops the connection after `serve` (here, the test): the downloader then
        // reads the end of the stream.
        drop(reader);
        drop(stream);
        let (head, piece, rest) = downloader.join().unwrap();
        assert!(head.contains("\"length\":65536"), "{head}");
        let mut expected = vec![0u8; 65536];
        file.read_exact_at(&mut expected, 0).unwrap();
        assert_eq!(piece, expected);
        assert!(rest.is_empty());
    }
}
