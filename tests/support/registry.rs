//! A real CNCF Distribution 2.8 (`docker-registry`) process on 127.0.0.1, one per test binary.
//!
//! The registry is started lazily and shared; tests use unique repository names. It runs under
//! a tiny `sh` guardian that holds a pipe from this process: when the test binary exits (a
//! `static` is never dropped) the pipe closes, the guardian kills the registry and removes its
//! storage. `IMAGEPOSTURE_TEST_REGISTRY=host:port` uses an already running registry instead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/bin/docker-registry";

pub struct Registry {
    /// `127.0.0.1:PORT`, usable as an image reference's registry.
    pub host: String,
    process: Option<Mutex<Guarded>>,
    /// The storage directory of a registry this process started.
    storage: Option<PathBuf>,
}

struct Guarded {
    child: Child,
    /// Closing it tells the guardian to stop the registry.
    stdin: Option<ChildStdin>,
}

impl Registry {
    /// `http://host`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Starts a fresh registry process (prefer [`shared`]).
    pub fn start() -> Registry {
        if let Ok(host) = std::env::var("IMAGEPOSTURE_TEST_REGISTRY") {
            wait_ready(&host, None)
                .unwrap_or_else(|e| panic!("IMAGEPOSTURE_TEST_REGISTRY={host}: {e}"));
            return Registry {
                host,
                process: None,
                storage: None,
            };
        }
        if !Path::new(BINARY).exists() {
            panic!(
                "{BINARY} not found: these tests need CNCF Distribution 2.8; install the Debian \
                 package `docker-registry` (apt-get install docker-registry), or set \
                 IMAGEPOSTURE_TEST_REGISTRY=host:port to a running registry"
            );
        }
        Self::spawn("", None)
    }

    /// Two registries on one storage: an open one to push to, and one that asks for HTTP Basic
    /// credentials from `htpasswd` (bcrypt entries) for everything, as Distribution's own
    /// `auth: htpasswd` does it.
    pub fn start_with_htpasswd(htpasswd: &Path) -> (Registry, Registry) {
        let open = Self::spawn("", None);
        let storage = open.storage.clone().expect("a registry of our own");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: imageposture-test\n    path: {}\n",
            htpasswd.display()
        );
        let authed = Self::spawn(&auth, Some(storage));
        (open, authed)
    }

    fn spawn(extra_config: &str, storage: Option<PathBuf>) -> Registry {
        if !Path::new(BINARY).exists() {
            panic!("{BINARY} not found: install the Debian package `docker-registry`");
        }
        let mut last_err = String::new();
        // A port picked by binding :0 can be taken before the registry binds it: retry.
        for _ in 0..3 {
            match spawn_once(extra_config, storage.clone()) {
                Ok(r) => return r,
                Err(e) => last_err = e,
            }
        }
        panic!("docker-registry did not start: {last_err}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(p) = &self.process {
            let mut g = p.lock().unwrap_or_else(|e| e.into_inner());
            g.stdin.take();
            let _ = g.child.wait();
        }
    }
}

/// Users of [`htpasswd_pair`]'s registry.
pub const HTPASSWD_USERS: [(&str, &str); 2] =
    [("alice", "s3cret-alice-PW"), ("carol", "s3cret-carol-PW")];

/// An open registry and an htpasswd one (bcrypt, [`HTPASSWD_USERS`]) over the same storage,
/// shared by every test of this binary.
pub fn htpasswd_pair() -> &'static (Registry, Registry) {
    static PAIR: OnceLock<(Registry, Registry)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let file = dir.join("htpasswd");
        let mut text = String::new();
        for (user, password) in HTPASSWD_USERS {
            // Cost 5: a test fixture, not a password store.
            text.push_str(&format!("{user}:{}\n", bcrypt::hash(password, 5).unwrap()));
        }
        std::fs::write(&file, text).unwrap();
        Registry::start_with_htpasswd(&file)
    })
}

/// The registry shared by every test of this binary.
pub fn shared() -> &'static Registry {
    static SHARED: OnceLock<Registry> = OnceLock::new();
    SHARED.get_or_init(Registry::start)
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_once(extra_config: &str, shared_storage: Option<PathBuf>) -> Result<Registry, String> {
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let dir: PathBuf = tempfile::Builder::new()
        .prefix("imageposture-registry-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let storage = shared_storage.unwrap_or_else(|| dir.join("storage"));
    let config = dir.join("config.yml");
    let log = dir.join("registry.log");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n  relativeurls: true\n{extra_config}",
            storage.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    // The guardian: runs the registry, waits for EOF on stdin, then stops it and cleans up.
    let script = r#"
"$1" serve "$2" >"$3" 2>&1 &
pid=$!
read -r _ignored
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$4"
"#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(BINARY)
        .arg(&config)
        .arg(&log)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn sh: {e}"))?;
    let stdin = child.stdin.take();
    let mut guarded = Guarded { child, stdin };
    match wait_ready(&host, Some(&mut guarded.child)) {
        Ok(()) => Ok(Registry {
            host,
            process: Some(Mutex::new(guarded)),
            storage: Some(storage),
        }),
        Err(e) => {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            guarded.stdin.take();
            let _ = guarded.child.wait();
            Err(format!("{e}; registry log:\n{log_text}"))
        }
    }
}

/// Polls `GET /v2/` until it answers 200 (plain std I/O: no async runtime needed here).
fn wait_ready(host: &str, mut child: Option<&mut Child>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Some(c) = child.as_deref_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!("registry exited early: {status}"));
            }
        }
        match get_status(host, "/v2/") {
            // 401: up, and asking for credentials (an `auth:` config).
            Ok(200 | 401) => return Ok(()),
            Ok(s) => last = format!("GET /v2/ answered {s}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{host} not ready after 15s: {last}"))
}

fn get_status(host: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))
}
