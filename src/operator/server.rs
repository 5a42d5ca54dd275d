//! The operator's tiny HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.
//!
//! Plain HTTP/1.1 on hyper directly (no framework): three fixed routes, no request bodies read,
//! one short-lived connection per request. Every connection is bounded in count and time so a
//! slow or hostile client on the pod network cannot pin the operator's memory or tasks.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Content type of the OpenMetrics text exposition that [`Metrics::encode`] produces.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once; further clients wait in the kernel's accept backlog.
const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Hard cap on one connection's lifetime, whatever the client does.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Request line plus headers; our routes need a few hundred bytes.
const MAX_REQUEST_BUF: usize = 16 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) so we do not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Readiness shared between the operator and `/readyz`. Cheap to clone; starts not ready.
///
/// Liveness (`/healthz`) needs no state: answering at all proves the process runs.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Serves the endpoints on `listener` until the future is dropped.
///
/// Failed accepts are logged and retried, so this returns only if the listener itself is
/// unusable; stop it by dropping the future (e.g. in a `select!` with the shutdown signal).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // The semaphore is never closed; if it were, stop serving rather than panic.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let response = route(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BUF)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "http connection error"),
                Err(_) => tracing::debug!("http connection timed out"),
            }
        });
    }
}

/// Maps a request to its response; the request body is never read.
fn route(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            // Readiness lives in `Health`; mirror it at scrape time so the gauge is never stale.
            metrics.set_ready(health.ready());
            let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            response
        }
        "/readyz" if !health.ready() => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::OK, "ok\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start() -> (
        String,
        Arc<Metrics>,
        Health,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let metrics = Arc::new(Metrics::new());
        let health = Health::new();
        let task = tokio::spawn(serve(listener, metrics.clone(), health.clone()));
        (base, metrics, health, task)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let (base, metrics, health, task) = start().await;
        let http = client();
        metrics.cache_hit();

        let r = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok\n");

        let r = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        health.set_ready(true);
        let r = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        health.set_ready(false);
        let r = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);

        let r = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
        let body = r.text().await.unwrap();
        assert!(body.contains("imageposture_cache_hits_total 1\n"), "{body}");
        assert!(body.ends_with("# EOF\n"));
        // Readiness was set back to false above; the scrape mirrors it, then follows it.
        assert!(body.contains("imageposture_ready 0\n"), "{body}");
        health.set_ready(true);
        let body = http.get(format!("{base}/metrics")).send().await.unwrap();
        let body = body.text().await.unwrap();
        assert!(body.contains("imageposture_ready 1\n"), "{body}");

        let r = http.get(format!("{base}/nope")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let r = http
            .post(format!("{base}/metrics"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        let r = http.head(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);

        task.abort();
    }

    #[test]
    fn health_clones_share_state() {
        let a = Health::new();
        let b = a.clone();
        assert!(!b.ready());
        a.set_ready(true);
        assert!(b.ready());
    }
}
