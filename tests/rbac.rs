//! Least privilege, proven.
//!
//! 1. RBAC: the real `imageposture run` process (with `--policy-reports`) goes through every
//!    path that talks to the API server (reflectors, server-side apply create/update, status,
//!    Events incl. a series patch, PolicyReports created, patched and deleted, garbage
//!    collection, leader election and release) against the real kube-apiserver (tests/support/kube),
//!    authenticated as its ServiceAccount bound to `config/rbac` and `config/policy-reports`,
//!    with RBAC on. The real authorizer must refuse nothing (no request answered 403: every
//!    grant the operator needs is there). Every request the proxy in front of the server saw is
//!    mapped to the RBAC (apiGroup, resource[/subresource], verb) the server authorized, and
//!    the roles must grant exactly that: nothing unused (a verb added to a role fails here),
//!    nothing missing, each in the narrowest scope (a Role for the operator's own namespace,
//!    the ClusterRole for the rest).
//! 2. Secrets: registry passwords, their base64 Basic form and bearer tokens never reach the
//!    process's logs (at `RUST_LOG=debug`), its output, ImagePosture status or Events.
//! 3. The Deployment runs non-root on a read-only root filesystem without capabilities, and
//!    the Dockerfile's final stage runs as a numeric non-root user.

#[path = "support/kube/mod.rs"]
mod kube;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ::kube::api::{Api, ListParams};
use base64::Engine as _;
use imageposture::core::image::ImageId;
use imageposture::model::naming::ResourceName as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::cluster::{write_kubeconfig, Cluster};
use kube::proxy::Seen;
use serde_json::{json, Value};
use support::pki::Identity;
use support::proxy::{Mode, Proxy};
use support::{via, TestEnv};

/// The RBAC component `--policy-reports` needs besides config/rbac.
const POLICY_REPORTS: &str = "config/policy-reports";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document of a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The objects of every `*.yaml` in a config directory.
fn config_dir(rel: &str) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(rel))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| documents(f)).collect()
}

fn deployment() -> Value {
    let mut found: Vec<Value> = config_dir("config/manager")
        .into_iter()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    assert_eq!(found.len(), 1, "one Deployment in config/manager");
    found.remove(0)
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    s.as_str()
                        .unwrap_or_else(|| panic!("not a string: {s}"))
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---- RBAC vocabulary --------------------------------------------------------------------------

/// What RBAC authorizes: (apiGroup, resource or resource/subresource, verb).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Triple {
    group: String,
    resource: String,
    verb: String,
}

impl Triple {
    fn new(group: &str, resource: &str, verb: &str) -> Triple {
        Triple {
            group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
        }
    }
}

impl std::fmt::Display for Triple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "\"\" (core)"
        } else {
            &self.group
        };
        write!(f, "{group} {} {}", self.resource, self.verb)
    }
}

/// Where a grant lives: cluster-wide (ClusterRoles) or in one namespace (Roles).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Scope {
    Cluster,
    Namespace(String),
}

/// One request as the API server's request-info resolver sees it.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    query: String,
    content_type: String,
    /// The answer's status code.
    status: u16,
}

impl From<&Seen> for Request {
    fn from(s: &Seen) -> Request {
        let (path, query) = s.path.split_once('?').unwrap_or((&s.path, ""));
        Request {
            method: s.method.clone(),
            path: path.to_string(),
            query: query.to_string(),
            content_type: s.content_type.clone(),
            status: s.status,
        }
    }
}

/// One authorization check a request causes, and the namespace it is made in (`None`:
/// cluster-scoped, or across all namespaces).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Use {
    triple: Triple,
    namespace: Option<String>,
}

