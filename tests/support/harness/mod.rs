//! Both operator loops driven through kube's seams with a test clock: the inventory pass and
//! then one reconcile of every ImagePosture (what the Controller does over time, at once),
//! writing through a real `kube::Client` (to the real API server, or to the API double).
//!
//! Included with `mod harness;` next to `mod apidouble;` and `mod support;`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imageposture::cache::{Observer, ObserverConfig};
use imageposture::core::posture::Posture;
use imageposture::error::Error;
use imageposture::metrics::Metrics;
use imageposture::model::crd::ImagePosture;
use imageposture::operator::apply::Writer;
use imageposture::operator::controller::{self, Context, Settings};
use imageposture::operator::inventory::sweep::{SweepConfig, SweepReport, Sweeper};
use imageposture::operator::inventory::tags::TagResolver;
use imageposture::operator::leader::Gate;
use imageposture::verify::Verifier;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};

pub struct Config {
    pub observer: ObserverConfig,
    pub sweep: SweepConfig,
    pub write_timeout: Duration,
    pub gate: Gate,
    pub concurrency: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            observer: ObserverConfig::default(),
            sweep: SweepConfig::default(),
            write_timeout: imageposture::operator::apply::WRITE_TIMEOUT,
            gate: Gate::open(),
            concurrency: 8,
        }
    }
}

/// One replica of the operator: the inventory and the verification controller's context.
pub struct Operator {
    pub sweeper: Sweeper,
    pub ctx: Context,
}

/// What one pass of both loops did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub inventory: SweepReport,
    pub images: usize,
    pub unresolved: usize,
    pub invalid: usize,
    pub created: usize,
    pub deleted: usize,
    pub deferred: usize,
    /// Status applies by either manager.
    pub status_writes: usize,
    /// Main-resource applies (spec and labels) by either manager.
    pub metadata_writes: usize,
    pub events: usize,
    /// Failed writes (inventory) and reconciles that failed for another reason than the
    /// registry (whose failure is a `checking` verdict).
    pub errors: usize,
    pub aborted: bool,
    pub by_posture: Vec<(Posture, i64)>,
}

impl Report {
    pub fn api_writes(&self) -> usize {
        self.status_writes + self.metadata_writes + self.deleted + self.events
    }
}

impl Operator {
    pub async fn new(client: &kube::Client, verifier: Verifier, config: Config) -> Operator {
        let client = client.clone();
        let writer = Writer::new(Api::all(client.clone()))
            .with_gate(config.gate)
            .with_timeout(config.write_timeout);
        let observer = Arc::new(Observer::new(Arc::new(verifier), config.observer.clone()));
        let tags = TagResolver::new(observer.clone(), config.observer.ttl);
        let sweeper = Sweeper::new(writer.clone(), tags, config.sweep);
        let reporter = Reporter {
            controller: "imageposture".into(),
            instance: None,
        };
        let ctx = Context::new(
            writer,
            Recorder::new(client, reporter),
            Arc::new(Metrics::new()),
            observer,
            Settings {
                concurrency: config.concurrency,
                ..Settings::default()
            },
        );
        Operator { sweeper, ctx }
    }

    pub fn observer(&self) -> &Observer {
        &self.ctx.observer
    }

    /// The inventory pass over `pods`, then a reconcile of every ImagePosture, at `now`.
    pub async fn pass<P: imageposture::operator::inventory::PodView>(
        &self,
        api: &kube::Client,
        pods: &[Arc<P>],
        now: DateTime<Utc>,
    ) -> Report {
        let before = self.ctx.stats();
        let inv = self.sweeper.sweep(pods, &list(api).await, now).await;
        let results = controller::reconcile_pass(&self.ctx, &list(api).await, now).await;
        let after = self.ctx.stats();
        let failed = results
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Err(Error::Kube(_) | Error::WriteTimeout(_) | Error::InvalidSpec(_))
                )
            })
            .count();
        let not_leader = results.iter().any(|r| matches!(r, Err(Error::NotLeader)));
        let stored = list(api).await;
        let by_posture =
            imageposture::model::counts::posture_counts(stored.iter().map(|c| c.as_ref()));
        Report {
            images: inv.images,
            unresolved: inv.unresolved,
            invalid: inv.invalid,
            created: inv.created,
            deleted: inv.deleted,
            deferred: inv.deferred,
            status_writes: inv.status_writes
                + (after.status_writes - before.status_writes) as usize,
            metadata_writes: inv.metadata_writes
                + (after.label_writes - before.label_writes) as usize,
            events: (after.events - before.events) as usize,
            errors: inv.errors + failed,
            aborted: inv.aborted || not_leader,
            inventory: inv,
            by_posture,
        }
    }
}

/// The ImagePostures as the operator's cache would hold them now (managedFields included).
pub async fn list(api: &kube::Client) -> Vec<Arc<ImagePosture>> {
    let api: Api<ImagePosture> = Api::all(api.clone());
    let list = api
        .list(&Default::default())
        .await
        .expect("list ImagePostures");
    list.items.into_iter().map(Arc::new).collect()
}
