//! The observation matrix: every fixture kind against a real Distribution 2.8 registry, the
//! exact verdict for each, registry faults through a proxy, and the registry-traffic budget.

mod support;

use std::time::{Duration, Instant};

use imageposture::core::image::ImageId;
use imageposture::core::posture::{
    Posture, Reason, SignatureFormat, SignatureSource, SignerType, Verdict,
};
use support::cosign::{self, Spoil};
use support::pki::{Identity, Signer, EMAIL, GITHUB_ISSUER, GOOGLE_ISSUER, WORKFLOW_URI};
use support::proxy::{refused_address, Mode, Proxy, Seen};
use support::{unique_repo, via, TestEnv};

/// What a verdict must say, field by field.
struct Expect<'a> {
    posture: Posture,
    reason: Reason,
    signer: Option<&'a str>,
    issuer: Option<&'a str>,
    signer_type: Option<SignerType>,
}

impl Expect<'_> {
    fn not_signed() -> Self {
        Self::bare(Posture::NotSigned, Reason::NoSignature)
    }

    fn invalid(reason: Reason) -> Self {
        Self::bare(Posture::InvalidSignature, reason)
    }

    fn checking(reason: Reason) -> Self {
        Self::bare(Posture::Checking, reason)
    }

    fn bare(posture: Posture, reason: Reason) -> Self {
        Expect {
            posture,
            reason,
            signer: None,
            issuer: None,
            signer_type: None,
        }
    }
}

fn keyless<'a>(signer: &'a str, issuer: &'a str) -> Expect<'a> {
    Expect {
        posture: Posture::Signed,
        reason: Reason::Verified,
        signer: Some(signer),
        issuer: Some(issuer),
        signer_type: Some(SignerType::Keyless),
    }
}

fn key(signer: &str) -> Expect<'_> {
    Expect {
        posture: Posture::Signed,
        reason: Reason::Verified,
        signer: Some(signer),
        issuer: None,
        signer_type: Some(SignerType::Key),
    }
}

#[track_caller]
fn check(v: &Verdict, want: Expect) {
    let got = (
        v.posture,
        v.reason,
        v.signer.as_deref(),
        v.issuer.as_deref(),
        v.signer_type,
    );
    let exp = (
        want.posture,
        want.reason,
        want.signer,
        want.issuer,
        want.signer_type,
    );
    assert_eq!(
        got, exp,
        "(posture, reason, signer, issuer, signer_type); full verdict: {v:#?}"
    );
}

async fn observe(env: &TestEnv, id: &ImageId) -> Verdict {
    env.verifier(env.config(&[])).await.observe(id).await
}

/// A spoiled signature must read `invalid-signature` with exactly this reason.
async fn expect_spoiled(name: &str, spoil: Spoil, reason: Reason) {
    let env = TestEnv::new();
    let id = spoiled_image(&env, name, spoil).await;
    check(&observe(&env, &id).await, Expect::invalid(reason));
}

/// An image whose legacy keyless signature is spoiled as given.
async fn spoiled_image(env: &TestEnv, name: &str, spoil: Spoil) -> ImageId {
    let img = env.oci.push_image(&unique_repo(name), "v1").await;
    let leaf = env.pki.ca.issue(&Identity::github());
    let layer = cosign::legacy_layer(
        &img.id,
        &Signer::Keyless(&leaf),
        Some(&env.pki.rekor),
        spoil,
    );
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    img.id
}

/// An image with a cosign v3 Sigstore bundle attached as a referrer (fallback index).
async fn bundle_image(env: &TestEnv, name: &str) -> ImageId {
    let img = env.oci.push_image(&unique_repo(name), "v1").await;
    env.sign_bundle(&img).await;
    img.id
}

// ---- resting postures -------------------------------------------------------------------

#[tokio::test]
async fn unsigned_image_is_not_signed() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("unsigned"), "v1").await;
    check(&observe(&env, &img.id).await, Expect::not_signed());
}

#[tokio::test]
async fn keyless_legacy_uri_san_is_signed() {
    let env = TestEnv::new();
    let id = env.keyless_image("keyless-uri", &Identity::github()).await;
    let v = observe(&env, &id).await;
    check(&v, keyless(WORKFLOW_URI, GITHUB_ISSUER));
    assert_eq!(v.signatures.len(), 1, "{v:#?}");
    let s = &v.signatures[0];
    assert_eq!(
        (s.source, s.format, s.verified),
        (SignatureSource::Tag, SignatureFormat::Simplesigning, true)
    );
}

#[tokio::test]
async fn keyless_legacy_email_san_is_signed() {
    let env = TestEnv::new();
    let id = env
        .keyless_image("keyless-email", &Identity::google())
        .await;
    check(&observe(&env, &id).await, keyless(EMAIL, GOOGLE_ISSUER));
}

