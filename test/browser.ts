import { existsSync } from 'node:fs'
import { chromium, type Browser, type Page } from 'playwright-core'

/** Debian's Chromium (`apt-get install chromium`); `.ci/run` installs it. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/**
 * Why the browser tests are skipped — no Chromium binary where one is looked for — or false when
 * they run: `test(name, { skip: noChromium }, …)`, so tap prints the reason.
 */
export const noChromium: string | false = existsSync(CHROMIUM)
  ? false
  : `no Chromium binary at ${CHROMIUM}: install Debian's chromium package (.ci/run does) or set CHROMIUM_PATH`

interface Tap {
  teardown (fn: () => unknown): void
}

/**
 * A headless Chromium with a fresh profile, closed when the test ends, and one page whose script
 * errors and console errors are collected in `errors`. The flags keep Chromium from reaching for
 * the network on its own (this machine's network is closed) and let it run as root.
 */
export async function openPage (t: Tap): Promise<{ browser: Browser, page: Page, errors: string[] }> {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium is not installed at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`)
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(() => browser.close())
  const page = await browser.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()) })
  return { browser, page, errors }
}
