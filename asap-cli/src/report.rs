//! `asap topology`: what a communication graph costs and buys, before deployment.

use asap_core::topology::{Topology, TopologyError, TopologySpec};
use serde::Serialize;

/// Consensus target the report counts rounds to.
pub const TARGET: f64 = 1e-6;

/// One topology's figures. Field names are the JSON keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopologyReport {
    /// Family name.
    pub kind: String,
    /// Nodes.
    pub nodes: u32,
    /// Full out-degree of the family.
    pub degree: u32,
    /// Peers each node sends to per round (after `--max-send`).
    pub send_degree: u32,
    /// Rounds after which the schedule repeats.
    pub period: u32,
    /// `1 - ρ`, `ρ` the per-round contraction of the consensus error.
    pub spectral_gap: f64,
    /// Rounds to shrink the consensus error by 1e-6, from the gap.
    #[serde(rename = "rounds_to_1e-6_predicted")]
    pub rounds_predicted: u32,
    /// Rounds to shrink it by 1e-6 when the mixing is iterated (`None`: not within the limit).
    #[serde(rename = "rounds_to_1e-6_measured")]
    pub rounds_measured: Option<u32>,
    /// Whether exact averaging needs push-sum (directed irregular graph).
    pub push_sum: bool,
    /// Model size the byte figures assume.
    pub model_bytes: u64,
    /// Bytes a node sends per round (payload only).
    pub bytes_per_node_per_round: u64,
    /// Bytes a node sends per round in a ring all-reduce of the same model.
    pub allreduce_bytes_per_node_per_round: u64,
    /// Bytes a node sends until the predicted rounds are done.
    pub bytes_per_node_to_target: u64,
}

/// Builds the topology and measures it. `limit` caps the measured rounds.
pub fn report(spec: TopologySpec, model_bytes: u64, limit: u32) -> Result<(Topology, TopologyReport), TopologyError> {
    let mut scratch = vec![0.0; spec.scratch_len()];
    let t = Topology::new(spec, &mut scratch)?;
    let rounds_predicted = t.predicted_rounds(TARGET);
    let rounds_measured = t.measured_rounds(TARGET, limit, &mut scratch);
    let n = u64::from(t.nodes());
    // Average destinations per node and round over a period (Random varies by node).
    let per_round = (crate::cost::sends_per_round(&t) * model_bytes as f64).round() as u64;
    let allreduce = 2 * (n - 1) * model_bytes / n;
    Ok((
        t.clone(),
        TopologyReport {
            kind: t.family().name().to_string(),
            nodes: t.nodes(),
            degree: t.degree(),
            send_degree: t.send_degree(0),
            period: t.period(),
            spectral_gap: t.spectral_gap(),
            rounds_predicted,
            rounds_measured,
            push_sum: t.needs_push_sum(),
            model_bytes,
            bytes_per_node_per_round: per_round,
            allreduce_bytes_per_node_per_round: allreduce,
            bytes_per_node_to_target: per_round.saturating_mul(u64::from(rounds_predicted)),
        },
    ))
}

/// Graphviz of round 0 (and the following rounds of a period, as edge labels).
pub fn dot(t: &Topology) -> String {
    let mut out = format!("digraph \"{} n={}\" {{\n", t.family(), t.nodes());
    for r in 0..t.period() {
        for i in 0..t.nodes() {
            for j in t.out_neighbours(i, r) {
                let w = t.edge_weight(i, j, r);
                if t.period() > 1 {
                    out.push_str(&format!("  {i} -> {j} [label=\"r{r} {w:.3}\"];\n"));
                } else {
                    out.push_str(&format!("  {i} -> {j} [label=\"{w:.3}\"];\n"));
                }
            }
        }
    }
    out.push_str("}\n");
    out
}

/// Human-readable table of a report.
pub fn table(r: &TopologyReport) -> String {
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let measured = r
        .rounds_measured
        .map_or_else(|| "not within the limit".to_string(), |m| m.to_string());
    format!(
        "topology            {kind} (n = {n}{push})\n\
         degree              {d} (sends to {s} per round{period})\n\
         spectral gap        {gap:.6}\n\
         rounds to 1e-6      {pred} predicted, {measured} measured\n\
         bytes/node/round    {b:.2} MiB   (ring all-reduce: {a:.2} MiB, model {m:.2} MiB)\n\
         bytes/node to 1e-6  {t:.1} MiB\n",
        kind = r.kind,
        n = r.nodes,
        push = if r.push_sum { ", push-sum" } else { "" },
        d = r.degree,
        s = r.send_degree,
        period = if r.period > 1 {
            format!(", period {}", r.period)
        } else {
            String::new()
        },
        gap = r.spectral_gap,
        pred = r.rounds_predicted,
        b = mib(r.bytes_per_node_per_round),
        a = mib(r.allreduce_bytes_per_node_per_round),
        m = mib(r.model_bytes),
        t = mib(r.bytes_per_node_to_target),
    )
}

/// One line of `asap topology --rank`: a candidate graph (or the all-reduce baseline)
/// and what it is predicted to cost ([`crate::cost`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ranked {
    /// Family name, or "ring all-reduce".
    pub kind: String,
    /// The degree asked for (families that take one).
    pub degree: Option<u32>,
    /// Average destinations a node sends to a round.
    pub sends_per_round: f64,
    /// Spectral gap (1 for the all-reduce's exact average).
    pub spectral_gap: f64,
    /// Rounds to shrink the consensus error by 1e-6.
    pub rounds: u32,
    /// Predicted seconds a round.
    pub seconds_per_round: f64,
    /// Predicted seconds to 1e-6.
    pub seconds: f64,
    /// Bytes a node sends to 1e-6.
    pub bytes: f64,
    /// Why the graph was refused (it does not exist for these parameters, or does not mix).
    pub refused: Option<String>,
}

