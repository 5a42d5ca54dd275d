//! The verifier: discovers every signature artifact of one image and classifies it.
//!
//! Discovery owns the registry I/O and its classification (sigstore-rs's cosign client drops
//! failed fetches and failed layers, which would read as not-signed); the sigstore crate does
//! the cryptography and parses the trust root.

// `pub(crate)`: reached by `crate::fuzzing` (the cargo-fuzz entry points).
pub(crate) mod auth;
pub(crate) mod bundle;
pub(crate) mod cert;
mod chains;
pub(crate) mod classify;
mod config;
pub(crate) mod discovery;
mod docker;
mod exec;
pub(crate) mod keyring;
mod keys;
pub(crate) mod legacy;
pub(crate) mod lineage;
pub(crate) mod normalize;
mod plugins;
pub(crate) mod record;
mod registry;
pub(crate) mod rekor;
pub(crate) mod timestamp;
pub(crate) mod tlog;
mod trust;

use std::sync::Arc;

pub use self::auth::{CredSource, Credential, Credentials, Found, PullSecrets, Target};
pub use self::config::{Limits, SetupError, TrustSource, VerifierConfig};
use self::discovery::{Artifact, Discovered, Discovery};
pub use self::keyring::Keyring;
pub use self::keys::KeyRing;
use self::record::{Checked, Context, Failure, Unknown};
use self::registry::Repo;
pub use self::registry::{AuthEvent, AuthHook, FetchError, RegistryClient, RequestHook};
use self::trust::{Confirmation, TrustCell};
pub use self::trust::{TrustError, TrustMaterial, DEFAULT_REFRESH, TUF_REFRESH_GAP};
use crate::core::image::{ImageId, ImageRef};
use crate::core::posture::{bound, Posture, Reason, SignatureRecord, Verdict, MAX_MESSAGE};
use crate::core::posture::{EVIDENCE_SIG_TAG, EVIDENCE_TRUST_ROOT};

pub struct Verifier {
    registry: RegistryClient,
    trust: Arc<TrustCell>,
    keys: KeyRing,
    limits: Limits,
    /// Cached registry answers of the walk from a running digest to its signature.
    lineage: lineage::Lineage,
}

impl Verifier {
    pub async fn new(config: VerifierConfig) -> Result<Self, SetupError> {
        Self::with_hook(config, None).await
    }

    /// Like [`Verifier::new`], with a hook told of every registry request (metrics).
    pub async fn with_hook(
        config: VerifierConfig,
        hook: Option<RequestHook>,
    ) -> Result<Self, SetupError> {
        Self::with_extras(
            config,
            Extras {
                request_hook: hook,
                ..Extras::default()
            },
        )
        .await
    }

    /// Like [`Verifier::new`], with metrics hooks and a pull-secret source (the operator's).
    pub async fn with_extras(config: VerifierConfig, extras: Extras) -> Result<Self, SetupError> {
        let docker = match &config.registry_config {
            Some(path) => Some(
                docker::DockerConfig::load(path)
                    .map_err(|why| SetupError::RegistryConfig {
                        path: path.clone(),
                        why,
                    })?
                    .with_helper_dir(config.credential_helper_dir.clone()),
            ),
            None => None,
        };
        let plugins = match (
            &config.credential_provider_config,
            &config.credential_provider_bin_dir,
        ) {
            (Some(file), Some(dir)) => Some(plugins::Plugins::load(file, dir).map_err(|why| {
                SetupError::CredentialProviders {
                    path: file.clone(),
                    why,
                }
            })?),
            (None, None) => None,
            (Some(file), None) | (None, Some(file)) => {
                return Err(SetupError::CredentialProviders {
                    path: file.clone(),
                    why: "--image-credential-provider-config and \
                          --image-credential-provider-bin-dir go together"
                        .into(),
                })
            }
        };
        let credentials = Credentials::default()
            .with_docker(docker)
            .with_plugins(plugins)
            .with_pull_secrets(extras.pull_secrets);
        let keys = KeyRing::load(&config.trusted_keys)?;
        let mut registry = RegistryClient::new(
            config.insecure_registries.iter().cloned(),
            credentials,
            config.limits.budget,
        )
        .map_err(SetupError::Http)?;
        if let Some(hook) = extras.request_hook {
            registry = registry.with_hook(hook);
        }
        if let Some(hook) = extras.auth_hook {
            registry = registry.with_auth_hook(hook);
        }
        let trust = Arc::new(TrustCell::new(config.trust.clone(), config.trust_refresh));
        match &config.trust {
            // A given file must be right at startup: fail with its error.
            TrustSource::File(_) => trust.set(TrustMaterial::load(&config.trust).await?),
            // The TUF root may come later; until then images stay `checking`.
            TrustSource::PublicGood { .. } => {
                if let Err(e) = trust.get().await {
                    tracing::warn!(error = %e, "trust root unavailable; images stay `checking` until it loads");
                }
            }
        }
        Ok(Verifier {
            registry,
            trust,
            keys,
            limits: config.limits,
            lineage: lineage::Lineage::default(),
        })
    }

