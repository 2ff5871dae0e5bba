//! The self-contained HTML page of a run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;

use super::{Evaluation, RunReport, confusion_matrix, fit_hints, loss_curves, write_atomic};
use crate::metrics::ClassificationReport;

/// Writes `report.html` into `dir` (created if missing) and returns its path.
///
/// The page needs nothing else to display: styles are inline and the charts are
/// embedded as base64 PNG. The charts are also left beside it as PNG and SVG
/// (`curves.*`, `confusion.*`, `confusion_int8.*`) for use elsewhere. When
/// `report.hints` is empty, [`fit_hints`] of the history is shown instead.
pub fn html(report: &RunReport, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let embed = |png: &Path| -> anyhow::Result<String> {
        let bytes = std::fs::read(png).with_context(|| format!("cannot read {}", png.display()))?;
        Ok(format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    };

    let curves = if report.history.epochs.is_empty() {
        None
    } else {
        Some(embed(
            &loss_curves(&report.history, &dir.join("curves"))?.png,
        )?)
    };
    let mut matrices = Vec::new();
    for (label, eval, file) in [
        ("float", &report.float_eval, "confusion"),
        ("int8", &report.int8_eval, "confusion_int8"),
    ] {
        if let Some(Evaluation::Classification(c)) = eval {
            let files = confusion_matrix(&c.confusion, &report.class_names, &dir.join(file))?;
            matrices.push((label, embed(&files.png)?));
        }
    }
    let hints = if report.hints.is_empty() && !report.history.epochs.is_empty() {
        fit_hints(&report.history)
    } else {
        report.hints.clone()
    };

    let mut page = String::new();
    let name = escape(&report.name);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{name} · loam run report</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <header><h1>{name}</h1><p class=\"sub\">loam run report</p></header>\n"
    );

    if !report.extra.is_empty() {
        page += "<section><h2>Summary</h2><table class=\"kv\">\n";
        for (k, v) in &report.extra {
            let _ = writeln!(
                page,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(k),
                escape(v)
            );
        }
        page += "</table></section>\n";
    }

    if !hints.is_empty() {
        page += "<section><h2>Fit</h2><ul class=\"hints\">\n";
        for h in &hints {
            let kind = if h.starts_with("Looks fine") {
                "ok"
            } else {
                "warn"
            };
            let _ = writeln!(page, "<li class=\"{kind}\">{}</li>", escape(h));
        }
        page += "</ul></section>\n";
    }

    if let Some(src) = curves {
        let _ = writeln!(
            page,
            "<section><h2>Training curves</h2>\
             <img class=\"chart\" src=\"{src}\" alt=\"Loss and {} per epoch, training and validation\">\
             </section>",
            escape(&report.history.metric_name)
        );
    }

    if report.float_eval.is_some() || report.int8_eval.is_some() {
        page += &metrics_section(report);
    }

    if !matrices.is_empty() {
        page += "<section><h2>Confusion matrix</h2><div class=\"row\">\n";
        for (label, src) in &matrices {
            let _ = writeln!(
                page,
                "<figure><img src=\"{src}\" alt=\"Confusion matrix of the {label} model\">\
                 <figcaption>{label} model</figcaption></figure>"
            );
        }
        page += "</div></section>\n";
    }

    if !report.mistakes.is_empty() {
        page += "<section><h2>Most confident mistakes</h2><table>\n\
                 <tr><th>sample</th><th>true class</th><th>predicted</th><th>confidence</th></tr>\n";
        for m in &report.mistakes {
            let _ = writeln!(
                page,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.1}%</td></tr>",
                m.index,
                escape(&class_name(&report.class_names, m.label as usize)),
                escape(&class_name(&report.class_names, m.predicted as usize)),
                f64::from(m.confidence) * 100.0
            );
        }
        page += "</table></section>\n";
    }

    if !report.config_text.is_empty() {
        let _ = writeln!(
            page,
            "<section><h2>Configuration</h2><pre>{}</pre></section>",
            escape(&report.config_text)
        );
    }
    page += "</body>\n</html>\n";

    let path = dir.join("report.html");
    write_atomic(&path, page.as_bytes())?;
    Ok(path)
}

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;max-width:1320px;margin:0 auto;padding:24px;line-height:1.45;background:#fafafa}
header{border-bottom:2px solid #1f77b4;margin-bottom:12px}
h1{margin:0 0 2px;font-size:28px;overflow-wrap:anywhere}
.sub{margin:0 0 10px;color:#777}
h2{font-size:19px;margin:26px 0 10px;color:#1f4e79}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:4px 18px 16px;margin-bottom:16px}
table{border-collapse:collapse;font-size:14px}
th,td{border-bottom:1px solid #e6e6e6;padding:5px 12px;text-align:left}
th{background:#f3f6fa;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.worse{color:#c0392b;font-weight:600}
td.better{color:#1e8449}
table.kv th{background:none;font-weight:600;color:#555}
.hints{padding-left:20px;margin:0}
.hints li{margin:6px 0}
.hints li.warn::marker{content:'\\26A0  ';color:#d68910}
.hints li.ok::marker{content:'\\2713  ';color:#1e8449}
img{max-width:100%;height:auto}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
figure{margin:0}
figcaption{text-align:center;color:#555;font-size:14px}
.scroll{overflow-x:auto}
pre{background:#f6f8fa;border:1px solid #e3e3e3;border-radius:4px;padding:12px;overflow-x:auto;font-size:13px}
";

/// The final-metrics tables: headline numbers, then per-class numbers for classifiers.
fn metrics_section(report: &RunReport) -> String {
    let float = report.float_eval.as_ref();
    let int8 = report.int8_eval.as_ref();
    let both = float.is_some() && int8.is_some();
    let mut s = String::from("<section><h2>Final metrics</h2><table>\n<tr><th>metric</th>");
    for (label, present) in [("float", float.is_some()), ("int8", int8.is_some())] {
        if present {
            let _ = write!(s, "<th class=\"num\">{label}</th>");
        }
    }
    if both {
        s += "<th class=\"num\">int8 − float</th>";
    }
    s += "</tr>\n";

    let float_rows = float.map(headline).unwrap_or_default();
    let int8_rows = int8.map(headline).unwrap_or_default();
    // Row order comes from whichever variant exists, float first.
    let mut names: Vec<(&str, Option<bool>)> = Vec::new();
    for row in float_rows.iter().chain(&int8_rows) {
        if !names.iter().any(|(n, _)| *n == row.name) {
            names.push((row.name, row.higher_is_better));
        }
    }
    let find =
        |rows: &[Row], name: &str| rows.iter().find(|r| r.name == name).and_then(|r| r.value);
    for (name, higher) in names {
        let f = find(&float_rows, name);
        let i = find(&int8_rows, name);
        let _ = write!(s, "<tr><td>{}</td>", escape(name));
        if float.is_some() {
            let _ = write!(s, "<td class=\"num\">{}</td>", number(f));
        }
        if int8.is_some() {
            let _ = write!(s, "<td class=\"num\">{}</td>", number(i));
        }
        if both {
            let (text, class) = match (f, i, higher) {
                (Some(f), Some(i), Some(higher)) => {
                    let d = i - f;
                    // Changes below rounding noise are not worth a colour.
                    let class = if d.abs() < 5e-4 * f.abs().max(1.0) {
                        "num"
                    } else if (d > 0.0) == higher {
                        "num better"
                    } else {
                        "num worse"
                    };
                    // A difference that rounds away would print as "+0.0000" or "-0.0000".
                    let text = if d.abs() < 5e-5 {
                        "0".to_string()
                    } else {
                        format!("{d:+.4}")
                    };
                    (text, class)
                }
                _ => (String::from("–"), "num"),
            };
            let _ = write!(s, "<td class=\"{class}\">{text}</td>");
        }
        s += "</tr>\n";
    }
    s += "</table>\n";

    if classification(float).is_some() || classification(int8).is_some() {
        s += &per_class_table(
            classification(float),
            classification(int8),
            &report.class_names,
        );
    }
    s += "</section>\n";
    s
}

/// One headline number; `higher_is_better` is `None` for counts and thresholds.
struct Row {
    name: &'static str,
    value: Option<f64>,
    higher_is_better: Option<bool>,
}

fn headline(e: &Evaluation) -> Vec<Row> {
    let row = |name, value, higher_is_better| Row {
        name,
        value,
        higher_is_better,
    };
    match e {
        Evaluation::Classification(c) => vec![
            row("accuracy", Some(c.accuracy), Some(true)),
            row("macro precision", Some(c.macro_avg.precision), Some(true)),
            row("macro recall", Some(c.macro_avg.recall), Some(true)),
            row("macro F1", Some(c.macro_avg.f1), Some(true)),
            row("weighted F1", Some(c.weighted_avg.f1), Some(true)),
            row("macro ROC-AUC", c.macro_roc_auc, Some(true)),
            row("log loss", Some(c.log_loss), Some(false)),
            row("samples", Some(c.samples as f64), None),
        ],
        Evaluation::Regression(r) => vec![
            row("MAE", Some(r.mae), Some(false)),
            row("MSE", Some(r.mse), Some(false)),
            row("RMSE", Some(r.rmse), Some(false)),
            row("R²", Some(r.r2), Some(true)),
            row("values", Some(r.samples as f64), None),
        ],
        Evaluation::Anomaly(a) => vec![
            row("ROC-AUC", Some(a.roc_auc), Some(true)),
            row("best F1", Some(a.best_f1), Some(true)),
            row("precision at best F1", Some(a.precision), Some(true)),
            row("recall at best F1", Some(a.recall), Some(true)),
            row("threshold", Some(f64::from(a.best_threshold)), None),
            row("samples", Some(a.samples as f64), None),
            row("anomalies", Some(a.anomalies as f64), None),
        ],
    }
}

fn per_class_table(
    float: Option<&ClassificationReport>,
    int8: Option<&ClassificationReport>,
    class_names: &[String],
) -> String {
    let variants: Vec<(&str, &ClassificationReport)> = [("float", float), ("int8", int8)]
        .into_iter()
        .filter_map(|(l, r)| r.map(|r| (l, r)))
        .collect();
    let both = variants.len() > 1;
    let mut s = String::from(
        "<h3>Per class</h3><div class=\"scroll\"><table>\n<tr><th>class</th><th class=\"num\">support</th>",
    );
    for metric in ["precision", "recall", "F1", "ROC-AUC"] {
        for (label, _) in &variants {
            let head = if both {
                format!("{metric} ({label})")
            } else {
                metric.to_string()
            };
            let _ = write!(s, "<th class=\"num\">{head}</th>");
        }
    }
    s += "</tr>\n";
    let classes = variants
        .iter()
        .map(|(_, r)| r.per_class.len())
        .max()
        .unwrap_or(0);
    for c in 0..classes {
        let support = variants
            .iter()
            .find_map(|(_, r)| r.per_class.get(c))
            .map_or(0, |m| m.support);
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"num\">{support}</td>",
            escape(&class_name(class_names, c))
        );
        let pick: [fn(&crate::metrics::ClassMetrics) -> Option<f64>; 4] = [
            |m| Some(m.scores.precision),
            |m| Some(m.scores.recall),
            |m| Some(m.scores.f1),
            |m| m.roc_auc,
        ];
        for get in pick {
            for (_, r) in &variants {
                let _ = write!(
                    s,
                    "<td class=\"num\">{}</td>",
                    number(r.per_class.get(c).and_then(get))
                );
            }
        }
        s += "</tr>\n";
    }
    s += "</table></div>\n";
    s
}

fn classification(e: Option<&Evaluation>) -> Option<&ClassificationReport> {
    match e {
        Some(Evaluation::Classification(c)) => Some(c),
        _ => None,
    }
}

fn class_name(names: &[String], c: usize) -> String {
    names.get(c).cloned().unwrap_or_else(|| c.to_string())
}

/// Integers without decimals (counts), everything else to four places.
fn number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.fract() == 0.0 && v.abs() >= 1.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) => format!("{v:.4}"),
        None => "–".into(),
    }
}

/// Escapes text for use in HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{EpochRecord, History};
    use super::*;
    use crate::metrics::{classification, most_confident_mistakes, regression};

    pub(crate) fn sample_report() -> RunReport {
        let history = History {
            metric_name: "accuracy".into(),
            epochs: (1..=15)
                .map(|e| {
                    let t = e as f64;
                    EpochRecord {
                        epoch: e,
                        train_loss: 1.1 / t.sqrt(),
                        val_loss: Some(1.15 / t.sqrt() + 0.004 * t),
                        train_metric: Some(1.0 - 0.45 / t.sqrt()),
                        val_metric: Some(0.98 - 0.45 / t.sqrt()),
                        learning_rate: 1e-3,
                        seconds: 2.5,
                    }
                })
                .collect(),
        };
        let labels: Vec<u32> = (0..60).map(|i| i % 3).collect();
        let probs: Vec<f32> = labels
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| {
                // Every seventh sample is confidently wrong, the rest right.
                let winner = if i % 7 == 0 { (l + 1) % 3 } else { l };
                let p = 0.6 + (i % 5) as f32 * 0.08;
                (0..3).map(move |c| if c == winner { p } else { (1.0 - p) / 2.0 })
            })
            .collect();
        let float = classification(&probs, 3, &labels).unwrap();
        let mut int8_probs = probs.clone();
        int8_probs[0..3].copy_from_slice(&[0.2, 0.2, 0.6]);
        let int8 = classification(&int8_probs, 3, &labels).unwrap();
        RunReport {
            name: "kws <tiny> & fast".into(),
            config_text: "[model]\nlayers = [\"dense<64>\"]\n# a < b && c > d\n".into(),
            history,
            float_eval: Some(Evaluation::Classification(float)),
            int8_eval: Some(Evaluation::Classification(int8)),
            class_names: ["yes", "no", "silence"].map(String::from).to_vec(),
            mistakes: most_confident_mistakes(&probs, 3, &labels, 5).unwrap(),
            hints: Vec::new(),
            extra: vec![
                ("flash".into(), "23 456 bytes".into()),
                ("arena".into(), "8 192 bytes".into()),
            ],
        }
    }

    #[test]
    fn page_embeds_images_and_escapes_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = html(&sample_report(), dir.path()).unwrap();
        assert_eq!(path, dir.path().join("report.html"));
        let page = std::fs::read_to_string(&path).unwrap();
        // Curves plus two confusion matrices.
        assert_eq!(
            page.matches("src=\"data:image/png;base64,iVBORw0KGgo")
                .count(),
            3
        );
        assert!(
            page.contains("# a &lt; b &amp;&amp; c &gt; d"),
            "config not escaped"
        );
        assert!(page.contains("kws &lt;tiny&gt; &amp; fast"));
        assert!(!page.contains("<tiny>"));
        assert!(page.contains("int8 − float") && page.contains("silence"));
        assert!(page.contains("23 456 bytes"));
        // The hints were empty, so the page judged the history itself.
        assert!(page.contains("<li class="));

        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "confusion.png",
                "confusion.svg",
                "confusion_int8.png",
                "confusion_int8.svg",
                "curves.png",
                "curves.svg",
                "report.html"
            ]
        );
    }

    #[test]
    fn regression_page_without_history() {
        let dir = tempfile::tempdir().unwrap();
        let report = RunReport {
            name: "sensor".into(),
            float_eval: Some(Evaluation::Regression(
                regression(&[1.0, 2.0, 3.5], &[1.0, 2.0, 3.0]).unwrap(),
            )),
            ..Default::default()
        };
        let page =
            std::fs::read_to_string(html(&report, &dir.path().join("new")).unwrap()).unwrap();
        assert!(page.contains("RMSE") && page.contains("R²"));
        assert!(!page.contains("<img"));
        assert!(!page.contains("int8 − float"));
    }

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn numbers_format() {
        assert_eq!(number(Some(60.0)), "60");
        assert_eq!(number(Some(0.5)), "0.5000");
        assert_eq!(number(Some(0.0)), "0.0000");
        assert_eq!(number(None), "–");
    }
}
