//! Graph families: connectivity, closed-form gaps, the gap against a dense eigen-
//! decomposition (nalgebra), contraction bounds, one-peer exactness, schedule agreement
//! and refused configurations.

use asap_core::topology::{Family, Topology, TopologyError, TopologySpec};
use nalgebra::DMatrix;
use proptest::prelude::*;

fn build(family: Family, n: u32, degree: Option<u32>) -> Result<Topology, TopologyError> {
    let spec = TopologySpec {
        degree,
        ..TopologySpec::new(family, n)
    };
    Topology::new(spec, &mut vec![0.0; spec.scratch_len()])
}

fn log2_ceil(n: u32) -> u32 {
    32 - (n - 1).leading_zeros()
}

/// The dense mixing matrix of `round`: column j holds node j's shares.
fn dense(t: &Topology, round: u32) -> DMatrix<f64> {
    let n = t.nodes() as usize;
    let mut w = DMatrix::zeros(n, n);
    for j in 0..t.nodes() {
        for i in t.out_neighbours(j, round) {
            w[(i as usize, j as usize)] += t.edge_weight(j, i, round);
        }
        // What is not sent stays (the self share, and self-loops' shares).
        let sent: f64 = t.out_neighbours(j, round).map(|i| t.edge_weight(j, i, round)).sum();
        w[(j as usize, j as usize)] = 1.0 - sent;
    }
    w
}

/// Second-largest eigenvalue modulus of one period's product, per round.
fn dense_contraction(t: &Topology) -> f64 {
    let n = t.nodes() as usize;
    let mut p = DMatrix::identity(n, n);
    for r in 0..t.period() {
        p = dense(t, r) * p;
    }
    let mut moduli: Vec<f64> = if p == p.transpose() {
        p.symmetric_eigenvalues().iter().map(|v| v.abs()).collect()
    } else {
        p.complex_eigenvalues().iter().map(|v| v.norm()).collect()
    };
    moduli.sort_by(|a, b| b.total_cmp(a));
    assert!((moduli[0] - 1.0).abs() < 1e-9, "the average is a fixed point");
    moduli[1].powf(1.0 / f64::from(t.period()))
}

#[test]
fn dstorm_families_connect_at_log_degree_for_every_n_to_1024() {
    for n in 2..=1024u32 {
        let d = log2_ceil(n).min(n - 1);
        for family in [Family::Halton, Family::Chord, Family::AllLimited] {
            let t = build(family, n, Some(d)).unwrap_or_else(|e| panic!("{family} n={n} d={d}: {e}"));
            assert!(t.spectral_gap() > 0.0);
        }
        build(Family::Halton, n, Some(1)).unwrap_or_else(|e| panic!("halton n={n} d=1: {e}"));
    }
}

