//! NumPy `.npy` arrays (optionally gzipped) and `.npz` archives into a [`Dataset`]: a
//! features array whose first axis is the row, plus an optional labels array.
//!
//! An `.npz` archive (`np.savez` or `np.savez_compressed`) holds both: its only array is the
//! features, or the arrays are told apart by name (features `x`, `X`, `features`, `data`,
//! `inputs`; labels `y`, `Y`, `labels`, `targets`, `target`, `label`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use npyz::{DType, NpyFile, NpyHeader, TypeChar};

use super::{Dataset, Targets, Task};

/// The most classes a label array may imply; beyond this a label is surely not a class id.
const MAX_CLASSES: usize = 1 << 16;

/// Names an `.npz` array of features may have.
const FEATURE_NAMES: [&str; 5] = ["x", "X", "features", "data", "inputs"];
/// Names an `.npz` array of labels may have.
const LABEL_NAMES: [&str; 6] = ["y", "Y", "labels", "targets", "target", "label"];
/// The most bytes one `.npz` member may unpack to, so that a zip bomb cannot take the
/// machine's memory.
const MAX_MEMBER_BYTES: u64 = 1 << 34;

/// An array read from a file: its shape and elements as f32.
type Array = (Vec<usize>, Vec<f32>);

/// Reads the features and (if present) labels of an `.npz` archive; see the module docs for
/// how arrays are told apart.
pub fn read_npz(path: &Path) -> Result<(Array, Option<Array>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a readable .npz (zip) archive", path.display()))?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| Some(n.ok()?.strip_suffix(".npy")?.to_string()))
        .collect();
    let pick = |candidates: &[&'static str]| -> Option<&'static str> {
        candidates
            .iter()
            .copied()
            .find(|c| names.iter().any(|n| n == c))
    };
    let (features, labels) = match names.as_slice() {
        [only] => (only.clone(), None),
        _ => match pick(&FEATURE_NAMES) {
            Some(f) => (f.to_string(), pick(&LABEL_NAMES).map(|l| l.to_string())),
            None => bail!(
                "{}: holds arrays {names:?}; name the features one of {FEATURE_NAMES:?} and \
                 the labels one of {LABEL_NAMES:?} (np.savez(path, x=..., y=...))",
                path.display()
            ),
        },
    };
    let mut read_member = |name: &str| -> Result<Array> {
        let source = format!("{}[{name}]", path.display());
        let member = archive
            .by_name(&format!("{name}.npy"))
            .with_context(|| format!("{source}: reading the archive member"))?;
        if member.size() > MAX_MEMBER_BYTES {
            bail!("{source}: {} bytes unpacked is too large", member.size());
        }
        let mut bytes = Vec::with_capacity(member.size() as usize);
        std::io::Read::read_to_end(
            &mut std::io::Read::take(member, MAX_MEMBER_BYTES),
            &mut bytes,
        )
        .with_context(|| format!("{source}: unpacking"))?;
        parse(&bytes, &source)
    };
    let features = read_member(&features)?;
    let labels = labels.map(|l| read_member(&l)).transpose()?;
    Ok((features, labels))
}

/// Reads an `.npy` array of booleans, integers or floats as f32, with its shape.
pub fn read(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = super::read_all(path)?;
    parse(&bytes, &path.display().to_string())
}

/// Parses an `.npy` file held in memory; `source` names it in errors.
pub fn parse(bytes: &[u8], source: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    check_shape(bytes).with_context(|| format!("{source}: bad .npy header"))?;
    let mut rest = bytes;
    let header = NpyHeader::from_reader(&mut rest)
        .with_context(|| format!("{source}: not a valid .npy file"))?;
    let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
    if header.order() == npyz::Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        bail!("{source}: Fortran-ordered arrays are not supported; save it in C order");
    }
    let dtype = header.dtype();
    let DType::Plain(ts) = &dtype else {
        bail!(
            "{source}: structured element type `{}` is not supported; save plain numbers",
            dtype.descr()
        );
    };
    // Without this check a lying header would make the reader reserve memory for elements
    // that are not there.
    let need = ts
        .num_bytes()
        .and_then(|size| (header.len() as usize).checked_mul(size));
    match need {
        Some(need) if need <= rest.len() => {}
        Some(need) => bail!(
            "{source}: truncated: shape {shape:?} of `{}` needs {need} bytes of elements, \
             but only {} follow the header",
            dtype.descr(),
            rest.len()
        ),
        None => bail!("{source}: shape {shape:?} is too large"),
    }
    let file = NpyFile::with_header(header, rest);
    let context = || format!("{source}: reading the elements");
    macro_rules! read_as {
        ($t:ty) => {
            file.into_vec::<$t>()
                .with_context(context)?
                .into_iter()
                .map(|x| x as f32)
                .collect()
        };
    }
    let data: Vec<f32> = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Bool, 1) => file
            .into_vec::<bool>()
            .with_context(context)?
            .into_iter()
            .map(|b| f32::from(u8::from(b)))
            .collect(),
        (TypeChar::Int, 1) => read_as!(i8),
        (TypeChar::Int, 2) => read_as!(i16),
        (TypeChar::Int, 4) => read_as!(i32),
        (TypeChar::Int, 8) => read_as!(i64),
        (TypeChar::Uint, 1) => read_as!(u8),
        (TypeChar::Uint, 2) => read_as!(u16),
        (TypeChar::Uint, 4) => read_as!(u32),
        (TypeChar::Uint, 8) => read_as!(u64),
        (TypeChar::Float, 4) => read_as!(f32),
        (TypeChar::Float, 8) => read_as!(f64),
        _ => bail!(
            "{source}: element type `{}` is not supported (use bool, int, uint, float32 or \
             float64)",
            dtype.descr()
        ),
    };
    Ok((shape, data))
}

