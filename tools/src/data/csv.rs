//! Comma- (or tab-) separated tables, optionally gzipped, into a [`Dataset`].
//!
//! One column is the label; the others are features. Numeric columns become one feature
//! each; categorical columns are one-hot encoded into one feature per category (sorted),
//! named `column=category`. Missing cells become NaN.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{Dataset, Targets, Task};

/// A column of the table, by header name, by 0-based position, or the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    /// The column with this header name; without a header, columns are named `c0`, `c1`, ….
    Name(String),
    /// The column at this 0-based position.
    Index(usize),
    /// The last column.
    Last,
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Column::Name(n) => write!(f, "`{n}`"),
            Column::Index(i) => write!(f, "#{i}"),
            Column::Last => write!(f, "the last column"),
        }
    }
}

/// How to read a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CsvOptions {
    /// Whether the first line names the columns.
    pub has_header: bool,
    /// The field separator; `None` means a tab for `.tsv` files and a comma otherwise.
    pub delimiter: Option<u8>,
    /// The label column, or `None` for unlabelled data.
    pub label: Option<Column>,
    /// Whether labels are classes or real values.
    pub task: Task,
    /// Columns to one-hot encode.
    pub categorical: Vec<Column>,
    /// Also one-hot encode every column holding a cell that is neither a number nor a
    /// missing-value marker (instead of failing on it).
    pub infer_categorical: bool,
    /// Cells (after trimming spaces) that mean "missing". Cells that parse as NaN count
    /// too.
    pub missing: Vec<String>,
    /// Fixes the classes and their ids (`class_names[id]`), so that another file of the same
    /// task gets the same ids; labels outside it are an error. `None` takes the distinct
    /// labels in sorted order (numerically when all are integers).
    pub class_names: Option<Vec<String>>,
    /// The shape of one sample, e.g. `[8, 8, 1]`; `None` means `[number of features]`.
    pub sample_dims: Option<Vec<usize>>,
    /// The data set's name; `None` takes the file stem.
    pub name: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            has_header: true,
            delimiter: None,
            label: Some(Column::Last),
            task: Task::Classification,
            categorical: Vec::new(),
            infer_categorical: false,
            missing: ["", "NA", "NaN", "?"].map(String::from).to_vec(),
            class_names: None,
            sample_dims: None,
            name: None,
        }
    }
}

/// Loads a table from `path` (gzipped or not, told by its first bytes).
pub fn load(path: &Path, options: &CsvOptions) -> Result<Dataset> {
    let reader = super::open(path)?;
    let mut options = options.clone();
    if options.delimiter.is_none() {
        let name = path.to_string_lossy().to_lowercase();
        let tsv = name.ends_with(".tsv") || name.ends_with(".tsv.gz");
        options.delimiter = Some(if tsv { b'\t' } else { b',' });
    }
    if options.name.is_none() {
        options.name = Some(super::stem(path));
    }
    read(reader, &path.display().to_string(), &options)
}

