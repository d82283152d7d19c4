// The VisionFM page: pick a model, drop an image or DICOM file, see the prediction, heat map and segmentation.
// Plain JavaScript, no library and no network access beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];
let current = null;  // the chosen File (the first one)
let chosen = [];  // every chosen File: the B-scans of one volume for a volume model

function headers() {
  const key = $("apikey").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function setState(state, text) {
  document.body.dataset.state = state;
  if (text !== undefined) $("status").textContent = text;
}

function showError(msg) {
  $("error").textContent = msg || "";
}

async function call(path, form) {
  const resp = await fetch(path, { method: form ? "POST" : "GET", body: form, headers: headers() });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    throw new Error(`${resp.status}: ${detail}`);
  }
  return body;
}

function chosenModel() {
  return models.find((m) => m.name === $("model").value);
}

async function loadModels() {
  try {
    const body = await call("/v1/models");
    models = body.models;
    const sel = $("model");
    sel.innerHTML = "";
    for (const m of models) {
      const opt = document.createElement("option");
      opt.value = m.name;
      opt.textContent = `${m.name} (${m.kind})`;
      sel.appendChild(opt);
    }
    describeModel();
    setState("ready", `${models.length} model${models.length === 1 ? "" : "s"} served`);
    showError("");
    $("run").disabled = !current;
  } catch (e) {
    setState("error", "cannot list the models");
    showError(e.message.startsWith("401") ? "This server needs an API key: enter it below, then reload the " +
      "models by choosing the key field and pressing Enter." : e.message);
  }
}

function describeModel() {
  const m = chosenModel();
  if (!m) return;
  const p = m.preprocessing;
  $("model-info").textContent = `${m.kind}; encoder ${m.arch} sha256 ${String(m.encoder_sha256).slice(0, 12)}; ` +
    `input ${p.input_size ? p.input_size + " px" : "native size"}; ${m.backend} backend`;
  $("classes-box").hidden = m.kind !== "vl";
  if (m.kind === "vl" && m.zero_shot) {
    $("classes").title = `known categories: ${m.zero_shot.known_categories.join(", ")}`;
  }
}

function fmt(v) {
  return Math.abs(v) >= 100 || Number.isInteger(v) ? v.toFixed(1) : v.toFixed(3);
}

function showScores(res) {
  const body = $("scores").querySelector("tbody");
  body.innerHTML = "";
  let headline = "";
  const rows = [];
  if (res.probabilities) {
    for (const [k, v] of Object.entries(res.probabilities)) rows.push([k, v, true]);
    headline = res.prediction !== undefined ? res.prediction
      : (res.positive.length ? res.positive.join(", ") : "no positive output");
    if (res.driving_bscan !== undefined) {
      $("filename").textContent += `; ${res.n_bscans} B-scans, B-scan ${res.driving_bscan} drove the decision`;
    }
  } else if (res.values) {
    for (const [k, v] of Object.entries(res.values)) rows.push([k, v, false]);
    headline = rows.map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
  } else if (res.landmarks) {
    for (const [k, v] of Object.entries(res.landmarks)) rows.push([k, `(${v[0].toFixed(1)}, ${v[1].toFixed(1)})`]);
    headline = `${rows.length} landmark${rows.length === 1 ? "" : "s"}`;
  } else if (res.pixel_fraction) {
    for (const [k, v] of Object.entries(res.pixel_fraction)) rows.push([k, v, true]);
    headline = rows.map(([k, v]) => `${k} ${(100 * v).toFixed(1)}% of pixels`).join(", ");
  } else if (res.features) {
    headline = `features: ${res.features.cls.length} + ${res.features.patch_mean.length} values`;
  }
  for (const [k, v, bar] of rows) {
    const tr = body.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = typeof v === "number" ? fmt(v) : v;
    const cell = tr.insertCell();
    if (bar) {
      cell.className = "bar";
      const span = document.createElement("span");
      span.style.width = `${Math.round(100 * Math.max(0, Math.min(1, v)))}%`;
      cell.appendChild(span);
    }
  }
  $("prediction").textContent = headline;
}

function form(extra, files) {
  const f = new FormData();
  for (const file of files || [current]) f.append("file", file, file.name);
  f.append("model", $("model").value);
  for (const [k, v] of Object.entries(extra || {})) f.append(k, v);
  return f;
}

async function run() {
  const m = chosenModel();
  if (!current || !m) return;
  showError("");
  $("run").disabled = true;
  setState("running", `running ${m.name}...`);
  for (const id of ["image", "heatmap", "segmentation"]) $(id).removeAttribute("src");
  $("seg-figure").hidden = true;
  try {
    const extra = m.inputs.includes("interval_days")
      ? { interval_days: window.prompt("Interval to the next visit (days)", "365") || "365" } : {};
    if (m.kind === "vl") {
      extra.classes = $("classes").value;
      extra.domain_knowledge = $("knowledge").checked ? "true" : "false";
    }
    const stack = m.kind === "volume" && chosen.length > 1;  // several images: the B-scans of one volume
    if (stack) extra.bscans = "true";
    const pred = await call("/v1/predict", form(extra, stack ? chosen : [current]));
    const res = pred.results[0];
    $("filename").textContent = `${res.filename} (${res.width} x ${res.height})`;
    showScores(res);
    const single = chosen.length === 1 && current.type.startsWith("image/");
    if (m.explain && (m.kind !== "volume" || single)) {  // attention of one image, not of a volume
      const ex = await call(`/v1/explain?format=json&map=${$("map").value}`, form());
      $("image").src = `data:image/png;base64,${ex.image}`;
      $("heatmap").src = `data:image/png;base64,${ex.overlay}`;
    } else {
      $("image").src = URL.createObjectURL(current);
    }
    if (m.kind === "segment") {
      const seg = await call("/v1/segment?format=json", form());
      $("segmentation").src = `data:image/png;base64,${seg.overlay}`;
      $("seg-figure").hidden = false;
    }
    setState("done", `${m.name}: done`);
  } catch (e) {
    showError(e.message);
    setState("error", "request failed");
  } finally {
    $("run").disabled = false;
  }
}

function choose(files) {
  if (!files || !files.length) return;
  chosen = Array.from(files);
  current = chosen[0];
  $("run").disabled = !chosenModel();
  run();
}

$("file").addEventListener("change", (e) => choose(e.target.files));
$("run").addEventListener("click", run);
$("model").addEventListener("change", () => { describeModel(); if (current) run(); });
$("apikey").addEventListener("keydown", (e) => { if (e.key === "Enter") loadModels(); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  choose(e.dataTransfer.files);
});
setState("loading");
loadModels();
