//! `portcullis upgrade`: replace the running process by a new one without dropping a
//! connection, in the order that avoids Pingora's 5-second socket hand-over timeout.
//!
//! 1. Start `BINARY -u -d -c FILE`. It binds the upgrade socket and waits there for the
//!    listening sockets (Pingora retries for about 5 s).
//! 2. Send SIGQUIT to the old process (its pid is in `server.pid_file`): it hands its
//!    sockets over at once, stops accepting, finishes its in-flight requests and exits.
//! 3. The new process's foreground part exits 0 once it holds the sockets and has
//!    daemonized; its pid replaces the old one in the pid file.
//!
//! Sending SIGQUIT first (as a plain `ExecReload=kill -QUIT` would) leaves the old process
//! retrying against a socket nobody listens on, and a slow start of the new binary turns
//! into a failed upgrade.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::config;
use crate::server::server_conf;

/// How long the new process gets to bind the upgrade socket before SIGQUIT is sent.
const BIND_WAIT: Duration = Duration::from_secs(3);
/// How long the new process gets to receive the sockets and daemonize.
const HANDOVER_WAIT: Duration = Duration::from_secs(15);

/// What went wrong, for the operator.
pub type UpgradeError = String;

/// Replaces the process serving `conf` by `binary` (default: this executable); returns
/// the old and the new pid.
pub fn upgrade(conf: &Path, binary: Option<PathBuf>) -> Result<(i32, i32), UpgradeError> {
    let loaded = config::load(conf).map_err(|problems| problems.to_string())?;
    let arguments = vec!["-c".into(), conf.as_os_str().to_owned()];
    replace(&loaded.config, &arguments, binary)
}

/// Replaces the process running on `config` by `binary` started with `-u -d` and
/// `arguments` (the ones that name its configuration: `-c FILE`, or `--config-source URL`
/// and its bootstrap file); returns the old and the new pid.
pub fn replace(
    config: &config::Config,
    arguments: &[OsString],
    binary: Option<PathBuf>,
) -> Result<(i32, i32), UpgradeError> {
    let server = server_conf(config);
    let old_pid = read_pid(&server.pid_file)?;
    if !alive(old_pid) {
        return Err(format!(
            "no process with pid {old_pid} (from {}): start portcullis instead",
            server.pid_file
        ));
    }
    let binary = match binary {
        Some(binary) => binary,
        None => std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?,
    };

    let socket_before = modified(&server.upgrade_sock);
    let mut new = Command::new(&binary)
        .arg("-u")
        .arg("-d")
        .args(arguments)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;

    // The new process re-creates the upgrade socket when it starts listening on it.
    let deadline = Instant::now() + BIND_WAIT;
    while modified(&server.upgrade_sock) == socket_before && Instant::now() < deadline {
        if let Ok(Some(status)) = new.try_wait() {
            return Err(format!(
                "the new process exited ({status}) before taking over; the old one keeps serving"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    signal(old_pid, libc::SIGQUIT)?;

    let deadline = Instant::now() + HANDOVER_WAIT;
    let status = loop {
        match new.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                return Err("the new process did not take the sockets over in time".into());
            }
            Err(e) => return Err(format!("waiting for the new process: {e}")),
        }
    };
    if !status.success() {
        return Err(format!(
            "the new process failed to take over ({status}); see its error log"
        ));
    }
    let deadline = Instant::now() + HANDOVER_WAIT;
    loop {
        match read_pid(&server.pid_file) {
            Ok(pid) if pid != old_pid && alive(pid) => return Ok((old_pid, pid)),
            _ if Instant::now() >= deadline => {
                return Err(format!("{} never showed the new pid", server.pid_file));
            }
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn read_pid(pid_file: &str) -> Result<i32, UpgradeError> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read the pid file {pid_file}: {e}"))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{pid_file} does not hold a pid: {:?}", text.trim()))
}

fn modified(path: &str) -> Option<std::time::SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn signal(pid: i32, signal: libc::c_int) -> Result<(), UpgradeError> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        ))
    }
}
