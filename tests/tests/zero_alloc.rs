//! Steady state allocates nothing: 1,000 rounds between nodes on a lossy, duplicating,
//! reordering network (so retransmission, duplicate and timer paths run too), plain,
//! authenticated and encrypted, with a counting global allocator. What is counted is
//! everything the thread does: the nodes, and the simulator that drives them and checks
//! its invariants as it goes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use asap_core::auth::Key;
use asap_core::topology::Family;
use asap_core::Duration;
use asap_tests::sim::{Network, Scenario, Sim};

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

const N: u32 = 8;
const MODEL: usize = 2_000;

#[test]
fn thousand_rounds_allocate_nothing() {
    thousand_rounds(None, false);
}

#[test]
fn thousand_authenticated_and_encrypted_rounds_allocate_nothing() {
    for encrypt in [false, true] {
        thousand_rounds(Some(Key::new([9; 32])), encrypt);
    }
}

fn thousand_rounds(key: Option<Key>, encrypt: bool) {
    let scenario = Scenario {
        model_len: MODEL,
        // Reports are reserved for this many rounds.
        rounds: 1_010,
        max_frame: 1_400,
        compute: Duration::ZERO,
        key,
        encrypt,
        network: Network {
            loss: 0.05,
            duplicate: 0.02,
            latency: Duration::from_micros(300),
            jitter: Duration::from_millis(1),
            bandwidth: None,
        },
        ..Scenario::new(7, N, Family::Ring)
    };
    let mut sim = Sim::new(scenario).expect("a valid scenario");
    // The counter itself works.
    COUNTING.with(|c| c.set(true));
    std::hint::black_box(Box::new(1u64));
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.with(|a| a.replace(0)), 1, "the counting allocator counts");

    // Warm up: handshakes, first retransmissions.
    sim.run_until(10).unwrap_or_else(|v| panic!("{v}"));

    COUNTING.with(|c| c.set(true));
    let reached = sim.run_until(1_010);
    COUNTING.with(|c| c.set(false));

    reached.unwrap_or_else(|v| panic!("1,000 rounds did not finish: {v}"));
    let resent: u64 = sim.nodes().map(|n| n.stats().chunks_resent).sum();
    let duplicates: u64 = sim.nodes().map(|n| n.stats().duplicates).sum();
    assert!(
        sim.report().dropped > 0 && resent > 0 && duplicates > 0,
        "the lossy paths ran"
    );
    assert_eq!(ALLOCATIONS.with(Cell::get), 0, "allocations in steady state");
}
