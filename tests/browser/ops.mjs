// The operations page in a real browser, for tomato's tests: the system's Chromium, headless,
// driven with playwright-core. Arguments: the node's base URL, the Chromium binary, an admin
// token, a customer token, the expected riders online and waiting orders, a screenshot path.
// Prints one JSON line of what the page showed; the Rust test judges it.
import { chromium } from "playwright-core";

const [base, executablePath, admin, customer, ridersOnline, waiting, screenshot] =
  process.argv.slice(2);
const WITHIN = 15000;
const text = (page, id) => page.locator(`#${id}`).textContent();

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const report = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  // What the page (or the browser for it, a favicon say) asked for and did not get, the data
  // routes aside (they refuse the customer's token on purpose).
  const missing = [];
  page.on("response", (response) => {
    const path = new URL(response.url()).pathname;
    if (response.status() >= 400 && !path.startsWith("/api/")) {
      missing.push(`${response.status()} ${path}`);
    }
  });
  await page.goto(`${base}/ops`);
  await page.locator("#signin").waitFor({ state: "visible", timeout: WITHIN });
  report.signInFirst = await page.locator("#app").isHidden();

  // A customer's token is refused by the data route, and the page says so.
  await page.fill("#token", customer);
  await page.click("#signin-form button");
  await page.waitForFunction(
    () => document.getElementById("signin-error").textContent.includes("admin"),
    null,
    { timeout: WITHIN },
  );
  report.customerRefused = await text(page, "signin-error");
  report.customerSeesNoData = await page.locator("#app").isHidden();

  // The admin's token opens the page; the socket's snapshots keep it live.
  await page.fill("#token", admin);
  await page.click("#signin-form button");
  await page.locator("#app").waitFor({ state: "visible", timeout: WITHIN });
  await page.waitForFunction(
    ([online, waiting]) =>
      document.getElementById("status").textContent === "live" &&
      document.getElementById("riders-online").textContent === online &&
      document.getElementById("waiting-count").textContent === waiting,
    [ridersOnline, waiting],
    { timeout: WITHIN },
  );
  report.ridersOnline = await text(page, "riders-online");
  report.waiting = await text(page, "waiting-count");
  report.waitingItems = await page.locator("#waiting li").count();
  report.cells = Number(await text(page, "cells-count"));
  report.openReady = await page.locator('#open-by-status dd[data-status="ready_for_rider"]').textContent();
  report.sampleNote = await text(page, "sample-note");
  report.scale = await text(page, "scale-label");
  report.zoneOwners = await page.locator("#zone-owners .zone-owner").allTextContents();
  // The coordinates under the pointer, over the middle of the map.
  const map = await page.locator("#map").boundingBox();
  await page.mouse.move(map.x + map.width / 2, map.y + map.height / 2);
  report.cursor = await text(page, "cursor");
  // Something was drawn: the canvas is not one flat colour.
  report.drawnColours = await page.evaluate(() => {
    const canvas = document.getElementById("map");
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set();
    for (let i = 0; i < data.length; i += 4 * 97) seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
    return seen.size;
  });
  await page.screenshot({ path: screenshot });

  // The token in the fragment signs in too, and leaves the address bar at once.
  const second = await browser.newPage();
  await second.goto(`${base}/ops#token=${encodeURIComponent(admin)}`);
  await second.locator("#app").waitFor({ state: "visible", timeout: WITHIN });
  report.fragmentCleared = new URL(second.url()).hash === "";
  report.errors = errors;
  report.missing = missing;
  report.ok = true;
} catch (err) {
  report.ok = false;
  report.failure = String(err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
