//! Steady state allocates nothing: 1,000 rounds between nodes on a lossy, reordering
//! network (so retransmission, duplicate and timer paths run too) with a counting
//! global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use asap_core::{Config, Duration, NodeId};
use asap_tests::{random_vectors, ring, Cluster, LinkModel};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Only this test's thread is counted (the test runner's threads allocate too).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
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
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn thousand_rounds_allocate_nothing() {
    const N: usize = 8;
    const MODEL: usize = 2_000;
    let config = |i: usize| Config::new(1, NodeId(i as u16), MODEL);
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
    assert_eq!(
        ALLOCATIONS.swap(0, Ordering::Relaxed),
        1,
        "the counting allocator counts"
    );

    // Warm up: handshakes, first retransmissions.
    assert!(cluster.run_rounds(10, Duration::from_secs(60)));

    COUNTING.with(|c| c.set(true));
    let reached = cluster.run_rounds(1_010, Duration::from_secs(3_600));
    COUNTING.with(|c| c.set(false));

    assert!(reached, "1,000 rounds did not finish");
    let resent: u64 = cluster.nodes.iter().map(|n| n.stats().chunks_resent).sum();
    assert!(cluster.dropped > 0 && resent > 0, "the lossy paths ran");
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0, "allocations in steady state");
}
