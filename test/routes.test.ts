import { test } from 'tap'
import Fastify from 'fastify'
import fastifyCookie from '@fastify/cookie'
import fastifySticky, { stickyProxy, type AffinityDecision } from '../lib/index.js'
import { COOKIE_PURPOSE_LB, CookieCodec } from '../lib/cookie-codec.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, startTargets, TEST_KEY } from './setup.js'

const codec = new CookieCodec([Buffer.from(TEST_KEY, 'hex')])

function windowOf (setCookie: string | string[] | undefined): number | undefined {
  const jar = new CookieJar()
  jar.store(setCookie)
  const payload = codec.open(COOKIE_PURPOSE_LB, jar.cookies.get('AWSALB') ?? '')?.payload
  return payload === undefined ? undefined : payload.stickyUntilSeconds - payload.issuedAtSeconds
}

test('per-route stickiness: /static not sticky, /cart for an hour, /api for a day', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, { targetGroups: [{ name: 'shop', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  app.get('/static/*', { config: { targetGroup: 'shop', stickiness: false } }, (_request, reply) => reply.forward())
  app.get('/cart/*', { config: { targetGroup: 'shop', stickiness: { durationSeconds: 3600 } } }, (_request, reply) => reply.forward())
  app.get('/api/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())

  const cart = await app.inject({ url: '/cart/items' })
  t.equal(windowOf(cart.headers['set-cookie']), 3600, '/cart: a one-hour window')
  const api = await app.inject({ url: '/api/items' })
  t.equal(windowOf(api.headers['set-cookie']), 86400, '/api: the group’s one-day window')

  const jar = new CookieJar()
  jar.store(cart.headers['set-cookie'])
  const seen = new Set<string>()
  for (let i = 0; i < 6; i++) {
    const res = await app.inject({ url: '/static/app.js', headers: jar.headers() })
    t.equal(res.headers['set-cookie'], undefined, `/static: no cookie written (request ${i})`)
    seen.add(echoOf(res).target)
  }
  t.equal(seen.size, 3, `/static: balanced over every target even with a cookie, got ${[...seen].join(',')}`)
})

test('stickyProxy mounts a whole prefix onto a group, with its own stickiness', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'shop', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  await app.register(stickyProxy, { prefix: '/cart', targetGroup: 'shop', stickiness: { durationSeconds: 600 }, rewritePrefix: '/cart' })
  await app.register(stickyProxy, { prefix: '/assets', targetGroup: 'shop', stickiness: false })

  const jar = new CookieJar()
  const first = await app.inject({ method: 'POST', url: '/cart/items?x=1', payload: { name: 'tea' }, headers: jar.headers() })
  jar.store(first.headers['set-cookie'])
  t.equal(echoOf(first).url, '/cart/items?x=1', 'path and query forwarded, prefix kept by rewritePrefix')
  t.equal(echoOf(first).body, '{"name":"tea"}', 'body forwarded')
  t.equal(windowOf(first.headers['set-cookie']), 600)
  for (const method of ['GET', 'DELETE', 'PUT'] as const) {
    const res = await app.inject({ method, url: '/cart', headers: jar.headers() })
    t.equal(echoOf(res).target, echoOf(first).target, `${method} /cart stays on the same target`)
  }
  const asset = await app.inject({ url: '/assets/logo.svg' })
  t.equal(echoOf(asset).url, '/logo.svg', 'prefix removed by default, as @fastify/http-proxy does')
  t.equal(asset.headers['set-cookie'], undefined, 'not sticky under /assets')
})

test('a user’s own handler reads request.affinity and still forwards', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'shop', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  const seen: AffinityDecision[] = []
  app.get('/cart', { config: { targetGroup: 'shop' } }, async (request, reply) => {
    const affinity = request.affinity!
    seen.push(affinity)
    if (affinity.outcome !== 'unavailable') reply.header('x-target', affinity.target.id)
    if (affinity.outcome === 'reassigned') reply.header('x-reason', affinity.reason)
    return reply.forward('/cart?via=handler')
  })
  app.get('/plain', async (request) => ({ affinity: request.affinity }))

  const res = await app.inject({ url: '/cart' })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-target'], echoOf(res).target, 'the handler saw the target that then answered')
  t.equal(echoOf(res).url, '/cart?via=handler', 'forward(path) sends another path')
  t.match(seen[0], { outcome: 'new', targetGroup: 'shop', stickiness: 'lb_cookie', decidedBy: 'round_robin', target: { id: /^t[01]$/, origin: /^http:\/\/127\.0\.0\.1:\d+$/ } })
  t.same(JSON.parse(JSON.stringify(seen[0].target)), { id: echoOf(res).target, origin: targets.find((x) => x.id === echoOf(res).target)!.url }, 'a target serializes to its id and origin only')
  const bad = await app.inject({ url: '/cart', headers: { cookie: 'AWSALB=forged' } })
  t.equal(bad.headers['x-reason'], 'undecodable')
  t.same((await app.inject({ url: '/plain' })).json(), { affinity: null }, 'unbound routes have affinity null')
})

test('reply.forward() on an unbound route is a 500 with FST_STICKY_ROUTE_UNBOUND', async (t) => {
  const app = await buildGateway(t, { targetGroups: [{ name: 'shop' }] })
  app.get('/oops', (_request, reply) => reply.forward())
  const res = await app.inject({ url: '/oops' })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'FST_STICKY_ROUTE_UNBOUND')
})

