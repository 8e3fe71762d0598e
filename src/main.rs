//! The `portcullis` command line (SPEC §2).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use portcullis::model::gateway::CompileContext;
use portcullis::server::{self, RunOptions};
use portcullis::telemetry::metrics::Metrics;
use portcullis::{fleet, upgrade};

/// The diagnostic log when `RUST_LOG` is not set: warnings, Portcullis's own start, stop,
/// reload and health lines (pingora-load-balancing writes the health flips), and not the
/// warning pingora-cache gives on first use about a header compression dictionary, which
/// is nothing to act on.
const DEFAULT_LOG_FILTER: &str =
    "warn,portcullis=info,pingora_load_balancing=info,pingora_cache::meta=error";

/// The gateway's allocator (mimalloc; why, in `portcullis::runtime::allocator`).
#[global_allocator]
static GLOBAL: portcullis::runtime::allocator::Allocator =
    portcullis::runtime::allocator::ALLOCATOR;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "API gateway and edge proxy on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run(RunArgs),
    /// Validate a configuration file and exit.
    Check {
        /// The configuration file.
        #[arg(short, long)]
        conf: PathBuf,
    },
    /// Replace the running gateway by a new process without dropping connections.
    Upgrade {
        /// The configuration file (its server.pid_file names the running process); with
        /// --config-source, the bootstrap file.
        #[arg(short, long, required_unless_present = "config_source")]
        conf: Option<PathBuf>,
        /// The etcd configuration source the running gateway was started with.
        #[arg(long, value_name = "URL")]
        config_source: Option<String>,
        /// The binary to start (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Print the `sha256:` form of an API key, for `consumers[].api_keys`.
    HashKey {
        /// The API key. Without it, the key is read from standard input (first line), which
        /// keeps it out of the shell history: `portcullis hash-key < key.txt`.
        key: Option<String>,
    },
    /// Print the version, git commit, Pingora version and features, and compiler.
    Version,
    /// The configuration document in etcd.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The nodes that follow an etcd configuration source.
    #[command(subcommand)]
    Fleet(FleetCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (as `check` does) and write it to etcd with a
    /// compare-and-swap on its revision; prints the new revision. Exit codes: 0 written
    /// (and applied everywhere with --wait), 1 invalid, 2 etcd unusable, 3 revision
    /// conflict, 4 refused by a node, 5 --timeout passed.
    Push {
        /// The configuration file to push.
        #[arg(short, long)]
        conf: PathBuf,
        #[command(flatten)]
        source: SourceFlags,
        /// Write only if the document is still at this revision (default: the one read
        /// just before writing).
        #[arg(long, value_name = "N")]
        expect_revision: Option<i64>,
        /// Wait until every live node applied the new revision, or says why it refused.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// One line per live node: id, address, applied revision, healthy/refused/behind.
    Status {
        #[command(flatten)]
        source: SourceFlags,
        /// The bootstrap file (credentials, TLS, dial timeout).
        #[arg(short, long)]
        conf: Option<PathBuf>,
    },
}

#[derive(Args)]
struct SourceFlags {
    /// etcd://HOST:PORT[,HOST:PORT]/PREFIX
    #[arg(long, value_name = "URL")]
    config_source: String,
    /// The bootstrap file (credentials, TLS, dial timeout) for etcd.
    #[arg(long, value_name = "FILE")]
    bootstrap: Option<PathBuf>,
}

#[derive(Args, Default)]
struct RunArgs {
    /// The configuration file; with --config-source, the optional bootstrap file.
    #[arg(short, long)]
    conf: Option<PathBuf>,
    /// Read the configuration from etcd and follow it:
    /// etcd://HOST:PORT[,HOST:PORT]/PREFIX (the document is at PREFIX/config).
    #[arg(long, value_name = "URL")]
    config_source: Option<String>,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    /// Take over the listening sockets of a running process (graceful upgrade).
    #[arg(short, long)]
    upgrade: bool,
    /// Reload the configuration whenever its file changes.
    #[arg(long)]
    watch: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_LOG_FILTER))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) => {
            println!("portcullis {}", env!("CARGO_PKG_VERSION"));
            println!("commit: {}", env!("PORTCULLIS_COMMIT"));
            println!(
                "pingora: {} (features: {})",
                env!("PORTCULLIS_PINGORA_VERSION"),
                env!("PORTCULLIS_PINGORA_FEATURES")
            );
            println!("built with: {}", env!("PORTCULLIS_RUSTC"));
            ExitCode::SUCCESS
        }
        Some(Command::Check { conf }) => check(&conf),
        Some(Command::Upgrade {
            conf,
            config_source,
            binary,
        }) => match upgrade_command(conf, config_source, binary) {
            Ok((old, new)) => {
                println!("upgraded: pid {old} hands over to pid {new}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis upgrade: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::HashKey { key }) => match key.map_or_else(key_from_stdin, Ok) {
            Ok(key) => {
                println!("{}", portcullis_plugins::consumers::hash_api_key(&key));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis hash-key: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Config(ConfigCommand::Push {
            conf,
            source,
            expect_revision,
            wait,
            timeout,
        })) => fleet::push(
            &source.into(),
            &fleet::PushOptions {
                file: conf,
                expect_revision,
                wait,
                timeout,
            },
        ),
        Some(Command::Fleet(FleetCommand::Status { source, conf })) => {
            let mut source: fleet::SourceArgs = source.into();
            source.bootstrap = source.bootstrap.or(conf);
            fleet::status(&source)
        }
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

/// The first line of standard input, without its line ending.
fn key_from_stdin() -> Result<String, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("API key, one line (read here, it stays out of the shell history):");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the key from standard input: {e}"))?;
    let key = line.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        return Err("no key given (as an argument or on standard input)".into());
    }
    Ok(key.to_string())
}

fn check(path: &std::path::Path) -> ExitCode {
    let metrics = std::sync::Arc::new(Metrics::new());
    match server::load_gateway(path, &CompileContext::check(&metrics)) {
        Ok(_) => {
            println!("configuration ok");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            println!("{problems}");
            ExitCode::FAILURE
        }
    }
}

impl From<SourceFlags> for fleet::SourceArgs {
    fn from(flags: SourceFlags) -> Self {
        fleet::SourceArgs {
            url: flags.config_source,
            bootstrap: flags.bootstrap,
        }
    }
}

fn upgrade_command(
    conf: Option<PathBuf>,
    config_source: Option<String>,
    binary: Option<PathBuf>,
) -> Result<(i32, i32), String> {
    match (config_source, conf) {
        (Some(url), bootstrap) => fleet::upgrade(&fleet::SourceArgs { url, bootstrap }, binary),
        (None, Some(conf)) => upgrade::upgrade(&conf, binary),
        (None, None) => Err("-c FILE or --config-source URL is required".into()),
    }
}

fn run(args: RunArgs) -> ExitCode {
    if let Some(url) = args.config_source {
        if args.watch {
            eprintln!("portcullis: --watch follows a file; --config-source follows etcd already");
            return ExitCode::from(2);
        }
        let options = RunOptions {
            daemon: args.daemon,
            upgrade: args.upgrade,
            watch: false,
        };
        let source = fleet::SourceArgs {
            url,
            bootstrap: args.conf,
        };
        return match fleet::run(&source, options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(conf) = args.conf else {
        eprintln!("portcullis: -c FILE is required (see portcullis --help)");
        return ExitCode::from(2);
    };
    let options = RunOptions {
        daemon: args.daemon,
        upgrade: args.upgrade,
        watch: args.watch,
    };
    match server::run(&conf, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problems) => {
            eprintln!("{problems}");
            ExitCode::FAILURE
        }
    }
}
