//! Static memory planning: places every intermediate buffer at a fixed offset in one arena.
//!
//! A generated library does no allocation: the caller hands `NAME_run` an arena of
//! `NAME_ARENA_SIZE` bytes and every intermediate tensor lives at an offset decided here, at compile
//! time. Two buffers may share bytes when their lifetimes (the steps from the one that writes a
//! buffer to the last one that reads it) are disjoint.
//!
//! The algorithm is greedy by size (as in TFLite's `GreedyMemoryPlanner`): buffers are placed from
//! largest to smallest, each at the lowest aligned offset that does not overlap any already placed
//! buffer whose lifetime intersects its own. Big buffers placed first claim the bottom of the arena
//! and small ones fill the gaps between them, which is close to optimal on the chain-shaped
//! lifetimes of inference graphs. Ties are broken by earlier first use, then by index, so the plan
//! is a pure function of its input.
//!
//! In-place execution is not the planner's business: a caller that wants an op to write over its
//! input simply gives both the same buffer.

/// One buffer to place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Size in bytes. Zero-size buffers get offset 0 and take no space.
    pub size: usize,
    /// Required alignment of the offset in bytes (0 is taken as 1). The arena itself is 64-byte
    /// aligned, so alignments above 64 are honoured only relative to the arena base.
    pub align: usize,
    /// The step that writes the buffer.
    pub first: usize,
    /// The last step that reads it (`>= first`; a smaller value is treated as `first`).
    pub last: usize,
}

/// Where each buffer goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Byte offset of each buffer in the arena, in input order.
    pub offsets: Vec<usize>,
    /// Arena size in bytes: past the end of every buffer, rounded up to a multiple of
    /// [`ARENA_ALIGN`].
    pub arena_size: usize,
}

/// Alignment (bytes) of the arena the caller provides, and the granularity of its size.
pub const ARENA_ALIGN: usize = 64;

/// Plans `buffers` into one arena. See the module docs.
pub fn plan(buffers: &[Buffer]) -> Plan {
    let mut offsets = vec![0usize; buffers.len()];

    let mut order: Vec<usize> = (0..buffers.len())
        .filter(|&i| buffers[i].size > 0)
        .collect();
    order.sort_by(|&a, &b| {
        let (ba, bb) = (&buffers[a], &buffers[b]);
        bb.size
            .cmp(&ba.size)
            .then(ba.first.cmp(&bb.first))
            .then(a.cmp(&b))
    });

    // (offset, end, first, last) of buffers placed so far, kept sorted by offset.
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(order.len());
    let mut arena_end = 0usize;
    for &i in &order {
        let buf = &buffers[i];
        let (first, last) = (buf.first, buf.last.max(buf.first));
        let align = buf.align.max(1);
        let mut at = 0usize;
        for &(off, end, f, l) in &placed {
            if l < first || f > last {
                continue; // never live at the same time: free to share bytes
            }
            if at + buf.size <= off {
                break; // fits in the gap below this one; later ones start even higher
            }
            if end > at {
                at = align_up(end, align);
            }
        }
        offsets[i] = at;
        let end = at + buf.size;
        arena_end = arena_end.max(end);
        let pos = placed.partition_point(|p| (p.0, p.1) <= (at, end));
        placed.insert(pos, (at, end, first, last));
    }

    Plan {
        offsets,
        arena_size: align_up(arena_end, ARENA_ALIGN),
    }
}

fn align_up(v: usize, align: usize) -> usize {
    v.div_ceil(align) * align
}
