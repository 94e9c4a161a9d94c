// Shared by the browser scripts: Debian's Chromium through playwright-core, the STEP protocol
// with tests/web_ui.rs (stdout lines "STEP <name> [json]", answers "GO …" on stdin), and
// numbered full-page screenshots.
import { chromium } from "playwright-core";
import readline from "node:readline";
import fs from "node:fs";
import path from "node:path";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

// Flags for a closed network: no background fetches, no QUIC, no sandbox (CI runs as root).
export async function launch() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(CHROMIUM + " is missing: apt-get install chromium (or run .ci/setup)");
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--autoplay-policy=no-user-gesture-required"],
  });
}

// A phone-sized page that logs the page's console and collects its errors.
export async function phonePage(browser, errors) {
  const context = await browser.newContext({ viewport: { width: 412, height: 915 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on("console", (m) => console.error("[page " + m.type() + "]", m.text()));
  page.on("pageerror", (e) => { errors.push(String(e)); console.error("[pageerror]", e); });
  return page;
}

export function protocol() {
  const rl = readline.createInterface({ input: process.stdin });
  const inbox = [];
  let waiter = null;
  rl.on("line", (l) => {
    if (waiter) { const w = waiter; waiter = null; w(l); } else inbox.push(l);
  });
  const nextLine = () => (inbox.length ? Promise.resolve(inbox.shift()) : new Promise((r) => { waiter = r; }));
  const step = (name, data) => process.stdout.write("STEP " + name + (data ? " " + JSON.stringify(data) : "") + "\n");
  const handshake = async (name, data) => {
    step(name, data);
    const answer = await nextLine();
    if (!answer.startsWith("GO")) throw new Error("test harness said " + answer);
    return answer.slice(2).trim();
  };
  return { step, handshake, close: () => rl.close() };
}

export function shooter(dir) {
  fs.mkdirSync(dir, { recursive: true });
  let n = 0;
  return async (page, name) => {
    n += 1;
    const file = path.join(dir, String(n).padStart(2, "0") + "-" + name + ".png");
    await page.screenshot({ path: file, fullPage: true });
    console.error("screenshot", file);
  };
}

// First run: the setup code and the admin password; ends on Home.
export async function setUp(page, base, code, password) {
  await page.goto(base + "/");
  await page.locator("#setup-code").waitFor();
  await page.fill("#setup-code", code);
  await page.fill("#setup-password", password);
  await page.fill("#setup-password2", password);
  await page.click("#setup-submit");
  await page.locator("h1", { hasText: "Home" }).waitFor();
}
