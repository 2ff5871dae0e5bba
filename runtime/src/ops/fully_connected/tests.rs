use super::*;
use crate::fixed_point::QuantizedMultiplier;
use crate::selftest::{real_output, rearranged_accumulator};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

/// A random int8 fully-connected problem.
#[derive(Debug, Clone)]
struct Problem {
    shape: FullyConnectedShape,
    input_zero_point: i32,
    output_zero_point: i32,
    multipliers: Vec<QuantizedMultiplier>,
    activation: (i8, i8),
    input: Vec<i8>,
    weights: Vec<i8>,
    bias: Option<Vec<i32>>,
}

impl Problem {
    fn op(&self) -> FullyConnectedI8<'_> {
        FullyConnectedI8 {
            shape: self.shape,
            params: FullyConnectedI8Params {
                input_zero_point: self.input_zero_point,
                output_zero_point: self.output_zero_point,
                multipliers: &self.multipliers,
                activation_min: self.activation.0,
                activation_max: self.activation.1,
            },
            input: &self.input,
            weights: &self.weights,
            bias: self.bias.as_deref(),
        }
    }
}

fn problem() -> impl Strategy<Value = Problem> {
    (
        1usize..4,
        1usize..80,
        1usize..40,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(
            |(batch, in_features, out_features, per_channel, with_bias)| {
                let shape = FullyConnectedShape {
                    batch,
                    in_features,
                    out_features,
                };
                let channels = if per_channel { out_features } else { 1 };
                (
                    any::<i8>(),
                    any::<i8>(),
                    prop::collection::vec(1e-5f64..0.05, channels),
                    (any::<i8>(), any::<i8>()),
                    prop::collection::vec(any::<i8>(), batch * in_features),
                    prop::collection::vec(any::<i8>(), out_features * in_features),
                    prop::collection::vec(-(1i32 << 16)..(1 << 16), out_features),
                )
                    .prop_map(
                        move |(izp, ozp, reals, (a, b), input, weights, bias)| Problem {
                            shape,
                            input_zero_point: izp.into(),
                            output_zero_point: ozp.into(),
                            multipliers: reals
                                .into_iter()
                                .map(|r| QuantizedMultiplier::from_real(r).unwrap())
                                .collect(),
                            activation: (a.min(b), a.max(b)),
                            input,
                            weights,
                            bias: with_bias.then_some(bias),
                        },
                    )
            },
        )
}

proptest! {
    /// The reference agrees bit for bit with the TFLite requantization of an independently
    /// computed accumulator, and within one step of exact real arithmetic.
    #[test]
    fn reference_matches_independent_model(p in problem()) {
        let s = p.shape;
        let mut out = vec![0i8; s.batch * s.out_features];
        let op = p.op();
        fully_connected_i8(&op, &mut out).unwrap();
        for b in 0..s.batch {
            for o in 0..s.out_features {
                let acc = i32::try_from(rearranged_accumulator(&op, b, o)).unwrap();
                let (lo, hi) = (i32::from(p.activation.0), i32::from(p.activation.1));
                let fixed = (op.params.multiplier(o).apply(acc) + p.output_zero_point).clamp(lo, hi);
                let got = i32::from(out[b * s.out_features + o]);
                prop_assert_eq!(got, fixed);
                let real = real_output(&op, b, o);
                prop_assert!((f64::from(got) - real).abs() <= 1.0, "got {} real {}", got, real);
            }
        }
    }
}

#[test]
fn validation_names_the_wrong_operand() {
    let m = [QuantizedMultiplier::from_real(0.01).unwrap()];
    let input = [0i8; 6];
    let weights = [0i8; 12];
    let bias = [0i32; 4];
    let good = FullyConnectedI8 {
        shape: FullyConnectedShape {
            batch: 2,
            in_features: 3,
            out_features: 4,
        },
        params: FullyConnectedI8Params {
            input_zero_point: 0,
            output_zero_point: 0,
            multipliers: &m,
            activation_min: -128,
            activation_max: 127,
        },
        input: &input,
        weights: &weights,
        bias: Some(&bias),
    };
    let mut out = [0i8; 8];
    assert_eq!(fully_connected_i8(&good, &mut out), Ok(()));

    let mismatch = |operand, expected, actual| {
        Err(Error::ShapeMismatch {
            operand,
            expected,
            actual,
        })
    };
    assert_eq!(
        fully_connected_i8(&good, &mut out[..7]),
        mismatch(Operand::Output, 8, 7)
    );
    let op = FullyConnectedI8 {
        input: &input[..5],
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        mismatch(Operand::Input, 6, 5)
    );
    let op = FullyConnectedI8 {
        weights: &weights[..11],
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        mismatch(Operand::Weights, 12, 11)
    );
    let op = FullyConnectedI8 {
        bias: Some(&bias[..3]),
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        mismatch(Operand::Bias, 4, 3)
    );
    let two = [m[0]; 2];
    let op = FullyConnectedI8 {
        params: FullyConnectedI8Params {
            multipliers: &two,
            ..good.params
        },
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        mismatch(Operand::Multipliers, 4, 2)
    );
    let op = FullyConnectedI8 {
        params: FullyConnectedI8Params {
            input_zero_point: 128,
            ..good.params
        },
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        Err(Error::InvalidQuantization(QuantField::InputZeroPoint))
    );
    let op = FullyConnectedI8 {
        params: FullyConnectedI8Params {
            output_zero_point: -129,
            ..good.params
        },
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        Err(Error::InvalidQuantization(QuantField::OutputZeroPoint))
    );
    let op = FullyConnectedI8 {
        params: FullyConnectedI8Params {
            activation_min: 1,
            activation_max: 0,
            ..good.params
        },
        ..good
    };
    assert_eq!(
        fully_connected_i8(&op, &mut out),
        Err(Error::InvalidQuantization(QuantField::ActivationRange))
    );
    let op = FullyConnectedI8 {
        shape: FullyConnectedShape {
            batch: 0,
            ..good.shape
        },
        ..good
    };
    assert_eq!(fully_connected_i8(&op, &mut out), Err(Error::InvalidShape));
    let op = FullyConnectedI8 {
        shape: FullyConnectedShape {
            batch: usize::MAX,
            ..good.shape
        },
        ..good
    };
    assert_eq!(fully_connected_i8(&op, &mut out), Err(Error::InvalidShape));
}
