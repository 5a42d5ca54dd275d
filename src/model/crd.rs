//! The ImagePosture custom resource (`imageposture.io/v1alpha1`): one cluster-scoped object per
//! distinct image identity, recording what the operator concluded about its signatures.
//!
//! The resource is cluster-scoped because an image is shared by every namespace that runs it;
//! `spec` is the identity (written once), `status` is the observation (written through the
//! status subresource so identity and verdict have separate owners under server-side apply).
//! `crds/imageposture.yaml` is generated from these types ([`crd_yaml`]); `tests/crd.rs` fails
//! when the checked-in file drifts.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::image::ImageId;
use crate::core::posture::{
    bound, Posture, Reason, SignatureRecord, SignerType, Verdict, MAX_MESSAGE, MAX_TEXT,
};
use crate::core::tie::{Tie, Untied};
use crate::model::fields::{label_value, labels, LABEL_MANAGED_BY, LABEL_REGISTRY, MANAGER};
use crate::model::naming::ResourceName as _;

/// API group of every resource this operator owns.
pub const GROUP: &str = "imageposture.io";
/// Signature records kept in status. Registries can attach any number of artifacts; the CR
/// must stay small (etcd object size, watch traffic), and the first few tell the story.
pub const MAX_SIGNATURES_IN_STATUS: usize = 8;
/// References (tags) kept in status.
pub const MAX_REFERENCES_IN_STATUS: usize = 16;
/// Namespaces listed in `status.usage.namespaces`; `namespaceCount` carries the true number.
pub const MAX_NAMESPACES_IN_STATUS: usize = 16;
/// Entries in `status.signatureDigests`.
pub const MAX_SIGNATURE_DIGESTS: usize = 8;
/// Longest reference string kept (the distribution grammar allows long names; we do not).
pub const MAX_REFERENCE_TEXT: usize = 512;
/// Characters of the text written for `kubectl get` columns (`status.tag`,
/// `status.shortSigner`): longer text ends in `…` at this width.
pub const MAX_COLUMN_TEXT: usize = 28;
/// Hex digits of `spec.shortDigest`.
pub const SHORT_DIGEST_HEX: usize = 12;

/// Identity of the image (`spec` is written once at creation and never changes).
// clippy reads the repeated `type_ = "string"` inside `printcolumn(...)` as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "imageposture.io",
    version = "v1alpha1",
    kind = "ImagePosture",
    plural = "imagepostures",
    singular = "imageposture",
    shortname = "ipost",
    status = "ImagePostureStatus",
    derive = "PartialEq",
    doc = "The signing posture (signed, invalid-signature, not-signed, checking) of one image \
           identity (registry/repository@digest) running in the cluster.",
    // `kubectl get ipost` shows what a person scans and fits 120 columns for typical images
    // (tests/columns.rs prints it from a real API server); `-o wide` adds the rest.
    printcolumn(name = "Tag", type_ = "string", json_path = ".status.tag"),
    printcolumn(name = "Digest", type_ = "string", json_path = ".spec.shortDigest"),
    printcolumn(name = "Posture", type_ = "string", json_path = ".status.posture"),
    printcolumn(name = "Signer", type_ = "string", json_path = ".status.shortSigner"),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.usage.pods"),
    printcolumn(
        name = "Drift",
        type_ = "string",
        json_path = ".status.drift.kind",
        priority = "1"
    ),
    printcolumn(
        name = "Verified",
        type_ = "date",
        json_path = ".status.lastVerified",
        priority = "1"
    ),
    printcolumn(
        name = "Issuer",
        type_ = "string",
        json_path = ".status.issuer",
        priority = "1"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = "1"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImagePostureSpec {
    /// Normalized identity `registry/repository@digest` (Docker Hub as `docker.io/library/...`).
    pub image: String,
    /// `registry/repository`, for selecting every digest of one repository.
    pub repository: String,
    /// Manifest digest (`sha256:<hex>`), taken from the pod's `imageID`, never guessed.
    pub digest: String,
    /// The first 12 hex digits of `digest`, for the `DIGEST` column of `kubectl get` (a
    /// column cannot cut a string). Derived from `digest`; absent on resources written before it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 12))]
    pub short_digest: String,
    /// Set when `digest` is only what the container runtime reported and could not be tied to
    /// a manifest of `repository` through the pods' tag (`config`: a bare config digest;
    /// `foreign`: a digest under a name no registry holds, as `kind load` writes). Such a
    /// resource is `checking` / `DigestUnknown` and is never verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untied: Option<UntiedKind>,
}

/// What a running digest that could not be tied to a manifest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UntiedKind {
    /// A bare image config digest.
    Config,
    /// A manifest digest under another name than the pod's repository.
    Foreign,
}

