// Porchlight resident UI. Vanilla JS, no dependencies. Everything shown comes from the box's
// own /api/v1 routes; text from outside (requests from the city, camera errors) is only ever
// set with textContent, never parsed as HTML.
"use strict";

const state = { csrf: null, timer: null, page: null, previews: [], busy: 0 };

// ---- helpers -------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Appends children like h() does: arrays flattened, null/false skipped.
function add(el, ...children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = state.csrf || "";
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!r.ok) {
    const e = (data && data.error) || {};
    if (r.status === 401 && path.startsWith("/api/")) { setTimeout(boot, 0); }
    throw new ApiError(r.status, e.code || "http_" + r.status,
      e.message || ("The box answered " + r.status + (text && !data ? ": " + text.slice(0, 200) : "")));
  }
  return data;
}

// GET that reports a missing route as null (a feature not in this build).
async function optional(path) {
  try { return await api("GET", path); } catch (e) {
    if (e.status === 404 && e.code === "not_found" && /no such API route/.test(e.message)) return null;
    if (e.status === 404 || e.status === 405) return null;
    throw e;
  }
}

function fmtTime(ms) {
  if (ms === null || ms === undefined) return "—";
  return new Date(ms).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}
function fmtAgo(ms) {
  if (!ms) return "never";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 2) return "just now";
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return fmtTime(ms);
}
function fmtDur(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60 ? (s % 60) + " s" : "");
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function stateClass(s) {
  return { streaming: "ok", connected: "ok", paired: "ok", configured: "ok",
           connecting: "warn", pairing: "warn", failed: "bad", disconnected: "bad" }[s] || "muted";
}
function pill(word) { return h("span", { class: "pill " + stateClass(word), text: word }); }
function errorBox(e) { return h("p", { class: "error", role: "alert", text: e.message || String(e) }); }
function notice(text) { return h("p", { class: "notice", role: "status", text }); }

function setMain(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
}

// Runs an action from a button: disables it, shows the error next to it in plain words.
async function act(button, fn, where) {
  button.disabled = true;
  state.busy += 1; // no periodic refresh replaces the page under a running action
  const slot = where || button.parentElement;
  slot.querySelectorAll(":scope > .error").forEach((x) => x.remove());
  try { await fn(); } catch (e) { slot.append(errorBox(e)); } finally { button.disabled = false; state.busy -= 1; }
}

function describeScope(scope) {
  if (!scope) return "";
  if (scope.kind === "live") return "live video for " + fmtDur(scope.duration_s || 0);
  if (scope.kind === "clip") return "recorded video " + fmtTime(scope.from_ms) + " – " + fmtTime(scope.to_ms);
  return JSON.stringify(scope);
}

// ---- start: setup, login --------------------------------------------------------------------

async function boot() {
  stopTimers();
  let st;
  try { st = await api("GET", "/auth/state"); } catch (e) { setMain(errorBox(e)); return; }
  state.csrf = st.csrf;
  document.getElementById("top").hidden = !st.authenticated;
  if (st.setup_needed) return showSetup();
  if (!st.authenticated) return showLogin();
  route();
}

function showSetup() {
  const code = h("input", { id: "setup-code", autocomplete: "off", placeholder: "XXXX-XXXX-XXXX-XXXX", required: true });
  const pw = h("input", { id: "setup-password", type: "password", autocomplete: "new-password", minlength: "10", required: true });
  const pw2 = h("input", { id: "setup-password2", type: "password", autocomplete: "new-password", required: true });
  const btn = h("button", { type: "submit", id: "setup-submit" }, "Set password");
  const form = h("form", { class: "card" },
    h("p", {}, "Welcome. To claim this box, type the setup code shown on its console or label, then choose the admin password for this page."),
    h("label", { for: "setup-code" }, "Setup code"), code,
    h("label", { for: "setup-password" }, "New password (at least 10 characters)"), pw,
    h("label", { for: "setup-password2" }, "Repeat the password"), pw2,
    h("p", {}, btn));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(btn, async () => {
      if (pw.value !== pw2.value) throw new Error("The two passwords differ.");
      const r = await api("POST", "/auth/setup", { code: code.value, password: pw.value });
      state.csrf = r.csrf;
      location.hash = "#/";
      await boot();
    }, form);
  });
  setMain(h("div", { class: "narrow" }, h("h1", {}, "Set up Porchlight"), form));
  code.focus();
}

function showLogin() {
  const pw = h("input", { id: "login-password", type: "password", autocomplete: "current-password", required: true });
  const btn = h("button", { type: "submit", id: "login-submit" }, "Log in");
  const form = h("form", { class: "card" },
    h("label", { for: "login-password" }, "Admin password"), pw, h("p", {}, btn));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(btn, async () => {
      const r = await api("POST", "/auth/login", { password: pw.value });
      state.csrf = r.csrf;
      await boot();
    }, form);
  });
  setMain(h("div", { class: "narrow" }, h("h1", {}, "Porchlight"), form));
  pw.focus();
}

