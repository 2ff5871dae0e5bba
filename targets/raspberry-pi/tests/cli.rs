//! Runs the built `loam-pi` on the bundled models and data, as a user would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model(name: &str) -> PathBuf {
    root().join("models").join(name).join("model.loam")
}

fn loam_pi(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loam-pi"));
    cmd.current_dir(root()).args(args);
    cmd
}

fn run(args: &[&str]) -> Output {
    loam_pi(args).output().expect("loam-pi starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON lines of a `--json` run: the results, then the summary (which must come last).
fn json_lines(out: &Output) -> (Vec<Value>, Value) {
    let stdout = text(&out.stdout);
    let mut values: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let summary = values.pop().expect("a summary line");
    assert_eq!(summary["type"], "summary", "{summary}");
    assert!(values.iter().all(|v| v["type"] == "result"));
    (values, summary)
}

#[test]
fn digits_csv_scores_as_the_model_card_says() {
    let m = model("digits");
    let out = run(&[
        m.to_str().unwrap(),
        "--csv",
        "models/digits/data/digits.csv.gz",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (results, summary) = json_lines(&out);
    assert_eq!(results.len(), 1797);
    assert_eq!(summary["inputs"], 1797);
    assert_eq!(summary["rejected"], 0);
    assert_eq!(summary["labelled"], 1797);
    // The card's 97.77% is on the held-out split; the whole set includes the training rows.
    let accuracy = summary["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.9777, "accuracy {accuracy}");
    for r in &results {
        let p = r["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{r}");
        assert!(r["latency_us"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["label"], r["class"].to_string(), "{r}");
    }
    let latency = &summary["latency_us"];
    let (p50, p99, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");
}

#[test]
fn gestures_csv_with_header_and_named_label_column() {
    let m = model("gestures");
    let csv = "models/gestures/data/gestures.csv.gz";
    let out = run(&[m.to_str().unwrap(), "--csv", csv, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (results, summary) = json_lines(&out);
    assert_eq!(results.len(), 1800);
    assert!(summary["accuracy"].as_f64().unwrap() > 0.95, "{summary}");
    let labels = ["circle", "flip", "idle", "punch", "shake", "wave"];
    assert!(
        results
            .iter()
            .all(|r| labels.contains(&r["label"].as_str().unwrap()))
    );
    // Naming the column gives the same predictions as finding it.
    let named = run(&[
        m.to_str().unwrap(),
        "--csv",
        csv,
        "--label-column",
        "label",
        "--json",
    ]);
    let (again, _) = json_lines(&named);
    let classes = |v: &[Value]| v.iter().map(|r| r["class"].clone()).collect::<Vec<_>>();
    assert_eq!(classes(&results), classes(&again));
    // A column that does not exist stops the run with its name.
    let bad = run(&[
        m.to_str().unwrap(),
        "--csv",
        csv,
        "--label-column",
        "gesture",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("`gesture`"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn keyword_clips_are_recognised() {
    let m = model("keywords");
    let clips = [
        "models/keywords/data/yes/v01s1_nohash_0.wav",
        "models/keywords/data/stop/v01s1_nohash_0.wav",
        "models/keywords/data/left/v02s1_nohash_0.wav",
    ];
    let mut args = vec![m.to_str().unwrap(), "--json", "--wav"];
    args.extend(clips);
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (results, summary) = json_lines(&out);
    assert_eq!(results.len(), 3);
    for (r, word) in results.iter().zip(["yes", "stop", "left"]) {
        assert_eq!(r["label"], word, "{r}");
        assert_eq!(r["expected"], word, "{r}");
        assert_eq!(r["correct"], true, "{r}");
    }
    assert_eq!(summary["accuracy"], 1.0);
    // A model without a front end refuses clips up front.
    let digits = model("digits");
    let out = run(&[digits.to_str().unwrap(), "--wav", clips[0]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no audio front end"),
        "{}",
        text(&out.stderr)
    );
}

/// The first row of the digits set (a 0) as one stdin line.
const ZERO: &str = "0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0";

#[test]
fn stdin_reports_bad_lines_by_number_and_keeps_going() {
    let m = model("digits");
    let mut child = loam_pi(&[m.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let spaced = ZERO.replace(',', " ");
    let input = format!("{ZERO}\n\n1,2,oops\n{spaced}\n1,2\n{ZERO}\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // Rejected lines make the exit status 2, after every good line has run.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 5, "{line}");
        assert_eq!(cols[0], i.to_string());
        assert_eq!((cols[1], cols[2]), ("0", "0"), "{line}");
    }
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("stdin line 3: value 3: `oops` is not a number"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stdin line 5: 2 values, the model takes 64"),
        "{stderr}"
    );
    assert!(stderr.contains("3 inputs, 2 rejected"), "{stderr}");
}

#[test]
fn stdin_answers_each_line_before_the_next_arrives() {
    use std::io::{BufRead, BufReader};
    let m = model("digits");
    let mut child = loam_pi(&[m.to_str().unwrap(), "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for i in 0..3 {
        writeln!(stdin, "{ZERO}").unwrap();
        stdin.flush().unwrap();
        // Blocks until the result is out: a daemon that buffered would hang here.
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["index"], i);
        assert_eq!(v["source"], format!("stdin:{}", i + 1));
    }
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let summary: Value = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(summary["inputs"], 3);
    assert!(child.wait().unwrap().success());
}

#[test]
fn repeat_and_warmup_keep_predictions_and_count_invocations() {
    let m = model("gestures");
    let csv = "models/gestures/data/gestures.csv.gz";
    let once = run(&[m.to_str().unwrap(), "--csv", csv, "--json"]);
    let repeated = run(&[
        m.to_str().unwrap(),
        "--csv",
        csv,
        "--json",
        "--repeat",
        "3",
        "--warmup",
        "2",
    ]);
    let (a, _) = json_lines(&once);
    let (b, summary) = json_lines(&repeated);
    let classes = |v: &[Value]| v.iter().map(|r| r["class"].clone()).collect::<Vec<_>>();
    assert_eq!(classes(&a), classes(&b));
    assert_eq!(summary["invocations"], 3 * 1800);
}

#[test]
fn a_missing_model_is_named() {
    let out = run(&["models/no-such-model.loam"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("models/no-such-model.loam"), "{stderr}");
}

#[test]
fn a_corrupt_model_is_refused() {
    // A CSV file is no model: the error names the file instead of running garbage.
    let out = run(&["models/keywords/data/clips.csv"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("clips.csv is not a valid .loam model"),
        "{stderr}"
    );
}
