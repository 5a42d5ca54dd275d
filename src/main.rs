use std::process::ExitCode;

use clap::Parser;
use futures::stream::{self, StreamExt};

use imageposture::cli::{Cli, Command, LogFormat, ObserveArgs, OutputFormat};
use imageposture::image::ImageRef;
use imageposture::output::{self, Row};
use imageposture::posture::{Reason, Verdict};
use imageposture::verify::Verifier;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    imageposture::isolate::install_hook();
    let result = match cli.command {
        Command::Observe(args) => observe(args).await,
        Command::Scan(args) => imageposture::scan::run(args).await,
        Command::Run(args) => imageposture::run::run(*args).await,
        Command::Summary(args) => imageposture::summary::run(args).await,
        Command::Crd => {
            print!("{}", imageposture::crd::crd_yaml());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imageposture: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn observe(args: ObserveArgs) -> Result<(), Box<dyn std::error::Error>> {
    let verifier = std::sync::Arc::new(Verifier::new(args.verify.config()).await?);
    let verifier = &verifier;
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
                    }
                }
            };
            let repository = Some(parsed.repo_path());
            match verifier.resolve(&parsed).await {
                Ok(id) => Row {
                    image: input.clone(),
                    repository,
                    digest: Some(id.digest.clone()),
                    verdict: verifier.observe_task(&id).await,
                },
                Err(verdict) => Row {
                    image: input.clone(),
                    repository,
                    digest: None,
                    verdict,
                },
            }
        })
        .buffered(args.verify.concurrency.max(1))
        .collect()
        .await;
    print!("{}", output::render(&rows, args.output));
    if args.output == OutputFormat::Table {
        for line in output::failures(&rows) {
            eprintln!("  {line}");
        }
    }
    Ok(())
}
