// Cascade's dashboard: reads the operations API with the token the user gives, draws what it
// reads, and refreshes. No framework and nothing fetched from elsewhere: the page must work on
// a machine with no network but its own. Every value from the API reaches the page through
// textContent or an SVG attribute, never as HTML.
"use strict";

const TOKEN_KEY = "cascade.token";
// Health and alerts read views that scan pipeline_events (docs/architecture.md, known
// limits): every 10 s is often enough for a person and cheap enough for the database.
const REFRESH_MS = 10_000;
const DAY_REFRESH_MS = 60_000; // the 24-hour chart has hourly buckets
const DEAD_LETTERS_SHOWN = 50;
const SVG_NS = "http://www.w3.org/2000/svg";

// The catalogue's order (schema/0001) and one colour per stage.
const STAGES = [
  ["company_created", "#4c6ef5"], ["company_validated", "#15aabf"], ["company_promoted", "#40c057"],
  ["slots_created", "#fab005"], ["contact_enriched", "#fd7e14"], ["email_verified", "#e64980"],
  ["campaign_created", "#7950f2"], ["segment_ready", "#228be6"], ["message_personalized", "#12b886"],
  ["message_queued", "#82c91e"], ["message_sent", "#f76707"], ["email_opened", "#ae3ec9"],
  ["email_clicked", "#1098ad"], ["reply_received", "#f03e3e"], ["lead_qualified", "#5c940d"],
  ["follow_up_due", "#868e96"],
];
const STAGE_ORDER = new Map(STAGES.map(([name], i) => [name, i]));
const STAGE_COLOUR = new Map(STAGES);
const PHASES = { enrichment: "Enrichment", messaging: "Messaging", engagement: "Engagement" };

const state = { me: null, window: "1h", timer: null, refreshing: false, again: false, dayReadAt: 0, day: null, lookups: 0, throttled: false };
// The throughput card's charts, legend and note as the page first holds them: a failed read
// replaces them with its error, and the next good read puts them back before drawing.
let throughputBody = [];

// -- small helpers -------------------------------------------------------------------------

function $(selector) { return document.querySelector(selector); }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const integer = new Intl.NumberFormat("en-US");
function count(n) { return n === null || n === undefined ? "–" : integer.format(n); }

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function clock(iso, withSeconds = true) {
  const options = { hour: "2-digit", minute: "2-digit", hour12: false };
  if (withSeconds) options.second = "2-digit";
  return new Date(iso).toLocaleTimeString("en-GB", options);
}

function stamp(iso) {
  if (!iso) return "–";
  const when = new Date(iso);
  const day = when.toLocaleDateString("en-GB", { day: "2-digit", month: "short" });
  return `${day} ${clock(iso)}`;
}

// [date, time to the millisecond]: a timeline's entries are often milliseconds apart.
function preciseStamp(iso) {
  const when = new Date(iso);
  const ms = String(when.getMilliseconds()).padStart(3, "0");
  return [when.toLocaleDateString("en-GB", { day: "2-digit", month: "short" }), `${clock(iso)}.${ms}`];
}

function label(eventType) { return eventType.replaceAll("_", " "); }

