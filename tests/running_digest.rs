//! The digest a node runs, tied to the signature that covers it (issue 15), against the real
//! registry with real multi-arch indexes (amd64 + arm64 + a provenance attestation manifest)
//! signed by the real cosign CLI, and pods whose `imageID` is each form real runtimes write:
//!
//! | runtime | imageID |
//! |---|---|
//! | containerd, cri-dockerd | `repo@<index digest>` |
//! | CRI-O | a platform manifest digest (the lexically first repo digest) |
//! | `docker load`, `k3d image import`, some CRI-O | bare `sha256:<config digest>` |
//! | `kind load` | `docker.io/library/import-<date>@sha256:…` |
//!
//! cosign's verdict (`cosign verify --key` of the tag, and of the platform digest) is printed
//! beside ours, and asserted where it is the oracle. Without cosign installed these tests are
//! skipped with a note (they fail under `CI=true`). Library calls only: no Kubernetes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imageposture::cache::{Observer, ObserverConfig, Recorded, Source};
use imageposture::core::image::{ImageId, ImageRef};
use imageposture::core::posture::{Posture, Reason, Verdict, Via, EVIDENCE_VIA_INDEX};
use imageposture::operator::inventory::tags::TagResolver;
use imageposture::operator::inventory::{Inventory, NamespaceFilter, Unresolved};
use imageposture::verify::Verifier;
use k8s_openapi::api::core::v1::Pod;
use support::cosign_cli::{Cosign, KeyPair};
use support::multiarch::MultiArch;
use support::proxy::Proxy;
use support::{unique_repo, via, TestEnv};

const TTL: Duration = Duration::from_secs(600);

async fn verifier(env: &TestEnv, keys: &[(&str, &KeyPair)], hosts: &[&str]) -> Arc<Verifier> {
    let mut config = env.config(hosts);
    config.trusted_keys = keys
        .iter()
        .map(|(name, k)| (name.to_string(), k.public.clone()))
        .collect();
    Arc::new(env.verifier(config).await)
}

fn observer(v: Arc<Verifier>) -> Arc<Observer> {
    Arc::new(Observer::new(
        v,
        ObserverConfig {
            ttl: TTL,
            ..ObserverConfig::default()
        },
    ))
}

fn leads(refs: &[&str]) -> Vec<ImageRef> {
    refs.iter().map(|r| ImageRef::parse(r).unwrap()).collect()
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn verdict_of(ok: bool) -> &'static str {
    if ok {
        "verified"
    } else {
        "error"
    }
}

/// One row of the running-digest table in docs/postures.md, printed so a run shows both verdicts.
fn row(case: &str, cosign: &str, ours: &Verdict) {
    eprintln!(
        "| {case} | {cosign} | `{}` / `{}`: {} |",
        ours.posture.as_str(),
        ours.reason.as_str(),
        ours.message
    );
}

fn assert_signed(v: &Verdict, signer: &str) {
    assert_eq!(
        (v.posture, v.reason, v.signer.as_deref()),
        (Posture::Signed, Reason::Verified, Some(signer)),
        "{v:#?}"
    );
}

/// A pod running `image` (spec) whose kubelet status reports `image_id`.
fn pod(name: &str, image: &str, image_id: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "app", "name": name},
        "spec": {"containers": [{"name": "c", "image": image}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "c", "image": image, "imageID": image_id,
            "ready": true, "restartCount": 0
        }]},
    }))
    .unwrap()
}

fn inventory(pods: &[Pod]) -> Inventory {
    Inventory::from_pods(pods, &NamespaceFilter::default())
}

/// The one unresolved entry of an inventory (a tie the registry must make).
fn only_unresolved(inv: &Inventory) -> Unresolved {
    assert!(
        inv.images.is_empty(),
        "nothing is guessed: {:?}",
        inv.images
    );
    assert_eq!(inv.unresolved.len(), 1, "{:?}", inv.unresolved);
    inv.unresolved.keys().next().unwrap().clone()
}

async fn multiarch(env: &TestEnv, name: &str) -> MultiArch {
    env.oci.push_multiarch(&unique_repo(name), "v1").await
}

