//! Private registries (issue 16): a real Distribution registry with htpasswd auth, a token-auth
//! registry (the proxy's guarded token realm in front of a real one), docker `config.json`
//! (`auths`, `credHelpers`, `credsStore`), kubelet credential provider plugins, each helper and
//! plugin an executable the test writes (hostile ones included). Every verdict and every output
//! captured is searched for the secrets.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use imageposture::core::image::ImageId;
use imageposture::core::posture::{Posture, Reason, Verdict};
use imageposture::metrics::Metrics;
use imageposture::verify::{AuthEvent, CredSource, Extras, Verifier, VerifierConfig};
use support::pki::Identity;
use support::proxy::{Mode, Proxy};
use support::registry::htpasswd_pair;
use support::{unique_repo, via, TestEnv};

const ALICE: &str = "alice";
const ALICE_PW: &str = "s3cret-alice-PW";
const BOB: &str = "bob";
const BOB_PW: &str = "s3cret-bob-PW";
const WRONG_PW: &str = "s3cret-wrong-PW";
const TOKEN: &str = "s3cret-registry-TOKEN";
const IDENTITY_TOKEN: &str = "s3cret-identity-TOKEN";

/// Every string that must never appear in any output.
fn secrets() -> Vec<String> {
    let b64 =
        |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    vec![
        ALICE_PW.into(),
        BOB_PW.into(),
        WRONG_PW.into(),
        TOKEN.into(),
        IDENTITY_TOKEN.into(),
        "s3cret".into(),
        b64(ALICE, ALICE_PW),
        b64(BOB, BOB_PW),
        b64(ALICE, WRONG_PW),
        b64(BOB, WRONG_PW),
    ]
}

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(&s), "{what} leaks a secret ({s:?}):\n{text}");
    }
}

#[track_caller]
fn assert_verdict_clean(v: &Verdict) {
    assert_no_secret("verdict", &format!("{v:?}"));
    assert_no_secret("verdict JSON", &serde_json::to_string(v).unwrap());
}

