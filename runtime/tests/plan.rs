//! Memory planner: hand-made cases with known optimal answers and a randomized property test.

use kiln_runtime::plan::{plan, Buffer};

fn buf(size: usize, first: usize, last: usize) -> Buffer {
    Buffer {
        size,
        align: 1,
        first,
        last,
    }
}

#[test]
fn empty_input_needs_no_arena() {
    let p = plan(&[]);
    assert!(p.offsets.is_empty());
    assert_eq!(p.arena_size, 0);
}

#[test]
fn chain_reuses_memory_two_steps_later() {
    // a -> b -> c: a and c are never live together, so they share bytes; the optimum is the
    // largest pair that is live at once, 200 bytes, rounded up to 256.
    let p = plan(&[buf(100, 0, 1), buf(100, 1, 2), buf(100, 2, 3)]);
    assert_eq!(p.offsets, vec![0, 100, 0]);
    assert_eq!(p.arena_size, 256);
}

#[test]
fn all_live_at_once_are_stacked_largest_first() {
    let p = plan(&[buf(64, 0, 5), buf(128, 0, 5), buf(32, 0, 5)]);
    assert_eq!(p.offsets, vec![128, 0, 192]);
    assert_eq!(p.arena_size, 256);
}

#[test]
fn small_buffer_fills_the_gap_between_big_ones() {
    // Step:     0    1    2    3
    // a 1000:   [=========]
    // b 1000:             [=========]   (disjoint from a: same offset)
    // c  500:        [=========]        (overlaps both)
    // d  100:   [===================]   (overlaps everything)
    // Step 1 has a + c + d = 1600 bytes live, so 1600 (a multiple of 64) is optimal.
    let p = plan(&[
        buf(1000, 0, 1),
        buf(1000, 2, 3),
        buf(500, 1, 2),
        buf(100, 0, 3),
    ]);
    assert_eq!(p.offsets, vec![0, 0, 1000, 1500]);
    assert_eq!(p.arena_size, 1600);
}

#[test]
fn lowest_gap_is_used_when_it_fits() {
    // a is dead (step 0 only) by the time c is born, so c reuses a's bytes below b;
    // the peak is a + b = 500 at step 0.
    let p = plan(&[buf(300, 0, 0), buf(200, 0, 2), buf(100, 1, 2)]);
    assert_eq!(p.offsets, vec![0, 300, 0]);
    assert_eq!(p.arena_size, 512);
}

#[test]
fn alignment_is_respected() {
    let p = plan(&[
        Buffer {
            size: 10,
            align: 1,
            first: 0,
            last: 1,
        },
        Buffer {
            size: 10,
            align: 64,
            first: 0,
            last: 1,
        },
        Buffer {
            size: 3,
            align: 16,
            first: 0,
            last: 1,
        },
    ]);
    // Equal sizes tie-break by index: the first sits at 0, the 64-aligned one at 64; the 16-aligned
    // one fits in the gap at 16.
    assert_eq!(p.offsets, vec![0, 64, 16]);
    assert_eq!(p.arena_size, 128);
}

#[test]
fn zero_size_and_reversed_ranges() {
    let p = plan(&[buf(0, 0, 9), buf(64, 3, 1), buf(64, 3, 3)]);
    // A reversed range counts as the single step `first`, so the two 64-byte buffers collide.
    assert_eq!(p.offsets, vec![0, 0, 64]);
    assert_eq!(p.arena_size, 128);
}

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

#[test]
fn random_plans_are_valid_and_deterministic() {
    let mut rng = Rng(0x6b69_6c6e);
    for case in 0..2000 {
        let n = 1 + rng.below(60);
        let buffers: Vec<Buffer> = (0..n)
            .map(|_| {
                let first = rng.below(30);
                Buffer {
                    size: if rng.below(10) == 0 {
                        0
                    } else {
                        1 + rng.below(5000)
                    },
                    align: [1, 4, 8, 16, 64][rng.below(5)],
                    first,
                    last: first + rng.below(10),
                }
            })
            .collect();
        let p = plan(&buffers);
        assert_eq!(p, plan(&buffers), "case {case}: not deterministic");
        assert_eq!(p.offsets.len(), n);
        assert_eq!(p.arena_size % 64, 0, "case {case}");
        for (i, b) in buffers.iter().enumerate() {
            let o = p.offsets[i];
            assert_eq!(o % b.align, 0, "case {case}: buffer {i} misaligned");
            assert!(
                o + b.size <= p.arena_size,
                "case {case}: buffer {i} past the arena"
            );
            if b.size == 0 {
                assert_eq!(o, 0);
            }
            for (j, c) in buffers.iter().enumerate().skip(i + 1) {
                let live_together = b.first <= c.last && c.first <= b.last;
                let mem_overlap = o < p.offsets[j] + c.size && p.offsets[j] < o + b.size;
                assert!(
                    !(live_together && mem_overlap && b.size > 0 && c.size > 0),
                    "case {case}: buffers {i} {b:?} @{o} and {j} {c:?} @{} overlap",
                    p.offsets[j]
                );
            }
        }
        // Bounds: never below the bytes live at the busiest step, never above stacking everything.
        let lower = (0..40)
            .map(|s| {
                buffers
                    .iter()
                    .filter(|b| b.first <= s && s <= b.last)
                    .map(|b| b.size)
                    .sum::<usize>()
            })
            .max()
            .unwrap();
        let upper: usize = buffers.iter().map(|b| b.size + b.align - 1).sum();
        assert!(p.arena_size >= lower, "case {case}");
        assert!(p.arena_size <= upper.div_ceil(64) * 64, "case {case}");
    }
}