/// `cosign sign IMAGE:TAG` (the GitHub starter workflow): the index only. Every runtime form
/// of the running digest is `signed`, the platform manifest **via the index**.
#[tokio::test]
async fn index_signed_by_tag_covers_each_runtime_form() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let me = cosign.generate_key_pair("me");
    let m = multiarch(&env, "ix-signed").await;
    let tag = m.tag_ref("v1");
    cosign.sign(&me, &tag, true);
    let on_tag = cosign.verify(&me.public, &tag);
    let on_platform = cosign.verify(&me.public, &m.amd64.image.id.key());
    assert!(on_tag.ok, "cosign verifies the tag: {on_tag:?}");
    assert!(
        !on_platform.ok,
        "the platform manifest itself carries no signature: {on_platform:?}"
    );
    let v = verifier(&env, &[("me", &me)], &[]).await;
    let o = observer(v.clone());
    let now = at(0);

    // containerd / cri-dockerd: the index digest itself.
    let ours = v.observe_with(&m.index.id, &leads(&[&tag]), now).await;
    row(
        "`cosign sign` of the tag; imageID = index digest (containerd)",
        verdict_of(on_tag.ok),
        &ours,
    );
    assert_signed(&ours, "me");
    assert_eq!(
        ours.signatures[0].digest.as_deref(),
        Some(&*m.index.id.digest)
    );
    assert_eq!(ours.signatures[0].via, None);

    // CRI-O: a platform manifest, the pod's tag leads to the index that lists it.
    for p in [&m.amd64, &m.arm64] {
        let ours = v.observe_with(&p.image.id, &leads(&[&tag]), now).await;
        row(
            &format!("same; imageID = {} platform digest (CRI-O)", p.arch),
            &format!(
                "tag {}, platform digest {}",
                verdict_of(on_tag.ok),
                verdict_of(on_platform.ok)
            ),
            &ours,
        );
        assert_signed(&ours, "me");
        let s = &ours.signatures[0];
        assert_eq!(
            (s.digest.as_deref(), s.via),
            (Some(&*m.index.id.digest), Some(Via::Index)),
            "{ours:#?}"
        );
        assert!(
            ours.message.starts_with(&format!(
                "signed via index {} which lists this platform manifest; the manifest itself carries no signature",
                m.index.id.digest
            )),
            "{}",
            ours.message
        );
        assert_eq!(
            ours.artifact_digests.get(EVIDENCE_VIA_INDEX),
            Some(&m.index.id.digest)
        );
    }

    // A spec pinned by the index digest leads there too.
    let ours = v
        .observe_with(&m.arm64.image.id, &leads(&[&m.index_ref()]), now)
        .await;
    assert_signed(&ours, "me");
    assert_eq!(ours.signatures[0].via, Some(Via::Index));

    // No reference leads anywhere: the platform manifest alone, as cosign sees it.
    let ours = v.observe(&m.amd64.image.id).await;
    row(
        "same; platform digest, no reference to an index",
        verdict_of(on_platform.ok),
        &ours,
    );
    assert_eq!(ours.posture, Posture::NotSigned, "{ours:#?}");

    // Bare config digest (docker load, k3d): tied through the tag to the amd64 manifest.
    let pods = [pod("loaded", &tag, &m.amd64.config)];
    let mut inv = inventory(&pods);
    let key = only_unresolved(&inv);
    let id = o.resolve_running(&key, now).await.expect("tied");
    assert_eq!(id, m.amd64.image.id);
    inv.resolve(&key, id.clone());
    let refs: Vec<&str> = inv.images[&id]
        .references
        .iter()
        .map(|s| s.as_str())
        .collect();
    let ours = o.observe_with(&id, &leads(&refs), None, now).await.verdict;
    row(
        "same; imageID = bare config digest of amd64 (docker load, k3d)",
        verdict_of(on_tag.ok),
        &ours,
    );
    assert_signed(&ours, "me");
    assert_eq!(ours.signatures[0].via, Some(Via::Index));

    // kind load: `import-<date>@<index digest>`; nothing asked under that name.
    let pods = [pod(
        "kind",
        &tag,
        &format!("docker.io/library/import-2026-12-04@{}", m.index.id.digest),
    )];
    let inv = inventory(&pods);
    let key = only_unresolved(&inv);
    let id = o.resolve_running(&key, now).await.expect("tied");
    assert_eq!(id, m.index.id);
    let ours = o
        .observe_with(&id, &leads(&[&tag]), None, now)
        .await
        .verdict;
    row(
        "same; imageID = `import-…@<index digest>` (kind load)",
        verdict_of(on_tag.ok),
        &ours,
    );
    assert_signed(&ours, "me");
}

