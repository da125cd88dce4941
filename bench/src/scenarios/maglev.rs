//! `maglev`: the controller's ring build for M = 65537 with 1000 backends, beside the
//! same build with 100 backends.

use super::Scenario;
use crate::{
    ctx::{Check, Ctx, Row},
    report::Stat,
};

pub const SCENARIO: Scenario = Scenario {
    name: "maglev",
    description: "Maglev ring build, M = 65537: 1000 backends vs 100",
    method: "\
`lb::maglev::bench_build(n, 65537, k)` populates a ring of M = 65537 slots from `n`
equal-weight backends `k` times (the backend list is built outside the timed part);
each figure is the median of 21 builds (5 under `--quick`) on a thread pinned to one
core. The Maglev paper (NSDI 2016) reports 1.8 ms for 1000 backends at this
size; that is the target.",
    pinned: true,
    run,
};

fn median_ms(n: usize, builds: usize) -> f64 {
    let v: Vec<f64> = lb::maglev::bench_build(n, 65537, builds)
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    Stat::of(&v).map_or(f64::NAN, |s| s.median)
}

fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    let builds = ctx.pick(21, 5);
    let (big, small) = ctx.pinned(|| {
        // One untimed build each warms the allocator and caches.
        lb::maglev::bench_build(1000, 65537, 1);
        (median_ms(1000, builds), median_ms(100, builds))
    })?;
    ctx.progress(format!(
        "M=65537: 1000 backends {big:.3} ms, 100 backends {small:.3} ms"
    ));
    Ok(vec![
        Row::new("ring build M=65537, 1000 backends", big, "ms")
            .vs("100 backends", small)
            .target(Check::ValueAtMost(1.8), "<= 1.8 ms (paper)"),
    ])
}
