//! The operator process itself (`imageposture run`) against the Kubernetes API double and the
//! real registry: reflectors, leader election, the inventory loop and the verification
//! controller, `/metrics`, `/healthz`, `/readyz`,
//! and a clean shutdown on SIGTERM that releases the Lease.

mod apidouble;
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apidouble::ApiDouble;
use serde_json::{json, Value};
use support::pki::{Identity, WORKFLOW_URI};
use support::registry::free_port;
use support::TestEnv;

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: double\nclusters:\n- name: double\n  cluster:\n    server: {server}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: nobody\nusers:\n- name: nobody\n  user: {{}}\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe() {
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

// Multi-threaded: the API double must keep answering while the test waits for the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_process_writes_imagepostures_and_serves_metrics() {
    let env = TestEnv::new();
    let signed = env.keyless_image("run-signed", &Identity::github()).await;
    let api = ApiDouble::start().await;
    api.seed(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "prod", "name": "web-1"},
        "spec": {"containers": [{"name": "app", "image": format!("{}:v1", signed.repo_path())}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "image": "", "imageID": signed.key(), "ready": true, "restartCount": 0}]}
    }));
    let port = free_port();
    let config = kubeconfig(env.dir.path(), &api.url());
    let operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_imageposture"))
            .args([
                "run",
                "--install-crd=false",
                "--debounce",
                "100ms",
                "--resync",
                "1s",
                "--lease-duration",
                "3s",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--trusted-root", env.trusted_root.to_str().unwrap()])
            .args(["--insecure-registry", &env.registry.host])
            .env("KUBECONFIG", &config)
            .env("POD_NAMESPACE", "imageposture-system")
            .env("POD_NAME", "operator-0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the operator starts"),
    );

    let name = signed.resource_name();
    // A first status may say `checking` while the verification runs.
    let cr: Value = eventually("the ImagePosture", || {
        api.image_posture(&name).filter(|cr| {
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

    let lease = eventually("the Lease", || {
        api.objects("coordination.k8s.io", "leases")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(lease["spec"]["holderIdentity"], "operator-0");

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
    let writes = api.image_posture_writes("PATCH");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        api.image_posture_writes("PATCH"),
        writes,
        "idle resyncs wrote"
    );

    // SIGTERM: a clean stop that hands the Lease back.
    let pid = operator.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || {
        let mut operator = operator;
        operator.0.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "exit status {status}");
    let lease = api.objects("coordination.k8s.io", "leases").remove(0);
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "lease not released: {lease}"
    );
}

const CRD: &str = "imagepostures.imageposture.io";

/// Out of cluster (no `KUBERNETES_SERVICE_HOST`, no `POD_NAMESPACE`) on a cluster without the
/// CRD: `run` applies it by default, touches no ImagePosture until the API server reports it
/// Established (the test plays the establishing controller, as tests/install.rs does), and
/// holds its Lease in `default`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_cluster_run_installs_the_crd_before_the_loops() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};

    let env = TestEnv::new();
    let signed = env.keyless_image("run-install", &Identity::github()).await;
    let api = ApiDouble::start().await;
    api.seed(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "prod", "name": "web-1"},
        "spec": {"containers": [{"name": "app", "image": format!("{}:v1", signed.repo_path())}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "image": "", "imageID": signed.key(), "ready": true, "restartCount": 0}]}
    }));
    assert!(api
        .objects("apiextensions.k8s.io", "customresourcedefinitions")
        .is_empty());
    let config = kubeconfig(env.dir.path(), &api.url());
    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_imageposture"))
            .args(["run", "--debounce", "100ms", "--resync", "1s"])
            .args(["--lease-duration", "3s", "--metrics-addr", "127.0.0.1:0"])
            .args(["--trusted-root", env.trusted_root.to_str().unwrap()])
            .args(["--insecure-registry", &env.registry.host])
            .env("KUBECONFIG", &config)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAMESPACE")
            .env_remove("IMAGEPOSTURE_INSTALL_CRD")
            .env("POD_NAME", "laptop")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the operator starts"),
    );

    let crd = eventually("the CRD applied", || {
        api.objects("apiextensions.k8s.io", "customresourcedefinitions")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(crd["metadata"]["name"], CRD);
    let applied = api
        .writes()
        .into_iter()
        .find(|w| w.path.ends_with(CRD))
        .expect("a write to the CRD");
    assert_eq!(applied.method, "PATCH");
    assert_eq!(applied.content_type, "application/apply-patch+yaml");
    assert!(
        applied.query.contains("fieldManager=imageposture"),
        "{applied:?}"
    );
    assert!(applied.query.contains("force=true"), "{applied:?}");

    // Not Established yet: the loops must not start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let touched = |api: &ApiDouble| {
        api.requests()
            .iter()
            .filter(|r| r.path.contains("/apis/imageposture.io/"))
            .count()
    };
    assert_eq!(touched(&api), 0, "ImagePostures touched before Established");
    let crds: Api<CustomResourceDefinition> = Api::all(api.client());
    let status = json!({"status": {"conditions": [
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
         "message": "no conflicts found", "lastTransitionTime": "2026-12-03T00:00:00Z"},
        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
         "message": "the initial names have been accepted",
         "lastTransitionTime": "2026-12-03T00:00:00Z"}]}});
    crds.patch_status(CRD, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status written");

    let name = signed.resource_name();
    let cr: Value = eventually("the ImagePosture signed", || {
        api.image_posture(&name)
            .filter(|cr| cr["status"]["posture"] == "signed")
    })
    .await;
    assert_eq!(cr["spec"]["image"], signed.key().as_str());
    let lease = eventually("the Lease", || {
        api.objects("coordination.k8s.io", "leases")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(lease["metadata"]["namespace"], "default");
    assert_eq!(lease["spec"]["holderIdentity"], "laptop");
}

fn running_pod(ns: &str, name: &str, image: &str, id: &str, owner: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "image": "", "imageID": id, "ready": true, "restartCount": 0}]}
    });
    if let Some(rs) = owner {
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": rs, "uid": format!("uid-{rs}"), "controller": true}]);
    }
    pod
}

