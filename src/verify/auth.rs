//! Registry credentials, per image from every source in the kubelet's order, and
//! `WWW-Authenticate` challenges.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};

use super::docker::DockerConfig;
pub use super::keyring::{CredSource, Credential, Target};
use super::plugins::Plugins;

/// A source of pull-secret credentials (the operator's pods' `imagePullSecrets` and their
/// ServiceAccounts'), asked per image.
pub trait PullSecrets: Send + Sync {
    /// Credentials of the pods that run `registry/repository`, most specific first.
    fn lookup<'a>(
        &'a self,
        target: &'a Target,
        registry: &'a str,
        repository: &'a str,
    ) -> BoxFuture<'a, Found>;
    /// The registry refused this credential: read its secret again next time.
    fn refused(&self, credential: &Credential);
}

/// Credentials found for one image, in the order they are tried, and what went wrong on the way
/// (a helper or plugin that failed; names only, never output).
#[derive(Default, Debug, Clone)]
pub struct Found {
    pub credentials: Vec<Credential>,
    pub notes: Vec<String>,
}

/// Every credential source the verifier knows, tried in the kubelet's order: pull secrets,
/// credential provider plugins, docker `config.json`; anonymous when none matches.
#[derive(Default)]
pub struct Credentials {
    docker: Option<DockerConfig>,
    plugins: Option<Plugins>,
    pull: Option<Arc<dyn PullSecrets>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets: the sources' own Debug shows names only.
        f.debug_struct("Credentials")
            .field("docker", &self.docker)
            .field("plugins", &self.plugins)
            .field("pull_secrets", &self.pull.is_some())
            .finish()
    }
}

impl Credentials {
    /// Reads a docker `config.json` (`auths`, `credHelpers`, `credsStore`).
    pub fn from_docker_config(path: &Path) -> Result<Self, String> {
        Ok(Credentials {
            docker: Some(DockerConfig::load(path)?),
            ..Credentials::default()
        })
    }

    pub fn with_docker(mut self, docker: Option<DockerConfig>) -> Self {
        self.docker = docker;
        self
    }

    pub fn with_plugins(mut self, plugins: Option<Plugins>) -> Self {
        self.plugins = plugins;
        self
    }

    pub fn with_pull_secrets(mut self, pull: Option<Arc<dyn PullSecrets>>) -> Self {
        self.pull = pull;
        self
    }

    /// The credentials for one image, in the order they are tried.
    /// Pull secrets are read only where `pull_secrets` says the registry may want them.
    pub async fn lookup(
        &self,
        registry: &str,
        repository: &str,
        image: &str,
        pull_secrets: bool,
    ) -> Found {
        let target = Target::new(registry, repository);
        let mut found = Found::default();
        if let Some(pull) = self.pull.as_ref().filter(|_| pull_secrets) {
            let f = pull.lookup(&target, registry, repository).await;
            found.credentials.extend(f.credentials);
            found.notes.extend(f.notes);
        }
        if let Some(plugins) = &self.plugins {
            let f = plugins.lookup(&target, image, registry).await;
            found.credentials.extend(f.credentials);
            found.notes.extend(f.notes);
        }
        if let Some(docker) = &self.docker {
            let f = docker.lookup(&target, registry).await;
            found.credentials.extend(f.credentials);
            found.notes.extend(f.notes);
        }
        // The same secret from two sources is tried once, under the first.
        let mut unique: Vec<Credential> = Vec::new();
        for c in found.credentials {
            if !unique.iter().any(|u| u.key == c.key) {
                unique.push(c);
            }
        }
        found.credentials = unique;
        found
    }

    /// The registry refused `credential`: whatever cached it asks its source again next time.
    pub fn refused(&self, credential: &Credential) {
        match credential.source {
            CredSource::PullSecret => {
                if let Some(p) = &self.pull {
                    p.refused(credential);
                }
            }
            CredSource::Plugin => {
                if let Some(p) = &self.plugins {
                    p.forget(credential);
                }
            }
            CredSource::DockerConfig => {
                if let Some(d) = &self.docker {
                    d.forget(credential);
                }
            }
            CredSource::Anonymous => {}
        }
    }
}

/// How a registry asked us to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    pub fn parse(headers: &HeaderMap) -> Option<Challenge> {
        let value = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
        let (scheme, params) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut realm = None;
        let mut service = None;
        for part in split_params(params) {
            if let Some((k, v)) = part.split_once('=') {
                let v = v.trim().trim_matches('"').to_string();
                match k.trim() {
                    "realm" => realm = Some(v),
                    "service" => service = Some(v),
                    _ => {}
                }
            }
        }
        let realm = realm.filter(|r| r.starts_with("https://") || r.starts_with("http://"))?;
        Some(Challenge::Bearer { realm, service })
    }
}

/// Splits `a="x,y",b=z` on commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut quoted = false;
    s.split(|c| {
        if c == '"' {
            quoted = !quoted;
        }
        c == ',' && !quoted
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn parses_bearer_challenge_with_quoted_commas() {
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
            ),
        );
        assert_eq!(
            Challenge::parse(&h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
    }
}
