// The lab's page: read a slide (fields as jobs), review its bacilli, sign the grade, export. API calls only.
import { ApiError, auth, call, download, json, sendJson } from "./api.js";
import { Gallery } from "./gallery.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const IMAGE_CACHE = 4;
// where a field's pixel size came from, said where a person should know it (a given or lab pixel size goes unsaid)
const SCALE_SAID = {
  estimated: "scale estimated from the field",
  slide: "at the slide's scale",
  assumed: "pixel size unknown: read as uploaded",
  "model-scale-unknown": "read as uploaded",
};

const state = {
  slideId: null,
  jobs: [],            // job ids of this slide's submissions (also in the URL)
  jobStatus: new Map(), // job id -> last status
  uploads: [],         // fields not (yet) a job: {name, state: uploading|waiting|failed, error}
  report: null,        // GET /v1/slides/{id}
  current: null,       // index of the slide field in the viewer
  field: null,         // its objects (GET …/objects)
  selected: null,      // the selected object's number
  user: null,          // the user the API key names, if any
  images: new Map(),   // field index -> ImageBitmap (the last few)
};

let statusTimer = null;
function say(message) {
  $("status").textContent = message;
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { $("status").textContent = ""; }, 7000);
}

// ---------- the API key ----------
function askForKey(problem = "") {
  const dialog = $("key-dialog");
  $("key-error").textContent = problem;
  $("key-input").value = "";
  if (!dialog.open) dialog.showModal();
  return new Promise((resolve) => {
    $("key-form").onsubmit = () => {
      auth.key = $("key-input").value.trim();
      $("forget-key").hidden = false;
      resolve();
    };
  });
}
auth.onMissing = askForKey;
// the key is needed for everything: Escape does not close its dialog
$("key-dialog").addEventListener("cancel", (e) => e.preventDefault());

// ---------- the URL: slide id and job ids survive a reload ----------
function readUrl() {
  const params = new URLSearchParams(location.search);
  state.slideId = params.get("slide");
  state.jobs = (params.get("jobs") || "").split(",").filter((j) => /^[0-9a-f]{32}$/.test(j));
}

function writeUrl() {
  const params = new URLSearchParams();
  if (state.slideId) params.set("slide", state.slideId);
  if (state.jobs.length) params.set("jobs", state.jobs.join(","));
  history.replaceState(null, "", `${location.pathname}?${params.toString().replaceAll("%2C", ",")}`);
}

const errorsKey = () => `tbseg-errors-${state.slideId}`;
function keepErrors() {
  const failed = state.uploads.filter((u) => u.state === "failed").map(({ name, error }) => ({ name, error }));
  sessionStorage.setItem(errorsKey(), JSON.stringify(failed));
}

// ---------- models ----------
async function loadModels() {
  // everything is read before anything is filled in: the model list filled is the sign that the page is ready
  // (one after another: the first call may have to ask for the key, and the others wait for it)
  const list = await json("/v1/models");
  const me = await json("/v1/me");
  const { labs } = await json("/v1/labs");
  state.user = me.user;
  $("who").textContent = me.user ? `Signed in as ${me.user}` : "";
  if (me.user) {
    $("reviewer").value = me.user;
    $("reviewer").disabled = true;
  } else {
    $("reviewer").value = sessionStorage.getItem("tbseg-reviewer") || "";
  }
  const select = $("model");
  select.replaceChildren(...list.models.map((m) => {
    const option = new Option(`${m.model_id}${m.default ? " (default)" : ""}`, m.model_id, m.default, m.default);
    option.title = m.card_summary;
    return option;
  }));
  showLabs(labs, me.lab);
}

// ---------- lab profiles ----------
function showLabs(labs, defaultLab) {
  const select = $("lab");
  const options = labs.map((lab) => {
    const text = `${lab.lab_id} (v${lab.version}): operating point ${lab.object_threshold}, ` +
      `≤ ${lab.false_bacilli_upper_95} false bacilli per negative field`;
    const option = new Option(text, lab.lab_id, lab.lab_id === defaultLab, lab.lab_id === defaultLab);
    option.dataset.model = lab.model_id;
    option.title = `validated ${lab.model_id} on ${lab.negative_fields} confirmed-negative fields`;
    return option;
  });
  // a key with a default lab always reads with a lab (the service applies it when none is named)
  if (defaultLab) select.replaceChildren(...options);
  else select.replaceChildren(select.options[0], ...options);
  select.disabled = labs.length === 0;
  $("lab-help").textContent = labs.length === 0
    ? "No lab profile is served (python -m training lab-profile makes one)."
    : defaultLab ? `Your key's default lab is ${defaultLab}.` : $("lab-help").textContent;
  select.addEventListener("change", followLab);
  followLab();
}

