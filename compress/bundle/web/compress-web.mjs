// compress web bundle: load the model with onnxruntime-web, run the bundle's preprocessing
// (preprocess.json: image rule or tokenizer), and run the bundle's device check on its eval set
// (manifest.json `check`: argmax agreement, max abs diff, pooled cosine) -- the same check
// runner.py --eval runs in Python.
//
//   import { loadBundle } from "./compress-web.mjs";
//   const bundle = await loadBundle("./");            // the folder `compress deploy --target web` wrote
//   const logits = await bundle.classify(imageBitmapOrCanvasOrImageData);
//   const vector = await bundle.embed("a sentence");
//
// Bare imports: an app's bundler resolves them from npm; the demo page maps them with an
// import map to the copies in ./vendor/.
import * as ort from "onnxruntime-web";
import { Tokenizer } from "@huggingface/tokenizers";

const TYPED = {
  float32: Float32Array, int64: BigInt64Array, int32: Int32Array, uint8: Uint8Array,
  int8: Int8Array, float64: Float64Array, bool: Uint8Array,
};

async function fetchOk(url, kind) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} (${kind})`);
  return res;
}

/** Load the web bundle at `base` (a folder URL ending in "/"). */
export async function loadBundle(base, { wasmPaths, threads, model } = {}) {
  base = new URL(base, globalThis.document?.baseURI ?? globalThis.location?.href).href;
  const manifest = await (await fetchOk(base + "manifest.json", "manifest")).json();
  const pre = await (await fetchOk(base + "preprocess.json", "preprocessing")).json();
  const web = manifest.target?.profile ?? {};
  ort.env.wasm.wasmPaths = wasmPaths ?? new URL(web.wasm_paths ?? "vendor/", base).href;
  ort.env.wasm.numThreads = threads ?? web.threads ?? 1;
  const t0 = performance.now();
  const file = model ?? manifest.runtime.model;
  const bytes = new Uint8Array(await (await fetchOk(base + file, "model")).arrayBuffer());
  const t1 = performance.now();
  const level = { disable: "disabled" }[manifest.runtime.opt_level] ?? manifest.runtime.opt_level;
  const options = { executionProviders: ["wasm"], graphOptimizationLevel: level };
  if (file.endsWith(".ort") && manifest.model.ort_optimization_style === "runtime") {
    options.extra = { session: { enable_saved_runtime_optimizations: "1" } };
  }
  const session = await ort.InferenceSession.create(bytes, options);
  const t2 = performance.now();
  // a second session from the same bytes: the WASM runtime is compiled by now, so this is what
  // the model file's format costs (the first one also paid for compiling the runtime)
  const again = await ort.InferenceSession.create(bytes, options);
  const t3 = performance.now();
  await again.release();
  let tokenizer = null;
  if (pre.kind === "text") {
    const tj = await (await fetchOk(base + pre.tokenizer, "tokenizer")).json();
    const cfgName = (pre.tokenizer_files ?? []).find((f) => f === "tokenizer_config.json");
    const tc = cfgName ? await (await fetchOk(base + cfgName, "tokenizer config")).json() : {};
    tokenizer = new Tokenizer(tj, tc);
  }
  return new Bundle(base, manifest, pre, session, tokenizer,
                    { fetch_ms: t1 - t0, create_ms: t2 - t1, create_warm_ms: t3 - t2, bytes: bytes.length }, file);
}

export class Bundle {
  constructor(base, manifest, pre, session, tokenizer, load, modelFile) {
    Object.assign(this, { base, manifest, pre, session, tokenizer, load, modelFile });
    this.inputs = Object.fromEntries(manifest.io.inputs.map((i) => [i.name, i]));
  }

  /** One call: feeds {name: ort.Tensor} -> {output name: ort.Tensor}. */
  run(feeds) {
    return this.session.run(feeds);
  }

  /** An image source (ImageData, ImageBitmap, canvas, <img>) -> the model's input tensor. */
  imageTensor(source) {
    const rgba = toImageData(source);
    const { data, dims } = preprocessImage(rgba, this.pre);
    return new ort.Tensor("float32", data, dims);
  }

  async classify(source) {
    const out = await this.run({ [this.pre.input]: this.imageTensor(source) });
    return out[this.session.outputNames[0]].data;
  }

  /** Token ids of one sentence as preprocess.json says (truncation to max_length; a single
   * sentence is not padded under padding "longest"). */
  encode(text) {
    const enc = this.tokenizer.encode(text, { add_special_tokens: true, return_token_type_ids: true });
    const m = this.pre.max_length;
    let ids = enc.ids, types = enc.token_type_ids ?? ids.map(() => 0);
    if (ids.length > m) {  // truncation keeps the closing special token, as tokenizers does
      ids = [...ids.slice(0, m - 1), ids[ids.length - 1]];
      types = [...types.slice(0, m - 1), types[types.length - 1]];
    }
    const n = this.pre.padding === "max_length" ? m : ids.length;
    const pad = this.tokenizer.token_to_id(this.tokenizer.config?.pad_token ?? "[PAD]") ?? 0;
    const col = (f) => BigInt64Array.from({ length: n }, (_, i) => BigInt(f(i)));
    const arrays = {
      input_ids: col((i) => (i < ids.length ? ids[i] : pad)),
      attention_mask: col((i) => (i < ids.length ? 1 : 0)),
      token_type_ids: col((i) => (i < ids.length ? types[i] : 0)),
    };
    const feeds = {};
    for (const k of this.session.inputNames) feeds[k] = new ort.Tensor("int64", arrays[k], [1, n]);
    return { ids, feeds };
  }

  async embed(text) {
    const out = await this.run(this.encode(text).feeds);
    return out[this.session.outputNames[0]].data;
  }
}

// -- image preprocessing: the rule of preprocess.json (compress/config/preprocess.py) ----------

function toImageData(src) {
  if (typeof ImageData !== "undefined" && src instanceof ImageData) return src;
  const w = src.naturalWidth ?? src.videoWidth ?? src.width;
  const h = src.naturalHeight ?? src.videoHeight ?? src.height;
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(src, 0, 0);
  return ctx.getImageData(0, 0, w, h);
}

const FILTERS = {  // PIL's resampling filters: support and kernel
  nearest: null,
  bilinear: [1.0, (x) => (Math.abs(x) < 1 ? 1 - Math.abs(x) : 0)],
  bicubic: [2.0, (x) => {
    const a = -0.5; x = Math.abs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  }],
};

function coeffs(inSize, outSize, filter) {  // PIL's precompute_coeffs, in doubles
  const scale = inSize / outSize;
  const fs = Math.max(scale, 1);
  const [support0, kernel] = filter;
  const support = support0 * fs;
  const rows = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5));
    const k = [];
    let ww = 0;
    for (let x = xmin; x < xmax; x++) {
      const w = kernel((x - center + 0.5) / fs);
      k.push(w); ww += w;
    }
    rows.push([xmin, k.map((w) => (ww !== 0 ? w / ww : w))]);
  }
  return rows;
}

function resizePlane(src, w, h, nw, nh, interpolation) {  // one float band, as PIL mode F
  if (interpolation === "nearest") {
    const out = new Float32Array(nw * nh);
    for (let y = 0; y < nh; y++) {
      const sy = Math.min(h - 1, Math.trunc((y + 0.5) * h / nh));
      for (let x = 0; x < nw; x++) out[y * nw + x] = src[sy * w + Math.min(w - 1, Math.trunc((x + 0.5) * w / nw))];
    }
    return out;
  }
  let cur = src, cw = w;
  if (nw !== w) {  // horizontal pass first, as PIL
    const cs = coeffs(w, nw, FILTERS[interpolation]);
    const out = new Float32Array(nw * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < nw; x++) {
        const [x0, k] = cs[x]; let s = 0;
        for (let i = 0; i < k.length; i++) s += cur[y * cw + x0 + i] * k[i];
        out[y * nw + x] = s;
      }
    }
    cur = out; cw = nw;
  }
  if (nh !== h) {
    const cs = coeffs(h, nh, FILTERS[interpolation]);
    const out = new Float32Array(cw * nh);
    for (let y = 0; y < nh; y++) {
      const [y0, k] = cs[y];
      for (let x = 0; x < cw; x++) {
        let s = 0;
        for (let i = 0; i < k.length; i++) s += cur[(y0 + i) * cw + x] * k[i];
        out[y * cw + x] = s;
      }
    }
    cur = out;
  }
  return cur;
}

/** RGBA ImageData -> {data: Float32Array, dims} following preprocess.json exactly. */
export function preprocessImage(img, pre) {
  const { width: w, height: h, data: px } = img;
  const n = w * h, gray = pre.color === "grayscale";
  // 1. colour: PIL's L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16
  const luma = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    luma[i] = (px[4 * i] * 19595 + px[4 * i + 1] * 38470 + px[4 * i + 2] * 7471 + 0x8000) >>> 16;
  }
  let bands = gray ? [luma] : [0, 1, 2].map((c) => Uint8Array.from({ length: n }, (_, i) => px[4 * i + c]));
  // 2. invert: auto looks at the outer eighth of rows and columns of the grey image
  let invert = pre.invert === "always";
  if (pre.invert === "auto") {
    const bh = Math.max(1, Math.trunc(h / 8)), bw = Math.max(1, Math.trunc(w / 8));
    let s = 0, c = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if (y < bh || y >= h - bh || x < bw || x >= w - bw) { s += luma[y * w + x]; c++; }
    }
    invert = s / c > 0.5 * 255;
  }
  if (invert) bands = bands.map((b) => b.map((v) => 255 - v));
  // 3. resize (float, no 8-bit rounding), optionally shorter side then centre crop
  const [oh, ow] = pre.size;
  const planes = bands.map((b) => {
    const f = Float32Array.from(b);
    if (pre.resize === "stretch") return resizePlane(f, w, h, ow, oh, pre.interpolation);
    const s = pre.resize_shorter;
    const [nw, nh] = w <= h ? [s, Math.max(s, Math.round(h * s / w))] : [Math.max(s, Math.round(w * s / h)), s];
    const r = resizePlane(f, w, h, nw, nh, pre.interpolation);
    const left = Math.trunc((nw - ow) / 2), top = Math.trunc((nh - oh) / 2);
    return Float32Array.from({ length: ow * oh }, (_, i) => r[(top + Math.trunc(i / ow)) * nw + left + (i % ow)]);
  });
  // 4. scale, mean, std per channel (float32 arithmetic, as numpy does it); 5. layout
  const C = planes.length, out = new Float32Array(C * oh * ow);
  const f32 = Math.fround;
  for (let c = 0; c < C; c++) {
    const sc = f32(pre.scale), mean = f32(pre.mean[c]), std = f32(pre.std[c]);
    for (let i = 0; i < oh * ow; i++) {
      const v = f32(f32(f32(planes[c][i]) * sc) - mean) / std;
      out[pre.layout === "NCHW" ? c * oh * ow + i : i * C + c] = f32(v);
    }
  }
  return { data: out, dims: pre.layout === "NCHW" ? [1, C, oh, ow] : [1, oh, ow, C] };
}

// -- the eval set and the device check ---------------------------------------------------------

/** eval.json + eval.bin -> {name: {data: TypedArray, dims}} (inputs, expected__*, labels). */
export async function loadEval(base, file = "eval.json") {
  base = new URL(base, globalThis.document?.baseURI ?? globalThis.location?.href).href;
  const index = await (await fetchOk(base + file, "eval index")).json();
  const buf = await (await fetchOk(base + index.data, "eval data")).arrayBuffer();
  const arrays = {};
  for (const [name, a] of Object.entries(index.arrays)) {
    const T = TYPED[a.dtype];
    if (!T) throw new Error(`${file}: array ${name} has unsupported dtype ${a.dtype}`);
    arrays[name] = { data: new T(buf.slice(a.offset, a.offset + a.bytes)), dims: a.shape, dtype: a.dtype };
  }
  return { ...index, arrays };
}

function rows(data, n) {
  const d = data.length / n;
  return Array.from({ length: n }, (_, i) => Array.from(data.subarray(i * d, (i + 1) * d), Number));
}

/** The measures the runner reports for one output: max abs diff, argmax agreement, cosines. */
export function measure(got, want, n) {
  const a = rows(got, n), b = rows(want, n);
  let maxAbs = 0, agree = 0, cosSum = 0, cosMin = Infinity;
  for (let i = 0; i < n; i++) {
    let dot = 0, na = 0, nb = 0, ia = 0, ib = 0;
    for (let j = 0; j < a[i].length; j++) {
      maxAbs = Math.max(maxAbs, Math.abs(a[i][j] - b[i][j]));
      dot += a[i][j] * b[i][j]; na += a[i][j] ** 2; nb += b[i][j] ** 2;
      if (a[i][j] > a[i][ia]) ia = j;
      if (b[i][j] > b[i][ib]) ib = j;
    }
    agree += ia === ib ? 1 : 0;
    const cos = dot / Math.max(Math.sqrt(na) * Math.sqrt(nb), 1e-12);
    cosSum += cos; cosMin = Math.min(cosMin, cos);
  }
  return { max_abs_diff: maxAbs, argmax_agreement: agree / n, cosine_mean: cosSum / n, cosine_min: cosMin };
}

/** manifest.check applied to measured values, in runner.py's rows: one per (output, measure)
 * with a limit: {output, measure, value, limit, rule, ok, by} (by: the miss, 0 when it holds). */
export function applyCheck(check, measured) {
  const rows = [];
  for (const tol of check.outputs) {
    const m = measured[tol.output];
    if (!m) throw new Error(`check: no output ${tol.output} or no expected__${tol.output} in the eval set`);
    for (const key of ["argmax_agreement", "max_abs_diff", "cosine_mean", "cosine_min"]) {
      const limit = tol[key];
      if (limit === null || limit === undefined) continue;
      const atMost = key === "max_abs_diff", value = m[key];
      const by = atMost ? Math.max(0, value - limit) : Math.max(0, limit - value);
      rows.push({ output: tol.output, measure: key, value, limit, rule: atMost ? "<=" : ">=",
                  ok: by === 0 && !Number.isNaN(value), by });
    }
  }
  return rows;
}

function sampleFeeds(bundle, ev, i) {
  const feeds = {};
  for (const name of bundle.session.inputNames) {
    const a = ev.arrays[name];
    if (!a) throw new Error(`eval set: no array for model input ${name}`);
    const per = a.data.length / a.dims[0];
    feeds[name] = new ort.Tensor(a.dtype, a.data.slice(i * per, (i + 1) * per), [1, ...a.dims.slice(1)]);
  }
  return feeds;
}

/** Every eval sample, one call each (as the runner and an app call the model), then the
 * manifest's check. Returns {passed, check, quality, outputs}. */
export async function runEval(bundle, ev) {
  const n = ev.samples, names = bundle.session.outputNames;
  const parts = Object.fromEntries(names.map((k) => [k, []]));
  for (let i = 0; i < n; i++) {
    const out = await bundle.run(sampleFeeds(bundle, ev, i));
    for (const k of names) parts[k].push(out[k].data);
  }
  const measured = {}, outputs = {};
  for (const k of names) {
    const per = parts[k][0].length, flat = new Float32Array(n * per);
    parts[k].forEach((d, i) => flat.set(d, i * per));
    outputs[k] = flat;
    const want = ev.arrays[`expected__${k}`];
    if (want) measured[k] = measure(flat, want.data, n);
  }
  const checked = applyCheck(bundle.manifest.check, measured);
  const quality = {};
  const labels = ev.arrays.labels;
  if (bundle.manifest.task === "classification" && labels) {
    const r = rows(outputs[names[0]], n);
    let hit = 0;
    r.forEach((row, i) => { if (row.indexOf(Math.max(...row)) === Number(labels.data[i])) hit++; });
    quality.accuracy = hit / n;
  }
  const passed = checked.every((r) => r.ok);
  return { passed, samples: n, quality, measured,
           check: { precision: bundle.manifest.check.precision, rows: checked, passed } };
}

/** Wall-clock milliseconds per batch-1 call on eval sample 0, after `warmup` calls: `calls`
 * calls in blocks of `block` (performance.now() is coarsened to 0.1 ms without cross-origin
 * isolation, so a block is timed as a whole and divided). */
export async function timeCalls(bundle, ev, calls = 200, warmup = 20, block = 10) {
  const feeds = sampleFeeds(bundle, ev, 0);
  for (let i = 0; i < warmup; i++) await bundle.run(feeds);
  const per = [];
  const t0 = performance.now();
  for (let done = 0; done < calls; done += block) {
    const t = performance.now();
    for (let i = 0; i < block; i++) await bundle.run(feeds);
    per.push((performance.now() - t) / block);
  }
  const total = performance.now() - t0;
  const s = [...per].sort((x, y) => x - y);
  return { calls: per.length * block, block, mean: total / (per.length * block),
           p50: s[Math.floor(s.length / 2)], p90: s[Math.floor(s.length * 0.9)], min: s[0] };
}

/** The same model in several files (e.g. model.onnx and model.ort), side by side in one page:
 * `rounds` rounds, the files alternating, each round timing fetch, session create (the runtime
 * is compiled by the first round: later rounds time only the file) and `calls` batch-1 calls. */
export async function compareFormats(bundle, ev, files, rounds = 3, calls = 50) {
  const level = { disable: "disabled" }[bundle.manifest.runtime.opt_level] ?? bundle.manifest.runtime.opt_level;
  const rows = Object.fromEntries(files.map((f) => [f, { fetch_ms: [], create_ms: [], call_ms: [] }]));
  const feeds = sampleFeeds(bundle, ev, 0);
  for (let r = 0; r < rounds; r++) {
    for (const f of (r % 2 ? [...files].reverse() : files)) {
      const t0 = performance.now();
      const bytes = new Uint8Array(await (await fetchOk(bundle.base + f, "model")).arrayBuffer());
      const t1 = performance.now();
      const options = { executionProviders: ["wasm"], graphOptimizationLevel: level };
      if (f.endsWith(".ort") && bundle.manifest.model.ort_optimization_style === "runtime") {
        options.extra = { session: { enable_saved_runtime_optimizations: "1" } };
      }
      const s = await ort.InferenceSession.create(bytes, options);
      const t2 = performance.now();
      for (let i = 0; i < 5; i++) await s.run(feeds);
      const t3 = performance.now();
      for (let i = 0; i < calls; i++) await s.run(feeds);
      const t4 = performance.now();
      await s.release();
      Object.assign(rows[f], { bytes: bytes.length });
      rows[f].fetch_ms.push(t1 - t0); rows[f].create_ms.push(t2 - t1); rows[f].call_ms.push((t4 - t3) / calls);
    }
  }
  return rows;
}
