//! A real Kubernetes API server for the integration tests, started the way controller-runtime's
//! envtest does: etcd and kube-apiserver (built from the Kubernetes Go modules by
//! `tests/kubeapi/build`) on free 127.0.0.1 ports, with authentication and RBAC on.
//!
//! - **One etcd per test binary** (started on first use, shared through a `static`), and **one
//!   kube-apiserver per test** under its own `--etcd-prefix`: ImagePostures are cluster-scoped and
//!   the operator garbage-collects them, so tests sharing a server would interfere.
//! - **Authentication**: the admin is a static bearer token (`--token-auth-file`) in group
//!   `system:masters`; the operator authenticates with a TokenRequest token of the ServiceAccount
//!   `imageposture-system/imageposture`, bound to the RBAC objects of `config/rbac` (and of the
//!   components a test names). Bearer tokens, not client certificates, so a test can put an HTTP
//!   proxy (`proxy.rs`) between a client and the server.
//! - **TLS**: a test CA made here signs the serving certificate (127.0.0.1, localhost); clients
//!   and kubeconfigs trust that CA, nothing skips verification.
//! - **Authorization**: `--authorization-mode=Node,RBAC`, as a real control plane.
//! - **Admission**: the default plugins, ServiceAccount included: a Pod without
//!   `serviceAccountName` needs the `default` ServiceAccount of its namespace, which no
//!   controller-manager creates here, so [`KubeApi::ensure_namespace`] creates it.
//!
//! There is no kubelet, scheduler or controller-manager: pods are never scheduled (no
//! `nodeName`; a test sets their status as a kubelet would with [`KubeApi::set_pod_status`]), a
//! Pod without a node is deleted at once (no grace period), a deleted namespace stays
//! `Terminating` forever (no namespace controller finalizes it), owner references are never
//! garbage-collected, and ServiceAccount tokens come only from TokenRequest.
//!
//! Every child process is started through `setpriv --pdeathsig KILL` from one long-lived thread,
//! so none outlives the test binary, even when it is killed.
#![allow(dead_code)]

pub mod cluster;
pub mod proxy;

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// The operator's namespace and ServiceAccount (config/rbac, config/default's `namespace:`).
pub const OPERATOR_NS: &str = "imageposture-system";
pub const OPERATOR_SA: &str = "imageposture";
/// The field manager of everything the harness applies.
const MANAGER: &str = "kubeapi-test-harness";
/// How long a kube-apiserver may take to become ready (about 3 s alone on 2 cores; tests of one
/// binary start theirs in parallel).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

// ---------------------------------------------------------------------------------------------
// Binaries

/// The directory holding `kube-apiserver` and `etcd`, built by `tests/kubeapi/build` if missing
/// (once per test binary), or why there is none.
fn binaries() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let has = |d: &Path| d.join("kube-apiserver").is_file() && d.join("etcd").is_file();
        if let Some(dir) = std::env::var_os("IMAGEPOSTURE_KUBEAPI_BIN") {
            let dir = PathBuf::from(dir);
            return if has(&dir) {
                Ok(dir)
            } else {
                Err(format!(
                    "IMAGEPOSTURE_KUBEAPI_BIN={} has no kube-apiserver and etcd: run \
                     `OUT={} bash tests/kubeapi/build`",
                    dir.display(),
                    dir.display()
                ))
            };
        }
        let dir = repo().join("target/kubeapi-bin");
        if has(&dir) {
            return Ok(dir);
        }
        let go = Command::new("go")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !go.is_ok_and(|s| s.success()) {
            return Err(format!(
                "no kube-apiserver/etcd in {} and no Go toolchain on PATH to build them: install \
                 Go (1.26), then run `bash tests/kubeapi/build`",
                dir.display()
            ));
        }
        eprintln!(
            "kubeapi: building kube-apiserver and etcd into {} (tests/kubeapi/build; the first \
             build takes several minutes)",
            dir.display()
        );
        let built = Command::new("bash")
            .arg(repo().join("tests/kubeapi/build"))
            .env("OUT", &dir)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status();
        match built {
            Ok(s) if s.success() && has(&dir) => Ok(dir),
            other => Err(format!(
                "`bash tests/kubeapi/build` failed ({other:?}); run it by hand to see why"
            )),
        }
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// Processes

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `program args` so that it is killed when this test binary exits: through
/// `setpriv --pdeathsig KILL` (util-linux), from one thread that lives as long as the process
/// (the death signal follows the thread that forked, and test threads end with their test).
fn spawn(program: &Path, args: &[String], log: &Path) -> Child {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("kubeapi-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let setpriv = Path::new("/usr/bin/setpriv");
    let mut cmd = if setpriv.exists() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock().unwrap().send((cmd, reply_tx)).expect("spawner");
    reply_rx
        .recv()
        .expect("spawner")
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()))
}

