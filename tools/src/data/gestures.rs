//! The synthetic wrist-accelerometer gestures set: 1800 recordings of 2 s at 50 Hz (x, y, z
//! in g), six gestures (circle, flip, idle, punch, shake, wave) by 20 made-up people. The file
//! is `models/gestures/data/gestures.csv.gz`, made by `models/gestures/make_data.py` (standard
//! library Python, seeded), and is also compiled into the tool for `loam init --example
//! gestures`.
//!
//! The CSV has a header (`t0_x, t0_y, t0_z, t1_x, ..., t99_z, label`). Rows come person by
//! person, 90 each (15 of every gesture, shuffled), so a split in file order keeps people
//! apart.

use std::path::Path;

use anyhow::Result;

use super::Dataset;
use super::csv::{Column, CsvOptions};

/// The bundled `gestures.csv.gz`, byte for byte.
pub const BUNDLED: &[u8] = include_bytes!("../../../models/gestures/data/gestures.csv.gz");

/// People in the set; their recordings are consecutive rows.
pub const PEOPLE: usize = 20;

/// Recordings per person.
pub const ROWS_PER_PERSON: usize = 90;

/// How the gestures CSV is read: header, label column `label`, samples `[100, 1, 3]` (time
/// steps, 1, axes), the shape the bundled model's 1-D convolutions expect.
pub fn options() -> CsvOptions {
    CsvOptions {
        has_header: true,
        label: Some(Column::Name("label".into())),
        sample_dims: Some(vec![100, 1, 3]),
        name: Some("gestures".into()),
        ..CsvOptions::default()
    }
}

/// Loads a gestures CSV (gzipped or not) from `path`.
pub fn load(path: &Path) -> Result<Dataset> {
    super::csv::load(path, &options())
}

/// Loads the copy compiled into the tool.
pub fn bundled() -> Result<Dataset> {
    let reader = flate2::read::GzDecoder::new(BUNDLED);
    super::csv::read(reader, "bundled gestures.csv.gz", &options())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// What `make_data.py` prints for the CSV it writes (before gzip, whose bytes may vary
    /// with the zlib build).
    const CSV_BYTES: usize = 2_891_455;
    const CSV_CRC32: u32 = 0x3f07_7daa;

    fn check(d: &Dataset) {
        assert_eq!(d.rows(), PEOPLE * ROWS_PER_PERSON);
        assert_eq!(d.sample_dims, vec![100, 1, 3]);
        assert_eq!(
            d.class_names,
            ["circle", "flip", "idle", "punch", "shake", "wave"]
        );
        assert_eq!(d.feature_names[..4], ["t0_x", "t0_y", "t0_z", "t1_x"]);
        assert_eq!(d.feature_names[299], "t99_z");
        // The sensor's range and its 0.01 g steps.
        assert!(d.features.iter().all(|&x| {
            let hundredths = x * 100.0;
            x.abs() <= 8.0 && (hundredths - hundredths.round()).abs() < 1e-3
        }));
        // The time-ordered split relies on this: every person's 90 rows, together, hold 15
        // recordings of each gesture.
        let classes = d.classes().unwrap();
        for (person, rows) in classes.chunks(ROWS_PER_PERSON).enumerate() {
            let mut counts = [0; 6];
            for &c in rows {
                counts[c as usize] += 1;
            }
            assert_eq!(counts, [15; 6], "person {person}");
        }
        // Gravity: a hand held still reads about 1 g whichever way the device is turned.
        let idle = d.class_names.iter().position(|c| c == "idle").unwrap() as u32;
        let (mut sum, mut n) = (0.0f64, 0usize);
        for i in (0..d.rows()).filter(|&i| classes[i] == idle) {
            for v in d.sample(i).chunks_exact(3) {
                sum += f64::from(v.iter().map(|a| a * a).sum::<f32>().sqrt());
                n += 1;
            }
        }
        let mean = sum / n as f64;
        assert!((0.97..1.03).contains(&mean), "idle |a| {mean} g");
    }

    #[test]
    fn bundled_file_on_disk() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/gestures/data/gestures.csv.gz");
        check(&load(&path).unwrap());
    }

    #[test]
    fn compiled_in_copy() {
        check(&bundled().unwrap());
    }

    /// The committed file is what `make_data.py` generates: the same checksum it prints.
    #[test]
    fn csv_matches_the_generator() {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(BUNDLED)
            .read_to_end(&mut text)
            .unwrap();
        let mut crc = flate2::Crc::new();
        crc.update(&text);
        assert_eq!(
            (text.len(), crc.sum()),
            (CSV_BYTES, CSV_CRC32),
            "regenerate with `python3 models/gestures/make_data.py` and update the figures"
        );
    }
}
