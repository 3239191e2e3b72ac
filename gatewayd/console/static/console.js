// The gatewayd console: four pages over /ui/api/ (docs/console.md). No framework, no
// build step; every value is put in the page as text (textContent), never as HTML.
"use strict";

let csrf = null;
let overviewTimer = null;
let cursor = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

async function api(path) {
  const r = await fetch("/ui/api/" + path, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/ui/login"; throw new Error("signed out"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
  return body;
}

function fmt(x, digits) {
  if (x === null || x === undefined) return "-";
  return typeof x === "number" && digits !== undefined ? x.toFixed(digits) : String(x);
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.appendChild(c); tr.appendChild(td); }
    else tr.appendChild(el("td", c));
  }
  return tr;
}

// -- Overview ---------------------------------------------------------------

function drawChart(points) {
  const svg = document.getElementById("chart");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (!points.length) return;
  const maxR = Math.max(0.001, ...points.map(p => p.rps));
  const maxE = Math.max(1, ...points.map(p => p.errors));
  const w = 600 / Math.max(1, points.length - 1);
  const line = (vals, max, color) => {
    const p = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    p.setAttribute("points", vals.map((v, i) => `${(i * w).toFixed(1)},${(115 - (v / max) * 105).toFixed(1)}`).join(" "));
    p.setAttribute("fill", "none");
    p.setAttribute("stroke", color);
    p.setAttribute("stroke-width", "2");
    svg.appendChild(p);
  };
  line(points.map(p => p.rps), maxR, "#3b6fd8");
  line(points.map(p => p.errors), maxE, "#d83b3b");
}

async function loadOverview() {
  const data = await api("overview");
  document.getElementById("log-kind").textContent = data.request_log;
  drawChart(data.chart);
  const tbody = document.querySelector("#deployments tbody");
  tbody.replaceChildren();
  const aliasSelect = document.getElementById("play-alias");
  const known = new Set([...aliasSelect.options].map(o => o.value));
  for (const a of data.aliases) {
    if (!known.has(a.alias)) {
      const o = el("option", a.alias);
      o.value = a.alias;
      aliasSelect.appendChild(o);
    }
    for (const d of a.deployments) {
      const r = d.recent || {};
      const labels = { healthy: "healthy", cooling_down: "cooling down", down_by_health_check: "down (health check)" };
      let state = labels[d.state] || d.state;
      if (d.cooling_down_until) state += " until " + new Date(d.cooling_down_until * 1000).toLocaleTimeString();
      const s = el("span", state, "state-" + d.state);
      const tr = row([a.alias, d.id, s, d.in_flight, fmt(r.requests), r.requests ? (100 * r.error_rate).toFixed(1) + "%" : "-",
        fmt(r.latency_ms, 1), fmt(r.ttft_ms, 1), d.last_error ? `${d.last_error_status || ""} ${d.last_error}` : "-"]);
      tr.dataset.deployment = d.id;
      tr.dataset.state = d.state;
      tbody.appendChild(tr);
    }
  }
}

// -- Requests ---------------------------------------------------------------

function filterQuery() {
  const form = document.getElementById("filters");
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(form)) {
    if (!v) continue;
    if (k === "since" || k === "until") q.set(k, String(new Date(v).getTime() / 1000));
    else q.set(k, v);
  }
  return q;
}

async function loadRequests(more) {
  const q = filterQuery();
  if (more && cursor) q.set("before", cursor);
  const data = await api("requests?" + q.toString());
  const tbody = document.querySelector("#requests tbody");
  if (!more) tbody.replaceChildren();
  for (const r of data.rows) {
    const tr = row([new Date(r.ts * 1000).toLocaleString(), r.request_id, fmt(r.key), fmt(r.alias), fmt(r.deployment),
      r.dialect, r.status, r.attempts, fmt(r.fallback), fmt(r.latency_ms, 1), fmt(r.ttft_ms, 1),
      r.prompt_tokens + r.completion_tokens, r.cost_usd ? r.cost_usd.toFixed(6) : "0"]);
    tr.className = "clickable";
    tr.dataset.id = r.id;
    tr.addEventListener("click", () => showDetail(r.id));
    tbody.appendChild(tr);
  }
  cursor = data.next;
  document.getElementById("older").hidden = !cursor;
}

async function showDetail(id) {
  const d = await api("requests/" + id);
  document.getElementById("detail-id").textContent = d.request_id;
  const shown = Object.assign({}, d);
  for (const k of ["request_body", "response_body"]) {
    if (shown[k]) { try { shown[k] = JSON.parse(shown[k]); } catch (e) { /* SSE text */ } }
    else shown[k] = "(not stored: request_log.store_bodies is off)";
  }
  document.getElementById("detail-body").textContent = JSON.stringify(shown, null, 2);
  document.getElementById("detail").hidden = false;
}

