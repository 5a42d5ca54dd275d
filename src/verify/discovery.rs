//! Discovery: which signature artifacts an image carries, each judged from its own manifest.
//!
//! Why not from the listing's labels: cosign before late 2026 (a go-containerregistry bug)
//! lists its bundles in the `sha256-<hex>` fallback index as `application/vnd.oci.empty.v1+json`,
//! and those indexes are never rewritten; a filter on the entry's `artifactType` reads the most
//! common signing setup (GitHub Actions + GHCR + cosign v3) as not-signed. So every entry up to
//! `--max-signatures` is fetched and decided from the referrer manifest: its `artifactType`, else
//! `config.mediaType`, and its layer media types. Labels only order the work, so a long list of
//! other artifacts cannot push a labelled signature past the limit.
//!
//! Attestations (bundles whose in-toto predicate is not cosign's signing predicate) are counted,
//! never verified, never signatures: an attestation that does not verify makes nothing invalid.

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use bytes::Bytes;
use futures::future::join_all;
use oci_client::manifest::OciImageManifest;
use serde::Deserialize;

use super::bundle;
use super::legacy;
use super::record::Failure;
use super::registry::{FetchError, Fetched, RegistryClient, Repo};
use super::Limits;
use crate::core::posture::{Reason, SignatureFormat, SignatureSource, Verdict};

/// One signature artifact found, ready for verification.
pub(super) enum Artifact {
    /// A layer of the legacy `sha256-<hex>.sig` manifest: its annotations and payload.
    Legacy {
        annotations: BTreeMap<String, String>,
        payload: Bytes,
    },
    /// A Sigstore bundle referrer carrying an image signature (or content only verification
    /// can judge: a malformed or message-signature bundle is reported by the verifier).
    Bundle(Bytes),
    /// A signature artifact that is broken before verification (no bundle layer, over the
    /// size limit, an unparsable listing): an invalid signature.
    Broken {
        source: SignatureSource,
        format: SignatureFormat,
        failure: Failure,
    },
}

/// Everything discovery found for one image.
#[derive(Default)]
pub(super) struct Discovered {
    pub artifacts: Vec<Artifact>,
    /// Sigstore bundles with another predicate than an image signature.
    pub attestations: usize,
    /// Listed artifacts over `--max-signatures`, not examined.
    pub skipped: usize,
}

/// A registry request discovery needed and did not get: the image is `checking`.
#[derive(Debug)]
pub(super) struct Unfetched {
    what: &'static str,
    error: FetchError,
}

impl Unfetched {
    pub fn checking(&self) -> Verdict {
        self.error.checking(self.what)
    }
}

fn unfetched(what: &'static str) -> impl Fn(FetchError) -> Unfetched {
    move |error| Unfetched { what, error }
}

/// What a referrer turned out to be, from its own manifest (and bundle statement).
enum Examined {
    Signature(Artifact),
    Attestation,
    /// Not a Sigstore bundle (an SBOM, another tool's artifact, an index).
    Other,
}

/// What a referrers listing (API answer or fallback tag) holds.
#[derive(Deserialize)]
struct Listing {
    manifests: Option<Vec<Entry>>,
    config: Option<serde::de::IgnoredAny>,
    layers: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    digest: String,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

impl Entry {
    pub(crate) fn digest(&self) -> &str {
        &self.digest
    }

    /// Examination order: what the listing labels a signature first, then whatever it labels
    /// as unknown or empty (cosign's fallback index), last what it labels an attestation.
    pub(crate) fn rank(&self) -> u8 {
        let labelled_bundle = self
            .artifact_type
            .as_deref()
            .is_some_and(bundle::is_bundle_type);
        match (
            labelled_bundle,
            predicate_annotation(self.annotations.as_ref()),
        ) {
            (true, None) => 0,
            (true, Some(p)) if p == bundle::SIGN_PREDICATE => 0,
            (true, Some(_)) => 2,
            (false, _) => 1,
        }
    }
}

/// A referrer manifest, read leniently: only what tells its kind apart.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerManifest {
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: i64,
}

impl Descriptor {
    pub(crate) fn digest(&self) -> &str {
        &self.digest
    }
}

impl ReferrerManifest {
    /// The type the artifact declares: `artifactType`, else `config.mediaType` (OCI 1.1).
    fn declared_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(self.config.as_ref().map(|c| c.media_type.as_str()))
    }
}

fn predicate_annotation(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    annotations
        .and_then(|a| a.get(bundle::PREDICATE_ANNOTATION))
        .map(String::as_str)
}

pub(super) struct Discovery<'a> {
    pub registry: &'a RegistryClient,
    pub limits: &'a Limits,
    pub repo: Repo<'a>,
    pub image_digest: &'a str,
}

