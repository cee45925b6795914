import { test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { FastifyStickyOptions } from '../lib/index.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, startTargets, type TestTarget } from './setup.js'

type Tap = Parameters<typeof startTargets>[0]

/**
 * Routes `/lb/*` (lb_cookie group `lb`), `/app/*` (app_cookie group `app`, app cookie `sid`) and
 * `/tg/*` (a listener weighting `lb` and `lb2` with group stickiness): every gateway cookie kind.
 */
async function gateway (t: Tap, targets: TestTarget[], options: Partial<FastifyStickyOptions>, trustProxy = false): Promise<FastifyInstance> {
  const list = targets.map(({ id, url }) => ({ id, url }))
  const app = await buildGateway(t, {
    ...options,
    targetGroups: [
      { name: 'lb', targets: list },
      { name: 'lb2', targets: list },
      { name: 'app', targets: list, stickiness: { type: 'app_cookie', cookieName: 'sid' } }
    ],
    listeners: [{ name: 'web', default: { targetGroups: [{ name: 'lb', weight: 1 }, { name: 'lb2', weight: 1 }], stickiness: { durationSeconds: 600 } } }]
  }, { trustProxy: trustProxy ? '127.0.0.1' : false })
  exposeAffinity(app)
  app.all('/lb/*', { config: { targetGroup: 'lb' } }, (_request, reply) => reply.forward())
  app.all('/app/*', { config: { targetGroup: 'app' } }, (_request, reply) => reply.forward())
  app.all('/tg/*', { config: { listener: 'web' } }, (_request, reply) => reply.forward())
  return app
}

function linesOf (res: LightMyRequestResponse): string[] {
  const lines = res.headers['set-cookie']
  return lines === undefined ? [] : Array.isArray(lines) ? lines : [lines]
}

/** Every gateway cookie line the three routes write, by cookie name (the app's `sid` left out). */
async function gatewayLines (app: FastifyInstance, headers: Record<string, string> = {}): Promise<Map<string, string>> {
  const lines = new Map<string, string>()
  for (const url of ['/lb/x', '/app/login', '/tg/x']) {
    const res = await app.inject({ url, headers })
    for (const line of linesOf(res)) {
      const name = line.slice(0, line.indexOf('='))
      if (name.includes('AWSALB')) lines.set(name, line)
    }
  }
  return lines
}

/** The attributes after the value and `Expires`, as written: `Path=/; Secure`. */
function attributesOf (line: string): string {
  return line.split('; ').slice(2).join('; ')
}

test('by default the gateway writes ALB’s exact attributes: no Secure or HttpOnly but on the CORS twins’ SameSite=None; Secure', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets, {})
  const lines = await gatewayLines(app)
  t.same([...lines.keys()].sort(), ['AWSALB', 'AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3', 'AWSALBCORS', 'AWSALBTG', 'AWSALBTGCORS'], 'every kind written')
  for (const [name, line] of lines) {
    t.equal(attributesOf(line), name.endsWith('CORS') ? 'Path=/; SameSite=None; Secure' : 'Path=/', `${name}: ${line}`)
  }
})

test('cookieSecure: true and cookieHttpOnly: true reach every gateway cookie, ALB’s attributes kept', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets, { cookieSecure: true, cookieHttpOnly: true })
  const lines = await gatewayLines(app)
  t.equal(lines.size, 8, 'every kind written')
  for (const [name, line] of lines) {
    t.equal(attributesOf(line), name.endsWith('CORS') ? 'Path=/; SameSite=None; Secure; HttpOnly' : 'Path=/; Secure; HttpOnly', `${name}: ${line}`)
  }
  const app2 = await gateway(t, targets, { cookieHttpOnly: true })
  for (const [name, line] of await gatewayLines(app2)) {
    t.equal(attributesOf(line), name.endsWith('CORS') ? 'Path=/; SameSite=None; Secure; HttpOnly' : 'Path=/; HttpOnly', `HttpOnly alone, ${name}: ${line}`)
  }
})

test("cookieSecure: 'auto' adds Secure over HTTPS (request.protocol) and leaves it off over HTTP", async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets, { cookieSecure: 'auto' }, true)
  for (const [name, line] of await gatewayLines(app, { 'x-forwarded-proto': 'https' })) {
    // Chromium gets SameSite=None on AWSALBAPP over HTTPS; other clients, Secure alone.
    t.equal(attributesOf(line), name.endsWith('CORS') ? 'Path=/; SameSite=None; Secure' : 'Path=/; Secure', `over HTTPS, ${name}: ${line}`)
  }
  for (const [name, line] of await gatewayLines(app)) {
    t.equal(attributesOf(line), name.endsWith('CORS') ? 'Path=/; SameSite=None; Secure' : 'Path=/', `over HTTP, ${name}: ${line}`)
  }
})

test('a redispatched request’s fresh cookie keeps the attributes', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    cookieSecure: true,
    cookieHttpOnly: true,
    targetGroups: [{ name: 'lb', targets: [{ id: 'gone', url: 'http://127.0.0.1:1' }, ...targets.map(({ id, url }) => ({ id, url }))] }]
  })
  exposeAffinity(app)
  app.all('/*', { config: { targetGroup: 'lb' } }, (_request, reply) => reply.forward())
  let redispatched = 0
  for (let i = 0; i < 6; i++) {
    const res = await app.inject({ url: '/x' })
    t.equal(res.statusCode, 200, `request ${i}: answered`)
    if (res.headers['x-affinity'] !== 'reassigned;target-unreachable') continue
    redispatched++
    const line = linesOf(res).find((l) => l.startsWith('AWSALB='))
    t.equal(attributesOf(line ?? ''), 'Path=/; Secure; HttpOnly', `the re-pinned cookie: ${line}`)
  }
  t.ok(redispatched > 0, `some requests first went to the refused target: ${redispatched}`)
})

test('a __Host- prefix with cookieSecure: true writes what browsers require, and clients stick', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await gateway(t, targets, { cookiePrefix: '__Host-', cookieSecure: true })
  const lines = await gatewayLines(app)
  t.same([...lines.keys()].sort(), ['__Host-AWSALB', '__Host-AWSALBAPP-0', '__Host-AWSALBAPP-1', '__Host-AWSALBAPP-2', '__Host-AWSALBAPP-3', '__Host-AWSALBCORS', '__Host-AWSALBTG', '__Host-AWSALBTGCORS'])
  for (const [name, line] of lines) {
    t.match(line, /; Path=\/(;|$)/, `${name}: Path=/`)
    t.match(line, /; Secure(;|$)/, `${name}: Secure`)
    t.notMatch(line, /Domain=/i, `${name}: no Domain`)
  }
  const jar = new CookieJar()
  const seen = new Set<string>()
  for (let i = 0; i < 10; i++) {
    const res = await app.inject({ url: '/lb/x', headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    seen.add(echoOf(res).target)
  }
  t.equal(seen.size, 1, `one target for ten requests: ${[...seen].join(',')}`)
})
