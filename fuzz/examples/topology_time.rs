//! Times `Topology::new` on specs given as `FAMILY:N:DEGREE:SEED:MIN_GAP` arguments
//! (empty fields take the defaults), printing the gap and the time taken.
use asap_core::{Family, Topology, TopologySpec};

fn main() {
    for arg in std::env::args().skip(1) {
        let f: Vec<&str> = arg.split(':').collect();
        let family = Family::from_name(f[0]).expect("family");
        let nodes: u32 = f[1].parse().expect("nodes");
        let mut spec = TopologySpec::new(family, nodes);
        if let Some(d) = f.get(2).filter(|s| !s.is_empty()) {
            spec.degree = Some(d.parse().unwrap());
        }
        if let Some(s) = f.get(3).filter(|s| !s.is_empty()) {
            spec.seed = s.parse().unwrap();
        }
        if let Some(g) = f.get(4).filter(|s| !s.is_empty()) {
            spec.min_gap = g.parse().unwrap();
        }
        let mut scratch = vec![0.0; spec.scratch_len()];
        let start = std::time::Instant::now();
        let t = Topology::new(spec, &mut scratch);
        let took = start.elapsed();
        match t {
            Ok(t) => println!("{arg}: gap {:.9e} in {took:?}", t.spectral_gap()),
            Err(e) => println!("{arg}: {e} in {took:?}"),
        }
    }
}
