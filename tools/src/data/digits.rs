//! The 8x8 hand-written digits set (1797 images, 10 classes, pixels 0..=16), as shipped by
//! scikit-learn (BSD-3-Clause; from the UCI ML hand-written digits data set). The file is
//! `models/digits/data/digits.csv.gz`, made by `models/digits/fetch_data.sh`, and is also
//! compiled into the tool so `loam` can use it from anywhere.
//!
//! The CSV has no header: 64 pixel columns, row by row, then the digit.

use std::path::Path;

use anyhow::Result;

use super::Dataset;
use super::csv::{Column, CsvOptions};

/// The bundled `digits.csv.gz`, byte for byte.
pub const BUNDLED: &[u8] = include_bytes!("../../../models/digits/data/digits.csv.gz");

/// How the digits CSV is read: no header, label last, samples `[8, 8, 1]`.
pub fn options() -> CsvOptions {
    CsvOptions {
        has_header: false,
        label: Some(Column::Last),
        sample_dims: Some(vec![8, 8, 1]),
        name: Some("digits".into()),
        ..CsvOptions::default()
    }
}

/// Loads a digits CSV (gzipped or not) from `path`. Pixels keep their 0..=16 range.
pub fn load(path: &Path) -> Result<Dataset> {
    name_pixels(super::csv::load(path, &options())?)
}

/// Loads the copy compiled into the tool.
pub fn bundled() -> Result<Dataset> {
    let reader = flate2::read::GzDecoder::new(BUNDLED);
    name_pixels(super::csv::read(
        reader,
        "bundled digits.csv.gz",
        &options(),
    )?)
}

fn name_pixels(mut data: Dataset) -> Result<Dataset> {
    data.feature_names = super::idx::feature_names(&data.sample_dims);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Targets;

    fn check(d: &Dataset) {
        assert_eq!(d.rows(), 1797);
        assert_eq!(d.sample_dims, vec![8, 8, 1]);
        assert_eq!(d.num_classes(), 10);
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(d.class_names, names);
        assert!(
            d.features
                .iter()
                .all(|&x| (0.0..=16.0).contains(&x) && x.fract() == 0.0)
        );
        assert_eq!(d.features.iter().copied().fold(0.0, f32::max), 16.0);
        // The first image is a 0; its top row is 0 0 5 13 9 1 0 0.
        assert_eq!(d.classes().unwrap()[..3], [0, 1, 2]);
        assert_eq!(
            &d.sample(0)[..8],
            &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(d.feature_names[9], "pixel_1_1");
        let Targets::Classes(c) = &d.targets else {
            panic!("digits have classes")
        };
        let mut counts = [0; 10];
        for &digit in c {
            counts[digit as usize] += 1;
        }
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    }

    #[test]
    fn bundled_file_on_disk() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits/data/digits.csv.gz");
        check(&load(&path).unwrap());
    }

    #[test]
    fn compiled_in_copy() {
        check(&bundled().unwrap());
    }

    #[test]
    fn split_and_scale_without_leakage() {
        use crate::data::prep::{PrepOptions, Preprocessing, Scaling};
        let d = bundled().unwrap();
        let split = crate::data::split::random(&d, 0.1, 0.2, 42).unwrap();
        assert_eq!(split.train.len() + split.val.len() + split.test.len(), 1797);
        // Rounded per class: test round(0.2 n), validation round(0.3 n) - round(0.2 n).
        assert_eq!((split.val.len(), split.test.len()), (180, 359));
        let train = d.subset(&split.train);
        let options = PrepOptions {
            scaling: Scaling::MinMax,
            shared: true,
            ..PrepOptions::default()
        };
        let prep = Preprocessing::fit(&train, &options).unwrap();
        let (offset, scale) = prep.affine().unwrap();
        assert!(offset.iter().all(|&o| o == 0.0));
        assert!(scale.iter().all(|&s| s == 1.0 / 16.0));
        let mut test = d.subset(&split.test);
        prep.apply(&mut test).unwrap();
        assert!(test.features.iter().all(|x| (0.0..=1.0).contains(x)));
        let text = crate::data::profile(&d).to_string();
        assert!(text.contains("digits: 1797 rows"), "{text}");
        assert!(text.contains("targets: 10 classes"), "{text}");
    }
}