/// `cosign sign --recursive` (registry.k8s.io, distroless): the index and every manifest it
/// lists carry their own signature; every runtime form is `signed` on its own digest.
#[tokio::test]
async fn recursive_signature_is_each_digests_own() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let me = cosign.generate_key_pair("me");
    let m = multiarch(&env, "ix-recursive").await;
    let tag = m.tag_ref("v1");
    let out = cosign.run(&[
        "sign",
        "--key",
        me.key.to_str().unwrap(),
        "--recursive",
        "--new-bundle-format=true",
        "--tlog-upload=false",
        "--use-signing-config=false",
        "--allow-http-registry",
        "--yes",
        &tag,
    ]);
    assert!(out.ok, "cosign sign --recursive: {out:?}");
    let on_tag = cosign.verify(&me.public, &tag);
    let on_platform = cosign.verify(&me.public, &m.amd64.image.id.key());
    assert!(on_tag.ok && on_platform.ok, "{on_tag:?} {on_platform:?}");
    let v = verifier(&env, &[("me", &me)], &[]).await;
    for (form, id) in [
        ("index digest (containerd)", &m.index.id),
        ("amd64 platform digest (CRI-O)", &m.amd64.image.id),
        ("arm64 platform digest (CRI-O)", &m.arm64.image.id),
    ] {
        let ours = v.observe_with(id, &leads(&[&tag]), at(0)).await;
        row(
            &format!("`cosign sign --recursive` of the tag; imageID = {form}"),
            "tag verified, platform digest verified",
            &ours,
        );
        assert_signed(&ours, "me");
        let s = &ours.signatures[0];
        assert_eq!((s.digest.as_deref(), s.via), (Some(&*id.digest), None));
    }
}

/// Each platform manifest signed (`cosign sign` of each platform digest), not the index: the
/// index a containerd node reports is `signed` via its platforms; one platform signed and the
/// other not is `checking` (which one runs is not known), never `not-signed`.
#[tokio::test]
async fn platform_signatures_cover_an_unsigned_index() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let me = cosign.generate_key_pair("me");
    let m = multiarch(&env, "ix-platforms").await;
    let tag = m.tag_ref("v1");
    cosign.sign(&me, &m.amd64.image.id.key(), false);
    cosign.sign(&me, &m.arm64.image.id.key(), true);
    let on_tag = cosign.verify(&me.public, &tag);
    let on_platform = cosign.verify(&me.public, &m.arm64.image.id.key());
    assert!(on_platform.ok, "{on_platform:?}");
    let v = verifier(&env, &[("me", &me)], &[]).await;
    let now = at(0);

    let ours = v.observe_with(&m.index.id, &leads(&[&tag]), now).await;
    row(
        "each platform digest signed, not the index; imageID = index digest",
        &format!("tag {}", verdict_of(on_tag.ok)),
        &ours,
    );
    assert_signed(&ours, "me");
    assert_eq!(ours.signatures.len(), 2, "{ours:#?}");
    let mut carried: Vec<_> = ours
        .signatures
        .iter()
        .map(|s| {
            assert_eq!(s.via, Some(Via::Platform), "{s:#?}");
            s.digest.clone().unwrap()
        })
        .collect();
    carried.sort();
    let mut want = vec![
        m.amd64.image.id.digest.clone(),
        m.arm64.image.id.digest.clone(),
    ];
    want.sort();
    assert_eq!(carried, want, "the attestation manifest is not a platform");

    let ours = v
        .observe_with(&m.amd64.image.id, &leads(&[&tag]), now)
        .await;
    row(
        "same; imageID = platform digest",
        verdict_of(cosign.verify_legacy(&me.public, &m.amd64.image.id.key()).ok),
        &ours,
    );
    assert_signed(&ours, "me");
    assert_eq!(ours.signatures[0].via, None, "its own signature");

    // Only one platform signed.
    let half = multiarch(&env, "ix-half").await;
    let half_tag = half.tag_ref("v1");
    cosign.sign(&me, &half.amd64.image.id.key(), true);
    let ours = v
        .observe_with(&half.index.id, &leads(&[&half_tag]), now)
        .await;
    row(
        "only the amd64 digest signed; imageID = index digest",
        &format!(
            "tag {}",
            verdict_of(cosign.verify(&me.public, &half_tag).ok)
        ),
        &ours,
    );
    assert_eq!(
        (ours.posture, ours.reason),
        (Posture::Checking, Reason::DigestUnknown),
        "{ours:#?}"
    );
    assert!(
        ours.message.contains("1 of 2 platform manifest(s)"),
        "{}",
        ours.message
    );
    let ours = v
        .observe_with(&half.arm64.image.id, &leads(&[&half_tag]), now)
        .await;
    row(
        "same; imageID = the unsigned arm64 digest",
        verdict_of(cosign.verify(&me.public, &half.arm64.image.id.key()).ok),
        &ours,
    );
    assert_eq!(ours.posture, Posture::NotSigned, "{ours:#?}");
}

