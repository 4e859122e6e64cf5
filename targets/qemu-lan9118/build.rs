//! Puts memory.x where cortex-m-rt's link.x finds it, and writes `$OUT_DIR/key.rs`: the
//! cluster key from `test.key` (64 hex digits) with the `keyed` feature, none without.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=test.key");
    let key = if env::var_os("CARGO_FEATURE_KEYED").is_some() {
        let text = fs::read_to_string("test.key").expect("test.key");
        let text = text.trim();
        assert!(
            text.len() == 64 && text.bytes().all(|c| c.is_ascii_hexdigit()),
            "test.key: not 64 hex digits"
        );
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        format!("Some({bytes:?})")
    } else {
        "None".to_string()
    };
    fs::write(
        out.join("key.rs"),
        format!(
            "/// The cluster key (test.key), with the `keyed` feature.\npub const KEY: Option<[u8; 32]> = {key};\n"
        ),
    )
    .unwrap();
}
