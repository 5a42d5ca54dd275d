//! The same keyless-signed images verified by `imageposture observe` (one process for all)
//! and by the real `cosign verify` CLI (one process per image, as it works), sequentially and
//! 8 at a time, every request counted at the proxy. CPU is the children's user + sys
//! (`cutime`/`cstime` of this process once they are waited for).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use imageposture::core::image::ImageId;

use crate::support::pki::b64;
use crate::support::proxy::Proxy;
use crate::support::registry::free_port;
use crate::support::TestEnv;

const COSIGN: &str = "/usr/bin/cosign";

pub struct Row {
    pub who: String,
    pub images: usize,
    pub wall: Duration,
    pub cpu: Duration,
    pub requests: usize,
    /// Requests per image after the first (the first image of a process also probes the
    /// registry once); `None` where every image is its own process.
    pub requests_after_first: Option<f64>,
    pub verified: usize,
}

impl Row {
    pub fn images_per_sec(&self) -> f64 {
        self.images as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// utime + stime of this process's waited-for children.
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((tick(13) + tick(14)) * 10)
}

fn reference(id: &ImageId) -> String {
    format!("{}/{}@{}", id.registry, id.repository, id.digest)
}

fn observe(env: &TestEnv, proxy: &Proxy, ids: &[ImageId]) -> (usize, Duration, Duration) {
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .args(["observe", "-o", "json"])
        .args(["--trusted-root", env.trusted_root.to_str().expect("path")])
        .args(["--insecure-registry", &proxy.host])
        .args(ids.iter().map(reference))
        .env("RUST_LOG", "error")
        .output()
        .expect("imageposture observe");
    let wall = t0.elapsed();
    let cpu = children_cpu() - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    let signed = text.matches("\"posture\": \"signed\"").count()
        + text.matches("\"posture\":\"signed\"").count();
    (signed, wall, cpu)
}

/// imageposture over `ids`: one process for all of them (its default concurrency, 8).
pub fn imageposture(env: &TestEnv, proxy: &Proxy, ids: &[ImageId], first: &ImageId) -> Row {
    // Requests a fresh process makes for one image: the first-image cost.
    proxy.reset_requests();
    let _ = observe(env, proxy, std::slice::from_ref(first));
    let first_requests = proxy.requests().len();
    proxy.reset_requests();
    let (verified, wall, cpu) = observe(env, proxy, ids);
    let requests = proxy.requests().len();
    Row {
        who: "`imageposture observe` (one process, 8 at a time)".into(),
        images: ids.len(),
        wall,
        cpu,
        requests,
        requests_after_first: Some(
            requests.saturating_sub(first_requests) as f64 / (ids.len().max(2) - 1) as f64,
        ),
        verified,
    }
}

/// What `cosign verify` needs to trust the test PKI offline.
pub struct CosignTrust {
    home: std::path::PathBuf,
    rekor_pub: std::path::PathBuf,
    fulcio: std::path::PathBuf,
}

impl CosignTrust {
    pub fn new(env: &TestEnv) -> CosignTrust {
        let home = env.dir.path().join("cosign-home");
        std::fs::create_dir_all(&home).expect("cosign home");
        let rekor_pub = env.dir.path().join("rekor.pub");
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            b64(&env.pki.rekor.public_der)
        );
        std::fs::write(&rekor_pub, pem).expect("rekor.pub");
        let fulcio = env.dir.path().join("fulcio_chain.pem");
        std::fs::write(&fulcio, env.pki.ca.chain_pem()).expect("fulcio chain");
        CosignTrust {
            home,
            rekor_pub,
            fulcio,
        }
    }

    fn verify(&self, id: &ImageId) -> bool {
        // Anything not on 127.0.0.1 goes to a closed port: cosign stays offline.
        let closed = format!("http://127.0.0.1:{}", free_port());
        Command::new(COSIGN)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("TUF_ROOT", self.home.join("tuf"))
            .env("SIGSTORE_REKOR_PUBLIC_KEY", &self.rekor_pub)
            .env("SIGSTORE_ROOT_FILE", &self.fulcio)
            .env("HTTPS_PROXY", &closed)
            .env("https_proxy", &closed)
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1")
            .args(["verify", "--allow-http-registry", "--insecure-ignore-sct"])
            .args(["--certificate-identity-regexp", ".*"])
            .args(["--certificate-oidc-issuer-regexp", ".*"])
            .arg(reference(id))
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

pub fn installed() -> bool {
    Command::new(COSIGN)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `cosign verify` over `ids`, `parallel` processes at a time.
pub fn cosign(trust: &CosignTrust, proxy: &Proxy, ids: &[ImageId], parallel: usize) -> Row {
    proxy.reset_requests();
    let next = AtomicUsize::new(0);
    let verified = Mutex::new(0usize);
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                if trust.verify(id) {
                    *verified.lock().unwrap() += 1;
                }
            });
        }
    });
    let wall = t0.elapsed();
    let cpu = children_cpu() - cpu0;
    let verified = *verified.lock().unwrap();
    Row {
        who: if parallel == 1 {
            "`cosign verify` (a process per image, sequential)".into()
        } else {
            format!("`cosign verify` (a process per image, {parallel} at a time)")
        },
        images: ids.len(),
        wall,
        cpu,
        requests: proxy.requests().len(),
        requests_after_first: None,
        verified,
    }
}
