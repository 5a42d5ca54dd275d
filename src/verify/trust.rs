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
use sha2::{Digest as _, Sha256};
use sigstore::crypto::CosignVerificationKey;
use sigstore::trust::sigstore::SigstoreTrustRoot;
use sigstore_types::{DerCertificate, TimeRange, TsaAuthority};

use super::chains::ChainCache;
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
    /// The checkpoint origin the log must sign under: the host of its `baseUrl`, as
    /// sigstore-go derives it (no scheme, port or path).
    pub origin: Option<String>,
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
    /// `sha256:<hex>` of the `trusted_root.json` bytes: which root judged a verdict.
    pub digest: String,
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
    /// The TUF client reached no repository and was left with the root metadata embedded in
    /// the sigstore crate, which has expired (the client reports only "root metadata is
    /// expired").
    #[error(
        "the Sigstore public-good TUF repository could not be reached (the TUF client said: {0}); \
         the TUF root embedded in this build has expired and cannot be used alone, so no trust \
         root could be verified. Allow HTTPS to the Sigstore TUF repository, or, air-gapped, give \
         the trust root as a file with --trusted-root FILE (a trusted_root.json, e.g. from \
         `cosign trusted-root create` or a TUF mirror you trust)"
    )]
    TufUnreachable(String),
}

/// Reads the sigstore crate's TUF failure by its type. The TUF client treats a root update it
/// could not download as "no newer root" and then judges the root it has, the one embedded in
/// the crate: offline that surfaces as `ExpiredMetadata { role: Root }` once the embedded
/// root is past its expiry, or as a transport error while it is not.
fn tuf_error(e: sigstore::errors::SigstoreError) -> TrustError {
    use sigstore::errors::SigstoreError;
    use tough::error::Error as Tuf;
    let unreachable = match &e {
        SigstoreError::TufError(t) => matches!(
            t.as_ref(),
            Tuf::ExpiredMetadata {
                role: tough::schema::RoleType::Root,
                ..
            } | Tuf::Transport { .. }
        ),
        _ => false,
    };
    if unreachable {
        TrustError::TufUnreachable(e.to_string())
    } else {
        TrustError::Unavailable(e.to_string())
    }
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
    #[serde(default)]
    base_url: Option<String>,
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
                    .map_err(tuf_error)?;
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
                    origin: log.base_url.as_deref().and_then(url_host),
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
            digest: format!("sha256:{}", hex::encode(Sha256::digest(json))),
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
            digest: String::new(),
        }
    }

    /// The log whose ID is `id` (raw bytes).
    pub fn log(&self, id: &[u8]) -> Option<&Log> {
        self.logs.get(&hex::encode(id))
    }
}