async function logout() {
  try { await api("POST", "/auth/logout"); } catch (_) { /* already out */ }
  state.csrf = null;
  await boot();
}

// ---- routing --------------------------------------------------------------------------------

const pages = {
  "": dashboard, requests: requestsPage, sharing: sharingPage, cameras: camerasPage,
  pairing: pairingPage, audit: auditPage,
};

function stopTimers() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  for (const p of state.previews) p.stop();
  state.previews = [];
}

function route() {
  stopTimers();
  const name = (location.hash.replace(/^#\/?/, "").split("?")[0]) || "";
  const page = pages[name] || dashboard;
  state.page = name;
  document.querySelectorAll("#nav a").forEach((a) =>
    a.classList.toggle("active", (a.dataset.page === "dashboard" ? "" : a.dataset.page) === name));
  page();
}

// Renders `render()` now and every `ms` while the page stays open; keeps focus-safe by
// skipping refreshes while a form field on the page has focus.
function live(render, ms) {
  const run = async (first) => {
    const a = document.activeElement;
    if (!first && (state.busy || (a && a.closest && a.closest("main form")))) return;
    try { await render(); } catch (e) { if (e.status !== 401) setMain(errorBox(e)); }
  };
  run(true);
  state.timer = setInterval(run, ms);
}

function updateChrome(requests) {
  const n = requests ? requests.pending.length : 0;
  const badge = document.getElementById("pending-badge");
  badge.hidden = n === 0;
  badge.textContent = String(n);
  document.getElementById("paused-banner").hidden = !(requests && requests.paused);
}

// ---- live preview ---------------------------------------------------------------------------

// Plays /api/v1/cameras/{id}/live.mp4 (fragmented MP4) with Media Source Extensions when the
// browser supports the camera's codec, else as a plain <video src>.
function preview(cam) {
  const video = h("video", { muted: true, autoplay: true, playsinline: true, class: "preview", "data-camera": cam.id });
  video.muted = true;
  const url = "/api/v1/cameras/" + encodeURIComponent(cam.id) + "/live.mp4";
  const ctl = new AbortController();
  let stopped = false;
  const mime = cam.codec_string ? 'video/mp4; codecs="' + cam.codec_string + (cam.audio ? ', mp4a.40.2' : "") + '"' : null;
  const MS = window.MediaSource;
  if (MS && mime && MS.isTypeSupported(mime)) {
    const ms = new MS();
    video.src = URL.createObjectURL(ms);
    ms.addEventListener("sourceopen", async () => {
      let sb;
      try { sb = ms.addSourceBuffer(mime); } catch (e) { video.replaceWith(errorBox(e)); return; }
      sb.mode = "segments";
      const queue = [];
      const pump = () => {
        if (stopped || sb.updating || !queue.length) return;
        try {
          // Keep about 30 s behind the playhead.
          if (sb.buffered.length && video.currentTime - sb.buffered.start(0) > 40) {
            sb.remove(sb.buffered.start(0), video.currentTime - 30);
            return;
          }
          sb.appendBuffer(queue.shift());
        } catch (_) { /* closed */ }
      };
      sb.addEventListener("updateend", () => {
        // Stay near the live edge.
        if (sb.buffered.length) {
          const end = sb.buffered.end(sb.buffered.length - 1);
          if (end - video.currentTime > 3) video.currentTime = end - 0.3;
        }
        pump();
      });
      try {
        const r = await fetch(url, { signal: ctl.signal, credentials: "same-origin" });
        if (!r.ok) {
          const j = await r.json().catch(() => null);
          throw new Error((j && j.error && j.error.message) || "Live video unavailable (" + r.status + ")");
        }
        const reader = r.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done || stopped) break;
          queue.push(value);
          pump();
          if (video.paused) video.play().catch(() => {});
        }
      } catch (e) {
        if (!stopped) video.after(errorBox(e));
      }
    });
  } else {
    video.src = url;
  }
  const stop = () => { stopped = true; ctl.abort(); video.removeAttribute("src"); video.load(); };
  state.previews.push({ stop });
  return { video, stop };
}

function previewButton(cam, container) {
  let p = null;
  const b = h("button", { type: "button", class: "secondary", "data-preview": cam.id }, "Watch live");
  b.addEventListener("click", () => {
    if (p) { p.stop(); p.video.remove(); p = null; b.textContent = "Watch live"; return; }
    p = preview(cam);
    container.append(p.video);
    b.textContent = "Stop";
  });
  return b;
}

