//! `imageposture run`: the operator process. Reflectors on Pods and ImagePostures feed a
//! debounced, level-triggered sweep (plus a periodic resync); only the Lease holder writes.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{watch, Notify};

use crate::cli::{parse_duration, VerifyArgs};
use crate::crd::{ImagePosture, LABEL_MANAGED_BY, MANAGER};
use crate::inventory::NamespaceFilter;
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::observer::{Observer, ObserverConfig};
use crate::server::{self, Health};
use crate::sweep::{SweepConfig, SweepReport, Sweeper};
use crate::verify::Verifier;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// How long a resting posture is trusted before the image is verified again.
    #[arg(long, env = "IMAGEPOSTURE_TTL", default_value = "6h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Images tracked at once; the overflow is deferred visibly (reason `Deferred`).
    #[arg(long, env = "IMAGEPOSTURE_MAX_IMAGES", default_value_t = 5000)]
    pub max_images: usize,
    /// Verifications in flight against one registry.
    #[arg(long, env = "IMAGEPOSTURE_REGISTRY_CONCURRENCY", default_value_t = 4)]
    pub registry_concurrency: usize,
    /// How long an ImagePosture outlives the last pod running its image.
    #[arg(long, env = "IMAGEPOSTURE_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub grace: Duration,
    /// Full sweep at least this often, even with no pod change.
    #[arg(long, env = "IMAGEPOSTURE_RESYNC", default_value = "10m", value_parser = parse_duration)]
    pub resync: Duration,
    /// Quiet time after a pod change before sweeping (batches bursts of pod events).
    #[arg(long, env = "IMAGEPOSTURE_DEBOUNCE", default_value = "5s", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Only sweep these namespaces (repeatable; default all).
    #[arg(
        long = "include-namespace",
        env = "IMAGEPOSTURE_INCLUDE_NAMESPACES",
        value_delimiter = ','
    )]
    pub include_namespaces: Vec<String>,
    /// Never sweep these namespaces (repeatable).
    #[arg(
        long = "exclude-namespace",
        env = "IMAGEPOSTURE_EXCLUDE_NAMESPACES",
        value_delimiter = ','
    )]
    pub exclude_namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "IMAGEPOSTURE_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: std::net::SocketAddr,
    /// Elect a leader through a Lease so replicas never both write.
    #[arg(long, env = "IMAGEPOSTURE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Lease name.
    #[arg(long, env = "IMAGEPOSTURE_LEASE_NAME", default_value = "imageposture")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "imageposture-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration; a new leader waits at most this long after a crash.
    #[arg(long, env = "IMAGEPOSTURE_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
}

pub async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tokio::spawn(server::serve(listener, metrics.clone(), health.clone()));

    let hook_metrics = metrics.clone();
    let verifier = Verifier::with_hook(
        args.verify.config(),
        Some(Box::new(move |host: &str, code: u16| {
            hook_metrics.registry_request(host, code)
        })),
    )
    .await?;
    let observer = Arc::new(
        Observer::new(
            Arc::new(verifier),
            ObserverConfig {
                ttl: args.ttl,
                max_images: args.max_images,
                concurrency: args.verify.concurrency,
                per_registry: args.registry_concurrency,
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
    // Reflectors: what pods run, and what we wrote before.
    let changed = Arc::new(Notify::new());
    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(crate::inventory::trim)
        .reflect(pod_writer);
    tokio::spawn(drive(pod_events, "pods", Some(changed.clone())));
    let (postures, cr_writer) = reflector::store::<ImagePosture>();
    let cr_config = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let cr_events = watcher(Api::<ImagePosture>::all(client.clone()), cr_config)
        .default_backoff()
        .modify(|cr| {
            cr.managed_fields_mut().clear();
        })
        .reflect(cr_writer);
    tokio::spawn(drive(cr_events, "imagepostures", None));
    pods.wait_until_ready().await?;
    postures.wait_until_ready().await?;
    health.set_ready(true);
    tracing::info!(
        pods = pods.len(),
        imagepostures = postures.len(),
        "caches synced"
    );

    let mut leader = if args.leader_election {
        let elector = LeaderElector::new(
            Api::<Lease>::namespaced(client.clone(), &args.lease_namespace),
            args.lease_name.clone(),
            identity.clone(),
            args.lease_duration,
        );
        let rx = elector.clone().spawn(args.lease_duration / 3);
        Some((elector, rx))
    } else {
        None
    };

    let sweeper = Sweeper::new(
        Api::all(client.clone()),
        recorder,
        observer,
        SweepConfig {
            grace: args.grace,
            namespaces: NamespaceFilter {
                include: args.include_namespaces.clone(),
                exclude: args.exclude_namespaces.clone(),
            },
        },
    );
    let sweeper = match &leader {
        Some((_, rx)) => sweeper.with_gate(rx.clone()),
        None => sweeper,
    };

    let mut was_leader = false;
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let is_leader = leader.as_ref().is_none_or(|(_, rx)| *rx.borrow());
        metrics.set_leader(is_leader);
        if is_leader {
            if !was_leader {
                let seeded = sweeper.warm_start(&postures.state(), chrono::Utc::now());
                tracing::info!(
                    seeded,
                    "leading: cache warm-started from ImagePosture status"
                );
            }
            sweep_once(&sweeper, &pods, &postures, &metrics).await;
        }
        was_leader = is_leader;
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(args.resync) => {}
            _ = changed.notified() => {
                // Debounce: let a burst of pod events settle into one sweep.
                tokio::time::sleep(args.debounce).await;
            }
            _ = leadership_change(&mut leader) => {}
        }
    }
    if let Some((elector, _)) = &leader {
        elector.release().await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn sweep_once(
    sweeper: &Sweeper,
    pods: &Store<Pod>,
    postures: &Store<ImagePosture>,
    metrics: &Metrics,
) {
    let started = std::time::Instant::now();
    let report: SweepReport = sweeper
        .sweep(&pods.state(), &postures.state(), chrono::Utc::now())
        .await;
    metrics.sweep_duration(started.elapsed().as_secs_f64());
    metrics.set_images(&report.by_posture);
    metrics.set_deferred(report.deferred as i64);
    for (kind, n) in [
        ("status", report.status_writes),
        ("apply", report.metadata_writes),
        ("delete", report.deleted),
        ("event", report.events),
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
        "sweep done"
    );
}

async fn leadership_change(leader: &mut Option<(LeaderElector, watch::Receiver<bool>)>) {
    match leader {
        Some((_, rx)) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
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

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot handle SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
