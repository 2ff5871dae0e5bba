//! The fixed-point math the int8 softmax kernels need: gemmlowp's `fixedpoint.h`
//! (`exp_on_negative_values`, `one_over_one_plus_x_for_x_in_0_1`, `Rescale`, ...) and the
//! TFLite helpers built on it in `kernels/internal/common.h` (`GetReciprocal`,
//! `log_x_for_x_greater_than_or_equal_to_1`), transcribed operation for operation.
//!
//! A value is a raw `i32` in gemmlowp's `FixedPoint<int32, m>` format: `m` integer bits, so
//! it stands for `raw / 2^(31 - m)`. Each function names the formats it reads and returns.
//! Multiplying formats adds their integer bits (`FixedPoint` `operator*` is
//! `SaturatingRoundingDoublingHighMul`). Plain additions wrap where the C++ adds plainly
//! (overflow there is undefined; the kernels' inputs never overflow), so nothing here panics.

use crate::fixed_point::{rounding_divide_by_pot, saturating_rounding_doubling_high_mul};

/// gemmlowp `FixedPoint` multiplication.
#[inline]
pub(crate) fn mul(a: i32, b: i32) -> i32 {
    saturating_rounding_doubling_high_mul(a, b)
}

/// gemmlowp's `SaturatingRoundingMultiplyByPOT<exponent>` (and TFLite's
/// `SaturatingRoundingMultiplyByPOTParam`): `x * 2^exponent`, saturating for a positive
/// exponent, rounding to nearest (ties away from zero) for a negative one.
#[inline]
pub(crate) fn multiply_by_pot(x: i32, exponent: i32) -> i32 {
    if exponent > 0 {
        let e = exponent.min(31) as u32;
        let threshold = ((1i64 << (31 - e)) - 1) as i32;
        if x > threshold {
            i32::MAX
        } else if x < -threshold {
            i32::MIN
        } else {
            // |x| <= 2^(31 - e) - 1, so the shifted value fits.
            x << e
        }
    } else if exponent < 0 {
        rounding_divide_by_pot(x, exponent.unsigned_abs())
    } else {
        x
    }
}

/// gemmlowp's `Rescale`: the same value moved from `src_bits` to `dst_bits` integer bits.
#[inline]
pub(crate) fn rescale(x: i32, src_bits: i32, dst_bits: i32) -> i32 {
    multiply_by_pot(x, src_bits - dst_bits)
}

/// gemmlowp's `RoundingHalfSum`: `(a + b) / 2` rounded to nearest, ties away from zero.
#[inline]
pub(crate) fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = i64::from(a) + i64::from(b);
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// `exp(a)` for `a` in `[-1/4, 0)`: Q0.31 in, Q0.31 out. gemmlowp's
/// `exp_on_interval_between_negative_one_quarter_and_0_excl`, a Taylor expansion around
/// `-1/8`.
pub(crate) fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const CONSTANT_TERM: i32 = 1_895_147_668; // exp(-1/8)
    const CONSTANT_1_OVER_3: i32 = 715_827_883;
    let x = a.wrapping_add(1 << 28);
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = multiply_by_pot(x4, -2);
    let x4_over_24_plus_x3_over_6_plus_x2_over_2 = multiply_by_pot(
        mul(x4_over_4.wrapping_add(x3), CONSTANT_1_OVER_3).wrapping_add(x2),
        -1,
    );
    CONSTANT_TERM.wrapping_add(mul(
        CONSTANT_TERM,
        x.wrapping_add(x4_over_24_plus_x3_over_6_plus_x2_over_2),
    ))
}