test('works whether the gateway registered @fastify/cookie before, after, or not at all', async (t) => {
  const targets = await startTargets(t, 2)
  for (const order of ['before', 'after', 'none'] as const) {
    const app = Fastify()
    t.teardown(() => app.close())
    if (order === 'before') await app.register(fastifyCookie)
    await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'shop', targets: targets.map(({ id, url }) => ({ id, url })) }] })
    if (order === 'after') await app.register(fastifyCookie)
    app.get('/set-cookie', { config: { targetGroup: 'shop' } }, (_request, reply) => {
      if (order !== 'none') reply.setCookie('gateway', 'g1', { path: '/' })
      return reply.forward()
    })
    const jar = new CookieJar()
    const first = await app.inject({ url: '/set-cookie' })
    jar.store(first.headers['set-cookie'])
    const names = [...jar.cookies.keys()].sort()
    const expected = ['AWSALB', 'app', 'other', ...(order === 'none' ? [] : ['gateway'])].sort()
    t.same(names, expected, `${order}: the target's, the gateway's and our cookies all arrive: ${names.join(',')}`)
    const second = await app.inject({ url: '/set-cookie', headers: jar.headers() })
    t.equal(echoOf(second).target, echoOf(first).target, `${order}: sticky`)
  }
})

test('HEAD requests on a GET route are forwarded and sticky too', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'shop', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  app.get('/page', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  const res = await app.inject({ method: 'HEAD', url: '/page' })
  t.equal(res.statusCode, 200)
  t.equal(res.body, '', 'no body')
  t.ok(windowOf(res.headers['set-cookie']), 'a cookie is written')
})

test('a route added before the plugin finished registering is bound on its first forward', async (t) => {
  const targets = await startTargets(t, 3)
  const warnings: string[] = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { warnings.push(JSON.parse(line).msg) } } } })
  t.teardown(() => app.close())
  app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'shop', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  app.get('/cart', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward()) // no await above
  const jar = new CookieJar()
  const seen = new Set<string>()
  for (let i = 0; i < 5; i++) {
    const res = await app.inject({ url: '/cart', headers: jar.headers() })
    t.equal(res.statusCode, 200, `request ${i} forwarded`)
    jar.store(res.headers['set-cookie'])
    seen.add(echoOf(res).target)
  }
  t.equal(seen.size, 1, `sticky all the same: ${[...seen].join(',')}`)
  t.equal(warnings.filter((msg) => msg.includes('route GET /cart was added before the plugin finished registering')).length, 1, `one warning for the route: ${JSON.stringify(warnings)}`)
})

test('each route holds a client for its own window since the last response, whichever route wrote the cookie', async (t) => {
  const targets = await startTargets(t, 3)
  let now = Date.parse('2026-11-21T12:00:00Z')
  const app = await buildGateway(t, { now: () => now, targetGroups: [{ name: 'shop', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  app.get('/api/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  app.get('/cart/*', { config: { targetGroup: 'shop', stickiness: { durationSeconds: 60 } } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  const jar = new CookieJar(() => now)
  jar.store((await app.inject({ url: '/api/a' })).headers['set-cookie'])
  now += 30_000
  const cart = await app.inject({ url: '/cart/a', headers: jar.headers() })
  t.equal(cart.headers['x-affinity'], 'hit', '30 s idle: inside the cart’s 60 s window')
  jar.store(cart.headers['set-cookie'])
  now += 61_000
  const api = await app.inject({ url: '/api/a', headers: jar.headers() })
  t.equal(api.headers['x-affinity'], 'hit', '61 s idle on /api: inside its day')
  jar.store(api.headers['set-cookie'])
  now += 61_000
  t.equal((await app.inject({ url: '/cart/a', headers: jar.headers() })).headers['x-affinity'], 'reassigned;expired', '61 s idle on /cart: past its 60 s window, though the cookie’s day is not over')
})

test('a body your route parsed goes to the target in the format its content-type names', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'shop', targets: [{ id: 'a', url: targets[0].url }] }] })
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)))
  })
  app.addContentTypeParser('text/csv', { parseAs: 'string' }, (_request, body, done) => {
    done(null, { rows: (body as string).split('\n') })
  })
  app.addContentTypeParser('application/vnd.api+json', { parseAs: 'string' }, app.getDefaultJsonParser('ignore', 'ignore'))
  app.post('/in', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  const form = echoOf(await app.inject({ method: 'POST', url: '/in', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=1&b=two+words' }))
  t.equal(form.body, 'a=1&b=two+words', 'a form stays a form')
  t.equal(form.headers['content-type'], 'application/x-www-form-urlencoded')
  const csv = echoOf(await app.inject({ method: 'POST', url: '/in', headers: { 'content-type': 'text/csv' }, payload: 'x\ny' }))
  t.equal(csv.body, '{"rows":["x","y"]}', 'an object parsed from another type goes as JSON')
  t.equal(csv.headers['content-type'], 'application/json', 'and says so')
  t.equal(csv.headers['content-length'], String(csv.body.length))
  const json = echoOf(await app.inject({ method: 'POST', url: '/in', headers: { 'content-type': 'application/vnd.api+json' }, payload: '{"a":1}' }))
  t.equal(json.headers['content-type'], 'application/vnd.api+json', 'a JSON type is kept')
})
