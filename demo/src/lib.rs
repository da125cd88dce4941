//! The whole design in network namespaces on one machine: a client, two XDP load
//! balancers with VRRP failover (lb1 active, lb2 passive), two web-tier nodes, two
//! app-tier nodes and MariaDB, with nftables access control per layer. The `lb-demo`
//! binary (`cargo xtask demo`) and the end-to-end tests (`tests/tests/e2e.rs`) share
//! [`Infra`]: [`Infra::up`] builds and starts everything, dropping it tears everything
//! down.
//!
//! # Layout
//! - [`plan`]: addresses, segments, names, the printed diagram
//! - [`infra`]: `Infra`, its topology and processes, kill and restart per tier
//! - [`db`]: MariaDB in its namespace with its own data directory
//! - [`firewall`]: the nftables ruleset of each node
//! - [`http`]: a small blocking HTTP/1.1 client that says how a request failed
//! - [`traffic`]: sample traffic through the VIP with per-status counters
//! - [`netns`]: threads inside a namespace; TCP reachability probes
//! - [`run`]: one demo at a time (lock file), state file, `--down`

pub mod db;
pub mod firewall;
pub mod http;
pub mod infra;
pub mod netns;
pub mod plan;
pub mod run;
pub mod traffic;

pub use infra::{Infra, Opts, Progress};
