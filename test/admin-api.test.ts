import { createHash } from 'node:crypto'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { test } from 'tap'
import { tokenMatches } from '../lib/admin.js'
import fastifySticky, { stickyAdmin, type StickyAdminOptions } from '../lib/index.js'
import { TEST_KEY, buildGateway, echoOf, startTargets, waitFor, type TestTarget } from './setup.js'

const TOKEN = 'admin-token-0123456789abcdef'
const AUTH = { authorization: `Bearer ${TOKEN}` }

interface Tap { teardown (fn: () => unknown): void }

/** A gateway over `count` targets (group `web`, round robin, no stickiness) with the admin API under /admin; its log lines are collected. */
async function adminGateway (t: Tap, count: number, admin: StickyAdminOptions = { token: TOKEN }, group: object = {}): Promise<{ app: FastifyInstance, targets: TestTarget[], lines: Array<Record<string, unknown>>, raw: string[] }> {
  const targets = await startTargets(t, count)
  const lines: Array<Record<string, unknown>> = []
  const raw: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      raw.push(chunk.toString())
      lines.push(JSON.parse(chunk.toString()))
      callback()
    }
  })
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'web', deregistrationDelayMs: 0, targets: targets.map(({ id, url }) => ({ id, url })), ...group }]
  }, { logger: { level: 'info', stream } })
  app.get('/*', { config: { targetGroup: 'web' } }, (_request, reply) => reply.forward())
  await app.register(stickyAdmin, { prefix: '/admin', ...admin })
  return { app, targets, lines, raw }
}

/** Which targets answered `count` requests, as `id → hits`. */
async function spread (app: FastifyInstance, count: number): Promise<Record<string, number>> {
  const seen: Record<string, number> = {}
  for (let i = 0; i < count; i++) {
    const res = await app.inject({ url: `/r${i}` })
    const id = echoOf(res).target
    seen[id] = (seen[id] ?? 0) + 1
  }
  return seen
}

test('stickyAdmin refuses to register without one authentication choice, naming the option', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{}, /stickyAdmin needs an authentication choice: token \(a bearer token\) or authentication: 'custom'/],
    [{ token: 'short' }, /stickyAdmin token must be a string of at least 16 characters, received 5 characters/],
    [{ token: 42 }, /stickyAdmin token must be a string of at least 16 characters, received number/],
    [{ token: TOKEN, authentication: 'custom' }, /stickyAdmin authentication must be absent when token is given/],
    [{ authentication: 'basic' }, /stickyAdmin authentication must be 'custom'/],
    [{ token: TOKEN, allow: ['10.0.0.0/99'] }, /stickyAdmin allow\[0\] must be an address or CIDR range/],
    [{ token: TOKEN, allow: [] }, /stickyAdmin allow must be an address or CIDR range, or a non-empty array of them/],
    [{ token: TOKEN, stateChanges: 0 }, /stickyAdmin stateChanges must be an integer from 1 to 10000/],
    [{ token: TOKEN, tokn: 'x' }, /stickyAdmin tokn is not an option/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'web', targets: [] }] })
    app.register(stickyAdmin, options as StickyAdminOptions)
    const err = await app.ready().then(() => null, (error: Error & { code?: string }) => error)
    t.equal(err?.code, 'FST_STICKY_OPTION_INVALID', `${JSON.stringify(options)} is refused`)
    t.match(err?.message, message)
    t.notOk(err?.message.includes(TOKEN), 'the message never carries the token')
  }
  const alone = Fastify()
  t.teardown(() => alone.close())
  alone.register(stickyAdmin, { token: TOKEN })
  const err = await alone.ready().then(() => null, (error: Error & { code?: string }) => error)
  t.equal(err?.code, 'FST_STICKY_OPTION_INVALID')
  t.match(err?.message, /register fastify-sticky before it/)
})

