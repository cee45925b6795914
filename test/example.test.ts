import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { test } from 'tap'
import { COOKIE_PURPOSE_LB, CookieCodec } from '../lib/cookie-codec.js'
import { CookieJar, onHealthChange, waitFor } from './setup.js'

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
  startShop (options?: { port?: number, host?: string, healthCheck?: Record<string, unknown> }): Promise<Shop>
}
interface TargetView {
  id: string
  process: 'running' | 'stopped'
  state: string
  reason: string | null
  forMs: number
  routable: boolean
  inFlight: number
}
interface HealthView {
  group: string
  degraded: boolean
  failOpen: boolean
  healthCheck: Record<string, unknown>
  targets: TargetView[]
}
/** Every field GET /demo/health may send for a target; `boundSessions` and `ejected` when the plugin has them. */
const TARGET_VIEW_KEYS = ['id', 'process', 'state', 'reason', 'forMs', 'routable', 'inFlight', 'boundSessions', 'ejected']
/** Checks every few ms: failures show within a tenth of a second. */
const FAST_HEALTH_CHECK = { intervalMs: 50, timeoutMs: 40, allowShortIntervals: true }

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

/** Polls GET /demo/health every 20 ms until `done` holds, for up to 5 s; resolves to each answer seen. */
async function pollHealth (send: (method: string, path: string) => Promise<Response>, done: (health: HealthView) => boolean, what: string): Promise<HealthView[]> {
  const deadline = Date.now() + 5000
  const seen: HealthView[] = []
  for (;;) {
    const res = await send('GET', '/demo/health')
    if (res.status !== 200) throw new Error(`GET /demo/health while waiting for ${what}: ${res.status} ${res.body}`)
    const health = res.json() as HealthView
    seen.push(health)
    if (done(health)) return seen
    if (Date.now() > deadline) throw new Error(`no ${what} within 5 s; last: ${res.body}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function targetOf (health: HealthView, id: string): TargetView {
  const target = health.targets.find((candidate) => candidate.id === id)
  if (target === undefined) throw new Error(`no target ${id} in ${JSON.stringify(health)}`)
  return target
}

test('GET /demo/health: each backend\'s process and target state, the demo\'s checks, and no target address', async (t) => {
  const shop = await shopModule.startShop({ port: 0 })
  t.teardown(() => shop.close())
  const { send } = client(shop.url)

  const res = await send('GET', '/demo/health')
  t.equal(res.status, 200, `GET /demo/health: ${res.status} ${res.body}`)
  const health = res.json() as HealthView
  t.same({ group: health.group, degraded: health.degraded, failOpen: health.failOpen, healthCheck: health.healthCheck }, {
    group: 'carts',
    degraded: false,
    failOpen: true,
    healthCheck: { path: '/health', intervalMs: 5000, timeoutMs: 2000, healthyThreshold: 2, unhealthyThreshold: 2 }
  }, `the group and ALB's shortest checks: ${res.body}`)
  // startShop() resolves after the first checks: no backend is still `initial`.
  t.same(health.targets.map(({ id, process, state, reason, routable, inFlight }) => ({ id, process, state, reason, routable, inFlight })), [
    { id: 'cart-a', process: 'running', state: 'healthy', reason: null, routable: true, inFlight: 0 },
    { id: 'cart-b', process: 'running', state: 'healthy', reason: null, routable: true, inFlight: 0 },
    { id: 'cart-c', process: 'running', state: 'healthy', reason: null, routable: true, inFlight: 0 }
  ], `three healthy targets: ${res.body}`)
  for (const target of health.targets) {
    t.ok(Number.isInteger(target.forMs) && target.forMs >= 0 && target.forMs < 60_000, `${target.id} has an age in ms: ${target.forMs}`)
    const unknown = Object.keys(target).filter((key) => !TARGET_VIEW_KEYS.includes(key))
    t.same(unknown, [], `${target.id} has only the listed fields: ${JSON.stringify(target)}`)
  }

  t.notMatch(res.body, /127\.0\.0\.1|localhost|http:/, `no address in the body: ${res.body}`)
  for (const backend of shop.backends) {
    const port = new URL(backend.url).port
    t.notMatch(res.body, new RegExp(`(^|\\D)${port}(\\D|$)`), `no port of ${backend.id} (${port}) in the body: ${res.body}`)
  }

  const direct = await fetch(new URL('/health', shop.backends[0].url))
  const body = await direct.text()
  t.same({ status: direct.status, setCookie: direct.headers.get('set-cookie'), body: JSON.parse(body) },
    { status: 200, setCookie: null, body: { status: 'ok', servedBy: 'cart-a' } }, `a backend answers GET /health without a session: ${direct.status} ${body}`)
})

test('GET /demo/health: a stopped backend turns unhealthy, and healthy again once started', async (t) => {
  const shop = await shopModule.startShop({ port: 0, healthCheck: FAST_HEALTH_CHECK })
  t.teardown(() => shop.close())
  const { send } = client(shop.url)

  const stopped = await send('POST', '/demo/backends/cart-b/stop')
  t.equal(stopped.status, 200, `stop cart-b: ${stopped.status} ${stopped.body}`)
  const down = (await pollHealth(send, (health) => targetOf(health, 'cart-b').state === 'unhealthy', 'cart-b unhealthy')).at(-1) as HealthView
  const sick = targetOf(down, 'cart-b')
  t.match(sick, { process: 'stopped', routable: false }, `cart-b is stopped and takes no new request: ${JSON.stringify(sick)}`)
  t.ok(sick.reason === 'Target.FailedHealthChecks' || sick.reason === 'Target.Timeout', `with ALB's reason: ${sick.reason}`)
  t.same(down.targets.filter(({ id }) => id !== 'cart-b').map(({ state }) => state), ['healthy', 'healthy'], `the others stay healthy: ${JSON.stringify(down.targets)}`)
  t.equal(down.degraded, false, `two healthy targets: not degraded: ${JSON.stringify(down)}`)

  const changes: string[] = []
  onHealthChange(t, 'carts', ({ target, from, to }) => { if (target.id === 'cart-b') changes.push(`${from ?? '-'}>${to}`) })
  const startedAt = Date.now()
  const started = await send('POST', '/demo/backends/cart-b/start')
  t.equal(started.status, 200, `start cart-b: ${started.status} ${started.body}`)
  const seen = await pollHealth(send, (health) => targetOf(health, 'cart-b').state === 'healthy', 'cart-b healthy again')
  // The restarted process is registered as a new target: it comes back through `initial`.
  t.same(changes, ['unhealthy>draining', 'draining>unused', '->initial', 'initial>healthy'], `cart-b was replaced and came back through initial: ${changes.join(', ')}`)
  const back = targetOf(seen.at(-1) as HealthView, 'cart-b')
  t.match(back, { process: 'running', reason: null, routable: true }, `cart-b runs and takes requests: ${JSON.stringify(back)}`)
  t.ok(back.forMs <= Date.now() - startedAt, `its age counts from its recovery: ${back.forMs} ms, started ${Date.now() - startedAt} ms ago`)
})

test('GET /demo/health: with every backend stopped the group is degraded and fails open', async (t) => {
  const shop = await shopModule.startShop({ port: 0, healthCheck: FAST_HEALTH_CHECK })
  t.teardown(() => shop.close())
  const { send } = client(shop.url)

  for (const id of ['cart-a', 'cart-b', 'cart-c']) await send('POST', `/demo/backends/${id}/stop`)
  const down = (await pollHealth(send, (health) => health.degraded, 'a degraded group')).at(-1) as HealthView
  t.same(down.targets.map(({ state, routable }) => ({ state, routable })), [
    { state: 'unhealthy', routable: true }, { state: 'unhealthy', routable: true }, { state: 'unhealthy', routable: true }
  ], `every target is unhealthy, and routable while failing open: ${JSON.stringify(down.targets)}`)
})

test('the page polls /demo/health and has the health panel', async (t) => {
  const shop = await shopModule.startShop({ port: 0 })
  t.teardown(() => shop.close())
  const { send } = client(shop.url)

  const page = (await send('GET', '/')).body
  for (const part of [
    'id="health-note"', 'id="degraded"', 'id="health-error"', 'id="backends"',
    "fetch('/demo/health'", 'HEALTH_POLL_MS = 1000', 'target.forMs', 'target.reason', 'target.inFlight', 'target.boundSessions', 'target.ejected',
    '.badge.initial', '.badge.healthy', '.badge.unhealthy', '.badge.draining'
  ]) t.ok(page.includes(part), `the page has ${part}`)
  t.notOk(/innerHTML|outerHTML|insertAdjacentHTML/.test(page), 'the page builds no markup from strings')
  t.notOk(page.includes('target.origin'), 'the page shows no target address')
})