/// Every family, and every degree up to `max_degree` for those that take one, predicted
/// for `nodes` nodes on `net` with `job`, sorted by predicted time to 1e-6; refused
/// configurations last (never hidden). The ring all-reduce is one of the lines.
pub fn rank(
    nodes: u32,
    max_degree: u32,
    static_only: bool,
    seed: u64,
    job: &crate::cost::Job,
    net: &crate::cost::Network,
) -> Vec<Ranked> {
    use crate::cost;
    use asap_core::topology::Family;
    let mut rows = Vec::new();
    let mut scratch = Vec::new();
    for family in Family::ALL {
        let degrees: Vec<Option<u32>> = if family.takes_degree() {
            (1..=max_degree.min(nodes.saturating_sub(1))).map(Some).collect()
        } else {
            vec![None]
        };
        for degree in degrees {
            let spec = TopologySpec {
                degree,
                seed,
                ..TopologySpec::new(family, nodes)
            };
            scratch.resize(spec.scratch_len(), 0.0);
            match Topology::new(spec, &mut scratch) {
                Ok(t) if static_only && t.is_time_varying() => {}
                Ok(t) => {
                    let p = cost::asap(&t, TARGET, job, net);
                    rows.push(Ranked {
                        kind: family.name().to_string(),
                        degree,
                        sends_per_round: cost::sends_per_round(&t),
                        spectral_gap: t.spectral_gap(),
                        rounds: p.rounds,
                        seconds_per_round: p.seconds_per_round,
                        seconds: p.seconds(),
                        bytes: p.bytes(),
                        refused: None,
                    });
                }
                Err(e) => rows.push(Ranked {
                    kind: family.name().to_string(),
                    degree,
                    sends_per_round: 0.0,
                    spectral_gap: 0.0,
                    rounds: u32::MAX,
                    seconds_per_round: f64::INFINITY,
                    seconds: f64::INFINITY,
                    bytes: f64::INFINITY,
                    refused: Some(e.to_string()),
                }),
            }
        }
    }
    let p = cost::allreduce(nodes, job, net);
    rows.push(Ranked {
        kind: "ring all-reduce".to_string(),
        degree: None,
        sends_per_round: 1.0,
        spectral_gap: 1.0,
        rounds: p.rounds,
        seconds_per_round: p.seconds_per_round,
        seconds: p.seconds(),
        bytes: p.bytes(),
        refused: None,
    });
    rows.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    rows
}

/// The `--rank` table.
pub fn rank_table(rows: &[Ranked]) -> String {
    let mut out = format!(
        "{:<16} {:>6} {:>6} {:>9} {:>9} {:>11} {:>11} {:>12}\n",
        "graph", "degree", "sends", "gap", "rounds", "ms/round", "s to 1e-6", "GB/node"
    );
    for r in rows {
        let degree = r.degree.map_or("-".to_string(), |d| d.to_string());
        if let Some(why) = &r.refused {
            out += &format!("{:<16} {:>6}  refused: {why}\n", r.kind, degree);
            continue;
        }
        out += &format!(
            "{:<16} {:>6} {:>6.2} {:>9.2e} {:>9} {:>11.2} {:>11.3} {:>12.3}\n",
            r.kind,
            degree,
            r.sends_per_round,
            r.spectral_gap,
            r.rounds,
            1e3 * r.seconds_per_round,
            r.seconds,
            r.bytes / 1e9
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{Job, Network};

    const JOB: Job = Job {
        model_bytes: 100e6,
        compute: 0.02,
    };
    const NET: Network = Network {
        bandwidth: 1.25e8,
        latency: 50e-6,
    };

    #[test]
    fn the_first_line_is_the_fastest_and_one_peer_exp_wins_at_one_send_a_round() {
        for n in [2u32, 3, 4, 5, 7, 8, 16, 17, 31, 32, 63, 64, 100, 128, 255, 256, 1024] {
            let rows = rank(n, 4, false, 0, &JOB, &NET);
            let fastest = rows.iter().map(|r| r.seconds).fold(f64::INFINITY, f64::min);
            assert_eq!(rows[0].seconds, fastest, "n = {n}");
            assert!(rows.iter().any(|r| r.kind == "ring all-reduce"));
            // Refused configurations are listed, after every working one.
            let first_refused = rows.iter().position(|r| r.refused.is_some()).unwrap_or(rows.len());
            assert!(rows[first_refused..].iter().all(|r| r.refused.is_some()), "n = {n}");
            if n.is_power_of_two() {
                // Among graphs sending one model a round, the fastest takes log2 n rounds
                // to the exact average, and the one-peer exponential graph is it (at n = 2
                // the ring ties with it).
                let one_send: Vec<&Ranked> = rows
                    .iter()
                    .filter(|r| r.refused.is_none() && r.kind != "ring all-reduce" && r.sends_per_round <= 1.0 + 1e-9)
                    .collect();
                assert_eq!(one_send[0].rounds, n.trailing_zeros(), "n = {n}");
                let ope = one_send
                    .iter()
                    .find(|r| r.kind == "one-peer-exp")
                    .expect("one-peer-exp listed");
                assert_eq!(
                    (ope.rounds, ope.seconds),
                    (one_send[0].rounds, one_send[0].seconds),
                    "n = {n}"
                );
            }
        }
    }

    #[test]
    fn static_only_leaves_out_time_varying_graphs() {
        let rows = rank(16, 2, true, 0, &JOB, &NET);
        assert!(rows.iter().all(|r| r.kind != "one-peer-exp"));
        assert!(rows.iter().any(|r| r.kind == "exp"));
    }
}
