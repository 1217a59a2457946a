// Sluice dashboard: a few hundred lines of vanilla JavaScript over the admin JSON API.
// The key typed at login lives in sessionStorage (this tab only) and goes out as a bearer
// token; the API decides what each role sees, the page only hides controls it would refuse.
"use strict";

const KEY = "sluice.key";
const $ = (s, el) => (el || document).querySelector(s);
const main = () => $("#main");
let me = null; // {role, team, label}

function h(v) {
  return String(v == null ? "" : v).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// Money arrives as integer micro-USD; shown with as many decimals as it needs.
function usd(micro) {
  if (micro == null) return "—";
  const v = Number(micro) / 1e6;
  const digits = Math.abs(v) >= 100 ? 2 : Math.abs(v) >= 1 ? 4 : 6;
  return "$" + v.toFixed(digits);
}
const usdText = (s) => (s == null ? "—" : "$" + s);
const num = (n) => (n == null ? "—" : Number(n).toLocaleString("en-US"));
const pct = (r) => (r == null ? "—" : (Number(r) * 100).toFixed(1) + " %");
const ms = (v) => (v == null ? "—" : Number(v).toFixed(1) + " ms");

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts) {
  opts = opts || {};
  const headers = { authorization: "Bearer " + sessionStorage.getItem(KEY) };
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (r.status === 401 && path !== "/v1/key/info") { logout("Your session's key is no longer accepted."); }
  if (!r.ok) {
    const msg = (data && data.error && data.error.message) || r.status + " " + r.statusText;
    throw new ApiError(r.status, msg);
  }
  return data;
}

const canWrite = () => me && (me.role === "admin" || me.role === "team_admin");
const isAdmin = () => me && me.role === "admin";
const isOrg = () => me && !me.team && (me.role === "admin" || me.role === "viewer");

// ---- login / logout ----

async function login(key) {
  sessionStorage.setItem(KEY, key);
  let info;
  try {
    info = await api("/v1/key/info");
  } catch (e) {
    sessionStorage.removeItem(KEY);
    throw new Error(e.status === 401 ? "This key is not valid (unknown, revoked or expired)." : e.message);
  }
  const role = info.role || (info.principal === "master" || info.principal === "anonymous" ? "admin" : null);
  if (!role) {
    sessionStorage.removeItem(KEY);
    throw new Error("This key has no admin role: use an admin, team_admin or viewer key.");
  }
  me = { role, team: role === "admin" ? null : info.team || null, label: info.prefix || info.principal };
  sessionStorage.setItem(KEY + ".me", JSON.stringify(me));
}

function logout(why) {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(KEY + ".me");
  me = null;
  showLogin(why || "");
}

function showLogin(msg) {
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = msg || "";
  $("#login-key").value = "";
  $("#login-key").focus();
}

function showApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#who").textContent = me.label + " · " + me.role + (me.team ? " · team " + me.team : "");
  route();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const btn = $("#login-button");
  btn.disabled = true;
  try {
    await login($("#login-key").value.trim());
    if (!location.hash) location.hash = "#overview";
    showApp();
  } catch (e) {
    $("#login-error").textContent = e.message;
  } finally {
    btn.disabled = false;
  }
});
$("#logout").addEventListener("click", () => logout("Logged out."));

// ---- routing ----

const PAGES = {
  overview: overview, usage: usagePage, budgets: budgets, keys: keysPage,
  requests: requestsPage, providers: providers, quality: quality, insights: insightsPage,
};