/// A free 127.0.0.1 port, never one handed out before in this process (another test's server
/// may not have bound it yet).
fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if GIVEN
            .lock()
            .unwrap()
            .get_or_insert_with(HashSet::new)
            .insert(port)
        {
            return port;
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn port_taken(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains("address already in use"))
}

fn unique(label: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = format!(
        "{label}/{}/{nanos}/{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    hex::encode(&Sha256::digest(seed.as_bytes())[..16])
}

// ---------------------------------------------------------------------------------------------
// etcd: one per test binary

struct Etcd {
    url: String,
    /// Never reaped: it dies with the test binary (pdeathsig).
    _child: Child,
}

/// The etcd of this test binary, started on first use. Its data and log live in
/// `$TMPDIR/imageposture-kubeapi/etcd-<pid>`; directories of test binaries no longer running are
/// removed when the next one starts.
fn etcd(bin: &Path) -> &'static str {
    static ETCD: OnceLock<Etcd> = OnceLock::new();
    &ETCD
        .get_or_init(|| {
            let base = std::env::temp_dir().join("imageposture-kubeapi");
            std::fs::create_dir_all(&base).expect("etcd base dir");
            for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("etcd-") {
                    let pid = pid.trim_end_matches(".log");
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(entry.path());
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            let dir = base.join(format!("etcd-{}", std::process::id()));
            for attempt in 1..=3 {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("etcd dir");
                let (client, peer) = (free_port(), free_port());
                let url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let log = dir.join("etcd.log");
                let args: Vec<String> = [
                    "--name=default".to_string(),
                    format!("--data-dir={}", dir.join("data").display()),
                    format!("--listen-client-urls={url}"),
                    format!("--advertise-client-urls={url}"),
                    format!("--listen-peer-urls={peer_url}"),
                    format!("--initial-advertise-peer-urls={peer_url}"),
                    format!("--initial-cluster=default={peer_url}"),
                    // Test data: no fsync, and no metrics listener.
                    "--unsafe-no-fsync".into(),
                    "--log-level=warn".into(),
                    // A consistent list waits until the API server's watch cache has caught up
                    // with etcd's revision, which other tests' servers on this etcd move on:
                    // frequent progress notifications keep that wait short.
                    "--watch-progress-notify-interval=100ms".into(),
                ]
                .into();
                let mut child = spawn(&bin.join("etcd"), &args, &log);
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if etcd_healthy(client) {
                        return Etcd { url, _child: child };
                    }
                    if let Ok(Some(status)) = child.try_wait() {
                        if port_taken(&log) && attempt < 3 {
                            break;
                        }
                        panic!("etcd exited ({status}):\n{}", tail(&log, 30));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!("etcd not healthy after 30 s:\n{}", tail(&log, 30));
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
            unreachable!("etcd start attempts")
        })
        .url
}

fn etcd_healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

// ---------------------------------------------------------------------------------------------
// PKI

struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    serving_cert_pem: String,
    serving_key_pem: String,
    sa_key_pem: String,
    sa_pub_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "imageposture test kube-apiserver CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("serving key");
    let mut serving = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    serving
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&key, &issuer).expect("serving cert");

    // ServiceAccount tokens: ES256.
    let sa = KeyPair::generate().expect("SA key");
    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        serving_cert_pem: serving_cert.pem(),
        serving_key_pem: key.serialize_pem(),
        sa_key_pem: sa.serialize_pem(),
        sa_pub_pem: sa.public_key_pem(),
    }
}

// ---------------------------------------------------------------------------------------------
// The API server

