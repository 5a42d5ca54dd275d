//! Key-based signers: configured `NAME=FILE` keys, or the key Rekor logged for the signature
//! (named by its `sha256:` SPKI fingerprint, since nothing else names it).

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};

use super::{Failure, SetupError};
use crate::core::posture::Reason;

/// Who produced a verified signature.
pub(crate) enum Signer {
    /// The key certified by the (still to be checked) leaf certificate.
    Certificate,
    /// A public key: a configured name or its fingerprint, and its SPKI DER.
    Key { name: String, spki: Vec<u8> },
}

struct NamedKey {
    name: String,
    spki: Vec<u8>,
    key: CosignVerificationKey,
}

/// The configured trusted keys.
#[derive(Default)]
pub struct KeyRing {
    keys: Vec<NamedKey>,
}

impl KeyRing {
    pub fn load(named: &[(String, PathBuf)]) -> Result<Self, SetupError> {
        let mut keys = Vec::new();
        for (name, path) in named {
            let err = |why: String| SetupError::TrustedKey {
                name: name.clone(),
                why,
            };
            let data = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
            let (key, spki) = parse_public_key(&data).map_err(err)?;
            keys.push(NamedKey {
                name: name.clone(),
                spki,
                key,
            });
        }
        Ok(KeyRing { keys })
    }

    /// Finds the key that made `signature` over `message`: a configured key first, then the
    /// key a log entry recorded (SPKI DER; the caller then verifies that entry).
    pub(crate) fn signer_for(
        &self,
        signature: &[u8],
        message: &[u8],
        logged_spki: Option<&[u8]>,
    ) -> Result<Signer, Failure> {
        for k in &self.keys {
            if k.key
                .verify_signature(Signature::Raw(signature), message)
                .is_ok()
            {
                return Ok(Signer::Key {
                    name: k.name.clone(),
                    spki: k.spki.clone(),
                });
            }
        }
        let Some(spki) = logged_spki else {
            return Err(Failure::new(
                Reason::UnverifiableKey,
                "no certificate, no Rekor entry and no configured key verifies this signature",
            ));
        };
        let key = CosignVerificationKey::try_from_der(spki).map_err(|e| {
            Failure::new(Reason::BadTransparencyLogEntry, format!("logged key: {e}"))
        })?;
        key.verify_signature(Signature::Raw(signature), message)
            .map_err(|_| {
                Failure::new(
                    Reason::BadSignature,
                    "signature does not verify with the logged key",
                )
            })?;
        // A configured key that fails to verify must not be impersonated by its fingerprint.
        let name = self
            .keys
            .iter()
            .find(|k| k.spki == spki)
            .map(|k| k.name.clone())
            .unwrap_or_else(|| fingerprint(spki));
        Ok(Signer::Key {
            name,
            spki: spki.to_vec(),
        })
    }
}

/// `sha256:<hex>` of a key's SubjectPublicKeyInfo DER.
pub fn fingerprint(spki: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(spki)))
}

fn parse_public_key(pem_bytes: &[u8]) -> Result<(CosignVerificationKey, Vec<u8>), String> {
    let p = pem::parse(pem_bytes).map_err(|e| format!("not PEM: {e}"))?;
    if p.tag() != "PUBLIC KEY" {
        return Err(format!(
            "PEM block is {:?}, not PUBLIC KEY",
            crate::core::posture::bound(p.tag(), 32)
        ));
    }
    let key = CosignVerificationKey::try_from_der(p.contents()).map_err(|e| e.to_string())?;
    Ok((key, p.contents().to_vec()))
}
