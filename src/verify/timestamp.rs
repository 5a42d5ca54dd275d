//! RFC 3161 timestamps: the signing time of entries without an integrated time (Rekor v2).
//! Each token must be signed by a timestamp authority of the trusted root (its listed leaf,
//! chaining to its root, at a time within the authority's validity window) over the
//! signature bytes. sigstore-tsa does the CMS and chain work.

use sigstore_types::{SignatureBytes, TimestampToken};

use super::trust::TrustMaterial;
use crate::core::posture::bound;

/// Tokens examined per artifact.
pub const MAX_TIMESTAMPS: usize = 8;
/// A timestamp token is a few kilobytes (a CMS envelope with a certificate or two).
const MAX_TOKEN: usize = 64 << 10;

/// The times the tokens vouch for (unix seconds), each verified over `signature`; any token
/// that does not verify fails them all.
pub fn verify(
    tokens: &[Vec<u8>],
    signature: &[u8],
    trust: &TrustMaterial,
) -> Result<Vec<i64>, String> {
    if tokens.len() > MAX_TIMESTAMPS {
        return Err(format!("more than {MAX_TIMESTAMPS} timestamps"));
    }
    if !tokens.is_empty() && trust.tsas.is_empty() {
        return Err("the trusted root has no timestamp authority".into());
    }
    let signature = SignatureBytes::from_bytes(signature);
    tokens
        .iter()
        .map(|token| {
            if token.len() > MAX_TOKEN {
                return Err("timestamp token is too large".to_string());
            }
            let token = TimestampToken::from_bytes(token);
            let mut last = None;
            for tsa in &trust.tsas {
                match sigstore_tsa::verify_timestamp_for_authority(&token, &signature, tsa) {
                    Ok(t) => return Ok(t.as_second()),
                    Err(e) => last = Some(e),
                }
            }
            Err(match last {
                Some(e) => format!(
                    "timestamp does not verify with a trusted timestamp authority: {}",
                    bound(&e.to_string(), 200)
                ),
                None => "no timestamp authority".into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_tokens_and_missing_authorities_fail() {
        let trust = TrustMaterial::empty();
        assert!(verify(&[], b"sig", &trust).unwrap().is_empty());
        assert!(verify(&[vec![0x30, 0x03, 0x02, 0x01, 0x00]], b"sig", &trust).is_err());
        assert!(verify(&vec![Vec::new(); MAX_TIMESTAMPS + 1], b"sig", &trust).is_err());
    }
}