// ---- dashboard ------------------------------------------------------------------------------

function dashboard() {
  setMain(h("h1", {}, "Home"), h("div", { id: "dash" }, h("p", { class: "muted" }, "Loading…")));
  const cards = new Map();
  live(async () => {
    const [status, uplink, cams, reqs, pairing] = await Promise.all([
      api("GET", "/api/v1/status"), api("GET", "/api/v1/uplink"), api("GET", "/api/v1/cameras"),
      api("GET", "/api/v1/requests"), optional("/api/v1/pairing")]);
    updateChrome(reqs);
    const dash = document.getElementById("dash");
    if (!dash) return;
    const out = [];
    if (reqs.pending.length) {
      out.push(h("div", { class: "card pending", id: "dash-pending" },
        h("h2", {}, reqs.pending.length + " police request" + (reqs.pending.length > 1 ? "s" : "") + " waiting for you"),
        ...reqs.pending.map((p) => pendingCard(p, true))));
    }
    const paired = pairing ? pairing.state : (status.paired ? "paired" : "unpaired");
    out.push(h("div", { class: "grid" },
      h("div", { class: "card" }, h("h2", {}, "City link"),
        h("dl", { class: "kv" },
          h("dt", {}, "Pairing"), h("dd", {}, pill(paired)),
          h("dt", {}, "Connection"), h("dd", { id: "link-state" }, pill(uplink.state)),
          uplink.gateway_id ? [h("dt", {}, "Box id"), h("dd", { class: "mono" }, uplink.gateway_id)] : null,
          uplink.last_error ? [h("dt", {}, "Last problem"), h("dd", { class: "bad" }, uplink.last_error)] : null,
          h("dt", {}, "Sharing"), h("dd", {}, reqs.paused ? pill("paused") : h("span", {}, reqs.grants.length + " active")))),
      h("div", { class: "card" }, h("h2", {}, "Storage"),
        h("dl", { class: "kv" },
          h("dt", {}, "Used"), h("dd", {}, fmtBytes(status.storage.used_bytes) + " of " + fmtBytes(status.storage.quota_bytes)),
          h("dt", {}, "Oldest video"), h("dd", {}, fmtTime(status.storage.oldest_ms)),
          h("dt", {}, "Written today"), h("dd", {}, fmtBytes(status.storage.written_today_bytes)),
          h("dt", {}, "Box version"), h("dd", {}, status.version + ", up " + fmtDur(status.uptime_s))))));
    out.push(h("h2", {}, "Cameras"));
    if (!cams.length) out.push(h("p", { class: "muted" }, "No cameras yet. ", h("a", { href: "#/cameras" }, "Add one")));
    const grid = h("div", { class: "grid", id: "dash-cameras" });
    for (const c of cams) {
      // Keep an open preview across refreshes: reuse the card's video slot.
      let slot = cards.get(c.id);
      if (!slot) { slot = h("div", {}); cards.set(c.id, slot); }
      grid.append(h("div", { class: "card camera", "data-camera": c.id },
        h("div", { class: "row" }, h("strong", {}, c.name || c.id), pill(c.state)),
        h("dl", { class: "kv small" },
          h("dt", {}, "Last frame"), h("dd", { class: "last-frame" }, fmtAgo(c.last_frame_ms)),
          c.width ? [h("dt", {}, "Picture"), h("dd", {}, c.width + "×" + c.height + " " + (c.codec || "") + (c.fps ? ", " + Math.round(c.fps) + " fps" : ""))] : null,
          h("dt", {}, "Recording"), h("dd", {}, c.record || "main"),
          h("dt", {}, "Buffered"), h("dd", {}, c.buffered_from_ms ? fmtTime(c.buffered_from_ms) + " →" : "nothing yet"),
          c.last_error ? [h("dt", {}, "Problem"), h("dd", { class: "bad" }, c.last_error)] : null),
        slot.dataset.bound ? null : previewButtonInto(c, slot),
        slot));
    }
    out.push(grid);
    dash.replaceChildren(...out);
  }, 3000);
}

function previewButtonInto(cam, slot) {
  slot.dataset.bound = "1";
  const b = previewButton(cam, slot);
  slot.prepend(b);
  return null;
}

// ---- requests -------------------------------------------------------------------------------

