// Drives Debian's Chromium (through playwright-core) as a user would, for
// tests/browser.rs, which starts the servers and checks what this prints.
// The first argument is a JSON description of one visit:
//   {"start": URL,                 the page the user opens
//    "choose": "Main IdP",         optional: the link to follow on the IdP chooser
//    "account": "alice",           optional: sign in at oidc-provider's own pages
//    "pick": "alice",              optional: or pick a user on the demo's IdP page
//    "then": [URL, ...],           pages opened afterwards in the same browser
//    "shots": DIR, "name": NAME}   screenshots of every page, kept as artifacts
// It prints one JSON line: {"pages": [{"url", "status", "title", "text"}]},
// the page the sign-in ended on first, then one per `then` URL.
import { launch, screenshots } from './launch.mjs';

const spec = JSON.parse(process.argv[2]);

const browser = await launch();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  // The status of the last document the tab loaded.
  let status = 0;
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) status = r.status();
  });
  const snap = screenshots(page, spec.shots, spec.name);
  const seen = async () => ({
    url: page.url(),
    status,
    title: await page.title(),
    text: await page.evaluate(() => document.body ? document.body.innerText : ''),
  });

  await page.goto(spec.start);
  await snap('start');
  if (spec.choose) {
    await page.getByRole('link', { name: spec.choose }).click();
    await page.waitForLoadState();
    await snap('chosen');
  }
  if (spec.account) {
    // oidc-provider's development login form, then its consent form.
    await page.locator('input[name="login"]').fill(spec.account);
    await page.locator('input[name="password"]').fill(spec.password || 'any');
    await snap('idp-login');
    await Promise.all([page.waitForNavigation(), page.locator('button[type="submit"]').click()]);
    if (await page.locator('button[type="submit"]').count() > 0 && page.url().includes('/interaction/')) {
      await snap('idp-consent');
      await Promise.all([page.waitForNavigation(), page.locator('button[type="submit"]').click()]);
    }
  }
  if (spec.pick) {
    // The demo IdP's page: one button per sample user.
    await snap('demo-idp');
    await Promise.all([
      page.waitForNavigation(),
      page.locator(`form:has(input[name="user"][value="${spec.pick}"]) button`).first().click(),
    ]);
  }
  await page.waitForLoadState();
  await snap('landed');
  const pages = [await seen()];
  for (const url of spec.then || []) {
    await page.goto(url);
    await snap('then');
    pages.push(await seen());
  }
  console.log(JSON.stringify({ pages }));
} finally {
  await browser.close();
}