/// Checks, before npyz multiplies them, that the header's dimensions multiply without
/// overflow (npyz would panic in a debug build). Headers this cannot make sense of are left
/// for npyz to reject.
fn check_shape(bytes: &[u8]) -> Result<()> {
    let Some(rest) = bytes.strip_prefix(b"\x93NUMPY") else {
        return Ok(());
    };
    let text = match rest {
        [1, _, a, b, text @ ..] => text.get(..usize::from(u16::from_le_bytes([*a, *b]))),
        [2 | 3, _, a, b, c, d, text @ ..] => {
            text.get(..u32::from_le_bytes([*a, *b, *c, *d]) as usize)
        }
        _ => None,
    };
    let Some(text) = text.and_then(|t| std::str::from_utf8(t).ok()) else {
        return Ok(());
    };
    let Some(after) = text.split_once("'shape'").map(|(_, a)| a) else {
        return Ok(());
    };
    let Some(inside) = after
        .split_once('(')
        .and_then(|(_, a)| a.split_once(')'))
        .map(|(i, _)| i)
    else {
        return Ok(());
    };
    let mut product: u64 = 1;
    for dim in inside.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let Ok(d) = dim.parse::<u64>() else {
            return Ok(());
        };
        // Zero-length axes do not stop npyz's stride products from overflowing.
        if d > 0 {
            product = product
                .checked_mul(d)
                .with_context(|| format!("shape ({inside}) is too large"))?;
        }
    }
    Ok(())
}

/// Loads features from `features` (`[n, ...]`; a 1-D `[n]` array is one value per row)
/// and, if given, targets from `labels`.
///
/// For classification, labels are `[n]` (or `[n, 1]`) non-negative integral values used as
/// class ids directly (names `0`, `1`, …), or one-hot rows `[n, k]`. For regression, labels
/// are `[n]` or `[n, w]` values.
pub fn load(features: &Path, labels: Option<&Path>, task: Task) -> Result<Dataset> {
    let npz = features
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    let ((shape, data), packed_labels) = if npz {
        if labels.is_some() {
            bail!(
                "{}: an .npz archive holds its own labels; drop the separate label file",
                features.display()
            );
        }
        read_npz(features)?
    } else {
        (read(features)?, None)
    };
    let Some((&rows, rest)) = shape.split_first() else {
        bail!(
            "{}: a 0-dimensional array is not a data set; expected [rows, ...]",
            features.display()
        );
    };
    let sample_dims = if rest.is_empty() {
        vec![1]
    } else {
        rest.to_vec()
    };
    let (targets, class_names) = match (labels, packed_labels) {
        (_, Some((lshape, ldata))) => targets(&lshape, ldata, rows, task, features)?,
        (None, None) => (Targets::None, Vec::new()),
        (Some(path), None) => {
            let (lshape, ldata) = read(path)?;
            targets(&lshape, ldata, rows, task, path)
                .with_context(|| format!("with features {}", features.display()))?
        }
    };
    let dataset = Dataset {
        name: super::stem(features),
        feature_names: super::idx::feature_names(&sample_dims),
        sample_dims,
        features: data,
        targets,
        class_names,
    };
    dataset.validate()?;
    Ok(dataset)
}

