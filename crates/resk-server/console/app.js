// resk console: a page over resk's authenticated API (`/api/admin/*`, `/api/cache/*`).
// No framework and no build step: DOM nodes are made with createElement and filled with
// textContent only (nothing from the server is ever parsed as HTML), charts are uPlot.
"use strict";

(() => {
  const TOKEN_KEY = "resk.console.token";
  const REFRESH_MS = 5000;
  const $ = (id) => document.getElementById(id);
  const state = { token: null, tenant: null, tab: "overview", timer: null, charts: {}, cursor: null, q: "" };

  // Any CSP violation is counted where a test (or a person with devtools) can read it.
  let violations = 0;
  document.addEventListener("securitypolicyviolation", (e) => {
    violations += 1;
    document.body.dataset.cspViolations = String(violations);
    console.error("CSP violation", e.violatedDirective, e.blockedURI);
  });

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.error && body.error.code;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${state.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit",
    });
    const json = await res.json().catch(() => null);
    if (!res.ok) {
      const err = new ApiError(res.status, json);
      if (res.status === 401) signOut(`Signed out: ${err.message}`);
      throw err;
    }
    return json;
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node[k] = v;
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return node;
  }

  const fmt = {
    int: (n) => (n == null ? "–" : Number(n).toLocaleString("en-US")),
    pct: (x) => (x == null || !isFinite(x) ? "–" : `${(x * 100).toFixed(1)} %`),
    ms: (x) => (x == null ? "–" : x < 1 ? `${(x * 1000).toFixed(0)} µs` : `${x.toFixed(x < 10 ? 2 : 0)} ms`),
    usd: (x) => (x == null ? "–" : `$${x.toFixed(x < 1 ? 4 : 2)}`),
    time: (s) => new Date(s).toLocaleTimeString("en-GB"),
    date: (s) => {
      const d = new Date(s);
      const p = (n) => String(n).padStart(2, "0");
      return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    },
    bytes: (n) => (n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`),
    short: (key) => `${key.slice(0, 12)}…`,
  };

  // ---- sign-in ----------------------------------------------------------------------------

  async function signIn(token) {
    state.token = token.trim();
    $("signin-error").textContent = "";
    try {
      const ov = await api("GET", "/api/admin/overview");
      sessionStorage.setItem(TOKEN_KEY, state.token);
      state.tenant = ov.tenant;
      $("who-tenant").textContent = `tenant ${ov.tenant}`;
      $("ov-tenant").textContent = `· tenant ${ov.tenant}`;
      $("signin").hidden = true;
      $("tabs").hidden = false;
      $("who").hidden = false;
      show("overview");
      renderOverview(ov);
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      const why = err.status === 403
        ? "This token lacks the cache:admin scope."
        : err.status === 401 ? `Token refused: ${err.message}` : `Could not sign in: ${err.message}`;
      $("signin-error").textContent = why;
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    clearInterval(state.timer);
    for (const s of document.querySelectorAll("section.tab")) s.hidden = true;
    // Nothing of this session stays in the page for the next one (another tenant's, maybe).
    for (const t of document.querySelectorAll("section.tab table")) for (const b of t.tBodies) b.replaceChildren();
    for (const id of ["decisions-note", "entries-status", "health-status"]) $(id).textContent = "";
    $("tabs").hidden = true;
    $("who").hidden = true;
    $("signin").hidden = false;
    $("token").value = "";
    $("signin-error").textContent = message || "";
  }

  // ---- tabs -------------------------------------------------------------------------------

  function show(tab) {
    state.tab = tab;
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
    for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== tab;
    clearInterval(state.timer);
    const load = { overview: loadOverview, decisions: loadDecisions, entries: () => loadEntries(true), health: loadHealth }[tab];
    load().catch(report);
    if (tab === "overview") {
      state.timer = setInterval(() => { if ($("live").checked) loadOverview().catch(report); }, REFRESH_MS);
    }
  }

  function report(err) {
    if (err.status !== 401) console.error(err);
    const target = { entries: "entries-status", decisions: "decisions-note", overview: "ov-updated", health: "health-status" }[state.tab];
    if (target && state.token) $(target).textContent = `Error: ${err.message}`;
  }

  // ---- overview ---------------------------------------------------------------------------

  async function loadOverview() {
    renderOverview(await api("GET", "/api/admin/overview"));
  }

  const SOURCES = [
    ["memory", "#2f6fde"], ["sqlite", "#7b61c9"], ["redis", "#d04c3f"], ["semantic", "#1f8f4e"], ["other", "#8a8f98"],
  ];

  function hits(h) { return h.memory + h.sqlite + h.redis + h.semantic + h.other; }

  function renderOverview(ov) {
    const t = ov.total;
    const hitCount = hits(t.hits);
    $("stat-lookups").textContent = fmt.int(t.lookups);
    $("stat-ratio").textContent = t.lookups ? fmt.pct(hitCount / t.lookups) : "–";
    $("stat-semantic").textContent = fmt.int(t.hits.semantic);
    $("stat-latency").textContent = [t.latency_ms.p50, t.latency_ms.p95, t.latency_ms.p99].map(fmt.ms).join(" / ");
    $("stat-tokens").textContent = fmt.int(t.tokens_saved);
    $("stat-cost").textContent = fmt.usd(t.cost_saved_usd);
    $("stat-errors").textContent = fmt.int(t.errors);
    $("stat-degraded").textContent = fmt.int(t.degraded);
    $("ov-updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
    if (!window.uPlot) return;
    const xs = ov.minutes.map((m) => m.start);
    const col = (f) => ov.minutes.map(f);
    chart("chart-requests", [xs, ...SOURCES.map(([s]) => col((m) => m.hits[s])), col((m) => m.misses)],
      [...SOURCES.map(([s, c]) => ({ label: s, stroke: c, width: 2 })), { label: "miss", stroke: "#e0a030", width: 2 }]);
    chart("chart-ratio", [xs, col((m) => (m.lookups ? (100 * hits(m.hits)) / m.lookups : null))],
      [{ label: "hit %", stroke: "#2f6fde", width: 2, fill: "rgba(47,111,222,.08)" }], { y: { range: [0, 100] }, points: true });
    chart("chart-latency", [xs, col((m) => m.latency_ms.p50), col((m) => m.latency_ms.p95), col((m) => m.latency_ms.p99)],
      [{ label: "p50", stroke: "#1f8f4e", width: 2 }, { label: "p95", stroke: "#e0a030", width: 2 }, { label: "p99", stroke: "#c53030", width: 2 }], { points: true });
    chart("chart-savings", [xs, col((m) => m.tokens_saved), col((m) => m.errors), col((m) => m.degraded)],
      [{ label: "tokens saved", stroke: "#1f8f4e", width: 2 }, { label: "errors", stroke: "#c53030", width: 2 }, { label: "degraded", stroke: "#b7791f", width: 2 }]);
  }

  // `opts`: `y` (the y scale) and `points` (draw each value's point).
  function chart(id, data, series, opts) {
    const host = $(id);
    const width = Math.max(300, host.clientWidth || 560);
    const existing = state.charts[id];
    if (existing) {
      existing.setData(data);
      if (Math.abs(existing.width - width) > 4) existing.setSize({ width, height: 200 });
      return;
    }
    state.charts[id] = new window.uPlot({
      width, height: 200,
      scales: Object.assign({ x: { time: true } }, (opts && opts.y) ? { y: opts.y } : {}),
      // Ratios and latencies have no value in an idle minute: their points are drawn, so a lone
      // busy minute shows as a point, not as nothing.
      series: [{}, ...series.map((s) => Object.assign({ points: { show: !!(opts && opts.points), size: 5 } }, s))],
      axes: [{ stroke: "#6b7385" }, { stroke: "#6b7385" }],
      legend: { live: false },
    }, data, host);
  }

  // ---- decisions --------------------------------------------------------------------------

  async function loadDecisions() {
    const res = await api("GET", "/api/admin/decisions?limit=100");
    $("decisions-note").textContent = res.query_text
      ? "Question text is shown (LOG_QUERY_TEXT is on)."
      : "Questions are shown as keyed hashes; LOG_QUERY_TEXT=true shows their text.";
    const body = $("decisions-table").tBodies[0];
    body.replaceChildren(...res.decisions.map(decisionRow));
    $("decisions-empty").hidden = res.decisions.length > 0;
  }

  function decisionRow(d) {
    const feedback = el("td", { class: "feedback" });
    if (d.reported) {
      feedback.append(reportedText(d.reported));
    } else if (d.hit_id) {
      feedback.append(el("button", {
        type: "button", class: "danger wrong", dataset: { hitId: d.hit_id },
        onclick: (e) => wrongAnswer(e.currentTarget, d.hit_id),
      }, "Wrong answer"));
    }
    return el("tr", { dataset: { entry: d.entry, verdict: d.verdict } },
      el("td", {}, fmt.time(d.at)),
      el("td", { class: d.query ? "" : "mono", title: d.query_hash }, d.query || d.query_hash),
      el("td", { class: "mono", title: d.matched_query || d.entry }, d.matched_query || fmt.short(d.entry)),
      el("td", {}, d.similarity.toFixed(3)),
      el("td", { class: d.verdict === "accept" ? "ok" : "bad" }, d.verdict),
      el("td", {}, `${d.by}: ${d.reason}`),
      feedback);
  }

  function reportedText(r) {
    const bound = (x) => (x == null ? "layer default" : x.toFixed(3));
    return el("span", { class: r.correct ? "ok reported" : "bad reported" },
      `${r.correct ? "reported right" : "reported wrong"} · entry now ${r.right} right / ${r.wrong} wrong, ` +
      `floor ${bound(r.floor)}, accept ${bound(r.accept)}` +
      (r.correct ? "" : " · this question is no longer answered by this entry"));
  }

  async function wrongAnswer(button, hitId) {
    button.disabled = true;
    try {
      const r = await api("POST", "/api/cache/feedback", { hit_id: hitId, correct: false });
      button.replaceWith(reportedText({ correct: false, right: r.right, wrong: r.wrong, floor: r.floor, accept: r.accept }));
    } catch (err) {
      button.disabled = false;
      button.after(el("span", { class: "error" }, ` ${err.message}`));
    }
  }

  // ---- entries ----------------------------------------------------------------------------

  async function loadEntries(fresh) {
    if (fresh) state.cursor = null;
    const params = new URLSearchParams({ limit: "25" });
    if (state.q) params.set("q", state.q);
    if (state.cursor) params.set("cursor", state.cursor);
    $("entries-status").textContent = "Loading…";
    const res = await api("GET", `/api/admin/entries?${params}`);
    const body = $("entries-table").tBodies[0];
    const rows = res.entries.map((e) => entryRow(e, res.query_text));
    if (fresh) body.replaceChildren(...rows); else body.append(...rows);
    state.cursor = res.next;
    $("entries-more").hidden = !res.next;
    $("entries-status").textContent = body.rows.length
      ? `${body.rows.length} entries shown${res.next ? " (more on the next page)" : ""}`
      : "No entries.";
  }

  function entryRow(e, queryText) {
    const del = el("button", { type: "button", class: "danger delete", dataset: { key: e.key } }, "Delete");
    del.addEventListener("click", async () => {
      if (del.dataset.armed !== "1") {
        del.dataset.armed = "1";
        del.textContent = "Confirm delete";
        return;
      }
      del.disabled = true;
      try {
        const r = await api("DELETE", `/api/cache/${encodeURIComponent(e.key)}`);
        del.closest("tr").remove();
        $("entries-status").textContent = r.deleted ? `Deleted ${fmt.short(e.key)}` : `${fmt.short(e.key)} was already gone`;
      } catch (err) {
        del.disabled = false;
        $("entries-status").textContent = `Error: ${err.message}`;
      }
    });
    const who = e.visibility === "user" ? `private to ${e.owner}` : "tenant";
    return el("tr", { dataset: { key: e.key } },
      el("td", { class: "mono", title: e.key }, fmt.short(e.key)),
      el("td", { class: queryText ? "" : "muted", title: queryText ? "" : "query text is shown with LOG_QUERY_TEXT=true" }, queryText ? e.query : "hidden"),
      el("td", {}, fmt.date(e.created_at)),
      el("td", {}, fmt.date(e.expires_at)),
      el("td", {}, fmt.bytes(e.size)),
      el("td", {}, who),
      el("td", {}, `${e.written_by || "–"} (${e.origin})`),
      el("td", {}, e.feedback_right || e.feedback_wrong ? `${e.feedback_right} right / ${e.feedback_wrong} wrong` : "–"),
      el("td", {}, del));
  }

  async function purge() {
    $("purge-go").disabled = true;
    try {
      const r = await api("DELETE", "/api/cache");
      $("purge-confirm").hidden = true;
      $("purge-name").value = "";
      await loadEntries(true);
      $("entries-status").textContent = `Purged ${r.purged} entries.`;
    } catch (err) {
      $("entries-status").textContent = `Error: ${err.message}`;
    }
  }

  // ---- health -----------------------------------------------------------------------------

  async function loadHealth() {
    const h = await api("GET", "/api/admin/health");
    const status = $("health-status");
    status.textContent = h.status;
    status.className = `badge ${h.status === "ready" ? "ok" : "bad"}`;
    $("health-checks").tBodies[0].replaceChildren(...h.checks.map((c) => el("tr", {},
      el("td", {}, c.name), el("td", { class: c.ok ? "ok" : "bad" }, c.ok ? "ok" : "down"),
      el("td", {}, fmt.ms(c.ms)), el("td", {}, c.error || ""))));
    $("health-breakers").tBodies[0].replaceChildren(...(h.breakers.length
      ? h.breakers.map((b) => el("tr", {}, el("td", {}, b.dependency),
        el("td", { class: b.state === "closed" ? "ok" : "bad" }, b.state.replace("_", "-"))))
      : [el("tr", {}, el("td", { colSpan: 2, class: "muted" }, "No breaker (BREAKER_FAILURES=0, or no remote dependency)."))]));
    const kv = (obj) => Object.entries(obj).map(([k, v]) => el("tr", {}, el("th", {}, k),
      el("td", { class: "mono" }, v !== null && typeof v === "object" ? JSON.stringify(v) : String(v))));
    $("health-build").tBodies[0].replaceChildren(...kv({ ...h.build, uptime: `${h.uptime_secs} s` }));
    $("health-config").tBodies[0].replaceChildren(...kv(h.config));
  }

  // ---- wiring -----------------------------------------------------------------------------

  function start() {
    $("signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value); });
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.tab));
    $("decisions-refresh").addEventListener("click", () => loadDecisions().catch(report));
    $("health-refresh").addEventListener("click", () => loadHealth().catch(report));
    $("entries-search").addEventListener("submit", (e) => {
      e.preventDefault();
      state.q = $("entries-q").value.trim();
      loadEntries(true).catch(report);
    });
    $("entries-more").addEventListener("click", () => loadEntries(false).catch(report));
    $("purge").addEventListener("click", () => {
      $("purge-tenant").textContent = state.tenant;
      $("purge-confirm").hidden = false;
      $("purge-name").focus();
    });
    $("purge-name").addEventListener("input", () => { $("purge-go").disabled = $("purge-name").value !== state.tenant; });
    $("purge-go").addEventListener("click", purge);
    $("purge-cancel").addEventListener("click", () => { $("purge-confirm").hidden = true; });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
