//! `imageposture summary`: the cluster's signing posture at a glance, from the ImagePosture
//! resources (current kube context) or from `imageposture scan` output (`--from FILE`).
//!
//! Counts by posture, the most common signers and issuers, the namespaces running
//! `invalid-signature` or `not-signed` images, and the images stuck in `checking` with their
//! reasons. Objects are read leniently (strings, not this build's enums), so resources written
//! by a newer operator, with a reason this build does not know, are still counted. Signer,
//! issuer and message text is attacker-influenced: bounded here, and escaped when printed.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::{OutputFormat, SummaryArgs};
use crate::core::posture::{bound, Posture, MAX_MESSAGE, MAX_TEXT};
use crate::core::text::escape;

/// Largest `--from` file accepted (scan output for 5000 images is a few MiB).
const MAX_INPUT: u64 = 256 << 20;
/// Namespaces and checking images listed (the totals are always given).
pub const MAX_LISTED: usize = 50;
/// Most signers/issuers `--top` may ask for.
const MAX_TOP: usize = 100;
/// Objects fetched per list request from the API server.
const PAGE: u32 = 500;
/// Widest message column in the table; longer text ends in `…`.
const COLUMN: usize = 72;
/// Widest signer, issuer or image shown (after escaping): they are the last column, whole
/// unless hostile.
const WIDE_COLUMN: usize = 200;

pub async fn run(args: SummaryArgs) -> Result<(), Box<dyn std::error::Error>> {
    let objects = match &args.from {
        Some(path) => read_file(path)?,
        None => list_cluster().await?,
    };
    let entries: Vec<Entry> = objects.iter().filter_map(Entry::from_object).collect();
    let summary = Summary::new(&entries, args.top, Utc::now());
    print!("{}", render(&summary, args.output)?);
    Ok(())
}

/// One ImagePosture as the summary reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub image: String,
    /// `signed`, `invalid-signature`, `not-signed`, `checking`; an object without a status yet
    /// counts as `checking`/`Pending` (nothing is known about it).
    pub posture: Posture,
    pub signer: Option<String>,
    pub issuer: Option<String>,
    pub reason: String,
    pub message: String,
    pub checking_since: Option<DateTime<Utc>>,
    pub pods: u64,
    pub namespaces: Vec<String>,
    /// True number of namespaces (`namespaces` may be cut by the operator).
    pub namespace_count: u64,
    /// `status.drift`: how the image departs from its repository's SignerBaseline.
    pub drift: Option<EntryDrift>,
}

/// An image's drift as the summary reads it (kind kept as text: a newer operator's kinds count).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EntryDrift {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub signer: Option<String>,
    #[serde(default)]
    pub source_ref: Option<String>,
    #[serde(default)]
    pub message: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    posture: Option<String>,
    signer: Option<String>,
    issuer: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    message: String,
    checking_since: Option<String>,
    #[serde(default)]
    usage: RawUsage,
    drift: Option<EntryDrift>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawUsage {
    #[serde(default)]
    pods: u64,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    namespace_count: u64,
}

impl Entry {
    /// An ImagePosture object (JSON), or `None` for anything else (skipped, not fatal).
    pub fn from_object(obj: &Value) -> Option<Entry> {
        if obj.get("kind").and_then(Value::as_str) != Some("ImagePosture") {
            return None;
        }
        let image = obj
            .pointer("/spec/image")
            .and_then(Value::as_str)
            .or_else(|| obj.pointer("/metadata/name").and_then(Value::as_str))?;
        let status: RawStatus = obj
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        let posture = match status.posture.as_deref() {
            Some("signed") => Posture::Signed,
            Some("invalid-signature") => Posture::InvalidSignature,
            Some("not-signed") => Posture::NotSigned,
            _ => Posture::Checking,
        };
        let reason = status.reason.unwrap_or_else(|| "Pending".to_string());
        let mut namespaces = status.usage.namespaces;
        namespaces.truncate(crate::model::crd::MAX_NAMESPACES_IN_STATUS);
        let listed = namespaces.len() as u64;
        Some(Entry {
            image: bound(image, crate::model::crd::MAX_REFERENCE_TEXT),
            posture,
            signer: status.signer.map(|s| bound(&s, MAX_TEXT)),
            issuer: status.issuer.map(|s| bound(&s, MAX_TEXT)),
            reason: bound(&reason, 64),
            message: bound(&status.message, MAX_MESSAGE),
            checking_since: status
                .checking_since
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
            pods: status.usage.pods,
            namespaces: namespaces.into_iter().map(|n| bound(&n, 63)).collect(),
            namespace_count: status.usage.namespace_count.max(listed),
            drift: status
                .drift
                .filter(|d| !d.kind.is_empty())
                .map(|d| EntryDrift {
                    kind: bound(&d.kind, 64),
                    signer: d.signer.map(|s| bound(&s, MAX_TEXT)),
                    source_ref: d.source_ref.map(|s| bound(&s, MAX_TEXT)),
                    message: bound(&d.message, MAX_MESSAGE),
                }),
        })
    }
}

