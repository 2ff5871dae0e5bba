//! Loss curves and confusion-matrix heat maps, as PNG and SVG.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{History, persist, temp_beside, with_ext, write_atomic};

/// The files a chart function wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartFiles {
    /// The raster image.
    pub png: PathBuf,
    /// The vector image.
    pub svg: PathBuf,
}

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(230, 110, 0);
const GRID: RGBColor = RGBColor(225, 225, 225);
const TEXT: RGBColor = RGBColor(40, 40, 40);
/// Plotters' name for its default family, so axis labels pick up the bundled font too.
const FONT: &str = "sans-serif";

/// Registers the bundled font under the name plotters uses for sans-serif text.
///
/// Plotters' ab_glyph renderer knows no system fonts, so without this every
/// text draw fails. SVG output only names the family, so viewers still use
/// their own sans-serif there.
fn ensure_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        // Hack Regular: MIT licence (Source Foundry), with DejaVu (public domain)
        // and Bitstream Vera (Bitstream Vera licence) glyphs.
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::HACK_REGULAR)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        bail!("the bundled chart font could not be loaded")
    }
}

/// Turns a plotters error into one that can cross threads.
fn plot_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// A picture that can be drawn on any plotters backend.
trait Chart {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>;
}

/// Draws `chart` once as PNG and once as SVG, each written atomically.
fn render(chart: &impl Chart, path_without_ext: &Path) -> anyhow::Result<ChartFiles> {
    let png = with_ext(path_without_ext, "png");
    let svg = with_ext(path_without_ext, "svg");

    // The PNG encoder only writes to a path, so it writes a temporary file with
    // the same extension that is renamed once complete.
    let tmp = temp_beside(&png)?;
    {
        let root = BitMapBackend::new(tmp.path(), chart.size()).into_drawing_area();
        chart
            .draw(&root)
            .and_then(|()| root.present().map_err(plot_err))
            .with_context(|| format!("cannot draw {}", png.display()))?;
    }
    persist(tmp, &png)?;

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, chart.size()).into_drawing_area();
        chart
            .draw(&root)
            .and_then(|()| root.present().map_err(plot_err))
            .with_context(|| format!("cannot draw {}", svg.display()))?;
    }
    write_atomic(&svg, text.as_bytes())?;
    Ok(ChartFiles { png, svg })
}

/// Draws the training history: loss per epoch (train and validation) and, when
/// the history has metric values, the metric per epoch in a second panel.
///
/// Writes `<path_without_ext>.png` and `<path_without_ext>.svg`. Non-finite
/// values (a diverged epoch) are left out of the lines rather than failing.
pub fn loss_curves(history: &History, path_without_ext: &Path) -> anyhow::Result<ChartFiles> {
    if history.epochs.is_empty() {
        bail!(
            "cannot draw {}: the history has no epochs",
            path_without_ext.display()
        );
    }
    ensure_font()?;
    let with_metric = history
        .epochs
        .iter()
        .any(|e| e.train_metric.is_some() || e.val_metric.is_some());
    render(
        &CurvesChart {
            history,
            with_metric,
        },
        path_without_ext,
    )
}

struct CurvesChart<'a> {
    history: &'a History,
    with_metric: bool,
}

/// One line of a panel.
struct Series {
    label: &'static str,
    color: RGBColor,
    points: Vec<(i32, f64)>,
}

