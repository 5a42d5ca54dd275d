//! A counting, fault-injecting HTTP/1.1 proxy in front of the registry.
//!
//! Requests are counted here, outside the verifier, so the registry-traffic budget is measured
//! independently of the code under test. Each request is parsed (keep-alive aware), recorded,
//! then either answered with an injected fault or forwarded to the upstream with reqwest and
//! the response relayed with an explicit `Content-Length`.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does with a request that the path filter selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward unchanged.
    Pass,
    /// Answer with this status and a small OCI error body, without contacting the registry.
    Status(u16),
    /// Hold the request this long, then forward it.
    Delay(Duration),
    /// Act like a token-auth registry (Docker Hub, GHCR): without `Authorization: Bearer
    /// <token>`, answer 401 with a Bearer challenge whose realm is this proxy's `/token`,
    /// which hands out the token (counted like every request).
    Bearer(String),
    /// Token auth with a guarded token endpoint: `/token` hands out `token` only to a request
    /// with `Authorization: Basic <basic>` (or a POSTed `refresh_token=<basic>`, a docker
    /// identity token), else 401; registry requests need `Bearer <token>`.
    TokenAuth { token: String, basic: String },
    /// Act like a registry with HTTP Basic auth: requests need `Authorization: Basic <this>`
    /// (base64 of `user:password`), else 401 with a Basic challenge.
    Basic(String),
    /// 429 Too Many Requests with `Retry-After: <this many seconds>`.
    RateLimited(u64),
    /// Every n-th selected request (the n-th, 2n-th, ...) gets the inner mode; the others pass.
    Every(usize, Box<Mode>),
    /// Requests whose target contains the needle get the first mode, the others the second.
    For(String, Box<Mode>, Box<Mode>),
    /// Read the request, then close the connection without an answer.
    Drop,
    /// Forward, but send only half of the body (announcing all of it), then close.
    Truncate,
    /// `307 Temporary Redirect` to `http://<this host:port><same target>`: to this proxy itself
    /// it is a redirect loop, to another proxy a cross-host redirect.
    Redirect(String),
    /// Answer bytes that are neither HTTP nor TLS, then close. Unfiltered, it is written as soon
    /// as a connection is accepted (so a TLS client reads it as its ServerHello).
    Garbage,
}

/// One request as the proxy received it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seen {
    pub method: String,
    /// Request target: path and query.
    pub path: String,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

struct State {
    /// This proxy's own `host:port` (the realm of its Bearer challenge).
    host: String,
    upstream: String,
    mode: Mutex<(Mode, Option<String>)>,
    seen: Mutex<Vec<Seen>>,
    client: reqwest::Client,
    /// Requests selected by the path filter since the mode was set (for `Mode::Every`).
    selected: AtomicUsize,
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// Connections that opened with a TLS handshake record (this proxy speaks plain HTTP).
    tls_hellos: AtomicUsize,
    /// The `Authorization` header of every request, in arrival order.
    authorizations: Mutex<Vec<(Seen, Option<String>)>>,
    /// Bumped by [`Proxy::pause`]: open connections close.
    shutdown: tokio::sync::watch::Sender<u64>,
}

