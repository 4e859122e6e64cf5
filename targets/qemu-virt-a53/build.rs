//! Puts link.ld where the linker finds it, and writes the cluster this board joins into
//! `$OUT_DIR/cluster.rs` (environment variables: see ../qemu-fed-m4/cluster_build.rs).
use std::{env, fs, path::PathBuf};

include!("../qemu-fed-m4/cluster_build.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("link.ld", out.join("link.ld")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../qemu-fed-m4/cluster_build.rs");
    write_cluster(&out);
}
