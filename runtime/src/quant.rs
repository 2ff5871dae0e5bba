//! Quantization parameters as TFLite computes them: affine activations with a nudged zero
//! point, symmetric per-channel weights, int32 biases in the accumulator's scale, and the
//! requantization multipliers the int8 kernels read. The tools call these when they write an
//! int8 model; the arithmetic must match TFLite's so that files agree bit for bit.

#[cfg(feature = "alloc")]
use crate::fixed_point::QuantizedMultiplier;

/// An affine quantization: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QuantParams {
    /// Real value of one step.
    pub scale: f32,
    /// The integer standing for real 0.
    pub zero_point: i32,
}

impl QuantParams {
    /// Parameters covering `[min, max]` (widened to include 0) with integers `qmin..=qmax`,
    /// zero point nudged to an integer as TFLite's `ChooseQuantizationParams` does.
    pub fn from_range(min: f32, max: f32, qmin: i32, qmax: i32) -> QuantParams {
        let min = min.min(0.0);
        let max = max.max(0.0);
        if !(min.is_finite() && max.is_finite()) || max == min {
            return QuantParams {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let (qmin_f, qmax_f) = (f64::from(qmin), f64::from(qmax));
        let scale = (f64::from(max) - f64::from(min)) / (qmax_f - qmin_f);
        let from_min = qmin_f - f64::from(min) / scale;
        let from_max = qmax_f - f64::from(max) / scale;
        let error_min = libm::fabs(qmin_f) + libm::fabs(f64::from(min) / scale);
        let error_max = libm::fabs(qmax_f) + libm::fabs(f64::from(max) / scale);
        let initial = if error_min < error_max {
            from_min
        } else {
            from_max
        };
        let zero_point = if initial < qmin_f {
            qmin
        } else if initial > qmax_f {
            qmax
        } else {
            libm::round(initial) as i32
        };
        QuantParams {
            scale: scale as f32,
            zero_point,
        }
    }

    /// int8 parameters for `[min, max]`.
    pub fn i8_from_range(min: f32, max: f32) -> QuantParams {
        Self::from_range(min, max, -128, 127)
    }

    /// Symmetric int16 parameters covering `[min, max]` (TFLite's 16x8 scheme: zero point 0,
    /// `scale = max(|min|, |max|) / 32767`).
    pub fn i16_from_range(min: f32, max: f32) -> QuantParams {
        let bound = libm::fabsf(min).max(libm::fabsf(max));
        QuantParams {
            scale: if bound > 0.0 && bound.is_finite() {
                bound / 32767.0
            } else {
                1.0
            },
            zero_point: 0,
        }
    }

    /// `round(x / scale) + zero_point` clamped to `qmin..=qmax` (ties away from zero, as
    /// TFLite's reference `Quantize`).
    pub fn quantize(&self, x: f32, qmin: i32, qmax: i32) -> i32 {
        let q = libm::roundf(x / self.scale);
        let q = if q.is_nan() { 0.0 } else { q.clamp(-3e9, 3e9) };
        (i64::from(self.zero_point) + q as i64).clamp(i64::from(qmin), i64::from(qmax)) as i32
    }

    /// `scale * (q - zero_point)`.
    pub fn dequantize(&self, q: i32) -> f32 {
        self.scale * (q - self.zero_point) as f32
    }
}

/// Symmetric int8 scale for values whose largest magnitude is `max_abs`: `max_abs / 127`
/// (TFLite's per-channel weight scheme uses `[-127, 127]`).
pub fn symmetric_scale(max_abs: f32) -> f32 {
    if max_abs > 0.0 && max_abs.is_finite() {
        max_abs / 127.0
    } else {
        1.0
    }
}

#[cfg(feature = "alloc")]
/// Quantizes weights symmetrically per output channel. `weights` is channel-major
/// (`channels` blocks of equal length) or, with `channel_last`, has the channel as the
/// fastest-varying index. Returns the int8 values and one scale per channel.
pub fn quantize_weights_per_channel(
    weights: &[f32],
    channels: usize,
    channel_last: bool,
) -> (alloc::vec::Vec<i8>, alloc::vec::Vec<f32>) {
    let channel_of = |i: usize| {
        if channel_last {
            i % channels
        } else {
            i / (weights.len() / channels.max(1)).max(1)
        }
    };
    let mut max_abs = alloc::vec![0.0f32; channels];
    for (i, &w) in weights.iter().enumerate() {
        let c = channel_of(i);
        max_abs[c] = max_abs[c].max(w.abs());
    }
    let scales: alloc::vec::Vec<f32> = max_abs.iter().map(|&m| symmetric_scale(m)).collect();
    let q = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let s = scales[channel_of(i)];
            (libm::roundf(w / s)).clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, scales)
}

#[cfg(feature = "alloc")]
/// int32 biases in the accumulator's scale `input_scale * weight_scale[c]`.
pub fn quantize_bias(
    bias: &[f32],
    input_scale: f32,
    weight_scales: &[f32],
) -> alloc::vec::Vec<i32> {
    bias.iter()
        .enumerate()
        .map(|(c, &b)| {
            let s =
                f64::from(input_scale) * f64::from(weight_scales[c.min(weight_scales.len() - 1)]);
            libm::round(f64::from(b) / s).clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        })
        .collect()
}

#[cfg(feature = "alloc")]
/// The requantization multipliers of a layer, `[multiplier, shift]` per channel, computed in
/// double precision from the float scales exactly as TFLite's `PopulateConvolutionQuantizationParams`.
pub fn layer_multipliers(
    input_scale: f32,
    weight_scales: &[f32],
    output_scale: f32,
) -> alloc::vec::Vec<i32> {
    weight_scales
        .iter()
        .flat_map(|&w| {
            let real = f64::from(input_scale) * f64::from(w) / f64::from(output_scale);
            QuantizedMultiplier::from_real(real)
                .unwrap_or_default()
                .to_raw()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parameters_match_tflite() {
        // [-1, 1] on int8: scale 2/255, zero point nudged to 0 (from -128 + 127.5).
        let q = QuantParams::i8_from_range(-1.0, 1.0);
        assert!((q.scale - 2.0 / 255.0).abs() < 1e-9);
        assert!(q.zero_point == 0 || q.zero_point == -1);
        // [0, 6] (ReLU6): zero point at the bottom.
        let q = QuantParams::i8_from_range(0.0, 6.0);
        assert_eq!(q.zero_point, -128);
        assert_eq!(q.quantize(6.0, -128, 127), 127);
        assert_eq!(q.quantize(0.0, -128, 127), -128);
        assert!((q.dequantize(127) - 6.0).abs() < 1e-6);
    }

    #[test]
    fn per_channel_weights_use_the_full_symmetric_range() {
        let w = [0.5, -1.0, 0.25, 2.0, 0.0, -0.5];
        let (q, s) = quantize_weights_per_channel(&w, 2, false);
        assert_eq!(s, [1.0 / 127.0, 2.0 / 127.0]);
        assert_eq!(q, [64, -127, 32, 127, 0, -32]);
        let (q, s) = quantize_weights_per_channel(&w, 2, true);
        assert_eq!(s, [0.5 / 127.0, 2.0 / 127.0]);
        assert_eq!(q[..2], [127, -64]);
    }
}
