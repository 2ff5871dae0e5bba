//! Folders of PNG images, one subfolder per class, into a [`Dataset`].
//!
//! ```text
//! root/cat/001.png
//! root/cat/002.png
//! root/dog/001.png
//! ```
//!
//! Classes are the subfolder names in sorted order; images within a class are read in
//! file-name order. Pixels become f32 in [0, 1], samples `[h, w, 1]` (grayscale) or
//! `[h, w, 3]` (RGB); alpha is dropped. Files at the top level and hidden files are
//! ignored.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{Dataset, Targets};

/// The most pixels one image may have, so that a hostile header cannot make the reader
/// allocate gigabytes; far above what a microcontroller model takes.
const MAX_PIXELS: u64 = 1 << 24;

/// The channels samples get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channels {
    /// Grayscale if every image is, RGB otherwise.
    #[default]
    Auto,
    /// One channel: colour images are converted to luma (ITU-R BT.601 weights).
    Gray,
    /// Three channels: grayscale images are repeated into R, G and B.
    Rgb,
}

/// How to read an image folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageOptions {
    /// The channels of each sample.
    pub channels: Channels,
}

/// One decoded image, 8 bits per channel.
struct Decoded {
    path: PathBuf,
    width: u32,
    height: u32,
    /// Channels per pixel in `pixels` (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
    stride: usize,
    pixels: Vec<u8>,
}

/// Loads every PNG image under `root`'s class subfolders.
pub fn load(root: &Path, options: &ImageOptions) -> Result<Dataset> {
    let mut images = Vec::new();
    let mut classes = Vec::new();
    let mut class_names = Vec::new();
    for (id, class) in super::folders::class_folders(root, "png", "PNG images", &[])?
        .into_iter()
        .enumerate()
    {
        for path in &class.files {
            images.push(decode(path)?);
            classes.push(id as u32);
        }
        class_names.push(class.name);
    }
    let Some(first) = images.first() else {
        bail!(
            "{}: the class subfolders hold no PNG images",
            root.display()
        );
    };
    let (width, height) = (first.width, first.height);
    let channels = match options.channels {
        Channels::Gray => 1,
        Channels::Rgb => 3,
        Channels::Auto if images.iter().all(|i| i.stride <= 2) => 1,
        Channels::Auto => 3,
    };
    let sample_len = width as usize * height as usize * channels;
    let mut features = Vec::with_capacity(images.len() * sample_len);
    for image in &images {
        if (image.width, image.height) != (width, height) {
            bail!(
                "{}: image is {}x{} but {} is {width}x{height}; all images must be one size",
                image.path.display(),
                image.width,
                image.height,
                first.path.display()
            );
        }
        for px in image.pixels.chunks_exact(image.stride) {
            let value = |c: u8| f32::from(c) / 255.0;
            match (image.stride, channels) {
                (1 | 2, 1) => features.push(value(px[0])),
                (1 | 2, _) => features.extend([value(px[0]); 3]),
                (_, 1) => {
                    let luma = 0.299 * f32::from(px[0])
                        + 0.587 * f32::from(px[1])
                        + 0.114 * f32::from(px[2]);
                    features.push(luma / 255.0);
                }
                _ => features.extend([value(px[0]), value(px[1]), value(px[2])]),
            }
        }
    }
    let sample_dims = vec![height as usize, width as usize, channels];
    let dataset = Dataset {
        name: super::stem(root),
        feature_names: super::idx::feature_names(&sample_dims),
        sample_dims,
        features,
        targets: Targets::Classes(classes),
        class_names,
    };
    dataset.validate()?;
    Ok(dataset)
}

