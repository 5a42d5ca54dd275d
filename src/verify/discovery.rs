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
use crate::posture::{Reason, SignatureFormat, SignatureSource, Verdict};

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
struct Entry {
    digest: String,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

impl Entry {
    /// Examination order: what the listing labels a signature first, then whatever it labels
    /// as unknown or empty (cosign's fallback index), last what it labels an attestation.
    fn rank(&self) -> u8 {
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
struct Descriptor {
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: i64,
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
        let parsed: Listing = match serde_json::from_slice(&listing.body) {
            Ok(l) => l,
            Err(e) => {
                let why = format!("referrers index: {e}");
                out.artifacts
                    .push(broken(Failure::new(Reason::Malformed, why)));
                return Ok(());
            }
        };
        let Some(entries) = parsed.manifests else {
            // GitLab answers the `sha256-<hex>` tag with the image manifest itself: there is
            // no referrers list there, which is neither an error nor a signature.
            if listing.digest == self.image_digest
                || parsed.config.is_some()
                || parsed.layers.is_some()
            {
                return Ok(());
            }
            out.artifacts.push(broken(Failure::new(
                Reason::Malformed,
                "referrers index has no manifests list",
            )));
            return Ok(());
        };
        if listing.digest == self.image_digest {
            // The tag answered with the image itself (a multi-platform index): its entries
            // are the image's platforms, not referrers.
            return Ok(());
        }
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
        let manifest: ReferrerManifest = match serde_json::from_slice(&fetched.body) {
            Ok(m) => m,
            // A manifest we cannot read: a signature if the listing said so, else unknown.
            Err(e) if labelled_bundle => {
                return Ok(broken(Reason::Malformed, format!("referrer manifest: {e}")))
            }
            Err(_) => return Ok(Examined::Other),
        };
        let layer = manifest
            .layers
            .iter()
            .find(|l| bundle::is_bundle_type(&l.media_type));
        let declared_bundle = manifest.declared_type().is_some_and(bundle::is_bundle_type);
        let layer = match layer {
            Some(l) => l,
            None if declared_bundle => {
                return Ok(broken(
                    Reason::Malformed,
                    "referrer manifest has no bundle layer".into(),
                ))
            }
            None => return Ok(Examined::Other),
        };
        // cosign v3 names the predicate on the manifest; another predicate is an attestation
        // and needs no download. The annotation is unsigned, but trusting it can only turn a
        // signature into "not counted", never make one.
        if predicate_annotation(manifest.annotations.as_ref())
            .is_some_and(|p| p != bundle::SIGN_PREDICATE)
        {
            return Ok(Examined::Attestation);
        }
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

fn fits(size: i64, max: usize) -> bool {
    usize::try_from(size).is_ok_and(|s| s <= max)
}

/// The in-toto predicate type of a DSSE bundle, when it has one. Anything else (no envelope,
/// another payload type, unreadable) is `None`: the verifier reports it.
fn statement_predicate(raw: &[u8]) -> Option<String> {
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

    #[test]
    fn sizes_fit_or_not() {
        assert!(fits(0, 10) && fits(10, 10));
        assert!(!fits(11, 10) && !fits(-1, 10) && !fits(i64::MAX, 10));
    }
}