/// The authorization checks the API server makes for one request (as its request-info
/// resolver does): GET is `get`, or `list` on a collection, or `watch` with `watch=true`; POST
/// `create`; PUT `update`; PATCH `patch`, plus `create` when a server-side apply created the
/// object (the server then authorizes `create` too); DELETE `delete` (`deletecollection` on a
/// collection). `Err` for a non-resource path (which RBAC grants through `nonResourceURLs`).
fn rbac_of(r: &Request) -> Result<Vec<Use>, String> {
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return Err(format!("non-resource request {} {}", r.method, r.path)),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, named) = match rest {
        [plural] => (plural.to_string(), false),
        [plural, _name] => (plural.to_string(), true),
        [plural, _name, sub] => (format!("{plural}/{sub}"), true),
        _ => return Err(format!("unexpected path {}", r.path)),
    };
    let query: BTreeMap<String, String> = url::form_urlencoded::parse(r.query.as_bytes())
        .into_owned()
        .collect();
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verbs: Vec<&str> = match (r.method.as_str(), named) {
        ("GET", _) if watch => vec!["watch"],
        ("GET", true) => vec!["get"],
        ("GET", false) => vec!["list"],
        ("POST", _) => vec!["create"],
        ("PUT", true) => vec!["update"],
        ("PATCH", true) if r.content_type == "application/apply-patch+yaml" && r.status == 201 => {
            vec!["patch", "create"]
        }
        ("PATCH", true) => vec!["patch"],
        ("DELETE", true) => vec!["delete"],
        ("DELETE", false) => vec!["deletecollection"],
        _ => return Err(format!("unexpected request {} {}", r.method, r.path)),
    };
    Ok(verbs
        .into_iter()
        .map(|verb| Use {
            triple: Triple::new(group, &resource, verb),
            namespace: namespace.clone(),
        })
        .collect())
}

/// Where each used triple must be granted: in the operator's own namespace (a Role) when every
/// use of it is there, cluster-wide (the ClusterRole) otherwise.
fn required(uses: &[Use], own_namespace: &str) -> BTreeMap<Scope, BTreeSet<Triple>> {
    let mut namespaces: BTreeMap<&Triple, BTreeSet<Option<&str>>> = BTreeMap::new();
    for u in uses {
        namespaces
            .entry(&u.triple)
            .or_default()
            .insert(u.namespace.as_deref());
    }
    let mut out: BTreeMap<Scope, BTreeSet<Triple>> = BTreeMap::new();
    for (triple, ns) in namespaces {
        let scope = if ns.len() == 1 && ns.contains(&Some(own_namespace)) {
            Scope::Namespace(own_namespace.to_string())
        } else {
            Scope::Cluster
        };
        out.entry(scope).or_default().insert(triple.clone());
    }
    out
}

/// What the roles grant, by scope. Panics on what this test cannot reason about (wildcards,
/// `resourceNames`, `nonResourceURLs`, aggregation) instead of guessing.
fn granted(objects: &[Value]) -> BTreeMap<Scope, BTreeSet<Triple>> {
    let mut out: BTreeMap<Scope, BTreeSet<Triple>> = BTreeMap::new();
    for role in objects {
        let scope = match role["kind"].as_str() {
            Some("ClusterRole") => Scope::Cluster,
            Some("Role") => Scope::Namespace(
                role["metadata"]["namespace"]
                    .as_str()
                    .expect("a Role has a namespace")
                    .to_string(),
            ),
            _ => continue,
        };
        assert!(
            role.get("aggregationRule").is_none(),
            "aggregated role: {role}"
        );
        for rule in role["rules"].as_array().cloned().unwrap_or_default() {
            for key in ["resourceNames", "nonResourceURLs"] {
                assert!(
                    rule.get(key).is_none(),
                    "{key} in {rule}: not derivable here"
                );
            }
            let (groups, resources, verbs) = (
                str_list(&rule["apiGroups"]),
                str_list(&rule["resources"]),
                str_list(&rule["verbs"]),
            );
            for list in [&groups, &resources, &verbs] {
                assert!(!list.iter().any(|x| x.contains('*')), "wildcard in {rule}");
            }
            for g in &groups {
                for r in &resources {
                    for v in &verbs {
                        out.entry(scope.clone())
                            .or_default()
                            .insert(Triple::new(g, r, v));
                    }
                }
            }
        }
    }
    out
}

