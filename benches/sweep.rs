//! Benchmark: registry requests per image, passes of both loops at 10,000 pods, memory.
//!
//! `cargo bench --bench sweep` (release profile). Everything runs on 127.0.0.1: a real CNCF
//! Distribution 2.8 `docker-registry` process, the counting proxy in front of it (requests are
//! counted there, outside the verifier), and the Kubernetes API double behind a real
//! `kube::Client`. Prints markdown tables for docs/benchmarks.md on stdout; progress goes to stderr.
//!
//! Sizes can be changed for exploration with `IMAGEPOSTURE_BENCH_PODS` and
//! `IMAGEPOSTURE_BENCH_IMAGES`; the docs/benchmarks.md numbers use the defaults (10,000 pods, 500 images).

// The test harness, shared with the integration tests (both modules allow their dead code).
#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/support/apidouble/mod.rs"]
mod apidouble;

#[path = "../tests/support/harness/mod.rs"]
mod harness;

#[path = "sweep/cosign_side.rs"]
mod cosign_side;
#[path = "sweep/process.rs"]
mod process;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::{self, StreamExt};
use harness::{Operator, Report};
use imageposture::cache::{Observed, Observer, ObserverConfig, Recorded};
use imageposture::core::image::ImageId;
use imageposture::core::posture::Posture;
use imageposture::operator::inventory::sweep::SweepConfig;
use imageposture::operator::inventory::{Inventory, LeanPod, NamespaceFilter};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::json;

use apidouble::ApiDouble;
use support::pki::Identity;
use support::proxy::{Proxy, Seen};
use support::{unique_repo, via, TestEnv};

/// Fixtures pushed at once.
const PUSH_CONCURRENCY: usize = 16;
const NAMESPACES: usize = 100;
const WARM_RUNS: usize = 5;
const INVENTORY_RUNS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Unsigned,
    Keyless,
    Bundle,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Unsigned => "unsigned",
            Kind::Keyless => "one legacy keyless `.sig` signature",
            Kind::Bundle => "one Sigstore bundle referrer (fallback index)",
        }
    }

    fn posture(self) -> Posture {
        match self {
            Kind::Unsigned => Posture::NotSigned,
            Kind::Keyless | Kind::Bundle => Posture::Signed,
        }
    }

    /// The image mix: 60% keyless, 30% unsigned, 10% bundle, interleaved.
    fn of_index(i: usize) -> Kind {
        match i % 10 {
            0..=5 => Kind::Keyless,
            6..=8 => Kind::Unsigned,
            _ => Kind::Bundle,
        }
    }
}

/// Pushes one fixture image (tag `v1`) of `kind` straight to the registry.
async fn push_fixture(env: &TestEnv, repo: &str, kind: Kind) -> ImageId {
    let img = env.oci.push_image(repo, "v1").await;
    match kind {
        Kind::Unsigned => {}
        Kind::Keyless => env.sign_keyless(&img.id, &Identity::github()).await,
        Kind::Bundle => env.sign_bundle(&img).await,
    }
    img.id
}

/// Reconciles in flight at once.
const CONCURRENCY: u16 = 16;

