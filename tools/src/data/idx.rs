//! IDX files, the format of MNIST and Fashion-MNIST (optionally gzipped), into a
//! [`Dataset`].
//!
//! An IDX file is two zero bytes, an element type byte, a dimension count byte, that many
//! big-endian `u32` dimensions, then the elements, big-endian. Images (`[n, h, w]`) become
//! samples of `[h, w, 1]`; unsigned bytes are scaled to [0, 1].

use std::path::Path;

use anyhow::{Result, bail};

use super::{Dataset, Targets};

/// One IDX array: its dimensions and its elements as f32, unscaled.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The element type byte of the header (0x08 = u8, 0x09 = i8, 0x0B = i16, 0x0C = i32,
    /// 0x0D = f32, 0x0E = f64).
    pub kind: u8,
    /// Elements in row-major order.
    pub data: Vec<f32>,
}

/// Parses an IDX file held in memory; `source` names it in errors.
pub fn parse(bytes: &[u8], source: &str) -> Result<IdxArray> {
    if bytes.len() < 4 {
        bail!(
            "{source}: truncated: {} bytes, shorter than the 4-byte IDX magic",
            bytes.len()
        );
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        bail!(
            "{source}: bad magic {:02x} {:02x} {:02x} {:02x}: an IDX file starts with 00 00, \
             then the element type and the dimension count",
            bytes[0],
            bytes[1],
            bytes[2],
            bytes[3]
        );
    }
    let kind = bytes[2];
    let size = match kind {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        other => bail!(
            "{source}: bad magic: element type byte 0x{other:02x} is not one of IDX's \
             (08 u8, 09 i8, 0B i16, 0C i32, 0D f32, 0E f64)"
        ),
    };
    let rank = usize::from(bytes[3]);
    if rank == 0 {
        bail!("{source}: the header declares no dimensions");
    }
    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        bail!(
            "{source}: truncated: the header declares {rank} dimensions ({header_len} bytes) \
             but the file has {} bytes",
            bytes.len()
        );
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(size).map(|b| (n, b)));
    let body = &bytes[header_len..];
    let Some((count, data_len)) = count else {
        bail!("{source}: dimensions {dims:?} are too large");
    };
    if body.len() < data_len {
        bail!(
            "{source}: truncated: dimensions {dims:?} need {data_len} bytes of elements after \
             the {header_len}-byte header, but only {} follow",
            body.len()
        );
    }
    if body.len() > data_len {
        bail!(
            "{source}: {} unexpected bytes after the {data_len} bytes of elements of \
             dimensions {dims:?}",
            body.len() - data_len
        );
    }
    let data: Vec<f32> = match kind {
        0x08 => body.iter().map(|&b| f32::from(b)).collect(),
        0x09 => body.iter().map(|&b| f32::from(b as i8)).collect(),
        0x0B => body
            .chunks_exact(2)
            .map(|c| f32::from(i16::from_be_bytes([c[0], c[1]])))
            .collect(),
        0x0C => body
            .chunks_exact(4)
            .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        0x0D => body
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => body
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_be_bytes(b) as f32
            })
            .collect(),
    };
    debug_assert_eq!(data.len(), count);
    Ok(IdxArray { dims, kind, data })
}

/// Reads one IDX file (gzipped or not).
pub fn read(path: &Path) -> Result<IdxArray> {
    let bytes = super::read_all(path)?;
    parse(&bytes, &path.display().to_string())
}

/// Loads images (`[n, h, w]` or `[n, h, w, c]`; `[n, d]` for plain vectors) and, if given,
/// their labels (`[n]` of u8: class ids, named `0`, `1`, …). Unsigned-byte images are
/// scaled to [0, 1]; other element types are kept as they are.
pub fn load(images: &Path, labels: Option<&Path>) -> Result<Dataset> {
    let array = read(images)?;
    let (rows, sample_dims) = match array.dims.as_slice() {
        [n, d] => (*n, vec![*d]),
        [n, h, w] => (*n, vec![*h, *w, 1]),
        [n, h, w, c] => (*n, vec![*h, *w, *c]),
        other => bail!(
            "{}: dimensions {other:?}: expected [n, h, w] images, [n, h, w, c] or [n, d]",
            images.display()
        ),
    };
    let mut features = array.data;
    if array.kind == 0x08 {
        for x in &mut features {
            *x /= 255.0;
        }
    }
    let (targets, class_names) = match labels {
        None => (Targets::None, Vec::new()),
        Some(path) => {
            let l = read(path)?;
            let source = path.display();
            if l.kind != 0x08 {
                bail!(
                    "{source}: labels must be unsigned bytes (element type 0x08), not 0x{:02x}",
                    l.kind
                );
            }
            if l.dims.len() != 1 {
                bail!(
                    "{source}: labels have dimensions {:?}; expected [n]",
                    l.dims
                );
            }
            if l.dims[0] != rows {
                bail!(
                    "{source}: {} labels for the {rows} images of {}",
                    l.dims[0],
                    images.display()
                );
            }
            let classes: Vec<u32> = l.data.iter().map(|&x| x as u32).collect();
            let count = classes.iter().max().map_or(0, |&m| m as usize + 1);
            let names = (0..count).map(|i| i.to_string()).collect();
            (Targets::Classes(classes), names)
        }
    };
    let feature_names = feature_names(&sample_dims);
    let dataset = Dataset {
        name: super::stem(images),
        sample_dims,
        features,
        feature_names,
        targets,
        class_names,
    };
    dataset.validate()?;
    Ok(dataset)
}