/// The host of a URL without brackets or port, as Go's `url.URL.Hostname()` gives it.
fn url_host(base_url: &str) -> Option<String> {
    let url = url::Url::parse(base_url.trim()).ok()?;
    match url.host()? {
        url::Host::Domain(d) => Some(d.to_string()),
        url::Host::Ipv4(a) => Some(a.to_string()),
        url::Host::Ipv6(a) => Some(a.to_string()),
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

/// How often the trust root is loaded again while the process runs (`--trust-root-refresh`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// On-demand refreshes of the TUF trust root (an entry naming an unknown log, a certificate
/// chaining to no known CA) are at most this frequent; a root loaded this recently is itself
/// the confirmation that the log or CA is unknown.
pub const TUF_REFRESH_GAP: Duration = Duration::from_secs(600);
/// While no trust root has ever loaded, a load is retried at most this often.
const FIRST_LOAD_RETRY: Duration = Duration::from_secs(60);

/// A trust root in use, and when it was last loaded or found unchanged.
#[derive(Clone)]
pub(super) struct Loaded {
    pub(super) material: Arc<TrustMaterial>,
    pub(super) at: Instant,
}

/// The trust root behind a swappable handle: verifications take the current one (an `Arc`,
/// never blocked by a refresh in progress); a refresh swaps in a new one, or keeps the last
/// good one when it fails. Periodic refreshes run in the background; on-demand ones
/// ([`TrustCell::confirm`]) are rate-limited by `min_gap`.
pub(super) struct TrustCell {
    source: TrustSource,
    /// Periodic refresh interval.
    every: Duration,
    /// Least time between two on-demand loads: [`TUF_REFRESH_GAP`] for the TUF root; zero
    /// for a file, which is re-read (cheaply, and unparsed when unchanged) on every demand.
    min_gap: Duration,
    current: std::sync::RwLock<Option<Loaded>>,
    /// Serializes loads; remembers the last attempt and why it failed.
    attempts: tokio::sync::Mutex<Attempts>,
    /// A background periodic refresh is running.
    refreshing: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Attempts {
    last: Option<Instant>,
    failed: Option<String>,
}

/// What an on-demand refresh says about a log or CA the trust root in use did not know.
#[derive(Debug)]
pub(super) enum Confirmation {
    /// The root in use is current (loaded within the gap, or loaded again and unchanged):
    /// what it does not know is unknown.
    Unknown,
    /// A newer root: verify again with it.
    Newer(Arc<TrustMaterial>),
    /// No current root could be had; the last good one is kept. Why.
    Unavailable(String),
}

impl TrustCell {
    pub(super) fn new(source: TrustSource, every: Duration) -> Self {
        let min_gap = match source {
            TrustSource::File(_) => Duration::ZERO,
            TrustSource::PublicGood { .. } => TUF_REFRESH_GAP,
        };
        TrustCell {
            source,
            every,
            min_gap,
            current: std::sync::RwLock::new(None),
            attempts: tokio::sync::Mutex::default(),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The cell with an on-demand gap of its own (tests).
    #[cfg(test)]
    fn with_gap(mut self, gap: Duration) -> Self {
        self.min_gap = gap;
        self
    }

    /// The trust root in use, if one ever loaded.
    pub(super) fn current(&self) -> Option<Loaded> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    fn install(&self, material: Arc<TrustMaterial>, at: Instant) {
        if let Ok(mut c) = self.current.write() {
            *c = Some(Loaded { material, at });
        }
    }

    /// Installs a root loaded by the caller (the file given at startup).
    pub(super) fn set(&self, material: TrustMaterial) {
        self.install(Arc::new(material), Instant::now());
    }

    /// The trust root to verify with. A root older than the refresh interval is refreshed in
    /// the background (the old one serves meanwhile); with no root yet, one is loaded now
    /// (retried at most once a minute).
    pub(super) async fn get(self: &Arc<Self>) -> Result<Arc<TrustMaterial>, String> {
        if let Some(loaded) = self.current() {
            if loaded.at.elapsed() >= self.every
                && !self
                    .refreshing
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                let cell = Arc::clone(self);
                tokio::spawn(async move {
                    if let Err(Reload::Failed(e)) = cell.reload(Duration::ZERO).await {
                        tracing::warn!(error = %e, "trust root refresh failed; the last good trust root is kept");
                    }
                    cell.refreshing
                        .store(false, std::sync::atomic::Ordering::Release);
                });
            }
            return Ok(loaded.material);
        }
        match self.reload(FIRST_LOAD_RETRY).await {
            Ok(t) => Ok(t),
            Err(Reload::Failed(why) | Reload::TooSoon(Some(why))) => Err(why),
            Err(Reload::TooSoon(None)) => self
                .current()
                .map(|l| l.material)
                .ok_or_else(|| "the trust root is loading".to_string()),
        }
    }

    /// Loads the root again unless the last attempt was less than `gap` ago. An unchanged root
    /// (same bytes) keeps its material, and so its caches; only its time is renewed.
    async fn reload(&self, gap: Duration) -> Result<Arc<TrustMaterial>, Reload> {
        let mut attempts = self.attempts.lock().await;
        if attempts.last.is_some_and(|t| t.elapsed() < gap) {
            return Err(Reload::TooSoon(attempts.failed.clone()));
        }
        attempts.last = Some(Instant::now());
        match TrustMaterial::load(&self.source).await {
            Ok(fresh) => {
                attempts.failed = None;
                let material = match self.current() {
                    Some(old) if old.material.digest == fresh.digest => old.material,
                    _ => {
                        tracing::info!(digest = %fresh.digest, "trust root loaded");
                        Arc::new(fresh)
                    }
                };
                self.install(Arc::clone(&material), Instant::now());
                Ok(material)
            }
            Err(e) => {
                let why = e.to_string();
                attempts.failed = Some(why.clone());
                Err(Reload::Failed(why))
            }
        }
    }

    /// `used` did not know a log or CA an entry names: is it really unknown? A root loaded
    /// less than the on-demand gap ago answers for itself; otherwise the root is loaded again
    /// (at most once per gap).
    pub(super) async fn confirm(self: &Arc<Self>, used: &Arc<TrustMaterial>) -> Confirmation {
        if let Some(now) = self.current() {
            if !Arc::ptr_eq(&now.material, used) && now.material.digest != used.digest {
                return Confirmation::Newer(now.material);
            }
            if now.at.elapsed() < self.min_gap {
                return Confirmation::Unknown;
            }
        }
        // In a task of its own: a verification that runs out of time does not cut a TUF
        // fetch short (the next demand would otherwise wait out the gap for nothing).
        let cell = Arc::clone(self);
        let reload = tokio::spawn(async move { cell.reload(cell.min_gap).await });
        let reloaded = reload
            .await
            .unwrap_or_else(|_| Err(Reload::Failed("the trust root refresh failed".into())));
        match reloaded {
            Ok(t) if t.digest == used.digest => Confirmation::Unknown,
            Ok(t) => Confirmation::Newer(t),
            // Another caller reloaded meanwhile: its result answers.
            Err(Reload::TooSoon(None)) => match self.current() {
                Some(now) if now.material.digest != used.digest => {
                    Confirmation::Newer(now.material)
                }
                Some(now) if now.at.elapsed() < self.min_gap => Confirmation::Unknown,
                _ => Confirmation::Unavailable("the trust root was not refreshed".into()),
            },
            Err(Reload::TooSoon(Some(why)) | Reload::Failed(why)) => Confirmation::Unavailable(why),
        }
    }
}

/// Why no root was loaded.
#[derive(Debug)]
enum Reload {
    /// The last attempt was too recent; why it failed, if it did.
    TooSoon(Option<String>),
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_roots_without_a_ca_or_a_log() {
        assert!(TrustMaterial::from_json(b"{}").is_err());
        assert!(TrustMaterial::from_json(b"not json").is_err());
    }

    /// A trusted root with one CA and one log whose ID is `[id; 32]`, at `baseUrl`.
    fn root(id: u8, base_url: &str) -> Vec<u8> {
        use rcgen::PublicKeyData as _;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        serde_json::to_vec(&serde_json::json!({
            "certificateAuthorities": [{ "certChain": { "certificates": [
                { "rawBytes": B64.encode(ca.der()) }
            ] } }],
            "tlogs": [{
                "baseUrl": base_url,
                "publicKey": { "rawBytes": B64.encode(key.subject_public_key_info()) },
                "logId": { "keyId": B64.encode([id; 32]) }
            }]
        }))
        .unwrap()
    }

    #[test]
    fn log_origins_are_the_base_url_host() {
        let t = TrustMaterial::from_json(&root(1, "https://log2025-1.rekor.sigstore.dev")).unwrap();
        assert_eq!(
            t.log(&[1; 32]).unwrap().origin.as_deref(),
            Some("log2025-1.rekor.sigstore.dev")
        );
        assert!(t.digest.starts_with("sha256:"));
        assert_eq!(
            url_host("https://Rekor.Test:8443/api"),
            Some("rekor.test".into())
        );
        assert_eq!(url_host("http://[::1]:3000"), Some("::1".into()));
        assert_eq!(url_host("not a url"), None);
    }

    fn cell(path: &Path, gap: Duration) -> Arc<TrustCell> {
        Arc::new(
            TrustCell::new(TrustSource::File(path.to_path_buf()), DEFAULT_REFRESH).with_gap(gap),
        )
    }

    fn installed(cell: &Arc<TrustCell>, json: &[u8], age: Duration) -> Arc<TrustMaterial> {
        let t = Arc::new(TrustMaterial::from_json(json).unwrap());
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        cell.install(Arc::clone(&t), at);
        t
    }

    #[tokio::test]
    async fn on_demand_refreshes_are_rate_limited_and_a_fresh_root_confirms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.json");
        let (a, b, c) = (
            root(1, "https://a.test"),
            root(2, "https://b.test"),
            root(3, "https://c.test"),
        );
        let cell = cell(&path, TUF_REFRESH_GAP);
        // A root loaded an hour ago is loaded again on demand, and the newer one answers.
        let old = installed(&cell, &a, Duration::from_secs(3600));
        std::fs::write(&path, &b).unwrap();
        let Confirmation::Newer(new) = cell.confirm(&old).await else {
            panic!("expected the newer root")
        };
        assert!(new.log(&[2; 32]).is_some());
        // Within the gap the root just loaded is the confirmation: the file is not read.
        std::fs::write(&path, &c).unwrap();
        assert!(matches!(cell.confirm(&new).await, Confirmation::Unknown));
        assert!(cell.current().unwrap().material.log(&[2; 32]).is_some());
        // A caller still holding the older root is handed the current one.
        assert!(matches!(cell.confirm(&old).await, Confirmation::Newer(_)));
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_good_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.json");
        let cell = cell(&path, TUF_REFRESH_GAP);
        let old = installed(&cell, &root(1, "https://a.test"), Duration::from_secs(3600));
        std::fs::write(&path, b"{ truncated").unwrap();
        let Confirmation::Unavailable(why) = cell.confirm(&old).await else {
            panic!("expected no confirmation")
        };
        assert!(why.contains("invalid trusted root"), "{why}");
        assert!(Arc::ptr_eq(&cell.current().unwrap().material, &old));
        // The failure is not retried within the gap, even once the file is good again.
        std::fs::write(&path, root(2, "https://b.test")).unwrap();
        assert!(matches!(
            cell.confirm(&old).await,
            Confirmation::Unavailable(_)
        ));
        // With no gap (a file, as the verifier configures it), every demand reads it again.
        let cell = cell_with_file(&path);
        let old = installed(&cell, &root(1, "https://a.test"), Duration::ZERO);
        assert!(matches!(cell.confirm(&old).await, Confirmation::Newer(_)));
    }

    fn cell_with_file(path: &Path) -> Arc<TrustCell> {
        Arc::new(TrustCell::new(
            TrustSource::File(path.to_path_buf()),
            DEFAULT_REFRESH,
        ))
    }

    #[tokio::test]
    async fn a_root_older_than_the_interval_is_refreshed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.json");
        let every = Duration::from_secs(60);
        let cell = Arc::new(TrustCell::new(TrustSource::File(path.clone()), every));
        let old = installed(&cell, &root(1, "https://a.test"), Duration::from_secs(3600));
        std::fs::write(&path, root(2, "https://b.test")).unwrap();
        // The old root serves while the new one loads.
        assert!(Arc::ptr_eq(&cell.get().await.unwrap(), &old));
        for _ in 0..200 {
            if cell.current().unwrap().material.log(&[2; 32]).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cell.current().unwrap().material.log(&[2; 32]).is_some());
        // A failed periodic refresh keeps the last good root.
        let good = cell.current().unwrap().material;
        std::fs::write(&path, b"not json").unwrap();
        let cell = Arc::new(TrustCell::new(TrustSource::File(path.clone()), every));
        let hour_ago = Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .unwrap();
        cell.install(Arc::clone(&good), hour_ago);
        assert!(Arc::ptr_eq(&cell.get().await.unwrap(), &good));
        for _ in 0..200 {
            if !cell.refreshing.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cell.attempts.lock().await.failed.is_some());
        assert!(Arc::ptr_eq(&cell.current().unwrap().material, &good));
    }

    #[tokio::test]
    async fn an_unchanged_root_keeps_its_material_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.json");
        let a = root(1, "https://a.test");
        std::fs::write(&path, &a).unwrap();
        let cell = cell_with_file(&path);
        let old = installed(&cell, &a, Duration::from_secs(3600));
        assert!(matches!(cell.confirm(&old).await, Confirmation::Unknown));
        let now = cell.current().unwrap();
        assert!(Arc::ptr_eq(&now.material, &old));
        assert!(now.at.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn an_unreachable_tuf_repository_says_so_and_points_at_trusted_root() {
        use sigstore::errors::SigstoreError;
        // What the sigstore crate returns offline once its embedded root has expired.
        let expired = SigstoreError::TufError(Box::new(tough::error::Error::ExpiredMetadata {
            role: tough::schema::RoleType::Root,
            backtrace: std::backtrace::Backtrace::disabled(),
        }));
        let e = tuf_error(expired);
        assert!(matches!(e, TrustError::TufUnreachable(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("could not be reached"), "{text}");
        assert!(text.contains("embedded"), "{text}");
        assert!(text.contains("--trusted-root FILE"), "{text}");
        assert!(text.contains("root metadata is expired"), "{text}");
        // Another role's expiry is not an unreachable repository.
        let other = SigstoreError::TufError(Box::new(tough::error::Error::ExpiredMetadata {
            role: tough::schema::RoleType::Timestamp,
            backtrace: std::backtrace::Backtrace::disabled(),
        }));
        assert!(matches!(tuf_error(other), TrustError::Unavailable(_)));
        let other = SigstoreError::TufTargetNotFoundError("trusted_root.json".into());
        assert!(matches!(tuf_error(other), TrustError::Unavailable(_)));
    }
}
