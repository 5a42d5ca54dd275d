//! The operator process itself (`imageposture run`) against the real kube-apiserver
//! (tests/support/kube) and the real registry: reflectors, leader election on a real Lease, the
//! inventory loop and the verification controller, `/metrics`, `/healthz`, `/readyz`, a clean
//! shutdown on SIGTERM that releases the Lease, `--install-crd` and `--policy-reports`.
//!
//! The process gets a kubeconfig pointing at a counting, fault-injecting proxy in front of the
//! server ([`ApiProxy`]), so every request it makes is seen (and can be failed) outside it. In
//! cluster it authenticates as the ServiceAccount bound to `config/rbac` (plus
//! `config/policy-reports` with `--policy-reports`): least privilege is checked by the real
//! authorizer, and a test fails on any request it forbids. Out of cluster, `--install-crd` needs
//! CRD rights (cluster-admin territory): those runs use the admin's token, as a person on a
//! laptop does with their own kubeconfig.

#[path = "support/kube/mod.rs"]
mod kube;
mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ::kube::api::{Api, ApiResource, DeleteParams, DynamicObject};
use futures::StreamExt;
use imageposture::model::naming::ResourceName as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::cluster::{put_pod, write_kubeconfig, Cluster};
use kube::proxy::{ApiProxy, Fault, Rule, Seen};
use kube::{KubeApi, OPERATOR_NS};
use serde_json::{json, Value};
use support::pki::{Identity, WORKFLOW_URI};
use support::registry::free_port;
use support::TestEnv;

const CRD: &str = "imagepostures.imageposture.io";
const CRD_PATH: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/imagepostures.imageposture.io";
/// `--lease-name`'s default.
const LEASE: &str = "imageposture";

/// The running process, killed if the test ends early.
struct Operator(Option<Child>);

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Operator {
    /// `imageposture run ARGS` with `KUBECONFIG=kubeconfig`, trusting the test registry and
    /// Sigstore root, out of cluster unless `envs` say otherwise (no `KUBERNETES_SERVICE_HOST`,
    /// no `POD_NAMESPACE`/`POD_NAME`, no `IMAGEPOSTURE_*` from the test's environment).
    fn start(env: &TestEnv, kubeconfig: &Path, args: &[&str], envs: &[(&str, &str)]) -> Operator {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imageposture"));
        cmd.arg("run")
            .args(args)
            .args(["--trusted-root", env.trusted_root.to_str().unwrap()])
            .args(["--insecure-registry", &env.registry.host]);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("IMAGEPOSTURE_") || key.starts_with("KUBERNETES_") {
                cmd.env_remove(&*key);
            }
        }
        cmd.env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::null());
        Operator(Some(cmd.spawn().expect("the operator starts")))
    }

    /// SIGTERM, then the exit status.
    async fn terminate(mut self) -> ExitStatus {
        let mut child = self.0.take().expect("running");
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap()
    }
}

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// A running pod of one container `app` running `image` (pulled: `imageID` is `id`), created as
/// a user would and its status written as a kubelet would; owned by ReplicaSet `owner` if given.
fn running_pod(ns: &str, name: &str, image: &str, id: &str, owner: Option<&str>) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "image": image, "imageID": id, "ready": true, "restartCount": 0}]}
    });
    if let Some(rs) = owner {
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": rs, "uid": format!("uid-{rs}"), "controller": true}]);
    }
    serde_json::from_value(pod).expect("pod")
}

/// Creates the pods (namespaces first), a few at a time.
async fn put_pods(kube: &KubeApi, pods: Vec<Pod>) {
    let namespaces: std::collections::BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata.namespace.clone())
        .collect();
    for ns in namespaces {
        kube.ensure_namespace(&ns).await;
    }
    let admin = kube.admin();
    futures::stream::iter(pods)
        .for_each_concurrent(8, |pod| {
            let admin = admin.clone();
            async move { put_pod(&admin, &pod).await }
        })
        .await;
}

async fn lease(kube: &KubeApi, ns: &str) -> Option<Value> {
    let api: Api<Lease> = Api::namespaced(kube.admin(), ns);
    let lease = api.get_opt(LEASE).await.expect("get lease")?;
    Some(serde_json::to_value(lease).expect("json"))
}

/// The ImagePosture as stored (`None` also while the CRD is not served yet).
async fn image_posture(kube: &KubeApi, name: &str) -> Option<Value> {
    let api: Api<imageposture::model::crd::ImagePosture> = Api::all(kube.admin());
    let cr = api.get_opt(name).await.ok().flatten()?;
    Some(serde_json::to_value(cr).expect("json"))
}