pub struct Proxy {
    /// `127.0.0.1:PORT`, to be used as the image's registry.
    pub host: String,
    state: Arc<State>,
    task: JoinHandle<()>,
    /// The accept loop is stopped (see [`Proxy::pause`]).
    paused: Mutex<bool>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`host:port`, plain HTTP) on the current tokio runtime.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let host = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            host: host.clone(),
            upstream: upstream.to_string(),
            mode: Mutex::new((Mode::Pass, None)),
            seen: Mutex::new(Vec::new()),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            selected: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            tls_hellos: AtomicUsize::new(0),
            authorizations: Mutex::new(Vec::new()),
            shutdown: tokio::sync::watch::channel(0).0,
        });
        let task = accept_loop(listener, state.clone());
        Proxy {
            host,
            state,
            task,
            paused: Mutex::new(false),
        }
    }

    /// The registry goes down: the listening socket is closed (connections are refused) and
    /// open keep-alive connections are closed. Counts and mode are kept.
    pub fn pause(&mut self) {
        self.task.abort();
        *self.paused.lock().unwrap() = true;
        self.state.shutdown.send_modify(|g| *g += 1);
    }

    /// Listens again on the same port after [`pause`](Self::pause).
    pub async fn resume(&mut self) {
        if !std::mem::replace(&mut *self.paused.lock().unwrap(), false) {
            return;
        }
        // The aborted accept loop drops its listener at its next poll: retry briefly.
        let mut last = None;
        for _ in 0..100 {
            match TcpListener::bind(&self.host).await {
                Ok(listener) => {
                    self.task = accept_loop(listener, self.state.clone());
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("proxy {} could not listen again: {last:?}", self.host);
    }

    /// TCP connections accepted so far (requests that never parse, e.g. TLS, count here).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Connections that opened with a TLS handshake (answered with a plain-HTTP 400).
    pub fn tls_hellos(&self) -> usize {
        self.state.tls_hellos.load(Ordering::Relaxed)
    }

    /// Every request with the `Authorization` header it carried.
    pub fn authorizations(&self) -> Vec<(Seen, Option<String>)> {
        self.state.authorizations.lock().unwrap().clone()
    }

    /// Applies `mode` to every request.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = (mode, None);
        self.state.selected.store(0, Ordering::Relaxed);
    }

    /// Applies `mode` only to requests whose target contains `needle`; others pass.
    pub fn set_mode_for(&self, mode: Mode, needle: &str) {
        *self.state.mode.lock().unwrap() = (mode, Some(needle.to_string()));
        self.state.selected.store(0, Ordering::Relaxed);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn reset_requests(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address where nothing listens: bound to get a free port, then released.
pub fn refused_address() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap()
}

fn accept_loop(listener: TcpListener, state: Arc<State>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            state.connections.fetch_add(1, Ordering::Relaxed);
            let mut shutdown = state.shutdown.subscribe();
            let st = state.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = serve_connection(sock, st) => {}
                    _ = shutdown.changed() => {}
                }
            });
        }
    })
}

/// Neither HTTP nor a TLS record: what a confused middlebox might answer.
const GARBAGE: &[u8] = b"\x00\xff\xfe garbage, not a protocol \x01\x02\r\n\r\n";

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn serve_connection(sock: TcpStream, state: Arc<State>) {
    let (r, mut w) = sock.into_split();
    let mut reader = BufReader::new(r);
    if *state.mode.lock().unwrap() == (Mode::Garbage, None) {
        let _ = w.write_all(GARBAGE).await;
        return;
    }
    // A TLS ClientHello on this plain-HTTP port: answer as a plain HTTP server does.
    if matches!(reader.fill_buf().await, Ok([0x16, ..])) {
        state.tls_hellos.fetch_add(1, Ordering::Relaxed);
        let _ = w
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            )
            .await;
        return;
    }
    loop {
        let req = match read_request(&mut reader).await {
            Ok(Some(req)) => req,
            _ => return,
        };
        let seen = Seen {
            method: req.method.clone(),
            path: req.target.clone(),
        };
        state.seen.lock().unwrap().push(seen.clone());
        state.authorizations.lock().unwrap().push((
            seen,
            header(&req.headers, "authorization").map(str::to_string),
        ));
        let close =
            header(&req.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (mode, filter) = state.mode.lock().unwrap().clone();
        let mode = match filter {
            Some(needle) if !req.target.contains(&needle) => Mode::Pass,
            _ => mode,
        };
        let mode = match mode {
            Mode::For(needle, hit, miss) => {
                if req.target.contains(&needle) {
                    *hit
                } else {
                    *miss
                }
            }
            m => m,
        };
        let mode = match mode {
            Mode::Every(n, inner) => {
                let i = state.selected.fetch_add(1, Ordering::Relaxed) + 1;
                if n > 0 && i.is_multiple_of(n) {
                    *inner
                } else {
                    Mode::Pass
                }
            }
            m => m,
        };
        let response = match mode {
            Mode::Pass => forward(&state, req).await,
            Mode::Delay(d) => {
                tokio::time::sleep(d).await;
                forward(&state, req).await
            }
            Mode::Status(code) => fault(code, &req.method),
            Mode::Bearer(token) => bearer(&state, req, &token).await,
            Mode::TokenAuth { token, basic } => {
                let at_token = req.target.starts_with("/token");
                let basic_ok =
                    header(&req.headers, "authorization") == Some(&format!("Basic {basic}"));
                let refresh_ok = req.method == "POST"
                    && url::form_urlencoded::parse(&req.body)
                        .any(|(k, v)| k == "refresh_token" && v == basic.as_str());
                if at_token && !(basic_ok || refresh_ok) {
                    fault(403, &req.method)
                } else if at_token && req.method == "POST" {
                    let body = format!(r#"{{"access_token":"{token}"}}"#);
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                } else {
                    bearer(&state, req, &token).await
                }
            }
            Mode::Basic(credentials) => {
                if header(&req.headers, "authorization") == Some(&format!("Basic {credentials}")) {
                    forward(&state, req).await
                } else {
                    fault(401, &req.method)
                }
            }
            Mode::RateLimited(secs) => rate_limited(secs, &req.method),
            Mode::Drop => return,
            Mode::Truncate => {
                let mut out = forward(&state, req).await;
                if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                    let body = out.len() - (end + 4);
                    out.truncate(end + 4 + body / 2);
                }
                let _ = w.write_all(&out).await;
                return;
            }
            Mode::Redirect(to) => format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{to}{}\r\ncontent-length: 0\r\n\r\n",
                req.target
            )
            .into_bytes(),
            Mode::Garbage => {
                let _ = w.write_all(GARBAGE).await;
                return;
            }
            Mode::Every(..) | Mode::For(..) => fault(500, &req.method), // nested: unsupported
        };
        if w.write_all(&response).await.is_err() || w.flush().await.is_err() || close {
            return;
        }
    }
}