/// MALT-2's `IoNetHalton` rule, worked by hand: offsets `⌊n·h(i)⌋` for `degree`
/// indices from `i = 2^⌊log2 n⌋ / 2`, wrapping to 1 after `n`; self-loops (0) and
/// repeats dropped but counted.
#[test]
fn halton_is_the_reference_graph() {
    for (n, degree, offsets) in [
        // 2^⌊log2 2⌋ / 2 = 1: h(1) = 1/2.
        (2u32, 1u32, &[1u32][..]),
        // h(1), h(2) = 1/2, 1/4: 1, then 0 (a self-loop, counted).
        (3, 2, &[1]),
        // From i = 2: h = 1/4, 3/4, 1/8, 5/8 → 1, 3, 0 (self), 3 (repeat).
        (5, 4, &[1, 3]),
        // From i = 4: h = 1/8, 5/8, 3/8.
        (8, 3, &[1, 5, 3]),
        // From i = 4: 1/8, 5/8, 3/8, 7/8, 1/16 (→ 0), 9/16, 5/16, 13/16, 3/16 (i = 12 = n),
        // then wrapped: 1/2 (→ 6, a repeat), 1/4 (→ 3, a repeat).
        (12, 11, &[1, 7, 4, 10, 6, 3, 9, 2]),
        // From i = 8: 1/16, 9/16, 5/16, 13/16.
        (16, 4, &[1, 9, 5, 13]),
        // From i = 128: 1/256 + h(j) for j = 0..8, all ≡ 1 mod 32.
        (256, 8, &[1, 129, 65, 193, 33, 161, 97, 225]),
    ] {
        let t = build(Family::Halton, n, Some(degree)).unwrap();
        assert_eq!(t.degree() as usize, offsets.len(), "n={n} degree={degree}");
        for i in 0..n {
            let expected: Vec<u32> = offsets.iter().map(|o| (i + o) % n).collect();
            assert_eq!(t.out_neighbours(i, 0).collect::<Vec<_>>(), expected, "n={n} node {i}");
        }
    }

    // Every size to 300 and every degree, against the rule computed another way (the
    // radical inverse digit by digit, in f64, exact here).
    let radical_inverse = |mut i: u32| {
        let (mut h, mut f) = (0.0, 0.5);
        while i > 0 {
            h += f * f64::from(i % 2);
            i /= 2;
            f /= 2.0;
        }
        h
    };
    for n in 2..=300u32 {
        let first = (1u32 << n.ilog2()) / 2; // the index whose point is 2^-⌊log2 n⌋
        for degree in 1..=(n - 1).min(32) {
            let mut expected: Vec<u32> = Vec::new();
            for r in 0..degree {
                let i = (first - 1 + r) % n + 1;
                let o = (f64::from(n) * radical_inverse(i)).floor() as u32;
                if o != 0 && !expected.contains(&o) {
                    expected.push(o);
                }
            }
            let t = build(Family::Halton, n, Some(degree)).unwrap();
            assert_eq!(
                t.out_neighbours(0, 0).collect::<Vec<_>>(),
                expected,
                "n={n} degree={degree}"
            );
            assert!(t.spectral_gap() > 0.0);
        }
    }

    // n = 16, degree 4: offsets 1 + 4k, so W's eigenvalues are 1/5 except at k = 4, 8, 12:
    // (1 + 4·e^{iπk/8}) / 5, of modulus √17 / 5 at k = 4 and 12. Gap 1 - √17/5 ≈ 0.175
    // (the previous, value-rotated graph had offsets 1, 13, 5, 11 and gap 0.4).
    let t = build(Family::Halton, 16, Some(4)).unwrap();
    let exact = 1.0 - 17f64.sqrt() / 5.0;
    assert!((t.spectral_gap() - exact).abs() < 1e-12, "{}", t.spectral_gap());
    assert!((t.spectral_gap() - 0.175).abs() < 5e-4);
    assert!((dense_contraction(&t) - (1.0 - exact)).abs() < 1e-9);

    // A send list, not an undirected graph: 0 sends to 1 but 1 does not send to 0; the
    // receive list is the offsets backwards. Uniform weights 1/(d+1) on a regular
    // digraph: every row and column of W sums to 1, so no push-sum.
    assert!(t.edge_weight(0, 1, 0) > 0.0 && t.edge_weight(1, 0, 0) == 0.0);
    assert_eq!(t.in_neighbours(0, 0).collect::<Vec<_>>(), [3, 7, 11, 15]);
    assert!(!t.needs_push_sum());
    let w = dense(&t, 0);
    assert!(w != w.transpose());
    for k in 0..16 {
        assert!((w.row(k).sum() - 1.0).abs() < 1e-12 && (w.column(k).sum() - 1.0).abs() < 1e-12);
        assert!(w.column(k).iter().all(|&x| x == 0.0 || (x - 0.2).abs() < 1e-15));
    }
}

#[test]
fn random_graphs_connect_at_log_degree() {
    // Every size to 128, then a sample (the push-sum gap costs O(n^2) a round to
    // measure). By construction node i always sends to i + 1, so the graph contains the
    // ring and is strongly connected at every size; the assertion below checks it.
    for n in (2..=128u32).chain([200, 255, 256, 511, 512, 777, 1000, 1023, 1024]) {
        let d = log2_ceil(n).min(n - 1);
        let t = build(Family::Random, n, Some(d)).unwrap_or_else(|e| panic!("random n={n}: {e}"));
        assert!(t.spectral_gap() > 0.0, "n={n}");
        assert!(
            (0..n).all(|i| t.out_neighbours(i, 0).any(|j| j == (i + 1) % n)),
            "n={n}: ring missing"
        );
    }
}