/// Human-readable differences; empty when the grants are exactly what is required.
fn differences(
    required: &BTreeMap<Scope, BTreeSet<Triple>>,
    granted: &BTreeMap<Scope, BTreeSet<Triple>>,
) -> Vec<String> {
    let empty = BTreeSet::new();
    let scopes: BTreeSet<&Scope> = required.keys().chain(granted.keys()).collect();
    let mut out = Vec::new();
    for scope in scopes {
        let (need, have) = (
            required.get(scope).unwrap_or(&empty),
            granted.get(scope).unwrap_or(&empty),
        );
        let role = match scope {
            Scope::Cluster => "the ClusterRole".to_string(),
            Scope::Namespace(ns) => format!("a Role in {ns}"),
        };
        for t in have.difference(need) {
            out.push(format!(
                "MORE: {role} grants {t}, which the operator never uses there"
            ));
        }
        for t in need.difference(have) {
            out.push(format!(
                "LESS: the operator uses {t}, which {role} does not grant"
            ));
        }
    }
    out
}

/// The operator's ServiceAccount and namespace, as the Deployment runs it.
fn service_account() -> (String, String) {
    let d = deployment();
    let ns = d["metadata"]["namespace"].as_str().expect("namespace");
    let sa = d["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    (sa.to_string(), ns.to_string())
}

/// Every binding names the operator's ServiceAccount only and a role defined in config/rbac,
/// and every defined role is bound (so its grants are the ones the operator runs with).
fn check_bindings(objects: &[Value]) {
    let (sa, ns) = service_account();
    let defined: BTreeSet<(String, String, String)> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut bound = BTreeSet::new();
    for b in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
    {
        let subjects = b["subjects"].as_array().expect("subjects");
        assert_eq!(
            subjects,
            &vec![json!({"kind": "ServiceAccount", "name": sa, "namespace": ns})],
            "{b}"
        );
        let kind = b["roleRef"]["kind"].as_str().unwrap().to_string();
        let role_ns = if kind == "Role" {
            b["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string()
        } else {
            String::new()
        };
        let key = (
            kind,
            role_ns,
            b["roleRef"]["name"].as_str().unwrap().to_string(),
        );
        assert!(
            defined.contains(&key),
            "{b} binds a role not defined in config/rbac"
        );
        bound.insert(key);
    }
    assert_eq!(bound, defined, "every role is bound to the operator");
}

// ---- the operator process ---------------------------------------------------------------------

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Operator {
    /// SIGTERM, then waits for a clean exit.
    async fn stop(self) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = tokio::task::spawn_blocking(move || {
            let mut op = self;
            op.0.wait()
        })
        .await
        .unwrap()
        .unwrap();
        assert!(status.success(), "exit status {status}");
    }
}

/// `imageposture run` as the operator's ServiceAccount through the API proxy, in the
/// Deployment's namespace, fast timings.
fn spawn_operator(
    env: &TestEnv,
    api: &Cluster,
    namespace: &str,
    args: &[&str],
    rust_log: &str,
    logs: Option<(&Path, &Path)>,
) -> Operator {
    let kubeconfig = write_kubeconfig(
        &env.dir.path().join("kubeconfig"),
        &api.proxy.url,
        &api.token,
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imageposture"));
    // As the Deployment runs it: the CRD is installed by the manifests, not the operator.
    cmd.args([
        "run",
        "--install-crd=false",
        "--debounce",
        "100ms",
        "--resync",
        "500ms",
    ])
    .args(["--lease-duration", "3s"])
    // Port 0: two operators started at once never race for a port.
    .args(["--metrics-addr", "127.0.0.1:0"])
    .args(["--trusted-root", env.trusted_root.to_str().unwrap()])
    .args(["--insecure-registry", &env.registry.host])
    .args(args)
    .env("KUBECONFIG", kubeconfig)
    .env("POD_NAMESPACE", namespace)
    .env("POD_NAME", "operator-0")
    .env("RUST_LOG", rust_log);
    match logs {
        Some((out, err)) => {
            cmd.stdout(std::fs::File::create(out).unwrap())
                .stderr(std::fs::File::create(err).unwrap());
        }
        None => {
            cmd.stdout(Stdio::null());
        }
    }
    Operator(cmd.spawn().expect("the operator starts"))
}

async fn eventually<T, F>(what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
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

fn pod(ns: &str, name: &str, images: &[&ImageId]) -> Pod {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"name": format!("c{i}"), "image": id.key()}))
        .collect();
    let statuses: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"name": format!("c{i}"), "image": id.key(), "imageID": id.key(),
                   "ready": true, "restartCount": 0})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"containers": containers},
        "status": {"phase": "Running", "containerStatuses": statuses},
    }))
    .expect("pod")
}

