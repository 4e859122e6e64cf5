//! Puts link.ld where the linker finds it. (The cluster this board joins is the board
//! crate's: ../board/build.rs reads the `ASAP_FED_*` variables.)
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("link.ld", out.join("link.ld")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
