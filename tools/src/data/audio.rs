//! Folders of WAV clips, one subfolder per class, into a [`Dataset`] of audio features.
//!
//! ```text
//! root/yes/a1b2_nohash_0.wav
//! root/no/a1b2_nohash_0.wav
//! root/validation_list.txt   (optional: "no/a1b2_nohash_0.wav" per line)
//! root/testing_list.txt      (optional)
//! ```
//!
//! This is the layout of Google's Speech Commands. Classes are the subfolder names in sorted
//! order; clips within a class are read in file-name order. Each clip is centred in a window
//! of `clip_ms` (zero-padded when shorter, the middle kept when longer). A
//! `_background_noise_` folder is not a class: its long recordings are mixed under every
//! clip, as Speech Commands' own input pipeline does, so that a model hears words over noise
//! as a device does and never learns that padding means speech. Each clip gets a stretch of
//! one recording at a level drawn from `background_volume`, chosen by a generator seeded from
//! `background_seed` and the clip's path, so a clip sounds the same on every load and in
//! every split. Its features then come
//! from [`loam::audio::Frontend`], the code the device runs, so the model trains on the
//! numbers it will see. A sample is `[frames, features per frame, 1]`: time along the first
//! axis, so convolutions slide over time and frequency.
//!
//! Clips must be mono at the configured sample rate: resampling or mixing down here would
//! give the model audio the device never hears, so a mismatch is an error naming the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use loam::audio::{FeatureConfig, Frontend};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::folders::{class_dirs, class_folders, has_extension, hidden};
use super::{Dataset, Split, Targets};

/// A folder in Speech Commands that holds long noise recordings, not a class.
const BACKGROUND_NOISE: &str = "_background_noise_";
/// The split lists of Speech Commands, beside the class folders.
pub const VALIDATION_LIST: &str = "validation_list.txt";
/// See [`VALIDATION_LIST`].
pub const TESTING_LIST: &str = "testing_list.txt";
/// Longer clips are refused, so that a stray recording cannot take gigabytes.
const MAX_CLIP_SECONDS: u64 = 600;

/// `[data.audio]`: how clips become features.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioOptions {
    /// Samples per second every clip must have.
    pub sample_rate: u32,
    /// The window each clip is centred in, in milliseconds.
    pub clip_ms: u32,
    /// The length of one frame, in milliseconds (at most 512 samples).
    pub window_ms: f32,
    /// From one frame's start to the next's, in milliseconds.
    pub hop_ms: f32,
    /// Triangular mel filters.
    pub mel_bands: u8,
    /// MFCCs per frame; 0 for log-mel energies.
    pub coefficients: u8,
    /// The lowest frequency the filters cover, in Hz.
    pub low_hz: f32,
    /// The highest frequency the filters cover, in Hz.
    pub high_hz: f32,
    /// The gain range of the background noise mixed under each clip (a factor on the
    /// recording, drawn uniformly); `[0, 0]` mixes none.
    pub background_volume: [f32; 2],
    /// Seeds which recording, where in it and how loud.
    pub background_seed: u64,
    /// Extra, perturbed copies of each training clip (see [`Perturbation`]).
    pub augment: Perturbation,
}

/// `[data.audio.augment]`: how the extra training copies of a clip differ from it. Each copy
/// is the clip played at a speed drawn from `speed` (faster is also higher: the pitch and
/// formants move as between a larger and a smaller speaker), moved in time by up to
/// `shift_ms` either way, and mixed over a fresh stretch of background noise. Only the
/// training split gets copies; validation and test clips are heard as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Perturbation {
    /// Copies per training clip; 0 turns augmentation off.
    pub copies: usize,
    /// The range of playback speeds (1 is as recorded).
    pub speed: [f32; 2],
    /// The largest move in time either way, in milliseconds.
    pub shift_ms: f32,
    /// Seeds the copies.
    pub seed: u64,
}

impl Default for Perturbation {
    fn default() -> Perturbation {
        Perturbation {
            copies: 0,
            speed: [0.9, 1.1],
            shift_ms: 100.0,
            seed: 0,
        }
    }
}