test('bearer token: missing, wrong (any length) and malformed get 401; the right one passes', async (t) => {
  const { app } = await adminGateway(t, 1)
  for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: `Bearer ${TOKEN}x` }, { authorization: `Basic ${TOKEN}` }, { authorization: `Bearer ${TOKEN.slice(0, -1)}` }]) {
    const res = await app.inject({ url: '/admin/target-groups', headers })
    t.equal(res.statusCode, 401, `${JSON.stringify(headers)}: 401`)
    t.same(res.json(), { statusCode: 401, code: 'FST_STICKY_ADMIN_UNAUTHORIZED', error: 'Unauthorized', message: 'The admin API needs its bearer token' })
  }
  t.equal((await app.inject({ url: '/admin/target-groups', headers: AUTH })).statusCode, 200)
  t.equal((await app.inject({ url: '/admin/target-groups', headers: { authorization: `bearer ${TOKEN}` } })).statusCode, 200, 'the scheme is case-insensitive')
})

test('the token is compared as equal-length SHA-256 digests in constant time', async (t) => {
  const expected = createHash('sha256').update(TOKEN).digest()
  t.equal(tokenMatches(expected, TOKEN), true)
  // timingSafeEqual throws on buffers of different lengths: digests never differ in length.
  t.equal(tokenMatches(expected, ''), false, 'an empty token: false, no throw')
  t.equal(tokenMatches(expected, 'x'.repeat(10_000)), false, 'a long one: false, no throw')
})

test('allow: loopback by default; a peer outside the list gets 403 whatever its token or X-Forwarded-For says', async (t) => {
  const { app } = await adminGateway(t, 1)
  const outside = await app.inject({ url: '/admin/target-groups', headers: { ...AUTH, 'x-forwarded-for': '127.0.0.1' }, remoteAddress: '10.1.2.3' })
  t.equal(outside.statusCode, 403)
  t.equal(outside.json().code, 'FST_STICKY_ADMIN_FORBIDDEN')
  t.equal((await app.inject({ url: '/admin/', remoteAddress: '10.1.2.3' })).statusCode, 403, 'the page too')
  t.equal((await app.inject({ url: '/admin/target-groups', headers: AUTH, remoteAddress: '::1' })).statusCode, 200, 'IPv6 loopback')
  t.equal((await app.inject({ url: '/admin/target-groups', headers: AUTH, remoteAddress: '::ffff:127.0.0.1' })).statusCode, 200, 'IPv4-mapped loopback (a server on ::)')

  const { app: wide } = await adminGateway(t, 1, { token: TOKEN, allow: ['10.0.0.0/8', '192.168.1.7'] })
  t.equal((await wide.inject({ url: '/admin/target-groups', headers: AUTH, remoteAddress: '10.1.2.3' })).statusCode, 200, 'inside 10.0.0.0/8')
  t.equal((await wide.inject({ url: '/admin/target-groups', headers: AUTH, remoteAddress: '192.168.1.7' })).statusCode, 200, 'a single address')
  t.equal((await wide.inject({ url: '/admin/target-groups', headers: AUTH, remoteAddress: '127.0.0.1' })).statusCode, 403, 'loopback is not in that list')
  t.equal((await wide.inject({ url: '/admin/target-groups', remoteAddress: '10.1.2.3' })).statusCode, 401, 'allowed, still needs the token')
})

test("authentication: 'custom' leaves authentication to the app's own hook", async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'web', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  await app.register(async (scope) => {
    scope.addHook('onRequest', async (request, reply) => {
      if (request.headers['x-operator'] !== 'alice') await reply.code(401).send({ code: 'MY_AUTH' })
    })
    await scope.register(stickyAdmin, { prefix: '/ops', authentication: 'custom' })
  })
  t.equal((await app.inject({ url: '/ops/target-groups' })).statusCode, 401, 'the app\'s hook refuses')
  t.equal((await app.inject({ url: '/ops/target-groups', headers: AUTH })).statusCode, 401, 'a bearer token means nothing here')
  const res = await app.inject({ url: '/ops/target-groups', headers: { 'x-operator': 'alice' } })
  t.equal(res.statusCode, 200)
  t.equal(res.json().targetGroups[0].name, 'web')
  t.equal((await app.inject({ url: '/ops/login', method: 'POST', headers: { 'x-operator': 'alice' } })).statusCode, 404, 'no login without a token')
  t.equal((await app.inject({ url: '/ops/target-groups', headers: { 'x-operator': 'alice' }, remoteAddress: '10.0.0.1' })).statusCode, 403, 'allow still applies')
})