function colour(eventType) {
  if (STAGE_COLOUR.has(eventType)) return STAGE_COLOUR.get(eventType);
  let hash = 0;
  for (const ch of eventType) hash = (hash * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${hash} 55% 50%)`;
}

function byStage(a, b) {
  const order = (name) => STAGE_ORDER.get(name) ?? STAGES.length;
  return order(a) - order(b) || a.localeCompare(b);
}

// -- the API -------------------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.details = error.details || {};
  }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    const failure = new ApiFailure(response.status, body);
    if (response.status === 401) signOut(`The token was refused: ${failure.message}. Enter a valid token.`);
    if (response.status === 429) {
      state.throttled = true;
      showBanner(`Too many requests: ${failure.message}`);
    }
    throw failure;
  }
  if (state.throttled) { // answered again: the rate limit has passed, and so has its banner
    state.throttled = false;
    showBanner("");
  }
  return body;
}

function showBanner(message, kind = "error") {
  const banner = $("#banner");
  banner.textContent = message;
  banner.className = kind === "info" ? "banner info" : "banner";
  banner.hidden = !message;
}

// -- signing in and out --------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const token = $("#token").value.trim();
  const error = $("#signin-error");
  error.hidden = true;
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await start();
  } catch (failure) {
    sessionStorage.removeItem(TOKEN_KEY);
    error.textContent = failure.status === 401
      ? "That token was not accepted: it is unknown, revoked or mistyped."
      : `Could not sign in: ${failure.message}`;
    error.hidden = false;
  }
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.timer);
  state.me = null;
  $("#dashboard").hidden = true;
  $("#session").hidden = true;
  $("#signin").hidden = false;
  const error = $("#signin-error");
  error.textContent = message;
  error.hidden = !message;
  $("#token").value = "";
  $("#token").focus();
}

async function start() {
  state.me = await api("/api/me");
  const who = $("#who");
  who.replaceChildren(el("b", {}, state.me.name), el("span", { class: "role" }, state.me.role));
  $("#signin").hidden = true;
  $("#session").hidden = false;
  $("#dashboard").hidden = false;
  showBanner("");
  await refresh();
}

// -- refreshing ----------------------------------------------------------------------------

async function refresh() {
  clearTimeout(state.timer);
  if (!state.me) return;
  if (state.refreshing) {
    state.again = true; // e.g. a replay while a refresh is in flight: read once more after it
    return;
  }
  if (document.hidden) { // nobody is looking: ask again when the tab is shown
    state.timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  state.refreshing = true;
  state.again = false;
  try {
    await Promise.all([
      section("#health", () => api("/api/monitoring/health"), renderHealth),
      section("#funnel", () => api("/api/dashboard/funnel"), renderFunnel),
      section("#alerts", () => api("/api/monitoring/alerts"), renderAlerts),
      section("#throughput", readThroughput, renderThroughput),
      section("#dead-letters", () => api(`/api/monitoring/dead-letters?limit=${DEAD_LETTERS_SHOWN}`), renderDeadLetters),
    ]);
    if (state.me) $("#updated").textContent = `Updated ${clock(new Date().toISOString())}`;
  } finally {
    state.refreshing = false;
    if (state.me) state.timer = setTimeout(refresh, state.again ? 0 : REFRESH_MS);
  }
}

// One section: read, then draw; a failure shows in the section, the others carry on.
async function section(selector, read, render) {
  const node = $(selector);
  try {
    render(await read());
    node.dataset.state = "ready";
  } catch (failure) {
    if (failure.status === 401) return;
    node.dataset.state = "failed";
    const body = node.querySelector(".body") || node;
    body.replaceChildren(el("p", { class: "error" }, `Could not load this section: ${failure.message}`));
  }
}

async function readThroughput() {
  if (state.window === "1h") return api("/api/dashboard/throughput?window=1h");
  const now = Date.now();
  if (!state.day || now - state.dayReadAt >= DAY_REFRESH_MS) {
    state.day = await api("/api/dashboard/throughput?window=24h");
    state.dayReadAt = now;
  }
  return state.day;
}

// -- health --------------------------------------------------------------------------------

function renderHealth(h) {
  const tile = (name, value, tone) =>
    el("div", { class: `tile ${tone || ""}`, dataset: { metric: name } },
      el("div", { class: "label", title: name }, name),
      el("div", { class: "value" }, value));
  const rate = h.success_rate_24h;
  $("#health").replaceChildren(
    tile("Processed · 5m", count(h.processed_last_5m)),
    tile("Success · 24h", rate === null ? "–" : `${rate}%`, rate !== null && rate < 95 ? "warn" : ""),
    tile("Latency · 24h", seconds(h.avg_latency_seconds_24h)),
    tile("Waiting", count(h.pending)),
    tile("Retrying", count(h.retrying), h.retrying > 0 ? "warn" : ""),
    tile("In progress", count(h.processing)),
    tile("Oldest waiting", seconds(h.oldest_pending_age_seconds)),
    tile("Dead letters", count(h.dead_letters), h.dead_letters > 0 ? "bad" : ""),
    tile("Open errors", count(h.unresolved_errors), h.unresolved_errors > 0 ? "warn" : ""),
  );
}

// -- funnel --------------------------------------------------------------------------------

function renderFunnel(data) {
  const phases = new Map();
  for (const stage of data.stages) {
    if (!phases.has(stage.phase)) phases.set(stage.phase, []);
    phases.get(stage.phase).push(stage);
  }
  const blocks = [...phases].map(([phase, stages]) => {
    const built = stages.some((s) => s.built);
    return el("div", { class: "phase", dataset: { phase } },
      el("h3", {}, PHASES[phase] || phase, built ? null : el("span", { class: "badge unbuilt" }, stages[0].note || "not built yet")),
      stages.map(funnelStage));
  });
  $("#funnel .body").replaceChildren(...blocks);
}

function funnelStage(stage) {
  const share = stage.out_of ? stage.count / stage.out_of : stage.out_of === null ? 1 : 0;
  const fill = el("div", { class: "fill" });
  fill.style.width = `${Math.min(100, share * 100).toFixed(1)}%`;
  const rate = stage.out_of === null ? null
    : el("span", { class: "rate" }, stage.out_of ? `${Math.round(share * 100)}% of ${count(stage.out_of)}` : "of 0");
  return el("div", { class: `stage${stage.built ? "" : " unbuilt"}`, dataset: { stage: stage.stage } },
    el("div", { class: "label" }, stage.label, el("small", {}, stage.unit)),
    el("div", { class: "track", title: stage.note || "" }, fill),
    el("div", { class: "figures" }, el("span", { class: "count num" }, count(stage.count)), rate),
    stage.note && stage.built ? el("p", { class: "note" }, stage.note) : null);
}

// -- alerts --------------------------------------------------------------------------------

function renderAlerts(alerts) {
  $("#alerts-count").textContent = alerts.length ? `${alerts.length} firing` : "";
  if (!alerts.length) {
    $("#alerts .body").replaceChildren(el("div", { class: "all-clear" }, "✓ No alerts are firing."));
    return;
  }
  $("#alerts .body").replaceChildren(...alerts.map((a) =>
    el("article", { class: `alert ${a.severity}`, dataset: { alert: a.alert } },
      el("div", { class: "title" },
        el("span", { class: `severity ${a.severity}` }, a.severity),
        label(a.alert), a.scope ? el("span", { class: "aside" }, a.scope) : null),
      el("p", { class: "condition" }, a.condition),
      el("div", { class: "action" }, `What to do: ${a.action}`),
      a.since ? el("div", { class: "since" }, `Since ${stamp(a.since)}`) : null)));
}

// -- throughput and latency ----------------------------------------------------------------

function renderThroughput(data) {
  // A read for a window no longer chosen (the slow day's, answered after a switch back to the
  // hour) must not replace the chart of the one that is.
  if (data.window !== state.window) return;
  if (!$("#throughput-chart")) {
    $("#throughput .body").replaceChildren(...throughputBody.map((node) => node.cloneNode(true)));
  }
  const perMinute = data.bucket_seconds === 60;
  $("#throughput-title").textContent = perMinute ? "Events processed per minute" : "Events processed per hour";
  const stages = [...data.stages].sort((a, b) => byStage(a.event_type, b.event_type));
  $("#throughput-chart").replaceChildren(stackedBars(data, stages, perMinute));
  $("#throughput-legend").replaceChildren(...stages.map((s) =>
    el("li", {}, legendSwatch(colour(s.event_type)), `${label(s.event_type)} (${count(s.processed)})`)));
  const latency = $("#latency");
  if (!stages.length) {
    latency.replaceChildren(el("p", { class: "empty" }, "Nothing was processed in this window."));
  } else {
    latency.replaceChildren(...stages.map((s) => miniLatency(s, data.totals.length)));
  }
  const note = $("#throughput-note");
  note.hidden = data.complete;
  note.textContent = data.complete ? ""
    : `Only the newest ${count(data.events_read_at_most)} events were read: the figures start at ${stamp(data.read_back_to)}.`;
}

function legendSwatch(fill) {
  const swatch = el("span", { class: "swatch" });
  swatch.style.background = fill;
  return swatch;
}

function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function stackedBars(data, stages, perMinute) {
  const width = 640, height = 230, left = 46, right = 10, top = 12, bottom = 26;
  const plotW = width - left - right, plotH = height - top - bottom;
  const buckets = data.totals.length;
  const peak = niceCeiling(Math.max(0, ...data.totals.map((t) => t.processed)));
  const y = (v) => top + plotH - (v / peak) * plotH;
  const slot = plotW / buckets, barW = Math.max(1, slot * 0.78);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": perMinute ? "Events processed per minute" : "Events processed per hour" });
  for (const tick of [0, peak / 2, peak]) {
    chart.append(svg("line", { class: "axis", x1: left, x2: width - right, y1: y(tick), y2: y(tick) }),
      svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, count(Math.round(tick))));
  }
  const every = perMinute ? 10 : 4;
  data.totals.forEach((total, i) => {
    if (i % every === 0) {
      chart.append(svg("text", { x: left + i * slot, y: height - 8, "text-anchor": "start" }, clock(total.at, false)));
    }
  });
  const heights = new Array(buckets).fill(0);
  for (const stage of stages) {
    for (const point of stage.points || []) {
      const base = heights[point.bucket];
      heights[point.bucket] += point.processed;
      const at = data.totals[point.bucket].at;
      chart.append(svg("rect", {
        x: (left + point.bucket * slot + (slot - barW) / 2).toFixed(2),
        y: y(base + point.processed).toFixed(2),
        width: barW.toFixed(2),
        height: Math.max(0.5, (point.processed / peak) * plotH).toFixed(2),
        fill: colour(stage.event_type),
      }, svg("title", {}, `${clock(at, false)} · ${label(stage.event_type)}: ${count(point.processed)}`)));
    }
  }
  if (!stages.length) {
    chart.append(svg("text", { x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle" },
      "Nothing was processed in this window"));
  }
  return chart;
}

function miniLatency(stage, buckets) {
  const width = 220, height = 54, pad = 3;
  const points = stage.points || [];
  const peak = Math.max(0.001, ...points.map((p) => p.p95_seconds));
  const x = (bucket) => pad + (buckets <= 1 ? 0 : (bucket / (buckets - 1)) * (width - 2 * pad));
  const y = (v) => height - pad - (v / peak) * (height - 2 * pad);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img",
    "aria-label": `${label(stage.event_type)} latency` });
  chart.append(svg("line", { class: "axis", x1: 0, x2: width, y1: height - pad, y2: height - pad }));
  const hue = colour(stage.event_type);
  for (const p of points) {
    chart.append(svg("line", { x1: x(p.bucket), x2: x(p.bucket), y1: height - pad, y2: y(p.p50_seconds),
      stroke: hue, "stroke-opacity": 0.35, "stroke-width": 4 }));
  }
  if (points.length === 1) {
    chart.append(svg("circle", { cx: x(points[0].bucket), cy: y(points[0].p95_seconds), r: 2.5, fill: hue }));
  } else if (points.length > 1) {
    const path = points.map((p, i) => `${i ? "L" : "M"}${x(p.bucket).toFixed(1)},${y(p.p95_seconds).toFixed(1)}`);
    chart.append(svg("path", { d: path.join(" "), fill: "none", stroke: hue, "stroke-width": 2,
      "vector-effect": "non-scaling-stroke" }));
  }
  return el("div", { class: "mini", dataset: { stage: stage.event_type } },
    el("div", { class: "head" },
      el("span", { class: "stage-name" }, label(stage.event_type)),
      el("span", { class: "figures" }, `p50 ${seconds(stage.p50_seconds)} · p95 ${seconds(stage.p95_seconds)}`)),
    chart);
}

// -- dead letters --------------------------------------------------------------------------

function renderDeadLetters(data) {
  const shown = data.total > data.limit ? `, newest ${data.limit} shown` : "";
  $("#dead-count").textContent = data.total ? `${count(data.total)} in all${shown}` : "";
  const flash = $("#dead-letters .flash");
  const keep = flash ? [flash] : [];
  if (!data.dead_letters.length) {
    $("#dead-letters .body").replaceChildren(...keep, el("div", { class: "all-clear" }, "✓ No dead letters."));
    return;
  }
  const canReplay = Boolean(state.me && state.me.can_replay);
  const items = data.dead_letters.map((d) => el("li", { class: "dead", dataset: { eventId: d.event_id } },
    el("div", { class: "line" },
      el("span", { class: "what" }, el("b", {}, `#${d.event_id}`), ` ${label(d.event_type)}`),
      canReplay ? replayButton(d) : null),
    el("div", { class: "facts" }, [
      d.record_id === null ? null : `record ${d.record_id}`,
      `${d.attempts} attempts`,
      d.replay_count ? `replayed ${d.replay_count}×` : null,
      `died ${stamp(d.died_at)}`,
    ].filter(Boolean).join(" · ")),
    el("div", { class: "error-text" }, d.last_error || "no error recorded")));
  const hint = canReplay ? [] : [el("p", { class: "note" }, "Replaying needs the ops role; this token is a viewer's.")];
  $("#dead-letters .body").replaceChildren(...keep, el("ul", { class: "dead-letters" }, items), ...hint);
}

