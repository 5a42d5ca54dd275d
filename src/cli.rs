//! Command-line interface: `observe`, `scan`, `run` and `crd`. Every flag has an env var.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::verify::{Limits, TrustSource, VerifierConfig};

#[derive(Parser, Debug)]
#[command(
    name = "imageposture",
    version,
    about = "Who signed the images your cluster runs"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "IMAGEPOSTURE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the signing posture of images (no cluster needed).
    Observe(ObserveArgs),
    /// Read `kubectl get pods -A -o json` and print the ImagePosture objects the operator would write.
    Scan(ScanArgs),
    /// Run the operator: record running images as ImagePosture resources and verify them.
    Run(Box<RunArgs>),
    /// Print the ImagePosture CustomResourceDefinition.
    Crd,
    /// Counts by posture, top signers and issuers, namespaces at risk, images stuck checking.
    Summary(SummaryArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Args, Debug)]
pub struct ObserveArgs {
    /// Images to observe: `repo@sha256:…` or `repo:tag` (a tag is resolved with one HEAD).
    #[arg(required = true)]
    pub images: Vec<String>,
    #[arg(
        short = 'o',
        long,
        env = "IMAGEPOSTURE_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: OutputFormat,
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// SignerBaseline YAML documents: judge signer drift against them (no cluster).
    #[arg(long, env = "IMAGEPOSTURE_BASELINE")]
    pub baseline: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// `kubectl get pods -A -o json` output; `-` reads standard input.
    #[arg(short = 'f', long = "filename", env = "IMAGEPOSTURE_SCAN_FILE")]
    pub file: PathBuf,
    #[arg(
        short = 'o',
        long,
        env = "IMAGEPOSTURE_OUTPUT",
        value_enum,
        default_value = "yaml"
    )]
    pub output: OutputFormat,
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// SignerBaseline YAML documents: judge signer drift against them (no cluster).
    #[arg(long, env = "IMAGEPOSTURE_BASELINE")]
    pub baseline: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// How long a resting posture is trusted before the image is verified again.
    #[arg(long, env = "IMAGEPOSTURE_TTL", default_value = "6h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Most ImagePosture resources kept (most-used images first); the overflow is not
    /// recorded, and counted in `imageposture_images_deferred`.
    #[arg(long, env = "IMAGEPOSTURE_MAX_IMAGES", default_value_t = 5000)]
    pub max_images: usize,
    /// Verifications in flight against one registry.
    #[arg(long, env = "IMAGEPOSTURE_REGISTRY_CONCURRENCY", default_value_t = 4)]
    pub registry_concurrency: usize,
    /// How long an ImagePosture outlives the last pod running its image.
    #[arg(long, env = "IMAGEPOSTURE_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub grace: Duration,
    /// Inventory pass at least this often, even with no pod change.
    #[arg(long, env = "IMAGEPOSTURE_RESYNC", default_value = "10m", value_parser = parse_duration)]
    pub resync: Duration,
    /// Wait after a pod change before the inventory pass (a burst of pod events makes one pass;
    /// a new pod's image gets its resource about this long after the pod appears).
    #[arg(long, env = "IMAGEPOSTURE_DEBOUNCE", default_value = "1s", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Only record pods of these namespaces (repeatable; default all).
    #[arg(
        long = "include-namespace",
        env = "IMAGEPOSTURE_INCLUDE_NAMESPACES",
        value_delimiter = ','
    )]
    pub include_namespaces: Vec<String>,
    /// Never record pods of these namespaces (repeatable).
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
    /// Namespace of the Lease: the operator's own in cluster (the Deployment sets
    /// `POD_NAMESPACE`); out of cluster `default` unless given.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Apply the ImagePosture CRD (server-side apply) at start and wait until it is Established.
    /// Default: on out of cluster (no `KUBERNETES_SERVICE_HOST`), off in cluster.
    #[arg(long, env = "IMAGEPOSTURE_INSTALL_CRD", action = clap::ArgAction::Set)]
    pub install_crd: Option<bool>,
    /// Write one `wgpolicyk8s.io/v1alpha2` PolicyReport per namespace after each inventory pass
    /// (needs the PolicyReport CRD and config/policy-reports RBAC).
    #[arg(long, env = "IMAGEPOSTURE_POLICY_REPORTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub policy_reports: bool,
    /// Use the credentials of the pods that run an image: their `imagePullSecrets`, then their
    /// ServiceAccount's (needs `get` on Secrets and ServiceAccounts: config/pull-secrets).
    #[arg(long, env = "IMAGEPOSTURE_PULL_SECRETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub pull_secrets: bool,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration; a new leader waits at most this long after a crash.
    #[arg(long, env = "IMAGEPOSTURE_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often the trust root is loaded again while the operator runs (the TUF one fetched,
    /// a `--trusted-root` file re-read); a failed refresh keeps the last good root. An entry
    /// naming a log or CA the root does not know also refreshes it (the TUF one at most every
    /// 10 minutes).
    #[arg(long, env = "IMAGEPOSTURE_TRUST_ROOT_REFRESH", default_value = "24h", value_parser = parse_duration)]
    pub trust_root_refresh: Duration,
}

