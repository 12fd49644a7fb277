// eventops live dashboard: vanilla JS, no build step. Polls the JSON API every few seconds
// (the interval is in <meta name="poll-ms">) and redraws in place; never reloads the page.
// Everything from the server goes into the DOM as text (textContent), never as HTML.
"use strict";

(function () {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const CSRF = meta("csrf-token");
  const POLL_MS = parseInt(meta("poll-ms"), 10) || 3000;
  const SERIES_EVERY_MS = 15000;
  const SVG = "http://www.w3.org/2000/svg";

  const view = {
    filters: { state: "", group: "", q: "" },
    cursors: [null], // cursor of each page visited; the last is the current page's
    nextAfter: null,
    selected: null, // check id shown in the chart
    selectedName: null,
    window: "1h",
    seriesAt: 0,
    timeline: null, // incident id whose timeline is shown
    groupsLoaded: false,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  class LoggedOut extends Error {}

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
    if (response.status === 401) throw new LoggedOut();
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${response.status} ${detail}`);
    }
    return response.json();
  }

  function ago(iso) {
    if (!iso) return "never";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 60) return `${Math.round(seconds)} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  const pct = (value) => (value === null || value === undefined ? "–" : `${(value * 100).toFixed(2)} %`);
  const ms = (value) => (value === null || value === undefined ? "–" : `${Math.round(value)} ms`);

  function setLive(state, text) {
    const live = $("live");
    live.dataset.state = state;
    live.textContent = text;
  }

  // -- checks ------------------------------------------------------------------------------

  function checksQuery() {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(view.filters)) if (value) params.set(key, value);
    const after = view.cursors[view.cursors.length - 1];
    if (after) params.set("after", after);
    params.set("limit", "50");
    return `/api/checks?${params}`;
  }

  function beats(list) {
    const width = 4, gap = 1, height = 14;
    const box = svg("svg", {
      class: "beats", width: String(20 * (width + gap)), height: String(height),
      viewBox: `0 0 ${20 * (width + gap)} ${height}`, role: "img",
    });
    list.forEach((status, index) => {
      const rect = svg("rect", {
        x: String(index * (width + gap)), y: "0", width: String(width), height: String(height),
        rx: "1", class: status,
      });
      const title = svg("title", {});
      title.textContent = status;
      rect.append(title);
      box.append(rect);
    });
    return box;
  }

  function renderChecks(data) {
    const body = $("checks").querySelector("tbody");
    const rows = data.items.map((check) => {
      const row = el(
        "tr",
        {
          class: `state-${check.state}` + (check.id === view.selected ? " selected" : ""),
          "data-check-id": check.id, "data-check-name": check.name, "data-state": check.state,
        },
        el("td", {}, el("span", { class: "dot", title: check.state })),
        el("td", { class: "name" }, check.name),
        el("td", {}, check.group),
        el("td", {}, ms(check.last_latency_ms)),
        el("td", {}, pct(check.uptime_24h)),
        el("td", {}, beats(check.beats)),
        el("td", { class: "reason" }, check.state === "up" ? "" : check.last_reason || ""),
        el("td", { class: "muted" }, ago(check.last_checked_at)),
      );
      row.addEventListener("click", () => selectCheck(check.id, check.name));
      return row;
    });
    body.replaceChildren(...rows);
    $("checks-empty").hidden = data.items.length > 0;
    view.nextAfter = data.next_after;
    $("page-next").disabled = !data.next_after;
    $("page-prev").disabled = view.cursors.length <= 1;
    $("page-first").disabled = view.cursors.length <= 1;
    $("page-info").textContent = `page ${view.cursors.length}`;
    if (view.selected === null && data.items.length) {
      const worst = data.items.find((c) => c.state === "down") || data.items[0];
      selectCheck(worst.id, worst.name);
    }
  }

  function renderCounts(counts, incidentsTotal) {
    for (const state of ["total", "up", "down", "failing", "unknown", "disabled"]) {
      $(`count-${state}`).textContent = counts[state];
    }
    $("count-incidents").textContent = incidentsTotal;
    document.querySelectorAll(".tile[data-filter-state]").forEach((tile) => {
      tile.classList.toggle("selected", tile.dataset.filterState === view.filters.state);
    });
  }

  async function loadGroups() {
    const data = await api("/api/groups");
    const select = $("filter-group");
    select.replaceChildren(
      el("option", { value: "" }, "all"),
      ...data.groups.map((g) => el("option", { value: g.name }, `${g.name} (${g.checks})`)),
    );
    select.value = view.filters.group;
    view.groupsLoaded = true;
  }

  // -- incidents ---------------------------------------------------------------------------

  function renderIncidents(incidents) {
    const body = $("incidents").querySelector("tbody");
    const rows = incidents.items.map((incident) => {
      const action = incident.status === "open"
        ? el("button", { type: "button", class: "ack", "data-ack": incident.id }, "Acknowledge")
        : el("span", { class: "muted" }, incident.acknowledged_by ? `by ${incident.acknowledged_by}` : "");
      if (incident.status === "open") action.addEventListener("click", () => acknowledge(incident.id, action));
      return el(
        "tr",
        { "data-incident-id": incident.id, "data-status": incident.status, "data-check": incident.check || "" },
        el("td", {}, `#${incident.id}`),
        el("td", {}, el("span", { class: `badge ${incident.severity}` }, incident.severity)),
        el("td", { title: incident.summary || "", class: "incident-title" },
          el("button", { type: "button", class: "link", "data-timeline": incident.id }, incident.title)),
        el("td", {}, incident.check || ""),
        el("td", { class: "muted" }, ago(incident.opened_at)),
        el("td", {}, el("span", { class: `badge ${incident.status}`, "data-role": "status" }, incident.status)),
        el("td", {}, action),
      );
    });
    body.replaceChildren(...rows);
    body.querySelectorAll("button[data-timeline]").forEach((button) => button.addEventListener("click", () => {
      const id = Number(button.dataset.timeline);
      view.timeline = view.timeline === id ? null : id;
      loadTimeline().catch(() => {});
    }));
    $("incidents-empty").hidden = incidents.items.length > 0;
  }

  // The timeline of the incident whose title was clicked: who did what, when.
  async function loadTimeline() {
    const box = $("timeline");
    if (view.timeline === null || view.timeline === undefined) {
      box.hidden = true;
      return;
    }
    const incident = await api(`/api/incidents/${view.timeline}`);
    $("timeline-title").textContent = `#${incident.id} ${incident.title} · ${incident.status}`;
    $("timeline-events").replaceChildren(...incident.timeline.map((e) => el(
      "li", { "data-kind": e.kind },
      el("span", { class: "muted" }, new Date(e.at).toLocaleString()), " ",
      el("strong", {}, e.kind), ` by ${e.actor}`, e.detail ? ` · ${e.detail}` : "",
    )));
    box.hidden = false;
  }

  async function acknowledge(id, button) {
    button.disabled = true;
    try {
      await api(`/api/incidents/${id}/acknowledge`, {
        method: "POST",
        headers: { "X-CSRF-Token": CSRF, "Content-Type": "application/json" },
        body: "{}",
      });
    } catch (error) {
      if (error instanceof LoggedOut) return toLogin();
      button.disabled = false;
      setLive("lost", `acknowledge failed: ${error.message}`);
      return;
    }
    refresh();
  }

  // -- workers, insight, reports -----------------------------------------------------------

  function renderWorkers(data) {
    const box = $("workers");
    const parts = [];
    if (data.error) parts.push(el("p", { class: "error" }, data.error));
    if (data.workers === null || data.workers === undefined) {
      parts.push(el("p", { class: "muted" }, "Worker heartbeats are not available; queue lengths from Redis."));
    } else if (!data.workers.length) {
      parts.push(el("p", { class: "error" }, "No worker has reported."));
    } else {
      parts.push(el("ul", { class: "plain" }, ...data.workers.map((w) => el(
        "li", { "data-worker": w.name },
        el("span", { class: `dot ${w.alive ? "up" : "down"}` }), " ", w.name,
        el("span", { class: "muted" }, ` · seen ${ago(w.last_seen)}`
          + (w.cpu !== null && w.cpu !== undefined ? ` · cpu ${Math.round(w.cpu)} %` : "")
          + (w.memory !== null && w.memory !== undefined ? ` · mem ${Math.round(w.memory)} %` : "")),
      ))));
    }
    box.replaceChildren(...parts);
    $("queues").querySelector("tbody").replaceChildren(...(data.queues || []).map((q) => el(
      "tr", { "data-queue": q.name },
      el("td", {}, q.name),
      el("td", {}, q.length === null || q.length === undefined ? "–" : q.length),
      el("td", {}, q.oldest_age_s === null || q.oldest_age_s === undefined ? "–" : `${Math.round(q.oldest_age_s)} s`),
    )));
  }

  function renderInsight(data) {
    const box = $("insight");
    if (!data.configured) {
      box.replaceChildren(el("p", { class: "muted", "data-insight": "not-configured" },
        "User activity, KPIs and Web Vitals: not configured."));
      return;
    }
    const parts = [];
    if (data.error) parts.push(el("p", { class: "error" }, data.error));
    const activity = data.activity || {};
    const activityItems = Object.entries(activity).map(([key, value]) =>
      el("li", {}, `${key.replaceAll("_", " ")}: `, el("strong", {}, value === null ? "–" : value)));
    parts.push(el("h3", {}, "User activity"),
      activityItems.length ? el("ul", { class: "plain" }, ...activityItems) : el("p", { class: "muted" }, "no data"));
    const kpis = data.kpis || [];
    parts.push(el("h3", {}, "KPIs against targets"), kpis.length ? el("ul", { class: "plain" }, ...kpis.map((k) =>
      el("li", { class: k.ok === false ? "kpi-bad" : "kpi-ok" },
        `${k.name}: ${k.value === null ? "–" : k.value} (target ${k.target}${k.period ? ", " + k.period : ""})`)))
      : el("p", { class: "muted" }, "no data"));
    const vitals = data.vitals || [];
    parts.push(el("h3", {}, "Web Vitals (p75)"), vitals.length ? el("ul", { class: "plain" }, ...vitals.map((v) =>
      el("li", { class: v.ok === false ? "kpi-bad" : "kpi-ok" },
        `${v.page} ${v.device || ""} ${v.metric}: ${v.p75} (threshold ${v.threshold})`)))
      : el("p", { class: "muted" }, "no data"));
    box.replaceChildren(...parts);
  }

  function renderReports(data) {
    const list = $("reports");
    if (!data.configured) {
      list.replaceChildren(el("li", { class: "muted" }, "Reports: not configured."));
      return;
    }
    if (!data.items.length) {
      list.replaceChildren(el("li", { class: "muted" }, "No reports yet."));
      return;
    }
    list.replaceChildren(...data.items.map((r) => el(
      "li", {},
      r.html_url ? el("a", { href: r.html_url, target: "_blank", rel: "noopener" }, r.name) : r.name,
      r.md_url ? el("a", { href: r.md_url, class: "muted", target: "_blank", rel: "noopener" }, " (md)") : null,
      el("span", { class: "muted" }, ` ${r.kind || ""} ${r.created_at ? ago(r.created_at) : ""}`),
    )));
  }

  // -- chart -------------------------------------------------------------------------------

  function selectCheck(id, name) {
    view.selected = id;
    view.selectedName = name;
    view.seriesAt = 0;
    document.querySelectorAll("#checks tbody tr").forEach((row) => {
      row.classList.toggle("selected", Number(row.dataset.checkId) === id);
    });
    loadSeries();
  }

  async function loadSeries() {
    if (view.selected === null) return;
    view.seriesAt = Date.now();
    const id = view.selected;
    const [series, check] = await Promise.all([
      api(`/api/checks/${id}/series?window=${view.window}`),
      api(`/api/checks/${id}`),
    ]);
    if (id !== view.selected) return;
    $("detail-title").textContent = `Response time · ${check.name}`;
    $("detail-hint").textContent = `${check.state}${check.last_reason && check.state !== "up" ? " · " + check.last_reason : ""} · every ${check.interval_s} s · from ${series.source}`;
    drawChart(series);
    $("uptimes").replaceChildren(...Object.entries(check.uptime).map(([label, value]) =>
      el("div", {}, el("dt", {}, `uptime ${label}`), el("dd", {}, pct(value)))));
  }

  function drawChart(series) {
    // A time axis over the whole window: gaps (no outcomes) stay gaps.
    const points = series.points;
    // Drawn at the panel's own width, so text keeps its size whatever the layout.
    const W = Math.max(300, $("chart").clientWidth || 600), H = 200;
    const left = 44, right = 6, bottom = 30, strip = 8;
    const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const plotW = W - left - right;
    const plotH = H - bottom - strip - 6;
    const since = Date.parse(series.since), until = Date.parse(series.until);
    const span = Math.max(1, until - since);
    const bucketMs = (series.bucket_s || 60) * 1000;
    const values = points.flatMap((p) => [p.avg_ms, p.max_ms]).filter((v) => v !== null);
    const top = Math.max(10, ...values) * 1.1;
    // A point sits in the middle of its bucket.
    const x = (p) => left + Math.min(1, Math.max(0, (Date.parse(p.t) + bucketMs / 2 - since) / span)) * plotW;
    const y = (v) => 4 + plotH - (v / top) * plotH;
    box.append(svg("line", { class: "axis", x1: left, y1: 4 + plotH, x2: W - right, y2: 4 + plotH }));
    for (const fraction of [0, 0.5, 1]) {
      const label = svg("text", { x: "2", y: String(y(top * fraction) + 3) });
      label.textContent = `${Math.round(top * fraction)} ms`;
      box.append(label);
    }
    const path = (key) => points
      .filter((p) => p[key] !== null)
      .map((p, i) => `${i === 0 ? "M" : "L"}${x(p)},${y(p[key])}`)
      .join(" ");
    const long = span > 2 * 86400 * 1000;
    const stamp = (ms) => (long ? new Date(ms).toLocaleDateString() : new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    for (const [at, anchor, px] of [[since, "start", left], [until, "end", W - right]]) {
      const label = svg("text", { x: String(px), y: String(H - 4), "text-anchor": anchor });
      label.textContent = stamp(at);
      box.append(label);
    }
    if (points.length) {
      box.append(svg("path", { class: "maxline", d: path("max_ms") }));
      box.append(svg("path", { class: "line", d: path("avg_ms") }));
      points.forEach((p) => {
        if (p.avg_ms === null) return;
        const dot = svg("circle", { class: "point", cx: String(x(p)), cy: String(y(p.avg_ms)), r: "2" });
        const title = svg("title", {});
        title.textContent = `${new Date(p.t).toLocaleString()}: ${ms(p.avg_ms)} avg, ${ms(p.max_ms)} max, ${p.up}/${p.total} up`;
        dot.append(title);
        box.append(dot);
      });
      const width = Math.max(1.5, (bucketMs / span) * plotW - 0.5);
      points.forEach((p) => {
        if (!p.total) return;
        const kind = p.up === p.total ? "up" : p.up === 0 ? "down" : "partial";
        const start = left + Math.max(0, (Date.parse(p.t) - since) / span) * plotW;
        box.append(svg("rect", {
          class: kind, x: String(start), y: String(H - bottom + 2),
          width: String(Math.min(width, W - right - start)), height: String(strip),
        }));
      });
    } else {
      const label = svg("text", { x: String(W / 2), y: String(H / 2), "text-anchor": "middle" });
      label.textContent = "no outcomes in this window";
      box.append(label);
    }
    $("chart").replaceChildren(box);
  }

  // -- the loop ----------------------------------------------------------------------------

  function toLogin() {
    window.location.assign("/login?next=/");
  }

  let timer = null;
  let inFlight = false;

  async function refresh() {
    if (inFlight) return;
    inFlight = true;
    clearTimeout(timer);
    try {
      if (!view.groupsLoaded) await loadGroups();
      const [summary, checks] = await Promise.all([api("/api/summary"), api(checksQuery())]);
      renderCounts(summary.counts, summary.incidents.total);
      renderIncidents(summary.incidents);
      renderChecks(checks);
      renderWorkers(summary.workers);
      renderInsight(summary.insight);
      renderReports(summary.reports);
      if (Date.now() - view.seriesAt > SERIES_EVERY_MS) await loadSeries();
      if (view.timeline) await loadTimeline();
      setLive("live", `live · updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      if (error instanceof LoggedOut) return toLogin();
      setLive("lost", `connection lost (${error.message}); retrying`);
    } finally {
      inFlight = false;
      timer = setTimeout(refresh, POLL_MS);
    }
  }

  // The filters live in the URL's fragment, so a filtered view survives a reload and can be
  // shared: /#state=down&group=payments&q=str
  function saveFilters() {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(view.filters)) if (value) params.set(key, value);
    history.replaceState(null, "", params.toString() ? `#${params}` : window.location.pathname);
  }

  function loadFilters() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    for (const key of Object.keys(view.filters)) view.filters[key] = params.get(key) || "";
    $("filter-state").value = view.filters.state;
    $("filter-name").value = view.filters.q;
  }

  function resetPages() {
    view.cursors = [null];
    saveFilters();
    refresh();
  }

  function wire() {
    $("filter-state").addEventListener("change", (e) => { view.filters.state = e.target.value; resetPages(); });
    $("filter-group").addEventListener("change", (e) => { view.filters.group = e.target.value; resetPages(); });
    let typing = null;
    $("filter-name").addEventListener("input", (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => { view.filters.q = e.target.value.trim(); resetPages(); }, 250);
    });
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    document.querySelectorAll(".tile[data-filter-state]").forEach((tile) => tile.addEventListener("click", () => {
      view.filters.state = tile.dataset.filterState;
      $("filter-state").value = view.filters.state;
      resetPages();
    }));
    $("page-next").addEventListener("click", () => {
      if (!view.nextAfter) return;
      view.cursors.push(view.nextAfter);
      refresh();
    });
    $("page-prev").addEventListener("click", () => {
      if (view.cursors.length > 1) view.cursors.pop();
      refresh();
    });
    $("page-first").addEventListener("click", resetPages);
    document.querySelectorAll("#windows button").forEach((button) => button.addEventListener("click", () => {
      view.window = button.dataset.window;
      document.querySelectorAll("#windows button").forEach((b) => b.classList.toggle("on", b === button));
      loadSeries().catch(() => {});
    }));
  }

  wire();
  loadFilters();
  // A link to another filtered view of this page (only the fragment differs) loads no page.
  window.addEventListener("hashchange", () => {
    loadFilters();
    if (view.groupsLoaded) $("filter-group").value = view.filters.group;
    view.cursors = [null];
    refresh();
  });
  refresh();
})();
