//! A self-test of the runtime's arithmetic that runs anywhere, a Cortex-M0 included: no heap,
//! no `std`, a few kilobytes of stack.
//!
//! It answers the question a user asks before trusting a board: "does this chip compute what my
//! laptop computed?" Named cases check TFLite's rounding rules at their edges; random problems
//! check every output against exact real arithmetic; and a CRC-32 of all outputs must equal
//! [`GOLDEN_DIGEST`], the digest an x86_64 build produces, so any difference between ISAs,
//! compilers or fast paths fails the test. The unit tests, the qemu-user runs and the Cortex-M
//! firmware all run this same function.

use crate::error::{Error, Operand, QuantField};
use crate::fixed_point::{
    QuantizedMultiplier, rounding_divide_by_pot, saturating_rounding_doubling_high_mul,
};
use crate::format::Model;
use crate::interpreter::Interpreter;
use crate::ops::fully_connected::{
    FullyConnectedI8, FullyConnectedI8Params, FullyConnectedShape, fully_connected_i8,
};
use crate::tensor::DType;

/// CRC-32 (ISO-HDLC) of the outputs of the random problems, as computed on x86_64.
pub const GOLDEN_DIGEST: u32 = 0x2b61_bea3;

/// The result of one named check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Outcome {
    /// Dotted name of the check, e.g. `fully_connected_i8.hand_computed`.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
}

/// Totals over a self-test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Summary {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
    /// CRC-32 of every random problem's output; equals [`GOLDEN_DIGEST`] on a correct build.
    pub digest: u32,
}

impl Summary {
    /// Whether every check passed.
    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }
}

/// Number of random fully-connected problems; each is checked and folded into the digest.
pub const RANDOM_PROBLEMS: u32 = 64;

// Buffer bounds of the random problems, sized to fit the stack of a 16 KiB Cortex-M0.
const MAX_BATCH: usize = 3;
const MAX_IN: usize = 48;
const MAX_OUT: usize = 32;

/// Runs every check, calling `report` once per check as it completes.
pub fn run(report: &mut dyn FnMut(Outcome)) -> Summary {
    let mut summary = Summary {
        passed: 0,
        failed: 0,
        digest: 0,
    };
    let mut record = |name: &'static str, passed: bool| {
        if passed {
            summary.passed += 1;
        } else {
            summary.failed += 1;
        }
        report(Outcome { name, passed });
    };
    record("fixed_point.doubling_high_mul", doubling_high_mul_cases());
    record("fixed_point.divide_by_pot", divide_by_pot_cases());
    record(
        "fixed_point.quantize_multiplier",
        quantize_multiplier_cases(),
    );
    record(
        "fully_connected_i8.hand_computed",
        fully_connected_hand_computed(),
    );
    record(
        "fully_connected_i8.rejects_bad_operands",
        fully_connected_rejects_bad_operands(),
    );
    let (within_one_step, digest) = fully_connected_random();
    record("fully_connected_i8.random_vs_real", within_one_step);
    record("fully_connected_i8.golden_digest", digest == GOLDEN_DIGEST);
    summary.digest = digest;
    summary
}

fn doubling_high_mul_cases() -> bool {
    let srdhm = saturating_rounding_doubling_high_mul;
    srdhm(i32::MIN, i32::MIN) == i32::MAX
        && srdhm(1 << 30, 1 << 30) == 1 << 29
        // Ties round towards positive infinity: -0.5 -> 0, +0.5 -> 1.
        && srdhm(-(1 << 15), 1 << 15) == 0
        && srdhm(1 << 15, 1 << 15) == 1
        && srdhm(i32::MAX, i32::MIN) == -i32::MAX
        && srdhm(0, i32::MIN) == 0
}

fn divide_by_pot_cases() -> bool {
    // Ties round away from zero.
    [
        (3, 1, 2),
        (-3, 1, -2),
        (5, 2, 1),
        (-5, 2, -1),
        (6, 2, 2),
        (-6, 2, -2),
        (i32::MIN, 31, -1),
        (i32::MAX, 31, 1),
        (12345, 0, 12345),
    ]
    .iter()
    .all(|&(x, e, want)| rounding_divide_by_pot(x, e) == want)
}

