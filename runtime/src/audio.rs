//! The audio front end: log-mel energies or MFCCs from 16-bit or `f32` samples, frame by
//! frame, with no heap.
//!
//! The tools compute a data set's features with this same code (compiled with `std`), so a
//! keyword-spotting model sees on the board exactly the numbers it was trained on: every
//! step is plain `f32` arithmetic in a fixed order (no fused multiply-add, `libm` for the
//! transcendental functions), which rounds identically on every target.
//!
//! One frame: `window` samples, Hann-windowed and zero-padded to a 512-point real FFT; the
//! power spectrum summed by `mel_bands` triangular filters spaced evenly on the HTK mel scale
//! between `low_hz` and `high_hz`; `ln(energy + 1e-6)`; then, when `coefficients > 0`, the
//! first `coefficients` terms of the orthonormal DCT-II of those log energies (MFCCs).
//! Frames start every `hop` samples, so a clip of `n` samples gives
//! `1 + (n - window) / hop` frames (the layout TensorFlow's micro speech front end and the ARM
//! keyword-spotting models use: frames along the first axis, features along the second).
//!
//! The tables it needs (a quarter of a cosine period for the window and for the DCT, and the
//! filter edges) are computed once by [`Frontend::new`] and take 788 bytes.

use core::fmt;

use microfft::Complex32;

use crate::Model;

/// The FFT length: windows of up to 32 ms at 16 kHz.
pub const FFT_SIZE: usize = 512;
/// The most mel bands a front end can have.
pub const MAX_MEL_BANDS: usize = 64;

const BINS: usize = FFT_SIZE / 2 + 1;
/// Added to every mel energy before the logarithm, so silence gives a finite floor.
const LOG_FLOOR: f32 = 1e-6;

/// The names under which a model stores its front end (see [`FeatureConfig::constants`]).
pub const CONSTANTS: [&str; 7] = [
    "audio.sample_rate",
    "audio.window",
    "audio.hop",
    "audio.mel_bands",
    "audio.coefficients",
    "audio.low_hz",
    "audio.high_hz",
];

/// How features are computed from audio.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FeatureConfig {
    /// Samples per second of the audio.
    pub sample_rate: u32,
    /// Samples per frame: at most [`FFT_SIZE`], and a multiple of 4.
    pub window: u16,
    /// Samples from one frame's start to the next's.
    pub hop: u16,
    /// Triangular mel filters (1 to [`MAX_MEL_BANDS`]).
    pub mel_bands: u8,
    /// MFCCs per frame (at most `mel_bands`); 0 gives the log-mel energies themselves.
    pub coefficients: u8,
    /// The lowest frequency the filters cover, in Hz.
    pub low_hz: f32,
    /// The highest frequency the filters cover, in Hz (at most half the sample rate).
    pub high_hz: f32,
}

impl FeatureConfig {
    /// 10 MFCCs from 40 mel bands (20 Hz to 4 kHz) of 30 ms frames every 20 ms at 16 kHz:
    /// 49 frames of 10 for a one-second clip.
    pub const KEYWORDS: FeatureConfig = FeatureConfig {
        sample_rate: 16_000,
        window: 480,
        hop: 320,
        mel_bands: 40,
        coefficients: 10,
        low_hz: 20.0,
        high_hz: 4_000.0,
    };

    /// Values per frame: `coefficients`, or `mel_bands` for log-mel features.
    pub fn features_per_frame(&self) -> usize {
        if self.coefficients == 0 {
            usize::from(self.mel_bands)
        } else {
            usize::from(self.coefficients)
        }
    }

    /// Frames in a clip of `samples` samples.
    pub fn frames(&self, samples: usize) -> usize {
        let window = usize::from(self.window);
        if samples < window || self.hop == 0 {
            0
        } else {
            1 + (samples - window) / usize::from(self.hop)
        }
    }

