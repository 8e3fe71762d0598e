//! Where a node's configuration comes from when it is not a file: an etcd cluster named by
//! `--config-source etcd://HOST:PORT[,HOST:PORT]/PREFIX`, and the small bootstrap file
//! (`-c`, one `config_source:` section) with what does not fit in a URL: credentials,
//! TLS, the dial timeout, the local cache of the last applied document, the node's id.

use std::fmt;
use std::path::Path;

use portcullis_plugins::units::Duration;
use serde::Deserialize;

use super::{env, Problem, Problems};

/// `config_source.dial_timeout` when not set.
pub const DEFAULT_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A parsed `etcd://` URL: the endpoints to dial and the key prefix of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSource {
    /// `HOST:PORT` of each etcd member, as given.
    pub endpoints: Vec<String>,
    /// The prefix, starting with `/` and without a trailing one (`/edge`).
    pub prefix: String,
}

impl EtcdSource {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
    pub fn parse(url: &str) -> Result<EtcdSource, String> {
        let rest = url.strip_prefix("etcd://").ok_or_else(|| {
            format!(
                "{url:?}: expected etcd://HOST:PORT[,HOST:PORT]/PREFIX (only etcd is supported)"
            )
        })?;
        let (hosts, prefix) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url:?}: no /PREFIX after the endpoints"))?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(format!("{url:?}: the prefix is empty"));
        }
        if prefix.split('/').any(str::is_empty) || prefix.contains(char::is_whitespace) {
            return Err(format!(
                "{url:?}: the prefix {prefix:?} has an empty or blank part"
            ));
        }
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let valid = host
                .rsplit_once(':')
                .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
            if !valid || host.contains(['@', '?', '#']) {
                return Err(format!(
                    "{url:?}: endpoint {host:?} is not HOST:PORT (credentials go in the bootstrap file)"
                ));
            }
            endpoints.push(host.to_string());
        }
        Ok(EtcdSource {
            endpoints,
            prefix: format!("/{prefix}"),
        })
    }

    /// The key holding the configuration document.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// The prefix under which nodes report their status.
    pub fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
}

impl fmt::Display for EtcdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd://{}{}", self.endpoints.join(","), self.prefix)
    }
}

/// The bootstrap file given with `-c` next to `--config-source`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// How to reach the configuration source.
    #[serde(default)]
    pub config_source: ConfigSourceConfig,
}

/// `config_source:` — credentials, TLS and local settings for the etcd source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSourceConfig {
    /// etcd user (role-based access); with `password`.
    pub username: Option<String>,
    /// The user's password; write it as `${ENV}` to keep it out of the file.
    pub password: Option<String>,
    /// TLS to etcd; absent means plain HTTP/2.
    pub tls: Option<EtcdTlsConfig>,
    /// How long one connection attempt may take (default 5s).
    pub dial_timeout: Option<Duration>,
    /// Where the last applied document is kept, to start from when etcd is down.
    pub cache_file: Option<String>,
    /// This node's name under `PREFIX/nodes/` (default: host name and listener port).
    pub node_id: Option<String>,
    /// The address reported in the node's status (default: the first listener's).
    pub advertise_address: Option<String>,
}

/// `config_source.tls:` — how to verify etcd and, optionally, a client certificate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsConfig {
    /// PEM file of the CA that signed etcd's certificate.
    pub ca_file: Option<String>,
    /// PEM client certificate, with `key_file`.
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<String>,
}

impl Bootstrap {
    /// Reads and checks the bootstrap file at `path` (`${ENV}` is expanded, as in the
    /// configuration file).
    pub fn load(path: &Path) -> Result<Bootstrap, Problems> {
        let fail = |problems| Problems {
            file: path.display().to_string(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![Problem::new(
                "",
                format!("cannot read the bootstrap file: {e}"),
            )])
        })?;
        Bootstrap::parse(&text).map_err(fail)
    }

    /// Parses bootstrap text; every problem as `path: message`.
    pub fn parse(text: &str) -> Result<Bootstrap, Vec<Problem>> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| vec![Problem::new("", format!("invalid YAML: {e}"))])?;
        if value.is_null() {
            return Ok(Bootstrap::default());
        }
        env::expand(&mut value, &mut String::new())?;
        let bootstrap: Bootstrap = serde_path_to_error::deserialize(value).map_err(|e| {
            vec![Problem::new(
                e.path().to_string(),
                e.into_inner().to_string(),
            )]
        })?;
        let source = &bootstrap.config_source;
        let mut problems = Vec::new();
        if source.username.is_some() != source.password.is_some() {
            problems.push(Problem::new(
                "config_source.password",
                "username and password go together",
            ));
        }
        if let Some(tls) = &source.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                problems.push(Problem::new(
                    "config_source.tls.key_file",
                    "cert_file and key_file go together",
                ));
            }
        }
        if let Some(timeout) = source.dial_timeout {
            let bounds = (
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(60),
            );
            if let Err(problem) = timeout.within("config_source.dial_timeout", bounds.0, bounds.1) {
                problems.push(problem);
            }
        }
        if let Some(id) = &source.node_id {
            if id.is_empty() || id.contains(['/', ' ', '\n']) {
                problems.push(Problem::new(
                    "config_source.node_id",
                    "must be non-empty, without '/' or blanks",
                ));
            }
        }
        super::verdict(bootstrap, problems)
    }

    /// `config_source.dial_timeout`, or its default.
    pub fn dial_timeout(&self) -> std::time::Duration {
        self.config_source
            .dial_timeout
            .map_or(DEFAULT_DIAL_TIMEOUT, |d| d.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoints_and_a_prefix() {
        let source = EtcdSource::parse("etcd://10.0.0.1:2379,etcd-2:2379/edge/eu/").expect("ok");
        assert_eq!(source.endpoints, ["10.0.0.1:2379", "etcd-2:2379"]);
        assert_eq!(source.config_key(), "/edge/eu/config");
        assert_eq!(source.nodes_prefix(), "/edge/eu/nodes/");
        assert_eq!(
            source.to_string(),
            "etcd://10.0.0.1:2379,etcd-2:2379/edge/eu"
        );
    }

    #[test]
    fn hostile_urls_are_refused() {
        for url in [
            "http://127.0.0.1:2379/edge",
            "etcd://127.0.0.1:2379",
            "etcd://127.0.0.1:2379/",
            "etcd://127.0.0.1/edge",
            "etcd://127.0.0.1:99999/edge",
            "etcd://user:pw@127.0.0.1:2379/edge",
            "etcd://:2379/edge",
            "etcd://127.0.0.1:2379,/edge",
            "etcd://127.0.0.1:2379/a//b",
        ] {
            assert!(EtcdSource::parse(url).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn bootstrap_problems_name_their_field() {
        let problems = Bootstrap::parse("config_source:\n  username: u\n  dial_timeout: 1h\n")
            .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["config_source.password", "config_source.dial_timeout"]
        );
        let unknown = Bootstrap::parse("config_source:\n  endpoints: []\n").expect_err("unknown");
        assert_eq!(unknown[0].path, "config_source.endpoints");
        assert!(Bootstrap::parse("").is_ok());
    }
}
