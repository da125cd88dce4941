//! The load-balancer controller: everything the `lb` binary does, as a library so the
//! integration tests drive the same code.
//!
//! # Layout
//! - [`config`]: the TOML file, validated whole
//! - [`reconcile`]: config + health -> map contents, only what changed
//! - [`daemon`]: `lb run`: the event loop, admin socket, metrics
//! - [`health`]: concurrent TCP/HTTP health checks with rise/fall
//! - [`dataplane`]: load, attach, pin/adopt, typed maps, BPF_PROG_TEST_RUN
//! - [`pktgen`]: `lb pktgen`, packet generator for benchmarks
//! - [`object`]: the embedded XDP object
//! - [`maglev`]: Maglev ring population (NSDI 2016)
//! - [`vrrp`]: VRRPv3 (RFC 5798) active-passive VIP failover
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod health;
pub mod maglev;
pub mod object;
pub mod pktgen;
pub mod reconcile;
pub mod vrrp;
