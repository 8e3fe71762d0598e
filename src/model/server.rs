//! The `server:` section checked: the process settings Pingora takes are bounded, so that a
//! configuration `portcullis check` accepts also starts (a million worker threads, or a
//! grace period of 585 billion years, would pass the types and fail the process).

use portcullis_plugins::units::within;

use crate::config::{Problem, ServerSection};

/// The longest grace period, shutdown timeout or drain delay, in seconds: a day.
const LONGEST_SECONDS: u64 = 86_400;
/// Worker threads per CPU at most: more only adds switching.
const THREADS_PER_CPU: usize = 4;

/// The problems of `server` (with paths `server.FIELD`).
pub fn check(server: &ServerSection) -> Vec<Problem> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let seconds = [
        ("grace_period_seconds", server.grace_period_seconds),
        (
            "graceful_shutdown_timeout_seconds",
            server.graceful_shutdown_timeout_seconds,
        ),
        ("drain_delay_seconds", Some(server.drain_delay_seconds)),
    ];
    let threads = server.threads.map(|threads| {
        within("server.threads", threads, 1, cpus * THREADS_PER_CPU)
            .map(drop)
            .map_err(|problem| {
                let message = format!("{} ({cpus} CPUs × {THREADS_PER_CPU})", problem.message);
                Problem::new(problem.path, message)
            })
    });
    seconds
        .into_iter()
        .filter_map(|(field, value)| {
            let value = value?;
            within(&format!("server.{field}"), value, 0, LONGEST_SECONDS).err()
        })
        .chain(threads.and_then(Result::err))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_and_periods_are_bounded() {
        let paths = |server: ServerSection| -> Vec<String> {
            check(&server).into_iter().map(|p| p.path).collect()
        };
        assert!(paths(ServerSection::default()).is_empty());
        let hostile = ServerSection {
            threads: Some(0),
            grace_period_seconds: Some(u64::MAX),
            graceful_shutdown_timeout_seconds: Some(LONGEST_SECONDS),
            drain_delay_seconds: LONGEST_SECONDS + 1,
            ..ServerSection::default()
        };
        assert_eq!(
            paths(hostile),
            [
                "server.grace_period_seconds",
                "server.drain_delay_seconds",
                "server.threads"
            ]
        );
        let many = ServerSection {
            threads: Some(1 << 20),
            ..ServerSection::default()
        };
        assert!(check(&many)[0].message.contains("CPUs"));
    }
}
