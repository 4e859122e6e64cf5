//! Puts memory.x where cortex-m-rt's link.x finds it, and writes the cluster this board
//! joins into `$OUT_DIR/cluster.rs` (environment variables: see cluster_build.rs).
use std::{env, fs, path::PathBuf};

include!("cluster_build.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cluster_build.rs");
    write_cluster(&out);
}
