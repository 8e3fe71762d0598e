//! Portcullis: an API gateway and CDN-style edge proxy on Pingora.
//!
//! The request path reads only the compiled [`gateway::Gateway`]; a configuration is
//! parsed ([`config`]), compiled ([`gateway`]) and swapped in ([`state`]) as a whole.

pub mod access_log;
pub mod admin;
pub mod allocator;
pub mod cache;
pub mod canary;
pub mod compression;
pub mod config;
pub mod gateway;
pub mod lifecycle;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod server;
pub mod state;
pub mod tls;
pub mod upgrade;
pub mod upstream;
