//! Where samples come from: lines of numbers on stdin, rows of a CSV file (optionally
//! gzipped, optionally with a header and a label column), or WAV clips turned into the
//! model's audio features by the runtime's own front end.
//!
//! Each source hands samples to a callback one at a time, so stdin is processed as it arrives.
//! A sample that cannot be read is handed over as an error naming its line or file and the
//! stream goes on; only a source that cannot be opened at all stops the program.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use loam::audio::{FeatureConfig, Frontend};

/// One sample read from a source.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Where it came from, e.g. `stdin:3`, `digits.csv.gz:12` or a WAV file's path.
    pub source: String,
    /// The raw values (before the model's preprocessing).
    pub values: Vec<f32>,
    /// The label the data gives, if any.
    pub expected: Option<String>,
}

/// What a source hands to its consumer: a sample, or why one could not be read (with the
/// source's position already in the message).
pub type Item = Result<Sample>;

/// Parses `token` as a finite number; `what` names it in the error.
fn number(token: &str, what: &dyn Fn() -> String) -> Result<f32> {
    let x: f32 = token
        .parse()
        .map_err(|_| anyhow!("{}: `{token}` is not a number", what()))?;
    // "nan" and "inf" parse; quantizing them would give arbitrary inputs, so refuse them.
    ensure!(
        x.is_finite(),
        "{}: `{token}` is not a finite number",
        what()
    );
    Ok(x)
}

/// One line of stdin: numbers separated by commas and/or whitespace.
fn parse_line(line: &str, expected_len: usize) -> Result<Vec<f32>> {
    let values = line
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| number(t, &|| format!("value {}", i + 1)))
        .collect::<Result<Vec<f32>>>()?;
    ensure!(
        values.len() == expected_len,
        "{} values, the model takes {expected_len}",
        values.len()
    );
    Ok(values)
}

/// Reads samples from `input` line by line until it ends: blank lines and lines starting with
/// `#` are skipped. `name` prefixes positions (`stdin:LINE`).
pub fn lines(
    input: impl BufRead,
    name: &str,
    expected_len: usize,
    each: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let mut input = input;
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let read = input
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {name}"))?;
        if read == 0 {
            return Ok(());
        }
        line_no += 1;
        let source = format!("{name}:{line_no}");
        // Lossy: one line of bad bytes is one rejected sample, not the end of the stream.
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let item = parse_line(line, expected_len)
            .map(|values| Sample {
                source: source.clone(),
                values,
                expected: None,
            })
            .with_context(|| format!("{name} line {line_no}"));
        each(item)?;
    }
}

/// Which CSV column holds the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelColumn {
    /// The last column when a row has exactly one value more than the model takes; none when
    /// it has exactly as many.
    Auto,
    /// No label column.
    None,
    /// The column with this header name.
    Name(String),
    /// The column at this 0-based index.
    Index(usize),
}

impl std::str::FromStr for LabelColumn {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => LabelColumn::Auto,
            "none" => LabelColumn::None,
            _ => match s.parse() {
                Ok(i) => LabelColumn::Index(i),
                Err(_) => LabelColumn::Name(s.to_string()),
            },
        })
    }
}

/// Opens `path`, decompressing it when it is gzipped (by its magic bytes, whatever its name).
fn open_maybe_gzipped(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = BufReader::new(
        File::open(path).with_context(|| format!("opening CSV file {}", path.display()))?,
    );
    let head = file
        .fill_buf()
        .with_context(|| format!("reading {}", path.display()))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// Whether `field` reads as a number (a header row has at least one field that does not).
fn is_number(field: &str) -> bool {
    field.parse::<f32>().is_ok()
}

/// Reads the samples of a CSV file. A first row with a non-numeric feature field is a header
/// (it names the columns in errors and lets `--label-column` name the label).
pub fn csv(
    path: &Path,
    label: &LabelColumn,
    expected_len: usize,
    each: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let name = path.display().to_string();
    let reader = open_maybe_gzipped(path)?;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        // Rows of the wrong length are reported by line here instead of ending the read.
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut header: Option<Vec<String>> = None;
    let mut first = true;
    let mut record = csv::StringRecord::new();
    loop {
        let line = csv.position().line();
        match csv.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    // A truncated or corrupt gzip stream cannot be resynchronised.
                    return Err(e).with_context(|| format!("reading {name}"));
                }
                let line = e.position().map_or(line, |p| p.line());
                each(Err(anyhow!(e).context(format!("{name} line {line}"))))?;
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        let fields: Vec<&str> = record.iter().collect();
        let label_index = match label_index(label, header.as_deref(), &fields, expected_len) {
            Ok(i) => i,
            Err(e) if first => {
                // A label column named but not found in the first row is a usage error.
                return Err(e.context(format!("{name} line {line}")));
            }
            Err(e) => {
                each(Err(e.context(format!("{name} line {line}"))))?;
                continue;
            }
        };
        if first {
            first = false;
            let is_header = matches!(label, LabelColumn::Name(_))
                || fields
                    .iter()
                    .enumerate()
                    .any(|(i, f)| Some(i) != label_index && !is_number(f));
            if is_header {
                header = Some(fields.iter().map(|f| f.to_string()).collect());
                if let LabelColumn::Name(n) = label {
                    ensure!(
                        fields.contains(&n.as_str()),
                        "{name}: no column is called `{n}` (columns: {})",
                        fields.join(", ")
                    );
                }
                continue;
            }
        }
        let item = row(&fields, label_index, header.as_deref(), expected_len)
            .map(|(values, expected)| Sample {
                source: format!("{name}:{line}"),
                values,
                expected,
            })
            .with_context(|| format!("{name} line {line}"));
        each(item)?;
    }
}

