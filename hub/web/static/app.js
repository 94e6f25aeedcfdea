/* Shotline review page. Vanilla JS over the hub's JSON API; Leaflet for the map (vendored, no network). */
"use strict";

const $ = (sel) => document.querySelector(sel);
const S = {
  cfg: null, page: 0, total: 0, items: [], selIdx: -1, detail: null, shotIdx: 0, traces: null, nodeIdx: 0,
  nodes: new Map(), nodeMarkers: new Map(), incLayer: null, selLayer: null, gridLayer: null, gridOrigin: null,
  fitted: false, reloadTimer: null,
};
const REVIEW_COLORS = { unreviewed: "#ff8a1f", confirmed: "#e5333f", dismissed: "#7d8793", relabelled: "#b57bff" };
const NODE_COLORS = { online: "#2fbf71", stale: "#e0b400", offline: "#6b7380", clock: "#ff5ccd", clipping: "#ff6b2c", unknown: "#444" };
const CHI95 = 2.447746830680816; // sqrt of the chi-square(2) 95 % quantile

// ---------------------------------------------------------------- helpers
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function pad(n, w = 2) { return String(n).padStart(w, "0"); }
function fmtTime(ns, ms = false) {
  if (ns == null) return "—";
  const d = new Date(Number(BigInt(ns) / 1000000n));
  const s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return ms ? `${s}.${pad(d.getMilliseconds(), 3)}` : s;
}
function isoUtc(ns) { return ns == null ? "—" : new Date(Number(BigInt(ns) / 1000000n)).toISOString(); }
function ago(ns) {
  if (!ns) return "never";
  const s = (Date.now() - Number(BigInt(ns) / 1000000n)) / 1000;
  if (s < 90) return `${Math.max(0, Math.round(s))} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
function fmtRes(s) {
  if (s == null) return "—";
  const a = Math.abs(s);
  return a < 1e-3 ? `${(s * 1e6).toFixed(0)} µs` : `${(s * 1e3).toFixed(2)} ms`;
}
function toast(msg, err = false) {
  const t = $("#toast");
  t.textContent = msg;
  t.className = "show" + (err ? " err" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = err ? "err" : ""), err ? 5000 : 2200);
}
async function api(path, opts = {}) {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  if (opts.method && opts.method !== "GET") headers["X-CSRF-Token"] = S.cfg ? S.cfg.csrf : "";
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts, { headers }));
  if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("login required"); }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((body && body.error) || `HTTP ${r.status}`);
  return body;
}

// ---------------------------------------------------------------- map
function metresToLatLng(lat0, lon0, e, n) {
  const R = 6371008.8;
  return [lat0 + (n / R) * 180 / Math.PI, lon0 + (e / (R * Math.cos(lat0 * Math.PI / 180))) * 180 / Math.PI];
}
function ellipseLatLngs(lat, lon, ell, scale) {
  const a = ell.semi_major_m * scale, b = ell.semi_minor_m * scale, az = ell.azimuth_deg * Math.PI / 180;
  const pts = [];
  for (let i = 0; i < 64; i++) {
    const t = (i / 64) * 2 * Math.PI;
    // Major axis along the azimuth (clockwise from north), minor axis perpendicular.
    const e = a * Math.cos(t) * Math.sin(az) + b * Math.sin(t) * Math.cos(az);
    const n = a * Math.cos(t) * Math.cos(az) - b * Math.sin(t) * Math.sin(az);
    pts.push(metresToLatLng(lat, lon, e, n));
  }
  return pts;
}

const MetricGrid = L.Layer.extend({
  // Lines every 10 m … 20 km in a local east/north frame fixed at the network's centre (so they do not move when panning).
  onAdd(map) { this._map = map; this._group = L.layerGroup().addTo(map); map.on("moveend zoomend", this._draw, this); this._draw(); },
  onRemove(map) { map.off("moveend zoomend", this._draw, this); this._group.remove(); },
  _draw() {
    const map = this._map, g = this._group;
    g.clearLayers();
    const o = S.gridOrigin || map.getCenter();
    const lat0 = o.lat ?? o[0], lon0 = o.lng ?? o[1];
    const size = map.getSize();
    const mPerPx = map.distance(map.containerPointToLatLng([0, size.y / 2]), map.containerPointToLatLng([100, size.y / 2])) / 100;
    const steps = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000];
    const step = steps.find((s) => s / mPerPx >= 70) || steps[steps.length - 1];
    const b = map.getBounds();
    const R = 6371008.8, k = Math.PI / 180;
    const toE = (lon) => (lon - lon0) * k * R * Math.cos(lat0 * k), toN = (lat) => (lat - lat0) * k * R;
    const e0 = Math.floor(toE(b.getWest()) / step) * step, e1 = toE(b.getEast());
    const n0 = Math.floor(toN(b.getSouth()) / step) * step, n1 = toN(b.getNorth());
    if ((e1 - e0) / step > 200 || (n1 - n0) / step > 200) return;
    const style = { color: "#8896a8", weight: 1, opacity: 0.25, interactive: false };
    for (let e = e0; e <= e1; e += step) {
      g.addLayer(L.polyline([metresToLatLng(lat0, lon0, e, n0), metresToLatLng(lat0, lon0, e, n1 + step)],
        Object.assign({}, style, { opacity: e === 0 ? 0.5 : 0.25 })));
    }
    for (let n = n0; n <= n1; n += step) {
      g.addLayer(L.polyline([metresToLatLng(lat0, lon0, e0, n), metresToLatLng(lat0, lon0, e1 + step, n)],
        Object.assign({}, style, { opacity: n === 0 ? 0.5 : 0.25 })));
    }
    $("#gridinfo").textContent = `grid ${step >= 1000 ? step / 1000 + " km" : step + " m"}`;
  },
});

function initMap() {
  const map = L.map("map", { preferCanvas: true, zoomControl: true, attributionControl: true, maxZoom: 21, zoomSnap: 0.5 });
  map.attributionControl.setPrefix(false);
  map.setView([0, 0], 2);
  if (S.cfg.tiles) {
    L.tileLayer(S.cfg.tiles.url, { maxZoom: 21, maxNativeZoom: S.cfg.tiles.max_zoom, attribution: esc(S.cfg.tiles.attribution) }).addTo(map);
  }
  if (S.cfg.overlay) {
    const [s, w, n, e] = S.cfg.overlay.bounds;
    L.imageOverlay(S.cfg.overlay.url, [[s, w], [n, e]], { opacity: 0.85 }).addTo(map);
  }
  L.control.scale({ metric: true, imperial: false, maxWidth: 160 }).addTo(map);
  S.gridLayer = new MetricGrid().addTo(map);
  S.incLayer = L.layerGroup().addTo(map);
  S.nodeLayer = L.layerGroup().addTo(map);
  S.selLayer = L.layerGroup().addTo(map);
  map.on("moveend", () => { if ($("#filters").area.checked) reload(); });
  S.map = map;
}

function drawPoints(points) {
  S.incLayer.clearLayers();
  for (const [id, lat, lon, cep, rv, cls, rounds] of points) {
    const m = L.circleMarker([lat, lon], {
      radius: 5 + Math.min(rounds, 6), color: "#000", weight: 1, fillColor: REVIEW_COLORS[rv] || "#fff", fillOpacity: 0.9,
    });
    m.bindTooltip(`${esc(id)}<br>${rounds} round(s), ${esc(cls)}, CEP95 ${cep} m<br>${esc(rv)}`);
    m.on("click", () => openById(id));
    S.incLayer.addLayer(m);
  }
}

function drawNodes() {
  const pts = [];
  for (const n of S.nodes.values()) {
    if (n.lat_deg == null) continue;
    pts.push([n.lat_deg, n.lon_deg]);
    let mk = S.nodeMarkers.get(n.node_id);
    const color = NODE_COLORS[n.state] || "#444";
    if (!mk) {
      mk = L.circleMarker([n.lat_deg, n.lon_deg], { radius: 6, weight: 2, color: "#000", fillOpacity: 1, pane: "markerPane" });
      mk.on("click", () => mk.openPopup());
      S.nodeLayer.addLayer(mk);
      S.nodeMarkers.set(n.node_id, mk);
    }
    mk.setLatLng([n.lat_deg, n.lon_deg]);
    mk.setStyle({ fillColor: color });
    mk.unbindTooltip().bindTooltip(`<b>${esc(n.node_id)}</b> ${esc(n.state)}<br>last seen ${ago(n.last_seen_ns)}`
      + (n.noise_floor_dbfs != null ? `<br>noise ${n.noise_floor_dbfs.toFixed(1)} dBFS` : ""));
    mk.unbindPopup().bindPopup(nodePopup(n), { maxWidth: 320 });
  }
  if (!S.gridOrigin && pts.length) {
    const lat = pts.reduce((a, p) => a + p[0], 0) / pts.length, lon = pts.reduce((a, p) => a + p[1], 0) / pts.length;
    S.gridOrigin = [lat, lon];
  }
  if (!S.fitted && pts.length) {
    S.map.fitBounds(L.latLngBounds(pts).pad(0.15));
    S.fitted = true;
  }
}

function sparkline(trend) {
  if (!trend || trend.length < 2) return "<i>no noise-floor history yet</i>";
  const W = 260, H = 60;
  const t0 = trend[0][0], t1 = trend[trend.length - 1][0];
  const vs = trend.map((p) => p[1]);
  let lo = Math.min(...vs), hi = Math.max(...vs);
  if (hi - lo < 3) { lo -= 1.5; hi += 1.5; }
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * (W - 4) + 2, y = (v) => H - 2 - ((v - lo) / (hi - lo)) * (H - 4);
  const d = trend.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
  return `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="noise floor trend">
    <rect width="${W}" height="${H}" fill="#0c0f13"/><path d="${d}" stroke="#4c9aff" fill="none" stroke-width="1.5"/>
    <text x="4" y="11" fill="#9aa4b1" font-size="10">${hi.toFixed(1)} dBFS</text>
    <text x="4" y="${H - 4}" fill="#9aa4b1" font-size="10">${lo.toFixed(1)}</text></svg>`;
}

function nodePopup(n) {
  const row = (k, v) => (v == null ? "" : `<tr><td>${k}</td><td>${esc(v)}</td></tr>`);
  return `<b>${esc(n.node_id)}</b> — <span class="sq ns-${esc(n.state)}"></span>${esc(n.state)}
    ${n.reasons.length ? `<br><small>${n.reasons.map(esc).join("<br>")}</small>` : ""}
    <table>${row("last seen", ago(n.last_seen_ns))}${row("clock", n.clock_quality && `${n.clock_quality}${n.pps_locked ? " (PPS locked)" : ""}`)}
    ${row("clock offset", n.clock_offset_s != null ? fmtRes(n.clock_offset_s) : null)}
    ${row("noise floor", n.noise_floor_dbfs != null ? `${n.noise_floor_dbfs.toFixed(1)} dBFS` : null)}
    ${row("clipping", n.clipping_per_min != null ? `${n.clipping_per_min.toFixed(1)} /min` : null)}
    ${row("CPU", n.cpu_load_pct != null ? `${n.cpu_load_pct.toFixed(0)} %` : null)}
    ${row("temperature", n.temperature_c != null ? `${n.temperature_c.toFixed(0)} °C` : null)}
    ${row("outbox", n.outbox_depth)}${row("detections", n.n_detections)}
    ${row("timing flags", n.timing_flags.length ? n.timing_flags.join(", ") : null)}</table>
    <div>Noise floor trend</div>${sparkline(n.noise_trend)}`;
}

async function loadNodes() {
  try {
    const r = await api("/api/nodes");
    for (const n of r.nodes) S.nodes.set(n.node_id, n);
    drawNodes();
    const counts = {};
    for (const n of S.nodes.values()) counts[n.state] = (counts[n.state] || 0) + 1;
    $("#counts").dataset.nodes = Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ");
    renderCounts();
  } catch (e) { /* shown by the live indicator */ }
}

// The hub's own health (GET /api/hub): how busy it is, what it dropped. No hub in this process (a page over
// a store alone): the request fails and the chip stays hidden.
async function loadHub() {
  try {
    const h = await api("/api/hub");
    const dropped = Object.values(h.messages?.dropped || {}).reduce((a, b) => a + b, 0);
    const late = h.detections?.late || 0;
    const retrying = h.sinks?.retrying || 0;
    const el = $("#hub");
    el.textContent = `hub ${Math.round(100 * h.busy_fraction)} % busy` + (dropped ? ` · ${dropped} dropped` : "")
      + (late ? ` · ${late} late` : "") + (retrying ? ` · ${retrying} deliveries retrying` : "");
    el.title = `The hub's share of the last ${h.busy_window_s} s spent processing (near 100 %: it cannot keep up)`
      + (h.delivery_delay?.p95_s != null ? `; detections reach it within ${h.delivery_delay.p95_s.toFixed(2)} s (p95)` : "")
      + `; dropped: ${Object.entries(h.messages?.dropped || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "none"}`
      + (retrying ? `; webhook/CAP deliveries retrying, the oldest queued ${Math.round(h.sinks.retrying_for_s / 60)} min ago` : "");
    // Orange as `shotline-hub health` warns: too busy to keep up, or a partner's receiver failing for 5 minutes.
    el.classList.toggle("warn", h.busy_fraction > h.busy_warn_fraction
      || (h.sinks?.retrying_for_s ?? 0) > (h.sinks?.retry_warn_s ?? Infinity));
    el.hidden = false;
  } catch (e) { /* hidden: no hub here, or the page is offline (the live indicator says so) */ }
}

