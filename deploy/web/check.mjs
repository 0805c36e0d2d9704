// Open a served web bundle's index.html?check=1 in headless chromium over the DevTools protocol
// (puppeteer-core, the system chromium) and print the page's result as JSON on stdout.
// Real time: no --virtual-time-budget (under virtual time performance.now() reads 0).
//   node deploy/web/check.mjs URL [timeout_s] [calls to time over CDP]
import puppeteer from "puppeteer-core";

const [url, timeoutS = "900", cdpCalls = "0"] = process.argv.slice(2);
if (!url) { console.error("usage: node check.mjs URL [timeout_s]"); process.exit(2); }
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-timer-throttling", "--disable-renderer-backgrounding"],
});
let code = 0;
try {
  const page = await browser.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => window.__compressResult !== undefined,
                             { timeout: Number(timeoutS) * 1000, polling: 200 });
  const result = await page.evaluate(() => window.__compressResult);
  const n = Number(cdpCalls);
  if (n > 0 && !result.error) {
    // CPU time of the page's main thread (where 1-thread WASM runs) from the DevTools protocol's
    // Performance domain, in thread ticks: what the calls cost, whatever else the machine runs
    const cdp = await page.createCDPSession();
    await cdp.send("Performance.enable", { timeDomain: "threadTicks" });
    const metric = async () => Object.fromEntries((await cdp.send("Performance.getMetrics")).metrics
      .map((m) => [m.name, m.value]));
    await page.evaluate((k) => window.__compressCalls(k), Math.min(20, n));  // warm-up
    const a = await metric();
    const t0 = Date.now();
    await page.evaluate((k) => window.__compressCalls(k), n);
    const wall = Date.now() - t0;
    const b = await metric();
    result.cdp_latency_ms = { calls: n, thread_cpu_per_call: (b.ThreadTime - a.ThreadTime) * 1000 / n,
                              task_per_call: (b.TaskDuration - a.TaskDuration) * 1000 / n,
                              wall_per_call: wall / n };
  }
  result.browser = await browser.version();
  result.console = logs;
  process.stdout.write(JSON.stringify(result) + "\n");
  if (result.error) code = 1;
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e.message ?? e) }) + "\n");
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
