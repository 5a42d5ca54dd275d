//! The Sigstore bundle (v0.1–v0.3) that cosign v3 attaches as an OCI referrer: a DSSE envelope
//! over an in-toto statement whose subject is the image digest, with the certificate (or
//! nothing, for a key), the log entries (Rekor v1: SET and inclusion proof; Rekor v2: proof
//! and checkpoint only) and RFC 3161 timestamps in its verification material. Turned into the
//! normal form and verified by [`super::classify`].

use base64::Engine as _;
use serde::Deserialize;

use super::cert::Leaf;
use super::classify::kind_named;
use super::normalize::{Artifact, Content, Material, MAX_ENTRIES};
use super::record::{Checked, Context, Failure};
use super::timestamp::MAX_TIMESTAMPS;
use super::tlog::{InclusionProof, LogEntry};
use crate::core::posture::{bound, Reason, SignatureFormat, SignatureSource};

pub use super::classify::SIGN_PREDICATE;

pub const BUNDLE_MEDIA_TYPES: &[&str] = &[
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];
pub const PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn is_bundle_type(media_type: &str) -> bool {
    BUNDLE_MEDIA_TYPES.contains(&media_type)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigstoreBundle {
    media_type: String,
    verification_material: RawMaterial,
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    certificate: Option<RawBytes>,
    x509_certificate_chain: Option<Chain>,
    public_key: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<TlogEntry>,
    timestamp_verification_data: Option<TimestampData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct Chain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntry {
    log_index: Int64,
    log_id: LogId,
    kind_version: Option<KindVersion>,
    integrated_time: Option<Int64>,
    inclusion_promise: Option<Promise>,
    inclusion_proof: Option<Proof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogId {
    key_id: String,
}

#[derive(Deserialize)]
struct KindVersion {
    kind: String,
    #[serde(default)]
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Promise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Proof {
    log_index: Int64,
    #[serde(default)]
    root_hash: String,
    tree_size: Int64,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: Option<CheckpointEnvelope>,
}

#[derive(Deserialize)]
struct CheckpointEnvelope {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimestampData {
    #[serde(default)]
    rfc3161_timestamps: Vec<Rfc3161>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rfc3161 {
    signed_timestamp: String,
}

/// Protobuf-JSON int64: a string, though some writers emit a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int64 {
    Str(String),
    Num(i64),
}

impl Int64 {
    fn get(&self) -> Result<i64, Failure> {
        match self {
            Int64::Num(n) => Ok(*n),
            Int64::Str(s) => s.parse().map_err(|_| {
                Failure::new(
                    Reason::Malformed,
                    format!("{:?} is not an integer", bound(s, 24)),
                )
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// Verifies one bundle referrer for `image_digest`.
pub fn classify(raw: &[u8], image_digest: &str, ctx: &Context<'_>) -> Checked {
    super::classify::classify(
        normalize(raw),
        SignatureSource::Referrer,
        SignatureFormat::Bundle,
        image_digest,
        ctx,
    )
}

fn decode(what: &str, s: &str) -> Result<Vec<u8>, Failure> {
    B64.decode(s.trim())
        .map_err(|e| Failure::new(Reason::Malformed, format!("{what} is not base64: {e}")))
}

/// The bundle in normal form.
pub fn normalize(raw: &[u8]) -> Result<Artifact, Failure> {
    let malformed = |m: String| Failure::new(Reason::Malformed, m);
    let unsupported = |m: String| Failure::new(Reason::UnsupportedFormat, m);

    let bundle: SigstoreBundle =
        serde_json::from_slice(raw).map_err(|e| malformed(format!("bundle: {e}")))?;
    if !is_bundle_type(&bundle.media_type) {
        return Err(unsupported(format!(
            "bundle media type {:?}",
            bound(&bundle.media_type, 80)
        )));
    }
    let Some(envelope) = bundle.dsse_envelope else {
        return Err(unsupported(if bundle.message_signature.is_some() {
            "message-signature bundles are not image signatures".into()
        } else {
            "bundle has no DSSE envelope".into()
        }));
    };
    let payload = decode("envelope payload", &envelope.payload)?;
    let sig = envelope
        .signatures
        .first()
        .ok_or_else(|| malformed("envelope has no signature".into()))?;
    let signature = decode("envelope signature", &sig.sig)?;

    let m = bundle.verification_material;
    let material = match (m.certificate, m.x509_certificate_chain) {
        (Some(c), _) => Material::Certificate {
            leaf: Box::new(
                Leaf::from_der(&decode("certificate", &c.raw_bytes)?).map_err(malformed)?,
            ),
            chain: Vec::new(),
        },
        (None, Some(chain)) => {
            let mut certs = chain.certificates.iter();
            let leaf = certs
                .next()
                .ok_or_else(|| malformed("empty certificate chain".into()))?;
            Material::Certificate {
                leaf: Box::new(
                    Leaf::from_der(&decode("certificate", &leaf.raw_bytes)?).map_err(malformed)?,
                ),
                chain: certs
                    .take(8)
                    .map(|c| decode("chain certificate", &c.raw_bytes))
                    .collect::<Result<_, _>>()?,
            }
        }
        (None, None) if m.public_key.is_some() => Material::Key,
        (None, None) => return Err(malformed("bundle has no certificate or key".into())),
    };

    if m.tlog_entries.len() > MAX_ENTRIES {
        return Err(malformed(format!("more than {MAX_ENTRIES} log entries")));
    }
    let mut entries = Vec::new();
    for e in &m.tlog_entries {
        let entry = LogEntry {
            body_b64: e.canonicalized_body.clone(),
            log_index: e.log_index.get()?,
            log_id: decode("log ID", &e.log_id.key_id)?,
            // Protobuf-JSON omits a zero; Rekor v2 entries have no integrated time.
            integrated_time: e
                .integrated_time
                .as_ref()
                .map(Int64::get)
                .transpose()?
                .filter(|t| *t != 0),
            promise: e
                .inclusion_promise
                .as_ref()
                .map(|p| decode("signed entry timestamp", &p.signed_entry_timestamp))
                .transpose()?,
            proof: e.inclusion_proof.as_ref().map(proof).transpose()?,
        };
        // The kind the bundle names must be the kind the log recorded.
        if let Some(kv) = &e.kind_version {
            let Some(named) = kind_named(&kv.kind, &kv.version) else {
                return Err(Failure::new(
                    Reason::BadTransparencyLogEntry,
                    format!(
                        "unsupported log entry kind {:?} version {:?}",
                        bound(&kv.kind, 32),
                        bound(&kv.version, 16)
                    ),
                ));
            };
            if entry.body().is_ok_and(|b| b.kind() != named) {
                return Err(Failure::new(
                    Reason::BadTransparencyLogEntry,
                    format!(
                        "bundle names a {:?} {:?} entry the log did not record",
                        bound(&kv.kind, 32),
                        bound(&kv.version, 16)
                    ),
                ));
            }
        }
        entries.push(entry);
    }

    let timestamps = m
        .timestamp_verification_data
        .map(|t| t.rfc3161_timestamps)
        .unwrap_or_default();
    if timestamps.len() > MAX_TIMESTAMPS {
        return Err(malformed(format!("more than {MAX_TIMESTAMPS} timestamps")));
    }
    let timestamps = timestamps
        .iter()
        .map(|t| decode("RFC 3161 timestamp", &t.signed_timestamp))
        .collect::<Result<_, _>>()?;

    Ok(Artifact {
        content: Content::Dsse {
            payload_type: envelope.payload_type,
            payload,
            signature,
        },
        material,
        entries,
        timestamps,
    })
}

fn proof(p: &Proof) -> Result<InclusionProof, Failure> {
    if p.hashes.len() > 64 {
        return Err(Failure::new(
            Reason::BadTransparencyLogEntry,
            "inclusion proof is too long",
        ));
    }
    Ok(InclusionProof {
        log_index: p.log_index.get()?,
        root_hash: decode("proof root hash", &p.root_hash)?,
        tree_size: p.tree_size.get()?,
        hashes: p
            .hashes
            .iter()
            .map(|h| decode("proof hash", h))
            .collect::<Result<_, _>>()?,
        checkpoint: p.checkpoint.as_ref().map(|c| c.envelope.clone()),
    })
}
