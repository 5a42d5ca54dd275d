//! What a verifier is configured with, and why setting it up can fail.

use std::path::PathBuf;
use std::time::Duration;

use super::trust::TrustError;

/// Resource bounds for one observation.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Wall-clock budget for one image, all requests included.
    pub budget: Duration,
    pub max_manifest_bytes: usize,
    pub max_blob_bytes: usize,
    /// Signature artifacts examined per image; more is reported, not processed.
    pub max_signatures: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            budget: Duration::from_secs(30),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 4 << 20,
            max_signatures: 16,
        }
    }
}

/// Where the Fulcio CAs and Rekor keys come from.
#[derive(Clone, Debug)]
pub enum TrustSource {
    /// Sigstore public-good instance via TUF, cached in the directory if given.
    PublicGood { cache_dir: Option<PathBuf> },
    /// A Sigstore `trusted_root.json`.
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct VerifierConfig {
    pub trust: TrustSource,
    /// How often the trust root is loaded again while the process runs (a file is re-read;
    /// the TUF one fetched); a failed refresh keeps the last good root.
    pub trust_refresh: Duration,
    /// `NAME=FILE` public keys (PEM) that name key-based signers.
    pub trusted_keys: Vec<(String, PathBuf)>,
    /// A docker `config.json` with registry credentials (`auths`, `credHelpers`, `credsStore`).
    pub registry_config: Option<PathBuf>,
    /// Where `docker-credential-*` helpers are found (`PATH` when `None`).
    pub credential_helper_dir: Option<PathBuf>,
    /// A kubelet `CredentialProviderConfig` and the directory of its plugins.
    pub credential_provider_config: Option<PathBuf>,
    pub credential_provider_bin_dir: Option<PathBuf>,
    /// `host:port` registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("registry config {path}: {why}")]
    RegistryConfig { path: PathBuf, why: String },
    #[error("image credential provider config {path}: {why}")]
    CredentialProviders { path: PathBuf, why: String },
    #[error("trusted key {name}: {why}")]
    TrustedKey { name: String, why: String },
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("HTTP client: {0}")]
    Http(String),
}
