// The resident's flow in a real browser (Debian's headless Chromium, driven by playwright-core),
// against the real daemon started by tests/web_ui.rs. The Rust test and this script talk over
// stdin/stdout: this script prints "STEP <name> [json]" lines and waits for a line back where
// the police side (porchlight-center) has to act. Diagnostics go to stderr.
//
//   node ui.mjs '{"base":"http://127.0.0.1:PORT","code":"…","password":"…","camera":{…},"shots":"DIR"}'
import { launch, phonePage, protocol, shooter } from "./lib.mjs";

const cfg = JSON.parse(process.argv[2]);
const { step, handshake, close } = protocol();
const shot = shooter(cfg.shots);

// Reloads the cameras page until the camera streams.
async function waitStreaming(page, id) {
  const card = page.locator(`#camera-list [data-camera="${id}"]`);
  await card.waitFor();
  const deadline = Date.now() + 60000;
  for (;;) {
    const text = await card.innerText();
    if (text.includes("streaming") && !text.includes("Last frame never")) return text;
    if (Date.now() > deadline) throw new Error("camera never streaming: " + text);
    await page.waitForTimeout(500);
    await page.reload();
    await card.waitFor();
  }
}

const browser = await launch();
const errors = [];
let page = null;
try {
  // A phone-sized window: the UI must work there.
  page = await phonePage(browser, errors);
  const go = async (hash) => {
    await page.goto(cfg.base + "/" + hash);
  };

  // 1. First run: the setup code claims the box.
  await go("");
  await page.locator("#setup-code").waitFor();
  await shot(page, "setup");
  await page.fill("#setup-code", "WRONG-CODE-0000-0000");
  await page.fill("#setup-password", cfg.password);
  await page.fill("#setup-password2", cfg.password);
  await page.click("#setup-submit");
  await page.locator("form .error").filter({ hasText: "wrong setup code" }).waitFor();
  await page.fill("#setup-code", cfg.code.toLowerCase());
  await page.click("#setup-submit");
  await page.locator("h1", { hasText: "Home" }).waitFor();
  step("setup_done");

  // 2. Log out, log in.
  await page.click("#logout");
  await page.locator("#login-password").waitFor();
  await shot(page, "login");
  await page.fill("#login-password", cfg.password);
  await page.click("#login-submit");
  await page.locator("h1", { hasText: "Home" }).waitFor();

  // 3. Add the GStreamer camera through the form.
  await go("#/cameras");
  await page.locator("#add-camera").waitFor();
  const cam = cfg.camera;
  await page.fill("#add-camera-id", cam.id);
  await page.fill("#add-camera-name", cam.name);
  await page.fill("#add-camera-url", cam.url);
  if (cam.username) await page.fill("#add-camera-username", cam.username);
  if (cam.password) await page.fill("#add-camera-password", cam.password);
  await page.click("#add-camera button[type=submit]");
  await waitStreaming(page, cam.id);
  const shown = await page.locator("#camera-list").innerText();
  step("camera_added", { leaked_password: cam.password ? shown.includes(cam.password) : false });
  await shot(page, "cameras");

  // 4. Local live preview, no transcoding: the browser decodes the camera's H.264.
  await page.click(`button[data-preview="${cam.id}"]`);
  const video = page.locator(`video[data-camera="${cam.id}"]`);
  await video.waitFor();
  const played = await page.waitForFunction((id) => {
    const v = document.querySelector(`video[data-camera="${id}"]`);
    return v && v.readyState >= 2 && v.currentTime > 0.3 && v.videoWidth > 0
      ? { w: v.videoWidth, h: v.videoHeight, t: v.currentTime } : null;
  }, cam.id, { timeout: 30000 }).then((h) => h.jsonValue());
  await shot(page, "live-preview");
  step("preview_playing", played);
  await page.click(`button[data-preview="${cam.id}"]`);

  // Edit: a new name (the password field stays empty: the stored one is kept).
  await page.locator(`#camera-list [data-camera="${cam.id}"] button`, { hasText: "Edit" }).click();
  const edit = page.locator(`#edit-${cam.id}`);
  await edit.locator("input[name=name]").fill(cam.name + " (porch)");
  await edit.locator("button[type=submit]").click();
  await page.locator(`#camera-list [data-camera="${cam.id}"]`, { hasText: cam.name + " (porch)" }).waitFor();
  await waitStreaming(page, cam.id);
  step("camera_edited");

  // 5. Sharing: live video of this camera on "ask".
  await go("#/sharing");
  const form = page.locator(`form[data-camera="${cam.id}"]`);
  await form.waitFor();
  await form.locator("select[name=live]").selectOption("ask");
  await form.locator("button[type=submit]").click();
  await form.locator(".notice", { hasText: "Saved" }).waitFor();
  await shot(page, "sharing");
  const requestId = await handshake("consent_ask_set");

  // 6. The police request arrives pending: prominent on the dashboard, decided on Requests.
  await go("");
  const dashCard = page.locator(`#dash-pending [data-request="${requestId}"]`);
  await dashCard.waitFor({ timeout: 30000 });
  await shot(page, "dashboard-pending");
  await go("#/requests");
  const card = page.locator(`#pending-list [data-request="${requestId}"]`);
  await card.waitFor();
  const cardText = await card.innerText();
  await shot(page, "requests-pending");
  await card.locator("button[data-action=approve]").click();
  const grant = page.locator(`#grant-list [data-grant="${requestId}"]`);
  await grant.waitFor();
  await shot(page, "requests-granted");
  await handshake("approved", { card: cardText });

  // 7. Revoke while the center receives.
  await grant.locator("button[data-action=revoke]").click();
  await grant.waitFor({ state: "detached" });
  await page.locator("#grant-list", { hasText: "Nothing is being shared" }).waitFor();
  await handshake("revoked");

  // 8. The audit log: the request's entries, the chain verified, exports offered.
  await go("#/audit?request=" + encodeURIComponent(requestId));
  await page.locator("#audit-table .entries").waitFor();
  await page.locator("#audit-verify", { hasText: "Chain intact" }).waitFor();
  const kinds = await page.locator("#audit-table [data-kind]").evaluateAll((rows) => rows.map((r) => r.dataset.kind));
  const csv = await page.evaluate(async () => (await fetch(document.querySelector("#export-csv").href)).text());
  await shot(page, "audit");
  step("audit", { kinds, csv_lines: csv.trim().split("\n").length });

  // The big switch: pause all sharing, see it said everywhere, resume.
  await go("#/requests");
  await page.locator("#pause-toggle", { hasText: "Pause all sharing" }).click();
  await page.locator("#pause-toggle", { hasText: "Resume sharing" }).waitFor();
  await page.locator("#paused-banner").waitFor({ state: "visible" });
  await shot(page, "paused");
  step("paused");
  await page.locator("#pause-toggle", { hasText: "Resume sharing" }).click();
  await page.locator("#pause-toggle", { hasText: "Pause all sharing" }).waitFor();
  await page.locator("#paused-banner").waitFor({ state: "hidden" });

  // 9. The remaining pages, for the record.
  await go("#/pairing");
  await page.locator("h1", { hasText: "City link" }).waitFor();
  await page.waitForTimeout(500);
  await shot(page, "pairing");
  await go("");
  await page.locator("#dash-cameras [data-camera]").first().waitFor();
  // The preview on Home keeps playing across the page's 3 s refreshes.
  await page.click(`#dash-cameras button[data-preview="${cam.id}"]`);
  const playing = (min) => page.waitForFunction(([id, t]) => {
    const v = document.querySelector(`#dash-cameras video[data-camera="${id}"]`);
    return v && v.isConnected && v.currentTime > t ? v.currentTime : null;
  }, [cam.id, min], { timeout: 30000 }).then((h) => h.jsonValue());
  const t1 = await playing(0.3);
  await page.waitForTimeout(3500);
  const t2 = await playing(t1 + 2);
  step("dashboard_preview", { t1, t2 });
  await shot(page, "dashboard");
  await page.setViewportSize({ width: 1280, height: 900 });
  await shot(page, "dashboard-desktop");
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  step("done");
} catch (e) {
  // The page as it was when the flow broke, next to the others.
  if (page) await shot(page, "FAILED").catch(() => {});
  throw e;
} finally {
  await browser.close();
  close();
}
