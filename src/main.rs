//! The `portcullis` command line (SPEC §2).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use portcullis::model::gateway::CompileContext;
use portcullis::server::{self, RunOptions};
use portcullis::telemetry::metrics::Metrics;
use portcullis::upgrade;

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
        /// The API key.
        key: String,
    },
    /// Print the version.
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) => {
            println!("portcullis {}", env!("CARGO_PKG_VERSION"));
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
        Some(Command::HashKey { key }) => {
            println!("{}", portcullis_plugins::consumers::hash_api_key(&key));
            ExitCode::SUCCESS
        }
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
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
