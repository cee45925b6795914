import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core'

/** Debian's Chromium (`apt-get install chromium`); `.ci/run` installs it. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/**
 * Why the browser tests are skipped — no Chromium binary where one is looked for — or false when
 * they run: `test(name, { skip: noChromium }, …)`, so tap prints the reason.
 */
export const noChromium: string | false = existsSync(CHROMIUM)
  ? false
  : `no Chromium binary at ${CHROMIUM}: install Debian's chromium package (.ci/run does) or set CHROMIUM_PATH`

/** Flags that keep Chromium from reaching for the network on its own (this machine's network is closed) and let it run as root. */
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

interface Tap {
  teardown (fn: () => unknown): void
}

/** What a browser test asks of Chromium: flags added to `FLAGS`, and the page's context (its viewport, `ignoreHTTPSErrors`, …). */
export interface PageOptions {
  readonly args?: readonly string[]
  readonly context?: BrowserContextOptions
}

function requireChromium (): void {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium is not installed at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`)
}

/** Collects the page's script errors and console errors. */
function collectErrors (page: Page): string[] {
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()) })
  return errors
}

/**
 * A headless Chromium with a fresh profile, closed when the test ends, and one page whose script
 * errors and console errors are collected in `errors`.
 */
export async function openPage (t: Tap, options: PageOptions = {}): Promise<{ browser: Browser, page: Page, errors: string[] }> {
  requireChromium()
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...FLAGS, ...(options.args ?? [])] })
  t.teardown(() => browser.close())
  const page = await browser.newPage(options.context)
  return { browser, page, errors: collectErrors(page) }
}

/**
 * `openPage` in a profile of its own, made with `preferences` (Chromium's `Preferences` file of
 * the profile `Default`), for what only a profile sets: Chromium blocks third-party cookies in
 * a fresh profile, and `{ profile: { cookie_controls_mode: 0 } }` allows them, as a user can.
 * The profile's folder goes when the test ends.
 */
export async function openProfilePage (t: Tap, preferences: object, options: PageOptions = {}): Promise<{ context: BrowserContext, page: Page, errors: string[] }> {
  requireChromium()
  const dir = await mkdtemp(join(tmpdir(), 'fastify-sticky-chromium-'))
  await mkdir(join(dir, 'Default'))
  await writeFile(join(dir, 'Default', 'Preferences'), JSON.stringify(preferences))
  const context = await chromium.launchPersistentContext(dir, { ...options.context, executablePath: CHROMIUM, args: [...FLAGS, ...(options.args ?? [])] })
  t.teardown(async () => {
    await context.close()
    await rm(dir, { recursive: true, force: true })
  })
  const page = context.pages()[0] ?? await context.newPage()
  return { context, page, errors: collectErrors(page) }
}
