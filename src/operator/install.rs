//! Installing the ImagePosture CRD from the operator itself (`run --install-crd`), so a first
//! run against any cluster needs no separate `kubectl apply`.
//!
//! The CRD is applied by server-side apply under our field manager, forced: the operator owns
//! its own CRD, and one applied earlier by `kubectl apply` must not make start-up fail with a
//! field conflict. The API server accepts a CRD before it serves the new resource; only the
//! `Established` condition says the resource can be listed and watched, so we wait for it
//! (bounded), and fail with the server's own words when the names are rejected.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::CustomResourceExt;

use crate::model::crd::ImagePosture;
use crate::model::fields::MANAGER;

/// How long [`install_crd`] waits for `Established` (a real API server takes about a second).
pub const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between reads of the CRD while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Why the CRD could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "not allowed to install the ImagePosture CRD ({0}): it needs `patch` (and `create`) on \
         customresourcedefinitions.apiextensions.k8s.io; install it once with \
         `kubectl apply -f crds/imageposture.yaml` and run without --install-crd"
    )]
    Forbidden(#[source] kube::Error),
    #[error("applying the ImagePosture CRD failed: {0}")]
    Apply(#[source] kube::Error),
    #[error("the API server rejected the ImagePosture CRD names ({reason}): {message}")]
    NamesNotAccepted { reason: String, message: String },
    #[error(
        "the ImagePosture CRD was applied but is not Established after {waited:?} (last seen: {last})"
    )]
    NotEstablished { waited: Duration, last: String },
}

/// Applies the ImagePosture CRD and waits until it is Established (at most
/// [`ESTABLISH_TIMEOUT`]).
pub async fn install_crd(client: &kube::Client) -> Result<(), InstallError> {
    install_crd_within(client, ESTABLISH_TIMEOUT).await
}

/// Applies the SignerBaseline CRD (signer drift) without waiting for it: the baseline loop
/// waits for its watch, and nothing else needs it. A failure is logged, not fatal.
pub async fn install_baseline_crd(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crate::model::baseline::SignerBaseline::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply(MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(&crd)).await {
        Ok(_) => tracing::info!(crd = %name, "applied the SignerBaseline CRD"),
        Err(error) => {
            tracing::warn!(crd = %name, %error, "cannot apply the SignerBaseline CRD: no signer drift until it is installed")
        }
    }
}

/// [`install_crd`] with an explicit bound on the wait for `Established`.
pub async fn install_crd_within(
    client: &kube::Client,
    timeout: Duration,
) -> Result<(), InstallError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ImagePosture::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&crd))
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => InstallError::Forbidden(e),
            _ => InstallError::Apply(e),
        })?;
    tracing::info!(crd = %name, "applied the ImagePosture CRD; waiting until it is Established");

    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Each read is bounded by what is left of the wait: the client retries a 429, 503 or
        // 504 by itself, with a backoff that grows to minutes.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let last = match tokio::time::timeout(left, api.get_opt(&name)).await {
            Ok(Ok(Some(current))) => match state(&current) {
                State::Established => return Ok(()),
                State::NamesNotAccepted { reason, message } => {
                    return Err(InstallError::NamesNotAccepted { reason, message })
                }
                State::Waiting(seen) => seen,
            },
            Ok(Ok(None)) => "not found yet".to_string(),
            // Transient (the server is busy installing it): keep the error for the report.
            Ok(Err(e)) => format!("reading it failed: {e}"),
            Err(_) => "reading it did not answer in time".to_string(),
        };
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(InstallError::NotEstablished {
                waited: timeout,
                last: crate::core::posture::bound(&last, crate::core::posture::MAX_MESSAGE),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

enum State {
    Established,
    NamesNotAccepted {
        reason: String,
        message: String,
    },
    /// A description of the conditions seen, for the timeout error.
    Waiting(String),
}

fn state(crd: &CustomResourceDefinition) -> State {
    let conditions = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c.type_ == t);
    if find("Established").is_some_and(|c| c.status == "True") {
        return State::Established;
    }
    if let Some(c) = find("NamesAccepted").filter(|c| c.status == "False") {
        return State::NamesNotAccepted {
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        };
    }
    if conditions.is_empty() {
        return State::Waiting("no conditions yet".to_string());
    }
    State::Waiting(
        conditions
            .iter()
            .map(|c| {
                format!(
                    "{}={} {}",
                    c.type_,
                    c.status,
                    c.reason.as_deref().unwrap_or_default()
                )
                .trim_end()
                .to_string()
            })
            .collect::<Vec<_>>()
            .join(", "),
    )
}
