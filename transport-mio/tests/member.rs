//! `Member`: members on threads of their own, over loopback, average models the
//! application lends them, in place.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use asap_core::topology::{Family, TopologySpec};
use asap_core::{CipherSuite, Compression, Wait};
use transport_mio::member::{Bound, Engine, Member, MemberError, MemberSpec, Transport};

fn spec(rank: u32, peers: &[SocketAddr], engine: Engine, transport: Transport) -> MemberSpec {
    MemberSpec {
        rank,
        peers: peers.to_vec(),
        engine,
        transport,
        topology: TopologySpec::new(Family::OnePeerExponential, peers.len() as u32),
        wait: Wait::All,
        cluster: 7,
        max_frame: transport.default_max_frame(),
        pace: None,
        round_timeout: Duration::from_secs(20),
        linger: Duration::from_millis(300),
        key: None,
        encrypt: false,
        cipher: CipherSuite::default(),
        compression: Compression::None,
        consensus_step: None,
        incarnation: 1,
        clip: None,
        identity: None,
        elastic: false,
        join: false,
    }
}

/// `world` members, bound on ephemeral loopback ports.
fn members(world: u32, engine: Engine, transport: Transport) -> Vec<Member> {
    let bound: Vec<Bound> = (0..world)
        .map(|_| match transport {
            Transport::Udp => Bound::Udp(UdpSocket::bind("127.0.0.1:0").unwrap()),
            Transport::Tcp => Bound::Tcp(TcpListener::bind("127.0.0.1:0").unwrap()),
        })
        .collect();
    let peers: Vec<SocketAddr> = bound
        .iter()
        .map(|b| match b {
            Bound::Udp(s) => s.local_addr().unwrap(),
            Bound::Tcp(l) => l.local_addr().unwrap(),
        })
        .collect();
    bound
        .into_iter()
        .enumerate()
        .map(|(rank, b)| Member::start(spec(rank as u32, &peers, engine, transport), b).unwrap())
        .collect()
}

/// Every member averages its seeded model `rounds` times on a thread of the test (as
/// each process's training loop would); returns the final models.
fn average_all(members: &[Member], len: usize, rounds: usize) -> Vec<Vec<f32>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(rank, m)| {
                s.spawn(move || {
                    let mut model = asap_fed::seeded::vector(3, rank as u32, len);
                    for _ in 0..rounds {
                        // The async form: submit, compute, wait.
                        let ticket = unsafe { m.submit(model.as_mut_ptr(), model.len()) }.unwrap();
                        ticket.wait().unwrap();
                    }
                    model
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The largest distance of any member's value to the exact mean of the seeded models.
fn max_error(models: &[Vec<f32>], len: usize) -> f64 {
    assert!(models.iter().all(|m| m.len() == len));
    models
        .iter()
        .map(|m| asap_fed::seeded::max_error_to_mean(m, 3, models.len() as u32))
        .fold(0.0, f64::max)
}

#[test]
fn members_on_their_own_threads_reach_the_exact_mean() {
    let len = 20_000;
    for (engine, transport) in [
        (Engine::Asap, Transport::Udp),
        (Engine::Asap, Transport::Tcp),
        (Engine::Allreduce, Transport::Udp),
    ] {
        let mut ms = members(4, engine, transport);
        // One-peer exp on 4 nodes averages exactly every 2 rounds; the ring every round.
        let models = average_all(&ms, len, 4);
        let err = max_error(&models, len);
        assert!(err < 1e-5, "{engine:?} over {transport:?}: {err}");
        for m in &ms {
            assert_eq!(m.stats().engine.rounds, 4);
            assert!(m.stats().engine.bytes_sent > 0);
        }
        for m in &mut ms {
            m.shutdown().unwrap();
        }
    }
}

#[test]
fn a_model_of_another_length_is_refused_and_shutdown_is_idempotent() {
    let mut ms = members(2, Engine::Asap, Transport::Udp);
    let models = average_all(&ms, 1_000, 1);
    assert!(max_error(&models, 1_000) < 1e-5);
    let mut other = vec![0.0f32; 999];
    assert_eq!(
        ms[0].average(&mut other),
        Err(MemberError::ModelLength {
            expected: 1_000,
            got: 999
        })
    );
    for m in &mut ms {
        m.shutdown().unwrap();
        m.shutdown().unwrap();
    }
    let mut model = vec![0.0f32; 1_000];
    assert!(matches!(ms[0].average(&mut model), Err(MemberError::Stopped(_))));
}

#[test]
fn a_bad_configuration_is_refused_at_start() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peers = [socket.local_addr().unwrap(), "127.0.0.1:9".parse().unwrap()];
    let mut bad = spec(0, &peers, Engine::Asap, Transport::Udp);
    // Compression needs every in-neighbour's update each round.
    bad.compression = Compression::Q8;
    bad.wait = Wait::None;
    let err = Member::start(bad, Bound::Udp(socket)).err().expect("refused");
    assert!(!err.is_empty());
}

#[test]
fn a_member_that_never_averaged_shuts_down_at_once() {
    let mut ms = members(2, Engine::Asap, Transport::Udp);
    for m in &mut ms {
        m.shutdown().unwrap();
    }
    assert_eq!(ms[1].take_events(), vec![]);
}