async fn posture_of(api: &Cluster, id: &ImageId) -> Option<String> {
    api.image_posture(&id.resource_name())
        .await
        .and_then(|cr| cr["status"]["posture"].as_str().map(str::to_string))
}

async fn wait_posture(api: &Cluster, id: &ImageId, want: &str) {
    eventually(&format!("posture {want}"), || async move {
        (posture_of(api, id).await.as_deref() == Some(want)).then_some(())
    })
    .await
}

/// The Leases in the operator's namespace (read by the admin).
async fn leases(api: &Cluster, namespace: &str) -> Vec<Value> {
    Api::<Lease>::namespaced(api.admin(), namespace)
        .list(&ListParams::default())
        .await
        .expect("leases")
        .items
        .iter()
        .map(|l| serde_json::to_value(l).unwrap())
        .collect()
}

/// PolicyReports in `namespace` (read by the admin).
async fn policy_reports(api: &Cluster, namespace: &str) -> Vec<Value> {
    let resource = imageposture::operator::policy_reports::api_resource();
    Api::<::kube::api::DynamicObject>::namespaced_with(api.admin(), namespace, &resource)
        .list(&ListParams::default())
        .await
        .expect("policy reports")
        .items
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

fn table(required: &BTreeMap<Scope, BTreeSet<Triple>>) -> String {
    let mut rows: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for (scope, triples) in required {
        let role = match scope {
            Scope::Cluster => "ClusterRole".to_string(),
            Scope::Namespace(ns) => format!("Role ({ns})"),
        };
        for t in triples {
            rows.entry((role.clone(), t.group.clone(), t.resource.clone()))
                .or_default()
                .push(t.verb.clone());
        }
    }
    let mut out = String::from("| role | apiGroup | resource | verbs |\n|---|---|---|---|\n");
    for ((role, group, resource), verbs) in rows {
        let group = if group.is_empty() {
            "\"\"".into()
        } else {
            group
        };
        out.push_str(&format!(
            "| {role} | {group} | {resource} | {} |\n",
            verbs.join(", ")
        ));
    }
    out
}

// ---- 1. RBAC ----------------------------------------------------------------------------------

/// Every path that talks to the API server, through the real process: the pod and
/// ImagePosture reflectors (list + watch), server-side apply that creates and then updates an
/// ImagePosture, status writes, an Event on each posture change and a patched Event series
/// when a change repeats, a PolicyReport created, patched and deleted, garbage collection once
/// no pod uses the image, and leader election (get, create, renew) with a release at SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_grant_exactly_what_the_operator_uses() {
    let (sa, namespace) = service_account();
    assert_eq!(
        (sa.as_str(), namespace.as_str()),
        (kube::OPERATOR_SA, kube::OPERATOR_NS),
        "the harness binds the Deployment's ServiceAccount"
    );
    let Some(api) = Cluster::start_with(&[POLICY_REPORTS]).await else {
        return;
    };
    api.kube
        .install_crd_file(&root().join("tests/fixtures/policyreport-crd.yaml"))
        .await;
    let env = TestEnv::new();
    let proxy = Proxy::start(&env.registry.host).await;
    let id = via(
        &env.keyless_image("rbac", &Identity::github()).await,
        &proxy.host,
    );
    let web = pod("prod", "web-1", &[&id]);
    api.put_pods(std::slice::from_ref(&web)).await;
    api.reset_counters();
    let operator = spawn_operator(
        &env,
        &api,
        &namespace,
        &[
            "--ttl",
            "1s",
            "--grace",
            "1s",
            "--insecure-registry",
            &proxy.host,
            "--policy-reports=true",
        ],
        "warn",
        None,
    );

    wait_posture(&api, &id, "signed").await;
    eventually("a PolicyReport in prod", || async {
        (!policy_reports(&api, "prod").await.is_empty()).then_some(())
    })
    .await;
    // The signature disappears (its `.sig` tag and the referrers tag answer 404), comes back,
    // and disappears again: the second signed -> not-signed Event is a series (a PATCH); the
    // report follows each change (an apply that patches).
    proxy.set_mode_for(Mode::Status(404), "/manifests/sha256-");
    wait_posture(&api, &id, "not-signed").await;
    proxy.set_mode(Mode::Pass);
    wait_posture(&api, &id, "signed").await;
    proxy.set_mode_for(Mode::Status(404), "/manifests/sha256-");
    eventually("an Event series patch", || async {
        api.proxy
            .seen()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.starts_with("/apis/events.k8s.io/"))
            .then_some(())
    })
    .await;
    // No pod uses the image any more: after the grace period its ImagePosture is deleted, and
    // the namespace's report with its last pod.
    api.delete_pod(&web).await;
    eventually("garbage collection", || async {
        api.image_posture(&id.resource_name())
            .await
            .is_none()
            .then_some(())
    })
    .await;
    eventually("the PolicyReport deleted", || async {
        policy_reports(&api, "prod").await.is_empty().then_some(())
    })
    .await;
    operator.stop().await;
    let lease = leases(&api, &namespace).await.remove(0);
    assert_eq!(
        lease["spec"]["holderIdentity"].as_str().unwrap_or(""),
        "",
        "released"
    );

    let seen = api.proxy.seen();
    // The real authorizer refused nothing: config/ grants all the operator needs.
    let refused: Vec<String> = seen
        .iter()
        .filter(|r| r.status == 401 || r.status == 403)
        .map(|r| format!("{r} -> {}", r.status))
        .collect();
    assert!(
        refused.is_empty(),
        "requests the API server refused the operator's ServiceAccount: {refused:#?}"
    );
    let requests: Vec<Request> = seen.iter().map(Request::from).collect();
    let mut uses = Vec::new();
    let mut non_resource = Vec::new();
    for r in &requests {
        match rbac_of(r) {
            Ok(u) => uses.extend(u),
            Err(e) => non_resource.push(e),
        }
    }
    assert!(
        non_resource.is_empty(),
        "requests RBAC grants only through nonResourceURLs: {non_resource:#?}"
    );
    let required = required(&uses, &namespace);
    eprintln!(
        "derived from {} requests:\n{}",
        requests.len(),
        table(&required)
    );

    // The scenario must have reached every code path; a path it misses would go unproven.
    let all: BTreeSet<&Triple> = required.values().flatten().collect();
    for (g, r, v) in [
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("imageposture.io", "imagepostures", "list"),
        ("imageposture.io", "imagepostures", "watch"),
        ("imageposture.io", "imagepostures", "create"),
        ("imageposture.io", "imagepostures", "patch"),
        ("imageposture.io", "imagepostures", "delete"),
        ("imageposture.io", "imagepostures/status", "patch"),
        ("imageposture.io", "signerbaselines", "list"),
        ("imageposture.io", "signerbaselines", "watch"),
        ("imageposture.io", "signerbaselines", "create"),
        ("imageposture.io", "signerbaselines/status", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
        ("wgpolicyk8s.io", "policyreports", "list"),
        ("wgpolicyk8s.io", "policyreports", "create"),
        ("wgpolicyk8s.io", "policyreports", "patch"),
        ("wgpolicyk8s.io", "policyreports", "delete"),
    ] {
        assert!(
            all.contains(&Triple::new(g, r, v)),
            "the scenario never reached {g} {r} {v}; derived:\n{}",
            table(&required)
        );
    }

    let mut objects = config_dir("config/rbac");
    objects.extend(config_dir(POLICY_REPORTS));
    check_bindings(&objects);
    let diff = differences(&required, &granted(&objects));
    assert!(
        diff.is_empty(),
        "config/rbac and {POLICY_REPORTS} do not match what the operator uses:\n{}\nderived:\n{}",
        diff.join("\n"),
        table(&required)
    );
}