    /// How long a tag's answer is cached by the walk to a covering index (the observer's TTL).
    pub fn set_tag_ttl(&self, ttl: std::time::Duration) {
        self.lineage.set_ttl(ttl);
    }

    /// [`observe`](Self::observe) in a task of its own: images verify in parallel on every
    /// core, and nothing one image does can reach another's verification.
    pub async fn observe_task(self: &Arc<Self>, image: &ImageId) -> Verdict {
        let (verifier, id) = (Arc::clone(self), image.clone());
        let mut task = AbortOnDrop(tokio::spawn(async move { verifier.observe(&id).await }));
        match (&mut task.0).await {
            Ok(v) => v,
            Err(_) => internal_error(),
        }
    }

    /// Like [`observe_task`](Self::observe_task), for the digest a node runs, with the
    /// references the pods name it by (`status.references`): when the digest's own listings
    /// are definitely empty, an index those references lead to and that lists it, or (for an
    /// index) its platform manifests, are consulted (see `lineage`).
    pub async fn observe_task_with(
        self: &Arc<Self>,
        image: &ImageId,
        leads: &[ImageRef],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Verdict {
        let (verifier, id, leads) = (Arc::clone(self), image.clone(), leads.to_vec());
        let mut task = AbortOnDrop(tokio::spawn(async move {
            verifier.observe_with(&id, &leads, now).await
        }));
        match (&mut task.0).await {
            Ok(v) => v,
            Err(_) => internal_error(),
        }
    }

    /// [`observe`](Self::observe) with the references the pods name the image by.
    pub async fn observe_with(
        &self,
        image: &ImageId,
        leads: &[ImageRef],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Verdict {
        let within =
            tokio::time::timeout(self.limits.budget, self.observe_running(image, leads, now));
        match crate::core::isolate::catch(within).await {
            Ok(Ok(v)) => v,
            Err(_) => internal_error(),
            Ok(Err(_)) => Verdict::checking(
                Reason::Timeout,
                format!(
                    "verification exceeded the {}s time budget",
                    self.limits.budget.as_secs_f32()
                ),
            ),
        }
    }

    /// The manifest digest a tag points at now (one HEAD request).
    pub async fn resolve(&self, image: &ImageRef) -> Result<ImageId, Verdict> {
        match crate::core::isolate::catch(self.resolve_unisolated(image)).await {
            Ok(r) => r,
            Err(_) => Err(internal_error()),
        }
    }

    async fn resolve_unisolated(&self, image: &ImageRef) -> Result<ImageId, Verdict> {
        if let Some(id) = image.id() {
            return Ok(id);
        }
        let tag = image.tag.as_deref().unwrap_or("latest");
        let fut = async {
            let access = self
                .access(
                    &image.registry,
                    &image.repository,
                    &format!("{}/{}:{tag}", image.registry, image.repository),
                )
                .await;
            let repo = Repo {
                host: crate::core::image::api_host(&image.registry),
                name: &image.repository,
                access: &access,
            };
            self.registry.manifest_digest(repo, tag).await
        };
        match tokio::time::timeout(self.limits.budget, fut).await {
            Ok(Ok(digest)) => Ok(ImageId {
                registry: image.registry.clone(),
                repository: image.repository.clone(),
                digest,
            }),
            Ok(Err(FetchError::NotFound)) => Err(Verdict::checking(
                Reason::DigestUnknown,
                format!("tag {tag:?} not found in the registry"),
            )),
            Ok(Err(e)) => Err(e.checking("resolving the tag")),
            Err(_) => Err(Verdict::checking(
                Reason::Timeout,
                "resolving the tag exceeded the time budget",
            )),
        }
    }

    /// The posture of one image. Never fails: anything that is not a verdict is `checking`,
    /// a panic included (caught here, see [`crate::core::isolate`]).
    pub async fn observe(&self, image: &ImageId) -> Verdict {
        let within = tokio::time::timeout(self.limits.budget, self.observe_within_budget(image));
        match crate::core::isolate::catch(within).await {
            Ok(Ok(v)) => v,
            Err(_) => internal_error(),
            Ok(Err(_)) => Verdict::checking(
                Reason::Timeout,
                format!(
                    "verification exceeded the {}s time budget",
                    self.limits.budget.as_secs_f32()
                ),
            ),
        }
    }

    async fn observe_within_budget(&self, image: &ImageId) -> Verdict {
        let mut trust = match self.trust.get().await {
            Ok(t) => t,
            Err(e) => return Verdict::checking(Reason::TrustRootUnavailable, e),
        };
        let ctx = Context {
            trust: &trust,
            keys: &self.keys,
        };
        let access = self.access_id(image).await;
        let repo = Repo {
            host: image.api_host(),
            name: &image.repository,
            access: &access,
        };
        let max = self.limits.max_manifest_bytes;
        let sig_tag = image.sig_tag();
        let (sig, referrers) = tokio::join!(
            self.registry.manifest(repo, &sig_tag, max),
            self.registry.referrers(repo, &image.digest, max)
        );
        let sig = match registry::found(sig) {
            Ok(m) => m,
            Err(e) => return e.checking("signature tag"),
        };
        let referrers = match referrers {
            Ok(r) => r,
            Err(e) => return e.checking("referrers"),
        };
        let mut evidence = std::collections::BTreeMap::new();
        if let Some(sig) = &sig {
            evidence.insert(EVIDENCE_SIG_TAG.to_string(), sig.digest.clone());
        }
        if let Some((source, index)) = &referrers {
            evidence.insert(source.key().to_string(), index.digest.clone());
        }

        let discovery = Discovery {
            registry: &self.registry,
            limits: &self.limits,
            repo,
            image_digest: &image.digest,
        };
        let mut found = Discovered::default();
        if let Some(sig) = &sig {
            if let Err(e) = discovery.legacy(&sig.body, &mut found).await {
                return e.checking();
            }
        }
        if let Some((_, listing)) = &referrers {
            if let Err(e) = discovery.referrers(listing, &mut found).await {
                return e.checking();
            }
        }
        let (mut records, unknown) = judge(&found.artifacts, &image.digest, &ctx);
        let mut attestations = found.attestations + records.attestations;
        // An artifact failed only for a log or CA this root does not hold: invalid once a
        // current root confirms it; with a newer root, judged again.
        if unknown.is_some() && !records.signed() {
            match self.trust.confirm(&trust).await {
                Confirmation::Unknown => {}
                Confirmation::Newer(newer) => {
                    trust = newer;
                    let ctx = Context {
                        trust: &trust,
                        keys: &self.keys,
                    };
                    (records, _) = judge(&found.artifacts, &image.digest, &ctx);
                    attestations = found.attestations + records.attestations;
                }
                Confirmation::Unavailable(why) => {
                    let what = match unknown {
                        Some(Unknown::Ca) => "a certificate chains to no CA of the trust root",
                        _ => "a log entry names a transparency log the trust root does not list",
                    };
                    return Verdict::checking(
                        Reason::TrustRootUnavailable,
                        bound(
                            &format!(
                                "{what}, and the trust root could not be refreshed to confirm it \
                                 (the last good trust root is kept): {why}"
                            ),
                            MAX_MESSAGE,
                        ),
                    );
                }
            }
        }
        let judged_any = !records.list.is_empty();
        let mut records = records.list;
        for r in &mut records {
            r.digest = Some(image.digest.clone());
        }
        let mut verdict = Verdict::from_signatures(records);
        verdict.artifact_digests = evidence;
        // Which trust root judged the signatures: a verdict is not revalidated across a root
        // change (see `unchanged`).
        if judged_any && !trust.digest.is_empty() {
            verdict
                .artifact_digests
                .insert(EVIDENCE_TRUST_ROOT.to_string(), trust.digest.clone());
        }
        note_attestations(&mut verdict, attestations);
        if found.skipped > 0 {
            verdict.message = bound(
                &format!(
                    "{}; {} more artifact(s) over the limit were not examined",
                    verdict.message, found.skipped
                ),
                MAX_MESSAGE,
            );
        }
        verdict
    }

    /// Whether the signature listings still have the digests recorded at the last
    /// verification: a HEAD per listing (a GET for the referrers API), nothing downloaded.
    /// Any doubt (an error, a timeout, a new artifact) answers `false`: verify again.
    pub async fn unchanged(
        &self,
        image: &ImageId,
        recorded: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        let check = async {
            let access = self.access_id(image).await;
            let repo = Repo {
                host: image.api_host(),
                name: &image.repository,
                access: &access,
            };
            let mut now = self.listings(repo, &image.digest).await?;
            self.lineage_listings(image, recorded, &mut now).await?;
            // Signatures judged under another trust root are judged again (a log or CA it
            // gained or lost); with no root loaded, the recorded judgement stands.
            if let Some(judged) = recorded.get(EVIDENCE_TRUST_ROOT) {
                let root = self.trust.current().map(|l| l.material.digest.clone());
                now.insert(
                    EVIDENCE_TRUST_ROOT.to_string(),
                    root.unwrap_or_else(|| judged.clone()),
                );
            }
            Some(now == *recorded)
        };
        matches!(
            tokio::time::timeout(self.limits.budget, check).await,
            Ok(Some(true))
        )
    }

    /// The digests of one manifest's signature listings, as a verification records them
    /// (HEAD requests; a GET for the referrers API); `None` on any failure.
    async fn listings(
        &self,
        repo: Repo<'_>,
        digest: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let sig_tag = format!("{}.sig", digest.replace(':', "-"));
        let (sig, referrers) = tokio::join!(
            self.registry.manifest_exists(repo, &sig_tag),
            self.registry
                .referrers_digest(repo, digest, self.limits.max_manifest_bytes)
        );
        let mut now = std::collections::BTreeMap::new();
        if let Some(d) = sig.ok()? {
            now.insert(EVIDENCE_SIG_TAG.to_string(), d);
        }
        if let Some((source, d)) = referrers.ok()? {
            now.insert(source.key().to_string(), d);
        }
        Some(now)
    }
}

impl Verifier {
    /// The credentials for one image, from every source in the kubelet's order.
    async fn access(&self, registry: &str, repository: &str, image: &str) -> Found {
        // Secrets are read only for a registry that asks for credentials (or is not known yet).
        let pull_secrets = self
            .registry
            .asks_for_auth(crate::core::image::api_host(registry));
        self.registry
            .credentials()
            .lookup(registry, repository, image, pull_secrets)
            .await
    }

    async fn access_id(&self, image: &ImageId) -> Found {
        let name = format!("{}/{}@{}", image.registry, image.repository, image.digest);
        self.access(&image.registry, &image.repository, &name).await
    }
}

/// What the operator adds to a verifier: metrics hooks and its pull-secret source.
#[derive(Default)]
pub struct Extras {
    pub request_hook: Option<RequestHook>,
    pub auth_hook: Option<AuthHook>,
    pub pull_secrets: Option<Arc<dyn PullSecrets>>,
}

/// The signature records of one image's artifacts.
#[derive(Default)]
struct Records {
    list: Vec<SignatureRecord>,
    /// Artifacts the verifier recognised as attestations, not signatures.
    attestations: usize,
}

impl Records {
    fn signed(&self) -> bool {
        self.list.iter().any(|r| r.verified)
    }
}

/// Verifies every artifact against one trust root; also says whether one failed for want of
/// a log or CA the root does not hold.
fn judge(
    artifacts: &[Artifact],
    image_digest: &str,
    ctx: &Context<'_>,
) -> (Records, Option<Unknown>) {
    let mut records = Records::default();
    let mut unknown = None;
    for artifact in artifacts {
        // Discovery judges most attestations from their manifests; one it could not tell
        // apart is recognised by the verifier and counted, never verified as a signature.
        match verify_artifact(artifact, image_digest, ctx) {
            Some(checked) => {
                unknown = unknown.or(checked.unknown());
                records.list.push(checked.record());
            }
            None => records.attestations += 1,
        }
    }
    (records, unknown)
}

/// One discovered artifact, verified; `None` for an attestation (not a signature).
fn verify_artifact(artifact: &Artifact, image_digest: &str, ctx: &Context<'_>) -> Option<Checked> {
    let checked = match artifact {
        Artifact::Legacy {
            annotations,
            payload,
        } => legacy::classify(annotations, payload, image_digest, ctx),
        Artifact::Bundle(raw) => bundle::classify(raw, image_digest, ctx),
        Artifact::Broken {
            source,
            format,
            failure,
        } => return Some(Checked::failed(*source, *format, failure.clone())),
    };
    (!checked.is_attestation()).then_some(checked)
}

fn note_attestations(verdict: &mut Verdict, attestations: usize) {
    if attestations == 0 {
        return;
    }
    let note = if verdict.posture == Posture::NotSigned {
        format!(
            "no signature artifact for this digest; {attestations} attestation(s) found, which are not signatures"
        )
    } else {
        format!(
            "{}; {attestations} attestation(s) beside the signatures, not counted",
            verdict.message
        )
    };
    verdict.message = bound(&note, MAX_MESSAGE);
}

/// What a caught panic leaves in the image's status: the panic text went to the log (escaped),
/// not here.
fn internal_error() -> Verdict {
    Verdict::checking(
        Reason::InternalError,
        "verification failed with an internal error (logged); retried on the next pass",
    )
}

/// Aborts the spawned verification when its caller gives up on it (a timeout, a shutdown).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