/// Where the process runs: the API server injects `KUBERNETES_SERVICE_HOST` into every pod.
pub fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
}

/// Lease namespace used out of cluster when neither `--lease-namespace` nor `POD_NAMESPACE`
/// is given.
pub const OUT_OF_CLUSTER_LEASE_NAMESPACE: &str = "default";
/// Lease namespace used in cluster without `POD_NAMESPACE` (the manifests' namespace).
pub const IN_CLUSTER_LEASE_NAMESPACE: &str = "imageposture-system";

impl RunArgs {
    /// `--install-crd`, or on exactly when out of cluster.
    pub fn install_crd(&self, in_cluster: bool) -> bool {
        self.install_crd.unwrap_or(!in_cluster)
    }

    /// `--lease-namespace` / `POD_NAMESPACE`, or the default for where the process runs.
    pub fn lease_namespace(&self, in_cluster: bool) -> String {
        match &self.lease_namespace {
            Some(ns) if !ns.is_empty() => ns.clone(),
            _ if in_cluster => IN_CLUSTER_LEASE_NAMESPACE.to_string(),
            _ => OUT_OF_CLUSTER_LEASE_NAMESPACE.to_string(),
        }
    }
}

/// How images are verified; shared by every command that verifies.
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Sigstore `trusted_root.json` (air-gapped or private Sigstore). Default: the public-good
    /// instance via TUF.
    #[arg(long, env = "IMAGEPOSTURE_TRUSTED_ROOT")]
    pub trusted_root: Option<PathBuf>,
    /// Directory caching the TUF trust root (public-good only).
    #[arg(long, env = "IMAGEPOSTURE_TUF_CACHE")]
    pub tuf_cache: Option<PathBuf>,
    /// A PEM public key naming key-based signers, `NAME=FILE`; repeatable.
    #[arg(long = "trusted-key", env = "IMAGEPOSTURE_TRUSTED_KEYS", value_delimiter = ',', value_parser = parse_named_key)]
    pub trusted_keys: Vec<(String, PathBuf)>,
    /// Docker `config.json` with registry credentials: `auths`, `credHelpers` and `credsStore`
    /// (helpers run as `docker-credential-NAME get`).
    #[arg(long, env = "IMAGEPOSTURE_REGISTRY_CONFIG")]
    pub registry_config: Option<PathBuf>,
    /// Directory of the `docker-credential-*` helpers named by the docker config (default:
    /// looked up in `PATH`).
    #[arg(long, env = "IMAGEPOSTURE_CREDENTIAL_HELPER_DIR")]
    pub credential_helper_dir: Option<PathBuf>,
    /// Kubelet `CredentialProviderConfig` (`kubelet.config.k8s.io/v1`): image credential provider
    /// plugins such as `ecr-credential-provider`, `auth-provider-gcp`, `acr-credential-provider`.
    #[arg(
        long,
        env = "IMAGEPOSTURE_IMAGE_CREDENTIAL_PROVIDER_CONFIG",
        requires = "image_credential_provider_bin_dir"
    )]
    pub image_credential_provider_config: Option<PathBuf>,
    /// Directory holding the plugins the provider config names.
    #[arg(
        long,
        env = "IMAGEPOSTURE_IMAGE_CREDENTIAL_PROVIDER_BIN_DIR",
        requires = "image_credential_provider_config"
    )]
    pub image_credential_provider_bin_dir: Option<PathBuf>,
    /// `HOST:PORT` of a registry spoken to over plain HTTP; repeatable.
    #[arg(
        long = "insecure-registry",
        env = "IMAGEPOSTURE_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Time budget per image (e.g. `30s`, `2m`, `500ms`).
    #[arg(long, env = "IMAGEPOSTURE_IMAGE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub image_timeout: Duration,
    /// Largest manifest or referrers index accepted, in bytes.
    #[arg(long, env = "IMAGEPOSTURE_MAX_MANIFEST_BYTES", default_value_t = 4 << 20)]
    pub max_manifest_bytes: usize,
    /// Largest signature payload or bundle accepted, in bytes.
    #[arg(long, env = "IMAGEPOSTURE_MAX_BLOB_BYTES", default_value_t = 4 << 20)]
    pub max_blob_bytes: usize,
    /// Signature artifacts examined per image.
    #[arg(long, env = "IMAGEPOSTURE_MAX_SIGNATURES", default_value_t = 16)]
    pub max_signatures: usize,
    /// Images verified at once.
    #[arg(long, env = "IMAGEPOSTURE_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
}

