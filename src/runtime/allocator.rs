//! The heap allocator of the `portcullis` binary, chosen in one place so that the
//! benchmark ceiling (`examples/bare_proxy`) and the allocation counter
//! (`examples/alloc_count`) always run on the same one.

/// The allocator the gateway binary installs as `#[global_allocator]`: mimalloc, with its
/// default settings, or glibc malloc with the `system-allocator` feature (for comparisons).
///
/// mimalloc runs a plain request's 144 allocations in 13.9k instructions where glibc needs
/// 34.7k (callgrind, `docs/performance-attribution.md`). The extra resident memory seen with
/// it under many connections is not its own: it zero-fills the 64 KiB read buffer Pingora
/// allocates per connection, where glibc's calloc sometimes gets untouched pages; the fix
/// for that is the buffer, not the allocator.
#[cfg(not(feature = "system-allocator"))]
pub type Allocator = mimalloc::MiMalloc;
/// The allocator the gateway binary installs as `#[global_allocator]`.
#[cfg(feature = "system-allocator")]
pub type Allocator = std::alloc::System;

/// The value of [`Allocator`] for a `static`.
#[cfg(not(feature = "system-allocator"))]
pub const ALLOCATOR: Allocator = mimalloc::MiMalloc;
/// The value of [`Allocator`] for a `static`.
#[cfg(feature = "system-allocator")]
pub const ALLOCATOR: Allocator = std::alloc::System;
