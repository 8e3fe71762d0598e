//! The compiled model (layer 2): what a configuration becomes once checked: the gateway,
//! its router, upstream pools, caches and policies. The request path reads only this.

pub mod cache;
pub mod canary;
pub mod client_address;
pub mod client_cert;
pub mod compression;
pub mod connections;
pub mod gateway;
pub mod header_key;
pub mod mirror;
pub mod path;
pub mod request;
pub mod router;
pub mod server;
pub mod tls;
pub mod tracing;
pub mod upstream;
pub mod upstream_tls;
pub mod websocket;
