//! `imageposture run`: the operator process. A pod reflector feeds the inventory loop
//! (debounced, level-triggered, with a periodic resync); the verification controller reconciles
//! each ImagePosture. Both run only while this replica holds the Lease, and stop at once when
//! it is lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::cache::{Observer, ObserverConfig};
use crate::cli::RunArgs;
use crate::core::lock::LockExt;
use crate::metrics::Metrics;
use crate::model::baseline::SignerBaseline;
use crate::model::crd::ImagePosture;
use crate::operator::apply::Writer;
use crate::operator::baseline::Baseliner;
use crate::operator::controller::{self, Context, Settings};
use crate::operator::inventory::sweep::{SweepConfig, SweepReport, Sweeper};
use crate::operator::inventory::tags::TagResolver;
use crate::operator::inventory::{LeanPod, NamespaceFilter, PodIndex};
use crate::operator::leader::Gate;
use crate::operator::leader::LeaderElector;
use crate::operator::pod_feed::PodFeed;
use crate::operator::policy_reports::{write_reports, ReportWriter};
use crate::operator::pull_secrets::PullSecretSource;
use crate::operator::server::{self, Health};
use crate::verify::{AuthEvent, CredSource, Extras, PullSecrets, Verifier};

pub async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let in_cluster = crate::cli::in_cluster();
    let client = connect().await?;
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tokio::spawn(server::serve(listener, metrics.clone(), health.clone()));

    let hook_metrics = metrics.clone();
    let mut verifier_config = args.verify.config();
    verifier_config.trust_refresh = args.trust_root_refresh;
    let auth_metrics = metrics.clone();
    // What pods run: watched by every replica, so a new leader starts with a synced index.
    // Lean pods, straight from the watch stream (see `inventory::pod`); each event updates the
    // pod index by difference. The pods themselves are kept (in a reflector store) only when
    // pull secrets need them.
    let filter = NamespaceFilter {
        include: args.include_namespaces.clone(),
        exclude: args.exclude_namespaces.clone(),
    };
    // Who runs what per namespace is kept only for the PolicyReports.
    let index = Arc::new(Mutex::new(if args.policy_reports {
        PodIndex::with_owners(filter.clone())
    } else {
        PodIndex::new(filter.clone())
    }));
    let (pod_store, pod_writer) = if args.pull_secrets {
        let (store, writer) = reflector::store::<LeanPod>();
        (Some(store), Some(writer))
    } else {
        (None, None)
    };
    let pull_secrets: Option<Arc<dyn PullSecrets>> = pod_store.clone().map(|pods| {
        tracing::info!(
            "pull secrets: reading the imagePullSecrets pods and their ServiceAccounts name"
        );
        Arc::new(PullSecretSource::new(client.clone(), pods)) as Arc<dyn PullSecrets>
    });
    let verifier = Verifier::with_extras(
        verifier_config,
        Extras {
            request_hook: Some(Box::new(move |host: &str, code: u16| {
                hook_metrics.registry_request(host, code)
            })),
            auth_hook: Some(Box::new(
                move |source: CredSource, event: AuthEvent| match event {
                    AuthEvent::Request => auth_metrics.credential_request(source.as_str()),
                    AuthEvent::Refused => auth_metrics.auth_failure(source.as_str()),
                },
            )),
            pull_secrets,
        },
    )
    .await?;
    let observer = Arc::new(
        Observer::new(
            Arc::new(verifier),
            ObserverConfig {
                ttl: args.ttl,
                per_registry: args.registry_concurrency,
                budget: args.verify.image_timeout,
                ..ObserverConfig::default()
            },
        )
        .with_metrics(metrics.clone()),
    );
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("imageposture-{}", std::process::id()));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "imageposture".into(),
            instance: Some(identity.clone()),
        },
    );
    let changed = Arc::new(Notify::new());
    let pod_events = watcher(
        Api::<LeanPod>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let pod_events = match pod_writer {
        Some(writer) => pod_events.reflect(writer).boxed(),
        None => pod_events.boxed(),
    };
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let feed = PodFeed {
        index: index.clone(),
        synced: synced.clone(),
    };
    tokio::spawn(crate::operator::pod_feed::index_pods(
        pod_events,
        index.clone(),
        changed.clone(),
        synced_tx,
    ));
    // Signer baselines: watched from the first time this replica leads (after the CRDs are
    // installed), and from then on while standing by too. Readiness does not wait for them (a
    // cluster without the SignerBaseline CRD runs everything but signer drift).
    let baselines_changed = Arc::new(Notify::new());
    let (baselines, baseline_writer) = reflector::store::<SignerBaseline>();
    let mut baseline_writer = Some(baseline_writer);
    {
        // Ready once the first pod list is in; resources are created from its first pages.
        let (health, index, mut synced) = (health.clone(), index.clone(), synced.clone());
        tokio::spawn(async move {
            if synced.wait_for(|s| *s).await.is_ok() {
                health.set_ready(true);
                tracing::info!(pods = index.locked().len(), "pod index synced");
            }
        });
    }

    let lease_namespace = args.lease_namespace(in_cluster);
    let (elector, gate) = if args.leader_election {
        tracing::info!(namespace = %lease_namespace, lease = %args.lease_name, "leader election");
        let elector = LeaderElector::new(
            Api::<Lease>::namespaced(client.clone(), &lease_namespace),
            args.lease_name.clone(),
            identity.clone(),
            args.lease_duration,
        );
        let (leading, claim) = elector.clone().spawn_with_claim(args.lease_duration / 3);
        (Some((elector, leading)), Gate::claim(claim))
    } else {
        (None, Gate::open())
    };
    let writer = Writer::new(Api::all(client.clone())).with_gate(gate.clone());
    let tags = TagResolver::new(observer.clone(), args.ttl);
    let reports = args.policy_reports.then(|| ReportWriter {
        client: client.clone(),
        index: index.clone(),
        writer: writer.clone(),
        tags: tags.clone(),
        written: Mutex::new(None),
    });
    let sweeper = Sweeper::new(
        writer.clone(),
        tags.clone(),
        SweepConfig {
            grace: args.grace,
            namespaces: NamespaceFilter {
                include: args.include_namespaces.clone(),
                exclude: args.exclude_namespaces.clone(),
            },
            max_images: args.max_images,
        },
    );
    let baseliner = Baseliner::new(
        writer.clone(),
        Api::all(client.clone()),
        recorder.clone(),
        metrics.clone(),
    );
    let ctx = Arc::new(Context::new(
        writer,
        recorder,
        metrics.clone(),
        observer,
        Settings {
            concurrency: u16::try_from(args.verify.concurrency.max(1)).unwrap_or(u16::MAX),
            ..Settings::default()
        },
    ));

    let mut shutdown = std::pin::pin!(crate::operator::signals::shutdown_signal());
    let mut crd_installed = false;
    loop {
        // Standby: wait to lead (or to stop).
        tokio::select! {
            _ = &mut shutdown => break,
            _ = gate.gained() => {}
        }
        // A standby writes nothing, the CRD included: a replica of another version must not
        // rewrite the schema under the leader.
        if args.install_crd(in_cluster) && !crd_installed {
            crate::operator::install::install_crd(&client).await?;
            crd_installed = true;
            tracing::info!("the ImagePosture CRD is Established");
            crate::operator::install::install_baseline_crd(&client).await;
        }
        if let Some(writer) = baseline_writer.take() {
            let events = watcher(
                Api::<SignerBaseline>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .reflect(writer);
            tokio::spawn(drive(
                events,
                "signerbaselines",
                Some(baselines_changed.clone()),
            ));
        }
        metrics.set_leader(true);
        tracing::info!("leading: inventory loop and verification controller started");
        let loops = async {
            let verification = controller::build(Api::all(client.clone()), &ctx.settings);
            // The inventory reads the controller's own cache of ImagePostures: one watch.
            let postures = verification.store();
            tokio::join!(
                inventory_loop(
                    &sweeper,
                    feed.clone(),
                    &postures,
                    &metrics,
                    &changed,
                    &args,
                    reports.as_ref(),
                ),
                controller::drive(verification, ctx.clone()),
                count_postures(&postures, &metrics),
                baseline_loop(&baseliner, &postures, &baselines, &baselines_changed),
            );
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = gate.lost() => {
                metrics.set_leader(false);
                tracing::warn!("leadership lost: both loops stopped");
            }
            _ = loops => {}
        }
    }
    metrics.set_leader(false);
    if let Some((elector, _leading)) = &elector {
        elector.release().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The client `kube::Client::try_default` would build (the current kubeconfig context, else the
/// in-cluster service account), logging which cluster it talks to: a laptop run must say
/// which cluster it is about to write to.
async fn connect() -> Result<Client, Box<dyn std::error::Error>> {
    let config = kube::Config::infer().await?;
    let context = kube::config::Kubeconfig::read()
        .ok()
        .and_then(|k| k.current_context);
    match context {
        Some(context) => {
            tracing::info!(%context, cluster = %config.cluster_url, "using the current kubeconfig context")
        }
        None => {
            tracing::info!(cluster = %config.cluster_url, "using the in-cluster service account")
        }
    }
    Ok(Client::try_from(config)?)
}

/// The inventory loop: a pass once the ImagePosture cache is synced, then after every burst of
/// pod changes, every resolved tag and every resync period.
async fn inventory_loop(
    sweeper: &Sweeper,
    mut feed: PodFeed,
    postures: &Store<ImagePosture>,
    metrics: &Metrics,
    changed: &Notify,
    args: &RunArgs,
    reports: Option<&ReportWriter>,
) {
    if postures.wait_until_ready().await.is_err() {
        return;
    }
    // The first pod list still arriving: resources for what its pages name so far.
    while !feed.is_synced() {
        let inventory = feed.inventory();
        if !inventory.images.is_empty() {
            let report = sweeper
                .create_listed(inventory, &postures.state(), chrono::Utc::now())
                .await;
            for _ in 0..report.metadata_writes {
                metrics.api_write("apply");
            }
            for _ in 0..report.status_writes {
                metrics.api_write("status");
            }
            tracing::info!(
                created = report.created,
                "resources created from the first pages of the pod list"
            );
        }
        tokio::select! {
            _ = feed.synced.changed() => {}
            _ = changed.notified() => {}
        }
    }
    let resolved = sweeper.tags().resolved();
    loop {
        sweep_once(sweeper, &feed, postures, metrics).await;
        if let Some(reports) = reports {
            write_reports(reports, postures, metrics).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(args.resync) => {}
            _ = resolved.notified() => {}
            _ = changed.notified() => {
                // Debounce: let a burst of pod events settle into one pass.
                tokio::time::sleep(args.debounce).await;
            }
        }
    }
}

/// How often the baseline loop judges every image when nothing it reads changed.
const BASELINE_PERIOD: Duration = Duration::from_secs(60);
/// How often the baseline loop looks whether a verdict changed (a cheap pass over the cache).
const BASELINE_POLL: Duration = Duration::from_secs(1);

/// The baseline loop: learns SignerBaselines on first use and keeps `status.drift` of every
/// ImagePosture, from the controller's cache of ImagePostures: after a verdict changes, after
/// a baseline changes (a person accepted a signer), else every [`BASELINE_PERIOD`].
async fn baseline_loop(
    baseliner: &Baseliner,
    postures: &Store<ImagePosture>,
    baselines: &Store<SignerBaseline>,
    changed: &Notify,
) {
    if postures.wait_until_ready().await.is_err() {
        return;
    }
    if baselines.wait_until_ready().await.is_err() {
        return;
    }
    let mut last: Option<u64> = None;
    let mut last_pass = tokio::time::Instant::now();
    loop {
        let now_verdicts = verdicts_fingerprint(&postures.state());
        let due = last != Some(now_verdicts) || last_pass.elapsed() >= BASELINE_PERIOD;
        if due {
            last = Some(now_verdicts);
            last_pass = tokio::time::Instant::now();
            let report = baseliner
                .pass(&postures.state(), &baselines.state(), chrono::Utc::now())
                .await;
            if report.created + report.drift_writes + report.baseline_writes + report.errors > 0 {
                tracing::info!(
                    created = report.created,
                    drift_writes = report.drift_writes,
                    baseline_writes = report.baseline_writes,
                    events = report.events,
                    errors = report.errors,
                    "baseline pass done"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(BASELINE_POLL) => {}
            _ = changed.notified() => {
                // A baseline changed: judge again at once.
                last = None;
            }
        }
    }
}

/// A hash of what the baseline loop judges (each resource's verdict), so an unchanged cache
/// costs no pass; the drift the loop writes itself does not count.
fn verdicts_fingerprint(postures: &[Arc<ImagePosture>]) -> u64 {
    use std::hash::{Hash, Hasher};
    // Summed per resource: the cache's order does not matter.
    let mut sum = postures.len() as u64;
    for cr in postures {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        cr.metadata.uid.hash(&mut h);
        if let Some(s) = &cr.status {
            s.posture.hash(&mut h);
            s.last_verified.hash(&mut h);
            s.signatures.len().hash(&mut h);
        }
        sum = sum.wrapping_add(h.finish());
    }
    sum
}

/// Keeps `imageposture_images{posture}` current from the ImagePosture cache.
async fn count_postures(postures: &Store<ImagePosture>, metrics: &Metrics) {
    if postures.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        let counts =
            crate::model::counts::posture_counts(postures.state().iter().map(|cr| cr.as_ref()));
        metrics.set_images(&counts);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn sweep_once(
    sweeper: &Sweeper,
    feed: &PodFeed,
    postures: &Store<ImagePosture>,
    metrics: &Metrics,
) {
    let started = std::time::Instant::now();
    let inventory = feed.inventory();
    let report: SweepReport = sweeper
        .sweep_inventory(inventory, &postures.state(), chrono::Utc::now())
        .await;
    metrics.sweep_duration(started.elapsed().as_secs_f64());
    metrics.set_deferred(i64::try_from(report.deferred).unwrap_or(i64::MAX));
    for (kind, n) in [
        ("status", report.status_writes),
        ("apply", report.metadata_writes),
        ("delete", report.deleted),
    ] {
        for _ in 0..n {
            metrics.api_write(kind);
        }
    }
    tracing::info!(
        images = report.images,
        unresolved = report.unresolved,
        writes = report.api_writes(),
        deleted = report.deleted,
        deferred = report.deferred,
        errors = report.errors,
        seconds = started.elapsed().as_secs_f64(),
        "inventory pass done"
    );
}

/// Drives a reflector stream, logging watch errors (the stream backs off and recovers).
async fn drive<S, K>(stream: S, what: &'static str, changed: Option<Arc<Notify>>)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => {
                if let Some(n) = &changed {
                    n.notify_one();
                }
            }
            Err(error) => tracing::warn!(%what, %error, "watch error; retrying with backoff"),
        }
    }
}
