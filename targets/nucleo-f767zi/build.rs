//! Puts memory.x where cortex-m-rt's link.x finds it, and writes the cluster this board
//! joins into `$OUT_DIR/cluster.rs` (the `ASAP_FED_*` variables of
//! ../qemu-fed-m4/cluster_build.rs, with a LAN default for `ASAP_FED_PEERS`) and its own
//! network into `$OUT_DIR/board.rs`:
//!
//! | variable | meaning |
//! |---|---|
//! | `ASAP_FED_PEERS` [`192.168.1.50:47300,192.168.1.10:47301,192.168.1.10:47302,192.168.1.10:47303`] | every member's address, in rank order; this board's own entry is its static address and port |
//! | `ASAP_FED_PREFIX` [24] | the board's network prefix length |
//! | `ASAP_FED_GATEWAY` [the board's address with last octet 1] | its default gateway |
//! | `ASAP_FED_MAC` [`02:00:00:a5:a9:RANK`] | its Ethernet address (locally administered) |
use std::{env, fmt::Write as _, fs, path::PathBuf};

include!("../qemu-fed-m4/cluster_build.rs");

const LAN_PEERS: &str = "192.168.1.50:47300,192.168.1.10:47301,192.168.1.10:47302,192.168.1.10:47303";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../qemu-fed-m4/cluster_build.rs");
    let peers = env::var("ASAP_FED_PEERS").unwrap_or_else(|_| LAN_PEERS.to_string());
    // SAFETY (edition 2021: a safe call): build scripts run single-threaded.
    env::set_var("ASAP_FED_PEERS", &peers);
    write_cluster(&out);

    let rank: usize = var("ASAP_FED_RANK", 0);
    let (own, _) = endpoint(peers.split(',').nth(rank).unwrap());
    let prefix: u8 = var("ASAP_FED_PREFIX", 24);
    assert!(prefix <= 32, "ASAP_FED_PREFIX {prefix}: at most 32");
    println!("cargo:rerun-if-env-changed=ASAP_FED_GATEWAY");
    let gateway = match env::var("ASAP_FED_GATEWAY") {
        Ok(g) => endpoint(&format!("{}:0", g.trim())).0,
        Err(_) => [own[0], own[1], own[2], 1],
    };
    println!("cargo:rerun-if-env-changed=ASAP_FED_MAC");
    let mac: Vec<u8> = match env::var("ASAP_FED_MAC") {
        Ok(m) => m
            .trim()
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("ASAP_FED_MAC={m}: not aa:bb:cc:dd:ee:ff")))
            .collect(),
        Err(_) => vec![0x02, 0x00, 0x00, 0xa5, 0xa9, rank as u8],
    };
    assert_eq!(mac.len(), 6, "ASAP_FED_MAC: six bytes");
    let mut code = String::new();
    writeln!(code, "/// This board's address.\npub const ADDRESS: [u8; 4] = {own:?};").unwrap();
    writeln!(code, "/// Its network prefix length.\npub const PREFIX: u8 = {prefix};").unwrap();
    writeln!(
        code,
        "/// Its default gateway.\npub const GATEWAY: [u8; 4] = {gateway:?};"
    )
    .unwrap();
    writeln!(code, "/// Its Ethernet address.\npub const MAC: [u8; 6] = {mac:?};").unwrap();
    fs::write(out.join("board.rs"), code).unwrap();
}