function replayButton(deadLetter) {
  const button = el("button", { type: "button", class: "replay", title: "Put it back in the queue with fresh attempts" }, "Replay");
  button.addEventListener("click", () => replay(deadLetter, button));
  return button;
}

async function replay(deadLetter, button) {
  button.disabled = true;
  button.textContent = "Replaying…";
  let message, tone;
  try {
    const answer = await api(`/api/dead-letters/${deadLetter.event_id}/replay`, { method: "POST" });
    message = `Event #${answer.event.id} (${label(answer.event.event_type)}) is back in the queue: ${answer.event.status}.`;
    tone = "ok";
  } catch (failure) {
    if (failure.status === 401) return;
    message = failure.status === 403
      ? "Replaying needs the ops role: this token cannot replay."
      : `Event #${deadLetter.event_id} was not replayed: ${failure.message}`;
    tone = "refused";
  }
  const flash = el("p", { class: `outcome flash ${tone}`, role: "status" }, message);
  const old = $("#dead-letters .flash");
  if (old) old.replaceWith(flash); else $("#dead-letters .body").prepend(flash);
  await refresh();
}

// -- timeline ------------------------------------------------------------------------------

const PLACEHOLDERS = { company: "company id, Barton ID or domain", contact: "contact id or email" };

async function showTimeline(event) {
  event.preventDefault();
  const kind = $("#timeline-kind").value;
  const key = $("#timeline-key").value.trim();
  const result = $("#timeline-result");
  if (!key) return;
  // Answers can come back out of order (a busy company is slower): only the latest lookup's
  // is shown.
  const lookup = ++state.lookups;
  result.dataset.state = "loading";
  result.replaceChildren(el("p", { class: "empty" }, "Looking…"));
  try {
    const data = await api(`/api/timeline/${kind}/${encodeURIComponent(key)}`);
    if (lookup !== state.lookups) return;
    result.replaceChildren(...data.subjects.map(subjectLine), timelineList(data));
    result.dataset.state = "ready";
  } catch (failure) {
    if (failure.status === 401 || lookup !== state.lookups) return;
    result.dataset.state = "failed";
    const text = failure.status === 404 ? `Nothing found: ${failure.message}.` : failure.message;
    result.replaceChildren(el("p", { class: "error" }, text));
  }
}