/// What the operator concluded and why. Every field is optional: a fresh object has no status,
/// and server-side apply of a partial status must not claim fields we did not mean to set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = drop_null_from_enums)]
pub struct ImagePostureStatus {
    /// `signed` | `invalid-signature` | `not-signed` | `checking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture: Option<Posture>,
    /// Who signed (certificate SAN, or key name / `sha256:` key fingerprint). Only when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub signer: Option<String>,
    /// `signer` as the `SIGNER` column of `kubectl get` shows it ([`short_signer`]): for the
    /// eye only, never matched on. Only when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 28))]
    pub short_signer: Option<String>,
    /// OIDC issuer of a keyless signer. Only when signed keyless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub issuer: Option<String>,
    /// `keyless` | `key`. Only when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_type: Option<SignerType>,
    /// Machine-readable CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Human-readable explanation (bounded; may quote registry text, stored as data).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 513))]
    pub message: String,
    /// One record per signature artifact examined (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub signatures: Vec<SignatureRecord>,
    /// References (tags/refs as pods wrote them) that resolve to this image (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub references: Vec<String>,
    /// The tags of `references` (sorted, comma-separated, at most 28 characters), for the `TAG`
    /// column of `kubectl get`; absent when pods name the image by digest only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 28))]
    pub tag: Option<String>,
    /// Who runs this image right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ImageUsage>,
    /// When verification last actually ran against the registry (RFC 3339). A cache hit or an
    /// unchanged revalidation does not move it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_verified: Option<String>,
    /// When the verdict was last confirmed: verified, or revalidated unchanged by the digests
    /// of its signature listings (RFC 3339). The TTL runs from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_checked: Option<String>,
    /// While `checking`: since when (RFC 3339), so a stuck image is visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub checking_since: Option<String>,
    /// Digests of the signature artifacts seen at the last verification, keyed by artifact:
    /// `sigTag` (cosign `.sig` manifest), `referrers` (OCI referrers index), `referrersTag`
    /// (tag-schema fallback index). Revalidation compares them with cheap HEAD requests and
    /// skips downloading when nothing changed; kept here so that survives a restart.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 8))]
    pub signature_digests: BTreeMap<String, String>,
    /// Standard conditions; `Verified` mirrors the posture for generic tooling (`kubectl wait`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
    /// How this image departs from its repository's SignerBaseline (field manager
    /// `imageposture-drift`); absent when it does not, or the repository has no baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::model::baseline::Drift>,
}

/// schemars renders `Option<SimpleEnum>` as `enum: [..., null]`; `nullable: true` (which kube
/// derives from the same schema) already admits null, so the literal is dropped to keep the
/// published schema to the values a user can actually see.
fn drop_null_from_enums(schema: &mut schemars::Schema) {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                    values.retain(|e| !e.is_null());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(map) = schema.as_object_mut() {
        map.values_mut().for_each(walk);
    }
}

/// `signatureDigests` key: digest of the cosign `sha256-<hex>.sig` tag's manifest.
pub const DIGEST_SIG_TAG: &str = crate::core::posture::EVIDENCE_SIG_TAG;
/// `signatureDigests` key: digest of the OCI 1.1 referrers index (native API).
pub const DIGEST_REFERRERS: &str = crate::core::posture::EVIDENCE_REFERRERS;
/// `signatureDigests` key: digest of the referrers tag-schema fallback index (`sha256-<hex>`).
pub const DIGEST_REFERRERS_TAG: &str = crate::core::posture::EVIDENCE_REFERRERS_TAG;

/// How widely the image is used; the namespace list is bounded, the count is not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageUsage {
    /// Pods currently running this image.
    #[serde(default)]
    pub pods: u32,
    /// Namespaces of those pods (sorted; the first 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub namespaces: Vec<String>,
    /// Number of distinct namespaces (the list above may be cut).
    #[serde(default)]
    pub namespace_count: u32,
}