test('GET target-groups and one group: the describe() data', async (t) => {
  const { app, targets } = await adminGateway(t, 2)
  const all = await app.inject({ url: '/admin/target-groups', headers: AUTH })
  t.equal(all.statusCode, 200)
  const described = app.targetGroups.get('web')?.describe()
  t.same(all.json(), { targetGroups: [described] }, 'the same as describe()')
  t.same(all.json().targetGroups[0].targets.map((target: { id: string, origin: string, inService: boolean }) => [target.id, target.origin, target.inService]), targets.map(({ id, url }) => [id, url, true]))
  const one = await app.inject({ url: '/admin/target-groups/web', headers: AUTH })
  t.same(one.json(), described)
  const missing = await app.inject({ url: '/admin/target-groups/nope', headers: AUTH })
  t.equal(missing.statusCode, 404)
  t.same(missing.json(), { statusCode: 404, code: 'FST_STICKY_ADMIN_TARGET_GROUP_NOT_FOUND', error: 'Not Found', message: "No target group 'nope'" })
})

test('register: the new target takes requests; a duplicate is 409, a bad URL 400; schema errors 400', async (t) => {
  const { app, lines, raw } = await adminGateway(t, 1)
  const [extra] = await startTargets(t, 1, 'x')
  const res = await app.inject({ method: 'POST', url: '/admin/target-groups/web/targets', headers: AUTH, payload: { id: 'x0', url: extra.url, weight: 2 } })
  t.equal(res.statusCode, 201)
  t.match(res.json(), { id: 'x0', origin: extra.url, weight: 2, state: 'healthy', inService: true })
  const seen = await spread(app, 6)
  t.equal(seen.x0, 4, `x0 (weight 2) takes two of three requests: ${JSON.stringify(seen)}`)

  const duplicate = await app.inject({ method: 'POST', url: '/admin/target-groups/web/targets', headers: AUTH, payload: { id: 'x0', url: extra.url } })
  t.equal(duplicate.statusCode, 409)
  t.equal(duplicate.json().code, 'FST_STICKY_ADMIN_TARGET_CONFLICT')
  const bad = await app.inject({ method: 'POST', url: '/admin/target-groups/web/targets', headers: AUTH, payload: { id: 'x1', url: 'ftp://example' } })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json().code, 'FST_STICKY_ADMIN_REQUEST_INVALID')
  t.match(bad.json().message, /url/)

  const invalid: Array<[object, RegExp]> = [
    [{ url: extra.url }, /must have required property 'id'/],
    [{ id: 'x2' }, /must have required property 'url'/],
    [{ id: 'x2', url: extra.url, weight: 0 }, /weight must be >= 1/],
    [{ id: 'x2', url: extra.url, weight: 1.5 }, /weight must be integer/],
    [{ id: 'x2', url: extra.url, color: 'red' }, /property name must be equal to one of the allowed values|must be equal to one of the allowed values/],
    [{ id: '', url: extra.url }, /id must NOT have fewer than 1 characters/]
  ]
  for (const [payload, message] of invalid) {
    const answer = await app.inject({ method: 'POST', url: '/admin/target-groups/web/targets', headers: AUTH, payload })
    t.equal(answer.statusCode, 400, `${JSON.stringify(payload)}: 400`)
    t.equal(answer.json().code, 'FST_ERR_VALIDATION')
    t.match(answer.json().message, message)
  }
  t.equal(app.targetGroups.get('web')?.targets.length, 2, 'nothing registered by the refused requests')
  const logged = lines.find((line) => (line.admin as { action?: string } | undefined)?.action === 'register')
  t.match(logged, { level: 30, msg: 'admin: target registered', admin: { by: 'token', client: '127.0.0.1', targetGroup: 'web', target: 'x0', weight: 2 } })
  t.notOk(raw.join('').includes(TOKEN), 'the token is in no log line')
})

