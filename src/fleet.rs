//! The fleet commands over an etcd configuration source: `run --config-source` (start
//! from etcd or the local cache), `config push` (validate, compare-and-swap, wait for the
//! nodes) and `fleet status` (one line per node).
//!
//! Exit codes of `config push`: 0 written (with `--wait`: applied by every live node),
//! 1 the document is invalid (nothing written), 2 etcd or the bootstrap file could not be
//! used, 3 the revision moved (another push came first; nothing written), 4 a node
//! refused the new revision, 5 `--timeout` passed before every node reported.
//! `fleet status`: 0 every node serves the current revision, 1 one does not (or none
//! reports), 2 etcd could not be read.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use crate::config::source::{Bootstrap, EtcdSource};
use crate::model::gateway::CompileContext;
use crate::runtime::config_source::node_status::{NodeReport, Standing};
use crate::runtime::config_source::{connect, initial_document, read_document, SourceStatus};
use crate::server::{self, RunOptions};
use crate::telemetry::metrics::Metrics;

/// How often `config push --wait` reads the nodes' status.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// `--config-source` and the optional bootstrap file, as given on the command line.
pub struct SourceArgs {
    /// `etcd://HOST:PORT[,HOST:PORT]/PREFIX`.
    pub url: String,
    /// The bootstrap file (`-c`).
    pub bootstrap: Option<PathBuf>,
}

impl SourceArgs {
    /// The parsed URL and bootstrap settings, or what is wrong with them.
    pub fn open(&self) -> Result<(EtcdSource, Bootstrap), String> {
        let source = EtcdSource::parse(&self.url).map_err(|e| format!("--config-source {e}"))?;
        let bootstrap = match &self.bootstrap {
            Some(path) => Bootstrap::load(path).map_err(|problems| problems.to_string())?,
            None => Bootstrap::default(),
        };
        Ok((source, bootstrap))
    }
}

/// `portcullis run --config-source URL`: starts on the document in etcd (or the cache
/// when etcd is down) and follows it.
pub fn run(args: &SourceArgs, options: RunOptions) -> Result<(), String> {
    let (source, bootstrap) = args.open()?;
    let start = initial_document(&source, &bootstrap)?;
    if start.from_cache {
        log::warn!(
            "{source} is unreachable: starting from the cache file {} (revision {}); \
             the node catches up when etcd answers",
            bootstrap
                .config_source
                .cache_file
                .as_deref()
                .unwrap_or_default(),
            start.document.revision
        );
    }
    let bootstrap_path = args
        .bootstrap
        .as_ref()
        .map(|path| std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()));
    let status = Arc::new(SourceStatus::new(
        source,
        bootstrap,
        bootstrap_path,
        start.document.revision,
    ));
    server::run_from_source(status, &start.document, options).map_err(|p| p.to_string())
}

/// `portcullis upgrade --config-source URL`: the running node's settings come from the
/// same document it reads at start.
pub fn upgrade(args: &SourceArgs, binary: Option<PathBuf>) -> Result<(i32, i32), String> {
    let (source, bootstrap) = args.open()?;
    let start = initial_document(&source, &bootstrap)?;
    let config = crate::config::parse(&start.document.text).map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{}: {p}", source.config_key()))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let mut arguments = vec!["--config-source".into(), args.url.clone().into()];
    if let Some(path) = &args.bootstrap {
        arguments.push("-c".into());
        arguments.push(path.clone().into_os_string());
    }
    crate::upgrade::replace(&config, &arguments, binary)
}

/// What `config push` was asked to do.
pub struct PushOptions {
    /// The configuration file to push.
    pub file: PathBuf,
    /// The revision the document must still be at (default: the one read before writing).
    pub expect_revision: Option<i64>,
    /// Wait until every live node applied the new revision or refused it.
    pub wait: bool,
    /// How long `wait` may take.
    pub timeout: Duration,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// `portcullis config push`.
pub fn push(args: &SourceArgs, options: &PushOptions) -> ExitCode {
    let (source, bootstrap) = match args.open() {
        Ok(opened) => opened,
        Err(e) => return failed(2, &e),
    };
    // The same validation as `portcullis check`, with the same messages.
    let metrics = Arc::new(Metrics::new());
    if let Err(problems) = server::load_gateway(&options.file, &CompileContext::check(&metrics)) {
        println!("{problems}");
        eprintln!("portcullis config push: the document is invalid; nothing was written");
        return ExitCode::from(1);
    }
    let text = match std::fs::read_to_string(&options.file) {
        Ok(text) => text,
        Err(e) => return failed(1, &format!("cannot read {}: {e}", options.file.display())),
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => return failed(2, &e),
    };
    runtime.block_on(async {
        let mut client = match connected(&source, &bootstrap).await {
            Ok(client) => client,
            Err(e) => return failed(2, &e),
        };
        let expected = match options.expect_revision {
            Some(revision) => revision,
            None => match read_document(&mut client, &source).await {
                Ok((document, _)) => document.map_or(0, |d| d.revision),
                Err(e) => return failed(2, &format!("cannot read {}: {e}", source.config_key())),
            },
        };
        let key = source.config_key();
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key.as_str(), text, None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let response = match client.txn(txn).await {
            Ok(response) => response,
            Err(e) => return failed(2, &format!("cannot write {key}: {e}")),
        };
        if !response.succeeded() {
            let current = response
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(get) => Some(get.kvs().first().map_or(0, |kv| kv.mod_revision())),
                    _ => None,
                })
                .unwrap_or(0);
            return failed(
                3,
                &format!(
                    "{key} is at revision {current}, not {expected}: someone pushed in between; \
                     nothing was written (look at it, then push again or pass --expect-revision {current})"
                ),
            );
        }
        let revision = response.header().map_or(0, |header| header.revision());
        println!("revision {revision}");
        if !options.wait {
            return ExitCode::SUCCESS;
        }
        wait_for_nodes(&mut client, &source, revision, options.timeout).await
    })
}

