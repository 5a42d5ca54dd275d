//! The legacy cosign signature: one simple-signing layer of the `sha256-<hex>.sig` manifest,
//! with its signature, certificate, chain, Rekor bundle (SET) and RFC 3161 timestamp in layer
//! annotations. Turned into the normal form and verified by [`super::classify`].

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use super::cert::{chain_from_pem, Leaf};
use super::normalize::{Artifact, Content, Material};
use super::record::{Checked, Failure};
use super::tlog::LogEntry;
use crate::core::posture::{Reason, SignatureFormat, SignatureSource};

pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";
const ANN_TIMESTAMP: &str = "dev.sigstore.cosign/rfc3161timestamp";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The `dev.sigstore.cosign/bundle` annotation: a Rekor v1 entry with its SET.
#[derive(Deserialize)]
struct RekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    signed_entry_timestamp: String,
    #[serde(rename = "Payload")]
    payload: RekorPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// The `dev.sigstore.cosign/rfc3161timestamp` annotation.
#[derive(Deserialize)]
struct TimestampAnnotation {
    #[serde(rename = "SignedRFC3161Timestamp")]
    signed: String,
}

/// Verifies one legacy signature layer for `image_digest`.
pub fn classify(
    annotations: &BTreeMap<String, String>,
    payload: &[u8],
    image_digest: &str,
    ctx: &super::Context<'_>,
) -> Checked {
    super::classify::classify(
        normalize(annotations, payload),
        SignatureSource::Tag,
        SignatureFormat::Simplesigning,
        image_digest,
        ctx,
    )
}

/// The layer in normal form.
pub fn normalize(
    annotations: &BTreeMap<String, String>,
    payload: &[u8],
) -> Result<Artifact, Failure> {
    let malformed = |m: String| Failure::new(Reason::Malformed, m);
    let sig_b64 = annotations
        .get(ANN_SIGNATURE)
        .ok_or_else(|| malformed("layer has no signature annotation".into()))?;
    let signature = B64
        .decode(sig_b64.trim())
        .map_err(|e| malformed(format!("signature annotation is not base64: {e}")))?;
    let material = match annotations
        .get(ANN_CERTIFICATE)
        .filter(|c| !c.trim().is_empty())
    {
        Some(c) => Material::Certificate {
            leaf: Box::new(Leaf::from_pem(c.as_bytes()).map_err(malformed)?),
            chain: match annotations.get(ANN_CHAIN).filter(|c| !c.trim().is_empty()) {
                Some(c) => chain_from_pem(c.as_bytes()).map_err(malformed)?,
                None => Vec::new(),
            },
        },
        None => Material::Key,
    };
    let entries = match annotations.get(ANN_BUNDLE) {
        Some(raw) => {
            let b: RekorBundle = serde_json::from_str(raw)
                .map_err(|e| malformed(format!("Rekor bundle annotation is not a bundle: {e}")))?;
            // A log ID that is not hex names no log of the trusted root.
            let log_id = hex::decode(b.payload.log_id.trim()).map_err(|_| {
                Failure::new(
                    Reason::BadTransparencyLogEntry,
                    "Rekor bundle names a log that is not in the trusted root",
                )
            })?;
            let set = B64
                .decode(b.signed_entry_timestamp.trim())
                .map_err(|e| malformed(format!("signed entry timestamp is not base64: {e}")))?;
            vec![LogEntry {
                body_b64: b.payload.body,
                log_index: b.payload.log_index,
                log_id,
                integrated_time: Some(b.payload.integrated_time),
                promise: Some(set),
                proof: None,
            }]
        }
        None => Vec::new(),
    };
    let timestamps = match annotations.get(ANN_TIMESTAMP) {
        Some(raw) => {
            let t: TimestampAnnotation = serde_json::from_str(raw)
                .map_err(|e| malformed(format!("timestamp annotation: {e}")))?;
            vec![B64
                .decode(t.signed.trim())
                .map_err(|e| malformed(format!("timestamp is not base64: {e}")))?]
        }
        None => Vec::new(),
    };
    Ok(Artifact {
        content: Content::SimpleSigning {
            payload: payload.to_vec(),
            signature,
        },
        material,
        entries,
        timestamps,
    })
}
