//! The smallest Pingora reverse proxy (one upstream, no routing, plugins, metrics or log),
//! shared by `examples/bare_proxy` and `examples/alloc_count` so both measure the same proxy.

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::HttpPeer;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

/// Serves `listen` with `threads` worker threads, proxying everything to `upstream`
/// (`IP:PORT`), until the process is stopped. `l4_read_buffer` sets the size of each client
/// connection's L4 read buffer (Pingora's default, 64 KiB, when `None`; 0 for none).
pub fn serve(listen: &str, upstream: String, threads: usize, l4_read_buffer: Option<usize>) -> ! {
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream });
    let buffers = L4BufferSettings {
        read: l4_read_buffer,
        ..L4BufferSettings::default()
    };
    proxy.add_listener(ListenerConfig::tcp(listen).l4_buffer(buffers));
    server.add_service(proxy);
    server.run_forever()
}