// ---------------------------------------------------------------- list
function filterParams(withPage) {
  const f = $("#filters"), p = new URLSearchParams();
  const w = f.window.value;
  if (w === "custom") {
    if (f.since.value) p.set("since", new Date(f.since.value).toISOString());
    if (f.until.value) p.set("until", new Date(f.until.value).toISOString());
  } else if (w !== "all") {
    p.set("since", new Date(Date.now() - Number(w) * 1000).toISOString());
  }
  if (f.state.value) p.set("state", f.state.value);
  if (f.review.value) p.set("review", f.review.value);
  if (f.cls.value) p.set("cls", f.cls.value);
  if (f.area.checked && S.map) {
    const b = S.map.getBounds();
    p.set("bbox", [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(6)).join(","));
  }
  if (withPage) { p.set("limit", S.cfg.page_size); p.set("offset", S.page * S.cfg.page_size); }
  return p;
}

async function reload(keepSel = true) {
  const [list, pts] = await Promise.all([api("/api/incidents?" + filterParams(true)), api("/api/incidents/points?" + filterParams(false))]);
  // Read the selection when the answer arrives, not when it was asked for:
  // the operator may have moved on while the request was in flight. The
  // incident the operator selected stays selected if the new list holds it.
  const selId = S.selId ?? (keepSel && S.selIdx >= 0 ? S.items[S.selIdx]?.incident_id : null);
  S.total = list.total;
  S.items = list.items;
  S.selIdx = selId ? S.items.findIndex((x) => x.incident_id === selId) : -1;
  renderList();
  drawPoints(pts.points);
}
function scheduleReload() { clearTimeout(S.reloadTimer); S.reloadTimer = setTimeout(() => reload().catch(() => {}), 300); }