#[test]
fn requests_map_to_the_verbs_the_api_server_authorizes() {
    let req = |method: &str, path: &str, query: &str, ct: &str, status: u16| Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        content_type: ct.into(),
        status,
    };
    let one = |r: Request| -> Vec<(String, String, String, Option<String>)> {
        rbac_of(&r)
            .unwrap()
            .into_iter()
            .map(|u| {
                (
                    u.triple.group,
                    u.triple.resource,
                    u.triple.verb,
                    u.namespace,
                )
            })
            .collect()
    };
    let t = |g: &str, r: &str, v: &str, ns: Option<&str>| {
        (
            g.to_string(),
            r.to_string(),
            v.to_string(),
            ns.map(str::to_string),
        )
    };
    assert_eq!(
        one(req("GET", "/api/v1/pods", "", "", 200)),
        [t("", "pods", "list", None)]
    );
    assert_eq!(
        one(req(
            "GET",
            "/api/v1/pods",
            "watch=true&resourceVersion=5",
            "",
            200
        )),
        [t("", "pods", "watch", None)]
    );
    assert_eq!(
        one(req("GET", "/api/v1/namespaces/a/pods/p", "", "", 404)),
        [t("", "pods", "get", Some("a"))]
    );
    let ip = "/apis/imageposture.io/v1alpha1/imagepostures/x";
    let apply = "application/apply-patch+yaml";
    assert_eq!(
        one(req("PATCH", ip, "fieldManager=m&force=true", apply, 201)),
        [
            t("imageposture.io", "imagepostures", "patch", None),
            t("imageposture.io", "imagepostures", "create", None)
        ]
    );
    assert_eq!(
        one(req("PATCH", ip, "fieldManager=m", apply, 200)),
        [t("imageposture.io", "imagepostures", "patch", None)]
    );
    assert_eq!(
        one(req("PATCH", &format!("{ip}/status"), "", apply, 200)),
        [t("imageposture.io", "imagepostures/status", "patch", None)]
    );
    assert_eq!(
        one(req("DELETE", ip, "", "", 200)),
        [t("imageposture.io", "imagepostures", "delete", None)]
    );
    let leases = "/apis/coordination.k8s.io/v1/namespaces/n/leases";
    assert_eq!(
        one(req("POST", leases, "", "application/json", 201)),
        [t("coordination.k8s.io", "leases", "create", Some("n"))]
    );
    assert_eq!(
        one(req(
            "PUT",
            &format!("{leases}/l"),
            "",
            "application/json",
            200
        )),
        [t("coordination.k8s.io", "leases", "update", Some("n"))]
    );
    assert!(rbac_of(&req("GET", "/version", "", "", 404)).is_err());
}

