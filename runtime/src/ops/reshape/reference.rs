//! The portable reference kernel: a reshape moves no element, so the copy (when the output
//! does not already share the input's storage) is a plain `memcpy`, which no fast path beats.

/// Copies `input` to `output`; the lengths must match (checked by [`super::reshape`]).
pub fn copy<T: Copy>(input: &[T], output: &mut [T]) {
    let n = input.len().min(output.len());
    output[..n].copy_from_slice(&input[..n]);
}
