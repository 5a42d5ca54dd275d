//! The operator's Prometheus metrics, in one place.
//!
//! One [`Metrics`] owns its own [`Registry`] (no global state), so tests and several operators in
//! one process never share counters. Every metric is an atomic handle: recording is lock-free
//! for plain metrics and takes a short read lock for labelled families, so the hot paths
//! (verification, registry I/O) can record without coordinating with the `/metrics` scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::core::posture::Posture;

/// Every posture, so a gauge family always exports all four series (a missing series reads as
/// "no data" in PromQL, not as zero).
const POSTURES: [Posture; 4] = [
    Posture::Signed,
    Posture::InvalidSignature,
    Posture::NotSigned,
    Posture::Checking,
];

/// Longest registry host kept as a label value. Hosts come from image references the cluster
/// runs, so they are bounded data, not something to trust with unbounded label size.
const MAX_HOST_LABEL: usize = 253;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PostureLabels {
    posture: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    registry: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    /// Where the credential came from: pull-secret, plugin, docker-config, anonymous.
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The operator's metrics and the registry that exports them (prefix `imageposture_`).
///
/// `Send + Sync`; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    images: Family<PostureLabels, Gauge>,
    verifications: Family<ResultLabels, Counter>,
    registry_requests: Family<RegistryLabels, Counter>,
    credential_requests: Family<SourceLabels, Counter>,
    auth_failures: Family<SourceLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    sweep_duration: Histogram,
    deferred: Gauge,
    api_writes: Family<KindLabels, Counter>,
    leader: Gauge,
    verification_duration: Histogram,
    ready: Gauge,
    reconciles: Counter,
    reconcile_failures: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    drift_images: Family<KindLabels, Gauge>,
}

