//! Puts memory.x where cortex-m-rt's link.x finds it, and writes the board's own network
//! into `$OUT_DIR/net.rs` (main.rs's `net`). The cluster it joins is the board crate's
//! (`ASAP_FED_RANK`, `ASAP_FED_PEERS` and the others: ../board/build.rs); this board's
//! default `ASAP_FED_PEERS`, a LAN, is in .cargo/config.toml, and its own address is its
//! own entry there. Its network, beyond that:
//!
//! | variable | meaning |
//! |---|---|
//! | `ASAP_FED_PREFIX` [24] | the board's network prefix length |
//! | `ASAP_FED_GATEWAY` [the board's address with last octet 1] | its default gateway |
//! | `ASAP_FED_MAC` [`02:00:00:a5:a9:RANK`] | its Ethernet address (locally administered) |
//!
//! The defaults that depend on the cluster (gateway, MAC) are main.rs's consts: the
//! cluster is known there.
use std::{env, fmt::Write as _, fs, path::PathBuf};

/// The variable `name`, trimmed, if set (and a rebuild when it changes).
fn var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok().map(|v| v.trim().to_string())
}

/// A number, decimal or `0x` hexadecimal.
fn number<T: TryFrom<u64>>(text: &str) -> Option<T> {
    let n = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => text.parse().ok()?,
    };
    T::try_from(n).ok()
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");

    let prefix: u8 = match var("ASAP_FED_PREFIX") {
        Some(p) => number(&p).unwrap_or_else(|| panic!("ASAP_FED_PREFIX={p}: not a valid value")),
        None => 24,
    };
    assert!(prefix <= 32, "ASAP_FED_PREFIX {prefix}: at most 32");
    let gateway: Option<Vec<u8>> = var("ASAP_FED_GATEWAY").map(|g| {
        let octets: Vec<u8> = g.split('.').map_while(|o| o.parse().ok()).collect();
        assert!(
            octets.len() == 4 && g.split('.').count() == 4,
            "ASAP_FED_GATEWAY={g}: not an IPv4 address"
        );
        octets
    });
    let mac: Option<Vec<u8>> = var("ASAP_FED_MAC").map(|m| {
        let bytes: Vec<u8> = m
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("ASAP_FED_MAC={m}: not aa:bb:cc:dd:ee:ff")))
            .collect();
        assert_eq!(bytes.len(), 6, "ASAP_FED_MAC: six bytes");
        bytes
    });
    let mut code = String::new();
    writeln!(code, "/// Its network prefix length.\npub const PREFIX: u8 = {prefix};").unwrap();
    writeln!(
        code,
        "/// Its default gateway, if set.\npub const GATEWAY: Option<[u8; 4]> = {};",
        gateway.map_or("None".to_string(), |g| format!("Some({g:?})"))
    )
    .unwrap();
    writeln!(
        code,
        "/// Its Ethernet address, if set.\npub const MAC: Option<[u8; 6]> = {};",
        mac.map_or("None".to_string(), |m| format!("Some({m:?})"))
    )
    .unwrap();
    fs::write(out.join("net.rs"), code).unwrap();
}
