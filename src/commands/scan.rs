//! `imageposture scan`: the ImagePosture objects the operator would write, from a pod list
//! (`kubectl get pods -A -o json`), with no cluster.

use k8s_openapi::api::core::v1::Pod;

use futures::stream::{self, StreamExt};

use crate::cache::Observer;
use crate::cli::{OutputFormat, ScanArgs};
use crate::model::crd::{self, ImagePosture, ImagePostureStatus, ImageUsage};
use crate::model::fields;
use crate::operator::inventory::{Inventory, NamespaceFilter, PodView};

/// Largest pod list accepted (a 10k-pod cluster lists in well under this).
const MAX_INPUT: u64 = 512 << 20;

pub async fn run(args: ScanArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pods = read_pods(&args.file)?;
    let baselines = crate::commands::input::baselines(args.baseline.as_deref())?;
    let observer = crate::commands::observe::observer(&args.verify).await?;
    let mut objects = scan(&pods, &observer, args.verify.concurrency).await;
    judge_drift(&mut objects, &baselines, chrono::Utc::now());
    let out = match args.output {
        OutputFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            serde_json::to_string_pretty(&list)? + "\n"
        }
        OutputFormat::Yaml | OutputFormat::Table => objects
            .iter()
            .map(serde_yaml::to_string)
            .collect::<Result<Vec<_>, _>>()?
            .join("---\n"),
    };
    print!("{out}");
    Ok(())
}

/// States `status.drift` on each object against `baselines` (by repository), as the
/// operator's baseline loop would; nothing is learned without a cluster.
pub fn judge_drift(
    objects: &mut [ImagePosture],
    baselines: &[crate::model::baseline::SignerBaseline],
    now: chrono::DateTime<chrono::Utc>,
) {
    if baselines.is_empty() {
        return;
    }
    for o in objects {
        let repository = o.spec.repository.clone();
        if let Some(status) = o.status.as_mut() {
            status.drift =
                crate::model::baseline::offline_drift(&repository, status, baselines, now);
        }
    }
}

/// The objects for a set of pods, most-used images first, `concurrency` images at a time.
pub async fn scan<P: PodView>(
    pods: &[P],
    observer: &Observer,
    concurrency: usize,
) -> Vec<ImagePosture> {
    let now = chrono::Utc::now();
    let mut inv = Inventory::from_pods(pods, &NamespaceFilter::default());
    for (reference, why) in &inv.invalid {
        eprintln!(
            "imageposture: skipping {}: {}",
            crate::core::text::escape(reference),
            crate::core::text::escape(why)
        );
    }
    let tags: Vec<_> = inv.unresolved.keys().cloned().collect();
    let resolved: Vec<_> = stream::iter(tags)
        .map(|tag| async move {
            let r = observer.resolve_running(&tag, now).await;
            (tag, r)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for (tag, r) in resolved {
        match r {
            Ok(id) => inv.resolve(&tag, id),
            Err(v) => eprintln!(
                "imageposture: {} {} ({}: {})",
                crate::core::text::escape(&tag.to_string()),
                match tag {
                    crate::core::tie::Unresolved::Tag(_) => "has no digest yet",
                    crate::core::tie::Unresolved::Tie(_) =>
                        "is not tied to a manifest digest: no posture attributed",
                },
                v.reason,
                crate::core::text::escape(&v.message)
            ),
        }
    }
    let order = inv.by_usage();
    let inv = &inv;
    stream::iter(order)
        .map(|id| async move {
            let usage = inv.images.get(&id)?;
            let leads: Vec<_> = usage
                .references
                .iter()
                .filter_map(|r| crate::core::image::ImageRef::parse(r).ok())
                .collect();
            let o = observer.observe_with(&id, &leads, None, now).await;
            let mut r = crd::new_resource(&id);
            r.metadata.labels = Some(fields::labels(&id, Some(o.verdict.posture)));
            let verdict = ImagePostureStatus::verdict_fields(
                &o.verdict,
                o.verified_at,
                o.checked_at,
                None,
                now,
            );
            let inventory = ImagePostureStatus::inventory_fields(
                usage.references.iter().cloned().collect(),
                ImageUsage::new(
                    u32::try_from(usage.pods.len()).unwrap_or(u32::MAX),
                    usage.namespaces.iter().map(String::as_str),
                ),
            );
            r.status = Some(ImagePostureStatus::combined(verdict, inventory));
            Some(r)
        })
        .buffered(concurrency.max(1))
        .filter_map(|r| async move { r })
        .collect()
        .await
}

fn read_pods(path: &std::path::Path) -> Result<Vec<Pod>, Box<dyn std::error::Error>> {
    let raw = crate::commands::input::read(path, MAX_INPUT)?;
    parse_pods(&raw).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Accepts a `List`/`PodList` (`kubectl get pods -o json`) or a single Pod.
pub fn parse_pods(raw: &[u8]) -> Result<Vec<Pod>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let items = match value.get("items") {
        Some(serde_json::Value::Array(items)) => items.clone(),
        Some(_) => return Err("`items` is not a list".into()),
        None if value.get("kind").and_then(|k| k.as_str()) == Some("Pod") => vec![value],
        None => return Err("expected `kubectl get pods -o json` output (a List of Pods)".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| serde_json::from_value(item).map_err(|e| format!("item {i}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_rejects_garbage() {
        let list = br#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}]}"#;
        assert_eq!(parse_pods(list).unwrap().len(), 1);
        assert_eq!(
            parse_pods(br#"{"kind":"Pod","metadata":{"name":"a"}}"#)
                .unwrap()
                .len(),
            1
        );
        assert!(parse_pods(b"nope").is_err());
        assert!(parse_pods(br#"{"kind":"Service"}"#).is_err());
        assert!(parse_pods(br#"{"items":[{"spec":{"containers":7}}]}"#).is_err());
    }
}