/// `pixel_r_c` (`pixel_r_c_k` for several channels) for images, `x{i}` for vectors.
pub(crate) fn feature_names(sample_dims: &[usize]) -> Vec<String> {
    match sample_dims {
        [h, w, c] => {
            let mut names = Vec::with_capacity(h * w * c);
            for r in 0..*h {
                for col in 0..*w {
                    for k in 0..*c {
                        names.push(if *c == 1 {
                            format!("pixel_{r}_{col}")
                        } else {
                            format!("pixel_{r}_{col}_{k}")
                        });
                    }
                }
            }
            names
        }
        dims => (0..dims.iter().product())
            .map(|i| format!("x{i}"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(kind: u8, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, kind, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(body);
        b
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn images_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        // Two 2x3 images.
        let pixels: Vec<u8> = vec![0, 51, 102, 153, 204, 255, 255, 0, 0, 0, 0, 0];
        let images = write(
            dir.path(),
            "imgs-idx3-ubyte",
            &idx(0x08, &[2, 2, 3], &pixels),
        );
        let labels = write(dir.path(), "labels-idx1-ubyte", &idx(0x08, &[2], &[7, 3]));
        let d = load(&images, Some(&labels)).unwrap();
        assert_eq!(d.sample_dims, vec![2, 3, 1]);
        assert_eq!(d.rows(), 2);
        assert_eq!(d.sample(0), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(d.sample(1)[0], 1.0);
        assert_eq!(d.targets, Targets::Classes(vec![7, 3]));
        assert_eq!(d.class_names.len(), 8);
        assert_eq!(d.feature_names[4], "pixel_1_1");
    }

    #[test]
    fn gzipped_and_other_element_types() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let raw = idx(0x0D, &[1, 2], &[0x3f, 0x80, 0, 0, 0xc0, 0, 0, 0]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let path = write(dir.path(), "v.idx2-float.gz", &gz.finish().unwrap());
        let d = load(&path, None).unwrap();
        assert_eq!(d.features, vec![1.0, -2.0]);
        assert_eq!(d.targets, Targets::None);
        let a = parse(&idx(0x0B, &[2], &[0xff, 0xfe, 0x01, 0x00]), "s").unwrap();
        assert_eq!(a.data, vec![-2.0, 256.0]);
    }

    #[test]
    fn bad_magic_and_truncation_name_the_file() {
        let e = parse(b"PK\x03\x04rest", "mnist.zip")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mnist.zip") && e.contains("bad magic"), "{e}");
        let e = parse(&[0, 0, 0x07, 1, 0, 0, 0, 1, 0], "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("0x07"), "{e}");
        let e = parse(&[0, 0], "short").unwrap_err().to_string();
        assert!(e.contains("short") && e.contains("truncated"), "{e}");
        let e = parse(&[0, 0, 8, 3, 0, 0, 0, 1], "hdr")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hdr") && e.contains("truncated") && e.contains("3 dimensions"),
            "{e}"
        );
        let e = parse(&idx(0x08, &[2, 2, 2], &[0; 7]), "body")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("body") && e.contains("need 8 bytes") && e.contains("only 7"),
            "{e}"
        );
        let e = parse(&idx(0x08, &[1], &[0, 0]), "long")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 unexpected bytes"), "{e}");
        let e = parse(&idx(0x08, &[u32::MAX; 4], &[]), "huge")
            .unwrap_err()
            .to_string();
        assert!(e.contains("huge"), "{e}");
    }

    #[test]
    fn label_mismatches_name_the_label_file() {
        let dir = tempfile::tempdir().unwrap();
        let images = write(dir.path(), "i-ubyte", &idx(0x08, &[2, 1, 1], &[1, 2]));
        let three = write(dir.path(), "l-ubyte", &idx(0x08, &[3], &[0, 1, 2]));
        let e = load(&images, Some(&three)).unwrap_err().to_string();
        assert!(
            e.contains("l-ubyte") && e.contains("3 labels for the 2 images"),
            "{e}"
        );
        let wide = write(dir.path(), "w-ubyte", &idx(0x0C, &[2], &[0; 8]));
        let e = load(&images, Some(&wide)).unwrap_err().to_string();
        assert!(e.contains("w-ubyte") && e.contains("unsigned bytes"), "{e}");
    }

    #[test]
    fn every_prefix_of_a_valid_file_is_an_error_not_a_panic() {
        let full = idx(0x08, &[2, 2, 2], &[1; 8]);
        for cut in 0..full.len() {
            assert!(parse(&full[..cut], "cut").is_err(), "prefix of {cut} bytes");
        }
        assert!(parse(&full, "cut").is_ok());
    }
}
