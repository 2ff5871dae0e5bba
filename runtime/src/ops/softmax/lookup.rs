//! A portable int8 fast path for every ISA with an OS (its table takes 1 KiB of stack, which
//! a microcontroller may not have). int8 inputs differ from their row's maximum in at
//! most 256 ways, so gemmlowp's `exp_on_negative_values` (dozens of fixed-point steps, which
//! the reference evaluates twice per element) is evaluated once per difference into a table
//! and looked up. Bit-exact: the table holds what the reference computes for each
//! difference, and the rows run the reference's own row code around it.
//!
//! The table spans the whole input's spread (no row's difference can be larger) and is
//! built only when that is fewer evaluations than the reference's two per element; a single
//! short row with a wide spread (one classifier output) instead remembers the values it
//! computed, so each distinct difference is evaluated once.

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

/// Entries of a full table: every difference an int8 row can have, `0` to `-255`.
pub(crate) const TABLE_LEN: usize = 256;

/// Fills `table` (of [`TABLE_LEN`] words) with the exponentials of the differences `0, -1,
/// ..., -255` for a layer with `params` (0 below `diff_min`, which the rows never ask for):
/// the table [`exp_table`] builds for any input, kept by an interpreter. `None` for
/// parameters that do not check out or a table of another length.
pub(crate) fn fill_table(params: &SoftmaxQuant, log: bool, table: &mut [i32]) -> Option<()> {
    let input = params.input()?;
    if table.len() != TABLE_LEN {
        return None;
    }
    let exp = if log { log_softmax_exp } else { softmax_exp };
    for (d, value) in table.iter_mut().enumerate() {
        let diff = -(d as i32);
        *value = if diff >= params.diff_min {
            exp(diff, input)
        } else {
            0
        };
    }
    Some(())
}

/// The int8 softmax or log-softmax with the exponentials from a full `table`
/// ([`fill_table`] of the same parameters); the operands must have passed
/// [`SoftmaxI8::validate`].
pub(crate) fn softmax_i8_with_table(
    op: &SoftmaxI8<'_>,
    output: &mut [i8],
    table: &[i32; TABLE_LEN],
) {
    let p = &op.params;
    let depth = op.shape.depth;
    let rows = op
        .input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth));
    for (x, out) in rows {
        let exp = &mut |diff: i32| table[diff.unsigned_abs() as usize];
        if op.log {
            log_softmax_row(p, x, out, exp);
        } else {
            softmax_row(p, x, out, exp);
        }
    }
}

/// The table-driven int8 softmax and log-softmax.
#[cfg_attr(target_os = "none", allow(dead_code))]
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
        // Too few elements for a table: each row remembers the exponentials it computed,
        // which the reference would compute again for the outputs (a classifier's ten
        // outputs take half the time otherwise).
        for (x, out) in rows {
            let mut memo = ExpMemo::new();
            row(p, x, out, &mut |diff| memo.get(diff, |d| exp(d, input)));
        }
        return;
    };
    for (x, out) in rows {
        row(p, x, out, &mut |diff| table[diff.unsigned_abs() as usize]);
    }
}

/// The exponentials of up to [`ExpMemo::SLOTS`] differences one row asked for, looked up by
/// difference (a row has at most that many distinct ones when it is that short); past that,
/// each is computed as asked. The same values as computing each time: `exp` is a pure
/// function of the difference.
struct ExpMemo {
    diffs: [i32; Self::SLOTS],
    values: [i32; Self::SLOTS],
    len: usize,
}

impl ExpMemo {
    const SLOTS: usize = 32;

    fn new() -> Self {
        ExpMemo {
            diffs: [0; Self::SLOTS],
            values: [0; Self::SLOTS],
            len: 0,
        }
    }

    fn get(&mut self, diff: i32, exp: impl Fn(i32) -> i32) -> i32 {
        if let Some(i) = self.diffs[..self.len].iter().position(|&d| d == diff) {
            return self.values[i];
        }
        let value = exp(diff);
        if self.len < Self::SLOTS {
            self.diffs[self.len] = diff;
            self.values[self.len] = value;
            self.len += 1;
        }
        value
    }
}