/// `exp(a)` for `a <= 0` with `integer_bits` integer bits (0..=30), result in Q0.31.
/// gemmlowp's `exp_on_negative_values`: the fractional quarter by
/// [`exp_on_interval_between_negative_one_quarter_and_0_excl`], the rest by a barrel shifter
/// of `exp(-2^k)` constants.
pub(crate) fn exp_on_negative_values(a: i32, integer_bits: i32) -> i32 {
    let fractional_bits = 31 - integer_bits;
    let one_quarter = 1i32 << (fractional_bits - 2);
    let mask = one_quarter - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(one_quarter);
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(rescale(
        a_mod_quarter_minus_one_quarter,
        integer_bits,
        0,
    ));
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    // (exponent, exp(-2^exponent) in Q0.31)
    const BARREL: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    for (exponent, multiplier) in BARREL {
        if integer_bits > exponent {
            // integer_bits > exponent keeps the shift below 31.
            let shift = fractional_bits + exponent;
            if remainder & (1 << shift) != 0 {
                result = mul(result, multiplier);
            }
        }
    }
    if integer_bits > 5 {
        // exp(-32) and below are zero.
        let clamp = -(1i32 << (36 - integer_bits));
        if a < clamp {
            result = 0;
        }
    }
    if a == 0 { i32::MAX } else { result }
}

/// `1 / (1 + a)` for `a` in `[0, 1)`: Q0.31 in, Q0.31 out. gemmlowp's
/// `one_over_one_plus_x_for_x_in_0_1`, three Newton-Raphson steps from `48/17 - 32/17 d`.
pub(crate) fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    const CONSTANT_48_OVER_17: i32 = 1_515_870_810; // Q2.29
    const CONSTANT_NEG_32_OVER_17: i32 = -1_010_580_540; // Q2.29
    const F2_ONE: i32 = 1 << 29;
    // Q0.31: (1 + a) / 2.
    let half_denominator = rounding_half_sum(a, i32::MAX);
    // Q2.29 throughout.
    let mut x = CONSTANT_48_OVER_17.wrapping_add(mul(half_denominator, CONSTANT_NEG_32_OVER_17));
    for _ in 0..3 {
        let half_denominator_times_x = mul(half_denominator, x);
        let one_minus_half_denominator_times_x = F2_ONE.wrapping_sub(half_denominator_times_x);
        // Q2 * Q2 is Q4, brought back to Q2.
        x = x.wrapping_add(rescale(mul(x, one_minus_half_denominator_times_x), 4, 2));
    }
    // `ExactMulByPot<-1>` halves the value by relabelling Q2.29 as Q1.30; then to Q0.31.
    rescale(x, 1, 0)
}

/// TFLite's `GetReciprocal`: for `x` with `x_integer_digits` integer bits, returns
/// `(shifted_scale, num_bits_over_unit)` where `shifted_scale` (Q0.31) is
/// `1 / (x / 2^num_bits_over_unit)`, the reciprocal of `x` normalised into `(1/2, 1]`.
pub(crate) fn get_reciprocal(x: i32, x_integer_digits: i32) -> (i32, i32) {
    let headroom_plus_one = (x as u32).leading_zeros();
    let num_bits_over_unit = x_integer_digits - headroom_plus_one as i32;
    // The C++ shifts a uint32 by the leading-zero count; only x == 0 (never a real sum)
    // would shift by 32, which is given 0 here instead of undefined behaviour.
    let shifted = (x as u32).checked_shl(headroom_plus_one).unwrap_or(0);
    let shifted_sum_minus_one = shifted.wrapping_sub(1 << 31) as i32;
    (
        one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one),
        num_bits_over_unit,
    )
}

