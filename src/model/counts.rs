//! Counts over ImagePostures (the `images` gauge).

use crate::core::posture::Posture;
use crate::model::crd::ImagePosture;

/// Resources by posture (all four, zeros included), for the `images` gauge.
pub fn posture_counts<'a>(
    resources: impl IntoIterator<Item = &'a ImagePosture>,
) -> Vec<(Posture, i64)> {
    let mut counts = [
        (Posture::Signed, 0),
        (Posture::InvalidSignature, 0),
        (Posture::NotSigned, 0),
        (Posture::Checking, 0),
    ];
    for cr in resources {
        let posture = cr.status.as_ref().and_then(|s| s.posture);
        if let Some(entry) = counts.iter_mut().find(|(p, _)| Some(*p) == posture) {
            entry.1 += 1;
        }
    }
    counts.to_vec()
}