/// An index signature that does not verify (signed by a key that is not trusted) is
/// `invalid-signature` for the platform manifest it covers: louder than `not-signed`.
#[tokio::test]
async fn invalid_index_signature_is_invalid_for_its_platforms() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let (me, other) = (
        cosign.generate_key_pair("me"),
        cosign.generate_key_pair("other"),
    );
    let m = multiarch(&env, "ix-invalid").await;
    let tag = m.tag_ref("v1");
    cosign.sign(&me, &tag, true);
    let theirs = cosign.verify(&other.public, &tag);
    assert!(!theirs.ok, "{theirs:?}");
    let v = verifier(&env, &[("other", &other)], &[]).await;
    let ours = v
        .observe_with(&m.amd64.image.id, &leads(&[&tag]), at(0))
        .await;
    row(
        "`cosign sign` of the tag by a key not trusted; imageID = platform digest",
        verdict_of(theirs.ok),
        &ours,
    );
    assert_eq!(
        (ours.posture, ours.reason),
        (Posture::InvalidSignature, Reason::UnverifiableKey),
        "{ours:#?}"
    );
    assert_eq!(ours.signatures[0].via, Some(Via::Index));
    assert!(
        ours.message.contains(&m.index.id.digest),
        "{}",
        ours.message
    );
}

/// The tag moved from an unsigned image to a signed one while a node runs the old one, known
/// only by its config digest: never the tag's current (`signed`) posture.
#[tokio::test]
async fn moved_tag_unsigned_to_signed_is_not_signed() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let me = cosign.generate_key_pair("me");
    let repo = unique_repo("moved-up");
    let old = env.oci.push_multiarch(&repo, "v1").await;
    let tag = old.tag_ref("v1");
    let new = env.oci.push_multiarch(&repo, "v1").await;
    cosign.sign(&me, &tag, true);
    let theirs = cosign.verify(&me.public, &tag);
    assert!(
        theirs.ok,
        "the tag (now the new image) is signed: {theirs:?}"
    );
    let v = verifier(&env, &[("me", &me)], &[]).await;
    let o = observer(v.clone());
    assert_signed(
        &v.observe_with(&new.index.id, &leads(&[&tag]), at(0)).await,
        "me",
    );

    for image_id in [
        old.amd64.config.clone(),
        format!(
            "docker.io/library/import-2026-12-04@{}",
            old.index.id.digest
        ),
        format!(
            "docker.io/library/import-2026-12-04@{}",
            old.arm64.image.id.digest
        ),
    ] {
        let pods = [pod("old", &tag, &image_id)];
        let inv = inventory(&pods);
        let key = only_unresolved(&inv);
        let err = o
            .resolve_running(&key, at(0))
            .await
            .expect_err("not tied: the tag moved");
        row(
            &format!("tag moved unsigned → signed; imageID {image_id}"),
            &format!("tag {}", verdict_of(theirs.ok)),
            &err,
        );
        assert_eq!(
            (err.posture, err.reason),
            (Posture::Checking, Reason::DigestUnknown),
            "{err:#?}"
        );
        assert!(
            err.message.contains("\"v1\"") && err.message.contains(&new.index.id.digest),
            "names the tag and what it points to now: {}",
            err.message
        );

        // The inventory's background tie: nothing attributed, however long we wait.
        let tags = TagResolver::new(o.clone(), TTL);
        assert_eq!(tags.lookup(&key, at(0)), None);
        tags.settled().await;
        assert_eq!(tags.lookup(&key, at(1)), None, "no identity is made");
    }
}