/** A lab profile validated one model: choosing the lab chooses it. */
function followLab() {
  const chosen = $("lab").selectedOptions[0];
  const model = chosen?.dataset.model;
  if (model) $("model").value = model;
  $("model").disabled = Boolean(model);
}

const reviewer = () => state.user || $("reviewer").value.trim() || undefined;

// ---------- submitting fields ----------
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function submit(files) {
  const idInput = $("slide-id");
  if (!idInput.reportValidity()) return;
  state.slideId = idInput.value.trim();
  writeUrl();
  const items = [...files].map((file) => ({ name: file.name, file, state: "uploading", error: null }));
  state.uploads.push(...items);
  render();
  for (const item of items) await submitOne(item);
  keepErrors();
}

async function submitOne(item) {
  const params = new URLSearchParams({ slide_id: state.slideId });
  if ($("lab").value) params.set("lab", $("lab").value);
  else if ($("model").value) params.set("model", $("model").value);
  if ($("mode").value) params.set("mode", $("mode").value);
  if ($("microns").value && $("microns").checkValidity()) params.set("microns_per_pixel", $("microns").value);
  // the same file dropped twice on a slide (same lab, model, mode and scale) is the same job: never counted twice
  const key = [state.slideId, params.get("lab"), params.get("model"), params.get("mode"),
    params.get("microns_per_pixel"), item.file.size, item.file.lastModified, item.name]
    .join(":").slice(0, 200);
  for (;;) {
    const body = new FormData();
    body.append("files", item.file, item.name);
    try {
      const accepted = await json(`/v1/jobs?${params}`, { method: "POST", body, headers: { "Idempotency-Key": key } });
      state.uploads.splice(state.uploads.indexOf(item), 1);
      if (!state.jobs.includes(accepted.job_id)) state.jobs.push(accepted.job_id);
      writeUrl();
      poll().catch((error) => say(error.message));
      return;
    } catch (error) {
      if (error instanceof ApiError && error.status === 503) {
        const wait = Math.max(1, error.retryAfter || 5);
        item.state = "waiting";
        item.error = `service busy: retrying in ${wait} s (${error.message})`;
        render();
        await sleep(wait * 1000);
        continue;
      }
      item.state = "failed";
      item.error = error.message;
      render();
      return;
    }
  }
}

// ---------- following jobs and the slide ----------
let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  try {
    for (;;) {
      try {
        await refresh();
      } catch (error) {
        // the service restarting or the network dropping: say so and keep following the jobs
        if (!(error instanceof ApiError) || (error.status !== 0 && error.status < 500)) throw error;
        say(`${error.message}: trying again`);
        await sleep((error.retryAfter || 3) * 1000);
        continue;
      }
      const waiting = state.jobs.some((id) => jobPending(id));
      if (!waiting) break;
      await sleep(POLL_MS);
    }
  } finally {
    polling = false;
  }
}

function inSlide(jobId) {
  return !!state.report?.fields.some((f) => f.job_id === jobId);
}

function jobPending(id) {
  const s = state.jobStatus.get(id);
  if (!s) return true;
  if (s.state === "queued" || s.state === "running") return true;
  return s.state === "done" && s.fields_done > 0 && !inSlide(id); // done; its field is being filed into the slide
}

async function refresh() {
  if (!state.slideId) return;
  for (const id of state.jobs) {
    const last = state.jobStatus.get(id);
    if (last && !jobPending(id)) continue;
    try {
      state.jobStatus.set(id, await json(`/v1/jobs/${id}`));
    } catch (error) {
      if (error.status === 404) state.jobStatus.set(id, { state: "gone", fields: [], fields_done: 0 });
      else throw error;
    }
  }
  // the slide exists once a job has filed a field (or when it is opened by id): no 404 asked for on purpose
  const filed = [...state.jobStatus.values()].some((s) => s.state === "done" && s.fields_done > 0);
  if (filed || state.report || !state.jobs.length) await loadReport();
  else render();
}

async function loadReport() {
  try {
    state.report = await json(`/v1/slides/${encodeURIComponent(state.slideId)}`);
  } catch (error) {
    if (error.status !== 404) throw error;
    state.report = null;
    if (!state.jobs.length && !state.uploads.length) say(`No slide ${state.slideId} yet: drop its fields to read it`);
  }
  render();
  if (state.current === null && state.report?.fields.length) await show(0);
}

