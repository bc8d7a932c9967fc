// The boxoffice operator console: plain JavaScript, no framework, no build step.
// It asks this node only (relative URLs; the page's Content-Security-Policy
// allows no other origin):
//   GET /admin/v1/cluster             members, groups, payments (admin token)
//   GET /metrics                      rates, latency, follower lag, waiting rooms
//   GET /v1/events                    the event picker
//   GET /v1/events/{id}/seats/stream  the live seat map (Server-Sent Events)
//   GET /admin/v1/events/{id}/queue   the chosen event's waiting room (admin token)
// Elements the browser test reads carry stable ids (see
// node/tests/console/console_test.py).
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const HISTORY = 90; // chart points: 3 minutes at 2 s
  const LAG_WARN = 1000; // entries
  const EVENTS_MAX = 1000; // events listed in the picker (any id can be typed)
  const TOKEN_KEY = "boxoffice.console.adminToken";
  // Routes the console itself polls: left out of the traffic charts.
  const OWN_ROUTES = new Set([
    "/metrics",
    "/console",
    "/console/",
    "/console/{file}",
    "/admin/v1/cluster",
    "/admin/v1/events/{event_id}/queue",
  ]);
  const PAYMENT_KINDS = [
    "checkouts", "booked", "booked_late", "late_refunds", "mismatch_refunds",
    "failed", "cancelled", "refunded", "refund_failures",
  ];
  const QUEUE_KINDS = ["joined", "admitted", "active", "finished", "no_shows"];
  const OUTCOME_COLOURS = ["#1f8a4c", "#c0392b", "#2563eb", "#b7791f", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

  const $ = (id) => document.getElementById(id);
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const fmtInt = (v) => (v === null || v === undefined ? "-" : String(v));

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return "-";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
    return s.toFixed(2) + " s";
  }

  // An axis label: as few digits as tell the lines apart.
  function fmtAxis(v) {
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1).replace(/\.0$/, "");
    return v.toFixed(2).replace(/\.?0+$/, "");
  }

  function fmtRate(r) {
    if (r === null || r === undefined || !isFinite(r)) return "-";
    return r >= 100 ? r.toFixed(0) : r.toFixed(1);
  }

  // ------------------------------------------------------------------ token

  let token = sessionStorage.getItem(TOKEN_KEY) || "";

  // `#token=…&event=…`: the token goes to sessionStorage and out of the address
  // (and so out of the history); the event stays, for a reload.
  function readFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const t = params.get("token");
    if (t) {
      token = t.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      params.delete("token");
    }
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    const ev = parseInt(params.get("event") || "", 10);
    return ev > 0 ? ev : null;
  }

  function setAuth(state, text) {
    const a = $("auth-status");
    a.dataset.state = state;
    a.textContent = text;
  }

  async function adminGet(path) {
    if (!token) return { status: 0, body: null };
    const r = await fetch(path, {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (r.status === 401 || r.status === 403) {
      setAuth("refused", "token refused (" + r.status + ")");
    } else if (r.ok) {
      setAuth("ok", "admin token accepted");
    }
    return { status: r.status, body };
  }

  // ---------------------------------------------------------------- cluster

  let followerLag = new Map(); // group -> Map(follower -> entries), from /metrics

  function groupHealth(g) {
    const problems = [];
    let level = "ok";
    if (g.leader === null || g.leader === undefined) {
      problems.push("no leader");
      level = "bad";
    }
    if (g.state === "Candidate") {
      problems.push("electing");
      level = "bad";
    }
    const applyLag = g.last_log_index !== null && g.applied_index !== null
      ? g.last_log_index - g.applied_index : null;
    if (applyLag !== null && applyLag > LAG_WARN) {
      problems.push("applying " + applyLag + " behind");
      if (level === "ok") level = "warn";
    }
    const lags = followerLag.get(g.group);
    if (lags) {
      for (const [f, v] of lags) {
        if (v > LAG_WARN) {
          problems.push("node " + f + " " + v + " behind");
          if (level === "ok") level = "warn";
        }
      }
    }
    return { level, text: problems.length ? problems.join(", ") : "ok", applyLag };
  }

  function renderCluster(s) {
    $("node-id").textContent = s.node_id;
    $("node-title").textContent = "node " + s.node_id;
    document.title = "boxoffice node " + s.node_id;
    $("node-addr").textContent = s.addr;
    $("node-peer-addr").textContent = s.peer_addr || "-";
    $("node-shards").textContent = s.shards === null ? "- (not bootstrapped)" : s.shards;
    $("node-streams").textContent = s.sse_streams_open;
    $("cluster-updated").textContent = new Date().toLocaleTimeString();

    const members = $("members").tBodies[0];
    members.replaceChildren(...s.members.map((m) => {
      const tr = el("tr", { "data-member-id": String(m.id) });
      if (m.id === s.node_id) tr.className = "me";
      tr.append(el("td", { class: "id" }, String(m.id)), el("td", { class: "addr" }, m.addr),
        el("td", { class: "feature-level" }, fmtInt(m.feature_level_max)));
      return tr;
    }));

    let bad = 0, warn = 0;
    const groups = $("groups").tBodies[0];
    groups.replaceChildren(...s.groups.map((g) => {
      const h = groupHealth(g);
      if (h.level === "bad") bad++;
      if (h.level === "warn") warn++;
      const tr = el("tr", { "data-group": String(g.group), "data-health": h.level });
      const lags = followerLag.get(g.group);
      const lagText = lags && lags.size
        ? [...lags].sort((a, b) => a[0] - b[0]).map(([f, v]) => f + ": " + v).join(", ")
        : (g.state === "Leader" ? "-" : "(on the leader)");
      tr.append(
        el("td", { class: "name" }, g.name),
        el("td", { class: "leader" }, g.leader === null ? "none" : String(g.leader)),
        el("td", { class: "state" }, g.state),
        el("td", { class: "term" }, String(g.term)),
        el("td", { class: "last-log" }, fmtInt(g.last_log_index)),
        el("td", { class: "committed" }, fmtInt(g.committed_index)),
        el("td", { class: "applied" }, fmtInt(g.applied_index)),
        el("td", { class: "apply-lag" }, fmtInt(h.applyLag)),
        el("td", { class: "follower-lag" }, lagText),
        el("td", { class: "voters" }, g.voters.join(", ")),
        el("td", { class: "feature-level" }, String(g.feature_level)),
        el("td", { class: "health" }, h.text),
      );
      return tr;
    }));
    const health = $("cluster-health");
    if (s.groups.length === 0) {
      health.dataset.state = "warn";
      health.textContent = "no groups";
    } else if (bad) {
      health.dataset.state = "unhealthy";
      health.textContent = bad + " group" + (bad > 1 ? "s" : "") + " without a leader";
    } else if (warn) {
      health.dataset.state = "degraded";
      health.textContent = warn + " group" + (warn > 1 ? "s" : "") + " lagging";
    } else {
      health.dataset.state = "healthy";
      health.textContent = "healthy";
    }
    renderPayments(s.groups);
  }

  function renderPayments(groups) {
    const body = $("payments").tBodies[0];
    const totals = Object.fromEntries(PAYMENT_KINDS.map((k) => [k, 0]));
    const rows = [];
    for (const g of groups) {
      if (!g.payments) continue;
      const tr = el("tr", { "data-group": String(g.group) });
      tr.append(el("td", {}, g.name));
      for (const k of PAYMENT_KINDS) {
        const v = g.payments[k] || 0;
        totals[k] += v;
        tr.append(el("td", { "data-kind": k }, String(v)));
      }
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    $("payments-none").hidden = rows.length > 0;
    for (const td of $("payments-total").querySelectorAll("td[data-kind]")) {
      td.textContent = rows.length ? String(totals[td.dataset.kind]) : "-";
    }
  }

  async function refreshCluster() {
    const err = $("cluster-error");
    if (!token) {
      err.hidden = false;
      err.textContent = "Give an admin token to see the cluster (boxoffice token --admin --user you).";
      setAuth("none", "no token");
      return;
    }
    try {
      const r = await adminGet("/admin/v1/cluster");
      if (r.status === 200 && r.body) {
        err.hidden = true;
        renderCluster(r.body);
      } else {
        err.hidden = false;
        err.textContent = "GET /admin/v1/cluster: " + r.status + " " +
          ((r.body && (r.body.detail || r.body.title)) || "");
        $("cluster-health").dataset.state = "error";
        $("cluster-health").textContent = "unknown";
      }
    } catch (e) {
      err.hidden = false;
      err.textContent = "this node does not answer (" + e.message + "); showing the last view";
      $("cluster-health").dataset.state = "error";
      $("cluster-health").textContent = "node unreachable";
    }
  }

  // ---------------------------------------------------------------- metrics

  // Prometheus text format: `name{label="value",…} value [timestamp]`.
  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      let name, labels = {}, rest;
      const brace = line.indexOf("{");
      const space = line.indexOf(" ");
      if (brace >= 0 && (space < 0 || brace < space)) {
        name = line.slice(0, brace);
        let i = brace + 1;
        while (i < line.length && line[i] !== "}") {
          const eq = line.indexOf("=", i);
          if (eq < 0) break;
          const key = line.slice(i, eq).trim();
          let j = eq + 2; // past ="
          let value = "";
          while (j < line.length && line[j] !== '"') {
            if (line[j] === "\\" && j + 1 < line.length) {
              const c = line[j + 1];
              value += c === "n" ? "\n" : c;
              j += 2;
            } else {
              value += line[j++];
            }
          }
          labels[key] = value;
          i = j + 1;
          if (line[i] === ",") i++;
        }
        rest = line.slice(i + 1).trim();
      } else {
        name = line.slice(0, space);
        rest = line.slice(space + 1).trim();
      }
      const value = parseFloat(rest.split(" ")[0]);
      if (name && !isNaN(value)) samples.push({ name, labels, value });
    }
    return samples;
  }

  // What one scrape says, summed over the series the charts use.
  function digest(samples) {
    const d = {
      requests: 0,
      buckets: new Map(), // le -> cumulative count
      writes: new Map(), // outcome -> count
      followerLag: new Map(),
      queues: new Map(), // event -> {kind: value}
    };
    for (const s of samples) {
      const own = OWN_ROUTES.has(s.labels.route);
      switch (s.name) {
        case "boxoffice_http_requests_total":
          if (!own) d.requests += s.value;
          break;
        case "boxoffice_http_request_duration_seconds_bucket":
          if (!own) {
            const le = s.labels.le === "+Inf" ? Infinity : parseFloat(s.labels.le);
            d.buckets.set(le, (d.buckets.get(le) || 0) + s.value);
          }
          break;
        case "boxoffice_write_outcomes_total":
          d.writes.set(s.labels.outcome, (d.writes.get(s.labels.outcome) || 0) + s.value);
          break;
        case "boxoffice_raft_follower_lag_entries": {
          const g = parseInt(s.labels.group, 10);
          if (!d.followerLag.has(g)) d.followerLag.set(g, new Map());
          d.followerLag.get(g).set(parseInt(s.labels.follower, 10), s.value);
          break;
        }
        case "boxoffice_queue_users": {
          const ev = s.labels.event;
          if (!d.queues.has(ev)) d.queues.set(ev, {});
          d.queues.get(ev)[s.labels.kind] = s.value;
          break;
        }
        default:
      }
    }
    return d;
  }

  // A counter's increase (a node restarted in between: its value since).
  const increase = (now, before) => (now >= before ? now - before : now);

  // The q-quantile of the requests between two scrapes, from their cumulative
  // bucket counts, interpolated within its bucket as Prometheus's
  // histogram_quantile does; null without requests.
  function quantile(q, now, before) {
    const bounds = [...now.keys()].sort((a, b) => a - b);
    const deltas = bounds.map((le) => increase(now.get(le), before.get(le) || 0));
    const total = deltas[deltas.length - 1];
    if (!total) return null;
    const rank = q * total;
    let lower = 0, below = 0;
    for (let i = 0; i < bounds.length; i++) {
      if (deltas[i] >= rank) {
        if (bounds[i] === Infinity) return lower; // past the last finite bound
        const inBucket = deltas[i] - below;
        return inBucket > 0 ? lower + (bounds[i] - lower) * ((rank - below) / inBucket) : bounds[i];
      }
      lower = bounds[i];
      below = deltas[i];
    }
    return lower;
  }

  const hist = { t: [], rps: [], p50: [], p99: [], writes: new Map() };
  let lastScrape = null;
  let scrapes = 0;

  function push(arr, v) {
    arr.push(v);
    while (arr.length > HISTORY) arr.shift();
  }

  async function scrapeMetrics() {
    let text;
    try {
      const r = await fetch("/metrics", { cache: "no-store", credentials: "omit" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      text = await r.text();
    } catch (e) {
      $("scrape-status").textContent = "failed: " + e.message;
      return;
    }
    const at = performance.now();
    const d = digest(parseMetrics(text));
    scrapes++;
    $("scrape-count").textContent = scrapes;
    $("scrape-status").textContent = "last at " + new Date().toLocaleTimeString();
    followerLag = d.followerLag;
    renderQueues(d.queues);
    $("rps-now").dataset.total = String(d.requests);
    if (lastScrape) {
      const dt = (at - lastScrape.at) / 1000;
      if (dt > 0) {
        const rps = increase(d.requests, lastScrape.d.requests) / dt;
        const p50 = quantile(0.5, d.buckets, lastScrape.d.buckets);
        const p99 = quantile(0.99, d.buckets, lastScrape.d.buckets);
        push(hist.t, Date.now());
        push(hist.rps, rps);
        push(hist.p50, p50);
        push(hist.p99, p99);
        const outcomes = new Set([...d.writes.keys(), ...hist.writes.keys()]);
        for (const o of outcomes) {
          if (!hist.writes.has(o)) hist.writes.set(o, new Array(hist.t.length - 1).fill(0));
          const v = increase(d.writes.get(o) || 0, lastScrape.d.writes.get(o) || 0) / dt;
          push(hist.writes.get(o), v);
        }
        $("rps-now").textContent = fmtRate(rps);
        $("p50-now").textContent = fmtSeconds(p50);
        $("p99-now").textContent = fmtSeconds(p99);
        drawCharts();
      }
    }
    lastScrape = { at, d };
  }

  function renderQueues(queues) {
    const body = $("queues").tBodies[0];
    const events = [...queues.keys()].sort((a, b) => Number(a) - Number(b));
    body.replaceChildren(...events.map((ev) => {
      const q = queues.get(ev);
      const tr = el("tr", { "data-event": ev });
      tr.append(el("td", {}, ev));
      for (const k of QUEUE_KINDS) tr.append(el("td", { "data-kind": k }, fmtInt(q[k])));
      return tr;
    }));
    $("queues-none").hidden = events.length > 0;
  }

  // ----------------------------------------------------------------- charts

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // Lines of `series` ([{values, colour}]) over the last HISTORY points.
  function drawChart(canvas, series, fmt) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(200, canvas.clientWidth), h = Math.max(100, canvas.clientHeight);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, w, h);
    const left = 58, right = 8, top = 8, bottom = 18;
    const pw = w - left - right, ph = h - top - bottom;
    let max = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    max = niceMax(max);
    ctx.font = "11px sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      ctx.strokeStyle = i === 0 ? "#9ca3af" : "#e5e7eb";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(left + pw, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillStyle = "#5b6475";
      ctx.fillText(fmt((max * i) / 4), left - 6, y);
    }
    ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic";
    ctx.fillText("last " + (HISTORY * REFRESH_MS) / 60000 + " min", left, h - 4);
    const step = pw / (HISTORY - 1);
    let points = 0;
    for (const s of series) {
      const off = HISTORY - s.values.length;
      ctx.strokeStyle = s.colour;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || !isFinite(v)) { pen = false; return; }
        const x = left + (off + i) * step;
        const y = top + ph - (ph * v) / max;
        if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        pen = true;
        points++;
      });
      ctx.stroke();
      // The newest point as a dot, so a single sample shows.
      const last = s.values[s.values.length - 1];
      if (last !== null && last !== undefined && isFinite(last)) {
        ctx.fillStyle = s.colour;
        ctx.beginPath();
        ctx.arc(left + (HISTORY - 1) * step, top + ph - (ph * last) / max, 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    canvas.dataset.points = String(points);
    canvas.dataset.max = String(max);
  }

  function drawCharts() {
    drawChart($("chart-rps"), [{ values: hist.rps, colour: "#1f8a4c" }], fmtAxis);
    drawChart($("chart-latency"), [
      { values: hist.p50, colour: "#2563eb" },
      { values: hist.p99, colour: "#db2777" },
    ], fmtSeconds);
    const outcomes = [...hist.writes.keys()].sort((a, b) => (a === "ok" ? -1 : b === "ok" ? 1 : a.localeCompare(b)));
    const series = outcomes.map((o, i) => ({ values: hist.writes.get(o), colour: OUTCOME_COLOURS[i % OUTCOME_COLOURS.length], name: o }));
    drawChart($("chart-writes"), series, fmtAxis);
    $("writes-legend").replaceChildren(...series.map((s) => {
      const dot = el("span", { class: "dot" });
      dot.style.background = s.colour;
      const li = el("li", { "data-outcome": s.name });
      li.append(dot, s.name + " " + fmtRate(s.values[s.values.length - 1]) + "/s");
      return li;
    }));
  }

  // --------------------------------------------------------------- seat map

  const SEAT = { available: 0, held: 1, sold: 2 };
  const STATUS_NAMES = ["available", "held", "sold"];
  const seatMap = {
    eventId: null,
    source: null,
    retry: null,
    ga: false,
    capacity: 0,
    counts: [0, 0, 0], // available, held, sold
    index: new Map(), // seat id -> position in the arrays below
    seats: [], // {seat_id, section, row, number}
    status: new Uint8Array(0),
    heldUntil: new Float64Array(0),
    cells: [], // position -> [x, y]
    labels: [], // section names: {text, y}
    cell: 10,
    gaHolds: new Map(), // hold id -> {quantity, expires}
    changes: 0,
    expiries: 0,
  };

  function colours() {
    return [css("--free"), css("--held"), css("--sold")];
  }

  function showCounts() {
    const c = seatMap.counts;
    $("seat-capacity").textContent = seatMap.capacity;
    $("seat-free").textContent = c[SEAT.available];
    $("seat-held").textContent = c[SEAT.held];
    $("seat-sold").textContent = c[SEAT.sold];
    $("stream-changes").textContent = seatMap.changes;
    $("stream-expiries").textContent = seatMap.expiries;
  }

  function setStream(state, text) {
    const s = $("stream-status");
    s.dataset.state = state;
    s.textContent = text || state;
  }

  function streamError(text) {
    const e = $("stream-error");
    e.hidden = !text;
    e.textContent = text || "";
  }

  function loadSnapshot(snap) {
    const m = snap.seat_map;
    seatMap.ga = !!m.general_admission;
    seatMap.capacity = m.capacity;
    seatMap.gaHolds = new Map();
    const seats = m.seats || [];
    seatMap.seats = seats.map((s) => ({ seat_id: s.seat_id, section: s.section, row: s.row, number: s.number }));
    seatMap.index = new Map(seats.map((s, i) => [s.seat_id, i]));
    seatMap.status = new Uint8Array(seats.length);
    seatMap.heldUntil = new Float64Array(seats.length);
    seats.forEach((s, i) => {
      seatMap.status[i] = SEAT[s.status] !== undefined ? SEAT[s.status] : SEAT.available;
      seatMap.heldUntil[i] = s.held_until_ms || 0;
    });
    if (seatMap.ga) {
      seatMap.counts = [m.available, m.held, m.sold];
    } else {
      recount();
    }
    $("stream-lag").textContent = snap.freshness ? snap.freshness.lag_ms + " ms" : "-";
    layoutSeats();
    drawSeats();
    showCounts();
  }

  function recount() {
    const c = [0, 0, 0];
    for (const s of seatMap.status) c[s]++;
    seatMap.counts = c;
  }

  function setSeat(seatId, status, until) {
    const i = seatMap.index.get(seatId);
    if (i === undefined) return;
    const old = seatMap.status[i];
    seatMap.status[i] = status;
    seatMap.heldUntil[i] = until || 0;
    seatMap.counts[old]--;
    seatMap.counts[status]++;
    drawSeat(i);
  }

  // A `change`: seats held, sold, released, or a hold extended by a payment.
  function applyChange(c) {
    seatMap.changes++;
    if (!seatMap.ga) {
      for (const id of c.seat_ids || []) {
        if (c.kind === "held") setSeat(id, SEAT.held, c.expires_at_ms);
        else if (c.kind === "sold") setSeat(id, SEAT.sold, 0);
        else if (c.kind === "released") setSeat(id, SEAT.available, 0);
        else if (c.kind === "extended") {
          const i = seatMap.index.get(id);
          if (i !== undefined) seatMap.heldUntil[i] = c.expires_at_ms || seatMap.heldUntil[i];
        }
      }
    } else {
      // General admission: quantities only. A hold the stream saw is tracked;
      // a sale or release of one it did not see is taken from the held count.
      const q = c.quantity, counts = seatMap.counts;
      const move = (from, to) => {
        const n = Math.min(q, counts[from]);
        counts[from] -= n;
        counts[to] += n;
      };
      if (c.kind === "held") {
        move(SEAT.available, SEAT.held);
        seatMap.gaHolds.set(c.hold_id, { quantity: q, expires: c.expires_at_ms });
      } else if (c.kind === "sold") {
        move(seatMap.gaHolds.has(c.hold_id) || counts[SEAT.held] >= q ? SEAT.held : SEAT.available, SEAT.sold);
        seatMap.gaHolds.delete(c.hold_id);
      } else if (c.kind === "released") {
        // A cancelled booking names its booking (b…), a released hold its hold.
        move(c.hold_id.startsWith("b") ? SEAT.sold : SEAT.held, SEAT.available);
        seatMap.gaHolds.delete(c.hold_id);
      } else if (c.kind === "extended") {
        const h = seatMap.gaHolds.get(c.hold_id);
        if (h) h.expires = c.expires_at_ms;
      }
      drawSeats();
    }
    showCounts();
  }

  // An `expired`: a hold's seats became available at its expiry instant (a
  // seat held again since, by a later hold, stays held).
  function applyExpiry(x) {
    seatMap.expiries++;
    if (!seatMap.ga) {
      for (const id of x.seat_ids || []) {
        const i = seatMap.index.get(id);
        if (i !== undefined && seatMap.status[i] === SEAT.held && seatMap.heldUntil[i] <= x.expired_at_ms) {
          setSeat(id, SEAT.available, 0);
        }
      }
    } else {
      const n = Math.min(x.quantity, seatMap.counts[SEAT.held]);
      seatMap.counts[SEAT.held] -= n;
      seatMap.counts[SEAT.available] += n;
      for (const [id, h] of seatMap.gaHolds) {
        if (h.expires === x.expired_at_ms && h.quantity === x.quantity) {
          seatMap.gaHolds.delete(id);
          break;
        }
      }
      drawSeats();
    }
    showCounts();
  }

  // Seats in seat order, a row per line and a gap between sections.
  function layoutSeats() {
    const canvas = $("seat-map");
    const width = Math.max(300, $("seat-map-box").clientWidth - 2);
    if (seatMap.ga) {
      canvas.width = width;
      canvas.height = 48;
      seatMap.cells = [];
      seatMap.labels = [];
      return;
    }
    const rows = [];
    let cur = null;
    seatMap.seats.forEach((s, i) => {
      if (!cur || cur.section !== s.section || cur.row !== s.row) {
        cur = { section: s.section, row: s.row, seats: [] };
        rows.push(cur);
      }
      cur.seats.push(i);
    });
    const widest = rows.reduce((m, r) => Math.max(m, r.seats.length), 1);
    const cell = Math.max(3, Math.min(14, Math.floor(width / widest)));
    seatMap.cell = cell;
    seatMap.cells = new Array(seatMap.seats.length);
    seatMap.labels = [];
    let y = 0, section = null;
    for (const r of rows) {
      if (r.section !== section) {
        // A gap and the section's name above its first row.
        y += section === null ? 2 : Math.max(4, cell);
        seatMap.labels.push({ text: r.section, y: y + 11 });
        y += 14;
      }
      section = r.section;
      r.seats.forEach((i, k) => { seatMap.cells[i] = [k * cell, y]; });
      y += cell;
    }
    canvas.width = Math.max(width, widest * cell);
    canvas.height = Math.max(20, y + 2);
  }

  function drawSeat(i, ctx, pal) {
    const p = seatMap.cells[i];
    if (!p) return;
    ctx = ctx || $("seat-map").getContext("2d");
    pal = pal || colours();
    const c = seatMap.cell;
    const gap = c >= 6 ? 1 : 0;
    ctx.fillStyle = "#fafbfc";
    ctx.fillRect(p[0], p[1], c, c);
    ctx.fillStyle = pal[seatMap.status[i]];
    ctx.fillRect(p[0] + gap, p[1] + gap, c - 2 * gap, c - 2 * gap);
  }

  function drawSeats() {
    const canvas = $("seat-map");
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fafbfc";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const pal = colours();
    if (seatMap.ga) {
      // General admission: one bar, free / held / sold in proportion.
      const total = Math.max(1, seatMap.capacity);
      let x = 0;
      const w = canvas.width;
      [SEAT.available, SEAT.held, SEAT.sold].forEach((k) => {
        const part = (w * seatMap.counts[k]) / total;
        ctx.fillStyle = pal[k];
        ctx.fillRect(x, 8, part, 32);
        x += part;
      });
      return;
    }
    ctx.fillStyle = "#5b6475";
    ctx.font = "11px sans-serif";
    ctx.textAlign = "left";
    for (const l of seatMap.labels) ctx.fillText(l.text, 1, l.y);
    for (let i = 0; i < seatMap.seats.length; i++) drawSeat(i, ctx, pal);
  }

  function seatAt(x, y) {
    const c = seatMap.cell;
    for (let i = 0; i < seatMap.cells.length; i++) {
      const p = seatMap.cells[i];
      if (p && x >= p[0] && x < p[0] + c && y >= p[1] && y < p[1] + c) return i;
    }
    return -1;
  }

  function closeStream() {
    if (seatMap.source) seatMap.source.close();
    seatMap.source = null;
    clearTimeout(seatMap.retry);
  }

  function openStream(eventId) {
    closeStream();
    const src = new EventSource("/v1/events/" + eventId + "/seats/stream");
    seatMap.source = src;
    setStream("connecting");
    const mine = (f) => (e) => { if (seatMap.source === src) f(e); };
    src.onopen = mine(() => { setStream("live"); streamError(""); });
    const track = (e) => { if (e.lastEventId) $("stream-last-id").textContent = e.lastEventId; };
    src.addEventListener("snapshot", mine((e) => { track(e); loadSnapshot(JSON.parse(e.data)); }));
    src.addEventListener("change", mine((e) => {
      track(e);
      const c = JSON.parse(e.data);
      if (c.event_id === eventId) applyChange(c);
    }));
    src.addEventListener("expired", mine((e) => {
      const x = JSON.parse(e.data);
      if (x.event_id === eventId) applyExpiry(x);
    }));
    src.addEventListener("reset", mine((e) => {
      // The node drops the stream; EventSource reconnects with Last-Event-ID.
      setStream("connecting", "reconnecting");
      try { streamError("reset: " + JSON.parse(e.data).reason); } catch (_) { /* keep going */ }
    }));
    // `error` is both the node's own event (with data) and a lost connection.
    src.addEventListener("error", mine((e) => {
      if (e.data) {
        let what = e.data;
        try { what = JSON.parse(e.data).code; } catch (_) { /* as sent */ }
        streamError("the stream cannot go on: " + what);
        setStream("error");
        closeStream();
        return;
      }
      if (src.readyState === EventSource.CLOSED) {
        // Refused (unknown event, not bootstrapped, too many streams): try again later.
        setStream("error", "refused");
        streamError("the node refused the stream; retrying in 5 s");
        seatMap.retry = setTimeout(() => { if (seatMap.eventId === eventId) openStream(eventId); }, 5000);
      } else {
        setStream("connecting", "reconnecting");
      }
    }));
  }

  function chooseEvent(eventId) {
    if (!(eventId > 0)) return;
    seatMap.eventId = eventId;
    seatMap.changes = 0;
    seatMap.expiries = 0;
    seatMap.seats = [];
    seatMap.cells = [];
    seatMap.counts = [0, 0, 0];
    seatMap.capacity = 0;
    $("event-id").value = String(eventId);
    $("event-select").value = String(eventId);
    const opt = $("event-select").selectedOptions[0];
    $("event-title").textContent = opt && opt.value ? opt.textContent : "Event " + eventId;
    $("event-title").dataset.eventId = String(eventId);
    if (!(opt && opt.value)) describeEvent(eventId);
    $("stream-last-id").textContent = "-";
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    params.set("event", String(eventId));
    history.replaceState(null, "", location.pathname + location.search + "#" + params.toString());
    showCounts();
    openStream(eventId);
    refreshQueue();
  }

  // The title of an event the picker does not list (past its first events).
  async function describeEvent(eventId) {
    try {
      const r = await fetch("/v1/events/" + eventId, { cache: "no-store", credentials: "omit" });
      const v = await r.json();
      if (seatMap.eventId !== eventId) return;
      $("event-title").textContent = r.ok
        ? "#" + eventId + " " + v.event.name + (v.venue ? " — " + v.venue.name : "")
        : "Event " + eventId + ": " + (v.detail || r.status);
    } catch (_) { /* the title stays "Event N" */ }
  }

  async function loadEvents() {
    const select = $("event-select");
    const options = [el("option", { value: "" }, "choose an event")];
    let after = null, n = 0;
    try {
      while (n < EVENTS_MAX) {
        const q = "/v1/events?limit=500" + (after !== null ? "&after=" + after : "");
        const r = await fetch(q, { cache: "no-store", credentials: "omit" });
        if (!r.ok) throw new Error("HTTP " + r.status);
        const page = await r.json();
        for (const d of page.events) {
          const e = d.event;
          const venue = d.venue ? " — " + d.venue.name + (d.venue.general_admission ? " (GA)" : "") : "";
          options.push(el("option", { value: String(e.event_id) }, "#" + e.event_id + " " + e.name + venue));
          n++;
        }
        if (page.next_after === null || page.next_after === undefined) break;
        after = page.next_after;
      }
      if (n === 0) options[0].textContent = "no events yet";
    } catch (e) {
      options[0].textContent = "events unavailable (" + e.message + ")";
    }
    select.replaceChildren(...options);
    select.dataset.count = String(n);
    if (seatMap.eventId) {
      select.value = String(seatMap.eventId);
      const opt = select.selectedOptions[0];
      if (opt && opt.value) $("event-title").textContent = opt.textContent;
    }
  }

  // ----------------------------------------------------------- waiting room

  async function refreshQueue() {
    const ev = seatMap.eventId;
    const none = $("queue-none"), table = $("queue-stats");
    if (!ev || !token) {
      none.hidden = false;
      table.hidden = true;
      return;
    }
    try {
      const r = await adminGet("/admin/v1/events/" + ev + "/queue");
      if (ev !== seatMap.eventId) return;
      if (r.status === 200 && r.body) {
        const q = r.body;
        none.hidden = true;
        table.hidden = false;
        table.dataset.eventId = String(ev);
        $("queue-status").textContent = q.status;
        $("queue-started").textContent = q.started ? "yes" : "no";
        $("queue-joined").textContent = q.joined;
        $("queue-waiting").textContent = q.waiting;
        $("queue-admitted").textContent = q.admitted;
        $("queue-active").textContent = q.active;
        $("queue-finished").textContent = q.finished;
        $("queue-no-shows").textContent = q.no_shows;
        $("queue-rate").textContent = q.admit_rate_per_minute.toFixed(1);
      } else {
        table.hidden = true;
        none.hidden = false;
        none.dataset.eventId = String(ev);
        none.textContent = r.body && r.body.code === "no_queue"
          ? "Event " + ev + " has no waiting room."
          : "Waiting room of event " + ev + ": " + r.status + " " + ((r.body && r.body.detail) || "");
      }
    } catch (e) {
      none.hidden = false;
      none.textContent = "Waiting room: " + e.message;
    }
  }

  // ------------------------------------------------------------------ start

  function tick() {
    refreshCluster();
    scrapeMetrics();
    refreshQueue();
  }

  function start() {
    const event = readFragment();
    $("token-input").value = "";
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const t = $("token-input").value.trim();
      if (t) {
        token = t;
        sessionStorage.setItem(TOKEN_KEY, t);
        $("token-input").value = "";
        setAuth("connecting", "checking…");
        tick();
      }
    });
    $("token-forget").addEventListener("click", () => {
      token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      setAuth("none", "no token");
      refreshCluster();
      refreshQueue();
    });
    $("event-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = parseInt($("event-id").value, 10) || parseInt($("event-select").value, 10);
      chooseEvent(id);
    });
    $("event-select").addEventListener("change", () => {
      const id = parseInt($("event-select").value, 10);
      if (id > 0) chooseEvent(id);
    });
    $("seat-map").addEventListener("mousemove", (e) => {
      const r = e.target.getBoundingClientRect();
      const i = seatAt(e.clientX - r.left, e.clientY - r.top);
      const s = seatMap.seats[i];
      $("seat-hover").textContent = s
        ? "seat " + s.seat_id + ": section " + s.section + ", row " + s.row + ", number " + s.number + " — " + STATUS_NAMES[seatMap.status[i]]
        : "\u00a0";
    });
    let resize = null;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => { layoutSeats(); drawSeats(); if (hist.t.length) drawCharts(); }, 200);
    });
    if (token) setAuth("connecting", "checking…");
    loadEvents();
    if (event) chooseEvent(event);
    tick();
    setInterval(tick, REFRESH_MS);
  }

  // For tests and for a look from the devtools: what the page holds.
  window.boxofficeConsole = {
    seatCell(seatId) {
      const i = seatMap.index.get(seatId);
      if (i === undefined || !seatMap.cells[i]) return null;
      const [x, y] = seatMap.cells[i];
      return { x, y, size: seatMap.cell, status: STATUS_NAMES[seatMap.status[i]] };
    },
    colours() {
      const c = colours();
      return { available: c[0], held: c[1], sold: c[2] };
    },
    history() {
      return { rps: hist.rps.slice(), p50: hist.p50.slice(), p99: hist.p99.slice() };
    },
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
