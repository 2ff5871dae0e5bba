//! Fixed-point arithmetic for requantization, as TensorFlow Lite defines it.
//!
//! An int8 layer accumulates in int32 and must scale the accumulator by a real factor
//! `input_scale * weight_scale / output_scale`. TFLite (and CMSIS-NN) represent that factor as a
//! Q31 multiplier in `[0.5, 1)` and a power-of-two shift, and define the rounding of each step
//! exactly. Matching those definitions bit for bit is what makes a loam int8 model produce the
//! same bytes as TFLite's reference kernels, on every ISA.

use crate::error::{Error, QuantField};

/// `round((a * b) / 2^31)` with ties rounded towards positive infinity, saturating the single
/// overflowing case `i32::MIN * i32::MIN`. gemmlowp's `SaturatingRoundingDoublingHighMul`.
#[inline]
pub const fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // `/` truncates towards zero; with the nudge above that is round-half-up overall.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero. gemmlowp's `RoundingDivideByPOT`.
///
/// `exponent` must be at most 31; larger values are clamped to 31 (every `i32` then rounds
/// to 0, -1 or 1, exactly as an exponent of 31 would).
#[inline]
pub const fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let exponent = if exponent > 31 { 31 } else { exponent };
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + (x < 0) as i32;
    (x >> exponent) + (remainder > threshold) as i32
}

/// A non-negative real multiplier `m` stored as `multiplier * 2^(shift - 31)` with
/// `multiplier` in `[2^30, 2^31)` (or zero), TFLite's `QuantizeMultiplier` representation.
///
/// In memory it is two `i32`s, `[multiplier, shift]`, the layout a model file stores them in,
/// so a validated run of them is read in place ([`QuantizedMultiplier::slice_from_raw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(C)]
pub struct QuantizedMultiplier {
    multiplier: i32,
    shift: i32,
}

impl QuantizedMultiplier {
    /// Smallest shift TFLite produces: multipliers below `2^-32` flush to zero.
    pub const MIN_SHIFT: i32 = -31;
    /// Largest shift TFLite produces: multipliers at or above `2^30` saturate.
    pub const MAX_SHIFT: i32 = 30;

    /// Builds a multiplier from its stored parts, as read from a model file.
    pub const fn new(multiplier: i32, shift: i32) -> Result<Self, Error> {
        if multiplier < 0 || shift < Self::MIN_SHIFT || shift > Self::MAX_SHIFT {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        Ok(Self { multiplier, shift })
    }

    /// Views `[multiplier, shift]` pairs as multipliers, in place, after checking each pair
    /// is in range. `None` if the length is odd or a pair is out of range.
    pub fn slice_from_raw(raw: &[i32]) -> Option<&[QuantizedMultiplier]> {
        if raw.len() % 2 != 0 {
            return None;
        }
        // Every pair is checked, without stopping at the first bad one, so that the loop
        // has no early exit and vectorizes: layers check their multipliers each time they
        // run, one pair per output channel.
        let valid = raw.chunks_exact(2).fold(true, |ok, p| {
            ok & (p[0] >= 0) & (p[1] >= Self::MIN_SHIFT) & (p[1] <= Self::MAX_SHIFT)
        });
        if !valid {
            return None;
        }
        // SAFETY: `QuantizedMultiplier` is `repr(C)` with two `i32` fields, so it has the size
        // and alignment of `[i32; 2]` and no padding; every pair was checked to satisfy the
        // type's invariants just above.
        Some(unsafe {
            core::slice::from_raw_parts(raw.as_ptr().cast::<QuantizedMultiplier>(), raw.len() / 2)
        })
    }

    /// The view of [`QuantizedMultiplier::slice_from_raw`] for a run it accepted before: the
    /// interpreter checks each layer's multipliers once, when it starts, and the model's bytes
    /// cannot change while it runs. A trailing odd element is left out.
    pub(crate) fn slice_from_checked_raw(raw: &[i32]) -> &[QuantizedMultiplier] {
        // SAFETY: `QuantizedMultiplier` is `repr(C)` with two `i32` fields, so it has the size
        // and alignment of `[i32; 2]` and no padding. Its value invariants are not needed for
        // memory safety; the caller's earlier check guarantees them.
        unsafe {
            core::slice::from_raw_parts(raw.as_ptr().cast::<QuantizedMultiplier>(), raw.len() / 2)
        }
    }

    /// The stored form, `[multiplier, shift]`.
    pub const fn to_raw(self) -> [i32; 2] {
        [self.multiplier, self.shift]
    }

    /// Quantizes a real multiplier exactly as TFLite's `QuantizeMultiplier` does: `frexp`, round
    /// half away from zero to Q31, renormalise when rounding reaches 1.0, flush tiny values to
    /// zero and saturate huge ones.
    pub fn from_real(real: f64) -> Result<Self, Error> {
        if !real.is_finite() || real < 0.0 {
            return Err(Error::InvalidQuantization(QuantField::Scale));
        }
        if real == 0.0 {
            return Ok(Self::default());
        }
        let (fraction, mut shift) = libm::frexp(real);
        let mut q_fixed = libm::round(fraction * (1i64 << 31) as f64) as i64;
        if q_fixed == 1i64 << 31 {
            q_fixed /= 2;
            shift += 1;
        }
        if shift < Self::MIN_SHIFT {
            shift = 0;
            q_fixed = 0;
        }
        if shift > Self::MAX_SHIFT {
            shift = Self::MAX_SHIFT;
            q_fixed = i32::MAX as i64;
        }
        Ok(Self {
            multiplier: q_fixed as i32,
            shift,
        })
    }

    /// The Q31 mantissa.
    pub const fn multiplier(self) -> i32 {
        self.multiplier
    }

    /// The power-of-two exponent (positive shifts left).
    pub const fn shift(self) -> i32 {
        self.shift
    }

    /// The real value this multiplier stands for.
    pub fn to_real(self) -> f64 {
        self.multiplier as f64 * libm::exp2(f64::from(self.shift) - 31.0)
    }

    /// Scales an accumulator: TFLite's `MultiplyByQuantizedMultiplier` (the default "double
    /// rounding" variant that TFLite's reference kernels and CMSIS-NN both use).
    ///
    /// The left shift wraps on overflow, as the C reference does on every real compiler; a
    /// model whose accumulators overflow there is outside TFLite's specification anyway.
    #[inline]
    pub const fn apply(self, x: i32) -> i32 {
        let (left, right) = self.exponents();
        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(x.wrapping_shl(left), self.multiplier),
            right,
        )
    }
}

