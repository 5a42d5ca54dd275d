//! The baseline loop ([`Baseliner`]): learns SignerBaselines, states `status.drift` of every
//! ImagePosture of a repository with a baseline, keeps the baselines' status. What a baseline
//! is and how an image is judged against it is [`crate::model::baseline`].

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::core::lock::LockExt as _;
use crate::core::posture::bound;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::model::crd::{rfc3339, ImagePosture};
use crate::model::fields::{LABEL_MANAGED_BY, MANAGER};
use crate::operator::apply::Writer;

use crate::model::baseline::*;

// ---- the loop -------------------------------------------------------------------------------

/// What one baseline pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub created: usize,
    pub drift_writes: usize,
    pub baseline_writes: usize,
    pub events: usize,
    pub errors: usize,
    /// Images drifting by kind after the pass.
    pub drifting: BTreeMap<DriftKind, usize>,
}

/// The baseline loop: learns baselines, states `status.drift`, keeps baseline status. Writes
/// through the Lease-gated [`Writer`] only.
pub struct Baseliner {
    pub writer: Writer,
    pub api: Api<SignerBaseline>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The departure last announced per ImagePosture (by uid or name), so a cache that has not
    /// caught up with our own drift write yet does not announce it twice.
    announced: std::sync::Mutex<BTreeMap<String, (DriftKind, Option<String>)>>,
}

impl Baseliner {
    pub fn new(
        writer: Writer,
        api: Api<SignerBaseline>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        Baseliner {
            writer,
            api,
            recorder,
            metrics,
            announced: Default::default(),
        }
    }

    /// One pass over the ImagePostures and SignerBaselines as the caches hold them, at `now`.
    pub async fn pass(
        &self,
        postures: &[Arc<ImagePosture>],
        baselines: &[Arc<SignerBaseline>],
        now: DateTime<Utc>,
    ) -> PassReport {
        let mut report = PassReport::default();
        let mut repos: BTreeMap<String, Vec<&ImagePosture>> = BTreeMap::new();
        for cr in postures.iter().filter(|c| c.is_managed()) {
            repos
                .entry(cr.spec.repository.clone())
                .or_default()
                .push(cr.as_ref());
        }
        let known = by_repository(baselines.iter().map(|b| b.as_ref()));
        for (repo, images) in &repos {
            let created;
            let baseline: Option<&SignerBaseline> = match known.get(repo) {
                Some(b) => Some(*b),
                None => {
                    created = match learn(repo, images, now) {
                        Some((spec, from)) => match self.create(spec, from, now).await {
                            Ok(Some(b)) => {
                                report.created += 1;
                                Some(b)
                            }
                            // Made meanwhile (by our earlier pass, not yet in the cache, or
                            // by a person): judged from the cache next pass.
                            Ok(None) => None,
                            Err(e) => {
                                tracing::warn!(repository = %repo, error = %e, "cannot create the SignerBaseline");
                                report.errors += 1;
                                None
                            }
                        },
                        None => None,
                    };
                    created.as_ref()
                }
            };
            let mut judged: Vec<(&ImagePosture, Option<Drift>)> = Vec::new();
            for cr in images {
                let old = cr.status.as_ref().and_then(|s| s.drift.as_ref());
                let drift = match baseline {
                    Some(b) => drift_for(
                        judge(cr.status.as_ref(), &b.spec),
                        &b.name_any(),
                        &b.spec.identities,
                        old,
                        now,
                    ),
                    None => None,
                };
                // The cache already reads as desired: nothing to compare field by field (the
                // common case, kept cheap for a pass over every image).
                if old != drift.as_ref() {
                    match self.state_drift(cr, drift.as_ref()).await {
                        Ok(writes) => report.drift_writes += writes,
                        Err(e) => {
                            tracing::warn!(image = %cr.spec.image, error = %e, "cannot write the drift");
                            report.errors += 1;
                        }
                    }
                }
                if let Some(d) = &drift {
                    *report.drifting.entry(d.kind).or_default() += 1;
                    let key = cr.uid().unwrap_or_else(|| cr.name_any());
                    let this = (d.kind, d.signer.clone());
                    let new = old.is_none_or(|o| o.kind != d.kind || o.signer != d.signer)
                        && self.announced.locked().get(&key) != Some(&this);
                    if new {
                        match self.announce(cr, d, baseline).await {
                            Ok(()) => {
                                report.events += 1;
                                let mut announced = self.announced.locked();
                                // Bounded: forgotten entries only cost a repeated Event.
                                if announced.len() >= MAX_ANNOUNCED {
                                    announced.clear();
                                }
                                announced.insert(key, this);
                            }
                            Err(e) => {
                                tracing::warn!(image = %cr.spec.image, error = %e, "cannot publish the SignerDrift Event");
                                report.errors += 1;
                            }
                        }
                    }
                }
                if drift.is_none() {
                    let key = cr.uid().unwrap_or_else(|| cr.name_any());
                    self.announced.locked().remove(&key);
                }
                judged.push((cr, drift));
            }
            if let Some(b) = baseline {
                let pairs: Vec<(&ImagePosture, Option<&Drift>)> =
                    judged.iter().map(|(c, d)| (*c, d.as_ref())).collect();
                let status = baseline_status(b, &pairs, now);
                if b.status.as_ref() != Some(&status) {
                    match self.write_status(&b.name_any(), &status).await {
                        Ok(()) => report.baseline_writes += 1,
                        Err(e) => {
                            tracing::warn!(baseline = %b.name_any(), error = %e, "cannot write the SignerBaseline status");
                            report.errors += 1;
                        }
                    }
                }
            }
        }
        let counts: Vec<(&str, i64)> = report
            .drifting
            .iter()
            .map(|(k, n)| (k.as_str(), i64::try_from(*n).unwrap_or(i64::MAX)))
            .collect();
        self.metrics.set_drift(&counts);
        report
    }