/// The tag moved from a signed image to an unsigned one while a node runs the old one: never
/// `not-signed` (the running image is signed; what the tag says now is not about it).
#[tokio::test]
async fn moved_tag_signed_to_unsigned_is_not_not_signed() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let me = cosign.generate_key_pair("me");
    let repo = unique_repo("moved-down");
    let old = env.oci.push_multiarch(&repo, "v1").await;
    let tag = old.tag_ref("v1");
    cosign.sign(&me, &tag, true);
    let v = verifier(&env, &[("me", &me)], &[]).await;
    let o = observer(v.clone());

    // Tied while the tag still pointed at the signed image: kept (content cannot change).
    let pods = [pod("early", &tag, &old.arm64.config)];
    let key = only_unresolved(&inventory(&pods));
    let tags = TagResolver::new(o.clone(), TTL);
    assert_eq!(tags.lookup(&key, at(0)), None);
    tags.settled().await;
    assert_eq!(tags.lookup(&key, at(1)), Some(old.arm64.image.id.clone()));
    let first = o
        .observe_with(&old.arm64.image.id, &leads(&[&tag]), None, at(1))
        .await;
    assert_signed(&first.verdict, "me");

    let _new = env.oci.push_multiarch(&repo, "v1").await;
    let theirs = cosign.verify(&me.public, &tag);
    assert!(
        !theirs.ok,
        "the tag (now the new image) is unsigned: {theirs:?}"
    );

    // A tie made before the move stands past the TTL.
    let later = at(2 * TTL.as_secs() as i64);
    assert_eq!(tags.lookup(&key, later), Some(old.arm64.image.id.clone()));
    // Its verdict, revalidated past the TTL, stays signed through the index it recorded.
    let recorded = Recorded {
        verdict: first.verdict.clone(),
        verified_at: first.verified_at.unwrap(),
        checked_at: first.checked_at.unwrap(),
        stale: false,
    };
    let again = o
        .observe_with(&old.arm64.image.id, &leads(&[&tag]), Some(&recorded), later)
        .await;
    assert_eq!(again.source, Source::Revalidated, "{again:#?}");
    assert_signed(&again.verdict, "me");

    // CRI-O reporting the old amd64 digest, verified for the first time after the move: no
    // reference leads to the old index any more. Its own listings are empty, so `not-signed`,
    // and the message says where the references lead instead (a known limit, see docs/limits.md).
    let crio = o
        .observe_with(&old.amd64.image.id, &leads(&[&tag]), None, later)
        .await;
    row(
        "tag moved signed → unsigned; imageID = the old amd64 digest (CRI-O), first verified after the move",
        &format!(
            "tag {}; platform digest {}",
            verdict_of(theirs.ok),
            verdict_of(cosign.verify(&me.public, &old.amd64.image.id.key()).ok)
        ),
        &crio.verdict,
    );
    assert_eq!(crio.verdict.posture, Posture::NotSigned, "{crio:#?}");
    assert!(
        crio.verdict
            .message
            .contains("instead, which neither is nor lists this manifest"),
        "{}",
        crio.verdict.message
    );

    // A node that reports the old image only now (bare config, no tie yet): not tied.
    let pods = [pod("late", &tag, &old.amd64.config)];
    let key = only_unresolved(&inventory(&pods));
    let err = o.resolve_running(&key, later).await.expect_err("tag moved");
    row(
        "tag moved signed → unsigned; imageID = bare config of the old amd64",
        &format!("tag {}", verdict_of(theirs.ok)),
        &err,
    );
    assert_eq!(
        (err.posture, err.reason),
        (Posture::Checking, Reason::DigestUnknown),
        "{err:#?}"
    );
}

