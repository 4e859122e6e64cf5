//! What a communication graph will cost a given job on a given network, predicted before
//! deployment: rounds to shrink the consensus error by a factor `ε` (from the graph's
//! spectral gap), bytes a node sends, and wall time — beside a ring all-reduce of the same
//! model on the same links. The paper chose its reduce graphs by spectral gap under a
//! bandwidth budget; this makes that choice a computation.
//!
//! The model, per round of ASAP: the node computes (`compute`), sends its update to each
//! of its out-neighbours through its own link (`sends · model / bandwidth`: the sender's
//! link is the bottleneck) and waits one round trip for the last NOTIFY-ACK
//! (`2 · latency`). A ring all-reduce reaches the exact average in one round of
//! `2(n−1)` dependent steps, each moving `model / n` bytes and waiting one latency. It
//! ignores headers (2% at 1,400-byte frames), retransmissions and CPU time in the
//! protocol: a lower bound for both, compared on the same terms.
//!
//! A planning tool for hosts (`asap topology --rank`, `--topology auto`, the
//! cost-model check against the simulator), not protocol: no board needs it, so it
//! lives here rather than in the no-std core.

use asap_core::topology::Topology;

/// The links: every node's own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    /// Bytes a second a node can send.
    pub bandwidth: f64,
    /// One-way latency, seconds.
    pub latency: f64,
}

/// The job: a model and its local step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Job {
    /// Bytes of the model (4 per f32 value).
    pub model_bytes: f64,
    /// Seconds of local compute a round.
    pub compute: f64,
}

/// A predicted cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Rounds to the target (`u32::MAX`: the graph does not get there).
    pub rounds: u32,
    /// Bytes a node sends a round (average over nodes and a period).
    pub bytes_per_round: f64,
    /// Seconds a round takes.
    pub seconds_per_round: f64,
}

impl Prediction {
    /// Seconds to the target.
    pub fn seconds(&self) -> f64 {
        f64::from(self.rounds) * self.seconds_per_round
    }

    /// Bytes a node sends until the target.
    pub fn bytes(&self) -> f64 {
        f64::from(self.rounds) * self.bytes_per_round
    }
}

/// Average destinations of a node a round over one period of `t`'s schedule.
pub fn sends_per_round(t: &Topology) -> f64 {
    let mut sends = 0u64;
    for r in 0..t.period() {
        for i in 0..t.nodes() {
            sends += t.out_neighbours(i, r).count() as u64;
        }
    }
    sends as f64 / (f64::from(t.nodes()) * f64::from(t.period()))
}

/// ASAP on `t` until the consensus error shrank by `epsilon`.
pub fn asap(t: &Topology, epsilon: f64, job: &Job, net: &Network) -> Prediction {
    let bytes_per_round = sends_per_round(t) * job.model_bytes;
    Prediction {
        rounds: t.predicted_rounds(epsilon),
        bytes_per_round,
        seconds_per_round: job.compute + bytes_per_round / net.bandwidth + 2.0 * net.latency,
    }
}

/// A ring all-reduce of the model among `n` nodes: the exact average in one round.
pub fn allreduce(n: u32, job: &Job, net: &Network) -> Prediction {
    let n = f64::from(n.max(1));
    let steps = 2.0 * (n - 1.0);
    let segment = job.model_bytes / n;
    Prediction {
        rounds: 1,
        bytes_per_round: steps * segment,
        seconds_per_round: job.compute + steps * (segment / net.bandwidth + net.latency),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asap_core::topology::{Family, TopologySpec};

    const JOB: Job = Job {
        model_bytes: 100e6,
        compute: 0.02,
    };
    const NET: Network = Network {
        bandwidth: 1.25e9,
        latency: 50e-6,
    };

    fn topology(family: Family, n: u32, degree: Option<u32>) -> Topology {
        let spec = TopologySpec {
            degree,
            ..TopologySpec::new(family, n)
        };
        Topology::new(spec, &mut [0.0; 3 * 256]).unwrap()
    }

    #[test]
    fn one_peer_exponential_is_exact_in_log2_n_rounds_of_one_model() {
        for n in [2u32, 4, 16, 64, 256] {
            let p = asap(&topology(Family::OnePeerExponential, n, None), 1e-6, &JOB, &NET);
            assert_eq!(p.rounds, n.trailing_zeros(), "n = {n}");
            assert!((p.bytes_per_round - JOB.model_bytes).abs() < 1.0);
            let round = JOB.compute + JOB.model_bytes / NET.bandwidth + 2.0 * NET.latency;
            assert!((p.seconds() - f64::from(p.rounds) * round).abs() < 1e-12);
        }
    }

    #[test]
    fn all_reduce_sends_two_models_less_a_share_in_2n_minus_2_steps() {
        let p = allreduce(16, &JOB, &NET);
        assert_eq!(p.rounds, 1);
        assert!((p.bytes_per_round - 2.0 * 15.0 / 16.0 * JOB.model_bytes).abs() < 1.0);
        let expected = JOB.compute + 30.0 * (JOB.model_bytes / 16.0 / NET.bandwidth + NET.latency);
        assert!((p.seconds() - expected).abs() < 1e-12);
    }

    #[test]
    fn rounds_follow_the_gap_of_static_graphs() {
        // The ring's gap is 1 − (1 + 2cos(2π/n))/3 (weights 1/3): rounds = ⌈ln ε / ln(1 − gap)⌉.
        let t = topology(Family::Ring, 16, None);
        let rho = (1.0 + 2.0 * (2.0 * std::f64::consts::PI / 16.0).cos()) / 3.0;
        let expected = (1e-6f64.ln() / rho.ln()).ceil() as u32;
        assert_eq!(asap(&t, 1e-6, &JOB, &NET).rounds, expected);
        assert!((sends_per_round(&t) - 2.0).abs() < 1e-12);
    }
}
