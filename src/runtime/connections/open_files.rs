//! The open-file limit: every connection holds a descriptor, and a process out of them
//! cannot even accept the connection that would tell a client so.

use crate::model::connections::ConnectionPolicy;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, and warns (one line) when even that
/// is too low for the configured connection caps. Returns the limit now in force.
pub fn raise_open_file_limit(policy: &ConnectionPolicy) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        log::warn!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let available: u64 = limit.rlim_cur;
    if let Some(needed) = policy.open_files_needed().filter(|&n| n > available) {
        log::warn!(
            "the open-file limit ({available}) is below what the connection caps need \
             ({needed}: two per connection plus room); raise it (ulimit -n, LimitNOFILE) \
             or lower server.max_connections"
        );
    }
    Some(available)
}