/// Polls the nodes' status until every one applied or refused `revision`.
async fn wait_for_nodes(
    client: &mut Client,
    source: &EtcdSource,
    revision: i64,
    timeout: Duration,
) -> ExitCode {
    let deadline = Instant::now() + timeout;
    loop {
        let nodes = match node_reports(client, source).await {
            Ok(nodes) => nodes,
            Err(e) => return failed(2, &e),
        };
        let behind: Vec<&(String, Option<NodeReport>)> = nodes
            .iter()
            .filter(|(_, report)| {
                report
                    .as_ref()
                    .is_none_or(|r| r.standing(revision) == Standing::Behind)
            })
            .collect();
        if behind.is_empty() {
            if nodes.is_empty() {
                println!("no node reports under {}", source.nodes_prefix());
            }
            let mut refused = false;
            for (id, report) in &nodes {
                println!("{}", node_line(id, report.as_ref(), revision));
                refused |= report
                    .as_ref()
                    .is_some_and(|r| r.standing(revision) == Standing::Refused);
            }
            return if refused {
                ExitCode::from(4)
            } else {
                ExitCode::SUCCESS
            };
        }
        if Instant::now() >= deadline {
            for (id, report) in &nodes {
                println!("{}", node_line(id, report.as_ref(), revision));
            }
            return failed(
                5,
                &format!(
                    "{} node(s) did not report revision {revision} within {timeout:?}",
                    behind.len()
                ),
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// `portcullis fleet status`.
pub fn status(args: &SourceArgs) -> ExitCode {
    let (source, bootstrap) = match args.open() {
        Ok(opened) => opened,
        Err(e) => return failed(2, &e),
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => return failed(2, &e),
    };
    runtime.block_on(async {
        let mut client = match connected(&source, &bootstrap).await {
            Ok(client) => client,
            Err(e) => return failed(2, &e),
        };
        let current = match read_document(&mut client, &source).await {
            Ok((document, _)) => document.map_or(0, |d| d.revision),
            Err(e) => return failed(2, &format!("cannot read {}: {e}", source.config_key())),
        };
        let nodes = match node_reports(&mut client, &source).await {
            Ok(nodes) => nodes,
            Err(e) => return failed(2, &e),
        };
        if nodes.is_empty() {
            return failed(
                1,
                &format!("no node reports under {}", source.nodes_prefix()),
            );
        }
        let mut all_healthy = true;
        for (id, report) in &nodes {
            println!("{}", node_line(id, report.as_ref(), current));
            all_healthy &= report
                .as_ref()
                .is_some_and(|r| r.standing(current) == Standing::Healthy);
        }
        if all_healthy {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

/// One node's line: id, address, applied revision, and how it stands against `current`.
fn node_line(id: &str, report: Option<&NodeReport>, current: i64) -> String {
    let Some(report) = report else {
        return format!("{id}\t-\t-\tunreadable status");
    };
    let standing = match report.standing(current) {
        Standing::Healthy => "healthy".to_string(),
        Standing::Behind => format!("behind (current revision {current})"),
        Standing::Refused => {
            let refused = report.refused.as_ref();
            format!(
                "refused revision {}: {}",
                refused.map_or(current, |r| r.revision),
                refused.map(|r| r.problems.join("; ")).unwrap_or_default()
            )
        }
    };
    format!(
        "{id}\t{}\trevision {}\t{standing}",
        report.address, report.revision
    )
}

/// Every node's id and report (`None` for a value that is not a report), by id.
async fn node_reports(
    client: &mut Client,
    source: &EtcdSource,
) -> Result<Vec<(String, Option<NodeReport>)>, String> {
    let prefix = source.nodes_prefix();
    let response = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("cannot read {prefix}: {e}"))?;
    let mut nodes: Vec<(String, Option<NodeReport>)> = response
        .kvs()
        .iter()
        .map(|kv| {
            let key = String::from_utf8_lossy(kv.key());
            let id = key
                .strip_prefix(prefix.as_str())
                .unwrap_or(&key)
                .to_string();
            (id, serde_json::from_slice(kv.value()).ok())
        })
        .collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(nodes)
}

/// A client whose first request answered within the dial timeout.
async fn connected(source: &EtcdSource, bootstrap: &Bootstrap) -> Result<Client, String> {
    let dial = bootstrap.dial_timeout();
    let mut client = connect(source, bootstrap).await?;
    match tokio::time::timeout(dial * 2, client.status()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(format!("{source} is unreachable: {e}")),
        Err(_) => Err(format!("{source} did not answer within {:?}", dial * 2)),
    }
}

fn failed(code: u8, message: &str) -> ExitCode {
    eprintln!("portcullis: {message}");
    ExitCode::from(code)
}
