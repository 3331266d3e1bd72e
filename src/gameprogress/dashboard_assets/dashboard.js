// gameprogress dashboard: fetches the v1 reports and draws them as SVG, no library.
// Served as a file so that the page's Content-Security-Policy can forbid inline scripts.
// Data is only ever set as text (textContent), never parsed as markup: ids are arbitrary.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const DAY_MS = 86400000;
  const state = { timer: null, loading: false, pending: false, data: null };

  const $ = (id) => document.getElementById(id);

  function isoDay(date) {
    return date.toISOString().slice(0, 10);
  }

  function todayUTC() {
    const now = new Date();
    return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
  }

  function setRangeDays(days) {
    const last = todayUTC();
    $("to").value = isoDay(last);
    $("from").value = isoDay(new Date(last.getTime() - (days - 1) * DAY_MS));
  }

  function rangeQuery() {
    return "from=" + encodeURIComponent($("from").value) + "&to=" + encodeURIComponent($("to").value);
  }

  async function getJSON(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      window.location.assign("/dashboard/login");
      throw new Error("session expired");
    }
    const body = await response.json();
    if (!response.ok) {
      throw new Error(body && body.error ? body.error.message : "HTTP " + response.status);
    }
    return body;
  }

  function el(name, attributes, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) {
      node.setAttribute(key, String(value));
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function titled(node, text) {
    el("title", {}, node).textContent = text;
    return node;
  }

  // A round step for about `ticks` gridlines up to `max` (1, 2 or 5 times a power of ten).
  function niceStep(max, ticks) {
    const raw = Math.max(max, 1) / ticks;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const factor of [1, 2, 5, 10]) {
      if (factor * power >= raw) return Math.max(1, factor * power);
    }
    return 10 * power;
  }

  // The frame shared by both chart kinds: size in CSS pixels, y scale, gridlines, x labels.
  function frame(svg, points, label) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const width = Math.max(svg.clientWidth, 200);
    const height = Math.max(svg.clientHeight, 120);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    const pad = { left: 44, right: 8, top: 8, bottom: 24 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const max = Math.max(1, ...points.map((p) => p.value));
    const step = niceStep(max, 4);
    const top = Math.ceil(max / step) * step;
    const y = (v) => pad.top + plotH - (v / top) * plotH;
    for (let v = 0; v <= top; v += step) {
      el("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }, svg);
      const text = el("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, svg);
      text.textContent = v >= 10000 ? Math.round(v / 1000) + "k" : String(v);
    }
    const slot = plotW / Math.max(points.length, 1);
    const labels = Math.max(1, Math.floor(plotW / 70));
    const every = Math.max(1, Math.ceil(points.length / labels));
    points.forEach((p, i) => {
      if (i % every === 0) {
        const text = el("text", {
          x: pad.left + slot * i + slot / 2, y: height - 6, "text-anchor": "middle",
        }, svg);
        text.textContent = label(p);
      }
    });
    if (!points.some((p) => p.value > 0)) {
      el("text", { class: "empty", x: width / 2, y: height / 2, "text-anchor": "middle" }, svg)
        .textContent = "no data in this range";
    }
    return { slot, y, pad, plotH };
  }

  function barChart(svg, points, label) {
    const f = frame(svg, points, label);
    const gap = f.slot > 6 ? Math.min(4, f.slot * 0.2) : 0;
    points.forEach((p, i) => {
      const x = f.pad.left + f.slot * i + gap / 2;
      const bar = el("rect", {
        class: "bar", x: x, width: Math.max(f.slot - gap, 1),
        y: f.y(p.value), height: f.y(0) - f.y(p.value),
      }, svg);
      titled(bar, p.title);
      if (p.inner !== undefined && p.inner > 0) {
        titled(el("rect", {
          class: "bar-dark", x: x, width: Math.max(f.slot - gap, 1),
          y: f.y(p.inner), height: f.y(0) - f.y(p.inner),
        }, svg), p.innerTitle);
      }
    });
    mark(svg, points);
  }

  function lineChart(svg, points, label) {
    const f = frame(svg, points, label);
    const x = (i) => f.pad.left + f.slot * i + f.slot / 2;
    const path = points.map((p, i) => (i ? "L" : "M") + x(i).toFixed(1) + "," + f.y(p.value).toFixed(1));
    el("path", { class: "line", d: path.join("") }, svg);
    if (points.length <= 120) {
      points.forEach((p, i) => titled(el("circle", { class: "dot", cx: x(i), cy: f.y(p.value), r: 3 }, svg), p.title));
    }
    mark(svg, points);
  }

  // What was drawn, as attributes: for people inspecting the page and for the e2e test.
  function mark(svg, points) {
    svg.dataset.points = String(points.length);
    svg.dataset.total = String(points.reduce((sum, p) => sum + p.value, 0));
    svg.dataset.range = $("from").value + ".." + $("to").value;
  }

  const shortDay = (text) => text.slice(5); // MM-DD

  function draw() {
    const d = state.data;
    if (!d) return;
    barChart($("chart-funnel"), d.funnel.steps.map((s) => ({
      value: s.reached, inner: s.devices,
      title: "levels " + s.min_level + "–" + s.max_level + ": " + s.reached + " devices reached",
      innerTitle: s.devices + " devices stopped at levels " + s.min_level + "–" + s.max_level,
      label: String(s.min_level),
    })), (p) => p.label);
    lineChart($("chart-daily-active"), d.active.days.map((p) => ({
      value: p.count, title: p.date + ": " + p.count + " active devices", label: shortDay(p.date),
    })), (p) => p.label);
    lineChart($("chart-updates"), d.updates.hours.map((p) => ({
      value: p.count, title: p.hour + ": " + p.count + " updates",
      label: p.hour.slice(5, 10) + " " + p.hour.slice(11, 13) + "h",
    })), (p) => p.label);
    barChart($("chart-new-devices"), d.fresh.days.map((p) => ({
      value: p.count, title: p.date + ": " + p.count + " new devices", label: shortDay(p.date),
    })), (p) => p.label);
    drawLeaderboard(d.leaderboard.entries);
  }

  function drawLeaderboard(entries) {
    const body = $("leaderboard").tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    for (const e of entries) {
      const row = body.insertRow();
      const reached = new Date(e.level_reached_at * 1000).toISOString().slice(0, 16).replace("T", " ");
      [e.rank, e.device_id, e.level, reached, e.updates].forEach((value, i) => {
        const cell = row.insertCell();
        cell.textContent = String(value);
        if (i === 1) {
          cell.className = "device";
          cell.title = e.device_id;
        }
      });
    }
  }

  function updateExportLinks() {
    for (const kind of ["devices", "events"]) {
      for (const format of ["csv", "json"]) {
        $("export-" + kind + "-" + format).href = "/v1/exports/" + kind + "." + format + "?" + rangeQuery();
      }
    }
  }

  function status(text, isError) {
    const node = $("status");
    node.textContent = text;
    node.classList.toggle("error", Boolean(isError));
  }

  async function refresh() {
    if (state.loading) {
      state.pending = true; // the range changed while loading: load again when done
      return;
    }
    if (!$("range").checkValidity() || $("from").value > $("to").value) {
      status("Choose a start date on or before the end date.", true);
      return;
    }
    state.loading = true;
    const q = rangeQuery();
    try {
      const [funnel, active, updates, fresh, leaderboard] = await Promise.all([
        getJSON("/v1/reports/funnel?buckets=20"),
        getJSON("/v1/reports/daily-active-devices?" + q),
        getJSON("/v1/reports/updates-per-hour?" + q),
        getJSON("/v1/reports/new-devices?" + q),
        getJSON("/v1/leaderboard?limit=10"),
      ]);
      state.data = { funnel, active, updates, fresh, leaderboard };
      draw();
      updateExportLinks();
      status(funnel.devices + " devices · updated " + new Date().toLocaleTimeString(), false);
      document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    } catch (error) {
      status("Could not load the reports: " + error.message, true);
    } finally {
      state.loading = false;
      if (state.pending) {
        state.pending = false;
        refresh();
      }
    }
  }

  function schedule() {
    if (state.timer) clearInterval(state.timer);
    const seconds = Number($("refresh").value);
    state.timer = seconds > 0 ? setInterval(() => {
      if (!document.hidden) refresh();
    }, seconds * 1000) : null;
  }

  function start() {
    setRangeDays(14);
    $("from").addEventListener("change", refresh);
    $("to").addEventListener("change", refresh);
    $("range").addEventListener("submit", (event) => {
      event.preventDefault();
      refresh();
    });
    for (const button of document.querySelectorAll(".presets button")) {
      button.addEventListener("click", () => {
        setRangeDays(Number(button.dataset.days));
        refresh();
      });
    }
    $("refresh").addEventListener("change", schedule);
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(draw, 150);
    });
    schedule();
    refresh();
  }

  start();
})();
