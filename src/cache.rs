//! The verdict cache ([`Observer`]) in front of the verifier, backed by the ImagePosture status.
//!
//! It sits between the two entry points ([`crate::operator`] and [`crate::commands`], which
//! both use it) and the layers below ([`crate::verify`], [`crate::model`]): it needs the
//! verifier and the status mapping, and neither of them may know it.
//!
//! The operator keeps no verdict in memory: what an image's resource records (posture,
//! `lastVerified`, `lastChecked`, `signatureDigests`) is the cache, so a restart costs nothing.
//! - Within the TTL of `lastChecked`, a resting posture stands with no outbound call.
//! - After it, the digests of the signature listings are compared (HEAD requests); only a
//!   change, or any doubt, triggers a full verification. Revalidation and verification share
//!   one per-image time budget.
//! - `checking` is never a cache entry. A registry-wide failure (5xx, 429, refused, timeout;
//!   not a refused credential, which is per image) puts the registry into backoff (honouring
//!   `Retry-After`): meanwhile its images are not asked, and an image that has to say so says
//!   it in its own words, never in another image's failure message.
//! - At most `per_registry` verifications run against one registry at once; the rest wait
//!   without holding anything else up ([`Busy`]).
//! - Time is passed in, so tests drive the clock.

use crate::core::lock::LockExt as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::core::image::{ImageId, ImageRef};
use crate::core::posture::{Posture, Reason, Verdict, EVIDENCE_VIA_INDEX};
use crate::core::tie::Unresolved;
use crate::metrics::Metrics;
use crate::verify::Verifier;

pub use crate::model::status::{recorded, Recorded};

#[derive(Clone, Debug)]
pub struct ObserverConfig {
    /// How long a resting posture is trusted before it is revalidated.
    pub ttl: Duration,
    /// Verifications in flight at once against one registry.
    pub per_registry: usize,
    /// First backoff after a registry failure; doubles per failure up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Time budget of one image, revalidation and verification together (`--image-timeout`).
    pub budget: Duration,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        ObserverConfig {
            ttl: Duration::from_secs(6 * 3600),
            per_registry: 4,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            budget: Duration::from_secs(30),
        }
    }
}

/// How an observation was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The recorded verdict is within its TTL: no outbound call.
    Hit,
    /// Past the TTL, the signature listings are unchanged (HEAD requests only).
    Revalidated,
    /// A full verification ran.
    Verified,
    /// The registry is backing off: not asked.
    BackedOff,
}

/// What the observer knows about one image now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub verdict: Verdict,
    pub source: Source,
    /// When the verdict was reached by a full verification (`None` for `checking`).
    pub verified_at: Option<DateTime<Utc>>,
    /// When it was last confirmed (`None` for `checking`).
    pub checked_at: Option<DateTime<Utc>>,
    /// While `checking` because the registry failed: how long it is left alone.
    pub retry_in: Option<Duration>,
}

/// Every verification slot of the image's registry is taken: try again shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

struct Backoff {
    until: DateTime<Utc>,
    failures: u32,
    reason: Reason,
}

/// Counters for tests and the benchmark (also exported as metrics where the operator runs).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserverStats {
    pub hits: u64,
    pub misses: u64,
    /// Expired verdicts confirmed unchanged by their artifact digests (no download).
    pub revalidated: u64,
    pub backed_off: u64,
}

pub struct Observer {
    verifier: Arc<Verifier>,
    config: ObserverConfig,
    backoff: Mutex<HashMap<String, Backoff>>,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    stats: Mutex<ObserverStats>,
    metrics: Option<Arc<Metrics>>,
}

impl Observer {
    pub fn new(verifier: Arc<Verifier>, config: ObserverConfig) -> Self {
        verifier.set_tag_ttl(config.ttl);
        Observer {
            verifier,
            config,
            backoff: Mutex::default(),
            slots: Mutex::default(),
            stats: Mutex::default(),
            metrics: None,
        }
    }

