//! The sweep: one level-triggered, idempotent pass from pods to ImagePosture resources.
//!
//! 1. inventory: pods → distinct images (tags resolved through the observer, or retried);
//! 2. observe: every image through the observer cache;
//! 3. materialize: server-side apply of what changed only, an Event per posture change, and
//!    deletion of resources no pod has used for the grace period.
//!
//! A pass with nothing changed makes no registry request and no API write. Every write has a
//! deadline ([`WRITE_TIMEOUT`]); when the API server fails as a whole (no answer, 5xx, 429)
//! the rest of the pass, garbage collection included, is left to the next pass.

use crate::lock::LockExt as _;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{
    self, Condition, ImagePosture, ImagePostureStatus, ImageUsage, CONDITION_VERIFIED,
    FIELD_MANAGER,
};
use crate::image::ImageId;
use crate::inventory::{Inventory, NamespaceFilter, Usage};
use crate::observer::{Observed, Observer};
use crate::posture::{Posture, Reason, Verdict};

#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// How long a resource outlives the last pod using its image.
    pub grace: Duration,
    pub namespaces: NamespaceFilter,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            grace: Duration::from_secs(3600),
            namespaces: NamespaceFilter::default(),
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub images: usize,
    pub unresolved: usize,
    pub invalid: usize,
    pub created: usize,
    pub status_writes: usize,
    pub metadata_writes: usize,
    pub deleted: usize,
    pub events: usize,
    pub deferred: usize,
    pub errors: usize,
    /// Leadership was lost during the pass; the rest of it was skipped.
    pub aborted: bool,
    pub by_posture: Vec<(Posture, i64)>,
}

impl SweepReport {
    pub fn api_writes(&self) -> usize {
        self.status_writes + self.metadata_writes + self.deleted + self.events
    }
}

pub struct Sweeper {
    api: Api<ImagePosture>,
    recorder: Recorder,
    observer: Arc<Observer>,
    config: SweepConfig,
    /// When each resource was first seen unused (in memory: a restart only delays deletion).
    unused_since: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Leadership: checked before every write, so a replica that lost its Lease mid-sweep
    /// stops writing at once. `None` writes unconditionally (single replica, tests).
    gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// Deadline of one write, its client-side retries included.
    write_timeout: Duration,
}

/// Why a resource was not written.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("not the leader")]
    NotLeader,
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

impl WriteError {
    /// The API server itself is failing (no answer, 5xx, 429, transport), not this one object:
    /// the rest of the pass would only pile more failing requests onto it.
    fn server_failing(&self) -> bool {
        match self {
            WriteError::NotLeader => false,
            WriteError::Timeout(_) => true,
            WriteError::Api(kube::Error::Api(s)) => s.code >= 500 || s.code == 429,
            WriteError::Api(kube::Error::HyperError(_) | kube::Error::Service(_)) => true,
            WriteError::Api(_) => false,
        }
    }
}

/// Attempts per write when the API server answers 409 Conflict.
const CONFLICT_RETRIES: u32 = 4;

/// Default deadline of one API write. kube's client has no response timeout and retries
/// 429/503/504 up to 15 times with a backoff growing to minutes, so without a deadline one
/// unanswered write, or a 504 storm, would hold the whole sweep loop.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

impl Sweeper {
    pub fn new(
        api: Api<ImagePosture>,
        recorder: Recorder,
        observer: Arc<Observer>,
        config: SweepConfig,
    ) -> Self {
        Sweeper {
            api,
            recorder,
            observer,
            config,
            unused_since: Mutex::default(),
            gate: None,
            write_timeout: WRITE_TIMEOUT,
        }
    }