fn quantize_multiplier_cases() -> bool {
    let parts =
        |real: f64| QuantizedMultiplier::from_real(real).map(|m| (m.multiplier(), m.shift()));
    parts(0.5) == Ok((1 << 30, 0))
        && parts(1.0) == Ok((1 << 30, 1))
        && parts(0.75) == Ok((3 << 29, 0))
        // Rounds up to 1.0 and renormalises.
        && parts(1.0 - 1e-12) == Ok((1 << 30, 1))
        // Flushes below 2^-32 to zero, saturates from 2^30.
        && parts(1e-12) == Ok((0, 0))
        && parts(1e12) == Ok((i32::MAX, 30))
        && parts(0.0) == Ok((0, 0))
        && [-1.0, f64::NAN, f64::INFINITY].iter().all(|&bad| {
            QuantizedMultiplier::from_real(bad) == Err(Error::InvalidQuantization(QuantField::Scale))
        })
        && QuantizedMultiplier::new(-1, 0).is_err()
        && QuantizedMultiplier::new(1 << 30, 31).is_err()
}

/// A 3-in, 2-out layer worked out by hand:
/// `x - zp = [15, -15, 35]`, accumulators `[90 + 10, -345 - 5] = [100, -350]`.
fn fully_connected_hand_computed() -> bool {
    let input = [10i8, -20, 30];
    let weights = [1i8, 2, 3, -4, 5, -6];
    let bias = [10i32, -5];
    let quarter = [QuantizedMultiplier::from_real(0.25).unwrap_or_default()];
    let per_channel = [
        quarter[0],
        QuantizedMultiplier::from_real(0.125).unwrap_or_default(),
    ];
    let run = |multipliers: &[QuantizedMultiplier], activation_min: i8| {
        let op = FullyConnectedI8 {
            shape: FullyConnectedShape {
                batch: 1,
                in_features: 3,
                out_features: 2,
            },
            params: FullyConnectedI8Params {
                input_zero_point: -5,
                output_zero_point: 3,
                multipliers,
                activation_min,
                activation_max: 127,
            },
            input: &input,
            weights: &weights,
            bias: Some(&bias),
        };
        let mut out = [0i8; 2];
        fully_connected_i8(&op, &mut out).map(|()| out)
    };
    // 100 / 4 = 25; -350 / 4 = -87.5 rounds away from zero to -88; then + 3.
    run(&quarter, -128) == Ok([28, -85])
        // ReLU clamps at the output zero point.
        && run(&quarter, 3) == Ok([28, 3])
        // Per channel: -350 / 8 = -43.75 rounds to -44, + 3.
        && run(&per_channel, -128) == Ok([28, -41])
}

fn fully_connected_rejects_bad_operands() -> bool {
    let input = [0i8; 4];
    let weights = [0i8; 6];
    let multipliers = [QuantizedMultiplier::default(); 2];
    let op = FullyConnectedI8 {
        shape: FullyConnectedShape {
            batch: 2,
            in_features: 2,
            out_features: 3,
        },
        params: FullyConnectedI8Params {
            input_zero_point: 0,
            output_zero_point: 0,
            multipliers: &multipliers,
            activation_min: -128,
            activation_max: 127,
        },
        input: &input,
        weights: &weights,
        bias: None,
    };
    let mut out = [0i8; 6];
    fully_connected_i8(&op, &mut out)
        == Err(Error::ShapeMismatch {
            operand: Operand::Multipliers,
            expected: 3,
            actual: 2,
        })
        && fully_connected_i8(
            &FullyConnectedI8 {
                params: FullyConnectedI8Params {
                    multipliers: &multipliers[..1],
                    ..op.params
                },
                ..op
            },
            &mut out[..5],
        ) == Err(Error::ShapeMismatch {
            operand: Operand::Output,
            expected: 6,
            actual: 5,
        })
}

