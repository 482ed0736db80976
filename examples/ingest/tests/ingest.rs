//! The ingest binary end to end: a JSONL and a CSV corpus with bad rows into SQLite + the embedded
//! index (local model when `RESK_TEST_MODEL_DIR` is set, the built-in embedder otherwise), a resumed
//! rerun that skips everything, then the server built on the same settings answering a paraphrase; and
//! the same into a real Chroma server (`RESK_TEST_CHROMA_URL`): ingest works with any vector store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use axum::body::Body;
use tower::ServiceExt;

const SECRET: &str = "ingest-test-secret-0123456789abcdef";

fn settings(dir: &std::path::Path) -> Vec<String> {
    let mut s = vec![
        "--jwt-secret".into(),
        SECRET.into(),
        "--cache-backend".into(),
        "sqlite".into(),
        "--sqlite-path".into(),
        dir.join("cache.sqlite").to_string_lossy().into_owned(),
    ];
    if let Some(model) = resk_testkit::model_dir() {
        s.extend([
            "--embedding-provider".into(),
            "local".into(),
            "--embedding-model-dir".into(),
            model.to_string_lossy().into_owned(),
            "--embedding-model".into(),
            "all-MiniLM-L6-v2".into(),
        ]);
    }
    s
}

fn ingest(dir: &std::path::Path, input: &std::path::Path) -> (bool, String, String) {
    ingest_with(input, &settings(dir))
}

fn ingest_with(input: &std::path::Path, settings: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resk-ingest"))
        .args([
            "--input",
            input.to_str().unwrap(),
            "--tenant",
            "acme",
            "--batch",
            "3",
        ])
        .args(settings)
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_skips_bad_rows_resumes_and_the_server_answers() {
    if resk_testkit::model_dir().is_none() {
        resk_testkit::skip_because(
            "ingest with the local model",
            "RESK_TEST_MODEL_DIR not set; running with the built-in lexical embedder",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("faq.jsonl");
    std::fs::write(
        &corpus,
        [
            r#"{"query": "How do I reset my password?", "response": {"answer": "Use the reset link."}, "metadata": {"source": "faq"}}"#,
            r#"{"query": "How do I cancel my subscription?", "response": "Settings, then Billing."}"#,
            r#"{"query": "broken json"#,
            r#"{"query": "What are your opening hours?", "response": "9 to 5."}"#,
            r#"{"query": "no answer", "response": null}"#,
            "",
            r#"{"query": "Pick a greeting", "response": {"variants": ["hi", "hello"], "variantStrategy": "weighted", "weights": [1]}}"#,
            r#"{"query": "Where is my order?", "response": "Track it under Orders.", "language": "en"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (ok, stdout, stderr) = ingest(dir.path(), &corpus);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ingested 4 rows, skipped 0 already present, 3 bad rows"),
        "{stdout}"
    );
    for line in [
        "line 3:",
        "line 5: response is missing",
        "line 7: weights has 1 numbers",
    ] {
        assert!(stderr.contains(line), "{line} in {stderr}");
    }

    // Resumed: everything already present is skipped.
    let (ok, stdout, _) = ingest(dir.path(), &corpus);
    assert!(ok);
    assert!(
        stdout.contains("ingested 0 rows, skipped 4 already present"),
        "{stdout}"
    );

    // CSV, with a row missing a column.
    let csv = dir.path().join("more.csv");
    std::fs::write(
        &csv,
        "query,response,language\nHow do I change my email address?,Profile then Email.,\nonly a query\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = ingest(dir.path(), &csv);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("ingested 1 rows, skipped 0 already present, 1 bad rows"),
        "{stdout}"
    );
    assert!(stderr.contains("bad row at line 3"), "{stderr}");

    // The server on the same settings answers a paraphrase from the ingested corpus.
    let settings = settings(dir.path());
    let body = ask(&settings, "how can I reset my password").await;
    assert_eq!(body["hit"], true, "{body}");
    assert_eq!(
        body["matched_query"], "How do I reset my password?",
        "{body}"
    );
    let body = ask(&settings, "How do I change my email address").await;
    assert_eq!(body["hit"], true, "{body}");
}

/// `POST /api/cache/query` on a server built from `settings`, as tenant `acme`.
async fn ask(settings: &[String], query: &str) -> serde_json::Value {
    let mut argv = vec!["resk-server".to_owned()];
    argv.extend(settings.iter().cloned());
    let config = <resk_server::Cli as clap::Parser>::try_parse_from(argv)
        .unwrap()
        .serve
        .resolve()
        .unwrap();
    let app = resk_server::App::build(&config).await.unwrap();
    let token = resk_server::auth::mint(&config.jwt, "u", "cache:read", Some("acme"), 60).unwrap();
    let req = axum::http::Request::post("/api/cache/query")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(
            serde_json::json!({ "query": query }).to_string(),
        ))
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    serde_json::from_slice(
        &axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_into_chroma_and_the_server_answers_from_it() {
    let Some(url) = resk_testkit::service_url("CHROMA") else {
        resk_testkit::skip("ingests_into_chroma_and_the_server_answers_from_it");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("faq.jsonl");
    std::fs::write(
        &corpus,
        [
            r#"{"query": "How do I reset my password?", "response": "Use the reset link."}"#,
            r#"{"query": "What are your opening hours?", "response": "9 to 5."}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let collection = format!("resk_t_ingest_{}", resk_testkit::unique_id());
    let mut settings = vec![
        "--jwt-secret".to_owned(),
        SECRET.into(),
        "--cache-backend".into(),
        "sqlite".into(),
        "--sqlite-path".into(),
        dir.path()
            .join("cache.sqlite")
            .to_string_lossy()
            .into_owned(),
    ];
    settings.extend(
        [
            "--vectordb-type",
            "chroma",
            "--chroma-url",
            &url,
            "--vector-collection",
            &collection,
        ]
        .map(String::from),
    );
    let (ok, stdout, stderr) = ingest_with(&corpus, &settings);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("ingested 2 rows"), "{stdout}");
    let (ok, stdout, _) = ingest_with(&corpus, &settings);
    assert!(ok);
    assert!(stdout.contains("skipped 2 already present"), "{stdout}");
    let body = ask(&settings, "how can I reset my password").await;
    assert_eq!(body["hit"], true, "{body}");
    assert_eq!(body["source"], "semantic", "{body}");
}
