"use strict";
// Live classification: the camera's guide-box region goes to POST /v1/classify a few
// times a second; without a camera, a picked or dropped image goes there instead. What the
// model takes (its labels, input size) comes from GET /v1/model's `contract`. When the server
// collects training images (GET /v1/model's `collect`), the collect panel saves the same guide-box
// crop (or the picked image) to POST /v1/collect?label=... .
// A poor frame (too dark, nothing found, the object not in the box, the model not sure) is
// said so in place of the label, with the bars greyed, as the camera demo's overlay does.

const GUIDE = 0.8;            // guide box: a centred square, 80% of the short side (as the camera demo)
const SEND_SIDE = 224;        // the box is sent at most this wide (or the model's input size, if larger)
const MAX_BARS = 3;           // labels shown with their bars (fewer when the model has fewer)
const MIN_INTERVAL_MS = 200;  // at most five requests a second
const TOKEN_KEY = "fashion-edge-token";
// Advice, the camera demo's thresholds (camera_demo/overlay.py): DARK is the 0-255 brightness
// the brightest tenth of the guide box does not reach in a dark frame; below CONFIDENT the answer is
// "not sure"; a found box within EDGE_SLACK pixels of the sent crop's edge runs off the box.
const DARK = 40;
const CONFIDENT = 0.5;
const EDGE_SLACK = 2;
const ADVICE = {
  dark: "too dark: add light",
  nothing: "nothing found in the box",
  moveIn: "move the object into the box",
  notSure: "not sure: hold it still",
};

const $ = (id) => document.getElementById(id);
const video = $("video"), overlay = $("overlay"), still = $("still");
const grab = document.createElement("canvas");
let token = localStorage.getItem(TOKEN_KEY) || "";
let live = false;          // classifying camera frames
let lastBox = null;        // the last found object, in video pixels
let answeredAt = [];       // times of the last answers, for the frame rate
let contract = null;       // GET /v1/model's contract: labels, input {height, width, channels, range}
let contractLoading = null;
let pickedFile = null;     // the image picked or dropped, while it is shown instead of the camera
const collected = {};      // images saved per label, as the server counts them

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const setStatus = (text) => { $("status").textContent = text; };

function guideBox(width, height) {
  const side = Math.round(Math.min(width, height) * GUIDE);
  return { x: Math.round((width - side) / 2), y: Math.round((height - side) / 2), w: side, h: side };
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  let body;
  try { body = await response.json(); } catch { body = { detail: response.statusText }; }
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new Error("This server needs an access token.");
  }
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

// The model's contract, fetched once (again after a failure, e.g. before the token is given).
async function modelContract() {
  if (contract) return contract;
  contractLoading = contractLoading || showModel().finally(() => { contractLoading = null; });
  await contractLoading;
  return contract;
}

// How wide the guide box is sent: its own size, but at least the model's input size and at
// most SEND_SIDE (or the input size, when that is larger).
function sendSide(boxSide, input) {
  const inputSide = Math.max(input.width, input.height);
  return Math.min(Math.max(boxSide, inputSide), Math.max(SEND_SIDE, inputSide));
}

async function classify(blob) {
  const model = await modelContract();
  const started = performance.now();
  const bars = Math.min(MAX_BARS, model.labels.length);
  const answer = await api(`/v1/classify?top_k=${bars}`, {
    method: "POST", headers: { "Content-Type": blob.type }, body: blob,
  });
  answer.rttMs = performance.now() - started;
  return answer;
}

// What to tell the user about a poor frame, or null when the answer can be shown. `frame`
// ({brightness, side} of the sent guide-box crop) is null for a picked file, which may be
// cropped to the object and is not judged by its light.
function advice(answer, frame) {
  if (frame && frame.brightness < DARK) return ADVICE.dark;
  if (!answer.object_found) return answer.box ? ADVICE.moveIn : ADVICE.nothing;
  if (frame && answer.box) {
    const [x, y, w, h] = answer.box;
    if (x <= EDGE_SLACK || y <= EDGE_SLACK || x + w >= frame.side - EDGE_SLACK || y + h >= frame.side - EDGE_SLACK) {
      return ADVICE.moveIn;
    }
  }
  if (answer.confidence < CONFIDENT) return ADVICE.notSure;
  return null;
}

