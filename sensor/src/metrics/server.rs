//! The tiny HTTP endpoint: `GET /metrics` and `GET /healthz` on a local address.
//!
//! std only: one accept thread (non-blocking accept polled with the stop flag) and
//! one short-lived thread per connection, at most [`MAX_CONNECTIONS`] at a time.
//! Every connection has read/write timeouts and an overall deadline, requests are
//! bounded to [`MAX_REQUEST_BYTES`], responses always close the connection, and no
//! input can make it panic.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::config::MetricsConfig;
use super::health::Health;
use super::registry::Metrics;

/// Largest request head accepted (request line + headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Connections served at the same time; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Could not listen on the configured address.
    #[error("metrics endpoint: cannot listen on {addr}: {source} (set [metrics] listen to a free address or enabled = false)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Could not configure the socket or start the thread.
    #[error("metrics endpoint: {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A handle that stops the server from anywhere (e.g. a signal handler thread).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the server to stop; it stops accepting within a few tens of milliseconds.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The running endpoint. Dropping it stops it (and waits for the accept thread).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `cfg.listen` (port 0 picks a free port: see [`local_addr`](Self::local_addr))
    /// and serves `metrics` and `health` until stopped. Does not look at `cfg.enabled`.
    pub fn start(
        cfg: &MetricsConfig,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<MetricsServer, ServerError> {
        let listener = TcpListener::bind(cfg.listen).map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Setup {
            what: "reading local address",
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Setup {
                what: "setting listener non-blocking",
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("gw-metrics".into())
            .spawn(move || accept_loop(listener, stop2, metrics, health))
            .map_err(|source| ServerError::Setup {
                what: "starting thread",
                source,
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that can stop the server from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.stop))
    }

    /// Stops accepting and waits for the accept thread. Connections in flight finish
    /// on their own within their timeouts.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _peer)) => {
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (m, h, a) = (
                    Arc::clone(&metrics),
                    Arc::clone(&health),
                    Arc::clone(&active),
                );
                let spawned =
                    thread::Builder::new()
                        .name("gw-metrics-conn".into())
                        .spawn(move || {
                            let _ = serve(stream, &m, &h);
                            a.fetch_sub(1, Ordering::SeqCst);
                        });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                thread::sleep(POLL * 4);
            }
        }
    }
}

/// What the request head asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Get { path: String, head_only: bool },
    BadMethod,
    Bad,
    TooLarge,
}

/// Reads one request head (until a blank line), bounded in size and time.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let start = Instant::now();
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            return Ok(Some(parse_head(&buf[..end])));
        }
        if len == buf.len() {
            return Ok(Some(Request::TooLarge));
        }
        if start.elapsed() > DEADLINE {
            return Ok(None);
        }
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(None);
        }
        len += n;
    }
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| b.windows(2).position(|w| w == b"\n\n"))
}

fn parse_head(head: &[u8]) -> Request {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or("").to_owned();
    match method {
        "GET" => Request::Get {
            path,
            head_only: false,
        },
        "HEAD" => Request::Get {
            path,
            head_only: true,
        },
        _ => Request::BadMethod,
    }
}

fn serve(mut stream: TcpStream, metrics: &Metrics, health: &Health) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(req) = read_head(&mut stream)? else {
        return Ok(());
    };
    let text = "text/plain; charset=utf-8";
    let (status, ctype, body, head_only) = match req {
        Request::Get { path, head_only } => match path.as_str() {
            "/metrics" => {
                let mut body = metrics.render();
                health.render(&mut body);
                (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    body,
                    head_only,
                )
            }
            "/healthz" => {
                let st = health.status();
                if st.is_healthy() {
                    ("200 OK", text, "ok\n".to_owned(), head_only)
                } else {
                    (
                        "503 Service Unavailable",
                        text,
                        st.reasons.join("\n") + "\n",
                        head_only,
                    )
                }
            }
            "/" => (
                "200 OK",
                text,
                "gatewatch: see /metrics and /healthz\n".to_owned(),
                head_only,
            ),
            _ => (
                "404 Not Found",
                text,
                "not found: try /metrics or /healthz\n".to_owned(),
                head_only,
            ),
        },
        Request::BadMethod => (
            "405 Method Not Allowed",
            text,
            "only GET and HEAD\n".to_owned(),
            false,
        ),
        Request::Bad => ("400 Bad Request", text, "bad request\n".to_owned(), false),
        Request::TooLarge => (
            "431 Request Header Fields Too Large",
            text,
            "request too large\n".to_owned(),
            false,
        ),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        resp.push_str("Allow: GET, HEAD\r\n");
    }
    resp.push_str("\r\n");
    if !head_only {
        resp.push_str(&body);
    }
    stream.write_all(resp.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n"),
            Request::Get {
                path: "/metrics".into(),
                head_only: false
            }
        );
        assert_eq!(
            parse_head(b"HEAD /healthz HTTP/1.0"),
            Request::Get {
                path: "/healthz".into(),
                head_only: true
            }
        );
        assert_eq!(parse_head(b"POST /metrics HTTP/1.1"), Request::BadMethod);
        assert_eq!(parse_head(b"GET /metrics"), Request::Bad);
        assert_eq!(parse_head(b"GET metrics HTTP/1.1"), Request::Bad);
        assert_eq!(parse_head(b"\xff\xfe GET"), Request::Bad);
        assert_eq!(parse_head(b""), Request::Bad);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(14));
    }
}
