//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas never both write.
//!
//! The lease names one holder and when it last renewed. A replica writes only while it holds
//! the lease; it takes over another holder's lease only after `renewTime + leaseDurationSeconds`
//! has passed. Every write carries the `resourceVersion` it read, so of two replicas racing for
//! the same lease the API server lets exactly one through and the other gets 409 and waits.
//!
//! The guarantee rests on three assumptions, which the caller must uphold:
//! - the renew interval is well under the lease duration (a third or less), so one slow or
//!   failed renewal does not lose the lease;
//! - the caller stops writing as soon as [`LeaderElector::spawn`]'s watch says `false`. The
//!   watch turns `false` no later than `lease_duration` after the start of the last successful
//!   renewal, which is no later than another replica may take over. A write already in flight
//!   at that instant is the caller's residual risk; keep writes short next to the lease;
//! - replica clocks agree to well within the lease duration: expiry of another holder's lease
//!   is judged by comparing its `renewTime` with the local clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

/// What to do with the lease as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists: create it, held by us.
    Create,
    /// We hold it: bump `renewTime`.
    Renew,
    /// Unheld (released) or expired: become the holder, counting a transition.
    TakeOver,
    /// Someone else holds a live lease.
    Wait,
}

/// Decides from the lease's spec (`None`: no lease object) what `identity` should do at `now`.
///
/// A lease held by another identity is live until `renewTime + leaseDurationSeconds`, inclusive.
/// Missing fields are read as the API's zero values, like client-go does: no holder (or an empty
/// one) means released; no `renewTime` falls back to `acquireTime`, and with neither the lease
/// asserts nothing and is expired; no `leaseDurationSeconds` means 0, so the lease expires as
/// soon as its renew time has passed.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Decision::TakeOver;
    };
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0)) * 1000;
    let expires_ms = renewed.0.as_millisecond().saturating_add(duration_ms);
    if expires_ms < now.as_millisecond() {
        Decision::TakeOver
    } else {
        Decision::Wait
    }
}

/// Competes for one Lease on behalf of one replica.
///
/// Cheap to clone (clones share the released flag): keep a clone to [`release`](Self::release)
/// the lease at shutdown after giving one to [`spawn`](Self::spawn).
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    released: Arc<AtomicBool>,
}

