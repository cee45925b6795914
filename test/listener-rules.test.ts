import { test } from 'tap'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { COOKIE_PURPOSE_TG, CookieCodec, stickyProxy, type FastifyStickyOptions, type ListenerOptions } from '../lib/index.js'
import { buildGateway, CookieJar, echoOf, startTargets, TEST_KEY, type TestTarget } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

const codec = new CookieCodec([Buffer.from(TEST_KEY, 'hex')])

function group (name: string, targets: TestTarget[], stickiness: FastifyStickyOptions['targetGroups'][number]['stickiness'] = false) {
  return { name, targets: targets.map(({ id, url }) => ({ id, url })), stickiness }
}

/** Copies `request.affinity.rule` into `x-rule`: `<priority>/<groupOutcome>[;<groupReason>]`, and the group into `x-group`. */
function exposeRule (app: FastifyInstance): void {
  app.addHook('onSend', async (request, reply) => {
    const affinity = request.affinity
    if (affinity === null) return
    reply.header('x-group', affinity.targetGroup)
    const rule = affinity.rule
    if (rule !== undefined) reply.header('x-rule', `${rule.priority}/${rule.groupOutcome}${rule.groupReason === undefined ? '' : `;${rule.groupReason}`}`)
  })
}

async function gateway (t: Tap, options: FastifyStickyOptions): Promise<FastifyInstance> {
  const app = await buildGateway(t, options)
  exposeRule(app)
  app.all('/*', { config: { listener: 'web' } }, (_request, reply) => reply.forward())
  return app
}

async function send (app: FastifyInstance, jar: CookieJar, url = '/'): Promise<LightMyRequestResponse> {
  const res = await app.inject({ url, headers: jar.headers() })
  jar.store(res.headers['set-cookie'])
  return res
}

test('the lowest-priority rule whose conditions all match decides; none matching, the default', async (t) => {
  const names = ['api', 'admin', 'beta', 'internal', 'web']
  const targets = await startTargets(t, names.length)
  const web: ListenerOptions = {
    name: 'web',
    rules: [
      { priority: 20, conditions: { pathPattern: ['/api/*'] }, forward: 'api' },
      { priority: 10, conditions: { pathPattern: ['/api/admin*'], httpMethod: ['POST', 'DELETE'] }, forward: 'admin' },
      { priority: 30, conditions: { host: ['beta.example.com', '*.beta.example.com'] }, forward: 'beta' },
      { priority: 40, conditions: { httpHeader: [{ name: 'x-canary', values: ['yes', 'always*'] }] }, forward: 'beta' },
      { priority: 50, conditions: { queryString: [{ key: 'version', value: '2' }] }, forward: 'beta' },
      { priority: 60, conditions: { sourceIp: ['10.0.0.0/8'] }, forward: 'internal' }
    ],
    default: 'web'
  }
  const app = await gateway(t, { targetGroups: names.map((name, i) => group(name, [targets[i]])), listeners: [web] })
  const cases: Array<[string, InjectOptions, string, string]> = [
    ['POST to /api/admin: priority 10 before 20', { method: 'POST', url: '/api/admin/users' }, 'admin', '10'],
    ['GET to /api/admin: the method does not match 10, so 20', { method: 'GET', url: '/api/admin/users' }, 'api', '20'],
    ['a path pattern is case-sensitive', { url: '/API/items' }, 'web', 'default'],
    ['host, any case, port ignored', { url: '/', headers: { host: 'Beta.Example.com:8443' } }, 'beta', '30'],
    ['host wildcard', { url: '/', headers: { host: 'eu.beta.example.com' } }, 'beta', '30'],
    ['header value with a wildcard', { url: '/', headers: { 'x-canary': 'ALWAYS-please' } }, 'beta', '40'],
    ['header with another value', { url: '/', headers: { 'x-canary': 'no' } }, 'web', 'default'],
    ['query string', { url: '/page?version=2' }, 'beta', '50'],
    ['query string, other value', { url: '/page?version=3' }, 'web', 'default'],
    ['source IP in the CIDR', { url: '/', remoteAddress: '10.20.30.40' }, 'internal', '60'],
    ['source IP outside it', { url: '/', remoteAddress: '192.168.1.1' }, 'web', 'default'],
    ['/api/x from 10/8: 20 before 60', { url: '/api/x', remoteAddress: '10.0.0.1' }, 'api', '20']
  ]
  for (const [what, request, expected, priority] of cases) {
    const res = await app.inject(request)
    t.equal(echoOf(res).target, targets[names.indexOf(expected)].id, `${what}: served by ${expected}`)
    t.equal(res.headers['x-group'], expected, `${what}: request.affinity.targetGroup`)
    t.equal(res.headers['x-rule'], `${priority}/single`, `${what}: request.affinity.rule`)
  }
})