function rowHtml(it) {
  const rv = it.review_state === "relabelled" && it.review_label ? `relabelled: ${it.review_label}` : it.review_state;
  return `<span class="bar" style="background:${REVIEW_COLORS[it.review_state]}"></span>
    <span class="t">${fmtTime(it.first_shot_ns)}</span><span class="badge rv-${esc(it.review_state)}">${esc(rv)}</span>
    <span class="meta">${it.rounds} round${it.rounds === 1 ? "" : "s"}${it.automatic_fire ? " (auto)" : ""} · ${esc(it.event_class)}
      · CEP95 ${it.cep95_m.toFixed(it.cep95_m < 10 ? 1 : 0)} m · ${it.n_nodes} nodes · ${esc(it.state)}</span>`;
}
function renderList() {
  const ol = $("#list");
  const frag = document.createDocumentFragment();
  S.items.forEach((it, i) => {
    const li = document.createElement("li");
    li.dataset.id = it.incident_id;
    li.innerHTML = rowHtml(it);
    if (i === S.selIdx) li.classList.add("sel");
    li.addEventListener("click", () => select(i));
    frag.appendChild(li);
  });
  ol.replaceChildren(frag);
  const pages = Math.max(1, Math.ceil(S.total / S.cfg.page_size));
  $("#total").textContent = `${S.total} incident${S.total === 1 ? "" : "s"}`;
  $("#page").textContent = `${S.page + 1} / ${pages}`;
  $("#prev").disabled = S.page === 0;
  $("#next").disabled = S.page + 1 >= pages;
  renderCounts();
}
function renderCounts() {
  $("#counts").textContent = [$("#counts").dataset.nodes ? `sensors: ${$("#counts").dataset.nodes}` : ""].filter(Boolean).join(" · ");
}
function updateRow(it) {
  const i = S.items.findIndex((x) => x.incident_id === it.incident_id);
  if (i < 0) return false;
  S.items[i] = Object.assign(S.items[i], it);
  const li = $("#list").children[i];
  if (li) { li.innerHTML = rowHtml(S.items[i]); li.classList.add("fresh"); setTimeout(() => li.classList.remove("fresh"), 2100); }
  return true;
}