/// The comparison is strict both ways: one verb more, or one less, in the checked-in roles
/// fails (so the scenario test fails when someone widens the ClusterRole).
#[test]
fn one_verb_more_or_less_is_a_failure() {
    let (_, namespace) = service_account();
    let objects = config_dir("config/rbac");
    let as_granted = granted(&objects);
    // Pretend the operator used exactly what is granted: no differences.
    let uses: Vec<Use> = as_granted
        .iter()
        .flat_map(|(scope, ts)| {
            ts.iter().map(move |t| Use {
                triple: t.clone(),
                namespace: match scope {
                    Scope::Cluster => None,
                    Scope::Namespace(ns) => Some(ns.clone()),
                },
            })
        })
        .collect();
    let need = required(&uses, &namespace);
    assert_eq!(differences(&need, &as_granted), Vec::<String>::new());

    let mut widened = objects.clone();
    let role = widened
        .iter_mut()
        .find(|o| o["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    role["rules"][0]["verbs"]
        .as_array_mut()
        .unwrap()
        .push(json!("deletecollection"));
    let diff = differences(&need, &granted(&widened));
    assert_eq!(diff.len(), 1, "{diff:#?}");
    assert!(
        diff[0].starts_with("MORE: the ClusterRole grants"),
        "{diff:#?}"
    );

    let mut narrowed = objects;
    let role = narrowed
        .iter_mut()
        .find(|o| o["kind"] == "Role")
        .expect("a Role");
    role["rules"][0]["verbs"].as_array_mut().unwrap().pop();
    let diff = differences(&need, &granted(&narrowed));
    assert_eq!(diff.len(), 1, "{diff:#?}");
    assert!(diff[0].starts_with("LESS: "), "{diff:#?}");
}

// ---- 2. secrets -------------------------------------------------------------------------------

const USER: &str = "robot";
const PASSWORD: &str = "pw-Zq7xK2-never-log-me";
const WRONG_PASSWORD: &str = "pw-Wr0ngH4-never-log-me-either";
const TOKEN: &str = "tok-Bq9cV1-bearer-never-log-me";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The secrets, and the forms they travel in.
fn secrets() -> Vec<String> {
    vec![
        PASSWORD.into(),
        WRONG_PASSWORD.into(),
        TOKEN.into(),
        b64(&format!("{USER}:{PASSWORD}")),
        b64(&format!("{USER}:{WRONG_PASSWORD}")),
        // Half a token or credential would still be a leak.
        TOKEN[..TOKEN.len() / 2].into(),
        PASSWORD[..PASSWORD.len() / 2].into(),
    ]
}

/// `text` without ANSI colour sequences (the text log colours field names and levels).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    let text = strip_ansi(text);
    for s in secrets() {
        assert!(
            !text.contains(&s),
            "{what} contains the secret {s:?}:\n{text}"
        );
    }
}

/// Three registries: token auth (Basic credentials sent to the token realm, the token on every
/// request), Basic auth, and Basic auth that refuses the configured password (the error path).
/// The operator at `RUST_LOG=debug` and `imageposture observe` at debug, in every output format:
/// no password, no base64 credential, no token, anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_secrets_never_reach_logs_events_or_status() {
    let (_, namespace) = service_account();
    let Some(api) = Cluster::start().await else {
        return;
    };
    let env = TestEnv::new();
    let img = env.keyless_image("secrets", &Identity::github()).await;
    let bearer = Proxy::start(&env.registry.host).await;
    bearer.set_mode(Mode::Bearer(TOKEN.into()));
    let basic = Proxy::start(&env.registry.host).await;
    basic.set_mode(Mode::Basic(b64(&format!("{USER}:{PASSWORD}"))));
    let refusing = Proxy::start(&env.registry.host).await;
    refusing.set_mode(Mode::Basic(b64("robot:something-else")));
    let config = env.dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({"auths": {
            bearer.host.clone(): {"username": USER, "password": PASSWORD},
            basic.host.clone(): {"auth": b64(&format!("{USER}:{PASSWORD}"))},
            refusing.host.clone(): {"username": USER, "password": WRONG_PASSWORD},
        }})
        .to_string(),
    )
    .unwrap();
    let (via_bearer, via_basic, via_refusing) = (
        via(&img, &bearer.host),
        via(&img, &basic.host),
        via(&img, &refusing.host),
    );
    let hosts = format!("{},{},{}", bearer.host, basic.host, refusing.host);

    // The operator.
    api.put_pods(&[pod(
        "prod",
        "web-1",
        &[&via_bearer, &via_basic, &via_refusing],
    )])
    .await;
    let (out, err) = (
        env.dir.path().join("operator.out"),
        env.dir.path().join("operator.err"),
    );
    let operator = spawn_operator(
        &env,
        &api,
        &namespace,
        &[
            "--registry-config",
            config.to_str().unwrap(),
            "--insecure-registry",
            &hosts,
        ],
        "debug",
        Some((&out, &err)),
    );
    wait_posture(&api, &via_bearer, "signed").await;
    wait_posture(&api, &via_basic, "signed").await;
    wait_posture(&api, &via_refusing, "checking").await;
    let refused = api
        .image_posture(&via_refusing.resource_name())
        .await
        .unwrap();
    assert_eq!(refused["status"]["reason"], "Unauthorized", "{refused}");
    // A few more passes, then a clean stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    operator.stop().await;
    assert!(
        bearer
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/token")),
        "a token was fetched: {:?}",
        bearer.requests()
    );

    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(stderr.contains("DEBUG"), "debug logging was on:\n{stderr}");
    assert_no_secret("the operator's stderr", &stderr);
    assert_no_secret(
        "the operator's stdout",
        &std::fs::read_to_string(&out).unwrap(),
    );
    let stored: Vec<Value> = api
        .image_postures()
        .await
        .into_iter()
        .chain(api.events().await)
        .chain(leases(&api, &namespace).await)
        .collect();
    assert_no_secret(
        "the objects written to the API server",
        &serde_json::to_string_pretty(&stored).unwrap(),
    );
    assert_no_secret(
        "the requests sent to the API server",
        &format!("{:?}", api.proxy.seen()),
    );

    // `imageposture observe`, same registries, each output format.
    for format in ["table", "json", "yaml"] {
        let args: Vec<String> = [
            "observe",
            "-o",
            format,
            "--trusted-root",
            env.trusted_root.to_str().unwrap(),
            "--registry-config",
            config.to_str().unwrap(),
            "--insecure-registry",
            &hosts,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([via_bearer.key(), via_basic.key(), via_refusing.key()])
        .collect();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_imageposture"))
                .args(&args)
                .env("RUST_LOG", "debug")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(stdout.contains("signed"), "{format}:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("Unauthorized"),
            "{format}:\n{stdout}\n{stderr}"
        );
        assert!(stderr.contains("DEBUG"), "{format}: debug logging was on");
        assert_no_secret(&format!("observe -o {format} stdout"), &stdout);
        assert_no_secret(&format!("observe -o {format} stderr"), &stderr);
    }
}

