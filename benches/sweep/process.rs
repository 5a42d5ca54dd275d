//! The operator as users run it: `imageposture run` in a process of its own (release build),
//! against the Kubernetes API double seeded with pods and the real registry behind the
//! counting proxy. Measures what a user sees in `kubectl get imagepostures`: time to the first
//! resource and to every verdict from a cold start, a healthy registry's images beside one that
//! never answers, a pod started mid-run, and the warm passes (wall and CPU per pass, registry
//! requests, API writes) with the process's own RSS.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imageposture::core::image::ImageId;
use imageposture::model::naming::ResourceName as _;
use serde_json::Value;

use crate::apidouble::ApiDouble;
use crate::support::proxy::Proxy;
use crate::support::registry::free_port;
use crate::support::TestEnv;

/// How often the bench looks at the API double (a count under its lock, no copy).
const POLL: Duration = Duration::from_millis(20);
/// Warm passes are counted over this long (`--resync 1s`: about this many passes).
const WARM_WINDOW: Duration = Duration::from_secs(8);

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One run's setup.
pub struct Spec<'a> {
    pub pods: usize,
    /// Images on healthy registries (through the proxy), spread over the pods.
    pub healthy: &'a [ImageId],
    /// Images on a registry that accepts connections and never answers.
    pub hanging: &'a [ImageId],
    /// Started as a new pod once half the healthy verdicts are in.
    pub late: Option<&'a ImageId>,
    /// Measure warm passes after every healthy verdict is in.
    pub warm: bool,
    /// After the warm window: pod churn, then RSS once the grace period has passed.
    pub churn: Option<Churn>,
}

/// Pods added and deleted over the steady cluster.
#[derive(Clone, Copy, Debug)]
pub struct Churn {
    /// Watch events in all (half adds, half deletes).
    pub events: usize,
    /// One churn pod in this many runs an image no pod ran before (on a registry that
    /// refuses connections: `checking`, never a verdict).
    pub new_image_every: usize,
    /// `--grace`: how long a resource outlives its last pod.
    pub grace: Duration,
}

/// What the churn did to the process.
#[derive(Debug, Default)]
pub struct ChurnMeasured {
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub resources_before: usize,
    pub resources_peak: usize,
    pub resources_after: usize,
    pub new_images: usize,
    pub took: Duration,
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct Measured {
    pub first: Option<Duration>,
    /// 90% of the healthy images' resources carry a verdict.
    pub ninety: Option<Duration>,
    /// Every healthy image's resource carries a verdict (not `checking`).
    pub all_healthy: Option<Duration>,
    pub late: Option<Duration>,
    pub cold_requests: usize,
    pub cold_writes: usize,
    pub warm: Option<Warm>,
    pub churn: Option<ChurnMeasured>,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

#[derive(Debug)]
pub struct Warm {
    pub passes: f64,
    pub wall_per_pass: Duration,
    pub cpu_per_pass: Duration,
    pub requests: usize,
    pub writes: usize,
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join(format!("kubeconfig-{}", free_port()));
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: double\nclusters:\n- name: double\n  cluster:\n    server: {server}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: nobody\nusers:\n- name: nobody\n  user: {{}}\n"
    );
    std::fs::write(&path, config).expect("kubeconfig");
    path
}

/// utime + stime of `pid` (all threads).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the command name: state is field 0 here, utime 11, stime 12 (clock ticks, 100/s).
    Duration::from_millis((tick(11) + tick(12)) * 10)
}

/// A `/proc/<pid>/status` field in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    kb_field(&format!("/proc/{pid}/status"), field)
}

/// A `Field:   123 kB` line of a `/proc` file, in kB.
pub fn kb_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.split(':').next() == Some(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `imageposture_sweep_duration_seconds` sum and count from `/metrics`.
async fn sweep_metrics(port: u16) -> Option<(f64, f64)> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((
        value("imageposture_sweep_duration_seconds_sum")?,
        value("imageposture_sweep_duration_seconds_count")?,
    ))
}

fn is_verdict(cr: &Value) -> bool {
    matches!(
        cr["status"]["posture"].as_str(),
        Some("signed" | "not-signed" | "invalid-signature")
    )
}

fn on(cr: &Value, host: &str) -> bool {
    cr["spec"]["image"]
        .as_str()
        .is_some_and(|i| i.starts_with(host))
}

/// API writes that are the operator's output (ImagePostures and Events; not Lease renewals).
fn output_writes(double: &ApiDouble) -> usize {
    double
        .writes()
        .iter()
        .filter(|w| w.path.contains("imagepostures") || w.path.contains("/events"))
        .count()
}

