//! The observer: a cache in front of the verifier, so an unchanged image costs no I/O.
//!
//! - Resting postures are cached for a TTL, keyed by `registry/repository@digest`. After the
//!   TTL, the digests of the signature listings are compared first (HEAD requests); only a
//!   change, or any doubt, triggers a full verification.
//! - `checking` is never cached; it puts the registry into backoff (honouring `Retry-After`)
//!   so a struggling registry is not hammered, and is retried on a later pass.
//! - At most `max_images` images are tracked; the overflow is deferred visibly (`checking`,
//!   reason `Deferred`), never silently dropped.
//! - Seeded from existing ImagePosture status after a restart (warm start).
//! - Time is passed in, so tests drive the clock.

use crate::lock::LockExt as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use tokio::sync::Semaphore;

use crate::image::{ImageId, ImageRef};
use crate::metrics::Metrics;
use crate::posture::{Posture, Reason, Verdict};
use crate::verify::Verifier;

#[derive(Clone, Debug)]
pub struct ObserverConfig {
    /// How long a resting posture is trusted before it is verified again.
    pub ttl: Duration,
    /// Images tracked at once.
    pub max_images: usize,
    /// Verifications in flight at once.
    pub concurrency: usize,
    /// Verifications in flight at once against one registry.
    pub per_registry: usize,
    /// First backoff after a registry failure; doubles per failure up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        ObserverConfig {
            ttl: Duration::from_secs(6 * 3600),
            max_images: 5000,
            concurrency: 8,
            per_registry: 4,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// What the observer knows about one image now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub verdict: Verdict,
    /// When the verdict was reached by a real verification (cached or just now).
    pub verified_at: Option<DateTime<Utc>>,
    /// A verification ran during this call.
    pub fresh: bool,
}

#[derive(Clone)]
struct Entry {
    verdict: Verdict,
    /// When the verdict was reached by a full verification.
    verified_at: DateTime<Utc>,
    /// When it was last confirmed (verified, or revalidated unchanged): the TTL runs from here.
    checked_at: DateTime<Utc>,
}

struct Backoff {
    until: DateTime<Utc>,
    failures: u32,
    verdict: Verdict,
}

/// Counters the operator exports; kept here so tests can read them without Prometheus.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserverStats {
    pub hits: u64,
    pub misses: u64,
    /// Expired entries confirmed unchanged by their artifact digests (no download).
    pub revalidated: u64,
    pub deferred: u64,
}

pub struct Observer {
    verifier: Arc<Verifier>,
    config: ObserverConfig,
    cache: Mutex<HashMap<ImageId, Entry>>,
    tags: Mutex<HashMap<ImageRef, (ImageId, DateTime<Utc>)>>,
    backoff: Mutex<HashMap<String, Backoff>>,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Verifications in flight across all registries.
    global: Semaphore,
    stats: Mutex<ObserverStats>,
    metrics: Option<Arc<Metrics>>,
}