pub struct KubeApi {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    admin_token: String,
    ca_pem: String,
    ca_der: Vec<u8>,
    admin: kube::Client,
    startup: Duration,
    kubeconfigs: AtomicUsize,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KubeApi {
    /// Starts etcd (once per test binary) and a kube-apiserver of its own on free 127.0.0.1
    /// ports, and waits until it is ready (`/readyz`, the RBAC bootstrap roles and the `default`
    /// namespace). Binaries: `$IMAGEPOSTURE_KUBEAPI_BIN` (a directory), else
    /// `<repo>/target/kubeapi-bin`, built by `tests/kubeapi/build` when missing and `go` is on
    /// PATH. Without them: `None` after a note naming what to install, or a panic under
    /// `CI=true`.
    pub async fn start() -> Option<KubeApi> {
        let bin = match binaries() {
            Ok(bin) => bin,
            Err(why) if ci() => panic!("kubeapi: {why} (CI=true: not skipping)"),
            Err(why) => {
                eprintln!("kubeapi: skipping this test: {why}");
                return None;
            }
        };
        let etcd_url = etcd(&bin);
        for attempt in 1..=3 {
            if let Some(api) = Self::try_start(&bin, etcd_url, attempt == 3).await {
                return Some(api);
            }
        }
        unreachable!("kube-apiserver start attempts")
    }

    /// One start; `None` when the port was taken meanwhile (and `last` is false).
    async fn try_start(bin: &Path, etcd_url: &str, last: bool) -> Option<KubeApi> {
        let dir = tempfile::Builder::new()
            .prefix("kubeapi-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let pki = pki();
        let write = |name: &str, data: &str| {
            let p = d.join(name);
            std::fs::write(&p, data).expect("write");
            p.display().to_string()
        };
        let admin_token = unique("admin");
        let tokens = write(
            "tokens.csv",
            &format!("{admin_token},kubeapi-test-admin,kubeapi-test-admin,\"system:masters\"\n"),
        );
        let tls_cert = write("apiserver.crt", &pki.serving_cert_pem);
        let tls_key = write("apiserver.key", &pki.serving_key_pem);
        let sa_key = write("sa.key", &pki.sa_key_pem);
        let sa_pub = write("sa.pub", &pki.sa_pub_pem);
        let port = free_port();
        let args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            // Each server its own keyspace in the shared etcd.
            format!("--etcd-prefix=/kubeapi-{}", unique("prefix")),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // The `kubernetes` Service's endpoints may not be a loopback address.
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", d.join("certs").display()),
            format!("--tls-cert-file={tls_cert}"),
            format!("--tls-private-key-file={tls_key}"),
            format!("--token-auth-file={tokens}"),
            "--authorization-mode=Node,RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={sa_pub}"),
            format!("--service-account-signing-key-file={sa_key}"),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            // Faster start-up; one client at a time needs no fairness queues.
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
        ];
        let log = d.join("kube-apiserver.log");
        let started = Instant::now();
        let mut child = spawn(&bin.join("kube-apiserver"), &args, &log);

        let url = format!("https://127.0.0.1:{port}");
        let admin = client(&url, &pki.ca_der, &admin_token);
        let deadline = started + READY_TIMEOUT;
        loop {
            let ready = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if admin
                .request_text(ready)
                .await
                .is_ok_and(|t| t.trim() == "ok")
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                if port_taken(&log) && !last {
                    return None;
                }
                panic!("kube-apiserver exited ({status}):\n{}", tail(&log, 40));
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?}:\n{}",
                    tail(&log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut api = KubeApi {
            child,
            dir,
            port,
            admin_token,
            ca_pem: pki.ca_pem,
            ca_der: pki.ca_der,
            admin,
            startup: Duration::ZERO,
            kubeconfigs: AtomicUsize::new(0),
        };
        // /readyz covers the RBAC bootstrap hook; the system namespaces come from a controller.
        let (roles, namespaces) = (
            Api::<ClusterRole>::all(api.admin()),
            Api::<Namespace>::all(api.admin()),
        );
        while roles
            .get_opt("cluster-admin")
            .await
            .ok()
            .flatten()
            .is_none()
            || namespaces.get_opt("default").await.ok().flatten().is_none()
        {
            assert!(Instant::now() < deadline, "no RBAC bootstrap / namespaces");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api.startup = started.elapsed();
        eprintln!("kubeapi: kube-apiserver {url} ready in {:.1?}", api.startup);
        Some(api)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From spawning kube-apiserver to ready.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// The test CA that signed the serving certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A cluster admin (group `system:masters`), by static bearer token.
    pub fn admin(&self) -> kube::Client {
        self.admin.clone()
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A client that authenticates with this bearer token.
    pub fn client_with_token(&self, token: &str) -> kube::Client {
        client(&self.url(), &self.ca_der, token)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kube-apiserver.log")).unwrap_or_default()
    }

    /// A kubeconfig file in the harness's temp dir: this server, its CA, and the bearer token
    /// (`None`: the admin's). For running the real `imageposture run` process (`KUBECONFIG=`).
    pub fn write_kubeconfig(&self, token: Option<&str>) -> PathBuf {
        let token = token.unwrap_or(&self.admin_token);
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeapi", "cluster": {
                "server": self.url(),
                "certificate-authority-data": B64.encode(&self.ca_pem),
            }}],
            "users": [{"name": "kubeapi-user", "user": {"token": token}}],
            "contexts": [{"name": "kubeapi", "context": {
                "cluster": "kubeapi", "user": "kubeapi-user", "namespace": "default",
            }}],
            "current-context": "kubeapi",
        });
        let n = self.kubeconfigs.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("kubeconfig-{n}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("kubeconfig");
        path
    }