async function route() {
  if (!me) return;
  const [name, arg] = (location.hash.slice(1) || "overview").split("/");
  const page = PAGES[name] ? name : "overview";
  document.querySelectorAll(".top nav a").forEach((a) => {
    if (a.getAttribute("href") === "#" + page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  const m = main();
  m.innerHTML = '<p class="muted">Loading…</p>';
  try {
    await PAGES[page](m, arg ? decodeURIComponent(arg) : null);
  } catch (e) {
    m.innerHTML = '<div class="card error" role="alert">' + h(e.message) + "</div>";
  }
  document.title = "Sluice · " + page;
}
window.addEventListener("hashchange", () => { route(); main().focus(); });

// ---- small builders ----

function table(caption, cols, rows, opts) {
  opts = opts || {};
  if (!rows.length) return '<p class="muted">' + h(caption) + ": nothing in this range.</p>";
  let s = '<div class="table-wrap"><table' + (opts.id ? ' id="' + opts.id + '"' : "") + "><caption>" + h(caption) + "</caption><thead><tr>";
  for (const c of cols) s += '<th scope="col"' + (c.n ? ' class="n"' : "") + ">" + h(c.label) + "</th>";
  s += "</tr></thead><tbody>";
  for (const r of rows) {
    s += "<tr" + (opts.rowAttr ? " " + opts.rowAttr(r) : "") + ">";
    for (const c of cols) s += "<td" + (c.n ? ' class="n"' : "") + ">" + (c.html ? c.html(r) : h(c.get(r))) + "</td>";
    s += "</tr>";
  }
  return s + "</tbody></table></div>";
}

function stat(label, value, key, raw) {
  return '<div class="stat"><div class="l">' + h(label) + '</div><div class="v" data-k="' + key +
    '" data-value="' + h(raw) + '">' + h(value) + "</div></div>";
}

const COLORS = ["#1f5fbf", "#d9480f", "#2b8a3e", "#9c36b5", "#e67700", "#0b7285", "#c2255c", "#5c940d", "#495057"];

// Horizontal bars: [{label, value, text}], hand-drawn SVG.
function barChart(title, items) {
  if (!items.length) return '<p class="muted">' + h(title) + ": no data yet.</p>";
  const max = Math.max(...items.map((i) => i.value), 1e-12);
  const rowH = 26, w = 640, labelW = 170, H = items.length * rowH + 10;
  let s = '<figure class="chart"><figcaption>' + h(title) + '</figcaption><svg role="img" aria-label="' + h(title) +
    '" viewBox="0 0 ' + w + " " + H + '" preserveAspectRatio="xMinYMin meet">';
  items.forEach((it, i) => {
    const y = 5 + i * rowH, bw = Math.max(1, ((w - labelW - 190) * it.value) / max);
    s += '<text x="' + (labelW - 6) + '" y="' + (y + 17) + '" text-anchor="end" font-size="13">' + h(it.label) + "</text>";
    s += '<rect x="' + labelW + '" y="' + (y + 4) + '" width="' + bw + '" height="' + (rowH - 8) + '" fill="' + COLORS[i % COLORS.length] + '"><title>' + h(it.label + ": " + it.text) + "</title></rect>";
    s += '<text x="' + (labelW + bw + 6) + '" y="' + (y + 17) + '" font-size="12">' + h(it.text) + "</text>";
  });
  return s + "</svg></figure>";
}

// Stacked columns over time: buckets × series, hand-drawn SVG.
function timeChart(title, buckets, series, fmt) {
  if (!buckets.length) return '<p class="muted">' + h(title) + ": no data in this range.</p>";
  const w = 800, H = 260, padL = 70, padB = 40, padT = 10;
  const totals = buckets.map((b) => series.reduce((a, s) => a + (s.values[b] || 0), 0));
  const max = Math.max(...totals, 1e-12);
  const colW = (w - padL - 10) / buckets.length;
  let s = '<figure class="chart"><figcaption>' + h(title) + '</figcaption><svg role="img" aria-label="' + h(title) +
    '" viewBox="0 0 ' + w + " " + H + '">';
  for (let g = 0; g <= 4; g++) {
    const y = padT + ((H - padB - padT) * g) / 4;
    s += '<line x1="' + padL + '" x2="' + w + '" y1="' + y + '" y2="' + y + '" stroke="#d7dce2"/>';
    s += '<text x="' + (padL - 6) + '" y="' + (y + 4) + '" font-size="11" text-anchor="end">' + h(fmt((max * (4 - g)) / 4)) + "</text>";
  }
  buckets.forEach((b, i) => {
    let y = H - padB;
    series.forEach((sr, k) => {
      const v = sr.values[b] || 0;
      if (!v) return;
      const bh = ((H - padB - padT) * v) / max;
      y -= bh;
      s += '<rect x="' + (padL + i * colW + 2) + '" y="' + y + '" width="' + Math.max(1, colW - 4) + '" height="' + bh +
        '" fill="' + COLORS[k % COLORS.length] + '"><title>' + h(b + " · " + sr.name + ": " + fmt(v)) + "</title></rect>";
    });
    if (buckets.length <= 16 || i % Math.ceil(buckets.length / 12) === 0) {
      s += '<text x="' + (padL + i * colW + colW / 2) + '" y="' + (H - padB + 16) + '" font-size="11" text-anchor="middle">' + h(b.endsWith("T00:00:00Z") ? b.slice(5, 10) : b.slice(11, 16)) + "</text>";
    }
  });
  s += "</svg>";
  // Swatches as SVG: the page's CSP allows no inline style attributes.
  s += '<div class="legend">' + series.map((sr, k) => '<span><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" fill="' + COLORS[k % COLORS.length] + '"/></svg> ' + h(sr.name) + "</span>").join("") + "</div>";
  return s + "</figure>";
}

function rangeSelect(id, value) {
  const opts = [["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"], ["90d", "Last 90 days"]];
  return '<div><label for="' + id + '">Time range</label><select id="' + id + '">' +
    opts.map(([v, l]) => '<option value="' + v + '"' + (v === value ? " selected" : "") + ">" + l + "</option>").join("") + "</select></div>";
}

function qs(params) {
  const p = Object.entries(params).filter(([, v]) => v != null && v !== "");
  return p.length ? "?" + p.map(([k, v]) => k + "=" + encodeURIComponent(v)).join("&") : "";
}

function utcStart(kind) {
  const d = new Date();
  return kind === "day"
    ? new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate())).toISOString().slice(0, 19) + "Z"
    : new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)).toISOString().slice(0, 19) + "Z";
}

const total = (rows) => (rows && rows[0]) || {};

// ---- pages ----

