//! Replays the committed corpus through the target bodies on stable, without libFuzzer:
//! `cargo test` in `fuzz/`. (Replay a crash with `cargo fuzz run TARGET ARTIFACT`.)

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in [root.join("corpus").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            eprintln!("{target}: {}", file.display());
            run(&bytes);
            count += 1;
        }
    }
    assert!(count > 0, "no corpus for {target}");
}

#[test]
fn decode() {
    replay("decode", asap_fuzz::decode::run);
}

#[test]
fn keyed() {
    replay("keyed", asap_fuzz::keyed::run);
}

#[test]
fn node_frames() {
    replay("node_frames", asap_fuzz::node_frames::run);
}

#[test]
fn topology() {
    replay("topology", asap_fuzz::topology::run);
}

#[test]
fn reduce() {
    replay("reduce", asap_fuzz::reduce::run);
}

#[test]
fn pair() {
    replay("pair", asap_fuzz::pair::run);
}

#[test]
fn codec() {
    replay("codec", asap_fuzz::codec::run);
}
