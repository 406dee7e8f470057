// nbkube's read-only page: a namespace's runs and sweeps, a run's cells as they execute, its notebook.
// Everything is read with the viewer's own credentials through the page's origin (the user API behind
// the Kubernetes API server, reached with `nbkube ui` or `kubectl proxy`); nothing is written. Text from
// the cluster only ever goes into textContent and attributes, never into HTML.
"use strict";

(function () {
  const UI = /^(.*)\/apis\/subresources\.nbkube\.io\/v1alpha1\/namespaces\/([^/]+)\/repositories\/results\/ui\//;
  const match = location.pathname.match(UI);
  const root = match ? match[1] : "";
  const namespace = match ? decodeURIComponent(match[2]) : "default";
  const ns = encodeURIComponent(namespace);
  const RUNS = `${root}/apis/nbkube.io/v1alpha1/namespaces/${ns}/notebookruns`;
  const REPO = `${root}/apis/subresources.nbkube.io/v1alpha1/namespaces/${ns}/repositories/results`;
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);

  function repoUrl(kind, path, ref) {
    const quoted = path.split("/").map(encodeURIComponent).join("/");
    return `${REPO}/${kind}/${quoted}?ref=${encodeURIComponent(ref)}`;
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children) node.append(child);
    return node;
  }

  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const body = await response.text();
    if (!response.ok) {
      let message = body.slice(0, 300);
      try { message = JSON.parse(body).message || message; } catch (e) { /* not JSON */ }
      const error = new Error(`${response.status}: ${message}`);
      error.status = response.status;
      throw error;
    }
    return JSON.parse(body);
  }

  function setStatus(text, isError) {
    const node = $("status");
    node.textContent = text;
    node.classList.toggle("error", Boolean(isError));
  }

  const status = (run) => run.status || {};
  const stateOf = (run) => status(run).state || "Pending";
  const isSweep = (run) => Boolean(status(run).sweep || Object.keys((run.spec && run.spec.matrix) || {}).length);
  const parentOf = (run) => {
    const owner = (run.metadata.ownerReferences || []).find((o) => o.controller && o.kind === "NotebookRun");
    return owner ? owner.name : null;
  };

  function progressOf(run) {
    const s = status(run);
    if (s.sweep) {
      const sw = s.sweep;
      return { done: (sw.succeeded || 0) + (sw.failed || 0), total: sw.total || 0, label: `${(sw.succeeded || 0) + (sw.failed || 0)}/${sw.total || 0} runs` };
    }
    if (s.cellsTotal) return { done: s.cellsDone || 0, total: s.cellsTotal, label: s.progress || `${s.cellsDone || 0}/${s.cellsTotal}`, unit: " cells" };
    return { done: 0, total: 0, label: s.progress || "" };
  }

  function progressBar(run, node) {
    const p = progressOf(run);
    const bar = node || el("div", { class: "progress" }, el("div", { class: "bar" }), el("span", { class: "label" }));
    bar.querySelector(".bar").style.width = p.total ? `${Math.round((100 * p.done) / p.total)}%` : "0";
    bar.querySelector(".label").textContent = p.label && p.unit ? `${p.label}${p.unit}` : p.label;
    bar.setAttribute("data-progress", p.label);
    return bar;
  }

  const stateBadge = (state) => el("span", { class: `state state-${String(state).toLowerCase()}`, text: state });
  const runLink = (name) => el("a", { href: `#run/${encodeURIComponent(name)}`, text: name });

  function renderRuns(list) {
    const top = list.items.filter((run) => !parentOf(run));
    top.sort((a, b) => (b.metadata.creationTimestamp || "").localeCompare(a.metadata.creationTimestamp || ""));
    const rows = top.map((run) => {
      const s = status(run);
      const kind = isSweep(run) ? `sweep of ${(s.sweep && s.sweep.total) || "?"}` : "run";
      return el("tr", { "data-run": run.metadata.name, "data-state": stateOf(run) },
        el("td", {}, runLink(run.metadata.name)),
        el("td", { text: kind }),
        el("td", {}, stateBadge(stateOf(run))),
        el("td", {}, progressBar(run)),
        el("td", { text: s.startTime || "" }),
        el("td", { text: s.duration || "" }));
    });
    document.querySelector("#runs tbody").replaceChildren(...rows);
    $("runs-empty").hidden = rows.length > 0;
  }

  function fact(name, value) {
    return value === undefined || value === null || value === "" ? [] : [el("dt", { text: name }), el("dd", { text: value })];
  }

  function renderRun(run, children) {
    const s = status(run);
    $("run-name").textContent = run.metadata.name;
    const view = $("run-view");
    view.setAttribute("data-run", run.metadata.name);
    view.setAttribute("data-state", stateOf(run));
    const given = (run.spec && run.spec.parameters) || {};
    const params = Object.keys(given).length ? JSON.stringify(given) : "";
    $("run-facts").replaceChildren(
      ...fact("state", stateOf(run)), ...fact("reason", s.reason), ...fact("message", s.message),
      ...fact("environment", run.spec && run.spec.environmentRef && run.spec.environmentRef.name),
      ...fact("parameters", params), ...fact("attempt", s.attempt || ""),
      ...fact("started", s.startTime), ...fact("finished", s.completionTime), ...fact("duration", s.duration),
      ...fact("sweep", parentOf(run)));
    progressBar(run, $("run-progress"));

    const sweep = isSweep(run);
    $("sweep").hidden = !sweep;
    $("cells-section").hidden = sweep;
    if (sweep) renderChildren(run, children || []);

    const cells = (s.cells || []).map((cell) => el("tr", { "data-cell-index": cell.index, "data-state": cell.state },
      el("td", { text: cell.index }), el("td", { text: cell.id }), el("td", {}, stateBadge(cell.state)),
      el("td", { text: cell.executionCount ?? "" }),
      el("td", { text: cell.durationMs === undefined || cell.durationMs === null ? "" : `${cell.durationMs} ms` }),
      el("td", { class: "summary", text: cell.summary || "" })));
    document.querySelector("#cells tbody").replaceChildren(...cells);
    $("cells-omitted").hidden = !s.cellsOmitted;
    $("cells-omitted").textContent = s.cellsOmitted ? `${s.cellsOmitted} cell entries left out of the status` : "";
    renderNotebook(s.result);
  }

  function renderChildren(run, children) {
    const matrix = Object.keys((run.spec && run.spec.matrix) || {});
    const byName = new Map(children.map((child) => [child.metadata.name, child]));
    const names = (status(run).sweep && status(run).sweep.children) || children.map((c) => c.metadata.name);
    const rows = names.map((name) => {
      const child = byName.get(name);
      if (!child) return el("tr", { "data-run": name, "data-state": "Pending" }, el("td", { text: name }), el("td"), el("td", {}, stateBadge("Pending")), el("td"), el("td"));
      const params = (child.spec && child.spec.parameters) || {};
      const shown = matrix.length ? matrix.map((k) => `${k}=${JSON.stringify(params[k])}`).join(" ") : JSON.stringify(params);
      return el("tr", { "data-run": name, "data-state": stateOf(child) },
        el("td", {}, runLink(name)), el("td", { text: shown }), el("td", {}, stateBadge(stateOf(child))),
        el("td", {}, progressBar(child)), el("td", { text: status(child).duration || "" }));
    });
    document.querySelector("#children tbody").replaceChildren(...rows);
    lastSweep = run;
    renderSweepSummary(run);
  }

  // The sweep's table from the parent's status (per child: parameters, state, duration, recorded values)
  // and a plot of one recorded value against a parameter, one line per value of another (an SVG drawn
  // here: no library, no script from elsewhere).
  const SVG = "http://www.w3.org/2000/svg";
  const plotChoice = { x: null, y: null, by: null };

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) node.append(child);
    return node;
  }

  function cellText(value) {
    return value === undefined || value === null ? "" : typeof value === "string" ? value : JSON.stringify(value);
  }

  function renderSweepSummary(run) {
    const sw = status(run).sweep || {};
    const rows = sw.rows || [];
    const box = $("sweep-summary");
    box.hidden = rows.length === 0;
    if (!rows.length) return;
    const params = sw.parameterNames || [];
    const values = sw.valueNames || [];
    const head = el("tr", {}, el("th", { text: "run" }), ...params.map((p) => el("th", { text: p })),
      el("th", { text: "state" }), el("th", { text: "duration" }), ...values.map((v) => el("th", { class: "value", text: v })));
    const body = rows.map((row) => el("tr", { "data-run": row.name, "data-state": row.state },
      el("td", {}, runLink(row.name)), ...params.map((p) => el("td", { text: cellText((row.parameters || {})[p]) })),
      el("td", {}, stateBadge(row.state)), el("td", { text: row.duration || row.reason || "" }),
      ...values.map((v) => el("td", { class: "value", text: cellText((row.values || {})[v]) }))));
    const table = el("table", { id: "sweep-table", class: "grid" }, el("thead", {}, head), el("tbody", {}, ...body));
    const omitted = sw.rowsOmitted ? [el("p", { class: "muted", text: `${sw.rowsOmitted} rows left out of the status (nbkube sweep reads summary.json)` })] : [];
    box.replaceChildren(el("h2", { text: "Table" }), table, ...omitted, ...sweepPlot(rows, params, values));
  }

  function numeric(value) {
    return typeof value === "number" && Number.isFinite(value);
  }

  function choose(kind, names, fallback) {
    if (!names.includes(plotChoice[kind])) plotChoice[kind] = fallback;
    const select = el("select", { id: `plot-${kind}`, onchange: (event) => { plotChoice[kind] = event.target.value || null; refreshPlot(); } });
    if (kind === "by") select.append(el("option", { value: "", text: "(none)" }));
    for (const name of names) select.append(el("option", { value: name, text: name, selected: name === plotChoice[kind] }));
    return el("label", { text: `${kind} ` }, select);
  }

  let lastSweep = null;
  function refreshPlot() {
    if (lastSweep) renderSweepSummary(lastSweep);
  }

  function sweepPlot(rows, params, values) {
    const columns = [...params, ...values];
    const ys = values.filter((v) => rows.some((row) => numeric((row.values || {})[v])));
    if (!params.length || !ys.length) return [];
    const controls = el("p", { class: "plot-controls" }, choose("x", columns, params[0]), " ", choose("y", ys, ys[0]), " ",
      choose("by", params, params.length > 1 ? params[1] : null));
    const pick = (row, name) => (params.includes(name) ? (row.parameters || {})[name] : (row.values || {})[name]);
    const points = rows.map((row) => ({ x: pick(row, plotChoice.x), y: pick(row, plotChoice.y), by: plotChoice.by ? cellText(pick(row, plotChoice.by)) : "" }))
      .filter((p) => numeric(p.y) && p.x !== undefined && p.x !== null);
    const numericX = points.every((p) => numeric(p.x));
    const categories = numericX ? [] : [...new Set(points.map((p) => cellText(p.x)))];
    const xOf = (p) => (numericX ? p.x : categories.indexOf(cellText(p.x)));
    const W = 640, H = 320, L = 56, R = 16, T = 28, B = 40;
    const xs = points.map(xOf), yv = points.map((p) => p.y);
    const span = (lo, hi) => (hi > lo ? [lo, hi] : [lo - 1, hi + 1]);
    const [x0, x1] = span(Math.min(...xs), Math.max(...xs));
    const [y0, y1] = span(Math.min(...yv), Math.max(...yv));
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    const plot = svg("svg", { id: "sweep-plot", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
    plot.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }), svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    const label = (x, y, text, anchor) => { const t = svg("text", { x, y, "text-anchor": anchor || "middle" }); t.textContent = text; return t; };
    plot.append(label((L + W - R) / 2, H - 6, plotChoice.x), label(L, T - 14, plotChoice.y, "start"));
    for (const y of [y0, y1]) plot.append(label(L - 6, sy(y) + 4, Number(y.toPrecision(4)), "end"));
    if (numericX) for (const x of [x0, x1]) plot.append(label(sx(x), H - B + 16, Number(x.toPrecision(4))));
    else categories.forEach((c, i) => plot.append(label(sx(i), H - B + 16, c)));
    const series = [...new Set(points.map((p) => p.by))];
    series.forEach((name, i) => {
      const own = points.filter((p) => p.by === name).sort((a, b) => xOf(a) - xOf(b));
      const cls = `series series-${i % 6}`;
      plot.append(svg("polyline", { class: cls, points: own.map((p) => `${sx(xOf(p))},${sy(p.y)}`).join(" ") }));
      for (const p of own) {
        const dot = svg("circle", { class: cls, cx: sx(xOf(p)), cy: sy(p.y), r: 4, "data-x": cellText(p.x), "data-y": p.y, "data-by": name });
        dot.append(svg("title", {}, document.createTextNode(`${plotChoice.by ? `${plotChoice.by}=${name} ` : ""}${plotChoice.x}=${cellText(p.x)} ${plotChoice.y}=${p.y}`)));
        plot.append(dot);
      }
      if (plotChoice.by) plot.append(label(W - R - 4, T + 14 * (i + 1), `${plotChoice.by}=${name}`, "end"));
    });
    return [el("h2", { text: "Plot" }), controls, plot];
  }

  let shownResult = "";
  function renderNotebook(result) {
    const section = $("notebook-section");
    if (!result || !result.commit || !result.path) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    const key = `${result.commit}:${result.path}`;
    $("notebook-origin").textContent = `${result.path} at ${result.commit.slice(0, 12)}${result.final === false ? " (checkpoint)" : ""}`;
    if (key === shownResult) return;  // reload the frame only for a new commit
    shownResult = key;
    const html = repoUrl("html", result.path, result.commit);
    const frame = $("notebook");
    frame.removeAttribute("data-loaded");
    frame.onload = () => frame.setAttribute("data-loaded", result.commit);
    frame.src = html;
    frame.setAttribute("data-commit", result.commit);
    $("notebook-open").href = html;
    $("notebook-download").href = repoUrl("files", result.path, result.commit);
    $("notebook-download").download = result.path.split("/").pop();
  }

  let generation = 0;
  let timer = null;

  async function refresh(mine) {
    const hash = location.hash.match(/^#run\/(.+)$/);
    try {
      if (hash) {
        const name = decodeURIComponent(hash[1]);
        const run = await getJson(`${RUNS}/${encodeURIComponent(name)}`);
        let children = null;
        if (isSweep(run)) children = (await getJson(RUNS)).items.filter((r) => parentOf(r) === name);
        if (mine !== generation) return;
        renderRun(run, children);
      } else {
        const list = await getJson(RUNS);
        if (mine !== generation) return;
        renderRuns(list);
      }
      setStatus(`updated ${new Date().toLocaleTimeString()}`, false);
    } catch (error) {
      if (mine !== generation) return;
      setStatus(String(error.message || error), true);
    }
    if (mine === generation) timer = setTimeout(() => refresh(mine), POLL_MS);
  }

  function route() {
    generation += 1;
    clearTimeout(timer);
    const onRun = /^#run\//.test(location.hash);
    $("runs-view").hidden = onRun;
    $("run-view").hidden = !onRun;
    if (!onRun) {
      shownResult = "";
      $("notebook").removeAttribute("src");
      $("notebook").removeAttribute("data-commit");
      $("notebook").removeAttribute("data-loaded");
    }
    refresh(generation);
  }

  $("namespace").textContent = namespace;
  window.addEventListener("hashchange", route);
  route();
})();
