//! The trust root: Fulcio CA certificates and Rekor log keys, from a Sigstore
//! `trusted_root.json` or the public-good instance via TUF (both parsed by the sigstore crate).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rustls_pki_types::{CertificateDer, TrustAnchor};
use sigstore::crypto::CosignVerificationKey;
use sigstore::trust::sigstore::SigstoreTrustRoot;
use sigstore::trust::TrustRoot as _;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TrustSource;

/// Key material every verification is anchored on.
pub struct TrustMaterial {
    /// Every CA certificate of the trusted root; each is an anchor, as in sigstore-rs.
    pub anchors: Vec<TrustAnchor<'static>>,
    /// The same certificates as DER, offered as intermediates when building a path.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// Rekor public keys by log ID (lowercase hex SHA-256 of the key's SPKI).
    pub rekor_keys: BTreeMap<String, CosignVerificationKey>,
}

impl std::fmt::Debug for TrustMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustMaterial")
            .field("ca_certs", &self.ca_certs.len())
            .field("rekor_keys", &self.rekor_keys.keys().collect::<Vec<_>>())
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

impl TrustMaterial {
    pub async fn load(source: &TrustSource) -> Result<Self, TrustError> {
        let root = match source {
            TrustSource::File(path) => {
                let data = std::fs::read(path).map_err(|e| TrustError::Read(path.clone(), e))?;
                SigstoreTrustRoot::from_trusted_root_json_unchecked(&data)
                    .map_err(|e| TrustError::Invalid(format!("{}: {e}", path.display())))?
            }
            TrustSource::PublicGood { cache_dir } => {
                if let Some(dir) = cache_dir {
                    let _ = std::fs::create_dir_all(dir);
                }
                SigstoreTrustRoot::new(cache_dir.as_deref())
                    .await
                    .map_err(|e| TrustError::Unavailable(e.to_string()))?
            }
        };
        Self::from_root(&root)
    }

    pub(crate) fn from_root(root: &SigstoreTrustRoot) -> Result<Self, TrustError> {
        let ca_certs: Vec<CertificateDer<'static>> = root
            .fulcio_certs()
            .map_err(|e| TrustError::Invalid(e.to_string()))?
            .into_iter()
            .map(|c| c.into_owned())
            .collect();
        let anchors = ca_certs
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| TrustError::Invalid(format!("CA certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut rekor_keys = BTreeMap::new();
        for (id, der) in root
            .rekor_keys()
            .map_err(|e| TrustError::Invalid(e.to_string()))?
        {
            let key = CosignVerificationKey::try_from_der(der)
                .map_err(|e| TrustError::Invalid(format!("Rekor key {id}: {e}")))?;
            rekor_keys.insert(id, key);
        }
        if rekor_keys.is_empty() {
            return Err(TrustError::Invalid("no Rekor log keys".into()));
        }
        Ok(TrustMaterial {
            anchors,
            ca_certs,
            rekor_keys,
        })
    }
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