#[tokio::test]
async fn key_with_rekor_bundle_is_signed_by_fingerprint() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("key-rekor"), "v1").await;
    let layer = cosign::legacy_layer(
        &img.id,
        &Signer::Key(&env.pki.key),
        Some(&env.pki.rekor),
        Spoil::None,
    );
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    check(&observe(&env, &img.id).await, key(&env.pki.key.fingerprint));
}

#[tokio::test]
async fn key_with_rekor_bundle_and_configured_key_is_signed_by_name() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("key-named"), "v1").await;
    let layer = cosign::legacy_layer(
        &img.id,
        &Signer::Key(&env.pki.key),
        Some(&env.pki.rekor),
        Spoil::None,
    );
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    let mut cfg = env.config(&[]);
    cfg.trusted_keys = vec![("release".into(), env.pki.key.path.clone())];
    let v = env.verifier(cfg).await.observe(&img.id).await;
    check(&v, key("release"));
}

#[tokio::test]
async fn key_without_rekor_and_no_configured_key_is_unverifiable() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("key-bare"), "v1").await;
    let layer = cosign::legacy_layer(&img.id, &Signer::Key(&env.pki.key), None, Spoil::None);
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    check(
        &observe(&env, &img.id).await,
        Expect::invalid(Reason::UnverifiableKey),
    );
}

/// DESIGN: a key-based signature that verifies "with a configured trusted key" is signed,
/// Rekor bundle or not.
#[tokio::test]
async fn key_without_rekor_but_configured_key_is_signed_by_name() {
    let env = TestEnv::new();
    let img = env
        .oci
        .push_image(&unique_repo("key-bare-named"), "v1")
        .await;
    let layer = cosign::legacy_layer(&img.id, &Signer::Key(&env.pki.key), None, Spoil::None);
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    let mut cfg = env.config(&[]);
    cfg.trusted_keys = vec![("release".into(), env.pki.key.path.clone())];
    check(
        &env.verifier(cfg).await.observe(&img.id).await,
        key("release"),
    );
}

#[tokio::test]
async fn sigstore_bundle_referrer_is_signed() {
    let env = TestEnv::new();
    let id = bundle_image(&env, "bundle").await;
    let v = observe(&env, &id).await;
    check(&v, keyless(WORKFLOW_URI, GITHUB_ISSUER));
    assert_eq!(v.signatures.len(), 1, "{v:#?}");
    let s = &v.signatures[0];
    assert_eq!(
        (s.source, s.format, s.verified),
        (SignatureSource::Referrer, SignatureFormat::Bundle, true)
    );
}

/// A valid bundle whose in-toto subject is another image: copied, not made for this digest.
#[tokio::test]
async fn sigstore_bundle_for_another_digest_is_digest_mismatch() {
    let env = TestEnv::new();
    let repo = unique_repo("bundle-copied");
    let a = env.oci.push_image(&repo, "a").await;
    let b = env.oci.push_image(&repo, "b").await;
    let leaf = env.pki.ca.issue(&Identity::github());
    let bundle = cosign::sigstore_bundle(&cosign::cosign_statement(&a.id), &leaf, &env.pki.rekor);
    env.oci.push_bundle_referrer(&b, &bundle).await;
    check(
        &observe(&env, &b.id).await,
        Expect::invalid(Reason::DigestMismatch),
    );
}

#[tokio::test]
async fn tampered_payload_is_bad_signature() {
    expect_spoiled("tampered", Spoil::TamperPayload, Reason::BadSignature).await;
}

#[tokio::test]
async fn signature_copied_from_another_digest_is_digest_mismatch() {
    let env = TestEnv::new();
    let repo = unique_repo("copied");
    let a = env.oci.push_image(&repo, "a").await;
    let b = env.oci.push_image(&repo, "b").await;
    let leaf = env.pki.ca.issue(&Identity::github());
    // A perfectly valid signature of A, published as B's signature.
    let layer = cosign::legacy_layer(
        &a.id,
        &Signer::Keyless(&leaf),
        Some(&env.pki.rekor),
        Spoil::None,
    );
    env.oci.push_sig(&repo, &b.id.digest, &[layer]).await;
    check(
        &observe(&env, &b.id).await,
        Expect::invalid(Reason::DigestMismatch),
    );
}

#[tokio::test]
async fn certificate_from_untrusted_ca_is_untrusted() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("untrusted-ca"), "v1").await;
    let leaf = env.pki.untrusted.issue(&Identity::github());
    let layer = cosign::legacy_layer(
        &img.id,
        &Signer::Keyless(&leaf),
        Some(&env.pki.rekor),
        Spoil::None,
    );
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    check(
        &observe(&env, &img.id).await,
        Expect::invalid(Reason::UntrustedCertificate),
    );
}