/// SplitMix64. Written out here rather than taken from a crate because the golden digest pins
/// the exact stream: a dependency update that changed it would break every board's check.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the slight modulo bias is irrelevant for test data).
    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        let span = (i64::from(hi) - i64::from(lo) + 1) as u64;
        (i64::from(lo) + (self.next_u64() % span) as i64) as i32
    }

    fn fill(&mut self, buf: &mut [i8]) {
        for v in buf {
            *v = self.range(-128, 127) as i8;
        }
    }
}

/// Random problems checked element by element against exact real arithmetic (within one
/// output step) and folded into a CRC-32 of the outputs.
fn fully_connected_random() -> (bool, u32) {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut digest = crc.digest();
    let mut rng = SplitMix64(0x6C6F_616D);
    let mut all_within_one = true;

    let mut input = [0i8; MAX_BATCH * MAX_IN];
    let mut weights = [0i8; MAX_OUT * MAX_IN];
    let mut bias = [0i32; MAX_OUT];
    let mut multipliers = [QuantizedMultiplier::default(); MAX_OUT];
    let mut output = [0i8; MAX_BATCH * MAX_OUT];

    for _ in 0..RANDOM_PROBLEMS {
        let shape = FullyConnectedShape {
            batch: rng.range(1, MAX_BATCH as i32) as usize,
            in_features: rng.range(1, MAX_IN as i32) as usize,
            out_features: rng.range(1, MAX_OUT as i32) as usize,
        };
        let channels = if rng.range(0, 1) == 1 {
            shape.out_features
        } else {
            1
        };
        for m in &mut multipliers[..channels] {
            // Log-uniform in [2^-17, 2^-10]: keeps most accumulators inside the int8 range
            // so the digest covers rounding, not just clamping.
            let real = libm::exp2(-f64::from(rng.range(10 << 8, 17 << 8)) / 256.0);
            *m = QuantizedMultiplier::from_real(real).unwrap_or_default();
        }
        let with_bias = rng.range(0, 1) == 1;
        for b in &mut bias[..shape.out_features] {
            *b = rng.range(-(1 << 14), 1 << 14);
        }
        let output_zero_point = rng.range(-128, 127);
        let (activation_min, activation_max) = match rng.range(0, 3) {
            0 | 1 => (-128, 127),
            2 => (output_zero_point as i8, 127),
            _ => {
                let a = rng.range(-128, 127) as i8;
                let b = rng.range(-128, 127) as i8;
                (a.min(b), a.max(b))
            }
        };
        let input = &mut input[..shape.batch * shape.in_features];
        let weights = &mut weights[..shape.out_features * shape.in_features];
        rng.fill(input);
        rng.fill(weights);
        let op = FullyConnectedI8 {
            shape,
            params: FullyConnectedI8Params {
                input_zero_point: rng.range(-128, 127),
                output_zero_point,
                multipliers: &multipliers[..channels],
                activation_min,
                activation_max,
            },
            input,
            weights,
            bias: with_bias.then_some(&bias[..shape.out_features]),
        };
        let output = &mut output[..shape.batch * shape.out_features];
        if fully_connected_i8(&op, output).is_err() {
            return (false, 0);
        }
        all_within_one &= within_one_step_of_real(&op, output);
        for &v in output.iter() {
            digest.update(&[v as u8]);
        }
    }
    (all_within_one, digest.finalize())
}

/// The accumulator of output `(b, o)` computed the way optimised kernels rearrange it,
/// `sum(x * w) - zero_point * sum(w) + bias`, in i64 so it cannot wrap: an independent model
/// of the reference's accumulation.
pub(crate) fn rearranged_accumulator(op: &FullyConnectedI8<'_>, b: usize, o: usize) -> i64 {
    let n = op.shape.in_features;
    let x = &op.input[b * n..][..n];
    let w = &op.weights[o * n..][..n];
    let dot: i64 = x
        .iter()
        .zip(w)
        .map(|(&x, &w)| i64::from(x) * i64::from(w))
        .sum();
    let wsum: i64 = w.iter().map(|&w| i64::from(w)).sum();
    let bias = op.bias.map_or(0, |bias| i64::from(bias[o]));
    dot - i64::from(op.params.input_zero_point) * wsum + bias
}

