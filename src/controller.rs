//! The verification controller: a `kube::runtime::Controller<ImagePosture>` that verifies or
//! revalidates one image per reconcile and applies the verdict fields as field manager
//! [`FIELD_MANAGER_VERIFIER`].
//!
//! The status is the cache: within the TTL of `lastChecked` a reconcile reads the status and
//! returns with no outbound call; after it, the signature listings are revalidated by their
//! digests; only a change (or any doubt) costs a full verification. A posture change emits an
//! Event. A resting verdict is requeued for the rest of its TTL; a registry failure goes to
//! [`error_policy`], which backs off per object and honours the registry's backoff
//! (`Retry-After` included).

use crate::lock::LockExt as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::instrument;

use crate::apply::Writer;
use crate::crd::{
    self, ImagePosture, ImagePostureStatus, FIELD_MANAGER_VERIFIER, LABEL_POSTURE, VERDICT_FIELDS,
};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::observer::{registry_wide, Observed, Observer, Source};
use crate::ownership::{self, Part};
use crate::posture::{Posture, Reason, Verdict};
use crate::waiting::Waiting;

/// How the controller paces itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconciles in flight at once (`controller::Config::concurrency`).
    pub concurrency: u16,
    /// When an image whose registry slots were all taken is tried again if no freed slot
    /// woke it first (see [`crate::waiting`]).
    pub busy_retry: Duration,
    /// First per-object backoff after a failed reconcile; doubles per failure up to the max.
    pub error_backoff: Duration,
    pub max_error_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 8,
            busy_retry: Duration::from_secs(5),
            error_backoff: Duration::from_secs(5),
            max_error_backoff: Duration::from_secs(300),
        }
    }
}

/// What reconciles did, for tests and the benchmark (the operator exports metrics instead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub runs: u64,
    pub failures: u64,
    pub status_writes: u64,
    pub label_writes: u64,
    pub events: u64,
}

/// Everything a reconcile needs: one per controller.
pub struct Context {
    pub writer: Writer,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub observer: Arc<Observer>,
    pub settings: Settings,
    /// Images waiting for a slot of their registry.
    pub waiting: Waiting,
    /// Consecutive failures by resource name, with the last one's time, for the per-object
    /// backoff. Bounded: an entry not refreshed for twice the longest backoff is dropped (its
    /// object was deleted; one still failing is retried, and so refreshed, within it).
    failures: Mutex<HashMap<String, (u32, std::time::Instant)>>,
    stats: Mutex<Stats>,
}

