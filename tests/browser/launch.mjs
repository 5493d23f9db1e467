// Debian's Chromium as every browser test starts it.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export async function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync',
    ],
  });
}

// A function that saves numbered full-page screenshots of `page` as
// `<dir>/<name>-NN-<what>.png`.
export function screenshots(page, dir, name) {
  mkdirSync(dir, { recursive: true });
  let n = 0;
  return async (what) => {
    n += 1;
    await page.screenshot({ path: join(dir, `${name}-${String(n).padStart(2, '0')}-${what}.png`), fullPage: true });
  };
}