    /// The configuration as named constants, in the order of [`CONSTANTS`], for storing in a
    /// model.
    pub fn constants(&self) -> [(&'static str, f32); 7] {
        [
            (CONSTANTS[0], self.sample_rate as f32),
            (CONSTANTS[1], f32::from(self.window)),
            (CONSTANTS[2], f32::from(self.hop)),
            (CONSTANTS[3], f32::from(self.mel_bands)),
            (CONSTANTS[4], f32::from(self.coefficients)),
            (CONSTANTS[5], self.low_hz),
            (CONSTANTS[6], self.high_hz),
        ]
    }

    /// Reads the front end a model was trained with: `Ok(None)` when the model stores none
    /// (it does not take audio features), an error when it stores a partial or invalid one.
    pub fn from_model(model: &Model<'_>) -> Result<Option<FeatureConfig>, AudioError> {
        if CONSTANTS.iter().all(|name| model.constant(name).is_none()) {
            return Ok(None);
        }
        let mut values = [0.0f32; 7];
        for (value, name) in values.iter_mut().zip(CONSTANTS) {
            let constant = model
                .constant(name)
                .ok_or(AudioError::MissingConstant(name))?;
            let mut all = constant.values();
            *value = match (all.next(), all.next()) {
                (Some(v), None) => v,
                _ => return Err(AudioError::MissingConstant(name)),
            };
        }
        let whole = |v: f32, field: &'static str, max: u32| {
            if v.is_finite() && v >= 0.0 && v <= max as f32 && v == libm::truncf(v) {
                Ok(v as u32)
            } else {
                Err(AudioError::InvalidConfig(field))
            }
        };
        let config = FeatureConfig {
            sample_rate: whole(values[0], "sample_rate", 1_000_000)?,
            window: whole(values[1], "window", u32::from(u16::MAX))? as u16,
            hop: whole(values[2], "hop", u32::from(u16::MAX))? as u16,
            mel_bands: whole(values[3], "mel_bands", u32::from(u8::MAX))? as u8,
            coefficients: whole(values[4], "coefficients", u32::from(u8::MAX))? as u8,
            low_hz: values[5],
            high_hz: values[6],
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks every field, naming the first that is out of range.
    pub fn validate(&self) -> Result<(), AudioError> {
        let bad = |field| Err(AudioError::InvalidConfig(field));
        if !(1_000..=1_000_000).contains(&self.sample_rate) {
            return bad("sample_rate");
        }
        if self.window == 0 || usize::from(self.window) > FFT_SIZE || self.window % 4 != 0 {
            return bad("window");
        }
        if self.hop == 0 {
            return bad("hop");
        }
        if self.mel_bands == 0 || usize::from(self.mel_bands) > MAX_MEL_BANDS {
            return bad("mel_bands");
        }
        if self.coefficients > self.mel_bands {
            return bad("coefficients");
        }
        let nyquist = self.sample_rate as f32 / 2.0;
        if !(self.low_hz.is_finite() && self.low_hz >= 0.0) {
            return bad("low_hz");
        }
        if !(self.high_hz.is_finite() && self.high_hz > self.low_hz && self.high_hz <= nyquist) {
            return bad("high_hz");
        }
        Ok(())
    }
}

/// Why features could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AudioError {
    /// A field of the [`FeatureConfig`] is out of range: its name.
    InvalidConfig(&'static str),
    /// The model stores part of a front end but lacks (or has a list for) this constant.
    MissingConstant(&'static str),
    /// A frame was given the wrong number of samples.
    FrameLength {
        /// The configured window.
        expected: usize,
        /// The samples given.
        actual: usize,
    },
    /// The output buffer is too small.
    OutputTooSmall {
        /// Values the features need.
        needed: usize,
        /// Values the buffer holds.
        actual: usize,
    },
}

impl fmt::Display for AudioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioError::InvalidConfig(field) => {
                write!(f, "audio front end: `{field}` is out of range")
            }
            AudioError::MissingConstant(name) => write!(
                f,
                "the model stores part of an audio front end but not a single `{name}` value"
            ),
            AudioError::FrameLength { expected, actual } => {
                write!(f, "a frame takes {expected} samples, got {actual}")
            }
            AudioError::OutputTooSmall { needed, actual } => write!(
                f,
                "features need {needed} values, the output holds {actual}"
            ),
        }
    }
}

impl core::error::Error for AudioError {}