impl Default for AudioOptions {
    fn default() -> AudioOptions {
        let k = FeatureConfig::KEYWORDS;
        AudioOptions {
            sample_rate: k.sample_rate,
            clip_ms: 1000,
            window_ms: 30.0,
            hop_ms: 20.0,
            mel_bands: k.mel_bands,
            coefficients: k.coefficients,
            low_hz: k.low_hz,
            high_hz: k.high_hz,
            background_volume: [0.0, 0.1],
            background_seed: 0,
            augment: Perturbation::default(),
        }
    }
}

impl AudioOptions {
    /// The runtime's front end for these options, checked.
    pub fn feature_config(&self) -> Result<FeatureConfig> {
        let samples = |ms: f32, field: &str| -> Result<u16> {
            let n = f64::from(ms) * f64::from(self.sample_rate) / 1000.0;
            if !(n.is_finite() && n >= 1.0 && n <= f64::from(u16::MAX) && n == n.round()) {
                bail!(
                    "data.audio.{field}: {ms} ms at {} Hz is not a whole number of samples",
                    self.sample_rate
                );
            }
            Ok(n as u16)
        };
        let config = FeatureConfig {
            sample_rate: self.sample_rate,
            window: samples(self.window_ms, "window_ms")?,
            hop: samples(self.hop_ms, "hop_ms")?,
            mel_bands: self.mel_bands,
            coefficients: self.coefficients,
            low_hz: self.low_hz,
            high_hz: self.high_hz,
        };
        config.validate().map_err(|e| {
            anyhow::anyhow!(
                "data.audio: {e} (window at most {} samples and a multiple of 4, hop > 0, \
                 1 to {} mel bands, coefficients <= mel bands, low_hz < high_hz <= half the \
                 sample rate)",
                loam::audio::FFT_SIZE,
                loam::audio::MAX_MEL_BANDS
            )
        })?;
        Ok(config)
    }

    /// Samples in the window each clip is centred in.
    pub fn clip_samples(&self) -> usize {
        (u64::from(self.sample_rate) * u64::from(self.clip_ms) / 1000) as usize
    }
}

/// One clip of an audio folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipFile {
    /// The file.
    pub path: PathBuf,
    /// Its path relative to the root, with `/` separators (`yes/a1b2_nohash_0.wav`), as
    /// the split lists name it.
    pub relative: String,
    /// Its class id.
    pub class: u32,
}

/// Whether `root` is an audio folder: some class subfolder holds a `.wav` file.
pub fn is_audio_folder(root: &Path) -> bool {
    class_dirs(root, &[BACKGROUND_NOISE])
        .map(|dirs| {
            dirs.iter().any(|d| {
                std::fs::read_dir(d).is_ok_and(|mut entries| {
                    entries.any(|e| e.is_ok_and(|e| has_extension(&e.path(), "wav")))
                })
            })
        })
        .unwrap_or(false)
}

/// Every clip under `root`'s class subfolders, in row order, and the class names.
pub fn list(root: &Path) -> Result<(Vec<ClipFile>, Vec<String>)> {
    let mut clips = Vec::new();
    let mut class_names = Vec::new();
    for (id, class) in class_folders(root, "wav", "WAV clips", &[BACKGROUND_NOISE])?
        .into_iter()
        .enumerate()
    {
        for path in class.files {
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            clips.push(ClipFile {
                relative: format!("{}/{name}", class.name),
                path,
                class: id as u32,
            });
        }
        class_names.push(class.name);
    }
    Ok((clips, class_names))
}

/// Reads a mono WAV file at `sample_rate` as samples on the scale where full scale is 1.
/// Takes 8 to 32-bit integer PCM and 32-bit float.
pub fn read_wav(path: &Path, sample_rate: u32) -> Result<Vec<f32>> {
    let reader = hound::WavReader::open(path)
        .with_context(|| format!("{}: not a readable WAV file", path.display()))?;
    let spec = reader.spec();
    if spec.channels != 1 {
        bail!(
            "{}: {} channels; clips must be mono (mix down first, e.g. `sox in.wav -c 1 \
             out.wav`)",
            path.display(),
            spec.channels
        );
    }
    if spec.sample_rate != sample_rate {
        bail!(
            "{}: {} Hz; clips must be {sample_rate} Hz (data.audio.sample_rate), the rate the \
             device samples at (resample first, e.g. `sox in.wav -r {sample_rate} out.wav`)",
            path.display(),
            spec.sample_rate
        );
    }
    if u64::from(reader.duration()) > MAX_CLIP_SECONDS * u64::from(sample_rate) {
        bail!(
            "{}: longer than {MAX_CLIP_SECONDS} s; cut it into clips",
            path.display()
        );
    }
    let context = || format!("{}: reading samples", path.display());
    let samples = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<Vec<_>, _>>()
            .with_context(context)?,
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let full_scale = (1u64 << (bits - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|s| s as f32 / full_scale))
                .collect::<Result<Vec<_>, _>>()
                .with_context(context)?
        }
        (format, bits) => bail!(
            "{}: {bits}-bit {format:?} samples are not read (8 to 32-bit integer PCM or \
             32-bit float)",
            path.display()
        ),
    };
    Ok(samples)
}

