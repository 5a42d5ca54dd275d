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
//!
//! [`reconcile`] reads top to bottom in [`Context::reconcile_at`]. What it asks of the verdict
//! cache is the [`Verdicts`] trait, so the unit tests below drive it with a fake cache.

use crate::core::lock::LockExt as _;
use std::collections::HashMap;
use std::future::Future;
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

use crate::cache::{registry_wide, Busy, Observed, Observer, Source};
use crate::core::image::{ImageId, ImageRef};
use crate::core::posture::{Posture, Reason, Verdict};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::crd::{ImagePosture, ImagePostureStatus};
use crate::model::fields::{self, FIELD_MANAGER_VERIFIER, LABEL_POSTURE, VERDICT_FIELDS};
use crate::model::status::Recorded;
use crate::operator::apply::Writer;
use crate::operator::ownership::{self, Part};
use crate::operator::waiting::Waiting;

/// What the controller asks of the verdict cache ([`Observer`] in the operator, a fake in the
/// unit tests).
pub trait Verdicts: Send + Sync + 'static {
    /// The image's verdict at `now`: the recorded one within its TTL, revalidated, or verified;
    /// [`Busy`] at once when every verification slot of its registry is taken.
    fn observe(
        &self,
        id: &ImageId,
        leads: &[ImageRef],
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = std::result::Result<Observed, Busy>> + Send;

    /// How long a confirmed verdict rests before it is revalidated.
    fn ttl(&self) -> Duration;
}

