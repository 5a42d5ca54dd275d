//! Registry credentials (docker `config.json`) and `WWW-Authenticate` challenges.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};

/// Basic credentials per registry host; anonymous when empty.
#[derive(Clone, Default)]
pub struct Credentials {
    by_host: HashMap<String, HeaderValue>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Credentials")
            .field("hosts", &self.by_host.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(serde::Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// Reads a docker `config.json` (`auths` only; credential helpers are not run).
    pub fn from_docker_config(path: &Path) -> Result<Self, String> {
        let data = std::fs::read(path).map_err(|e| e.to_string())?;
        let config: DockerConfig = serde_json::from_slice(&data).map_err(|e| e.to_string())?;
        let engine = base64::engine::general_purpose::STANDARD;
        let mut by_host = HashMap::new();
        for (host, entry) in config.auths {
            let pair = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => auth,
                (_, Some(user), Some(pass)) => engine.encode(format!("{user}:{pass}")),
                _ => continue,
            };
            let mut value = HeaderValue::from_str(&format!("Basic {pair}"))
                .map_err(|_| format!("credentials for {host} are not a valid header"))?;
            // Kept out of any Debug output (hyper/reqwest traces) of the request.
            value.set_sensitive(true);
            by_host.insert(normalize_host(&host), value);
        }
        Ok(Credentials { by_host })
    }

    pub fn basic_header(&self, api_host: &str) -> Option<HeaderValue> {
        self.by_host.get(api_host).cloned().or_else(|| {
            // Docker Hub credentials are filed under its index URL.
            (api_host == "registry-1.docker.io")
                .then(|| self.by_host.get("docker.io").cloned())
                .flatten()
        })
    }
}

/// `https://index.docker.io/v1/` and friends → the API host we send requests to.
fn normalize_host(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    match host {
        "index.docker.io" | "docker.io" | "registry-1.docker.io" => "registry-1.docker.io".into(),
        other => other.to_string(),
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

    #[test]
    fn reads_docker_config() {
        let dir = std::env::temp_dir().join(format!("ip-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"ghcr.io":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let c = Credentials::from_docker_config(&path).unwrap();
        assert_eq!(
            c.basic_header("registry-1.docker.io").unwrap(),
            "Basic dTpw"
        );
        assert_eq!(c.basic_header("ghcr.io").unwrap(), "Basic dTpw");
        assert!(c.basic_header("quay.io").is_none());
        assert!(!format!("{c:?}").contains("dTpw"));
    }
}
