//! The XDP object built by `build.rs`, embedded in the binary.

/// The ELF object holding every XDP program and map, or an error explaining why this
/// build has none (`AYA_BUILD_SKIP=1`).
pub fn bytes() -> anyhow::Result<&'static [u8]> {
    #[cfg(not(lb_no_ebpf))]
    {
        Ok(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/lb-ebpf"
        )))
    }
    #[cfg(lb_no_ebpf)]
    {
        anyhow::bail!(
            "this lb binary was built with AYA_BUILD_SKIP=1 and carries no XDP object; \
             rebuild with `cargo xtask build`"
        )
    }
}