/// An audio sample the front end reads: `i16` (full scale 32768) or `f32` (full scale 1).
pub trait Sample: Copy {
    /// The sample on the `f32` scale where full scale is 1.
    fn to_unit(self) -> f32;
}

impl Sample for f32 {
    fn to_unit(self) -> f32 {
        self
    }
}

impl Sample for i16 {
    fn to_unit(self) -> f32 {
        f32::from(self) * (1.0 / 32_768.0)
    }
}

/// A ready front end: its configuration and the tables computed from it.
#[derive(Debug, Clone)]
pub struct Frontend {
    config: FeatureConfig,
    /// `cos(2 pi n / window)` for `n` in `0..=window / 4`.
    window_cos: [f32; FFT_SIZE / 4 + 1],
    /// Filter edges in FFT-bin units: band `b` rises from `edges[b]` to `edges[b + 1]` and
    /// falls to `edges[b + 2]`.
    edges: [f32; MAX_MEL_BANDS + 2],
    /// `cos(k pi / (2 mel_bands))` for `k` in `0..=mel_bands`.
    dct_cos: [f32; MAX_MEL_BANDS + 1],
}

fn hz_to_mel(hz: f32) -> f32 {
    1127.0 * libm::logf(1.0 + hz / 700.0)
}

fn mel_to_hz(mel: f32) -> f32 {
    700.0 * (libm::expf(mel / 1127.0) - 1.0)
}

/// `cos(2 pi k / period)` from `quarter[m] = cos(2 pi m / period)`, `m <= period / 4`, for any
/// `k` in `0..period` (the table holds a quarter period; symmetry gives the rest).
fn cos_from_quarter(quarter: &[f32], period: usize, k: usize) -> f32 {
    let q = period / 4;
    let h = period / 2;
    if k <= q {
        quarter[k]
    } else if k <= h {
        -quarter[h - k]
    } else if k <= h + q {
        -quarter[k - h]
    } else {
        quarter[period - k]
    }
}

