//! The operator console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver with fantoccini. Signs in, watches the overview move
//! with traffic, reports a semantic answer wrong, deletes an entry, purges, and is refused without
//! an admin token and kept to its tenant with another tenant's. Screenshots, the page weight and the
//! first contentful paint go to `<target>/console/`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use resk_procs::Proc;
use serde_json::{Value, json};

use crate::common::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let dir = target.join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free port, and a WebDriver session of headless Chromium.
async fn browser() -> Option<(Proc, Client)> {
    let driver = std::env::var("RESK_TEST_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
    let chromium = std::env::var("RESK_TEST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    if !std::path::Path::new(&driver).exists() || !std::path::Path::new(&chromium).exists() {
        assert!(
            !resk_testkit::in_ci(),
            "{driver} or {chromium} is missing and CI=true: `cargo xtask test` installs Debian's \
             chromium and chromium-driver"
        );
        resk_testkit::skip_because(
            "console_in_headless_chromium",
            "chromium/chromedriver not installed (apt-get install chromium chromium-driver)",
        );
        return None;
    }
    let port = resk_procs::free_port().unwrap();
    let child = std::process::Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    resk_procs::wait_for_port(port, Duration::from_secs(20), "chromedriver").unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1440,1000", "--no-first-run", "--disable-extensions"],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    Some((proc, client))
}

async fn id(c: &Client, id: &str) -> Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
}

/// The element `selector` finds, waited for up to 10 s.
async fn css(c: &Client, selector: &str) -> Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
}

async fn text(c: &Client, element: &str) -> String {
    id(c, element).await.text().await.unwrap()
}

