//! `resk-server calibrate` on the labelled pairs shipped in docs/pairs.tsv (negations and near misses
//! included): with the local model (when `RESK_TEST_MODEL_DIR` is set) and the built-in embedder.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn pairs() -> String {
    format!("{}/../../docs/pairs.tsv", env!("CARGO_MANIFEST_DIR"))
}

fn calibrate(extra: &[&str], pairs: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resk-server"))
        .args(["calibrate", "--pairs", pairs, "--target-precision", "0.95"])
        .args(extra)
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn figure(report: &str, name: &str) -> f64 {
    report
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
fn the_local_model_reaches_the_target_precision_with_useful_recall() {
    let Some(dir) = resk_testkit::model_dir() else {
        resk_testkit::skip_because(
            "the_local_model_reaches_the_target_precision_with_useful_recall",
            "RESK_TEST_MODEL_DIR not set (run `cargo xtask test`)",
        );
        return;
    };
    let dir = dir.to_string_lossy().into_owned();
    let (code, out, err) = calibrate(
        &[
            "--embedding-provider",
            "local",
            "--embedding-model-dir",
            &dir,
        ],
        &pairs(),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("pairs: 20 duplicates, 20 non-duplicates"),
        "{out}"
    );
    let threshold = figure(&out, "threshold: ");
    let precision = figure(&out, "precision: ");
    let recall = figure(&out, "recall: ");
    let closest_negative = figure(&out, "closest non-duplicate: similarity ");
    assert!(precision >= 0.95, "{out}");
    assert!(
        threshold > closest_negative && threshold < 1.0,
        "the threshold sits above every non-duplicate at this precision: {out}"
    );
    assert!(recall > 0.0, "{out}");
    eprintln!("calibration of all-MiniLM-L6-v2 on docs/pairs.tsv:\n{out}");
    assert!(out.contains("SEMANTIC_THRESHOLD="), "{out}");
    // With the verifiers on (the local model's defaults), precision and recall of the current
    // settings, and the zones reaching the target with at least the cosine threshold's recall.
    assert!(out.contains("with verifiers [guards, alignment]:"), "{out}");
    let best = out
        .split("best for precision 0.950: ")
        .nth(1)
        .expect("verified zones reach the target");
    let verified_recall: f64 = best
        .split("recall ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .expect("a recall figure");
    assert!(verified_recall >= recall, "{out}");
    assert!(best.contains("SEMANTIC_ACCEPT="), "{out}");
}

#[test]
fn the_lexical_embedder_is_calibrated_too_and_bad_files_are_refused() {
    let (code, out, err) = calibrate(&[], &pairs());
    assert!(matches!(code, Some(0 | 1)), "{out}{err}");
    assert!(out.contains("embedder: lexical / resk-lexical-v1"), "{out}");

    let dir = std::env::temp_dir().join(format!("resk-cal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.tsv");
    std::fs::write(&bad, "1\ta\tb\nyes\tc\td\n").unwrap();
    let (code, _, err) = calibrate(&[], bad.to_str().unwrap());
    assert_eq!(code, Some(2));
    assert!(err.contains("line 2: label must be 0 or 1"), "{err}");
    let (code, _, err) = calibrate(&[], dir.join("missing.tsv").to_str().unwrap());
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