test('deregister: the target drains and takes no new request; unknown ids are 404', async (t) => {
  const { app, targets, lines } = await adminGateway(t, 2, { token: TOKEN }, { deregistrationDelayMs: 60_000, drainingKeepsSessions: false })
  // A request held on t0 keeps it draining.
  let answered = false
  const held = app.inject({ url: '/hold' }).finally(() => { answered = true })
  await waitFor(() => app.targetGroups.get('web')?.describe().targets[0].inFlight === 1 && targets[0].hits === 1, 2000, 'a request held on t0')
  const res = await app.inject({ method: 'DELETE', url: '/admin/target-groups/web/targets/t0', headers: AUTH })
  t.equal(res.statusCode, 202)
  t.match(res.json(), { id: 't0', state: 'draining', reason: 'Target.DeregistrationInProgress', routable: false })
  const before = targets[0].hits
  const seen = await spread(app, 4)
  t.same(seen, { t1: 4 }, 'every new request to t1')
  t.equal(targets[0].hits, before)
  await waitFor(() => { targets[0].release(); return answered }, 2000, 'the held request to be answered')
  t.equal((await held).statusCode, 200, 'the request in flight finished')
  await waitFor(() => app.targetGroups.get('web')?.get('t0') === undefined, 5000, 't0 to leave once nothing is left on it')
  const again = await app.inject({ method: 'DELETE', url: '/admin/target-groups/web/targets/t0', headers: AUTH })
  t.equal(again.statusCode, 404)
  t.same(again.json(), { statusCode: 404, code: 'FST_STICKY_ADMIN_TARGET_NOT_FOUND', error: 'Not Found', message: "Target group 'web' has no registered target 't0'" })
  t.equal((await app.inject({ method: 'DELETE', url: '/admin/target-groups/nope/targets/t0', headers: AUTH })).json().code, 'FST_STICKY_ADMIN_TARGET_GROUP_NOT_FOUND')
  t.match(lines.find((line) => (line.admin as { action?: string } | undefined)?.action === 'deregister'), { level: 30, admin: { by: 'token', client: '127.0.0.1', targetGroup: 'web', target: 't0' } })
})

test('weight: a new weight changes the share of new requests; schema errors 400', async (t) => {
  const { app, lines } = await adminGateway(t, 2)
  t.same(await spread(app, 4), { t0: 2, t1: 2 })
  const res = await app.inject({ method: 'PUT', url: '/admin/target-groups/web/targets/t1/weight', headers: AUTH, payload: { weight: 3 } })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { id: 't1', weight: 3 })
  t.same(await spread(app, 8), { t0: 2, t1: 6 }, 't1 takes three requests of four')
  for (const payload of [{}, { weight: 0 }, { weight: 1001 }, { weight: 'two' }, { weight: 2, extra: true }]) {
    const answer = await app.inject({ method: 'PUT', url: '/admin/target-groups/web/targets/t1/weight', headers: AUTH, payload })
    t.equal(answer.statusCode, 400, `${JSON.stringify(payload)}: 400`)
    t.equal(answer.json().code, 'FST_ERR_VALIDATION')
  }
  t.equal((await app.inject({ method: 'PUT', url: '/admin/target-groups/web/targets/t9/weight', headers: AUTH, payload: { weight: 2 } })).statusCode, 404)
  t.match(lines.find((line) => (line.admin as { action?: string } | undefined)?.action === 'weight'), { level: 30, msg: 'admin: target weight changed', admin: { by: 'token', targetGroup: 'web', target: 't1', from: 1, to: 3 } })
})

