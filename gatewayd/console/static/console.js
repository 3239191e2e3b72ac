// The gatewayd console: plain JS, no build step, no other host. Data goes into the
// page with textContent only (never innerHTML), so nothing it shows can run as code.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let csrf = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function fmtTime(ts) {
    if (ts === null || ts === undefined) return "-";
    return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  function num(v, digits) {
    if (v === null || v === undefined) return "-";
    return digits === undefined ? String(v) : Number(v).toFixed(digits);
  }

  async function api(path) {
    const r = await fetch("/ui/api/" + path, { credentials: "same-origin" });
    if (r.status === 401) { window.location.href = "/ui/login"; throw new Error("signed out"); }
    const body = await r.json();
    if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
    return body;
  }

  // -- sign-in page -------------------------------------------------------------
  if (document.body.classList.contains("login")) {
    if (new URLSearchParams(window.location.search).get("failed")) $("failed").hidden = false;
    return;
  }

  // -- the shell ------------------------------------------------------------------
  const page = window.location.pathname.replace(/^\/ui\/?/, "").replace(/\/$/, "");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.classList.add("active");
  }
  const section = $("page-" + (page || "overview"));
  if (section) section.hidden = false;

  api("session").then((s) => {
    csrf = s.csrf_token;
    $("who").textContent = s.user;
  });

  $("logout").addEventListener("click", async () => {
    await fetch("/ui/logout", {
      method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf || "" },
    });
    window.location.href = "/ui/login";
  });

  // -- Overview -----------------------------------------------------------------------
  function drawChart(points) {
    const svg = $("chart");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const ns = "http://www.w3.org/2000/svg";
    const max = Math.max(0.001, ...points.map((p) => p.rps), ...points.map((p) => p.errors / 60));
    const w = 600 / points.length;
    points.forEach((p, i) => {
      const h = (p.rps / max) * 110;
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", String(i * w + 1));
      bar.setAttribute("y", String(118 - h));
      bar.setAttribute("width", String(Math.max(1, w - 2)));
      bar.setAttribute("height", String(h));
      bar.setAttribute("class", "bar");
      const t = document.createElementNS(ns, "title");
      t.textContent = fmtTime(p.t) + ": " + p.rps + " rps, " + p.errors + " errors";
      bar.appendChild(t);
      svg.appendChild(bar);
      if (p.errors) {
        const eh = ((p.errors / 60) / max) * 110;
        const err = document.createElementNS(ns, "rect");
        err.setAttribute("x", String(i * w + 1));
        err.setAttribute("y", String(118 - eh));
        err.setAttribute("width", String(Math.max(1, w - 2)));
        err.setAttribute("height", String(Math.max(2, eh)));
        err.setAttribute("class", "errbar");
        svg.appendChild(err);
      }
    });
  }

  function renderOverview(o) {
    const t = o.totals;
    $("overview-totals").textContent =
      "Last " + o.window_minutes + " min: " + t.requests + " requests, error rate " +
      (t.error_rate * 100).toFixed(1) + "%, latency " + num(t.latency_ms) + " ms, TTFT " +
      num(t.ttft_ms) + " ms. Request log: " + o.request_log.kind + ".";
    drawChart(o.chart);
    const box = $("aliases");
    const tables = [];
    for (const a of o.aliases) {
      const wrap = el("div", null, "alias");
      wrap.dataset.alias = a.alias;
      const h = el("h3", a.alias);
      if (a.fallbacks.length) h.appendChild(el("span", " falls back to " + a.fallbacks.join(", "), "muted"));
      wrap.appendChild(h);
      const table = el("table", null, "grid");
      const head = el("tr");
      for (const c of ["deployment", "provider / model", "state", "cooling down until", "in flight", "requests", "error rate", "latency ms", "TTFT ms", "last error"]) head.appendChild(el("th", c));
      table.appendChild(el("thead")).appendChild(head);
      const body = el("tbody");
      for (const d of a.deployments) {
        const tr = el("tr");
        tr.dataset.deployment = d.id;
        tr.appendChild(el("td", d.id));
        tr.appendChild(el("td", d.provider + " / " + d.model));
        const label = { healthy: "healthy", cooldown: "cooling down", down: "down (health check)" }[d.state] || d.state;
        const st = el("td", label, "state " + d.state);
        if (d.last_error) st.title = d.last_error;
        st.dataset.state = d.state;
        tr.appendChild(st);
        tr.appendChild(el("td", d.cooldown_until ? fmtTime(d.cooldown_until) + " (" + d.cooldown_remaining_s.toFixed(0) + " s)" : "-"));
        tr.appendChild(el("td", d.in_flight));
        tr.appendChild(el("td", d.requests));
        tr.appendChild(el("td", (d.error_rate * 100).toFixed(1) + "%"));
        tr.appendChild(el("td", num(d.latency_ms)));
        tr.appendChild(el("td", num(d.ttft_ms)));
        tr.appendChild(el("td", d.last_error_status === null ? "-" : d.last_error_status));
        body.appendChild(tr);
      }
      table.appendChild(body);
      wrap.appendChild(table);
      tables.push(wrap);
    }
    box.replaceChildren(...tables);
  }

  async function pollOverview() {
    try { renderOverview(await api("overview")); } catch (e) { $("overview-totals").textContent = String(e); }
    window.setTimeout(pollOverview, 2000);
  }
  if (page === "") pollOverview();

  // -- Requests ------------------------------------------------------------------------
  let before = null;
  let pages = [];

  function filterQuery() {
    const form = $("filters");
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) {
      if (!v) continue;
      if (k === "since" || k === "until") q.set(k, String(new Date(v).getTime() / 1000));
      else q.set(k, String(v));
    }
    return q;
  }

  async function loadRequests(from) {
    const q = filterQuery();
    if (from) q.set("before", String(from));
    const r = await api("requests?" + q.toString());
    const body = $("requests-table").querySelector("tbody");
    const rows = r.data.map((row) => {
      const tr = el("tr", null, "row");
      tr.dataset.id = row.id;
      tr.dataset.status = row.status;
      const tokens = row.prompt_tokens === null && row.completion_tokens === null ? "-" : (row.prompt_tokens || 0) + " + " + (row.completion_tokens || 0);
      for (const v of [fmtTime(row.ts), row.request_id || "-", row.key_name || "-", row.alias, row.deployment || "-", row.dialect, row.status, row.attempts, row.fallback || "-", num(row.latency_ms), num(row.ttft_ms), tokens, num(row.cost_usd, 6), row.cached ? "yes" : ""]) tr.appendChild(el("td", v));
      tr.addEventListener("click", () => showDetail(row.id));
      return tr;
    });
    body.replaceChildren(...rows);
    before = r.next_before;
    $("older").disabled = before === null;
    $("requests-count").textContent = rows.length + " shown";
  }

  async function showDetail(id) {
    const row = await api("requests/" + id);
    $("detail-id").textContent = "#" + id;
    const dl = $("detail-fields");
    const items = [];
    for (const [k, v] of Object.entries(row)) {
      if (k === "request_body" || k === "response_body" || k === "attempt_log") continue;
      items.push(el("dt", k), el("dd", k === "ts" ? fmtTime(v) : (v === null ? "-" : v)));
    }
    dl.replaceChildren(...items);
    const attempts = (row.attempt_log || []).map((a, i) => {
      const tr = el("tr");
      for (const v of [i + 1, a.deployment || "-", a.status === null ? "-" : a.status, num(a.latency_ms), a.error || ""]) tr.appendChild(el("td", v));
      return tr;
    });
    $("detail-attempts").querySelector("tbody").replaceChildren(...attempts);
    const none = "(not stored: general_settings.request_log.store_bodies is off)";
    $("detail-request").textContent = row.request_body || none;
    $("detail-response").textContent = row.response_body || none;
    $("detail").hidden = false;
  }

  if (page === "requests") {
    $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); pages = []; loadRequests(null); });
    $("clear-filters").addEventListener("click", () => { $("filters").reset(); pages = []; loadRequests(null); });
    $("newest").addEventListener("click", () => { pages = []; loadRequests(null); });
    $("older").addEventListener("click", () => { pages.push(before); loadRequests(before); });
    $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
    loadRequests(null);
  }

  // -- Keys ------------------------------------------------------------------------------
  function left(limit) {
    if (!limit) return "-";
    return limit.remaining + " / " + limit.limit;
  }

  async function loadKeys() {
    const r = await api("keys");
    const rows = r.data.map((k) => {
      const tr = el("tr");
      tr.dataset.key = k.name;
      const b = k.budget;
      const budget = b ? [b.usd !== null ? "$" + num(b.remaining_usd, 4) + " of $" + b.usd : null, b.tokens !== null ? b.remaining_tokens + " of " + b.tokens + " tokens" : null].filter(Boolean).join(", ") + " per " + b.period : "-";
      const spend = k.spend ? "$" + num(k.spend.usd, 6) + ", " + k.spend.tokens + " tokens (" + k.spend.period + ")" : (k.error || "-");
      const days = Object.entries(k.spend_per_day || {}).sort().reverse().map(([d, v]) => d + ": $" + num(v.usd, 6) + " / " + v.requests + " req").join("\n") || "-";
      for (const v of [k.name, k.admin ? "yes" : "", k.models ? k.models.join(", ") : "all", left(k.rpm), left(k.tpm), k.max_parallel_requests ? k.max_parallel_requests.in_use + " / " + k.max_parallel_requests.limit : "-", budget, spend]) tr.appendChild(el("td", v));
      tr.appendChild(el("td", days, "pre"));
      return tr;
    });
    $("keys-table").querySelector("tbody").replaceChildren(...rows);
  }
  if (page === "keys") loadKeys();

  // -- Playground ------------------------------------------------------------------------
  function bodyFor(dialect, alias, prompt, stream) {
    if (dialect === "messages") return { model: alias, max_tokens: 512, stream, messages: [{ role: "user", content: prompt }] };
    if (dialect === "responses") return { model: alias, input: prompt, stream };
    if (dialect === "completions") return { model: alias, prompt, stream };
    const body = { model: alias, stream, messages: [{ role: "user", content: prompt }] };
    if (stream) body.stream_options = { include_usage: true };
    return body;
  }

  function eventText(dialect, ev) {
    if (dialect === "messages") return ev.type === "content_block_delta" && ev.delta ? (ev.delta.text || "") : "";
    if (dialect === "responses") return ev.type === "response.output_text.delta" ? (ev.delta || "") : "";
    const c = ev.choices && ev.choices[0];
    if (!c) return "";
    return (c.delta && c.delta.content) || c.text || "";
  }

  function answerText(dialect, a) {
    if (dialect === "messages") return (a.content || []).map((c) => c.text || "").join("");
    if (dialect === "responses") return (a.output || []).flatMap((o) => o.content || []).map((c) => c.text || "").join("");
    const c = a.choices && a.choices[0];
    return c ? ((c.message && c.message.content) || c.text || "") : JSON.stringify(a);
  }

  async function send(ev) {
    ev.preventDefault();
    const dialect = $("pg-dialect").value;
    const stream = $("pg-stream").checked;
    const out = $("pg-output");
    out.textContent = "";
    $("pg-headers").textContent = "";
    $("pg-send").disabled = true;
    try {
      const r = await fetch("/ui/api/playground/" + dialect, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf || "" },
        body: JSON.stringify(bodyFor(dialect, $("pg-alias").value, $("pg-prompt").value, stream)),
      });
      const shown = [];
      r.headers.forEach((v, k) => { if (k.startsWith("x-gatewayd-") || k === "x-request-id" || k === "content-type") shown.push(k + ": " + v); });
      $("pg-headers").textContent = "HTTP " + r.status + "\n" + shown.sort().join("\n");
      if (!stream || !r.body || !(r.headers.get("content-type") || "").includes("event-stream")) {
        const text = await r.text();
        try { out.textContent = r.ok ? answerText(dialect, JSON.parse(text)) : text; } catch (e) { out.textContent = text; }
        return;
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          for (const line of block.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (!data || data === "[DONE]") continue;
            try { out.textContent += eventText(dialect, JSON.parse(data)); } catch (e) { /* not JSON: skip */ }
          }
        }
      }
      out.classList.add("done");
    } finally {
      $("pg-send").disabled = false;
    }
  }

  if (page === "playground") {
    api("overview").then((o) => {
      const sel = $("pg-alias");
      sel.replaceChildren(...o.aliases.map((a) => { const opt = el("option", a.alias); opt.value = a.alias; return opt; }));
    });
    $("playground").addEventListener("submit", send);
  }
})();
