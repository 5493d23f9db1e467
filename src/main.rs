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
    /// Preview a policy change: replay every stored user's next login
    /// under this configuration, on the claims kept from their last login,
    /// refresh or SCIM change, and print what would change. Writes nothing.
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Exit 3 when any membership would be removed.
        #[arg(long)]
        fail_on_removal: bool,
    },
    /// Policy tests: run a YAML file of cases (IdP, claims, memberships
    /// before, the memberships expected or `refused`) against this
    /// configuration; exit 0 when all pass, 1 otherwise.
    Test {
        #[command(flatten)]
        config: ConfigArg,
        /// The cases file.
        cases: PathBuf,
        /// Also write a JUnit XML report here.
        #[arg(long)]
        junit: Option<PathBuf>,
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
/// `plan --fail-on-removal`: a membership would be removed.
const EXIT_REMOVALS: u8 = 3;

/// mimalloc instead of the system allocator: the load harness measured
/// glibc's malloc and free at about a sixth of the gateway's CPU time under
/// load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            let config = match load_or_exit(&args.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            portcullis::telemetry::init(&config.log);
            let ran = portcullis::app::run(config, args.config);
            let code = match ran {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    eprintln!("portcullis: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            };
            portcullis::telemetry::flush();
            code
        }
        Command::Check(args) => match load_or_exit(&args.config) {
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
            Err(code) => code,
        },
        Command::Explain {
            config,
            idp,
            claims,
            existing_user,
            json,
        } => explain(&config.config, &idp, &claims, existing_user, json),
        Command::Plan {
            config,
            json,
            fail_on_removal,
        } => plan(&config.config, json, fail_on_removal),
        Command::Test {
            config,
            cases,
            junit,
        } => policy_test(&config.config, &cases, junit.as_deref()),
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

/// What the store named in `config` says for a dry run: the JIT rules in
/// force, and the user these claims name (`--existing-user`; a user not in
/// the store is planned as existing with no memberships). A store that
/// does not exist yet contributes nothing; one that cannot be read is an
/// error, since the plan would not be what a login does.
fn stored_context(
    config: &Config,
    idp: &portcullis::config::IdentityProvider,
    claims: &serde_json::Value,
    existing_user: bool,
) -> Result<
    (
        portcullis::provision::JitTable,
        Option<portcullis::provision::ExistingUser>,
    ),
    String,
> {
    use portcullis::login::provision::{existing, jit_in_force};
    use portcullis::provision;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let store = portcullis::store::Store::open_to_read(&config.store.url, config.store.kind.clone())
            .await
            .map_err(|e| format!("the store cannot be read ({e}); nothing was planned"))?;
        let Some(store) = store else {
            eprintln!("portcullis explain: the store does not exist yet: only the file's rules apply");
            let none = existing_user.then(provision::ExistingUser::default);
            return Ok((provision::jit_from_config(config), none));
        };
        let jit = jit_in_force(&store, config).await.map_err(|e| e.to_string())?;
        if !existing_user {
            return Ok((jit, None));
        }
        let identity = provision::identity_from_claims(idp, claims).map_err(|e| e.to_string())?;
        let user = store
            .user_by_identity(&idp.id, &identity.subject)
            .await
            .map_err(|e| e.to_string())?;
        let found = match user {
            Some(u) => existing(&store, &u, &idp.id)
                .await
                .map_err(|e| e.to_string())?,
            None => {
                eprintln!(
                    "portcullis explain: no user ({}, {}) in the store: planned as existing with no memberships",
                    idp.id, identity.subject
                );
                provision::ExistingUser::default()
            }
        };
        Ok((jit, Some(found)))
    })
}

fn explain(
    config_path: &std::path::Path,
    idp: &str,
    claims_path: &std::path::Path,
    existing_user: bool,
    json: bool,
) -> ExitCode {
    use portcullis::provision;
    let config = match load_or_exit(config_path) {
        Ok(c) => c,
        Err(code) => return code,
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
    // The same inputs a login would have: the JIT entries the management
    // API added, and with --existing-user the user's stored memberships.
    let (jit, existing) = match stored_context(&config, provider, &claims, existing_user) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("portcullis explain: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match provision::plan_traced(&config, provider, &claims, existing.as_ref(), &jit) {
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

/// The config at `path`, or its errors printed and the exit code for an
/// invalid file.
fn load_or_exit(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_INVALID)
    })
}

fn plan(config_path: &std::path::Path, json: bool, fail_on_removal: bool) -> ExitCode {
    use portcullis::provision::preview::{render_totals, render_user};
    use std::io::{IsTerminal, Write};
    let config = match load_or_exit(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portcullis plan: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let terminal = std::io::stderr().is_terminal();
    let out = std::io::stdout();
    let ran = runtime.block_on(async {
        let store =
            portcullis::store::Store::open_to_read(&config.store.url, config.store.kind.clone())
                .await
                .map_err(|e| format!("the store cannot be read ({e}); nothing was planned"))?;
        let Some(store) = store else {
            return Err(format!(
                "the store {} does not exist: there is no user to plan",
                portcullis::store::redacted_url(&config.store.url)
            ));
        };
        let mut out = out.lock();
        let mut first = true;
        if json {
            let _ = write!(out, "{{\"users\":[");
        }
        let totals = portcullis::preview::plan_store(
            &store,
            &config,
            |user| {
                if json {
                    if user.is_quiet() {
                        return;
                    }
                    let sep = if first { "\n" } else { ",\n" };
                    first = false;
                    let _ = write!(
                        out,
                        "{sep}{}",
                        serde_json::to_string(user).unwrap_or_default()
                    );
                } else {
                    let _ = out.write_all(render_user(user).as_bytes());
                }
            },
            |done, total| {
                if terminal {
                    eprint!("\rplanned {done} of {total} users");
                    if done >= total {
                        eprintln!();
                    }
                }
            },
        )
        .await
        .map_err(|e| format!("{e}; nothing was planned"))?;
        if json {
            let _ = writeln!(
                out,
                "\n],\"totals\":{}}}",
                serde_json::to_string(&totals).unwrap_or_default()
            );
        } else {
            let _ = out.write_all(render_totals(&totals).as_bytes());
        }
        let _ = out.flush();
        Ok(totals)
    });
    match ran {
        Ok(totals) if fail_on_removal && totals.removals() > 0 => {
            eprintln!(
                "portcullis plan: {} memberships would be removed",
                totals.removals()
            );
            ExitCode::from(EXIT_REMOVALS)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis plan: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn policy_test(
    config_path: &std::path::Path,
    cases_path: &std::path::Path,
    junit: Option<&std::path::Path>,
) -> ExitCode {
    use portcullis::preview::cases;
    let config = match load_or_exit(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let file = cases_path.display().to_string();
    let text = match std::fs::read_to_string(cases_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{file}: cannot read the file: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let parsed = match cases::parse(&text, &file, &config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let results: Vec<cases::CaseResult> = parsed.iter().map(|c| cases::run(&config, c)).collect();
    for r in &results {
        match &r.failure {
            None => println!("ok    {}", r.name),
            Some(diff) => println!("FAIL  {}\n{diff}", r.name),
        }
    }
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    println!(
        "\n{} cases: {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    );
    if let Some(path) = junit {
        let tmp = path.with_extension("xml.tmp");
        let written = std::fs::write(&tmp, cases::junit(&file, &results))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            eprintln!("portcullis test: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}