/// Every drift kind, so the gauge family always exports all three series.
pub const DRIFT_KINDS: [&str; 3] = ["SignerChanged", "SignatureDropped", "SourceRefChanged"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (and zero).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("imageposture");
        let images = Family::<PostureLabels, Gauge>::default();
        let verifications = Family::<ResultLabels, Counter>::default();
        let registry_requests = Family::<RegistryLabels, Counter>::default();
        let credential_requests = Family::<SourceLabels, Counter>::default();
        let auth_failures = Family::<SourceLabels, Counter>::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        // 5ms .. ~82s: a sweep is one cache pass over every running image, mostly cache hits.
        let sweep_duration = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        let deferred = Gauge::default();
        let api_writes = Family::<KindLabels, Counter>::default();
        let leader = Gauge::default();
        // 10ms .. ~164s: one image's verification, all its registry requests included.
        let verification_duration = Histogram::new(exponential_buckets(0.01, 2.0, 15));
        let ready = Gauge::default();
        let reconciles = Counter::default();
        let reconcile_failures = Family::<ErrorLabels, Counter>::default();
        // 1ms .. ~16s: most reconciles read the status and return; a verification is slower.
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));

        // Counter names omit `_total`: the encoder appends it.
        registry.register(
            "images",
            "Running images by signing posture",
            images.clone(),
        );
        registry.register(
            "verifications",
            "Image verifications by resulting posture",
            verifications.clone(),
        );
        registry.register(
            "registry_requests",
            "Registry HTTP requests by registry host and status code (\"error\": no response)",
            registry_requests.clone(),
        );
        registry.register(
            "registry_credential_requests",
            "Registry HTTP requests by the source of the credential sent (pull-secret, plugin, \
             docker-config, anonymous)",
            credential_requests.clone(),
        );
        registry.register(
            "registry_auth_failures",
            "Credentials a registry refused (401/403, or its token endpoint refused them), by source",
            auth_failures.clone(),
        );
        registry.register("cache_hits", "Observer cache hits", cache_hits.clone());
        registry.register(
            "cache_misses",
            "Observer cache misses",
            cache_misses.clone(),
        );
        registry.register_with_unit(
            "sweep_duration",
            "Duration of one inventory pass over the running pods",
            Unit::Seconds,
            sweep_duration.clone(),
        );
        registry.register(
            "images_deferred",
            "Images not recorded because the max-images cap of ImagePosture resources is reached",
            deferred.clone(),
        );
        registry.register(
            "api_writes",
            "Kubernetes API writes by kind (apply, status, delete, event)",
            api_writes.clone(),
        );
        registry.register(
            "panics_caught",
            "Panics caught at a per-image isolation boundary (each left its image `checking`)",
            crate::core::isolate::PANICS_CAUGHT.clone(),
        );
        registry.register(
            "reconciles",
            "Verification controller reconciles (one image each)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that ended in an error, by error kind",
            reconcile_failures.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one reconcile",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease, else 0",
            leader.clone(),
        );
        registry.register_with_unit(
            "verification_duration",
            "Duration of one image verification against its registry (cache hits not included)",
            Unit::Seconds,
            verification_duration.clone(),
        );
        registry.register(
            "ready",
            "1 while /readyz answers ready (both reflectors synced), else 0",
            ready.clone(),
        );

        let drift_images = Family::<KindLabels, Gauge>::default();
        registry.register(
            "drift_images",
            "Running images departing from their repository's SignerBaseline, by drift kind",
            drift_images.clone(),
        );

        let metrics = Metrics {
            registry,
            images,
            verifications,
            registry_requests,
            credential_requests,
            auth_failures,
            cache_hits,
            cache_misses,
            sweep_duration,
            deferred,
            api_writes,
            leader,
            verification_duration,
            ready,
            reconciles,
            reconcile_failures,
            reconcile_duration,
            drift_images,
        };
        metrics.set_images(&[]);
        for source in ["pull-secret", "plugin", "docker-config", "anonymous"] {
            drop(
                metrics
                    .auth_failures
                    .get_or_create(&SourceLabels { source }),
            );
        }
        metrics.set_drift(&[]);
        metrics
    }

    /// Sets the per-posture image counts; postures not listed are set to 0. Repeated postures add.
    pub fn set_images(&self, counts: &[(Posture, i64)]) {
        for posture in POSTURES {
            let n = counts
                .iter()
                .filter(|(p, _)| *p == posture)
                .map(|(_, n)| *n)
                .sum();
            self.images
                .get_or_create(&PostureLabels {
                    posture: posture.as_str(),
                })
                .set(n);
        }
    }

    /// Sets the images drifting by kind ([`DRIFT_KINDS`]); kinds not listed are set to 0.
    pub fn set_drift(&self, counts: &[(&str, i64)]) {
        for kind in DRIFT_KINDS {
            let n = counts
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| *n)
                .sum();
            self.drift_images
                .get_or_create(&KindLabels {
                    kind: kind.to_string(),
                })
                .set(n);
        }
    }

    /// Records one verification that ended in `posture`.
    pub fn verification(&self, posture: Posture) {
        self.verifications
            .get_or_create(&ResultLabels {
                result: posture.as_str(),
            })
            .inc();
    }

    /// Records one registry request; `code` 0 means no HTTP response (labelled `error`).
    pub fn registry_request(&self, host: &str, code: u16) {
        let code = if code == 0 {
            "error".to_owned()
        } else {
            code.to_string()
        };
        let registry = host.chars().take(MAX_HOST_LABEL).collect();
        self.registry_requests
            .get_or_create(&RegistryLabels { registry, code })
            .inc();
    }

    /// One registry request sent with a credential of `source`.
    pub fn credential_request(&self, source: &'static str) {
        self.credential_requests
            .get_or_create(&SourceLabels { source })
            .inc();
    }

    /// A credential of `source` refused by a registry.
    pub fn auth_failure(&self, source: &'static str) {
        self.auth_failures
            .get_or_create(&SourceLabels { source })
            .inc();
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// Records how long one sweep took.
    pub fn sweep_duration(&self, secs: f64) {
        self.sweep_duration.observe(secs);
    }

    /// Sets how many images the max-images cap is currently holding back.
    pub fn set_deferred(&self, n: i64) {
        self.deferred.set(n);
    }

    /// Records one Kubernetes API write of `kind` (`apply`, `status`, `delete`, `event`).
    pub fn api_write(&self, kind: &str) {
        self.api_writes
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Records one reconcile: how long it took and, when it failed, the error's label.
    pub fn reconcile(&self, secs: f64, failure: Option<&'static str>) {
        self.reconciles.inc();
        self.reconcile_duration.observe(secs);
        if let Some(error) = failure {
            self.reconcile_failures
                .get_or_create(&ErrorLabels { error })
                .inc();
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records how long one verification took (its result is counted by [`Metrics::verification`]).
    pub fn verification_duration(&self, secs: f64) {
        self.verification_duration.observe(secs);
    }

    /// Mirrors `/readyz`, so an alert can tell "running but not ready" from "not scraped".
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an Err could only come from a metric's own encoder.
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_registry_exports_every_posture_as_zero() {
        let text = Metrics::new().encode();
        for p in POSTURES {
            let line = format!("imageposture_images{{posture=\"{}\"}} 0\n", p.as_str());
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("imageposture_leader 0\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn encode_reports_recorded_values() {
        let m = Metrics::new();
        m.set_images(&[(Posture::Signed, 3), (Posture::NotSigned, 2)]);
        m.set_images(&[(Posture::Signed, 5), (Posture::Checking, 1)]);
        m.verification(Posture::Signed);
        m.verification(Posture::Signed);
        m.verification(Posture::InvalidSignature);
        m.registry_request("ghcr.io", 200);
        m.registry_request("ghcr.io", 0);
        m.registry_request("ghcr.io", 0);
        m.cache_hit();
        m.cache_hit();
        m.cache_miss();
        m.sweep_duration(0.004);
        m.sweep_duration(1.0);
        m.set_deferred(7);
        m.api_write("apply");
        m.api_write("status");
        m.api_write("apply");
        m.set_leader(true);
        m.verification_duration(0.5);
        m.set_ready(true);
        m.reconcile(0.002, None);
        m.reconcile(0.5, Some("registry"));
        let text = m.encode();

        for line in [
            "imageposture_images{posture=\"signed\"} 5\n",
            "imageposture_images{posture=\"not-signed\"} 0\n",
            "imageposture_images{posture=\"checking\"} 1\n",
            "imageposture_images{posture=\"invalid-signature\"} 0\n",
            "# TYPE imageposture_verifications counter\n",
            "imageposture_verifications_total{result=\"signed\"} 2\n",
            "imageposture_verifications_total{result=\"invalid-signature\"} 1\n",
            "imageposture_registry_requests_total{registry=\"ghcr.io\",code=\"200\"} 1\n",
            "imageposture_registry_requests_total{registry=\"ghcr.io\",code=\"error\"} 2\n",
            "imageposture_cache_hits_total 2\n",
            "imageposture_cache_misses_total 1\n",
            "# UNIT imageposture_sweep_duration_seconds seconds\n",
            "imageposture_sweep_duration_seconds_count 2\n",
            "imageposture_sweep_duration_seconds_bucket{le=\"0.005\"} 1\n",
            "imageposture_sweep_duration_seconds_bucket{le=\"+Inf\"} 2\n",
            "imageposture_images_deferred 7\n",
            "imageposture_api_writes_total{kind=\"apply\"} 2\n",
            "imageposture_api_writes_total{kind=\"status\"} 1\n",
            "imageposture_leader 1\n",
            "imageposture_verification_duration_seconds_count 1\n",
            "imageposture_ready 1\n",
            "imageposture_reconciles_total 2\n",
            "imageposture_reconcile_failures_total{error=\"registry\"} 1\n",
            "imageposture_reconcile_duration_seconds_count 2\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn long_registry_hosts_are_bounded() {
        let m = Metrics::new();
        m.registry_request(&"a".repeat(1000), 404);
        let text = m.encode();
        assert!(text.contains(&format!("registry=\"{}\"", "a".repeat(MAX_HOST_LABEL))));
        assert!(!text.contains(&"a".repeat(MAX_HOST_LABEL + 1)));
    }
}