    /// Creates a learned baseline (POST: an existing one, even one a person wrote a moment
    /// ago, is never overwritten); its status (`learnedFrom`, `learnedAt`) is returned, for
    /// the pass to write.
    async fn create(
        &self,
        spec: SignerBaselineSpec,
        from: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Option<SignerBaseline>> {
        let name = baseline_name(&spec.repository);
        let mut b = SignerBaseline::new(&name, spec);
        b.metadata.labels = Some(BTreeMap::from([(
            LABEL_MANAGED_BY.to_string(),
            MANAGER.to_string(),
        )]));
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER_DRIFT.to_string()),
            ..PostParams::default()
        };
        let mut created = match self.writer.within(self.api.create(&params, &b)).await {
            Ok(c) => c,
            // It exists: whoever made it, it stands as it is.
            Err(crate::error::Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        self.metrics.api_write("baseline");
        // What it was learned from goes with the rest of its status, in the pass's one
        // status write.
        let status = SignerBaselineStatus {
            learned_from: from,
            learned_at: Some(rfc3339(now)),
            ..Default::default()
        };
        tracing::info!(baseline = %name, repository = %created.spec.repository,
            identities = created.spec.identities.len(), "SignerBaseline learned");
        created.status = Some(status);
        Ok(Some(created))
    }

    async fn write_status(&self, name: &str, status: &SignerBaselineStatus) -> Result<()> {
        let body = json!({
            "apiVersion": SignerBaseline::api_version(&()),
            "kind": SignerBaseline::kind(&()),
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER_DRIFT).force();
        self.writer
            .within(self.api.patch_status(name, &params, &Patch::Apply(&body)))
            .await?;
        self.metrics.api_write("baseline-status");
        Ok(())
    }

    /// Makes `status.drift` of `cr` read `drift` (absent: none), writing only on change.
    async fn state_drift(&self, cr: &ImagePosture, drift: Option<&Drift>) -> Result<usize> {
        let desired = match drift {
            Some(d) => json!({ "drift": d }),
            None => json!({}),
        };
        let synced = self
            .writer
            .sync_status(
                &cr.name_any(),
                Some(cr),
                DRIFT_FIELDS,
                desired,
                FIELD_MANAGER_DRIFT,
            )
            .await?;
        for _ in 0..synced.writes {
            self.metrics.api_write("drift");
        }
        Ok(synced.writes)
    }

    /// The Warning Event `SignerDrift` naming the old and the new identity.
    async fn announce(
        &self,
        cr: &ImagePosture,
        d: &Drift,
        baseline: Option<&SignerBaseline>,
    ) -> Result<()> {
        let accepted = baseline
            .map(|b| quoted(&b.spec.identities).join(", "))
            .unwrap_or_default();
        let note = match d.kind {
            DriftKind::SignatureDropped => format!(
                "{}: {} (usually signed by {accepted})",
                d.kind,
                crate::core::text::escape(&d.message)
            ),
            _ => format!(
                "{}: signed by {} (ref {}); accepted: {accepted}",
                d.kind,
                crate::core::text::escape(d.signer.as_deref().unwrap_or("?")),
                crate::core::text::escape(d.source_ref.as_deref().unwrap_or("-")),
            ),
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "SignerDrift".into(),
            note: Some(bound(&note, 1024)),
            action: "Judge".into(),
            secondary: None,
        };
        self.writer.publish(&self.recorder, &event, cr).await?;
        self.metrics.api_write("event");
        Ok(())
    }
}