impl LeaderElector {
    /// `api` is namespaced (the operator's namespace); `identity` must be unique per replica
    /// (the pod name). `lease_duration` is whole seconds, at least one (the Lease field's unit).
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        lease_duration: Duration,
    ) -> Self {
        LeaderElector {
            api,
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            released: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The lease duration as written to the Lease, and as used to judge our own expiry.
    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1)
    }

    /// One election round: `Ok(true)` if we hold the lease now (created, renewed or taken over),
    /// `Ok(false)` if another replica holds it or won a concurrent write. After
    /// [`release`](Self::release), always `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        if self.is_released() {
            return Ok(false);
        }
        let current = self.api.get_opt(&self.name).await?;
        // Re-checked after the read: a concurrent release() then writes a newer resourceVersion
        // than the one we read, so whichever of the two writes lands second gets 409.
        if self.is_released() {
            return Ok(false);
        }
        let now = now_micros();
        let empty = LeaseSpec::default();
        let decision = decide(
            current.as_ref().map(|l| l.spec.as_ref().unwrap_or(&empty)),
            &self.identity,
            now,
        );
        let mut created = false;
        let result = match (decision, current) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Create, _) | (_, None) => {
                created = true;
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.lease_seconds()),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(self.lease_seconds());
                if spec.acquire_time.is_none() {
                    spec.acquire_time = Some(MicroTime(now));
                }
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::TakeOver, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                tracing::info!(
                    lease = %self.name,
                    previous = spec.holder_identity.as_deref().unwrap_or(""),
                    "taking over leader lease"
                );
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(self.lease_seconds());
                spec.acquire_time = Some(MicroTime(now));
                spec.renew_time = Some(MicroTime(now));
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                // The Lease object's resourceVersion (kept from the read) makes this conditional.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            // AlreadyExists on our own create: a retried or slow earlier create of ours may
            // have landed. The Lease then names us, and this round won it.
            Err(kube::Error::Api(status)) if created && status.code == 409 => {
                let now = self.api.get_opt(&self.name).await?;
                let holder = now
                    .as_ref()
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.holder_identity.as_deref());
                Ok(holder == Some(self.identity.as_str()) && !self.is_released())
            }
            // 409: AlreadyExists on create, Conflict on replace. Another writer won this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs the election in a task, one round every `renew_every`, and reports whether we lead.
    ///
    /// The watch turns `true` after a successful round and `false` as soon as a round says we do
    /// not hold the lease, or, when rounds fail (API errors are logged), once `lease_duration`
    /// has passed since the start of the last successful round: by then another replica may
    /// have taken over. The task ends when every receiver is dropped.
    pub fn spawn(self, renew_every: Duration) -> watch::Receiver<bool> {
        self.spawn_with_claim(renew_every).0
    }

    /// Like [`spawn`](Self::spawn), with a second watch telling until when our claim on the
    /// lease holds (`None` while not leading): writers bound each write by it, so that no
    /// write of ours can land after another replica may have taken over.
    pub fn spawn_with_claim(
        self,
        renew_every: Duration,
    ) -> (watch::Receiver<bool>, watch::Receiver<Option<Instant>>) {
        let (tx, rx) = watch::channel(false);
        let (claim_tx, claim_rx) = watch::channel(None);
        tokio::spawn(async move {
            let lease = Duration::from_secs(self.lease_seconds().unsigned_abs().into());
            // Until when our last successful round lets us claim the lease.
            let mut valid_until: Option<Instant> = None;
            loop {
                if tx.is_closed() {
                    return;
                }
                let started = Instant::now();
                // Never let a hung request outlive our claim: the watch must turn in time.
                let budget = match valid_until {
                    Some(until) => renew_every.min(until.saturating_duration_since(started)),
                    None => renew_every,
                };
                let leading = match tokio::time::timeout(budget, self.try_acquire_or_renew()).await
                {
                    Ok(Ok(true)) => {
                        valid_until = Some(started + lease);
                        // A round slower than the lease itself won nothing usable.
                        Instant::now() < started + lease
                    }
                    Ok(Ok(false)) => {
                        valid_until = None;
                        false
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(lease = %self.name, %error, "leader lease round failed");
                        valid_until.is_some_and(|until| Instant::now() < until)
                    }
                    Err(_) => {
                        tracing::warn!(lease = %self.name, "leader lease round timed out");
                        valid_until.is_some_and(|until| Instant::now() < until)
                    }
                };
                if !leading {
                    valid_until = None;
                }
                claim_tx.send_replace(valid_until.filter(|_| leading));
                report(&tx, leading, &self.name);

                let next = started + renew_every;
                if let Some(until) = valid_until.filter(|until| leading && *until < next) {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep_until(until) => {
                            valid_until = None;
                            claim_tx.send_replace(None);
                            report(&tx, false, &self.name);
                        }
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep_until(next) => {}
                }
            }
        });
        (rx, claim_rx)
    }

    /// Gives the lease up (clears the holder) so another replica need not wait for it to
    /// expire. Best effort: failures are logged, and the lease then simply expires. Afterwards
    /// this elector (and its clones, including a spawned loop) never claims the lease again.
    /// Call it only once the caller has stopped writing.
    pub async fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(false);
            };
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(false);
            };
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(now_micros()));
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await?;
            Ok::<_, kube::Error>(true)
        }
        .await;
        match result {
            Ok(true) => tracing::info!(lease = %self.name, "released leader lease"),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(lease = %self.name, %error, "could not release leader lease")
            }
        }
    }

    fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }
}

/// Sends `leading` if it changed, logging transitions.
fn report(tx: &watch::Sender<bool>, leading: bool, lease: &str) {
    tx.send_if_modified(|current| {
        if *current == leading {
            return false;
        }
        *current = leading;
        if leading {
            tracing::info!(lease, "became leader");
        } else {
            tracing::warn!(lease, "lost leadership");
        }
        true
    });
}

/// Now, at the microsecond precision a `MicroTime` keeps.
fn now_micros() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now)
}

// ---- the gate the writers hold ------------------------------------------------------------

/// Leadership as the writers see it: until when this replica's claim on the Lease holds.
/// `Gate::open()` writes unconditionally (single replica, tests).
#[derive(Clone, Debug, Default)]
pub struct Gate(Kind);

#[derive(Clone, Debug, Default)]
enum Kind {
    #[default]
    Open,
    /// `Some(valid until)` while leading.
    Claim(watch::Receiver<Option<Instant>>),
    /// Leading while `true`, with no deadline of its own (tests, the benchmark).
    Flag(watch::Receiver<bool>),
}

impl Gate {
    pub fn open() -> Self {
        Gate(Kind::Open)
    }

    /// Follows a claim watch (`Some(valid until)` while leading, see
    /// [`LeaderElector::spawn_with_claim`]).
    pub fn claim(rx: watch::Receiver<Option<Instant>>) -> Self {
        Gate(Kind::Claim(rx))
    }

    /// Open while `rx` says `true`.
    pub fn flag(rx: watch::Receiver<bool>) -> Self {
        Gate(Kind::Flag(rx))
    }