/// Wait until `#element`'s text satisfies `ok`, at most `secs`; its last text.
async fn until(c: &Client, element: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let t = text(c, element).await;
        if ok(&t) {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "#{element} still reads {t:?} after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(out_dir().join(format!("{name}.png")), png).unwrap();
}

async fn sign_in(c: &Client, token: &str) {
    let field = id(c, "token").await;
    field.clear().await.unwrap();
    field.send_keys(token).await.unwrap();
    id(c, "sign-in").await.click().await.unwrap();
}

/// Open tab `name`, once its button shows (a signed-out console hides them: the panic then says
/// why it signed out).
async fn tab(c: &Client, name: &str) {
    let button = css(c, &format!("#tabs button[data-tab='{name}']")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !button.is_displayed().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "tab {name} not shown; sign-in message: {:?}",
            text(c, "signin-error").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    button.click().await.unwrap();
}

async fn rows(c: &Client, table: &str) -> usize {
    c.find_all(Locator::Css(&format!("#{table} tbody tr")))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn console_in_headless_chromium() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let app = semantic_app(&[]).await;
    let addr = app.listen().await;
    let base = format!("http://{addr}");
    let acme = token_for("ops", "acme", "cache:read cache:write cache:admin");

    // Before any data: the page alone, with its weight and first paint.
    c.goto(&format!("{base}/console")).await.unwrap();
    id(&c, "signin-form").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let perf = js(
        &c,
        "const nav = performance.getEntriesByType('navigation')[0];
         const res = performance.getEntriesByType('resource');
         const fcp = performance.getEntriesByName('first-contentful-paint')[0];
         return {
           bytes: res.reduce((n, r) => n + r.encodedBodySize, nav.encodedBodySize),
           requests: res.length + 1,
           first_contentful_paint_ms: fcp ? fcp.startTime : null,
           dom_content_loaded_ms: nav.domContentLoadedEventEnd,
           origins: [...new Set(res.map((r) => new URL(r.name).origin))],
         };",
    )
    .await;
    shot(&c, "signin").await;
    // A second visit revalidates every file (`no-cache` + ETag): 304s, no bodies.
    c.goto(&format!("{base}/console")).await.unwrap();
    id(&c, "signin-form").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revisit = js(
        &c,
        "const nav = performance.getEntriesByType('navigation')[0];
         const res = performance.getEntriesByType('resource');
         return res.reduce((n, r) => n + r.transferSize, nav.transferSize);",
    )
    .await;
    // Everything the page loaded came from resk itself: no CDN, works offline.
    assert_eq!(perf["origins"], json!([base]), "{perf}");

    // Refused: a token that is not one, and a token without cache:admin.
    sign_in(&c, "not-a-jwt").await;
    until(&c, "signin-error", 10, |t| t.contains("Token refused")).await;
    sign_in(&c, &token_for("reader", "acme", "cache:read cache:write")).await;
    until(&c, "signin-error", 10, |t| t.contains("cache:admin")).await;
    assert!(id(&c, "tabs").await.attr("hidden").await.unwrap().is_some());

    // Signed in: the overview, empty, then moving with traffic (live refresh, 5 s).
    sign_in(&c, &acme).await;
    until(&c, "stat-lookups", 10, |t| t == "0").await;
    let stored = js(&c, "return sessionStorage.getItem('resk.console.token')").await;
    assert_eq!(stored, json!(acme), "the token is held in session storage");
    assert!(
        !c.current_url().await.unwrap().as_str().contains("ey"),
        "never in the URL"
    );
    let cookies = js(&c, "return document.cookie").await;
    assert_eq!(cookies, json!(""), "and never in a cookie");

    let mut keys = Vec::new();
    for (q, a) in [
        ("How do I reset my password?", "Use the reset link."),
        ("What are your opening hours?", "9 to 5."),
        ("Where is my order?", "Tracking is in your account."),
    ] {
        keys.push(write_ok(&app, json!({"query": q, "response": a})).await["key"].clone());
    }
    for _ in 0..4 {
        query_ok(&app, json!({"query": "What are your opening hours?"})).await;
    }
    let hit = query_ok(&app, json!({"query": "how can I reset my password"})).await;
    assert_eq!(hit["source"], "semantic");
    query_ok(&app, json!({"query": "Who won the 1998 world cup?"})).await;
    until(&c, "stat-lookups", 12, |t| t == "6").await;
    until(&c, "stat-semantic", 5, |t| t == "1").await;
    let ratio = text(&c, "stat-ratio").await;
    assert_eq!(ratio, "83.3 %");
    assert_ne!(text(&c, "stat-latency").await, "– / – / –");
    // The four charts drew (uPlot canvases).
    let canvases = c.find_all(Locator::Css(".chart canvas")).await.unwrap();
    assert_eq!(canvases.len(), 4);
    shot(&c, "overview").await;

    // Decisions: the semantic hit, reported wrong, and its effect.
    tab(&c, "decisions").await;
    let wrong = css(&c, "#decisions-table button.wrong").await;
    assert_eq!(
        wrong.attr("data-hit-id").await.unwrap().as_deref(),
        hit["hit_id"].as_str()
    );
    wrong.click().await.unwrap();
    let reported = css(&c, "#decisions-table .reported")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        reported.contains("reported wrong") && reported.contains("1 wrong"),
        "{reported}"
    );
    let again = query_ok(&app, json!({"query": "how can I reset my password"})).await;
    assert_eq!(
        again["hit"], false,
        "the reported pairing no longer answers"
    );
    id(&c, "decisions-refresh").await.click().await.unwrap();
    css(&c, "#decisions-table tr[data-verdict='reject']").await;
    shot(&c, "decisions").await;

    // Entries: three, one deleted through the page and gone from the API too.
    tab(&c, "entries").await;
    until(&c, "entries-status", 10, |t| t.starts_with("3 entries")).await;
    shot(&c, "entries").await;
    let victim = keys[1].as_str().unwrap();
    let delete = c
        .find(Locator::Css(&format!("button.delete[data-key='{victim}']")))
        .await
        .unwrap();
    delete.click().await.unwrap();
    assert_eq!(delete.text().await.unwrap(), "Confirm delete");
    delete.click().await.unwrap();
    until(&c, "entries-status", 10, |t| t.starts_with("Deleted")).await;
    assert_eq!(rows(&c, "entries-table").await, 2);
    let gone = query_ok(
        &app,
        json!({"query": "What are your opening hours?", "semantic": false}),
    )
    .await;
    assert_eq!(gone["hit"], false, "deleted for real");

    // Health.
    tab(&c, "health").await;
    until(&c, "health-status", 10, |t| t == "ready").await;
    assert!(rows(&c, "health-config").await > 5);
    shot(&c, "health").await;

    // Another tenant's admin: its own (empty) tenant, none of acme's data.
    id(&c, "sign-out").await.click().await.unwrap();
    sign_in(
        &c,
        &token_for("ops", "globex", "cache:read cache:write cache:admin"),
    )
    .await;
    until(&c, "who-tenant", 10, |t| t == "tenant globex").await;
    until(&c, "stat-lookups", 10, |t| t == "0").await;
    tab(&c, "entries").await;
    until(&c, "entries-status", 10, |t| t == "No entries.").await;
    tab(&c, "decisions").await;
    until(&c, "decisions-note", 10, |t| !t.is_empty()).await;
    assert_eq!(rows(&c, "decisions-table").await, 0);

    // Back as acme: purge after typing the tenant's name.
    id(&c, "sign-out").await.click().await.unwrap();
    sign_in(&c, &acme).await;
    until(&c, "stat-lookups", 10, |t| t != "–").await;
    tab(&c, "entries").await;
    until(&c, "entries-status", 10, |t| t.starts_with("2 entries")).await;
    id(&c, "purge").await.click().await.unwrap();
    let go = id(&c, "purge-go").await;
    assert!(go.attr("disabled").await.unwrap().is_some());
    id(&c, "purge-name").await.send_keys("acme").await.unwrap();
    assert!(go.attr("disabled").await.unwrap().is_none());
    go.click().await.unwrap();
    until(&c, "entries-status", 10, |t| t == "Purged 2 entries.").await;
    assert_eq!(app.entries().await, 0);

    // The strict policy held throughout: no violation was reported by the page.
    let violations = js(&c, "return document.body.dataset.cspViolations || '0'").await;
    assert_eq!(violations, json!("0"));

    let figures = json!({
        "page_weight_bytes": perf["bytes"],
        "requests": perf["requests"],
        "first_contentful_paint_ms": perf["first_contentful_paint_ms"],
        "dom_content_loaded_ms": perf["dom_content_loaded_ms"],
        "second_visit_transfer_bytes": revisit,
        "embedded_bytes": resk_server::console::weight(),
    });
    std::fs::write(out_dir().join("figures.json"), figures.to_string()).unwrap();
    eprintln!("console figures: {figures}");
    assert!(perf["bytes"].as_u64().unwrap() > 50_000, "{perf}");
    assert!(
        revisit.as_u64().unwrap() < 10_000,
        "a second visit fetched bodies again: {revisit} bytes"
    );
    c.close().await.unwrap();
}