/// `clamp(round(acc * multiplier) + zero_point)` in f64: the exact real-arithmetic result
/// a requantized output should be within one step of.
pub(crate) fn real_output(op: &FullyConnectedI8<'_>, b: usize, o: usize) -> f64 {
    let p = &op.params;
    let acc = rearranged_accumulator(op, b, o);
    let real = libm::round(acc as f64 * p.multiplier(o).to_real()) + f64::from(p.output_zero_point);
    real.clamp(f64::from(p.activation_min), f64::from(p.activation_max))
}

/// Each output is within one step of [`real_output`].
fn within_one_step_of_real(op: &FullyConnectedI8<'_>, output: &[i8]) -> bool {
    let s = op.shape;
    (0..s.batch).all(|b| {
        (0..s.out_features).all(|o| {
            libm::fabs(f64::from(output[b * s.out_features + o]) - real_output(op, b, o)) <= 1.0
        })
    })
}

/// The metadata constant a self-checking model carries: `[seed_hi, seed_lo, digest_hi,
/// digest_lo]`, 16-bit halves stored as (exactly representable) f32 values. The writer of the
/// model ran it on an x86_64 host with inputs drawn from the seed and recorded the CRC-32 of
/// its outputs; [`check_model`] repeats that on any target.
pub const SELFCHECK_CONSTANT: &str = "loam.selfcheck";

/// What [`check_model`] computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ModelCheck {
    /// CRC-32 of every output's bytes, in output order.
    pub digest: u32,
    /// The digest recorded in the model.
    pub expected: u32,
}

impl ModelCheck {
    /// Whether this target computed exactly what the model's writer computed.
    pub fn passed(&self) -> bool {
        self.digest == self.expected
    }
}

/// Fills every graph input from SplitMix64 seeded with `seed`: integers uniformly over their
/// type, floats uniformly in `[-1, 1)` (24-bit exact values, the same on every target).
pub fn fill_inputs(interpreter: &mut Interpreter<'_, '_>, seed: u64) -> Result<(), Error> {
    let mut rng = SplitMix64(seed);
    for i in 0..interpreter.input_count() {
        let dtype = interpreter.input_tensor(i)?.dtype;
        let bytes = interpreter.input_bytes_mut(i)?;
        match dtype {
            DType::F32 => {
                for chunk in bytes.chunks_exact_mut(4) {
                    let unit = (rng.next_u64() >> 40) as f32 / (1u32 << 24) as f32;
                    chunk.copy_from_slice(&(unit * 2.0 - 1.0).to_le_bytes());
                }
            }
            _ => {
                for b in bytes.iter_mut() {
                    *b = rng.next_u64() as u8;
                }
            }
        }
    }
    Ok(())
}

/// CRC-32 (ISO-HDLC) of every graph output's bytes, in output order.
pub fn output_digest(interpreter: &Interpreter<'_, '_>) -> Result<u32, Error> {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut digest = crc.digest();
    for i in 0..interpreter.output_count() {
        digest.update(interpreter.output_bytes(i)?);
    }
    Ok(digest.finalize())
}

/// The `(seed, digest)` a self-checking model records, if it has them.
pub fn selfcheck_record(model: &Model<'_>) -> Option<(u64, u32)> {
    let c = model.constant(SELFCHECK_CONSTANT)?;
    let mut v = c.values();
    let mut half = || -> Option<u32> {
        let x = v.next()?;
        ((0.0..65536.0).contains(&x) && x == libm::floorf(x)).then_some(x as u32)
    };
    let (s1, s0, d1, d0) = (half()?, half()?, half()?, half()?);
    Some((u64::from((s1 << 16) | s0), (d1 << 16) | d0))
}

/// The four f32 values of a [`SELFCHECK_CONSTANT`] for a 32-bit seed and a digest.
pub fn selfcheck_values(seed: u32, digest: u32) -> [f32; 4] {
    [
        (seed >> 16) as f32,
        (seed & 0xffff) as f32,
        (digest >> 16) as f32,
        (digest & 0xffff) as f32,
    ]
}

