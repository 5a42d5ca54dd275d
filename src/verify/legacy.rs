//! The legacy cosign signature: one simple-signing layer of the `sha256-<hex>.sig` manifest,
//! with its signature, certificate, chain and Rekor bundle in layer annotations.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};
use sigstore::cosign::bundle::Bundle as RekorBundle;
use sigstore::crypto::Signature;

use super::cert::{chain_from_pem, Leaf};
use super::rekor::{pem_holds_der, Body, LogEntry};
use super::{Checked, Failure};
use crate::posture::{Reason, SignatureFormat, SignatureSource};

pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";

/// The part of the simple-signing payload we rely on.
#[derive(serde::Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(serde::Deserialize)]
struct Critical {
    image: CriticalImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(serde::Deserialize)]
struct CriticalImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// Verifies one legacy signature layer for `image_digest`.
pub fn classify(
    annotations: &BTreeMap<String, String>,
    payload: &[u8],
    image_digest: &str,
    ctx: &super::Context<'_>,
) -> Checked {
    let mut checked = Checked::new(SignatureSource::Tag, SignatureFormat::Simplesigning);
    let result = verify(annotations, payload, image_digest, ctx, &mut checked);
    checked.finish(result)
}

fn verify(
    annotations: &BTreeMap<String, String>,
    payload: &[u8],
    image_digest: &str,
    ctx: &super::Context<'_>,
    out: &mut Checked,
) -> Result<(), Failure> {
    let malformed = |m: String| Failure::new(Reason::Malformed, m);
    let sig_b64 = annotations
        .get(ANN_SIGNATURE)
        .ok_or_else(|| malformed("layer has no signature annotation".into()))?;
    let signature = Signature::Base64Encoded(sig_b64.as_bytes())
        .decode_bytes()
        .map_err(|e| malformed(format!("signature annotation is not base64: {e}")))?;
    let leaf = annotations
        .get(ANN_CERTIFICATE)
        .filter(|c| !c.trim().is_empty())
        .map(|c| Leaf::from_pem(c.as_bytes()).map_err(malformed))
        .transpose()?;
    let chain = match annotations.get(ANN_CHAIN).filter(|c| !c.trim().is_empty()) {
        Some(c) => chain_from_pem(c.as_bytes()).map_err(malformed)?,
        None => Vec::new(),
    };
    let entry = annotations
        .get(ANN_BUNDLE)
        .map(|raw| {
            serde_json::from_str::<RekorBundle>(raw)
                .map(|b| LogEntry {
                    body: b.payload.body,
                    integrated_time: b.payload.integrated_time,
                    log_index: b.payload.log_index,
                    log_id: b.payload.log_id.to_ascii_lowercase(),
                    signed_entry_timestamp: b.signed_entry_timestamp,
                })
                .map_err(|e| malformed(format!("Rekor bundle annotation is not a bundle: {e}")))
        })
        .transpose()?;
    if let Some(e) = &entry {
        out.rekor_log_index = Some(e.log_index);
        out.integrated_time = Some(e.integrated_time);
    }

    // 1. The signature over the payload, with the certified key, a configured key or the key
    //    Rekor logged (whichever this signature claims).
    let logged = entry.as_ref().map(|e| e.body()).transpose();
    let signer = match &leaf {
        Some(leaf) => {
            let key = leaf.key().map_err(malformed)?;
            key.verify_signature(Signature::Raw(&signature), payload)
                .map_err(|_| {
                    Failure::new(
                        Reason::BadSignature,
                        "signature does not verify with the certificate key",
                    )
                })?;
            super::Signer::Certificate
        }
        None => {
            let logged_key = match logged.as_ref() {
                Ok(Some(Body::HashedRekord { public_key_pem, .. })) => {
                    Some(public_key_pem.as_slice())
                }
                _ => None,
            };
            ctx.keys.signer_for(&signature, payload, logged_key)?
        }
    };

    // 2. The payload must name this image.
    let ss: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| malformed(format!("payload is not simple-signing JSON: {e}")))?;
    if !ss
        .critical
        .kind
        .eq_ignore_ascii_case("cosign container image signature")
    {
        return Err(malformed(format!(
            "unexpected payload type {:?}",
            crate::posture::bound(&ss.critical.kind, 64)
        )));
    }
    if ss.critical.image.digest != image_digest {
        return Err(Failure::new(
            Reason::DigestMismatch,
            format!(
                "signature is for {}, not this image",
                crate::posture::bound(&ss.critical.image.digest, 80)
            ),
        ));
    }

    // 3. The transparency log: promise signed by a trusted log, entry describing this signature.
    let tlog_bad = |m: String| Failure::new(Reason::BadTransparencyLogEntry, m);
    let entry = match (entry, &signer) {
        (Some(e), _) => Some(e),
        (None, super::Signer::Certificate) => {
            return Err(tlog_bad("keyless signature has no Rekor bundle".into()))
        }
        (None, _) => None,
    };
    if let Some(entry) = &entry {
        entry.verify_promise(ctx.trust).map_err(tlog_bad)?;
        match logged.map_err(tlog_bad)? {
            Some(Body::HashedRekord {
                sha256,
                signature: logged_sig,
                public_key_pem,
            }) => {
                if sha256 != hex::encode(Sha256::digest(payload)) {
                    return Err(tlog_bad("logged hash is not the payload's".into()));
                }
                if logged_sig != signature {
                    return Err(tlog_bad("logged signature is not this signature".into()));
                }
                let same_key = match (&leaf, &signer) {
                    (Some(leaf), _) => pem_holds_der(&public_key_pem, leaf.der()),
                    (None, super::Signer::Key { spki, .. }) => pem_holds_der(&public_key_pem, spki),
                    (None, super::Signer::Certificate) => false,
                };
                if !same_key {
                    return Err(tlog_bad("logged key is not the signing key".into()));
                }
            }
            _ => return Err(tlog_bad("log entry is not a hashedrekord".into())),
        }
    }

    // 4. Identity.
    match signer {
        super::Signer::Certificate => {
            let (Some(leaf), Some(entry)) = (leaf, entry) else {
                return Err(Failure::new(
                    Reason::Malformed,
                    "keyless signature without a certificate or a log entry",
                ));
            };
            leaf.verify_chain(ctx.trust, &chain, entry.integrated_time)
                .map_err(|m| Failure::new(Reason::UntrustedCertificate, m))?;
            let (signer, issuer) = leaf
                .identity()
                .map_err(|m| Failure::new(Reason::UntrustedCertificate, m))?;
            out.keyless(signer, issuer);
        }
        super::Signer::Key { name, .. } => out.key(name),
    }
    Ok(())
}
