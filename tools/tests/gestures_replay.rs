//! The gestures firmware's sensor data: test recordings of the bundled gestures model (people
//! it never saw) as a LIS3DH would report them (raw counts at ±8 g, high resolution), with the
//! gestures and the classes this machine predicts for them when it reads the counts through
//! the real driver (`loam-accel`) on the replay bus, exactly as the firmware does.
//! `targets/cortex-m/src/bin/gestures.rs` replays the file under QEMU and must predict the
//! same classes.
//!
//! Regenerate after retraining `models/gestures` with
//! `LOAM_WRITE_FIXTURES=gestures-lis3dh cargo test -p loam-tools --test gestures_replay`.
//!
//! Layout (little-endian): `LMGR`, version u16 (1), windows u16, steps u16, milli-g per count
//! u16, 4 reserved bytes; then windows x steps x [x, y, z] i16 counts; then a label byte per
//! window; then a predicted-class byte per window.

use std::path::Path;

use loam::preprocess::Preprocessing;
use loam::quant::QuantParams;
use loam_accel::{Address, Config, DataRate, Lis3dh, Range, Replay};
use loam_tools::model_file::{ModelFile, write_atomically};
use loam_tools::project::{Project, pipeline};

const RANGE: Range = Range::G8;
const PER_CLASS: usize = 15;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// What the firmware does with one window of readings: the model's stored preprocessing,
/// then the input's quantization.
fn quantize_window(g: &[f32], prep: &Preprocessing<'_>, q: QuantParams) -> Vec<i8> {
    g.iter()
        .enumerate()
        .map(|(j, &x)| q.quantize(prep.apply(j, x), -128, 127) as i8)
        .collect()
}

#[test]
fn gestures_sensor_recording_is_current() {
    let project_dir = root().join("models/gestures");
    let (project, _) = Project::load(&project_dir.join("loam.toml")).unwrap();
    let (data, split, _) = pipeline::load_and_split(&project, &project_dir).unwrap();
    let steps = data.sample_len() / 3;
    let classes = data.classes().unwrap();
    // The first PER_CLASS test recordings of each gesture, in test-split order.
    let mut taken = vec![0usize; data.class_names.len()];
    let rows: Vec<usize> = split
        .test
        .iter()
        .copied()
        .filter(|&i| {
            let c = classes[i] as usize;
            taken[c] += 1;
            taken[c] <= PER_CLASS
        })
        .collect();
    assert_eq!(rows.len(), PER_CLASS * data.class_names.len());

    let mg = f32::from(RANGE.mg_per_count());
    let counts: Vec<[i16; 3]> = rows
        .iter()
        .flat_map(|&i| data.sample(i).chunks_exact(3))
        .map(|g| to_counts(g, mg))
        .collect();

    let file = ModelFile::open(&project_dir.join("model.loam")).unwrap();
    let model = file.model().unwrap();
    let prep = Preprocessing::from_model(&model).unwrap().unwrap();
    let input = loam_tools::run::io_records(&model, false).unwrap()[0];
    let loam::Quantization::PerTensor {
        scale: s,
        zero_point,
    } = input.quantization
    else {
        panic!("int8 input expected")
    };
    let q = QuantParams {
        scale: s,
        zero_point,
    };
    assert_eq!(prep.features(), steps * 3);

    let bus = Replay::once(Address::Sa0High, &counts);
    let mut sensor =
        Lis3dh::new(bus, Address::Sa0High, Config::new(DataRate::Hz50, RANGE)).unwrap();
    let mut arena = vec![0u8; model.arena_size() + loam::format::ARENA_ALIGN];
    let mut interpreter = loam::Interpreter::new(&model, &mut arena).unwrap();
    let mut predicted = Vec::new();
    for _ in &rows {
        let mut g = Vec::with_capacity(steps * 3);
        for _ in 0..steps {
            assert!(sensor.data_ready().unwrap());
            g.extend(sensor.read_g().unwrap());
        }
        let x = quantize_window(&g, &prep, q);
        interpreter.input_mut::<i8>(0).unwrap().copy_from_slice(&x);
        interpreter.invoke().unwrap();
        let p = interpreter.output::<i8>(0).unwrap();
        let best = (0..p.len())
            .max_by_key(|&c| (p[c], std::cmp::Reverse(c)))
            .unwrap();
        predicted.push(best as u8);
    }
    let labels: Vec<u8> = rows.iter().map(|&i| classes[i] as u8).collect();
    let correct = labels
        .iter()
        .zip(&predicted)
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "{} recordings of {steps} readings: {correct} predicted right at {} mg per count",
        rows.len(),
        RANGE.mg_per_count()
    );
    assert!(
        correct * 100 >= rows.len() * 95,
        "{correct} of {}",
        rows.len()
    );

    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"LMGR");
    for word in [
        1u16,
        rows.len() as u16,
        steps as u16,
        RANGE.mg_per_count().into(),
    ] {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes.extend_from_slice(&[0; 4]);
    for sample in &counts {
        for axis in sample {
            bytes.extend_from_slice(&axis.to_le_bytes());
        }
    }
    bytes.extend_from_slice(&labels);
    bytes.extend_from_slice(&predicted);

    let path = root().join("targets/cortex-m/data/gestures-lis3dh.bin");
    if std::env::var("LOAM_WRITE_FIXTURES")
        .is_ok_and(|v| v.split(',').any(|n| n == "gestures-lis3dh"))
    {
        write_atomically(&path, &bytes).unwrap();
    }
    assert!(
        std::fs::read(&path).unwrap_or_default() == bytes,
        "{} is stale (models/gestures changed?); regenerate it with \
         LOAM_WRITE_FIXTURES=gestures-lis3dh cargo test -p loam-tools --test gestures_replay",
        path.display()
    );
}

/// `[x, y, z]` in g as the sensor reports them: the nearest count, clamped to the 12-bit range.
fn to_counts(g: &[f32], mg: f32) -> [i16; 3] {
    let count = |g: f32| (g * 1000.0 / mg).round().clamp(-2048.0, 2047.0) as i16;
    [count(g[0]), count(g[1]), count(g[2])]
}

/// The gestures firmware embeds the model through the module `loam export` writes; it must be
/// what `loam export models/gestures/model.loam -o .../model.rs` writes today, beside the
/// bundled model's very bytes.
#[test]
fn gestures_firmware_embeds_the_exported_model() {
    let bundled = root().join("models/gestures/model.loam");
    let firmware = root().join("targets/cortex-m/src/bin/gestures");
    let file = ModelFile::open(&bundled).unwrap();
    let module =
        loam_tools::sources::rust_module(&file.model().unwrap(), "model.loam", "model.loam");
    let stale = "is stale; run `cargo run --release -- export models/gestures/model.loam -o \
                 targets/cortex-m/src/bin/gestures/model.rs`";
    assert_eq!(
        std::fs::read_to_string(firmware.join("model.rs")).unwrap(),
        module,
        "model.rs {stale}"
    );
    assert!(
        std::fs::read(firmware.join("model.loam")).unwrap() == file.bytes(),
        "model.loam {stale}"
    );
}
