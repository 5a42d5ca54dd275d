//! The trust root: Fulcio CA certificates, transparency logs (Rekor v1 and v2) and RFC 3161
//! timestamp authorities, from a Sigstore `trusted_root.json` (a file, or the public-good one
//! through TUF). The sigstore crate fetches and checks the TUF target; the JSON itself is read
//! here because the sigstore crate keeps the timestamp authorities to itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use serde::Deserialize;
use sigstore::crypto::CosignVerificationKey;
use sigstore::trust::sigstore::SigstoreTrustRoot;
use sigstore_types::{DerCertificate, TimeRange, TsaAuthority};

use super::cert::ChainCache;
use super::TrustSource;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// A trusted root larger than this is not a trusted root.
const MAX_TRUSTED_ROOT: u64 = 4 << 20;

/// One transparency log the trust root names.
pub struct Log {
    pub key: CosignVerificationKey,
    /// The key's SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
    /// The log ID: SHA-256 of the key (Rekor v1) or the C2SP checkpoint key ID (Rekor v2).
    pub id: Vec<u8>,
    /// When the key may be used (unix seconds); `None` bounds are open.
    pub valid_from: Option<i64>,
    pub valid_to: Option<i64>,
}

impl Log {
    /// Whether the key was in service at `time` (unix seconds).
    pub fn valid_at(&self, time: i64) -> bool {
        self.valid_from.is_none_or(|s| s <= time) && self.valid_to.is_none_or(|e| time <= e)
    }
}

/// Key material every verification is anchored on.
pub struct TrustMaterial {
    /// Every CA certificate of the trusted root; each is an anchor, as in sigstore-rs.
    pub anchors: Vec<TrustAnchor<'static>>,
    /// The same certificates as DER, offered as intermediates when building a path.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// Transparency logs by log ID (lowercase hex).
    pub logs: BTreeMap<String, Log>,
    /// RFC 3161 timestamp authorities (leaf, intermediates, root and validity window).
    pub tsas: Vec<TsaAuthority>,
    /// Certificate paths already verified against this trust root.
    pub chains: ChainCache,
}