/// `ln(x)` for `x >= 1`: `x` with `input_bits` integer bits, the result with `output_bits`.
/// TFLite's `log_x_for_x_greater_than_or_equal_to_1_impl`: `x = 2^z * r` with `r` in
/// `[sqrt(1/2), sqrt(2))`, `ln(x) = z ln 2 + ln(r)` with a rational approximation of `ln(r)`
/// around `2^(-1/4)`.
pub(crate) fn log_x_for_x_greater_than_or_equal_to_1(
    input: i32,
    output_bits: i32,
    input_bits: i32,
) -> i32 {
    // Q0.31 constants.
    const LOG_2: i32 = 1_488_522_236;
    const SQRT_SQRT_HALF: i32 = 1_805_811_301;
    const SQRT_HALF: i32 = 1_518_500_250;
    const ONE_QUARTER: i32 = 536_870_912;
    const ALPHA_N: i32 = 117_049_297;
    const ALPHA_D: i32 = 127_690_142;
    const ALPHA_I: i32 = 1_057_819_769;
    const ALPHA_F: i32 = 638_450_708;
    // One bit of headroom over the output: `z_pow_2_adj * log_2` may saturate.
    let accum_bits = output_bits + 1;
    let shifted_quarter = rescale(ONE_QUARTER, 0, accum_bits);

    // The input reinterpreted as Q0.31; the shifts below find its power of two.
    let z_a = input;
    let z_a_headroom_plus_1 = (z_a as u32).leading_zeros() as i32;
    let r_a_tmp = multiply_by_pot(z_a, z_a_headroom_plus_1 - 1);
    let r_a_raw = multiply_by_pot(mul(r_a_tmp, SQRT_HALF), 1);
    let z_a_pow_2_adj = multiply_by_pot(input_bits - z_a_headroom_plus_1, 31 - accum_bits)
        .saturating_add(shifted_quarter);

    // z_b is z_a premultiplied by sqrt(1/2).
    let z_b = mul(z_a, SQRT_HALF);
    let z_b_headroom = (z_b as u32).leading_zeros() as i32 - 1;
    let r_b_raw = multiply_by_pot(z_a, z_b_headroom);
    let z_b_pow_2_adj =
        multiply_by_pot(input_bits - z_b_headroom, 31 - accum_bits).saturating_sub(shifted_quarter);

    let r = r_a_raw.min(r_b_raw);
    let z_pow_2_adj = z_a_pow_2_adj.max(z_b_pow_2_adj);

    let p = rounding_half_sum(r, SQRT_SQRT_HALF);
    let mut q = r.wrapping_sub(SQRT_SQRT_HALF);
    q = q.wrapping_add(q);

    let common_sq = mul(q, q);
    let num = mul(q, r).wrapping_add(mul(mul(q, common_sq), ALPHA_N));
    let denom_minus_one_0 = mul(
        p,
        ALPHA_I
            .wrapping_add(q)
            .wrapping_add(mul(ALPHA_D, common_sq)),
    )
    .wrapping_add(mul(ALPHA_F, q));
    let recip_denom = one_over_one_plus_x_for_x_in_0_1(denom_minus_one_0);

    let num_scaled = rescale(num, 0, accum_bits);
    rescale(
        mul(z_pow_2_adj, LOG_2).wrapping_add(mul(num_scaled, recip_denom)),
        accum_bits,
        output_bits,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn real(raw: i32, integer_bits: i32) -> f64 {
        f64::from(raw) / libm::exp2(f64::from(31 - integer_bits))
    }

    /// Exact model of the saturating/rounding power-of-two multiply.
    fn multiply_by_pot_model(x: i32, exponent: i32) -> i32 {
        let x = i128::from(x);
        let v = if exponent >= 0 {
            x << exponent
        } else {
            let d = 1i128 << -exponent;
            let q = (x.abs() * 2 + d) / (2 * d);
            if x < 0 { -q } else { q }
        };
        v.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
    }

    proptest! {
        #[test]
        fn multiply_by_pot_saturates_and_rounds(x in any::<i32>(), exponent in -31i32..=31) {
            prop_assert_eq!(multiply_by_pot(x, exponent), multiply_by_pot_model(x, exponent));
        }

        #[test]
        fn rounding_half_sum_rounds_half_away(a in any::<i32>(), b in any::<i32>()) {
            let sum = i128::from(a) + i128::from(b);
            let want = if sum >= 0 { (sum + 1) / 2 } else { -((-sum + 1) / 2) };
            prop_assert_eq!(i128::from(rounding_half_sum(a, b)), want);
        }

        /// exp on Q5.26 inputs over the whole range softmax uses, against f64.
        #[test]
        fn exp_on_negative_values_matches_f64(a in i32::MIN..=0) {
            let got = real(exp_on_negative_values(a, 5), 0);
            let want = libm::exp(real(a, 5));
            prop_assert!((got - want).abs() <= 4e-7 * want + 2e-9, "exp({}) = {} want {}", real(a, 5), got, want);
        }

        /// ... and with other integer-bit counts, including the clamp below -32.
        #[test]
        fn exp_on_negative_values_with_other_formats(a in i32::MIN..=0, integer_bits in prop_oneof![Just(0), Just(2), Just(5), Just(10)]) {
            let x = real(a, integer_bits);
            prop_assume!(integer_bits > 0 || x >= -1.0);
            let got = real(exp_on_negative_values(a, integer_bits), 0);
            let want = libm::exp(x);
            prop_assert!((got - want).abs() <= 4e-7 * want + 2e-9, "exp({}) = {} want {}", x, got, want);
        }

        #[test]
        fn one_over_one_plus_x_matches_f64(a in 0i32..=i32::MAX) {
            let got = real(one_over_one_plus_x_for_x_in_0_1(a), 0);
            let want = 1.0 / (1.0 + real(a, 0));
            prop_assert!((got - want).abs() <= 1e-8, "1/(1+{}) = {} want {}", real(a, 0), got, want);
        }

        /// The reciprocal of a softmax sum (Q12.19), as the kernel uses it.
        #[test]
        fn reciprocal_matches_f64(x in (1i32 << 19)..=i32::MAX) {
            let (scale, bits_over_unit) = get_reciprocal(x, 12);
            let got = real(scale, 0) / libm::exp2(f64::from(bits_over_unit));
            let want = 1.0 / real(x, 12);
            prop_assert!((got - want).abs() <= 1e-8 * want, "1/{} = {} want {}", real(x, 12), got, want);
        }

        /// The log of a softmax sum (Q12.19, at least 1) into Q5.26, as log-softmax uses it.
        #[test]
        fn log_matches_f64(x in (1i32 << 19)..=i32::MAX) {
            let got = real(log_x_for_x_greater_than_or_equal_to_1(x, 5, 12), 5);
            let want = libm::log(real(x, 12));
            prop_assert!((got - want).abs() <= 1e-6, "ln({}) = {} want {}", real(x, 12), got, want);
        }
    }

    #[test]
    fn exact_points() {
        // exp(0) is the largest Q0.31 value; exp(-1/4) comes from the Taylor expansion
        // alone, exp(-1/4 - 1) from it and one barrel constant.
        assert_eq!(exp_on_negative_values(0, 5), i32::MAX);
        let quarter = 1 << 24;
        let e = real(exp_on_negative_values(-quarter, 5), 0);
        assert!((e - libm::exp(-0.25)).abs() < 5e-7, "{e}");
        let e = real(exp_on_negative_values(-5 * quarter, 5), 0);
        assert!((e - libm::exp(-1.25)).abs() < 5e-7, "{e}");
        // 1 / (1 + 0) is one (saturated); 1 / (1 + 1/2) is 2/3.
        assert!(one_over_one_plus_x_for_x_in_0_1(0) >= i32::MAX - 4);
        let two_thirds = one_over_one_plus_x_for_x_in_0_1(1 << 30);
        assert!((real(two_thirds, 0) - 2.0 / 3.0).abs() < 1e-8);
        // ln(1) is 0 (to within the approximation), ln(2^12 - eps) close to 12 ln 2.
        assert!(log_x_for_x_greater_than_or_equal_to_1(1 << 19, 5, 12).abs() <= 64);
        let ln_max = real(log_x_for_x_greater_than_or_equal_to_1(i32::MAX, 5, 12), 5);
        assert!((ln_max - 12.0 * core::f64::consts::LN_2).abs() < 1e-6);
        // The reciprocal of 1.0 (Q12.19) is 1.0 in (1/2, 1] with no extra bits.
        let (scale, bits) = get_reciprocal(1 << 19, 12);
        assert_eq!(bits, 0);
        assert!(scale >= i32::MAX - 4);
    }
}
