//! Portcullis: an API gateway and CDN-style edge proxy on Pingora.
//!
//! The request path reads only the compiled [`model::gateway::Gateway`]; a configuration is
//! parsed ([`config`]), compiled ([`model`]) and swapped in ([`runtime::state`]) as a whole.

pub mod config;
pub mod fleet;
pub mod model;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod upgrade;