impl Context {
    pub fn new(
        writer: Writer,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        observer: Arc<Observer>,
        settings: Settings,
    ) -> Self {
        Context {
            writer,
            recorder,
            metrics,
            observer,
            settings,
            waiting: Waiting::default(),
            failures: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        *self.stats.locked()
    }

    /// One reconcile at `now` (the Controller passes the wall clock; tests pass their own).
    #[instrument(skip_all, fields(image = %cr.spec.image))]
    pub async fn reconcile_at(&self, cr: &ImagePosture, now: DateTime<Utc>) -> Result<Action> {
        let started = std::time::Instant::now();
        let result = self.reconcile_inner(cr, now).await;
        let label = result.as_ref().err().map(Error::metric_label);
        self.metrics
            .reconcile(started.elapsed().as_secs_f64(), label);
        let mut stats = self.stats.locked();
        stats.runs += 1;
        match &result {
            Ok(_) => {
                drop(stats);
                self.failures.locked().remove(&cr.name_any());
            }
            Err(Error::RegistryBusy) => {}
            Err(e) => {
                stats.failures += 1;
                tracing::debug!(error = %e, "reconcile failed");
            }
        }
        result
    }

    async fn reconcile_inner(&self, cr: &ImagePosture, now: DateTime<Utc>) -> Result<Action> {
        if !self.writer.may_write() {
            return Err(Error::NotLeader);
        }
        if cr.spec.untied.is_some() {
            // Not a manifest identity: the inventory states why (`DigestUnknown`); nothing to
            // verify, and no registry request.
            return Ok(Action::await_change());
        }
        let id = cr
            .image_id()
            .ok_or_else(|| Error::InvalidSpec(crate::text::escape(&cr.spec.image)))?;
        let old = cr.status.as_ref();
        // A verdict field some other manager wrote (and we do not share) is not ours to
        // trust: verify again.
        let foreign = ownership::foreign_only(cr, FIELD_MANAGER_VERIFIER, Part::Status);
        let tampered = VERDICT_FIELDS.iter().any(|f| foreign.contains(*f));
        let recorded = old.filter(|_| !tampered).and_then(|s| s.recorded());
        let leads = cr.leads();
        let observed = self
            .observer
            .try_observe_with(&id, &leads, recorded.as_ref(), now)
            .await;
        let Ok(observed) = observed else {
            self.waiting.park(&id.registry, &cr.name_any());
            return Err(Error::RegistryBusy);
        };
        // This image's turn came; the next waiter of its registry may have a slot now (a
        // spare wake-up costs one reconcile that parks again, a lost one a fallback requeue).
        self.waiting.unpark(&cr.name_any());
        self.waiting.wake_one(&id.registry);
        let old_posture = old.and_then(|s| s.posture);
        let was_pending = old.and_then(|s| s.reason) == Some(Reason::Pending);
        if observed.source == Source::BackedOff
            && old_posture == Some(Posture::Checking)
            && !was_pending
        {
            // Already `checking` in its own words; the registry is left alone meanwhile.
            return Err(Error::Registry {
                reason: observed.verdict.reason,
                retry_in: observed.retry_in,
            });
        }
        self.apply_verdict(cr, &observed, now).await?;
        let v = &observed.verdict;
        if v.posture.is_resting() {
            let left = observed
                .checked_at
                .map(|at| {
                    let age = now.signed_duration_since(at).to_std().unwrap_or_default();
                    self.observer.config().ttl.saturating_sub(age)
                })
                .unwrap_or(self.observer.config().ttl);
            Ok(Action::requeue(left.max(Duration::from_secs(1))))
        } else if registry_wide(v.reason) {
            Err(Error::Registry {
                reason: v.reason,
                retry_in: observed.retry_in,
            })
        } else {
            Ok(Action::requeue(self.settings.max_error_backoff))
        }
    }

    /// Applies the verdict fields and the posture label, only where they differ from what this
    /// manager owns, clearing verdict fields another manager left behind.
    async fn apply_verdict(
        &self,
        cr: &ImagePosture,
        observed: &Observed,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let name = cr.name_any();
        let old = cr.status.as_ref();
        let v = &observed.verdict;
        let desired = ImagePostureStatus::verdict_fields(
            v,
            observed.verified_at,
            observed.checked_at,
            old,
            now,
        );
        let desired_json = serde_json::to_value(&desired).unwrap_or_default();
        let synced = self
            .writer
            .sync_status(
                &name,
                Some(cr),
                VERDICT_FIELDS,
                desired_json,
                FIELD_MANAGER_VERIFIER,
            )
            .await?;
        if synced.writes > 0 {
            self.stats.locked().status_writes += synced.writes as u64;
            for _ in 0..synced.writes {
                self.metrics.api_write("status");
            }
        }
        if let Some(written) = &synced.written {
            let old_posture = old.and_then(|s| s.posture);
            let was_pending = old.and_then(|s| s.reason) == Some(Reason::Pending);
            if let Some(before) = old_posture.filter(|p| *p != v.posture && !was_pending) {
                self.posture_changed(written, before, v).await;
            }
        }
        let label = v.posture.as_str();
        let owned_labels = ownership::owned(cr, FIELD_MANAGER_VERIFIER, Part::Labels);
        let label_ok = cr.labels().get(LABEL_POSTURE).map(String::as_str) == Some(label)
            && owned_labels.is_none_or(|o| o.contains(LABEL_POSTURE));
        if !label_ok {
            let body = json!({ "metadata": { "name": name, "labels": { LABEL_POSTURE: label } } });
            self.writer
                .apply(&name, body, FIELD_MANAGER_VERIFIER)
                .await?;
            self.stats.locked().label_writes += 1;
            self.metrics.api_write("apply");
        }
        Ok(())
    }

    async fn posture_changed(&self, cr: &ImagePosture, old: Posture, new: &Verdict) {
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
        match self.writer.publish(&self.recorder, &event, cr).await {
            Ok(()) => {
                self.stats.locked().events += 1;
                self.metrics.api_write("event");
            }
            Err(e) => tracing::warn!(name = %cr.name_any(), error = %e, "publishing Event failed"),
        }
    }

    /// Per-object backoff after a failed reconcile.
    fn backoff(&self, name: &str) -> Duration {
        let now = std::time::Instant::now();
        let stale = self.settings.max_error_backoff.saturating_mul(2);
        let mut failures = self.failures.locked();
        if failures.len() >= 1024 && failures.len().is_power_of_two() {
            failures.retain(|_, (_, at)| now.saturating_duration_since(*at) < stale);
        }
        let (n, at) = failures
            .entry(name.to_string())
            .or_insert((0, now));
        *n = n.saturating_add(1);
        *at = now;
        self.settings
            .error_backoff
            .saturating_mul(1 << (*n - 1).min(16))
            .min(self.settings.max_error_backoff)
    }
}

/// The Controller's reconcile: one image, at the wall clock.
pub async fn reconcile(cr: Arc<ImagePosture>, ctx: Arc<Context>) -> Result<Action> {
    ctx.reconcile_at(&cr, Utc::now()).await
}

/// Backs off per object; a registry failure waits at least for the registry's own backoff
/// (`Retry-After` included); a full registry is tried again shortly.
pub fn error_policy(cr: Arc<ImagePosture>, error: &Error, ctx: Arc<Context>) -> Action {
    match error {
        Error::RegistryBusy => Action::requeue(ctx.settings.busy_retry),
        Error::Registry { retry_in, .. } => {
            let own = ctx.backoff(&cr.name_any());
            Action::requeue(retry_in.map_or(own, |r| r.max(own)))
        }
        _ => Action::requeue(ctx.backoff(&cr.name_any())),
    }
}

/// The Controller over every ImagePosture carrying our managed-by label.
pub fn build(api: Api<ImagePosture>, settings: &Settings) -> Controller<ImagePosture> {
    let selector = format!("{}={}", crd::LABEL_MANAGED_BY, crd::MANAGER);
    let config = controller::Config::default().concurrency(settings.concurrency);
    use kube::runtime::WatchStreamExt as _;
    // The cache every loop reads keeps managedFields compacted (see `ownership::compact`).
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = watcher(api, watcher::Config::default().labels(&selector))
        .modify(crate::ownership::compact);
    let stream = kube::runtime::reflector(writer, objects).applied_objects();
    Controller::for_stream(stream, reader).with_config(config)
}

/// Runs the Controller until its stream ends (it is dropped when leadership is lost).
pub async fn drive(controller: Controller<ImagePosture>, ctx: Arc<Context>) {
    let woken = ctx
        .waiting
        .subscribe()
        .map(|name| ObjectRef::<ImagePosture>::new(&name));
    controller
        .reconcile_on(woken)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
}

/// What the Controller does over time, at once: every object reconciled at `now`, at most
/// `concurrency` at a time, an image whose registry is busy tried again until all are done.
/// For the benchmark and the tests, which drive the clock.
pub async fn reconcile_pass(
    ctx: &Context,
    objects: &[Arc<ImagePosture>],
    now: DateTime<Utc>,
) -> Vec<Result<Action>> {
    let mut pending: Vec<usize> = (0..objects.len()).collect();
    let mut results: Vec<Option<Result<Action>>> = objects.iter().map(|_| None).collect();
    let concurrency = usize::from(ctx.settings.concurrency.max(1));
    while !pending.is_empty() {
        let done: Vec<(usize, Result<Action>)> = futures::stream::iter(pending.iter().copied())
            .filter_map(|i| async move { objects.get(i).map(|cr| (i, cr)) })
            .map(|(i, cr)| async move { (i, ctx.reconcile_at(cr, now).await) })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        pending.clear();
        for (i, r) in done {
            if matches!(r, Err(Error::RegistryBusy)) {
                pending.push(i);
            } else if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
        if !pending.is_empty() {
            tokio::task::yield_now().await;
        }
    }
    results.into_iter().flatten().collect()
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
