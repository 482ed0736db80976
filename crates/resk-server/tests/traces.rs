//! OpenTelemetry traces, end to end: the server exports its spans over OTLP/HTTP (protobuf bodies) to
//! a local receiver that decodes them with the OTLP protobuf definitions; the test checks the span
//! tree of a request (one server span, child spans per layer), that an incoming W3C `traceparent`
//! makes the request part of the caller's trace, and that the embedding provider (a fake of the
//! OpenAI API) receives the trace context of the span that called it.
//!
//! One test in its own binary: it installs the process-wide subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Request, StatusCode, header},
    response::IntoResponse,
    routing::post,
};
use common::{TestApp, admin, config};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value,
    trace::v1::{Span, span::SpanKind},
};
use prost::Message as _;
use resk_server::{App, config::LogFormat, config::OtelArgs, telemetry};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// What the receiver got: every exported span, and every request that was not a valid export.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    service_names: Vec<String>,
    rejected: Vec<String>,
}

/// `POST /v1/traces` as an OTLP/HTTP collector answers it (OTLP 1.x, binary protobuf encoding):
/// an `ExportTraceServiceRequest` in, an `ExportTraceServiceResponse` out.
async fn collect(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut received = received.lock().unwrap();
    if headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()) != Some(b"application/x-protobuf") {
        received.rejected.push(format!(
            "content-type {:?}",
            headers.get(header::CONTENT_TYPE)
        ));
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            for resource in request.resource_spans {
                for attr in resource.resource.iter().flat_map(|r| &r.attributes) {
                    if attr.key == "service.name" {
                        received
                            .service_names
                            .push(string_value(attr.value.as_ref()));
                    }
                }
                for scope in resource.scope_spans {
                    received.spans.extend(scope.spans);
                }
            }
            (
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(err) => {
            received.rejected.push(err.to_string());
            (StatusCode::BAD_REQUEST, Vec::new())
        }
    }
}

fn string_value(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| string_value(a.value.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_export_a_span_tree_and_propagate_the_caller_trace() {
    let received = Arc::new(Mutex::new(Received::default()));
    let receiver = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let guard = telemetry::init_tracing(
        "warn",
        LogFormat::Json,
        &OtelArgs {
            otel_endpoint: Some(collector),
            otel_service_name: "resk-trace-test".into(),
        },
    )
    .unwrap();
    assert!(guard.exporting());

    let fake = common::openai_fake().await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("resk-traces");
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = dir.join(format!("{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&sqlite);
    let url = format!("{}/v1", fake.url());
    let config = config(&common::openai_args(
        &url,
        &[
            "--cache-backend",
            "sqlite",
            "--sqlite-path",
            sqlite.to_str().unwrap(),
            "--cache-encryption-key",
            "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
        ],
    ));
    let app = App::build(&config).await.unwrap();
    let app = TestApp {
        router: app.router,
        store: resk_cache_memory::MemoryStore::default(),
        config,
    };

    let token = admin();
    let write = app
        .write(
            &token,
            json!({"query": "refund policy please", "response": "30 days"}),
        )
        .await;
    assert_eq!(write.status, StatusCode::CREATED, "{}", write.text);

    // The caller's trace: version 00, trace id, parent span id, sampled.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let request = Request::builder()
        .method("POST")
        .uri("/api/cache/query")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .body(Body::from(json!({"query": "refund window?"}).to_string()))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["source"], "semantic", "{body}");

    // Export what is buffered (the batch processor would otherwise wait for its interval).
    let guard = Arc::new(guard);
    let flushing = guard.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();
    // The export runs on the processor's thread; the receiver answers on this runtime.
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = received.lock().unwrap().spans.clone();
        if spans.iter().filter(|s| s.name.starts_with("POST ")).count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = received.lock().unwrap();
    assert!(received.rejected.is_empty(), "{:?}", received.rejected);
    assert!(
        received
            .service_names
            .iter()
            .all(|s| s == "resk-trace-test"),
        "{:?}",
        received.service_names
    );
    drop(received);

    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let query_span = spans
        .iter()
        .find(|s| s.name == "POST /api/cache/query")
        .unwrap_or_else(|| {
            panic!(
                "no query span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    // The caller's trace continues: same trace id, the caller's span is the parent.
    assert_eq!(hex(&query_span.trace_id), caller_trace);
    assert_eq!(hex(&query_span.parent_span_id), caller_span);
    assert_eq!(query_span.kind, SpanKind::Server as i32);
    assert_eq!(
        attr(query_span, "http.route").as_deref(),
        Some("/api/cache/query")
    );
    assert_eq!(
        attr(query_span, "http.response.status_code").as_deref(),
        Some("200")
    );

    // Every layer of the query is a span inside the request's span.
    let under_query = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                let mut parent = by_id.get(&s.parent_span_id);
                while let Some(p) = parent {
                    if p.span_id == query_span.span_id {
                        return true;
                    }
                    parent = by_id.get(&p.parent_span_id);
                }
                false
            })
            .collect()
    };
    for layer in [
        "auth",
        "rate_limit",
        "cache",
        "cache.l1",
        "cache.l2",
        "embed",
        "vector",
        "crypto",
    ] {
        assert!(
            !under_query(layer).is_empty(),
            "no {layer} span under the query span; spans: {:?}",
            spans
                .iter()
                .map(|s| (&s.name, hex(&s.span_id), hex(&s.parent_span_id)))
                .collect::<Vec<_>>()
        );
    }
    // Layer-2 reads happen inside the cache span, decryption inside layer 2's caller.
    let l2 = under_query("cache.l2");
    assert!(l2.iter().all(|s| {
        by_id
            .get(&s.parent_span_id)
            .is_some_and(|p| p.name == "cache")
    }));
    let embed = under_query("embed");
    assert_eq!(attr(embed[0], "provider").as_deref(), Some("openai"));

    // The write was a trace of its own (no traceparent): a root server span.
    let write_span = spans.iter().find(|s| s.name == "POST /api/cache").unwrap();
    assert!(write_span.parent_span_id.is_empty());
    assert_ne!(hex(&write_span.trace_id), caller_trace);

    // The embedding call of the query carried the trace context of its embed span.
    let embed_ids: Vec<String> = embed.iter().map(|s| hex(&s.span_id)).collect();
    let traceparents: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r.headers.get("traceparent"))
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        traceparents.len(),
        fake.requests().len(),
        "every provider call carries a traceparent"
    );
    assert!(
        traceparents.iter().any(|tp| {
            let parts: Vec<&str> = tp.split('-').collect();
            parts.len() == 4
                && parts[0] == "00"
                && parts[1] == caller_trace
                && embed_ids.contains(&parts[2].to_owned())
        }),
        "{traceparents:?} vs embed spans {embed_ids:?}"
    );
}
