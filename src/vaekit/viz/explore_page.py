"""The explorer's single page: inline HTML, CSS and JS, nothing fetched from elsewhere."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vaekit latent explorer</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:20px}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.15em;margin:28px 0 8px}
.sub,.note{color:#666}.note{font-size:.9em}
.row{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
.panel{background:#fff;border:1px solid #e4e4e4;padding:14px}
#image-panel{flex:0 0 auto;width:260px}
#slider-panel{flex:1 1 440px;min-width:0}
img.px{image-rendering:pixelated;background:#eee;display:block}
#decoded{width:224px;height:224px}
#original{width:84px;height:84px}
#sliders{display:inline-grid;gap:4px 10px;
grid-template-columns:max-content minmax(160px,260px) 4.5em max-content;
align-items:center;font-variant-numeric:tabular-nums}
#sliders label{font-weight:600}
button,select,input[type=number]{font:inherit;padding:3px 8px;margin:2px 4px 2px 0}
input[type=number]{width:6em}
#strip{height:64px;min-width:0}
#strip-row{display:flex;gap:10px;align-items:center;margin-top:10px}
.thumb{width:64px;height:64px}
#error{color:#b00020;min-height:1.3em;margin:4px 0}
</style></head>
<body><main>
<h1>vaekit latent explorer</h1>
<p class="sub" id="about">loading the model&hellip;</p>
<p id="error" role="alert"></p>
<div class="row">
  <div class="panel" id="image-panel">
    <img id="decoded" class="px" alt="decoded image" data-state="empty">
    <div style="margin-top:10px">
      <button id="encode">encode a random test image</button><br>
      <button id="prior">sample z from the prior</button>
      <button id="reset">all zeros</button>
    </div>
    <div id="label-row" hidden>class <select id="label"></select></div>
    <div id="encoded" hidden style="margin-top:10px" class="note">
      <img id="original" class="px" alt="encoded test image">
      <span id="encoded-caption"></span>
    </div>
  </div>
  <div class="panel" id="slider-panel">
    <div id="sliders"></div>
    <p class="note" id="slider-note"></p>
  </div>
</div>
<h2>Interpolation between two test images</h2>
<div class="panel">
  image <input type="number" id="ia" min="0" value="0">
  and <input type="number" id="ib" min="0" value="1">
  <select id="method"><option value="linear">linear</option>
  <option value="slerp">spherical (slerp)</option></select>
  <button id="pair">random pair</button>
  <button id="interp">interpolate</button>
  <div id="strip-row">
    <img id="thumb-a" class="px thumb" alt="first image">
    <img id="strip" class="px" alt="interpolation strip" data-state="empty">
    <img id="thumb-b" class="px thumb" alt="second image">
  </div>
  <p class="note">The ends are the images' reconstructions from their posterior means; the
  steps between decode points on the path between those means.</p>
</div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const state = {info: null, z: [], busy: false, pending: false, decodes: 0, url: null};
window.explorer = state;  // inspected by the end-to-end test

function showError(text) { $("error").textContent = text || ""; }

async function fetchOk(url) {
  const r = await fetch(url);
  if (!r.ok) { throw new Error((await r.text()).trim() || ("HTTP " + r.status)); }
  return r;
}

function query() {
  let q = "z=" + state.z.map((v) => v.toFixed(4)).join(",");
  if (state.info.conditional) { q += "&label=" + $("label").value; }
  return q;
}

async function decode() {
  if (state.busy) { state.pending = true; return; }  // the newest values win
  state.busy = true;
  const q = query();
  const img = $("decoded");
  img.dataset.state = "loading";
  try {
    const blob = await (await fetchOk("/decode?" + q)).blob();
    const url = URL.createObjectURL(blob);
    await new Promise((ok, fail) => { img.onload = ok; img.onerror = fail; img.src = url; });
    if (state.url) { URL.revokeObjectURL(state.url); }
    state.url = url;
    state.decodes += 1;
    img.dataset.z = q;
    showError("");
  } catch (e) { showError(String(e.message || e)); }
  state.busy = false;
  if (state.pending) { state.pending = false; decode(); }
  else { img.dataset.state = "ready"; }
}

function syncSliders() {
  for (const d of state.info.shown) {
    const s = $("s" + d), v = state.z[d];
    s.value = String(Math.max(-4, Math.min(4, v)));
    $("v" + d).textContent = v.toFixed(2);
  }
}

function buildSliders(info) {
  const box = $("sliders");
  for (const d of info.shown) {
    const label = document.createElement("label");
    label.htmlFor = "s" + d;
    label.textContent = "z" + d;
    const s = document.createElement("input");
    Object.assign(s, {type: "range", id: "s" + d, min: "-4", max: "4", step: "0.01",
                      value: "0"});
    s.dataset.dim = String(d);
    s.addEventListener("input", () => {
      state.z[d] = parseFloat(s.value);
      $("v" + d).textContent = state.z[d].toFixed(2);
      decode();
    });
    const out = document.createElement("span");
    out.id = "v" + d;
    out.textContent = "0.00";
    const kl = document.createElement("span");
    kl.className = "note";
    kl.textContent = "KL " + info.kl[d].toFixed(2);
    box.append(label, s, out, kl);
  }
  const hidden = info.latent_dim - info.shown.length;
  $("slider-note").textContent = "Sliders in order of activity (mean KL per dimension over "
    + "the test images, nats); the range shown is the prior's -4 to 4."
    + (hidden > 0 ? " The " + hidden + " least active dimensions have no slider: they keep "
       + "their values (0, or those of the encoded image)." : "");
}

async function encodeRandom() {
  const i = Math.floor(Math.random() * state.info.n_test);
  try {
    const r = await (await fetchOk("/encode?index=" + i)).json();
    state.z = r.z.slice();
    if (state.info.conditional && r.label !== null) { $("label").value = String(r.label); }
    syncSliders();
    $("original").src = "/image?index=" + i;
    $("encoded-caption").textContent = "test image " + i
      + (r.label !== null && state.info.class_names.length
         ? " (" + state.info.class_names[r.label] + ")" : "")
      + ": its posterior mean is in the sliders";
    $("encoded").hidden = false;
    decode();
  } catch (e) { showError(String(e.message || e)); }
}

function gaussian() {  // Box-Muller
  const u = 1 - Math.random(), v = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

async function interpolate() {
  const a = $("ia").value, b = $("ib").value, m = $("method").value;
  const strip = $("strip");
  strip.dataset.state = "loading";
  try {
    const blob = await (await fetchOk("/interpolate?a=" + encodeURIComponent(a) + "&b="
      + encodeURIComponent(b) + "&steps=10&method=" + m)).blob();
    await new Promise((ok, fail) => {
      strip.onload = ok; strip.onerror = fail; strip.src = URL.createObjectURL(blob); });
    $("thumb-a").src = "/image?index=" + encodeURIComponent(a);
    $("thumb-b").src = "/image?index=" + encodeURIComponent(b);
    strip.dataset.query = a + "," + b + "," + m;
    showError("");
  } catch (e) { showError(String(e.message || e)); }
  strip.dataset.state = "ready";
}

async function start() {
  try {
    state.info = await (await fetchOk("/info")).json();
  } catch (e) { showError("cannot load the model: " + (e.message || e)); return; }
  const info = state.info;
  state.z = new Array(info.latent_dim).fill(0);
  $("about").textContent = info.latent_dim + "-D latent space, images "
    + info.image_shape.join("x") + ", " + info.n_test + " test images.";
  if (info.conditional) {
    for (let c = 0; c < info.num_classes; c++) {
      const o = document.createElement("option");
      o.value = String(c);
      o.textContent = info.class_names[c] || String(c);
      $("label").append(o);
    }
    $("label-row").hidden = false;
    $("label").addEventListener("change", decode);
  }
  buildSliders(info);
  for (const id of ["ia", "ib"]) { $(id).max = String(info.n_test - 1); }
  $("ib").value = String(Math.min(1, info.n_test - 1));
  $("encode").addEventListener("click", encodeRandom);
  $("prior").addEventListener("click", () => {
    state.z = state.z.map(gaussian); syncSliders(); decode(); });
  $("reset").addEventListener("click", () => {
    state.z = state.z.map(() => 0); syncSliders(); decode(); });
  $("pair").addEventListener("click", () => {
    $("ia").value = String(Math.floor(Math.random() * info.n_test));
    $("ib").value = String(Math.floor(Math.random() * info.n_test));
    interpolate();
  });
  $("interp").addEventListener("click", interpolate);
  $("method").addEventListener("change", interpolate);
  decode();
  interpolate();
}
start();
</script>
</body></html>
"""
