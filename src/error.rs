//! The crate's one error type for the operator loops: what can keep a reconcile or an
//! inventory write from finishing, each with a stable metric label.

use std::time::Duration;

use crate::core::posture::Reason;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This replica does not hold the Lease (or its claim ran out): nothing may be written.
    #[error("not the leader")]
    NotLeader,
    /// One write, its client-side retries included, got no answer in time.
    #[error("no answer from the API server within {0:?}")]
    WriteTimeout(Duration),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The image's registry failed (the status says `checking` with this reason); retried
    /// after the registry's backoff, `Retry-After` included.
    #[error("registry failed ({reason}); retried in {retry_in:?}")]
    Registry {
        reason: Reason,
        retry_in: Option<Duration>,
    },
    /// Every verification slot of the image's registry is taken; retried shortly.
    #[error("the registry's verification slots are all taken")]
    RegistryBusy,
    /// The resource's spec names no image we can verify.
    #[error("spec.image {0:?} is not a digest reference")]
    InvalidSpec(String),
}

impl Error {
    /// Label of `imageposture_reconcile_failures_total{error=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NotLeader => "not_leader",
            Error::WriteTimeout(_) => "write_timeout",
            Error::Kube(_) => "kube",
            Error::Registry { .. } => "registry",
            Error::RegistryBusy => "registry_busy",
            Error::InvalidSpec(_) => "invalid_spec",
        }
    }

    /// The API server itself is failing (no answer, 5xx, 429, transport), not this one object:
    /// more writes would only pile onto it.
    pub fn server_failing(&self) -> bool {
        match self {
            Error::WriteTimeout(_) => true,
            Error::Kube(kube::Error::Api(s)) => s.code >= 500 || s.code == 429,
            Error::Kube(kube::Error::HyperError(_) | kube::Error::Service(_)) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