function pendingCard(p, compact) {
  const r = p.request;
  const box = h("div", { class: "card " + (r.emergency ? "emergency" : "pending"), "data-request": r.id },
    h("div", { class: "row" }, h("strong", {}, r.requester || "Unknown requester"),
      r.emergency ? h("span", { class: "pill bad" }, "EMERGENCY") : null,
      h("span", { class: "muted small" }, "asks for " + describeScope(r.scope) + " of camera " + r.camera)),
    h("dl", { class: "kv small" },
      h("dt", {}, "Reason"), h("dd", { class: "reason" }, r.reason || "—"),
      h("dt", {}, "Case"), h("dd", {}, r.case || "—"),
      h("dt", {}, "Received"), h("dd", {}, fmtAgo(p.received_ms)),
      h("dt", {}, "Expires"), h("dd", {}, "in " + fmtDur((p.expires_at_ms - Date.now()) / 1000)),
      compact ? null : [h("dt", {}, "Request id"), h("dd", { class: "mono" }, r.id)]));
  const approve = h("button", { type: "button", class: "ok", "data-action": "approve" }, "Approve");
  const deny = h("button", { type: "button", class: "danger", "data-action": "deny" }, "Deny");
  const row = h("div", { class: "row" }, approve, deny);
  approve.addEventListener("click", () => act(approve, async () => {
    await api("POST", "/api/v1/requests/" + encodeURIComponent(r.id) + "/approve");
    route();
  }, row));
  deny.addEventListener("click", () => act(deny, async () => {
    await api("POST", "/api/v1/requests/" + encodeURIComponent(r.id) + "/deny");
    route();
  }, row));
  box.append(row);
  return box;
}

function grantCard(g) {
  const r = g.request || {};
  const left = (g.until_ms - Date.now()) / 1000;
  const revoke = h("button", { type: "button", class: "danger", "data-action": "revoke" }, "Revoke now");
  const row = h("div", { class: "row" }, revoke);
  revoke.addEventListener("click", () => act(revoke, async () => {
    await api("POST", "/api/v1/requests/" + encodeURIComponent(g.id) + "/revoke");
    route();
  }, row));
  return h("div", { class: "card", "data-grant": g.id },
    h("div", { class: "row" }, h("strong", {}, (g.scope && g.scope.kind === "clip" ? "Clip" : "Live video") + " of " + g.camera),
      h("span", { class: "pill ok" }, fmtDur(left) + " left")),
    h("dl", { class: "kv small" },
      h("dt", {}, "To"), h("dd", {}, r.requester || "—"),
      h("dt", {}, "Reason"), h("dd", {}, r.reason || "—"),
      h("dt", {}, "Case"), h("dd", {}, r.case || "—"),
      h("dt", {}, "Allowed by"), h("dd", {}, g.granted_by === "resident" ? "you" : "your rule"),
      h("dt", {}, "Until"), h("dd", {}, fmtTime(g.until_ms)),
      h("dt", {}, "Request id"), h("dd", { class: "mono" }, g.id)),
    row);
}

function pauseSwitch(paused) {
  const b = h("button", { type: "button", id: "pause-toggle", class: "big " + (paused ? "ok" : "danger") },
    paused ? "Resume sharing" : "Pause all sharing");
  b.addEventListener("click", () => act(b, async () => {
    await api("POST", paused ? "/api/v1/resume" : "/api/v1/pause");
    route();
  }));
  return h("div", { class: "card" }, h("p", { class: "muted small" }, paused
    ? "Sharing is paused: every request is refused until you resume."
    : "Pausing ends every running share at once and refuses new requests."), b);
}

function requestsPage() {
  setMain(h("h1", {}, "Police requests"), h("div", { id: "reqs" }, h("p", { class: "muted" }, "Loading…")));
  live(async () => {
    const reqs = await api("GET", "/api/v1/requests");
    updateChrome(reqs);
    const el = document.getElementById("reqs");
    if (!el) return;
    el.replaceChildren(
      pauseSwitch(reqs.paused),
      h("h2", {}, "Waiting for you"),
      reqs.pending.length ? h("div", { id: "pending-list" }, ...reqs.pending.map((p) => pendingCard(p, false)))
        : h("p", { class: "muted", id: "pending-list" }, "No request is waiting."),
      h("h2", {}, "Sharing now"),
      reqs.grants.length ? h("div", { id: "grant-list" }, ...reqs.grants.map(grantCard))
        : h("p", { class: "muted", id: "grant-list" }, "Nothing is being shared."));
  }, 2000);
}

// ---- sharing rules --------------------------------------------------------------------------

const MODES = [["never", "Never"], ["ask", "Ask me"], ["always", "Always"]];

function modeSelect(name, value) {
  return h("select", { name }, ...MODES.map(([v, t]) => h("option", { value: v, selected: v === value }, t)));
}

