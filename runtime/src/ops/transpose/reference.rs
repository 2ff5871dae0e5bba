//! The portable reference kernel: walk the output in row-major order, stepping through the
//! input with the permuted strides (an odometer over the output index).

use super::TransposeGeometry;
use crate::tensor::MAX_RANK;

/// Writes `output[..] = input[permuted index]` for every element. The lengths must equal the
/// geometry's element count (checked by [`super::transpose`]).
pub fn transpose<T: Copy>(g: &TransposeGeometry, input: &[T], output: &mut [T]) {
    let rank = g.rank();
    let dims = g.input_dims();
    let perm = g.perm();
    let mut stride = [0usize; MAX_RANK];
    let mut s = 1;
    for d in (0..rank).rev() {
        stride[d] = s;
        s *= dims[d];
    }
    // For output axis `a`: how far one step moves in the input, and how many steps it takes.
    let mut step = [0usize; MAX_RANK];
    let mut extent = [0usize; MAX_RANK];
    for a in 0..rank {
        step[a] = stride[perm[a]];
        extent[a] = dims[perm[a]];
    }
    let mut index = [0usize; MAX_RANK];
    let mut src = 0usize;
    for o in output.iter_mut() {
        if let Some(&v) = input.get(src) {
            *o = v;
        }
        let mut a = rank;
        while a > 0 {
            a -= 1;
            index[a] += 1;
            src += step[a];
            if index[a] < extent[a] {
                break;
            }
            src -= step[a] * extent[a];
            index[a] = 0;
        }
    }
}
