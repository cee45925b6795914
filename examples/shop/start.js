import { randomBytes } from 'node:crypto'
import { realpathSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import fastifySticky, { stickyAdmin, stickyProxy } from 'fastify-sticky'
import { ACCOUNT_COOKIE, startBackend } from './backend.js'

// A fixed key so that the demo's cookies survive a restart of the example. It is public:
// a real deployment sets its own secret keys (e.g. from the environment) and never commits them.
export const DEMO_KEY = '5f1c0a7e9b3d42c8a6e1f07d2b9c4e38d7a15b6c0e2f9483a1d6b7c5e8f02a4d'
export const BACKEND_IDS = ['cart-a', 'cart-b', 'cart-c']
/**
 * The demo's health checks: ALB's shortest interval and smallest thresholds, so a stopped backend
 * is `unhealthy` within about 10 s and a restarted one `healthy` again within about 10 s.
 */
export const DEMO_HEALTH_CHECK = Object.freeze({ path: '/health', intervalMs: 5000, timeoutMs: 2000, healthyThreshold: 2, unhealthyThreshold: 2 })
/**
 * A drained backend's clients move at their next request (`drainingKeepsSessions: false`), each
 * new backend taking the session over through the hand-off header; its open requests and
 * sockets get this long.
 */
export const DEMO_DRAIN = Object.freeze({ drainingKeepsSessions: false, deregistrationDelayMs: 30_000 })

const PAGE = new URL('./index.html', import.meta.url)
// The page needs nothing from elsewhere and talks only to this gateway; the policy keeps it so.
const PAGE_POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'"

/**
 * Starts the three demo backends and the sticky gateway in front of them, listening on
 * `host:port` (0 for an ephemeral port), once every backend has had its first health check.
 * `/cart` keeps a client on one backend with the `AWSALB` cookie (group `carts`), `/account`
 * with `AWSALBAPP-*` once a login sets `connect.sid` (group `accounts`), `/api/*` without any
 * cookie, by the hash of the `x-session-id` header, else of the client's address (group `api`).
 * Every response of those says what the gateway decided (`x-sticky-decision`, the plugin's
 * `exposeDecision`); a client moved off a backend brings its session along (see `startBackend`).
 * `healthCheck` is merged over DEMO_HEALTH_CHECK (tests pass short intervals); `now` is the
 * gateway's clock in ms (default Date.now).
 * Resolves to `{ url, dashboardUrl, gateway, backends, close() }` (`dashboardUrl` carries the admin token).
 */
export async function startShop ({ port = 3000, host = '127.0.0.1', logger, healthCheck = {}, now } = {}) {
  const check = { ...DEMO_HEALTH_CHECK, ...healthCheck }
  const clock = now ?? Date.now
  const backends = []
  const gateway = Fastify({ logger: logger ?? false })
  const adminToken = randomBytes(16).toString('hex')
  let closing = null
  const close = () => {
    closing ??= gateway.close().then(() => Promise.all(backends.map((backend) => backend.stop()))).then(() => {})
    return closing
  }

  try {
    // The backends know each other, to take sessions over from a peer the gateway moved a client off.
    const internalToken = randomBytes(16).toString('hex')
    const peerUrl = (peerId) => backends.find((backend) => backend.id === peerId && backend.running)?.url
    for (const id of BACKEND_IDS) backends.push(await startBackend(id, { peerUrl, internalToken }))
    const page = await readFile(PAGE)

    await gateway.register(fastifySticky, {
      keys: [DEMO_KEY],
      // The gateway's clock: Date.now unless a test gives another.
      now: clock,
      // `x-sticky-decision: hit;lb_cookie;cart-a` on every response, for the page (and curl) to show.
      exposeDecision: true,
      // Prometheus metrics in a registry of the plugin's own, scraped at GET /metrics below.
      metrics: true,
      targetGroups: [{
        name: 'carts',
        targets: backends.map((backend) => ({ id: backend.id, url: backend.url })),
        stickiness: { type: 'lb_cookie', durationSeconds: 3600 },
        healthCheck: check,
        ...DEMO_DRAIN
      }, {
        // ALB's application-based stickiness: nothing binds a client until a backend sets the app's
        // own session cookie, and the binding ends when the app deletes it (logout).
        name: 'accounts',
        targets: backends.map((backend) => ({ id: backend.id, url: backend.url })),
        stickiness: { type: 'app_cookie', cookieName: ACCOUNT_COOKIE, durationSeconds: 3600 },
        healthCheck: check,
        ...DEMO_DRAIN
      }, {
        // For clients without cookies (apps, curl): the x-session-id header's hash picks the
        // backend, the same one every time; without the header, the client's address does.
        name: 'api',
        targets: backends.map((backend) => ({ id: backend.id, url: backend.url })),
        stickiness: [{ type: 'header', name: 'x-session-id' }, { type: 'source_ip' }],
        healthCheck: check,
        ...DEMO_DRAIN
      }]
    })

    await gateway.register(stickyProxy, { prefix: '/cart', targetGroup: 'carts', rewritePrefix: '/cart' })
    await gateway.register(stickyProxy, { prefix: '/account', targetGroup: 'accounts', rewritePrefix: '/account' })
    // `/api/cart` is the cart again, for cookie-less clients: no gateway cookie is written there.
    await gateway.register(stickyProxy, { prefix: '/api', targetGroup: 'api' })

    // What Prometheus scrapes (names and labels in docs/metrics.md): group names and target ids, never an address.
    gateway.get('/metrics', async (request, reply) => {
      const { registry } = gateway.stickyMetrics
      reply.type(registry.contentType)
      return registry.metrics()
    })

    // The admin API and its live dashboard (docs/operations.md), behind a token made at each start, from this machine only.
    await gateway.register(stickyAdmin, { prefix: '/admin', token: adminToken })

    gateway.get('/', (request, reply) => {
      reply
        .header('content-security-policy', PAGE_POLICY)
        .header('cache-control', 'no-store')
        .type('text/html; charset=utf-8')
        .send(page)
    })

    // Demo controls, so the page can kill and revive backends: never expose such routes in a real gateway.
    const describe = (backend) => ({ id: backend.id, state: backend.running ? 'running' : 'stopped' })
    const find = (request, reply) => {
      const backend = backends.find((candidate) => candidate.id === request.params.id)
      if (backend === undefined) reply.code(404).send({ error: 'Not Found', message: `no backend '${request.params.id}'` })
      return backend
    }
    gateway.get('/demo/backends', async () => backends.map(describe))
    // `carts`, `accounts` and `api`: the same three backends, each group with its own health checks.
    const groups = [...gateway.targetGroups.values()]
    // The gateway's view next to each process's: listed field by field, so that no target address
    // (its origin) reaches the page, whatever describe() grows to hold.
    const { path, intervalMs, timeoutMs, healthyThreshold, unhealthyThreshold } = check
    const viewOf = (group, nowMs) => ({
      group: group.name,
      degraded: group.degraded,
      failOpen: group.failOpen,
      targets: group.targets.map((target) => {
        const backend = backends.find((candidate) => candidate.id === target.id)
        const view = {
          id: target.id,
          process: backend?.running ? 'running' : 'stopped',
          state: target.state,
          reason: target.reason,
          // An age, not a timestamp: the browser's clock may differ from this one.
          forMs: Math.max(0, nowMs - target.sinceMs),
          routable: target.routable,
          inFlight: target.inFlight
        }
        if (typeof target.boundSessions === 'number') view.boundSessions = target.boundSessions
        // Passive ejection, as a flag: `ejected`, or derived from `ejectedUntilMs` (a time, like sinceMs).
        if (typeof target.ejected === 'boolean') view.ejected = target.ejected
        else if (target.ejectedUntilMs !== undefined) view.ejected = typeof target.ejectedUntilMs === 'number' && target.ejectedUntilMs > nowMs
        return view
      })
    })
    // `carts` at the top level; `groups` holds every group (carts, accounts, api), each with its own
    // checks and sessions on the same three backends.
    gateway.get('/demo/health', async () => {
      const nowMs = clock()
      const views = groups.map((group) => viewOf(group.describe(), nowMs))
      // `backends`: every process, registered or not (a drained one is in no group any more).
      return { ...views[0], healthCheck: { path, intervalMs, timeoutMs, healthyThreshold, unhealthyThreshold }, groups: views, backends: backends.map(describe) }
    })
    gateway.post('/demo/backends/:id/stop', async (request, reply) => {
      const backend = find(request, reply)
      if (backend === undefined) return reply
      await backend.stop()
      return describe(backend)
    })
    gateway.post('/demo/backends/:id/start', async (request, reply) => {
      const backend = find(request, reply)
      if (backend === undefined) return reply
      const wasRunning = backend.running
      await backend.start()
      // A restarted process is a new target, as an orchestrator registers a replacement: the
      // unhealthy one (nothing to drain) goes, the new one is `initial` until a check passes.
      // Every group at once: a group's deregistration ends once its pool has closed, which may
      // wait for a health check in flight (up to its timeout).
      await Promise.all(groups.map(async (group) => {
        const target = group.describe().targets.find(({ id }) => id === backend.id)
        if (!wasRunning && target?.state === 'unhealthy') {
          await group.deregister(backend.id)
          group.register({ id: backend.id, url: backend.url })
        } else if (!wasRunning && target === undefined) {
          // Drained before it stopped: it comes back as a new target.
          group.register({ id: backend.id, url: backend.url })
        }
      }))
      return describe(backend)
    })
    // A graceful scale-down: the backend leaves every group and drains; its process keeps running,
    // so the backends its clients move to take their carts and logins over from it.
    gateway.post('/demo/backends/:id/drain', async (request, reply) => {
      const backend = find(request, reply)
      if (backend === undefined) return reply
      for (const group of groups) void group.deregister(backend.id)
      return describe(backend)
    })
    // Back into every group it left, once its draining has ended.
    gateway.post('/demo/backends/:id/register', async (request, reply) => {
      const backend = find(request, reply)
      if (backend === undefined) return reply
      const targets = groups.map((group) => group.describe().targets.find(({ id }) => id === backend.id))
      if (targets.some((target) => target?.state === 'draining')) return reply.code(409).send({ error: 'Conflict', message: `${backend.id} is still draining` })
      groups.forEach((group, i) => { if (targets[i] === undefined) group.register({ id: backend.id, url: backend.url }) })
      return describe(backend)
    })

    await gateway.listen({ port, host })
    // A backend is `initial` until its first check passes, and takes no new client before: wait,
    // so a first visitor is not pinned to one while the group fails open, then moved at once.
    const deadline = Date.now() + check.intervalMs + check.timeoutMs
    const initial = () => groups.some((group) => group.describe().targets.some((target) => target.state === 'initial'))
    while (initial() && Date.now() < deadline) await sleep(20)
  } catch (err) {
    await close()
    throw err
  }

  const { port: actualPort } = gateway.server.address()
  const url = `http://${urlHost(host)}:${actualPort}/`
  return { url, dashboardUrl: `${url}admin/#token=${adminToken}`, gateway, backends, close }
}

/** How a browser on this machine reaches `host`. */
function urlHost (host) {
  if (host === '127.0.0.1' || host === '::1' || host === '0.0.0.0' || host === '::' || host === 'localhost') return 'localhost'
  return host.includes(':') ? `[${host}]` : host
}

async function main () {
  const shop = await startShop({ port: Number(process.env.PORT ?? 3000) })
  console.log(`fastify-sticky shop example: ${shop.url}`)
  console.log(`dashboard (admin API, its token in the address): ${shop.dashboardUrl}`)
  // `once`: a second Ctrl-C while closing gets Node's default, an immediate exit.
  const shutdown = () => {
    shop.close().then(() => process.exit(0), (err) => {
      console.error(err)
      process.exit(1)
    })
  }
  process.once('SIGINT', shutdown)
  process.once('SIGTERM', shutdown)
}

/** What `npm start` prints when the example cannot start: one line for a port in use, else the error. */
function startFailure (err) {
  if (err?.code !== 'EADDRINUSE') return err
  const port = err.port ?? process.env.PORT ?? 3000
  return `fastify-sticky shop example: port ${port} is in use; set PORT=<port> to use another (PORT=0 picks a free one)`
}

if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === import.meta.filename) {
  main().catch((err) => {
    console.error(startFailure(err))
    process.exit(1)
  })
}