/// Requests the authorizer refused (the operator asked for more than its RBAC grants).
fn forbidden(proxy: &ApiProxy) -> Vec<String> {
    proxy
        .seen()
        .iter()
        .filter(|s| s.status == 401 || s.status == 403)
        .map(line)
        .collect()
}

/// Requests touching ImagePostures (the loops' list/watch and writes).
fn touches_image_postures(s: &Seen) -> bool {
    s.path.starts_with("/apis/imageposture.io/")
}

/// A request as a line: method, path, answer.
fn line(s: &Seen) -> String {
    format!("{s} -> {}", s.status)
}

/// No requests (as lines).
const NONE: [String; 0] = [];

fn kubeconfig(env: &TestEnv, name: &str, proxy: &ApiProxy, token: &str) -> PathBuf {
    write_kubeconfig(&env.dir.path().join(name), &proxy.url, token)
}

// Multi-threaded: the proxy must keep answering while the test waits for the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_process_writes_imagepostures_and_serves_metrics() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let env = TestEnv::new();
    let signed = env.keyless_image("run-signed", &Identity::github()).await;
    let image = format!("{}:v1", signed.repo_path());
    put_pods(
        &cluster.kube,
        vec![running_pod("prod", "web-1", &image, &signed.key(), None)],
    )
    .await;
    let port = free_port();
    let config = kubeconfig(&env, "kubeconfig", &cluster.proxy, &cluster.token);
    let operator = Operator::start(
        &env,
        &config,
        &[
            "--install-crd=false",
            "--debounce",
            "100ms",
            "--resync",
            "1s",
            "--lease-duration",
            "3s",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
        // In cluster as the Deployment runs it: the Lease in the operator's namespace.
        &[("POD_NAMESPACE", OPERATOR_NS), ("POD_NAME", "operator-0")],
    );

    let name = signed.resource_name();
    let (c, name) = (&cluster, name.as_str());
    // A first status may say `checking` while the verification runs.
    let cr: Value = eventually("the ImagePosture", || async move {
        c.image_posture(name).await.filter(|cr| {
            cr["status"]["posture"]
                .as_str()
                .is_some_and(|p| p != "checking")
        })
    })
    .await;
    assert_eq!(cr["spec"]["image"], signed.key().as_str());
    assert_eq!(cr["status"]["posture"], "signed");
    assert_eq!(cr["status"]["signer"], WORKFLOW_URI);
    assert_eq!(cr["status"]["usage"]["pods"], 1);

    let kube = &cluster.kube;
    let held = eventually(
        "the Lease",
        || async move { lease(kube, OPERATOR_NS).await },
    )
    .await;
    assert_eq!(held["spec"]["holderIdentity"], "operator-0");

    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    let lines = [
        "imageposture_images{posture=\"signed\"} 1",
        "imageposture_leader 1",
        "imageposture_verifications_total{result=\"signed\"} 1",
        "imageposture_cache_misses_total 1",
        "imageposture_reconciles_total",
    ];
    // The gauges follow the ImagePosture cache within a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, metrics) = get(&format!("{base}/metrics")).await;
        assert_eq!(code, 200);
        let missing: Vec<_> = lines.iter().filter(|l| !metrics.contains(*l)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} missing from:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Resyncs with nothing changed write nothing more.
    let writes = cluster.image_posture_writes("PATCH");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        cluster.image_posture_writes("PATCH"),
        writes,
        "idle resyncs wrote"
    );
    // Everything it did, config/rbac allowed.
    assert_eq!(forbidden(&cluster.proxy), NONE, "refused by the authorizer");

    // SIGTERM: a clean stop that hands the Lease back.
    let status = operator.terminate().await;
    assert!(status.success(), "exit status {status}");
    let released = lease(kube, OPERATOR_NS).await.expect("the Lease");
    assert!(
        released["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "lease not released: {released}"
    );
}