function rulesForm(camera, rules, name) {
  const f = h("form", { class: "card", "data-camera": camera });
  const hours = rules.hours;
  const hoursOn = h("input", { type: "checkbox", name: "hours_on", checked: !!hours });
  const num = (name, v, min, max) => h("input", { type: "number", name, value: String(v), min: String(min), max: String(max), step: "any", class: "num" });
  const save = h("button", { type: "submit" }, "Save");
  add(f,
    h("h2", {}, name && name !== camera ? name + " (" + camera + ")" : camera),
    h("div", { class: "grid" },
      h("div", {}, h("label", {}, "Live video"), modeSelect("live", rules.live)),
      h("div", {}, h("label", {}, "Recorded clips"), modeSelect("clips", rules.clips)),
      h("div", {}, h("label", {}, "Emergency: live"), modeSelect("em_live", rules.emergency.live)),
      h("div", {}, h("label", {}, "Emergency: clips"), modeSelect("em_clips", rules.emergency.clips)),
      h("div", {}, h("label", {}, "Longest live share (minutes)"), num("max_live_min", Math.round(rules.max_live_s / 60 * 100) / 100, 0.02, 1440)),
      h("div", {}, h("label", {}, "Longest clip (minutes)"), num("max_clip_min", Math.round(rules.max_clip_window_s / 60 * 100) / 100, 0.02, 10080))),
    h("label", {}, hoursOn, " Only during these hours (emergencies excepted)"),
    h("div", { class: "row" }, "from", num("start_hour", hours ? hours.start_hour : 8, 0, 23), "to", num("end_hour", hours ? hours.end_hour : 20, 0, 24), "h"),
    h("p", {}, save));
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(save, async () => {
      const v = (n) => f.elements[n].value;
      const body = {
        live: v("live"), clips: v("clips"),
        emergency: { live: v("em_live"), clips: v("em_clips") },
        max_live_s: Math.round(parseFloat(v("max_live_min")) * 60),
        max_clip_window_s: Math.round(parseFloat(v("max_clip_min")) * 60),
        hours: f.elements.hours_on.checked ? { start_hour: parseInt(v("start_hour"), 10), end_hour: parseInt(v("end_hour"), 10) } : null,
      };
      await api("PUT", "/api/v1/consent/" + encodeURIComponent(camera), body);
      f.querySelectorAll(".notice").forEach((x) => x.remove());
      f.append(notice("Saved."));
    }, f);
  });
  return f;
}

async function sharingPage() {
  setMain(h("h1", {}, "Sharing with the city"), h("p", { class: "muted" }, "Loading…"));
  try {
    const [c, cams] = await Promise.all([api("GET", "/api/v1/consent"), api("GET", "/api/v1/cameras")]);
    const names = new Map(cams.map((x) => [x.id, x.name]));
    updateChrome({ pending: [], paused: c.paused });
    setMain(h("h1", {}, "Sharing with the city"), pauseSwitch(c.paused),
      h("p", { class: "muted" }, "For each camera, choose what the city's crime center may get. \"Never\" is the default; \"Ask me\" shows each request for you to approve or deny; \"Always\" shares within the limits without asking. Emergency requests follow their own rule and are always shown to you. Every share is written to the audit log."),
      ...(c.cameras.length ? c.cameras.map((x) => rulesForm(x.camera, x.rules, names.get(x.camera))) : [h("p", { class: "muted" }, "No cameras.")]));
  } catch (e) { setMain(h("h1", {}, "Sharing"), errorBox(e)); }
}

// ---- cameras --------------------------------------------------------------------------------

function cameraForm(existing, found) {
  // existing: a camera to edit; found: a camera from discovery to add (streams asked over ONVIF).
  const p = Object.assign({}, existing || {});
  if (found) { p.name = found.name || found.model || ""; }
  const fid = existing ? "edit-" + existing.id : (found ? "add-found" : "add-camera");
  const f = h("form", { class: "card", id: fid });
  const inp = (name, label, attrs) => [h("label", { for: fid + "-" + name }, label),
    h("input", Object.assign({ id: fid + "-" + name, name, value: p[name] || "" }, attrs || {}))];
  const rec = h("select", { name: "record", id: fid + "-record" },
    ...[["main", "Main stream"], ["sub", "Substream (kinder to the SD card)"], ["off", "Don't record"]]
      .map(([v, t]) => h("option", { value: v, selected: (p.record || "main") === v }, t)));
  const save = h("button", { type: "submit" }, existing ? "Save" : "Add camera");
  const title = existing ? "Edit " + existing.id : (found ? "Add " + (found.name || found.model || found.id) : "Add a camera by its address");
  add(f, h("h2", {}, title),
    existing ? null : inp("id", found ? "Id (optional; letters, digits, - and _)" : "Id (letters, digits, - and _)", { required: !found, pattern: "[A-Za-z0-9_\\-]{1,32}" }),
    inp("name", "Name"),
    found ? null : inp("url", "Stream URL (rtsp://…, without password)", { required: !existing }),
    found ? null : inp("substream_url", "Substream URL (optional)"),
    inp("username", "Camera user name", { autocomplete: "off" }),
    inp("password", existing ? "Camera password (leave empty to keep)" : "Camera password", { type: "password", autocomplete: "new-password", value: "" }),
    h("label", { for: fid + "-record" }, "Recording"), rec, h("p", {}, save));
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(save, async () => {
      const body = {};
      for (const n of ["id", "name", "url", "substream_url", "username", "password", "record"]) {
        const el = f.elements[n];
        if (!el) continue;
        if (el.value !== "" || n === "record") body[n] = el.value;
      }
      if (existing) {
        delete body.id;
        await api("PATCH", "/api/v1/cameras/" + encodeURIComponent(existing.id), body);
      } else {
        if (found) body.from_discovery = found.id;
        await api("POST", "/api/v1/cameras", body);
      }
      location.hash = "#/cameras";
      route();
    }, f);
  });
  return f;
}