async function overview(m) {
  const month = utcStart("month"), today = utcStart("day");
  const [t, mo, byModel, byTeam, budgetsOf] = await Promise.all([
    api("/admin/usage" + qs({ since: today })),
    api("/admin/usage" + qs({ since: month })),
    api("/admin/usage" + qs({ since: month, group_by: "model" })),
    api("/admin/usage" + qs({ since: month, group_by: "team" })),
    budgetRows().catch(() => []),
  ]);
  const d = total(t.rows), mth = total(mo.rows);
  const top = (rows, k) => rows.filter((r) => r.requests > 0)
    .sort((a, b) => b.cost_micro_usd - a.cost_micro_usd || b.requests - a.requests).slice(0, 8)
    .map((r) => ({ label: r[k] == null ? "(no " + k + ")" : r[k], value: r.cost_micro_usd || r.requests / 1e9, text: usd(r.cost_micro_usd) + " · " + num(r.requests) + " req" }));
  const withBudget = budgetsOf.filter((b) => b.budget_usd != null);
  m.innerHTML =
    "<h1>Overview</h1>" +
    '<div class="grid">' +
    stat("Spend today", usd(d.cost_micro_usd || 0), "spend_today", d.cost_micro_usd || 0) +
    stat("Spend this month", usd(mth.cost_micro_usd || 0), "spend_month", mth.cost_micro_usd || 0) +
    stat("Requests this month", num(mth.requests || 0), "requests", mth.requests || 0) +
    stat("Error rate", pct(mth.error_rate || 0), "error_rate", mth.error_rate || 0) +
    stat("p50 latency", ms(mth.p50_latency_ms), "p50", mth.p50_latency_ms) +
    stat("p95 latency", ms(mth.p95_latency_ms), "p95", mth.p95_latency_ms) +
    stat("Cache savings", usd(mth.cost_saved_micro_usd || 0), "cache_saved", mth.cost_saved_micro_usd || 0) +
    stat("Mean quality score", mth.mean_score == null ? "—" : mth.mean_score.toFixed(2) + " (" + num(mth.feedback_count) + ")", "mean_score", mth.mean_score) +
    "</div>" +
    '<div class="cols"><div class="card" id="top-models">' + barChart("Top models by spend this month", top(byModel.rows, "model")) + "</div>" +
    '<div class="card" id="top-teams">' + barChart("Top teams by spend this month", top(byTeam.rows, "team")) + "</div></div>" +
    '<div class="card"><h2>Budgets</h2>' + budgetTable(withBudget) + "</div>";
}

async function budgetRows() {
  const [teams, keys] = await Promise.all([api("/admin/teams"), api("/admin/keys")]);
  const rows = [];
  for (const t of teams.data || []) rows.push({ kind: "team", name: t.name, ...t });
  for (const k of keys.data || []) if (k.status === "active") rows.push({ kind: "key", name: k.name || k.prefix, ...k });
  return rows;
}

function budgetTable(rows) {
  return table("Spend against budget in the current period", [
    { label: "Kind", get: (r) => r.kind },
    { label: "Name", get: (r) => r.name },
    { label: "Period", get: (r) => r.budget_period },
    { label: "Spent", n: 1, get: (r) => usdText(r.spend_usd) },
    { label: "Budget", n: 1, get: (r) => usdText(r.budget_usd) },
    { label: "Used", html: (r) => {
      const used = Number(r.spend_usd || 0) + Number(r.reserved_usd || 0), b = Number(r.budget_usd);
      return '<meter min="0" max="' + b + '" high="' + b * 0.8 + '" value="' + Math.min(used, b) + '" aria-label="' + h(r.name) + ' budget used">' + h(used) + "</meter> " +
        h(b > 0 ? ((100 * used) / b).toFixed(1) + " %" : "—");
    } },
    { label: "Resets", get: (r) => r.resets_at || (r.budget_period === "total" ? "never" : "—") },
  ], rows);
}

async function usagePage(m) {
  const st = usagePage.state || (usagePage.state = { range: "7d", by: "model", metric: "cost" });
  m.innerHTML = "<h1>Usage over time</h1>" +
    '<form class="filters" id="usage-form">' + rangeSelect("u-range", st.range) +
    '<div><label for="u-by">Group by</label><select id="u-by">' +
    ["model", "team", "provider", "key", "user"].map((g) => '<option value="' + g + '"' + (g === st.by ? " selected" : "") + ">" + g + "</option>").join("") +
    '</select></div><div><label for="u-metric">Measure</label><select id="u-metric">' +
    [["cost", "Cost"], ["tokens", "Tokens"], ["requests", "Requests"]].map(([v, l]) => '<option value="' + v + '"' + (v === st.metric ? " selected" : "") + ">" + l + "</option>").join("") +
    '</select></div><div><button type="submit">Show</button></div></form><div id="usage-out" class="card"></div>';
  const draw = async () => {
    const bucket = st.range === "24h" ? "hour" : "day";
    const r = await api("/admin/usage" + qs({ since: st.range, group_by: st.by + "," + bucket }));
    const val = (row) => st.metric === "cost" ? row.cost_micro_usd : st.metric === "tokens" ? row.input_tokens + row.output_tokens : row.requests;
    const fmt = st.metric === "cost" ? usd : (v) => num(Math.round(v));
    const buckets = [...new Set(r.rows.map((x) => x.bucket))].sort();
    const byName = {};
    for (const row of r.rows) {
      const n = row[st.by] == null ? "(none)" : row[st.by];
      (byName[n] = byName[n] || { name: n, values: {}, sum: 0 });
      byName[n].values[row.bucket] = (byName[n].values[row.bucket] || 0) + val(row);
      byName[n].sum += val(row);
    }
    const series = Object.values(byName).sort((a, b) => b.sum - a.sum);
    $("#usage-out").innerHTML = timeChart((st.metric === "cost" ? "Cost" : st.metric === "tokens" ? "Tokens" : "Requests") + " by " + st.by + " per " + bucket, buckets, series, fmt) +
      table("Totals by " + st.by, [
        { label: st.by, get: (s) => s.name },
        { label: st.metric, n: 1, get: (s) => fmt(s.sum) },
      ], series);
  };
  $("#usage-form").addEventListener("submit", (e) => {
    e.preventDefault();
    st.range = $("#u-range").value; st.by = $("#u-by").value; st.metric = $("#u-metric").value;
    draw().catch((err) => { $("#usage-out").textContent = err.message; });
  });
  await draw();
}

