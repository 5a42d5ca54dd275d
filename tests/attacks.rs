//! Attacks that once crashed the operator or produced a wrong-direction verdict, each against
//! a real registry with crafted artifacts or against a hostile registry on 127.0.0.1.

mod support;

use std::process::Command;
use std::sync::atomic::Ordering;

use imageposture::core::image::{ImageId, ImageRef};
use imageposture::core::posture::{Posture, Reason};
use serde_json::{json, Value};
use support::cosign::{self, Spoil, ANN_BUNDLE};
use support::evil::{bearer_challenge, not_found, Answer, Evil};
use support::pki::{Identity, Signer};
use support::{unique_repo, TestEnv};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A log ID with a multi-byte character across byte 16 and a terminal escape sequence.
const CRAFTED_LOG_ID: &str = "0123456789abcde\u{e9}\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}";

/// A legacy keyless signature whose Rekor bundle annotation names `CRAFTED_LOG_ID`.
async fn image_with_crafted_log_id(env: &TestEnv) -> ImageId {
    let img = env.oci.push_image(&unique_repo("attack-logid"), "v1").await;
    let leaf = env.pki.ca.issue(&Identity::github());
    let mut layer = cosign::legacy_layer(
        &img.id,
        &Signer::Keyless(&leaf),
        Some(&env.pki.rekor),
        Spoil::None,
    );
    let mut bundle: Value =
        serde_json::from_str(layer.annotations[ANN_BUNDLE].as_str().unwrap()).unwrap();
    bundle["Payload"]["logID"] = json!(CRAFTED_LOG_ID);
    layer
        .annotations
        .insert(ANN_BUNDLE.into(), json!(bundle.to_string()));
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    img.id
}

#[tokio::test]
async fn crafted_log_id_is_an_invalid_signature_not_a_panic() {
    let env = TestEnv::new();
    let id = image_with_crafted_log_id(&env).await;
    let v = env.verifier(env.config(&[])).await.observe(&id).await;
    assert_eq!(
        (v.posture, v.reason),
        (Posture::InvalidSignature, Reason::BadTransparencyLogEntry),
        "{v:#?}"
    );
    assert!(!v.message.contains('\u{1b}'), "{:?}", v.message);
}

#[tokio::test]
async fn crafted_log_id_does_not_take_down_observe_or_scan() {
    let env = TestEnv::new();
    let bad = image_with_crafted_log_id(&env).await;
    let good = env.keyless_image("attack-good", &Identity::github()).await;
    let common = [
        "--trusted-root".to_string(),
        env.trusted_root.display().to_string(),
        "--insecure-registry".into(),
        env.registry.host.clone(),
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .args(["observe", "-o", "json", &bad.key(), &good.key()])
        .args(&common)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["posture"], "invalid-signature", "{rows:#}");
    assert_eq!(
        rows[1]["posture"], "signed",
        "one bad image loses nothing else"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\u{1b}'),
        "raw escapes on stderr: {stderr:?}"
    );

    // `scan` over a pod running both images.
    let pods = json!({"items": [{
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": [
            {"name": "a", "image": bad.key()}, {"name": "b", "image": good.key()}
        ]},
        "status": {"phase": "Running"}
    }]});
    let file = env.dir.path().join("pods.json");
    std::fs::write(&file, pods.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .args(["scan", "-f", file.to_str().unwrap(), "-o", "json"])
        .args(&common)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("invalid-signature") && text.contains("\"signed\""),
        "{text}"
    );
}

/// A registry whose token endpoint answers 404: an auth failure, never "no signature".
#[tokio::test]
async fn token_endpoint_404_is_unauthorized_not_unsigned() {
    let env = TestEnv::new();
    let evil = Evil::start(|req, host| {
        if req.target.starts_with("/token") {
            not_found()
        } else {
            bearer_challenge(host)
        }
    })
    .await;
    let id = ImageId {
        registry: evil.host.clone(),
        repository: "team/app".into(),
        digest: DIGEST.into(),
    };
    let v = env
        .verifier(env.config(&[&evil.host]))
        .await
        .observe(&id)
        .await;
    assert_eq!(
        (v.posture, v.reason),
        (Posture::Checking, Reason::Unauthorized),
        "{v:#?}"
    );
}