async function camerasPage() {
  setMain(h("h1", {}, "Cameras"), h("p", { class: "muted" }, "Loading…"));
  let cams;
  try { cams = await api("GET", "/api/v1/cameras"); } catch (e) { setMain(h("h1", {}, "Cameras"), errorBox(e)); return; }
  const list = h("div", { id: "camera-list" });
  if (!cams.length) list.append(h("p", { class: "muted" }, "No cameras yet: search the network below, or add one by its address."));
  for (const c of cams) {
    const box = h("div", { class: "card", "data-camera": c.id });
    const slot = h("div", {});
    const row = h("div", { class: "row" }, previewButton(c, slot));
    if (c.source === "config") {
      row.append(h("span", { class: "muted small" }, "Set in the configuration file (change it there)."));
    } else {
      const edit = h("button", { type: "button", class: "secondary" }, "Edit");
      const remove = h("button", { type: "button", class: "danger" }, "Remove");
      edit.addEventListener("click", () => { box.append(cameraForm(c)); edit.disabled = true; });
      remove.addEventListener("click", () => act(remove, async () => {
        if (!confirm("Remove camera " + c.id + "? Its recorded video is kept until retention removes it.")) return;
        await api("DELETE", "/api/v1/cameras/" + encodeURIComponent(c.id));
        route();
      }, row));
      row.append(edit, remove);
    }
    add(box, h("div", { class: "row" }, h("strong", {}, c.name || c.id), pill(c.state),
      h("span", { class: "muted small mono" }, c.url || "")),
      h("p", { class: "small" }, "Last frame " + fmtAgo(c.last_frame_ms) + (c.width ? " · " + c.width + "×" + c.height + " " + (c.codec || "") : "") +
        " · recording: " + (c.record || "main") + (c.username ? " · user " + c.username + (c.has_password ? " with password" : "") : "")),
      c.last_error ? h("p", { class: "small bad" }, c.last_error) : null, row, slot);
    list.append(box);
  }
  const disc = h("div", { id: "discovered" });
  const scan = h("button", { type: "button", class: "secondary", id: "scan" }, "Search the network");
  const addSlot = h("div", { id: "add-slot" }, cameraForm(null));
  const showDiscovered = (d) => {
    if (d === null) { disc.replaceChildren(h("p", { class: "muted" }, "Camera discovery is not available on this box.")); return; }
    const items = Array.isArray(d) ? d : (d.cameras || []);
    const out = [];
    if (d.error) out.push(h("p", { class: "error" }, d.error));
    if (d.enabled === false) out.push(h("p", { class: "muted" }, "Automatic search is off in the configuration; \"Search the network\" still works."));
    if (!items.length) out.push(h("p", { class: "muted" }, d.finished_ms ? "No camera found. Make sure it is powered and on the same network, then search again." : "No search has run yet."));
    for (const x of items) {
      const b = h("button", { type: "button", class: "secondary" }, "Add this one");
      b.addEventListener("click", () => { addSlot.replaceChildren(cameraForm(null, x)); addSlot.scrollIntoView(); });
      out.push(h("div", { class: "card", "data-found": x.id }, h("strong", {}, x.name || x.model || x.id || "Camera"),
        h("p", { class: "small muted" }, [x.manufacturer, x.model, x.address].filter(Boolean).join(" · ")),
        x.added ? h("span", { class: "pill ok" }, "added as " + (x.camera_id || "")) : b));
    }
    disc.replaceChildren(...out);
  };
  scan.addEventListener("click", () => act(scan, async () => {
    disc.replaceChildren(h("p", { class: "muted" }, "Searching…"));
    let r = null;
    try { r = await api("POST", "/api/v1/discovery/scan"); } catch (e) { if (e.status !== 404 && e.status !== 405) throw e; }
    showDiscovered(r);
  }));
  setMain(h("h1", {}, "Cameras"), list,
    h("h2", {}, "Found on the network"), h("div", { class: "row" }, scan), disc,
    addSlot);
  optional("/api/v1/discovery").then(showDiscovered, (e) => disc.replaceChildren(errorBox(e)));
}

