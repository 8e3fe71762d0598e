//! What runs while the process serves: per-connection admission and deadlines.

pub mod connections;
