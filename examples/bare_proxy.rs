//! The smallest Pingora reverse proxy: one upstream, no routing, no plugins, no metrics,
//! no log, and the same allocator as Portcullis (mimalloc). `loadtest/compare.sh` runs it
//! as the "pingora-bare" row, the ceiling any Pingora-based gateway can reach on this
//! machine, so the cost of Portcullis's own work is the distance between it and the
//! Portcullis rows.
//!
//! ```text
//! cargo build --release --example bare_proxy
//! target/release/examples/bare_proxy --listen 127.0.0.1:28085 --upstream 127.0.0.1:28001
//! ```

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::HttpPeer;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "bare_proxy",
    about = "Minimal Pingora proxy (benchmark ceiling)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: String,
    /// The one upstream, `IP:PORT`.
    #[arg(long)]
    upstream: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

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

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Bare {
            upstream: args.upstream,
        },
    );
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);
    server.run_forever();
}