impl Chart for CurvesChart<'_> {
    fn size(&self) -> (u32, u32) {
        if self.with_metric {
            (1280, 480)
        } else {
            (720, 480)
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(plot_err)?;
        let epochs = &self.history.epochs;
        let point = |e: &super::EpochRecord, v: Option<f64>| {
            v.filter(|v| v.is_finite())
                .map(|v| (i32::try_from(e.epoch).unwrap_or(i32::MAX), v))
        };
        let series = |train: fn(&super::EpochRecord) -> Option<f64>,
                      val: fn(&super::EpochRecord) -> Option<f64>| {
            vec![
                Series {
                    label: "train",
                    color: TRAIN,
                    points: epochs.iter().filter_map(|e| point(e, train(e))).collect(),
                },
                Series {
                    label: "validation",
                    color: VAL,
                    points: epochs.iter().filter_map(|e| point(e, val(e))).collect(),
                },
            ]
        };
        let loss = series(|e| Some(e.train_loss), |e| e.val_loss);
        // Loss is always lower-is-better; the best validation epoch is where an
        // early-stopped model would come from, so it is marked.
        let best_loss = best(&loss[1].points, false);
        if self.with_metric {
            let (left, right) = root.split_horizontally(self.size().0 / 2);
            panel(&left, "Loss", "loss", &loss, best_loss, false)?;
            let metric = series(|e| e.train_metric, |e| e.val_metric);
            let higher = self.history.higher_is_better();
            let best_metric = best(&metric[1].points, higher);
            let name = if self.history.metric_name.is_empty() {
                "metric"
            } else {
                self.history.metric_name.as_str()
            };
            // The panel's title is capitalised like "Loss" beside it; the axis keeps the
            // metric's own name.
            let mut title = name.to_string();
            if let Some(first) = title.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            panel(&right, &title, name, &metric, best_metric, higher)
        } else {
            panel(root, "Loss", "loss", &loss, best_loss, false)
        }
    }
}

/// The best point of a series: the first maximum or minimum.
fn best(points: &[(i32, f64)], higher_is_better: bool) -> Option<(i32, f64)> {
    points.iter().copied().reduce(|a, b| {
        let better = if higher_is_better {
            b.1 > a.1
        } else {
            b.1 < a.1
        };
        if better { b } else { a }
    })
}

/// Number of decimals that tell apart the ticks of an axis spanning `span`
/// without noise digits; the mesh asks for about seven labels.
fn decimals(span: f64) -> usize {
    if span > 0.0 && span.is_finite() {
        (-(span / 7.0).log10()).ceil().clamp(0.0, 6.0) as usize
    } else {
        3
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    series: &[Series],
    best: Option<(i32, f64)>,
    higher_is_better: bool,
) -> anyhow::Result<()> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (mut x0, mut x1) = xs.fold((i32::MAX, i32::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if x0 > x1 {
        // Every value was non-finite: draw empty axes rather than fail the run.
        (x0, x1) = (0, 1);
    }
    if x0 == x1 {
        (x0, x1) = (x0.saturating_sub(1), x1.saturating_add(1));
    }
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = if y1 > y0 {
        (y1 - y0) * 0.08
    } else {
        y0.abs().max(1.0) * 0.1
    };
    // Losses and most metrics are non-negative; an axis dipping below 0 only wastes room.
    let lower = if y0 >= 0.0 {
        (y0 - pad).max(0.0)
    } else {
        y0 - pad
    };
    let (y0, y1) = (lower, y1 + pad);
    let digits = decimals(y1 - y0);

    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22).into_font().color(&TEXT))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(76)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_err)?;
    let x_labels = usize::try_from(x1 - x0)
        .unwrap_or(10)
        .saturating_add(1)
        .min(10);
    let y_fmt = |v: &f64| format!("{v:.digits$}");
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(x_labels)
        .y_labels(7)
        .y_label_formatter(&y_fmt)
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(RGBColor(120, 120, 120))
        .label_style((FONT, 14).into_font().color(&TEXT))
        .axis_desc_style((FONT, 16).into_font().color(&TEXT))
        .draw()
        .map_err(plot_err)?;

    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let color = s.color;
        chart
            .draw_series(
                LineSeries::new(s.points.iter().copied(), color.stroke_width(2)).point_size(3),
            )
            .map_err(plot_err)?
            .label(s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2))
            });
    }
    if let Some((epoch, value)) = best {
        chart
            .draw_series(std::iter::once(Circle::new(
                (epoch, value),
                7,
                VAL.stroke_width(2),
            )))
            .map_err(plot_err)?
            .label(format!("best validation: epoch {epoch}"))
            .legend(|(x, y)| Circle::new((x + 11, y), 6, VAL.stroke_width(2)));
    }
    // Curves fall for losses and rise for scores, so the legend goes where they end up least.
    let position = if higher_is_better {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    chart
        .configure_series_labels()
        .position(position)
        .margin(10)
        .legend_area_size(30)
        .label_font((FONT, 14).into_font().color(&TEXT))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// Draws a confusion matrix (`matrix[true][predicted]` counts) as a heat map with
/// the count in each cell, shaded by the share of its row so that rare classes
/// stand out as much as common ones.
///
/// Writes `<path_without_ext>.png` and `<path_without_ext>.svg`. Classes without
/// a name in `class_names` are labelled by index; counts are left out when the
/// cells get too small to hold them.
pub fn confusion_matrix(
    matrix: &[Vec<u64>],
    class_names: &[String],
    path_without_ext: &Path,
) -> anyhow::Result<ChartFiles> {
    let n = matrix.len();
    if n == 0 {
        bail!(
            "cannot draw {}: the confusion matrix is empty",
            path_without_ext.display()
        );
    }
    if let Some((i, row)) = matrix.iter().enumerate().find(|(_, r)| r.len() != n) {
        bail!(
            "cannot draw {}: row {i} of the confusion matrix has {} columns, expected {n}",
            path_without_ext.display(),
            row.len()
        );
    }
    ensure_font()?;
    let chart = ConfusionChart::new(matrix, class_names)?;
    render(&chart, path_without_ext)
}

const TITLE: &str = "Confusion matrix";
const SUBTITLE: &str = "rows: true class · columns: predicted · shade: share of the row";

struct ConfusionChart<'a> {
    matrix: &'a [Vec<u64>],
    names: Vec<String>,
    cell: u32,
    label_font: f64,
    /// `None` when the cells are too small for readable numbers.
    count_font: Option<f64>,
    rotate_x: bool,
    /// Widest class label in pixels.
    label_w: u32,
    label_h: u32,
    width: u32,
    height: u32,
}