/// Runs a self-checking model once on its recorded seed and compares the CRC-32 of its
/// outputs with the recorded digest: the board computed exactly what the model's writer
/// computed. Needs no heap; `arena` must hold the model's arena.
pub fn check_model(model: &Model<'_>, arena: &mut [u8]) -> Result<ModelCheck, Error> {
    let (seed, expected) = selfcheck_record(model).ok_or(Error::NoSuchTensor)?;
    let mut interpreter = Interpreter::new(model, arena)?;
    fill_inputs(&mut interpreter, seed)?;
    interpreter.invoke()?;
    Ok(ModelCheck {
        digest: output_digest(&interpreter)?,
        expected,
    })
}

/// The metadata constant a self-checking float model carries beside [`SELFCHECK_CONSTANT`]:
/// every output's values, in output order, as the writer's x86_64 host computed them for the
/// seeded inputs. Float kernels sum in a different order on each ISA, so a float model is
/// checked within a tolerance ([`check_model_within`]) rather than by digest.
pub const EXPECTED_CONSTANT: &str = "loam.expected";

/// What [`check_model_within`] computed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ToleranceCheck {
    /// Output values compared.
    pub elements: usize,
    /// Largest absolute difference from the recorded value.
    pub max_abs: f32,
    /// Values outside `atol + rtol * |recorded|`.
    pub outside: usize,
}

impl ToleranceCheck {
    /// Whether every value was within the tolerance (and there were values to compare).
    pub fn passed(&self) -> bool {
        self.elements > 0 && self.outside == 0
    }
}

/// Runs a self-checking float model on its seeded inputs and compares its `f32` outputs with
/// the values [`EXPECTED_CONSTANT`] records, within `atol + rtol * |recorded|`. Fails with
/// [`Error::NoSuchTensor`] for a model without both records or with a non-`f32` output, and
/// with [`Error::ShapeMismatch`] when the record's length differs from the outputs'.
pub fn check_model_within(
    model: &Model<'_>,
    arena: &mut [u8],
    atol: f32,
    rtol: f32,
) -> Result<ToleranceCheck, Error> {
    let (seed, _) = selfcheck_record(model).ok_or(Error::NoSuchTensor)?;
    let expected = model
        .constant(EXPECTED_CONSTANT)
        .ok_or(Error::NoSuchTensor)?;
    let mut interpreter = Interpreter::new(model, arena)?;
    fill_inputs(&mut interpreter, seed)?;
    interpreter.invoke()?;
    let mut recorded = expected.values();
    let mut check = ToleranceCheck {
        elements: 0,
        max_abs: 0.0,
        outside: 0,
    };
    for i in 0..interpreter.output_count() {
        for &actual in interpreter.output::<f32>(i)? {
            let want = recorded.next().ok_or(Error::ShapeMismatch {
                operand: crate::error::Operand::Output,
                expected: check.elements + 1,
                actual: check.elements,
            })?;
            let difference = libm::fabsf(actual - want);
            check.elements += 1;
            check.max_abs = check.max_abs.max(difference);
            // NaN fails the comparison, so it counts as outside.
            let within = difference <= atol + rtol * libm::fabsf(want);
            check.outside += usize::from(!within);
        }
    }
    if recorded.next().is_some() {
        return Err(Error::ShapeMismatch {
            operand: crate::error::Operand::Output,
            expected: check.elements + 1,
            actual: check.elements,
        });
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn every_check_passes_and_matches_the_golden_digest() {
        let mut failed = Vec::new();
        let summary = run(&mut |o| {
            if !o.passed {
                failed.push(o.name);
            }
        });
        assert!(failed.is_empty(), "failed checks: {failed:?}");
        assert_eq!(
            summary.digest, GOLDEN_DIGEST,
            "digest {:#010x}",
            summary.digest
        );
        assert_eq!(summary.passed, 7);
    }
}
