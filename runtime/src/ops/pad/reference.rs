//! The portable reference kernel: the output row by row (rows along the last dimension).
//! A row whose leading index lies in the padding of some dimension is all padding; any other
//! row is `before` values, one contiguous input row, `after` values. Filling and block copies
//! are already `memset`/`memcpy`, so no fast path is kept beside it.

use super::PadGeometry;
use crate::tensor::MAX_RANK;

/// Pads `input` into `output` with `value`; the lengths must match the geometry (checked by
/// [`super::pad`]).
pub fn pad<T: Copy>(g: &PadGeometry, value: T, input: &[T], output: &mut [T]) {
    let rank = g.rank();
    let dims = g.input_dims();
    let pads = g.pads();
    let last = rank - 1;
    let in_row = dims[last];
    let out_row = g.output_dim(last);
    let (before, _) = pads[last];
    // Input strides of the leading dimensions, in elements.
    let mut stride = [0usize; MAX_RANK];
    let mut s = in_row;
    for d in (0..last).rev() {
        stride[d] = s;
        s *= dims[d];
    }
    let mut index = [0usize; MAX_RANK];
    for row in output.chunks_exact_mut(out_row.max(1)) {
        let mut src = Some(0usize);
        for d in 0..last {
            let i = index[d];
            src = match src {
                Some(offset) if i >= pads[d].0 && i < pads[d].0 + dims[d] => {
                    Some(offset + (i - pads[d].0) * stride[d])
                }
                _ => None,
            };
        }
        match src.and_then(|offset| input.get(offset..offset + in_row)) {
            Some(data) => {
                row[..before].fill(value);
                row[before..before + in_row].copy_from_slice(data);
                row[before + in_row..].fill(value);
            }
            None => row.fill(value),
        }
        // Next row: advance the leading index like an odometer.
        let mut d = last;
        while d > 0 {
            d -= 1;
            index[d] += 1;
            if index[d] < g.output_dim(d) {
                break;
            }
            index[d] = 0;
        }
    }
}