/// Room around the grid, in pixels.
const PAD: u32 = 10;
const AXIS_TITLE: u32 = 26;
const TOP: u32 = 74;

impl<'a> ConfusionChart<'a> {
    fn new(matrix: &'a [Vec<u64>], class_names: &[String]) -> anyhow::Result<Self> {
        let n = matrix.len() as u32;
        let cell = (600 / n).clamp(14, 64);
        let label_font = (f64::from(cell) * 0.4).clamp(10.0, 15.0);
        let names: Vec<String> = (0..matrix.len())
            .map(|c| {
                let name = class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
                // Long names would push the grid off the picture. The middle goes,
                // because names often differ only in a prefix or a numbered suffix.
                let chars: Vec<char> = name.chars().collect();
                if chars.len() > 18 {
                    let (head, tail) = (&chars[..8], &chars[chars.len() - 9..]);
                    head.iter().chain(['…'].iter()).chain(tail).collect()
                } else {
                    name
                }
            })
            .collect();
        let measure = |text: &str, size: f64| -> anyhow::Result<(u32, u32)> {
            (FONT, size)
                .into_font()
                .box_size(text)
                .map_err(|e| anyhow!("cannot measure text: {e:?}"))
        };
        let mut label_w = 0;
        let mut label_h = 0;
        for name in &names {
            let (w, h) = measure(name, label_font)?;
            label_w = label_w.max(w);
            label_h = label_h.max(h);
        }
        let widest_count = matrix
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(0)
            .to_string();
        let mut count_font = Some((f64::from(cell) * 0.34).clamp(9.0, 16.0));
        while let Some(size) = count_font {
            if measure(&widest_count, size)?.0 + 6 <= cell {
                break;
            }
            count_font = (size > 9.0).then_some(size - 1.0);
        }
        let rotate_x = label_w + 6 > cell;
        let x_label_h = if rotate_x { label_w } else { label_h };
        let grid = n * cell;
        let left = PAD + AXIS_TITLE + label_w + PAD;
        let title_w = measure(TITLE, 22.0)?.0.max(measure(SUBTITLE, 13.0)?.0);
        let width = (left + grid + 3 * PAD).max(title_w + 4 * PAD);
        let height = TOP + grid + PAD + x_label_h + PAD + AXIS_TITLE + PAD;
        Ok(Self {
            matrix,
            names,
            cell,
            label_font,
            count_font,
            rotate_x,
            label_w,
            label_h,
            width,
            height,
        })
    }