struct World {
    env: TestEnv,
    /// The htpasswd registry (alice).
    basic_host: String,
    /// The token-auth proxy (bob at its token endpoint).
    token: Proxy,
    bin: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let (open, authed) = htpasswd_pair();
        let env = TestEnv::with_registry(open);
        let token = Proxy::start(&open.host).await;
        token.set_mode(Mode::TokenAuth {
            token: TOKEN.into(),
            basic: base64::engine::general_purpose::STANDARD.encode(format!("{BOB}:{BOB_PW}")),
        });
        World {
            env,
            basic_host: authed.host.clone(),
            token,
            bin: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> VerifierConfig {
        self.env.config(&[&self.basic_host, &self.token.host])
    }

    /// A signed image and an unsigned one, pushed to the open side.
    async fn images(&self, name: &str) -> (ImageId, ImageId) {
        let signed = self.env.keyless_image(name, &Identity::github()).await;
        let unsigned = self
            .env
            .oci
            .push_image(&unique_repo(&format!("{name}-unsigned")), "v1")
            .await
            .id;
        (signed, unsigned)
    }

    /// An executable the test writes (the product never runs a shell; the test's plugins may
    /// be shell scripts).
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.bin.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn docker_config(&self, json: serde_json::Value) -> PathBuf {
        let path = self.bin.path().join(format!(
            "config-{}.json",
            unique_repo("c").replace('/', "-")
        ));
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        path
    }

    fn provider_config(&self, providers: &[(&str, &str)]) -> PathBuf {
        let mut yaml = String::from(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n",
        );
        for (name, pattern) in providers {
            yaml.push_str(&format!(
                "- name: {name}\n  matchImages: [\"{pattern}\"]\n  defaultCacheDuration: 10m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  args: [get-credentials]\n  env: [{{name: TEST_PLUGIN_ENV, value: from-config}}]\n"
            ));
        }
        let path = self.bin.path().join(format!(
            "providers-{}.yaml",
            unique_repo("p").replace('/', "-")
        ));
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// A plugin answering `auth` for `pattern` with `user:password`, logging each call.
    fn plugin(
        &self,
        name: &str,
        pattern: &str,
        user: &str,
        password: &str,
        cache: &str,
    ) -> PathBuf {
        let log = self.bin.path().join(format!("{name}.log"));
        self.script(
            name,
            &format!(
                r#"cat >> {log}
echo " args=$* env=$TEST_PLUGIN_ENV" >> {log}
printf '%s' '{{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"{cache}","cacheDuration":"1h","auth":{{"{pattern}":{{"username":"{user}","password":"{password}"}}}}}}'"#,
                log = log.display()
            ),
        )
    }

    /// A docker credential helper answering `user:secret` for any server, logging its stdin.
    fn helper(&self, name: &str, user: &str, secret: &str) -> PathBuf {
        let log = self
            .bin
            .path()
            .join(format!("docker-credential-{name}.log"));
        self.script(
            &format!("docker-credential-{name}"),
            &format!(
                r#"[ "$1" = get ] || exit 3
server=$(cat)
echo "$server" >> {log}
printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}' "$server""#,
                log = log.display()
            ),
        )
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.bin.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    async fn verifier(&self, cfg: VerifierConfig) -> Verifier {
        self.env.verifier(cfg).await
    }
}

#[track_caller]
fn signed(v: &Verdict) {
    assert_eq!(v.posture, Posture::Signed, "{v:#?}");
    assert_verdict_clean(v);
}

#[track_caller]
fn not_signed(v: &Verdict) {
    assert_eq!(v.posture, Posture::NotSigned, "{v:#?}");
    assert_verdict_clean(v);
}

/// `checking / Unauthorized`, naming what was tried.
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
    assert_verdict_clean(v);
}

fn auths(host: &str, user: &str, password: &str) -> serde_json::Value {
    serde_json::json!({ host: { "username": user, "password": password } })
}

// --- each source alone ---------------------------------------------------------------------

#[tokio::test]
async fn htpasswd_registry_anonymous_then_docker_config_auths() {
    let w = World::new().await;
    let (s, u) = w.images("basic").await;
    let (s, u) = (via(&s, &w.basic_host), via(&u, &w.basic_host));

    let anonymous = w.verifier(w.config()).await;
    refused(&anonymous.observe(&s).await, &["HTTP 401", "anonymous"]);

    let mut cfg = w.config();
    cfg.registry_config = Some(
        w.docker_config(serde_json::json!({ "auths": auths(&w.basic_host, ALICE, ALICE_PW) })),
    );
    let v = w.verifier(cfg).await;
    signed(&v.observe(&s).await);
    not_signed(&v.observe(&u).await);

    // The same through the `auth` field form.
    let mut cfg = w.config();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{ALICE}:{ALICE_PW}"));
    cfg.registry_config = Some(w.docker_config(
        serde_json::json!({ "auths": { format!("http://{}/v2/", w.basic_host): { "auth": auth } } }),
    ));
    signed(&w.verifier(cfg).await.observe(&s).await);
}

#[tokio::test]
async fn a_wrong_password_is_checking_unauthorized_naming_the_source() {
    let w = World::new().await;
    let (s, u) = w.images("wrong").await;
    let mut cfg = w.config();
    cfg.registry_config = Some(w.docker_config(serde_json::json!({ "auths": {
        w.basic_host.clone(): { "username": ALICE, "password": WRONG_PW },
        w.token.host.clone(): { "username": BOB, "password": WRONG_PW },
    } })));
    let v = w.verifier(cfg).await;
    let basic_auths = format!("docker-config auths {}", w.basic_host);
    refused(
        &v.observe(&via(&s, &w.basic_host)).await,
        &["refused credentials", &basic_auths],
    );
    // Unsigned behind a refused credential is never `not-signed`.
    refused(
        &v.observe(&via(&u, &w.basic_host)).await,
        &["docker-config"],
    );
    refused(
        &v.observe(&via(&u, &w.token.host)).await,
        &["token endpoint"],
    );
}

#[tokio::test]
async fn token_registry_through_a_credential_helper() {
    let w = World::new().await;
    let (s, u) = w.images("helper").await;
    w.helper("acme", BOB, BOB_PW);
    let mut cfg = w.config();
    cfg.credential_helper_dir = Some(w.bin.path().to_path_buf());
    cfg.registry_config = Some(
        w.docker_config(serde_json::json!({ "credHelpers": { w.token.host.clone(): "acme" } })),
    );
    let v = w.verifier(cfg).await;
    signed(&v.observe(&via(&s, &w.token.host)).await);
    not_signed(&v.observe(&via(&u, &w.token.host)).await);
    // The helper was asked about this registry, over stdin.
    assert!(
        w.log("docker-credential-acme")
            .lines()
            .any(|l| l == w.token.host),
        "{}",
        w.log("docker-credential-acme")
    );
    // Not for a registry it is not named for: the htpasswd one stays anonymous.
    refused(&v.observe(&via(&s, &w.basic_host)).await, &["anonymous"]);
}

#[tokio::test]
async fn creds_store_with_an_identity_token() {
    let w = World::new().await;
    let (s, _) = w.images("store").await;
    // `<token>` as the user name: the secret is an identity token (an OAuth2 refresh token).
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{BOB}:{BOB_PW}"));
    w.helper("store", "<token>", &b64);
    let mut cfg = w.config();
    cfg.credential_helper_dir = Some(w.bin.path().to_path_buf());
    cfg.registry_config = Some(w.docker_config(serde_json::json!({ "credsStore": "store" })));
    let v = w.verifier(cfg).await;
    signed(&v.observe(&via(&s, &w.token.host)).await);
    let posts = w
        .token
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/token"))
        .count();
    assert_eq!(posts, 1, "{:#?}", w.token.requests());
}

#[tokio::test]
async fn provider_plugin_alone_with_its_cache() {
    let w = World::new().await;
    let (s, u) = w.images("plugin").await;
    w.plugin("acme-provider", &w.basic_host, ALICE, ALICE_PW, "Registry");
    let mut cfg = w.config();
    cfg.credential_provider_config = Some(w.provider_config(&[("acme-provider", &w.basic_host)]));
    cfg.credential_provider_bin_dir = Some(w.bin.path().to_path_buf());
    let v = w.verifier(cfg).await;
    signed(&v.observe(&via(&s, &w.basic_host)).await);
    not_signed(&v.observe(&via(&u, &w.basic_host)).await);
    let log = w.log("acme-provider");
    // One call (cacheKeyType Registry, 1h), with the kubelet's request, args and env.
    assert_eq!(log.matches("CredentialProviderRequest").count(), 1, "{log}");
    assert!(
        log.contains(&format!("\"image\":\"{}/", w.basic_host)),
        "{log}"
    );
    assert!(
        log.contains("args=get-credentials env=from-config"),
        "{log}"
    );
    // A plugin whose matchImages do not match is not run.
    refused(&v.observe(&via(&s, &w.token.host)).await, &["anonymous"]);
    assert_eq!(
        w.log("acme-provider")
            .matches("CredentialProviderRequest")
            .count(),
        1
    );
}

// --- precedence, order, matching -----------------------------------------------------------

#[tokio::test]
async fn plugin_before_docker_config_and_a_wrong_credential_then_a_right_one() {
    let w = World::new().await;
    let (s, _) = w.images("order").await;
    // The plugin (tried first) is wrong, the docker config right: both are tried, in order.
    w.plugin("wrong-provider", &w.token.host, BOB, WRONG_PW, "Image");
    let mut cfg = w.config();
    cfg.credential_provider_config = Some(w.provider_config(&[("wrong-provider", &w.token.host)]));
    cfg.credential_provider_bin_dir = Some(w.bin.path().to_path_buf());
    cfg.registry_config =
        Some(w.docker_config(serde_json::json!({ "auths": auths(&w.token.host, BOB, BOB_PW) })));
    let metrics = Arc::new(Metrics::new());
    let m = metrics.clone();
    let v = Verifier::with_extras(
        cfg,
        Extras {
            auth_hook: Some(Box::new(move |source: CredSource, e: AuthEvent| match e {
                AuthEvent::Request => m.credential_request(source.as_str()),
                AuthEvent::Refused => m.auth_failure(source.as_str()),
            })),
            ..Extras::default()
        },
    )
    .await
    .unwrap();
    signed(&v.observe(&via(&s, &w.token.host)).await);
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{BOB}:{WRONG_PW}"));
    let right = base64::engine::general_purpose::STANDARD.encode(format!("{BOB}:{BOB_PW}"));
    let at_token: Vec<String> = w
        .token
        .authorizations()
        .into_iter()
        .filter(|(seen, _)| seen.path.starts_with("/token"))
        .filter_map(|(_, a)| a)
        .collect();
    assert_eq!(
        at_token,
        [format!("Basic {wrong}"), format!("Basic {right}")],
        "plugin first, then docker config"
    );
    // The credential that worked is tried first from then on: no more refusals.
    signed(&v.observe(&via(&s, &w.token.host)).await);
    let text = metrics.encode();
    assert!(
        text.contains("imageposture_registry_auth_failures_total{source=\"plugin\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("imageposture_registry_auth_failures_total{source=\"docker-config\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("imageposture_registry_credential_requests_total{source=\"docker-config\"}"),
        "{text}"
    );
    assert_no_secret("metrics", &text);
}

#[tokio::test]
async fn most_specific_first_and_never_for_another_path() {
    let w = World::new().await;
    let (s, _) = w.images("specific").await;
    // `HOST/test` (the images' namespace) is right, `HOST` wrong: only the right one is sent.
    let mut cfg = w.config();
    cfg.registry_config = Some(w.docker_config(serde_json::json!({ "auths": {
        w.basic_host.clone(): { "username": ALICE, "password": WRONG_PW },
        format!("{}/test", w.basic_host): { "username": ALICE, "password": ALICE_PW },
    } })));
    signed(&w.verifier(cfg).await.observe(&via(&s, &w.basic_host)).await);

    // A credential for another path of the same registry is never sent.
    let mut cfg = w.config();
    cfg.registry_config = Some(w.docker_config(serde_json::json!({ "auths": {
        format!("{}/other", w.token.host): { "username": BOB, "password": BOB_PW },
    } })));
    w.token.reset_requests();
    refused(
        &w.verifier(cfg).await.observe(&via(&s, &w.token.host)).await,
        &["anonymous"],
    );
    assert!(
        w.token.authorizations().iter().all(|(_, a)| a.is_none()),
        "{:#?}",
        w.token.authorizations()
    );
}

// --- hostile helpers and plugins -----------------------------------------------------------

const HOSTILE: [(&str, &str); 6] = [
    ("hang", "exec sleep 60"),
    // Not hostile: the protocol's "no credential here" (exit 1 with this text) is no fault.
    (
        "notfound",
        "cat >/dev/null; echo 'credentials not found in native keychain'; exit 1",
    ),
    ("crash", "cat >/dev/null; echo '{\"Username\":\"bob\",\"Secret\":\"s3cret-bob-PW\"}'; exit 2"),
    ("flood", "cat >/dev/null; head -c 10485760 /dev/zero | tr '\\0' s"),
    ("garbage", "cat >/dev/null; printf '{\"ServerURL\":\"x\",\"Secret\":\"s3cret-bob-PW'"),
    (
        "elsewhere",
        "cat >/dev/null; printf '{\"ServerURL\":\"quay.io\",\"Username\":\"bob\",\"Secret\":\"s3cret-bob-PW\"}'",
    ),
];

#[tokio::test]
async fn hostile_credential_helpers_cost_their_image_only() {
    let w = World::new().await;
    let (s, _) = w.images("hostile-helper").await;
    let mut helpers = serde_json::Map::new();
    let mut images = Vec::new();
    for (name, body) in HOSTILE {
        w.script(&format!("docker-credential-{name}"), body);
        // One proxy (registry host) per helper, all token-auth in front of the same registry.
        let p = Proxy::start(&w.env.registry.host).await;
        p.set_mode(Mode::TokenAuth {
            token: TOKEN.into(),
            basic: base64::engine::general_purpose::STANDARD.encode(format!("{BOB}:{BOB_PW}")),
        });
        helpers.insert(p.host.clone(), name.into());
        images.push((name, p));
    }
    let mut cfg = w.env.config(
        &images
            .iter()
            .map(|(_, p)| p.host.as_str())
            .collect::<Vec<_>>(),
    );
    cfg.credential_helper_dir = Some(w.bin.path().to_path_buf());
    cfg.registry_config = Some(w.docker_config(serde_json::json!({ "credHelpers": helpers })));
    let v = Arc::new(w.verifier(cfg).await);
    let started = std::time::Instant::now();
    let hostile = futures::future::join_all(images.iter().map(|(name, p)| {
        let v = v.clone();
        let id = via(&s, &p.host);
        async move { (*name, v.observe(&id).await) }
    }));
    // Meanwhile an image of an open registry verifies as usual.
    let open = async {
        let t = std::time::Instant::now();
        let verdict = v.observe(&s).await;
        (verdict, t.elapsed())
    };
    let (results, (open_verdict, open_took)) = tokio::join!(hostile, open);
    signed(&open_verdict);
    assert!(
        open_took.as_secs() < 5,
        "the open image waited {open_took:?}"
    );
    for (name, verdict) in results {
        let why = match name {
            "hang" => "did not answer within 10s",
            "crash" => "exited with exit status: 2",
            "notfound" => "anonymous",
            "flood" => "printed more than 65536 bytes",
            "garbage" => "malformed JSON",
            _ => "answered for another registry",
        };
        refused(&verdict, &[why]);
        if name != "notfound" {
            assert!(
                verdict.message.contains(name),
                "{name}: {}",
                verdict.message
            );
        }
    }
    assert!(
        started.elapsed().as_secs() < 25,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn hostile_provider_plugins_cost_their_image_only() {
    let w = World::new().await;
    let (s, _) = w.images("hostile-plugin").await;
    let plugins: [(&str, String); 6] = [
        ("p-hang", "exec sleep 60".into()),
        ("p-crash", "cat >/dev/null; exit 1".into()),
        ("p-flood", "cat >/dev/null; head -c 10485760 /dev/zero | tr '\\0' s".into()),
        ("p-garbage", "cat >/dev/null; printf '{\"kind\":\"CredentialProviderResponse\",\"auth\":{\"x\":{\"password\":\"s3cret-alice-PW'".into()),
        (
            "p-elsewhere",
            format!(
                "cat >/dev/null; printf '%s' '{{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"cacheKeyType\":\"Global\",\"auth\":{{\"quay.io\":{{\"username\":\"{ALICE}\",\"password\":\"{ALICE_PW}\"}}}}}}'"
            ),
        ),
        (
            "p-version",
            format!(
                "cat >/dev/null; printf '%s' '{{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"v9\",\"cacheKeyType\":\"Global\",\"auth\":{{\"*\":{{\"username\":\"{ALICE}\",\"password\":\"{ALICE_PW}\"}}}}}}'"
            ),
        ),
    ];
    let mut proxies = Vec::new();
    for (name, body) in &plugins {
        w.script(name, body);
        let (_, authed) = htpasswd_pair();
        proxies.push((*name, Proxy::start(&authed.host).await));
    }
    let providers: Vec<(&str, &str)> = proxies
        .iter()
        .map(|(name, p)| (*name, p.host.as_str()))
        .collect();
    let mut cfg = w
        .env
        .config(&providers.iter().map(|(_, h)| *h).collect::<Vec<_>>());
    cfg.credential_provider_config = Some(w.provider_config(&providers));
    cfg.credential_provider_bin_dir = Some(w.bin.path().to_path_buf());
    let v = Arc::new(w.verifier(cfg).await);
    let hostile = futures::future::join_all(proxies.iter().map(|(name, p)| {
        let v = v.clone();
        let id = via(&s, &p.host);
        async move { (*name, v.observe(&id).await) }
    }));
    let open = async {
        let t = std::time::Instant::now();
        (v.observe(&s).await, t.elapsed())
    };
    let (results, (open_verdict, open_took)) = tokio::join!(hostile, open);
    signed(&open_verdict);
    assert!(
        open_took.as_secs() < 5,
        "the open image waited {open_took:?}"
    );
    for (name, verdict) in results {
        let why = match name {
            "p-hang" => "did not answer within 10s",
            "p-crash" => "exited with",
            "p-flood" => "printed more than 65536 bytes",
            "p-garbage" => "malformed JSON",
            "p-version" => "not a credentialprovider.kubelet.k8s.io/v1",
            _ => "answered no credential for this image",
        };
        refused(&verdict, &[name, why]);
    }
}

// --- the CLI: observe and scan, every output captured ----------------------------------------

fn run_cli(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .args(args)
        .env("RUST_LOG", "debug")
        .env_remove("IMAGEPOSTURE_REGISTRY_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn observe_and_scan_cli_with_docker_config_and_plugins() {
    let w = World::new().await;
    let (s, u) = w.images("cli").await;
    let insecure = format!("{},{}", w.basic_host, w.token.host);
    let root = path_str(&w.env.trusted_root).to_string();

    // observe: config.json with a credential helper for the token registry and a wrong
    // password for the htpasswd one.
    w.helper("cli", BOB, BOB_PW);
    let config = w.docker_config(serde_json::json!({
        "credHelpers": { w.token.host.clone(): "cli" },
        "auths": auths(&w.basic_host, ALICE, WRONG_PW),
    }));
    let signed_ref = via(&s, &w.token.host).to_string();
    let unsigned_ref = via(&u, &w.token.host).to_string();
    let refused_ref = via(&s, &w.basic_host).to_string();
    let (_, out, err) = tokio::task::spawn_blocking({
        let args: Vec<String> = vec![
            "observe".into(),
            "-o".into(),
            "json".into(),
            "--trusted-root".into(),
            root.clone(),
            "--insecure-registry".into(),
            insecure.clone(),
            "--registry-config".into(),
            path_str(&config).into(),
            "--credential-helper-dir".into(),
            path_str(w.bin.path()).into(),
            signed_ref.clone(),
            unsigned_ref.clone(),
            refused_ref.clone(),
        ];
        move || run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), None)
    })
    .await
    .unwrap();
    assert_no_secret("observe stdout", &out);
    assert_no_secret("observe stderr", &err);
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let text = json.to_string();
    assert!(text.contains("\"signed\""), "{text}");
    assert!(
        text.contains("\"not-signed\"") || text.contains("NotSigned") || text.contains("notSigned"),
        "{text}"
    );
    assert!(text.contains("Unauthorized"), "{text}");
    assert!(text.contains("docker-config auths"), "{text}");

    // scan: a pod list, credentials from a provider plugin.
    w.plugin("scan-provider", &w.basic_host, ALICE, ALICE_PW, "Registry");
    let providers = w.provider_config(&[("scan-provider", &w.basic_host)]);
    let pods = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p", "namespace": "team-a" },
        "spec": { "containers": [{ "name": "c", "image": refused_ref }] },
        "status": { "phase": "Running" }
    }]});
    let (_, out, err) = tokio::task::spawn_blocking({
        let args: Vec<String> = vec![
            "scan".into(),
            "-f".into(),
            "-".into(),
            "-o".into(),
            "json".into(),
            "--trusted-root".into(),
            root,
            "--insecure-registry".into(),
            insecure,
            "--image-credential-provider-config".into(),
            path_str(&providers).into(),
            "--image-credential-provider-bin-dir".into(),
            path_str(w.bin.path()).into(),
        ];
        let pods = pods.to_string();
        move || {
            run_cli(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                Some(&pods),
            )
        }
    })
    .await
    .unwrap();
    assert_no_secret("scan stdout", &out);
    assert_no_secret("scan stderr", &err);
    assert!(out.contains("\"signed\""), "{out}\n{err}");
}