impl QuantizedMultiplier {
    /// The shift as `(left, right)` exponents, one of them 0: `apply` shifts left by the
    /// first before the high multiply and divides by `2^right` after it. The vector kernels
    /// prepare their constants from these.
    #[inline]
    pub(crate) const fn exponents(self) -> (u32, u32) {
        // The shift is in MIN_SHIFT..=MAX_SHIFT (the constructors guarantee it), so both
        // exponents are at most 31.
        if self.shift > 0 {
            (self.shift as u32, 0)
        } else {
            (0, self.shift.unsigned_abs())
        }
    }

    /// Largest shift a 16x8 layer's multiplier may have: [`QuantizedMultiplier::apply_wide`]
    /// shifts right by `15 - shift`, which must stay positive (TFLite checks `shift < 8`).
    pub const MAX_WIDE_SHIFT: i32 = 7;

    /// Scales a 64-bit accumulator of a 16x8 layer (int16 activations, int8 weights): TFLite's
    /// `MultiplyByQuantizedMultiplier(int64_t, ...)`, which rounds the Q31 multiplier to 15
    /// bits and shifts once with round-half-up, so `x` of up to 2^47 in magnitude cannot
    /// overflow. The shift must be at most [`QuantizedMultiplier::MAX_WIDE_SHIFT`] (layer
    /// validation checks it); larger accumulators wrap instead of trapping, and a result
    /// outside `i32` is truncated as the C reference's cast does.
    #[inline]
    pub const fn apply_wide(self, x: i64) -> i32 {
        let reduced: i64 = if self.multiplier < 0x7FFF_0000 {
            ((self.multiplier + (1 << 15)) >> 16) as i64
        } else {
            0x7FFF
        };
        let shift = if self.shift > Self::MAX_WIDE_SHIFT {
            Self::MAX_WIDE_SHIFT
        } else {
            self.shift
        };
        let total_shift = (15 - shift) as u32;
        let rounded = x
            .wrapping_mul(reduced)
            .wrapping_add(1i64 << (total_shift - 1));
        (rounded >> total_shift) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Independent model of `saturating_rounding_doubling_high_mul`: exact rational arithmetic,
    /// floor((a*b + 2^30) / 2^31).
    fn srdhm_model(a: i32, b: i32) -> i32 {
        let exact = (i128::from(a) * i128::from(b) + (1 << 30)).div_euclid(1 << 31);
        exact.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
    }

    /// Independent model of `rounding_divide_by_pot`: round half away from zero.
    fn rdbpot_model(x: i32, exponent: u32) -> i32 {
        let d = 1i128 << exponent;
        let x = i128::from(x);
        let q = (x.abs() * 2 + d) / (2 * d);
        (if x < 0 { -q } else { q }) as i32
    }

    proptest! {
        #[test]
        fn srdhm_matches_exact_model(a in any::<i32>(), b in any::<i32>()) {
            prop_assert_eq!(saturating_rounding_doubling_high_mul(a, b), srdhm_model(a, b));
        }

        #[test]
        fn rdbpot_matches_exact_model(x in any::<i32>(), exponent in 0u32..=31) {
            prop_assert_eq!(rounding_divide_by_pot(x, exponent), rdbpot_model(x, exponent));
        }

        /// The in-place view accepts a run exactly when `new` accepts each of its pairs, the
        /// bad pair anywhere in it (the view checks all pairs without stopping early).
        #[test]
        fn slice_from_raw_accepts_what_new_accepts(
            pairs in prop::collection::vec(
                (prop_oneof![Just(0), Just(-1), Just(i32::MIN), 1i32 << 30..=i32::MAX],
                 prop_oneof![Just(-32), Just(31), -31i32..=30]),
                0..12,
            ),
        ) {
            let raw: Vec<i32> = pairs.iter().flat_map(|&(m, s)| [m, s]).collect();
            let each = pairs.iter().all(|&(m, s)| QuantizedMultiplier::new(m, s).is_ok());
            prop_assert_eq!(QuantizedMultiplier::slice_from_raw(&raw).is_some(), each);
            prop_assert!(QuantizedMultiplier::slice_from_raw(&raw[..raw.len().saturating_sub(1)])
                .is_none() || raw.is_empty());
        }

        #[test]
        fn from_real_round_trips(real in 1e-9f64..1e9) {
            let m = QuantizedMultiplier::from_real(real).unwrap();
            prop_assert!(((m.to_real() - real) / real).abs() <= 1.0 / (1u64 << 30) as f64);
        }

        /// `apply_wide` against exact rational arithmetic on TFLite's definition:
        /// floor((x * reduced + 2^(t-1)) / 2^t) with t = 15 - shift.
        #[test]
        fn apply_wide_matches_exact_model(
            base in any::<i32>(),
            spread in 0u32..=16,
            real in 1e-9f64..2.0,
        ) {
            // Accumulators up to 2^47 against multipliers small enough to keep the result
            // in range, as in a real layer.
            let x = i64::from(base) << spread;
            let m = QuantizedMultiplier::from_real(real / f64::from(1u32 << spread)).unwrap();
            prop_assume!(m.shift() <= QuantizedMultiplier::MAX_WIDE_SHIFT);
            let reduced = if m.multiplier() < 0x7FFF_0000 {
                (i128::from(m.multiplier()) + (1 << 15)) >> 16
            } else {
                0x7FFF
            };
            let t = 15 - m.shift();
            let exact = (i128::from(x) * reduced + (1i128 << (t - 1))).div_euclid(1i128 << t);
            prop_assume!(exact >= i128::from(i32::MIN) && exact <= i128::from(i32::MAX));
            prop_assert_eq!(i128::from(m.apply_wide(x)), exact);
        }

        /// The 15-bit multiplier costs at most one step besides the rounding, over the outputs
        /// an int16 layer can produce.
        #[test]
        fn apply_wide_is_within_two_of_real_product(
            base in -(1i64 << 15)..(1i64 << 15),
            spread in 0u32..=24,
            real in 1e-3f64..1.0,
        ) {
            let x = base << spread;
            let m = QuantizedMultiplier::from_real(real / f64::from(1u32 << spread)).unwrap();
            let exact = libm::round(x as f64 * m.to_real());
            prop_assert!((f64::from(m.apply_wide(x)) - exact).abs() <= 2.0);
        }

        #[test]
        fn apply_is_within_one_of_real_product(x in -(1i32 << 24)..(1 << 24), real in 1e-6f64..1.0) {
            let m = QuantizedMultiplier::from_real(real).unwrap();
            let exact = libm::round(f64::from(x) * m.to_real());
            prop_assert!((f64::from(m.apply(x)) - exact).abs() <= 1.0);
        }
    }
}
