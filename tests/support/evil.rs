//! A hostile registry on 127.0.0.1: answers each request with whatever the test's handler says,
//! byte for byte, and logs every request target. Plain HTTP/1.1, one request per connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as received: method and target (path and query).
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub target: String,
}

/// What to answer.
pub enum Answer {
    /// Status, headers (name, value) and body; `Content-Length` is added.
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// 200 with these headers, then `chunk` repeated up to `total` bytes, no Content-Length
    /// (the body ends when the connection closes): a stream that is too large to hold.
    Stream(Vec<(String, String)>, Vec<u8>, u64),
}

type Handler = dyn Fn(&Req, &str) -> Answer + Send + Sync;

pub struct Evil {
    /// `127.0.0.1:PORT`.
    pub host: String,
    log: Arc<Mutex<Vec<Req>>>,
    /// Body bytes written by `Answer::Stream` before the client hung up.
    pub streamed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Evil {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Evil {
    /// `handler(request, own_host)`.
    pub async fn start(handler: impl Fn(&Req, &str) -> Answer + Send + Sync + 'static) -> Evil {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let streamed = Arc::new(AtomicU64::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (l, s, h) = (log.clone(), streamed.clone(), host.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(
                    sock,
                    handler.clone(),
                    l.clone(),
                    s.clone(),
                    h.clone(),
                ));
            }
        });
        Evil {
            host,
            log,
            streamed,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

async fn serve(
    mut sock: TcpStream,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<Req>>>,
    streamed: Arc<AtomicU64>,
    host: String,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut first = text.lines().next().unwrap_or("").split(' ');
    let req = Req {
        method: first.next().unwrap_or("").to_string(),
        target: first.next().unwrap_or("").to_string(),
    };
    log.lock().unwrap().push(req.clone());
    let head_only = req.method == "HEAD";
    match handler(&req, &host) {
        Answer::Full(status, headers, body) => {
            let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
            for (k, v) in &headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut bytes = out.into_bytes();
            if !head_only {
                bytes.extend_from_slice(&body);
            }
            let _ = sock.write_all(&bytes).await;
        }
        Answer::Stream(headers, chunk, total) => {
            let mut out = "HTTP/1.1 200 OK\r\nConnection: close\r\n".to_string();
            for (k, v) in &headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            if sock.write_all(out.as_bytes()).await.is_err() {
                return;
            }
            let mut sent = 0u64;
            while sent < total {
                if sock.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len() as u64;
                streamed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = sock.shutdown().await;
}

/// A 404 with an OCI error body.
pub fn not_found() -> Answer {
    Answer::Full(
        404,
        vec![("Content-Type".into(), "application/json".into())],
        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#.to_vec(),
    )
}

/// A 401 with a Bearer challenge whose realm is `/token` on this server.
pub fn bearer_challenge(host: &str) -> Answer {
    Answer::Full(
        401,
        vec![(
            "WWW-Authenticate".into(),
            format!(r#"Bearer realm="http://{host}/token",service="evil""#),
        )],
        br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_vec(),
    )
}