impl Discovery<'_> {
    /// The layers of the legacy `.sig` manifest (bounded), with their payloads.
    pub async fn legacy(&self, manifest: &[u8], out: &mut Discovered) -> Result<(), Unfetched> {
        let broken = |failure| Artifact::Broken {
            source: SignatureSource::Tag,
            format: SignatureFormat::Simplesigning,
            failure,
        };
        let manifest: OciImageManifest = match serde_json::from_slice(manifest) {
            Ok(m) => m,
            Err(e) => {
                let why = format!("signature manifest: {e}");
                out.artifacts
                    .push(broken(Failure::new(Reason::Malformed, why)));
                return Ok(());
            }
        };
        let layers: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == legacy::SIMPLESIGNING_MEDIA_TYPE)
            .collect();
        if layers.is_empty() {
            out.artifacts.push(broken(Failure::new(
                Reason::Malformed,
                "signature manifest has no simple-signing layer",
            )));
            return Ok(());
        }
        out.skipped += layers.len().saturating_sub(self.limits.max_signatures);
        let layers: Vec<_> = layers
            .into_iter()
            .take(self.limits.max_signatures)
            .collect();
        let max = self.limits.max_blob_bytes;
        let blobs = join_all(layers.iter().map(|l| async move {
            if !fits(l.size, max) {
                return Ok(None);
            }
            self.registry
                .blob(self.repo, &l.digest, max)
                .await
                .map(Some)
        }))
        .await;
        for (layer, blob) in layers.iter().zip(blobs) {
            out.artifacts
                .push(match blob.map_err(unfetched("signature payload"))? {
                    Some(payload) => Artifact::Legacy {
                        annotations: layer
                            .annotations
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                        payload,
                    },
                    None => broken(Failure::new(
                        Reason::Malformed,
                        format!("signature layer of {} bytes is over the limit", layer.size),
                    )),
                });
        }
        Ok(())
    }

    /// Every referrer in a referrers listing (bounded), judged from its own manifest.
    pub async fn referrers(
        &self,
        listing: &Fetched,
        out: &mut Discovered,
    ) -> Result<(), Unfetched> {
        let broken = |failure| Artifact::Broken {
            source: SignatureSource::Referrer,
            format: SignatureFormat::Bundle,
            failure,
        };
        let entries = match read_listing(&listing.body, &listing.digest, self.image_digest) {
            ListingKind::Entries(entries) => entries,
            ListingKind::NotAListing => return Ok(()),
            ListingKind::Malformed(why) => {
                out.artifacts
                    .push(broken(Failure::new(Reason::Malformed, why)));
                return Ok(());
            }
        };
        let mut seen = HashSet::new();
        let mut entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| seen.insert(e.digest.clone()))
            .collect();
        entries.sort_by_key(Entry::rank);
        out.skipped += entries.len().saturating_sub(self.limits.max_signatures);
        let examined = join_all(
            entries
                .iter()
                .take(self.limits.max_signatures)
                .map(|e| self.examine(e)),
        )
        .await;
        for examined in examined {
            match examined? {
                Examined::Signature(a) => out.artifacts.push(a),
                Examined::Attestation => out.attestations += 1,
                Examined::Other => {}
            }
        }
        Ok(())
    }

    /// Fetches one referrer's manifest (and, for a signature bundle, its blob) and says what
    /// it is.
    async fn examine(&self, entry: &Entry) -> Result<Examined, Unfetched> {
        let broken = |reason, why: String| {
            Examined::Signature(Artifact::Broken {
                source: SignatureSource::Referrer,
                format: SignatureFormat::Bundle,
                failure: Failure::new(reason, why),
            })
        };
        let labelled_bundle = entry
            .artifact_type
            .as_deref()
            .is_some_and(bundle::is_bundle_type);
        let fetched = self
            .registry
            .manifest(self.repo, &entry.digest, self.limits.max_manifest_bytes)
            .await
            .map_err(unfetched("referrer"))?;
        let layer = match judge(&fetched.body, labelled_bundle) {
            Judged::Bundle(layer) => layer,
            Judged::Attestation => return Ok(Examined::Attestation),
            Judged::Other => return Ok(Examined::Other),
            Judged::Broken(why) => return Ok(broken(Reason::Malformed, why)),
        };
        let max = self.limits.max_blob_bytes;
        if !fits(layer.size, max) {
            return Ok(broken(
                Reason::Malformed,
                format!("bundle of {} bytes is over the limit", layer.size),
            ));
        }
        let raw = self
            .registry
            .blob(self.repo, &layer.digest, max)
            .await
            .map_err(unfetched("referrer"))?;
        Ok(match statement_predicate(&raw) {
            Some(p) if p != bundle::SIGN_PREDICATE => Examined::Attestation,
            _ => Examined::Signature(Artifact::Bundle(raw)),
        })
    }
}