impl std::fmt::Debug for TrustMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustMaterial")
            .field("ca_certs", &self.ca_certs.len())
            .field("logs", &self.logs.keys().collect::<Vec<_>>())
            .field("tsas", &self.tsas.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read trusted root {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid trusted root: {0}")]
    Invalid(String),
    #[error("Sigstore TUF repository unavailable: {0}")]
    Unavailable(String),
}

/// The parts of `trusted_root.json` (protobuf-JSON) the verifier uses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawAuthority>,
    #[serde(default)]
    timestamp_authorities: Vec<RawAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    public_key: Option<RawKey>,
    log_id: Option<RawLogId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    raw_bytes: Option<String>,
    valid_for: Option<TimeRange>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthority {
    cert_chain: Option<RawChain>,
    valid_for: Option<TimeRange>,
}

#[derive(Deserialize)]
struct RawChain {
    #[serde(default)]
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

impl TrustMaterial {
    pub async fn load(source: &TrustSource) -> Result<Self, TrustError> {
        match source {
            TrustSource::File(path) => Self::from_json(&read_bounded(path)?)
                .map_err(|e| TrustError::Invalid(format!("{}: {e}", path.display()))),
            TrustSource::PublicGood { cache_dir } => {
                // The TUF client writes the target it verified into the cache directory; the
                // trust root is read from there (a private directory when none is given).
                let dir = cache_dir.clone().unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("imageposture-tuf-{}", std::process::id()))
                });
                let _ = std::fs::create_dir_all(&dir);
                SigstoreTrustRoot::new(Some(&dir))
                    .await
                    .map_err(|e| TrustError::Unavailable(e.to_string()))?;
                let path = dir.join("trusted_root.json");
                Self::from_json(&read_bounded(&path)?)
                    .map_err(|e| TrustError::Invalid(e.to_string()))
            }
        }
    }

    /// From the bytes of a `trusted_root.json`.
    pub fn from_json(json: &[u8]) -> Result<Self, TrustError> {
        let invalid = |m: String| TrustError::Invalid(m);
        let root: RawRoot = serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
        let decode = |what: &str, s: &str| {
            B64.decode(s.trim())
                .map_err(|e| invalid(format!("{what} is not base64: {e}")))
        };

        let mut ca_certs = Vec::new();
        for ca in &root.certificate_authorities {
            for c in ca.cert_chain.iter().flat_map(|c| &c.certificates) {
                ca_certs.push(CertificateDer::from(decode(
                    "CA certificate",
                    &c.raw_bytes,
                )?));
            }
        }
        if ca_certs.is_empty() {
            return Err(invalid("no certificate authority".into()));
        }
        let anchors = ca_certs
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| invalid(format!("CA certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut logs = BTreeMap::new();
        for log in &root.tlogs {
            let (Some(key), Some(id)) = (&log.public_key, &log.log_id) else {
                continue;
            };
            let Some(raw) = &key.raw_bytes else { continue };
            let spki = decode("log key", raw)?;
            let id = decode("log ID", &id.key_id)?;
            let key_hex = hex::encode(&id);
            let verifier = CosignVerificationKey::try_from_der(&spki)
                .map_err(|e| invalid(format!("log key {key_hex}: {e}")))?;
            let (valid_from, valid_to) = window(key.valid_for.as_ref());
            logs.insert(
                key_hex,
                Log {
                    key: verifier,
                    spki,
                    id,
                    valid_from,
                    valid_to,
                },
            );
        }
        if logs.is_empty() {
            return Err(invalid("no transparency log keys".into()));
        }

        let mut tsas = Vec::new();
        for tsa in &root.timestamp_authorities {
            let certs = tsa
                .cert_chain
                .iter()
                .flat_map(|c| &c.certificates)
                .map(|c| decode("timestamp authority certificate", &c.raw_bytes))
                .collect::<Result<Vec<_>, _>>()?;
            // Leaf first, root last; a one-certificate chain is its own root.
            let (Some(leaf), Some(root_cert)) = (certs.first(), certs.last()) else {
                continue;
            };
            let intermediates = certs
                .get(1..certs.len().saturating_sub(1))
                .unwrap_or_default()
                .iter()
                .map(|c| DerCertificate::from_bytes(c))
                .collect();
            tsas.push(TsaAuthority::new(
                DerCertificate::from_bytes(leaf),
                intermediates,
                DerCertificate::from_bytes(root_cert),
                tsa.valid_for,
            ));
        }

        Ok(TrustMaterial {
            anchors,
            ca_certs,
            logs,
            tsas,
            chains: ChainCache::default(),
        })
    }

    /// Trusts nothing: every verification fails (for fuzzing parsers without a root).
    pub fn empty() -> Self {
        TrustMaterial {
            anchors: Vec::new(),
            ca_certs: Vec::new(),
            logs: BTreeMap::new(),
            tsas: Vec::new(),
            chains: ChainCache::default(),
        }
    }

    /// The log whose ID is `id` (raw bytes).
    pub fn log(&self, id: &[u8]) -> Option<&Log> {
        self.logs.get(&hex::encode(id))
    }
}

fn window(range: Option<&TimeRange>) -> (Option<i64>, Option<i64>) {
    match range {
        Some(r) => (Some(r.start.as_second()), r.end.map(|e| e.as_second())),
        None => (None, None),
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TrustError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| TrustError::Read(path.to_path_buf(), e))?;
    let mut data = Vec::new();
    file.take(MAX_TRUSTED_ROOT)
        .read_to_end(&mut data)
        .map_err(|e| TrustError::Read(path.to_path_buf(), e))?;
    Ok(data)
}

/// The trust root, loaded once; the TUF one is retried (at most once a minute) until it loads.
pub(super) struct TrustCell {
    pub(super) source: TrustSource,
    pub(super) state: tokio::sync::Mutex<TrustState>,
}

#[derive(Default)]
pub(super) struct TrustState {
    pub(super) loaded: Option<Arc<TrustMaterial>>,
    /// The last failure and when it happened.
    pub(super) failed: Option<(Instant, String)>,
}

impl TrustCell {
    pub(super) async fn get(&self) -> Result<Arc<TrustMaterial>, String> {
        let mut state = self.state.lock().await;
        if let Some(t) = &state.loaded {
            return Ok(t.clone());
        }
        if let Some((at, why)) = &state.failed {
            if at.elapsed() < Duration::from_secs(60) {
                return Err(why.clone());
            }
        }
        match TrustMaterial::load(&self.source).await {
            Ok(t) => {
                let t = Arc::new(t);
                *state = TrustState {
                    loaded: Some(t.clone()),
                    failed: None,
                };
                Ok(t)
            }
            Err(e) => {
                state.failed = Some((Instant::now(), e.to_string()));
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_roots_without_a_ca_or_a_log() {
        assert!(TrustMaterial::from_json(b"{}").is_err());
        assert!(TrustMaterial::from_json(b"not json").is_err());
    }
}