// How bright (0-255) the brightest tenth of a canvas is, from every 4th pixel each way (a
// histogram of the pixels' mean over R, G, B), as the camera demo measures it.
function canvasBrightness(canvas) {
  const { data, width, height } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  const histogram = new Uint32Array(256);
  let count = 0;
  for (let y = 0; y < height; y += 4) {
    for (let x = 0; x < width; x += 4) {
      const i = 4 * (y * width + x);
      histogram[Math.floor((data[i] + data[i + 1] + data[i + 2]) / 3)] += 1;
      count += 1;
    }
  }
  let below = 0;
  for (let level = 0; level < 256; level += 1) {
    below += histogram[level];
    if (below > 0.9 * count) return level;
  }
  return 0;
}

function render(answer, frame = null) {
  const label = $("label");
  const note = advice(answer, frame);
  label.textContent = note || answer.label;
  label.dataset.label = answer.object_found ? answer.label : "";  // the best guess, even when unsure
  label.dataset.advice = note || "";
  label.classList.toggle("unsure", Boolean(note));
  $("results").classList.toggle("unsure", Boolean(note));
  $("results").replaceChildren(...answer.top_k.map(({ label: name, confidence }) => {
    const item = document.createElement("li");
    const bar = document.createElement("div"), fill = document.createElement("span"), pct = document.createElement("span");
    bar.className = "bar";
    fill.style.width = `${(confidence * 100).toFixed(1)}%`;
    bar.append(fill);
    pct.className = "pct";
    pct.textContent = `${(confidence * 100).toFixed(1)}%`;
    item.append(Object.assign(document.createElement("span"), { textContent: name }), bar, pct);
    return item;
  }));
  const now = performance.now();
  answeredAt = [...answeredAt.filter((t) => now - t < 3000), now];  // a 3-second window
  const fps = (answeredAt.length - 1) / ((now - answeredAt[0]) / 1000);
  $("fps").textContent = live && answeredAt.length > 1 ? `${fps.toFixed(1)} fps` : "– fps";
  $("server-ms").textContent = answer.latency_ms.toFixed(1);
  $("rtt-ms").textContent = answer.rttMs.toFixed(0);
  setStatus("");
}

async function grabGuideBox() {
  const model = await modelContract();
  const box = guideBox(video.videoWidth, video.videoHeight);
  const side = sendSide(box.w, model.input);
  grab.width = grab.height = side;
  grab.getContext("2d").drawImage(video, box.x, box.y, box.w, box.h, 0, 0, side, side);
  const frame = { brightness: canvasBrightness(grab), side };
  return new Promise((resolve, reject) => grab.toBlob(
    (blob) => (blob ? resolve({ blob, box, scale: box.w / side, frame }) : reject(new Error("could not capture a frame"))),
    "image/jpeg", 0.9));
}

async function classifyLoop() {
  while (live) {
    const started = performance.now();
    if (!document.hidden && video.readyState >= 2 && video.videoWidth) {
      try {
        const { blob, box, scale, frame } = await grabGuideBox();
        const answer = await classify(blob);
        if (!live) break;
        render(answer, frame);
        lastBox = answer.object_found && answer.box ? {
          x: box.x + answer.box[0] * scale, y: box.y + answer.box[1] * scale,
          w: answer.box[2] * scale, h: answer.box[3] * scale } : null;
      } catch (error) {
        setStatus(error.message);
        await sleep(1000);
      }
    }
    await sleep(Math.max(0, MIN_INTERVAL_MS - (performance.now() - started)));
  }
}

function drawOverlay() {
  if (live && video.videoWidth) {
    overlay.width = video.videoWidth;
    overlay.height = video.videoHeight;
    const ctx = overlay.getContext("2d");
    const box = guideBox(video.videoWidth, video.videoHeight);
    ctx.lineWidth = Math.max(2, video.videoWidth / 200);
    ctx.strokeStyle = "#ffdc00";
    ctx.strokeRect(box.x, box.y, box.w, box.h);
    if (lastBox) {
      ctx.strokeStyle = "#50c850";
      ctx.strokeRect(lastBox.x, lastBox.y, lastBox.w, lastBox.h);
    }
  }
  requestAnimationFrame(drawOverlay);
}