// -- Keys -------------------------------------------------------------------

function left(x) { return x ? `${fmt(x.remaining)} of ${x.limit}` : "-"; }

async function loadKeys() {
  const data = await api("keys");
  const tbody = document.querySelector("#keys tbody");
  tbody.replaceChildren();
  for (const k of data.keys) {
    const b = k.budget;
    const budget = b ? `${b.usd !== null ? "$" + fmt(b.remaining_usd, 4) + " of $" + b.usd : ""} ${b.tokens !== null ? fmt(b.remaining_tokens) + " of " + b.tokens + " tokens" : ""} / ${b.period}` : "-";
    const spend = k.spend ? `$${fmt(k.spend.usd, 6)}, ${k.spend.tokens} tokens (${k.spend.period})` : "-";
    const days = k.per_day.map(d => `${d.day}: $${d.cost_usd.toFixed(6)} (${d.requests} req)`).join("\n") || "-";
    const p = k.max_parallel_requests;
    tbody.appendChild(row([k.name + (k.admin ? " (admin)" : ""), k.models ? k.models.join(", ") : "all", left(k.rpm), left(k.tpm),
      p ? `${p.in_use} in use of ${p.limit}` : "-", budget, spend, el("pre", days)]));
  }
}

// -- Playground ---------------------------------------------------------------

function playBody(dialect, alias, prompt) {
  if (dialect === "messages") return { model: alias, max_tokens: 512, stream: true, messages: [{ role: "user", content: prompt }] };
  if (dialect === "responses") return { model: alias, stream: true, input: prompt };
  return { model: alias, stream: true, messages: [{ role: "user", content: prompt }] };
}

function deltaText(dialect, obj) {
  if (dialect === "messages") return obj.type === "content_block_delta" && obj.delta ? obj.delta.text || "" : "";
  if (dialect === "responses") return obj.type === "response.output_text.delta" ? obj.delta || "" : "";
  const c = obj.choices && obj.choices[0];
  return c && c.delta && c.delta.content ? c.delta.content : "";
}

async function play(ev) {
  ev.preventDefault();
  const alias = document.getElementById("play-alias").value;
  const dialect = document.getElementById("play-dialect").value;
  const prompt = document.getElementById("play-prompt").value;
  const out = document.getElementById("play-output");
  const hdrs = document.getElementById("play-headers");
  out.textContent = "";
  hdrs.textContent = "";
  const r = await fetch("/ui/api/playground/" + dialect, {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrf || "" },
    body: JSON.stringify(playBody(dialect, alias, prompt)),
  });
  const lines = [`HTTP ${r.status}`];
  for (const [k, v] of r.headers) if (k.startsWith("x-gatewayd-") || k === "x-request-id") lines.push(`${k}: ${v}`);
  hdrs.textContent = lines.join("\n");
  if (!r.ok || !r.body) { out.textContent = await r.text(); return; }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, cut).trim();
      buf = buf.slice(cut + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") continue;
      try { out.textContent += deltaText(dialect, JSON.parse(data)); } catch (e) { /* not JSON */ }
    }
  }
  out.dataset.done = "true";
}

// -- Navigation -----------------------------------------------------------------

function show() {
  const page = (location.hash || "#overview").slice(1);
  for (const s of document.querySelectorAll(".page")) s.classList.toggle("active", s.id === "page-" + page);
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.page === page);
  clearInterval(overviewTimer);
  if (page === "overview" || page === "playground") {
    loadOverview().catch(() => {});
    if (page === "overview") overviewTimer = setInterval(() => loadOverview().catch(() => {}), 2000);
  }
  if (page === "requests") loadRequests(false).catch(() => {});
  if (page === "keys") loadKeys().catch(() => {});
}

async function logout() {
  await fetch("/ui/logout", { method: "POST", credentials: "same-origin", headers: { "x-csrf-token": csrf || "" } });
  location.href = "/ui/login";
}

document.addEventListener("DOMContentLoaded", async () => {
  const s = await api("session");
  csrf = s.csrf_token;
  document.getElementById("who").textContent = "signed in: " + s.admin;
  document.getElementById("logout").addEventListener("click", logout);
  document.getElementById("filters").addEventListener("submit", ev => { ev.preventDefault(); loadRequests(false); });
  document.getElementById("older").addEventListener("click", () => loadRequests(true));
  document.getElementById("play").addEventListener("submit", play);
  window.addEventListener("hashchange", show);
  show();
});