impl Observer {
    pub fn new(verifier: Arc<Verifier>, config: ObserverConfig) -> Self {
        Observer {
            verifier,
            global: Semaphore::new(config.concurrency.max(1)),
            config,
            cache: Mutex::default(),
            tags: Mutex::default(),
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

    pub fn stats(&self) -> ObserverStats {
        *self.stats.locked()
    }

    pub fn cached(&self) -> usize {
        self.cache.locked().len()
    }

    fn expired(&self, verified_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let age = now.signed_duration_since(verified_at);
        age.to_std().map(|a| a >= self.config.ttl).unwrap_or(false)
    }

    /// Warm start: adopt a resting verdict recorded in a CR (within the TTL it is a cache hit;
    /// past it, a cheap revalidation).
    pub fn seed(
        &self,
        id: ImageId,
        verdict: Verdict,
        verified_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        if !verdict.posture.is_resting() || verified_at > now {
            return;
        }
        let mut cache = self.cache.locked();
        if cache.len() < self.config.max_images || cache.contains_key(&id) {
            // An expired seed is still useful: it is revalidated by digest, not re-downloaded.
            cache.insert(
                id,
                Entry {
                    verdict,
                    verified_at,
                    checked_at: verified_at,
                },
            );
        }
    }

    /// Drops an image no pod uses any more.
    pub fn forget(&self, id: &ImageId) {
        self.cache.locked().remove(id);
    }

    /// The current digest of a tag, cached for the TTL.
    pub async fn resolve(
        &self,
        reference: &ImageRef,
        now: DateTime<Utc>,
    ) -> Result<ImageId, Verdict> {
        if let Some((id, at)) = self.tags.locked().get(reference) {
            if !self.expired(*at, now) {
                return Ok(id.clone());
            }
        }
        if let Some(v) = self.backing_off(&reference.registry, now) {
            return Err(v);
        }
        let result = self.verifier.resolve(reference).await;
        match &result {
            Ok(id) => {
                self.tags
                    .locked()
                    .insert(reference.clone(), (id.clone(), now));
            }
            Err(v) => self.note_failure(&reference.registry, v, now),
        }
        result
    }

    /// Observes images, most important first: cache hits cost nothing; misses are verified
    /// with bounded concurrency (overall and per registry) while the cap allows.
    pub async fn observe_all(
        &self,
        ids: &[ImageId],
        now: DateTime<Utc>,
    ) -> HashMap<ImageId, Observed> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut admitted = Vec::new();
        {
            let cache = self.cache.locked();
            let mut stats = self.stats.locked();
            // Tracked images keep their slot; new ones fill what is left of the cap.
            let mut free = self.config.max_images.saturating_sub(cache.len());
            for id in ids {
                match cache.get(id) {
                    Some(e) if !self.expired(e.checked_at, now) => {
                        stats.hits += 1;
                        if let Some(m) = &self.metrics {
                            m.cache_hit();
                        }
                        out.insert(
                            id.clone(),
                            Observed {
                                verdict: e.verdict.clone(),
                                verified_at: Some(e.verified_at),
                                fresh: false,
                            },
                        );
                    }
                    Some(_) => admitted.push(id.clone()),
                    None if free > 0 => {
                        free -= 1;
                        admitted.push(id.clone());
                    }
                    None => {
                        stats.deferred += 1;
                        out.insert(
                            id.clone(),
                            Observed {
                                verdict: Verdict::checking(
                                    Reason::Deferred,
                                    format!(
                                        "deferred: the max-images cap ({}) is reached; raise --max-images",
                                        self.config.max_images
                                    ),
                                ),
                                verified_at: None,
                                fresh: false,
                            },
                        );
                    }
                }
            }
        }
        // Every admitted image waits for a slot of its registry first and only then for a global
        // slot, so a slow registry holds at most `per_registry` of the global slots and cannot
        // starve the others.
        let verified = join_all(admitted.into_iter().map(|id| async move {
            let observed = self.verify_one(&id, now).await;
            (id, observed)
        }))
        .await;
        out.extend(verified);
        out
    }

    async fn verify_one(&self, id: &ImageId, now: DateTime<Utc>) -> Observed {
        if let Some(verdict) = self.backing_off(&id.registry, now) {
            return Observed {
                verdict,
                verified_at: None,
                fresh: false,
            };
        }
        let slot = self
            .slots
            .locked()
            .entry(id.registry.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_registry.max(1))))
            .clone();
        let _registry_slot = slot.acquire().await.ok();
        let _global_slot = self.global.acquire().await.ok();
        // Another image of this registry may have failed while we waited.
        if let Some(verdict) = self.backing_off(&id.registry, now) {
            return Observed {
                verdict,
                verified_at: None,
                fresh: false,
            };
        }
        let expired = self.cache.locked().get(id).cloned();
        if let Some(entry) = expired {
            if self
                .verifier
                .unchanged(id, &entry.verdict.artifact_digests)
                .await
            {
                self.stats.locked().revalidated += 1;
                if let Some(e) = self.cache.locked().get_mut(id) {
                    e.checked_at = now;
                }
                return Observed {
                    verdict: entry.verdict,
                    verified_at: Some(entry.verified_at),
                    fresh: false,
                };
            }
        }
        self.stats.locked().misses += 1;
        let started = std::time::Instant::now();
        let verdict = self.verifier.observe_task(id).await;
        if let Some(m) = &self.metrics {
            m.cache_miss();
            m.verification(verdict.posture);
            m.verification_duration(started.elapsed().as_secs_f64());
        }
        if verdict.posture.is_resting() {
            self.backoff.locked().remove(&id.registry);
            let mut cache = self.cache.locked();
            if cache.len() < self.config.max_images || cache.contains_key(id) {
                cache.insert(
                    id.clone(),
                    Entry {
                        verdict: verdict.clone(),
                        verified_at: now,
                        checked_at: now,
                    },
                );
            }
            Observed {
                verdict,
                verified_at: Some(now),
                fresh: true,
            }
        } else {
            self.note_failure(&id.registry, &verdict, now);
            Observed {
                verdict,
                verified_at: None,
                fresh: true,
            }
        }
    }

    fn backing_off(&self, registry: &str, now: DateTime<Utc>) -> Option<Verdict> {
        let map = self.backoff.locked();
        // The failure that started the backoff, unchanged: a stable message keeps the CR
        // from being rewritten on every pass of an outage.
        map.get(registry)
            .filter(|b| b.until > now)
            .map(|b| b.verdict.clone())
    }

    /// Registry-wide failures start (or extend) a backoff; per-image answers (a bad reference,
    /// an unknown tag) do not.
    fn note_failure(&self, registry: &str, verdict: &Verdict, now: DateTime<Utc>) {
        if verdict.posture != Posture::Checking
            || !matches!(
                verdict.reason,
                Reason::RateLimited
                    | Reason::RegistryError
                    | Reason::RegistryUnreachable
                    | Reason::Timeout
                    | Reason::Unauthorized
            )
        {
            return;
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
                verdict: verdict.clone(),
            },
        );
    }
}
