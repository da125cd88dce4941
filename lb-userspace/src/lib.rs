//! The load-balancer controller: everything the `lb` binary does, as a library so the
//! integration tests drive the same code.
//!
//! # Layout
//! - [`dataplane`]: load, attach, pin/adopt, typed maps, BPF_PROG_TEST_RUN
//! - [`object`]: the embedded XDP object
//! - [`maglev`]: Maglev ring population (NSDI 2016)
//! - [`vrrp`]: VRRPv3 (RFC 5798) active-passive VIP failover
pub mod dataplane;
pub mod maglev;
pub mod object;
pub mod vrrp;