/// `samples` centred in a window of `len`: zero-padded equally on both sides when shorter,
/// the middle `len` when longer.
pub fn centre(samples: &[f32], len: usize) -> Vec<f32> {
    place(samples, len, 0)
}

/// `samples` centred in a window of `len` and then moved `offset` samples later (earlier when
/// negative); what falls outside the window is dropped, what is uncovered is zero.
fn place(samples: &[f32], len: usize, offset: isize) -> Vec<f32> {
    let mut out = vec![0.0; len];
    let start = (len as isize - samples.len() as isize).div_euclid(2) + offset;
    for (i, &s) in samples.iter().enumerate() {
        let at = start + i as isize;
        if (0..len as isize).contains(&at) {
            out[at as usize] = s;
        }
    }
    out
}

/// `samples` played `speed` times faster, by linear interpolation (the copy is shorter when
/// faster; pitch and formants rise with the speed).
fn resample(samples: &[f32], speed: f32) -> Vec<f32> {
    let len = (samples.len() as f64 / f64::from(speed)).floor() as usize;
    (0..len)
        .map(|i| {
            let at = i as f64 * f64::from(speed);
            let j = at.floor() as usize;
            let frac = (at - j as f64) as f32;
            let a = samples[j.min(samples.len() - 1)];
            let b = samples[(j + 1).min(samples.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

/// The recordings of `root`'s `_background_noise_` folder (none if it has no such folder),
/// in file-name order.
pub fn background_noise(root: &Path, sample_rate: u32) -> Result<Vec<Vec<f32>>> {
    let folder = root.join(BACKGROUND_NOISE);
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(&folder).with_context(|| format!("listing {}", folder.display()))?
    {
        let path = entry
            .with_context(|| format!("listing {}", folder.display()))?
            .path();
        if has_extension(&path, "wav") && !hidden(&path) {
            files.push(path);
        }
    }
    files.sort();
    files.iter().map(|f| read_wav(f, sample_rate)).collect()
}

/// FNV-1a of a clip's name: a stable per-clip seed (std's hasher may change between
/// releases, which would change every clip's noise).
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What turns a window of samples into a row of features, set up once per load: the
/// checked options, the runtime's front end and the background recordings.
struct ClipFeatures<'a> {
    options: &'a AudioOptions,
    config: FeatureConfig,
    frontend: Frontend,
    noise: Vec<Vec<f32>>,
}

impl<'a> ClipFeatures<'a> {
    /// Checks `options` and reads `root`'s background recordings.
    fn new(root: &Path, options: &'a AudioOptions) -> Result<ClipFeatures<'a>> {
        let config = options.feature_config()?;
        let frontend = Frontend::new(config).map_err(anyhow::Error::msg)?;
        let [low, high] = options.background_volume;
        if !(low.is_finite() && high.is_finite() && 0.0 <= low && low <= high) {
            bail!(
                "data.audio.background_volume: [{low}, {high}] is not a range of gains (0 <= \
                 low <= high)"
            );
        }
        if config.frames(options.clip_samples()) == 0 {
            bail!(
                "data.audio.clip_ms: {} ms is shorter than one frame ({} ms)",
                options.clip_ms,
                options.window_ms
            );
        }
        Ok(ClipFeatures {
            options,
            config,
            frontend,
            noise: background_noise(root, options.sample_rate)?,
        })
    }

    /// The features of one window of `clip_samples` samples, with background noise mixed
    /// under it as `name` (the clip's path, or a copy's) seeds; `path` names it in errors.
    fn features(&self, mut samples: Vec<f32>, name: &str, path: &Path) -> Result<Vec<f32>> {
        mix_background(
            &mut samples,
            &self.noise,
            self.options.background_volume,
            self.options.background_seed,
            name,
        );
        let per_clip = self.config.frames(samples.len()) * self.config.features_per_frame();
        let mut out = vec![0.0; per_clip];
        self.frontend
            .clip(&samples, &mut out)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(out)
    }

    /// A data set of rows of [`Self::features`].
    fn dataset(
        &self,
        name: String,
        rows: Vec<Vec<f32>>,
        classes: Vec<u32>,
        class_names: Vec<String>,
    ) -> Result<Dataset> {
        let frames = self.config.frames(self.options.clip_samples());
        let per_frame = self.config.features_per_frame();
        let kind = if self.config.coefficients == 0 {
            "mel"
        } else {
            "mfcc"
        };
        let dataset = Dataset {
            name,
            sample_dims: vec![frames, per_frame, 1],
            features: rows.concat(),
            feature_names: (0..frames)
                .flat_map(|f| (0..per_frame).map(move |c| format!("t{f}_{kind}{c}")))
                .collect(),
            targets: Targets::Classes(classes),
            class_names,
        };
        dataset.validate()?;
        Ok(dataset)
    }
}

/// Mixes a stretch of one of `noise`'s recordings under `clip` (in place), chosen by a
/// generator seeded from `seed` and `name`; the sum is clipped to full scale.
pub fn mix_background(
    clip: &mut [f32],
    noise: &[Vec<f32>],
    volume: [f32; 2],
    seed: u64,
    name: &str,
) {
    use rand::{Rng, SeedableRng};
    if noise.is_empty() || volume[1] <= 0.0 {
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ name_hash(name));
    let recording = &noise[rng.random_range(0..noise.len())];
    let gain = if volume[1] > volume[0] {
        rng.random_range(volume[0]..volume[1])
    } else {
        volume[0]
    };
    if recording.is_empty() {
        return;
    }
    let start = if recording.len() > clip.len() {
        rng.random_range(0..=recording.len() - clip.len())
    } else {
        0
    };
    for (i, sample) in clip.iter_mut().enumerate() {
        // A recording shorter than the clip repeats.
        let n = recording[(start + i) % recording.len()];
        *sample = (*sample + gain * n).clamp(-1.0, 1.0);
    }
}

/// Loads every clip under `root`'s class subfolders, mixes background noise under it (see
/// the module docs) and computes its features.
pub fn load(root: &Path, options: &AudioOptions) -> Result<Dataset> {
    let features = ClipFeatures::new(root, options)?;
    let (clips, class_names) = list(root)?;
    let clip_len = options.clip_samples();
    let rows: Vec<Vec<f32>> = clips
        .par_iter()
        .map(|clip| {
            let samples = centre(&read_wav(&clip.path, options.sample_rate)?, clip_len);
            features.features(samples, &clip.relative, &clip.path)
        })
        .collect::<Result<_>>()?;
    features.dataset(
        super::stem(root),
        rows,
        clips.iter().map(|c| c.class).collect(),
        class_names,
    )
}

/// Features of `options.augment.copies` perturbed copies of each clip at `rows` (row numbers
/// of [`load`]'s data set, so a split's training rows): copy `c` of every row, then copy
/// `c + 1`, so the rows come in `copies` blocks in the order of `rows`.
pub fn augmented_copies(root: &Path, options: &AudioOptions, rows: &[usize]) -> Result<Dataset> {
    use rand::{Rng, SeedableRng};
    let features = ClipFeatures::new(root, options)?;
    let p = options.augment;
    let [slow, fast] = p.speed;
    if !(slow.is_finite() && fast.is_finite() && 0.5 <= slow && slow <= fast && fast <= 2.0) {
        bail!("data.audio.augment.speed: [{slow}, {fast}] must lie within [0.5, 2] in order");
    }
    if !(p.shift_ms.is_finite() && p.shift_ms >= 0.0) {
        bail!(
            "data.audio.augment.shift_ms: {} is not a duration",
            p.shift_ms
        );
    }
    let (clips, class_names) = list(root)?;
    if let Some(&bad) = rows.iter().find(|&&r| r >= clips.len()) {
        bail!("row {bad} is not a clip of {}", root.display());
    }
    let clip_len = options.clip_samples();
    let max_shift = (f64::from(p.shift_ms) * f64::from(options.sample_rate) / 1000.0) as isize;
    let sources: Vec<Vec<f32>> = rows
        .par_iter()
        .map(|&r| read_wav(&clips[r].path, options.sample_rate))
        .collect::<Result<_>>()?;
    let jobs: Vec<(usize, usize)> = (0..p.copies)
        .flat_map(|c| (0..rows.len()).map(move |i| (c, i)))
        .collect();
    let copies: Vec<Vec<f32>> = jobs
        .par_iter()
        .map(|&(copy, i)| {
            let clip = &clips[rows[i]];
            let name = format!("{}#{copy}", clip.relative);
            let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed ^ name_hash(&name));
            let speed = if fast > slow {
                rng.random_range(slow..fast)
            } else {
                slow
            };
            let shift = if max_shift > 0 {
                rng.random_range(-(max_shift as i64)..=max_shift as i64) as isize
            } else {
                0
            };
            let samples = place(&resample(&sources[i], speed), clip_len, shift);
            features.features(samples, &name, &clip.path)
        })
        .collect::<Result<_>>()?;
    features.dataset(
        format!("{} (augmented)", super::stem(root)),
        copies,
        jobs.iter().map(|&(_, i)| clips[rows[i]].class).collect(),
        class_names,
    )
}

/// The split the folder's `validation_list.txt` and `testing_list.txt` give (Speech Commands'
/// convention: one clip path relative to `root` per line); clips in neither list train.
pub fn split_by_lists(root: &Path) -> Result<Split> {
    let (clips, _) = list(root)?;
    let rows: HashMap<&str, usize> = clips
        .iter()
        .enumerate()
        .map(|(i, c)| (c.relative.as_str(), i))
        .collect();
    let mut part = vec![0u8; clips.len()];
    for (name, mark) in [(VALIDATION_LIST, 1u8), (TESTING_LIST, 2u8)] {
        let path = root.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (data.split.method = \"lists\" takes the split from it)",
                path.display()
            )
        })?;
        for (line_no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some(&row) = rows.get(line) else {
                bail!(
                    "{}:{}: `{line}` is not a clip under {}",
                    path.display(),
                    line_no + 1,
                    root.display()
                );
            };
            if part[row] != 0 {
                bail!(
                    "{}:{}: `{line}` is listed twice (in validation and testing?)",
                    path.display(),
                    line_no + 1
                );
            }
            part[row] = mark;
        }
    }
    let mut split = Split::default();
    for (row, &p) in part.iter().enumerate() {
        match p {
            1 => split.val.push(row),
            2 => split.test.push(row),
            _ => split.train.push(row),
        }
    }
    if split.train.is_empty() {
        bail!("{}: the lists leave no clips to train on", root.display());
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    fn tone(hz: f32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (8000.0 * (2.0 * std::f32::consts::PI * hz * i as f32 / 16000.0).sin()) as i16)
            .collect()
    }

    fn small_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (file, hz, samples) in [
            ("high/a_nohash_0.wav", 3000.0, 9000),
            ("high/b_nohash_0.wav", 3100.0, 16000),
            ("low/a_nohash_0.wav", 200.0, 12000),
            ("low/b_nohash_0.wav", 220.0, 20000),
            ("_background_noise_/hum.wav", 50.0, 100),
        ] {
            write_wav(&root.join(file), 16000, 1, &tone(hz, samples));
        }
        std::fs::write(root.join(VALIDATION_LIST), "low/b_nohash_0.wav\n").unwrap();
        std::fs::write(root.join(TESTING_LIST), "high/b_nohash_0.wav\n\n").unwrap();
        dir
    }

    fn quiet() -> AudioOptions {
        AudioOptions {
            background_volume: [0.0, 0.0],
            ..AudioOptions::default()
        }
    }

    #[test]
    fn clips_become_frames_of_the_runtimes_features() {
        let dir = small_folder();
        let data = load(dir.path(), &quiet()).unwrap();
        assert_eq!(data.class_names, ["high", "low"]);
        assert_eq!(data.sample_dims, [49, 10, 1]);
        assert_eq!(data.rows(), 4);
        assert_eq!(data.classes().unwrap(), [0, 0, 1, 1]);
        // Row 2 is the 12000-sample low tone centred in 16000 samples: exactly what the
        // runtime's front end gives for that window.
        let samples = centre(
            &tone(200.0, 12000)
                .iter()
                .map(|&s| f32::from(s) / 32768.0)
                .collect::<Vec<_>>(),
            16000,
        );
        let mut expected = vec![0.0; 490];
        Frontend::new(FeatureConfig::KEYWORDS)
            .unwrap()
            .clip(&samples, &mut expected)
            .unwrap();
        assert_eq!(data.sample(2), &expected[..]);
    }

    #[test]
    fn background_noise_fills_the_padding_the_same_way_on_every_load() {
        let dir = small_folder();
        let mixed = load(dir.path(), &AudioOptions::default()).unwrap();
        let again = load(dir.path(), &AudioOptions::default()).unwrap();
        assert_eq!(mixed.features, again.features);
        let clean = load(dir.path(), &quiet()).unwrap();
        // The 9000-sample clip is zero-padded: its first frame is silence (the log floor)
        // without the hum and something above it with.
        let first_frame = |d: &Dataset| d.sample(0)[0];
        assert!(first_frame(&mixed) > first_frame(&clean) + 1.0);
        let reseeded = load(
            dir.path(),
            &AudioOptions {
                background_seed: 7,
                ..AudioOptions::default()
            },
        )
        .unwrap();
        assert_ne!(reseeded.features, mixed.features);
        let mut clip = vec![0.9f32; 100];
        mix_background(&mut clip, &[vec![1.0; 10]], [0.5, 0.5], 0, "x.wav");
        assert!(clip.iter().all(|&s| s == 1.0), "clipped to full scale");
        let err = format!(
            "{:#}",
            load(
                dir.path(),
                &AudioOptions {
                    background_volume: [0.2, 0.1],
                    ..AudioOptions::default()
                }
            )
            .unwrap_err()
        );
        assert!(err.contains("background_volume"), "{err}");
    }

    #[test]
    fn the_lists_split_by_clip_path() {
        let dir = small_folder();
        let split = split_by_lists(dir.path()).unwrap();
        assert_eq!(split.train, [0, 2]);
        assert_eq!(split.val, [3]);
        assert_eq!(split.test, [1]);
        std::fs::write(dir.path().join(TESTING_LIST), "high/zz.wav\n").unwrap();
        let err = format!("{:#}", split_by_lists(dir.path()).unwrap_err());
        assert!(
            err.contains("testing_list.txt:1") && err.contains("high/zz.wav"),
            "{err}"
        );
    }

    #[test]
    fn clips_the_device_would_not_hear_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let stereo = dir.path().join("a/stereo.wav");
        write_wav(&stereo, 16000, 2, &tone(300.0, 2000));
        let err = format!("{:#}", read_wav(&stereo, 16000).unwrap_err());
        assert!(err.contains("stereo.wav") && err.contains("mono"), "{err}");
        let fast = dir.path().join("a/fast.wav");
        write_wav(&fast, 44100, 1, &tone(300.0, 2000));
        let err = format!("{:#}", read_wav(&fast, 16000).unwrap_err());
        assert!(
            err.contains("fast.wav") && err.contains("44100 Hz"),
            "{err}"
        );
        let junk = dir.path().join("a/junk.wav");
        std::fs::write(&junk, b"RIFF\x10\0\0\0WAVEjunk").unwrap();
        let err = format!("{:#}", read_wav(&junk, 16000).unwrap_err());
        assert!(err.contains("junk.wav"), "{err}");
    }

    #[test]
    fn options_that_do_not_fit_the_front_end_name_the_field() {
        let bad = |o: AudioOptions| format!("{:#}", o.feature_config().unwrap_err());
        let d = AudioOptions::default();
        assert!(
            bad(AudioOptions {
                window_ms: 40.0,
                ..d
            })
            .contains("window")
        );
        assert!(bad(AudioOptions { hop_ms: 0.01, ..d }).contains("hop_ms"));
        assert!(
            bad(AudioOptions {
                high_hz: 9000.0,
                ..d
            })
            .contains("high_hz")
        );
    }

    #[test]
    fn centring_pads_or_keeps_the_middle() {
        assert_eq!(centre(&[1.0, 2.0], 4), [0.0, 1.0, 2.0, 0.0]);
        assert_eq!(centre(&[1.0, 2.0, 3.0, 4.0, 5.0], 3), [2.0, 3.0, 4.0]);
    }
}