function subjectLine(subject) {
  if (subject.kind === "company") {
    return el("div", { class: "subject" },
      el("span", { class: "title" }, subject.company_name),
      el("span", { class: "facts" }, [subject.domain, subject.barton_id || "no Barton ID yet", `company ${subject.company_id}`, subject.status].join(" · ")));
  }
  return el("div", { class: "subject" },
    el("span", { class: "title" }, subject.full_name),
    el("span", { class: "facts" }, [subject.email || "no email", subject.title || subject.role, subject.company_name, `contact ${subject.contact_id}`, subject.status].filter(Boolean).join(" · ")));
}

function timelineList(data) {
  const shown = data.truncated
    ? el("p", { class: "note" }, `The newest ${count(data.limit)} of ${count(data.total)} entries.`)
    : el("p", { class: "note" }, `${count(data.total)} entries, oldest first.`);
  let day = null;
  const items = data.entries.map((entry) => {
    const [title, detail, status] = describe(entry);
    const [date, time] = preciseStamp(entry.at);
    const when = el("time", { datetime: entry.at, title: `${date} ${time}` }, date === day ? time : `${date} ${time}`);
    day = date;
    return el("li", { class: `entry ${entry.source}`, dataset: { source: entry.source, kind: entry.kind } },
      when,
      el("span", { class: "source" }, entry.source),
      el("div", { class: "what" }, title, status ? el("span", { class: `status ${status}` }, status) : null,
        detail ? el("span", { class: "detail" }, detail) : null));
  });
  return el("div", {}, shown, el("ol", { class: "entries" }, items));
}

