//! The `portcullis` command line (SPEC §2).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use portcullis::model::gateway::CompileContext;
use portcullis::server::{self, RunOptions};
use portcullis::telemetry::metrics::Metrics;
use portcullis::upgrade;

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
        /// The configuration file (its server.pid_file names the running process).
        #[arg(short, long)]
        conf: PathBuf,
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
}

#[derive(Args, Default)]
struct RunArgs {
    /// The configuration file.
    #[arg(short, long)]
    conf: Option<PathBuf>,
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
        Some(Command::Upgrade { conf, binary }) => match upgrade::upgrade(&conf, binary) {
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

fn run(args: RunArgs) -> ExitCode {
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
