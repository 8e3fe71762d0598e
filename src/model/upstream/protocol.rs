//! `upstreams.NAME.protocol` applied once, at load, to the pool's precomputed peer: the
//! ALPN offer (or HTTP/2 prior knowledge for `h2c`) and how many streams share one
//! HTTP/2 connection.

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{Problem, UpstreamConfig, UpstreamProtocol};

/// Streams multiplexed on one HTTP/2 connection to a target before another is opened
/// (Pingora's default is 1, which would give each request its own connection).
const MAX_H2_STREAMS: usize = 100;

/// `protocol` against `tls`: `h2` and `auto` negotiate with ALPN, so they need TLS; `h2c`
/// is cleartext by definition.
pub(super) fn problems(config: &UpstreamConfig, path: &str) -> Vec<Problem> {
    let at = format!("{path}.protocol");
    match (config.protocol, config.tls.is_some()) {
        (UpstreamProtocol::H2 | UpstreamProtocol::Auto, false) => vec![Problem::new(
            at,
            format!(
                "{} negotiates HTTP/2 with ALPN over TLS: add `tls:` (or use h2c for cleartext HTTP/2)",
                config.protocol.as_str()
            ),
        )],
        (UpstreamProtocol::H2c, true) => vec![Problem::new(
            at,
            "h2c is cleartext HTTP/2: use h2 or auto with `tls:`",
        )],
        _ => Vec::new(),
    }
}

/// Sets the peer's ALPN offer for `protocol`. Pingora speaks HTTP/2 without TLS (prior
/// knowledge) when the lowest version offered is 2 and the peer is not TLS.
pub(super) fn apply(peer: &mut HttpPeer, protocol: UpstreamProtocol) {
    peer.options.alpn = match protocol {
        UpstreamProtocol::Http1 => ALPN::H1,
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => ALPN::H2,
        UpstreamProtocol::Auto => ALPN::H2H1,
    };
    if protocol != UpstreamProtocol::Http1 {
        peer.options.max_h2_streams = MAX_H2_STREAMS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(yaml: &str) -> UpstreamConfig {
        serde_yaml::from_str(yaml).expect("valid pool")
    }

    #[test]
    fn h2_and_auto_need_tls_and_h2c_refuses_it() {
        let h2 = pool("targets: [{address: '127.0.0.1:1'}]\nprotocol: h2");
        assert_eq!(problems(&h2, "upstreams.a")[0].path, "upstreams.a.protocol");
        let auto = pool("targets: [{address: '127.0.0.1:1'}]\nprotocol: auto");
        assert_eq!(problems(&auto, "upstreams.a").len(), 1);
        let h2c = pool("targets: [{address: '127.0.0.1:1'}]\nprotocol: h2c\ntls: {}");
        assert_eq!(problems(&h2c, "upstreams.a").len(), 1);
        let fine = pool("targets: [{address: '127.0.0.1:1'}]\nprotocol: h2\ntls: {}");
        assert!(problems(&fine, "upstreams.a").is_empty());
    }

    #[test]
    fn h2c_is_prior_knowledge_over_cleartext() {
        let mut peer = HttpPeer::new("127.0.0.1:1", false, String::new());
        apply(&mut peer, UpstreamProtocol::H2c);
        assert_eq!(peer.options.alpn.get_min_http_version(), 2);
        assert_eq!(peer.options.max_h2_streams, MAX_H2_STREAMS);
        apply(&mut peer, UpstreamProtocol::Http1);
        assert_eq!(peer.options.alpn.get_max_http_version(), 1);
    }
}
