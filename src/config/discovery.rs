//! `dns:` and `upstreams.*.discovery` — how hostname targets are resolved and how often.

use portcullis_plugins::units::Duration;
use serde::Deserialize;

/// The top-level `dns` section: where hostname targets are resolved.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers (`IP` or `IP:PORT`, port 53 by default) used instead of
    /// `/etc/resolv.conf`; empty means the system configuration.
    #[serde(default)]
    pub servers: Vec<String>,
}

/// `upstreams.*.discovery`: the re-resolution schedule of the pool's hostname targets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Shortest time between two resolutions of a name (a lower record TTL is raised
    /// to it); also the retry interval after a failed resolution.
    #[serde(default = "DiscoveryConfig::default_min_interval")]
    pub min_interval: Duration,
    /// Longest time between two resolutions of a name (a higher record TTL is lowered
    /// to it).
    #[serde(default = "DiscoveryConfig::default_max_interval")]
    pub max_interval: Duration,
    /// Most addresses taken from one name's answer; the rest are dropped with a warning.
    #[serde(default = "DiscoveryConfig::default_max_addresses")]
    pub max_addresses: u32,
}

impl DiscoveryConfig {
    fn default_min_interval() -> Duration {
        Duration(std::time::Duration::from_secs(1))
    }
    fn default_max_interval() -> Duration {
        Duration(std::time::Duration::from_secs(60))
    }
    fn default_max_addresses() -> u32 {
        64
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            min_interval: Self::default_min_interval(),
            max_interval: Self::default_max_interval(),
            max_addresses: Self::default_max_addresses(),
        }
    }
}