    /// Creates namespace `ns` if absent, and its `default` ServiceAccount (which the
    /// ServiceAccount admission plugin needs for a Pod without `serviceAccountName`, and which no
    /// controller-manager creates here).
    pub async fn ensure_namespace(&self, ns: &str) {
        let pp = PostParams::default();
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        ok_or_exists(
            Api::<Namespace>::all(self.admin())
                .create(&pp, &namespace)
                .await,
        );
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        ok_or_exists(
            Api::<ServiceAccount>::namespaced(self.admin(), ns)
                .create(&pp, &sa)
                .await,
        );
    }

    /// Applies `crds/*.yaml` (the generated CRDs) as admin and waits until each is Established.
    pub async fn install_crd(&self) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("crds"))
            .expect("crds/")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            self.install_crd_file(&file).await;
        }
    }

    /// Applies (as admin) the CustomResourceDefinitions of one YAML file (a test fixture, e.g.
    /// `tests/fixtures/policyreport-crd.yaml`) and waits until each is Established.
    pub async fn install_crd_file(&self, file: &Path) {
        let api = Api::<CustomResourceDefinition>::all(self.admin());
        let mut names = Vec::new();
        for doc in yaml_docs(file) {
            if doc["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let name = doc["metadata"]["name"].as_str().expect("name").to_string();
            api.patch(&name, &apply(), &Patch::Apply(&doc))
                .await
                .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
            names.push(name);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in names {
            loop {
                let crd = api.get(&name).await.expect("get CRD");
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                assert!(Instant::now() < deadline, "CRD {name} not Established");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Applies (as admin) the ServiceAccount `imageposture-system/imageposture` and the RBAC
    /// objects of `config/rbac` plus the given component dirs (e.g. `"config/policy-reports"`):
    /// the files their `kustomization.yaml` lists, namespaced objects and ServiceAccount subjects
    /// put in `imageposture-system` as `config/default` does. Waits until the authorizer grants
    /// every rule, then returns a TokenRequest token (24 h) for the ServiceAccount.
    pub async fn operator_token(&self, extra_components: &[&str]) -> String {
        self.ensure_namespace(OPERATOR_NS).await;
        let sa: ServiceAccount = serde_json::from_value(json!({
            "metadata": {"name": OPERATOR_SA, "namespace": OPERATOR_NS},
        }))
        .unwrap();
        ok_or_exists(
            Api::<ServiceAccount>::namespaced(self.admin(), OPERATOR_NS)
                .create(&PostParams::default(), &sa)
                .await,
        );
        let mut checks = Vec::new();
        let dirs = std::iter::once("config/rbac").chain(extra_components.iter().copied());
        for dir in dirs {
            for mut doc in kustomize_resources(&repo().join(dir)) {
                self.apply_rbac(&mut doc, &mut checks).await;
            }
        }
        self.await_granted(&checks).await;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(24 * 3600),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(self.admin(), OPERATOR_NS)
            .create_token_request(OPERATOR_SA, &PostParams::default(), &request)
            .await
            .expect("TokenRequest")
            .status
            .expect("TokenRequest status")
            .token
    }

    /// A client authenticated as the operator's ServiceAccount, with exactly the rights of
    /// `config/rbac` (and the given components); see [`KubeApi::operator_token`].
    pub async fn operator_client(&self, extra_components: &[&str]) -> kube::Client {
        let token = self.operator_token(extra_components).await;
        self.client_with_token(&token)
    }

    /// Applies one object of an RBAC kustomize dir; notes the (namespace, rule) pairs to check.
    async fn apply_rbac(&self, doc: &mut Value, checks: &mut Vec<(Option<String>, Value)>) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let namespaced = matches!(kind.as_str(), "Role" | "RoleBinding" | "ServiceAccount");
        if namespaced {
            doc["metadata"]["namespace"] = json!(OPERATOR_NS);
        }
        // (`get_mut`: indexing a Value mutably would add a null `subjects`.)
        if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
            for s in subjects {
                if s["kind"] == "ServiceAccount" {
                    s["namespace"] = json!(OPERATOR_NS);
                }
            }
        }
        let name = doc["metadata"]["name"].as_str().expect("name").to_string();
        let (pp, patch) = (apply(), Patch::Apply(&*doc));
        let client = self.admin();
        let result = match kind.as_str() {
            "ClusterRole" => Api::<ClusterRole>::all(client)
                .patch(&name, &pp, &patch)
                .await
                .map(drop),
            "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(client)
                .patch(&name, &pp, &patch)
                .await
                .map(drop),
            "Role" => Api::<Role>::namespaced(client, OPERATOR_NS)
                .patch(&name, &pp, &patch)
                .await
                .map(drop),
            "RoleBinding" => Api::<RoleBinding>::namespaced(client, OPERATOR_NS)
                .patch(&name, &pp, &patch)
                .await
                .map(drop),
            "ServiceAccount" => Api::<ServiceAccount>::namespaced(client, OPERATOR_NS)
                .patch(&name, &pp, &patch)
                .await
                .map(drop),
            _ => return,
        };
        result.unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
        if kind == "ClusterRole" || kind == "Role" {
            let ns = (kind == "Role").then(|| OPERATOR_NS.to_string());
            for rule in doc["rules"].as_array().into_iter().flatten() {
                checks.push((ns.clone(), rule.clone()));
            }
        }
    }

    /// Waits until the authorizer (its informers follow the RBAC objects just applied) grants
    /// the ServiceAccount the first verb/group/resource of every rule.
    async fn await_granted(&self, checks: &[(Option<String>, Value)]) {
        let api = Api::<SubjectAccessReview>::all(self.admin());
        let deadline = Instant::now() + Duration::from_secs(30);
        for (ns, rule) in checks {
            let first = |k: &str| rule[k][0].as_str().map(str::to_string);
            let (Some(verb), Some(group), Some(resource)) =
                (first("verbs"), first("apiGroups"), first("resources"))
            else {
                continue;
            };
            let (resource, subresource) = match resource.split_once('/') {
                Some((r, s)) => (r.to_string(), Some(s.to_string())),
                None => (resource, None),
            };
            let review: SubjectAccessReview = serde_json::from_value(json!({
                "spec": {
                    "user": format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"),
                    "groups": ["system:serviceaccounts",
                               format!("system:serviceaccounts:{OPERATOR_NS}"),
                               "system:authenticated"],
                    "resourceAttributes": {
                        "namespace": ns, "verb": verb, "group": group,
                        "resource": resource, "subresource": subresource,
                    },
                },
            }))
            .unwrap();
            loop {
                let answer = api
                    .create(&PostParams::default(), &review)
                    .await
                    .expect("SubjectAccessReview");
                if answer.status.is_some_and(|s| s.allowed) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "RBAC never granted {verb} {group}/{resource} ({ns:?})"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Creates a Pod with these containers (name, image), unscheduled (no node), as admin. The
    /// namespace must exist ([`KubeApi::ensure_namespace`]).
    pub async fn create_pod(&self, ns: &str, name: &str, containers: &[(&str, &str)]) -> Pod {
        self.create_pod_with(ns, name, containers, &[]).await
    }

    /// As [`KubeApi::create_pod`], with init containers too.
    pub async fn create_pod_with(
        &self,
        ns: &str,
        name: &str,
        containers: &[(&str, &str)],
        init_containers: &[(&str, &str)],
    ) -> Pod {
        let list = |cs: &[(&str, &str)]| -> Vec<Value> {
            cs.iter()
                .map(|(n, i)| json!({"name": n, "image": i}))
                .collect()
        };
        let mut spec = json!({"containers": list(containers)});
        if !init_containers.is_empty() {
            spec["initContainers"] = json!(list(init_containers));
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .unwrap();
        Api::<Pod>::namespaced(self.admin(), ns)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"))
    }

    /// Adds an ephemeral container (the `ephemeralcontainers` subresource, as `kubectl debug`).
    pub async fn add_ephemeral_container(&self, ns: &str, pod: &str, name: &str, image: &str) {
        let patch = json!({"spec": {"ephemeralContainers": [{"name": name, "image": image}]}});
        Api::<Pod>::namespaced(self.admin(), ns)
            .patch_subresource(
                "ephemeralcontainers",
                pod,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
            .unwrap_or_else(|e| panic!("ephemeral container {ns}/{pod}/{name}: {e}"));
    }

    /// Sets the Pod's status as a kubelet would, through the `status` subresource: `phase`, and
    /// for each (container name, image, imageID) a status in `containerStatuses`,
    /// `initContainerStatuses` or `ephemeralContainerStatuses` (by where the name is in the
    /// spec). Running containers are `running` and ready, init containers have `terminated`
    /// (Completed) once the pod runs; lists are replaced whole.
    pub async fn set_pod_status(
        &self,
        ns: &str,
        name: &str,
        phase: &str,
        statuses: &[(&str, &str, &str)],
    ) {
        let api = Api::<Pod>::namespaced(self.admin(), ns);
        let pod = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get pod {ns}/{name}: {e}"));
        let spec = pod.spec.unwrap_or_default();
        let names = |v: Vec<String>| v.into_iter().collect::<HashSet<String>>();
        let regular = names(spec.containers.into_iter().map(|c| c.name).collect());
        let init = names(
            spec.init_containers
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name)
                .collect(),
        );
        let ephemeral = names(
            spec.ephemeral_containers
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name)
                .collect(),
        );
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let running = phase == "Running";
        let done = phase == "Succeeded" || phase == "Failed";
        let (mut cs, mut ics, mut ecs) = (Vec::new(), Vec::new(), Vec::new());
        for (cname, image, image_id) in statuses {
            let container_id = format!(
                "containerd://{}",
                hex::encode(Sha256::digest(format!("{ns}/{name}/{cname}")))
            );
            let is_init = init.contains(*cname);
            // Init containers have finished once the pod runs; every container once it is done.
            let state = if done || (is_init && running) {
                let code = if phase == "Failed" { 1 } else { 0 };
                let reason = if code == 0 { "Completed" } else { "Error" };
                json!({"terminated": {"exitCode": code, "reason": reason,
                                      "startedAt": now, "finishedAt": now,
                                      "containerID": container_id}})
            } else if running {
                json!({"running": {"startedAt": now}})
            } else {
                json!({"waiting": {"reason": "ContainerCreating"}})
            };
            let mut status = json!({
                "name": cname, "image": image, "imageID": image_id,
                "containerID": container_id,
                "ready": running && !is_init,
                "started": running && !is_init,
                "restartCount": 0,
                "state": state,
            });
            if is_init {
                ics.push(status);
            } else if regular.contains(*cname) {
                cs.push(status);
            } else if ephemeral.contains(*cname) {
                status.as_object_mut().unwrap().remove("ready");
                ecs.push(status);
            } else {
                panic!("pod {ns}/{name} has no container {cname}");
            }
        }
        let mut status = json!({
            "phase": phase,
            "startTime": now,
            "containerStatuses": cs,
        });
        if !ics.is_empty() {
            status["initContainerStatuses"] = json!(ics);
        }
        if !ecs.is_empty() {
            status["ephemeralContainerStatuses"] = json!(ecs);
        }
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("pod status {ns}/{name}: {e}"));
    }
}

/// A client for `url` trusting only `ca_der`, with a bearer token.
fn client(url: &str, ca_der: &[u8], token: &str) -> kube::Client {
    let mut config = kube::Config::new(url.parse().expect("url"));
    config.root_cert = Some(vec![ca_der.to_vec()]);
    config.connect_timeout = Some(Duration::from_secs(5));
    let mut auth: http::HeaderValue = format!("Bearer {token}").parse().expect("header");
    auth.set_sensitive(true);
    config.headers = vec![(http::header::AUTHORIZATION, auth)];
    kube::Client::try_from(config).expect("client")
}

fn apply() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

fn ok_or_exists<T>(result: kube::Result<T>) {
    match result {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create: {e}"),
    }
}

/// The YAML documents of a file, as JSON values (empty documents skipped).
fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The objects of a kustomize dir: the files its `kustomization.yaml` lists under `resources`
/// (sub-directories followed), else every `*.yaml` in it.
fn kustomize_resources(dir: &Path) -> Vec<Value> {
    let kustomization = dir.join("kustomization.yaml");
    let files: Vec<PathBuf> = if kustomization.exists() {
        let k = yaml_docs(&kustomization).pop().unwrap_or(Value::Null);
        k["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str())
            .map(|r| dir.join(r))
            .collect()
    } else {
        let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        all.sort();
        all
    };
    files
        .iter()
        .flat_map(|f| {
            if f.is_dir() {
                kustomize_resources(f)
            } else {
                yaml_docs(f)
            }
        })
        .collect()
}
