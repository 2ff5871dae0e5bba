//! Offline memory planning: buffer lifetimes in, arena offsets out. The tools run this when
//! they write a `.loam` file, so the arena size is a number known before flashing.
//!
//! The interface is TFLite Micro's: each buffer has a size and the first and last op that
//! touch it. [`GreedyBySize`] is its greedy planner: largest buffers first, each at the lowest
//! offset that does not collide with a placed buffer whose lifetime overlaps. A better planner
//! only has to implement [`MemoryPlanner`].

use alloc::vec;
use alloc::vec::Vec;

/// A buffer to place: `size` bytes live from op `first` to op `last`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferRequest {
    /// Bytes.
    pub size: usize,
    /// First op (in execution order) during which the buffer holds data.
    pub first: usize,
    /// Last op during which it holds data.
    pub last: usize,
}

impl BufferRequest {
    fn overlaps_in_time(&self, other: &BufferRequest) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Where each buffer goes, and how big the arena must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Byte offset of each buffer, in request order; multiples of the alignment.
    pub offsets: Vec<usize>,
    /// Bytes of arena the plan needs.
    pub arena_size: usize,
}

/// Places buffers in an arena.
pub trait MemoryPlanner {
    /// Offsets for `buffers`, each a multiple of `align`, such that buffers whose lifetimes
    /// overlap do not overlap in memory.
    fn plan(&self, buffers: &[BufferRequest], align: usize) -> Plan;
}

fn align_up(x: usize, align: usize) -> usize {
    x.div_ceil(align) * align
}

/// Greedy by size (TFLite Micro's `GreedyMemoryPlanner`): sort by size, largest first; put
/// each at the lowest aligned offset where it fits between the already placed buffers that
/// are alive at the same time.
#[derive(Debug, Clone, Copy, Default)]
pub struct GreedyBySize;

impl MemoryPlanner for GreedyBySize {
    fn plan(&self, buffers: &[BufferRequest], align: usize) -> Plan {
        let align = align.max(1);
        let mut order: Vec<usize> = (0..buffers.len()).collect();
        // Ties broken by earlier start, then request order, so plans are deterministic.
        order.sort_by(|&a, &b| {
            buffers[b]
                .size
                .cmp(&buffers[a].size)
                .then(buffers[a].first.cmp(&buffers[b].first))
                .then(a.cmp(&b))
        });
        let mut offsets = vec![0usize; buffers.len()];
        let mut placed: Vec<usize> = Vec::with_capacity(buffers.len());
        let mut arena_size = 0usize;
        for &i in &order {
            let request = &buffers[i];
            // Live neighbours in memory order; the buffer goes in the first gap that fits.
            let mut live: Vec<(usize, usize)> = placed
                .iter()
                .filter(|&&j| buffers[j].overlaps_in_time(request))
                .map(|&j| (offsets[j], offsets[j] + buffers[j].size))
                .collect();
            live.sort_unstable();
            let mut candidate = 0usize;
            for (start, end) in live {
                if candidate + request.size <= start {
                    break;
                }
                candidate = candidate.max(align_up(end, align));
            }
            offsets[i] = candidate;
            arena_size = arena_size.max(candidate + request.size);
            placed.push(i);
        }
        Plan {
            offsets,
            arena_size: align_up(arena_size, align),
        }
    }
}

/// Every buffer at its own offset, one after another: what a runtime without planning needs.
/// The baseline the planned arena is compared with.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReuse;

impl MemoryPlanner for NoReuse {
    fn plan(&self, buffers: &[BufferRequest], align: usize) -> Plan {
        let mut offset = 0usize;
        let offsets = buffers
            .iter()
            .map(|b| {
                let at = offset;
                offset = align_up(offset + b.size, align.max(1));
                at
            })
            .collect();
        Plan {
            offsets,
            arena_size: offset,
        }
    }
}

/// Whether a plan is valid for its requests: aligned, and no two buffers that are alive at the
/// same time share a byte.
pub fn is_valid(buffers: &[BufferRequest], plan: &Plan, align: usize) -> bool {
    if plan.offsets.len() != buffers.len() {
        return false;
    }
    let range = |i: usize| (plan.offsets[i], plan.offsets[i] + buffers[i].size);
    (0..buffers.len()).all(|i| {
        let (s, e) = range(i);
        s % align.max(1) == 0
            && e <= plan.arena_size
            && (0..i).all(|j| {
                let (s2, e2) = range(j);
                !buffers[i].overlaps_in_time(&buffers[j]) || e <= s2 || e2 <= s
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(size: usize, first: usize, last: usize) -> BufferRequest {
        BufferRequest { size, first, last }
    }

    #[test]
    fn a_chain_reuses_memory() {
        // a -> b -> c -> d, each alive for two ops: only two buffers are ever live together.
        let buffers = [
            req(100, 0, 1),
            req(100, 1, 2),
            req(100, 2, 3),
            req(100, 3, 4),
        ];
        let plan = GreedyBySize.plan(&buffers, 16);
        assert!(is_valid(&buffers, &plan, 16));
        assert_eq!(plan.arena_size, 224);
        assert_eq!(NoReuse.plan(&buffers, 16).arena_size, 448);
    }

    #[test]
    fn a_small_buffer_fills_a_gap() {
        // Two big buffers live together early; a small one later slots into the first's
        // place once it is dead.
        let buffers = [req(64, 0, 1), req(64, 1, 2), req(16, 2, 3)];
        let plan = GreedyBySize.plan(&buffers, 16);
        assert!(is_valid(&buffers, &plan, 16));
        assert_eq!(plan.arena_size, 128);
        assert_eq!(plan.offsets[2], 0);
    }

    proptest! {
        #[test]
        fn plans_are_valid_and_never_worse_than_no_reuse(
            raw in prop::collection::vec((1usize..5000, 0usize..20, 0usize..6), 0..40),
            align in prop::sample::select(vec![1usize, 4, 16, 64]),
        ) {
            let buffers: Vec<_> = raw.iter().map(|&(s, f, l)| req(s, f, f + l)).collect();
            let plan = GreedyBySize.plan(&buffers, align);
            prop_assert!(is_valid(&buffers, &plan, align));
            prop_assert!(plan.arena_size <= NoReuse.plan(&buffers, align).arena_size);
            // Never below the bytes live at the busiest op.
            let peak = (0..30).map(|t| buffers.iter().filter(|b| b.first <= t && t <= b.last).map(|b| b.size).sum::<usize>()).max().unwrap_or(0);
            prop_assert!(plan.arena_size >= peak);
        }
    }
}
