//! What a node publishes under `PREFIX/nodes/<node-id>` (bound to a lease it keeps alive,
//! so a node that dies disappears) and how `portcullis fleet status` reads it back.

use serde::{Deserialize, Serialize};

/// The JSON value of a node's status key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Where the node serves (`config_source.advertise_address`, or its first listener).
    pub address: String,
    /// The etcd revision of the document it serves.
    pub revision: i64,
    /// When it published this report (RFC 3339).
    pub time: String,
    /// The last revision it refused, unless a later one applied since.
    pub refused: Option<RefusedRevision>,
}

/// A refused revision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRevision {
    /// The refused revision.
    pub revision: i64,
    /// Every problem, `FILE: path: message`.
    pub problems: Vec<String>,
}

/// How a node stands against the document's current revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Serves the current revision.
    Healthy,
    /// Refused the current revision (and serves an older one).
    Refused,
    /// Has not applied the current revision yet.
    Behind,
}

impl NodeReport {
    /// How this node stands when the document is at `current`.
    pub fn standing(&self, current: i64) -> Standing {
        if self.revision >= current {
            Standing::Healthy
        } else if self.refused.as_ref().is_some_and(|r| r.revision >= current) {
            Standing::Refused
        } else {
            Standing::Behind
        }
    }
}

/// The default node id: the host name and the first listener's port (`edge-3:8080`).
pub fn default_node_id(port: u16) -> String {
    format!("{}:{port}", host_name())
}

/// This machine's host name (`localhost` when it has none).
pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates, and the last byte is never written here.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len() - 1) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if result == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_compares_with_the_current_revision() {
        let mut report = NodeReport {
            address: "127.0.0.1:8080".into(),
            revision: 5,
            time: String::new(),
            refused: None,
        };
        assert_eq!(report.standing(5), Standing::Healthy);
        assert_eq!(report.standing(6), Standing::Behind);
        report.refused = Some(RefusedRevision {
            revision: 6,
            problems: vec!["x".into()],
        });
        assert_eq!(report.standing(6), Standing::Refused);
        assert_eq!(report.standing(7), Standing::Behind);
    }
}
