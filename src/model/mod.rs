//! The compiled model the request path reads.

pub mod client_address;
pub mod connections;