#[tokio::test]
async fn set_signed_by_another_key_is_bad_tlog_entry() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("forged-set"), "v1").await;
    let leaf = env.pki.ca.issue(&Identity::github());
    let layer = cosign::legacy_layer(
        &img.id,
        &Signer::Keyless(&leaf),
        Some(&env.pki.forged_rekor),
        Spoil::None,
    );
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    check(
        &observe(&env, &img.id).await,
        Expect::invalid(Reason::BadTransparencyLogEntry),
    );
}

#[tokio::test]
async fn rekor_body_altered_after_set_is_bad_tlog_entry() {
    expect_spoiled(
        "altered-body",
        Spoil::AlterRekorBody,
        Reason::BadTransparencyLogEntry,
    )
    .await;
}

#[tokio::test]
async fn signature_annotation_not_base64_is_malformed() {
    expect_spoiled("sig-not-b64", Spoil::SignatureNotBase64, Reason::Malformed).await;
}

#[tokio::test]
async fn bundle_annotation_not_json_is_malformed() {
    expect_spoiled("bundle-not-json", Spoil::BundleNotJson, Reason::Malformed).await;
}

#[tokio::test]
async fn certificate_annotation_not_pem_is_malformed() {
    expect_spoiled("cert-not-pem", Spoil::CertificateNotPem, Reason::Malformed).await;
}

// ---- registry faults: always `checking`, never `not-signed` -------------------------------

/// Observes a signed image through a proxy in `mode`, with `budget` as the time limit.
async fn observe_through_fault(mode: Mode, budget: Option<Duration>) -> (Verdict, Duration) {
    let env = TestEnv::new();
    let id = env.keyless_image("fault", &Identity::github()).await;
    let proxy = Proxy::start(&env.registry.host).await;
    proxy.set_mode(mode);
    let mut cfg = env.config(&[&proxy.host]);
    if let Some(b) = budget {
        cfg.limits.budget = b;
    }
    let verifier = env.verifier(cfg).await;
    let started = Instant::now();
    let v = verifier.observe(&via(&id, &proxy.host)).await;
    (v, started.elapsed())
}

#[tokio::test]
async fn registry_500_is_checking() {
    let (v, _) = observe_through_fault(Mode::Status(500), None).await;
    check(&v, Expect::checking(Reason::RegistryError));
}

#[tokio::test]
async fn registry_429_is_rate_limited() {
    let (v, _) = observe_through_fault(Mode::Status(429), None).await;
    check(&v, Expect::checking(Reason::RateLimited));
}

#[tokio::test]
async fn registry_401_is_unauthorized() {
    let (v, _) = observe_through_fault(Mode::Status(401), None).await;
    check(&v, Expect::checking(Reason::Unauthorized));
}

#[tokio::test]
async fn slow_registry_beyond_budget_is_timeout() {
    let (v, took) = observe_through_fault(
        Mode::Delay(Duration::from_secs(3)),
        Some(Duration::from_secs(1)),
    )
    .await;
    check(&v, Expect::checking(Reason::Timeout));
    assert!(
        took < Duration::from_millis(2500),
        "budget of 1s not honoured: took {took:?}"
    );
}

#[tokio::test]
async fn connection_refused_is_unreachable() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("refused"), "v1").await;
    let dead = refused_address().to_string();
    let verifier = env.verifier(env.config(&[&dead])).await;
    check(
        &verifier.observe(&via(&img.id, &dead)).await,
        Expect::checking(Reason::RegistryUnreachable),
    );
}

/// The sigstore-rs trap: a failed `.sig` fetch must not read as "no signature", even when
/// every other lookup (referrers, fallback tag) answers a clean 404.
#[tokio::test]
async fn sig_manifest_500_with_other_404s_is_checking() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("sig-500"), "v1").await;
    let proxy = Proxy::start(&env.registry.host).await;
    proxy.set_mode_for(Mode::Status(500), ".sig");
    let verifier = env.verifier(env.config(&[&proxy.host])).await;
    let v = verifier.observe(&via(&img.id, &proxy.host)).await;
    eprintln!("requests: {:#?}", proxy.requests());
    assert!(
        proxy.requests().iter().any(|r| r.path.contains(".sig")),
        "the .sig tag was never asked for"
    );
    check(&v, Expect::checking(Reason::RegistryError));
}

// ---- registry traffic ---------------------------------------------------------------------

