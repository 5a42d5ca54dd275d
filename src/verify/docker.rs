//! Docker `config.json`: `auths`, `credHelpers` and `credsStore`, the helpers run through the
//! docker credential helper protocol (`docker-credential-NAME get`, the server URL on stdin,
//! `{"ServerURL","Username","Secret"}` on stdout; a `<token>` user name means the secret is
//! an identity token).
//!
//! Order for one image: the `credHelpers` helper of its registry, then the `auths` entries that
//! match it (most specific first), then the `credsStore` helper.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::auth::Found;
use super::exec::{self, Bounds};
use super::keyring::{json_error, CredSource, Credential, DockerAuth, Keyring, Pattern, Target};
use crate::core::lock::LockExt as _;

/// How long a helper's answer is reused (a refused one is dropped at once).
const HELPER_CACHE: Duration = Duration::from_secs(60);

#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// A helper's answer (none is an answer too) and when it was got.
type Cached = (Option<Credential>, Instant);

pub struct DockerConfig {
    auths: Keyring,
    /// Registry host (as the config names it, normalized) → helper name.
    helpers: Vec<(Pattern, String)>,
    store: Option<String>,
    /// Where `docker-credential-*` programs are looked for (`PATH` when `None`).
    helper_dir: Option<PathBuf>,
    bounds: Bounds,
    cache: Mutex<HashMap<(String, String), Cached>>,
}

impl std::fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerConfig")
            .field("auths", &self.auths)
            .field("helpers", &self.helpers)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl DockerConfig {
    pub fn load(path: &Path) -> Result<Self, String> {
        let data = std::fs::read(path).map_err(|e| e.to_string())?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let file: ConfigFile = serde_json::from_slice(data).map_err(|e| json_error(&e))?;
        let mut auths = Keyring::default();
        for (key, entry) in &file.auths {
            let origin = format!("auths {}", key.trim());
            if let (Some(p), Some(c)) = (
                Pattern::parse(key),
                entry.credential(CredSource::DockerConfig, &origin),
            ) {
                auths.add(p, c);
            }
        }
        let mut helpers = Vec::new();
        for (key, name) in &file.cred_helpers {
            check_helper_name(name)?;
            if let Some(p) = Pattern::parse(key) {
                helpers.push((p, name.clone()));
            }
        }
        let store = file.creds_store.filter(|s| !s.is_empty());
        if let Some(name) = &store {
            check_helper_name(name)?;
        }
        Ok(DockerConfig {
            auths,
            helpers,
            store,
            helper_dir: None,
            bounds: Bounds::default(),
            cache: Mutex::default(),
        })
    }

    /// Looks helpers up in this directory instead of `PATH` (tests).
    pub fn with_helper_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.helper_dir = dir;
        self
    }

    pub fn with_bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    pub async fn lookup(&self, target: &Target, registry: &str) -> Found {
        let mut found = Found::default();
        // `credHelpers` keys are registry hosts: an exact host (and port) match.
        let helper = self
            .helpers
            .iter()
            .find(|(p, _)| {
                p.matches(&Target {
                    path: String::new(),
                    ..target.clone()
                })
            })
            .map(|(_, n)| n.clone());
        if let Some(name) = helper {
            self.ask(&name, registry, "credHelpers", &mut found).await;
        }
        found.credentials.extend(self.auths.lookup(target));
        if let Some(name) = self.store.clone() {
            self.ask(&name, registry, "credsStore", &mut found).await;
        }
        found
    }

    /// A refused credential from a helper is asked for again next time.
    pub fn forget(&self, credential: &Credential) {
        self.cache
            .locked()
            .retain(|_, (c, _)| c.as_ref() != Some(credential));
    }

    async fn ask(&self, name: &str, registry: &str, how: &str, found: &mut Found) {
        let server = server_url(registry);
        let key = (name.to_string(), server.clone());
        if let Some((c, at)) = self.cache.locked().get(&key) {
            if at.elapsed() < HELPER_CACHE {
                found.credentials.extend(c.clone());
                return;
            }
        }
        match self.run_helper(name, &server, how).await {
            Ok(c) => {
                self.cache.locked().insert(key, (c.clone(), Instant::now()));
                found.credentials.extend(c);
            }
            Err(why) => {
                tracing::warn!(helper = %name, registry = %registry, error = %why, "docker credential helper failed");
                found
                    .notes
                    .push(format!("docker credential helper {name:?} {why}"));
            }
        }
    }

    async fn run_helper(
        &self,
        name: &str,
        server: &str,
        how: &str,
    ) -> Result<Option<Credential>, String> {
        let program_name = format!("docker-credential-{name}");
        let program = match &self.helper_dir {
            Some(dir) => dir.join(&program_name),
            None => PathBuf::from(&program_name),
        };
        let (status, out) = exec::run_any(
            &program,
            &["get".to_string()],
            &[],
            server.as_bytes(),
            &self.bounds,
        )
        .await
        .map_err(|e| e.to_string())?;
        if let Err(status) = status {
            // The protocol's "no credential here" is a non-zero exit printing this text; any
            // other failure is a fault of the helper. Its output is looked at, never shown.
            return if contains(&out, b"credentials not found") {
                Ok(None)
            } else {
                Err(format!("exited with {status}"))
            };
        }
        let answer: HelperAnswer =
            serde_json::from_slice(&out).map_err(|e| format!("answered {}", json_error(&e)))?;
        if !answer.server_url.is_empty() && !same_server(&answer.server_url, server) {
            return Err(format!(
                "answered for another registry ({:?}, asked for {server:?})",
                crate::core::posture::bound(&answer.server_url, 100)
            ));
        }
        Ok(Credential::new(
            CredSource::DockerConfig,
            format!("{how} {name}"),
            &answer.username,
            &answer.secret,
        ))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The server URL a helper is asked about: the registry host, Docker Hub as the docker client
/// names it.
fn server_url(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "https://index.docker.io/v1/".into()
        }
        other => other.to_string(),
    }
}

