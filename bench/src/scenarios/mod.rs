//! The scenario registry. Each scenario is a module exporting one [`Scenario`] constant;
//! [`ALL`] lists them in report order (see the crate docs for how to add one).

use crate::ctx::{Ctx, Row};

pub mod app;
pub mod dataplane;
pub mod failover;
pub mod http;
pub mod maglev;
pub mod web;
pub mod xdp;

/// A benchmark the runner can call once per round.
pub struct Scenario {
    /// Command-line name (`cargo xtask bench <name>`), also the section and plot name.
    pub name: &'static str,
    /// One line: what it compares.
    pub description: &'static str,
    /// Markdown for BENCHMARKS.md: the set-up, what is measured, how to read it.
    pub method: &'static str,
    /// Whether the measured work is pinned to [`Ctx::cpu`] (then the other cores' busy
    /// time during a round counts as noise).
    pub pinned: bool,
    /// One round: measure everything, clean up everything, return the rows.
    pub run: fn(&mut Ctx) -> anyhow::Result<Vec<Row>>,
}

/// Every scenario, in report order.
pub const ALL: &[&Scenario] = &[
    &xdp::SCENARIO,
    &maglev::SCENARIO,
    &dataplane::SCENARIO,
    &http::SCENARIO,
    &web::SCENARIO,
    &app::SCENARIO,
    &failover::SCENARIO,
];
