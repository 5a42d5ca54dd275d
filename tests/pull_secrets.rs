//! Pull secrets (issue 16) against the real kube-apiserver (tests/support/kube): real Pods, Secrets and
//! ServiceAccounts, read by the operator's ServiceAccount with exactly `config/rbac` plus the
//! `config/pull-secrets` Component, through the counting proxy; images in a real Distribution
//! registry with htpasswd auth. The verifier is the operator's (`Verifier::with_extras` with a
//! [`PullSecretSource`] over a real pod reflector), as `run --pull-secrets=true` builds it.

#[path = "support/kube/mod.rs"]
mod kube;
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, PostParams};
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::{watcher, WatchStreamExt};
use base64::Engine as _;
use futures::StreamExt;
use imageposture::core::image::ImageId;
use imageposture::core::posture::{Posture, Reason, Verdict};
use imageposture::operator::pull_secrets::PullSecretSource;
use imageposture::verify::{Extras, PullSecrets, Verifier};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::cluster::Cluster;
use serde_json::json;
use support::pki::Identity;
use support::registry::{htpasswd_pair, HTPASSWD_USERS};
use support::{unique_repo, via, TestEnv};

const WRONG: &str = "s3cret-wrong-PW";

fn secrets() -> Vec<String> {
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = vec!["s3cret".to_string()];
    for (u, p) in HTPASSWD_USERS {
        out.push(b64(format!("{u}:{p}")));
        out.push(b64(format!("{u}:{WRONG}")));
    }
    out
}

#[track_caller]
fn clean(v: &Verdict) {
    let text = format!("{v:?} {}", serde_json::to_string(v).unwrap());
    for s in secrets() {
        assert!(!text.contains(&s), "leak of {s:?}: {text}");
    }
}

#[track_caller]
fn posture(v: &Verdict, want: Posture) {
    assert_eq!(v.posture, want, "{v:#?}");
    clean(v);
}

#[track_caller]
fn refused(v: &Verdict, names: &[&str]) {
    assert_eq!(
        (v.posture, v.reason),
        (Posture::Checking, Reason::Unauthorized),
        "{v:#?}"
    );
    for n in names {
        assert!(v.message.contains(n), "message lacks {n:?}: {}", v.message);
    }
    clean(v);
}

/// A `kubernetes.io/dockerconfigjson` (or, `legacy`, `kubernetes.io/dockercfg`) Secret.
fn pull_secret(
    ns: &str,
    name: &str,
    host: &str,
    user: &str,
    password: &str,
    legacy: bool,
) -> Secret {
    let entry = json!({ host: { "username": user, "password": password } });
    let (ty, key, data) = if legacy {
        ("kubernetes.io/dockercfg", ".dockercfg", entry)
    } else {
        (
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            json!({ "auths": entry }),
        )
    };
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": ns },
        "type": ty,
        "data": { key: base64::engine::general_purpose::STANDARD.encode(data.to_string()) },
    }))
    .unwrap()
}

struct World {
    cluster: Cluster,
    env: TestEnv,
    host: String,
    pods: Store<Pod>,
}

impl World {
    async fn new() -> Option<World> {
        let cluster = Cluster::start_with(&["config/pull-secrets"]).await?;
        let (open, authed) = htpasswd_pair();
        let env = TestEnv::with_registry(open);
        // The operator's pod reflector, as `run` has it (its ServiceAccount, through the proxy).
        let (pods, writer) = reflector::store::<Pod>();
        let events = watcher(
            Api::<Pod>::all(cluster.client()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .applied_objects();
        tokio::spawn(events.for_each(|_| async {}));
        pods.wait_until_ready().await.unwrap();
        Some(World {
            cluster,
            env,
            host: authed.host.clone(),
            pods,
        })
    }

    async fn namespace(&self, ns: &str) {
        self.cluster.kube.ensure_namespace(ns).await;
    }

    async fn put_secret(&self, s: Secret) {
        let ns = s.metadata.namespace.clone().unwrap();
        let api: Api<Secret> = Api::namespaced(self.cluster.admin(), &ns);
        let name = s.metadata.name.clone().unwrap();
        if api.get_opt(&name).await.unwrap().is_some() {
            api.replace(&name, &PostParams::default(), &s)
                .await
                .unwrap();
        } else {
            api.create(&PostParams::default(), &s).await.unwrap();
        }
    }

    async fn service_account(&self, ns: &str, name: &str, secrets: &[&str]) {
        let sa: ServiceAccount = serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": ns },
            "imagePullSecrets": secrets.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(),
        }))
        .unwrap();
        Api::<ServiceAccount>::namespaced(self.cluster.admin(), ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
    }