/// Reads a table from `reader`; `source` names it in errors (usually the file path).
pub fn read(reader: impl Read, source: &str, options: &CsvOptions) -> Result<Dataset> {
    let mut csv = ::csv::ReaderBuilder::new()
        .has_headers(options.has_header)
        .delimiter(options.delimiter.unwrap_or(b','))
        // Ragged rows are reported below with the expected width, which says more than
        // the csv crate's own error.
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(reader);

    let header: Option<Vec<String>> = if options.has_header {
        let h = csv
            .headers()
            .with_context(|| format!("{source}: reading the header line"))?;
        if h.iter().all(str::is_empty) {
            bail!("{source}: the header line is empty (no columns)");
        }
        Some(h.iter().map(String::from).collect())
    } else {
        None
    };

    let mut rows: Vec<(u64, ::csv::StringRecord)> = Vec::new();
    for record in csv.records() {
        let record = record.with_context(|| format!("{source}: reading CSV"))?;
        let line = record.position().map_or(0, |p| p.line());
        rows.push((line, record));
    }
    let width = match (&header, rows.first()) {
        (Some(h), _) => h.len(),
        (None, Some((_, r))) => r.len(),
        (None, None) => bail!("{source}: no data rows"),
    };
    if rows.is_empty() {
        bail!("{source}: no data rows after the header");
    }
    let what = if header.is_some() {
        "the header"
    } else {
        "the first row"
    };
    for (line, r) in &rows {
        if r.len() != width {
            bail!(
                "{source}:{line}: row has {} fields but {what} has {width}",
                r.len()
            );
        }
    }
    let names: Vec<String> = match header {
        Some(h) => h,
        None => (0..width).map(|i| format!("c{i}")).collect(),
    };
    let table = Table {
        source,
        names: &names,
        rows: &rows,
        options,
    };

    let label = match &options.label {
        Some(c) => Some(table.resolve(c, "label")?),
        None => None,
    };
    let mut categorical = vec![false; width];
    for c in &options.categorical {
        let i = table.resolve(c, "categorical")?;
        if Some(i) == label {
            bail!("{source}: column {c} is the label; it cannot also be a categorical feature");
        }
        categorical[i] = true;
    }
    if options.infer_categorical {
        for (col, cat) in categorical.iter_mut().enumerate() {
            if Some(col) != label && !*cat {
                *cat = rows.iter().any(|(_, r)| table.number(&r[col]).is_err());
            }
        }
    }

    let mut categories: Vec<Option<Vec<String>>> = vec![None; width];
    let mut feature_names = Vec::new();
    for col in (0..width).filter(|&c| Some(c) != label) {
        if categorical[col] {
            let set: BTreeSet<&str> = rows
                .iter()
                .map(|(_, r)| &r[col])
                .filter(|cell| !table.is_missing(cell))
                .collect();
            let cats: Vec<String> = set.into_iter().map(String::from).collect();
            feature_names.extend(cats.iter().map(|c| format!("{}={c}", names[col])));
            categories[col] = Some(cats);
        } else {
            feature_names.push(names[col].clone());
        }
    }

    let mut features = Vec::with_capacity(rows.len() * feature_names.len());
    for (line, r) in &rows {
        for col in (0..width).filter(|&c| Some(c) != label) {
            let cell = &r[col];
            match &categories[col] {
                Some(cats) => {
                    if table.is_missing(cell) {
                        features.extend(std::iter::repeat_n(f32::NAN, cats.len()));
                    } else {
                        features.extend(cats.iter().map(|c| f32::from(u8::from(c == cell))));
                    }
                }
                None => features.push(table.number(cell).map_err(|why| {
                    anyhow::anyhow!(
                        "{source}:{line}: column `{}` (field {}): {why}",
                        names[col],
                        col + 1
                    )
                })?),
            }
        }
    }

    let (targets, class_names) = match label {
        None => (Targets::None, Vec::new()),
        Some(col) => table.labels(col)?,
    };

    let sample_dims = match &options.sample_dims {
        None => vec![feature_names.len()],
        Some(dims) => {
            let n: Option<usize> = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if n != Some(feature_names.len()) {
                bail!(
                    "{source}: sample dims {dims:?} do not hold the {} feature values of a row",
                    feature_names.len()
                );
            }
            dims.clone()
        }
    };
    let dataset = Dataset {
        name: options
            .name
            .clone()
            .unwrap_or_else(|| super::stem(Path::new(source))),
        sample_dims,
        features,
        feature_names,
        targets,
        class_names,
    };
    dataset.validate()?;
    Ok(dataset)
}

/// The parsed table and what is needed to word errors about it.
struct Table<'a> {
    source: &'a str,
    names: &'a [String],
    rows: &'a [(u64, ::csv::StringRecord)],
    options: &'a CsvOptions,
}