// ---- pairing --------------------------------------------------------------------------------

const PAIR_WORDS = {
  unpaired: "This box is not paired with the city yet.",
  pairing: "Pairing… waiting for the city to answer.",
  paired: "Paired with the city.",
  configured: "The city link is set up in the configuration file.",
};

async function pairingPage() {
  setMain(h("h1", {}, "City link"), h("p", { class: "muted" }, "Loading…"));
  const keep = { form: null };
  live(async () => {
    const [p, uplink] = await Promise.all([optional("/api/v1/pairing"), api("GET", "/api/v1/uplink")]);
    const a = document.activeElement;
    if (a && a.closest && a.closest("#pair-form")) return;
    const out = [h("h1", {}, "City link")];
    if (!p) {
      out.push(h("p", { class: "muted" }, "Pairing from this page is not available on this box yet."));
    } else {
      out.push(h("div", { class: "card", id: "pair-state" }, h("p", {}, pill(p.state), " ", PAIR_WORDS[p.state] || p.state),
        h("dl", { class: "kv small" },
          p.gateway_id ? [h("dt", {}, "Box id"), h("dd", { class: "mono" }, p.gateway_id)] : null,
          p.broker ? [h("dt", {}, "City broker"), h("dd", { class: "mono" }, p.broker)] : null,
          p.not_after ? [h("dt", {}, "Certificate valid until"), h("dd", {}, typeof p.not_after === "number" ? fmtTime(p.not_after) : p.not_after)] : null),
        p.last_error ? h("p", { class: "error" }, p.last_error.message || p.last_error.code) : null));
      // The form survives refreshes: what was typed and the last error stay.
      if (p.state === "unpaired" || p.state === "pairing") out.push(keep.form = keep.form || pairForm());
      else keep.form = null;
      if (p.state === "paired") {
        const b = h("button", { type: "button", class: "danger", id: "unpair" }, "Unpair this box");
        b.addEventListener("click", () => act(b, async () => {
          if (!confirm("Unpair? The city will no longer reach this box until you pair it again.")) return;
          await api("POST", "/api/v1/unpair");
          route();
        }));
        out.push(h("p", {}, b));
      }
    }
    out.push(h("div", { class: "card" }, h("h2", {}, "Connection"),
      h("dl", { class: "kv small" },
        h("dt", {}, "State"), h("dd", {}, pill(uplink.state)),
        uplink.broker ? [h("dt", {}, "Broker"), h("dd", { class: "mono" }, uplink.broker)] : null,
        uplink.since_ms ? [h("dt", {}, "Since"), h("dd", {}, fmtTime(uplink.since_ms))] : null,
        uplink.last_error ? [h("dt", {}, "Last problem"), h("dd", { class: "bad" }, uplink.last_error)] : null,
        h("dt", {}, "Waiting to send"), h("dd", {}, (uplink.outbox_messages || 0) + " messages, " + fmtBytes(uplink.outbox_bytes || 0)))));
    setMain(...out);
  }, 3000);
}

function pairForm() {
  const code = h("input", { id: "claim-code", name: "code", autocomplete: "off", required: true });
  const broker = h("input", { id: "pair-broker", name: "broker", placeholder: "mqtts://broker.city.example:8883" });
  const ca = h("textarea", { id: "pair-ca", name: "ca_pem", placeholder: "-----BEGIN CERTIFICATE-----" });
  const btn = h("button", { type: "submit" }, "Pair");
  const f = h("form", { class: "card", id: "pair-form" },
    h("label", { for: "claim-code" }, "Claim code from the city"), code,
    h("details", {}, h("summary", {}, "Advanced (only if the city told you)"),
      h("label", { for: "pair-broker" }, "City broker"), broker,
      h("label", { for: "pair-ca" }, "City CA certificate (PEM)"), ca),
    h("p", {}, btn));
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    f.querySelectorAll(".notice").forEach((x) => x.remove());
    const wait = notice("Asking the city… this can take up to a minute.");
    f.append(wait);
    act(btn, async () => {
      const body = { code: code.value.trim() };
      if (broker.value.trim()) body.broker = broker.value.trim();
      if (ca.value.trim()) body.ca_pem = ca.value.trim();
      try {
        await api("POST", "/api/v1/pair", body);
      } finally { wait.remove(); }
      code.blur();
      route();
    }, f);
  });
  return f;
}

// ---- audit ----------------------------------------------------------------------------------

