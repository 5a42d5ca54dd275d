//! The status <-> verdict mapping: what each field manager states in `status`, and what a
//! stored status tells the verdict cache ([`Recorded`]).

use chrono::{DateTime, Utc};

use crate::core::posture::{Posture, Reason, Verdict};
use crate::model::crd::{
    parse_time, rfc3339, tags_of, Condition, ImagePostureStatus, ImageUsage, CONDITION_VERIFIED,
};

/// A resting verdict as an image's resource records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub verdict: Verdict,
    /// When a full verification reached it (`lastVerified`).
    pub verified_at: DateTime<Utc>,
    /// When it was last confirmed, verified or revalidated unchanged (`lastChecked`): the TTL
    /// runs from here.
    pub checked_at: DateTime<Utc>,
    /// The resource shows `checking` since: revalidate now, whatever the TTL says.
    pub stale: bool,
}

/// A record as a status keeps it; `lastChecked` defaults to (and is never before) `lastVerified`.
pub fn recorded(
    verdict: Verdict,
    verified_at: DateTime<Utc>,
    checked_at: Option<DateTime<Utc>>,
) -> Recorded {
    Recorded {
        checked_at: checked_at.unwrap_or(verified_at).max(verified_at),
        verdict,
        verified_at,
        stale: false,
    }
}

/// The status <-> verdict mapping, in one place: what each field manager states, and what a
/// stored status tells the observer.
impl ImagePostureStatus {
    /// The verdict fields the verifier states for an observation. Timestamps carry over unless
    /// something changed, so an unchanged image yields identical fields and therefore no write.
    /// While `checking`, the signature records and listing digests of the last verification
    /// stay (with `lastVerified`), so recovery is a cheap revalidation, not a download.
    pub fn verdict_fields(
        v: &Verdict,
        verified_at: Option<DateTime<Utc>>,
        checked_at: Option<DateTime<Utc>>,
        old: Option<&ImagePostureStatus>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut s = ImagePostureStatus::from_verdict(v);
        s.last_verified = verified_at
            .map(rfc3339)
            .or_else(|| old.and_then(|o| o.last_verified.clone()));
        s.last_checked = checked_at
            .map(rfc3339)
            .or_else(|| old.and_then(|o| o.last_checked.clone()));
        if v.posture == Posture::Checking {
            s.checking_since = old
                .filter(|o| o.posture == Some(Posture::Checking))
                .and_then(|o| o.checking_since.clone())
                .or_else(|| Some(rfc3339(now)));
            if let Some(o) = old.filter(|o| o.last_verified.is_some()) {
                s.signatures = o.signatures.clone();
                s.signature_digests = o.signature_digests.clone();
            }
        }
        let condition = Condition::verified(v.posture, v.reason, &v.message, &rfc3339(now));
        let previous =
            old.and_then(|o| o.conditions.iter().find(|c| c.type_ == CONDITION_VERIFIED));
        let since = match previous {
            Some(p) if p.status == condition.status => p.last_transition_time.clone(),
            _ => condition.last_transition_time.clone(),
        };
        s.conditions = vec![Condition {
            last_transition_time: since,
            ..condition
        }];
        s.enforce_bounds();
        s
    }

    /// The verdict fields of a resource the inventory has just created: `checking`/`Pending`
    /// until the controller's first verification.
    pub fn pending(now: DateTime<Utc>) -> Self {
        let v = Verdict::checking(Reason::Pending, "queued for its first verification");
        Self::verdict_fields(&v, None, None, None, now)
    }

    /// The fields the inventory states: who runs the image now (0 pods once the last is gone).
    /// The tag column is derived from the references.
    pub fn inventory_fields(references: Vec<String>, usage: ImageUsage) -> Self {
        let mut s = ImagePostureStatus {
            tag: tags_of(&references),
            references,
            usage: Some(usage),
            ..Default::default()
        };
        s.enforce_bounds();
        s
    }

    /// One status from the two managers' parts (what `scan` prints).
    pub fn combined(verdict: Self, inventory: Self) -> Self {
        ImagePostureStatus {
            references: inventory.references,
            tag: inventory.tag,
            usage: inventory.usage,
            ..verdict
        }
    }

    /// The verdict this status records, for the observer. A resting posture is recorded as
    /// it stands; `checking` after an earlier verification records that verification as stale
    /// (revalidated by its digests before anything else).
    pub fn recorded(&self) -> Option<Recorded> {
        let verified_at = parse_time(self.last_verified.as_deref()?)?;
        let checked_at = self.last_checked.as_deref().and_then(parse_time);
        let posture = self.posture?;
        let verdict = if posture.is_resting() {
            Verdict {
                posture,
                reason: self.reason?,
                message: self.message.clone(),
                signer: self.signer.clone(),
                issuer: self.issuer.clone(),
                signer_type: self.signer_type,
                signatures: self.signatures.clone(),
                artifact_digests: self.signature_digests.clone(),
                retry_after: None,
            }
        } else {
            let mut v = Verdict::from_signatures(self.signatures.clone());
            v.artifact_digests = self.signature_digests.clone();
            v
        };
        let mut r = recorded(verdict, verified_at, checked_at);
        r.stale = !posture.is_resting();
        Some(r)
    }

    /// The stored values of `fields` (JSON names), for comparing with what one manager states.
    pub fn only(&self, fields: &[&str]) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.retain(|k, _| fields.contains(&k.as_str()));
        }
        v
    }
}