/// What `summary` prints (also its `-o json` form).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub images: usize,
    pub pods: u64,
    /// Every posture, in a fixed order, zeros included.
    pub postures: Vec<PostureCount>,
    /// Most common signers of signed images, most images first.
    pub signers: Vec<Ranked>,
    /// Distinct signers in all.
    pub signer_count: usize,
    pub issuers: Vec<Ranked>,
    pub issuer_count: usize,
    /// Namespaces running invalid-signature or not-signed images, worst first (first 50).
    pub namespaces: Vec<NamespaceRisk>,
    pub namespace_count: usize,
    /// Images whose namespace list the operator cut (they run in more namespaces than listed).
    pub images_with_unlisted_namespaces: usize,
    /// Images in `checking`, longest first (first 50).
    pub checking: Vec<Checking>,
    pub checking_count: usize,
    /// Images departing from their repository's SignerBaseline, by drift kind.
    pub drift_counts: BTreeMap<String, usize>,
    /// Those images (alarms first, then by image; first 50).
    pub drifting: Vec<Drifting>,
    pub drifting_count: usize,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Drifting {
    pub image: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    pub message: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostureCount {
    pub posture: Posture,
    pub images: usize,
    pub pods: u64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ranked {
    pub name: String,
    pub images: usize,
    pub pods: u64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRisk {
    pub namespace: String,
    pub invalid_signature: usize,
    pub not_signed: usize,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Checking {
    pub image: String,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checking_since: Option<DateTime<Utc>>,
    /// Seconds since `checkingSince` at the time of the summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_seconds: Option<i64>,
}

const POSTURES: [Posture; 4] = [
    Posture::Signed,
    Posture::InvalidSignature,
    Posture::NotSigned,
    Posture::Checking,
];

impl Summary {
    pub fn new(entries: &[Entry], top: usize, now: DateTime<Utc>) -> Summary {
        let top = top.min(MAX_TOP);
        let postures = POSTURES
            .iter()
            .map(|&p| {
                let of: Vec<&Entry> = entries.iter().filter(|e| e.posture == p).collect();
                PostureCount {
                    posture: p,
                    images: of.len(),
                    pods: of.iter().map(|e| e.pods).sum(),
                }
            })
            .collect();
        let signed: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.posture == Posture::Signed)
            .collect();
        let (signers, signer_count) = rank(signed.iter().map(|e| (e.signer.as_deref(), e)), top);
        let (issuers, issuer_count) = rank(signed.iter().map(|e| (e.issuer.as_deref(), e)), top);

        let mut risk: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for e in entries {
            for ns in &e.namespaces {
                let r = risk.entry(ns.as_str()).or_default();
                match e.posture {
                    Posture::InvalidSignature => r.0 += 1,
                    Posture::NotSigned => r.1 += 1,
                    _ => {}
                }
            }
        }
        let mut namespaces: Vec<NamespaceRisk> = risk
            .into_iter()
            .filter(|(_, (i, n))| i + n > 0)
            .map(|(ns, (i, n))| NamespaceRisk {
                namespace: ns.to_string(),
                invalid_signature: i,
                not_signed: n,
            })
            .collect();
        namespaces.sort_by(|a, b| {
            (b.invalid_signature, b.not_signed)
                .cmp(&(a.invalid_signature, a.not_signed))
                .then_with(|| a.namespace.cmp(&b.namespace))
        });
        let namespace_count = namespaces.len();
        namespaces.truncate(MAX_LISTED);

        let mut checking: Vec<Checking> = entries
            .iter()
            .filter(|e| e.posture == Posture::Checking)
            .map(|e| Checking {
                image: e.image.clone(),
                reason: e.reason.clone(),
                message: e.message.clone(),
                checking_since: e.checking_since,
                for_seconds: e.checking_since.map(|t| (now - t).num_seconds().max(0)),
            })
            .collect();
        // Oldest first; those without a start time (just created) last.
        checking.sort_by(|a, b| {
            match (a.checking_since, b.checking_since) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
            .then_with(|| a.image.cmp(&b.image))
        });
        let checking_count = checking.len();
        checking.truncate(MAX_LISTED);

        let mut drift_counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut drifting: Vec<Drifting> = entries
            .iter()
            .filter_map(|e| {
                let d = e.drift.as_ref()?;
                *drift_counts.entry(d.kind.clone()).or_default() += 1;
                Some(Drifting {
                    image: e.image.clone(),
                    kind: d.kind.clone(),
                    signer: d.signer.clone(),
                    source_ref: d.source_ref.clone(),
                    message: d.message.clone(),
                })
            })
            .collect();
        // Alarms before the SourceRefChanged warnings.
        drifting.sort_by(|a, b| {
            (a.kind == "SourceRefChanged", &a.image).cmp(&(b.kind == "SourceRefChanged", &b.image))
        });
        let drifting_count = drifting.len();
        drifting.truncate(MAX_LISTED);

        Summary {
            images: entries.len(),
            pods: entries.iter().map(|e| e.pods).sum(),
            postures,
            signers,
            signer_count,
            issuers,
            issuer_count,
            namespaces,
            namespace_count,
            images_with_unlisted_namespaces: entries
                .iter()
                .filter(|e| e.namespace_count > e.namespaces.len() as u64)
                .count(),
            checking,
            checking_count,
            drift_counts,
            drifting,
            drifting_count,
        }
    }
}

/// The `top` most frequent names (by images, then pods, then name) and how many there are.
fn rank<'a>(
    items: impl Iterator<Item = (Option<&'a str>, &'a &'a Entry)>,
    top: usize,
) -> (Vec<Ranked>, usize) {
    let mut by: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for (name, e) in items {
        if let Some(name) = name {
            let r = by.entry(name).or_default();
            r.0 += 1;
            r.1 += e.pods;
        }
    }
    let count = by.len();
    let mut ranked: Vec<Ranked> = by
        .into_iter()
        .map(|(name, (images, pods))| Ranked {
            name: name.to_string(),
            images,
            pods,
        })
        .collect();
    ranked.sort_by(|a, b| {
        (b.images, b.pods)
            .cmp(&(a.images, a.pods))
            .then_with(|| a.name.cmp(&b.name))
    });
    ranked.truncate(top);
    (ranked, count)
}

pub fn render(s: &Summary, format: OutputFormat) -> Result<String, Box<dyn std::error::Error>> {
    Ok(match format {
        OutputFormat::Json => serde_json::to_string_pretty(s)? + "\n",
        OutputFormat::Yaml => serde_yaml::to_string(s)?,
        OutputFormat::Table => table(s),
    })
}

/// Text for a terminal: escaped, and cut to `width` characters.
fn cell(text: &str, width: usize) -> String {
    let shown = escape(text);
    if shown.chars().count() <= width {
        return shown;
    }
    let mut cut: String = shown.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `1h05m`, `3d4h`, `45s`.
fn age(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Aligned columns; `right` marks the numeric ones.
fn columns(out: &mut String, header: &[&str], right: &[bool], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if right.get(i).copied().unwrap_or(false) {
                line.push_str(&format!("{c:>w$}  "));
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn more(out: &mut String, shown: usize, total: usize, what: &str) {
    if total > shown {
        out.push_str(&format!("… and {} more {what}\n", total - shown));
    }
}

fn table(s: &Summary) -> String {
    let mut out = format!("{} images in {} pods\n\n", s.images, s.pods);
    let rows: Vec<Vec<String>> = s
        .postures
        .iter()
        .map(|p| {
            vec![
                p.posture.to_string(),
                p.images.to_string(),
                p.pods.to_string(),
            ]
        })
        .collect();
    columns(
        &mut out,
        &["POSTURE", "IMAGES", "PODS"],
        &[false, true, true],
        &rows,
    );

    for (title, ranked, total, what) in [
        ("SIGNER", &s.signers, s.signer_count, "signers"),
        ("ISSUER", &s.issuers, s.issuer_count, "issuers"),
    ] {
        out.push('\n');
        if ranked.is_empty() {
            out.push_str(&format!("no {what}: no signed image\n"));
            continue;
        }
        let rows: Vec<Vec<String>> = ranked
            .iter()
            .map(|r| {
                vec![
                    r.images.to_string(),
                    r.pods.to_string(),
                    cell(&r.name, WIDE_COLUMN),
                ]
            })
            .collect();
        columns(
            &mut out,
            &["IMAGES", "PODS", title],
            &[true, true, false],
            &rows,
        );
        more(&mut out, ranked.len(), total, what);
    }

    out.push('\n');
    if s.namespaces.is_empty() {
        out.push_str("no namespace runs invalid-signature or not-signed images\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .namespaces
            .iter()
            .map(|n| {
                vec![
                    cell(&n.namespace, WIDE_COLUMN),
                    n.invalid_signature.to_string(),
                    n.not_signed.to_string(),
                ]
            })
            .collect();
        columns(
            &mut out,
            &["NAMESPACE", "INVALID-SIGNATURE", "NOT-SIGNED"],
            &[false, true, true],
            &rows,
        );
        more(
            &mut out,
            s.namespaces.len(),
            s.namespace_count,
            "namespaces",
        );
    }
    if s.images_with_unlisted_namespaces > 0 {
        out.push_str(&format!(
            "(lower bounds: {} image(s) run in more namespaces than their ImagePosture lists)\n",
            s.images_with_unlisted_namespaces
        ));
    }

    out.push('\n');
    if s.checking.is_empty() {
        out.push_str("no image is checking\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .checking
            .iter()
            .map(|c| {
                vec![
                    c.for_seconds.map(age).unwrap_or_else(|| "-".into()),
                    cell(&c.reason, COLUMN),
                    cell(&c.image, WIDE_COLUMN),
                    cell(&c.message, COLUMN),
                ]
            })
            .collect();
        columns(
            &mut out,
            &["FOR", "REASON", "CHECKING IMAGE", "MESSAGE"],
            &[true, false, false, false],
            &rows,
        );
        more(
            &mut out,
            s.checking.len(),
            s.checking_count,
            "checking images",
        );
    }

    out.push('\n');
    if s.drifting.is_empty() {
        out.push_str("no image departs from its signer baseline\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .drifting
            .iter()
            .map(|d| {
                vec![
                    cell(&d.kind, COLUMN),
                    cell(&d.image, WIDE_COLUMN),
                    cell(d.signer.as_deref().unwrap_or("-"), WIDE_COLUMN),
                    cell(d.source_ref.as_deref().unwrap_or("-"), COLUMN),
                ]
            })
            .collect();
        columns(
            &mut out,
            &["DRIFT", "IMAGE", "SIGNED BY", "REF"],
            &[false, false, false, false],
            &rows,
        );
        more(
            &mut out,
            s.drifting.len(),
            s.drifting_count,
            "drifting images",
        );
    }
    out
}

/// Objects of a scan output file: a JSON `List`, YAML documents (each an ImagePosture or a
/// List), or one object.
fn read_file(path: &Path) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let raw = crate::commands::input::read(path, MAX_INPUT)?;
    parse_objects(&raw).map_err(|e| format!("{}: {e}", path.display()).into())
}

pub fn parse_objects(raw: &[u8]) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = match serde_json::from_slice::<Value>(raw) {
        Ok(v) => vec![v],
        Err(json_error) => {
            let text = std::str::from_utf8(raw).map_err(|_| format!("not JSON: {json_error}"))?;
            serde_yaml::Deserializer::from_str(text)
                .map(|d| {
                    serde_yaml::Value::deserialize(d)
                        .map_err(|e| format!("neither JSON ({json_error}) nor YAML ({e})"))
                        .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
                })
                .collect::<Result<_, _>>()?
        }
    };
    let mut out = Vec::new();
    for doc in docs {
        match doc.get("items") {
            Some(Value::Array(items)) => out.extend(items.iter().cloned()),
            Some(_) => return Err("`items` is not a list".into()),
            None if doc.is_null() => {}
            None => out.push(doc),
        }
    }
    if !out.is_empty()
        && !out
            .iter()
            .any(|o| o.get("kind").and_then(Value::as_str) == Some("ImagePosture"))
    {
        return Err("no ImagePosture object (expected `imageposture scan` output)".into());
    }
    Ok(out)
}

/// Every ImagePosture in the cluster of the current kube context (in-cluster config inside a
/// pod), listed in pages.
async fn list_cluster() -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("no cluster to read ({e}); use --from FILE to summarize `imageposture scan` output")
    })?;
    list(&client).await
}

/// Every ImagePosture visible to `client`, as JSON objects.
pub async fn list(client: &kube::Client) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    use kube::api::{Api, ApiResource, DynamicObject, ListParams};
    let resource = ApiResource::erase::<crate::model::crd::ImagePosture>(&());
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| format!("listing ImagePostures: {e}"))?;
        for mut obj in page.items {
            obj.types.get_or_insert_with(|| kube::api::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            });
            out.push(serde_json::to_value(obj)?);
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(image: &str, status: Value) -> Value {
        json!({"apiVersion": "imageposture.io/v1alpha1", "kind": "ImagePosture",
               "metadata": {"name": image}, "spec": {"image": image}, "status": status})
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn sample() -> Vec<Entry> {
        [
            obj("r/a@sha256:1", json!({"posture": "signed", "signer": "alice", "issuer": "gh", "usage": {"pods": 3, "namespaces": ["prod"], "namespaceCount": 1}})),
            obj("r/b@sha256:2", json!({"posture": "signed", "signer": "alice", "issuer": "gh", "usage": {"pods": 1, "namespaces": ["dev"]}})),
            obj("r/c@sha256:3", json!({"posture": "signed", "signer": "bob", "usage": {"pods": 9}})),
            obj("r/d@sha256:4", json!({"posture": "not-signed", "reason": "NoSignature", "usage": {"pods": 2, "namespaces": ["dev", "prod"], "namespaceCount": 20}})),
            obj("r/e@sha256:5", json!({"posture": "invalid-signature", "reason": "BadSignature", "usage": {"pods": 1, "namespaces": ["prod"]}})),
            obj("r/f@sha256:6", json!({"posture": "checking", "reason": "Timeout", "message": "slow", "checkingSince": "2026-12-01T10:30:00Z", "usage": {"pods": 1}})),
            obj("r/g@sha256:7", json!({"posture": "checking", "reason": "SomeFutureReason", "checkingSince": "2026-12-01T11:59:00Z"})),
            obj("r/h@sha256:8", Value::Null),
            json!({"kind": "Pod", "metadata": {"name": "ignored"}}),
        ]
        .iter()
        .filter_map(Entry::from_object)
        .collect()
    }

    #[test]
    fn drifting_images_are_listed_alarms_first_and_escaped() {
        let entries: Vec<Entry> = [
            obj("r/a@sha256:1", json!({"posture": "signed", "drift": {"kind": "SourceRefChanged", "signer": "wf", "sourceRef": "refs/heads/main", "message": "m", "baseline": "b", "since": "2026-12-01T10:00:00Z"}})),
            obj("r/b@sha256:2", json!({"posture": "signed", "drift": {"kind": "SignerChanged", "signer": "mal\u{202e}lory", "message": "m", "baseline": "b", "since": "2026-12-01T10:00:00Z"}})),
            obj("r/c@sha256:3", json!({"posture": "signed"})),
        ]
        .iter()
        .filter_map(Entry::from_object)
        .collect();
        let s = Summary::new(&entries, 10, now());
        assert_eq!(s.drifting_count, 2);
        assert_eq!(s.drifting[0].kind, "SignerChanged");
        assert_eq!(s.drift_counts["SourceRefChanged"], 1);
        let t = table(&s);
        assert!(t.contains("DRIFT"), "{t}");
        assert!(t.contains("mal\\u{202e}lory"), "{t}");
        assert!(!t.contains('\u{202e}'));
        let none = table(&Summary::new(
            entries.get(2..).unwrap_or_default(),
            10,
            now(),
        ));
        assert!(none.contains("no image departs from its signer baseline"));
    }

    #[test]
    fn counts_ranks_and_lists() {
        let s = Summary::new(&sample(), 10, now());
        assert_eq!(s.images, 8);
        assert_eq!(s.pods, 17);
        let counts: Vec<(Posture, usize, u64)> = s
            .postures
            .iter()
            .map(|p| (p.posture, p.images, p.pods))
            .collect();
        assert_eq!(
            counts,
            vec![
                (Posture::Signed, 3, 13),
                (Posture::InvalidSignature, 1, 1),
                (Posture::NotSigned, 1, 2),
                (Posture::Checking, 3, 1),
            ]
        );
        assert_eq!(s.signers[0].name, "alice");
        assert_eq!((s.signers[0].images, s.signers[0].pods), (2, 4));
        assert_eq!(s.signers[1].name, "bob");
        assert_eq!((s.signer_count, s.issuer_count), (2, 1));
        assert_eq!(
            s.namespaces,
            vec![
                NamespaceRisk {
                    namespace: "prod".into(),
                    invalid_signature: 1,
                    not_signed: 1
                },
                NamespaceRisk {
                    namespace: "dev".into(),
                    invalid_signature: 0,
                    not_signed: 1
                },
            ]
        );
        assert_eq!(s.images_with_unlisted_namespaces, 1);
        let checking: Vec<(&str, &str, Option<i64>)> = s
            .checking
            .iter()
            .map(|c| (c.image.as_str(), c.reason.as_str(), c.for_seconds))
            .collect();
        assert_eq!(
            checking,
            vec![
                ("r/f@sha256:6", "Timeout", Some(5400)),
                ("r/g@sha256:7", "SomeFutureReason", Some(60)),
                ("r/h@sha256:8", "Pending", None),
            ]
        );
        let top1 = Summary::new(&sample(), 1, now());
        assert_eq!(top1.signers.len(), 1);
        assert_eq!(top1.signer_count, 2);
    }

    #[test]
    fn table_escapes_and_bounds_signer_text() {
        let evil = format!("mallory@\u{202e}moc.evil\u{1b}[2J{}", "x".repeat(5000));
        let entries: Vec<Entry> = [obj(
            "r/a@sha256:1",
            json!({"posture": "signed", "signer": evil, "issuer": "gh"}),
        )]
        .iter()
        .filter_map(Entry::from_object)
        .collect();
        assert!(entries[0].signer.as_ref().unwrap().len() <= MAX_TEXT + 3);
        let s = Summary::new(&entries, 10, now());
        let text = render(&s, OutputFormat::Table).unwrap();
        // Bounding already blanked the control character; the bidi override is escaped.
        assert!(text.contains("mallory@\\u{202e}moc.evil [2J"), "{text}");
        assert!(text
            .chars()
            .all(|c| c == '\n' || !crate::core::text::hides(c)));
        assert!(
            text.lines().all(|l| l.chars().count() <= WIDE_COLUMN + 20),
            "{text}"
        );
        let json = render(&s, OutputFormat::Json).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        assert!(back["signers"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("mallory@\u{202e}"));
    }

    #[test]
    fn lists_are_capped_and_counted() {
        let entries: Vec<Entry> = (0..(MAX_LISTED + 7))
            .filter_map(|i| {
                Entry::from_object(&obj(
                    &format!("r/x{i}@sha256:{i}"),
                    json!({"posture": "not-signed", "usage": {"namespaces": [format!("ns{i}")]}}),
                ))
            })
            .chain((0..(MAX_LISTED + 3)).filter_map(|i| {
                Entry::from_object(&obj(
                    &format!("r/c{i}@sha256:{i}"),
                    json!({"posture": "checking"}),
                ))
            }))
            .collect();
        let s = Summary::new(&entries, 10, now());
        assert_eq!(s.namespaces.len(), MAX_LISTED);
        assert_eq!(s.namespace_count, MAX_LISTED + 7);
        assert_eq!(s.checking.len(), MAX_LISTED);
        assert_eq!(s.checking_count, MAX_LISTED + 3);
        let text = render(&s, OutputFormat::Table).unwrap();
        assert!(text.contains("… and 7 more namespaces"), "{text}");
        assert!(text.contains("… and 3 more checking images"), "{text}");
    }

    #[test]
    fn parses_json_lists_and_yaml_documents() {
        let list = json!({"kind": "List", "items": [obj("a", json!({})), obj("b", json!({}))]});
        assert_eq!(parse_objects(list.to_string().as_bytes()).unwrap().len(), 2);
        let yaml =
            "kind: ImagePosture\nspec: {image: a}\n---\nkind: ImagePosture\nspec: {image: b}\n";
        assert_eq!(parse_objects(yaml.as_bytes()).unwrap().len(), 2);
        assert!(
            parse_objects(b"{\"kind\": \"PodList\", \"items\": [{\"kind\": \"Pod\"}]}").is_err()
        );
        assert!(parse_objects(b"{\"items\": 3}").is_err());
        assert!(parse_objects(b"\xff\xfe").is_err());
        assert_eq!(
            parse_objects(b"{\"kind\":\"List\",\"items\":[]}")
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age(45), "45s");
        assert_eq!(age(300), "5m");
        assert_eq!(age(3900), "1h05m");
        assert_eq!(age(3 * 86_400 + 4 * 3600), "3d4h");
    }
}