// ---------- rendering ----------
function entries() {
  const list = [];
  for (const f of state.report?.fields || []) {
    list.push({ kind: "field", name: f.name, index: f.index, field: f, state: "done" });
  }
  for (const id of state.jobs) {
    if (inSlide(id)) continue;
    const s = state.jobStatus.get(id);
    const jf = s?.fields?.[0];
    const name = jf?.name || "field";
    if (!s || s.state === "queued" || s.state === "running") {
      list.push({ kind: "job", name, state: s?.state === "running" ? "reading" : "queued" });
    } else if (s.state === "done" && s.fields_done > 0) {
      list.push({ kind: "job", name, state: "filing" });
    } else if (s.state === "gone") {
      list.push({ kind: "job", name: `job ${id.slice(0, 8)}`, state: "failed", error: "the job is no longer kept" });
    } else {
      list.push({ kind: "job", name, state: "failed", error: jf?.error || s.error || "the field could not be read" });
    }
  }
  for (const u of state.uploads) list.push({ kind: "upload", name: u.name, state: u.state, error: u.error });
  for (const e of JSON.parse(sessionStorage.getItem(errorsKey()) || "[]")) {
    if (!state.uploads.some((u) => u.name === e.name)) list.push({ kind: "upload", ...e, state: "failed" });
  }
  return list;
}

function render() {
  $("slide-id").value ||= state.slideId || "";
  const list = entries();
  const items = list.map((entry) => {
    const li = document.createElement("li");
    const button = document.createElement(entry.kind === "field" ? "button" : "div"); // only a read field opens
    if (entry.kind === "field") button.type = "button";
    button.className = "entry";
    const name = Object.assign(document.createElement("span"), { className: "name", textContent: entry.name });
    const counts = Object.assign(document.createElement("span"), { className: "counts" });
    const status = Object.assign(document.createElement("span"), { className: "state" });
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.setAttribute("aria-label", `${entry.name} progress`);
    let warning = null;
    if (entry.kind === "field") {
      const f = entry.field;
      counts.textContent = f.reviewed_afb === f.afb ? `${f.afb} AFB` : `${f.afb} → ${f.reviewed_afb} AFB`;
      const domain = f.in_domain === false ? " · not like the model's training fields" : "";
      const scale = SCALE_SAID[f.scale_source] ? ` · ${SCALE_SAID[f.scale_source]}` : "";
      status.textContent = `read (${f.mode})${f.objects_reviewed ? ` · ${f.objects_reviewed} reviewed` : ""}${domain}${scale}`;
      if (f.in_domain === false) {
        status.classList.add("error");
        button.title = f.domain_reasons.join("\n");
      }
      // an unreadable or repeated field says so first, before its count, which does not count towards the slide
      if (f.readable === false || f.duplicate_of != null) {
        const reason = f.readable === false
          ? `unreadable: ${f.quality_reasons[0] || "failed the quality check"}`
          : `repeats field ${f.duplicate_of + 1}: counted once`;
        warning = Object.assign(document.createElement("span"), { className: "quality error", textContent: reason });
        counts.textContent += " · not counted";
        button.title = [...(f.quality_reasons || []), ...(f.domain_reasons || [])].join("\n");
        li.classList.add("not-counted");
      }
      bar.value = 1;
      button.addEventListener("click", () => show(entry.index));
      if (entry.index === state.current) li.className = "current";
      li.dataset.field = entry.index;
    } else {
      status.textContent = entry.error ? `${entry.state}: ${entry.error}` : entry.state;
      if (entry.state === "failed") { status.classList.add("error"); bar.value = 0; }
      else if (entry.state === "reading" || entry.state === "uploading") bar.removeAttribute("value");
      else bar.value = entry.state === "filing" ? 1 : 0;
    }
    li.dataset.state = entry.state;
    button.append(...[name, warning, counts, status, bar].filter(Boolean));
    li.append(button);
    return li;
  });
  $("fields").replaceChildren(...items);
  const done = list.filter((e) => e.state === "done").length;
  const failed = list.filter((e) => e.state === "failed").length;
  const progress = $("slide-progress");
  progress.max = Math.max(1, list.length);
  progress.value = done + failed;
  $("slide-progress-text").textContent = list.length
    ? `${done} of ${list.length} field(s) read${failed ? `, ${failed} failed` : ""}`
    : "No field yet";
  renderGrade();
}