/// `Docker-Content-Digest: sha256:` + 64 characters that are not hex (here a path).
#[tokio::test]
async fn bogus_content_digest_is_refused_before_any_use() {
    let env = TestEnv::new();
    let bogus = format!("sha256:{:.<64}", "../../../../v2/other/manifests/x");
    assert_eq!(bogus.len(), 71);
    let evil = Evil::start(move |_, _| {
        Answer::Full(
            200,
            vec![
                ("Docker-Content-Digest".into(), bogus.clone()),
                (
                    "Content-Type".into(),
                    "application/vnd.oci.image.manifest.v1+json".into(),
                ),
            ],
            b"{}".to_vec(),
        )
    })
    .await;
    let verifier = env.verifier(env.config(&[&evil.host])).await;
    let image = ImageRef::parse(&format!("{}/team/app:v1", evil.host)).unwrap();
    let err = verifier.resolve(&image).await.unwrap_err();
    assert_eq!(
        (err.posture, err.reason),
        (Posture::Checking, Reason::RegistryError),
        "{err:#?}"
    );
    let outside: Vec<_> = evil
        .requests()
        .into_iter()
        .filter(|r| !r.target.starts_with("/v2/team/app/") || r.target.contains(".."))
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the repository: {outside:?}"
    );
}

/// A 300 MB token, announced and not announced: refused while it streams, memory bounded.
#[tokio::test]
async fn huge_token_is_refused_while_streaming() {
    let env = TestEnv::new();
    let evil = Evil::start(|req, host| {
        if req.target.starts_with("/token") {
            let chunk = br#"{"token":""#.iter().copied().chain([b'a'; 65526]).collect();
            Answer::Stream(vec![], chunk, 300 << 20)
        } else {
            bearer_challenge(host)
        }
    })
    .await;
    let id = ImageId {
        registry: evil.host.clone(),
        repository: "team/app".into(),
        digest: DIGEST.into(),
    };
    let v = env
        .verifier(env.config(&[&evil.host]))
        .await
        .observe(&id)
        .await;
    assert_eq!(
        (v.posture, v.reason),
        (Posture::Checking, Reason::TooLarge),
        "{v:#?}"
    );
    let streamed = evil.streamed.load(Ordering::Relaxed);
    assert!(
        streamed < 16 << 20,
        "the client read on past its limit: {streamed} bytes"
    );
}

/// A login page served with 200 for the signature tag and the referrers listing.
#[tokio::test]
async fn html_login_page_is_a_registry_fault_not_a_signature() {
    let env = TestEnv::new();
    let evil = Evil::start(|_, _| {
        Answer::Full(
            200,
            vec![("Content-Type".into(), "text/html; charset=utf-8".into())],
            b"<html><body>Please sign in</body></html>".to_vec(),
        )
    })
    .await;
    let id = ImageId {
        registry: evil.host.clone(),
        repository: "team/app".into(),
        digest: DIGEST.into(),
    };
    let v = env
        .verifier(env.config(&[&evil.host]))
        .await
        .observe(&id)
        .await;
    assert_eq!(
        (v.posture, v.reason),
        (Posture::Checking, Reason::RegistryError),
        "{v:#?}"
    );
    assert!(v.message.contains("text/html"), "{}", v.message);
}

/// A signer identity with a right-to-left override: the table shows the escape, JSON the data.
#[tokio::test]
async fn bidi_override_in_an_identity_is_escaped_in_the_table() {
    let env = TestEnv::new();
    let issuer = "https://token.actions.githubusercontent.com/\u{202e}moc.live";
    let id = env
        .keyless_image(
            "attack-bidi",
            &Identity::Uri {
                uri: support::pki::WORKFLOW_URI.into(),
                issuer: issuer.into(),
            },
        )
        .await;
    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_imageposture"))
            .args(["observe", "-o", format, &id.key()])
            .args(["--trusted-root", env.trusted_root.to_str().unwrap()])
            .args(["--insecure-registry", &env.registry.host])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let table = run("table");
    assert!(table.contains("signed"), "{table}");
    assert!(!table.contains('\u{202e}'), "{table:?}");
    assert!(table.contains("\\u{202e}moc.live"), "{table}");
    let rows: Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(rows[0]["issuer"], issuer, "JSON keeps the data");
}
