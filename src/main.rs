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
    /// Dry-run provisioning for a set of claims: per organization, the
    /// policy used, each expression's result, the decision and the roles.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// Identity provider id.
        #[arg(long)]
        idp: String,
        /// JSON file with the claims (ID token, plus userinfo if merged).
        #[arg(long)]
        claims: PathBuf,
        /// Treat the user as existing (no email-domain JIT).
        #[arg(long)]
        existing_user: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors are invalid input (1), not runtime failures.
            return if e.use_stderr() {
                ExitCode::from(EXIT_INVALID)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
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
        Command::Explain {
            config,
            idp,
            claims,
            existing_user,
            json,
        } => explain(&config.config, &idp, &claims, existing_user, json),
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

fn explain(
    config_path: &std::path::Path,
    idp: &str,
    claims_path: &std::path::Path,
    existing_user: bool,
    json: bool,
) -> ExitCode {
    use portcullis::provision;
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let Some(provider) = config.identity_provider(idp) else {
        eprintln!(
            "portcullis explain: no identity provider {idp:?} in {}",
            config_path.display()
        );
        return ExitCode::from(EXIT_INVALID);
    };
    let claims: serde_json::Value = match std::fs::read_to_string(claims_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullis explain: {}: {e}", claims_path.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let existing = existing_user.then(provision::ExistingUser::default);
    let jit = provision::jit_from_config(&config);
    match provision::plan(&config, provider, &claims, existing.as_ref(), &jit) {
        Ok(plan) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&plan).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(plan) => {
            print!("{}", provision::explain::render(&plan));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis explain: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}
