//! Runtime services (layer 3): the state that holds the model in force, and the services
//! around it: reload, the admin endpoints and status page, the process lifecycle, and
//! per-connection admission and deadlines; and the process's heap allocator.

pub mod admin;
pub mod allocator;
pub mod connections;
pub mod discovery;
pub mod health_checker;
pub mod lifecycle;
pub mod reload;
pub mod sni;
pub mod state;
pub mod status_page;
