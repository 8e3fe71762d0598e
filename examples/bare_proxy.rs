//! The smallest Pingora reverse proxy: one upstream, no routing, no plugins, no metrics,
//! no log, and the same allocator as Portcullis (`portcullis::runtime::allocator`).
//! `loadtest/compare.sh` runs it as the "pingora-bare" row, the ceiling any Pingora-based
//! gateway can reach on this machine, so the cost of Portcullis's own work is the distance
//! between it and the Portcullis rows.
//!
//! ```text
//! cargo build --release --example bare_proxy
//! target/release/examples/bare_proxy --listen 127.0.0.1:28085 --upstream 127.0.0.1:28001
//! ```

#[path = "common/bare.rs"]
mod bare;

use clap::Parser;

#[global_allocator]
static GLOBAL: portcullis::runtime::allocator::Allocator =
    portcullis::runtime::allocator::ALLOCATOR;

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
    /// Size of each client connection's L4 read buffer in bytes (Pingora's default, 64 KiB,
    /// when not given; 0 for none): what idle connections cost in memory.
    #[arg(long)]
    l4_read_buffer: Option<usize>,
}

fn main() {
    let args = Args::parse();
    bare::serve(
        &args.listen,
        args.upstream,
        args.threads,
        args.l4_read_buffer,
    )
}
