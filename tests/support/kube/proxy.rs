//! A counting, fault-injecting HTTP proxy in front of the real kube-apiserver.
//!
//! The operator under test talks plain HTTP to this proxy; the proxy forwards every request to
//! the API server over TLS, streaming the answer (watches stay open), and records what it saw.
//! Counting here, outside the operator, measures its API traffic independently of its own
//! bookkeeping. Faults the real server cannot produce on demand (5xx, 409 storms, slow answers,
//! cut watches) are injected for the requests a filter selects.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

/// What the proxy does with a selected request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a Kubernetes `Status` body, without forwarding.
    Status(u16),
    /// Hold the request this long, then forward it.
    Delay(Duration),
    /// Forward, but end the answer's body after this long (a watch cut mid-stream).
    Cut(Duration),
    /// Answer `200` with one watch `ERROR` event carrying a `Status` of this code, then end,
    /// without forwarding: what the real server sends for a watch from a resourceVersion it
    /// no longer has (410 `Expired`).
    WatchError(u16),
}

/// Which requests a fault applies to: a method (or any) and a substring of the path.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Option<String>,
    pub path_contains: String,
    pub fault: Fault,
    /// How many more requests it applies to (`None`: all).
    pub remaining: Option<usize>,
}

/// One request as the proxy received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The request body (writes only; empty for GET).
    pub body: String,
    /// The request's `Content-Type` (empty when none): a server-side apply is
    /// `application/apply-patch+yaml`, a merge patch `application/merge-patch+json`.
    pub content_type: String,
    /// The answer's status code (as forwarded or injected; 502 when the server did not answer).
    pub status: u16,
}

impl Seen {
    /// A request that changes something (everything but GET/HEAD/OPTIONS).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    rules: Mutex<Vec<Rule>>,
    /// Requests held by a `Delay` fault (whether or not their client waited for the answer).
    held: std::sync::atomic::AtomicUsize,
    /// Rules selecting requests by a predicate on (method, path and query), checked after
    /// `rules`.
    filters: Mutex<Vec<FilterRule>>,
    /// Bumped by [`ApiProxy::cut_open`]: every answer body streaming then ends.
    cut: CutSignal,
}

/// A predicate on (method, path and query).
type Select = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// A fault for the requests a predicate on (method, path and query) selects.
struct FilterRule {
    select: Select,
    fault: Fault,
    remaining: Option<usize>,
}

struct CutSignal(tokio::sync::watch::Sender<u64>);

impl Default for CutSignal {
    fn default() -> Self {
        CutSignal(tokio::sync::watch::channel(0).0)
    }
}

