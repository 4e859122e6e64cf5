//! The CPU a round costs a node, without sockets: `NODES` nodes of one-peer-exp (what
//! `cargo bench -p asap-cli --bench vs-mpi` runs as processes) in one process, frames
//! handed over in memory, batches of 40 as over GSO. Run it under an instruction counter
//! to see what a change to the data plane saves, free of the machine's noise:
//!
//! ```text
//! cargo build --release -p asap-tests --example round_cost
//! valgrind --tool=callgrind target/release/examples/round_cost q8 1000000 6
//! ```
//!
//! Arguments: `plain`, `q8` or `ring` (our ring all-reduce), the model length (default
//! 1,000,000), rounds (default 6).
//! Prints what it ran (divide the instruction count by nodes × rounds) and a checksum of
//! the replicas.

use asap_core::compress::Compression;
use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{AllReduce, AllReduceBuffers, Config, Duration, Instant, Node, NodeId, Reducer};
use asap_tests::{random_vectors, NodeMemory};

const NODES: u16 = 8;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "plain".into());
    let compression = match mode.as_str() {
        "plain" | "ring" => Compression::None,
        "q8" => Compression::Q8,
        other => panic!("{other}: plain, q8 or ring"),
    };
    let model: usize = args.next().map_or(1_000_000, |a| a.parse().expect("a model length"));
    let rounds: u32 = args.next().map_or(6, |a| a.parse().expect("a number of rounds"));

    let spec = TopologySpec::new(Family::OnePeerExponential, u32::from(NODES));
    let topology = Topology::new(spec, &mut vec![0.0; spec.scratch_len()]).expect("a topology");
    let configs: Vec<Config> = (0..NODES)
        .map(|i| Config {
            compression,
            ..Config::new(1, NodeId(i), model)
        })
        .collect();
    let peers = topology.peers_of(0).count();
    let mut memory: Vec<NodeMemory> = configs
        .iter()
        .map(|c| NodeMemory::new(&c.layout(peers).expect("a layout")))
        .collect();
    let world = u32::from(NODES);
    let mut work: Vec<(Vec<f32>, Vec<u32>)> = configs
        .iter()
        .map(|c| (vec![0.0; model], vec![0; AllReduce::bitmap_words(c, world)]))
        .collect();
    let t0 = Instant::from_millis(1);
    let mut nodes: Vec<Box<dyn Reducer + '_>> = if mode == "ring" {
        let buffers = work
            .iter_mut()
            .map(|(work, chunk_bits)| AllReduceBuffers { work, chunk_bits });
        configs
            .iter()
            .zip(buffers)
            .map(|(c, b)| Box::new(AllReduce::new(*c, world, b).expect("a ring member")) as Box<dyn Reducer>)
            .collect()
    } else {
        configs
            .iter()
            .zip(memory.iter_mut())
            .map(|(c, m)| {
                let node = Node::<'_, 8>::with_topology(*c, &topology, m.buffers(), t0).expect("a node");
                Box::new(node) as Box<dyn Reducer>
            })
            .collect()
    };
    let mut params = random_vectors(usize::from(NODES), model, 7);
    let max_frame = configs[0].max_frame;
    let (mut buf, mut received) = (vec![0u8; max_frame * 40], vec![0u8; max_frame]);
    let mut done = vec![0u32; nodes.len()];
    let mut now = t0;
    while done.iter().any(|&d| d < rounds) {
        let mut progress = false;
        for i in 0..nodes.len() {
            let advance = nodes[i]
                .advance_round(now, &mut params[i], done[i] < rounds)
                .expect("a round");
            if advance.finished.is_some() {
                done[i] += 1;
                progress = true;
            }
            while let Some(t) = nodes[i].poll_transmit_batch(now, &mut buf, 40).expect("room") {
                progress = true;
                for frame in t.frames(&buf) {
                    // A receive buffer the node may decrypt in place, as a socket's.
                    let copy = &mut received[..frame.len()];
                    copy.copy_from_slice(frame);
                    let _ = nodes[usize::from(t.to.0)].handle_frame_mut(now, copy);
                }
            }
        }
        if !progress {
            now = now + Duration::from_micros(100);
            for node in nodes.iter_mut() {
                node.handle_timeout(now);
            }
        }
    }
    let checksum: f64 = params.iter().flatten().map(|v| f64::from(*v)).sum();
    println!("{NODES} nodes, {rounds} rounds of {model} floats, {mode}: checksum {checksum}");
}