/// The label's column in a row of `fields`, if the row has one.
fn label_index(
    label: &LabelColumn,
    header: Option<&[String]>,
    fields: &[&str],
    expected_len: usize,
) -> Result<Option<usize>> {
    Ok(match label {
        LabelColumn::None => None,
        LabelColumn::Index(i) => {
            ensure!(
                *i < fields.len(),
                "label column {i} is past the row's {} columns",
                fields.len()
            );
            Some(*i)
        }
        LabelColumn::Name(n) => match header {
            Some(h) => Some(
                h.iter()
                    .position(|c| c == n)
                    .with_context(|| format!("no column is called `{n}`"))?,
            ),
            // The first row, which must be the header naming it.
            None => fields.iter().position(|c| c == n),
        },
        LabelColumn::Auto => (fields.len() == expected_len + 1).then(|| fields.len() - 1),
    })
}

/// The feature values and the label of one CSV row.
fn row(
    fields: &[&str],
    label_index: Option<usize>,
    header: Option<&[String]>,
    expected_len: usize,
) -> Result<(Vec<f32>, Option<String>)> {
    if let Some(i) = label_index {
        ensure!(
            i < fields.len(),
            "the label column ({}) is past the row's {} columns",
            i + 1,
            fields.len()
        );
    }
    let features = fields.len() - usize::from(label_index.is_some());
    ensure!(
        features == expected_len,
        "{} feature columns{}, the model takes {expected_len}",
        features,
        if label_index.is_some() {
            " besides the label"
        } else {
            ""
        }
    );
    let mut values = Vec::with_capacity(expected_len);
    for (i, field) in fields.iter().enumerate() {
        if Some(i) == label_index {
            continue;
        }
        let what = || match header.and_then(|h| h.get(i)) {
            Some(name) => format!("column {} (`{name}`)", i + 1),
            None => format!("column {}", i + 1),
        };
        ensure!(!field.is_empty(), "{}: empty value", what());
        values.push(number(field, &what)?);
    }
    let expected = label_index.map(|i| fields[i].to_string());
    Ok((values, expected))
}

/// Turns WAV clips into the features of a model that stores its audio front end.
pub struct Audio {
    frontend: Frontend,
    /// Samples per clip: the window the features are computed over.
    clip_len: usize,
    /// Features the model takes.
    features: usize,
}

/// Clips longer than this are refused rather than read whole into memory.
const MAX_CLIP_SECONDS: u32 = 60;

impl Audio {
    /// The front end `config` describes, for a model input of `input_len` values.
    pub fn new(config: FeatureConfig, input_len: usize) -> Result<Audio> {
        let frontend = Frontend::new(config).map_err(|e| anyhow!("the model's front end: {e}"))?;
        let per_frame = config.features_per_frame();
        ensure!(
            per_frame > 0 && input_len % per_frame == 0,
            "the model's input ({input_len} values) is not whole frames of {per_frame} features"
        );
        let frames = input_len / per_frame;
        // The tools centre every clip in one second (the usual clip length, as in Speech
        // Commands); a model whose frames do not fit one second gets the shortest window
        // that yields them.
        let one_second = config.sample_rate as usize;
        let clip_len = if config.frames(one_second) == frames {
            one_second
        } else {
            usize::from(config.window) + (frames.max(1) - 1) * usize::from(config.hop)
        };
        ensure!(
            config.frames(clip_len) == frames,
            "the model's input ({frames} frames) does not match its front end"
        );
        Ok(Audio {
            frontend,
            clip_len,
            features: input_len,
        })
    }