pub struct ApiProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiProxy {
    /// Starts a proxy to `upstream` (`https://127.0.0.1:PORT`) on the current runtime.
    pub async fn start(upstream: &str) -> ApiProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(State::default());
        let client = reqwest::Client::builder()
            // The test API server's own self-signed serving certificate.
            .danger_accept_invalid_certs(true)
            .no_proxy()
            .build()
            .expect("proxy client");
        let upstream = upstream.trim_end_matches('/').to_string();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (st, client, upstream) = (st.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, st.clone(), client.clone(), upstream.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ApiProxy { url, state, task }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The writes so far (POST, PUT, PATCH, DELETE).
    pub fn writes(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(Seen::is_write).collect()
    }

    /// Writes whose path contains `needle`.
    pub fn writes_to(&self, needle: &str) -> Vec<Seen> {
        self.writes()
            .into_iter()
            .filter(|s| s.path.contains(needle))
            .collect()
    }

    pub fn reset(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    /// Adds a fault rule (applied in the order added; the first that matches wins).
    pub fn inject(&self, rule: Rule) {
        self.state.rules.lock().unwrap().push(rule);
    }

    /// A fault for every request whose path contains `needle`, any method.
    pub fn fail(&self, needle: &str, fault: Fault) {
        self.inject(Rule {
            method: None,
            path_contains: needle.into(),
            fault,
            remaining: None,
        });
    }

    /// Requests a `Delay` fault has held so far.
    pub fn held(&self) -> usize {
        self.state.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn clear_faults(&self) {
        self.state.rules.lock().unwrap().clear();
        self.state.filters.lock().unwrap().clear();
    }

    /// A fault for the requests `select(method, path_and_query)` picks, for `remaining` of
    /// them (`None`: all). Checked after the [`Rule`]s, in the order added.
    pub fn inject_where(
        &self,
        select: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
        fault: Fault,
        remaining: Option<usize>,
    ) {
        self.state.filters.lock().unwrap().push(FilterRule {
            select: Box::new(select),
            fault,
            remaining,
        });
    }

    /// A fault for writes (POST, PUT, PATCH, DELETE) whose path contains `needle`; reads,
    /// lists and watches of the same resources pass.
    pub fn fail_writes(&self, needle: &str, fault: Fault, remaining: Option<usize>) {
        let needle = needle.to_string();
        self.inject_where(
            move |method, path| {
                !matches!(method, "GET" | "HEAD" | "OPTIONS") && path.contains(&needle)
            },
            fault,
            remaining,
        );
    }

    /// Ends every answer body streaming now (open watches end, as when the server or a load
    /// balancer closes them); later requests are not affected.
    pub fn cut_open(&self) {
        self.state.cut.0.send_modify(|n| *n += 1);
    }
}

/// Whether a request is a watch (`watch=true` or `watch=1` in its query).
pub fn is_watch(method: &str, path: &str) -> bool {
    method == "GET"
        && path
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

/// Whether a request lists a collection whose path (without the query) ends with `/<plural>`
/// (any namespace or all of them): a GET that is not a watch.
pub fn is_list_of(method: &str, path: &str, plural: &str) -> bool {
    let bare = path.split_once('?').map_or(path, |(p, _)| p);
    method == "GET" && bare.ends_with(&format!("/{plural}")) && !is_watch(method, path)
}

/// Whether a request watches a collection whose path ends with `/<plural>`.
pub fn is_watch_of(method: &str, path: &str, plural: &str) -> bool {
    let bare = path.split_once('?').map_or(path, |(p, _)| p);
    bare.ends_with(&format!("/{plural}")) && is_watch(method, path)
}

fn fault_for(state: &State, method: &str, path: &str) -> Option<Fault> {
    let mut rules = state.rules.lock().unwrap();
    let rule = rules.iter_mut().find(|r| {
        r.method.as_deref().is_none_or(|m| m == method)
            && path.contains(&r.path_contains)
            && r.remaining != Some(0)
    });
    if let Some(rule) = rule {
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        return Some(rule.fault.clone());
    }
    drop(rules);
    let mut filters = state.filters.lock().unwrap();
    let rule = filters
        .iter_mut()
        .find(|r| r.remaining != Some(0) && (r.select)(method, path))?;
    if let Some(n) = rule.remaining.as_mut() {
        *n -= 1;
    }
    Some(rule.fault.clone())
}

fn full(status: u16, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .expect("response")
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    client: reqwest::Client,
    upstream: String,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut seen = Seen {
        method: method.clone(),
        path: path.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        content_type: headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        status: 0,
    };
    let mut record = |status: u16| {
        seen.status = status;
        state.seen.lock().unwrap().push(seen.clone());
    };
    let fault = fault_for(&state, &method, &path);
    match &fault {
        Some(Fault::Status(code)) => {
            let reason = match code {
                409 => "Conflict",
                410 => "Expired",
                429 => "TooManyRequests",
                500 => "InternalError",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "Unknown",
            };
            let body = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("injected {code}"),
                "reason": reason, "code": code,
            });
            record(*code);
            return Ok(full(*code, body.to_string()));
        }
        Some(Fault::WatchError(code)) => {
            let event = serde_json::json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("injected watch error {code}"),
                "reason": if *code == 410 { "Expired" } else { "Unknown" }, "code": code,
            }});
            record(200);
            return Ok(full(200, format!("{event}\n")));
        }
        Some(Fault::Delay(d)) => {
            state.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(*d).await;
        }
        _ => {}
    }
    let mut out = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
        format!("{upstream}{path}"),
    );
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let answer = match out.body(body).send().await {
        Ok(a) => a,
        Err(e) => {
            record(502);
            return Ok(full(502, format!("{{\"proxy\":\"{e}\"}}")));
        }
    };
    record(answer.status().as_u16());
    let mut resp = Response::builder().status(answer.status().as_u16());
    for (k, v) in answer.headers() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            resp = resp.header(k, v);
        }
    }
    let stream = answer
        .bytes_stream()
        .map(|c| c.map(Frame::data).map_err(std::io::Error::other));
    // Every body ends at `cut_open`; a `Cut` fault's also after its time.
    let mut cut = state.cut.0.subscribe();
    let cut_now = async move {
        let _ = cut.changed().await;
    };
    let body: Body = match fault {
        Some(Fault::Cut(after)) => {
            let deadline = tokio::time::Instant::now() + after;
            let end = async move {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = cut_now => {}
                }
            };
            BodyExt::boxed(StreamBody::new(stream.take_until(end)))
        }
        _ => BodyExt::boxed(StreamBody::new(stream.take_until(cut_now))),
    };
    Ok(resp.body(body).expect("response"))
}