fn same_server(answered: &str, asked: &str) -> bool {
    let host = |s: &str| {
        let t = s.trim();
        let t = t
            .strip_prefix("https://")
            .or_else(|| t.strip_prefix("http://"))
            .unwrap_or(t);
        match t.split('/').next().map(str::to_ascii_lowercase) {
            Some(h)
                if matches!(
                    h.as_str(),
                    "docker.io" | "index.docker.io" | "registry-1.docker.io"
                ) =>
            {
                Some("index.docker.io".to_string())
            }
            Some(h) if !h.is_empty() => Some(h),
            _ => None,
        }
    };
    host(answered).is_some() && host(answered) == host(asked)
}

fn check_helper_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
    {
        Ok(())
    } else {
        Err(format!(
            "credential helper name {:?} is not a plain name",
            crate::core::posture::bound(name, 64)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_names_and_servers() {
        assert!(check_helper_name("ecr-login").is_ok());
        assert!(check_helper_name("../bin/sh").is_err());
        assert!(check_helper_name("a b").is_err());
        assert!(same_server("https://ghcr.io", "ghcr.io"));
        assert!(same_server(
            "https://index.docker.io/v1/",
            "https://index.docker.io/v1/"
        ));
        assert!(!same_server("quay.io", "ghcr.io"));
        assert_eq!(server_url("docker.io"), "https://index.docker.io/v1/");
    }

    #[test]
    fn parses_every_part() {
        let c = DockerConfig::parse(
            br#"{"auths":{"ghcr.io/acme":{"auth":"dTpw"}},"credHelpers":{"123.dkr.ecr.us-east-1.amazonaws.com":"ecr-login"},"credsStore":"desktop"}"#,
        )
        .unwrap();
        assert_eq!(c.helpers.len(), 1);
        assert_eq!(c.store.as_deref(), Some("desktop"));
        assert!(!format!("{c:?}").contains("dTpw"));
        assert!(DockerConfig::parse(br#"{"credsStore":"/bin/sh"}"#).is_err());
    }
}