/// Out of cluster (no `KUBERNETES_SERVICE_HOST`, no `POD_NAMESPACE`) on a cluster without the
/// CRD: `run` applies it by default, touches no ImagePosture until it has read the CRD
/// Established, and holds its Lease in `default`. The real server establishes a CRD within
/// milliseconds, so the proxy fails the process's reads of the CRD for a while: until one
/// answers, the process must not start its loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_cluster_run_installs_the_crd_before_the_loops() {
    let Some(kube) = KubeApi::start().await else {
        return;
    };
    let proxy = ApiProxy::start(&kube.url()).await;
    let env = TestEnv::new();
    let signed = env.keyless_image("run-install", &Identity::github()).await;
    let image = format!("{}:v1", signed.repo_path());
    put_pods(
        &kube,
        vec![running_pod("prod", "web-1", &image, &signed.key(), None)],
    )
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(kube.admin());
    assert!(crds.get_opt(CRD).await.expect("get CRD").is_none());
    // 500, not 503: the client retries a 503 by itself.
    proxy.inject(Rule {
        method: Some("GET".into()),
        path_contains: CRD_PATH.into(),
        fault: Fault::Status(500),
        remaining: None,
    });
    // The laptop's kubeconfig: the admin's credentials.
    let config = kubeconfig(&env, "kubeconfig", &proxy, kube.admin_token());
    let _operator = Operator::start(
        &env,
        &config,
        &["--debounce", "100ms", "--resync", "1s"],
        &[("POD_NAME", "laptop")],
    );

    let p = &proxy;
    let applied = eventually("the CRD applied", || async move {
        p.writes_to(CRD_PATH).into_iter().next()
    })
    .await;
    assert_eq!(applied.method, "PATCH");
    assert_eq!(applied.content_type, "application/apply-patch+yaml");
    assert!(
        applied.path.contains("fieldManager=imageposture"),
        "{applied:?}"
    );
    assert!(applied.path.contains("force=true"), "{applied:?}");
    assert!(crds.get_opt(CRD).await.expect("get CRD").is_some());

    // Established on the server, but not yet read so by the process: the loops must not start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let touched: Vec<String> = proxy
        .seen()
        .iter()
        .filter(|s| touches_image_postures(s))
        .map(line)
        .collect();
    assert_eq!(touched, NONE, "ImagePostures touched before Established");
    let failed_reads = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path.starts_with(CRD_PATH) && s.status == 500)
        .count();
    assert!(failed_reads >= 2, "still waiting: {failed_reads} reads");
    proxy.clear_faults();

    let name = signed.resource_name();
    let (k, name) = (&kube, name.as_str());
    let cr: Value = eventually("the ImagePosture signed", || async move {
        image_posture(k, name)
            .await
            .filter(|cr| cr["status"]["posture"] == "signed")
    })
    .await;
    assert_eq!(cr["spec"]["image"], signed.key().as_str());
    let held = eventually("the Lease", || async move { lease(k, "default").await }).await;
    assert_eq!(held["spec"]["holderIdentity"], "laptop");

    // In order: the apply, a read that found it Established, then the loops.
    let seen = proxy.seen();
    let first_loop = seen
        .iter()
        .position(touches_image_postures)
        .expect("the loops ran");
    let established_read = seen
        .iter()
        .position(|s| s.method == "GET" && s.path.starts_with(CRD_PATH) && s.status == 200)
        .expect("a successful read of the CRD");
    let apply = seen
        .iter()
        .position(|s| s.method == "PATCH" && s.path.starts_with(CRD_PATH))
        .unwrap();
    assert!(
        apply < established_read && established_read < first_loop,
        "apply {apply}, read {established_read}, loops {first_loop}"
    );
}