async function budgets(m) {
  const all = await budgetRows();
  const users = await api("/admin/users").catch(() => ({ data: [] }));
  for (const u of users.data || []) all.push({ kind: "user", ...u });
  const rows = all.filter((r) => r.budget_usd != null);
  const limits = all.filter((r) => r.rpm != null || r.tpm != null || r.max_concurrency != null);
  const burns = await Promise.all(rows.slice(0, 8).map(burnDown));
  m.innerHTML = "<h1>Budgets &amp; limits</h1>" +
    '<div class="card">' + budgetTable(rows) + "</div>" +
    (burns.length ? '<div class="card" id="burn"><h2>Burn-down in the current period</h2><div class="cols">' + burns.join("") + "</div></div>" : "") +
    '<div class="card">' + table("Rate limits", [
      { label: "Kind", get: (r) => r.kind }, { label: "Name", get: (r) => r.name },
      { label: "Requests / min", n: 1, get: (r) => num(r.rpm) }, { label: "Tokens / min", n: 1, get: (r) => num(r.tpm) },
      { label: "Concurrency", n: 1, get: (r) => num(r.max_concurrency) },
      { label: "Models", get: (r) => (r.models || []).join(", ") || "all" },
    ], limits) + "</div>";
}

// Where the budget's current period started (UTC months; the offset of `resets_at` is kept).
function periodStart(r) {
  const D = 864e5, now = Date.now(), p = r.budget_period || "monthly";
  if (p === "total") return Date.parse(r.created_at) || now - 30 * D;
  if (p.startsWith("rolling_")) return now - ({ rolling_daily: 1, rolling_weekly: 7, rolling_monthly: 30 })[p] * D;
  const end = r.resets_at ? Date.parse(r.resets_at) : now;
  if (p === "daily") return end - D;
  if (p === "weekly") return end - 7 * D;
  const e = new Date(end - 1);
  return end - (Date.UTC(e.getUTCFullYear(), e.getUTCMonth() + 1, 1) - Date.UTC(e.getUTCFullYear(), e.getUTCMonth(), 1));
}

// Cumulative recorded spend since the period started against the budget, as an SVG line.
async function burnDown(r) {
  const start = periodStart(r), now = Date.now();
  const end = Math.max(r.resets_at ? Date.parse(r.resets_at) : now, now);
  const bucket = end - start <= 7 * 864e5 ? "hour" : "day";
  const who = r.kind === "key" ? { key: r.id } : r.kind === "user" ? { user: r.name } : { team: r.name };
  const u = await api("/admin/usage" + qs({ since: new Date(start).toISOString().slice(0, 19) + "Z", group_by: bucket, ...who })).catch(() => ({ rows: [] }));
  const budget = Math.round(Number(r.budget_usd) * 1e6);
  let sum = 0;
  const pts = [[start, 0]].concat((u.rows || []).map((x) => [Date.parse(x.bucket), (sum += x.cost_micro_usd)]));
  pts.push([now, sum]);
  const w = 420, H = 170, pl = 70, pb = 24, top = Math.max(budget, sum, 1);
  const X = (t) => pl + ((w - pl - 10) * (Math.min(Math.max(t, start), end) - start)) / Math.max(end - start, 1);
  const Y = (v) => 8 + (H - pb - 8) * (1 - v / top);
  const title = "Burn-down of " + r.kind + " " + r.name;
  let s = '<figure class="chart"><figcaption>' + h(r.kind + " " + r.name + ": " + usd(sum) + " of " + usd(budget) + (r.resets_at ? ", resets " + r.resets_at : "")) +
    '</figcaption><svg role="img" aria-label="' + h(title) + '" viewBox="0 0 ' + w + " " + H + '">';
  s += '<line x1="' + pl + '" x2="' + (w - 10) + '" y1="' + Y(budget) + '" y2="' + Y(budget) + '" stroke="#b3261e" stroke-dasharray="5 4"/>';
  s += '<text x="' + (pl - 6) + '" y="' + (Y(budget) + 4) + '" font-size="11" text-anchor="end">' + h(usd(budget)) + "</text>";
  s += '<text x="' + (pl - 6) + '" y="' + (Y(0) + 4) + '" font-size="11" text-anchor="end">$0</text>';
  s += '<line x1="' + X(now) + '" x2="' + X(now) + '" y1="8" y2="' + (H - pb) + '" stroke="#9aa5b1"/>';
  s += '<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="' + pts.map(([t, v]) => X(t).toFixed(1) + "," + Y(v).toFixed(1)).join(" ") + '"/>';
  s += '<text x="' + pl + '" y="' + (H - 6) + '" font-size="11">' + h(new Date(start).toISOString().slice(0, 16).replace("T", " ")) + "</text>";
  s += '<text x="' + (w - 10) + '" y="' + (H - 6) + '" font-size="11" text-anchor="end">' + h(new Date(end).toISOString().slice(0, 16).replace("T", " ")) + "</text>";
  return s + "</svg></figure>";
}

