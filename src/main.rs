#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::config::Config;

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Identity-aware reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(long, env = "PORTCULLIS_CONFIG", default_value = "./portcullis.yaml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run(ConfigArg),
    /// Validate a configuration file completely; exit 0 if valid, 1 if not.
    Check(ConfigArg),
    /// Read a token on stdin and print `sha256:<hex>` for `admin.tokens`.
    HashToken,
    /// Print the JSON Schema of the configuration file.
    Schema,
    /// Start an echo upstream and the gateway in front of it, on loopback,
    /// and print the URL to open.
    Demo,
}

const EXIT_INVALID: u8 = 1;
const EXIT_RUNTIME: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Both ring (rustls) and other providers may be linked: pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Run(args) => {
            let config = match Config::load(&args.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_INVALID);
                }
            };
            portcullis::telemetry::init(&config.log);
            match portcullis::app::run(config, args.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    eprintln!("portcullis: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Command::Check(args) => match Config::load(&args.config) {
            Ok(config) => {
                for w in &config.warnings {
                    println!("warning: {w}");
                }
                println!(
                    "{}: valid ({} identity providers, {} organizations, {} routes)",
                    args.config.display(),
                    config.identity_providers.len(),
                    config.organizations.len(),
                    config.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_INVALID)
            }
        },
        Command::HashToken => {
            let mut token = String::new();
            if std::io::stdin().read_to_string(&mut token).is_err() {
                eprintln!("portcullis: could not read a token from stdin");
                return ExitCode::from(EXIT_INVALID);
            }
            let token = token.trim_end_matches(['\r', '\n']);
            if token.is_empty() {
                eprintln!("portcullis: the token on stdin is empty");
                return ExitCode::from(EXIT_INVALID);
            }
            println!("{}", portcullis::util::hash_token(token));
            ExitCode::SUCCESS
        }
        Command::Demo => match portcullis::demo::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portcullis demo: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
        Command::Schema => {
            let schema = portcullis::config::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
    }
}