function showCamera(on) {
  video.hidden = overlay.hidden = $("hint").hidden = !on;
  still.hidden = on;
  $("camera-button").hidden = on || !video.srcObject;
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("No camera access here: browsers allow it only over HTTPS or on localhost. Pick an image instead.");
    showCamera(false);
    return;
  }
  try {
    if (!video.srcObject) {
      video.srcObject = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: { ideal: "environment" }, width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
      video.srcObject.getVideoTracks()[0].addEventListener("ended", () => {
        live = false;
        video.srcObject = null;
        setStatus("The camera went away. Reload the page to try again, or pick an image.");
      });
    }
    await video.play();
  } catch (error) {
    setStatus(`No camera (${error.name || error.message}). Pick or drop an image instead.`);
    showCamera(false);
    return;
  }
  showCamera(true);
  if (!live) {
    live = true;
    answeredAt = [];
    classifyLoop();
  }
}

async function classifyFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    setStatus(`${file.name} is not an image.`);
    return;
  }
  live = false;
  lastBox = null;
  pickedFile = file;
  if (still.src) URL.revokeObjectURL(still.src);
  still.src = URL.createObjectURL(file);
  showCamera(false);
  try {
    render(await classify(file));
  } catch (error) {
    setStatus(`${file.name}: ${error.message}`);
  }
}

// GET /v1/model: keeps the contract and shows the model in the header; throws on failure
// (a 401 opens the token form).
async function showModel() {
  const model = await api("/v1/model");
  contract = model.contract;
  $("collect-form").hidden = !model.collect;
  const input = contract.input;
  const accuracy = model.training && model.training.test_accuracy;
  $("model").textContent = `model ${model.model_version || model.file} · ${contract.labels.length} labels, ` +
    `${input.width}×${input.height} ${input.channels === 1 ? "gray" : "colour"}` +
    (accuracy ? ` · ${(accuracy * 100).toFixed(2)}% test accuracy` : "");
}

// --- collecting training images (only when the server was started with --collect DIR) ---------

const collectLabel = () => $("collect-label").value.trim();

function showCollectLabel() {
  const label = collectLabel();
  const button = $("collect-button");
  button.textContent = label ? `Save to ${label}` : "Save to …";
  button.disabled = !label;
  $("collect-count").textContent = label in collected ? `${label}: ${collected[label]} saved` : "";
}

async function collectImage(event) {
  event.preventDefault();
  const label = collectLabel();
  if (!label) return;
  const button = $("collect-button");
  button.disabled = true;
  $("collect-status").textContent = "";
  try {
    let blob;
    if (live && video.readyState >= 2 && video.videoWidth) {
      blob = (await grabGuideBox()).blob;  // the very crop that is classified
    } else if (pickedFile) {
      blob = pickedFile;
    } else {
      throw new Error("No camera frame or picked image to save yet.");
    }
    const answer = await api(`/v1/collect?label=${encodeURIComponent(label)}`, {
      method: "POST", headers: { "Content-Type": blob.type }, body: blob,
    });
    collected[answer.label] = answer.count;
  } catch (error) {
    $("collect-status").textContent = error.message;
  } finally {
    showCollectLabel();
  }
}

async function loadModel() {
  try {
    await modelContract();
  } catch (error) {
    setStatus(error.message);
  }
}

$("file").addEventListener("change", (event) => classifyFile(event.target.files[0]));
$("camera-button").addEventListener("click", startCamera);
for (const name of ["dragenter", "dragover"]) {
  document.addEventListener(name, (event) => { event.preventDefault(); $("drop").classList.add("over"); });
}
document.addEventListener("dragleave", () => $("drop").classList.remove("over"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  classifyFile(event.dataTransfer.files[0]);
});
$("collect-label").addEventListener("input", showCollectLabel);
$("collect-form").addEventListener("submit", collectImage);
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  localStorage.setItem(TOKEN_KEY, token);
  $("token-form").hidden = true;
  setStatus("");
  loadModel();
});

loadModel();
startCamera();
requestAnimationFrame(drawOverlay);