    /// How long a write may take from now: `None` when not leading.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        match &self.0 {
            Kind::Open => Some(Duration::MAX),
            Kind::Flag(rx) => rx.borrow().then_some(Duration::MAX),
            Kind::Claim(rx) => {
                let until = (*rx.borrow())?;
                let left = until.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(left)
            }
        }
    }

    pub fn leading(&self) -> bool {
        self.remaining().is_some()
    }

    /// Resolves once this replica leads (at once for an open gate).
    pub async fn gained(&self) {
        match &self.0 {
            Kind::Open => {}
            Kind::Flag(rx) => {
                let mut rx = rx.clone();
                if rx.wait_for(|leading| *leading).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            Kind::Claim(rx) => {
                let mut rx = rx.clone();
                let now = Instant::now;
                if rx.wait_for(|c| c.is_some_and(|u| u > now())).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Resolves once this replica stops leading (never for an open gate): when the watch
    /// says so, or when the claim runs out first.
    pub async fn lost(&self) {
        match &self.0 {
            Kind::Open => std::future::pending().await,
            Kind::Flag(rx) => {
                let mut rx = rx.clone();
                let _ = rx.wait_for(|leading| !*leading).await;
            }
            Kind::Claim(rx) => {
                let mut rx = rx.clone();
                loop {
                    let Some(until) = *rx.borrow_and_update() else {
                        return;
                    };
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { return },
                        _ = tokio::time::sleep_until(until) => {
                            if !rx.has_changed().unwrap_or(false) { return }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "pod-a";
    const OTHER: &str = "pod-b";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn held(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renewed.map(|s| MicroTime(at(s))),
            lease_duration_seconds: duration,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(decide(None, ME, at(0)), Decision::Create);
    }

    #[test]
    fn our_lease_is_renewed_fresh_or_expired() {
        assert_eq!(
            decide(Some(&held(Some(ME), Some(0), Some(15))), ME, at(1)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held(Some(ME), Some(0), Some(15))), ME, at(100)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held(Some(ME), None, None)), ME, at(0)),
            Decision::Renew
        );
    }

    #[test]
    fn fresh_foreign_lease_waits() {
        let spec = held(Some(OTHER), Some(0), Some(15));
        assert_eq!(decide(Some(&spec), ME, at(0)), Decision::Wait);
        assert_eq!(decide(Some(&spec), ME, at(14)), Decision::Wait);
        // Expiry is strict: at exactly renewTime + duration the lease is still live.
        assert_eq!(decide(Some(&spec), ME, at(15)), Decision::Wait);
        // A renewTime ahead of our clock (skew) is live.
        assert_eq!(decide(Some(&spec), ME, at(-100)), Decision::Wait);
    }

    #[test]
    fn expired_foreign_lease_is_taken_over() {
        let spec = held(Some(OTHER), Some(0), Some(15));
        assert_eq!(decide(Some(&spec), ME, at(16)), Decision::TakeOver);
        let just_after = at(15)
            .checked_add(k8s_openapi::jiff::SignedDuration::from_millis(1))
            .unwrap();
        assert_eq!(decide(Some(&spec), ME, just_after), Decision::TakeOver);
    }

    #[test]
    fn released_lease_is_taken_over() {
        assert_eq!(
            decide(Some(&held(None, Some(0), Some(15))), ME, at(1)),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&held(Some(""), Some(0), Some(15))), ME, at(1)),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&LeaseSpec::default()), ME, at(0)),
            Decision::TakeOver
        );
    }

    #[test]
    fn missing_times_fall_back_then_expire() {
        // No renewTime: acquireTime stands in.
        let mut spec = held(Some(OTHER), None, Some(15));
        spec.acquire_time = Some(MicroTime(at(0)));
        assert_eq!(decide(Some(&spec), ME, at(10)), Decision::Wait);
        assert_eq!(decide(Some(&spec), ME, at(16)), Decision::TakeOver);
        // Neither time: the lease asserts nothing.
        assert_eq!(
            decide(Some(&held(Some(OTHER), None, Some(15))), ME, at(0)),
            Decision::TakeOver
        );
    }

    #[test]
    fn missing_or_negative_duration_is_zero() {
        let spec = held(Some(OTHER), Some(0), None);
        assert_eq!(decide(Some(&spec), ME, at(0)), Decision::Wait);
        assert_eq!(decide(Some(&spec), ME, at(1)), Decision::TakeOver);
        let spec = held(Some(OTHER), Some(0), Some(-5));
        assert_eq!(decide(Some(&spec), ME, at(1)), Decision::TakeOver);
    }

    #[test]
    fn huge_duration_does_not_overflow() {
        let spec = held(Some(OTHER), Some(0), Some(i32::MAX));
        assert_eq!(decide(Some(&spec), ME, at(1_000_000)), Decision::Wait);
    }

    #[test]
    fn now_keeps_microseconds_only() {
        assert_eq!(now_micros().subsec_nanosecond() % 1000, 0);
    }
}
