// FraudSense analyst dashboard. Plain JavaScript, no framework, no build step, nothing
// fetched from anywhere but this api:
//   GET /alerts?limit=100          the table at start
//   WS  /alerts/stream?since=N     new alerts, live; reconnects with backoff from the highest id seen
//   POST /alerts/{id}/ack|resolve  the analyst's actions (the token's subject is the author)
//   GET /transactions/{id}, GET /accounts/{id}   the drill-down
//   GET /metrics                   accepted-transaction counter, polled for the ingest rate
// Every call but /metrics carries the analyst's bearer token: pasted into the sign-in box,
// kept in sessionStorage (this tab only), sent as an Authorization header and, on the
// WebSocket, as the subprotocol `bearer.<token>` beside `fraudsense.v1` (browsers cannot set
// headers there). It never goes into a URL and is never logged.
"use strict";

(function () {
  const MAX_ROWS = 500;
  const CHART_MINUTES = 30;
  const METRICS_EVERY_MS = 5000;
  const OPEN_COUNT_EVERY_MS = 15000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  /** Failed attempts in a row before the indicator turns from "reconnecting" to "offline". */
  const OFFLINE_AFTER = 5;
  const TOKEN_KEY = "fraudsense.token";
  const JWT_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
  const WS_PROTOCOL = "fraudsense.v1";

  const $ = (selector) => document.querySelector(selector);

  const state = {
    alerts: new Map(), // alert_id -> alert record
    maxId: 0, // highest alert_id seen (the stream's `since`)
    resumeSince: null, // a `lagged` frame's resume point, used once
    socket: null,
    attempts: 0, // failed connections in a row
    everConnected: false,
    replays: 0, // streams that finished their replay (a second one means a reconnect)
    loaded: false, // the first page of alerts arrived (so `since` is meaningful)
    selectedId: null,
    openCount: null,
    alertMinutes: new Map(), // minute (epoch / 60 s) -> alerts created
    ingestMinutes: new Map(), // minute -> transactions accepted
    lastIngest: null, // {total, at}
    ingestRate: null,
    started: false, // the polling loops run
  };

  // ---------- small helpers ----------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-") || key === "title" || key === "type") node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function toast(message) {
    const box = $("#toast");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  function minuteOf(ms) { return Math.floor(ms / 60000); }

  function formatTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso || "");
    const sameDay = d.toDateString() === new Date().toDateString();
    return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function formatNumber(value, digits) {
    if (typeof value !== "number" || !Number.isFinite(value)) return value === undefined || value === null ? "–" : String(value);
    return value.toLocaleString(undefined, { maximumFractionDigits: digits === undefined ? 3 : digits });
  }

  // ---------- the session ----------

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  /** The token's claims, for showing who is signed in (the server verifies; this does not). */
  function claims(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    } catch (_) {
      return {};
    }
  }

  function showSignIn(message) {
    $("#session").hidden = true;
    $("#signin").hidden = false;
    $("#signin-message").textContent = message || "";
    $("#token").value = "";
    $("#token").focus();
  }

  function showSession() {
    const c = claims(token() || "");
    const roles = Array.isArray(c.roles) ? c.roles.join(", ") : "";
    $("#whoami").textContent = `${c.sub || "?"}${roles ? ` · ${roles}` : ""}`;
    $("#signin").hidden = true;
    $("#session").hidden = false;
  }

  function signOut(message) {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage disabled */ }
    const socket = state.socket;
    state.socket = null;
    if (socket) socket.close(1000, "signed out");
    setConnection("offline");
    showSignIn(message);
  }

  /** fetch with the bearer token; a 401 ends the session. */
  async function authFetch(path, init) {
    const headers = Object.assign({ Accept: "application/json" }, (init && init.headers) || {});
    const jwt = token();
    if (!jwt) throw new Error("not signed in");
    headers.Authorization = `Bearer ${jwt}`;
    const response = await fetch(path, Object.assign({ cache: "no-store" }, init || {}, { headers }));
    if (response.status === 401) {
      signOut("The token was refused or has expired: sign in again.");
      throw new Error("not signed in");
    }
    if (response.status === 403) throw new Error("this token lacks the analyst role");
    return response;
  }

  async function problemText(response) {
    try {
      const body = await response.json();
      return body.detail || body.title || `HTTP ${response.status}`;
    } catch (_) {
      return `HTTP ${response.status}`;
    }
  }

  async function getJson(path) {
    const response = await authFetch(path);
    if (!response.ok) throw new Error(await problemText(response));
    return response.json();
  }

  // ---------- connection indicator ----------

  function setConnection(value) {
    const node = $("#connection");
    node.dataset.state = value;
    node.querySelector(".label").textContent = value;
  }

  // ---------- alerts table ----------

  function recordAlertMinute(alert) {
    const t = Date.parse(alert.created_at);
    if (Number.isNaN(t)) return;
    const m = minuteOf(t);
    state.alertMinutes.set(m, (state.alertMinutes.get(m) || 0) + 1);
  }

  function renderRow(alert) {
    const status = alert.status || "open";
    const reasons = Array.isArray(alert.reasons) ? alert.reasons.join(", ") : "";
    const actions = el("td", { class: "actions" },
      el("button", { type: "button", "data-action": "ack", title: "Acknowledge", disabled: status !== "open" }, "Ack"),
      el("button", { type: "button", "data-action": "fraud", title: "Resolve as fraud", disabled: status === "resolved" }, "Fraud"),
      el("button", { type: "button", "data-action": "legit", title: "Resolve as legit", disabled: status === "resolved" }, "Legit"));
    let statusTitle = "";
    if (alert.resolved_by) statusTitle = `${alert.resolution || "resolved"} by ${alert.resolved_by}`;
    else if (alert.acknowledged_by) statusTitle = `acknowledged by ${alert.acknowledged_by}`;
    const statusText = status === "resolved" && alert.resolution ? `resolved · ${alert.resolution}` : status;
    const row = el("tr", { "data-alert-id": String(alert.alert_id), "data-risk": alert.risk_label },
      el("td", {}, el("span", { class: `badge ${alert.risk_label}`, title: `score ${formatNumber(alert.score)} ≥ ${formatNumber(alert.threshold)}` }, alert.risk_label)),
      el("td", { class: "mono" }, alert.alert_id),
      el("td", { class: "num" }, `${alert.amount} ${alert.currency}`),
      el("td", { class: "account mono", title: alert.account_id }, alert.account_id),
      el("td", { class: "merchant mono", title: alert.merchant_id }, alert.merchant_id),
      el("td", { class: "reasons", title: reasons }, reasons),
      el("td", { title: alert.created_at }, formatTime(alert.created_at)),
      el("td", { class: "status", "data-status": status, title: statusTitle }, statusText),
      actions);
    if (alert.alert_id === state.selectedId) row.classList.add("selected");
    return row;
  }

  function rowOf(alertId) {
    return $(`#alerts tbody tr[data-alert-id="${alertId}"]`);
  }

  /** Adds an alert (deduplicated by alert_id) in id order, newest on top. */
  function addAlert(alert, fresh) {
    const id = alert.alert_id;
    if (typeof id !== "number") return false;
    if (id > state.maxId) state.maxId = id;
    if (state.alerts.has(id)) return false;
    const record = Object.assign({ status: "open" }, alert);
    state.alerts.set(id, record);
    recordAlertMinute(record);
    const tbody = $("#alerts tbody");
    const row = renderRow(record);
    if (fresh) row.classList.add("fresh");
    let before = tbody.firstElementChild;
    while (before && Number(before.dataset.alertId) > id) before = before.nextElementSibling;
    tbody.insertBefore(row, before);
    while (tbody.rows.length > MAX_ROWS) {
      const last = tbody.lastElementChild;
      state.alerts.delete(Number(last.dataset.alertId));
      last.remove();
    }
    return true;
  }

  /** Applies a new workflow state to an alert the table shows (others are ignored). */
  function updateAlert(updated) {
    const previous = state.alerts.get(updated.alert_id);
    if (!previous) return;
    if (previous && previous.status === "open" && updated.status !== "open" && state.openCount !== null) {
      state.openCount = Math.max(0, state.openCount - 1);
    }
    const record = Object.assign({}, previous || {}, updated);
    state.alerts.set(updated.alert_id, record);
    const old = rowOf(updated.alert_id);
    if (old) old.replaceWith(renderRow(record));
    renderCounters();
  }

  async function act(alertId, action, buttons) {
    const path = action === "ack" ? `/alerts/${alertId}/ack` : `/alerts/${alertId}/resolve`;
    const init = { method: "POST", headers: {} };
    if (action !== "ack") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify({ resolution: action });
    }
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const response = await authFetch(path, init);
      if (!response.ok) throw new Error(await problemText(response));
      updateAlert(await response.json());
    } catch (error) {
      toast(`Alert ${alertId}: ${error.message}`);
      const record = state.alerts.get(alertId);
      const row = rowOf(alertId);
      if (record && row) row.replaceWith(renderRow(record));
    }
  }

  /** After a reconnect: statuses changed meanwhile (updates ride the live stream only). */
  async function refreshStatuses() {
    const page = await getJson("/alerts?limit=100");
    for (const alert of Array.isArray(page.alerts) ? page.alerts : []) {
      const shown = state.alerts.get(alert.alert_id);
      if (shown && shown.status !== alert.status) updateAlert(alert);
    }
  }

  async function loadAlerts() {
    const page = await getJson("/alerts?limit=100");
    const alerts = Array.isArray(page.alerts) ? page.alerts : [];
    for (const alert of alerts) addAlert(alert, false);
    state.loaded = true;
    $("#table-note").textContent = page.next_cursor ? "newest 100 at start, then live" : "";
  }

  // ---------- live stream ----------

  function connect() {
    const jwt = token();
    if (!jwt || state.socket) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const since = state.resumeSince !== null ? state.resumeSince : state.maxId;
    state.resumeSince = null;
    // Without the first page, replaying from 0 could be the whole history: go live only.
    const query = state.loaded || since > 0 ? `?since=${since}` : "";
    const socket = new WebSocket(`${scheme}//${location.host}/alerts/stream${query}`, [WS_PROTOCOL, `bearer.${jwt}`]);
    state.socket = socket;
    if (state.everConnected || state.attempts > 0) setConnection(state.attempts >= OFFLINE_AFTER ? "offline" : "reconnecting");
    socket.onopen = () => {
      state.everConnected = true;
      setConnection("live");
    };
    socket.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (_) { return; }
      if (frame.type === "alert" && frame.alert) {
        if (addAlert(frame.alert, true)) {
          if (state.openCount !== null) state.openCount += 1;
          renderCounters();
          drawChart();
        }
      } else if (frame.type === "update" && frame.alert) {
        updateAlert(frame.alert);
      } else if (frame.type === "replayed") {
        if (state.replays > 0) refreshStatuses().catch(() => { /* the next reconnect retries */ });
        state.replays += 1;
        state.attempts = 0;
        if (typeof frame.last_alert_id === "number" && frame.last_alert_id > state.maxId) state.maxId = frame.last_alert_id;
      } else if (frame.type === "lagged") {
        if (typeof frame.resume_since === "number") state.resumeSince = Math.min(frame.resume_since, state.maxId);
      }
    };
    socket.onclose = (event) => {
      if (state.socket !== socket) return;
      state.socket = null;
      if (event.code === 1008) {
        signOut("The token has expired: sign in again.");
        return;
      }
      if (!state.everConnected && state.attempts === 0) {
        // Refused before the upgrade? A 401 from a plain call says so (and signs out).
        getJson("/alerts?limit=1").catch(() => { /* handled by authFetch */ });
      }
      state.attempts += 1;
      setConnection(state.attempts >= OFFLINE_AFTER || !navigator.onLine ? "offline" : "reconnecting");
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (state.attempts - 1));
      const delay = Math.min(BACKOFF_MAX_MS, base * (0.8 + Math.random() * 0.4));
      setTimeout(() => { if (token()) connect(); }, delay);
    };
    socket.onerror = () => { /* onclose follows and schedules the retry */ };
  }

  // ---------- counters and metrics ----------

  function alertsLastHour() {
    const since = Date.now() - 3600000;
    let n = 0;
    for (const alert of state.alerts.values()) {
      if (Date.parse(alert.created_at) >= since) n += 1;
    }
    return n;
  }

  function renderCounters() {
    $("#count-open").textContent = state.openCount === null ? "–" : (state.openCount >= 500 ? "500+" : String(state.openCount));
    const hour = alertsLastHour();
    $("#count-hour").textContent = state.alerts.size >= MAX_ROWS && hour >= MAX_ROWS ? `${hour}+` : String(hour);
    $("#ingest-rate").textContent = state.ingestRate === null ? "–" : formatNumber(state.ingestRate, 1);
  }

  async function refreshOpenCount() {
    try {
      const page = await getJson("/alerts?status=open&limit=500");
      state.openCount = Array.isArray(page.alerts) ? page.alerts.length : 0;
      renderCounters();
    } catch (_) { /* the next poll retries */ }
  }

  /** Sum of every `transactions_ingested_total{...outcome="accepted"...}` sample. */
  function acceptedTotal(text) {
    let total = 0;
    let found = false;
    for (const line of text.split("\n")) {
      if (!line.startsWith("transactions_ingested_total{")) continue;
      const close = line.lastIndexOf("}");
      if (close < 0 || !line.slice(0, close).includes('outcome="accepted"')) continue;
      const value = Number(line.slice(close + 1).trim().split(/\s+/)[0]);
      if (Number.isFinite(value)) { total += value; found = true; }
    }
    return found ? total : 0;
  }

  async function pollMetrics() {
    try {
      const response = await fetch("/metrics", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const total = acceptedTotal(await response.text());
      const now = Date.now();
      if (state.lastIngest) {
        // A smaller total means the api restarted: count from zero.
        const delta = total >= state.lastIngest.total ? total - state.lastIngest.total : total;
        const seconds = (now - state.lastIngest.at) / 1000;
        if (seconds > 0) state.ingestRate = delta / seconds;
        const m = minuteOf(now);
        state.ingestMinutes.set(m, (state.ingestMinutes.get(m) || 0) + delta);
      }
      state.lastIngest = { total, at: now };
    } catch (_) {
      state.ingestRate = null;
    }
    renderCounters();
    drawChart();
  }

  // ---------- chart ----------

  function niceMax(value) {
    if (value <= 5) return 5;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * power >= value) return step * power;
    }
    return 10 * power;
  }

  function drawChart() {
    const canvas = $("#chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const styles = getComputedStyle(document.documentElement);
    const alertColor = styles.getPropertyValue("--high").trim() || "#c62828";
    const ingestColor = styles.getPropertyValue("--accent").trim() || "#2458d3";
    const muted = styles.getPropertyValue("--muted").trim() || "#5f6b7a";
    const line = styles.getPropertyValue("--line").trim() || "#dde3ea";

    const now = minuteOf(Date.now());
    const minutes = [];
    for (let i = CHART_MINUTES - 1; i >= 0; i -= 1) minutes.push(now - i);
    const alerts = minutes.map((m) => state.alertMinutes.get(m) || 0);
    const ingested = minutes.map((m) => state.ingestMinutes.get(m) || 0);
    const alertMax = niceMax(Math.max(...alerts));
    const ingestMax = niceMax(Math.max(...ingested));

    const pad = { left: 34, right: 44, top: 8, bottom: 18 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const x = (i) => pad.left + (plotW * i) / (CHART_MINUTES - 1);

    ctx.font = "10px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = line;
    ctx.fillStyle = muted;
    ctx.textBaseline = "middle";
    for (let g = 0; g <= 4; g += 1) {
      const y = pad.top + (plotH * g) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.left, Math.round(y) + 0.5);
      ctx.lineTo(width - pad.right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillStyle = alertColor;
      ctx.fillText(formatNumber((alertMax * (4 - g)) / 4, 1), pad.left - 4, y);
      ctx.textAlign = "left";
      ctx.fillStyle = ingestColor;
      ctx.fillText(formatNumber((ingestMax * (4 - g)) / 4, 0), width - pad.right + 4, y);
    }
    ctx.fillStyle = muted;
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "center";
    for (const back of [30, 20, 10, 0]) {
      const i = CHART_MINUTES - 1 - Math.min(back, CHART_MINUTES - 1);
      ctx.fillText(back === 0 ? "now" : `-${back}m`, x(i), height - 4);
    }

    const plot = (values, max, color) => {
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.75;
      ctx.lineJoin = "round";
      ctx.beginPath();
      values.forEach((v, i) => {
        const y = pad.top + plotH - (plotH * v) / max;
        if (i === 0) ctx.moveTo(x(i), y); else ctx.lineTo(x(i), y);
      });
      ctx.stroke();
    };
    plot(ingested, ingestMax, ingestColor);
    plot(alerts, alertMax, alertColor);
  }

  // ---------- drill-down ----------

  function section(title, ...children) {
    return el("section", {}, el("h3", {}, title), ...children);
  }

  function definitions(pairs) {
    const dl = el("dl");
    for (const [key, value] of pairs) {
      if (value === undefined || value === null || value === "") continue;
      dl.append(el("dt", {}, key), el("dd", {}, value));
    }
    return dl;
  }

  function describeLocation(location) {
    if (!location || typeof location !== "object") return location;
    const lat = location.lat ?? location.geo_lat;
    const lon = location.lon ?? location.geo_lon;
    const parts = [];
    if (typeof lat === "number" && typeof lon === "number") parts.push(`${lat.toFixed(3)}, ${lon.toFixed(3)}`);
    if (location.country) parts.push(location.country);
    return parts.length ? parts.join(" · ") : JSON.stringify(location);
  }

  function contributionBars(contributions) {
    const entries = Object.entries(contributions || {}).filter(([, v]) => typeof v === "number");
    if (!entries.length) return el("p", { class: "muted" }, "No contributions recorded.");
    entries.sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
    const top = Math.max(...entries.map(([, v]) => Math.abs(v))) || 1;
    const list = el("div", { class: "bars" });
    for (const [name, share] of entries) {
      const fill = el("span");
      fill.style.width = `${Math.round((Math.abs(share) / top) * 100)}%`;
      list.append(el("div", { class: "bar-row" },
        el("span", { class: "name", title: name }, name),
        el("span", { class: "bar" }, fill),
        el("span", { class: "share" }, `${(share * 100).toFixed(0)}%`)));
    }
    return list;
  }

  function renderDrilldown(alert, tx, account) {
    const panel = $("#drilldown");
    panel.replaceChildren();
    panel.dataset.state = "loaded";
    panel.dataset.alertId = String(alert.alert_id);
    panel.append(el("h2", {}, `Alert ${alert.alert_id} `, el("span", { class: `badge ${alert.risk_label}` }, alert.risk_label)));
    panel.append(definitions([
      ["Transaction", tx && tx.transaction_id ? tx.transaction_id : alert.transaction_id],
      ["Amount", `${alert.amount} ${alert.currency}`],
      ["Account", alert.account_id],
      ["Merchant", alert.merchant_id],
      ["Raised", formatTime(alert.created_at)],
      ["Status", alert.status],
      tx ? ["Channel", [tx.channel, tx.country].filter(Boolean).join(" · ")] : ["", null],
      ["Trace", (tx && tx.trace_id) || alert.trace_id || null],
    ]));

    const score = tx && tx.score && typeof tx.score === "object" ? tx.score : null;
    if (tx && tx.error) {
      panel.append(section("Transaction", el("p", { class: "muted" }, tx.error)));
    } else if (!score) {
      panel.append(section("Transaction", el("p", { class: "muted" }, tx && tx.status === "queued" ? "Queued: not scored yet." : "No score recorded.")));
    } else {
      const model = score.model || {};
      panel.append(section("Decision", definitions([
        ["Score", `${formatNumber(score.score)} (${score.risk_label})`],
        ["Model", score.model_version],
        ["Rules", score.rules_version],
        ["Probability", model.probability !== undefined ? formatNumber(model.probability) : null],
        ["Anomaly", model.anomaly !== undefined ? formatNumber(model.anomaly) : null],
        ["Supervised", model.supervised !== undefined ? formatNumber(model.supervised) : null],
        ["Degraded", score.degraded ? "yes (no window features)" : null],
      ])));
      const reasons = Array.isArray(score.reasons) ? score.reasons : [];
      const list = el("ul");
      for (const r of reasons) {
        list.append(el("li", { class: "reason" },
          el("span", { class: "code" }, r.code),
          r.severity !== undefined ? el("span", { class: "severity" }, String(r.severity)) : null,
          el("div", { class: "muted" }, r.detail || "")));
      }
      panel.append(section("Reasons", reasons.length ? list : el("p", { class: "muted" }, "No rule fired.")));
      panel.append(section("Contributions", contributionBars(score.contributions)));
      const features = score.features && typeof score.features === "object" ? Object.entries(score.features) : [];
      const order = new Map(Object.entries(score.contributions || {}).map(([k, v]) => [k, Math.abs(v)]));
      features.sort((a, b) => (order.get(b[0]) || 0) - (order.get(a[0]) || 0));
      panel.append(section("Key features", definitions(features.slice(0, 12).map(([k, v]) => [k, typeof v === "number" ? formatNumber(v) : JSON.stringify(v)]))));
    }

    if (account && account.error) {
      panel.append(section("Account activity", el("p", { class: "muted" }, account.error)));
    } else if (account) {
      const table = el("table", { class: "windows" },
        el("thead", {}, el("tr", {}, el("th", {}, "Window"), el("th", { class: "num" }, "Count"), el("th", { class: "num" }, "Sum"))));
      const body = el("tbody");
      for (const w of account.windows || []) {
        body.append(el("tr", {}, el("td", {}, w.window), el("td", { class: "num" }, formatNumber(w.count, 0)), el("td", { class: "num" }, formatNumber(Number(w.sum), 2))));
      }
      table.append(body);
      panel.append(section("Account activity", table, definitions([
        ["Last seen", account.last_seen ? formatTime(account.last_seen) : "–"],
        ["Last location", describeLocation(account.last_location)],
        ["Last merchant", account.last_merchant_id],
      ])));
    }
  }

  async function select(alertId) {
    state.selectedId = alertId;
    document.querySelectorAll("#alerts tbody tr.selected").forEach((r) => r.classList.remove("selected"));
    const row = rowOf(alertId);
    if (row) row.classList.add("selected");
    const alert = state.alerts.get(alertId);
    if (!alert) return;
    const panel = $("#drilldown");
    panel.dataset.state = "loading";
    panel.replaceChildren(el("p", { class: "muted placeholder" }, `Loading alert ${alertId}…`));
    const settle = (promise) => promise.catch((error) => ({ error: error.message }));
    const [tx, account] = await Promise.all([
      settle(getJson(`/transactions/${encodeURIComponent(alert.transaction_id)}`)),
      settle(getJson(`/accounts/${encodeURIComponent(alert.account_id)}`)),
    ]);
    if (state.selectedId !== alertId) return; // another row was chosen meanwhile
    renderDrilldown(state.alerts.get(alertId) || alert, tx, account);
  }

  // ---------- start ----------

  /** Loads the table and goes live; the polling loops start once. */
  function begin() {
    showSession();
    state.alerts.clear();
    $("#alerts tbody").replaceChildren();
    state.maxId = 0;
    state.loaded = false;
    state.attempts = 0;
    setConnection("offline");
    renderCounters();
    drawChart();
    loadAlerts()
      .catch((error) => toast(`Loading alerts failed: ${error.message}`))
      .finally(() => {
        renderCounters();
        drawChart();
        connect();
      });
    refreshOpenCount();
    if (state.started) return;
    state.started = true;
    pollMetrics();
    setInterval(pollMetrics, METRICS_EVERY_MS);
    setInterval(() => { if (token()) refreshOpenCount(); }, OPEN_COUNT_EVERY_MS);
    setInterval(() => { renderCounters(); drawChart(); }, 30000);
  }

  function start() {
    $("#signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("#token").value.trim().replace(/^Bearer\s+/i, "");
      $("#token").value = "";
      if (!JWT_RE.test(value)) {
        $("#signin-message").textContent = "That is not a JWT (three dot-separated parts).";
        return;
      }
      try { sessionStorage.setItem(TOKEN_KEY, value); } catch (_) {
        $("#signin-message").textContent = "This browser does not allow session storage.";
        return;
      }
      begin();
    });
    $("#signout").addEventListener("click", () => signOut(""));

    $("#alerts tbody").addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-alert-id]");
      if (!row) return;
      const alertId = Number(row.dataset.alertId);
      const button = event.target.closest("button[data-action]");
      if (button) {
        event.stopPropagation();
        act(alertId, button.dataset.action, Array.from(row.querySelectorAll("button[data-action]")));
        return;
      }
      select(alertId);
    });

    window.addEventListener("resize", drawChart);
    window.addEventListener("online", () => { if (!state.socket) state.attempts = 0; });

    setConnection("offline");
    renderCounters();
    drawChart();
    if (token()) begin();
    else showSignIn("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