/// A status condition in the Kubernetes convention. Local rather than `meta/v1 Condition` so
/// its timestamp is RFC 3339 text like the rest of this status and its message is bounded in
/// the schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Verified`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` | `False` | `Unknown`.
    pub status: String,
    /// CamelCase reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 513))]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
}

/// The condition type mirroring the posture.
pub const CONDITION_VERIFIED: &str = "Verified";

impl Condition {
    /// The `Verified` condition for a posture: `True` when signed, `False` for a resting
    /// negative verdict, `Unknown` while checking (we do not know yet, and must not say no).
    pub fn verified(
        posture: Posture,
        reason: Reason,
        message: &str,
        last_transition_time: &str,
    ) -> Self {
        let status = match posture {
            Posture::Signed => "True",
            Posture::InvalidSignature | Posture::NotSigned => "False",
            Posture::Checking => "Unknown",
        };
        Condition {
            type_: CONDITION_VERIFIED.to_string(),
            status: status.to_string(),
            reason: reason.as_str().to_string(),
            message: bound(message, MAX_MESSAGE),
            last_transition_time: last_transition_time.to_string(),
        }
    }
}

impl ImagePostureStatus {
    /// The verdict part of a status (posture, signer, reason, signatures), bounded. Usage,
    /// references and timestamps belong to the caller, which knows the inventory and the clock.
    pub fn from_verdict(v: &Verdict) -> Self {
        let mut s = ImagePostureStatus {
            posture: Some(v.posture),
            signer: v.signer.clone(),
            short_signer: v.signer.as_deref().map(short_signer),
            issuer: v.issuer.clone(),
            signer_type: v.signer_type,
            reason: Some(v.reason),
            message: v.message.clone(),
            signatures: v.signatures.clone(),
            signature_digests: v.artifact_digests.clone(),
            ..Default::default()
        };
        s.enforce_bounds();
        s
    }

    /// Cuts every list and text to its bound, so a hostile registry (thousands of signature
    /// artifacts, megabyte SANs) cannot make the object unwritable or huge. Idempotent.
    pub fn enforce_bounds(&mut self) {
        let text = |t: &mut Option<String>| {
            if let Some(s) = t {
                *s = bound(s, MAX_TEXT);
            }
        };
        text(&mut self.signer);
        text(&mut self.issuer);
        let column = |t: &mut Option<String>| {
            if let Some(s) = t {
                *s = clip(s, MAX_COLUMN_TEXT);
            }
        };
        column(&mut self.short_signer);
        column(&mut self.tag);
        self.message = bound(&self.message, MAX_MESSAGE);
        self.signatures.truncate(MAX_SIGNATURES_IN_STATUS);
        for sig in &mut self.signatures {
            text(&mut sig.signer);
            text(&mut sig.issuer);
            sig.message = bound(&sig.message, MAX_MESSAGE);
            text(&mut sig.key_fingerprint);
            if let Some(b) = &mut sig.build {
                b.enforce_bounds();
            }
        }
        self.references.truncate(MAX_REFERENCES_IN_STATUS);
        for r in &mut self.references {
            *r = bound(r, MAX_REFERENCE_TEXT);
        }
        if let Some(u) = &mut self.usage {
            u.namespaces.truncate(MAX_NAMESPACES_IN_STATUS);
        }
        while self.signature_digests.len() > MAX_SIGNATURE_DIGESTS {
            self.signature_digests.pop_last();
        }
        self.conditions.truncate(8);
        for c in &mut self.conditions {
            c.message = bound(&c.message, MAX_MESSAGE);
        }
    }
}

impl ImageUsage {
    /// Usage from a pod count and the (possibly unsorted, duplicated) namespaces of those pods.
    pub fn new<'a>(pods: u32, namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        let mut all: Vec<String> = namespaces.into_iter().map(str::to_string).collect();
        all.sort();
        all.dedup();
        let namespace_count = u32::try_from(all.len()).unwrap_or(u32::MAX);
        all.truncate(MAX_NAMESPACES_IN_STATUS);
        ImageUsage {
            pods,
            namespaces: all,
            namespace_count,
        }
    }
}