function limitsFields(prefix, v) {
  v = v || {};
  const f = (id, label, val, type) => '<div><label for="' + prefix + id + '">' + label + '</label><input id="' + prefix + id + '" type="' + (type || "text") + '" value="' + h(val == null ? "" : val) + '"></div>';
  return f("models", "Models (comma-separated, * wildcards)", (v.models || []).join(", ")) +
    f("rpm", "Requests / min", v.rpm, "number") + f("tpm", "Tokens / min", v.tpm, "number") +
    f("conc", "Max concurrency", v.max_concurrency, "number") + f("budget", "Budget (USD)", v.budget_usd) +
    '<div><label for="' + prefix + 'period">Budget period</label><select id="' + prefix + 'period">' +
    ["", "daily", "weekly", "monthly", "total", "rolling_daily", "rolling_weekly", "rolling_monthly"].map((p) => '<option value="' + p + '"' + (p === (v.budget_period || "") ? " selected" : "") + ">" + (p || "(default)") + "</option>").join("") +
    "</select></div>";
}

function readLimits(prefix, body) {
  const val = (id) => $("#" + prefix + id).value.trim();
  if (val("models")) body.models = val("models").split(",").map((s) => s.trim()).filter(Boolean);
  for (const [id, k] of [["rpm", "rpm"], ["tpm", "tpm"], ["conc", "max_concurrency"]]) if (val(id)) body[k] = Number(val(id));
  if (val("budget")) body.budget_usd = val("budget");
  if (val("period")) body.budget_period = val("period");
  return body;
}

async function keysPage(m, _arg, secret) {
  const [keys, teams] = await Promise.all([api("/admin/keys"), api("/admin/teams")]);
  const w = canWrite();
  let s = "<h1>Keys &amp; teams</h1>";
  if (secret) {
    s += '<div class="secret" role="status" id="secret-box"><strong>' + h(secret.title) + "</strong> This secret is shown once; store it now." +
      '<code id="new-secret">' + h(secret.key) + '</code><button type="button" id="secret-done" class="secondary">I have stored it</button></div>';
  }
  if (w) {
    s += '<form class="card" id="key-form"><h2>Create a key</h2><div class="form-grid">' +
      '<div><label for="k-name">Name</label><input id="k-name" required></div>' +
      '<div><label for="k-team">Team</label><select id="k-team">' + (me.team ? "" : '<option value="">(none)</option>') +
      (teams.data || []).map((t) => '<option value="' + h(t.name) + '"' + (t.name === me.team ? " selected" : "") + ">" + h(t.name) + "</option>").join("") + "</select></div>" +
      '<div><label for="k-role">Role</label><select id="k-role"><option value="">inference only</option><option value="viewer">viewer</option><option value="team_admin">team_admin</option>' +
      (isAdmin() ? '<option value="admin">admin</option>' : "") + "</select></div>" +
      limitsFields("k-") + '</div><button type="submit" id="create-key">Create key</button><p class="error" id="key-error" role="alert"></p></form>';
  }
  s += '<div class="card">' + table("Keys", [
    { label: "Name", get: (k) => k.name }, { label: "Prefix", get: (k) => k.prefix },
    { label: "Team", get: (k) => k.team }, { label: "Role", get: (k) => k.role || "inference" },
    { label: "Status", html: (k) => '<span class="badge ' + (k.status === "active" ? "ok" : "bad") + '">' + h(k.status) + "</span>" },
    { label: "Models", get: (k) => (k.models || []).join(", ") || "all" },
    { label: "Budget", n: 1, get: (k) => k.budget_usd == null ? "—" : usdText(k.spend_usd) + " / " + usdText(k.budget_usd) },
    { label: "Actions", html: (k) => !w || k.status !== "active" ? "" :
      '<div class="row-actions"><button type="button" data-act="edit" data-id="' + h(k.id) + '" aria-label="Edit ' + h(k.name || k.prefix) + '">Edit</button>' +
      '<button type="button" data-act="rotate" data-id="' + h(k.id) + '" aria-label="Rotate ' + h(k.name || k.prefix) + '">Rotate</button>' +
      '<button type="button" class="danger" data-act="revoke" data-id="' + h(k.id) + '" aria-label="Revoke ' + h(k.name || k.prefix) + '">Revoke</button></div>' },
  ], keys.data || [], { id: "keys-table", rowAttr: (k) => 'data-key-name="' + h(k.name || "") + '"' }) + '</div><div id="edit-box"></div>';
  if (isAdmin()) {
    s += '<form class="card" id="team-form"><h2>Create a team</h2><div class="form-grid"><div><label for="t-name">Team name</label><input id="t-name" required></div>' +
      '<div><label for="t-parent">Parent team</label><input id="t-parent"></div>' + limitsFields("t-") +
      '</div><button type="submit" id="create-team">Create team</button><p class="error" id="team-error" role="alert"></p></form>';
  }
  s += '<div class="card">' + table("Teams", [
    { label: "Name", get: (t) => t.name }, { label: "Parent", get: (t) => t.parent },
    { label: "Models", get: (t) => (t.models || []).join(", ") || "all" },
    { label: "RPM", n: 1, get: (t) => num(t.rpm) }, { label: "TPM", n: 1, get: (t) => num(t.tpm) },
    { label: "Budget", n: 1, get: (t) => t.budget_usd == null ? "—" : usdText(t.spend_usd) + " / " + usdText(t.budget_usd) + " " + (t.budget_period || "") },
    { label: "Actions", html: (t) => isAdmin() ? '<button type="button" data-act="edit-team" data-id="' + h(t.name) + '" aria-label="Edit team ' + h(t.name) + '">Edit</button>' : "" },
  ], teams.data || [], { id: "teams-table" }) + "</div>";
  m.innerHTML = s;
  const reload = (sec) => keysPage(m, null, sec).catch((e) => { m.textContent = e.message; });
  if (secret) {
    $("#new-secret").focus && $("#secret-done").focus();
    $("#secret-done").addEventListener("click", () => reload());
  }
  const kf = $("#key-form");
  if (kf) kf.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = readLimits("k-", { name: $("#k-name").value.trim() });
    if ($("#k-team").value) body.team = $("#k-team").value;
    if ($("#k-role").value) body.role = $("#k-role").value;
    try {
      const r = await api("/admin/keys", { method: "POST", body });
      await reload({ title: "Key " + (r.name || r.prefix) + " created.", key: r.key });
    } catch (err) { $("#key-error").textContent = err.message; }
  });
  const tf = $("#team-form");
  if (tf) tf.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = readLimits("t-", { name: $("#t-name").value.trim() });
    if ($("#t-parent").value.trim()) body.parent = $("#t-parent").value.trim();
    try { await api("/admin/teams", { method: "POST", body }); await reload(); } catch (err) { $("#team-error").textContent = err.message; }
  });
  m.querySelectorAll("button[data-act]").forEach((b) => b.addEventListener("click", async () => {
    const id = b.dataset.id, act = b.dataset.act;
    try {
      if (act === "revoke") {
        if (!confirm("Revoke this key? Requests with it fail at once.")) return;
        await api("/admin/keys/" + encodeURIComponent(id) + "/revoke", { method: "POST" });
        await reload();
      } else if (act === "rotate") {
        const r = await api("/admin/keys/" + encodeURIComponent(id) + "/rotate", { method: "POST", body: { grace_period: "0s" } });
        await reload({ title: "Key " + (r.name || r.prefix) + " rotated; the old secret no longer works.", key: r.key });
      } else {
        const team = act === "edit-team";
        const cur = (team ? teams.data : keys.data).find((x) => (team ? x.name : x.id) === id);
        $("#edit-box").innerHTML = '<form class="card" id="edit-form"><h2>Edit ' + (team ? "team " : "key ") + h(team ? id : cur.name || cur.prefix) + '</h2><div class="form-grid">' +
          limitsFields("e-", cur) + '</div><button type="submit">Save</button> <button type="button" class="secondary" id="edit-cancel">Cancel</button><p class="error" id="edit-error" role="alert"></p></form>';
        $("#e-models").focus();
        $("#edit-cancel").addEventListener("click", () => { $("#edit-box").innerHTML = ""; });
        $("#edit-form").addEventListener("submit", async (e) => {
          e.preventDefault();
          try {
            await api((team ? "/admin/teams/" : "/admin/keys/") + encodeURIComponent(id), { method: "PATCH", body: readLimits("e-", {}) });
            await reload();
          } catch (err) { $("#edit-error").textContent = err.message; }
        });
      }
    } catch (err) { alert(err.message); }
  }));
}

