//! Builds the XDP object (`lb-ebpf`) for the BPF target and leaves it in `OUT_DIR`,
//! where `src/object.rs` embeds it, so the `lb` binary is all an operator copies.
//!
//! The BPF build needs Debian's Rust with its library source (linked into rustup as the
//! toolchain `lb-bpf`), bpf-linker and an LLVM 22 it can load: `cargo xtask setup`
//! installs all three. With `AYA_BUILD_SKIP=1` the object is not built and the binary
//! is compiled with `cfg(lb_no_ebpf)`: everything works except loading the program,
//! which then fails with a message saying so. That is the explicit path for `cargo
//! check`/`clippy`/host unit tests on a machine without the BPF toolchain.

use std::{env, path::Path, process::Command};

use anyhow::{Context as _, bail};

/// The rustup name `cargo xtask setup` links Debian's toolchain under.
const TOOLCHAIN: &str = "lb-bpf";
/// Folder holding only a link to LLVM 22's libLLVM, for bpf-linker to load.
const LLVM_DIR: &str = "/usr/local/lib/lb-bpf-llvm";

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(lb_no_ebpf)");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!(
            "cargo:warning=AYA_BUILD_SKIP is set: the lb binary is built WITHOUT its XDP object and cannot load the data plane"
        );
        println!("cargo:rustc-cfg=lb_no_ebpf");
        return Ok(());
    }
    let linked = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !linked || !Path::new(LLVM_DIR).exists() {
        bail!(
            "the BPF toolchain is missing (rustup toolchain `{TOOLCHAIN}` or {LLVM_DIR}): run \
             `cargo xtask setup` as root, or set AYA_BUILD_SKIP=1 to build without the XDP object"
        );
    }
    // SAFETY: build scripts are single-threaded; the variables are inherited by the
    // nested cargo that aya-build spawns. Debian's rustc is a stable build, so
    // `-Z build-std=core` needs RUSTC_BOOTSTRAP; bpf-linker loads the first libLLVM in
    // LD_LIBRARY_PATH and the system also ships LLVM 14 and 15.
    unsafe {
        env::set_var("RUSTC_BOOTSTRAP", "1");
        env::set_var("LD_LIBRARY_PATH", LLVM_DIR);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-ebpf");
    let root = root.canonicalize().context("locating lb-ebpf")?;
    let root = root.to_str().context("non-UTF-8 path to lb-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(TOOLCHAIN),
    )
}
