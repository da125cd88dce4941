//! Host-side placeholder so `cargo test --workspace` and clippy have a library to see;
//! the programs themselves are in `main.rs` and only build for the BPF target.
#![no_std]