    async fn set_account_secrets(&self, ns: &str, name: &str, secrets: &[&str]) {
        let api = Api::<ServiceAccount>::namespaced(self.cluster.admin(), ns);
        let mut sa = api.get(name).await.unwrap();
        sa.image_pull_secrets = Some(
            secrets
                .iter()
                .map(|s| k8s_openapi::api::core::v1::LocalObjectReference {
                    name: s.to_string(),
                })
                .collect(),
        );
        api.replace(name, &PostParams::default(), &sa)
            .await
            .unwrap();
    }

    /// A pod running `image` with these pull secrets and ServiceAccount.
    async fn pod(&self, ns: &str, name: &str, image: &ImageId, sa: Option<&str>, secrets: &[&str]) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": ns },
            "spec": {
                "serviceAccountName": sa,
                "automountServiceAccountToken": false,
                "imagePullSecrets": secrets.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(),
                "containers": [{ "name": "c", "image": image.key() }],
            },
        }))
        .unwrap();
        Api::<Pod>::namespaced(self.cluster.admin(), ns)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        // The reflector sees it before the verifier asks.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.pods.state().iter().any(|p| {
            p.metadata.name.as_deref() == Some(name) && p.metadata.namespace.as_deref() == Some(ns)
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "pod {ns}/{name} never reflected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A signed and an unsigned image, seen through the htpasswd registry.
    async fn images(&self, name: &str) -> (ImageId, ImageId) {
        let signed = self.env.keyless_image(name, &Identity::github()).await;
        let unsigned = self
            .env
            .oci
            .push_image(&unique_repo(&format!("{name}-unsigned")), "v1")
            .await
            .id;
        (via(&signed, &self.host), via(&unsigned, &self.host))
    }

    async fn verifier(&self, ttl: Duration) -> Verifier {
        let source = PullSecretSource::new(self.cluster.client(), self.pods.clone()).with_ttl(ttl);
        Verifier::with_extras(
            self.env.config(&[&self.host]),
            Extras {
                pull_secrets: Some(Arc::new(source) as Arc<dyn PullSecrets>),
                ..Extras::default()
            },
        )
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn pull_secrets_from_real_pods_secrets_and_service_accounts() {
    let Some(w) = World::new().await else { return };
    let (alice, alice_pw) = HTPASSWD_USERS[0];
    let (carol, carol_pw) = HTPASSWD_USERS[1];
    for ns in ["team-a", "team-b", "team-c", "team-d", "team-e", "team-f"] {
        w.namespace(ns).await;
    }
    // Index rebuilds are at most every 5 s: every pod exists before the first verification.
    // team-a: the pod's own imagePullSecrets (dockerconfigjson).
    let (a_signed, a_unsigned) = w.images("ps-pod").await;
    w.put_secret(pull_secret(
        "team-a", "regcred", &w.host, alice, alice_pw, false,
    ))
    .await;
    // A secret no pod names: never read.
    w.put_secret(pull_secret(
        "team-a", "unnamed", &w.host, alice, alice_pw, false,
    ))
    .await;
    w.pod("team-a", "app", &a_signed, None, &["regcred"]).await;
    w.pod("team-a", "app-unsigned", &a_unsigned, None, &["regcred"])
        .await;
    // team-b: only the ServiceAccount's imagePullSecrets (dockercfg).
    let (b_signed, _) = w.images("ps-sa").await;
    w.put_secret(pull_secret(
        "team-b", "sa-cred", &w.host, carol, carol_pw, true,
    ))
    .await;
    // (The ServiceAccount admission plugin copies a ServiceAccount's imagePullSecrets into a new
    // pod that has none: the secret is added after the pod, so only the ServiceAccount names it.)
    w.service_account("team-b", "builder", &[]).await;
    w.pod("team-b", "app", &b_signed, Some("builder"), &[])
        .await;
    w.set_account_secrets("team-b", "builder", &["sa-cred"])
        .await;
    // team-c and team-d: one image, a wrong secret in one namespace and a right one in the other.
    let (cd_signed, _) = w.images("ps-two-ns").await;
    w.put_secret(pull_secret(
        "team-c", "regcred", &w.host, alice, WRONG, false,
    ))
    .await;
    w.put_secret(pull_secret(
        "team-d", "regcred", &w.host, carol, carol_pw, false,
    ))
    .await;
    w.pod("team-c", "app", &cd_signed, None, &["regcred"]).await;
    w.pod("team-d", "app", &cd_signed, None, &["regcred"]).await;
    // team-e: a wrong secret, rotated to a right one.
    let (e_signed, _) = w.images("ps-rotate").await;
    w.put_secret(pull_secret(
        "team-e", "regcred", &w.host, alice, WRONG, false,
    ))
    .await;
    w.pod("team-e", "app", &e_signed, None, &["regcred"]).await;
    // team-f: a right secret, then deleted.
    let (f_signed, _) = w.images("ps-delete").await;
    w.put_secret(pull_secret(
        "team-f", "regcred", &w.host, alice, alice_pw, false,
    ))
    .await;
    w.pod("team-f", "app", &f_signed, None, &["regcred"]).await;
    w.cluster.proxy.reset();

    let v = w.verifier(Duration::from_secs(300)).await;
    // Each source alone: the pod's secret, the ServiceAccount's.
    posture(&v.observe(&a_signed).await, Posture::Signed);
    posture(&v.observe(&a_unsigned).await, Posture::NotSigned);
    posture(&v.observe(&b_signed).await, Posture::Signed);
    // Two namespaces, two secrets: the image is read with either; the wrong one costs nothing.
    posture(&v.observe(&cd_signed).await, Posture::Signed);
    // Rotation: refused, named, never the secret; rotated, read again (the refusal dropped it
    // from the cache), and signed.
    refused(
        &v.observe(&e_signed).await,
        &["pull-secret team-e/regcred", "HTTP 401"],
    );
    w.put_secret(pull_secret(
        "team-e", "regcred", &w.host, alice, alice_pw, false,
    ))
    .await;
    posture(&v.observe(&e_signed).await, Posture::Signed);

    // Deletion: with a short TTL the secret is read again, found gone, and the image is
    // `checking / Unauthorized` saying so.
    let short = w.verifier(Duration::from_millis(300)).await;
    posture(&short.observe(&f_signed).await, Posture::Signed);
    Api::<Secret>::namespaced(w.cluster.admin(), "team-f")
        .delete("regcred", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    refused(
        &short.observe(&f_signed).await,
        &["anonymous", "pull secret team-f/regcred: not found"],
    );

    // What the operator sent: only `get` of named Secrets and ServiceAccounts, never list or
    // watch, never a secret no pod names, never refused by RBAC.
    let seen = w.cluster.proxy.seen();
    let mut sent = BTreeSet::new();
    for s in seen
        .iter()
        .filter(|s| s.path.contains("/secrets") || s.path.contains("/serviceaccounts"))
    {
        let path = s.path.split('?').next().unwrap();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // api / v1 / namespaces / NS / RESOURCE / NAME
        assert_eq!(parts.len(), 6, "not a named object: {s:?}");
        assert_eq!(s.method, "GET", "{s:?}");
        assert!(!s.path.contains("watch"), "{s:?}");
        assert!(s.status == 200 || s.status == 404, "{s:?}");
        assert_ne!(parts[5], "unnamed", "read a secret no pod names");
        sent.insert((parts[4].to_string(), "get".to_string()));
    }
    assert_eq!(
        sent,
        BTreeSet::from([
            ("secrets".to_string(), "get".to_string()),
            ("serviceaccounts".to_string(), "get".to_string())
        ])
    );
    // The Component grants exactly that.
    let role: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/pull-secrets/cluster_role.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_sequence().unwrap() {
        assert_eq!(
            rule["apiGroups"].as_sequence().unwrap(),
            &[serde_yaml::Value::from("")]
        );
        for r in rule["resources"].as_sequence().unwrap() {
            for verb in rule["verbs"].as_sequence().unwrap() {
                granted.insert((
                    r.as_str().unwrap().to_string(),
                    verb.as_str().unwrap().to_string(),
                ));
            }
        }
    }
    assert_eq!(
        granted, sent,
        "config/pull-secrets grants exactly what the code sends"
    );
    // Each secret read once within its TTL (team-e twice: refused, then read again).
    let reads = |needle: &str| seen.iter().filter(|s| s.path.ends_with(needle)).count();
    assert_eq!(reads("/namespaces/team-a/secrets/regcred"), 1);
    assert_eq!(reads("/namespaces/team-b/serviceaccounts/builder"), 1);
    assert_eq!(reads("/namespaces/team-b/secrets/sa-cred"), 1);
    assert_eq!(reads("/namespaces/team-e/secrets/regcred"), 2);
}

#[tokio::test]
async fn without_pull_secret_rbac_the_image_says_so() {
    // The operator's client without the Component: the read is refused (403) and named.
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let (open, authed) = htpasswd_pair();
    let env = TestEnv::with_registry(open);
    cluster.kube.ensure_namespace("team-x").await;
    let (pods, writer) = reflector::store::<Pod>();
    let events = watcher(
        Api::<Pod>::all(cluster.client()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects();
    tokio::spawn(events.for_each(|_| async {}));
    pods.wait_until_ready().await.unwrap();
    let id = via(
        &env.keyless_image("ps-norbac", &Identity::github()).await,
        &authed.host,
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "app", "namespace": "team-x" },
        "spec": { "automountServiceAccountToken": false, "imagePullSecrets": [{"name": "regcred"}],
                  "containers": [{ "name": "c", "image": id.key() }] },
    }))
    .unwrap();
    Api::<Pod>::namespaced(cluster.admin(), "team-x")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    while pods.state().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let source = PullSecretSource::new(cluster.client(), pods.clone());
    let v = Verifier::with_extras(
        env.config(&[&authed.host]),
        Extras {
            pull_secrets: Some(Arc::new(source) as Arc<dyn PullSecrets>),
            ..Extras::default()
        },
    )
    .await
    .unwrap();
    refused(
        &v.observe(&id).await,
        &["pull secret team-x/regcred: API server answered 403"],
    );
}

#[tokio::test]
async fn pull_secrets_come_before_plugins_and_docker_config() {
    let Some(w) = World::new().await else { return };
    let (alice, alice_pw) = HTPASSWD_USERS[0];
    w.namespace("team-p").await;
    // Through a counting proxy, to see which credential is sent first.
    let proxy = support::proxy::Proxy::start(&w.host).await;
    let (signed, _) = w.images("ps-first").await;
    let signed = via(&signed, &proxy.host);
    w.put_secret(pull_secret(
        "team-p",
        "regcred",
        &proxy.host,
        alice,
        WRONG,
        false,
    ))
    .await;
    w.pod("team-p", "app", &signed, None, &["regcred"]).await;
    let config = w.env.dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({ "auths": { proxy.host.clone(): { "username": alice, "password": alice_pw } } })
            .to_string(),
    )
    .unwrap();
    let mut cfg = w.env.config(&[&proxy.host]);
    cfg.registry_config = Some(config);
    let source = PullSecretSource::new(w.cluster.client(), w.pods.clone());
    let v = Verifier::with_extras(
        cfg,
        Extras {
            pull_secrets: Some(Arc::new(source) as Arc<dyn PullSecrets>),
            ..Extras::default()
        },
    )
    .await
    .unwrap();
    posture(&v.observe(&signed).await, Posture::Signed);
    let b64 = |p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{alice}:{p}"));
    let sent: Vec<String> = proxy
        .authorizations()
        .into_iter()
        .filter_map(|(_, a)| a)
        .collect();
    let first_wrong = sent
        .iter()
        .position(|a| *a == format!("Basic {}", b64(WRONG)));
    let first_right = sent
        .iter()
        .position(|a| *a == format!("Basic {}", b64(alice_pw)));
    assert!(
        matches!((first_wrong, first_right), (Some(w), Some(r)) if w < r),
        "the pull secret (wrong) first, then the docker config (right): {sent:#?}"
    );
}