function auditDetail(e) {
  const d = e.detail || {};
  const parts = [];
  for (const [k, v] of Object.entries(d)) {
    if (v === null || v === undefined) continue;
    if (/bytes/.test(k) && typeof v === "number") parts.push(k.replace(/_/g, " ") + ": " + fmtBytes(v));
    else if (/_ms$/.test(k) || k === "until") parts.push(k.replace(/_/g, " ") + ": " + fmtTime(v));
    else parts.push(k.replace(/_/g, " ") + ": " + (typeof v === "object" ? JSON.stringify(v) : v));
  }
  return parts.join(" · ");
}

const AUDIT_KINDS = ["request_received", "request_rejected", "decision", "grant_start", "grant_end",
  "bytes_sent", "clip_exported", "clip_sent", "revoke", "pause", "resume", "consent_rule_changed",
  "pairing", "camera_added", "camera_removed", "log_started"];

async function auditPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const camera = h("input", { id: "audit-camera", name: "camera", value: params.get("camera") || "", placeholder: "any" });
  const request = h("input", { id: "audit-request", name: "request", value: params.get("request") || "", placeholder: "any" });
  const kind = h("select", { id: "audit-kind", name: "kind" }, h("option", { value: "" }, "any"),
    ...AUDIT_KINDS.map((k) => h("option", { value: k, selected: params.get("kind") === k }, k.replace(/_/g, " "))));
  const go = h("button", { type: "submit" }, "Filter");
  const form = h("form", { class: "card row", id: "audit-filter" },
    h("div", {}, h("label", { for: "audit-camera" }, "Camera"), camera),
    h("div", {}, h("label", { for: "audit-request" }, "Request id"), request),
    h("div", {}, h("label", { for: "audit-kind" }, "What"), kind), h("div", {}, go));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (camera.value.trim()) q.set("camera", camera.value.trim());
    if (request.value.trim()) q.set("request", request.value.trim());
    if (kind.value) q.set("kind", kind.value);
    location.hash = "#/audit" + (q.toString() ? "?" + q : "");
  });
  const verify = h("div", { class: "card", id: "audit-verify" }, "Checking the chain…");
  const q = new URLSearchParams();
  q.set("limit", "500");
  if (params.get("camera")) q.set("camera", params.get("camera"));
  if (params.get("request")) q.set("request", params.get("request"));
  if (params.get("kind")) q.set("kind", params.get("kind"));
  const table = h("div", { class: "table-wrap", id: "audit-table" }, h("p", { class: "muted" }, "Loading…"));
  const ex = new URLSearchParams(q); ex.delete("limit");
  const exq = ex.toString() ? "&" + ex : "";
  setMain(h("h1", {}, "Audit log"),
    h("p", { class: "muted" }, "Every request from the city, every decision and every byte shared, in a hash chain the box cannot rewrite without it showing."),
    verify, form,
    h("p", { class: "row" },
      h("a", { class: "button secondary", id: "export-json", href: "/api/v1/audit/export?format=jsonl" + exq, download: "porchlight-audit.jsonl" }, "Export JSON"),
      h("a", { class: "button secondary", id: "export-csv", href: "/api/v1/audit/export?format=csv" + exq, download: "porchlight-audit.csv" }, "Export CSV")),
    table);
  try {
    const [v, list] = await Promise.all([api("GET", "/api/v1/audit/verify"), api("GET", "/api/v1/audit?" + q)]);
    verify.replaceChildren(v.ok
      ? h("span", { class: "ok" }, "✔ Chain intact: " + v.entries + " entries, latest #" + v.last_seq + " (" + String(v.last_hash).slice(0, 16) + "…)")
      : h("span", { class: "bad" }, "✘ Chain broken: " + v.problem));
    // One block per entry (reads on a phone); newest first.
    const rows = list.entries.map((e) => h("div", { class: "entry", "data-kind": e.kind },
      h("div", { class: "row" }, h("span", { class: "muted mono" }, "#" + e.seq), h("strong", {}, e.kind.replace(/_/g, " ")),
        h("span", { class: "muted" }, "by " + e.actor), h("span", { class: "muted small" }, fmtTime(e.ts))),
      h("div", { class: "small" },
        e.camera ? h("span", {}, "camera " + e.camera + " ") : null,
        e.request_id ? h("a", { href: "#/audit?request=" + encodeURIComponent(e.request_id), class: "mono" }, e.request_id) : null),
      auditDetail(e) ? h("div", { class: "small muted" }, auditDetail(e)) : null));
    table.replaceChildren(rows.length ? h("div", { class: "entries" }, ...rows) : h("p", { class: "muted" }, "No entries match."));
  } catch (e) { table.replaceChildren(errorBox(e)); }
}

// ---- go -------------------------------------------------------------------------------------

window.addEventListener("hashchange", () => { if (state.csrf !== undefined) boot(); });
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", logout);
  boot();
});
