use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::fixed_point::QuantizedMultiplier;
#[cfg(target_arch = "x86_64")]
use crate::fixed_point::{rounding_divide_by_pot, saturating_rounding_doubling_high_mul};
use crate::ops::RequantizeParams;

fn acc_value() -> impl Strategy<Value = i32> {
    prop_oneof![
        any::<i32>(),
        -(1i32 << 20)..(1 << 20),
        Just(i32::MIN),
        Just(i32::MAX),
        Just(0),
    ]
}

fn multiplier() -> impl Strategy<Value = QuantizedMultiplier> {
    prop_oneof![
        (
            0i32..=i32::MAX,
            QuantizedMultiplier::MIN_SHIFT..=QuantizedMultiplier::MAX_SHIFT
        )
            .prop_map(|(m, s)| QuantizedMultiplier::new(m, s).unwrap()),
        (1e-6f64..4.0).prop_map(|r| QuantizedMultiplier::from_real(r).unwrap()),
    ]
}

proptest! {
    /// The vector row requantization gives the scalar's bytes for any accumulators, biases,
    /// multipliers (per tensor or per channel), zero points and clamp ranges.
    #[test]
    fn vector_rows_match_the_scalar(
        acc in prop::collection::vec(acc_value(), 0..40),
        bias in prop::collection::vec(acc_value(), 40),
        multipliers in prop::collection::vec(multiplier(), 40),
        per_channel in any::<bool>(),
        with_bias in any::<bool>(),
        zp in any::<i8>(),
        (lo, hi) in (any::<i8>(), any::<i8>()),
        first in 0usize..3,
    ) {
        let multipliers = if per_channel { multipliers } else { multipliers[..1].to_vec() };
        let params = RequantizeParams {
            input_zero_point: 0,
            output_zero_point: i32::from(zp),
            multipliers: &multipliers,
            activation_min: lo.min(hi),
            activation_max: lo.max(hi),
        };
        let n = acc.len().min(40 - first);
        let acc = &acc[..n];
        let bias = with_bias.then_some(&bias[..]);
        let mut want = vec![0i8; n];
        requantize_row_scalar(&params, acc, bias, first, &mut want);
        let mut got: Vec<i8> = vec![0; n];
        #[cfg(target_arch = "x86_64")]
        if crate::isa::Isa::Avx2.available() {
            // SAFETY: AVX2 was detected; lengths satisfy the contract (40 channels exist).
            unsafe { x86::requantize_row(&params, acc, bias, first, &mut got) };
            prop_assert_eq!(&got, &want);
            // Several rows sharing the channels, written at their own offsets: the row
            // reversed into the front of a buffer, the row itself after a gap.
            let reversed: Vec<i32> = acc.iter().rev().copied().collect();
            let mut want_reversed = vec![0i8; n];
            requantize_row_scalar(&params, &reversed, bias, first, &mut want_reversed);
            let mut both = vec![0i8; 2 * n + 3];
            // SAFETY: as above; both rows' outputs lie inside `both`.
            unsafe {
                x86::requantize_rows(&params, &[&reversed, acc], bias.map(|b| &b[first..]), first, &mut both, &[0, n + 3])
            };
            prop_assert_eq!(&both[..n], &want_reversed[..]);
            prop_assert_eq!(&both[n + 3..], &want[..]);
        }
        #[cfg(target_arch = "x86_64")]
        if crate::isa::Isa::Avx512Vnni.available() {
            // Sixteen channels a step, a masked partial step at the end.
            let mut got = vec![0i8; n + 1];
            // SAFETY: AVX-512 F/BW and BMI2 were detected; lengths satisfy the contract.
            unsafe { x86_avx512::requantize_row(&params, acc, bias, first, &mut got) };
            prop_assert_eq!(&got[..n], &want[..]);
            prop_assert_eq!(got[n], 0, "a byte past the row was written");
            // Thirty-seven rows sharing the channels (one call of 32, one of five, padded to
            // eight), each the row rotated by its index, written with a gap of two bytes
            // after each.
            let rows: Vec<Vec<i32>> = (0..37)
                .map(|r| {
                    let mut row = acc.to_vec();
                    if n > 0 {
                        row.rotate_left(r % n);
                    }
                    row
                })
                .collect();
            let views: Vec<&[i32]> = rows.iter().map(Vec::as_slice).collect();
            let starts: Vec<usize> = (0..37).map(|r| r * (n + 2)).collect();
            let mut all = vec![0i8; 37 * (n + 2)];
            // SAFETY: as above; every row's output lies inside `all`.
            unsafe {
                x86_avx512::requantize_rows(&params, &views, bias.map(|b| &b[first..]), first, &mut all, &starts)
            };
            for (r, row) in rows.iter().enumerate() {
                let mut want_row = vec![0i8; n];
                requantize_row_scalar(&params, row, bias, first, &mut want_row);
                prop_assert_eq!(&all[starts[r]..starts[r] + n], &want_row[..], "row {}", r);
                prop_assert_eq!(&all[starts[r] + n..starts[r] + n + 2], &[0i8, 0][..]);
            }
            // Three rows: fewer than a table pays for, each step's constants computed in
            // registers.
            let mut few = vec![0i8; 3 * (n + 2)];
            // SAFETY: as above; every row's output lies inside `few`.
            unsafe {
                x86_avx512::requantize_rows(&params, &views[..3], bias.map(|b| &b[first..]), first, &mut few, &starts[..3])
            };
            prop_assert_eq!(&few[..], &all[..3 * (n + 2)]);
        }
        let _ = &mut got;
    }

    /// The vector fixed-point primitives agree with the scalar ones lane by lane (the high
    /// multiply for the non-negative multipliers it is written for).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_primitives_match_the_scalar(
        a in prop::collection::vec(acc_value(), 8),
        b in prop::collection::vec(prop_oneof![0i32..=i32::MAX, Just(i32::MAX), Just(0)], 8),
        e in prop::collection::vec(0u32..=31, 8),
    ) {
        #[cfg(target_arch = "x86_64")]
        if crate::isa::Isa::Avx2.available() {
            use core::arch::x86_64::*;
            let mut high = [0i32; 8];
            let mut divided = [0i32; 8];
            // SAFETY: AVX2 was detected; every pointer covers eight i32.
            unsafe {
                let va = _mm256_loadu_si256(a.as_ptr().cast());
                let vb = _mm256_loadu_si256(b.as_ptr().cast());
                let ve = _mm256_loadu_si256(e.as_ptr().cast());
                let odd = _mm256_srli_epi64::<32>(vb);
                _mm256_storeu_si256(high.as_mut_ptr().cast(), x86::doubling_high_mul(va, vb, odd));
                let masks = x86::divide_masks(ve);
                _mm256_storeu_si256(divided.as_mut_ptr().cast(), x86::rounding_divide_by_pot(va, ve, masks));
            }
            for l in 0..8 {
                prop_assert_eq!(high[l], saturating_rounding_doubling_high_mul(a[l], b[l]));
                prop_assert_eq!(divided[l], rounding_divide_by_pot(a[l], e[l]));
            }
        }
    }
}

