//! Elastic membership on an in-memory network: members absent at the start, joining a
//! running cluster, leaving it. Frames are delivered at once, in order; each node runs
//! its rounds back to back.

mod common;

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Config, Instant, Node, NodeId};
use common::Mem;

const MODEL: usize = 300;

struct Member {
    node: Option<Node<'static, 8>>,
    params: Vec<f32>,
    rounds: u32,
}

fn config(id: u16, join: bool) -> Config {
    Config {
        max_frame: 512,
        elastic: join || std::env::var_os("PLAIN").is_none(),
        join,
        ..Config::new(9, NodeId(id), MODEL)
    }
}

fn build(topology: &Topology, id: u16, join: bool) -> Node<'static, 8> {
    let c = config(id, join);
    let mem: &'static mut Mem = Box::leak(Box::new(Mem::new(&c, topology.peers_of(u32::from(id)).count())));
    Node::with_topology(c, topology, mem.buffers(), Instant::ZERO).unwrap()
}

/// Steps every present member (start, finish, deliver) until `done` or no progress.
/// Frames arrive 1 to 8 steps after they are sent (seeded); a member "computes" `slow`
/// steps between rounds.
fn run(members: &mut [Member], until: impl Fn(&[Member]) -> bool, now: &mut Instant, seed: &mut u64) -> bool {
    run_holding(members, until, now, seed, u32::MAX)
}

/// As [`run`], no member starting a round from round `stop_at` on.
#[allow(clippy::needless_range_loop)] // `members[i]` is borrowed while others are indexed
fn run_holding(
    members: &mut [Member],
    until: impl Fn(&[Member]) -> bool,
    now: &mut Instant,
    seed: &mut u64,
    stop_at: u32,
) -> bool {
    let mut buf = vec![0u8; 512];
    let mut flight: Vec<(u64, NodeId, Vec<u8>)> = Vec::new();
    let mut step = 0u64;
    for _ in 0..200_000 {
        if until(members) {
            return true;
        }
        step += 1;
        *now = *now + asap_core::Duration::from_micros(100);
        for i in 0..members.len() {
            let m = &mut members[i];
            let Some(node) = m.node.as_mut() else { continue };
            node.handle_timeout(*now);
            if node.round() < stop_at
                && !node.is_started()
                && node.can_start_round().is_ok()
                && step.is_multiple_of(1 + i as u64 % 3)
            {
                node.start_round(*now, &m.params).unwrap();
            }
            if node.is_started() && node.is_ready() {
                node.finish_round(*now, &mut m.params).unwrap();
                if node.has_model() {
                    m.rounds += 1;
                }
            }
            while let Some(t) = node.poll_transmit(*now, &mut buf).unwrap() {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                flight.push((step + 1 + (*seed >> 61), t.to, buf[..t.len].to_vec()));
            }
            while node.poll_event().is_some() {}
        }
        let (due, later): (Vec<_>, Vec<_>) = flight.drain(..).partition(|f| f.0 <= step);
        flight = later;
        for (_, to, bytes) in due {
            if let Some(peer) = members[to.0 as usize].node.as_mut() {
                let _ = peer.handle_frame(*now, &bytes);
            }
        }
    }
    false
}

fn dump(members: &[Member]) {
    for m in members {
        if let Some(n) = &m.node {
            eprintln!(
                "node {:?}: round {} started {} ready {} can_start {:?} mass {} stats {:?}",
                n.id(),
                n.round(),
                n.is_started(),
                n.is_ready(),
                n.can_start_round(),
                n.mass(),
                n.stats()
            );
            if std::env::var_os("DUMP").is_some() {
                eprintln!("{n:#?}");
            }
        }
    }
}

/// The largest distance of a present member's replica from `target`.
fn error(members: &[Member], target: &[f64]) -> f64 {
    members
        .iter()
        .filter(|m| m.node.as_ref().is_some_and(|n| n.has_model() && !n.has_left()))
        .flat_map(|m| m.params.iter().zip(target).map(|(x, t)| (f64::from(*x) - t).abs()))
        .fold(0.0, f64::max)
}

fn cluster(topology: &Topology, n: u16, absent: &[u16]) -> Vec<Member> {
    (0..n)
        .map(|id| Member {
            node: (!absent.contains(&id)).then(|| build(topology, id, false)),
            params: (0..MODEL).map(|k| f32::from(id) + k as f32 / 1000.0).collect(),
            rounds: 0,
        })
        .collect()
}

fn mean(members: &[Member], ids: impl Iterator<Item = usize> + Clone) -> Vec<f64> {
    let n = ids.clone().count() as f64;
    (0..MODEL)
        .map(|k| ids.clone().map(|i| f64::from(members[i].params[k])).sum::<f64>() / n)
        .collect()
}

