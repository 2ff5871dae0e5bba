//! The bundled gestures model (`models/gestures/`) against its model card: the committed int8
//! `model.loam`, run on the test split its `loam.toml` defines, must score exactly what
//! `MODEL_CARD.md` reports, at the card's flash and arena sizes.

use std::path::{Path, PathBuf};

use loam_tools::model_file::ModelFile;
use loam_tools::project::Project;
use loam_tools::project::pipeline::{self, Prepared};
use loam_tools::report::Evaluation;

/// The model card's figures: 266 of 270 test recordings right.
const TEST_ROWS: usize = 270;
const TEST_CORRECT: usize = 266;
const FLASH_BYTES: usize = 16_624;
const ARENA_BYTES: usize = 1_584;

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/gestures")
}

fn prepared() -> (Project, Prepared) {
    let (project, _) = Project::load(&folder().join("loam.toml")).unwrap();
    let prepared = pipeline::prepare(&project, &folder()).unwrap();
    (project, prepared)
}

#[test]
fn the_bundled_gestures_model_keeps_its_card_figures() {
    let (project, prepared) = prepared();
    assert_eq!(prepared.test.rows(), TEST_ROWS);
    let model = ModelFile::open(&folder().join("model.loam")).unwrap();
    let outputs = pipeline::infer(&model, &prepared.test).unwrap();
    let Evaluation::Classification(r) =
        pipeline::evaluate(&project, &prepared.test, &outputs).unwrap()
    else {
        panic!("not a classification report")
    };
    let correct: u64 = r.confusion.iter().enumerate().map(|(c, row)| row[c]).sum();
    assert_eq!(
        correct,
        TEST_CORRECT as u64,
        "accuracy {:.2}% instead of the card's {:.2}%",
        r.accuracy * 100.0,
        TEST_CORRECT as f64 * 100.0 / TEST_ROWS as f64
    );
    assert_eq!(
        model.bytes().len(),
        FLASH_BYTES,
        "the model card's flash figure"
    );
    assert_eq!(
        model.model().unwrap().arena_size(),
        ARENA_BYTES,
        "the model card's arena figure"
    );
}

/// The card's claim that validation and test recordings come from people the model never
/// trained on: with 90 rows per person, the time-ordered split falls on person boundaries.
#[test]
fn the_split_keeps_people_apart() {
    use loam_tools::data::gestures::ROWS_PER_PERSON;
    let (_, prepared) = prepared();
    let split = &prepared.split;
    let people = |rows: &[usize]| -> Vec<usize> {
        let mut p: Vec<usize> = rows.iter().map(|r| r / ROWS_PER_PERSON).collect();
        p.dedup();
        p
    };
    assert_eq!(people(&split.train), (0..14).collect::<Vec<_>>());
    assert_eq!(people(&split.val), [14, 15, 16]);
    assert_eq!(people(&split.test), [17, 18, 19]);
    for part in [&split.train, &split.val, &split.test] {
        assert_eq!(part.len() % ROWS_PER_PERSON, 0);
    }
}