impl Frontend {
    /// Checks `config` and computes its tables.
    pub fn new(config: FeatureConfig) -> Result<Frontend, AudioError> {
        config.validate()?;
        let mut window_cos = [0.0f32; FFT_SIZE / 4 + 1];
        let window = f32::from(config.window);
        for (n, c) in window_cos
            .iter_mut()
            .take(usize::from(config.window) / 4 + 1)
            .enumerate()
        {
            *c = libm::cosf(2.0 * core::f32::consts::PI * n as f32 / window);
        }
        let bands = usize::from(config.mel_bands);
        let mut edges = [0.0f32; MAX_MEL_BANDS + 2];
        let (low, high) = (hz_to_mel(config.low_hz), hz_to_mel(config.high_hz));
        let hz_per_bin = config.sample_rate as f32 / FFT_SIZE as f32;
        for (i, edge) in edges.iter_mut().take(bands + 2).enumerate() {
            let mel = low + (high - low) * i as f32 / (bands + 1) as f32;
            *edge = mel_to_hz(mel) / hz_per_bin;
        }
        let mut dct_cos = [0.0f32; MAX_MEL_BANDS + 1];
        for (k, c) in dct_cos.iter_mut().take(bands + 1).enumerate() {
            *c = libm::cosf(core::f32::consts::PI * k as f32 / (2 * bands) as f32);
        }
        Ok(Frontend {
            config,
            window_cos,
            edges,
            dct_cos,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// The features of one frame: `samples` holds exactly `window` samples, `out` receives
    /// [`FeatureConfig::features_per_frame`] values.
    pub fn frame<S: Sample>(&self, samples: &[S], out: &mut [f32]) -> Result<(), AudioError> {
        let window = usize::from(self.config.window);
        if samples.len() != window {
            return Err(AudioError::FrameLength {
                expected: window,
                actual: samples.len(),
            });
        }
        let per_frame = self.config.features_per_frame();
        if out.len() < per_frame {
            return Err(AudioError::OutputTooSmall {
                needed: per_frame,
                actual: out.len(),
            });
        }
        let mut buffer = [0.0f32; FFT_SIZE];
        for (n, (b, s)) in buffer.iter_mut().zip(samples).enumerate() {
            let hann = 0.5 - 0.5 * cos_from_quarter(&self.window_cos, window, n);
            *b = s.to_unit() * hann;
        }
        let spectrum = microfft::real::rfft_512(&mut buffer);
        let mut power = [0.0f32; BINS];
        power[0] = spectrum[0].re * spectrum[0].re;
        // The real FFT packs the Nyquist bin's (real) value into bin 0's imaginary part.
        power[BINS - 1] = spectrum[0].im * spectrum[0].im;
        for (p, c) in power[1..BINS - 1].iter_mut().zip(&spectrum[1..]) {
            *p = norm_sqr(c);
        }
        let bands = usize::from(self.config.mel_bands);
        let mut log_mel = [0.0f32; MAX_MEL_BANDS];
        for (b, energy) in log_mel.iter_mut().take(bands).enumerate() {
            let (left, centre, right) = (self.edges[b], self.edges[b + 1], self.edges[b + 2]);
            let first = libm::ceilf(left).max(0.0) as usize;
            let last = (libm::floorf(right) as usize).min(BINS - 1);
            let mut sum = 0.0f32;
            for (k, p) in power.iter().enumerate().take(last + 1).skip(first) {
                let k = k as f32;
                let weight = if k <= centre {
                    (k - left) / (centre - left)
                } else {
                    (right - k) / (right - centre)
                };
                if weight > 0.0 {
                    sum += weight * p;
                }
            }
            *energy = libm::logf(sum + LOG_FLOOR);
        }
        let coefficients = usize::from(self.config.coefficients);
        if coefficients == 0 {
            out[..bands].copy_from_slice(&log_mel[..bands]);
            return Ok(());
        }
        let period = 4 * bands;
        let first_scale = libm::sqrtf(1.0 / bands as f32);
        let scale = libm::sqrtf(2.0 / bands as f32);
        for (i, c) in out.iter_mut().take(coefficients).enumerate() {
            let mut sum = 0.0f32;
            for (j, x) in log_mel.iter().take(bands).enumerate() {
                // cos(pi i (2j + 1) / (2 bands)) = cos(2 pi k / (4 bands)).
                let k = (i * (2 * j + 1)) % period;
                sum += x * cos_from_quarter(&self.dct_cos, period, k);
            }
            *c = sum * if i == 0 { first_scale } else { scale };
        }
        Ok(())
    }

    /// The features of a whole clip, frame after frame into `out` (frames along the first
    /// axis): returns the number of frames, [`FeatureConfig::frames`] of the clip's length.
    pub fn clip<S: Sample>(&self, samples: &[S], out: &mut [f32]) -> Result<usize, AudioError> {
        let frames = self.config.frames(samples.len());
        let per_frame = self.config.features_per_frame();
        let needed = frames * per_frame;
        if out.len() < needed {
            return Err(AudioError::OutputTooSmall {
                needed,
                actual: out.len(),
            });
        }
        let (window, hop) = (
            usize::from(self.config.window),
            usize::from(self.config.hop),
        );
        for (f, features) in out[..needed].chunks_exact_mut(per_frame).enumerate() {
            self.frame(&samples[f * hop..f * hop + window], features)?;
        }
        Ok(frames)
    }
}

fn norm_sqr(c: &Complex32) -> f32 {
    c.re * c.re + c.im * c.im
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    fn tone(hz: f32, amplitude: f32, samples: usize) -> Vec<f32> {
        (0..samples)
            .map(|n| amplitude * libm::sinf(2.0 * core::f32::consts::PI * hz * n as f32 / 16_000.0))
            .collect()
    }

    fn log_mel_config() -> FeatureConfig {
        FeatureConfig {
            coefficients: 0,
            ..FeatureConfig::KEYWORDS
        }
    }

    #[test]
    fn a_one_second_clip_gives_the_keyword_models_49_frames_of_10() {
        let frontend = Frontend::new(FeatureConfig::KEYWORDS).unwrap();
        let mut out = vec![0.0; 49 * 10];
        let frames = frontend.clip(&tone(440.0, 0.5, 16_000), &mut out).unwrap();
        assert_eq!(frames, 49);
        assert!(out.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn a_tone_lights_the_mel_band_that_holds_its_frequency() {
        let config = log_mel_config();
        let frontend = Frontend::new(config).unwrap();
        let hz_per_bin = 16_000.0 / FFT_SIZE as f32;
        for hz in [250.0f32, 1000.0, 3000.0] {
            let mut out = [0.0f32; 40];
            frontend
                .frame(&tone(hz, 0.5, 480), &mut out)
                .expect("frame");
            let loudest = (0..40).max_by(|&a, &b| out[a].total_cmp(&out[b])).unwrap();
            let bin = hz / hz_per_bin;
            let (left, right) = (frontend.edges[loudest], frontend.edges[loudest + 2]);
            assert!(
                left <= bin && bin <= right,
                "{hz} Hz (bin {bin}) peaked in band {loudest} spanning bins {left}..{right}"
            );
        }
    }

    #[test]
    fn silence_gives_the_log_floor_and_loudness_adds_log_energy() {
        let frontend = Frontend::new(log_mel_config()).unwrap();
        let mut quiet = [0.0f32; 40];
        frontend.frame(&[0i16; 480], &mut quiet).unwrap();
        assert!(quiet.iter().all(|&x| x == libm::logf(LOG_FLOOR)));
        // Doubling the amplitude quadruples the power: + ln 4 in a band well above the floor.
        let mut soft = [0.0f32; 40];
        let mut loud = [0.0f32; 40];
        frontend.frame(&tone(1000.0, 0.1, 480), &mut soft).unwrap();
        frontend.frame(&tone(1000.0, 0.2, 480), &mut loud).unwrap();
        let band = (0..40)
            .max_by(|&a, &b| soft[a].total_cmp(&soft[b]))
            .unwrap();
        assert!((loud[band] - soft[band] - libm::logf(4.0)).abs() < 1e-3);
    }

    #[test]
    fn mfccs_are_the_orthonormal_dct_of_the_log_mels() {
        let samples = tone(700.0, 0.3, 480);
        let mut log_mel = [0.0f32; 40];
        Frontend::new(log_mel_config())
            .unwrap()
            .frame(&samples, &mut log_mel)
            .unwrap();
        let mut mfcc = [0.0f32; 13];
        Frontend::new(FeatureConfig {
            coefficients: 13,
            ..FeatureConfig::KEYWORDS
        })
        .unwrap()
        .frame(&samples, &mut mfcc)
        .unwrap();
        for (i, &c) in mfcc.iter().enumerate() {
            let scale = if i == 0 {
                (1.0f64 / 40.0).sqrt()
            } else {
                (2.0f64 / 40.0).sqrt()
            };
            let expected: f64 = log_mel
                .iter()
                .enumerate()
                .map(|(j, &x)| {
                    f64::from(x)
                        * (core::f64::consts::PI * i as f64 * (2 * j + 1) as f64 / 80.0).cos()
                })
                .sum::<f64>()
                * scale;
            assert!(
                (f64::from(c) - expected).abs() < 1e-4 * expected.abs().max(1.0),
                "coefficient {i}: {c} vs {expected}"
            );
        }
    }

    #[test]
    fn i16_and_f32_samples_give_the_same_features() {
        let ints: Vec<i16> = (0..480)
            .map(|n| ((n * 7919) % 20_000) as i16 - 10_000)
            .collect();
        let floats: Vec<f32> = ints.iter().map(|&s| f32::from(s) / 32_768.0).collect();
        let frontend = Frontend::new(FeatureConfig::KEYWORDS).unwrap();
        let (mut a, mut b) = ([0.0f32; 10], [0.0f32; 10]);
        frontend.frame(&ints, &mut a).unwrap();
        frontend.frame(&floats, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_configs_and_buffers_are_named() {
        let bad = |config: FeatureConfig| Frontend::new(config).unwrap_err();
        let k = FeatureConfig::KEYWORDS;
        assert_eq!(
            bad(FeatureConfig { window: 514, ..k }),
            AudioError::InvalidConfig("window")
        );
        assert_eq!(
            bad(FeatureConfig { window: 482, ..k }),
            AudioError::InvalidConfig("window")
        );
        assert_eq!(
            bad(FeatureConfig { hop: 0, ..k }),
            AudioError::InvalidConfig("hop")
        );
        assert_eq!(
            bad(FeatureConfig { mel_bands: 65, ..k }),
            AudioError::InvalidConfig("mel_bands")
        );
        assert_eq!(
            bad(FeatureConfig {
                coefficients: 41,
                ..k
            }),
            AudioError::InvalidConfig("coefficients")
        );
        assert_eq!(
            bad(FeatureConfig {
                high_hz: 9_000.0,
                ..k
            }),
            AudioError::InvalidConfig("high_hz")
        );
        let frontend = Frontend::new(k).unwrap();
        assert_eq!(
            frontend.frame(&[0.0f32; 479], &mut [0.0; 10]),
            Err(AudioError::FrameLength {
                expected: 480,
                actual: 479
            })
        );
        assert_eq!(
            frontend.clip(&[0.0f32; 16_000], &mut [0.0; 100]),
            Err(AudioError::OutputTooSmall {
                needed: 490,
                actual: 100
            })
        );
        assert_eq!(frontend.clip(&[0.0f32; 100], &mut []), Ok(0));
    }

    #[test]
    fn a_model_carries_its_front_end() {
        use crate::format::AlignedBytes;
        use crate::format::writer::{ModelBuilder, QuantSpec};
        use crate::ops::activation::Unary;
        use std::string::ToString;
        let model_with = |constants: Vec<(&str, f32)>| {
            let mut b = ModelBuilder::new("kws");
            let x = b
                .tensor("x", crate::DType::F32, &[1, 4], QuantSpec::None)
                .unwrap();
            b.input(x);
            let y = b.activation_f32("relu", x, Unary::Relu).unwrap();
            b.output(y);
            b.metadata.constants = constants
                .into_iter()
                .map(|(name, value)| (name.to_string(), vec![value]))
                .collect();
            AlignedBytes::new(&b.build().unwrap().bytes)
        };
        let all = FeatureConfig::KEYWORDS.constants().to_vec();
        let bytes = model_with(all.clone());
        let model = Model::from_bytes(&bytes).unwrap();
        assert_eq!(
            FeatureConfig::from_model(&model),
            Ok(Some(FeatureConfig::KEYWORDS))
        );
        let none = model_with(vec![]);
        assert_eq!(
            FeatureConfig::from_model(&Model::from_bytes(&none).unwrap()),
            Ok(None)
        );
        let partial = model_with(all[..6].to_vec());
        assert_eq!(
            FeatureConfig::from_model(&Model::from_bytes(&partial).unwrap()),
            Err(AudioError::MissingConstant("audio.high_hz"))
        );
        let mut odd = all.clone();
        odd[1].1 = 480.5;
        assert_eq!(
            FeatureConfig::from_model(&Model::from_bytes(&model_with(odd)).unwrap()),
            Err(AudioError::InvalidConfig("window"))
        );
    }

    proptest! {
        #[test]
        fn any_config_that_validates_gives_finite_features(
            window in 1usize..=128,
            hop in 1u16..400,
            bands in 1u8..=64,
            coefficients in 0u8..=64,
            low in 0.0f32..3_000.0,
            span in 10.0f32..5_000.0,
            samples in proptest::collection::vec(any::<i16>(), 0..1_200),
        ) {
            let config = FeatureConfig {
                sample_rate: 16_000,
                window: (window * 4) as u16,
                hop,
                mel_bands: bands,
                coefficients,
                low_hz: low,
                high_hz: (low + span).min(8_000.0),
            };
            prop_assume!(config.validate().is_ok());
            let frontend = Frontend::new(config).unwrap();
            let mut out = vec![0.0f32; config.frames(samples.len()) * config.features_per_frame()];
            let frames = frontend.clip(&samples, &mut out).unwrap();
            prop_assert_eq!(frames, config.frames(samples.len()));
            prop_assert!(out.iter().all(|x| x.is_finite()));
        }
    }
}
