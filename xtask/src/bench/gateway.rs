//! `bench gateway`: what the gateway adds to a model call, and what a cached answer costs.
//!
//! The upstream is the OpenAI wire-format fake (`resk-testkit`'s `fake_openai` example, release
//! build), which answers at once: so "through resk" minus "straight to the fake" is resk's own
//! overhead on a miss (auth, key, lookup, the upstream call's extra hop, recording, encrypted write,
//! semantic indexing). Hits are measured on the same server: a JSON hit and a streamed hit under
//! wrk, and the time to first byte of a streamed miss (via resk, and direct) and a streamed hit,
//! one request at a time.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Instant,
};

use crate::prelude::*;

use super::{BENCH_SECRET, Load, WrkResult, median, start_resk, wrk_script};

const UPSTREAM_KEY: &str = "sk-bench-upstream-key-0123456789";

/// A wrk script posting chat completions with `auth`; `unique` makes every question new (misses).
fn chat_lua(auth: &str, stream: bool, unique: bool) -> String {
    let question = if unique {
        "'bench question ' .. me .. ' ' .. n"
    } else {
        "'How do I reset my password?'"
    };
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {auth}"
local n = 0
local me = tostring({{}})
request = function()
  n = n + 1
  local body = '{{"model":"gpt-fake","stream":{stream},"messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"' .. {question} .. '"}}]}}'
  return wrk.format(nil, nil, nil, body)
end
"#
    )
}

/// Time to the first byte of the answer and to its end, in ms, of one streamed request.
fn one_stream(port: u16, path: &str, auth: &str, question: &str) -> Result<(f64, f64)> {
    let body = format!(
        r#"{{"model":"gpt-fake","stream":true,"messages":[{{"role":"user","content":"{question}"}}]}}"#
    );
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).map_err(|e| e.to_string())?;
    let ttfb = start.elapsed().as_secs_f64() * 1e3;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&rest);
    if !text.contains("[DONE]") || !text.starts_with("TTP/1.1 200") {
        return Err(format!("not a complete stream: {text}"));
    }
    Ok((ttfb, start.elapsed().as_secs_f64() * 1e3))
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn row(name: &str, r: &WrkResult, baseline: Option<&WrkResult>) {
    let added = baseline.map_or(String::from("—"), |b| {
        format!("{:+.2} / {:+.2}", r.p50_ms - b.p50_ms, r.p99_ms - b.p99_ms)
    });
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {added} | {} |",
        r.rps, r.p50_ms, r.p99_ms, r.errors
    );
}

