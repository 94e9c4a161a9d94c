// Pairing from the page (tests/web_ui.rs starts the city broker and `porchlight-center serve`):
// an unknown claim code is refused in plain words, the real one pairs, Home shows the link
// connected, unpair returns the box to unpaired.
//
//   node pairing.mjs '{"base":"…","code":"…","password":"…","claim":"…","shots":"DIR"}'
import { launch, phonePage, protocol, shooter, setUp } from "./lib.mjs";

const cfg = JSON.parse(process.argv[2]);
const { step, close } = protocol();
const shot = shooter(cfg.shots);
const browser = await launch();
const errors = [];
let page = null;
try {
  page = await phonePage(browser, errors);
  page.on("dialog", (d) => d.accept());
  await setUp(page, cfg.base, cfg.code, cfg.password);

  await page.goto(cfg.base + "/#/pairing");
  const state = page.locator("#pair-state");
  const pill = (word) => page.locator("#pair-state .pill", { hasText: new RegExp("^" + word + "$") });
  await pill("unpaired").waitFor();
  await page.locator("#pair-form").waitFor();
  await shot(page, "pairing-unpaired");

  // A well-formed code the city never issued.
  await page.fill("#claim-code", "ABCD-EFGH-JKMN");
  await page.click("#pair-form button[type=submit]");
  const error = page.locator("#pair-form .error");
  await error.waitFor({ timeout: 40000 });
  const message = await error.innerText();
  await shot(page, "pairing-refused");
  step("refused", { message });

  await page.fill("#claim-code", cfg.claim.toLowerCase());
  await page.click("#pair-form button[type=submit]");
  await pill("paired").waitFor({ timeout: 40000 });
  const paired = await state.innerText();
  await shot(page, "pairing-paired");
  step("paired", { text: paired });

  await page.goto(cfg.base + "/");
  await page.locator("#link-state", { hasText: /^connected$/ }).waitFor({ timeout: 30000 });
  await shot(page, "dashboard-paired");

  await page.goto(cfg.base + "/#/pairing");
  await page.click("#unpair");
  await pill("unpaired").waitFor({ timeout: 30000 });
  await shot(page, "pairing-unpaired-again");
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  step("unpaired");
} catch (e) {
  if (page) await shot(page, "FAILED").catch(() => {});
  throw e;
} finally {
  await browser.close();
  close();
}
