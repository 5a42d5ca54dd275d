//! Kubelet image credential provider plugins, with the kubelet's own configuration
//! (`CredentialProviderConfig`, `kubelet.config.k8s.io/v1`) and exec protocol
//! (`CredentialProviderRequest` on stdin, `CredentialProviderResponse` on stdout,
//! `credentialprovider.kubelet.k8s.io/v1`): the clouds' published plugins
//! (`ecr-credential-provider`, `auth-provider-gcp`, `acr-credential-provider`) work unchanged.
//!
//! A plugin runs only for images its `matchImages` match, from `--image-credential-provider-bin-dir`,
//! with its `args` and its `env` added to this process's environment (so workload identity
//! reaches it), bounded in time and output; its answer is cached per `cacheKeyType` for
//! `cacheDuration` (else the provider's `defaultCacheDuration`), and its `auth` keys are matched
//! against the image like any keyring.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::auth::Found;
use super::exec::{self, Bounds};
use super::keyring::{json_error, CredSource, Credential, Keyring, Pattern, Target};
use crate::core::lock::LockExt as _;
use crate::core::posture::bound;

const CONFIG_VERSIONS: [&str; 3] = [
    "kubelet.config.k8s.io/v1",
    "kubelet.config.k8s.io/v1beta1",
    "kubelet.config.k8s.io/v1alpha1",
];
const PLUGIN_VERSIONS: [&str; 3] = [
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    providers: Vec<ProviderSpec>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderSpec {
    name: String,
    #[serde(default)]
    match_images: Vec<String>,
    #[serde(default)]
    default_cache_duration: Option<String>,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
}

#[derive(serde::Deserialize)]
struct EnvVar {
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    cache_key_type: String,
    #[serde(default)]
    cache_duration: Option<String>,
    #[serde(default)]
    auth: HashMap<String, AuthConfig>,
}

#[derive(serde::Deserialize)]
struct AuthConfig {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

struct Provider {
    name: String,
    program: PathBuf,
    match_images: Vec<Pattern>,
    default_cache: Duration,
    api_version: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Cache key (the image, its registry, or `""` for global) → answer and expiry.
    cache: Mutex<HashMap<String, (Keyring, Instant)>>,
}

pub struct Plugins {
    providers: Vec<Provider>,
    bounds: Bounds,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        f.debug_struct("Plugins")
            .field("providers", &names)
            .finish()
    }
}

impl Plugins {
    /// Reads a `CredentialProviderConfig` (YAML or JSON); plugins run from `bin_dir`.
    pub fn load(config: &Path, bin_dir: &Path) -> Result<Plugins, String> {
        let data = std::fs::read(config).map_err(|e| e.to_string())?;
        let file: ConfigFile = serde_yaml::from_slice(&data).map_err(|e| {
            format!(
                "not a CredentialProviderConfig ({})",
                bound(&e.to_string(), 200)
            )
        })?;
        if file.kind != "CredentialProviderConfig"
            || !CONFIG_VERSIONS.contains(&file.api_version.as_str())
        {
            return Err(format!(
                "kind {:?} apiVersion {:?}: expected CredentialProviderConfig, kubelet.config.k8s.io/v1",
                bound(&file.kind, 64),
                bound(&file.api_version, 64)
            ));
        }
        let mut providers = Vec::new();
        for spec in file.providers {
            let name = spec.name;
            if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
                return Err(format!(
                    "provider name {:?} is not a file name",
                    bound(&name, 64)
                ));
            }
            if !PLUGIN_VERSIONS.contains(&spec.api_version.as_str()) {
                return Err(format!(
                    "provider {name}: apiVersion {:?} is not credentialprovider.kubelet.k8s.io/v1",
                    bound(&spec.api_version, 64)
                ));
            }
            if spec.match_images.is_empty() {
                return Err(format!("provider {name}: matchImages is empty"));
            }
            let mut match_images = Vec::new();
            for m in &spec.match_images {
                match Pattern::parse(m) {
                    Some(p) => match_images.push(p),
                    None => {
                        return Err(format!(
                            "provider {name}: matchImages entry {m:?} is not a pattern"
                        ))
                    }
                }
            }
            let default_cache = match spec.default_cache_duration.as_deref() {
                Some(d) => parse_go_duration(d).ok_or_else(|| {
                    format!("provider {name}: defaultCacheDuration {d:?} is not a duration")
                })?,
                None => return Err(format!("provider {name}: defaultCacheDuration is required")),
            };
            providers.push(Provider {
                program: bin_dir.join(&name),
                name,
                match_images,
                default_cache,
                api_version: spec.api_version,
                args: spec.args,
                env: spec.env.into_iter().map(|e| (e.name, e.value)).collect(),
                cache: Mutex::default(),
            });
        }
        Ok(Plugins {
            providers,
            bounds: Bounds::default(),
        })
    }

    pub fn with_bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Credentials of every plugin whose `matchImages` match, in configuration order.
    pub async fn lookup(&self, target: &Target, image: &str, registry: &str) -> Found {
        let mut found = Found::default();
        for p in &self.providers {
            if !p.match_images.iter().any(|m| m.matches(target)) {
                continue;
            }
            match p.keyring(image, registry, &self.bounds).await {
                Ok(keyring) => {
                    let creds = keyring.lookup(target);
                    if creds.is_empty() {
                        found.notes.push(format!(
                            "credential provider plugin {:?} answered no credential for this image",
                            p.name
                        ));
                    }
                    found.credentials.extend(creds);
                }
                Err(why) => {
                    tracing::warn!(plugin = %p.name, registry = %registry, error = %why, "credential provider plugin failed");
                    found
                        .notes
                        .push(format!("credential provider plugin {:?} {why}", p.name));
                }
            }
        }
        found
    }

    /// A refused credential: drop every cached answer that holds it.
    pub fn forget(&self, credential: &Credential) {
        for p in &self.providers {
            p.cache.locked().retain(|_, (k, _)| !k.contains(credential));
        }
    }
}