fn report(api: &ApiDouble, ns: &str) -> Option<Value> {
    api.objects("wgpolicyk8s.io", "policyreports")
        .into_iter()
        .find(|r| r["metadata"]["namespace"] == ns)
}

fn report_writes(api: &ApiDouble) -> usize {
    api.writes()
        .iter()
        .filter(|w| w.path.contains("/policyreports"))
        .count()
}

/// `run --policy-reports`: one report per namespace, one result per (owner, image), written
/// only when it changes, capped at 500 results, deleted with the namespace's last pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reports_created_unchanged_bounded_and_deleted() {
    let env = TestEnv::new();
    let signed = env.keyless_image("run-reports", &Identity::github()).await;
    let image = format!("{}:v1", signed.repo_path());
    let api = ApiDouble::start().await;
    for i in 0..2 {
        api.seed(running_pod(
            "prod",
            &format!("web-{i}"),
            &image,
            &signed.key(),
            Some("web-6d4"),
        ));
    }
    api.seed(running_pod("dev", "debug", &image, &signed.key(), None));
    for i in 0..505 {
        api.seed(running_pod(
            "big",
            &format!("p-{i:03}"),
            &image,
            &signed.key(),
            None,
        ));
    }
    let config = kubeconfig(env.dir.path(), &api.url());
    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_imageposture"))
            .args(["run", "--install-crd=false", "--policy-reports=true"])
            .args([
                "--debounce",
                "100ms",
                "--resync",
                "1s",
                "--leader-election=false",
            ])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--trusted-root", env.trusted_root.to_str().unwrap()])
            .args(["--insecure-registry", &env.registry.host])
            .env("KUBECONFIG", &config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the operator starts"),
    );

    // Created: one result for the ReplicaSet's two pods, `pass` once the image is verified.
    let prod = eventually("the prod PolicyReport passing", || {
        report(&api, "prod").filter(|r| r["results"][0]["result"] == "pass")
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
    let applied = api
        .writes()
        .into_iter()
        .find(|w| {
            w.path
                .ends_with("/namespaces/prod/policyreports/imageposture")
        })
        .unwrap();
    assert_eq!(applied.content_type, "application/apply-patch+yaml");
    assert!(applied.query.contains("fieldManager=imageposture"));

    // Bounded: 505 bare pods, 500 results, the summary counts all, the rest is annotated.
    let big = eventually("the big PolicyReport passing", || {
        report(&api, "big").filter(|r| r["summary"]["pass"] == 505)
    })
    .await;
    assert_eq!(big["results"].as_array().unwrap().len(), 500);
    assert_eq!(
        big["metadata"]["annotations"]["imageposture.io/results-omitted"],
        "5"
    );
    eventually("the dev PolicyReport passing", || {
        report(&api, "dev").filter(|r| r["summary"]["pass"] == 1)
    })
    .await;

    // Unchanged: resyncs with nothing changed write no PolicyReport.
    let writes = report_writes(&api);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        report_writes(&api),
        writes,
        "idle resyncs wrote PolicyReports"
    );

    // Deleted: the namespace's last pod goes, so does its report; the others stay.
    api.remove("", "pods", "dev", "debug").unwrap();
    eventually("the dev PolicyReport deleted", || {
        report(&api, "dev").is_none().then_some(())
    })
    .await;
    let deletes = api
        .writes()
        .iter()
        .filter(|w| w.method == "DELETE" && w.path.contains("/policyreports"))
        .count();
    assert_eq!(deletes, 1);
    assert!(report(&api, "prod").is_some());
}