fn seed_pod(double: &ApiDouble, i: usize, images: &[ImageId]) {
    let (namespace, image, image_id) = crate::pod_placement(i, images);
    let pod = crate::full_pod(i, &namespace, &image, &image_id);
    let mut v = serde_json::to_value(&pod).expect("pod JSON");
    // The double assigns these, as the API server does.
    if let Some(meta) = v["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        meta.remove("uid");
    }
    double.seed(v);
}

/// Runs the operator process over `spec` until every healthy verdict is in (and, with
/// `spec.warm`, through the warm window), then stops it.
pub async fn run(env: &TestEnv, proxy: &Proxy, hanging_host: &str, spec: &Spec<'_>) -> Measured {
    let double = ApiDouble::start().await;
    let mut all: Vec<ImageId> = spec.healthy.to_vec();
    all.extend(spec.hanging.iter().cloned());
    for i in 0..spec.pods {
        seed_pod(&double, i, &all);
    }
    proxy.reset_requests();
    double.reset_counters();
    let port = free_port();
    let config = kubeconfig(env.dir.path(), &double.url());
    let started = Instant::now();
    // Exploration only: `IMAGEPOSTURE_BENCH_WRAP="heaptrack -o /tmp/op"` runs the operator
    // under a profiler (the PID measured is then the wrapper's child's parent: RSS is off).
    let wrap = std::env::var("IMAGEPOSTURE_BENCH_WRAP").unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let mut command = match wrap.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(wrap).arg(env!("CARGO_BIN_EXE_imageposture"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_imageposture")),
    };
    let child = command
        .args(["run", "--install-crd=false", "--resync", "1s"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--trusted-root", env.trusted_root.to_str().expect("path")])
        .args(["--insecure-registry", &env.registry.host])
        .args(["--insecure-registry", &proxy.host])
        .args(["--insecure-registry", hanging_host])
        .arg(format!(
            "--max-images={}",
            all.len()
                + 10
                + spec
                    .churn
                    .map_or(0, |c| c.events / c.new_image_every.max(1))
        ))
        .args(
            spec.churn
                .map(|c| vec!["--grace".to_string(), format!("{}s", c.grace.as_secs())])
                .unwrap_or_default(),
        )
        // Exploration only (the docs/benchmarks.md numbers use none): extra `run` flags, space-separated.
        .args(
            std::env::var("IMAGEPOSTURE_BENCH_RUN_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("KUBECONFIG", &config)
        .env("POD_NAMESPACE", "imageposture-system")
        .env("POD_NAME", "bench-0")
        .env("RUST_LOG", "error")
        // As `config/manager` ships it.
        .env("MALLOC_ARENA_MAX", "2")
        .env("MALLOC_TRIM_THRESHOLD_", "65536")
        .env("MALLOC_MMAP_THRESHOLD_", "65536")
        // Exploration only: `IMAGEPOSTURE_BENCH_ENV="K=V ..."`, more environment.
        .envs(
            std::env::var("IMAGEPOSTURE_BENCH_ENV")
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("the operator starts");
    let process = Process(child);
    let pid = process.0.id();
    let healthy_host = proxy.host.clone();
    let n_healthy = spec.healthy.len();
    let deadline = started + Duration::from_secs(300 + spec.pods as u64 / 500);
    let mut m = Measured::default();
    let mut late_at: Option<Instant> = None;
    let late_name = spec.late.map(|id| id.resource_name());
    let trace = std::env::var_os("IMAGEPOSTURE_BENCH_TRACE").is_some();
    let mut next_trace = started;
    loop {
        let now = Instant::now();
        if m.first.is_none() && double.count_image_postures(|_| true) > 0 {
            m.first = Some(now - started);
        }
        let done = double.count_image_postures(|cr| on(cr, &healthy_host) && is_verdict(cr));
        if m.ninety.is_none() && done * 10 >= n_healthy * 9 {
            m.ninety = Some(now - started);
        }
        if let (Some(late), None) = (spec.late, late_at) {
            if done * 2 >= n_healthy {
                seed_pod(&double, spec.pods, std::slice::from_ref(late));
                late_at = Some(Instant::now());
            }
        }
        if let (Some(at), Some(name), None) = (late_at, &late_name, m.late) {
            if double.image_posture(name).is_some_and(|cr| is_verdict(&cr)) {
                m.late = Some(at.elapsed());
            }
        }
        // The late image is on the healthy registry too.
        let wanted = n_healthy + usize::from(late_at.is_some());
        if m.all_healthy.is_none() && done >= wanted && (spec.late.is_none() || m.late.is_some()) {
            m.all_healthy = Some(now - started);
            break;
        }
        if trace && now >= next_trace {
            next_trace = now + Duration::from_secs(1);
            let mut by: std::collections::BTreeMap<String, usize> = Default::default();
            for (_, cr) in double.image_postures() {
                let key = format!(
                    "{}/{}",
                    cr["status"]["posture"].as_str().unwrap_or("-"),
                    cr["status"]["reason"].as_str().unwrap_or("-")
                );
                *by.entry(key).or_default() += 1;
            }
            eprintln!("  {:>6} ms {by:?}", (now - started).as_millis());
        }
        if now > deadline {
            eprintln!(
                "  gave up after {:?}: {done} of {wanted} verdicts",
                now - started
            );
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    m.cold_requests = proxy.requests().len();
    m.cold_writes = output_writes(&double);
    if spec.warm {
        // Let the last writes' watch events and requeues settle, then count a quiet window.
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.reset_requests();
        let writes0 = output_writes(&double);
        let (sum0, count0) = sweep_metrics(port).await.unwrap_or_default();
        let cpu0 = cpu_of(pid);
        tokio::time::sleep(WARM_WINDOW).await;
        let cpu = cpu_of(pid) - cpu0;
        let (sum1, count1) = sweep_metrics(port).await.unwrap_or_default();
        let passes = count1 - count0;
        m.warm = Some(Warm {
            passes,
            wall_per_pass: Duration::from_secs_f64((sum1 - sum0) / passes.max(1.0)),
            cpu_per_pass: cpu.div_f64(passes.max(1.0)),
            requests: proxy.requests().len(),
            writes: output_writes(&double) - writes0,
        });
    }
    if let Some(churn) = spec.churn {
        m.churn = Some(run_churn(&double, pid, spec, &all, churn).await);
    }
    if trace {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            let text = r.text().await.unwrap_or_default();
            for l in text.lines().filter(|l| {
                !l.starts_with('#')
                    && (l.contains("reconcile")
                        || l.contains("verification")
                        || l.contains("cache"))
                    && !l.contains("_bucket")
            }) {
                eprintln!("  {l}");
            }
        }
        eprintln!("  process CPU {:?}", cpu_of(pid));
    }
    m.rss_kib = status_kb(pid, "VmRSS");
    m.hwm_kib = status_kb(pid, "VmHWM");
    drop(process);
    m
}

/// Adds and deletes pods (`churn.events` watch events, at most 100 churn pods alive at once),
/// some with images no pod ran before, then waits out the grace period and the deletions it
/// allows, and measures RSS against where it started.
async fn run_churn(
    double: &ApiDouble,
    pid: u32,
    spec: &Spec<'_>,
    images: &[ImageId],
    churn: Churn,
) -> ChurnMeasured {
    const ALIVE: usize = 100;
    let refused = format!("127.0.0.1:{}", free_port());
    let mut m = ChurnMeasured {
        rss_before_kib: status_kb(pid, "VmRSS"),
        resources_before: double.count_image_postures(|_| true),
        ..ChurnMeasured::default()
    };
    let started = Instant::now();
    let adds = churn.events / 2;
    let mut alive = std::collections::VecDeque::new();
    for k in 0..adds {
        let i = spec.pods + 1 + k;
        let (namespace, image, image_id) = if k % churn.new_image_every.max(1) == 0 {
            m.new_images += 1;
            let id = ImageId {
                registry: refused.clone(),
                repository: format!("churn/app-{k:06}"),
                digest: format!("sha256:{:064x}", 0x00c0_ffee_0000_u64 + k as u64),
            };
            crate::pod_placement(0, std::slice::from_ref(&id))
        } else {
            crate::pod_placement(i, images)
        };
        let pod = crate::full_pod(i, &namespace, &image, &image_id);
        let mut v = serde_json::to_value(&pod).expect("pod JSON");
        if let Some(meta) = v["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
            meta.remove("uid");
        }
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        double.seed(v);
        alive.push_back((namespace, name));
        if alive.len() > ALIVE {
            if let Some((ns, name)) = alive.pop_front() {
                double.remove("", "pods", &ns, &name);
            }
        }
        if k % 100 == 0 {
            if k % 5000 == 0 {
                m.resources_peak = m.resources_peak.max(double.count_image_postures(|_| true));
            }
            // About 10,000 events a second: a busy cluster's pace.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    while let Some((ns, name)) = alive.pop_front() {
        double.remove("", "pods", &ns, &name);
    }
    m.took = started.elapsed();
    // The grace period, then the inventory pass that deletes, then the deletions' watch events.
    let deadline = Instant::now() + churn.grace + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        m.resources_peak = m.resources_peak.max(double.count_image_postures(|_| true));
        let now = double.count_image_postures(|_| true);
        if (now <= m.resources_before && Instant::now() > started + churn.grace)
            || Instant::now() > deadline
        {
            break;
        }
    }
    // Settle: the controller forgets deleted objects, the allocator returns what it can.
    tokio::time::sleep(Duration::from_secs(5)).await;
    m.resources_after = double.count_image_postures(|_| true);
    m.rss_after_kib = status_kb(pid, "VmRSS");
    m
}
