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
    let mut scratch = vec![0.0; 3 * spec.nodes.max(2) as usize];
    let t = Topology::new(spec, &mut scratch)?;
    let rounds_predicted = t.predicted_rounds(TARGET);
    let rounds_measured = t.measured_rounds(TARGET, limit, &mut scratch);
    let n = u64::from(t.nodes());
    // Average destinations per node and round over a period (Random varies by node).
    let sends: u64 = (0..t.period())
        .flat_map(|r| (0..t.nodes()).map(move |i| (i, r)))
        .map(|(i, r)| t.out_neighbours(i, r).count() as u64)
        .sum();
    let per_round = sends * model_bytes / (n * u64::from(t.period()));
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
