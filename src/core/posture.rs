//! The vocabulary of a verdict: postures, reasons and what one observation of an image found.
//!
//! Everything here is plain data, shared by the CLI output, the observer cache and the CRD status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest signer/issuer/message text we keep. Signer text is attacker-influenced (any SAN a
/// CA was talked into issuing), so it is stored as bounded data and never interpreted.
pub const MAX_TEXT: usize = 256;
/// Longest human message kept (registry error bodies can be anything).
pub const MAX_MESSAGE: usize = 512;

/// The signing posture of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Posture {
    /// A signature verified against the trust root.
    Signed,
    /// Signature artifacts exist but none verifies. Louder than `NotSigned`.
    InvalidSignature,
    /// The registry said, definitively (404), that no signature artifact exists.
    NotSigned,
    /// Transient: we could not find out. Never cached, never a clean verdict.
    Checking,
}

impl Posture {
    pub fn as_str(self) -> &'static str {
        match self {
            Posture::Signed => "signed",
            Posture::InvalidSignature => "invalid-signature",
            Posture::NotSigned => "not-signed",
            Posture::Checking => "checking",
        }
    }

    /// A resting posture is a verdict that may be cached; `checking` is not.
    pub fn is_resting(self) -> bool {
        self != Posture::Checking
    }

    /// Order used to pick the strongest verdict among several artifacts.
    fn strength(self) -> u8 {
        match self {
            Posture::Signed => 3,
            Posture::InvalidSignature => 2,
            Posture::Checking => 1,
            Posture::NotSigned => 0,
        }
    }

    pub fn stronger_than(self, other: Posture) -> bool {
        self.strength() > other.strength()
    }
}

impl std::fmt::Display for Posture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a posture was given: a CamelCase word, stable for machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Reason {
    // signed
    Verified,
    // not-signed
    NoSignature,
    // invalid-signature
    DigestMismatch,
    BadSignature,
    UntrustedCertificate,
    BadTransparencyLogEntry,
    /// An RFC 3161 timestamp does not verify, or a keyless signature has no trusted time.
    BadTimestamp,
    UnverifiableKey,
    Malformed,
    UnsupportedFormat,
    // checking
    RegistryUnreachable,
    RegistryError,
    Timeout,
    Unauthorized,
    RateLimited,
    TrustRootUnavailable,
    TooLarge,
    InvalidReference,
    DigestUnknown,
    Deferred,
    /// The resource was just created by the inventory; its first verification is queued.
    Pending,
    /// The verifier itself failed (a panic caught for this image); never a resting posture.
    InternalError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Verified => "Verified",
            Reason::NoSignature => "NoSignature",
            Reason::DigestMismatch => "DigestMismatch",
            Reason::BadSignature => "BadSignature",
            Reason::UntrustedCertificate => "UntrustedCertificate",
            Reason::BadTransparencyLogEntry => "BadTransparencyLogEntry",
            Reason::BadTimestamp => "BadTimestamp",
            Reason::UnverifiableKey => "UnverifiableKey",
            Reason::Malformed => "Malformed",
            Reason::UnsupportedFormat => "UnsupportedFormat",
            Reason::RegistryUnreachable => "RegistryUnreachable",
            Reason::RegistryError => "RegistryError",
            Reason::Timeout => "Timeout",
            Reason::Unauthorized => "Unauthorized",
            Reason::RateLimited => "RateLimited",
            Reason::TrustRootUnavailable => "TrustRootUnavailable",
            Reason::TooLarge => "TooLarge",
            Reason::InvalidReference => "InvalidReference",
            Reason::DigestUnknown => "DigestUnknown",
            Reason::Deferred => "Deferred",
            Reason::Pending => "Pending",
            Reason::InternalError => "InternalError",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Evidence key: digest of the cosign `sha256-<hex>.sig` manifest.
pub const EVIDENCE_SIG_TAG: &str = "sigTag";
/// Evidence key: digest of the OCI 1.1 referrers API listing.
pub const EVIDENCE_REFERRERS: &str = "referrers";
/// Evidence key: digest of the referrers tag-schema index (`sha256-<hex>`).
pub const EVIDENCE_REFERRERS_TAG: &str = "referrersTag";
/// Evidence key: digest of the `trusted_root.json` that judged the signatures.
pub const EVIDENCE_TRUST_ROOT: &str = "trustRoot";

/// Evidence key: the index whose signature covers the running platform manifest.
pub const EVIDENCE_VIA_INDEX: &str = "viaIndex";
/// Evidence key: a fingerprint of that index's signature listings (see `EVIDENCE_*` above).
pub const EVIDENCE_VIA_INDEX_LISTINGS: &str = "viaIndexListings";
/// Evidence key: a fingerprint of the signature listings of the platform manifests the
/// running (unsigned) index lists.
pub const EVIDENCE_VIA_PLATFORMS: &str = "viaPlatforms";

/// Keyless (Fulcio certificate) or key-based signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignerType {
    Keyless,
    Key,
}