/// A fifth member joins at round 50 of the four founders: it takes their model (no
/// mass of its own), so the founders' average does not move, and all five end on it.
#[test]
fn a_member_joins_at_round_50_and_ends_on_the_founders_average() {
    for family in [Family::OnePeerExponential, Family::Exponential] {
        for case in 1..=10u64 {
            let mut seed = case;
            let spec = TopologySpec::new(family, 5);
            let topology = Topology::new(spec, &mut vec![0.0; spec.scratch_len()]).unwrap();
            let mut members = cluster(&topology, 5, &[4]);
            let founders = mean(&members, 0..4);
            let mut now = Instant::ZERO;
            let founded = run(
                &mut members,
                |m| m[..4].iter().all(|m| m.rounds >= 50),
                &mut now,
                &mut seed,
            );
            if !founded {
                dump(&members);
            }
            assert!(founded, "{family:?} case {case}: the founders stalled");
            if std::env::var_os("DIAG").is_some() {
                let w: f64 = members[..4]
                    .iter()
                    .map(|m| m.node.as_ref().unwrap().mass_at(0) * f64::from(m.params[0]))
                    .sum::<f64>();
                let ms: Vec<f64> = members[..4]
                    .iter()
                    .map(|m| m.node.as_ref().unwrap().mass_at(0))
                    .collect();
                let ps: Vec<f32> = members[..4].iter().map(|m| m.params[0]).collect();
                let st: Vec<_> = members[..4]
                    .iter()
                    .map(|m| m.node.as_ref().unwrap().stats().late)
                    .collect();
                eprintln!(
                    "case {case}: after 50: numerator/4 {} target {} masses {ms:?} params {ps:?} late {st:?}",
                    w / 4.0,
                    founders[0]
                );
            }
            members[4].node = Some(build(&topology, 4, true));
            let ran = run(&mut members, |m| m.iter().all(|m| m.rounds >= 150), &mut now, &mut seed);
            let rounds: Vec<u32> = members.iter().map(|m| m.rounds).collect();
            if !ran {
                dump(&members);
            }
            assert!(ran, "{family:?} case {case}: stalled at rounds {rounds:?}");
            let err = error(&members, &founders);
            assert!(err < 1e-5, "{family:?} case {case}: {err:e} from the founders' average");
        }
    }
}

/// The mass-weighted mean of the members `ids` (what push-sum converges to).
fn weighted_mean(members: &[Member], ids: &[usize]) -> Vec<f64> {
    (0..MODEL)
        .map(|k| {
            let node = |i: usize| members[i].node.as_ref().expect("present");
            let mass: f64 = ids.iter().map(|&i| node(i).mass_at(k)).sum();
            ids.iter()
                .map(|&i| node(i).mass_at(k) * f64::from(members[i].params[k]))
                .sum::<f64>()
                / mass
        })
        .collect()
}

/// A member of 8 (or 12) on a ring leaves at round 30, before the replicas agree: once it is
/// gone the others converge to the mass-weighted mean of those present when it left
/// (taken with nothing in flight: every round finished and every update mixed; by
/// round 30 the start-up, when members caught up to each other's rounds and mixed
/// updates of rounds they passed a round late, is long over).
#[test]
fn a_member_that_leaves_stops_counting_and_the_rest_converge_to_their_mean() {
    for n in [8usize, 12] {
        for case in 1..=10u64 {
            let mut seed = case;
            let spec = TopologySpec::new(Family::Ring, n as u32);
            let topology = Topology::new(spec, &mut vec![0.0; spec.scratch_len()]).unwrap();
            let mut members = cluster(&topology, n as u16, &[]);
            let mut now = Instant::ZERO;
            let quiet = |m: &[Member]| {
                m.iter()
                    .all(|m| m.node.as_ref().is_some_and(|n| n.round() == 30 && !n.is_started()))
            };
            let held = run_holding(&mut members, quiet, &mut now, &mut seed, 30);
            if !held {
                dump(&members);
            }
            assert!(held, "n={n} case {case}: no quiet point at round 30");
            // Whatever is still in flight (acknowledgements) lands: 500 more steps.
            let steps = std::cell::Cell::new(0);
            let settled = |_: &[Member]| {
                steps.set(steps.get() + 1);
                steps.get() > 500
            };
            run_holding(&mut members, settled, &mut now, &mut seed, 30);
            let rest: Vec<usize> = (0..n).filter(|&i| i != 2).collect();
            let target = weighted_mean(&members, &rest);
            let spread = rest
                .iter()
                .flat_map(|&i| {
                    members[i]
                        .params
                        .iter()
                        .zip(&target)
                        .map(|(x, t)| (f64::from(*x) - t).abs())
                })
                .fold(0.0, f64::max);
            assert!(spread > 1e-3, "n={n} case {case}: agreed already ({spread:e})");
            let mut buf = vec![0u8; 512];
            let leaver = members[2].node.as_mut().unwrap();
            leaver.leave(now);
            let mut goodbyes = Vec::new();
            while let Some(t) = leaver.poll_transmit(now, &mut buf).unwrap() {
                goodbyes.push((t.to, buf[..t.len].to_vec()));
            }
            members[2].node = None;
            for (to, bytes) in goodbyes {
                if let Some(peer) = members[to.0 as usize].node.as_mut() {
                    let _ = peer.handle_frame(now, &bytes);
                }
            }
            let ran = run(
                &mut members,
                |m| rest.iter().all(|&i| m[i].rounds >= 800),
                &mut now,
                &mut seed,
            );
            assert!(ran, "n={n} case {case}: the rest stalled");
            // Values here reach 12: 1e-5 relative to them (f32 values and masses).
            let scale = target.iter().fold(1.0f64, |m, t| m.max(t.abs()));
            let err = error(&members, &target);
            assert!(
                err < 1e-5 * scale,
                "n={n} case {case}: {err:e} from the mean of those present"
            );
        }
    }
}