/// A standby writes nothing, the CRD included. Two replicas run out of cluster with leader
/// election and `--install-crd` (the default there), each through its own proxy: the first
/// installs the CRD and leads; the second, started while the first holds the Lease, only reads
/// (its pod list and watch, and the Lease once per round: a round that finds a live Lease of
/// another holder writes nothing). It applied the CRD at start before the fix: a replica of an
/// older version would have rewritten the schema under the leader. Once the leader stops and
/// releases the Lease, the standby takes it over and only then installs the CRD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_writes_nothing_crd_included() {
    let Some(kube) = KubeApi::start().await else {
        return;
    };
    let env = TestEnv::new();
    let signed = env.keyless_image("run-standby", &Identity::github()).await;
    let image = format!("{}:v1", signed.repo_path());
    put_pods(
        &kube,
        vec![running_pod("prod", "web-1", &image, &signed.key(), None)],
    )
    .await;
    let (proxy_a, proxy_b) = (
        ApiProxy::start(&kube.url()).await,
        ApiProxy::start(&kube.url()).await,
    );
    let port_b = free_port();
    let metrics_b = format!("127.0.0.1:{port_b}");
    let args = |metrics: &str| -> Vec<String> {
        [
            "--debounce",
            "100ms",
            "--resync",
            "1s",
            "--lease-duration",
            "3s",
        ]
        .into_iter()
        .map(String::from)
        .chain(["--metrics-addr".to_string(), metrics.to_string()])
        .collect()
    };
    let config_a = kubeconfig(&env, "kubeconfig-a", &proxy_a, kube.admin_token());
    let args_a = args("127.0.0.1:0");
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let a = Operator::start(&env, &config_a, &args_a, &[("POD_NAME", "replica-a")]);

    let name = signed.resource_name();
    let (k, name) = (&kube, name.as_str());
    eventually("the leader's ImagePosture", || async move {
        image_posture(k, name)
            .await
            .filter(|cr| cr["status"]["posture"] == "signed")
    })
    .await;
    let held = lease(k, "default").await.expect("the Lease");
    assert_eq!(held["spec"]["holderIdentity"], "replica-a");
    assert_eq!(
        proxy_a.writes_to(CRD_PATH).len(),
        1,
        "the leader installed it"
    );

    let config_b = kubeconfig(&env, "kubeconfig-b", &proxy_b, kube.admin_token());
    let args_b = args(&metrics_b);
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let b = Operator::start(&env, &config_b, &args_b, &[("POD_NAME", "replica-b")]);

    // The standby is up (its pod cache synced) and competing for the Lease.
    let lease_path = format!("/apis/coordination.k8s.io/v1/namespaces/default/leases/{LEASE}");
    let lease_reads = |p: &ApiProxy| {
        p.seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path.split('?').next() == Some(&*lease_path))
            .count()
    };
    let ready_b = format!("http://{metrics_b}/readyz");
    let (ready_b, pb) = (ready_b.as_str(), &proxy_b);
    eventually("the standby ready and reading the Lease", || async move {
        (get(ready_b).await.0 == 200 && lease_reads(pb) >= 1).then_some(())
    })
    .await;
    let reads_before = lease_reads(&proxy_b);
    let leader_writes = proxy_a.writes().len();
    // Several election rounds (one a second) and leader resyncs.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let standby_writes: Vec<String> = proxy_b.writes().iter().map(line).collect();
    assert_eq!(standby_writes, NONE, "the standby wrote");
    let unexpected: Vec<String> = proxy_b
        .seen()
        .iter()
        .filter(|s| {
            let path = s.path.split('?').next().unwrap_or_default();
            !(s.method == "GET" && (path == "/api/v1/pods" || path == lease_path))
        })
        .map(line)
        .collect();
    assert_eq!(unexpected, NONE, "a standby reads only pods and the Lease");
    let rounds = lease_reads(&proxy_b) - reads_before;
    assert!(rounds >= 3, "{rounds} election rounds in 5 s");
    let (_, metrics) = get(&format!("http://{metrics_b}/metrics")).await;
    assert!(metrics.contains("imageposture_leader 0"), "{metrics}");
    assert_eq!(
        lease(k, "default").await.unwrap()["spec"]["holderIdentity"],
        "replica-a"
    );
    // Meanwhile the leader was live (it renewed the Lease, at least).
    assert!(proxy_a.writes().len() > leader_writes);

    // Hand-over: the leader stops and releases the Lease; the standby takes it over, and only
    // then installs the CRD and starts its loops.
    let status = a.terminate().await;
    assert!(status.success(), "exit status {status}");
    eventually("the standby leading", || async move {
        lease(k, "default")
            .await
            .filter(|l| l["spec"]["holderIdentity"] == "replica-b")
    })
    .await;
    eventually("the new leader's CRD apply", || async move {
        (!pb.writes_to(CRD_PATH).is_empty()).then_some(())
    })
    .await;
    eventually("the new leader's loops", || async move {
        pb.seen().iter().any(touches_image_postures).then_some(())
    })
    .await;
    let seen = proxy_b.seen();
    let writes: Vec<&Seen> = seen.iter().filter(|s| s.is_write()).collect();
    let listed: Vec<String> = writes.iter().map(|s| line(s)).collect();
    assert_eq!(writes[0].method, "PUT", "{listed:?}");
    assert!(writes[0].path.starts_with(&lease_path), "{listed:?}");
    let apply = seen
        .iter()
        .position(|s| s.method == "PATCH" && s.path.starts_with(CRD_PATH))
        .unwrap();
    let first_loop = seen.iter().position(touches_image_postures).unwrap();
    assert!(apply < first_loop, "apply {apply}, loops {first_loop}");
    drop(b);
}

fn report_api(kube: &KubeApi, ns: &str) -> Api<DynamicObject> {
    let resource: ApiResource = imageposture::operator::policy_reports::api_resource();
    Api::namespaced_with(kube.admin(), ns, &resource)
}

async fn report(kube: &KubeApi, ns: &str) -> Option<Value> {
    let report = report_api(kube, ns)
        .get_opt("imageposture")
        .await
        .expect("get PolicyReport")?;
    Some(serde_json::to_value(report).expect("json"))
}