/// Where a signature artifact was discovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureSource {
    /// The cosign `sha256-<hex>.sig` tag.
    Tag,
    /// An OCI 1.1 referrer (native API or the referrers tag schema).
    Referrer,
}

/// Format of a signature artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureFormat {
    /// Legacy cosign simple-signing layer with annotations.
    Simplesigning,
    /// Sigstore bundle (v0.1-v0.3).
    Bundle,
}

/// What vouches for the time a signature was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSource {
    /// The log's integrated time, under its signed entry timestamp (Rekor v1).
    Tlog,
    /// An RFC 3161 timestamp from a trusted timestamp authority.
    Timestamp,
}

/// How a signature on another digest covers the running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// The running digest is a platform manifest; the signature is on an index whose
    /// `manifests[]` lists it (the signed index bytes commit to it).
    Index,
    /// The running digest is an index with no signature of its own; the signature is on one
    /// of the platform manifests it lists.
    Platform,
}

/// The verdict on one signature artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureRecord {
    /// The manifest digest this signature is over (the running digest, or with `via` the index
    /// or platform manifest that carried it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Set when the signature is on another digest than the running one, and how it covers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    pub source: SignatureSource,
    pub format: SignatureFormat,
    pub verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_type: Option<SignerType>,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekor_log_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrated_time: Option<i64>,
    /// The earliest verified signing time (unix seconds) and what vouches for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_time_source: Option<TimeSource>,
    /// What a keyless certificate says about the build that signed (Fulcio's CI extensions),
    /// bounded attacker-influenced text. Only when verified and the certificate carries any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildFacts>,
    /// `sha256:<hex>` of the signing key's SubjectPublicKeyInfo, for a key-based signature
    /// made with a configured key (whose name is then the signer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
}

/// Fulcio certificate extensions of a CI identity (OIDs `1.3.6.1.4.1.57264.1.9` onwards,
/// DER UTF8String), each cut to [`MAX_TEXT`] with control characters neutralised. What a
/// person needs to judge a signer drift: which workflow, from which repository and ref, on
/// which trigger, in which run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildFacts {
    /// Build Signer URI (`.1.9`): the workflow that signed, with its `@ref`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub build_signer_uri: Option<String>,
    /// Build Signer Digest (`.1.10`): the workflow's commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub build_signer_digest: Option<String>,
    /// Runner Environment (`.1.11`): `github-hosted`, `self-hosted`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub runner_environment: Option<String>,
    /// Source Repository URI (`.1.12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub source_repository: Option<String>,
    /// Source Repository Digest (`.1.13`): the commit built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub source_digest: Option<String>,
    /// Source Repository Ref (`.1.14`): `refs/tags/v1.4.2`, `refs/heads/main`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub source_ref: Option<String>,
    /// Source Repository Owner URI (`.1.16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub owner: Option<String>,
    /// Build Trigger (`.1.20`): `push`, `workflow_dispatch`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub trigger: Option<String>,
    /// Run Invocation URI (`.1.21`): the CI run that signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub run_url: Option<String>,
}

