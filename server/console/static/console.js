// The dpl console's behaviour: the DAG and lineage graphs (cytoscape laid
// out by dagre, left to right, so 50 pipelines read as layers rather than a
// hairball) and a job page that follows its job by server-sent events.
"use strict";

const COLOURS = { success: "#2e9d5b", failure: "#d64040", killed: "#d64040", running: "#e0a010", created: "#e0a010",
                  none: "#9aa3b2", repo: "#5b7bd6", user: "#5b7bd6", pipeline: "#2e9d5b", root: "#e0a010" };

function graphOf(el) { return JSON.parse(el.dataset.graph); }

function makeGraph(el, elements, onTap) {
  const cy = cytoscape({
    container: el, elements, wheelSensitivity: 0.3, minZoom: 0.1, maxZoom: 3,
    style: [
      { selector: "node", style: { "label": "data(label)", "background-color": "data(colour)", "color": "#1d2330",
        "font-size": 11, "text-valign": "bottom", "text-margin-y": 4, "width": 26, "height": 26, "shape": "data(shape)" } },
      { selector: "node:selected", style: { "border-width": 3, "border-color": "#1d2330" } },
      { selector: "edge", style: { "width": 1.5, "line-color": "#b8c0cc", "target-arrow-color": "#b8c0cc",
        "target-arrow-shape": "triangle", "curve-style": "bezier" } },
    ],
    layout: { name: "dagre", rankDir: "LR", nodeSep: 18, rankSep: 70 },
  });
  cy.on("tap", "node", (event) => onTap(event.target));
  // A small graph fitted to the box would be drawn huge; keep it at most a little over life size.
  if (cy.zoom() > 1.25) { cy.zoom(1.25); cy.center(); }
  return cy;
}

function dag(el) {
  const graph = graphOf(el);
  const elements = graph.nodes.map((n) => ({ data: { id: n.id, label: n.id, url: n.url,
    colour: COLOURS[n.state] || COLOURS.none, shape: n.kind === "repo" ? "round-rectangle" : "ellipse" } }))
    .concat(graph.edges.map((e) => ({ data: { id: e.source + "->" + e.target, source: e.source, target: e.target } })));
  window.dplGraph = makeGraph(el, elements, (node) => { window.location.href = node.data("url"); });
}

function lineageElements(graph) {
  return graph.nodes.map((n) => ({ group: "nodes", data: { id: n.id, label: n.repo + ":" + n.path, node: n,
    colour: n.root ? COLOURS.root : COLOURS[n.origin] || COLOURS.none, shape: n.origin === "user" ? "round-rectangle" : "ellipse" } }))
    .concat(graph.edges.map((e) => ({ group: "edges", data: { id: e.source + "->" + e.target, source: e.source, target: e.target } })));
}

function text(tag, value, attrs) {
  const el = document.createElement(tag);
  if (value !== undefined) el.textContent = value;
  Object.entries(attrs || {}).forEach(([k, v]) => el.setAttribute(k, v));
  return el;
}

function lineage(el) {
  const info = document.getElementById("node-info");
  const cy = makeGraph(el, lineageElements(graphOf(el)), (target) => {
    const n = target.data("node");
    const q = (params) => new URLSearchParams(params).toString();
    info.replaceChildren(text("h3", n.repo + ":" + n.path));
    info.append(text("p", "commit " + n.commit), text("p", "hash " + (n.hash || "")));
    const file = text("a", "open the file", { href: "/repos/" + encodeURIComponent(n.repo) + "/file?" + q({ ref: n.commit, path: n.path }) });
    info.append(file);
    if (n.datum) {
      const d = n.datum, pipeline = d.pipeline || n.repo;
      const p = text("p", "made by datum ");
      p.append(text("a", d.id.slice(0, 12), { href: "/jobs/" + d.job + "/datums/" + d.id + "?" + q({ pipeline }) }));
      if (d.job) { p.append(" of job "); p.append(text("a", pipeline + "@" + d.job.slice(0, 12), { href: "/jobs/" + d.job + "?" + q({ pipeline }) })); }
      info.append(p);
      if (d.spec_hash) info.append(text("p", "spec version " + d.spec_hash.slice(0, 12)));
      if (d.code_label) info.append(text("p", "code " + d.code_label));
      if (d.executor && d.executor.kind) info.append(text("p", "executor " + d.executor.kind));
    } else {
      info.append(text("p", "a user commit: where this lineage begins"));
    }
    const expand = text("button", "expand", { type: "button", id: "expand" });
    expand.addEventListener("click", async () => {
      const answer = await fetch("/lineage.json?" + q({ repo: n.repo, path: n.path, ref: n.commit }));
      if (!answer.ok) { expand.textContent = "cannot expand (" + answer.status + ")"; return; }
      const fresh = lineageElements(await answer.json()).filter((e) => cy.getElementById(e.data.id).empty());
      fresh.forEach((e) => { if (e.group === "nodes") e.data.colour = COLOURS[e.data.node.origin] || COLOURS.none; });
      cy.add(fresh);
      cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 18, rankSep: 70 }).run();
      if (cy.zoom() > 1.25) { cy.zoom(1.25); cy.center(); }
      expand.textContent = "expanded (" + fresh.length + " new)";
    });
    info.append(text("p"), expand);
  });
  window.dplGraph = cy;
}

function followJob(el) {
  // One stream per page: the server pushes a `job` event on every change and
  // closes it when the job ends; then the datum table is fetched once.
  if (!["created", "running"].includes(el.dataset.state)) return;
  const source = new EventSource(el.dataset.events);
  source.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    el.dataset.state = job.state;
    el.querySelectorAll("[data-field]").forEach((f) => {
      const v = job[f.dataset.field];
      if (f.dataset.field === "duration") f.textContent = v == null ? "" : (v < 1 ? Math.round(v * 1000) + " ms" : v.toFixed(1) + " s");
      else f.textContent = v == null ? "" : v;
      if (f.dataset.field === "state") f.className = "state " + v;
    });
    const done = job.processed + job.skipped + job.failed;
    el.querySelector("[data-bar]").style.width = (job.total ? (100 * done) / job.total : 0) + "%";
    if (!["created", "running"].includes(job.state)) {
      source.close();
      const here = window.location.pathname + window.location.search;
      htmx.ajax("GET", here + (window.location.search ? "&" : "?") + "fragment=datums", { target: "#datums", swap: "innerHTML" });
      htmx.ajax("GET", here + (window.location.search ? "&" : "?") + "fragment=meta", { target: "#job-meta", swap: "outerHTML" });
    }
  });
  source.onerror = () => { if (!["created", "running"].includes(el.dataset.state)) source.close(); };
}

document.addEventListener("DOMContentLoaded", () => {
  const d = document.getElementById("dag"); if (d) dag(d);
  const l = document.getElementById("lineage"); if (l) lineage(l);
  const j = document.getElementById("job"); if (j) followJob(j);
});