// ---- 3. the container -------------------------------------------------------------------------

#[test]
fn deployment_runs_non_root_read_only_without_capabilities() {
    let d = deployment();
    let pod = &d["spec"]["template"]["spec"];
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{psc}");
    assert_eq!(psc["runAsUser"], 65532, "{psc}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{psc}");
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host], true, "{host}");
    }

    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .map(|v| v.iter().map(|v| (v["name"].as_str().unwrap(), v)).collect())
        .unwrap_or_default();
    for (name, v) in &volumes {
        assert!(
            v.get("emptyDir").is_some(),
            "volume {name} is not an emptyDir: {v}"
        );
    }
    let containers: Vec<&Value> = pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten()
        .collect();
    assert!(!containers.is_empty());
    for c in containers {
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{c}");
        assert_eq!(sc["runAsUser"], 65532, "{c}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
        assert_ne!(sc["privileged"], true, "{c}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{c}");
        assert!(sc["capabilities"].get("add").is_none(), "{c}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{c}");

        // The only thing the operator writes is the TUF trust-root cache: it must be on a
        // writable emptyDir, since the root filesystem is read-only.
        let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| {
                        (
                            m["mountPath"].as_str().unwrap(),
                            m["name"].as_str().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cache = c["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == "IMAGEPOSTURE_TUF_CACHE"))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("IMAGEPOSTURE_TUF_CACHE not set: {c}"));
        let mount = mounts
            .iter()
            .find(|(path, _)| Path::new(cache).starts_with(path))
            .unwrap_or_else(|| panic!("{cache} is on the read-only root filesystem: {c}"));
        assert!(
            volumes.contains_key(mount.1),
            "{cache} is mounted from an undeclared volume"
        );
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            assert_ne!(m["readOnly"], false, "{m}");
        }
    }

    // The env var really is the flag the code reads.
    let help = Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--tuf-cache") && help.contains("IMAGEPOSTURE_TUF_CACHE"),
        "{help}"
    );
}

#[test]
fn dockerfile_final_stage_runs_as_numeric_non_root_user() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .expect("a FROM");
    let user = lines[last_from..]
        .iter()
        .rev()
        .find_map(|l| {
            let (word, rest) = l.split_once(char::is_whitespace)?;
            word.eq_ignore_ascii_case("USER").then(|| rest.trim())
        })
        .expect("the final stage sets USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user} is not numeric (runAsNonRoot needs a number)"));
    assert_ne!(uid, 0, "USER {user}");
    assert_eq!(uid, 65532, "USER matches the Deployment's runAsUser");
    if !gid.is_empty() {
        let gid: u32 = gid.parse().unwrap_or_else(|_| panic!("USER {user}"));
        assert_ne!(gid, 0, "USER {user}");
    }
}