    /// The features of the clip in `path`: mono, at the model's sample rate, 16-bit or other
    /// integer PCM or 32-bit float; centred in the model's window (zero-padded or cut).
    pub fn features(&self, path: &Path) -> Result<Vec<f32>> {
        let reader = hound::WavReader::open(path)
            .with_context(|| format!("{}: not a readable WAV file", path.display()))?;
        let spec = reader.spec();
        let rate = self.frontend.config().sample_rate;
        ensure!(
            spec.channels == 1,
            "{}: {} channels; clips must be mono (e.g. `sox in.wav -c 1 out.wav`)",
            path.display(),
            spec.channels
        );
        ensure!(
            spec.sample_rate == rate,
            "{}: {} Hz; the model takes {rate} Hz (e.g. `sox in.wav -r {rate} out.wav`)",
            path.display(),
            spec.sample_rate
        );
        ensure!(
            reader.duration() <= MAX_CLIP_SECONDS * rate,
            "{}: longer than {MAX_CLIP_SECONDS} s; cut it into clips",
            path.display()
        );
        let context = || format!("{}: reading samples", path.display());
        let mut out = vec![0.0f32; self.features];
        // 16-bit PCM goes to the front end as is (its `i16` path is what the device's
        // microphone gives); other formats as f32 on the same full-scale-is-1 scale.
        let frames = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 16) => {
                let samples = reader
                    .into_samples::<i16>()
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(context)?;
                self.frontend
                    .clip(&centre(&samples, self.clip_len), &mut out)
            }
            (hound::SampleFormat::Int, bits @ 1..=32) => {
                let full_scale = (1u64 << (bits - 1)) as f32;
                let samples = reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|s| s as f32 / full_scale))
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(context)?;
                self.frontend
                    .clip(&centre(&samples, self.clip_len), &mut out)
            }
            (hound::SampleFormat::Float, 32) => {
                let samples = reader
                    .into_samples::<f32>()
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(context)?;
                self.frontend
                    .clip(&centre(&samples, self.clip_len), &mut out)
            }
            (format, bits) => bail!(
                "{}: {bits}-bit {format:?} samples are not supported (integer PCM or 32-bit float)",
                path.display()
            ),
        }
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        ensure!(
            frames * self.frontend.config().features_per_frame() == self.features,
            "{}: {frames} frames of features do not fill the model's input",
            path.display()
        );
        Ok(out)
    }
}

/// `samples` centred in `len`: zero-padded equally on both sides when shorter, the middle
/// `len` when longer (the tools' placement, so features match training).
fn centre<S: Copy + Default>(samples: &[S], len: usize) -> Vec<S> {
    let mut out = vec![S::default(); len];
    let start = (len as isize - samples.len() as isize).div_euclid(2);
    for (i, &s) in samples.iter().enumerate() {
        let at = start + i as isize;
        if (0..len as isize).contains(&at) {
            out[at as usize] = s;
        }
    }
    out
}

/// The expected label of a clip: its folder's name when that is one of `labels` (the
/// Speech Commands layout `<word>/<clip>.wav`).
pub fn folder_label(path: &Path, labels: &[String]) -> Option<String> {
    let folder = path.parent()?.file_name()?.to_str()?;
    labels
        .iter()
        .any(|l| l == folder)
        .then(|| folder.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_accept_commas_and_whitespace() {
        assert_eq!(parse_line("1, 2\t3 ,4", 4).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        let e = parse_line("1,x,3", 3).unwrap_err().to_string();
        assert!(e.contains("value 2") && e.contains("`x`"), "{e}");
        let e = parse_line("1,2", 3).unwrap_err().to_string();
        assert!(e.contains("2 values, the model takes 3"), "{e}");
        assert!(parse_line("1,nan,3", 3).is_err());
    }

    #[test]
    fn label_columns_parse() {
        assert_eq!("auto".parse::<LabelColumn>().unwrap(), LabelColumn::Auto);
        assert_eq!("3".parse::<LabelColumn>().unwrap(), LabelColumn::Index(3));
        assert_eq!(
            "label".parse::<LabelColumn>().unwrap(),
            LabelColumn::Name("label".into())
        );
    }

    #[test]
    fn centring_matches_the_tools() {
        assert_eq!(centre(&[1, 2], 4), [0, 1, 2, 0]);
        assert_eq!(centre(&[1, 2, 3], 4), [1, 2, 3, 0]);
        assert_eq!(centre(&[1, 2, 3, 4, 5, 6], 4), [2, 3, 4, 5]);
    }
}
