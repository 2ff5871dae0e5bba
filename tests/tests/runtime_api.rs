//! The runtime as a user's crate sees it: public items only.

use loam::Error;
use loam::fixed_point::QuantizedMultiplier;
use loam::ops::fully_connected::{
    FullyConnectedI8, FullyConnectedI8Params, FullyConnectedShape, fully_connected_i8,
};

fn layer<'a>(
    input: &'a [i8],
    weights: &'a [i8],
    multipliers: &'a [QuantizedMultiplier],
) -> FullyConnectedI8<'a> {
    FullyConnectedI8 {
        shape: FullyConnectedShape {
            batch: 1,
            in_features: 4,
            out_features: 2,
        },
        params: FullyConnectedI8Params {
            input_zero_point: 0,
            output_zero_point: 0,
            multipliers,
            activation_min: -128,
            activation_max: 127,
        },
        input,
        weights,
        bias: None,
    }
}

#[test]
fn errors_say_which_operand_is_wrong() {
    let m = [QuantizedMultiplier::from_real(0.5).unwrap()];
    let mut out = [0i8; 2];
    let err = fully_connected_i8(&layer(&[1; 4], &[1; 7], &m), &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "weights has 7 elements but the shape needs 8"
    );
    let err = fully_connected_i8(&layer(&[1; 3], &[1; 8], &m), &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input has 3 elements but the shape needs 4"
    );
    // Usable wherever a std error is expected.
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(boxed.to_string().starts_with("input"));
}

#[test]
fn errors_are_small_and_copy() {
    fn is_copy<T: Copy>() {}
    is_copy::<Error>();
    assert!(std::mem::size_of::<Error>() <= 4 * std::mem::size_of::<usize>());
}

#[test]
fn a_layer_computes_through_the_public_api() {
    // Dot products 1+2+3+4 = 10 and -10, scaled by 0.5.
    let m = [QuantizedMultiplier::from_real(0.5).unwrap()];
    let weights = [1, 1, 1, 1, -1, -1, -1, -1];
    let mut out = [0i8; 2];
    fully_connected_i8(&layer(&[1, 2, 3, 4], &weights, &m), &mut out).unwrap();
    assert_eq!(out, [5, -5]);
}

#[test]
fn the_host_selftest_report_matches_the_golden_digest() {
    let report = loam_tools::selftest::run();
    assert!(report.passed(), "{}", report.text);
    assert_eq!(report.summary.digest, loam::selftest::GOLDEN_DIGEST);
    assert!(report.text.contains("fully_connected_i8.golden_digest"));
    assert!(
        report.text.ends_with("7 passed, 0 failed\n"),
        "{}",
        report.text
    );
}