fn report_writes(proxy: &ApiProxy) -> usize {
    proxy.writes_to("/policyreports").len()
}

/// `run --policy-reports`: one report per namespace, one result per (owner, image), written
/// only when it changes, capped at 500 results, deleted with the namespace's last pod. The
/// PolicyReport CRD is the Policy WG's (tests/fixtures/policyreport-crd.yaml); the operator
/// runs with `config/rbac` and `config/policy-reports`, without leader election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reports_created_unchanged_bounded_and_deleted() {
    let Some(cluster) = Cluster::start_with(&["config/policy-reports"]).await else {
        return;
    };
    cluster
        .kube
        .install_crd_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policyreport-crd.yaml"),
        )
        .await;
    let env = TestEnv::new();
    let signed = env.keyless_image("run-reports", &Identity::github()).await;
    let image = format!("{}:v1", signed.repo_path());
    let id = signed.key();
    let mut pods: Vec<Pod> = (0..2)
        .map(|i| running_pod("prod", &format!("web-{i}"), &image, &id, Some("web-6d4")))
        .collect();
    pods.push(running_pod("dev", "debug", &image, &id, None));
    pods.extend((0..505).map(|i| running_pod("big", &format!("p-{i:03}"), &image, &id, None)));
    let created = Instant::now();
    put_pods(&cluster.kube, pods).await;
    eprintln!("508 pods created in {:.1?}", created.elapsed());

    let config = kubeconfig(&env, "kubeconfig", &cluster.proxy, &cluster.token);
    let _operator = Operator::start(
        &env,
        &config,
        &[
            "--install-crd=false",
            "--policy-reports=true",
            "--debounce",
            "100ms",
            "--resync",
            "1s",
            "--leader-election=false",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[],
    );

    // Created: one result for the ReplicaSet's two pods, `pass` once the image is verified.
    let k = &cluster.kube;
    let prod = eventually("the prod PolicyReport passing", || async move {
        report(k, "prod")
            .await
            .filter(|r| r["results"][0]["result"] == "pass")
    })
    .await;
    assert_eq!(prod["metadata"]["name"], "imageposture");
    assert_eq!(
        prod["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "imageposture"
    );
    assert_eq!(prod["results"].as_array().unwrap().len(), 1, "{prod}");
    assert_eq!(
        prod["results"][0]["resources"][0]["kind"], "ReplicaSet",
        "{prod}"
    );
    assert_eq!(
        prod["results"][0]["resources"][0]["name"], "web-6d4",
        "{prod}"
    );
    assert_eq!(prod["summary"]["pass"], 1);
    let applied = cluster
        .proxy
        .writes_to("/namespaces/prod/policyreports/imageposture")
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(applied.method, "PATCH");
    assert_eq!(applied.content_type, "application/apply-patch+yaml");
    assert!(applied.path.contains("fieldManager=imageposture"));

    // Bounded: 505 bare pods, 500 results, the summary counts all, the rest is annotated.
    let big = eventually("the big PolicyReport passing", || async move {
        report(k, "big")
            .await
            .filter(|r| r["summary"]["pass"] == 505)
    })
    .await;
    assert_eq!(big["results"].as_array().unwrap().len(), 500);
    assert_eq!(
        big["metadata"]["annotations"]["imageposture.io/results-omitted"],
        "5"
    );
    eventually("the dev PolicyReport passing", || async move {
        report(k, "dev").await.filter(|r| r["summary"]["pass"] == 1)
    })
    .await;

    // Unchanged: resyncs with nothing changed write no PolicyReport.
    let writes = report_writes(&cluster.proxy);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        report_writes(&cluster.proxy),
        writes,
        "idle resyncs wrote PolicyReports"
    );

    // Deleted: the namespace's last pod goes, so does its report; the others stay.
    let pods: Api<Pod> = Api::namespaced(cluster.admin(), "dev");
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete("debug", &now).await.expect("delete pod");
    eventually("the dev PolicyReport deleted", || async move {
        report(k, "dev").await.is_none().then_some(())
    })
    .await;
    let deletes = cluster
        .proxy
        .writes_to("/policyreports")
        .iter()
        .filter(|w| w.method == "DELETE")
        .count();
    assert_eq!(deletes, 1);
    assert!(report(k, "prod").await.is_some());
    // Everything it did, config/rbac and config/policy-reports allowed.
    assert_eq!(forbidden(&cluster.proxy), NONE, "refused by the authorizer");
}
