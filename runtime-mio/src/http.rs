//! A deliberately small HTTP/1.1 server and client for `GET /status` and
//! `GET /metrics` on the status address: one request per connection, no
//! bodies accepted, and the request head bounded in size and in time, so a
//! stuck or hostile client holds the serving thread two seconds at most.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the server hands out; the daemon replaces it after each change.
#[derive(Debug, Clone, Default)]
pub struct Pages {
    /// The `/status` body (JSON).
    pub status: String,
    /// The `/metrics` body (Prometheus text).
    pub metrics: String,
}

/// The shared, replaceable pages.
pub type SharedPages = Arc<Mutex<Arc<Pages>>>;

/// A running status server.
#[derive(Debug)]
pub struct StatusServer {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const READ_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_REQUEST_HEAD: u64 = 8 * 1024;

impl StatusServer {
    /// Listens on `listen` and serves `pages` until dropped.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start(listen: SocketAddr, pages: SharedPages) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("status-http".to_owned())
            .spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let pages = pages.lock().map(|p| p.clone()).unwrap_or_default();
                    if let Err(err) = answer(stream, &pages) {
                        tracing::debug!(error = %err, "status request failed");
                    }
                }
            })?;
        Ok(Self {
            local,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_millis(200));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(stream: TcpStream, pages: &Pages) -> io::Result<()> {
    // One deadline for the whole request head, so a client trickling bytes
    // cannot hold the (single) serving thread for longer than that.
    let deadline = Instant::now() + READ_TIMEOUT;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "request head too slow"))
    };
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    // Read the head in chunks, checking the deadline between reads (a
    // per-read timeout alone lets one byte per interval go on forever).
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        stream.set_read_timeout(Some(remaining()?))?;
        let n = (&stream).read(&mut chunk)?;
        head.extend_from_slice(&chunk[..n]);
        let ended =
            head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
        if n == 0 || ended || head.len() as u64 >= MAX_REQUEST_HEAD {
            break;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/status") => ("200 OK", "application/json", pages.status.as_str()),
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            pages.metrics.as_str(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "try /status or /metrics\n"),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n"),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// `GET path` from a status server; returns the HTTP status code and body.
///
/// # Errors
/// Connection, timeout or protocol errors.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .take(64 * 1024 * 1024)
        .read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no end of HTTP headers"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status code"))?;
    Ok((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_status_and_metrics_and_refuses_the_rest() {
        let pages: SharedPages = Arc::new(Mutex::new(Arc::new(Pages {
            status: "{\"node\":{}}".to_owned(),
            metrics: "m 1\n".to_owned(),
        })));
        let server = StatusServer::start("127.0.0.1:0".parse().unwrap(), pages.clone()).unwrap();
        let addr = server.local_addr();
        let t = Duration::from_secs(2);
        assert_eq!(
            get(addr, "/status", t).unwrap(),
            (200, "{\"node\":{}}".to_owned())
        );
        assert_eq!(get(addr, "/metrics", t).unwrap(), (200, "m 1\n".to_owned()));
        assert_eq!(get(addr, "/nope", t).unwrap().0, 404);
        *pages.lock().unwrap() = Arc::new(Pages {
            status: "{}".to_owned(),
            metrics: String::new(),
        });
        assert_eq!(get(addr, "/status", t).unwrap().1, "{}");
        drop(server);
        assert!(
            get(addr, "/status", Duration::from_millis(300)).is_err(),
            "stopped on drop"
        );
    }

    #[test]
    fn a_trickling_client_holds_the_server_for_the_deadline_only() {
        let pages: SharedPages = Arc::new(Mutex::new(Arc::new(Pages {
            status: "{}".to_owned(),
            metrics: String::new(),
        })));
        let server = StatusServer::start("127.0.0.1:0".parse().unwrap(), pages).unwrap();
        let addr = server.local_addr();
        let mut slow = TcpStream::connect(addr).unwrap();
        let trickle = std::thread::spawn(move || {
            // One byte every 500 ms, never finishing the head.
            for b in b"GET /status HTTP/1.1\r\nX: " {
                if slow.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let (code, _) = get(addr, "/status", Duration::from_secs(10)).unwrap();
        assert_eq!(code, 200);
        assert!(
            started.elapsed() < READ_TIMEOUT + Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        drop(server);
        let _ = trickle.join();
    }
}
