//! The input scaling `loam train` fitted on the training data and stored in the model as the
//! constants `preprocess.offset` and `preprocess.scale`: a raw value `x` of feature `j` becomes
//! `(x - offset[j]) * scale[j]`, what the model was trained on. Applications (firmware, the Pi
//! CLI, the C library) apply it to sensor readings before quantizing them, in this one order of
//! f32 operations, so every target computes the bits the host computed for the same readings.

use core::fmt;

use crate::format::Model;

/// Why a model's preprocessing cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PreprocessError {
    /// The model stores one of `preprocess.offset` and `preprocess.scale` but not the other.
    OnlyOne,
    /// The two constants hold different numbers of values (neither is a single value).
    Lengths {
        /// Values of `preprocess.offset`.
        offset: usize,
        /// Values of `preprocess.scale`.
        scale: usize,
    },
    /// A sample's length is not the number of features the constants are for.
    SampleLength {
        /// Features the model's constants hold.
        expected: usize,
        /// Values in the sample.
        actual: usize,
    },
}

impl fmt::Display for PreprocessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreprocessError::OnlyOne => {
                f.write_str("the model stores only one of preprocess.offset and preprocess.scale")
            }
            PreprocessError::Lengths { offset, scale } => write!(
                f,
                "preprocess.offset has {offset} values and preprocess.scale {scale}"
            ),
            PreprocessError::SampleLength { expected, actual } => write!(
                f,
                "the model's preprocessing is for {expected} values, the sample has {actual}"
            ),
        }
    }
}

impl core::error::Error for PreprocessError {}

/// A model's stored preprocessing, read in place from its constants.
#[derive(Debug, Clone, Copy)]
pub struct Preprocessing<'a> {
    offset: &'a [u8],
    scale: &'a [u8],
}

impl<'a> Preprocessing<'a> {
    /// The model's preprocessing; `Ok(None)` when it stores none. Either constant may hold one
    /// value (for every feature) or one per feature.
    pub fn from_model(model: &Model<'a>) -> Result<Option<Preprocessing<'a>>, PreprocessError> {
        match (
            model.constant("preprocess.offset"),
            model.constant("preprocess.scale"),
        ) {
            (None, None) => Ok(None),
            (Some(offset), Some(scale)) => {
                let (o, s) = (offset.values.len() / 4, scale.values.len() / 4);
                if o == 0 || s == 0 || (o != s && o != 1 && s != 1) {
                    return Err(PreprocessError::Lengths {
                        offset: o,
                        scale: s,
                    });
                }
                Ok(Some(Preprocessing {
                    offset: offset.values,
                    scale: scale.values,
                }))
            }
            _ => Err(PreprocessError::OnlyOne),
        }
    }

    /// Features it holds values for; 1 when both constants are single values, which then
    /// apply to samples of any length.
    pub fn features(&self) -> usize {
        (self.offset.len() / 4).max(self.scale.len() / 4)
    }

    /// `(x - offset) * scale` for feature `feature` (a single stored value applies to all).
    pub fn apply(&self, feature: usize, x: f32) -> f32 {
        (x - value(self.offset, feature)) * value(self.scale, feature)
    }

    /// Applies it to a whole sample in place; refused, the values untouched, when the sample's
    /// length is not the stored per-feature length.
    pub fn apply_all(&self, values: &mut [f32]) -> Result<(), PreprocessError> {
        let features = self.features();
        if features != 1 && values.len() != features {
            return Err(PreprocessError::SampleLength {
                expected: features,
                actual: values.len(),
            });
        }
        for (j, x) in values.iter_mut().enumerate() {
            *x = self.apply(j, *x);
        }
        Ok(())
    }
}

/// Value `i` of little-endian f32 bytes holding one value or more than `i`.
fn value(bytes: &[u8], i: usize) -> f32 {
    let at = 4 * (i % (bytes.len() / 4).max(1));
    match bytes.get(at..at + 4) {
        Some(b) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::AlignedBytes;
    use crate::format::writer::{ModelBuilder, QuantSpec};
    use crate::ops::activation::Unary;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    fn model_with(constants: &[(&str, &[f32])]) -> AlignedBytes {
        let mut b = ModelBuilder::new("prep");
        let x = b
            .tensor("x", crate::DType::F32, &[1, 3], QuantSpec::None)
            .unwrap();
        b.input(x);
        let y = b.activation_f32("relu", x, Unary::Relu).unwrap();
        b.output(y);
        b.metadata.constants = constants
            .iter()
            .map(|(name, values)| (name.to_string(), values.to_vec()))
            .collect();
        AlignedBytes::new(&b.build().unwrap().bytes)
    }

    fn prep(bytes: &AlignedBytes) -> Result<Option<Vec<f32>>, PreprocessError> {
        let model = Model::from_bytes(bytes).unwrap();
        Preprocessing::from_model(&model).and_then(|p| {
            p.map(|p| {
                let mut v = vec![1.0f32, 2.0, 3.0];
                p.apply_all(&mut v).map(|()| v)
            })
            .transpose()
        })
    }

    #[test]
    fn scales_each_feature_as_training_did() {
        let per_feature = model_with(&[
            ("preprocess.offset", &[1.0, 0.0, -1.0]),
            ("preprocess.scale", &[2.0, 0.5, 0.25]),
        ]);
        assert_eq!(prep(&per_feature), Ok(Some(vec![0.0, 1.0, 1.0])));
        let shared = model_with(&[("preprocess.offset", &[1.0]), ("preprocess.scale", &[3.0])]);
        assert_eq!(prep(&shared), Ok(Some(vec![0.0, 3.0, 6.0])));
        assert_eq!(prep(&model_with(&[])), Ok(None));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let one = model_with(&[("preprocess.scale", &[3.0])]);
        assert_eq!(prep(&one), Err(PreprocessError::OnlyOne));
        let lengths = model_with(&[
            ("preprocess.offset", &[1.0, 2.0]),
            ("preprocess.scale", &[1.0, 2.0, 3.0]),
        ]);
        assert_eq!(
            prep(&lengths),
            Err(PreprocessError::Lengths {
                offset: 2,
                scale: 3
            })
        );
        let wrong = model_with(&[
            ("preprocess.offset", &[0.0, 0.0]),
            ("preprocess.scale", &[1.0, 1.0]),
        ]);
        assert_eq!(
            prep(&wrong),
            Err(PreprocessError::SampleLength {
                expected: 2,
                actual: 3
            })
        );
    }
}
