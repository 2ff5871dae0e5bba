//! The portable fast path: simplify the permutation, then copy, or transpose 2-D tiles small
//! enough that both the rows read and the columns written stay in cache. Everything else goes
//! to the reference walk. Only moves elements, so it matches the reference exactly.

use super::{TransposeGeometry, reference};
use crate::tensor::MAX_RANK;

/// Tile side: 16 x 16 elements of at most 4 bytes is 1 KiB read and 1 KiB written.
const TILE: usize = 16;

/// The permutation with size-1 dimensions dropped and runs of dimensions that stay adjacent
/// and in order merged: `(rank, input dims, perm)`.
pub(crate) fn simplify(g: &TransposeGeometry) -> (usize, [usize; MAX_RANK], [usize; MAX_RANK]) {
    let dims = g.input_dims();
    // Drop dimensions of size 1: they do not change the order of elements.
    let mut renumber = [0usize; MAX_RANK];
    let mut kept_dims = [1usize; MAX_RANK];
    let mut kept = 0;
    for (d, &n) in dims.iter().enumerate() {
        if n != 1 {
            renumber[d] = kept;
            kept_dims[kept] = n;
            kept += 1;
        }
    }
    let mut perm = [0usize; MAX_RANK];
    let mut m = 0;
    for &p in g.perm() {
        if dims[p] != 1 {
            perm[m] = renumber[p];
            m += 1;
        }
    }
    // Merge runs of output axes that read consecutive input axes in order.
    let mut run_first = [0usize; MAX_RANK];
    let mut run_size = [1usize; MAX_RANK];
    let mut runs = 0;
    let mut i = 0;
    while i < m {
        let mut size = kept_dims[perm[i]];
        let mut j = i;
        while j + 1 < m && perm[j + 1] == perm[j] + 1 {
            j += 1;
            size *= kept_dims[perm[j]];
        }
        run_first[runs] = perm[i];
        run_size[runs] = size;
        runs += 1;
        i = j + 1;
    }
    // Runs partition the input axes; number them in input order.
    let mut out_dims = [1usize; MAX_RANK];
    let mut out_perm = [0usize; MAX_RANK];
    for k in 0..runs {
        let position = (0..runs).filter(|&j| run_first[j] < run_first[k]).count();
        out_perm[k] = position;
        out_dims[position] = run_size[k];
    }
    (runs, out_dims, out_perm)
}

/// `output[c][r] = input[r][c]` for a `rows x cols` input, tile by tile.
fn transpose2d<T: Copy>(rows: usize, cols: usize, input: &[T], output: &mut [T]) {
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for r in r0..r1 {
                let src = &input[r * cols + c0..r * cols + c1];
                for (k, &v) in src.iter().enumerate() {
                    output[(c0 + k) * rows + r] = v;
                }
            }
        }
    }
}

/// The blocked transpose; the lengths must equal the geometry's element count.
pub fn transpose<T: Copy>(g: &TransposeGeometry, input: &[T], output: &mut [T]) {
    let n = g.elements();
    if input.len() != n || output.len() != n {
        return reference::transpose(g, input, output);
    }
    let (rank, d, perm) = simplify(g);
    match (rank, &perm[..rank]) {
        (0 | 1, _) => output.copy_from_slice(input),
        (2, [1, 0]) => transpose2d(d[0], d[1], input, output),
        (3, [0, 2, 1]) => {
            let m = d[1] * d[2];
            for (src, dst) in input.chunks_exact(m).zip(output.chunks_exact_mut(m)) {
                transpose2d(d[1], d[2], src, dst);
            }
        }
        (3, [1, 0, 2]) => {
            // Swap the two outer dimensions, moving contiguous blocks of the inner one.
            let inner = d[2];
            for a in 0..d[0] {
                for b in 0..d[1] {
                    let src = &input[(a * d[1] + b) * inner..][..inner];
                    output[(b * d[0] + a) * inner..][..inner].copy_from_slice(src);
                }
            }
        }
        _ => reference::transpose(g, input, output),
    }
}