impl Provider {
    async fn keyring(
        &self,
        image: &str,
        registry: &str,
        bounds: &Bounds,
    ) -> Result<Keyring, String> {
        let now = Instant::now();
        {
            let mut cache = self.cache.locked();
            cache.retain(|_, (_, expires)| *expires > now);
            for key in [image, registry, ""] {
                if let Some((k, _)) = cache.get(key) {
                    return Ok(k.clone());
                }
            }
        }
        let request = serde_json::json!({
            "apiVersion": self.api_version,
            "kind": "CredentialProviderRequest",
            "image": image,
        });
        let input = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        let out = exec::run(&self.program, &self.args, &self.env, &input, bounds)
            .await
            .map_err(|e| e.to_string())?;
        let response: Response =
            serde_json::from_slice(&out).map_err(|e| format!("answered {}", json_error(&e)))?;
        if response.kind != "CredentialProviderResponse" || response.api_version != self.api_version
        {
            return Err(format!(
                "answered kind {:?} apiVersion {:?}, not a {} CredentialProviderResponse",
                bound(&response.kind, 64),
                bound(&response.api_version, 64),
                self.api_version
            ));
        }
        let key = match response.cache_key_type.as_str() {
            "Image" => image.to_string(),
            "Registry" => registry.to_string(),
            "Global" => String::new(),
            other => {
                return Err(format!(
                    "answered cacheKeyType {:?} (Image, Registry or Global)",
                    bound(other, 32)
                ))
            }
        };
        let ttl = match response.cache_duration.as_deref() {
            Some(d) => parse_go_duration(d)
                .ok_or_else(|| format!("answered cacheDuration {:?}", bound(d, 32)))?,
            None => self.default_cache,
        };
        let origin = self.name.clone();
        let mut keyring = Keyring::default();
        for (pattern, auth) in response.auth {
            if let (Some(p), Some(c)) = (
                Pattern::parse(&pattern),
                Credential::new(
                    CredSource::Plugin,
                    origin.clone(),
                    &auth.username,
                    &auth.password,
                ),
            ) {
                keyring.add(p, c);
            }
        }
        if !ttl.is_zero() {
            self.cache
                .locked()
                .insert(key, (keyring.clone(), now + ttl));
        }
        Ok(keyring)
    }
}

/// Go's `time.ParseDuration` for the units a cache duration uses: `12h`, `1h30m`, `10m0s`,
/// `500ms`, `0s`, `0`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let n: f64 = num.parse().ok()?;
        let secs = match unit {
            "ns" => n / 1e9,
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return None,
        };
        total = total.checked_add(Duration::try_from_secs_f64(secs).ok()?)?;
        rest = next;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("12h"),
            Some(Duration::from_secs(12 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("10m0s"), Some(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5 parsecs"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("h"), None);
    }

    #[test]
    fn reads_the_kubelet_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: ecr-credential-provider\n  matchImages: [\"*.dkr.ecr.*.amazonaws.com\"]\n  defaultCacheDuration: 12h\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  args: [get-credentials]\n  env: [{name: AWS_PROFILE, value: x}]\n",
        )
        .unwrap();
        let p = Plugins::load(&path, Path::new("/opt/bin")).unwrap();
        assert_eq!(p.providers.len(), 1);
        assert_eq!(
            p.providers[0].program,
            Path::new("/opt/bin/ecr-credential-provider")
        );
        std::fs::write(
            &path,
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: ../sh\n  matchImages: [\"*\"]\n  defaultCacheDuration: 1h\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
        )
        .unwrap();
        assert!(Plugins::load(&path, Path::new("/opt/bin")).is_err());
    }
}