/// `spec.shortDigest`: the first [`SHORT_DIGEST_HEX`] hex digits of a digest, without its
/// algorithm (as `docker images` shows an image ID).
pub fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(SHORT_DIGEST_HEX).collect()
}

/// `status.shortSigner`: the signer as a person scans it in a column of [`MAX_COLUMN_TEXT`]
/// characters. The scheme of a URI is dropped and a ref reads as its name (`@refs/tags/v1` →
/// `@v1`); a GitHub Actions workflow URI reads `owner/repo/workflow.yml@ref`; a key fingerprint
/// keeps 12 hex digits. Characters that hide or reorder text are escaped, longer text ends in
/// `…`. Display only: the full `signer` (and the issuer, in `-o wide`) is the data.
pub fn short_signer(signer: &str) -> String {
    if let Some(hex) = signer.strip_prefix("sha256:") {
        return format!("sha256:{}", short_digest(hex));
    }
    let uri = ["https://", "http://"]
        .iter()
        .find_map(|scheme| signer.strip_prefix(scheme));
    let mut text = match uri {
        Some(rest) => rest
            .replacen("@refs/heads/", "@", 1)
            .replacen("@refs/tags/", "@", 1),
        None => signer.to_string(),
    };
    if let Some((repo, workflow)) = text
        .strip_prefix("github.com/")
        .and_then(|rest| rest.split_once("/.github/workflows/"))
    {
        text = format!("{repo}/{workflow}");
    }
    clip(&crate::core::text::escape(&text), MAX_COLUMN_TEXT)
}

/// `status.tag`: the distinct tags of the references pods name the image by, sorted and
/// comma-separated, escaped and cut to [`MAX_COLUMN_TEXT`] characters.
pub(crate) fn tags_of(references: &[String]) -> Option<String> {
    let tags: std::collections::BTreeSet<String> = references
        .iter()
        .filter_map(|r| crate::core::image::ImageRef::parse(r).ok()?.tag)
        .collect();
    if tags.is_empty() {
        return None;
    }
    let joined = tags.into_iter().collect::<Vec<_>>().join(",");
    Some(clip(&crate::core::text::escape(&joined), MAX_COLUMN_TEXT))
}

/// At most `max` characters: longer text keeps `max - 1` and ends in `…`. Idempotent.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A new ImagePosture for an image: deterministic name, identity spec and labels, no status
/// (status is written separately through the status subresource).
pub fn new_resource(id: &ImageId) -> ImagePosture {
    let mut r = ImagePosture::new(
        &id.resource_name(),
        ImagePostureSpec {
            image: id.key(),
            repository: id.repo_path(),
            digest: id.digest.clone(),
            short_digest: short_digest(&id.digest),
            untied: None,
        },
    );
    r.metadata.labels = Some(labels(id, None));
    r
}

/// The resource of a running image that could not be tied to a manifest of its repository:
/// named apart from any manifest identity (its hash covers the kind), never verified.
pub fn untied_resource(tie: &Tie) -> ImagePosture {
    let (kind, digest) = runtime_digest(tie);
    let reference = &tie.reference;
    let repo = format!("{}/{}", reference.registry, reference.repository);
    let identity = format!("{repo}@{digest}");
    let name =
        crate::model::naming::resource_name_of(&repo, &format!("untied/{kind:?}/{identity}"));
    let mut r = ImagePosture::new(
        &name,
        ImagePostureSpec {
            image: identity,
            repository: repo,
            digest: digest.to_string(),
            short_digest: short_digest(digest),
            untied: Some(kind),
        },
    );
    let mut l = BTreeMap::new();
    l.insert(LABEL_MANAGED_BY.to_string(), MANAGER.to_string());
    let registry = label_value(&reference.registry);
    if !registry.is_empty() {
        l.insert(LABEL_REGISTRY.to_string(), registry);
    }
    r.metadata.labels = Some(l);
    r
}

/// What the runtime reported: its kind and digest (never a manifest identity by itself).
fn runtime_digest(tie: &Tie) -> (UntiedKind, &str) {
    match &tie.running {
        Untied::Config(c) => (UntiedKind::Config, c.as_str()),
        Untied::Foreign(d) => (UntiedKind::Foreign, d.as_str()),
    }
}