/// Kills the operator process when the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_run_process_with_pull_secrets_against_the_real_api_server() {
    let Some(w) = World::new().await else { return };
    let (alice, alice_pw) = HTPASSWD_USERS[0];
    for ns in ["run-a", "run-w"] {
        w.namespace(ns).await;
    }
    let (signed, unsigned) = w.images("run-ps").await;
    let (refused_img, _) = w.images("run-ps-wrong").await;
    w.put_secret(pull_secret(
        "run-a", "regcred", &w.host, alice, alice_pw, false,
    ))
    .await;
    w.put_secret(pull_secret(
        "run-w", "regcred", &w.host, alice, WRONG, false,
    ))
    .await;
    w.pod("run-a", "signed", &signed, None, &["regcred"]).await;
    w.pod("run-a", "unsigned", &unsigned, None, &["regcred"])
        .await;
    w.pod("run-w", "wrong", &refused_img, None, &["regcred"])
        .await;
    w.cluster.proxy.reset();

    // The operator's ServiceAccount token (config/rbac + config/pull-secrets), through the
    // counting proxy.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n\
             users:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: x\n  context:\n    \
             cluster: c\n    user: u\ncurrent-context: x\n",
            w.cluster.proxy.url, w.cluster.token
        ),
    )
    .unwrap();
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let _operator = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_imageposture"))
            .args(["run", "--install-crd=false", "--pull-secrets=true"])
            .args([
                "--debounce",
                "100ms",
                "--resync",
                "1s",
                "--leader-election=false",
            ])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--trusted-root", w.env.trusted_root.to_str().unwrap()])
            .args(["--insecure-registry", &w.host])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "debug")
            .env_remove("IMAGEPOSTURE_REGISTRY_CONFIG")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("the operator starts"),
    );

    let want = [
        (signed.digest.clone(), "signed"),
        (unsigned.digest.clone(), "not-signed"),
        (refused_img.digest.clone(), "checking"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let postures = loop {
        let postures = w.cluster.image_postures().await;
        let got = |digest: &str| {
            postures
                .iter()
                .find(|p| p["spec"]["digest"] == digest || p.to_string().contains(digest))
                .and_then(|p| p["status"]["posture"].as_str().map(str::to_string))
        };
        if want.iter().all(|(d, p)| got(d).as_deref() == Some(*p)) {
            break postures;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "postures never settled: {postures:#?}\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let wrong = postures
        .iter()
        .find(|p| p.to_string().contains(&refused_img.digest))
        .unwrap();
    assert_eq!(wrong["status"]["reason"], "Unauthorized", "{wrong:#}");
    let message = wrong["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("pull-secret run-w/regcred"), "{message}");

    // No secret in any output: statuses, Events, the process's logs at debug, the requests.
    let events = w.cluster.events().await;
    let outputs = [
        ("ImagePostures", serde_json::to_string(&postures).unwrap()),
        ("Events", serde_json::to_string(&events).unwrap()),
        ("stdout", std::fs::read_to_string(&stdout).unwrap()),
        ("stderr", std::fs::read_to_string(&stderr).unwrap()),
        ("writes", format!("{:?}", w.cluster.writes())),
    ];
    for (what, text) in &outputs {
        for s in secrets() {
            assert!(!text.contains(&s), "{what} leaks {s:?}");
        }
    }
    // The process read exactly the secrets its pods name, with `get`, never refused by RBAC.
    let seen = w.cluster.proxy.seen();
    let reads: Vec<_> = seen
        .iter()
        .filter(|s| s.path.contains("/secrets") || s.path.contains("/serviceaccounts"))
        .collect();
    assert!(!reads.is_empty());
    for s in &reads {
        let path = s.path.split('?').next().unwrap();
        assert_eq!(path.trim_start_matches('/').split('/').count(), 6, "{s:?}");
        assert_eq!(s.method, "GET", "{s:?}");
        assert!(s.status == 200 || s.status == 404, "{s:?}");
    }
    assert!(reads
        .iter()
        .any(|s| s.path.ends_with("/namespaces/run-a/secrets/regcred")));
    assert!(reads
        .iter()
        .any(|s| s.path.ends_with("/namespaces/run-w/secrets/regcred")));
    assert!(
        seen.iter().all(|s| s.status != 403),
        "RBAC refused the operator something"
    );
}