#[test]
fn closed_form_gaps() {
    for n in [3u32, 5, 8, 16, 64, 100, 1024] {
        let expected = 1.0 - (1.0 + 2.0 * (2.0 * std::f64::consts::PI / f64::from(n)).cos()) / 3.0;
        let ring = build(Family::Ring, n, None).unwrap();
        assert!((ring.spectral_gap() - expected).abs() < 1e-9, "ring {n}");
        // Complete graph with uniform weights is the all-reduce: W = J, gap 1.
        assert!((build(Family::Complete, n, None).unwrap().spectral_gap() - 1.0).abs() < 1e-9);
    }
    for m in 1..=10u32 {
        // Hypercube eigenvalues 1 - 2k/(m+1): the gap is 2/(m+1) (m = 1: two nodes, exact).
        let t = build(Family::Hypercube, 1 << m, None).unwrap();
        let expected = if m == 1 { 1.0 } else { 2.0 / f64::from(m + 1) };
        assert!((t.spectral_gap() - expected).abs() < 1e-9, "hypercube 2^{m}");
    }
    for n in [4u32, 8, 16, 32, 64] {
        // Static exponential graph: eigenvalues (1 + Σ_k e^{2πi·2^k·j/n}) / (log2 n + 1).
        let t = build(Family::Exponential, n, None).unwrap();
        let l = log2_ceil(n);
        let rho = (1..n)
            .map(|j| {
                let (mut re, mut im) = (1.0, 0.0);
                for k in 0..l {
                    let th = 2.0 * std::f64::consts::PI * f64::from(1u32 << k) * f64::from(j) / f64::from(n);
                    re += th.cos();
                    im += th.sin();
                }
                (re * re + im * im).sqrt() / f64::from(l + 1)
            })
            .fold(0.0, f64::max);
        assert!((t.spectral_gap() - (1.0 - rho)).abs() < 1e-9, "exp {n}");
    }
}

#[test]
fn gaps_match_dense_eigenvalues() {
    for n in [8u32, 9, 16, 25, 30, 64] {
        for family in Family::ALL {
            if family == Family::Random {
                continue; // push-sum: not a doubly stochastic operator (checked below)
            }
            let Ok(t) = build(family, n, None) else { continue };
            let dense = dense_contraction(&t);
            // Closed forms are exact; power iteration (expander) converges to ~1e-9.
            // Compared per period: a product that is exactly the average has rounding
            // noise of 1e-16 whose per-round root is 1e-6.
            let tol = if family == Family::Expander { 1e-6 } else { 1e-9 };
            let p = t.period() as i32;
            let ours = (1.0 - t.spectral_gap()).powi(p);
            assert!(
                (ours - dense.powi(p)).abs() < tol,
                "{family} n={n}: {ours} vs {}",
                dense.powi(p)
            );
        }
    }
}

#[test]
fn consensus_error_never_exceeds_the_gap_bound() {
    for n in [8u32, 64, 256] {
        for family in Family::ALL {
            let Ok(t) = build(family, n, None) else { continue };
            let rho = 1.0 - t.spectral_gap();
            let nn = n as usize;
            let mut x: Vec<f64> = (0..nn).map(|i| ((i * 7919) % 101) as f64 / 101.0).collect();
            let mut mass = vec![1.0; nn];
            let mut next = vec![0.0; nn];
            let mean = x.iter().sum::<f64>() / f64::from(n);
            let err = |x: &[f64], m: &[f64]| x.iter().zip(m).map(|(v, w)| (v / w - mean).powi(2)).sum::<f64>().sqrt();
            let e0 = err(&x, &mass);
            // Push-sum converges at the asymptotic rate after a transient: allow a constant.
            let c = if t.needs_push_sum() { 10.0 } else { 1.0 + 1e-9 };
            let period = t.period();
            for round in 0..(40 * period) {
                t.mix_into(round, &x, &mut next);
                std::mem::swap(&mut x, &mut next);
                t.mix_into(round, &mass, &mut next);
                std::mem::swap(&mut mass, &mut next);
                if (round + 1) % period == 0 {
                    let bound = c * rho.powi((round + 1) as i32) * e0 + 1e-12;
                    assert!(
                        err(&x, &mass) <= bound,
                        "{family} n={n} round {round}: {} > {bound}",
                        err(&x, &mass)
                    );
                }
            }
        }
    }
}