async function requestsPage(m, id) {
  const st = requestsPage.state || (requestsPage.state = { since: "24h", model: "", team: "", status: "", key: "" });
  const f = (k, label) => '<div><label for="r-' + k + '">' + label + '</label><input id="r-' + k + '" value="' + h(st[k]) + '"></div>';
  m.innerHTML = "<h1>Requests</h1>" +
    '<form class="filters" id="req-form">' + rangeSelect("r-since", st.since) + f("model", "Model") + (me.team ? "" : f("team", "Team")) + f("key", "Key id") +
    '<div><label for="r-status">Status</label><select id="r-status">' + [["", "any"], ["ok", "ok"], ["error", "error"]].map(([v, l]) => '<option value="' + v + '"' + (v === st.status ? " selected" : "") + ">" + l + "</option>").join("") +
    '</select></div><div><button type="submit">Filter</button></div></form><div id="req-detail"></div><div id="req-list" class="card"></div>';
  const list = async () => {
    const r = await api("/admin/requests" + qs({ since: st.since, model: st.model, team: st.team, key: st.key, status: st.status, limit: 100 }));
    $("#req-list").innerHTML = table("Newest first (up to 100)", [
      { label: "Time", get: (x) => x.time },
      { label: "Request", html: (x) => '<a href="#requests/' + encodeURIComponent(x.request_id) + '">' + h(x.request_id) + "</a>" },
      { label: "Team", get: (x) => x.team }, { label: "Key", get: (x) => x.key_prefix || x.principal },
      { label: "Model", get: (x) => x.requested_model }, { label: "Deployment", get: (x) => (x.provider || "") + (x.deployment_model ? "/" + x.deployment_model : "") },
      { label: "Status", n: 1, get: (x) => x.status },
      { label: "Tokens in/out", n: 1, get: (x) => num(x.input_tokens) + " / " + num(x.output_tokens) },
      { label: "Cost", n: 1, get: (x) => usd(x.cost_micro_usd) },
      { label: "Latency", n: 1, get: (x) => ms(x.latency_us / 1000) },
      { label: "Score", n: 1, get: (x) => x.feedback ? x.feedback.score : "" },
    ], r.data || [], { id: "requests-table" });
  };
  $("#req-form").addEventListener("submit", (e) => {
    e.preventDefault();
    st.since = $("#r-since").value; st.model = $("#r-model").value.trim(); st.key = $("#r-key").value.trim(); st.status = $("#r-status").value;
    if ($("#r-team")) st.team = $("#r-team").value.trim();
    list().catch((err) => { $("#req-list").textContent = err.message; });
  });
  await list();
  if (id) await requestDetail(id);
}

