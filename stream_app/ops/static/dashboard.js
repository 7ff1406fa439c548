// The live dashboard: polls /dashboard/data?since=T every second, keeps the last `points`
// samples (as the worker's rings do) and draws them with the vendored uPlot.
"use strict";
(function () {
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                  "#17becf", "#bcbd22", "#7f7f7f"];
  const HEIGHT = 210;
  const store = { t: [], series: {}, points: 600 };
  const charts = {};
  let since = null;
  let updates = 0;
  let state = null;
  let interval = 1;

  // -- numbers -----------------------------------------------------------------------------
  const fmt = (v, digits) => (v === null || v === undefined || !isFinite(v)) ? "–"
    : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits });
  const pct = (v) => (v === null || v === undefined) ? "–" : (100 * v).toFixed(1) + " %";
  const clock = (t) => new Date(t * 1000).toLocaleTimeString("en-GB");
  const pval = (v) => (v === null || v === undefined) ? "–" : Number(v).toExponential(2);

  // -- the samples -------------------------------------------------------------------------
  function merge(rings, points) {
    store.points = points;
    const n = rings.t.length;
    if (n === 0) return;
    const old = store.t.length;
    for (const name of Object.keys(rings.series)) {
      if (!(name in store.series)) store.series[name] = new Array(old).fill(null);
    }
    for (const [name, values] of Object.entries(store.series)) {
      const add = rings.series[name];
      if (add) values.push(...add); else for (let i = 0; i < n; i++) values.push(null);
    }
    store.t.push(...rings.t);
    const extra = store.t.length - store.points;
    if (extra > 0) {
      store.t.splice(0, extra);
      for (const values of Object.values(store.series)) values.splice(0, extra);
    }
    for (const [name, values] of Object.entries(store.series)) {
      if (values.every((v) => v === null)) delete store.series[name];
    }
    since = store.t[store.t.length - 1];
  }

  const column = (name) => store.series[name] || new Array(store.t.length).fill(null);

  // -- charts ------------------------------------------------------------------------------
  function size(el) { return { width: Math.max(260, el.clientWidth), height: HEIGHT }; }

  function make(id, opts, data) {
    const el = document.getElementById(id);
    const chart = new uPlot({ ...size(el), legend: { live: false }, ...opts }, data, el);
    charts[id] = chart;
    return chart;
  }

  function lines(keys) {
    return [{}, ...keys.map(([key, label], i) => ({
      label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false, _key: key }))];
  }

  function timeChart(id, keys, extra) {
    const series = lines(keys);
    return { id, series, keys: keys.map(([k]) => k),
             chart: make(id, { series, scales: { x: { time: true } }, ...extra },
                         [store.t, ...keys.map(() => [])]) };
  }

  const TIME_CHARTS = [];

  function build() {
    TIME_CHARTS.push(timeChart("plot-throughput", [["events_per_s", "events"],
      ["predicted_per_s", "predictions"], ["labels_per_s", "labels joined"],
      ["dead_letters_per_s", "dead letters"]]));
    TIME_CHARTS.push(timeChart("plot-latency", [["p50_ms", "p50"], ["p95_ms", "p95"],
      ["p99_ms", "p99"]]));
    TIME_CHARTS.push(timeChart("plot-quality", [["accuracy", "accuracy"], ["roc_auc", "ROC AUC"]],
      { scales: { x: { time: true }, y: { range: [0, 1] } } }));
    TIME_CHARTS.push(timeChart("plot-coverage", [["coverage", "coverage"]],
      { scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi || 0)] } } }));
    TIME_CHARTS.push(timeChart("plot-model", [["snapshot", "served snapshot"]], {
      series: [{}, { label: "served snapshot", stroke: COLORS[0], width: 2,
                     paths: uPlot.paths.stepped({ align: 1 }) }],
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, (hi || 0) + 1)] } },
      hooks: { draw: [markModel] } }));
    buildDrift([]);
    buildScores();
  }

  function buildDrift(subjects) {
    if (charts["plot-drift"]) { charts["plot-drift"].destroy(); delete charts["plot-drift"]; }
    document.getElementById("plot-drift").textContent = "";
    const keys = subjects.map((s) => ["p:" + s, s]);
    const entry = timeChart("plot-drift", keys, {
      scales: { x: { time: true }, y: { distr: 3, range: driftRange } },
      axes: [{}, { values: (u, ticks) => ticks.map((v) => (v == null ? "" : v.toExponential(0))) }],
      hooks: { draw: [markAlpha] } });
    entry.subjects = subjects.join("\n");
    entry.clamp = true;
    const i = TIME_CHARTS.findIndex((c) => c.id === "plot-drift");
    if (i >= 0) TIME_CHARTS[i] = entry; else TIME_CHARTS.push(entry);
  }

  // canvas pixels are device pixels
  function font() { return Math.round(12 * uPlot.pxRatio) + "px system-ui, sans-serif"; }

  function alpha() { return state ? state.drift.alpha : 0.01; }

  function driftRange(u, lo) {
    const low = Math.min(alpha() / 10, lo || 1);
    return [Math.pow(10, Math.floor(Math.log10(low))), 1];
  }

  function markAlpha(u) {
    const y = u.valToPos(alpha(), "y", true);
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = "#c62828"; ctx.setLineDash([6, 4]); ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y);
    ctx.stroke();
    ctx.fillStyle = "#c62828"; ctx.font = font(); ctx.textAlign = "right";
    ctx.textBaseline = "bottom";
    ctx.fillText("alpha " + alpha(), u.bbox.left + u.bbox.width - 6, y - 3);
    ctx.restore();
  }

  function markModel(u) {
    if (!state) return;
    const marks = state.versions.map((v) => [v.at, "v" + v.version + " served", "#2e7d32"])
      .concat(state.stage_changes.map((c) => [Date.parse(c.at) / 1000,
        "v" + c.version + " → " + c.to, "#9467bd"]));
    const [x0, x1] = [u.scales.x.min, u.scales.x.max];
    const ctx = u.ctx;
    ctx.save();
    ctx.font = font(); ctx.lineWidth = 1; ctx.textAlign = "left"; ctx.textBaseline = "top";
    const line = 15 * uPlot.pxRatio;
    let row = 0;
    for (const [at, text, color] of marks) {
      if (!(at >= x0 && at <= x1)) continue;
      const x = u.valToPos(at, "x", true);
      ctx.strokeStyle = color; ctx.fillStyle = color;
      ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      ctx.fillText(text, x + 4 * uPlot.pxRatio, u.bbox.top + 4 + line * (row++ % 4));
    }
    ctx.restore();
  }

  function buildScores() {
    const bars = (align) => uPlot.paths.bars({ size: [0.45, 60], align });
    make("plot-scores", {
      series: [{ label: "score" },
               { label: "negative", fill: "#1f77b4aa", stroke: "#1f77b4", paths: bars(-1) },
               { label: "positive", fill: "#d62728aa", stroke: "#d62728", paths: bars(1) }],
      scales: { x: { time: false, range: [0, 1] }, y: { range: (u, lo, hi) => [0, Math.max(1, hi || 0)] } },
      axes: [{ values: (u, ticks) => ticks.map((v) => (v == null ? "" : v.toFixed(2))) }, {}],
    }, [[], [], []]);
  }

  function drawAll() {
    const subjects = Object.keys(store.series).filter((k) => k.startsWith("p:"))
      .map((k) => k.slice(2)).sort();
    const drift = TIME_CHARTS.find((c) => c.id === "plot-drift");
    if (drift.subjects !== subjects.join("\n")) buildDrift(subjects);
    for (const c of TIME_CHARTS) {
      const cols = c.keys.map((k) => {
        const col = column(k);
        return c.clamp ? col.map((v) => (v === null ? null : Math.max(v, 1e-16))) : col;
      });
      c.chart.setData([store.t, ...cols]);
    }
    const h = state.histogram;
    const centers = h.edges.slice(1).map((e, i) => (e + h.edges[i]) / 2);
    charts["plot-scores"].setData([centers, h.negative, h.positive]);
  }

  // -- tiles and tables --------------------------------------------------------------------
  function text(id, value) { document.getElementById(id).textContent = value; }

  function rows(id, items, cells, empty) {
    const body = document.getElementById(id);
    body.textContent = "";
    if (items.length === 0) {
      const tr = body.insertRow(); const td = tr.insertCell();
      td.colSpan = 6; td.className = "empty"; td.textContent = empty;
      return;
    }
    for (const item of items) {
      const tr = body.insertRow();
      for (const [value, cls] of cells(item)) {
        const td = tr.insertCell(); td.textContent = value; if (cls) td.className = cls;
      }
    }
  }

  function show(s) {
    const ev = s.events;
    text("model", "model " + s.model + " v" + s.version + " · snapshot " + s.snapshot);
    text("role", s.role);
    text("worker", s.worker);
    text("tile-events", fmt(ev.received, 0));
    text("tile-rate", fmt(ev.per_s, 1));
    text("tile-predicted", fmt(ev.predicted, 0));
    const p99 = column("p99_ms").filter((v) => v !== null).pop();
    text("tile-p99", p99 === undefined ? "–" : fmt(p99, 1) + " ms");
    text("tile-accuracy", pct(s.rolling.accuracy));
    text("tile-auc", fmt(s.rolling.roc_auc, 3));
    text("tile-coverage", pct(s.coverage));
    text("tile-dead", fmt(ev.dead_letters, 0));
    text("tile-episodes", fmt(s.drift.episodes.length + s.quality.length, 0));
    text("drift-note", "p-values after the " + s.drift.correction + " correction for " +
      s.drift.subjects.length + " subjects (drawn at 1e-16 at least); an episode opens below alpha = " + s.drift.alpha +
      (s.drift.warm ? "" : " (the score waits until the model is warm)"));
    const episodes = s.drift.episodes.map((e) => [e.subject, e.kind, e.test, pval(e.p_value),
      pval(e.adjusted_p_value), clock(e.seen_open_at)])
      .concat(s.quality.map((q) => [q.subject, q.kind, "quality", "–", "–", "–"]));
    rows("episodes", episodes, (e) => e.map((v, i) => [v, i === 0 ? "drift" : ""]),
      "no open episode");
    rows("subjects", s.drift.subjects, (d) => [[d.subject, d.drift ? "drift" : ""], [d.kind],
      [d.test], [fmt(d.statistic, 3), "num"], [pval(d.adjusted_p_value), "num"],
      [fmt(d.current_size, 0), "num"]], "no subject yet (drift starts with the first events)");
    const changes = s.stage_changes.slice(-8).reverse();
    rows("changes", changes, (c) => [[c.at.replace("T", " ").slice(0, 19)], ["v" + c.version],
      [(c.from || "new") + " → " + c.to], [c.reason]],
      s.history_error ? "registry unavailable: " + s.history_error : "no stage change read yet");
  }

  // -- the loop ----------------------------------------------------------------------------
  async function poll() {
    const status = document.getElementById("status");
    try {
      const url = "/dashboard/data" + (since === null ? "" : "?since=" + since);
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const payload = await response.json();
      if (!payload.state || !payload.state.events) throw new Error("the worker has no sample yet");
      state = payload.state;
      interval = payload.interval_s || 1;
      merge(payload.rings, payload.points);
      drawAll();
      show(state);
      updates += 1;
      document.body.dataset.points = String(store.t.length);
      document.body.dataset.updates = String(updates);
      status.textContent = "updated " + clock(state.at) + " · " + store.t.length + " samples";
      status.className = "";
    } catch (err) {
      status.textContent = "no answer from the worker (" + err.message + "); retrying";
      status.className = "stale";
    }
    setTimeout(poll, 1000 * interval);
  }

  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(charts)) {
      chart.setSize(size(document.getElementById(id)));
    }
  });
  window.dashboard = { store, charts };
  build();
  poll();
})();