#[test]
fn one_peer_exponential_averages_exactly_in_log_n_rounds() {
    for m in 1..=10u32 {
        let n = 1u32 << m;
        let t = build(Family::OnePeerExponential, n, None).unwrap();
        let mut scratch = vec![0.0; t.scratch_len()];
        assert_eq!(t.measured_rounds(1e-6, 1_000, &mut scratch), Some(m), "n={n}");
        assert_eq!(t.predicted_rounds(1e-6), m);
    }
    // Not a power of two: still converges, not in one period.
    let t = build(Family::OnePeerExponential, 1000, None).unwrap();
    let mut scratch = vec![0.0; t.scratch_len()];
    let rounds = t.measured_rounds(1e-6, 10_000, &mut scratch).unwrap();
    assert!(rounds > 10 && rounds < 200, "{rounds}");
}

#[test]
fn measured_rounds_agree_with_prediction() {
    for family in [
        Family::Ring,
        Family::Torus,
        Family::Exponential,
        Family::Expander,
        Family::Halton,
    ] {
        let t = build(family, 64, None).unwrap();
        let mut scratch = vec![0.0; t.scratch_len()];
        let measured = f64::from(t.measured_rounds(1e-6, 100_000, &mut scratch).unwrap());
        let predicted = f64::from(t.predicted_rounds(1e-6));
        // The gap bounds the 2-norm; the max-norm measure differs by a modest factor.
        assert!(
            measured <= predicted * 1.5 + 5.0 && measured >= predicted * 0.5 - 5.0,
            "{family}: {measured} vs {predicted}"
        );
    }
}

#[test]
fn refused_configurations() {
    let err = |family, n, degree| build(family, n, degree).unwrap_err();
    assert_eq!(err(Family::Ring, 1, None), TopologyError::Nodes(1));
    assert_eq!(err(Family::Hypercube, 12, None), TopologyError::NotPowerOfTwo(12));
    assert_eq!(err(Family::Torus, 7, None), TopologyError::TorusShape(7));
    assert_eq!(err(Family::Torus, 8, None), TopologyError::TorusShape(8));
    assert_eq!(err(Family::AllLimited, 8, Some(8)), TopologyError::Degree(8));
    assert_eq!(err(Family::Halton, 8, Some(0)), TopologyError::Degree(0));
    assert_eq!(
        err(Family::Expander, 9, Some(3)),
        TopologyError::OddRegular { nodes: 9, degree: 3 }
    );
    let mut scratch = vec![0.0; 3 * 16];
    let spec = TopologySpec {
        max_send: Some(0),
        ..TopologySpec::new(Family::Ring, 16)
    };
    assert_eq!(Topology::new(spec, &mut scratch).unwrap_err(), TopologyError::MaxSend);
    // Chord limited to its first two offsets (n/2, n/4) never reaches odd nodes.
    let spec = TopologySpec {
        max_send: Some(2),
        ..TopologySpec::new(Family::Chord, 16)
    };
    assert!(matches!(
        Topology::new(spec, &mut scratch),
        Err(TopologyError::GapTooSmall { .. })
    ));
    let spec = TopologySpec {
        degree: Some(2),
        ..TopologySpec::new(Family::Chord, 16)
    };
    assert!(matches!(
        Topology::new(spec, &mut scratch),
        Err(TopologyError::GapTooSmall { .. })
    ));
    assert_eq!(
        Topology::new(TopologySpec::new(Family::Ring, 16), &mut [0.0; 4]).unwrap_err(),
        TopologyError::Scratch(48)
    );
    // A graph that mixes too slowly for a demanding threshold.
    let spec = TopologySpec {
        min_gap: 0.1,
        ..TopologySpec::new(Family::Ring, 64)
    };
    assert!(matches!(
        Topology::new(spec, &mut vec![0.0; 192]),
        Err(TopologyError::GapTooSmall { .. })
    ));
}