    /// Exports cache hits/misses and verification results.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn config(&self) -> &ObserverConfig {
        &self.config
    }

    pub fn stats(&self) -> ObserverStats {
        *self.stats.locked()
    }

    /// Whether a recorded verdict is still within its TTL at `now`.
    pub fn fresh(&self, recorded: &Recorded, now: DateTime<Utc>) -> Option<Duration> {
        let age = now
            .signed_duration_since(recorded.checked_at)
            .to_std()
            .unwrap_or_default();
        self.config.ttl.checked_sub(age).filter(|d| !d.is_zero())
    }

    /// Observes one image, waiting for a slot of its registry (the CLI commands).
    pub async fn observe(
        &self,
        id: &ImageId,
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
    ) -> Observed {
        self.observe_with(id, &[], recorded, now).await
    }

    /// [`observe`](Self::observe) with the references pods name the image by
    /// (`status.references`): what ties a running platform manifest to a signed index, see
    /// `verify::lineage`.
    pub async fn observe_with(
        &self,
        id: &ImageId,
        leads: &[ImageRef],
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
    ) -> Observed {
        if let Some(o) = self.without_io(id, recorded, now) {
            return o;
        }
        let slot = self.slot(&id.registry);
        let permit = slot.acquire_owned().await.ok();
        self.with_slot(id, leads, recorded, now, permit).await
    }

    /// Observes one image, or answers [`Busy`] at once when its registry has no free slot, so
    /// the caller (a reconcile) does not hold a slot of its own while it waits.
    pub async fn try_observe(
        &self,
        id: &ImageId,
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
    ) -> Result<Observed, Busy> {
        self.try_observe_with(id, &[], recorded, now).await
    }

    /// [`try_observe`](Self::try_observe) with the references pods name the image by.
    pub async fn try_observe_with(
        &self,
        id: &ImageId,
        leads: &[ImageRef],
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
    ) -> Result<Observed, Busy> {
        if let Some(o) = self.without_io(id, recorded, now) {
            return Ok(o);
        }
        let permit = self
            .slot(&id.registry)
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        Ok(self.with_slot(id, leads, recorded, now, Some(permit)).await)
    }

    /// A cache hit, or the backoff's answer: no I/O either way.
    fn without_io(
        &self,
        id: &ImageId,
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
    ) -> Option<Observed> {
        if let Some(r) = recorded.filter(|r| r.verdict.posture.is_resting() && !r.stale) {
            if self.fresh(r, now).is_some() {
                self.stats.locked().hits += 1;
                if let Some(m) = &self.metrics {
                    m.cache_hit();
                }
                return Some(Observed {
                    verdict: r.verdict.clone(),
                    source: Source::Hit,
                    verified_at: Some(r.verified_at),
                    checked_at: Some(r.checked_at),
                    retry_in: None,
                });
            }
        }
        self.backed_off(&id.registry, now)
    }

    async fn with_slot(
        &self,
        id: &ImageId,
        leads: &[ImageRef],
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
        _permit: Option<OwnedSemaphorePermit>,
    ) -> Observed {
        // Another image of this registry may have failed while we waited.
        if let Some(o) = self.backed_off(&id.registry, now) {
            return o;
        }
        // The index a recorded verdict was reached through stays a lead after its tag moved.
        let recorded_index = recorded
            .and_then(|r| r.verdict.artifact_digests.get(EVIDENCE_VIA_INDEX))
            .filter(|_| !leads.is_empty())
            .map(|index| ImageRef {
                registry: id.registry.clone(),
                repository: id.repository.clone(),
                tag: None,
                digest: Some(index.clone()),
            });
        let leads: Vec<ImageRef> = recorded_index
            .into_iter()
            .chain(leads.iter().cloned())
            .collect();
        let budget = self.config.budget;
        let started = std::time::Instant::now();
        let work = async {
            if let Some(r) = recorded.filter(|r| r.verdict.posture.is_resting()) {
                if self
                    .verifier
                    .unchanged(id, &r.verdict.artifact_digests)
                    .await
                {
                    return (r.verdict.clone(), Source::Revalidated);
                }
            }
            let verdict = if leads.is_empty() {
                self.verifier.observe_task(id).await
            } else {
                self.verifier.observe_task_with(id, &leads, now).await
            };
            (verdict, Source::Verified)
        };
        let (verdict, source) = match tokio::time::timeout(budget, work).await {
            Ok(done) => done,
            Err(_) => (
                Verdict::checking(
                    Reason::Timeout,
                    format!(
                        "verification exceeded the {}s time budget",
                        budget.as_secs_f32()
                    ),
                ),
                Source::Verified,
            ),
        };
        match source {
            Source::Revalidated => self.stats.locked().revalidated += 1,
            _ => {
                self.stats.locked().misses += 1;
                if let Some(m) = &self.metrics {
                    m.cache_miss();
                    m.verification(verdict.posture);
                    m.verification_duration(started.elapsed().as_secs_f64());
                }
            }
        }
        if verdict.posture.is_resting() {
            self.backoff.locked().remove(&id.registry);
            let verified_at = match source {
                Source::Revalidated => recorded.map(|r| r.verified_at).unwrap_or(now),
                _ => now,
            };
            Observed {
                verdict,
                source,
                verified_at: Some(verified_at),
                checked_at: Some(now),
                retry_in: None,
            }
        } else {
            let retry_in = self.note_failure(&id.registry, &verdict, now);
            Observed {
                verdict,
                source,
                verified_at: None,
                checked_at: None,
                retry_in,
            }
        }
    }

    /// The current digest of a tag (one HEAD), unless its registry is backing off.
    pub async fn resolve(
        &self,
        reference: &ImageRef,
        now: DateTime<Utc>,
    ) -> Result<ImageId, Verdict> {
        if let Some(o) = self.backed_off(&reference.registry, now) {
            return Err(o.verdict);
        }
        let result = self.verifier.resolve(reference).await;
        if let Err(v) = &result {
            self.note_failure(&reference.registry, v, now);
        }
        result
    }

    /// The identity of a running image the inventory could not name by itself: a tag not
    /// pulled yet (its current digest), or a running image tied through its tag
    /// ([`Verifier::tie`]); unless its registry is backing off.
    pub async fn resolve_running(
        &self,
        what: &Unresolved,
        now: DateTime<Utc>,
    ) -> Result<ImageId, Verdict> {
        let registry = &what.reference().registry;
        if let Some(o) = self.backed_off(registry, now) {
            return Err(o.verdict);
        }
        let result = match what {
            Unresolved::Tag(reference) => self.verifier.resolve(reference).await,
            Unresolved::Tie(tie) => self.verifier.tie(tie, now).await,
        };
        if let Err(v) = &result {
            self.note_failure(registry, v, now);
        }
        result
    }

    fn slot(&self, registry: &str) -> Arc<Semaphore> {
        self.slots
            .locked()
            .entry(registry.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_registry.max(1))))
            .clone()
    }

    /// While the registry backs off: `checking` with the failure's reason, in words that name
    /// no other image (a stable text, so an outage does not rewrite the status on every pass).
    fn backed_off(&self, registry: &str, now: DateTime<Utc>) -> Option<Observed> {
        let map = self.backoff.locked();
        let b = map.get(registry).filter(|b| b.until > now)?;
        let retry_in = b.until.signed_duration_since(now).to_std().ok();
        let verdict = Verdict::checking(
            b.reason,
            format!(
                "not asked: registry {} failed recently ({}); it is left alone until its backoff ends",
                crate::core::text::escape(registry),
                b.reason
            ),
        );
        drop(map);
        self.stats.locked().backed_off += 1;
        Some(Observed {
            verdict,
            source: Source::BackedOff,
            verified_at: None,
            checked_at: None,
            retry_in,
        })
    }

    /// Registry-wide failures start (or extend) a backoff; per-image answers (a bad reference,
    /// an unknown tag) do not. Returns how long the registry is left alone.
    fn note_failure(
        &self,
        registry: &str,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        // A refused credential is not the registry's state: credentials are per image (its
        // pods' pull secrets, a path-scoped `auths` entry), so one image's refusal must not
        // hold back the other images of its registry.
        if verdict.posture != Posture::Checking
            || !registry_wide(verdict.reason)
            || verdict.reason == Reason::Unauthorized
        {
            return None;
        }
        let mut map = self.backoff.locked();
        let failures = map.get(registry).map(|b| b.failures + 1).unwrap_or(1);
        let exp = self
            .config
            .backoff
            .saturating_mul(1 << (failures - 1).min(16))
            .min(self.config.max_backoff);
        let wait = verdict.retry_after.map(|r| r.max(exp)).unwrap_or(exp);
        let until = now + chrono::Duration::from_std(wait).unwrap_or_default();
        map.insert(
            registry.to_string(),
            Backoff {
                until,
                failures,
                reason: verdict.reason,
            },
        );
        Some(wait)
    }
}

/// Failures that say something about the whole registry, not one image.
pub fn registry_wide(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::RateLimited
            | Reason::RegistryError
            | Reason::RegistryUnreachable
            | Reason::Timeout
            | Reason::Unauthorized
    )
}