test('in service: out of service takes no new request (not even failing open); back in, it takes them again; the state changes are recorded', async (t) => {
  const { app, targets, lines } = await adminGateway(t, 2)
  const out = await app.inject({ method: 'PUT', url: '/admin/target-groups/web/targets/t0/in-service', headers: AUTH, payload: { inService: false } })
  t.equal(out.statusCode, 200)
  t.match(out.json(), { id: 't0', state: 'healthy', inService: false, routable: false })
  const before = targets[0].hits
  t.same(await spread(app, 4), { t1: 4 }, 'every new request to t1')
  t.equal(targets[0].hits, before, 't0 got none')
  t.equal(app.targetGroups.get('web')?.degraded, false, 'one in-service target is enough: not degraded')

  const back = await app.inject({ method: 'PUT', url: '/admin/target-groups/web/targets/t0/in-service', headers: AUTH, payload: { inService: true } })
  t.match(back.json(), { id: 't0', inService: true, routable: true })
  t.same(await spread(app, 4), { t0: 2, t1: 2 })

  for (const payload of [{}, { inService: 'no' }]) {
    const answer = await app.inject({ method: 'PUT', url: '/admin/target-groups/web/targets/t0/in-service', headers: AUTH, payload })
    t.equal(answer.statusCode, 400)
    t.equal(answer.json().code, 'FST_ERR_VALIDATION')
  }

  const changes = await app.inject({ url: '/admin/state-changes', headers: AUTH })
  t.equal(changes.statusCode, 200)
  t.same(changes.json().stateChanges.map((change: { change: string, target: { id: string }, to: string }) => `${change.change} ${change.target.id} ${change.to}`), [
    'out-of-service t0 healthy', 'in-service t0 healthy'
  ], 'both changes, oldest first')
  const limited = await app.inject({ url: '/admin/state-changes?limit=1', headers: AUTH })
  t.same(limited.json().stateChanges.map((change: { change: string }) => change.change), ['in-service'], 'limit keeps the newest')
  t.equal((await app.inject({ url: '/admin/state-changes?limit=0', headers: AUTH })).json().code, 'FST_ERR_VALIDATION')
  t.same(lines.filter((line) => line.admin !== undefined).map((line) => line.msg), ['admin: target taken out of service', 'admin: target put back in service'])

})

test('the state-change log is bounded and keeps only this gateway\'s groups', async (t) => {
  const { app } = await adminGateway(t, 2, { token: TOKEN, stateChanges: 3 })
  const other = await buildGateway(t, { targetGroups: [{ name: 'other', targets: [] }] })
  await other.ready()
  const [extra] = await startTargets(t, 1, 'o')
  app.targetGroups.get('web')?.setInService('t0', false)
  app.targetGroups.get('web')?.setInService('t0', true)
  other.targetGroups.get('other')?.register({ id: 'o0', url: extra.url })
  app.targetGroups.get('web')?.setInService('t1', false)
  app.targetGroups.get('web')?.setInService('t1', true)
  const res = await app.inject({ url: '/admin/state-changes', headers: AUTH })
  t.same(res.json().stateChanges.map((change: { change: string, targetGroup: string, target: { id: string } }) => `${change.targetGroup} ${change.change} ${change.target.id}`), [
    'web in-service t0', 'web out-of-service t1', 'web in-service t1'
  ], 'the last three of web')
})