/// Reads one request (head and body); `None` at a clean end of the connection.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(std::io::Error::other(format!("bad request line {line:?}")));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 {
            return Ok(None);
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(r).await?
    } else {
        let len: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).await?;
        body
    };
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

async fn read_chunked<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).await?;
        let size = size.trim().split(';').next().unwrap_or("");
        let n = usize::from_str_radix(size, 16).map_err(std::io::Error::other)?;
        if n == 0 {
            // Trailers until the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t).await? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).await?;
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Forwards to the upstream and serializes the response (502 when the upstream fails).
async fn forward(state: &State, req: Request) -> Vec<u8> {
    let url = format!("http://{}{}", state.upstream, req.target);
    let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else {
        return fault(400, &req.method);
    };
    let is_head = method == reqwest::Method::HEAD;
    let mut rb = state.client.request(method, url);
    for (k, v) in &req.headers {
        if !HOP_BY_HOP.contains(&k.to_ascii_lowercase().as_str()) {
            rb = rb.header(k, v);
        }
    }
    if !req.body.is_empty() || matches!(req.method.as_str(), "PUT" | "POST" | "PATCH") {
        rb = rb.body(req.body);
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(_) => return fault(502, &req.method),
    };
    let status = resp.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut upstream_len = None;
    for (k, v) in resp.headers() {
        let name = k.as_str();
        if name == "content-length" {
            upstream_len = v.to_str().ok().map(str::to_string);
        }
        if HOP_BY_HOP.contains(&name) {
            continue;
        }
        head.push_str(&format!(
            "{}: {}\r\n",
            name,
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    // A HEAD answer keeps the upstream's length (it describes the GET body) and has no body.
    let len = if is_head {
        upstream_len.unwrap_or_else(|| "0".into())
    } else {
        body.len().to_string()
    };
    head.push_str(&format!("content-length: {len}\r\n\r\n"));
    let mut out = head.into_bytes();
    if !is_head {
        out.extend_from_slice(&body);
    }
    out
}

/// Token auth: `/token` issues the token; everything else needs it.
async fn bearer(state: &State, req: Request, token: &str) -> Vec<u8> {
    if req.target.starts_with("/token") {
        let body = format!(r#"{{"token":"{token}"}}"#);
        return format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
    }
    let expected = format!("Bearer {token}");
    if header(&req.headers, "authorization") == Some(expected.as_str()) {
        return forward(state, req).await;
    }
    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
    let mut out = format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nwww-authenticate: Bearer realm=\"http://{}/token\",service=\"test\"\r\ncontent-length: {}\r\n\r\n",
        state.host,
        body.len()
    )
    .into_bytes();
    if req.method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// 429 with an OCI `TOOMANYREQUESTS` body and `Retry-After: secs`.
fn rate_limited(secs: u64, method: &str) -> Vec<u8> {
    let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"injected rate limit"}]}"#;
    let mut out = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: {secs}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// An injected fault: the status, an OCI error body, and the headers clients key on.
fn fault(code: u16, method: &str) -> Vec<u8> {
    let (oci_code, extra) = match code {
        401 => ("UNAUTHORIZED", "www-authenticate: Basic realm=\"test\"\r\n"),
        429 => ("TOOMANYREQUESTS", "retry-after: 1\r\n"),
        _ => ("UNKNOWN", ""),
    };
    let body = format!(
        r#"{{"errors":[{{"code":"{oci_code}","message":"injected fault {code}","detail":null}}]}}"#
    );
    let reason = reqwest::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Fault");
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}