async function select(i, opts = {}) {
  if (i < 0 || i >= S.items.length) return;
  const prev = $("#list").children[S.selIdx];
  if (prev) prev.classList.remove("sel");
  S.selIdx = i;
  S.selId = S.items[i].incident_id; // what the operator chose, even while its detail loads
  const li = $("#list").children[i];
  if (li) { li.classList.add("sel"); li.scrollIntoView({ block: "nearest" }); }
  await openDetail(S.items[i].incident_id, opts);
}
async function move(delta) {
  const n = S.selIdx + delta;
  if (n >= S.items.length && (S.page + 1) * S.cfg.page_size < S.total) { S.page++; await reload(false); return select(0); }
  if (n < 0 && S.page > 0) { S.page--; await reload(false); return select(S.items.length - 1); }
  return select(Math.max(0, Math.min(S.items.length - 1, n)));
}
async function openById(id) {
  const i = S.items.findIndex((x) => x.incident_id === id);
  if (i >= 0) return select(i);
  await openDetail(id, {});
}

// ---------------------------------------------------------------- detail
async function openDetail(id, opts) {
  const seq = (S.openSeq = (S.openSeq || 0) + 1);
  const d = await api(`/api/incidents/${encodeURIComponent(id)}`);
  if (seq !== S.openSeq) return; // the operator has moved on (fast j/k): a later request wins
  S.detail = d;
  S.shotIdx = Math.min(S.shotIdx, d.shots.length - 1);
  if (!opts.keepShot) S.shotIdx = 0;
  history.replaceState(null, "", "#" + encodeURIComponent(id));
  const wasHidden = $("#detail").hidden;
  $("#detail").hidden = false;
  if (wasHidden && S.map) S.map.invalidateSize(); // the map shrank: fit within what is visible
  renderDetail();
  drawSelection(!opts.keepShot);
  if (!opts.keepShot) S.nodeIdx = 0;
  await loadTraces();
}
function renderDetail() {
  const d = S.detail;
  $("#d-title").textContent = d.incident_id;
  const cad = d.cadence ? `${d.cadence.rate_hz ?? "—"} rounds/s (median interval ${(d.cadence.median_interval_s * 1e3).toFixed(0)} ms, span ${d.cadence.span_s} s)` : "single round";
  const facts = [
    ["time", `${fmtTime(d.first_shot_ns, true)} <small>(${isoUtc(d.first_shot_ns)})</small>`],
    ["position", `${d.lat_deg.toFixed(6)}, ${d.lon_deg.toFixed(6)}`],
    ["uncertainty", `CEP95 ${d.cep95_m.toFixed(1)} m`],
    ["rounds", `${d.rounds}${d.automatic_fire ? " — automatic fire" : ""}`],
    ["cadence", cad],
    ["class", esc(d.event_class)],
    ["status", `${esc(d.state)} (revision ${d.revision}, ${d.n_revisions} stored)`],
  ];
  $("#d-facts").innerHTML = facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
  const sc = d.class_scores || (d.shots[0] && d.shots[0].scores);
  $("#d-scores").innerHTML = sc ? Object.entries(sc).sort((a, b) => b[1] - a[1]).map(([k, v]) =>
    `<div class="score"><span>${esc(k)}</span><i style="width:${(v * 100).toFixed(0)}%"></i><span>${(v * 100).toFixed(0)} %</span></div>`).join("")
    : `<small class="muted">no class scores (no classifier model on the nodes)</small>`;
  const rs = d.review_state === "relabelled" && d.review_label ? `relabelled as <b>${esc(d.review_label)}</b>` : `<b>${esc(d.review_state)}</b>`;
  $("#review-state").innerHTML = `Review: <span class="badge rv-${esc(d.review_state)}" id="rv-badge">${rs}</span>`;
  $("#reviews").innerHTML = d.reviews.map((r) => `<li>${fmtTime(r.time_ns)} <b>${esc(r.reviewer)}</b> ${esc(r.decision)}${r.label ? " → " + esc(r.label) : ""}${r.note ? ": " + esc(r.note) : ""}</li>`).join("");
  $("#shot").innerHTML = d.shots.map((s, i) => `<option value="${i}">${i + 1}: ${fmtTime(s.time_ns, true)} · ${s.n_nodes} nodes · CEP95 ${s.cep95_m.toFixed(1)} m</option>`).join("");
  $("#shot").value = String(S.shotIdx);
  renderNodesTable();
  const p = d.provenance;
  $("#d-prov").textContent = p ? `Shotline ${p.version} · config ${p.config_hash}${p.model_sha256 ? " · model " + p.model_sha256.slice(0, 12) : ""}` : "";
}
function renderNodesTable() {
  const shot = S.detail.shots[S.shotIdx];
  if (!shot) { $("#nodes-table tbody").innerHTML = ""; return; }
  $("#nodes-table tbody").innerHTML = shot.nodes.map((n, i) => `<tr class="${n.used ? "" : "unused"}${i === S.nodeIdx ? " cur" : ""}" data-i="${i}">
    <td>${esc(n.node_id)}</td><td>${fmtRes(n.residual_s)}</td><td>${n.distance_m != null ? n.distance_m.toFixed(0) + " m" : "—"}</td>
    <td>${n.snr_db != null ? n.snr_db.toFixed(0) + " dB" : "—"}</td><td>${n.peak_dbfs != null ? n.peak_dbfs.toFixed(0) + " dBFS" + (n.clipped ? " ⚠" : "") : "—"}</td>
    <td>${esc(n.time_quality ?? "—")}</td><td><button type="button" class="play-n" data-i="${i}" title="Play this node's clip">▶</button></td></tr>`).join("");
  for (const b of document.querySelectorAll(".play-n")) b.addEventListener("click", (ev) => { ev.stopPropagation(); chooseNode(Number(b.dataset.i), true); });
  for (const tr of document.querySelectorAll("#nodes-table tbody tr")) tr.addEventListener("click", () => chooseNode(Number(tr.dataset.i)));
}
function drawSelection(fit) {
  S.selLayer.clearLayers();
  const d = S.detail;
  if (!d) return;
  L.circle([d.lat_deg, d.lon_deg], { radius: d.cep95_m, color: "#ffd166", weight: 1, dashArray: "4 4", fill: false, interactive: false }).addTo(S.selLayer);
  const bounds = [[d.lat_deg, d.lon_deg]];
  d.shots.forEach((s, i) => {
    const pts = ellipseLatLngs(s.lat_deg, s.lon_deg, s.ellipse, CHI95);
    L.polygon(pts, { color: i === S.shotIdx ? "#ffd166" : "#ffd16688", weight: i === S.shotIdx ? 2 : 1, fillOpacity: 0.12, interactive: false }).addTo(S.selLayer);
    L.circleMarker([s.lat_deg, s.lon_deg], { radius: 3, color: "#ffd166", fillOpacity: 1, interactive: false }).addTo(S.selLayer);
    pts.forEach((p) => bounds.push(p));
  });
  const shot = d.shots[S.shotIdx];
  if (shot) {
    for (const n of shot.nodes) {
      const nd = S.nodes.get(n.node_id);
      if (!nd || nd.lat_deg == null) continue;
      L.polyline([[shot.lat_deg, shot.lon_deg], [nd.lat_deg, nd.lon_deg]], { color: n.used ? "#4c9aff" : "#ff5c5c", weight: 1, opacity: 0.6, dashArray: n.used ? null : "3 4", interactive: false }).addTo(S.selLayer);
      bounds.push([nd.lat_deg, nd.lon_deg]);
    }
  }
  if (fit) S.map.fitBounds(L.latLngBounds(bounds).pad(0.1), { maxZoom: 18 });
}