#[test]
fn the_saturating_corner_cases_match() {
    let m = [
        QuantizedMultiplier::new(i32::MAX, 30).unwrap(),
        QuantizedMultiplier::new(i32::MIN.wrapping_neg().wrapping_sub(1), -31).unwrap(),
    ];
    for (zp, multiplier) in [-128, 127, 0].into_iter().flat_map(|zp| [(zp, 0), (zp, 1)]) {
        let params = RequantizeParams {
            input_zero_point: 0,
            output_zero_point: zp,
            multipliers: &m[multiplier..multiplier + 1],
            activation_min: -128,
            activation_max: 127,
        };
        let acc = [
            i32::MIN,
            i32::MAX,
            -1,
            1,
            0,
            1 << 30,
            -(1 << 30),
            12345,
            i32::MIN + 1,
        ];
        let mut want = [0i8; 9];
        requantize_row_scalar(&params, &acc, None, 0, &mut want);
        #[cfg(target_arch = "x86_64")]
        if crate::isa::Isa::Avx2.available() {
            let mut got = [0i8; 9];
            // SAFETY: AVX2 was detected; per-tensor multiplier, lengths equal.
            unsafe { x86::requantize_row(&params, &acc, None, 0, &mut got) };
            assert_eq!(got, want, "zero point {zp}, multiplier {multiplier}");
        }
        #[cfg(target_arch = "x86_64")]
        if crate::isa::Isa::Avx512Vnni.available() {
            let mut got = [0i8; 9];
            // SAFETY: AVX-512 F/BW and BMI2 were detected; per-tensor multiplier.
            unsafe { x86_avx512::requantize_row(&params, &acc, None, 0, &mut got) };
            assert_eq!(
                got, want,
                "AVX-512, zero point {zp}, multiplier {multiplier}"
            );
        }
    }
}

/// Writes `out[i] = params.output(acc[i] + bias[first + i], first + i)`: the portable form
/// (the vector forms' test oracle).
fn requantize_row_scalar(
    params: &RequantizeParams<'_>,
    acc: &[i32],
    bias: Option<&[i32]>,
    first: usize,
    out: &mut [i8],
) {
    for (i, (&a, o)) in acc.iter().zip(out.iter_mut()).enumerate() {
        let c = first + i;
        let a = a.wrapping_add(bias.map_or(0, |b| b[c]));
        *o = params.output(a, c);
    }
}
