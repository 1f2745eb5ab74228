//! The integration tests, one binary with a module per area (as cargo's own `tests/testsuite`):
//! the crate is linked once instead of twenty times. `cargo test --test testsuite lan::` runs
//! one area; `cargo test` runs everything.
//!
//! Shared fixtures live in `common/` (the simulator, an in-process daemon, the real binary as a
//! process, free ports).

mod common;

mod api;
mod browser;
mod chains;
mod config_cli;
mod docs;
mod durability;
mod easypoints;
mod faults;
mod fleet;
mod granting;
mod lan;
mod lifecycle;
mod ops;
mod packaging;
mod partition;
mod properties;
mod readback;
mod sales;
mod sales_cli;
mod sync;
mod telemetry;
mod torture;
mod windows;
