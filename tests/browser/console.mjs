// Drives the operator console (SPEC 6b) in Debian's Chromium, for
// tests/browser.rs: the token, a user's memberships, a role change, the
// audit log showing it, the explainer's trace and a policy plan. The argument is JSON:
//   {"console": URL, "token": T, "email": E, "org": ORG, "role": ROLE,
//    "idp": IDP, "claims": {...}, "plan_yaml": YAML, "shots": DIR, "name": NAME,
//    "width": PX}
// It prints one JSON line of what a user would read off the pages.
import { launch, screenshots } from './launch.mjs';

const spec = JSON.parse(process.argv[2]);
const browser = await launch();
try {
  const page = await (await browser.newContext({ viewport: { width: spec.width || 1280, height: 900 } })).newPage();
  page.setDefaultTimeout(15000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const snap = screenshots(page, spec.shots, spec.name);
  const out = {};

  await page.goto(spec.console);
  await snap('token');
  // By keyboard, as a screen-reader user would: the label names the field.
  await page.getByRole('textbox', { name: /admin token/i }).fill(spec.token);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Organizations' }).waitFor();
  await page.locator('#org-list article').first().waitFor();
  out.orgs = await page.locator('#org-list').innerText();
  await snap('orgs');

  await page.locator('#tabs [data-tab="users"]').click();
  await page.getByLabel('Email contains').fill(spec.email);
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByRole('button', { name: spec.email }).click();
  await page.locator('#user-detail article').waitFor();
  out.user = await page.locator('#user-detail').innerText();
  await snap('user');
  // Add the role to the membership and save.
  await page.locator(`#role-${spec.org}-${spec.role}`).check();
  await page.getByRole('button', { name: `Save roles in ${spec.org}` }).click();
  await page.locator('#status.done').waitFor();
  out.saved = await page.locator('#status').innerText();
  await page.locator('#user-detail article').waitFor();
  out.user_after = await page.locator('#user-detail').innerText();

  await page.locator('#tabs [data-tab="audit"]').click();
  await page.getByLabel('Organization', { exact: true }).fill(spec.org);
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('#audit-list tbody tr').first().waitFor();
  out.audit = await page.locator('#audit-list').innerText();
  out.audit_page = await page.locator('#audit-page').innerText();
  await snap('audit');

  await page.locator('#tabs [data-tab="explain"]').click();
  await page.locator(`#explain-idp option[value="${spec.idp}"]`).waitFor({ state: 'attached' });
  await page.getByLabel('Identity provider').selectOption(spec.idp);
  await page.getByLabel(/Claims/).fill(JSON.stringify(spec.claims));
  await page.locator('#explain-form button[type="submit"]').click();
  await page.locator('#explain-result .decision').waitFor();
  out.explain = await page.locator('#explain-result').innerText();
  await snap('explain');
  // The policy plan beside it: a new configuration pasted, its preview.
  await page.getByLabel(/New configuration/).fill(spec.plan_yaml);
  await page.getByRole('button', { name: 'Plan', exact: true }).click();
  await page.locator('#plan-result .totals').waitFor();
  out.plan = await page.locator('#plan-result').innerText();
  await snap('plan');
  // Nothing wider than the screen.
  out.overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  out.errors = errors;
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