impl Table<'_> {
    fn resolve(&self, column: &Column, role: &str) -> Result<usize> {
        let found = match column {
            Column::Name(n) => self.names.iter().position(|h| h == n),
            Column::Index(i) => (*i < self.names.len()).then_some(*i),
            Column::Last => self.names.len().checked_sub(1),
        };
        found.with_context(|| {
            let mut shown: Vec<&str> = self.names.iter().take(20).map(String::as_str).collect();
            if self.names.len() > 20 {
                shown.push("…");
            }
            format!(
                "{}: the {role} column {column} is not in the table (columns: {})",
                self.source,
                shown.join(", ")
            )
        })
    }

    fn is_missing(&self, cell: &str) -> bool {
        self.options.missing.iter().any(|m| m == cell)
    }

    /// A feature cell's value: NaN when missing; the error says why it is not a number.
    fn number(&self, cell: &str) -> Result<f32, String> {
        if self.is_missing(cell) {
            return Ok(f32::NAN);
        }
        match cell.parse::<f32>() {
            Ok(x) if x.is_nan() => Ok(f32::NAN),
            Ok(x) if x.is_infinite() => Err(format!("`{cell}` is not a finite number")),
            Ok(x) => Ok(x),
            Err(_) => Err(format!(
                "`{cell}` is not a number (make the column categorical, or mark missing \
                 values with one of: {})",
                self.options
                    .missing
                    .iter()
                    .map(|m| format!("{m:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn labels(&self, col: usize) -> Result<(Targets, Vec<String>)> {
        let name = &self.names[col];
        let mut cells = Vec::with_capacity(self.rows.len());
        for (line, r) in self.rows {
            let cell = &r[col];
            if self.is_missing(cell) {
                bail!(
                    "{}:{line}: column `{name}` (field {}): the label is missing",
                    self.source,
                    col + 1
                );
            }
            cells.push((*line, cell));
        }
        match self.options.task {
            Task::Regression => {
                let mut values = Vec::with_capacity(cells.len());
                for (line, cell) in cells {
                    match cell.parse::<f32>() {
                        Ok(x) if x.is_finite() => values.push(x),
                        _ => bail!(
                            "{}:{line}: column `{name}` (field {}): label `{cell}` is not a \
                             finite number, as regression needs",
                            self.source,
                            col + 1
                        ),
                    }
                }
                Ok((Targets::Values { values, width: 1 }, Vec::new()))
            }
            Task::Classification => {
                let canonical: Vec<(u64, String)> = cells
                    .iter()
                    .map(|&(line, cell)| {
                        (
                            line,
                            integer(cell).map_or(cell.to_string(), |i| i.to_string()),
                        )
                    })
                    .collect();
                let class_names = match &self.options.class_names {
                    Some(given) => given.clone(),
                    None => {
                        let all_integers = cells.iter().all(|(_, c)| integer(c).is_some());
                        let distinct: BTreeSet<&str> =
                            canonical.iter().map(|(_, c)| c.as_str()).collect();
                        let mut names: Vec<String> =
                            distinct.into_iter().map(String::from).collect();
                        if all_integers {
                            names.sort_by_key(|n| integer(n));
                        }
                        names
                    }
                };
                let ids: BTreeMap<&str, u32> = class_names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.as_str(), i as u32))
                    .collect();
                let mut classes = Vec::with_capacity(cells.len());
                for ((line, canon), (_, raw)) in canonical.iter().zip(&cells) {
                    // A given class list may spell integers either way ("1" or "1.0").
                    match ids.get(canon.as_str()).or_else(|| ids.get(*raw)) {
                        Some(&id) => classes.push(id),
                        None => bail!(
                            "{}:{line}: column `{name}` (field {}): label `{raw}` is not one of \
                             the {} given classes",
                            self.source,
                            col + 1,
                            class_names.len()
                        ),
                    }
                }
                Ok((Targets::Classes(classes), class_names))
            }
        }
    }
}

/// The integer a label spells (`3`, `-1`, `3.0`), if it is one.
fn integer(cell: &str) -> Option<i64> {
    if let Ok(i) = cell.parse::<i64>() {
        return Some(i);
    }
    let x = cell.parse::<f64>().ok()?;
    // 2^53: beyond it f64 no longer holds every integer.
    (x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, options: &CsvOptions) -> Result<Dataset> {
        read(text.as_bytes(), "t.csv", options)
    }

    fn err(text: &str, options: &CsvOptions) -> String {
        format!("{:#}", parse(text, options).unwrap_err())
    }

    #[test]
    fn header_numeric_features_and_string_classes() {
        let d = parse(
            "a,b,kind\n1,2,dog\n3.5,-4,cat\n5,6e1,dog\n",
            &CsvOptions::default(),
        )
        .unwrap();
        assert_eq!(d.name, "t");
        assert_eq!(d.sample_dims, vec![2]);
        assert_eq!(d.feature_names, vec!["a", "b"]);
        assert_eq!(d.features, vec![1.0, 2.0, 3.5, -4.0, 5.0, 60.0]);
        // Sorted: cat = 0, dog = 1.
        assert_eq!(d.class_names, vec!["cat", "dog"]);
        assert_eq!(d.targets, Targets::Classes(vec![1, 0, 1]));
    }

    #[test]
    fn integer_labels_sort_numerically_and_label_by_name() {
        let options = CsvOptions {
            label: Some(Column::Name("y".into())),
            ..CsvOptions::default()
        };
        let d = parse("y,x\n10,0\n9,1\n2.0,2\n10,3\n", &options).unwrap();
        assert_eq!(d.class_names, vec!["2", "9", "10"]);
        assert_eq!(d.targets, Targets::Classes(vec![2, 1, 0, 2]));
        assert_eq!(d.features, vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn given_class_names_fix_the_ids() {
        let options = CsvOptions {
            class_names: Some(vec!["0".into(), "1".into(), "2".into()]),
            ..CsvOptions::default()
        };
        let d = parse("x,y\n0,2\n1,2.0\n", &options).unwrap();
        assert_eq!(d.targets, Targets::Classes(vec![2, 2]));
        let e = err("x,y\n0,2\n1,7\n", &options);
        assert!(e.contains("t.csv:3") && e.contains("`7`"), "{e}");
    }

    #[test]
    fn regression_targets() {
        let options = CsvOptions {
            task: Task::Regression,
            ..CsvOptions::default()
        };
        let d = parse("x,price\n1,2.5\n2,-1\n", &options).unwrap();
        assert_eq!(
            d.targets,
            Targets::Values {
                values: vec![2.5, -1.0],
                width: 1
            }
        );
        assert!(d.class_names.is_empty());
        let e = err("x,price\n1,2.5\n2,cheap\n", &options);
        assert!(
            e.contains("t.csv:3") && e.contains("`price`") && e.contains("cheap"),
            "{e}"
        );
    }

    #[test]
    fn one_hot_categories_sorted_and_missing_cells() {
        let options = CsvOptions {
            categorical: vec![Column::Name("color".into())],
            ..CsvOptions::default()
        };
        let d = parse(
            "size,color,y\n1,red,a\nNA,blue,b\n?,,a\n4, red ,b\n",
            &options,
        )
        .unwrap();
        assert_eq!(d.feature_names, vec!["size", "color=blue", "color=red"]);
        let nan = f32::NAN;
        let expect = [1.0, 0.0, 1.0, nan, 1.0, 0.0, nan, nan, nan, 4.0, 0.0, 1.0];
        assert_eq!(d.features.len(), expect.len());
        for (i, (&got, &want)) in d.features.iter().zip(&expect).enumerate() {
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "value {i}: {got} != {want}"
            );
        }
    }

    #[test]
    fn inferred_categorical_columns() {
        let options = CsvOptions {
            infer_categorical: true,
            label: None,
            ..CsvOptions::default()
        };
        let d = parse("n,s\n1,x\n2,y\n", &options).unwrap();
        assert_eq!(d.feature_names, vec!["n", "s=x", "s=y"]);
        assert_eq!(d.targets, Targets::None);
        assert_eq!(d.rows(), 2);
    }

    #[test]
    fn no_header_mode_with_sample_dims_and_tabs() {
        let options = CsvOptions {
            has_header: false,
            delimiter: Some(b'\t'),
            sample_dims: Some(vec![2, 2, 1]),
            ..CsvOptions::default()
        };
        let d = parse("0\t1\t2\t3\t1\n4\t5\t6\t7\t0\n", &options).unwrap();
        assert_eq!(d.sample_dims, vec![2, 2, 1]);
        assert_eq!(d.feature_names, vec!["c0", "c1", "c2", "c3"]);
        assert_eq!(d.sample(1), &[4.0, 5.0, 6.0, 7.0]);
        assert_eq!(d.targets, Targets::Classes(vec![1, 0]));
        let bad = CsvOptions {
            sample_dims: Some(vec![3]),
            ..options
        };
        let e = err("0\t1\t2\t3\t1\n", &bad);
        assert!(e.contains("[3]") && e.contains("4 feature values"), "{e}");
    }

    #[test]
    fn ragged_rows_name_the_line() {
        let e = err("a,b,y\n1,2,x\n3,x\n", &CsvOptions::default());
        assert!(
            e.contains("t.csv:3") && e.contains("2 fields") && e.contains("has 3"),
            "{e}"
        );
        let headless = CsvOptions {
            has_header: false,
            ..CsvOptions::default()
        };
        let e = err("1,2,3\n1,2,3\n1,2,3,4\n", &headless);
        assert!(e.contains("t.csv:3") && e.contains("first row"), "{e}");
    }

    #[test]
    fn bad_cells_name_line_and_column() {
        let e = err("a,b,y\n1,2,x\n3,oops,x\n", &CsvOptions::default());
        assert!(
            e.contains("t.csv:3")
                && e.contains("`b`")
                && e.contains("field 2")
                && e.contains("oops"),
            "{e}"
        );
        let e = err("a,y\n1,x\ninf,x\n", &CsvOptions::default());
        assert!(e.contains("t.csv:3") && e.contains("finite"), "{e}");
        let e = err("a,y\n1,x\n2,\n", &CsvOptions::default());
        assert!(
            e.contains("t.csv:3") && e.contains("label is missing"),
            "{e}"
        );
    }

    #[test]
    fn unknown_columns_and_empty_input() {
        let options = CsvOptions {
            label: Some(Column::Name("target".into())),
            ..CsvOptions::default()
        };
        let e = err("a,b\n1,2\n", &options);
        assert!(e.contains("`target`") && e.contains("columns: a, b"), "{e}");
        assert!(err("", &CsvOptions::default()).contains("t.csv"));
        assert!(err("a,b\n", &CsvOptions::default()).contains("no data rows"));
        let same = CsvOptions {
            categorical: vec![Column::Last],
            ..CsvOptions::default()
        };
        assert!(err("a,b\n1,2\n", &same).contains("is the label"));
    }

    #[test]
    fn arbitrary_bytes_give_errors_not_panics() {
        let bytes: Vec<u8> = (0..=255u8).chain([b',', b'\n', 0xff, 0xfe, b'"']).collect();
        assert!(read(&bytes[..], "junk.csv", &CsvOptions::default()).is_err());
        let e = format!(
            "{:#}",
            read(
                &b"a,y\n1,\xff\xfe\n"[..],
                "junk.csv",
                &CsvOptions::default()
            )
            .unwrap_err()
        );
        assert!(e.contains("junk.csv"), "{e}");
    }

    #[test]
    fn gzipped_file_by_path() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flowers.tsv.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"w\th\tname\n1\t2\trose\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let d = load(&path, &CsvOptions::default()).unwrap();
        assert_eq!(d.name, "flowers");
        assert_eq!(d.features, vec![1.0, 2.0]);
        assert_eq!(d.class_names, vec!["rose"]);
    }
}
