//! The shipped dashboard and alert rules name only metrics resk exports (a renamed metric must not
//! leave a silent, empty panel or an alert that can never fire).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeSet, path::Path};

/// `resk_…` metric names in `text` (histogram suffixes removed; recording rules, which hold a `:`,
/// skipped).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("resk") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let before_ok = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
        if before_ok && name.starts_with("resk_") && !name.contains(':') {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

/// Every Rust source of the workspace's crates, concatenated.
fn sources() -> String {
    let mut all = String::new();
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stack = vec![crates];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() && path.file_name().unwrap() != "target" {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.to_string_lossy().contains("/src/")
            {
                all.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    all
}

#[test]
fn dashboards_and_alerts_name_exported_metrics() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring");
    let sources = sources();
    for file in ["grafana-dashboard.json", "alerts.yml"] {
        let text = std::fs::read_to_string(docs.join(file)).unwrap();
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file}: only {names:?}");
        for name in &names {
            assert!(
                sources.contains(&format!("\"{name}\"")),
                "{file} uses {name}, which no crate exports"
            );
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}

#[test]
fn metric_names_are_found() {
    let names = metric_names(
        r#"rate(resk_http_request_duration_seconds_bucket{x="y"}[5m]) resk:cache_hit_ratio:rate5m sum(resk_ws_connections)"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["resk_http_request_duration_seconds", "resk_ws_connections"]
    );
}
