/**
 * A real browser for tests: Debian's chromium (/usr/bin/chromium) driven by playwright-core over its pipe
 * (nothing is downloaded; `playwright install` is never run). One browser per test file, a context per
 * user (its own cookies), full-page screenshots into test-results/portal/, and everything closed in the
 * test's teardown. Without chromium the test skips with a message.
 *
 * The browser is told to stay quiet (no background networking, no component updates, no sync): the only
 * requests it makes are the test's, to loopback.
 */
import fs from 'node:fs'
import path from 'node:path'
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core'

export const CHROMIUM = '/usr/bin/chromium'
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-features=Translate,OptimizationHints,MediaRouter',
]
/** Where screenshots go (test-results/ is in .gitignore). */
export const SHOTS = path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'test-results', 'portal')

/** Why the browser tests cannot run here, or null when they can. */
export function browserMissing(executablePath = CHROMIUM): string | null {
  try {
    fs.accessSync(executablePath, fs.constants.X_OK)
    return null
  } catch {
    return `no chromium at ${executablePath} (apt-get install chromium): the browser tests are skipped`
  }
}

interface Teardown {
  teardown(fn: () => unknown): void
}

export class BrowserHarness {
  private readonly contexts: BrowserContext[] = []

  private constructor(readonly browser: Browser) {}

  /**
   * Launches chromium and closes it (with every context) in `t`'s teardown. `executablePath`: another
   * binary or a wrapper script (e.g. one that enters a network namespace first).
   */
  static async launch(t: Teardown, o: { executablePath?: string } = {}): Promise<BrowserHarness> {
    const browser = await chromium.launch({ executablePath: o.executablePath ?? CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 })
    const h = new BrowserHarness(browser)
    t.teardown(() => h.close())
    return h
  }

  /** A fresh context (its own cookies: one per user) at `baseURL`. */
  async context(baseURL: string): Promise<BrowserContext> {
    const c = await this.browser.newContext({ baseURL, viewport: { width: 1200, height: 800 } })
    c.setDefaultTimeout(10_000)
    c.setDefaultNavigationTimeout(10_000)
    this.contexts.push(c)
    return c
  }

  /** A full-page screenshot to test-results/portal/<name>.png; returns its path. */
  static async shot(page: Page, name: string): Promise<string> {
    fs.mkdirSync(SHOTS, { recursive: true })
    const file = path.join(SHOTS, `${name}.png`)
    await page.screenshot({ path: file, fullPage: true })
    return file
  }

  async close(): Promise<void> {
    for (const c of this.contexts.splice(0)) await c.close().catch(() => {})
    await this.browser.close().catch(() => {})
  }
}

export const shot = BrowserHarness.shot

/** Fills the login form and submits it; the POST's response (its status) once the page answered. */
export async function logIn(page: Page, who: { user: string; password: string }) {
  if (!page.url().includes('/login')) await page.goto('/login')
  await page.locator('input[name="username"]').fill(who.user)
  await page.locator('input[name="password"]').fill(who.password)
  const [res] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/login' && r.request().method() === 'POST'),
    page.getByRole('button', { name: 'Log in', exact: true }).click(),
  ])
  await page.waitForLoadState()
  return res
}