#[tokio::test]
async fn a_token_got_with_one_credential_is_never_sent_for_another() {
    let w = World::new().await;
    let (s, _) = w.images("token-per-cred").await;
    // The plugin answers the right credential once, then a wrong one (not cached: 0s).
    let state = w.bin.path().join("rotating.calls");
    w.script(
        "rotating",
        &format!(
            r#"cat >/dev/null
if [ -e {state} ]; then pw='{WRONG_PW}'; else pw='{BOB_PW}'; touch {state}; fi
printf '{{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Image","cacheDuration":"0s","auth":{{"{host}":{{"username":"{BOB}","password":"%s"}}}}}}' "$pw""#,
            state = state.display(),
            host = w.token.host,
        ),
    );
    let mut cfg = w.config();
    cfg.credential_provider_config = Some(w.provider_config(&[("rotating", &w.token.host)]));
    cfg.credential_provider_bin_dir = Some(w.bin.path().to_path_buf());
    let v = w.verifier(cfg).await;
    let id = via(&s, &w.token.host);
    signed(&v.observe(&id).await);
    // Same registry and repository, another credential: the token the first one got is not
    // reused; the second fetches its own, which the token endpoint refuses.
    refused(
        &v.observe(&id).await,
        &["token endpoint answered HTTP 403", "plugin rotating"],
    );
    let token_requests = w
        .token
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/token"))
        .count();
    // One for the first credential; the second asked for its own (once per request that
    // needed it: a refused fetch is not cached).
    assert!(token_requests >= 2, "{:#?}", w.token.requests());
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{BOB}:{WRONG_PW}"));
    assert!(w
        .token
        .authorizations()
        .iter()
        .any(|(seen, a)| seen.path.starts_with("/token")
            && a.as_deref() == Some(format!("Basic {wrong}").as_str())));
}

#[tokio::test]
async fn one_images_refused_credential_does_not_back_off_its_registry() {
    use imageposture::cache::{Observer, ObserverConfig, Source};
    let w = World::new().await;
    let (a, _) = w.images("per-image-a").await;
    let (b, _) = w.images("per-image-b").await;
    let (a, b) = (via(&a, &w.basic_host), via(&b, &w.basic_host));
    // A credential for `a`'s repository only: `b` is refused, `a` is not.
    let mut cfg = w.config();
    cfg.registry_config = Some(w.docker_config(serde_json::json!({ "auths": {
        format!("{}/{}", w.basic_host, a.repository): { "username": ALICE, "password": ALICE_PW },
    } })));
    let observer = Observer::new(Arc::new(w.verifier(cfg).await), ObserverConfig::default());
    let now = chrono::Utc::now();
    let refused_b = observer.observe(&b, None, now).await;
    refused(&refused_b.verdict, &["anonymous"]);
    let got_a = observer.observe(&a, None, now).await;
    assert_eq!(got_a.source, Source::Verified, "{got_a:#?}");
    signed(&got_a.verdict);
}
