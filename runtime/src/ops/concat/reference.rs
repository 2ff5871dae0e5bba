//! The portable reference kernel: block copies. Concatenation only moves data, so there is
//! nothing for a fast path to improve on `copy_from_slice` (a `memcpy`).

/// Copies the `outer` equal blocks of `input` to element `offset` of each of `output`'s
/// `outer` equal rows. The lengths must have been checked ([`super::concat_part`]).
pub fn copy_blocks<T: Copy>(outer: usize, offset: usize, input: &[T], output: &mut [T]) {
    let block = input.len() / outer.max(1);
    let row = output.len() / outer.max(1);
    if block == 0 || row < offset + block {
        return;
    }
    for (src, dst) in input.chunks_exact(block).zip(output.chunks_exact_mut(row)) {
        dst[offset..offset + block].copy_from_slice(src);
    }
}