fn targets(
    shape: &[usize],
    data: Vec<f32>,
    rows: usize,
    task: Task,
    path: &Path,
) -> Result<(Targets, Vec<String>)> {
    let source = path.display();
    let Some((&n, rest)) = shape.split_first() else {
        bail!("{source}: labels are a 0-dimensional array; expected [rows] or [rows, k]");
    };
    if n != rows {
        bail!("{source}: {n} label rows for {rows} feature rows");
    }
    let width: usize = rest.iter().product();
    match task {
        Task::Regression => {
            if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                bail!(
                    "{source}: row {}: label {} is not a finite number",
                    i / width.max(1),
                    data[i]
                );
            }
            Ok((
                Targets::Values {
                    values: data,
                    width,
                },
                Vec::new(),
            ))
        }
        Task::Classification => {
            let classes: Vec<u32> = if width <= 1 {
                let mut ids = Vec::with_capacity(data.len());
                for (row, &x) in data.iter().enumerate() {
                    if !(x >= 0.0 && x.fract() == 0.0 && (x as usize) < MAX_CLASSES) {
                        bail!(
                            "{source}: row {row}: label {x} is not a class id (a whole number \
                             from 0 to {})",
                            MAX_CLASSES - 1
                        );
                    }
                    ids.push(x as u32);
                }
                ids
            } else {
                if width > MAX_CLASSES {
                    bail!("{source}: one-hot labels of {width} classes are too many");
                }
                let mut ids = Vec::with_capacity(rows);
                for (row, one_hot) in data.chunks_exact(width).enumerate() {
                    let ones: Vec<usize> = (0..width).filter(|&k| one_hot[k] == 1.0).collect();
                    let zeros = one_hot.iter().filter(|&&x| x == 0.0).count();
                    match ones.as_slice() {
                        [k] if zeros == width - 1 => ids.push(*k as u32),
                        _ => bail!(
                            "{source}: row {row}: labels of shape {shape:?} must be one-hot \
                             (one 1, the rest 0)"
                        ),
                    }
                }
                ids
            };
            let count = if width > 1 {
                width
            } else {
                classes.iter().max().map_or(0, |&m| m as usize + 1)
            };
            let names = (0..count).map(|i| i.to_string()).collect();
            Ok((Targets::Classes(classes), names))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy<T: npyz::AutoSerialize + Copy>(shape: &[u64], values: &[T]) -> Vec<u8> {
        use npyz::WriterBuilder;
        let mut out = Vec::new();
        let mut w = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(shape)
            .writer(&mut out)
            .begin_nd()
            .unwrap();
        w.extend(values.iter().copied()).unwrap();
        w.finish().unwrap();
        out
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn npz(dir: &Path, name: &str, members: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
        use std::io::Write;
        let path = dir.join(name);
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for (i, (member, bytes)) in members.iter().enumerate() {
            // np.savez stores, np.savez_compressed deflates: one member of each.
            let method = if i % 2 == 0 {
                zip::CompressionMethod::Stored
            } else {
                zip::CompressionMethod::Deflated
            };
            let options = zip::write::SimpleFileOptions::default().compression_method(method);
            zip.start_file(format!("{member}.npy"), options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    #[test]
    fn npz_archives_hold_features_and_labels_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let x = npy::<f32>(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let y = npy::<i64>(&[3], &[0, 1, 1]);
        let both = npz(
            dir.path(),
            "both.npz",
            &[("y", y.clone()), ("x", x.clone())],
        );
        let data = load(&both, None, Task::Classification).unwrap();
        assert_eq!(data.sample_dims, [2]);
        assert_eq!(data.features, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(data.classes().unwrap(), [0, 1, 1]);
        let only = npz(dir.path(), "only.npz", &[("arr_0", x.clone())]);
        let data = load(&only, None, Task::Classification).unwrap();
        assert_eq!((data.rows(), data.targets.rows()), (3, None));
        let odd = npz(dir.path(), "odd.npz", &[("a", x.clone()), ("b", y.clone())]);
        let err = format!("{:#}", load(&odd, None, Task::Classification).unwrap_err());
        assert!(err.contains("odd.npz") && err.contains("\"a\""), "{err}");
        let short = npz(
            dir.path(),
            "short.npz",
            &[("x", x), ("y", npy::<i64>(&[2], &[0, 1]))],
        );
        let err = format!(
            "{:#}",
            load(&short, None, Task::Classification).unwrap_err()
        );
        assert!(
            err.contains("short.npz") && err.contains("2 label rows"),
            "{err}"
        );
        let junk = write(dir.path(), "junk.npz", b"PK\x03\x04 not really");
        let err = format!("{:#}", load(&junk, None, Task::Classification).unwrap_err());
        assert!(err.contains("junk.npz"), "{err}");
    }

    #[test]
    fn features_of_every_element_type() {
        assert_eq!(
            parse(&npy::<u8>(&[3], &[0, 7, 255]), "u8").unwrap(),
            (vec![3], vec![0.0, 7.0, 255.0])
        );
        assert_eq!(
            parse(&npy::<i64>(&[2], &[-5, 9]), "i8").unwrap().1,
            vec![-5.0, 9.0]
        );
        assert_eq!(
            parse(&npy::<f64>(&[1, 2], &[0.5, -1.25]), "f8").unwrap(),
            (vec![1, 2], vec![0.5, -1.25])
        );
        assert_eq!(
            parse(&npy::<bool>(&[2], &[true, false]), "b").unwrap().1,
            vec![1.0, 0.0]
        );
    }

    #[test]
    fn images_with_class_labels() {
        let dir = tempfile::tempdir().unwrap();
        let x = write(
            dir.path(),
            "x.npy",
            &npy::<f32>(&[2, 2, 1, 1], &[0.0, 0.5, 1.0, 0.25]),
        );
        let y = write(dir.path(), "y.npy", &npy::<i64>(&[2], &[3, 1]));
        let d = load(&x, Some(&y), Task::Classification).unwrap();
        assert_eq!(d.name, "x");
        assert_eq!(d.sample_dims, vec![2, 1, 1]);
        assert_eq!(d.sample(1), &[1.0, 0.25]);
        assert_eq!(d.targets, Targets::Classes(vec![3, 1]));
        assert_eq!(d.class_names, vec!["0", "1", "2", "3"]);
    }

    #[test]
    fn one_hot_and_regression_labels() {
        let dir = tempfile::tempdir().unwrap();
        let x = write(dir.path(), "x.npy", &npy::<f32>(&[2], &[1.0, 2.0]));
        let hot = write(
            dir.path(),
            "hot.npy",
            &npy::<f32>(&[2, 3], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]),
        );
        let d = load(&x, Some(&hot), Task::Classification).unwrap();
        assert_eq!(d.sample_dims, vec![1]);
        assert_eq!(d.targets, Targets::Classes(vec![2, 0]));
        assert_eq!(d.class_names.len(), 3);
        let d = load(&x, Some(&hot), Task::Regression).unwrap();
        assert_eq!(
            d.targets,
            Targets::Values {
                values: vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
                width: 3
            }
        );
        let soft = write(
            dir.path(),
            "soft.npy",
            &npy::<f32>(&[2, 2], &[0.5, 0.5, 1.0, 0.0]),
        );
        let e = format!(
            "{:#}",
            load(&x, Some(&soft), Task::Classification).unwrap_err()
        );
        assert!(
            e.contains("soft.npy") && e.contains("row 0") && e.contains("one-hot"),
            "{e}"
        );
    }

    #[test]
    fn bad_labels_name_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let x = write(dir.path(), "x.npy", &npy::<f32>(&[2, 1], &[1.0, 2.0]));
        let neg = write(dir.path(), "neg.npy", &npy::<i32>(&[2], &[0, -1]));
        let e = format!(
            "{:#}",
            load(&x, Some(&neg), Task::Classification).unwrap_err()
        );
        assert!(
            e.contains("neg.npy") && e.contains("row 1") && e.contains("-1"),
            "{e}"
        );
        let three = write(dir.path(), "three.npy", &npy::<i32>(&[3], &[0, 1, 2]));
        let e = format!(
            "{:#}",
            load(&x, Some(&three), Task::Classification).unwrap_err()
        );
        assert!(
            e.contains("three.npy") && e.contains("3 label rows for 2"),
            "{e}"
        );
    }

    #[test]
    fn truncated_and_garbage_files_are_errors() {
        let full = npy::<f32>(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        for cut in 0..full.len() {
            let e = parse(&full[..cut], "cut.npy");
            assert!(e.is_err(), "prefix of {cut} bytes parsed");
        }
        let e = format!(
            "{:#}",
            parse(&full[..full.len() - 1], "cut.npy").unwrap_err()
        );
        assert!(e.contains("cut.npy") && e.contains("truncated"), "{e}");
        let e = format!("{:#}", parse(b"hello", "junk.npy").unwrap_err());
        assert!(e.contains("junk.npy"), "{e}");
    }

    #[test]
    fn overflowing_shape_is_an_error_not_a_panic() {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296, 4294967296), }";
        let mut header = dict.as_bytes().to_vec();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&header);
        let e = format!("{:#}", parse(&bytes, "big.npy").unwrap_err());
        assert!(e.contains("big.npy") && e.contains("too large"), "{e}");
    }
}
