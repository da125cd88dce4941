//! Every XDP program in the embedded object passes this kernel's verifier.

use lb::dataplane::{LoadOptions, load_object, load_program};

#[test]
fn every_program_loads() {
    lb_tests::require_root();
    let mut ebpf = load_object(&LoadOptions {
        conntrack_size: 4096,
        max_services: 4,
    })
    .unwrap();
    for name in [
        "xdp_lb",
        "xdp_decap",
        "xdp_pass",
        "xdp_count",
        "xdp_sink",
        "xdp_tx",
    ] {
        load_program(&mut ebpf, name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}
