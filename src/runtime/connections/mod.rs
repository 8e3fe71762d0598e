//! Client connections before and between requests: admission (caps per listener and per
//! client address, PROXY protocol), deadlines (request head, keep-alive idle) and the
//! open-file limit they rely on.
//!
//! Pingora's `ConnectionFilter` only sees an address and never learns that a connection
//! closed, so it cannot count open connections; admission runs instead as the pre-TLS
//! callback of TLS listeners and in the [`Gate`] for plain ones, and a connection's
//! places ride in its socket until it closes.

mod admission;
mod clock;
mod gate;
mod limiter;
mod open_files;
mod proxy_protocol;
mod stream;

pub use admission::Admission;
pub use clock::{head_received, request_finished};
pub use gate::Gate;
pub use limiter::Refusal;
pub use open_files::raise_open_file_limit;