/// Observes `id` once through a fresh counting proxy; returns the verdict and the requests,
/// minus the auth negotiation (`GET /v2/`), which the budget does not count.
async fn counted(env: &TestEnv, id: &ImageId, label: &str) -> (Verdict, Vec<Seen>) {
    let proxy = Proxy::start(&env.registry.host).await;
    let verifier = env.verifier(env.config(&[&proxy.host])).await;
    proxy.reset_requests();
    let v = verifier.observe(&via(id, &proxy.host)).await;
    let all = proxy.requests();
    eprintln!("{label}: {} request(s) at the registry proxy:", all.len());
    for r in &all {
        eprintln!("  {r}");
    }
    let counted: Vec<Seen> = all
        .into_iter()
        .filter(|r| !(r.method == "GET" && r.path == "/v2/"))
        .collect();
    (v, counted)
}

fn assert_no_repeats(requests: &[Seen]) {
    let mut sorted = requests.to_vec();
    sorted.sort();
    for w in sorted.windows(2) {
        assert_ne!(
            w[0], w[1],
            "request repeated within one observation: {requests:#?}"
        );
    }
}

#[tokio::test]
async fn legacy_signature_costs_at_most_four_requests() {
    let env = TestEnv::new();
    let id = env.keyless_image("count-legacy", &Identity::github()).await;
    let (v, requests) = counted(&env, &id, "digest + one legacy keyless signature").await;
    check(&v, keyless(WORKFLOW_URI, GITHUB_ISSUER));
    assert!(
        requests.len() <= 4,
        "{} requests (excluding GET /v2/): {requests:#?}",
        requests.len()
    );
    assert_no_repeats(&requests);
}

#[tokio::test]
async fn unsigned_image_request_count() {
    let env = TestEnv::new();
    let img = env
        .oci
        .push_image(&unique_repo("count-unsigned"), "v1")
        .await;
    let (v, requests) = counted(&env, &img.id, "unsigned image").await;
    check(&v, Expect::not_signed());
    assert_no_repeats(&requests);
}

#[tokio::test]
async fn bundle_referrer_request_count() {
    let env = TestEnv::new();
    let id = bundle_image(&env, "count-bundle").await;
    let (v, requests) = counted(&env, &id, "one sigstore bundle referrer").await;
    check(&v, keyless(WORKFLOW_URI, GITHUB_ISSUER));
    assert_no_repeats(&requests);
}

// ---- token auth: negotiated once per repository, reused, never a verdict by itself ----------

#[tokio::test]
async fn bearer_token_auth_is_negotiated_once_and_reused() {
    let env = TestEnv::new();
    let first = env.keyless_image("bearer-a", &Identity::github()).await;
    let second = env.keyless_image("bearer-b", &Identity::google()).await;
    let proxy = Proxy::start(&env.registry.host).await;
    proxy.set_mode(Mode::Bearer("s3cret".into()));
    let verifier = env.verifier(env.config(&[&proxy.host])).await;

    check(
        &verifier.observe(&via(&first, &proxy.host)).await,
        keyless(WORKFLOW_URI, GITHUB_ISSUER),
    );
    let cold = proxy.requests();
    proxy.reset_requests();
    check(
        &verifier.observe(&via(&second, &proxy.host)).await,
        keyless(EMAIL, GOOGLE_ISSUER),
    );
    let warm = proxy.requests();
    eprintln!("first repository on a token registry: {cold:#?}\nsecond repository: {warm:#?}");
    let tokens = |r: &[Seen]| r.iter().filter(|s| s.path.starts_with("/token")).count();
    // First repository: one 401 challenge, one token, then the four requests of a digest with
    // one legacy signature (each sent once with the token).
    assert_eq!(tokens(&cold), 1, "{cold:#?}");
    assert_eq!(cold.len(), 1 + 1 + 4, "{cold:#?}");
    // Second repository: the challenge is known, so the token is fetched up front (scope is
    // per repository); the referrers API is known to be absent.
    assert_eq!(tokens(&warm), 1, "{warm:#?}");
    assert_eq!(warm.len(), 1 + 3, "{warm:#?}");
}

#[tokio::test]
async fn basic_auth_uses_the_docker_config_credentials() {
    let env = TestEnv::new();
    let id = env.keyless_image("basic-auth", &Identity::github()).await;
    let proxy = Proxy::start(&env.registry.host).await;
    proxy.set_mode(Mode::Basic("dXNlcjpwYXNz".into())); // user:pass
    let behind = via(&id, &proxy.host);

    let anonymous = env.verifier(env.config(&[&proxy.host])).await;
    check(
        &anonymous.observe(&behind).await,
        Expect::checking(Reason::Unauthorized),
    );

    let config = env.dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"{}":{{"username":"user","password":"pass"}}}}}}"#,
            proxy.host
        ),
    )
    .unwrap();
    let mut cfg = env.config(&[&proxy.host]);
    cfg.registry_config = Some(config);
    let authenticated = env.verifier(cfg).await;
    check(
        &authenticated.observe(&behind).await,
        keyless(WORKFLOW_URI, GITHUB_ISSUER),
    );
}