function renderGrade() {
  const r = state.report;
  const review = r?.review;
  $("grade-reviewed").textContent = review?.report || "—";
  $("grade-rate").textContent = review?.afb_per_field == null ? "" : `${review.afb_per_field.toFixed(2)} AFB per field`;
  $("grade-auto").textContent = r?.report || "—";
  $("afb-auto").textContent = r?.total_afb ?? 0;
  $("afb-reviewed").textContent = review?.total_afb ?? 0;
  $("fields-examined").textContent = r?.fields_examined ?? 0;
  // the decision first: whether the service may sign this slide at all, and why not; after a review, the reviewed one
  const reviewed = Boolean(review?.objects_reviewed);
  const decision = reviewed ? review.decision : r?.decision;
  const why = reviewed ? review.decision_reasons : r?.decision_reasons;
  $("decision").hidden = !(r && r.fields_examined);
  $("decision").dataset.decision = decision || "none";
  $("decision").dataset.reviewed = String(reviewed);
  $("decision-value").textContent = (decision === "review" ? "a person must read this slide" : decision || "—") +
    (reviewed ? ` (after review; automatic: ${r.decision})` : "");
  $("decision-reasons").replaceChildren(
    ...(why || []).map((t) => Object.assign(document.createElement("li"), { textContent: t })),
  );
  const reasons = review?.reasons || [];
  $("needs-review").hidden = !(r && review.needs_review);
  $("reasons").replaceChildren(...reasons.map((t) => Object.assign(document.createElement("li"), { textContent: t })));
  const sig = review?.signature;
  const when = (t) => new Date(t * 1000).toLocaleString();
  $("signature").textContent = sig
    ? `Signed by ${sig.signed_by}, ${when(sig.signed_at)}: ${sig.report}${sig.current ? "" : " (the review changed since)"}`
    : review?.reviewed_by.length ? `Reviewed by ${review.reviewed_by.join(", ")}` : "";
}

// ---------- the viewer ----------
const viewer = new Viewer($("viewer"), { onSelect: (o) => selectObject(o?.number ?? null), onAdd: addAt });

async function imageOf(index, field) {
  if (state.images.has(index)) return state.images.get(index);
  let image;
  try {
    const blob = await (await call(field.image_url)).blob();
    image = await createImageBitmap(blob);
    $("viewer-message").textContent = "";
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 410) throw error;
    $("viewer-message").textContent = error.message; // outlines still shown, over a blank field
    image = new OffscreenCanvas(field.width, field.height);
  }
  state.images.set(index, image);
  if (state.images.size > IMAGE_CACHE) state.images.delete(state.images.keys().next().value);
  return image;
}

async function show(index) {
  state.current = index;
  state.selected = null;
  const path = `/v1/slides/${encodeURIComponent(state.slideId)}/fields/${index}/objects`;
  try {
    state.field = await json(path);
    $("field-title").textContent = `Field ${index + 1}: ${state.field.name}`;
    if (!state.field.image_url) $("viewer-message").textContent = "this field's image was not kept";
    const image = state.field.image_url
      ? await imageOf(index, state.field)
      : new OffscreenCanvas(state.field.width, state.field.height);
    if (state.current !== index) return;
    const listed = state.report?.fields?.[index];
    if (listed?.readable === false) {
      $("viewer-message").textContent = `Unreadable, not counted: ${listed.quality_reasons.join("; ")}`;
    }
    viewer.setImage(image);
    viewer.setObjects(state.field.objects);
    renderObjects();
    selectObject(null);
    render();
  } catch (error) {
    say(`Field ${index + 1}: ${error.message}`);
  }
}

function renderObjects() {
  const objects = state.field?.objects || [];
  $("object-count").textContent = objects.length;
  $("objects").replaceChildren(...objects.map((o) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = describe(o);
    b.addEventListener("click", () => { selectObject(o.number); viewer.centreOn(o); });
    li.append(b);
    li.dataset.number = o.number;
    if (o.number === state.selected) li.className = "selected";
    return li;
  }));
}

function describe(o) {
  const score = o.score === null ? "" : ` · score ${o.score.toFixed(2)}`;
  const decision = o.decision ? ` · ${o.decision}ed by ${o.reviewer || "?"}` : "";
  return `#${o.number} ${o.origin}${score} · ${o.counted ? `counted (${o.afb} AFB)` : "not counted"}${decision}`;
}

