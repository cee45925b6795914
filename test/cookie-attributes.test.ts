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

test('by default the gateway writes ALB’s exact attributes: no Secure or HttpOnly but on the CORS twins’ SameSite=None; Secure, written over HTTPS', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, targets, {}, true)
  const lines = await gatewayLines(app, { 'x-forwarded-proto': 'https' })
  t.same([...lines.keys()].sort(), ['AWSALB', 'AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3', 'AWSALBCORS', 'AWSALBTG', 'AWSALBTGCORS'], 'every kind written')
  for (const [name, line] of lines) {
    t.equal(attributesOf(line), name.endsWith('CORS') ? 'Path=/; SameSite=None; Secure' : 'Path=/', `${name}: ${line}`)
  }
})

test('the CORS twins only where a client keeps a Secure cookie: over HTTPS (request.protocol) or with cookieSecure: true; corsCookies: always writes them as ALB', async (t) => {
  const targets = await startTargets(t, 2)
  const all = ['AWSALB', 'AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3', 'AWSALBCORS', 'AWSALBTG', 'AWSALBTGCORS']
  const withoutTwins = all.filter((name) => !name.endsWith('CORS'))
  const trusting = await gateway(t, targets, {}, true)
  t.same([...(await gatewayLines(trusting)).keys()].sort(), withoutTwins, 'over plain HTTP: no twin, every other kind written')
  t.same([...(await gatewayLines(trusting, { 'x-forwarded-proto': 'https' })).keys()].sort(), all, 'X-Forwarded-Proto: https from a trusted proxy: the twins too')
  // A client that is not a trusted proxy cannot make the gateway think it came over HTTPS.
  const untrusting = await gateway(t, targets, {})
  t.same([...(await gatewayLines(untrusting, { 'x-forwarded-proto': 'https' })).keys()].sort(), withoutTwins, 'X-Forwarded-Proto from an untrusted peer: plain HTTP, no twin')
  const secure = await gateway(t, targets, { cookieSecure: true })
  t.same([...(await gatewayLines(secure)).keys()].sort(), all, 'cookieSecure: true says every client comes over HTTPS: the twins too')
  const always = await gateway(t, targets, { corsCookies: 'always' })
  const lines = await gatewayLines(always)
  t.same([...lines.keys()].sort(), all, "corsCookies: 'always': the twins over plain HTTP, as ALB")
  for (const [name, line] of lines) {
    t.equal(attributesOf(line), name.endsWith('CORS') ? 'Path=/; SameSite=None; Secure' : 'Path=/', `always, ${name}: ${line}`)
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
  const plain = await gatewayLines(app)
  t.notOk([...plain.keys()].some((name) => name.endsWith('CORS')), `over HTTP no twin: ${[...plain.keys()].join(', ')}`)
  for (const [name, line] of plain) t.equal(attributesOf(line), 'Path=/', `over HTTP, ${name}: ${line}`)
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

test('a redispatched request is re-pinned with the CORS twin over HTTPS, and without it over HTTP', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'lb', targets: [{ id: 'gone', url: 'http://127.0.0.1:1' }, ...targets.map(({ id, url }) => ({ id, url }))] }]
  }, { trustProxy: '127.0.0.1' })
  exposeAffinity(app)
  app.all('/*', { config: { targetGroup: 'lb' } }, (_request, reply) => reply.forward())
  const seen = { https: 0, http: 0 }
  for (let i = 0; i < 12; i++) {
    // Whichever kind was redispatched less so far: round robin sends every third request to the refused target.
    const https = seen.https <= seen.http
    const res = await app.inject({ url: '/x', headers: https ? { 'x-forwarded-proto': 'https' } : {} })
    t.equal(res.statusCode, 200, `request ${i}: answered`)
    if (res.headers['x-affinity'] !== 'reassigned;target-unreachable') continue
    seen[https ? 'https' : 'http']++
    const names = linesOf(res).map((line) => line.slice(0, line.indexOf('=')))
    t.same(names, https ? ['AWSALB', 'AWSALBCORS'] : ['AWSALB'], `re-pinned over ${https ? 'HTTPS' : 'HTTP'}: ${JSON.stringify(linesOf(res))}`)
    const values = new Set(linesOf(res).map((line) => line.slice(line.indexOf('=') + 1).split(';')[0]))
    t.equal(values.size, 1, 'one value, naming the new target')
  }
  t.ok(seen.https > 0 && seen.http > 0, `requests of both kinds first went to the refused target: ${JSON.stringify(seen)}`)
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
