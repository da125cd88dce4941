//! Integration tests against a real MariaDB that the harness starts itself
//! (`app_tier::testing`). One shared server per test binary, one database per test;
//! tests that stop or replicate a server start their own.

mod bad_inputs;
mod cli;
mod common;
mod counts;
mod crud;
mod page_metrics;
mod pool;
mod replica;
mod resilience;