test('a 90/10 canary: 2000 new clients split by weight, and every returning client stays on its group and target', async (t) => {
  const targets = await startTargets(t, 4)
  const app = await gateway(t, {
    targetGroups: [group('blue', targets.slice(0, 2), { durationSeconds: 3600 }), group('green', targets.slice(2), { durationSeconds: 3600 })],
    listeners: [{ name: 'web', default: { targetGroups: [{ name: 'blue', weight: 90 }, { name: 'green', weight: 10 }], stickiness: { durationSeconds: 3600 } } }]
  })
  const clients: Array<{ jar: CookieJar, group: string, target: string }> = []
  for (let i = 0; i < 2000; i++) {
    const jar = new CookieJar()
    const res = await send(app, jar)
    t.equal(res.headers['x-rule'], 'default/new', 'a new client is placed by weight')
    clients.push({ jar, group: String(res.headers['x-group']), target: echoOf(res).target })
  }
  const green = clients.filter((client) => client.group === 'green').length / clients.length
  t.ok(Math.abs(green - 0.10) <= 0.02, `green's share of 2000 new clients is within 2 points of 10 %: ${(green * 100).toFixed(1)} %`)
  const lines = (await app.inject({ url: '/' })).headers['set-cookie'] as string[]
  t.match(lines.find((line) => line.startsWith('AWSALBTG=')), /^AWSALBTG=[A-Za-z0-9_-]+; Expires=[^;]+ GMT; Path=\/$/, 'AWSALBTG as ALB writes it')
  t.notOk(lines.some((line) => line.startsWith('AWSALBTGCORS=')), 'no CORS twin over plain HTTP, where no client keeps a Secure cookie (cookie-attributes.test.ts: over HTTPS)')
  t.ok(lines.some((line) => line.startsWith('AWSALB=')), 'and the group’s own AWSALB')

  let stayed = 0
  for (const client of clients) {
    const res = await send(app, client.jar)
    if (res.headers['x-group'] === client.group && echoOf(res).target === client.target && res.headers['x-rule'] === 'default/hit') stayed++
  }
  t.equal(stayed, clients.length, `${stayed} of ${clients.length} returning clients stayed on their group and target`)
})

test('AWSALBTG that cannot be honoured is reassigned by weight, with the reason', async (t) => {
  const targets = await startTargets(t, 2)
  let now = Date.UTC(2026, 10, 21, 12)
  const app = await gateway(t, {
    now: () => now,
    targetGroups: [group('blue', [targets[0]], { durationSeconds: 60 }), group('green', [targets[1]], { durationSeconds: 60 }), group('other', [targets[0]])],
    listeners: [{ name: 'web', default: { targetGroups: [{ name: 'blue', weight: 1 }, { name: 'green', weight: 1 }], stickiness: { durationSeconds: 60 } } }]
  })
  const jar = new CookieJar(() => now)
  const first = await send(app, jar)
  const value = jar.cookies.get('AWSALBTG')!
  const seal = (name: string, issuedAtSeconds = Math.floor(now / 1000)) => codec.seal(COOKIE_PURPOSE_TG, { group: name, targetId: '', stickyUntilSeconds: issuedAtSeconds + 60, issuedAtSeconds })
  const cases: Array<[string, string, string]> = [
    ['its own value', `AWSALBTG=${value}`, 'default/hit'],
    ['only the CORS twin (a cross-site request)', `AWSALBTGCORS=${value}`, 'default/hit'],
    ['tampered', `AWSALBTG=${value.slice(0, 20)}${value[20] === 'A' ? 'B' : 'A'}${value.slice(21)}`, 'default/reassigned;undecodable'],
    ['naming a group this forward does not have', `AWSALBTG=${seal('other')}`, 'default/reassigned;group-mismatch'],
    ['an AWSALB value in its place', `AWSALBTG=${codec.seal(1, { group: 'blue', targetId: '', stickyUntilSeconds: 2e9, issuedAtSeconds: 1.7e9 })}`, 'default/reassigned;undecodable'],
    ['idle past the 60 s window', `AWSALBTG=${seal(String(first.headers['x-group']), Math.floor(now / 1000) - 61)}`, 'default/reassigned;expired'],
    ['issued an hour ahead of the clock', `AWSALBTG=${seal(String(first.headers['x-group']), Math.floor(now / 1000) + 3600)}`, 'default/reassigned;issued-in-future']
  ]
  for (const [what, cookie, expected] of cases) {
    const res = await app.inject({ url: '/', headers: { cookie } })
    t.equal(res.statusCode, 200, `${what}: answered`)
    t.equal(res.headers['x-rule'], expected, what)
  }
  now += 59_000
  t.equal((await send(app, jar)).headers['x-rule'], 'default/hit', '59 s later: inside the window')
})