impl ImagePosture {
    /// The identity this resource was written for (`None`: a spec we did not write).
    pub fn image_id(&self) -> Option<ImageId> {
        if self.spec.untied.is_some() {
            return None;
        }
        crate::core::image::ImageRef::parse(&self.spec.image)
            .ok()?
            .id()
    }

    /// The references pods name this image by (`status.references`, written by the inventory
    /// from the pods' spec images), parsed: what leads the verifier from a running platform
    /// manifest to the index that lists it. Unparsable ones are left out.
    pub fn leads(&self) -> Vec<crate::core::image::ImageRef> {
        self.status
            .iter()
            .flat_map(|s| s.references.iter())
            .filter_map(|r| crate::core::image::ImageRef::parse(r).ok())
            .collect()
    }

    /// Carries our `app.kubernetes.io/managed-by` label (only those are collected or verified).
    pub fn is_managed(&self) -> bool {
        self.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_MANAGED_BY))
            .map(String::as_str)
            == Some(MANAGER)
    }
}

/// How every timestamp of the status is written: RFC 3339, whole seconds, UTC.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The CustomResourceDefinition as YAML; `crds/imageposture.yaml` holds exactly this text.
#[allow(clippy::expect_used, reason = "our own static types, no outside data")]
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&ImagePosture::crd()).expect("a CRD always serializes to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::image::ImageRef;
    use crate::core::posture::{SignatureFormat, SignatureSource};
    use crate::model::fields::*;
    use kube::Resource;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn id(s: &str) -> ImageId {
        ImageRef::parse(&format!("{s}@{D}")).unwrap().id().unwrap()
    }

    fn valid_label_value(v: &str) -> bool {
        v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && (v.is_empty()
                || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
    }

    fn valid_label_key(k: &str) -> bool {
        let (prefix, name) = k.rsplit_once('/').unwrap_or(("", k));
        prefix.len() <= 253 && !name.is_empty() && valid_label_value(name)
    }

    #[test]
    fn names_and_labels_are_valid() {
        let long_host = format!("{}.example.com:5000", "h".repeat(80));
        for s in [
            "nginx",
            "ghcr.io/org/app",
            "127.0.0.1:5000/a/b",
            &format!("{long_host}/deep/path/to/a/repository/with/many/segments"),
        ] {
            let id = id(s);
            let r = new_resource(&id);
            let name = r.metadata.name.clone().unwrap();
            assert!(name.len() <= 63, "{name}");
            assert_eq!(r.spec.image, id.key());
            assert_eq!(r.spec.digest, D);
            for posture in [None, Some(Posture::Signed), Some(Posture::InvalidSignature)] {
                for (k, v) in labels(&id, posture) {
                    assert!(valid_label_key(&k), "{k}");
                    assert!(valid_label_value(&v), "{k}={v:?} for {s}");
                }
            }
        }
        let l = labels(&id("127.0.0.1:5000/a/b"), Some(Posture::NotSigned));
        assert_eq!(l[LABEL_REGISTRY], "127.0.0.1-5000");
        assert_eq!(l[LABEL_POSTURE], "not-signed");
        assert_eq!(l[LABEL_MANAGED_BY], "imageposture");
        assert!(!labels(&id("nginx"), None).contains_key(LABEL_POSTURE));
        assert_eq!(label_value("-:-"), "");
    }

    #[test]
    fn status_and_verdict_map_both_ways() {
        let t0 = parse_time("2026-01-01T00:00:00Z").unwrap();
        let t1 = parse_time("2026-01-01T07:00:00Z").unwrap();
        let rec = SignatureRecord {
            digest: None,
            via: None,
            source: SignatureSource::Tag,
            format: SignatureFormat::Simplesigning,
            verified: true,
            signer: Some("me@example.com".into()),
            issuer: Some("https://issuer".into()),
            signer_type: Some(SignerType::Keyless),
            reason: Reason::Verified,
            message: String::new(),
            rekor_log_index: Some(1),
            integrated_time: Some(2),
            signing_time: Some(2),
            signing_time_source: Some(crate::core::posture::TimeSource::Tlog),
            build: None,
            key_fingerprint: None,
        };
        let mut v = Verdict::from_signatures(vec![rec]);
        v.artifact_digests
            .insert(DIGEST_SIG_TAG.into(), "sha256:aa".into());

        // Pending: no verdict recorded yet.
        let pending = ImagePostureStatus::pending(t0);
        assert_eq!(pending.reason, Some(Reason::Pending));
        assert_eq!(pending.checking_since, Some(rfc3339(t0)));
        assert!(pending.recorded().is_none());

        // A resting verdict round-trips, with the TTL running from lastChecked.
        let signed = ImagePostureStatus::verdict_fields(&v, Some(t0), Some(t0), Some(&pending), t0);
        assert_eq!(signed.checking_since, None);
        let r = signed.recorded().unwrap();
        assert_eq!(
            (r.verdict.clone(), r.verified_at, r.stale),
            (v.clone(), t0, false)
        );

        // `checking` keeps the last verification's evidence, recorded as stale, signer gone.
        let down = Verdict::checking(Reason::Timeout, "slow");
        let checking = ImagePostureStatus::verdict_fields(&down, None, None, Some(&signed), t1);
        assert_eq!(checking.signer, None);
        assert_eq!(checking.last_verified, Some(rfc3339(t0)));
        assert_eq!(checking.signatures, signed.signatures);
        assert_eq!(checking.signature_digests, signed.signature_digests);
        let r = checking.recorded().unwrap();
        assert!(r.stale);
        assert_eq!(r.verdict.posture, Posture::Signed);
        assert_eq!(r.verdict.artifact_digests, v.artifact_digests);

        // The two managers' fields never overlap.
        for f in INVENTORY_FIELDS {
            assert!(!VERDICT_FIELDS.contains(f), "{f}");
        }
        let both = ImagePostureStatus::combined(
            signed.clone(),
            ImagePostureStatus::inventory_fields(vec!["x:1".into()], ImageUsage::new(2, ["a"])),
        );
        assert_eq!(both.only(VERDICT_FIELDS), signed.only(VERDICT_FIELDS));
        assert_eq!(both.only(INVENTORY_FIELDS)["usage"]["pods"], 2);
    }

    #[test]
    fn crd_is_cluster_scoped_with_printer_columns() {
        let crd = ImagePosture::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["ipost".to_string()][..])
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols = v.additional_printer_columns.as_ref().unwrap();
        let find = |n: &str| {
            cols.iter()
                .find(|c| c.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        // The default columns (priority 0) are what a person scans; `-o wide` adds the rest.
        let default: Vec<&str> = cols
            .iter()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(default, ["Tag", "Digest", "Posture", "Signer", "Pods"]);
        assert_eq!(find("Tag").json_path, ".status.tag");
        assert_eq!(find("Digest").json_path, ".spec.shortDigest");
        assert_eq!(find("Image").json_path, ".spec.image");
        assert_eq!(find("Image").priority, Some(1));
        assert_eq!(find("Posture").json_path, ".status.posture");
        assert_eq!(find("Signer").json_path, ".status.shortSigner");
        assert_eq!(find("Issuer").json_path, ".status.issuer");
        assert_eq!(find("Pods").type_, "integer");
        assert_eq!(find("Verified").type_, "date");
        assert_eq!(find("Verified").json_path, ".status.lastVerified");
        assert_eq!(find("Drift").json_path, ".status.drift.kind");
        assert_eq!(
            ImagePosture::url_path(&(), None),
            "/apis/imageposture.io/v1alpha1/imagepostures"
        );
    }

    #[test]
    fn schema_is_structural_enough() {
        let yaml = crd_yaml();
        // Enums come out as string enums, not `anyOf`/`$ref` (rejected by the API server).
        assert!(!yaml.contains("$ref"), "{yaml}");
        assert!(!yaml.contains("anyOf"), "{yaml}");
        assert!(!yaml.contains("- null"), "{yaml}");
        assert!(yaml.contains("invalid-signature"));
        assert!(yaml.contains("BadTransparencyLogEntry"));
    }

    #[test]
    fn status_is_bounded_and_camel_case() {
        let rec = SignatureRecord {
            digest: None,
            via: None,
            source: SignatureSource::Tag,
            format: SignatureFormat::Simplesigning,
            verified: false,
            signer: Some("x".repeat(10_000)),
            issuer: None,
            signer_type: None,
            reason: Reason::BadSignature,
            message: "m".repeat(10_000),
            rekor_log_index: None,
            integrated_time: None,
            signing_time: None,
            signing_time_source: None,
            build: None,
            key_fingerprint: None,
        };
        let v = Verdict::from_signatures(vec![rec; 100]);
        let mut s = ImagePostureStatus::from_verdict(&v);
        assert_eq!(s.signatures.len(), MAX_SIGNATURES_IN_STATUS);
        assert!(s.signatures[0].signer.as_ref().unwrap().len() <= MAX_TEXT + 3);
        s.references = (0..100).map(|i| format!("r{i}")).collect();
        s.usage = Some(ImageUsage::new(
            40,
            (0..40).map(|i| if i % 2 == 0 { "a" } else { "b" }),
        ));
        assert_eq!(s.usage.as_ref().unwrap().namespace_count, 2);
        s.checking_since = Some("2025-01-01T00:00:00Z".into());
        s.conditions.push(Condition::verified(
            Posture::Checking,
            Reason::Timeout,
            "slow",
            "2025-01-01T00:00:00Z",
        ));
        s.enforce_bounds();
        assert_eq!(s.references.len(), MAX_REFERENCES_IN_STATUS);
        assert_eq!(s.conditions[0].status, "Unknown");
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["posture"], "invalid-signature");
        assert_eq!(j["reason"], "BadSignature");
        assert_eq!(j["checkingSince"], "2025-01-01T00:00:00Z");
        assert_eq!(j["usage"]["namespaceCount"], 2);
        assert_eq!(j["conditions"][0]["type"], "Verified");
        assert!(
            j.get("signer").is_none(),
            "absent fields are omitted for server-side apply"
        );
        let back: ImagePostureStatus = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn column_text_is_short_escaped_and_bounded() {
        assert_eq!(short_digest(D), "0123456789ab");
        let r = new_resource(&id("ghcr.io/acme/app"));
        assert_eq!(r.spec.short_digest, "0123456789ab");
        assert_eq!(
            short_signer(
                "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.4.2"
            ),
            "acme/app/release.yml@v1.4.2"
        );
        assert_eq!(short_signer("dev@example.com"), "dev@example.com");
        assert_eq!(short_signer("release-key"), "release-key");
        assert_eq!(
            short_signer(&format!("sha256:{}", "ab".repeat(32))),
            "sha256:abababababab"
        );
        assert_eq!(
            short_signer("https://gitlab.com/group/project//.gitlab-ci.yml@refs/heads/main"),
            "gitlab.com/group/project//.…"
        );
        let evil = short_signer("https://evil.example/\u{1b}[2J\u{202e}x");
        assert!(!evil.chars().any(crate::core::text::hides), "{evil}");
        assert!(short_signer(&"é".repeat(400)).chars().count() <= MAX_COLUMN_TEXT);

        let refs = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let tag = |r: &[&str]| {
            ImagePostureStatus::inventory_fields(refs(r), ImageUsage::new(1, ["a"])).tag
        };
        assert_eq!(tag(&["nginx:1.27"]).as_deref(), Some("1.27"));
        assert_eq!(tag(&["nginx"]).as_deref(), Some("latest"));
        assert_eq!(tag(&[&format!("nginx@{D}")]), None);
        assert_eq!(
            tag(&["nginx:latest", "docker.io/library/nginx:1.27", "nginx:1.27"]).as_deref(),
            Some("1.27,latest")
        );
        let many: Vec<String> = (0..16).map(|i| format!("app:release-{i:02}")).collect();
        let long = ImagePostureStatus::inventory_fields(many, ImageUsage::new(1, ["a"])).tag;
        assert_eq!(
            long.as_deref().map(|t| t.chars().count()),
            Some(MAX_COLUMN_TEXT)
        );
        // Bounds hold on what comes back from the server (idempotent).
        let mut s = ImagePostureStatus {
            tag: Some("x".repeat(100)),
            short_signer: Some("y".repeat(100)),
            ..Default::default()
        };
        s.enforce_bounds();
        let once = s.clone();
        s.enforce_bounds();
        assert_eq!(s, once);
        assert_eq!(s.tag.map(|t| t.chars().count()), Some(MAX_COLUMN_TEXT));
    }
}
