import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { test } from 'tap'
import { COOKIE_PURPOSE_LB, CookieCodec } from '../lib/cookie-codec.js'
import { CookieJar, waitFor } from './setup.js'

// The example imports `fastify-sticky` by name, i.e. dist/: `npm test` builds it first.
const START = new URL('../examples/shop/start.js', import.meta.url)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const URL_LINE = /^fastify-sticky shop example: (http:\/\/localhost:(\d+)\/)$/m
const REQUEST_TIMEOUT_MS = 5000

interface Backend {
  id: string
  url: string
  running: boolean
}
interface Shop {
  url: string
  backends: Backend[]
  close (): Promise<void>
}
interface ShopModule {
  DEMO_KEY: string
  startShop (options?: { port?: number, host?: string }): Promise<Shop>
}

// A variable specifier: the example is plain JavaScript without declarations.
const shopModule = await import(START.href) as ShopModule
const codec = new CookieCodec([Buffer.from(shopModule.DEMO_KEY, 'hex')])

interface Response {
  status: number
  headers: Headers
  body: string
  json (): any
}

/** A browser-like client of the shop: it keeps the cookies, and gives up on a request after REQUEST_TIMEOUT_MS. */
function client (base: string) {
  const jar = new CookieJar()
  async function send (method: string, path: string, body?: unknown): Promise<Response> {
    let res
    try {
      res = await fetch(new URL(path, base), {
        method,
        headers: { ...jar.headers(), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
      })
    } catch (err) {
      throw new Error(`${method} ${path} got no response within ${REQUEST_TIMEOUT_MS} ms: ${(err as Error).name} ${(err as Error).message}`)
    }
    jar.store(res.headers.getSetCookie())
    const text = await res.text()
    return { status: res.status, headers: res.headers, body: text, json: () => JSON.parse(text) }
  }
  return { jar, send }
}

/** The target id sealed in an `AWSALB` value, or what went wrong. */
function pinnedBy (value: string | undefined): string {
  if (value === undefined) return '(no AWSALB cookie)'
  return codec.open(COOKIE_PURPOSE_LB, value)?.payload.targetId ?? `(undecodable: ${value})`
}

function describe (res: Response): string {
  return `${res.status} x-served-by=${res.headers.get('x-served-by')} x-sticky-affinity=${res.headers.get('x-sticky-affinity')} body=${res.body.slice(0, 200)}`
}

test('node examples/shop/start.js: the cart stays on one backend, and moves with a new cookie when it stops', async (t) => {
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0' }
  // What a person runs: plain node, without the test runner's loaders.
  delete env.NODE_OPTIONS
  const child = spawn(process.execPath, [fileURLToPath(START)], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = once(child, 'exit')

  try {
    await waitFor(() => URL_LINE.test(stdout) || child.exitCode !== null, 15_000, 'the URL line')
  } catch (err) {
    throw new Error(`${(err as Error).message}; stdout: ${JSON.stringify(stdout)}, stderr: ${JSON.stringify(stderr)}`)
  }
  const line = URL_LINE.exec(stdout)
  if (line === null) throw new Error(`the example exited with ${child.exitCode} before printing its URL; stdout: ${JSON.stringify(stdout)}, stderr: ${JSON.stringify(stderr)}`)
  const [, base, port] = line
  t.not(port, '0', `the printed URL has the actual port: ${JSON.stringify(stdout)}`)
  t.equal(stdout.trim().split('\n').length, 1, `it prints one line: ${JSON.stringify(stdout)}`)
  const { jar, send } = client(base)

  const page = await send('GET', '/')
  t.equal(page.status, 200, `GET / answers the page: ${page.status}`)
  t.match(page.headers.get('content-type'), /^text\/html/, `GET / is HTML: ${page.headers.get('content-type')}`)
  t.match(page.body, /<title>fastify-sticky shop<\/title>/, `the page has its title: ${page.body.slice(0, 300)}`)
  const external = /(src|href)="(https?:)?\/\/[^"]*"/.exec(page.body)
  t.equal(external, null, `the page loads nothing from elsewhere: ${external?.[0]}`)

  const added = await send('POST', '/cart/items', { name: 'Teapot' })
  t.equal(added.status, 200, `POST /cart/items: ${describe(added)}`)
  const pinned = added.headers.get('x-served-by') ?? '(no x-served-by)'
  t.match(pinned, /^cart-[abc]$/, `a demo backend served it: ${describe(added)}`)
  t.equal(added.headers.get('x-sticky-affinity'), 'new', `a first visit is a new pin: ${describe(added)}`)
  t.same(added.json().items, [{ name: 'Teapot', quantity: 1 }], `the item is in the cart: ${added.body}`)
  t.equal(pinnedBy(jar.cookies.get('AWSALB')), pinned, `the AWSALB cookie pins ${pinned}`)
  t.ok(jar.cookies.has('shop_session'), `the backend set its session cookie: ${[...jar.cookies.keys()].join(', ')}`)

  for (let i = 1; i <= 10; i++) {
    const res = await send('GET', '/cart')
    t.same(
      { status: res.status, servedBy: res.headers.get('x-served-by'), affinity: res.headers.get('x-sticky-affinity'), items: res.json().items },
      { status: 200, servedBy: pinned, affinity: 'hit', items: [{ name: 'Teapot', quantity: 1 }] },
      `GET /cart #${i} is a hit on ${pinned} with the item: ${describe(res)}`)
  }

  const before = await send('GET', '/demo/backends')
  t.same(before.json(), [
    { id: 'cart-a', state: 'running' }, { id: 'cart-b', state: 'running' }, { id: 'cart-c', state: 'running' }
  ], `every backend runs: ${before.body}`)
  const stopped = await send('POST', `/demo/backends/${pinned}/stop`)
  t.equal(stopped.status, 200, `stopping ${pinned}: ${stopped.status} ${stopped.body}`)
  t.same(stopped.json(), { id: pinned, state: 'stopped' }, `${pinned} is stopped: ${stopped.body}`)
  const after = await send('GET', '/demo/backends')
  t.equal(after.json().filter((backend: { state: string }) => backend.state === 'stopped').length, 1, `one backend is stopped: ${after.body}`)

  const oldCookie = jar.cookies.get('AWSALB')
  const moved = await send('GET', '/cart')
  const newTarget = moved.headers.get('x-served-by') ?? '(no x-served-by)'
  t.equal(moved.status, 200, `GET /cart after the stop: ${describe(moved)}`)
  t.not(newTarget, pinned, `another backend than ${pinned} answers: ${describe(moved)}`)
  t.match(newTarget, /^cart-[abc]$/, `a demo backend answers: ${describe(moved)}`)
  t.equal(moved.headers.get('x-sticky-affinity'), 'reassigned;target-unreachable', `the affinity says why: ${describe(moved)}`)
  const newCookie = jar.cookies.get('AWSALB')
  t.not(newCookie, oldCookie, `a new AWSALB value came: ${moved.headers.getSetCookie().join(' | ')}`)
  t.equal(pinnedBy(newCookie), newTarget, `the new AWSALB cookie pins ${newTarget}: ${newCookie}`)
  t.same(moved.json().items, [], `the cart lived in ${pinned}'s memory, so it is empty on ${newTarget}: ${moved.body}`)
  t.equal(moved.json().sessionKnown, false, `${newTarget} does not know the session: ${moved.body}`)

  const again = await send('GET', '/cart')
  t.equal(again.headers.get('x-served-by'), newTarget, `the next request stays on ${newTarget}: ${describe(again)}`)
  t.equal(again.headers.get('x-sticky-affinity'), 'hit', `and is a hit: ${describe(again)}`)

  child.kill('SIGTERM')
  const deadline = setTimeout(() => child.kill('SIGKILL'), 5000)
  t.teardown(() => clearTimeout(deadline))
  const [code, signal] = await exited
  t.same({ code, signal }, { code: 0, signal: null }, `SIGTERM closes everything and exits 0: code ${code}, signal ${signal}, stderr: ${JSON.stringify(stderr)}`)
})

test('startShop(): a restarted backend has the same port and lost its carts; close() stops everything', async (t) => {
  const shop = await shopModule.startShop({ port: 0 })
  t.teardown(() => shop.close())
  t.match(shop.url, /^http:\/\/localhost:\d+\/$/, `the URL: ${shop.url}`)
  const { send } = client(shop.url)

  const added = await send('POST', '/cart/items', { name: 'Mug' })
  t.equal(added.status, 200, `POST /cart/items: ${describe(added)}`)
  const pinned = added.headers.get('x-served-by')
  const backend = shop.backends.find((candidate) => candidate.id === pinned)
  if (backend === undefined) throw new Error(`no backend ${pinned} among ${shop.backends.map(({ id }) => id).join(', ')}`)
  const url = backend.url

  const stopped = await send('POST', `/demo/backends/${pinned}/stop`)
  t.same(stopped.json(), { id: pinned, state: 'stopped' }, `stop: ${stopped.body}`)
  const started = await send('POST', `/demo/backends/${pinned}/start`)
  t.same(started.json(), { id: pinned, state: 'running' }, `start: ${started.body}`)
  t.equal(backend.url, url, `${pinned} listens on its port again: ${backend.url}, was ${url}`)

  const res = await send('GET', '/cart')
  t.equal(res.headers.get('x-served-by'), pinned, `the cookie still pins the restarted ${pinned}: ${describe(res)}`)
  t.equal(res.headers.get('x-sticky-affinity'), 'hit', `a hit: ${describe(res)}`)
  t.same(res.json().items, [], `the restarted process lost the cart: ${res.body}`)
  t.equal(res.json().sessionKnown, false, `and the session: ${res.body}`)

  const unknown = await send('POST', '/demo/backends/cart-z/stop')
  t.equal(unknown.status, 404, `an unknown backend is a 404: ${unknown.status} ${unknown.body}`)

  await shop.close()
  t.same(shop.backends.map(({ id, running }) => ({ id, running })), [
    { id: 'cart-a', running: false }, { id: 'cart-b', running: false }, { id: 'cart-c', running: false }
  ], 'close() stops every backend')
  const refused = await fetch(shop.url).then((r) => `answered ${r.status}`, (err: Error) => (err.cause as { code?: string } | undefined)?.code ?? err.message)
  t.equal(refused, 'ECONNREFUSED', `close() closes the gateway: ${refused}`)
})