test('the event stream: a snapshot at once and every second, by bearer token or the login cookie, ended by app.close()', async (t) => {
  const { app } = await adminGateway(t, 2)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}/admin`

  t.equal((await fetch(`${base}/events`)).status, 401, 'no token, no cookie')
  t.equal((await fetch(`${base}/events`, { headers: { cookie: 'fastify-sticky-admin=forged' } })).status, 401, 'a forged cookie')
  t.equal((await fetch(`${base}/login`, { method: 'POST' })).status, 401, 'login needs the token')
  const login = await fetch(`${base}/login`, { method: 'POST', headers: AUTH })
  t.equal(login.status, 204)
  const setCookie = login.headers.get('set-cookie') ?? ''
  t.match(setCookie, /^fastify-sticky-admin=[\w-]{43}; Path=\/admin; Max-Age=900; HttpOnly; SameSite=Strict$/)
  t.notOk(setCookie.includes(TOKEN), 'the cookie is not the token')
  const cookie = setCookie.split(';')[0]
  const put = await fetch(`${base}/target-groups/web/targets/t0/weight`, { method: 'PUT', headers: { cookie, 'content-type': 'application/json' }, body: '{"weight":2}' })
  t.equal(put.status, 401, 'the cookie opens the stream only, never a change')

  const controller = new AbortController()
  const stream = await fetch(`${base}/events`, { headers: { cookie }, signal: controller.signal })
  t.equal(stream.status, 200)
  t.equal(stream.headers.get('content-type'), 'text/event-stream; charset=utf-8')
  const reader = (stream.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let text = ''
  const events = (): Array<{ atMs: number, targetGroups: Array<{ name: string, targets: Array<{ id: string, requestsPerSecond: number | null }> }> }> =>
    [...text.matchAll(/event: snapshot\ndata: (.*)\n\n/g)].map((match) => JSON.parse(match[1]))
  const readUntil = async (count: number): Promise<void> => {
    const deadline = Date.now() + 5000
    while (events().length < count && Date.now() < deadline) {
      const { value, done } = await reader.read()
      if (done) break
      text += decoder.decode(value, { stream: true })
    }
  }
  await readUntil(2)
  const [first, second] = events()
  t.same(first.targetGroups[0].targets.map((target) => target.id), ['t0', 't1'])
  t.equal(first.targetGroups[0].targets[0].requestsPerSecond, null, 'no rate without metrics')
  t.ok(second.atMs - first.atMs >= 900, `a second apart: ${second.atMs - first.atMs} ms`)

  const bearer = await fetch(`${base}/events`, { headers: AUTH })
  t.equal(bearer.status, 200, 'the bearer token opens it too')
  await bearer.body?.cancel()

  // app.close() ends the open stream instead of waiting for it.
  await app.close()
  const end = await reader.read().then(async function drain (result): Promise<boolean> {
    return result.done ? true : await reader.read().then(drain)
  })
  t.equal(end, true, 'the stream ended')
})

test('the event stream carries requests per second and the 5xx share when metrics are on', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'web', targets: targets.map(({ id, url }) => ({ id, url })) }], metrics: true })
  app.get('/*', { config: { targetGroup: 'web' } }, (_request, reply) => reply.forward())
  await app.register(stickyAdmin, { prefix: '/admin', token: TOKEN })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const stream = await fetch(`http://127.0.0.1:${port}/admin/events`, { headers: AUTH })
  const reader = (stream.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let text = ''
  const snapshots = (): Array<{ targetGroups: Array<{ targets: Array<{ requestsPerSecond: number | null, errorRate: number | null }> }> }> =>
    [...text.matchAll(/event: snapshot\ndata: (.*)\n\n/g)].map((match) => JSON.parse(match[1]))
  await waitFor(async () => {
    // Two requests of four answered 500 between snapshots.
    for (const path of ['/a', '/status/500', '/b', '/status/500']) await app.inject({ url: path })
    const { value } = await reader.read()
    text += decoder.decode(value, { stream: true })
    const last = snapshots().at(-1)?.targetGroups[0].targets[0]
    return last !== undefined && last.requestsPerSecond !== null && last.requestsPerSecond >= 4 && last.errorRate !== null && Math.abs(last.errorRate - 0.5) < 0.01
  }, 8000, 'a snapshot with 4 requests a second, half of them 5xx')
  t.pass(`rates: ${JSON.stringify(snapshots().at(-1)?.targetGroups[0].targets[0])}`)
  await reader.cancel()
})
