//! Emits the `bpf_target_arch` cfg that aya-ebpf's helpers select on.
fn main() -> aya_build::Result<()> {
    aya_build::emit_bpf_target_arch_cfg()
}
