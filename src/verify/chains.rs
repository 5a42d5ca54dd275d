//! Certificate paths already verified against a trust root ([`ChainCache`]), so a CI run's
//! many images signed under one Fulcio certificate walk the path once. Held by the trust
//! material, filled by the certificate checks: neither imports the other for it.

use rustls_pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use x509_cert::der::Decode;
use x509_cert::Certificate;

/// Verified paths remembered per trust root (a Fulcio certificate signs one CI run's images).
const CHAIN_CACHE_CAPACITY: usize = 4096;

/// A closed interval of unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub(super) from: i64,
    pub(super) to: i64,
}

impl Window {
    pub(super) fn of(cert: &Certificate) -> Window {
        let v = cert.tbs_certificate().validity();
        let secs = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        Window {
            from: secs(v.not_before),
            to: secs(v.not_after),
        }
    }

    pub(super) fn intersect(self, other: Window) -> Window {
        Window {
            from: self.from.max(other.from),
            to: self.to.min(other.to),
        }
    }

    pub(super) fn contains(&self, t: i64) -> bool {
        self.from <= t && t <= self.to
    }
}

/// Certificate paths verified against one trust root, by SHA-256 of the leaf and the chain
/// the artifact supplied, with the window in which the path holds. Bounded: the oldest entry
/// goes first.
#[derive(Default)]
pub struct ChainCache {
    state: std::sync::Mutex<CacheState>,
    cas: std::sync::OnceLock<Option<Vec<Certificate>>>,
}

#[derive(Default)]
struct CacheState {
    paths: std::collections::HashMap<[u8; 32], Window>,
    order: std::collections::VecDeque<[u8; 32]>,
}

impl ChainCache {
    pub(super) fn covers(&self, key: &[u8; 32], time: i64) -> bool {
        self.state
            .lock()
            .map(|s| s.paths.get(key).is_some_and(|w| w.contains(time)))
            .unwrap_or(false)
    }

    pub(super) fn insert(&self, key: [u8; 32], window: Window) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.paths.insert(key, window).is_none() {
            s.order.push_back(key);
        }
        while s.order.len() > CHAIN_CACHE_CAPACITY {
            if let Some(old) = s.order.pop_front() {
                s.paths.remove(&old);
            }
        }
    }

    /// The trusted CA certificates, parsed once.
    pub(super) fn cas(&self, ders: &[CertificateDer<'static>]) -> Option<&Vec<Certificate>> {
        self.cas
            .get_or_init(|| {
                ders.iter()
                    .map(|d| Certificate::from_der(d).ok())
                    .collect::<Option<Vec<_>>>()
            })
            .as_ref()
    }

    /// How many paths are remembered.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.paths.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(super) fn chain_key(leaf: &[u8], chain: &[Vec<u8>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in std::iter::once(leaf).chain(chain.iter().map(Vec::as_slice)) {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded() {
        let cache = ChainCache::default();
        let w = Window { from: 0, to: 10 };
        for i in 0..(CHAIN_CACHE_CAPACITY + 10) {
            cache.insert(chain_key(&i.to_be_bytes(), &[]), w);
        }
        assert_eq!(cache.len(), CHAIN_CACHE_CAPACITY);
        // The oldest went first.
        assert!(!cache.covers(&chain_key(&0usize.to_be_bytes(), &[]), 5));
    }
}