async function requestDetail(id) {
  let r;
  try { r = await api("/admin/requests" + qs({ request_id: id, include_content: "true", limit: 1 })); } catch (e) {
    if (e.status !== 403) throw e;
    r = await api("/admin/requests" + qs({ request_id: id, limit: 1 }));
  }
  const x = (r.data || [])[0];
  const box = $("#req-detail");
  if (!x) { box.innerHTML = '<div class="card error" role="alert">No request ' + h(id) + " in your scope.</div>"; return; }
  const kv = (k, v) => "<tr><th scope=\"row\">" + h(k) + "</th><td>" + h(v == null ? "—" : v) + "</td></tr>";
  const pretty = (t) => { try { return JSON.stringify(JSON.parse(t), null, 2); } catch (e) { return t; } };
  box.innerHTML = '<section class="card" id="request-detail" aria-label="Request details"><h2>Request ' + h(x.request_id) + "</h2><div class=\"cols\"><table>" +
    kv("Time", x.time) + kv("Surface", x.surface) + kv("Key", x.key_prefix || x.principal) + kv("Team", x.team) + kv("User", x.user) +
    kv("Model asked", x.requested_model) + kv("Answered by", (x.provider || "—") + " / " + (x.deployment_model || "—")) +
    kv("Status", x.status + (x.error_class ? " (" + x.error_class + ")" : "")) + kv("Route reason", x.route_reason) + kv("Fallback reason", x.fallback_reason) +
    kv("Attempts", x.attempts) + kv("Cache", x.cache) + "</table><table>" +
    kv("Input tokens", num(x.input_tokens)) + kv("Output tokens", num(x.output_tokens)) + kv("Cached input tokens", num(x.cached_input_tokens)) +
    kv("Reasoning tokens", num(x.reasoning_tokens)) + kv("Cost", usd(x.cost_micro_usd)) + kv("Saved by cache", usd(x.cost_saved_micro_usd)) +
    kv("Latency", ms(x.latency_us / 1000)) + kv("Time to first token", x.ttft_us == null ? null : ms(x.ttft_us / 1000)) + kv("Gateway overhead", x.overhead_us == null ? null : ms(x.overhead_us / 1000)) +
    kv("Feedback", x.feedback ? x.feedback.score + (x.feedback.label ? " · " + x.feedback.label : "") + (x.feedback.comment ? " · " + x.feedback.comment : "") : null) +
    "</table></div>" +
    "<h3>Policy hits</h3><pre>" + h(x.policy_hits ? JSON.stringify(x.policy_hits, null, 2) : "none") + "</pre>" +
    "<h3>Attempts that did not answer</h3><pre>" + h(x.attempt_log ? JSON.stringify(x.attempt_log, null, 2) : "none") + "</pre>" +
    (x.prompt != null ? "<h3>Prompt</h3><pre>" + h(pretty(x.prompt)) + "</pre><h3>Answer</h3><pre>" + h(pretty(x.response)) + "</pre>" : '<p class="muted">No prompt or answer stored for this request (compliance logging off, or not visible to your role).</p>') +
    (isAdmin() ? '<form id="fb-form" class="filters"><div><label for="fb-score">Score (0 to 1)</label><input id="fb-score" type="number" min="0" max="1" step="0.1" required></div>' +
      '<div><label for="fb-label">Label</label><input id="fb-label"></div><div><label for="fb-comment">Comment</label><input id="fb-comment"></div><div><button type="submit">Send feedback</button></div><p class="error" id="fb-error" role="alert"></p></form>' : "") +
    "</section>";
  const fb = $("#fb-form");
  if (fb) fb.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { request_id: x.request_id, score: Number($("#fb-score").value) };
    if ($("#fb-label").value.trim()) body.label = $("#fb-label").value.trim();
    if ($("#fb-comment").value.trim()) body.comment = $("#fb-comment").value.trim();
    try { await api("/v1/feedback", { method: "POST", body }); await requestDetail(id); } catch (err) { $("#fb-error").textContent = err.message; }
  });
  box.querySelector("h2").setAttribute("tabindex", "-1");
  box.querySelector("h2").focus();
}

