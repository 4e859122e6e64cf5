//! Steady state allocates nothing: 1,000 rounds between nodes on a lossy, reordering
//! network (so retransmission, duplicate and timer paths run too) with a counting
//! global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use asap_core::auth::Key;
use asap_core::{Config, Duration, NodeId};
use asap_tests::{random_vectors, ring, Cluster, LinkModel};

struct Counting;

thread_local! {
    /// Only the test's own thread is counted (the test runner's threads allocate too,
    /// and tests run side by side).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Allocations counted on this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 8;
const MODEL: usize = 2_000;

#[test]
fn thousand_rounds_allocate_nothing() {
    thousand_rounds(|i| Config::new(1, NodeId(i as u16), MODEL));
}

#[test]
fn thousand_authenticated_and_encrypted_rounds_allocate_nothing() {
    for encrypt in [false, true] {
        thousand_rounds(|i| Config {
            key: Some(Key::new([9; 32])),
            encrypt,
            incarnation: 1,
            ..Config::new(1, NodeId(i as u16), MODEL)
        });
    }
}

fn thousand_rounds(config: impl Fn(usize) -> Config + Copy) {
    let mut memory = Cluster::memory(N, config, |i| ring(N, i).len());
    let link = LinkModel {
        loss: 0.05,
        duplicate: 0.02,
        delay: Duration::from_micros(300),
        jitter: Duration::from_millis(1),
    };
    let mut cluster = Cluster::new(
        &mut memory,
        config,
        |i| ring(N, i),
        random_vectors(N, MODEL, 7),
        link,
        7,
    );
    // The counter itself works.
    COUNTING.with(|c| c.set(true));
    std::hint::black_box(Box::new(1u64));
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.with(|a| a.replace(0)), 1, "the counting allocator counts");

    // Warm up: handshakes, first retransmissions.
    assert!(cluster.run_rounds(10, Duration::from_secs(60)));

    COUNTING.with(|c| c.set(true));
    let reached = cluster.run_rounds(1_010, Duration::from_secs(3_600));
    COUNTING.with(|c| c.set(false));

    assert!(reached, "1,000 rounds did not finish");
    let resent: u64 = cluster.nodes.iter().map(|n| n.stats().chunks_resent).sum();
    assert!(cluster.dropped > 0 && resent > 0, "the lossy paths ran");
    assert_eq!(ALLOCATIONS.with(Cell::get), 0, "allocations in steady state");
}
