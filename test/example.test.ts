import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { test, type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { COOKIE_PURPOSE_APP, COOKIE_PURPOSE_LB, CookieCodec } from '../lib/cookie-codec.js'
import { decodeBindings } from '../lib/stickiness/app-bindings.js'
import { readAppShards } from '../lib/stickiness/app-cookie.js'
import { CookieJar, onHealthChange, waitFor } from './setup.js'

// The example imports `fastify-sticky` by name, i.e. dist/: `npm test` builds it first.
const START = new URL('../examples/shop/start.js', import.meta.url)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const URL_LINE = /^fastify-sticky shop example: (http:\/\/localhost:(\d+)\/)$/m
const DASHBOARD_LINE = /^dashboard \(admin API, its token in the address\): (http:\/\/localhost:\d+\/)admin\/#token=([0-9a-f]{32})$/m
const REQUEST_TIMEOUT_MS = 10_000

interface Backend {
  id: string
  url: string
  running: boolean
}
interface Shop {
  url: string
  gateway: FastifyInstance
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
  /** Every target group, `carts` first, each as the top level shows `carts`. */
  groups: Array<{ group: string, degraded: boolean, failOpen: boolean, targets: TargetView[] }>
}
/** Every field GET /demo/health may send for a target; `boundSessions` and `ejected` when the plugin has them. */
const TARGET_VIEW_KEYS = ['id', 'process', 'state', 'reason', 'forMs', 'routable', 'inFlight', 'boundSessions', 'ejected']
/** Checks every few ms: failures show within a tenth of a second. */
// 90 ms to answer: a running backend behind a busy event loop never misses a check.
const FAST_HEALTH_CHECK = { intervalMs: 100, timeoutMs: 90, allowShortIntervals: true }

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

/**
 * The gateway's decision as the page reads it from `x-sticky-decision` (the plugin's
 * `exposeDecision`): `hit`, `new` or `reassigned;<reason>`; null without the header.
 */
function affinityOf (res: { headers: Headers }): string | null {
  const value = res.headers.get('x-sticky-decision')
  if (value === null) return null
  const [outcome, why] = value.split(';')
  return outcome === 'reassigned' ? `reassigned;${why}` : outcome
}

/** What decided a hit or a new client (`lb_cookie`, `round_robin`, …), from `x-sticky-decision`; null for any other outcome. */
function decidedByOf (res: { headers: Headers }): string | null {
  const value = res.headers.get('x-sticky-decision')
  if (value === null) return null
  const [outcome, why] = value.split(';')
  return outcome === 'hit' || outcome === 'new' ? why : null
}

function describe (res: Response): string {
  return `${res.status} x-served-by=${res.headers.get('x-served-by')} x-sticky-decision=${res.headers.get('x-sticky-decision')} body=${res.body.slice(0, 200)}`
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
  t.equal(stdout.trim().split('\n').length, 2, `it prints two lines, the shop's and the dashboard's: ${JSON.stringify(stdout)}`)
  const dashboard = DASHBOARD_LINE.exec(stdout)
  t.equal(dashboard?.[1], base, `the dashboard is on the gateway, its token in the fragment: ${JSON.stringify(stdout)}`)
  const groups = await fetch(`${base}admin/target-groups`, { headers: { authorization: `Bearer ${dashboard?.[2]}` } })
  t.equal(groups.status, 200, 'the printed token opens the admin API')
  t.same((await groups.json()).targetGroups.map((group: { name: string }) => group.name), ['carts', 'accounts', 'api'])
  t.equal((await fetch(`${base}admin/target-groups`)).status, 401, 'nothing without it')
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
  t.equal(affinityOf(added), 'new', `a first visit is a new pin: ${describe(added)}`)
  t.same(added.json().items, [{ name: 'Teapot', quantity: 1 }], `the item is in the cart: ${added.body}`)
  t.equal(pinnedBy(jar.cookies.get('AWSALB')), pinned, `the AWSALB cookie pins ${pinned}`)
  t.ok(jar.cookies.has('shop_session'), `the backend set its session cookie: ${[...jar.cookies.keys()].join(', ')}`)

  for (let i = 1; i <= 10; i++) {
    const res = await send('GET', '/cart')
    t.same(
      { status: res.status, servedBy: res.headers.get('x-served-by'), affinity: affinityOf(res), items: res.json().items },
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
  t.equal(affinityOf(moved), 'reassigned;target-unreachable', `the affinity says why: ${describe(moved)}`)
  const newCookie = jar.cookies.get('AWSALB')
  t.not(newCookie, oldCookie, `a new AWSALB value came: ${moved.headers.getSetCookie().join(' | ')}`)
  t.equal(pinnedBy(newCookie), newTarget, `the new AWSALB cookie pins ${newTarget}: ${newCookie}`)
  t.same(moved.json().items, [], `the cart lived in ${pinned}'s memory, so it is empty on ${newTarget}: ${moved.body}`)
  t.equal(moved.json().sessionKnown, false, `${newTarget} does not know the session: ${moved.body}`)

  const again = await send('GET', '/cart')
  t.equal(again.headers.get('x-served-by'), newTarget, `the next request stays on ${newTarget}: ${describe(again)}`)
  t.equal(affinityOf(again), 'hit', `and is a hit: ${describe(again)}`)

  child.kill('SIGTERM')
  const deadline = setTimeout(() => child.kill('SIGKILL'), 5000)
  t.teardown(() => clearTimeout(deadline))
  const [code, signal] = await exited
  t.same({ code, signal }, { code: 0, signal: null }, `SIGTERM closes everything and exits 0: code ${code}, signal ${signal}, stderr: ${JSON.stringify(stderr)}`)
})

test('node examples/shop/start.js on a port in use: one line saying so, and a non-zero exit', async (t) => {
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => taken.close())
  const { port } = taken.address() as AddressInfo
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port) }
  delete env.NODE_OPTIONS
  const child = spawn(process.execPath, [fileURLToPath(START)], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const [code] = await once(child, 'close') as [number | null]
  t.not(code, 0, `it exits with an error status: ${code}`)
  t.equal(stdout, '', `it prints nothing on stdout: ${JSON.stringify(stdout)}`)
  t.equal(stderr, `fastify-sticky shop example: port ${port} is in use; set PORT=<port> to use another (PORT=0 picks a free one)\n`,
    `stderr is one line naming the port: ${JSON.stringify(stderr)}`)
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
  t.equal(affinityOf(res), 'hit', `a hit: ${describe(res)}`)
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

test('GET /metrics: the documented Prometheus metrics of every group, and no target address', async (t) => {
  const shop = await shopModule.startShop({ port: 0, healthCheck: FAST_HEALTH_CHECK })
  t.teardown(() => shop.close())
  const { send } = client(shop.url)
  t.equal((await send('POST', '/cart/items', { name: 'Teapot' })).status, 200)
  const res = await send('GET', '/metrics')
  t.equal(res.status, 200, `GET /metrics: ${res.status}`)
  t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  t.match(res.body, /^fastify_sticky_decisions_total\{target_group="carts",outcome="new",reason="",decided_by="round_robin"\} 1$/m, 'the cart’s decision')
  t.match(res.body, /^fastify_sticky_responses_total\{target_group="carts",target="cart-[abc]",status_class="2xx"\} 1$/m, 'its response')
  for (const group of ['carts', 'accounts', 'api']) {
    t.match(res.body, new RegExp(`^fastify_sticky_health_checks_total\\{target_group="${group}",target="cart-a",result="pass",reason=""\\} \\d+$`, 'm'), `${group}'s checks`)
    t.match(res.body, new RegExp(`^fastify_sticky_target_state\\{target_group="${group}",target="cart-c",state="healthy"\\} 1$`, 'm'), `${group}'s states`)
  }
  t.notMatch(res.body, /127\.0\.0\.1|localhost|http:/, 'no address')
})

test('GET /demo/health: every target group’s view of the backends, carts, accounts and api', async (t) => {
  const shop = await shopModule.startShop({ port: 0, healthCheck: FAST_HEALTH_CHECK })
  t.teardown(() => shop.close())
  const { send } = client(shop.url)

  const health = (await send('GET', '/demo/health')).json() as HealthView
  t.same(health.groups.map(({ group, degraded, failOpen }) => ({ group, degraded, failOpen })), ['carts', 'accounts', 'api'].map((group) => ({ group, degraded: false, failOpen: true })), `three groups: ${JSON.stringify(health.groups)}`)
  t.same(health.groups[0], { group: health.group, degraded: health.degraded, failOpen: health.failOpen, targets: health.targets }, 'carts at the top level, as before')
  for (const group of health.groups) {
    t.same(group.targets.map(({ id, process, state }) => ({ id, process, state })), ['cart-a', 'cart-b', 'cart-c'].map((id) => ({ id, process: 'running', state: 'healthy' })), `${group.group}: three healthy targets`)
    for (const target of group.targets) t.same(Object.keys(target).filter((key) => !TARGET_VIEW_KEYS.includes(key)), [], `${group.group} ${target.id}: only the listed fields`)
  }

  await send('POST', '/demo/backends/cart-c/stop')
  const down = (await pollHealth(send, (view) => view.groups.every((group) => targetOf({ ...view, targets: group.targets }, 'cart-c').state === 'unhealthy'), 'cart-c unhealthy in every group')).at(-1) as HealthView
  t.same(down.groups.map((group) => targetOf({ ...down, targets: group.targets }, 'cart-c').process), ['stopped', 'stopped', 'stopped'], 'each group sees the stopped process')
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

const SHARD_NAMES = ['AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3']
const HTTP_DATE = /^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$/
const EPOCH = 'Thu, 01 Jan 1970 00:00:00 GMT'
const WEEK_MS = 7 * 86_400_000

/** The response's `AWSALBAPP-*` Set-Cookie lines, in the order sent. */
function shardLines (res: Response): string[] {
  return res.headers.getSetCookie().filter((line) => line.startsWith('AWSALBAPP-'))
}

/** The response's `connect.sid` Set-Cookie lines. */
function sessionLines (res: Response): string[] {
  return res.headers.getSetCookie().filter((line) => line.startsWith('connect.sid='))
}

/** The bindings the jar's `AWSALBAPP-*` shards carry, group → target id; or what they are instead. */
function bindingsOf (jar: CookieJar): Record<string, string> | string {
  const value = readAppShards(jar.headers().cookie)
  if (value === null || value === 'invalid') return `(${value})`
  const bindings = codec.openWith(COOKIE_PURPOSE_APP, value, 20_000, decodeBindings)
  if (bindings === null) return `(undecodable: ${value})`
  return Object.fromEntries(bindings.map((binding) => [binding.group, binding.targetId]))
}

/** What a /account response says, in one object to compare. */
function accountView (res: Response): { status: number, servedBy: string | null, affinity: string | null, decidedBy: string | null, body: unknown } {
  let body: unknown
  try {
    body = res.json()
  } catch {
    body = res.body
  }
  return {
    status: res.status,
    servedBy: res.headers.get('x-served-by'),
    affinity: affinityOf(res),
    decidedBy: decidedByOf(res),
    body
  }
}

/** Logs `user` in through the shop; resolves to the backend that holds the session. */
async function logIn (t: Test, send: ReturnType<typeof client>['send'], user: string): Promise<string> {
  const res = await send('POST', '/account/login', { user })
  const backend = res.headers.get('x-served-by')
  if (res.status !== 200 || backend === null) throw new Error(`POST /account/login as ${user}: ${describe(res)}`)
  t.same(res.json(), { backend, user, sessionKnown: true, visits: 0 }, `${user} is logged in on ${backend}: ${res.body}`)
  return backend
}

test('the account app: login sets connect.sid, the gateway adds AWSALBAPP-0..3, and both keep /account/me on that backend', async (t) => {
  const shop = await shopModule.startShop({ port: 0 })
  t.teardown(() => shop.close())
  const { jar, send } = client(shop.url)

  const anonymous = await send('GET', '/account/me')
  t.same(accountView(anonymous), { status: 200, servedBy: anonymous.headers.get('x-served-by'), affinity: 'new', decidedBy: 'round_robin', body: { backend: anonymous.headers.get('x-served-by'), user: null, sessionKnown: false, visits: 0 } },
    `without cookies: a new pick, nobody logged in: ${describe(anonymous)}`)
  t.same(shardLines(anonymous).map((line) => line.split(';')[0]), SHARD_NAMES.map((name) => `${name}=_remove_`), `nothing bound yet: four _remove_: ${shardLines(anonymous).join(' | ')}`)
  t.same(sessionLines(anonymous), [], `no connect.sid before a login: ${anonymous.headers.getSetCookie().join(' | ')}`)

  const sentAt = Date.now()
  const login = await send('POST', '/account/login', { user: 'ann' })
  const backend = login.headers.get('x-served-by') ?? '(no x-served-by)'
  t.match(backend, /^cart-[abc]$/, `a demo backend logged ann in: ${describe(login)}`)
  t.same(login.json(), { backend, user: 'ann', sessionKnown: true, visits: 0 }, `the session is ann's, on ${backend}: ${login.body}`)
  t.match(sessionLines(login), [/^connect\.sid=[A-Za-z0-9_-]{32}; Path=\/; HttpOnly; SameSite=Lax$/], `the backend set its session cookie, HttpOnly: ${sessionLines(login).join(' | ')}`)
  t.equal(sessionLines(login).length, 1, `one connect.sid line: ${sessionLines(login).join(' | ')}`)
  const shards = shardLines(login)
  t.same(shards.map((line) => line.split('=')[0]), SHARD_NAMES, `the gateway added all four names, in order: ${shards.join(' | ')}`)
  t.match(shards[0], /^AWSALBAPP-0=[A-Za-z0-9_-]{40,}; Expires=[^;]+; Path=\/$/, `the first shard holds a sealed value, readable by the page (no HttpOnly): ${shards[0]}`)
  t.same(shards.slice(1).map((line) => line.split(';')[0]), SHARD_NAMES.slice(1).map((name) => `${name}=_remove_`), `the others are unused: ${shards.join(' | ')}`)
  for (const line of shards) {
    const expires = /; Expires=([^;]+)/.exec(line)?.[1] ?? '(none)'
    t.match(expires, HTTP_DATE, `an HTTP date: ${line}`)
    const inMs = Date.parse(expires) - sentAt
    t.ok(Math.abs(inMs - WEEK_MS) < 60_000, `kept for ALB's 7 days: ${line} (${Math.round(inMs / 1000)} s from now)`)
  }
  t.same(bindingsOf(jar), { accounts: backend }, `the sealed value binds the accounts group to ${backend}`)
  t.notOk(jar.cookies.has('AWSALB'), `/account writes no AWSALB: ${[...jar.cookies.keys()].join(', ')}`)

  for (let i = 1; i <= 5; i++) {
    const res = await send('GET', '/account/me')
    t.same(accountView(res), { status: 200, servedBy: backend, affinity: 'hit', decidedBy: 'app_cookie', body: { backend, user: 'ann', sessionKnown: true, visits: i } },
      `GET /account/me #${i} is a hit on ${backend}, which knows ann: ${describe(res)}`)
  }
  t.same(bindingsOf(jar), { accounts: backend }, `still bound to ${backend}`)
})

test('the account app: without its AWSALBAPP-* cookies a request is new; without connect.sid it is reassigned and leaves the shards alone', async (t) => {
  const shop = await shopModule.startShop({ port: 0 })
  t.teardown(() => shop.close())
  const { jar, send } = client(shop.url)
  const backend = await logIn(t, send, 'bo')
  const sid = jar.cookies.get('connect.sid')
  if (sid === undefined) throw new Error(`no connect.sid after the login: ${[...jar.cookies.keys()].join(', ')}`)

  const sidOnly = client(shop.url)
  sidOnly.jar.cookies.set('connect.sid', sid)
  const unbound = await sidOnly.send('GET', '/account/me')
  const picked = unbound.headers.get('x-served-by') ?? '(no x-served-by)'
  t.same({ affinity: affinityOf(unbound), decidedBy: decidedByOf(unbound) }, { affinity: 'new', decidedBy: 'round_robin' },
    `connect.sid without the shards: ALB needs both, so a new pick: ${describe(unbound)}`)
  t.same(bindingsOf(sidOnly.jar), { accounts: picked }, `the gateway binds the app cookie it saw to ${picked}, the backend that answered`)

  const shardsOnly = client(shop.url)
  for (const [name, value] of jar.cookies) if (name.startsWith('AWSALBAPP-')) shardsOnly.jar.cookies.set(name, value)
  t.equal(shardsOnly.jar.cookies.size, 4, `the four shards copied: ${[...shardsOnly.jar.cookies.keys()].join(', ')}`)
  const orphan = await shardsOnly.send('GET', '/account/me')
  t.equal(affinityOf(orphan), 'reassigned;app-cookie-withheld', `the shards without connect.sid (as a cross-site request brings them): ${describe(orphan)}`)
  t.same(orphan.json().user, null, `nobody is logged in: ${orphan.body}`)
  t.same(shardLines(orphan), [], `no AWSALBAPP line: the binding stays for the first-party requests: ${describe(orphan)}`)

  const both = await send('GET', '/account/me')
  t.same(accountView(both), { status: 200, servedBy: backend, affinity: 'hit', decidedBy: 'app_cookie', body: { backend, user: 'bo', sessionKnown: true, visits: 1 } },
    `with both cookies: a hit on ${backend}: ${describe(both)}`)
})

test('the account app: logout deletes connect.sid and AWSALBAPP-0..3, and the next request is new', async (t) => {
  const shop = await shopModule.startShop({ port: 0 })
  t.teardown(() => shop.close())
  const { jar, send } = client(shop.url)
  const backend = await logIn(t, send, 'cy')
  const sid = jar.cookies.get('connect.sid')

  const logout = await send('POST', '/account/logout')
  t.same(accountView(logout), { status: 200, servedBy: backend, affinity: 'hit', decidedBy: 'app_cookie', body: { backend, user: null, sessionKnown: false, visits: 0 } },
    `the logout reaches ${backend}, which held the session: ${describe(logout)}`)
  t.same(sessionLines(logout), ['connect.sid=; Max-Age=0; Path=/'], `the backend deletes its cookie: ${logout.headers.getSetCookie().join(' | ')}`)
  t.same(shardLines(logout), SHARD_NAMES.map((name) => `${name}=_remove_; Expires=${EPOCH}; Path=/`), `and the gateway its four: ${shardLines(logout).join(' | ')}`)
  t.same([...jar.cookies.keys()].filter((name) => name === 'connect.sid' || name.startsWith('AWSALBAPP-')), [], `the jar dropped them all: ${[...jar.cookies.keys()].join(', ')}`)

  const after = await send('GET', '/account/me')
  t.equal(affinityOf(after), 'new', `no binding is left: a new pick: ${describe(after)}`)
  t.same({ user: after.json().user, sessionKnown: after.json().sessionKnown }, { user: null, sessionKnown: false }, `nobody is logged in: ${after.body}`)

  // Had the backend kept the session, the old cookie would still open it there.
  const holder = shop.backends.find(({ id }) => id === backend) as Backend
  const direct = await fetch(new URL('/account/me', holder.url), { headers: { cookie: `connect.sid=${sid}` } })
  const directBody = await direct.text()
  t.same(JSON.parse(directBody), { backend, user: null, sessionKnown: false, visits: 0 }, `${backend} forgot the session: ${directBody}`)
})

test('a drained backend hands its carts over: a graceful scale-down loses no cart', async (t) => {
  const shop = await shopModule.startShop({ port: 0, healthCheck: FAST_HEALTH_CHECK })
  t.teardown(() => shop.close())
  const { jar, send } = client(shop.url)
  await send('POST', '/cart/items', { name: 'Teapot' })
  const added = await send('POST', '/cart/items', { name: 'Mug' })
  const first = added.headers.get('x-served-by') ?? '(no x-served-by)'
  const items = [{ name: 'Teapot', quantity: 1 }, { name: 'Mug', quantity: 1 }]
  t.same(added.json().items, items, `two items on ${first}: ${describe(added)}`)
  const session = jar.cookies.get('shop_session')

  const drained = await send('POST', `/demo/backends/${first}/drain`)
  t.same({ status: drained.status, body: drained.json() }, { status: 200, body: { id: first, state: 'running' } }, `drain ${first}: its process keeps running: ${drained.body}`)
  const moved = await send('GET', '/cart')
  const second = moved.headers.get('x-served-by') ?? '(no x-served-by)'
  t.not(second, first, `another backend answers: ${describe(moved)}`)
  t.equal(affinityOf(moved), 'reassigned;target-deregistered', `the gateway moved the client off the drained backend: ${describe(moved)}`)
  t.same(moved.json(), { servedBy: second, sessionKnown: true, items, takenOverFrom: first }, `${second} took the cart over from ${first}: ${moved.body}`)
  t.equal(jar.cookies.get('shop_session'), session, 'under the same session')
  t.equal(pinnedBy(jar.cookies.get('AWSALB')), second, `the client is pinned to ${second} now`)

  const more = await send('POST', '/cart/items', { name: 'Teapot' })
  t.same({ affinity: affinityOf(more), servedBy: more.headers.get('x-served-by'), body: more.json() },
    { affinity: 'hit', servedBy: second, body: { servedBy: second, sessionKnown: true, items: [{ name: 'Teapot', quantity: 2 }, { name: 'Mug', quantity: 1 }] } },
    `the cart goes on on ${second}, nothing taken over again: ${describe(more)}`)

  const gone = (await pollHealth(send, (view) => view.groups.every((group) => !group.targets.some(({ id }) => id === first)), `${first} out of every group`)).at(-1) as HealthView & { backends: unknown }
  t.same(gone.backends, ['cart-a', 'cart-b', 'cart-c'].map((id) => ({ id, state: 'running' })), `the drained process is still listed, running: ${JSON.stringify(gone.backends)}`)
  const registered = await send('POST', `/demo/backends/${first}/register`)
  t.equal(registered.status, 200, `register ${first} again: ${registered.body}`)
  await pollHealth(send, (view) => view.groups.every((group) => group.targets.some(({ id, state }) => id === first && state === 'healthy')), `${first} healthy in every group again`)

  // The internal endpoint answers peers only: not through the gateway, not without the token.
  const probe = await send('GET', `/api/internal/cart/${session ?? ''}`)
  t.equal(probe.status, 404, `no cart through the gateway: ${describe(probe)}`)
  const direct = await fetch(new URL(`/internal/cart/${session ?? ''}`, shop.backends.find(({ id }) => id === second)?.url))
  t.equal(direct.status, 404, `nor without the peers' token: ${direct.status}`)
})

test('a drained backend hands its logins over too', async (t) => {
  const shop = await shopModule.startShop({ port: 0, healthCheck: FAST_HEALTH_CHECK })
  t.teardown(() => shop.close())
  const { send } = client(shop.url)
  const first = await logIn(t, send, 'fay')
  await send('POST', `/demo/backends/${first}/drain`)
  const moved = await send('GET', '/account/me')
  const second = moved.headers.get('x-served-by') ?? '(no x-served-by)'
  t.not(second, first, `another backend answers: ${describe(moved)}`)
  t.same(accountView(moved), { status: 200, servedBy: second, affinity: 'reassigned;target-deregistered', decidedBy: null, body: { backend: second, user: 'fay', sessionKnown: true, visits: 1, takenOverFrom: first } },
    `${second} took the login over from ${first}: ${describe(moved)}`)
  const again = await send('GET', '/account/me')
  t.same(accountView(again), { status: 200, servedBy: second, affinity: 'hit', decidedBy: 'app_cookie', body: { backend: second, user: 'fay', sessionKnown: true, visits: 2 } },
    `and keeps it: ${describe(again)}`)
})

test('the account app: when its backend stops the login is bound to another, and stays there once the first is back', async (t) => {
  const shop = await shopModule.startShop({ port: 0, healthCheck: FAST_HEALTH_CHECK })
  t.teardown(() => shop.close())
  const { jar, send } = client(shop.url)
  const first = await logIn(t, send, 'dee')
  const sid = jar.cookies.get('connect.sid')

  const stopped = await send('POST', `/demo/backends/${first}/stop`)
  t.same(stopped.json(), { id: first, state: 'stopped' }, `stop ${first}: ${stopped.body}`)
  const moved = await send('GET', '/account/me')
  const second = moved.headers.get('x-served-by') ?? '(no x-served-by)'
  t.match(second, /^cart-[abc]$/, `a demo backend answers: ${describe(moved)}`)
  t.not(second, first, `not the stopped ${first}: ${describe(moved)}`)
  // Refused by the stopped process (redispatched), or already taken out by its failed health checks.
  t.ok(['reassigned;target-unreachable', 'reassigned;target-unhealthy'].includes(affinityOf(moved) ?? ''), `the affinity says why: ${describe(moved)}`)
  t.same(moved.json(), { backend: second, user: null, sessionKnown: false, visits: 0 }, `the session lived in ${first}'s memory: ${second} does not know it: ${moved.body}`)
  t.same(bindingsOf(jar), { accounts: second }, `AWSALBAPP now binds the login to ${second}`)
  t.equal(jar.cookies.get('connect.sid'), sid, 'connect.sid is unchanged: no backend set or deleted it')

  const again = await send('GET', '/account/me')
  t.same(accountView(again), { status: 200, servedBy: second, affinity: 'hit', decidedBy: 'app_cookie', body: { backend: second, user: null, sessionKnown: false, visits: 0 } },
    `the next request is a hit on ${second}: ${describe(again)}`)

  const started = await send('POST', `/demo/backends/${first}/start`)
  t.same(started.json(), { id: first, state: 'running' }, `start ${first}: ${started.body}`)
  const accounts = shop.gateway.targetGroups.get('accounts')
  if (accounts === undefined) throw new Error(`no accounts group among ${[...shop.gateway.targetGroups.keys()].join(', ')}`)
  const stateOfFirst = () => accounts.describe().targets.find(({ id }) => id === first)
  await waitFor(() => stateOfFirst()?.state === 'healthy', 5000, `${first} healthy in the accounts group`)
  t.match(stateOfFirst(), { state: 'healthy', routable: true }, `${first} takes new clients again: ${JSON.stringify(stateOfFirst())}`)

  for (let i = 1; i <= 5; i++) {
    const res = await send('GET', '/account/me')
    t.same(accountView(res), { status: 200, servedBy: second, affinity: 'hit', decidedBy: 'app_cookie', body: { backend: second, user: null, sessionKnown: false, visits: 0 } },
      `GET /account/me #${i} after ${first} is back stays on ${second}: ${describe(res)}`)
  }

  const relogin = await send('POST', '/account/login', { user: 'dee' })
  t.same(accountView(relogin), { status: 200, servedBy: second, affinity: 'hit', decidedBy: 'app_cookie', body: { backend: second, user: 'dee', sessionKnown: true, visits: 0 } },
    `logging in again makes the session on ${second}: ${describe(relogin)}`)
  t.not(jar.cookies.get('connect.sid'), sid, 'with a new session id')
  const known = await send('GET', '/account/me')
  t.same(known.json(), { backend: second, user: 'dee', sessionKnown: true, visits: 1 }, `and ${second} knows it: ${known.body}`)
})

test('the account app: a user name must be 1 to 32 of A-Z a-z 0-9 space _ -', async (t) => {
  const shop = await shopModule.startShop({ port: 0 })
  t.teardown(() => shop.close())

  const bad: Array<[string, unknown]> = [
    ['empty', { user: '' }],
    ['only spaces', { user: '   ' }],
    ['33 characters', { user: 'x'.repeat(33) }],
    ['a semicolon', { user: 'ann;admin' }],
    ['markup', { user: '<b>ann</b>' }],
    ['a letter outside A-Z', { user: 'Åsa' }],
    ['a newline', { user: 'ann\nbo' }],
    ['a number', { user: 42 }],
    ['null', { user: null }],
    ['no user', { name: 'ann' }],
    ['a JSON string', 'ann']
  ]
  for (const [what, body] of bad) {
    const { jar, send } = client(shop.url)
    const res = await send('POST', '/account/login', body)
    t.equal(res.status, 400, `${what}: 400: ${describe(res)}`)
    t.same(sessionLines(res), [], `${what}: no session cookie: ${res.headers.getSetCookie().join(' | ')}`)
    t.same(bindingsOf(jar), '(null)', `${what}: nothing bound: ${[...jar.cookies].join(', ')}`)
  }

  const notJson = await fetch(new URL('/account/login', shop.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"user":', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  t.equal(notJson.status, 400, `a body that is not JSON: ${notJson.status} ${await notJson.text()}`)
  const tooLong = await fetch(new URL('/account/login', shop.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'a', pad: 'x'.repeat(5000) }), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  t.equal(tooLong.status, 413, `a body over 4 KB: ${tooLong.status} ${await tooLong.text()}`)

  for (const user of ['a', 'A-z_0 9', 'x'.repeat(32), ' padded ']) {
    const { send } = client(shop.url)
    const res = await send('POST', '/account/login', { user })
    t.same({ status: res.status, user: res.json().user, cookies: sessionLines(res).length }, { status: 200, user, cookies: 1 }, `${JSON.stringify(user)} is a user name: ${describe(res)}`)
  }
  const { send } = client(shop.url)
  const query = await send('POST', '/account/login?user=query%20user')
  t.same({ status: query.status, user: query.json().user }, { status: 200, user: 'query user' }, `or ?user= without a body: ${describe(query)}`)
  const badQuery = await send('POST', '/account/login?user=%3Cb%3E')
  t.equal(badQuery.status, 400, `a bad ?user= too: ${describe(badQuery)}`)
})

test('the page has the account panel: login form, who am I, logout, and the AWSALBAPP-* cookies', async (t) => {
  const shop = await shopModule.startShop({ port: 0 })
  t.teardown(() => shop.close())
  const { send } = client(shop.url)

  const res = await send('GET', '/')
  t.equal(res.headers.get('content-security-policy'), "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'",
    `the page's policy is unchanged: ${res.headers.get('content-security-policy')}`)
  const page = res.body
  for (const part of [
    '<h2>Account (app-cookie stickiness)</h2>',
    'The gateway writes <code>AWSALBAPP-*</code> only once the backend sets <code>connect.sid</code>; logging out deletes both.',
    'id="login-form"', 'id="user"', 'maxlength="32"', 'id="whoami"', 'id="logout"', 'id="app-cookies"', 'id="account-sid"', 'id="account-affinity"', 'id="account-served-by"',
    "accountRequest('POST', '/account/login', { user: $('user').value })", "accountRequest('GET', '/account/me')", "accountRequest('POST', '/account/logout')",
    "'AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3'", "'_remove_'", 'document.cookie', "'x-sticky-decision'", 'HttpOnly',
    'event.preventDefault()'
  ]) t.ok(page.includes(part), `the page has ${part}`)
  // form-action 'none' blocks a real submission: the form is sent by fetch only.
  t.notMatch(page, /<form[^>]*\baction=/, 'the login form has no action')
  t.notMatch(page, /\son[a-z]+="/, 'no inline event handler attributes')
  t.notOk(/innerHTML|outerHTML|insertAdjacentHTML/.test(page), 'the page builds no markup from strings')
})

test('the cookie-less view: /api/cart with an x-session-id header and no cookie stays on one backend, and no gateway cookie is written', async (t) => {
  const shop = await shopModule.startShop({ port: 0 })
  t.teardown(() => shop.close())
  const page = await fetch(shop.url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) }).then((res) => res.text())
  t.match(page, /Without cookies \(header stickiness\)/)
  t.match(page, /credentials: 'omit'/, 'the page sends those requests without cookies')
  const servedBy = new Set<string>()
  for (const session of ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot']) {
    const seen = new Set<string>()
    for (let i = 0; i < 5; i++) {
      const res = await fetch(new URL('/api/cart', shop.url), { headers: { 'x-session-id': session }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
      t.equal(res.status, 200)
      t.same(res.headers.getSetCookie().filter((line) => line.startsWith('AWSALB')), [], 'no gateway cookie')
      t.equal(decidedByOf(res), 'header')
      seen.add(String(res.headers.get('x-served-by')))
      await res.arrayBuffer()
    }
    t.equal(seen.size, 1, `session ${session} stayed on one backend`)
    servedBy.add([...seen][0])
  }
  t.ok(servedBy.size > 1, 'sessions spread over the backends')
  const anonymous = await fetch(new URL('/api/cart', shop.url), { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  t.equal(decidedByOf(anonymous), 'source_ip', 'without the header, the client address decides')
  await anonymous.arrayBuffer()
})