#[test]
fn the_spec_tells_the_scratch_length_before_building() {
    // Sizes of every shape: the smallest, odd, prime, squares (tori), powers of two
    // (hypercubes), and a random graph's measured size.
    let mut built = 0;
    for family in Family::ALL {
        for n in [2u32, 3, 5, 9, 16, 17, 64, 100, 257] {
            let spec = TopologySpec::new(family, n);
            let Ok(t) = Topology::new(spec, &mut vec![0.0; spec.scratch_len()]) else {
                continue; // a torus of 5, a hypercube of 17...
            };
            assert_eq!(spec.scratch_len(), t.scratch_len(), "{family} n={n}");
            // Exactly enough: one value fewer is refused, and says the length.
            if spec.scratch_len() > 0 {
                assert_eq!(
                    Topology::new(spec, &mut vec![0.0; spec.scratch_len() - 1]),
                    Err(TopologyError::Scratch(spec.scratch_len())),
                    "{family} n={n}"
                );
            }
            built += 1;
        }
    }
    assert!(built >= 80, "{built} topologies built");
    // In a const context, for a static buffer; saturating for node counts `new` refuses.
    const SCRATCH: [f64; TopologySpec::new(Family::Exponential, 8).scratch_len()] = [0.0; 24];
    assert_eq!(SCRATCH.len(), 24);
    let huge = TopologySpec::new(Family::Ring, u32::MAX).scratch_len();
    assert_eq!(huge, usize::try_from(3 * u64::from(u32::MAX)).unwrap_or(usize::MAX));
}

#[test]
fn max_send_reports_the_gap_of_what_is_sent() {
    let full = build(Family::Halton, 64, Some(6)).unwrap();
    let mut scratch = vec![0.0; 192];
    let spec = TopologySpec {
        degree: Some(6),
        max_send: Some(2),
        ..TopologySpec::new(Family::Halton, 64)
    };
    let limited = Topology::new(spec, &mut scratch).unwrap();
    assert_eq!(limited.send_degree(0), 2);
    assert_eq!(
        limited.out_neighbours(5, 0).collect::<Vec<_>>(),
        full.out_neighbours(5, 0).take(2).collect::<Vec<_>>()
    );
    assert!(limited.spectral_gap() < full.spectral_gap());
}

proptest! {
    /// Two nodes building the same spec agree on every send and receive list, and the
    /// receive lists are exactly the transposed send lists.
    #[test]
    fn every_node_computes_the_same_schedule(
        family in prop::sample::select(Family::ALL.to_vec()),
        n in 2u32..80,
        seed in any::<u64>(),
        round in any::<u32>(),
    ) {
        let spec = TopologySpec { seed, ..TopologySpec::new(family, n) };
        let (mut s1, mut s2) = (vec![0.0; spec.scratch_len()], vec![0.0; spec.scratch_len()]);
        let (a, b) = (Topology::new(spec, &mut s1), Topology::new(spec, &mut s2));
        prop_assert_eq!(&a, &b);
        let Ok(t) = a else { return Ok(()) };
        for i in 0..n {
            let out: Vec<u32> = t.out_neighbours(i, round).collect();
            prop_assert_eq!(&out, &b.as_ref().unwrap().out_neighbours(i, round).collect::<Vec<_>>());
            prop_assert!(out.iter().all(|&j| j < n && j != i), "{:?}", out);
            let mut dedup = out.clone();
            dedup.sort_unstable();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), out.len(), "no duplicate destinations");
            match family {
                Family::Random => prop_assert!(!out.is_empty()),
                // Self-loops and parallel edges merge.
                Family::Expander => prop_assert!(out.len() as u32 <= t.send_degree(round)),
                _ => prop_assert_eq!(out.len() as u32, t.send_degree(round)),
            }
            let total: f64 = out.iter().map(|&j| t.edge_weight(i, j, round)).sum::<f64>() + t.weight(i, round);
            prop_assert!(total <= 1.0 + 1e-12, "shares add up to at most 1");
            for j in t.in_neighbours(i, round) {
                prop_assert!(t.out_neighbours(j, round).any(|k| k == i));
            }
        }
    }
}