/// What a referrers listing holds.
pub(crate) enum ListingKind {
    Entries(Vec<Entry>),
    /// The image itself answered (GitLab's `sha256-<hex>` tag, or the image's own index).
    NotAListing,
    Malformed(String),
}

/// Reads a referrers listing; `listing_digest` is the digest of `body` as received.
pub(crate) fn read_listing(body: &[u8], listing_digest: &str, image_digest: &str) -> ListingKind {
    let parsed: Listing = match serde_json::from_slice(body) {
        Ok(l) => l,
        Err(e) => return ListingKind::Malformed(format!("referrers index: {e}")),
    };
    // GitLab answers the `sha256-<hex>` tag with the image manifest itself, and a
    // multi-platform image's own index lists platforms, not referrers: no referrers list
    // there, which is neither an error nor a signature.
    if listing_digest == image_digest {
        return ListingKind::NotAListing;
    }
    match parsed.manifests {
        Some(entries) => ListingKind::Entries(entries),
        None if parsed.config.is_some() || parsed.layers.is_some() => ListingKind::NotAListing,
        None => ListingKind::Malformed("referrers index has no manifests list".into()),
    }
}

/// What a referrer manifest says it is.
pub(crate) enum Judged {
    /// A Sigstore bundle to download and verify: its bundle layer.
    Bundle(Descriptor),
    Attestation,
    Other,
    /// Declares a bundle but cannot be one (unreadable, no bundle layer).
    Broken(String),
}

/// Judges a referrer from its manifest: `artifactType`, else `config.mediaType`, and the layer
/// media types. `labelled_bundle`: the listing called it a bundle (only used to report an
/// unreadable manifest as a broken signature rather than as an unknown artifact).
pub(crate) fn judge(body: &[u8], labelled_bundle: bool) -> Judged {
    let manifest: ReferrerManifest = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) if labelled_bundle => return Judged::Broken(format!("referrer manifest: {e}")),
        Err(_) => return Judged::Other,
    };
    let declared_bundle = manifest.declared_type().is_some_and(bundle::is_bundle_type);
    let ReferrerManifest {
        layers,
        annotations,
        ..
    } = manifest;
    let Some(layer) = layers
        .into_iter()
        .find(|l| bundle::is_bundle_type(&l.media_type))
    else {
        return if declared_bundle {
            Judged::Broken("referrer manifest has no bundle layer".into())
        } else {
            Judged::Other
        };
    };
    // cosign v3 names the predicate on the manifest; another predicate is an attestation and
    // needs no download. The annotation is unsigned, but trusting it can only turn a
    // signature into "not counted", never make one.
    if predicate_annotation(annotations.as_ref()).is_some_and(|p| p != bundle::SIGN_PREDICATE) {
        return Judged::Attestation;
    }
    Judged::Bundle(layer)
}

fn fits(size: i64, max: usize) -> bool {
    usize::try_from(size).is_ok_and(|s| s <= max)
}