impl VerifyArgs {
    pub fn config(&self) -> VerifierConfig {
        VerifierConfig {
            trust: match &self.trusted_root {
                Some(path) => TrustSource::File(path.clone()),
                None => TrustSource::PublicGood {
                    cache_dir: self.tuf_cache.clone(),
                },
            },
            trust_refresh: crate::verify::DEFAULT_REFRESH,
            trusted_keys: self.trusted_keys.clone(),
            registry_config: self.registry_config.clone(),
            credential_helper_dir: self.credential_helper_dir.clone(),
            credential_provider_config: self.image_credential_provider_config.clone(),
            credential_provider_bin_dir: self.image_credential_provider_bin_dir.clone(),
            insecure_registries: self.insecure_registries.clone(),
            limits: Limits {
                budget: self.image_timeout,
                max_manifest_bytes: self.max_manifest_bytes,
                max_blob_bytes: self.max_blob_bytes,
                max_signatures: self.max_signatures.max(1),
            },
        }
    }
}

fn parse_named_key(s: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=FILE"))?;
    if name.is_empty() || file.is_empty() {
        return Err(format!("{s:?} is not NAME=FILE"));
    }
    Ok((name.to_string(), PathBuf::from(file)))
}

/// `500ms`, `30s`, `2m`, `1h`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("duration must be positive".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn named_keys() {
        assert_eq!(parse_named_key("rel=/k.pem").unwrap().0, "rel");
        assert!(parse_named_key("nokey").is_err());
    }
}

/// `imageposture summary` flags.
#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// Summarize `imageposture scan` output (`-o json` or `-o yaml`; `-` reads standard input)
    /// instead of the ImagePostures in the cluster of the current kube context.
    #[arg(long = "from", env = "IMAGEPOSTURE_SUMMARY_FROM")]
    pub from: Option<PathBuf>,
    /// `table` for people; `json` or `yaml` for machines.
    #[arg(
        short = 'o',
        long,
        env = "IMAGEPOSTURE_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: OutputFormat,
    /// Signers and issuers listed.
    #[arg(long, env = "IMAGEPOSTURE_SUMMARY_TOP", default_value_t = 10)]
    pub top: usize,
}