    /// Left edge of the grid; centred when the title makes the picture wider.
    fn left(&self) -> u32 {
        let left = PAD + AXIS_TITLE + self.label_w + PAD;
        let used = left + self.matrix.len() as u32 * self.cell + 3 * PAD;
        left + self.width.saturating_sub(used) / 2
    }
}

/// Matplotlib's "Blues" ramp, reduced to three stops.
fn shade(t: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 3] = [
        (0.0, [247.0, 251.0, 255.0]),
        (0.5, [107.0, 174.0, 214.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    let (a, b) = if t <= 0.5 {
        (STOPS[0], STOPS[1])
    } else {
        (STOPS[1], STOPS[2])
    };
    let u = (t - a.0) / (b.0 - a.0);
    let mix = |i: usize| (a.1[i] + (b.1[i] - a.1[i]) * u).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

impl Chart for ConfusionChart<'_> {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(plot_err)?;
        let coord = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let cell = coord(self.cell);
        let (left, top) = (coord(self.left()), coord(TOP));
        let grid = cell * coord(self.matrix.len() as u32);
        let centre_x = coord(self.width) / 2;

        let centred = Pos::new(HPos::Center, VPos::Center);
        root.draw_text(
            TITLE,
            &(FONT, 22)
                .into_font()
                .color(&TEXT)
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (centre_x, 12),
        )
        .map_err(plot_err)?;
        root.draw_text(
            SUBTITLE,
            &(FONT, 13)
                .into_font()
                .color(&RGBColor(100, 100, 100))
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (centre_x, 42),
        )
        .map_err(plot_err)?;

        let label_style = (FONT, self.label_font).into_font().color(&TEXT);
        for (t, row) in self.matrix.iter().enumerate() {
            let total: u64 = row.iter().sum();
            let y = top + cell * t as i32;
            for (p, &count) in row.iter().enumerate() {
                let x = left + cell * p as i32;
                let share = if total > 0 {
                    count as f64 / total as f64
                } else {
                    0.0
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    shade(share).filled(),
                ))
                .map_err(plot_err)?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    RGBColor(210, 215, 225).stroke_width(1),
                ))
                .map_err(plot_err)?;
                if let Some(size) = self.count_font {
                    let ink = if share > 0.55 { WHITE } else { TEXT };
                    root.draw_text(
                        &count.to_string(),
                        &(FONT, size).into_font().color(&ink).pos(centred),
                        (x + cell / 2, y + cell / 2),
                    )
                    .map_err(plot_err)?;
                }
            }
            root.draw_text(
                &self.names[t],
                &label_style.pos(Pos::new(HPos::Right, VPos::Center)),
                (left - coord(PAD) / 2, y + cell / 2),
            )
            .map_err(plot_err)?;
        }

        let below = top + grid + coord(PAD) / 2;
        for (p, name) in self.names.iter().enumerate() {
            let x = left + cell * p as i32 + cell / 2;
            let style = if self.rotate_x {
                // Read bottom-up with the end of the name at the grid, like
                // matplotlib's rotated tick labels.
                label_style
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center))
            } else {
                label_style.pos(Pos::new(HPos::Center, VPos::Top))
            };
            root.draw_text(name, &style, (x, below)).map_err(plot_err)?;
        }

        let axis = (FONT, 16).into_font().color(&TEXT);
        let x_label_h = coord(if self.rotate_x {
            self.label_w
        } else {
            self.label_h
        });
        root.draw_text(
            "predicted",
            &axis.pos(Pos::new(HPos::Center, VPos::Top)),
            (left + grid / 2, below + x_label_h + coord(PAD)),
        )
        .map_err(plot_err)?;
        root.draw_text(
            "true",
            &axis
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Center, VPos::Center)),
            (
                left - coord(self.label_w + PAD + AXIS_TITLE / 2),
                top + grid / 2,
            ),
        )
        .map_err(plot_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::EpochRecord;
    use super::*;

    const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

    fn history(epochs: usize) -> History {
        History {
            metric_name: "accuracy".into(),
            epochs: (1..=epochs)
                .map(|e| {
                    let t = e as f64;
                    EpochRecord {
                        epoch: e,
                        train_loss: 1.2 / t,
                        val_loss: Some(1.3 / t + 0.01 * t),
                        train_metric: Some(1.0 - 0.5 / t),
                        val_metric: Some(0.97 - 0.5 / t),
                        learning_rate: 1e-3,
                        seconds: 1.0,
                    }
                })
                .collect(),
        }
    }

    fn check_files(files: &ChartFiles) {
        let png = std::fs::read(&files.png).unwrap();
        assert!(png.len() > 1000, "{} bytes", png.len());
        assert!(png.starts_with(PNG_SIGNATURE));
        let svg = std::fs::read_to_string(&files.svg).unwrap();
        assert!(svg.contains("<svg"));
    }

    fn only_final_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(
            names.iter().all(|n| !n.starts_with(".loam-tmp")),
            "{names:?}"
        );
        names
    }

    #[test]
    fn loss_curves_write_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let files = loss_curves(&history(12), &dir.path().join("curves")).unwrap();
        check_files(&files);
        let svg = std::fs::read_to_string(&files.svg).unwrap();
        assert!(svg.contains("accuracy") && svg.contains("validation"));
        assert_eq!(only_final_files(dir.path()), ["curves.png", "curves.svg"]);
    }

    #[test]
    fn loss_curves_cope_with_one_epoch_no_metric_and_nan() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = history(1);
        h.epochs[0].train_metric = None;
        h.epochs[0].val_metric = None;
        check_files(&loss_curves(&h, &dir.path().join("one")).unwrap());
        let mut h = history(4);
        h.epochs[3].train_loss = f64::NAN;
        h.epochs[3].val_loss = Some(f64::INFINITY);
        check_files(&loss_curves(&h, &dir.path().join("nan")).unwrap());
        let err = loss_curves(&History::new("accuracy"), &dir.path().join("none")).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn confusion_matrix_writes_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let m = vec![vec![50, 2, 0], vec![3, 40, 7], vec![0, 1, 12345]];
        let names = ["cat", "dog", "bird"].map(String::from);
        let files = confusion_matrix(&m, &names, &dir.path().join("cm")).unwrap();
        check_files(&files);
        let svg = std::fs::read_to_string(&files.svg).unwrap();
        assert!(svg.contains("12345") && svg.contains("bird"));
        assert_eq!(only_final_files(dir.path()), ["cm.png", "cm.svg"]);
    }

    #[test]
    fn confusion_matrix_with_many_long_names() {
        let dir = tempfile::tempdir().unwrap();
        let n = 40;
        let m: Vec<Vec<u64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| if i == j { 90 } else { (i + j) as u64 % 3 })
                    .collect()
            })
            .collect();
        let names: Vec<String> = (0..n)
            .map(|i| format!("a rather long class name {i}"))
            .collect();
        check_files(&confusion_matrix(&m, &names, &dir.path().join("big")).unwrap());
    }

    #[test]
    fn bad_matrix_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad");
        let err = confusion_matrix(&[vec![1, 2]], &[], &path).unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
        assert!(confusion_matrix(&[], &[], &path).is_err());
        assert_eq!(only_final_files(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn unwritable_directory_leaves_nothing_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("curves");
        let err = format!("{:#}", loss_curves(&history(3), &path).unwrap_err());
        assert!(err.contains("no-such-dir"), "{err}");
    }

    #[test]
    fn tick_decimals_follow_the_span() {
        assert_eq!(decimals(1.2), 1);
        assert_eq!(decimals(0.4), 2);
        assert_eq!(decimals(0.07), 2);
        assert_eq!(decimals(300.0), 0);
        assert_eq!(decimals(0.0), 3);
    }

    #[test]
    fn shade_runs_light_to_dark() {
        assert_eq!(shade(0.0), RGBColor(247, 251, 255));
        assert_eq!(shade(1.0), RGBColor(8, 48, 107));
        assert_eq!(shade(2.0), shade(1.0));
    }
}
