use std::process::ExitCode;

use clap::Parser;

use imageposture::cli::{Cli, Command, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    imageposture::core::isolate::install_hook();
    let result = match cli.command {
        Command::Observe(args) => imageposture::commands::observe::run(args).await,
        Command::Scan(args) => imageposture::commands::scan::run(args).await,
        Command::Run(args) => imageposture::operator::run::run(*args).await,
        Command::Summary(args) => imageposture::commands::summary::run(args).await,
        Command::Crd => {
            print!("{}", imageposture::model::crd::crd_yaml());
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