function selectObject(number) {
  state.selected = number;
  viewer.select(number);
  const o = state.field?.objects.find((x) => x.number === number);
  $("object-info").textContent = o ? describe(o) : "Click an object (or press n) to review it.";
  const reviewable = !!(o && state.field.reviewable);
  for (const id of ["accept", "reject", "clear"]) $(id).disabled = !reviewable;
  $("remove").hidden = !(o && o.origin === "added");
  $("remove").disabled = !(o && o.origin === "added");
  for (const li of $("objects").children) li.className = Number(li.dataset.number) === number ? "selected" : "";
}

function applyReview(result) {
  const objects = state.field.objects;
  const i = objects.findIndex((o) => o.number === result.object.number);
  if (i >= 0) objects[i] = result.object; else objects.push(result.object);
  state.report = result.slide;
  state.field.reviewed_afb = result.slide.fields[state.current].reviewed_afb;
  viewer.setObjects(objects);
  renderObjects();
  selectObject(result.object.number);
  render();
}

function fieldPath() {
  return `/v1/slides/${encodeURIComponent(state.slideId)}/fields/${state.current}`;
}

async function decide(decision) {
  if (state.selected === null || !state.field) return;
  try {
    const path = `${fieldPath()}/objects/${state.selected}/review`;
    applyReview(await sendJson(path, "PUT", { decision, reviewer: reviewer() }));
  } catch (error) {
    say(`Review: ${error.message}`);
  }
}

async function addAt(point) {
  if (!state.field) return;
  try {
    applyReview(await sendJson(`${fieldPath()}/objects`, "POST", { x: point.x, y: point.y, reviewer: reviewer() }));
    say(`Added a bacillus at (${Math.round(point.x)}, ${Math.round(point.y)})`);
  } catch (error) {
    say(`Add: ${error.message}`);
  }
}

async function removeAdded() {
  if (state.selected === null) return;
  try {
    const who = reviewer() ? `?${new URLSearchParams({ reviewer: reviewer() })}` : "";
    state.report = await json(`${fieldPath()}/objects/${state.selected}${who}`, { method: "DELETE" });
    state.field.objects = state.field.objects.filter((o) => o.number !== state.selected);
    viewer.setObjects(state.field.objects);
    renderObjects();
    selectObject(null);
    render();
  } catch (error) {
    say(`Remove: ${error.message}`);
  }
}

function setAdding(on) {
  viewer.adding = on;
  $("add-mode").setAttribute("aria-pressed", String(on));
  $("viewer").classList.toggle("adding", on);
  viewer.draw();
  if (on) say("Click a missed bacillus to add it (or press Enter to add at the centre cross); Esc to stop");
}

function step(direction) {
  const visible = (state.field?.objects || []).filter((o) => viewer.visible(o));
  if (!visible.length) return;
  const at = visible.findIndex((o) => o.number === state.selected);
  const next = visible[(at + direction + visible.length) % visible.length];
  selectObject(next.number);
  viewer.centreOn(next);
}

// ---------- exports and signing ----------
const slidePath = () => `/v1/slides/${encodeURIComponent(state.slideId)}`;

async function exporting(action) {
  if (!state.slideId || !state.report) return say("Read or open a slide first");
  try { await action(); } catch (error) { say(`Export: ${error.message}`); }
}