fn observer_config() -> ObserverConfig {
    ObserverConfig {
        ttl: Duration::from_secs(6 * 3600),
        per_registry: 16,
        ..ObserverConfig::default()
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/self/status` field in kB (`VmHWM`, `VmRSS`).
fn proc_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn registry_version() -> String {
    std::process::Command::new("/usr/bin/docker-registry")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
            // `/usr/bin/docker-registry github.com/docker/distribution 2.8.2+ds1`
            match out.split_once(' ') {
                Some((bin, rest)) if bin.starts_with('/') => rest.to_string(),
                _ => out,
            }
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "docker-registry (version unknown)".into())
}

/// What one registry request was for, from its path.
fn request_label(s: &Seen) -> String {
    let p = s.path.as_str();
    let what = if p.ends_with(".sig") {
        "`.sig` tag"
    } else if p.contains("/referrers/") {
        "referrers API"
    } else if p.contains("/manifests/sha256-") {
        "referrers fallback tag"
    } else if p.contains("/manifests/sha256:") {
        "referrer manifest"
    } else if p.contains("/blobs/") {
        "blob"
    } else {
        p
    };
    format!("{} {what}", s.method)
}

fn request_summary(requests: &[Seen]) -> String {
    if requests.is_empty() {
        return "none".into();
    }
    requests
        .iter()
        .map(request_label)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- (a) requests per image -----------------------------------------------------------------

struct PerImage {
    kind: Kind,
    first: Vec<Seen>,
    subsequent: Vec<Seen>,
    revalidation: Vec<Seen>,
}

/// For each kind: a fresh verifier and proxy; the first image of that kind on the registry,
/// then a second one (the verifier now knows the registry has no referrers API), then the
/// second one again after the TTL (revalidation of an unchanged image).
async fn requests_per_image(env: &TestEnv) -> Vec<PerImage> {
    let mut out = Vec::new();
    for kind in [Kind::Unsigned, Kind::Keyless, Kind::Bundle] {
        let a = push_fixture(env, &unique_repo("count-a"), kind).await;
        let b = push_fixture(env, &unique_repo("count-b"), kind).await;
        let proxy = Proxy::start(&env.registry.host).await;
        let verifier = Arc::new(env.verifier(env.config(&[&proxy.host])).await);
        let config = ObserverConfig {
            ttl: Duration::from_secs(3600),
            ..observer_config()
        };
        let observer = Observer::new(verifier, config);
        let (a, b) = (via(&a, &proxy.host), via(&b, &proxy.host));
        let t0 = Utc::now();
        let later = t0 + chrono::Duration::hours(2);
        let (first, _) = counted(&observer, &proxy, &a, None, kind, t0).await;
        let (subsequent, seen) = counted(&observer, &proxy, &b, None, kind, t0).await;
        let recorded = Recorded {
            verdict: seen.verdict.clone(),
            verified_at: seen.verified_at.unwrap_or(t0),
            checked_at: seen.checked_at.unwrap_or(t0),
            stale: false,
        };
        let (revalidation, _) = counted(&observer, &proxy, &b, Some(&recorded), kind, later).await;
        out.push(PerImage {
            kind,
            first,
            subsequent,
            revalidation,
        });
    }
    out
}

/// Observes one image through the observer; returns the requests the proxy saw.
async fn counted(
    observer: &Observer,
    proxy: &Proxy,
    id: &ImageId,
    recorded: Option<&Recorded>,
    kind: Kind,
    at: chrono::DateTime<Utc>,
) -> (Vec<Seen>, Observed) {
    proxy.reset_requests();
    let got = observer.observe(id, recorded, at).await;
    let v = &got.verdict;
    assert_eq!(
        v.posture,
        kind.posture(),
        "{kind:?} fixture verdict: {v:#?}"
    );
    (proxy.requests(), got)
}

// ---- pods -----------------------------------------------------------------------------------

/// A pod as the API server returns it from a Deployment: labels, annotations, owner,
/// managedFields, env, probes, volumes, conditions (what the operator's lean pods skip).
fn full_pod(i: usize, namespace: &str, image: &str, image_id: &str) -> Pod {
    let name = format!("app-{i:05}-7d9f8b6c5d-x{:04x}", i % 65536);
    let container_id = format!("containerd://{:064x}", i as u128 * 7919 + 1);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "resourceVersion": (100_000 + i).to_string(),
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "generateName": format!("app-{i:05}-7d9f8b6c5d-"),
            "labels": {
                "app.kubernetes.io/name": format!("app-{i:05}"),
                "app.kubernetes.io/part-of": "bench",
                "pod-template-hash": "7d9f8b6c5d"
            },
            "annotations": {
                "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8080"
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("app-{i:05}-7d9f8b6c5d"),
                "uid": format!("00000000-0000-4000-9000-{i:012}"),
                "controller": true, "blockOwnerDeletion": true
            }],
            "managedFields": [{
                "manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "v1", "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:pod-template-hash": {}},
                                   "f:ownerReferences": {".": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:env": {}, "f:image": {},
                               "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {}, "f:resources": {}}}}
                }
            }, {
                "manager": "kubelet", "operation": "Update", "subresource": "status",
                "apiVersion": "v1", "time": "2025-01-01T00:00:05Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:hostIP": {},
                             "f:phase": {}, "f:podIP": {}, "f:podIPs": {}, "f:startTime": {}}}
            }]
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "args": ["--listen=:8080", "--log-level=info"],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "LOG_FORMAT", "value": "json"},
                    {"name": "GOMAXPROCS", "value": "2"}
                ],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 5},
                "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
            ]}}],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "nodeName": format!("node-{:03}", i % 200),
            "serviceAccountName": "default",
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
            "terminationGracePeriodSeconds": 30
        },
        "status": {
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": format!("10.1.{}.{}", (i / 250) % 250, i % 250),
            "podIPs": [{"ip": format!("10.1.{}.{}", (i / 250) % 250, i % 250)}],
            "qosClass": "Burstable",
            "startTime": "2025-01-01T00:00:00Z",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2025-01-01T00:00:02Z"},
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:05Z"},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2025-01-01T00:00:05Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}
            ],
            "containerStatuses": [{
                "name": "app",
                "image": image,
                "imageID": image_id,
                "containerID": container_id,
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2025-01-01T00:00:03Z"}}
            }]
        }
    }))
    .expect("pod JSON")
}

/// Pod `i` runs image `i % images` in namespace `(i + i / images) % NAMESPACES`, so every
/// image is used by the same number of pods spread over several namespaces.
fn pod_placement(i: usize, images: &[ImageId]) -> (String, String, String) {
    let id = &images[i % images.len()];
    let namespace = format!("team-{:02}", (i + i / images.len()) % NAMESPACES);
    let image = format!("{}/{}:v1", id.registry, id.repository);
    let image_id = format!("{}/{}@{}", id.registry, id.repository, id.digest);
    (namespace, image, image_id)
}

/// Fills a reflector store with `n` pods the way the operator's reflector does (an initial
/// list: `InitApply` per pod, then `InitDone`), trimmed or not. Returns the store and the
/// total JSON size of what it holds.
fn pod_store<K>(n: usize, images: &[ImageId]) -> (Store<K>, usize)
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    let mut json_bytes = 0;
    for i in 0..n {
        let (namespace, image, image_id) = pod_placement(i, images);
        let pod = full_pod(i, &namespace, &image, &image_id);
        // What the watch stream carries, read as the store's type reads it.
        let json = serde_json::to_vec(&pod).expect("pod JSON");
        json_bytes += json.len();
        let pod: K = serde_json::from_slice(&json).expect("pod");
        writer.apply_watcher_event(&watcher::Event::InitApply(pod));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    assert_eq!(store.len(), n);
    (store, json_bytes)
}

// ---- (b) passes -----------------------------------------------------------------------------

struct SweepRow {
    wall: Duration,
    registry_requests: usize,
    /// Requests to the OCI 1.1 referrers API (404 on Distribution 2.8).
    referrers_api: usize,
    api_writes: usize,
    report: Report,
}

/// One pass of both loops: the inventory, then a reconcile of every resource.
async fn timed_pass(
    label: &str,
    op: &Operator,
    pods: &[Arc<LeanPod>],
    proxy: &Proxy,
    double: &ApiDouble,
) -> SweepRow {
    proxy.reset_requests();
    double.reset_counters();
    let started = Instant::now();
    let report = op.pass(&double.client(), pods, Utc::now()).await;
    let wall = started.elapsed();
    let requests = proxy.requests();
    let row = SweepRow {
        wall,
        registry_requests: requests.len(),
        referrers_api: requests
            .iter()
            .filter(|r| r.path.contains("/referrers/"))
            .count(),
        api_writes: double.writes().len(),
        report,
    };
    eprintln!(
        "  {label}: {} | {} registry requests | {} API writes | report {:?}",
        ms(row.wall),
        row.registry_requests,
        row.api_writes,
        row.report
    );
    row
}

async fn operator_for(env: &TestEnv, proxy: &Proxy, double: &ApiDouble, images: usize) -> Operator {
    let verifier = env.verifier(env.config(&[&proxy.host])).await;
    Operator::new(
        &double.client(),
        verifier,
        harness::Config {
            observer: observer_config(),
            sweep: SweepConfig {
                max_images: images.max(1000),
                ..SweepConfig::default()
            },
            concurrency: CONCURRENCY,
            ..harness::Config::default()
        },
    )
    .await
}

fn posture_count(report: &Report, p: Posture) -> i64 {
    report
        .by_posture
        .iter()
        .find(|(q, _)| *q == p)
        .map(|(_, n)| *n)
        .unwrap_or(0)
}

// ---- (d, e) fixtures for the side-by-side and operator-process runs -------------------------

/// A registry that accepts every connection and never answers (each request hangs until the
/// client's per-image budget runs out). Returns its `host:port`.
async fn hanging_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    host
}

/// `n` images that exist nowhere, on `host`.
fn phantom_images(host: &str, n: usize) -> Vec<ImageId> {
    (0..n)
        .map(|i| ImageId {
            registry: host.to_string(),
            repository: format!("hang/app-{i:05}"),
            digest: format!("sha256:{}", support::pki::sha256_hex(format!("hang-{i}"))),
        })
        .collect()
}

/// `n` unsigned images at little registry cost: per repository one config and one layer,
/// then distinct manifests over them (an annotation tells them apart).
async fn cheap_unsigned(env: &TestEnv, n: usize) -> Vec<ImageId> {
    const PER_REPO: usize = 100;
    let repos: Vec<String> = (0..n.div_ceil(PER_REPO))
        .map(|r| unique_repo(&format!("growth-{r:03}")))
        .collect();
    stream::iter(repos.into_iter().enumerate())
        .map(|(r, repo)| {
            let env = &env;
            async move {
                let layer = env
                    .oci
                    .push_blob(
                        &repo,
                        "application/vnd.oci.image.layer.v1.tar",
                        repo.as_bytes(),
                    )
                    .await;
                let config = json!({"architecture": "amd64", "os": "linux",
                                    "rootfs": {"type": "layers", "diff_ids": [layer.digest]}});
                let config = env
                    .oci
                    .push_blob(
                        &repo,
                        support::cosign::OCI_CONFIG,
                        &serde_json::to_vec(&config).unwrap(),
                    )
                    .await;
                let mut ids = Vec::new();
                for k in 0..PER_REPO.min(n - r * PER_REPO) {
                    let manifest = json!({
                        "schemaVersion": 2,
                        "mediaType": support::cosign::OCI_MANIFEST,
                        "config": config.json(),
                        "layers": [layer.json()],
                        "annotations": {"bench.imageposture.dev/n": k.to_string()}
                    });
                    let d = env
                        .oci
                        .put_manifest(
                            &repo,
                            &format!("g{k}"),
                            support::cosign::OCI_MANIFEST,
                            &serde_json::to_vec(&manifest).unwrap(),
                        )
                        .await;
                    ids.push(ImageId {
                        registry: env.registry.host.clone(),
                        repository: repo.clone(),
                        digest: d.digest,
                    });
                }
                ids
            }
        })
        .buffer_unordered(PUSH_CONCURRENCY)
        .concat()
        .await
}

async fn push_mix(env: &TestEnv, from: usize, to: usize) -> Vec<(usize, Kind, ImageId)> {
    let mut pushed: Vec<(usize, Kind, ImageId)> = stream::iter(from..to)
        .map(|i| {
            let env = &env;
            async move {
                let kind = Kind::of_index(i);
                let id = push_fixture(env, &unique_repo(&format!("app-{i:04}")), kind).await;
                (i, kind, id)
            }
        })
        .buffer_unordered(PUSH_CONCURRENCY)
        .collect()
        .await;
    pushed.sort_by_key(|(i, _, _)| *i);
    pushed
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map(ms).unwrap_or_else(|| "not reached".into())
}

// ---- growth ---------------------------------------------------------------------------------

/// `IMAGEPOSTURE_BENCH_GROWTH`: `0` (none), or `pods:images,...` (e.g. `1000:200,150000:20000`);
/// `default` otherwise. A `0:0` row is the process before any pod.
fn growth_sizes(default: &[(usize, usize)]) -> Vec<(usize, usize)> {
    match std::env::var("IMAGEPOSTURE_BENCH_GROWTH") {
        Ok(v) if v == "0" => vec![],
        Ok(v) if v.contains(':') => v
            .split(',')
            .filter_map(|pair| {
                let (p, i) = pair.trim().split_once(':')?;
                Some((p.parse().ok()?, i.parse().ok()?))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

/// The operator process at each size (pods served by the API double, images on the local
/// registry behind the counting proxy): cold start, then the warm window.
async fn growth_runs(
    env: &TestEnv,
    op_proxy: &Proxy,
    hanging_host: &str,
    signed: &[ImageId],
    sizes: &[(usize, usize)],
) -> Vec<(usize, usize, process::Measured)> {
    let max_images = sizes.iter().map(|(_, i)| *i).max().unwrap_or(0);
    let extra = if max_images > signed.len() {
        eprintln!(
            "  pushing {} cheap unsigned images for growth ...",
            max_images - signed.len()
        );
        cheap_unsigned(env, max_images - signed.len()).await
    } else {
        Vec::new()
    };
    let mut ids = signed.to_vec();
    ids.extend(extra.iter().map(|id| via(id, &op_proxy.host)));
    let mut growth = Vec::new();
    for (pods, images) in sizes.iter().copied() {
        eprintln!("  growth: {pods} pods, {images} images ...");
        let m = process::run(
            env,
            op_proxy,
            hanging_host,
            &process::Spec {
                pods,
                healthy: &ids[..images.min(ids.len())],
                hanging: &[],
                late: None,
                warm: true,
                churn: None,
            },
        )
        .await;
        eprintln!("  {m:?}");
        growth.push((pods, images, m));
    }
    growth
}

/// The growth table, with the slope per pod next to each row and a linear fit of RSS over pods
/// and images.
fn print_growth(growth: &[(usize, usize, process::Measured)]) {
    let verdicts = |m: &process::Measured| opt_ms(m.all_healthy);
    let base = growth
        .iter()
        .find(|(p, _, _)| *p == 0)
        .map(|(_, _, m)| m.rss_kib);
    println!();
    println!("**Warm passes and growth** (nothing changes; counted over 8 s, `--resync 1s`; pods served by the API double; RSS of the operator process alone):");
    println!();
    println!("| pods | images | cold: first ImagePosture | cold: every verdict | warm pass wall | per pod | warm pass CPU | registry requests | API writes | RSS | over no pod, per pod | peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (pods, images, m) in growth {
        let (wall, per_pod, cpu, req, wr) = m
            .warm
            .as_ref()
            .map(|w| {
                (
                    format!("{} ({:.0} passes)", ms(w.wall_per_pass), w.passes),
                    if *pods > 0 {
                        format!(
                            "{:.2} µs",
                            w.wall_per_pass.as_secs_f64() * 1e6 / *pods as f64
                        )
                    } else {
                        "-".into()
                    },
                    ms(w.cpu_per_pass),
                    w.requests.to_string(),
                    w.writes.to_string(),
                )
            })
            .unwrap_or_else(|| ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()));
        let bytes = match (base, *pods) {
            (Some(b), p) if p > 0 => format!(
                "{:.0} B",
                m.rss_kib.saturating_sub(b) as f64 * 1024.0 / p as f64
            ),
            _ => "-".into(),
        };
        println!(
            "| {pods} | {images} | {} | {} | {wall} | {per_pod} | {cpu} | {req} | {wr} | {} | {bytes} | {} |",
            opt_ms(m.first),
            verdicts(m),
            mib(m.rss_kib),
            mib(m.hwm_kib)
        );
    }
    // RSS ≈ base + a·pods + b·images, least squares over the rows.
    let rows: Vec<[f64; 3]> = growth
        .iter()
        .map(|(p, i, m)| [*p as f64, *i as f64, m.rss_kib as f64])
        .collect();
    if let Some((c, a, b)) = fit(&rows) {
        println!();
        println!(
            "Fit over these rows: RSS ≈ {:.1} MiB + {:.2} MiB per 1,000 pods + {:.2} MiB per 1,000 images.",
            c / 1024.0,
            a * 1000.0 / 1024.0,
            b * 1000.0 / 1024.0
        );
    }
}

/// Least squares of `z = c + a·x + b·y` (normal equations, Cramer's rule).
fn fit(rows: &[[f64; 3]]) -> Option<(f64, f64, f64)> {
    if rows.len() < 3 {
        return None;
    }
    let (mut n, mut sx, mut sy, mut sz) = (0.0, 0.0, 0.0, 0.0);
    let (mut sxx, mut syy, mut sxy, mut sxz, mut syz) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for [x, y, z] in rows {
        n += 1.0;
        sx += x;
        sy += y;
        sz += z;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
        sxz += x * z;
        syz += y * z;
    }
    let det3 = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let m = [[n, sx, sy], [sx, sxx, sxy], [sy, sxy, syy]];
    let d = det3(m);
    if d.abs() < 1e-9 {
        return None;
    }
    let v = [sz, sxz, syz];
    let with = |col: usize| {
        let mut m = m;
        for (r, row) in m.iter_mut().enumerate() {
            row[col] = v[r];
        }
        det3(m) / d
    };
    Some((with(0), with(1), with(2)))
}

/// `IMAGEPOSTURE_BENCH_INDEX`: `pods:images,...` for the in-memory index rows (default
/// `10000:2000,150000:20000`; `0`: none).
fn index_sizes() -> Vec<(usize, usize)> {
    match std::env::var("IMAGEPOSTURE_BENCH_INDEX") {
        Ok(v) if v == "0" => vec![],
        Ok(v) => v
            .split(',')
            .filter_map(|pair| {
                let (p, i) = pair.trim().split_once(':')?;
                Some((p.parse().ok()?, i.parse().ok()?))
            })
            .collect(),
        Err(_) => vec![(10_000, 2_000), (150_000, 20_000)],
    }
}

/// The index against the full recompute at one size, as a table row.
fn index_timing(n_pods: usize, n_images: usize) -> String {
    use imageposture::operator::inventory::index::PodIndex;
    eprintln!("  index: {n_pods} pods, {n_images} images ...");
    let images: Vec<ImageId> = (0..n_images.max(1))
        .map(|i| ImageId {
            registry: "registry.example".into(),
            repository: format!("team/app-{i:05}"),
            digest: format!("sha256:{:064x}", i + 1),
        })
        .collect();
    let (store, _) = pod_store::<LeanPod>(n_pods, &images);
    let pods = store.state();
    let filter = NamespaceFilter::default();
    let full = Inventory::from_pods(pods.iter().map(|p| p.as_ref()), &filter);
    let mut index = PodIndex::new(filter);
    let started = Instant::now();
    index.reset(pods.iter().map(|p| p.as_ref()));
    let reset_time = started.elapsed();
    assert!(
        index.inventory() == full,
        "the index agrees with the full recompute"
    );
    // What a warm pass reads: the snapshot of an unchanged index.
    let started = Instant::now();
    let snapshot = index.inventory();
    let full_time = started.elapsed();
    drop(snapshot);
    // A pod moves to another image and back: the event, then the images it changed.
    let mut changes = Vec::new();
    let mut deletes = Vec::new();
    for k in 0..201usize {
        let i = (k * 7919) % n_pods.max(1);
        let (namespace, image, image_id) = pod_placement(i, &images);
        let other = &images[(i + 1) % images.len()];
        let pod = full_pod(
            i,
            &namespace,
            &format!("{}/{}:v1", other.registry, other.repository),
            &format!("{}/{}@{}", other.registry, other.repository, other.digest),
        );
        let json = serde_json::to_vec(&pod).expect("pod JSON");
        let lean: LeanPod = serde_json::from_slice(&json).expect("pod");
        let started = Instant::now();
        let c = index.apply(&lean);
        changes.push(started.elapsed());
        assert!(!c.is_empty());
        let started = Instant::now();
        let c = index.delete(&lean);
        deletes.push(started.elapsed());
        assert!(!c.is_empty());
        let back = full_pod(i, &namespace, &image, &image_id);
        let back: LeanPod =
            serde_json::from_slice(&serde_json::to_vec(&back).expect("pod JSON")).expect("pod");
        index.apply(&back);
    }
    assert!(index.inventory() == full, "back where it started");
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n_pods.max(1) as f64;
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    format!(
        "| {n_pods} | {n_images} | {} | {:.2} µs | {} | {:.3} µs | {} | {} |",
        ms(reset_time),
        per(reset_time),
        ms(full_time),
        per(full_time),
        us(median(changes)),
        us(median(deletes)),
    )
}

/// `IMAGEPOSTURE_BENCH_ONLY=growth`: the growth table alone (no signed fixtures, no cosign
/// side, no in-process passes): unsigned images on the local registry, pods served by the API
/// double. Sizes from `IMAGEPOSTURE_BENCH_GROWTH` (default: no pod, 1k/200, 10k/2k, 50k/10k,
/// 150k/20k).
async fn growth_only() {
    let total = Instant::now();
    let env = TestEnv::new();
    let op_proxy = Proxy::start(&env.registry.host).await;
    let hanging_host = hanging_registry().await;
    let sizes = growth_sizes(&[
        (0, 0),
        (1_000, 200),
        (10_000, 2_000),
        (50_000, 10_000),
        // 5,000 images: the operator's default `--max-images`; 20,000 (`150000:20000`) needs
        // the cap raised and takes more than 10 minutes of verification against the double.
        (150_000, 5_000),
    ]);
    let index_rows: Vec<_> = index_sizes()
        .into_iter()
        .map(|(p, i)| index_timing(p, i))
        .collect();
    let growth = growth_runs(&env, &op_proxy, &hanging_host, &[], &sizes).await;
    let churn = churn_run(&env, &op_proxy, &hanging_host).await;
    if !index_rows.is_empty() {
        println!();
        println!("**The pod index in memory** (`PodIndex`, lean pods; median of 201 events):");
        println!();
        println!("| pods | images | re-list: index `reset` | per pod | warm pass: inventory snapshot (`PodIndex::inventory`) | per pod | a pod changes its image: event → changed images | a pod deleted |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &index_rows {
            println!("{r}");
        }
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    print_growth(&growth);
    if let Some((pods, images, events, m)) = &churn {
        print_churn(*pods, *images, *events, m);
    }
    println!();
    println!(
        "Machine: {cpus} CPU(s), {} memory. Whole run {:.1} s.",
        mib(proc_meminfo_kb("MemTotal")),
        total.elapsed().as_secs_f64()
    );
    for (pods, _, m) in &growth {
        if let Some(w) = &m.warm {
            if w.requests != 0 || w.writes != 0 {
                eprintln!(
                    "FAIL: a warm pass at {pods} pods made {} registry requests and {} API writes",
                    w.requests, w.writes
                );
                std::process::exit(1);
            }
        }
    }
}

/// `/proc/meminfo` field in kB.
fn proc_meminfo_kb(field: &str) -> u64 {
    process::kb_field("/proc/meminfo", field)
}

/// `IMAGEPOSTURE_BENCH_CHURN`: watch events of pod churn over a steady 10k-pod / 2k-image
/// cluster (default 100,000; `0`: none).
async fn churn_run(
    env: &TestEnv,
    op_proxy: &Proxy,
    hanging_host: &str,
) -> Option<(usize, usize, usize, process::Measured)> {
    let events: usize = std::env::var("IMAGEPOSTURE_BENCH_CHURN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    if events == 0 {
        return None;
    }
    let (pods, images) = (10_000, 2_000);
    eprintln!("  churn: {events} pod events over {pods} pods, {images} images ...");
    let ids: Vec<ImageId> = cheap_unsigned(env, images)
        .await
        .iter()
        .map(|id| via(id, &op_proxy.host))
        .collect();
    let m = process::run(
        env,
        op_proxy,
        hanging_host,
        &process::Spec {
            pods,
            healthy: &ids,
            hanging: &[],
            late: None,
            warm: true,
            churn: Some(process::Churn {
                events,
                new_image_every: 10,
                grace: Duration::from_secs(20),
            }),
        },
    )
    .await;
    eprintln!("  {m:?}");
    Some((pods, images, events, m))
}

fn print_churn(pods: usize, images: usize, events: usize, m: &process::Measured) {
    let Some(c) = &m.churn else { return };
    let change =
        (c.rss_after_kib as f64 - c.rss_before_kib as f64) * 100.0 / c.rss_before_kib.max(1) as f64;
    println!();
    println!("**Churn** ({events} pod watch events, half adds and half deletes, at most 100 churn pods alive, one in 10 with an image no pod ran before; `--grace 20s`; pods served by the API double):");
    println!();
    println!("| steady pods / images | events | new images | took | ImagePostures before → peak → after | RSS before | RSS after the grace period | change |");
    println!("|---|---:|---:|---:|---|---:|---:|---:|");
    println!(
        "| {pods} / {images} | {events} | {} | {:.1} s | {} → {} → {} | {} | {} | {change:+.1}% |",
        c.new_images,
        c.took.as_secs_f64(),
        c.resources_before,
        c.resources_peak,
        c.resources_after,
        mib(c.rss_before_kib),
        mib(c.rss_after_kib),
    );
}

// ---- main -----------------------------------------------------------------------------------

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    if std::env::var("IMAGEPOSTURE_BENCH_ONLY").as_deref() == Ok("growth") {
        return growth_only().await;
    }
    let n_pods = env_usize("IMAGEPOSTURE_BENCH_PODS", 10_000);
    let n_images = env_usize("IMAGEPOSTURE_BENCH_IMAGES", 500).max(1);
    let total = Instant::now();
    eprintln!("imageposture sweep benchmark: {n_pods} pods, {n_images} images");

    let started = Instant::now();
    let env = TestEnv::new();
    let registry_start = started.elapsed();
    eprintln!(
        "registry {} up in {}",
        env.registry.host,
        ms(registry_start)
    );

    // (a)
    eprintln!("(a) requests per image ...");
    let per_image = requests_per_image(&env).await;

    // Fixtures for (b): pushed straight to the registry, 16 at a time.
    eprintln!("pushing {n_images} images with signatures ({PUSH_CONCURRENCY} at a time) ...");
    let started = Instant::now();
    let mut pushed: Vec<(usize, Kind, ImageId)> = stream::iter(0..n_images)
        .map(|i| {
            let env = &env;
            async move {
                let kind = Kind::of_index(i);
                let id = push_fixture(env, &unique_repo(&format!("app-{i:04}")), kind).await;
                (i, kind, id)
            }
        })
        .buffer_unordered(PUSH_CONCURRENCY)
        .collect()
        .await;
    pushed.sort_by_key(|(i, _, _)| *i);
    let push_time = started.elapsed();
    let mut mix: BTreeMap<Kind, usize> = BTreeMap::new();
    for (_, k, _) in &pushed {
        *mix.entry(*k).or_default() += 1;
    }
    eprintln!("  pushed in {}", ms(push_time));

    // Pods name the proxy as their registry, so every verification request is counted.
    let proxy = Proxy::start(&env.registry.host).await;
    let images: Vec<ImageId> = pushed
        .iter()
        .map(|(_, _, id)| via(id, &proxy.host))
        .collect();

    // (c, part 1) 10k lean pods in a reflector store, as the operator holds them.
    let rss_before_store = proc_kb("VmRSS");
    let started = Instant::now();
    let (pod_reader, trimmed_json) = pod_store::<LeanPod>(n_pods, &images);
    let store_build = started.elapsed();
    let rss_with_store = proc_kb("VmRSS");
    eprintln!(
        "  {n_pods} lean pods in a reflector store: built in {}, RSS {} -> {}",
        ms(store_build),
        mib(rss_before_store),
        mib(rss_with_store)
    );
    let pods: Vec<Arc<LeanPod>> = pod_reader.state();

    // (b, in memory) the inventory of 10k pods.
    let filter = NamespaceFilter::default();
    let mut inventory_times = Vec::new();
    let mut inventory_images = 0;
    for _ in 0..INVENTORY_RUNS {
        let started = Instant::now();
        let inv = Inventory::from_pods(pods.iter().map(|p| p.as_ref()), &filter);
        let order = inv.by_usage();
        inventory_times.push(started.elapsed());
        inventory_images = order.len();
        assert!(inv.unresolved.is_empty() && inv.invalid.is_empty());
    }
    let inventory_median = median(inventory_times.clone());
    let inventory_min = *inventory_times.iter().min().unwrap();
    assert_eq!(inventory_images, n_images.min(n_pods));

    // (b) sweeps through the real registry + proxy and the API double.
    let hwm_before_sweeps = proc_kb("VmHWM");
    let double = ApiDouble::start().await;
    let config = observer_config();
    let op = operator_for(&env, &proxy, &double, n_images).await;
    eprintln!("(b) passes ...");
    let cold = timed_pass("cold pass", &op, &pods, &proxy, &double).await;
    let signed_expected = (mix.get(&Kind::Keyless).copied().unwrap_or(0)
        + mix.get(&Kind::Bundle).copied().unwrap_or(0)) as i64;
    let unsigned_expected = mix.get(&Kind::Unsigned).copied().unwrap_or(0) as i64;
    assert_eq!(
        (
            posture_count(&cold.report, Posture::Signed),
            posture_count(&cold.report, Posture::NotSigned),
            cold.report.errors,
            cold.report.deferred,
        ),
        (signed_expected, unsigned_expected, 0, 0),
        "cold sweep verdicts: {:?}",
        cold.report
    );

    let existing = harness::list(&double.client()).await;
    assert_eq!(existing.len(), n_images);
    // The population as `imageposture summary --from FILE` reads it (README: `summary` section).
    if let Some(path) = std::env::var_os("IMAGEPOSTURE_BENCH_POSTURES") {
        let items: Vec<&imageposture::model::crd::ImagePosture> =
            existing.iter().map(|p| p.as_ref()).collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        std::fs::write(&path, list.to_string()).expect("write IMAGEPOSTURE_BENCH_POSTURES");
    }
    let mut warm_rows = Vec::new();
    for run in 0..WARM_RUNS {
        let row = timed_pass(
            &format!("warm pass #{}", run + 1),
            &op,
            &pods,
            &proxy,
            &double,
        )
        .await;
        warm_rows.push(row);
    }
    let warm_wall = median(warm_rows.iter().map(|r| r.wall).collect());
    let warm_requests: usize = warm_rows.iter().map(|r| r.registry_requests).sum();
    let warm_writes: usize = warm_rows.iter().map(|r| r.api_writes).sum();

    // Where the cold time goes: the inventory alone creates every resource (`checking` /
    // `Pending`) with no registry I/O, into an empty API.
    let double2 = ApiDouble::start().await;
    let op2 = operator_for(&env, &proxy, &double2, n_images).await;
    proxy.reset_requests();
    double2.reset_counters();
    let started = Instant::now();
    let created = op2.sweeper.sweep(&pods, &[], Utc::now()).await;
    let inventory_cold = started.elapsed();
    let inventory_cold_writes = double2.writes().len();
    eprintln!(
        "  cold inventory alone: {} | {created:?}",
        ms(inventory_cold)
    );

    let hwm_after_sweeps = proc_kb("VmHWM");
    let rss_after_sweeps = proc_kb("VmRSS");
    let stats = op.observer().stats();
    drop(op2);
    drop(double2);

    // (c, part 2) for comparison: the same pods untrimmed (measured last: it raises the peak).
    let rss_before_full = proc_kb("VmRSS");
    let (full_reader, full_json) = pod_store::<Pod>(n_pods, &images);
    let rss_with_full = proc_kb("VmRSS");
    drop(full_reader);

    // ---- report -------------------------------------------------------------------------------
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!();
    println!("### Benchmark (`cargo bench --bench sweep`)");
    println!();
    println!(
        "Machine: {cpus} CPU(s) (`nproc`), {}; registry: {} on 127.0.0.1 behind the counting \
         proxy; Kubernetes API: the in-process API double over a real `kube::Client`. \
         Controller concurrency {CONCURRENCY}, per_registry {}, ttl {}h; verifier \
         limits: defaults (30 s budget per image).",
        cpu_model(),
        registry_version(),
        config.per_registry,
        config.ttl.as_secs() / 3600
    );
    println!();
    println!("**Registry requests per image** (counted at the proxy; Distribution 2.8 has no referrers API):");
    println!();
    println!("| image | first on the registry | later images | after the TTL, unchanged | requests (later image) |");
    println!("|---|---:|---:|---:|---|");
    for p in &per_image {
        println!(
            "| {} | {} | {} | {} | {} |",
            p.kind.describe(),
            p.first.len(),
            p.subsequent.len(),
            p.revalidation.len(),
            request_summary(&p.subsequent)
        );
    }
    println!();
    println!(
        "**Both loops at {n_pods} pods** ({n_images} images: {} keyless `.sig`, {} unsigned, {} bundle \
         referrer; {NAMESPACES} namespaces; one container per pod):",
        mix.get(&Kind::Keyless).copied().unwrap_or(0),
        mix.get(&Kind::Unsigned).copied().unwrap_or(0),
        mix.get(&Kind::Bundle).copied().unwrap_or(0),
    );
    println!();
    println!("| pass | wall time | registry requests | API writes |");
    println!("|---|---:|---:|---:|");
    println!(
        "| cold: create {} ImagePostures + verify {n_images} images | {} | {} ({} to the referrers API) | {} |",
        cold.report.created,
        ms(cold.wall),
        cold.registry_requests,
        cold.referrers_api,
        cold.api_writes
    );
    println!(
        "| cold inventory alone: every resource created, `checking`/`Pending` | {} | 0 | {} |",
        ms(inventory_cold),
        inventory_cold_writes
    );
    println!(
        "| warm: nothing changed (median of {WARM_RUNS}) | {} | {} | {} |",
        ms(warm_wall),
        warm_requests,
        warm_writes
    );
    println!(
        "| inventory of {n_pods} pods alone, in memory (median of {INVENTORY_RUNS}; min {}) | {} | 0 | 0 |",
        ms(inventory_min),
        ms(inventory_median)
    );
    println!();
    println!("**Memory** (`/proc/self/status`; the bench process also hosts the proxy and the API double):");
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    let per_pod = |kb: u64| kb as f64 / n_pods.max(1) as f64;
    let store_kb = rss_with_store.saturating_sub(rss_before_store);
    let full_kb = rss_with_full.saturating_sub(rss_before_full);
    println!(
        "| {n_pods} lean pods (`LeanPod`) in a kube reflector store: RSS growth ({:.1} KiB/pod; {:.1} KiB/pod as JSON) | {} |",
        per_pod(store_kb),
        trimmed_json as f64 / 1024.0 / n_pods.max(1) as f64,
        mib(store_kb)
    );
    println!(
        "| same pods as k8s-openapi `Pod`s, for comparison: RSS growth ({:.1} KiB/pod; {:.1} KiB/pod as JSON) | {} |",
        per_pod(full_kb),
        full_json as f64 / 1024.0 / n_pods.max(1) as f64,
        mib(full_kb)
    );
    println!(
        "| RSS with the lean store, before any sweep | {} |",
        mib(rss_with_store)
    );
    println!(
        "| peak RSS (VmHWM) before the sweeps | {} |",
        mib(hwm_before_sweeps)
    );
    println!(
        "| peak RSS (VmHWM) after cold + {WARM_RUNS} warm passes + a cold inventory | {} |",
        mib(hwm_after_sweeps)
    );
    println!("| RSS after the sweeps | {} |", mib(rss_after_sweeps));
    println!();
    println!(
        "Setup (not in the numbers above): registry start {}, pushing {n_images} images with their \
         signatures {PUSH_CONCURRENCY} at a time {}, building the {n_pods}-pod store {}. \
         Observer: {} verifications, {} status hits. Whole run {:.1} s.",
        ms(registry_start),
        ms(push_time),
        ms(store_build),
        stats.misses,
        stats.hits,
        total.elapsed().as_secs_f64()
    );

    // (d) the same keyless images, imageposture beside the real cosign CLI.
    let side_n = env_usize("IMAGEPOSTURE_BENCH_COSIGN_IMAGES", 300).max(2);
    eprintln!("(d) {side_n} keyless images: imageposture observe vs cosign verify ...");
    let mut side_ids = Vec::new();
    for chunk in (0..side_n + 1).collect::<Vec<_>>().chunks(PUSH_CONCURRENCY) {
        let ids: Vec<ImageId> = stream::iter(chunk.iter().copied())
            .map(|i| {
                let env = &env;
                async move {
                    env.keyless_image(&format!("side-{i:04}"), &Identity::github())
                        .await
                }
            })
            .buffer_unordered(PUSH_CONCURRENCY)
            .collect()
            .await;
        side_ids.extend(ids);
    }
    let side_proxy = Proxy::start(&env.registry.host).await;
    let side_ids: Vec<ImageId> = side_ids
        .iter()
        .map(|id| via(id, &side_proxy.host))
        .collect();
    let (side_first, side_ids) = side_ids.split_first().expect("images");
    let mut side_rows = Vec::new();
    side_rows.push(tokio::task::block_in_place(|| {
        cosign_side::imageposture(&env, &side_proxy, side_ids, side_first)
    }));
    let cosign_installed = cosign_side::installed();
    if cosign_installed {
        let trust = cosign_side::CosignTrust::new(&env);
        for parallel in [1, 8] {
            eprintln!("  cosign verify, {parallel} at a time ...");
            side_rows.push(tokio::task::block_in_place(|| {
                cosign_side::cosign(&trust, &side_proxy, side_ids, parallel)
            }));
        }
    } else {
        eprintln!(
            "  cosign is not installed (Debian package `cosign`, suite sid): cosign rows skipped"
        );
    }
    for r in &side_rows {
        eprintln!(
            "  {}: {} of {} verified in {}",
            r.who,
            r.verified,
            r.images,
            ms(r.wall)
        );
    }

    // (e) the operator process: cold start, isolation, mid-run pod, warm passes, growth.
    let fleet = env_usize("IMAGEPOSTURE_BENCH_FLEET_IMAGES", 2000).max(10);
    let fleet_pods = env_usize("IMAGEPOSTURE_BENCH_FLEET_PODS", 10_000);
    eprintln!("(e) operator process: pushing the fleet ({fleet} images) ...");
    let mut fleet_ids: Vec<ImageId> = pushed.iter().map(|(_, _, id)| id.clone()).collect();
    if fleet > fleet_ids.len() {
        let more = push_mix(&env, fleet_ids.len(), fleet).await;
        fleet_ids.extend(more.into_iter().map(|(_, _, id)| id));
    }
    fleet_ids.truncate(fleet);
    let late = env.keyless_image("late", &Identity::github()).await;
    let op_proxy = Proxy::start(&env.registry.host).await;
    let fleet_ids: Vec<ImageId> = fleet_ids.iter().map(|id| via(id, &op_proxy.host)).collect();
    let late = via(&late, &op_proxy.host);
    let hanging_host = hanging_registry().await;
    eprintln!("  cold start: {fleet_pods} pods, {fleet} images ...");
    let cold_run = process::run(
        &env,
        &op_proxy,
        &hanging_host,
        &process::Spec {
            pods: fleet_pods,
            healthy: &fleet_ids,
            hanging: &[],
            late: None,
            warm: true,
            churn: None,
        },
    )
    .await;
    eprintln!("  {cold_run:?}");
    let n_hanging = fleet / 10;
    let hanging_ids = phantom_images(&hanging_host, n_hanging);
    eprintln!("  isolation: {n_hanging} of {fleet} images on a registry that never answers ...");
    let iso_run = process::run(
        &env,
        &op_proxy,
        &hanging_host,
        &process::Spec {
            pods: fleet_pods,
            healthy: &fleet_ids[..fleet - n_hanging],
            hanging: &hanging_ids,
            late: Some(&late),
            warm: false,
            churn: None,
        },
    )
    .await;
    eprintln!("  {iso_run:?}");

    // Growth: the warm pass at 1k, 50k and 150k pods (200, 10k, 20k images) beside the 10k
    // cold start above, and the process with no pod at all.
    let growth_sizes = growth_sizes(&[(0, 0), (1_000, 200), (50_000, 10_000), (150_000, 5_000)]);
    let mut growth = growth_runs(&env, &op_proxy, &hanging_host, &fleet_ids, &growth_sizes).await;
    growth.push((fleet_pods, fleet, cold_run));
    growth.sort_by_key(|(p, _, _)| *p);

    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!();
    println!(
        "**Side by side with the real cosign CLI** ({side_n} keyless legacy `.sig` images, each with a \
         fresh certificate; every request counted at the proxy; CPU = user + sys of the child \
         processes; machine: {cpus} CPU(s), {:.1} GiB):",
        mem_total as f64 / 1024.0 / 1024.0
    );
    println!();
    println!("| verifier | images verified | wall | images/s | CPU per image | registry requests per image (after the first) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &side_rows {
        println!(
            "| {} | {} of {} | {} | {:.1} | {:.2} ms | {:.2}{} |",
            r.who,
            r.verified,
            r.images,
            ms(r.wall),
            r.images_per_sec(),
            r.cpu.as_secs_f64() * 1000.0 / r.images.max(1) as f64,
            r.requests as f64 / r.images.max(1) as f64,
            r.requests_after_first
                .map(|a| format!(" ({a:.2})"))
                .unwrap_or_default()
        );
    }
    if let (Some(ours), Some(theirs)) = (side_rows.first(), side_rows.get(2)) {
        println!();
        println!(
            "imageposture: {:.1}× the images/s of 8 parallel `cosign verify`.",
            ours.images_per_sec() / theirs.images_per_sec().max(1e-9)
        );
    }
    if !cosign_installed {
        println!();
        println!("(cosign rows skipped: `cosign` is not installed.)");
    }
    let verdicts = |m: &process::Measured| opt_ms(m.all_healthy);
    println!();
    println!(
        "**The operator process** (`imageposture run`, release, its defaults but `--resync 1s`) \
         against the API double holding the pods, registry behind the counting proxy:"
    );
    println!();
    println!("| run | first ImagePosture | 90% of healthy verdicts | every healthy verdict | registry requests | API writes (ImagePostures, Events) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |label: String, m: &process::Measured| {
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            opt_ms(m.first),
            opt_ms(m.ninety),
            verdicts(m),
            m.cold_requests,
            m.cold_writes
        );
    };
    if let Some((_, _, m)) = growth
        .iter()
        .find(|(p, i, _)| *p == fleet_pods && *i == fleet)
    {
        row(format!("cold start, {fleet_pods} pods, {fleet} images"), m);
    }
    row(
        format!(
            "same, {n_hanging} of the {fleet} images on a registry that never answers (verdicts of the other {})",
            fleet - n_hanging
        ),
        &iso_run,
    );
    if let Some((_, _, base)) = growth
        .iter()
        .find(|(p, i, _)| *p == fleet_pods && *i == fleet)
    {
        if let (Some(with), Some(without)) = (iso_run.all_healthy, base.ninety) {
            println!();
            println!(
                "Isolation: the healthy 90% took {} beside the hanging registry and {} (the 90% mark) without it: ratio {:.2}. \
                 A pod started mid-run with a new image on the healthy registry: verdict {} after the pod appeared.",
                ms(with),
                ms(without),
                with.as_secs_f64() / without.as_secs_f64().max(1e-9),
                opt_ms(iso_run.late)
            );
        }
    }
    println!();
    print_growth(&growth);
    println!();
    println!("Whole run {:.1} s.", total.elapsed().as_secs_f64());

    for p in &per_image {
        eprintln!(
            "{:?}: first [{}]; later [{}]; after TTL [{}]",
            p.kind,
            request_summary(&p.first),
            request_summary(&p.subsequent),
            request_summary(&p.revalidation)
        );
    }
    for (pods, _, m) in &growth {
        if let Some(w) = &m.warm {
            if w.requests != 0 || w.writes != 0 {
                eprintln!(
                    "FAIL: a warm pass at {pods} pods made {} registry requests and {} API writes",
                    w.requests, w.writes
                );
                std::process::exit(1);
            }
        }
    }
    if warm_requests != 0 || warm_writes != 0 {
        eprintln!(
            "FAIL: a warm pass made {warm_requests} registry requests and {warm_writes} API writes"
        );
        std::process::exit(1);
    }
}