test('a weighted forward without sticky groups needs no group stickiness: clients spread by weight, no AWSALBTG', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await gateway(t, {
    targetGroups: [group('a', [targets[0]]), group('b', [targets[1]])],
    listeners: [{ name: 'web', default: { targetGroups: [{ name: 'a', weight: 3 }, { name: 'b', weight: 1 }] } }]
  })
  const counts: Record<string, number> = { a: 0, b: 0 }
  for (let i = 0; i < 40; i++) {
    const res = await app.inject({ url: '/' })
    counts[String(res.headers['x-group'])]++
    t.notOk([res.headers['set-cookie'] ?? []].flat().some((line) => line.startsWith('AWSALB')), 'no stickiness cookie at all')
  }
  t.same(counts, { a: 30, b: 10 }, 'smooth weighted round robin: exactly 3:1')
})

test('a weight of 0 takes no new clients, while clients it holds stay', async (t) => {
  const targets = await startTargets(t, 2)
  const options = (blue: number, green: number): FastifyStickyOptions => ({
    targetGroups: [group('blue', [targets[0]], {}), group('green', [targets[1]], {})],
    listeners: [{ name: 'web', default: { targetGroups: [{ name: 'blue', weight: blue }, { name: 'green', weight: green }], stickiness: { durationSeconds: 600 } } }]
  })
  // Blue/green cut-over: a second gateway (same keys) with green's weight at 0.
  const before = await gateway(t, options(1, 1))
  const after = await gateway(t, options(1, 0))
  let onGreen = new CookieJar()
  for (let i = 0; i < 4 && (await send(before, onGreen)).headers['x-group'] !== 'green'; i++) onGreen = new CookieJar()
  t.ok(onGreen.cookies.has('AWSALBTG'), 'a client placed on green by the first gateway')
  for (let i = 0; i < 5; i++) t.equal((await after.inject({ url: '/' })).headers['x-group'], 'blue', 'new clients: blue only')
  const res = await send(after, onGreen)
  t.equal(res.headers['x-group'], 'green', 'a client green holds stays there (ALB)')
  t.equal(res.headers['x-rule'], 'default/hit')
})

test('listeners bind prefixes through stickyProxy; one-group routes beside them keep working', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [group('a', [targets[0]]), group('b', [targets[1]])],
    listeners: [{ name: 'web', rules: [{ priority: 1, conditions: { httpHeader: [{ name: 'x-to', values: ['b'] }] }, forward: 'b' }], default: 'a' }]
  })
  exposeRule(app)
  await app.register(stickyProxy, { prefix: '/app', listener: 'web' })
  app.get('/plain', { config: { targetGroup: 'b' } }, (_request, reply) => reply.forward())
  const toA = await app.inject({ url: '/app/page?q=1' })
  t.equal(echoOf(toA).target, 't0')
  t.equal(echoOf(toA).url, '/page?q=1', 'the prefix is removed as for a target group')
  t.equal(toA.headers['x-rule'], 'default/single')
  const toB = await app.inject({ url: '/app/page', headers: { 'x-to': 'b' } })
  t.equal(echoOf(toB).target, 't1')
  t.equal(toB.headers['x-rule'], '1/single')
  const plain = await app.inject({ url: '/plain' })
  t.equal(echoOf(plain).target, 't1')
  t.equal(plain.headers['x-rule'], undefined, 'a route bound to a target group has no rule')
})