// ---------------------------------------------------------------- waveforms, audio, spectrogram
async function loadTraces() {
  const shot = S.detail.shots[S.shotIdx];
  if (!shot) return;
  const [before, after] = $("#span").value.split(",");
  const id = S.detail.incident_id;
  const r = await api(`/api/incidents/${encodeURIComponent(id)}/traces?shot=${encodeURIComponent(shot.shot_id)}&before=${before}&after=${after}&bins=${Math.max(200, Math.min(2000, $("#traces").clientWidth | 0))}`);
  if (!S.detail || S.detail.incident_id !== id) return;
  S.traces = r;
  drawTraces();
  chooseNode(Math.min(S.nodeIdx, r.traces.length - 1), false);
}
function drawTraces() {
  const cv = $("#traces"), r = S.traces;
  if (!r) return;
  const dpr = window.devicePixelRatio || 1, W = cv.clientWidth, rowH = Math.max(26, Math.round(parseFloat(getComputedStyle(document.documentElement).fontSize) * 1.9));
  const H = rowH * r.traces.length + 22;
  cv.style.height = H + "px";
  cv.width = W * dpr; cv.height = H * dpr;
  const g = cv.getContext("2d");
  g.scale(dpr, dpr);
  g.fillStyle = "#0c0f13"; g.fillRect(0, 0, W, H);
  const labelW = 86, plotW = W - labelW - 6, span = r.before_s + r.after_s;
  const xOf = (t) => labelW + ((t + r.before_s) / span) * plotW;
  const fs = Math.round(rowH * 0.42);
  g.font = `${fs}px system-ui, sans-serif`;
  // Time axis: ticks at a round step.
  const step = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1].find((s) => span / s <= 8) || 1;
  g.strokeStyle = "#2a323c"; g.fillStyle = "#7d8793"; g.lineWidth = 1;
  for (let t = Math.ceil(-r.before_s / step) * step; t <= r.after_s + 1e-9; t += step) {
    const x = Math.round(xOf(t)) + 0.5;
    g.beginPath(); g.moveTo(x, 0); g.lineTo(x, H - 18); g.stroke();
    g.fillText(`${(t * 1e3).toFixed(step < 0.001 ? 1 : 0)} ms`, x - 14, H - 5);
  }
  g.strokeStyle = "#ffd166"; g.beginPath(); g.moveTo(Math.round(xOf(0)) + 0.5, 0); g.lineTo(Math.round(xOf(0)) + 0.5, H - 18); g.stroke();
  r.traces.forEach((tr, i) => {
    const y0 = i * rowH, mid = y0 + rowH / 2;
    if (i === S.nodeIdx) { g.fillStyle = "#1d355788"; g.fillRect(0, y0, W, rowH); }
    g.fillStyle = tr.used ? "#e8eaed" : "#ff8a8a";
    g.fillText(tr.node_id, 4, mid - 1);
    g.fillStyle = "#9aa4b1";
    g.fillText(fmtRes(tr.residual_s), 4, mid + fs);
    if (!tr.available) { g.fillStyle = "#6b7380"; g.fillText(tr.reason, labelW + 6, mid + fs / 3); return; }
    const k = (rowH * 0.45) / Math.max(tr.peak, 1e-6), n = tr.min.length;
    g.strokeStyle = tr.used ? "#4c9aff" : "#ff6b6b";
    g.beginPath();
    for (let j = 0; j < n; j++) {
      const x = labelW + (j / n) * plotW + 0.5;
      g.moveTo(x, mid - tr.max[j] * k); g.lineTo(x, mid - tr.min[j] * k + 0.5);
    }
    g.stroke();
    if (tr.onset_rel_s != null) { // the node's own pick
      const x = xOf(tr.onset_rel_s);
      g.fillStyle = "#ffd166"; g.beginPath(); g.moveTo(x - 4, y0 + 2); g.lineTo(x + 4, y0 + 2); g.lineTo(x, y0 + 8); g.fill();
    }
  });
}
function chooseNode(i, play = false) {
  if (!S.traces || !S.traces.traces.length) return;
  S.nodeIdx = Math.max(0, Math.min(S.traces.traces.length - 1, i));
  const tr = S.traces.traces[S.nodeIdx];
  drawTraces();
  renderNodesTable();
  $("#play-node").textContent = `${tr.node_id} · ${tr.detection_id}`;
  const q = `?node=${encodeURIComponent(tr.node_id)}`;
  const audio = $("#audio");
  const src = `/api/clips/${encodeURIComponent(tr.detection_id)}.wav${q}`;
  if (tr.available) {
    if (!audio.src.endsWith(src)) { audio.src = src; $("#play-status").textContent = ""; }
    $("#spec-img").src = `/api/clips/${encodeURIComponent(tr.detection_id)}/spectrogram.png${q}`;
    $("#spec-cap").textContent = `${tr.node_id}: ${tr.clip_duration_s.toFixed(2)} s clip, 0–${Math.min(12, tr.sample_rate_hz / 2000).toFixed(0)} kHz; onset at ${(-tr.clip_start_rel_s + tr.onset_rel_s).toFixed(2)} s`;
    $("#b-play").disabled = false;
    if (play) audio.play().catch((e) => toast(`cannot play: ${e.message}`, true));
  } else {
    audio.removeAttribute("src"); $("#spec-img").removeAttribute("src");
    $("#spec-cap").textContent = `${tr.node_id}: ${tr.reason}`;
    $("#b-play").disabled = true;
  }
}
function togglePlay() {
  const a = $("#audio");
  if (!a.src) return;
  if (a.paused) a.play().catch((e) => toast(`cannot play: ${e.message}`, true)); else a.pause();
}