    /// Deadline of one API write, client retries included (default [`WRITE_TIMEOUT`]).
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    async fn bounded<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, WriteError> {
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(WriteError::Timeout(self.write_timeout)),
        }
    }

    /// Writes only while the watch says this replica leads.
    pub fn with_gate(mut self, gate: tokio::sync::watch::Receiver<bool>) -> Self {
        self.gate = Some(gate);
        self
    }

    fn may_write(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| *g.borrow())
    }

    fn gate(&self) -> Result<(), WriteError> {
        if self.may_write() {
            Ok(())
        } else {
            Err(WriteError::NotLeader)
        }
    }

    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Seeds the observer from what earlier runs wrote, so images verified within the TTL
    /// cause no registry traffic after a restart.
    pub fn warm_start(&self, existing: &[Arc<ImagePosture>], now: DateTime<Utc>) -> usize {
        let mut seeded = 0;
        for cr in existing {
            let Some((id, verdict, at)) = recorded_verdict(cr) else {
                continue;
            };
            self.observer.seed(id, verdict, at, now);
            seeded += 1;
        }
        seeded
    }

    pub async fn sweep(
        &self,
        pods: &[Arc<Pod>],
        existing: &[Arc<ImagePosture>],
        now: DateTime<Utc>,
    ) -> SweepReport {
        let mut report = SweepReport::default();
        if !self.may_write() {
            // Not leading: do not even spend registry requests on verdicts we may not write.
            report.aborted = true;
            return report;
        }
        let mut inv =
            Inventory::from_pods(pods.iter().map(|p| p.as_ref()), &self.config.namespaces);
        report.invalid = inv.invalid.len();
        for (reference, why) in &inv.invalid {
            tracing::warn!(
                reference = %crate::text::escape(reference),
                why = %crate::text::escape(why),
                "pod image reference does not parse"
            );
        }
        let tags: Vec<_> = inv.unresolved.keys().cloned().collect();
        for tag in tags {
            match self.observer.resolve(&tag, now).await {
                Ok(id) => inv.resolve(&tag, id),
                Err(v) => {
                    tracing::info!(image = %tag, reason = %v.reason, "tag not resolved yet; retried next pass")
                }
            }
        }
        report.unresolved = inv.unresolved.len();
        report.images = inv.images.len();

        let order = inv.by_usage();
        let observed = self.observer.observe_all(&order, now).await;
        let existing: HashMap<&str, &ImagePosture> = existing
            .iter()
            .filter(|cr| is_managed(cr))
            .map(|cr| (cr.metadata.name.as_deref().unwrap_or(""), cr.as_ref()))
            .collect();

        let mut counts: HashMap<Posture, i64> = HashMap::new();
        // Set when the API server fails as a whole: the remaining writes wait for the next pass.
        let mut server_failing = false;
        let mut skipped = 0usize;
        for id in &order {
            if !self.may_write() {
                report.aborted = true;
                tracing::warn!("leadership lost; sweep stopped before writing");
                return report;
            }
            // Both maps hold every id of `order`; a miss would be our bug, not a crash.
            let (Some(o), Some(usage)) = (observed.get(id), inv.images.get(id)) else {
                continue;
            };
            *counts.entry(o.verdict.posture).or_default() += 1;
            if o.verdict.reason == Reason::Deferred {
                report.deferred += 1;
            }
            if server_failing {
                skipped += 1;
                continue;
            }
            let name = id.resource_name();
            let current = existing.get(name.as_str()).copied();
            if let Err(e) = self
                .materialize(id, usage, o, current, now, &mut report)
                .await
            {
                report.errors += 1;
                server_failing = e.server_failing();
                tracing::warn!(image = %id, error = %e, "writing ImagePosture failed; retried next pass");
            }
        }
        if server_failing {
            tracing::warn!(
                skipped,
                "the API server is failing: the rest of this pass is left to the next one"
            );
        }
        report.by_posture = [
            Posture::Signed,
            Posture::InvalidSignature,
            Posture::NotSigned,
            Posture::Checking,
        ]
        .into_iter()
        .map(|p| (p, counts.get(&p).copied().unwrap_or(0)))
        .collect();

        if !server_failing {
            let live: HashSet<String> = order.iter().map(ImageId::resource_name).collect();
            self.collect_garbage(&existing, &live, now, &mut report)
                .await;
        }
        report
    }

    async fn materialize(
        &self,
        id: &ImageId,
        usage: &Usage,
        observed: &Observed,
        current: Option<&ImagePosture>,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> Result<(), WriteError> {
        let name = id.resource_name();
        let old_status = current.and_then(|c| c.status.as_ref());
        let status = desired_status(usage, observed, old_status, now);
        let labels = crd::labels(id, Some(observed.verdict.posture));
        let labels_match = current.is_some_and(|c| c.metadata.labels.as_ref() == Some(&labels));
        if !labels_match {
            let body = json!({
                "apiVersion": ImagePosture::api_version(&()),
                "kind": ImagePosture::kind(&()),
                "metadata": { "name": name, "labels": labels },
                "spec": crd::new_resource(id).spec,
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let patch = Patch::Apply(&body);
            self.gate()?;
            self.bounded(retry_conflicts(|| self.api.patch(&name, &params, &patch)))
                .await?;
            if current.is_none() {
                report.created += 1;
            }
            report.metadata_writes += 1;
        }
        if old_status != Some(&status) {
            let body = json!({
                "apiVersion": ImagePosture::api_version(&()),
                "kind": ImagePosture::kind(&()),
                "status": status,
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let patch = Patch::Apply(&body);
            self.gate()?;
            let written = self
                .bounded(retry_conflicts(|| {
                    self.api.patch_status(&name, &params, &patch)
                }))
                .await?;
            report.status_writes += 1;
            let old = old_status.and_then(|s| s.posture);
            if let Some(old) = old.filter(|old| *old != observed.verdict.posture) {
                self.posture_changed(&written, old, &observed.verdict, report)
                    .await;
            }
        }
        Ok(())
    }

    async fn posture_changed(
        &self,
        cr: &ImagePosture,
        old: Posture,
        new: &Verdict,
        report: &mut SweepReport,
    ) {
        let type_ = match new.posture {
            Posture::Signed | Posture::NotSigned => EventType::Normal,
            Posture::InvalidSignature | Posture::Checking => EventType::Warning,
        };
        let who = new
            .signer
            .as_deref()
            .map(|s| format!(" by {s}"))
            .unwrap_or_default();
        let note = format!(
            "{old} -> {}{who} ({}: {})",
            new.posture, new.reason, new.message
        );
        let event = Event {
            type_,
            reason: "PostureChanged".into(),
            note: Some(crate::posture::bound(&note, 1000)),
            // kube's Recorder folds events with equal (type, reason, action) into one series
            // for six minutes, keeping the first note; the transition keeps changes apart.
            action: format!("{}To{}", camel(old), camel(new.posture)),
            secondary: None,
        };
        let published = tokio::time::timeout(
            self.write_timeout,
            self.recorder.publish(&event, &cr.object_ref(&())),
        )
        .await;
        match published {
            Ok(Ok(())) => report.events += 1,
            Ok(Err(e)) => {
                report.errors += 1;
                tracing::warn!(name = %cr.name_any(), error = %e, "publishing Event failed");
            }
            Err(_) => {
                report.errors += 1;
                tracing::warn!(name = %cr.name_any(), "publishing Event timed out");
            }
        }
    }

    async fn collect_garbage(
        &self,
        existing: &HashMap<&str, &ImagePosture>,
        live: &HashSet<String>,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) {
        let due: Vec<String> = {
            let mut unused = self.unused_since.locked();
            unused.retain(|name, _| existing.contains_key(name.as_str()) && !live.contains(name));
            let grace =
                chrono::Duration::from_std(self.config.grace).unwrap_or(chrono::Duration::MAX);
            existing
                .keys()
                .filter(|name| !live.contains(**name))
                .filter(|name| {
                    let since = *unused.entry(name.to_string()).or_insert(now);
                    now.signed_duration_since(since) >= grace
                })
                .map(|n| n.to_string())
                .collect()
        };
        for name in due {
            if !self.may_write() {
                report.aborted = true;
                return;
            }
            let result = self
                .bounded(self.api.delete(&name, &DeleteParams::default()))
                .await;
            match result.map(|_| ()).or_else(|e| match e {
                WriteError::Api(ref k) if is_not_found(k) => Ok(()),
                e => Err(e),
            }) {
                Ok(()) => {
                    report.deleted += 1;
                    self.unused_since.locked().remove(&name);
                    if let Some(id) = existing.get(name.as_str()).and_then(|cr| cr_id(cr)) {
                        self.observer.forget(&id);
                    }
                    tracing::info!(%name, "deleted ImagePosture: no pod used its image for the grace period");
                }
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(%name, error = %e, "deleting ImagePosture failed; retried next pass");
                    if e.server_failing() {
                        return;
                    }
                }
            }
        }
    }
}

async fn retry_conflicts<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match write().await {
            Err(kube::Error::Api(e)) if e.is_conflict() && attempt + 1 < CONFLICT_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// `invalid-signature` → `InvalidSignature`.
fn camel(p: Posture) -> String {
    p.as_str()
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn is_managed(cr: &ImagePosture) -> bool {
    cr.labels().get(crd::LABEL_MANAGED_BY).map(String::as_str) == Some(crd::MANAGER)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The status a resource should have now. Timestamps carry over unless something changed, so
/// an unchanged image yields an identical status and therefore no write.
pub fn desired_status(
    usage: &Usage,
    observed: &Observed,
    old: Option<&ImagePostureStatus>,
    now: DateTime<Utc>,
) -> ImagePostureStatus {
    let v = &observed.verdict;
    let mut s = ImagePostureStatus::from_verdict(v);
    s.references = usage.references.iter().cloned().collect();
    s.usage = Some(ImageUsage::new(
        u32::try_from(usage.pods.len()).unwrap_or(u32::MAX),
        usage.namespaces.iter().map(String::as_str),
    ));
    s.last_verified = observed
        .verified_at
        .map(rfc3339)
        .or_else(|| old.and_then(|o| o.last_verified.clone()));
    if v.posture == Posture::Checking {
        s.checking_since = old
            .filter(|o| o.posture == Some(Posture::Checking))
            .and_then(|o| o.checking_since.clone())
            .or_else(|| Some(rfc3339(now)));
    }
    let condition = Condition::verified(v.posture, v.reason, &v.message, &rfc3339(now));
    let previous = old.and_then(|o| o.conditions.iter().find(|c| c.type_ == CONDITION_VERIFIED));
    let since = match previous {
        Some(p) if p.status == condition.status => p.last_transition_time.clone(),
        _ => condition.last_transition_time.clone(),
    };
    s.conditions = vec![Condition {
        last_transition_time: since,
        ..condition
    }];
    s.enforce_bounds();
    s
}

/// The identity a resource was written for.
fn cr_id(cr: &ImagePosture) -> Option<ImageId> {
    crate::image::ImageRef::parse(&cr.spec.image).ok()?.id()
}

/// The resting verdict a resource records, with when it was verified (for warm start).
fn recorded_verdict(cr: &ImagePosture) -> Option<(ImageId, Verdict, DateTime<Utc>)> {
    if !is_managed(cr) {
        return None;
    }
    let status = cr.status.as_ref()?;
    let posture = status.posture?;
    if !posture.is_resting() {
        return None;
    }
    let at = parse_time(status.last_verified.as_deref()?)?;
    let verdict = Verdict {
        posture,
        reason: status.reason?,
        message: status.message.clone(),
        signer: status.signer.clone(),
        issuer: status.issuer.clone(),
        signer_type: status.signer_type,
        signatures: status.signatures.clone(),
        artifact_digests: status.signature_digests.clone(),
        retry_after: None,
    };
    Some((cr_id(cr)?, verdict, at))
}