impl BuildFacts {
    /// Whether the certificate said nothing of a build.
    pub fn is_empty(&self) -> bool {
        *self == BuildFacts::default()
    }

    /// Every field cut to [`MAX_TEXT`], control characters neutralised. Idempotent.
    pub fn enforce_bounds(&mut self) {
        for f in [
            &mut self.build_signer_uri,
            &mut self.build_signer_digest,
            &mut self.runner_environment,
            &mut self.source_repository,
            &mut self.source_digest,
            &mut self.source_ref,
            &mut self.owner,
            &mut self.trigger,
            &mut self.run_url,
        ]
        .into_iter()
        .flatten()
        {
            *f = bound(f, MAX_TEXT);
        }
    }
}

/// What one observation of one image concluded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub posture: Posture,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_type: Option<SignerType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureRecord>,
    /// Digests of the signature listings this verdict was drawn from, by [`EVIDENCE_SIG_TAG`],
    /// [`EVIDENCE_REFERRERS`] or [`EVIDENCE_REFERRERS_TAG`]; an absent key was a 404. When they
    /// are unchanged at revalidation, the verdict stands without downloading anything.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub artifact_digests: std::collections::BTreeMap<String, String>,
    /// The registry's `Retry-After` advice, for the observer's backoff (not stored).
    #[serde(skip)]
    pub retry_after: Option<std::time::Duration>,
}

impl Verdict {
    pub fn checking(reason: Reason, message: impl Into<String>) -> Self {
        Verdict {
            posture: Posture::Checking,
            reason,
            message: bound(&message.into(), MAX_MESSAGE),
            signer: None,
            issuer: None,
            signer_type: None,
            signatures: Vec::new(),
            artifact_digests: Default::default(),
            retry_after: None,
        }
    }

    pub fn not_signed() -> Self {
        Verdict {
            posture: Posture::NotSigned,
            reason: Reason::NoSignature,
            message: "registry has no signature artifact for this digest".into(),
            signer: None,
            issuer: None,
            signer_type: None,
            signatures: Vec::new(),
            artifact_digests: Default::default(),
            retry_after: None,
        }
    }

    /// Combines per-artifact verdicts: the strongest verified signature wins; with none
    /// verified, any artifact makes it `invalid-signature`, carrying the first failure's reason.
    pub fn from_signatures(signatures: Vec<SignatureRecord>) -> Self {
        if let Some(best) = signatures.iter().find(|s| s.verified) {
            return Verdict {
                posture: Posture::Signed,
                reason: Reason::Verified,
                message: format!(
                    "{} of {} signature artifact(s) verified",
                    signatures.iter().filter(|s| s.verified).count(),
                    signatures.len()
                ),
                signer: best.signer.clone(),
                issuer: best.issuer.clone(),
                signer_type: best.signer_type,
                signatures,
                artifact_digests: Default::default(),
                retry_after: None,
            };
        }
        let Some(first) = signatures.first() else {
            return Verdict::not_signed();
        };
        Verdict {
            posture: Posture::InvalidSignature,
            reason: first.reason,
            message: bound(&first.message, MAX_MESSAGE),
            signer: None,
            issuer: None,
            signer_type: None,
            signatures,
            artifact_digests: Default::default(),
            retry_after: None,
        }
    }
}

/// Cuts untrusted text to `max` bytes on a char boundary and strips control characters, so it
/// can be shown in a terminal or stored in a CR without being interpreted.
pub fn bound(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_cuts_and_neutralises() {
        assert_eq!(bound("a\u{1b}[31mb", 64), "a [31mb");
        let long = "é".repeat(400);
        let b = bound(&long, 10);
        assert!(b.len() <= 10 + '…'.len_utf8());
        assert!(b.ends_with('…'));
    }

    #[test]
    fn strongest_wins() {
        assert!(Posture::Signed.stronger_than(Posture::InvalidSignature));
        assert!(Posture::InvalidSignature.stronger_than(Posture::Checking));
        assert!(Posture::Checking.stronger_than(Posture::NotSigned));
        assert!(!Posture::Checking.is_resting());
    }
}
