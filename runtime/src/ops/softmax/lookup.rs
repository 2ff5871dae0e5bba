//! A portable int8 fast path for every ISA with an OS (its table takes 1 KiB of stack, which
//! a microcontroller may not have). int8 inputs differ from their row's maximum in at
//! most 256 ways, so gemmlowp's `exp_on_negative_values` (dozens of fixed-point steps, which
//! the reference evaluates twice per element) is evaluated once per difference into a table
//! and looked up. Bit-exact: the table holds what the reference computes for each
//! difference, and the rows run the reference's own row code around it.
//!
//! The table spans the whole input's spread (no row's difference can be larger) and is
//! built only when that is fewer evaluations than the reference's two per element; a single
//! short row with a wide spread (one classifier output) is computed directly.

use super::reference::{log_softmax_exp, log_softmax_row, softmax_exp, softmax_row};
use super::{SoftmaxI8, SoftmaxQuant};
use crate::fixed_point::QuantizedMultiplier;

/// The exponentials of the differences `0, -1, ..., -span`, or `None` where computing them
/// directly is cheaper. Below `diff_min` the reference never asks (and the scaled difference
/// could wrap), so those entries stay 0.
fn exp_table(
    op: &SoftmaxI8<'_>,
    exp: impl Fn(i32, QuantizedMultiplier) -> i32,
    input: QuantizedMultiplier,
) -> Option<[i32; 256]> {
    let (min, max) = op
        .input
        .iter()
        .fold((i8::MAX, i8::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let span = (i32::from(max) - i32::from(min)).max(0) as usize;
    if span + 1 > 2 * op.input.len() {
        return None;
    }
    let mut table = [0; 256];
    for (d, value) in table.iter_mut().enumerate().take(span + 1) {
        let diff = -(d as i32);
        if diff >= op.params.diff_min {
            *value = exp(diff, input);
        }
    }
    Some(table)
}

/// The table-driven int8 softmax and log-softmax.
pub(super) fn softmax_i8(op: &SoftmaxI8<'_>, output: &mut [i8]) {
    if op.log {
        with_table(op, output, log_softmax_exp, |p, x, out, exp| {
            log_softmax_row(p, x, out, exp)
        });
    } else {
        with_table(op, output, softmax_exp, |p, x, out, exp| {
            softmax_row(p, x, out, exp)
        });
    }
}

/// Runs `row` over every row with its exponentials from the table; the reference runs
/// where no table is built.
fn with_table(
    op: &SoftmaxI8<'_>,
    output: &mut [i8],
    exp: fn(i32, QuantizedMultiplier) -> i32,
    row: impl Fn(&SoftmaxQuant, &[i8], &mut [i8], &mut dyn FnMut(i32) -> i32),
) {
    let p = &op.params;
    let Some(input) = p.input() else {
        return;
    };
    let depth = op.shape.depth;
    let rows = op
        .input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth));
    let Some(table) = exp_table(op, exp, input) else {
        return super::reference_i8(op, output);
    };
    for (x, out) in rows {
        row(p, x, out, &mut |diff| table[diff.unsigned_abs() as usize]);
    }
}