async function providers(m) {
  const perf = await api("/admin/performance" + qs({ since: "24h" }));
  let routing = null, note = "";
  try { routing = await api("/admin/routing"); } catch (e) { note = e.status === 403 ? "Live breaker state needs an organisation-wide role; showing your team's recorded performance only." : e.message; }
  const perfOf = {};
  for (const p of perf.rows || []) perfOf[p.provider + "/" + p.deployment] = p;
  let s = "<h1>Providers</h1>";
  if (routing) {
    s += '<div class="card">' + table("Deployments now (breaker, in flight, latency) and over the last 24 hours", [
      { label: "Provider", get: (d) => d.provider }, { label: "Model", get: (d) => d.model },
      { label: "Breaker", html: (d) => '<span class="badge ' + (d.breaker === "closed" ? "ok" : "bad") + '">' + h(d.breaker) + "</span>" },
      { label: "In flight", n: 1, get: (d) => num(d.in_flight) },
      { label: "EWMA latency", n: 1, get: (d) => ms(d.ewma_latency_ms) },
      { label: "p50 / p95 (24 h)", n: 1, get: (d) => { const p = perfOf[d.provider + "/" + d.model]; return p ? ms(p.p50_latency_ms) + " / " + ms(p.p95_latency_ms) : "—"; } },
      { label: "Error rate (24 h)", n: 1, get: (d) => { const p = perfOf[d.provider + "/" + d.model]; return p ? pct(p.error_rate) : "—"; } },
      { label: "Fallback rate (24 h)", n: 1, get: (d) => { const p = perfOf[d.provider + "/" + d.model]; return p ? pct(p.fallback_rate) : "—"; } },
      { label: "Successes / failures", n: 1, get: (d) => num(d.successes) + " / " + num(d.failures) },
    ], routing.deployments || [], { id: "providers-table" }) + "</div>";
  } else {
    s += '<p class="card muted">' + h(note) + "</p>";
  }
  s += '<div class="card">' + table("Recorded performance, last 24 hours", [
    { label: "Provider", get: (p) => p.provider }, { label: "Deployment", get: (p) => p.deployment },
    { label: "Requests", n: 1, get: (p) => num(p.requests) }, { label: "Error rate", n: 1, get: (p) => pct(p.error_rate) },
    { label: "Fallback rate", n: 1, get: (p) => pct(p.fallback_rate) },
    { label: "p50 / p95", n: 1, get: (p) => ms(p.p50_latency_ms) + " / " + ms(p.p95_latency_ms) },
    { label: "TTFT p50", n: 1, get: (p) => ms(p.p50_ttft_ms) }, { label: "Tokens / s", n: 1, get: (p) => p.output_tokens_per_second == null ? "—" : p.output_tokens_per_second },
  ], perf.rows || []) + "</div>";
  m.innerHTML = s;
}

async function quality(m) {
  const st = quality.state || (quality.state = { range: "30d", by: "model" });
  m.innerHTML = "<h1>Quality</h1><p class=\"muted\">Scores sent to <code>POST /v1/feedback</code> (0 bad to 1 good) by the key that made a request, or an admin.</p>" +
    '<form class="filters" id="q-form">' + rangeSelect("q-range", st.range) +
    '<div><label for="q-by">Group by</label><select id="q-by">' + [["model", "model (route asked for)"], ["deployment", "deployment (model that answered)"], ["team", "team"], ["key", "key"]]
      .map(([v, l]) => '<option value="' + v + '"' + (v === st.by ? " selected" : "") + ">" + l + "</option>").join("") +
    '</select></div><div><button type="submit">Show</button></div></form><div id="q-out" class="card"></div>';
  const draw = async () => {
    const r = await api("/admin/usage" + qs({ since: st.range, group_by: st.by }));
    const rows = (r.rows || []).filter((x) => x.feedback_count > 0).sort((a, b) => b.feedback_count - a.feedback_count);
    $("#q-out").innerHTML = barChart("Mean score by " + st.by, rows.map((x) => ({ label: x[st.by] == null ? "(none)" : x[st.by], value: x.mean_score || 1e-9, text: x.mean_score.toFixed(2) + " (" + x.feedback_count + ")" }))) +
      table("Feedback by " + st.by, [
        { label: st.by, get: (x) => x[st.by] == null ? "(none)" : x[st.by] },
        { label: "Requests", n: 1, get: (x) => num(x.requests) },
        { label: "With feedback", n: 1, get: (x) => num(x.feedback_count) },
        { label: "Mean score", n: 1, get: (x) => x.mean_score.toFixed(3) },
      ], rows, { id: "quality-table" });
  };
  $("#q-form").addEventListener("submit", (e) => {
    e.preventDefault(); st.range = $("#q-range").value; st.by = $("#q-by").value;
    draw().catch((err) => { $("#q-out").textContent = err.message; });
  });
  await draw();
}

async function insightsPage(m) {
  const st = insightsPage.state || (insightsPage.state = { range: "30d" });
  m.innerHTML = "<h1>Insights</h1>" + '<form class="filters" id="i-form">' + rangeSelect("i-range", st.range) + '<div><button type="submit">Show</button></div></form><div id="i-out"></div>';
  const draw = async () => {
    const r = await api("/admin/insights" + qs({ since: st.range }));
    const kinds = { cheap_tier: "Cheaper model for short prompts", cache: "Repeated identical requests", unreliable_deployment: "Unreliable deployment" };
    $("#i-out").innerHTML = '<div class="grid">' + stat("Savings found", usd(r.total_savings_micro_usd), "total_savings", r.total_savings_micro_usd) +
      stat("Records read", num(r.records), "records", r.records) + stat("Cheapest priced model", r.cheapest_model || "—", "cheapest", r.cheapest_model) + "</div>" +
      (r.opportunities.length ? r.opportunities.map((o) => '<article class="card op" data-kind="' + h(o.kind) + '"><h2>' + h(kinds[o.kind] || o.kind) + ": " + h(o.model || (o.provider + "/" + o.deployment)) +
        '</h2><div class="save" data-value="' + h(o.savings_micro_usd) + '">' + usd(o.savings_micro_usd) + '</div><p>' + h(o.summary) + "</p><h3>Config change</h3><pre>" + h(o.config_change) + "</pre></article>").join("")
        : '<p class="card muted">No opportunities in this range.</p>');
  };
  $("#i-form").addEventListener("submit", (e) => { e.preventDefault(); st.range = $("#i-range").value; draw().catch((err) => { $("#i-out").textContent = err.message; }); });
  await draw();
}

// ---- start ----

(function start() {
  const saved = sessionStorage.getItem(KEY + ".me");
  if (sessionStorage.getItem(KEY) && saved) {
    try { me = JSON.parse(saved); } catch (e) { me = null; }
  }
  if (me) showApp(); else showLogin("");
})();