fn decode(path: &Path) -> Result<Decoded> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    // 8 bits per channel, palettes expanded to RGB(A): one layout to convert from.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{}: not a readable PNG", path.display()))?;
    let (width, height) = reader.info().size();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        bail!(
            "{}: {width}x{height} pixels is more than the {MAX_PIXELS} this reader takes",
            path.display()
        );
    }
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut pixels)
        .with_context(|| format!("{}: decoding the PNG", path.display()))?;
    pixels.truncate(info.buffer_size());
    let stride = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => bail!(
            "{}: the palette was not expanded; cannot read this PNG",
            path.display()
        ),
    };
    // Rows are tightly packed at 8 bits per channel, so the buffer is whole pixels.
    if pixels.len() != width as usize * height as usize * stride {
        bail!(
            "{}: decoded {} bytes for {width}x{height} pixels of {stride} channels",
            path.display(),
            pixels.len()
        );
    }
    Ok(Decoded {
        path: path.to_path_buf(),
        width,
        height,
        stride,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, width: u32, height: u32, color: png::ColorType, data: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
    }

    #[test]
    fn gray_classes_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("shapes");
        write_png(
            &root.join("b/1.png"),
            2,
            1,
            png::ColorType::Grayscale,
            &[0, 255],
        );
        write_png(
            &root.join("a/2.png"),
            2,
            1,
            png::ColorType::Grayscale,
            &[51, 102],
        );
        write_png(
            &root.join("a/1.png"),
            2,
            1,
            png::ColorType::Grayscale,
            &[255, 0],
        );
        std::fs::write(root.join("README.txt"), "ignored").unwrap();
        std::fs::write(root.join("a/.DS_Store"), "ignored").unwrap();
        let d = load(&root, &ImageOptions::default()).unwrap();
        assert_eq!(d.name, "shapes");
        assert_eq!(d.class_names, vec!["a", "b"]);
        assert_eq!(d.sample_dims, vec![1, 2, 1]);
        assert_eq!(d.targets, Targets::Classes(vec![0, 0, 1]));
        assert_eq!(d.features, vec![1.0, 0.0, 0.2, 0.4, 0.0, 1.0]);
    }

    #[test]
    fn rgb_to_gray_and_gray_to_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        write_png(
            &root.join("x/1.png"),
            1,
            1,
            png::ColorType::Rgba,
            &[255, 0, 0, 9],
        );
        write_png(
            &root.join("y/1.png"),
            1,
            1,
            png::ColorType::Grayscale,
            &[51],
        );
        let d = load(&root, &ImageOptions::default()).unwrap();
        assert_eq!(d.sample_dims, vec![1, 1, 3]);
        assert_eq!(d.features, vec![1.0, 0.0, 0.0, 0.2, 0.2, 0.2]);
        let gray = ImageOptions {
            channels: Channels::Gray,
        };
        let d = load(&root, &gray).unwrap();
        assert_eq!(d.sample_dims, vec![1, 1, 1]);
        assert!((d.features[0] - 0.299).abs() < 1e-6, "{}", d.features[0]);
        assert!((d.features[1] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        write_png(
            &root.join("a/1.png"),
            2,
            2,
            png::ColorType::Grayscale,
            &[0; 4],
        );
        write_png(
            &root.join("a/2.png"),
            3,
            1,
            png::ColorType::Grayscale,
            &[0; 3],
        );
        let e = format!("{:#}", load(&root, &ImageOptions::default()).unwrap_err());
        assert!(
            e.contains("2.png") && e.contains("3x1") && e.contains("2x2"),
            "{e}"
        );

        std::fs::remove_file(root.join("a/2.png")).unwrap();
        std::fs::write(root.join("a/3.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = format!("{:#}", load(&root, &ImageOptions::default()).unwrap_err());
        assert!(e.contains("3.png") && e.contains("PNG"), "{e}");

        std::fs::remove_file(root.join("a/3.png")).unwrap();
        std::fs::write(root.join("a/4.jpg"), b"jpeg").unwrap();
        let e = format!("{:#}", load(&root, &ImageOptions::default()).unwrap_err());
        assert!(e.contains("4.jpg") && e.contains("only PNG"), "{e}");

        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = format!("{:#}", load(&empty, &ImageOptions::default()).unwrap_err());
        assert!(
            e.contains("empty") && e.contains("no class subfolders"),
            "{e}"
        );
    }

    #[test]
    fn truncated_png_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.png");
        write_png(&good, 4, 4, png::ColorType::Rgb, &[7; 48]);
        let bytes = std::fs::read(&good).unwrap();
        let root = dir.path().join("r");
        std::fs::create_dir_all(root.join("k")).unwrap();
        for cut in (0..bytes.len()).step_by(5) {
            std::fs::write(root.join("k/t.png"), &bytes[..cut]).unwrap();
            let e = format!("{:#}", load(&root, &ImageOptions::default()).unwrap_err());
            assert!(e.contains("t.png"), "cut at {cut}: {e}");
        }
    }
}