async function openReport() {
  const blob = await (await call(`${slidePath()}/report.html`)).blob();
  const url = URL.createObjectURL(new Blob([blob], { type: "text/html" }));
  const tab = window.open(url, "_blank");
  if (!tab) say("Allow pop-ups to open the report, or use the counts CSV");
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function sign() {
  if (!state.report) return say("Read or open a slide first");
  const signer = reviewer();
  if (!signer) { $("reviewer").focus(); return say("Type your name to sign"); }
  try {
    state.report = await sendJson(`${slidePath()}/sign`, "POST", { signer });
    render();
    say(`Signed: ${state.report.review.report}`);
  } catch (error) {
    say(`Sign: ${error.message}`);
  }
}

// ---------- wiring ----------
function wire() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) submit(e.dataTransfer.files);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("files").click(); }
  });
  $("files").addEventListener("change", (e) => {
    if (e.target.files.length) submit(e.target.files);
    e.target.value = "";
  });
  $("slide-form").addEventListener("submit", (e) => { e.preventDefault(); openSlide(); });
  $("open-slide").addEventListener("click", openSlide);
  $("reviewer").addEventListener("change", () => sessionStorage.setItem("tbseg-reviewer", $("reviewer").value.trim()));
  $("zoom-in").addEventListener("click", () => viewer.zoomAt(1.25));
  $("zoom-out").addEventListener("click", () => viewer.zoomAt(0.8));
  $("zoom-fit").addEventListener("click", () => viewer.fit());
  $("zoom-1").addEventListener("click", () => viewer.oneToOne());
  $("show-kept").addEventListener("change", (e) => { viewer.show.kept = e.target.checked; viewer.draw(); });
  $("show-rejected").addEventListener("change", (e) => { viewer.show.rejected = e.target.checked; viewer.draw(); });
  $("add-mode").addEventListener("click", () => setAdding(!viewer.adding));
  $("accept").addEventListener("click", () => decide("accept"));
  $("reject").addEventListener("click", () => decide("reject"));
  $("clear").addEventListener("click", () => decide(null));
  $("remove").addEventListener("click", removeAdded);
  $("sign").addEventListener("click", sign);
  $("gallery-load").addEventListener("click", () => openGallery());
  $("gallery-more").addEventListener("click", () => openGallery(true));
  $("gallery-reject-all").addEventListener("click", () => gallery.rejectAll());
  $("forget-key").addEventListener("click", () => { auth.key = null; location.reload(); });
  $("export-report").addEventListener("click", () => exporting(openReport));
  $("export-csv").addEventListener("click", () =>
    exporting(() => download(`${slidePath()}/counts.csv`, `${state.slideId}_counts.csv`)));
  $("export-geojson").addEventListener("click", () => exporting(async () => {
    if (state.current === null) throw new Error("select a field first");
    await download(`${fieldPath()}/objects.geojson`, `${state.slideId}_field${state.current + 1}.geojson`);
  }));
  $("export-points").addEventListener("click", () => exporting(() =>
    download(`${slidePath()}/annotations.zip?format=points`, `${state.slideId}_annotations_points.zip`)));
  $("export-voc").addEventListener("click", () => exporting(() =>
    download(`${slidePath()}/annotations.zip?format=voc`, `${state.slideId}_annotations_voc.zip`)));
  $("viewer").addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const keys = {
      n: () => step(1), p: () => step(-1), a: () => decide("accept"), r: () => decide("reject"),
      u: () => decide(null), m: () => setAdding(!viewer.adding), Escape: () => setAdding(false),
      Enter: () => viewer.adding && addAt(viewer.centre()),
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });
}

async function openSlide() {
  const idInput = $("slide-id");
  if (!idInput.reportValidity()) return;
  const id = idInput.value.trim();
  if (id !== state.slideId) {
    Object.assign(state, { slideId: id, jobs: [], uploads: [], report: null, current: null, field: null });
    state.jobStatus.clear();
    state.images.clear();
    viewer.setImage(null);
    viewer.setObjects([]);
    renderObjects();
  }
  writeUrl();
  try { await poll(); } catch (error) { say(error.message); }
}

// ---------- the ranked gallery ----------
const gallery = new Gallery($("gallery"), {
  reviewer: () => reviewer(),
  say,
  count: (text) => { $("gallery-count").textContent = `(${text})`; },
  onReviewed: (result, item) => {
    if (state.current === item.field_index && state.field) applyReview(result); // the viewer's objects follow
    else { state.report = result.slide; render(); }
  },
  onOpen: async (index, number) => {
    await show(index);
    selectObject(number);
    $("viewer").focus();
  },
});

async function openGallery(more = false) {
  if (!state.slideId) { say("open a slide first"); return; }
  try {
    await (more ? gallery.more() : gallery.load(state.slideId));
    $("gallery-more").disabled = gallery.items.length >= Math.min(gallery.total, 500);
    $("gallery-reject-all").disabled = !gallery.items.length;
    $("gallery").focus();
  } catch (error) {
    say(`Gallery: ${error.message}`);
  }
}

async function main() {
  $("forget-key").hidden = !auth.key;
  wire();
  readUrl();
  try {
    for (;;) {
      try {
        await loadModels();
        break;
      } catch (error) {
        if (error.status !== 503) throw error;
        say(`${error.message}: trying again in ${error.retryAfter || 2} s`); // the service is starting
        await sleep((error.retryAfter || 2) * 1000);
      }
    }
    if (state.slideId) {
      $("slide-id").value = state.slideId;
      await poll();
    }
  } catch (error) {
    say(error.message);
  }
  render();
}

main();