/// The in-toto predicate type of a DSSE bundle, when it has one. Anything else (no envelope,
/// another payload type, unreadable) is `None`: the verifier reports it.
pub(crate) fn statement_predicate(raw: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Bundle {
        dsse_envelope: Option<Envelope>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        payload: String,
        payload_type: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Statement {
        predicate_type: String,
    }
    let envelope = serde_json::from_slice::<Bundle>(raw).ok()?.dsse_envelope?;
    if envelope.payload_type != "application/vnd.in-toto+json" {
        return None;
    }
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope.payload.as_bytes())
        .ok()?;
    Some(
        serde_json::from_slice::<Statement>(&payload)
            .ok()?
            .predicate_type,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(json: serde_json::Value) -> ReferrerManifest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn declared_type_falls_back_to_config() {
        let m = manifest(serde_json::json!({
            "config": {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"},
            "layers": []
        }));
        assert!(m.declared_type().is_some_and(bundle::is_bundle_type));
        let m = manifest(serde_json::json!({
            "artifactType": "",
            "config": {"mediaType": "application/spdx+json"},
        }));
        assert_eq!(m.declared_type(), Some("application/spdx+json"));
        let m = manifest(serde_json::json!({ "artifactType": "x/y" }));
        assert_eq!(m.declared_type(), Some("x/y"));
    }

    #[test]
    fn entries_labelled_as_signatures_go_first() {
        let entry = |t: Option<&str>, p: Option<&str>| Entry {
            digest: String::new(),
            artifact_type: t.map(str::to_string),
            annotations: p.map(|p| {
                BTreeMap::from([(bundle::PREDICATE_ANNOTATION.to_string(), p.to_string())])
            }),
        };
        let b = Some("application/vnd.dev.sigstore.bundle.v0.3+json");
        assert_eq!(entry(b, None).rank(), 0);
        assert_eq!(entry(b, Some(bundle::SIGN_PREDICATE)).rank(), 0);
        assert_eq!(
            entry(Some("application/vnd.oci.empty.v1+json"), None).rank(),
            1
        );
        assert_eq!(entry(None, None).rank(), 1);
        assert_eq!(entry(Some(""), None).rank(), 1);
        assert_eq!(entry(b, Some("https://slsa.dev/provenance/v1")).rank(), 2);
    }

    #[test]
    fn predicate_of_a_bundle() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let bundle = |payload_type: &str, payload: &str| {
            serde_json::to_vec(&serde_json::json!({
                "dsseEnvelope": {"payload": b64(payload), "payloadType": payload_type, "signatures": []}
            }))
            .unwrap()
        };
        let intoto = "application/vnd.in-toto+json";
        assert_eq!(
            statement_predicate(&bundle(
                intoto,
                r#"{"predicateType":"https://slsa.dev/provenance/v1"}"#
            )),
            Some("https://slsa.dev/provenance/v1".into())
        );
        assert_eq!(statement_predicate(&bundle("text/plain", "{}")), None);
        assert_eq!(statement_predicate(&bundle(intoto, "not json")), None);
        assert_eq!(statement_predicate(b"{\"messageSignature\":{}}"), None);
        assert_eq!(statement_predicate(b"\xff"), None);
    }

    const IMAGE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

    fn listing(v: serde_json::Value, digest: &str) -> ListingKind {
        read_listing(&serde_json::to_vec(&v).unwrap(), digest, IMAGE)
    }

    #[test]
    fn listings() {
        let other = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        // cosign 3.1's fallback index, as the real CLI writes it.
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 877,
             "digest": other, "artifactType": "application/vnd.oci.empty.v1+json"},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": other}]});
        assert!(matches!(listing(index.clone(), other), ListingKind::Entries(e) if e.len() == 2));
        // GitLab: the tag answers with the image manifest (or the image's own index).
        let image =
            serde_json::json!({"schemaVersion": 2, "config": {"mediaType": "x"}, "layers": []});
        assert!(matches!(listing(image, other), ListingKind::NotAListing));
        assert!(matches!(listing(index, IMAGE), ListingKind::NotAListing));
        assert!(matches!(
            listing(serde_json::json!({}), other),
            ListingKind::Malformed(_)
        ));
        assert!(matches!(
            read_listing(b"<html>", other, IMAGE),
            ListingKind::Malformed(_)
        ));
    }

    fn judged(v: serde_json::Value, labelled: bool) -> Judged {
        judge(&serde_json::to_vec(&v).unwrap(), labelled)
    }

    #[test]
    fn referrer_manifests() {
        let layer = serde_json::json!({"mediaType": BUNDLE, "digest": IMAGE, "size": 659});
        // As cosign 3.1 writes a signature: artifactType and layer say bundle.
        let sig = serde_json::json!({"artifactType": BUNDLE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json"}, "layers": [layer],
            "annotations": {"dev.sigstore.bundle.predicateType": bundle::SIGN_PREDICATE}});
        assert!(matches!(judged(sig, false), Judged::Bundle(l) if l.size == 659));
        // No artifactType, no annotation: the layer alone tells.
        let bare = serde_json::json!({"config": {"mediaType": "application/vnd.oci.empty.v1+json"}, "layers": [layer]});
        assert!(matches!(judged(bare, false), Judged::Bundle(_)));
        let att = serde_json::json!({"artifactType": BUNDLE, "layers": [layer],
            "annotations": {"dev.sigstore.bundle.predicateType": "https://slsa.dev/provenance/v1"}});
        assert!(matches!(judged(att, false), Judged::Attestation));
        let no_layer = serde_json::json!({"config": {"mediaType": BUNDLE}, "layers": []});
        assert!(matches!(judged(no_layer, false), Judged::Broken(_)));
        let sbom = serde_json::json!({"artifactType": "application/spdx+json",
            "layers": [{"mediaType": "application/spdx+json", "digest": IMAGE, "size": 1}]});
        assert!(matches!(judged(sbom, true), Judged::Other));
        assert!(matches!(judge(b"nope", true), Judged::Broken(_)));
        assert!(matches!(judge(b"nope", false), Judged::Other));
    }

    #[test]
    fn sizes_fit_or_not() {
        assert!(fits(0, 10) && fits(10, 10));
        assert!(!fits(11, 10) && !fits(-1, 10) && !fits(i64::MAX, 10));
    }
}