/// Cost: an image signed on its own digest costs what it did (the references change nothing);
/// the walk runs only when the own listings are empty, and its answers are cached; past the
/// TTL a verdict via an index is revalidated by HEADs, and a signature added to the platform
/// manifest itself is noticed.
#[tokio::test]
async fn cost_cache_and_revalidation() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let me = cosign.generate_key_pair("me");
    let proxy = Proxy::start(&env.registry.host).await;
    let v = verifier(&env, &[("me", &me)], &[&proxy.host]).await;
    let o = observer(v.clone());

    // Signed on its own digest: the same requests with and without references.
    let own = multiarch(&env, "cost-own").await;
    cosign.sign(&me, &own.amd64.image.id.key(), true);
    let id = via(&own.amd64.image.id, &proxy.host);
    let tag = format!("{}:v1", id.repo_path());
    let _ = v.observe(&id).await; // first contact with the proxy host
    proxy.reset_requests();
    assert_signed(&v.observe(&id).await, "me");
    let without = proxy.requests().len();
    proxy.reset_requests();
    assert_signed(&v.observe_with(&id, &leads(&[&tag]), at(0)).await, "me");
    let with = proxy.requests().len();
    assert_eq!(with, without, "{:#?}", proxy.requests());

    // Covered by its index: the walk once, then cached.
    let m = multiarch(&env, "cost-index").await;
    cosign.sign(&me, &m.tag_ref("v1"), true);
    let id = via(&m.amd64.image.id, &proxy.host);
    let tag = format!("{}:v1", id.repo_path());
    proxy.reset_requests();
    let first = o.observe_with(&id, &leads(&[&tag]), None, at(0)).await;
    assert_signed(&first.verdict, "me");
    let walk: Vec<String> = proxy.requests().iter().map(|r| r.to_string()).collect();
    eprintln!("first verification via the index: {walk:#?}");
    proxy.reset_requests();
    let second = o.observe_with(&id, &leads(&[&tag]), None, at(1)).await;
    assert_signed(&second.verdict, "me");
    let cached = proxy.requests();
    assert!(
        !cached.iter().any(|r| r.path.ends_with("/manifests/v1")
            || r.path
                .ends_with(&format!("/manifests/{}", m.index.id.digest))),
        "tag and index answers are cached: {cached:#?}"
    );
    assert!(cached.len() < walk.len(), "{cached:#?}");

    // Past the TTL: HEADs (no manifest body downloaded), verdict unchanged.
    let recorded = Recorded {
        verdict: first.verdict.clone(),
        verified_at: first.verified_at.unwrap(),
        checked_at: first.checked_at.unwrap(),
        stale: false,
    };
    let later = at(TTL.as_secs() as i64 + 10);
    proxy.reset_requests();
    let again = o
        .observe_with(&id, &leads(&[&tag]), Some(&recorded), later)
        .await;
    assert_eq!(again.source, Source::Revalidated, "{again:#?}");
    assert_signed(&again.verdict, "me");
    let revalidation = proxy.requests();
    assert!(
        revalidation
            .iter()
            .all(|r| r.method == "HEAD" || r.path.contains("/referrers/")),
        "{revalidation:#?}"
    );

    // The platform manifest gets a signature of its own: noticed, verified again.
    cosign.sign(&me, &m.amd64.image.id.key(), true);
    let changed = o
        .observe_with(&id, &leads(&[&tag]), Some(&recorded), later)
        .await;
    assert_eq!(changed.source, Source::Verified, "{changed:#?}");
    assert_signed(&changed.verdict, "me");
    assert_eq!(changed.verdict.signatures[0].via, None, "now its own");
}

/// A pod not pulled yet keeps today's behaviour: its tag resolved to the tag's digest.
#[tokio::test]
async fn pod_not_pulled_yet_resolves_its_tag() {
    let env = TestEnv::new();
    let m = multiarch(&env, "not-pulled").await;
    let tag = m.tag_ref("v1");
    let pods = [pod("pending", &tag, "")];
    let inv = inventory(&pods);
    let key = only_unresolved(&inv);
    assert!(matches!(key, Unresolved::Tag(_)), "{key:?}");
    let o = observer(verifier(&env, &[], &[]).await);
    assert_eq!(o.resolve_running(&key, at(0)).await.unwrap(), m.index.id);

    // CRI-O's platform digest and containerd's index digest are identities of their own.
    let pods = [
        pod("crio", &tag, &m.amd64.image.id.key()),
        pod("containerd", &tag, &m.index.id.key()),
    ];
    let inv = inventory(&pods);
    assert!(inv.unresolved.is_empty(), "{:?}", inv.unresolved);
    let ids: Vec<&ImageId> = inv.images.keys().collect();
    assert!(
        ids.contains(&&m.amd64.image.id) && ids.contains(&&m.index.id),
        "{ids:?}"
    );
}

