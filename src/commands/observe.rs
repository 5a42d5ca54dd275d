//! `imageposture observe IMAGE...`: the posture of images, printed, with no cluster. The same
//! observer and verifier as the operator, with nothing recorded.

use std::sync::Arc;

use futures::stream::{self, StreamExt};

use crate::cache::{Observer, ObserverConfig};
use crate::cli::{ObserveArgs, OutputFormat, VerifyArgs};
use crate::commands::output::{self, Row};
use crate::core::image::ImageRef;
use crate::core::posture::{Reason, Verdict};
use crate::verify::Verifier;

/// The verifier and the observer in front of it, as the commands without a cluster
/// (`observe`, `scan`) configure them.
pub async fn observer(args: &VerifyArgs) -> Result<Observer, Box<dyn std::error::Error>> {
    let verifier = Arc::new(Verifier::new(args.config()).await?);
    Ok(Observer::new(
        verifier,
        ObserverConfig {
            budget: args.image_timeout,
            ..ObserverConfig::default()
        },
    ))
}

pub async fn run(args: ObserveArgs) -> Result<(), Box<dyn std::error::Error>> {
    let baselines = crate::commands::input::baselines(args.baseline.as_deref())?;
    let observer = &observer(&args.verify).await?;
    let now = chrono::Utc::now();
    let rows: Vec<Row> = stream::iter(args.images.iter())
        .map(|input| async move {
            let parsed = match ImageRef::parse(input) {
                Ok(r) => r,
                Err(e) => {
                    return Row {
                        image: input.clone(),
                        repository: None,
                        digest: None,
                        verdict: Verdict::checking(Reason::InvalidReference, e.to_string()),
                        drift: None,
                    }
                }
            };
            let repository = Some(parsed.repo_path());
            match observer.resolve(&parsed, now).await {
                Ok(id) => Row {
                    image: input.clone(),
                    repository,
                    digest: Some(id.digest.clone()),
                    verdict: observer
                        .observe_with(&id, std::slice::from_ref(&parsed), None, now)
                        .await
                        .verdict,
                    drift: None,
                },
                Err(verdict) => Row {
                    image: input.clone(),
                    repository,
                    digest: None,
                    verdict,
                    drift: None,
                },
            }
        })
        .buffered(args.verify.concurrency.max(1))
        .collect()
        .await;
    let mut rows = rows;
    for r in &mut rows {
        if let Some(repository) = &r.repository {
            let status = crate::model::crd::ImagePostureStatus::from_verdict(&r.verdict);
            r.drift = crate::model::baseline::offline_drift(repository, &status, &baselines, now);
        }
    }
    print!("{}", output::render(&rows, args.output));
    if args.output == OutputFormat::Table {
        for line in output::drifts(&rows) {
            println!("{line}");
        }
    }
    if args.output == OutputFormat::Table {
        for line in output::failures(&rows) {
            eprintln!("  {line}");
        }
    }
    Ok(())
}