/// `cargo xtask bench gateway`.
pub(crate) fn bench_gateway(secs: u64) -> Result {
    let release = release_build(&root(), &["-p", "resk-testkit", "--example", "fake_openai"])?;
    let resk = release.join("resk-server");
    let fake_bin = release.join("examples").join("fake_openai");
    let dir = env::temp_dir().join(format!("resk-bench-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    let fake_port = free_port()?;
    let fake = Proc(
        Command::new(&fake_bin)
            .args([fake_port.to_string().as_str(), UPSTREAM_KEY])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", fake_bin.display()))?,
    );
    wait_for_port(fake_port)?;
    let upstream = format!("http://127.0.0.1:{fake_port}/v1");
    let port = free_port()?;
    let server = start_resk(
        &resk,
        port,
        true,
        &[
            ("UPSTREAM_BASE_URL", upstream.as_str()),
            ("UPSTREAM_API_KEY", UPSTREAM_KEY),
        ],
    )?;
    // The same server without the semantic layer: what the gateway itself adds to a miss, apart
    // from embedding and indexing each new question.
    let exact_port = free_port()?;
    let exact_server = start_resk(
        &resk,
        exact_port,
        true,
        &[
            ("UPSTREAM_BASE_URL", upstream.as_str()),
            ("UPSTREAM_API_KEY", UPSTREAM_KEY),
            ("SEMANTIC_ENABLED", "false"),
        ],
    )?;
    let token = resk_procs::mint_token(
        &resk,
        &[("JWT_SECRET", BENCH_SECRET)],
        &["--sub", "bench", "--scope", "llm:invoke", "--ttl", "3600"],
    )?;
    let load = Load {
        threads: 1,
        secs,
        conns: 16,
        dir: &dir,
    };
    let resk_pid = server.0.id();
    let fake_pid = fake.0.id();
    // Misses: every question new, through resk and straight to the fake.
    let direct_json = wrk_script(
        fake_pid,
        fake_port,
        "/v1/chat/completions",
        &chat_lua(UPSTREAM_KEY, false, true),
        &load,
    )?;
    let miss_json = wrk_script(
        resk_pid,
        port,
        "/v1/chat/completions",
        &chat_lua(&token, false, true),
        &load,
    )?;
    let direct_stream = wrk_script(
        fake_pid,
        fake_port,
        "/v1/chat/completions",
        &chat_lua(UPSTREAM_KEY, true, true),
        &load,
    )?;
    let miss_stream = wrk_script(
        resk_pid,
        port,
        "/v1/chat/completions",
        &chat_lua(&token, true, true),
        &load,
    )?;
    let exact_pid = exact_server.0.id();
    let exact_json = wrk_script(
        exact_pid,
        exact_port,
        "/v1/chat/completions",
        &chat_lua(&token, false, true),
        &load,
    )?;
    let exact_stream = wrk_script(
        exact_pid,
        exact_port,
        "/v1/chat/completions",
        &chat_lua(&token, true, true),
        &load,
    )?;
    // Hits: one question, cached by the warm-up.
    let hit_json = wrk_script(
        resk_pid,
        port,
        "/v1/chat/completions",
        &chat_lua(&token, false, false),
        &load,
    )?;
    let hit_stream = wrk_script(
        resk_pid,
        port,
        "/v1/chat/completions",
        &chat_lua(&token, true, false),
        &load,
    )?;

    println!();
    println!(
        "## Gateway: chat completions through resk vs straight to the upstream fake (wrk -t1 -c16, {secs} s, AES-GCM on, JWT, rate limit)"
    );
    println!();
    println!("| request | req/s | p50 ms | p99 ms | added p50 / p99 ms vs direct | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    row("direct to the fake, JSON (baseline)", &direct_json, None);
    row("through resk, JSON miss", &miss_json, Some(&direct_json));
    row(
        "direct to the fake, stream (baseline)",
        &direct_stream,
        None,
    );
    row(
        "through resk, stream miss",
        &miss_stream,
        Some(&direct_stream),
    );
    row(
        "through resk without the semantic layer, JSON miss",
        &exact_json,
        Some(&direct_json),
    );
    row(
        "through resk without the semantic layer, stream miss",
        &exact_stream,
        Some(&direct_stream),
    );
    row("through resk, JSON hit", &hit_json, Some(&direct_json));
    row(
        "through resk, stream hit",
        &hit_stream,
        Some(&direct_stream),
    );

    // Time to first byte, one request at a time.
    let n = 300;
    let mut direct = (Vec::new(), Vec::new());
    let mut miss = (Vec::new(), Vec::new());
    let mut hit = (Vec::new(), Vec::new());
    for i in 0..n {
        let q = format!("ttfb question {i}");
        let (a, b) = one_stream(fake_port, "/v1/chat/completions", UPSTREAM_KEY, &q)?;
        direct.0.push(a);
        direct.1.push(b);
        let (a, b) = one_stream(port, "/v1/chat/completions", &token, &q)?;
        miss.0.push(a);
        miss.1.push(b);
        let (a, b) = one_stream(port, "/v1/chat/completions", &token, &q)?;
        hit.0.push(a);
        hit.1.push(b);
    }
    println!();
    println!(
        "## Gateway: streamed answers one at a time ({n} each), time to first byte and to [DONE]"
    );
    println!();
    println!("| stream | TTFB p50 ms | TTFB p99 ms | complete p50 ms | complete p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, (t, c)) in [
        ("direct to the fake (baseline)", direct),
        ("through resk, miss", miss),
        ("through resk, hit", hit),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            median(t.clone()),
            percentile(t, 0.99),
            median(c.clone()),
            percentile(c, 0.99)
        );
    }
    drop(server);
    drop(exact_server);
    drop(fake);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