// [title, detail, status] for one entry, in words a person reads.
function describe({ source, kind, detail: d }) {
  if (source === "event") {
    const parts = [`attempt ${d.attempts}`];
    if (d.latency_seconds !== null) parts.push(`processed after ${seconds(d.latency_seconds)}`);
    if (d.run_after) parts.push(`due ${stamp(d.run_after)}`);
    if (d.replay_count) parts.push(`replayed ${d.replay_count}×`);
    if (d.last_error) parts.push(d.last_error);
    return [`${label(kind)} event #${d.event_id}`, parts.join(" · "), d.status];
  }
  if (source === "attempt") {
    const parts = [d.purpose, d.phase, d.provider_mode,
      d.confidence !== null ? `confidence ${d.confidence}` : null,
      d.latency_ms !== null ? `${d.latency_ms} ms` : null, d.cost ? `$${d.cost}` : null, d.detail];
    return [`${kind} called`, parts.filter(Boolean).join(" · "), d.status];
  }
  if (source === "error") {
    return [`${kind}: ${d.message}`, `event #${d.event_id} (${label(d.event_type)}), attempt ${d.attempt ?? "–"}${d.resolved ? ", resolved" : ""}`, null];
  }
  return describeState(kind, d);
}

function describeState(kind, d) {
  switch (kind) {
    case "intake.received":
      return [`Intake row ${d.intake_id} received`, [d.company_name, d.website, d.source && (d.source_line == null ? d.source : `${d.source} line ${d.source_line}`)].filter(Boolean).join(" · "), null];
    case "intake.validated": return [`Intake row ${d.intake_id} validated`, `became company ${d.company_id}`, null];
    case "intake.duplicate": return [`Intake row ${d.intake_id} is a duplicate`, `of company ${d.company_id}`, null];
    case "intake.rejected": return [`Intake row ${d.intake_id} rejected`, d.reason, null];
    case "company.validated": return [`Company ${d.company_name} created`, d.domain, null];
    case "company.promoted": return [`Barton ID ${d.barton_id} assigned`, null, null];
    case "slot.opened": return [`${d.role} slot opened`, null, null];
    case "slot.filled": return [`${d.role} slot filled`, `contact ${d.contact_id}`, null];
    case "slot.unfilled": return [`${d.role} slot left unfilled`, d.reason, null];
    case "contact.found":
      return [`Contact found: ${d.full_name}${d.title ? `, ${d.title}` : ""}`, [d.email, d.provider && `via ${d.provider} (${d.provider_mode})`, d.confidence !== null && `confidence ${d.confidence}`].filter(Boolean).join(" · "), null];
    case "contact.ready": return [`${d.full_name} is ready for messaging`, null, null];
    default:
      if (kind.startsWith("timeline.")) {
        const facts = Object.entries(d).filter(([key, value]) => key !== "contact_id" && value !== null && typeof value !== "object");
        return [`${label(kind.slice(9))}`, facts.map(([key, value]) => `${label(key)} ${value}`).join(" · "), null];
      }
      if (kind.startsWith("email.")) {
        return [`Email ${d.email} judged ${kind.slice(6)}`, [d.provider, d.result && `result ${d.result}`, d.score !== null && `score ${d.score}`, d.reason, d.source === "webhook" ? "by webhook" : null].filter(Boolean).join(" · "), null];
      }
      return [kind, JSON.stringify(d), null];
  }
}

// -- wiring --------------------------------------------------------------------------------

function chooseWindow(event) {
  const button = event.target.closest("button[data-window]");
  if (!button) return;
  state.window = button.dataset.window;
  for (const other of document.querySelectorAll("#throughput [data-window]")) {
    other.setAttribute("aria-pressed", String(other === button));
  }
  state.dayReadAt = 0;
  section("#throughput", readThroughput, renderThroughput);
}

document.addEventListener("DOMContentLoaded", () => {
  throughputBody = [...$("#throughput .body").children].map((node) => node.cloneNode(true));
  $("#signin-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => signOut());
  $("#timeline-form").addEventListener("submit", showTimeline);
  $("#timeline-kind").addEventListener("change", (e) => { $("#timeline-key").placeholder = PLACEHOLDERS[e.target.value]; });
  $("#throughput .segmented").addEventListener("click", chooseWindow);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  if (sessionStorage.getItem(TOKEN_KEY)) {
    start().catch((failure) => { if (failure.status !== 401) showBanner(`Could not load the dashboard: ${failure.message}`); });
  } else {
    signOut();
  }
});