impl Verdicts for Observer {
    fn observe(
        &self,
        id: &ImageId,
        leads: &[ImageRef],
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = std::result::Result<Observed, Busy>> + Send {
        self.try_observe_with(id, leads, recorded, now)
    }

    fn ttl(&self) -> Duration {
        self.config().ttl
    }
}

/// How the controller paces itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconciles in flight at once (`controller::Config::concurrency`).
    pub concurrency: u16,
    /// When an image whose registry slots were all taken is tried again if no freed slot
    /// woke it first (see [`crate::operator::waiting`]).
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
pub struct Context<O = Observer> {
    pub writer: Writer,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub observer: Arc<O>,
    pub settings: Settings,
    /// Images waiting for a slot of their registry.
    pub waiting: Waiting,
    /// Consecutive failures by resource name, with the last one's time, for the per-object
    /// backoff. Bounded: an entry not refreshed for twice the longest backoff is dropped (its
    /// object was deleted; one still failing is retried, and so refreshed, within it).
    failures: Mutex<HashMap<String, (u32, std::time::Instant)>>,
    stats: Mutex<Stats>,
}

/// The Controller's reconcile: one image, at the wall clock.
pub async fn reconcile(cr: Arc<ImagePosture>, ctx: Arc<Context>) -> Result<Action> {
    ctx.reconcile_at(&cr, Utc::now()).await
}

impl<O: Verdicts> Context<O> {
    pub fn new(
        writer: Writer,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        observer: Arc<O>,
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

    /// One reconcile at `now` (the Controller passes the wall clock; tests pass their own),
    /// timed and counted.
    #[instrument(skip_all, fields(image = %cr.spec.image))]
    pub async fn reconcile_at(&self, cr: &ImagePosture, now: DateTime<Utc>) -> Result<Action> {
        let started = std::time::Instant::now();
        let result = self.verify(cr, now).await;
        self.account(cr, started.elapsed(), &result);
        result
    }

    /// The reconcile, top to bottom.
    async fn verify(&self, cr: &ImagePosture, now: DateTime<Utc>) -> Result<Action> {
        // 1. Only the replica holding the Lease verifies, since only it may write.
        if !self.writer.may_write() {
            return Err(Error::NotLeader);
        }
        // 2. The identity. A runtime digest not tied to a manifest is none: the inventory
        //    states why (`DigestUnknown`); nothing to verify, and no registry request.
        if cr.spec.untied.is_some() {
            return Ok(Action::await_change());
        }
        let id = cr
            .image_id()
            .ok_or_else(|| Error::InvalidSpec(crate::core::text::escape(&cr.spec.image)))?;
        // 3. What the status records, unless another manager wrote a verdict field.
        let recorded = trusted_record(cr);
        // 4. The verdict now, from the cache (a full registry parks the image).
        let observed = self.observe(cr, &id, recorded.as_ref(), now).await?;
        // 5. The registry is backing off and the status already says `checking`: leave it.
        if let Some(wait) = leave_alone(cr.status.as_ref(), &observed) {
            return Err(wait);
        }
        // 6. The verdict fields and the posture label, where they differ from ours.
        self.apply_verdict(cr, &observed, now).await?;
        // 7. When to look again.
        next_visit(&observed, now, self.observer.ttl(), &self.settings)
    }

    /// Asks the cache; when every slot of the registry is taken the image waits in
    /// [`Waiting`] for one to free (or the error policy's fallback requeue).
    async fn observe(
        &self,
        cr: &ImagePosture,
        id: &ImageId,
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
    ) -> Result<Observed> {
        let leads = cr.leads();
        let Ok(observed) = self.observer.observe(id, &leads, recorded, now).await else {
            self.waiting.park(&id.registry, &cr.name_any());
            return Err(Error::RegistryBusy);
        };
        // This image's turn came; the next waiter of its registry may have a slot now (a
        // spare wake-up costs one reconcile that parks again, a lost one a fallback requeue).
        self.waiting.unpark(&cr.name_any());
        self.waiting.wake_one(&id.registry);
        Ok(observed)
    }

    /// Metrics, counters and the per-object failure count of one reconcile.
    fn account(&self, cr: &ImagePosture, elapsed: Duration, result: &Result<Action>) {
        let label = result.as_ref().err().map(Error::metric_label);
        self.metrics.reconcile(elapsed.as_secs_f64(), label);
        let mut stats = self.stats.locked();
        stats.runs += 1;
        match result {
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
            note: Some(crate::core::posture::bound(&note, 1000)),
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
        let (n, at) = failures.entry(name.to_string()).or_insert((0, now));
        *n = n.saturating_add(1);
        *at = now;
        self.settings
            .error_backoff
            .saturating_mul(1 << (*n - 1).min(16))
            .min(self.settings.max_error_backoff)
    }
}

/// The verdict the status records, unless a verdict field was written by another manager
/// (and not shared with us): that is not ours to trust, and the image is verified again.
fn trusted_record(cr: &ImagePosture) -> Option<Recorded> {
    let foreign = ownership::foreign_only(cr, FIELD_MANAGER_VERIFIER, Part::Status);
    let tampered = VERDICT_FIELDS.iter().any(|f| foreign.contains(*f));
    cr.status
        .as_ref()
        .filter(|_| !tampered)
        .and_then(|s| s.recorded())
}

/// The registry is backing off and the status already says `checking` in its own words (not
/// the inventory's `Pending`): nothing to write; the registry is left alone meanwhile.
fn leave_alone(old: Option<&ImagePostureStatus>, observed: &Observed) -> Option<Error> {
    let checking = old.and_then(|s| s.posture) == Some(Posture::Checking);
    let was_pending = old.and_then(|s| s.reason) == Some(Reason::Pending);
    (observed.source == Source::BackedOff && checking && !was_pending).then(|| Error::Registry {
        reason: observed.verdict.reason,
        retry_in: observed.retry_in,
    })
}

/// When to look again: a resting verdict after the rest of its TTL; a registry-wide failure
/// through the error policy (the registry's own backoff); any other `checking` after the
/// longest per-object backoff.
fn next_visit(
    observed: &Observed,
    now: DateTime<Utc>,
    ttl: Duration,
    settings: &Settings,
) -> Result<Action> {
    let v = &observed.verdict;
    if v.posture.is_resting() {
        let left = observed
            .checked_at
            .map(|at| {
                let age = now.signed_duration_since(at).to_std().unwrap_or_default();
                ttl.saturating_sub(age)
            })
            .unwrap_or(ttl);
        Ok(Action::requeue(left.max(Duration::from_secs(1))))
    } else if registry_wide(v.reason) {
        Err(Error::Registry {
            reason: v.reason,
            retry_in: observed.retry_in,
        })
    } else {
        Ok(Action::requeue(settings.max_error_backoff))
    }
}

/// Backs off per object; a registry failure waits at least for the registry's own backoff
/// (`Retry-After` included); a full registry is tried again shortly.
pub fn error_policy<O: Verdicts>(
    cr: Arc<ImagePosture>,
    error: &Error,
    ctx: Arc<Context<O>>,
) -> Action {
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
    let selector = format!("{}={}", fields::LABEL_MANAGED_BY, fields::MANAGER);
    let config = controller::Config::default().concurrency(settings.concurrency);
    use kube::runtime::WatchStreamExt as _;
    // The cache every loop reads keeps managedFields compacted (see `ownership::compact`).
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = watcher(api, watcher::Config::default().labels(&selector))
        .modify(crate::operator::ownership::compact);
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
pub async fn reconcile_pass<O: Verdicts>(
    ctx: &Context<O>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tie::{Tie, Untied};
    use crate::model::crd;
    use crate::operator::leader::Gate;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use kube::runtime::events::Reporter;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A cache that answers what the test says and remembers the records it was handed.
    struct Fake {
        answer: std::result::Result<Observed, Busy>,
        asked: Mutex<Vec<Option<Recorded>>>,
    }

    impl Verdicts for Fake {
        fn observe(
            &self,
            _id: &ImageId,
            _leads: &[ImageRef],
            recorded: Option<&Recorded>,
            _now: DateTime<Utc>,
        ) -> impl Future<Output = std::result::Result<Observed, Busy>> + Send {
            self.asked.locked().push(recorded.cloned());
            let answer = self.answer.clone();
            async move { answer }
        }

        fn ttl(&self) -> Duration {
            Duration::from_secs(3600)
        }
    }

    fn fake(answer: std::result::Result<Observed, Busy>) -> Fake {
        Fake {
            answer,
            asked: Mutex::default(),
        }
    }

    /// A context whose writes go to an API server that is not there: a reconcile that writes
    /// fails with a client error, never with the answers asserted below.
    fn context(cache: Fake, leading: bool) -> Arc<Context<Fake>> {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(leading);
        let writer = Writer::new(Api::all(client.clone()))
            .with_gate(Gate::flag(rx))
            .with_timeout(Duration::from_secs(2));
        let reporter = Reporter {
            controller: "test".into(),
            instance: None,
        };
        Arc::new(Context::new(
            writer,
            Recorder::new(client, reporter),
            Arc::new(Metrics::new()),
            Arc::new(cache),
            Settings::default(),
        ))
    }

    fn image() -> ImagePosture {
        let id = ImageRef::parse(&format!("ghcr.io/acme/app@{D}"))
            .unwrap()
            .id()
            .unwrap();
        crd::new_resource(&id)
    }

    fn now() -> DateTime<Utc> {
        crd::parse_time("2026-01-01T12:00:00Z").unwrap()
    }

    fn signed() -> Verdict {
        Verdict {
            posture: Posture::Signed,
            reason: Reason::Verified,
            message: String::new(),
            signer: Some("ci@example.com".into()),
            issuer: Some("https://issuer.example".into()),
            signer_type: None,
            signatures: Vec::new(),
            artifact_digests: Default::default(),
            retry_after: None,
        }
    }

    fn observed(verdict: Verdict, source: Source, checked_at: Option<DateTime<Utc>>) -> Observed {
        Observed {
            verdict,
            source,
            verified_at: checked_at,
            checked_at,
            retry_in: None,
        }
    }

    #[tokio::test]
    async fn a_standby_neither_asks_nor_writes() {
        let ctx = context(fake(Err(Busy)), false);
        let r = ctx.reconcile_at(&image(), now()).await;
        assert!(matches!(r, Err(Error::NotLeader)), "{r:?}");
        assert!(ctx.observer.asked.locked().is_empty());
        assert_eq!(ctx.stats().runs, 1);
        assert_eq!(ctx.stats().failures, 1);
    }

    #[tokio::test]
    async fn an_untied_digest_is_never_verified() {
        let ctx = context(fake(Err(Busy)), true);
        let cr = crd::untied_resource(&Tie {
            reference: ImageRef::parse("ghcr.io/acme/app:1").unwrap(),
            running: Untied::Foreign(D.into()),
        });
        let r = ctx.reconcile_at(&cr, now()).await;
        assert_eq!(r.unwrap(), Action::await_change());
        assert!(ctx.observer.asked.locked().is_empty());
    }

    #[tokio::test]
    async fn a_full_registry_parks_the_image_without_failing() {
        let ctx = context(fake(Err(Busy)), true);
        let r = ctx.reconcile_at(&image(), now()).await;
        assert!(matches!(r, Err(Error::RegistryBusy)), "{r:?}");
        assert_eq!(ctx.waiting.len(), 1);
        assert_eq!(ctx.stats().failures, 0, "busy is not a failure");
        assert_eq!(
            error_policy(Arc::new(image()), &Error::RegistryBusy, ctx.clone()),
            Action::requeue(Settings::default().busy_retry)
        );
    }

    #[tokio::test]
    async fn a_backed_off_registry_leaves_a_checking_status_alone() {
        let checking = Verdict::checking(Reason::RegistryUnreachable, "down");
        let mut answer = observed(checking.clone(), Source::BackedOff, None);
        answer.retry_in = Some(Duration::from_secs(30));
        let ctx = context(fake(Ok(answer.clone())), true);
        let mut cr = image();
        cr.status = Some(ImagePostureStatus::verdict_fields(
            &checking,
            None,
            None,
            None,
            now(),
        ));
        let r = ctx.reconcile_at(&cr, now()).await;
        assert!(
            matches!(
                r,
                Err(Error::Registry {
                    reason: Reason::RegistryUnreachable,
                    retry_in: Some(d)
                }) if d == Duration::from_secs(30)
            ),
            "{r:?}"
        );
        assert_eq!(ctx.stats().status_writes, 0);
        // Still the inventory's `Pending`: the controller states its own `checking` (and so
        // tries to write, which fails here with a client error instead).
        cr.status = Some(ImagePostureStatus::pending(now()));
        assert!(leave_alone(cr.status.as_ref(), &answer).is_none());
        let r = ctx.reconcile_at(&cr, now()).await;
        assert!(!matches!(r, Err(Error::Registry { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn a_recorded_verdict_is_handed_over_only_when_ours() {
        let ctx = context(fake(Err(Busy)), true);
        let mut cr = image();
        let at = now() - chrono::Duration::minutes(5);
        cr.status = Some(ImagePostureStatus::verdict_fields(
            &signed(),
            Some(at),
            Some(at),
            None,
            at,
        ));
        let _ = ctx.reconcile_at(&cr, now()).await;
        cr.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl-edit".into()),
            operation: Some("Update".into()),
            subresource: Some("status".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(json!({"f:status": {"f:signer": {}}}))),
            ..Default::default()
        }]);
        let _ = ctx.reconcile_at(&cr, now()).await;
        let asked = ctx.observer.asked.locked().clone();
        assert_eq!(asked.len(), 2);
        let first = asked[0].as_ref().expect("our own record is trusted");
        assert_eq!(first.verdict.signer.as_deref(), Some("ci@example.com"));
        assert_eq!(first.checked_at, at);
        assert!(
            asked[1].is_none(),
            "a signer someone else wrote is verified again"
        );
    }

    #[test]
    fn a_resting_verdict_comes_back_when_its_ttl_runs_out() {
        let ttl = Duration::from_secs(3600);
        let s = Settings::default();
        let ten_ago = now() - chrono::Duration::minutes(10);
        let fresh = observed(signed(), Source::Hit, Some(ten_ago));
        assert_eq!(
            next_visit(&fresh, now(), ttl, &s).unwrap(),
            Action::requeue(Duration::from_secs(50 * 60))
        );
        let old = observed(
            signed(),
            Source::Hit,
            Some(now() - chrono::Duration::hours(2)),
        );
        assert_eq!(
            next_visit(&old, now(), ttl, &s).unwrap(),
            Action::requeue(Duration::from_secs(1))
        );
        let never = observed(signed(), Source::Verified, None);
        assert_eq!(
            next_visit(&never, now(), ttl, &s).unwrap(),
            Action::requeue(ttl)
        );
    }

    #[test]
    fn checking_goes_to_the_error_policy_only_for_the_whole_registry() {
        let ttl = Duration::from_secs(3600);
        let s = Settings::default();
        let mut down = observed(
            Verdict::checking(Reason::RateLimited, "429"),
            Source::Verified,
            None,
        );
        down.retry_in = Some(Duration::from_secs(7));
        let r = next_visit(&down, now(), ttl, &s);
        assert!(
            matches!(r, Err(Error::Registry { reason: Reason::RateLimited, retry_in: Some(d) }) if d == Duration::from_secs(7)),
            "{r:?}"
        );
        let one = observed(
            Verdict::checking(Reason::DigestUnknown, "x"),
            Source::Verified,
            None,
        );
        assert_eq!(
            next_visit(&one, now(), ttl, &s).unwrap(),
            Action::requeue(s.max_error_backoff)
        );
    }

    #[tokio::test]
    async fn the_per_object_backoff_doubles_up_to_its_cap() {
        let ctx = context(fake(Err(Busy)), true);
        let registry = Error::Registry {
            reason: Reason::RegistryError,
            retry_in: Some(Duration::from_secs(60)),
        };
        let wait = |name: &str, e: &Error| {
            let mut cr = image();
            cr.metadata.name = Some(name.into());
            error_policy(Arc::new(cr), e, ctx.clone())
        };
        let waits: Vec<Action> = (0..9).map(|_| wait("a", &Error::NotLeader)).collect();
        let secs = [5, 10, 20, 40, 80, 160, 300, 300, 300];
        let want: Vec<Action> = secs
            .iter()
            .map(|s| Action::requeue(Duration::from_secs(*s)))
            .collect();
        assert_eq!(waits, want);
        // The registry's own backoff when longer, the object's when that is.
        assert_eq!(
            wait("b", &registry),
            Action::requeue(Duration::from_secs(60))
        );
        assert_eq!(
            wait("a", &registry),
            Action::requeue(Duration::from_secs(300))
        );
    }
}
