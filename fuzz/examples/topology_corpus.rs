//! Times the `topology` target body on every input of a corpus directory and prints the
//! slowest, decoded: `cargo run --release --example topology_corpus target/corpus/topology`.
use arbitrary::{Arbitrary, Unstructured};

fn main() {
    let dir = std::env::args().nth(1).expect("a corpus directory");
    let mut times = vec![];
    for entry in std::fs::read_dir(&dir).expect("readable directory").flatten() {
        let bytes = std::fs::read(entry.path()).expect("readable input");
        let start = std::time::Instant::now();
        asap_fuzz::topology::run(&bytes);
        let took = start.elapsed().as_secs_f64();
        let input = asap_fuzz::topology::Input::arbitrary_take_rest(Unstructured::new(&bytes)).ok();
        times.push((took, format!("{input:?}")));
    }
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = times.iter().map(|t| t.0).sum();
    println!("{} inputs, {total:.3} s", times.len());
    for (took, input) in times.iter().take(12) {
        println!("{took:.4} s {input}");
    }
}