/// A single-platform image (no index) loaded locally: its bare config digest is tied to the
/// tag's manifest when the configs match, and never when the tag moved to another manifest.
#[tokio::test]
async fn bare_config_of_a_single_manifest_tag() {
    let env = TestEnv::new();
    let repo = unique_repo("single");
    let old = env.oci.push_image(&repo, "v1").await;
    let manifest: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!(
            "{}/v2/{repo}/manifests/{}",
            env.registry.base_url(),
            old.id.digest
        ))
        .header("accept", support::cosign::OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let tag = format!("{}:v1", old.id.repo_path());
    let o = observer(verifier(&env, &[], &[]).await);
    let pods = [pod("loaded", &tag, &config)];
    let key = only_unresolved(&inventory(&pods));
    assert_eq!(o.resolve_running(&key, at(0)).await.unwrap(), old.id);

    let new = env.oci.push_image(&repo, "v1").await;
    let o = observer(verifier(&env, &[], &[]).await);
    let err = o.resolve_running(&key, at(0)).await.unwrap_err();
    assert_eq!(
        (err.posture, err.reason),
        (Posture::Checking, Reason::DigestUnknown),
        "{err:#?}"
    );
    assert!(err.message.contains(&new.id.digest), "{}", err.message);
}

/// Platform manifests whose signatures do not verify make their unsigned index
/// `invalid-signature`, never `not-signed`.
#[tokio::test]
async fn invalid_platform_signatures_are_invalid_for_the_index() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let (me, other) = (
        cosign.generate_key_pair("me"),
        cosign.generate_key_pair("other"),
    );
    let m = multiarch(&env, "ix-platforms-invalid").await;
    cosign.sign(&me, &m.amd64.image.id.key(), true);
    cosign.sign(&me, &m.arm64.image.id.key(), true);
    let v = verifier(&env, &[("other", &other)], &[]).await;
    let ours = v
        .observe_with(&m.index.id, &leads(&[&m.tag_ref("v1")]), at(0))
        .await;
    row(
        "each platform digest signed by a key not trusted; imageID = index digest",
        verdict_of(cosign.verify(&other.public, &m.amd64.image.id.key()).ok),
        &ours,
    );
    assert_eq!(
        (ours.posture, ours.reason),
        (Posture::InvalidSignature, Reason::UnverifiableKey),
        "{ours:#?}"
    );
    assert_eq!(ours.signatures[0].via, Some(Via::Platform));
}

/// `scan` (the inventory and the observer, no cluster) over pods as three runtimes report one
/// index-signed image: containerd's index digest, CRI-O's platform digest and `docker load`'s
/// bare config digest of that same platform (one resource, two pods), all `signed`.
#[tokio::test]
async fn scan_ties_every_runtime_form() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let me = cosign.generate_key_pair("me");
    let m = multiarch(&env, "scan").await;
    let tag = m.tag_ref("v1");
    cosign.sign(&me, &tag, true);
    let o = observer(verifier(&env, &[("me", &me)], &[]).await);
    let pods = [
        pod("containerd", &tag, &m.index.id.key()),
        pod("crio", &tag, &m.amd64.image.id.key()),
        pod("loaded", &tag, &m.amd64.config),
    ];
    let objects = imageposture::commands::scan::scan(&pods, &o, 4).await;
    let by_digest: std::collections::BTreeMap<_, _> = objects
        .iter()
        .map(|r| (r.spec.digest.clone(), r.status.clone().unwrap()))
        .collect();
    assert_eq!(by_digest.len(), 2, "{objects:#?}");
    let index = &by_digest[&m.index.id.digest];
    assert_eq!(index.posture, Some(Posture::Signed), "{index:#?}");
    let amd64 = &by_digest[&m.amd64.image.id.digest];
    assert_eq!(amd64.posture, Some(Posture::Signed), "{amd64:#?}");
    assert_eq!(amd64.usage.as_ref().unwrap().pods, 2, "{amd64:#?}");
    assert_eq!(amd64.signatures[0].via, Some(Via::Index));
    assert_eq!(
        amd64.signatures[0].digest.as_deref(),
        Some(&*m.index.id.digest)
    );
    assert!(
        amd64.signature_digests.contains_key(EVIDENCE_VIA_INDEX),
        "{amd64:#?}"
    );
}