// ---------------------------------------------------------------- review
async function doReview(decision, advance = false) {
  if (!S.detail || S.cfg.role !== "operator") return;
  const body = { decision, note: $("#note").value };
  if (decision === "relabel") {
    body.label = $("#relabel").value;
    if (!body.label) { toast("choose a class to relabel as", true); $("#relabel").focus(); return; }
  }
  const id = S.detail.incident_id;
  try {
    const r = await api(`/api/incidents/${encodeURIComponent(id)}/review`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    $("#note").value = "";
    toast(`${id}: ${r.review_state}`);
    applyReview(Object.assign({}, r.review, { review_state: r.review_state }));
    if (advance) await move(1);
  } catch (e) { toast(`review failed: ${e.message}`, true); }
}
function applyReview(rv) {
  updateRow({ incident_id: rv.incident_id, review_state: rv.review_state, review_label: rv.decision === "relabel" ? rv.label : null });
  if (S.detail && S.detail.incident_id === rv.incident_id) {
    if (!S.detail.reviews.some((x) => x.review_id === rv.review_id)) S.detail.reviews.push(rv);
    S.detail.review_state = rv.review_state;
    S.detail.review_label = rv.decision === "relabel" ? rv.label : null;
    renderDetail();
  }
  scheduleReload(); // map colours and the filtered list follow
}

// ---------------------------------------------------------------- live updates
function connectEvents() {
  const es = new EventSource("/api/events");
  const live = $("#live");
  es.addEventListener("hello", () => { live.textContent = "live"; live.className = "live on"; });
  es.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  es.addEventListener("incident", (ev) => {
    const it = JSON.parse(ev.data);
    const known = updateRow(it);
    if (!known) toast(`new incident ${it.incident_id}: ${it.rounds} round(s)`);
    if (S.detail && S.detail.incident_id === it.incident_id) openDetail(it.incident_id, { keepShot: true }).catch(() => {});
    scheduleReload();
  });
  es.addEventListener("review", (ev) => applyReview(JSON.parse(ev.data)));
  es.addEventListener("node", (ev) => { const n = JSON.parse(ev.data); S.nodes.set(n.node_id, n); drawNodes(); });
  es.addEventListener("resync", () => { reload().catch(() => {}); loadNodes(); });
}

// ---------------------------------------------------------------- keyboard
function onKey(ev) {
  const tag = (ev.target.tagName || "").toLowerCase();
  if (ev.key === "Escape") {
    if (["input", "textarea", "select"].includes(tag)) { ev.target.blur(); return; }
    $("#detail").hidden = true; S.selLayer.clearLayers(); S.map.invalidateSize(); return;
  }
  if (["input", "textarea", "select"].includes(tag) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  const acts = {
    j: () => move(1), k: () => move(-1), ArrowDown: () => move(1), ArrowUp: () => move(-1),
    c: () => doReview("confirm", true), d: () => doReview("dismiss", true), r: () => doReview("relabel", false),
    n: () => $("#note").focus(), " ": togglePlay, "[": () => chooseNode(S.nodeIdx - 1, true), "]": () => chooseNode(S.nodeIdx + 1, true),
    f: () => drawSelection(true), "?": () => $("#help").showModal(),
    u: () => { $("#filters").review.value = "unreviewed"; S.page = 0; reload(); },
  };
  if (acts[k]) { ev.preventDefault(); acts[k](); }
}

// ---------------------------------------------------------------- start
async function main() {
  S.cfg = await api("/api/config");
  document.body.classList.toggle("readonly", S.cfg.role !== "operator");
  $("#who").textContent = `${S.cfg.user} (${S.cfg.role})`;
  $("#logout").csrf_token.value = S.cfg.csrf;
  for (const l of S.cfg.labels) $("#relabel").insertAdjacentHTML("beforeend", `<option value="${esc(l)}">${esc(l)}</option>`);
  initMap();
  const f = $("#filters");
  f.addEventListener("change", (ev) => {
    $("#custom-time").hidden = f.window.value !== "custom";
    S.page = 0; reload(false).catch((e) => toast(e.message, true));
  });
  $("#prev").addEventListener("click", () => { S.page--; reload(false); });
  $("#next").addEventListener("click", () => { S.page++; reload(false); });
  $("#d-close").addEventListener("click", () => { $("#detail").hidden = true; S.selLayer.clearLayers(); S.map.invalidateSize(); });
  $("#b-confirm").addEventListener("click", () => doReview("confirm"));
  $("#b-dismiss").addEventListener("click", () => doReview("dismiss"));
  $("#b-relabel").addEventListener("click", () => doReview("relabel"));
  $("#b-play").addEventListener("click", togglePlay);
  $("#help-btn").addEventListener("click", () => $("#help").showModal());
  $("#shot").addEventListener("change", () => { S.shotIdx = Number($("#shot").value); renderNodesTable(); drawSelection(false); loadTraces(); });
  $("#span").addEventListener("change", () => loadTraces());
  $("#traces").addEventListener("click", (ev) => {
    chooseNode(Math.floor(ev.offsetY / ($("#traces").clientHeight - 22) * (S.traces?.traces.length || 1)), true);
  });
  const audio = $("#audio");
  audio.addEventListener("playing", () => { $("#play-status").textContent = "playing"; $("#b-play").textContent = "❚❚ Pause"; document.body.dataset.played = "1"; });
  audio.addEventListener("pause", () => { $("#play-status").textContent = `paused at ${audio.currentTime.toFixed(2)} s`; $("#b-play").textContent = "▶ Play"; });
  audio.addEventListener("ended", () => { $("#play-status").textContent = "played"; $("#b-play").textContent = "▶ Play"; });
  audio.addEventListener("error", () => { $("#play-status").textContent = "clip unavailable"; });
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => drawTraces());
  await loadNodes();
  await reload(false);
  connectEvents();
  setInterval(loadNodes, 5000);
  await loadHub();
  setInterval(loadHub, 5000);
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash) await openById(hash).catch(() => {});
  document.body.dataset.ready = "1";
}
main().catch((e) => toast(`cannot start: ${e.message}`, true));
