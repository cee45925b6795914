import { test } from 'tap'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import fastifySticky, { type FastifyStickyOptions } from '../lib/index.js'
import { GatewayCookieNames } from '../lib/gateway-cookies.js'
import { CookieJar, echoOf, exposeAffinity, rawTarget, startServer, TEST_KEY, type Echo } from './setup.js'

interface Tap { teardown (fn: () => unknown): void }

/** Every name the gateway writes (no prefix), each forged by the target below. */
const GATEWAY_NAMES = ['AWSALB', 'AWSALBCORS', 'AWSALBTG', 'AWSALBTGCORS', 'AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3']

/** Lines of other cookies, which pass in their order: names that only look like the gateway's. */
const OTHER_LINES = [
  'app=1; Path=/',
  'AWSALBX=1; Path=/', // only starts like ours
  'awsalb=2; Path=/', // another cookie for a browser: names are case-sensitive
  'theme=AWSALB; Path=/', // ours only in the value
  'AWSALB; Path=/', // no `=`: a cookie with an empty name for a browser
  'other=3'
]

/**
 * A target that answers like the echo targets, and sets the cookies the request's
 * `x-set-cookie` header lists (JSON), mixed with `OTHER_LINES` on `/mixed`.
 */
async function forgingTarget (t: Tap, id: string): Promise<{ id: string, url: string }> {
  const { url } = await startServer(t, (req, res) => {
    const forged = JSON.parse(String(req.headers['x-set-cookie'] ?? '[]')) as string[]
    const lines = req.url === '/mixed' ? [OTHER_LINES[0], ...forged.slice(0, 2), ...OTHER_LINES.slice(1), ...forged.slice(2)] : forged
    if (lines.length > 0) res.setHeader('set-cookie', lines)
    const echo: Echo = { target: id, method: req.method ?? '', url: req.url ?? '/', headers: req.headers, body: '' }
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(echo))
  })
  return { id, url }
}

/** A gateway keeping its warnings (parsed) and raw log lines. */
async function loggedGateway (t: Tap, options: FastifyStickyOptions): Promise<{ app: FastifyInstance, logs: string[], warnings: Array<Record<string, unknown>> }> {
  const logs: string[] = []
  const warnings: Array<Record<string, unknown>> = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { logs.push(line); warnings.push(JSON.parse(line)) } } } })
  t.teardown(() => app.close())
  // The CORS twins on every response, as over HTTPS: every name of the gateway is written here.
  await app.register(fastifySticky, { keys: [TEST_KEY], corsCookies: 'always', ...options })
  exposeAffinity(app)
  return { app, logs, warnings }
}

function setCookies (res: LightMyRequestResponse): string[] {
  const lines = res.headers['set-cookie']
  return lines === undefined ? [] : Array.isArray(lines) ? lines : [lines]
}

function forge (names: readonly string[]): string[] {
  return names.map((name) => `${name}=forged; Path=/`)
}

function droppedWarnings (warnings: Array<Record<string, unknown>>): Array<Record<string, unknown>> {
  return warnings.filter((line) => String(line.msg).includes("named as one of the gateway's own"))
}

test("a target's Set-Cookie of a gateway name is dropped, so the browser keeps the gateway's value; other cookies pass in order", async (t) => {
  const targets = [await forgingTarget(t, 'f0'), await forgingTarget(t, 'f1')]
  const { app, logs, warnings } = await loggedGateway(t, { targetGroups: [{ name: 'g', targets }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const forged = JSON.stringify([...forge(GATEWAY_NAMES), 'AWSALB =forged; Path=/', ' AWSALBCORS=forged'])

  const jar = new CookieJar()
  const first = await app.inject({ url: '/mixed', headers: { 'x-set-cookie': forged } })
  jar.store(first.headers['set-cookie'])
  const lines = setCookies(first)
  t.same(lines.map((line) => line.split('=')[0]), ['AWSALB', 'AWSALBCORS'].concat(OTHER_LINES.map((line) => line.split('=')[0])), `the gateway's two lines, then every other line in order: ${JSON.stringify(lines)}`)
  t.same(lines.slice(2), OTHER_LINES, 'other lines pass untouched')
  t.notMatch(lines.join('\n'), /forged/, 'no forged value reaches the client')
  t.equal(first.headers['x-affinity'], 'new')
  const target = echoOf(first).target
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ url: '/mixed', headers: { ...jar.headers(), 'x-set-cookie': forged } })
    jar.store(res.headers['set-cookie'])
    t.equal(res.headers['x-affinity'], 'hit', `request ${i + 2}: the client's AWSALB is the gateway's (jar: ${jar.cookies.get('AWSALB')?.slice(0, 12)}…)`)
    t.equal(echoOf(res).target, target, `request ${i + 2} stays on ${target}`)
  }

  const dropped = droppedWarnings(warnings)
  t.same([...new Set(dropped.map((line) => line.cookie))].sort(), [...GATEWAY_NAMES].sort(), 'a warning names each cookie dropped')
  for (const line of dropped) {
    t.equal(line.targetGroup, 'g')
    t.equal(line.target, target, 'it names the target')
  }
  const port = new URL(targets[0].url).port
  t.notOk(logs.some((line) => line.includes('forged') || line.includes(`:${port}`) || line.includes('127.0.0.1')), `no value, no address in the logs: ${logs.join('')}`)
})

test('the warning is rate-limited: one line per target, cookie name and second', async (t) => {
  const targets = [await forgingTarget(t, 'f0')]
  const { app, warnings } = await loggedGateway(t, { targetGroups: [{ name: 'g', targets }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const forged = JSON.stringify(forge(['AWSALB']))
  const started = Date.now()
  const responses = await Promise.all(Array.from({ length: 20 }, () => app.inject({ url: '/', headers: { 'x-set-cookie': forged } })))
  const elapsedMs = Date.now() - started
  for (const res of responses) t.same(setCookies(res).map((line) => line.split('=')[0]), ['AWSALB', 'AWSALBCORS'], 'every response drops it')
  const lines = droppedWarnings(warnings).length
  t.ok(lines >= 1 && lines <= 1 + Math.ceil(elapsedMs / 1000), `20 responses in ${elapsedMs} ms logged ${lines} line(s)`)
})

test('with a cookie prefix only the prefixed names are the gateway’s: an unprefixed AWSALB (another layer’s) passes', async (t) => {
  const targets = [await forgingTarget(t, 'f0')]
  const { app } = await loggedGateway(t, { cookiePrefix: 'IN-', targetGroups: [{ name: 'g', targets }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const res = await app.inject({ url: '/', headers: { 'x-set-cookie': JSON.stringify(['AWSALB=outer; Path=/', ...forge(['IN-AWSALB', 'IN-AWSALBTGCORS', 'IN-AWSALBAPP-3']), 'IN-AWSALBAPP-4=x']) } })
  t.same(setCookies(res).map((line) => line.split(';')[0].split('=')[0]), ['IN-AWSALB', 'IN-AWSALBCORS', 'AWSALB', 'IN-AWSALBAPP-4'], `got ${JSON.stringify(setCookies(res))}`)
  t.ok(setCookies(res).includes('AWSALB=outer; Path=/'), 'the other layer’s cookie is untouched')
})

test('the names are reserved on every bound route, sticky or not', async (t) => {
  const targets = [await forgingTarget(t, 'f0')]
  const { app, warnings } = await loggedGateway(t, { targetGroups: [{ name: 'g', targets, stickiness: false }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const res = await app.inject({ url: '/', headers: { 'x-set-cookie': JSON.stringify(['app=1', ...forge(['AWSALB', 'AWSALBCORS'])]) } })
  t.same(setCookies(res), ['app=1'], 'only the app’s own cookie')
  t.equal(droppedWarnings(warnings).length, 2)
  const none = await app.inject({ url: '/' })
  t.same(setCookies(none), [], 'a response without cookies stays without')
})

test('app-cookie routes: the target’s AWSALBAPP-* and AWSALB go, the app cookie is still followed, each shard written once', async (t) => {
  const targets = [await forgingTarget(t, 'f0'), await forgingTarget(t, 'f1')]
  const { app } = await loggedGateway(t, { targetGroups: [{ name: 'shop', targets, stickiness: { type: 'app_cookie', cookieName: 'sid' } }] })
  app.all('/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  const jar = new CookieJar()
  const login = await app.inject({ url: '/', headers: { 'x-set-cookie': JSON.stringify(['sid=s1; Path=/', ...forge(['AWSALBAPP-0', 'AWSALBAPP-2', 'AWSALB'])]) } })
  jar.store(login.headers['set-cookie'])
  const lines = setCookies(login)
  t.same(lines.map((line) => line.split('=')[0]), ['sid', 'AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3'], `the app cookie, then the gateway's four shards once each: ${JSON.stringify(lines)}`)
  t.notMatch(lines.join('\n'), /forged/)
  t.notMatch(lines[1], /_remove_/, 'the app cookie was seen: shard 0 carries a binding')
  const target = echoOf(login).target
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ url: '/', headers: { ...jar.headers(), 'x-set-cookie': JSON.stringify(forge(['AWSALBAPP-1'])) } })
    jar.store(res.headers['set-cookie'])
    t.equal(res.headers['x-affinity'], 'hit', `request ${i + 2} is bound`)
    t.equal(echoOf(res).target, target)
  }
})

test('group stickiness of a weighted forward: a target’s AWSALBTG does not move the client', async (t) => {
  const targets = [await forgingTarget(t, 'f0'), await forgingTarget(t, 'f1')]
  const { app } = await loggedGateway(t, {
    targetGroups: [{ name: 'blue', targets: [targets[0]], stickiness: false }, { name: 'green', targets: [targets[1]], stickiness: false }],
    listeners: [{ name: 'web', default: { targetGroups: [{ name: 'blue', weight: 1 }, { name: 'green', weight: 1 }], stickiness: { durationSeconds: 60 } } }]
  })
  app.all('/*', { config: { listener: 'web' } }, (_request, reply) => reply.forward())
  const forged = JSON.stringify(forge(['AWSALBTG', 'AWSALBTGCORS']))
  const jar = new CookieJar()
  const first = await app.inject({ url: '/', headers: { 'x-set-cookie': forged } })
  jar.store(first.headers['set-cookie'])
  t.same(setCookies(first).map((line) => line.split('=')[0]), ['AWSALBTG', 'AWSALBTGCORS'])
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: '/', headers: { ...jar.headers(), 'x-set-cookie': forged } })
    jar.store(res.headers['set-cookie'])
    t.equal(echoOf(res).target, echoOf(first).target, `request ${i + 2} stays in its group`)
  }
})

test('a target failing after its headers: the 502 carries the gateway’s own cookies only', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\nset-cookie: AWSALB=forged\r\nset-cookie: app=1\r\ncache-control: public, max-age=600\r\n\r\nstart', true)
  const { app } = await loggedGateway(t, { redispatch: false, targetGroups: [{ name: 'g', targets: [{ id: 'r0', url }] }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 502, res.body)
  t.same(setCookies(res).map((line) => line.split('=')[0]), ['AWSALB', 'AWSALBCORS'], JSON.stringify(setCookies(res)))
  t.notMatch(setCookies(res).join('\n'), /forged/)
  t.equal(res.headers['cache-control'], undefined, 'no Cache-Control of the target’s, nor one the gateway added for it')
})

test('GatewayCookieNames reads a Set-Cookie line’s name as a browser does', async (t) => {
  const names = new GatewayCookieNames('')
  const cases: Array<[string, string | null]> = [
    ['AWSALB=x', 'AWSALB'],
    ['AWSALBCORS=x; Path=/; SameSite=None; Secure', 'AWSALBCORS'],
    ['AWSALBTG=', 'AWSALBTG'],
    ['AWSALBTGCORS=x', 'AWSALBTGCORS'],
    ['AWSALBAPP-0=x', 'AWSALBAPP-0'],
    ['AWSALBAPP-3=_remove_', 'AWSALBAPP-3'],
    [' \tAWSALB \t=x', 'AWSALB'],
    ['AWSALBAPP-4=x', null],
    ['AWSALBAPP-=x', null],
    ['AWSALBX=x', null],
    ['XAWSALB=x', null],
    ['awsalb=x', null],
    ['AwsAlb=x', null],
    ['\u00a0AWSALB=x', null],
    ['AWSALB', null],
    ['AWSALB; x=y', null],
    ['a=AWSALB=x', null],
    ['=AWSALB', null],
    ['', null]
  ]
  for (const [line, name] of cases) t.equal(names.nameIn(line), name, JSON.stringify(line))
  const prefixed = new GatewayCookieNames('IN-')
  t.equal(prefixed.nameIn('IN-AWSALBTGCORS=x'), 'IN-AWSALBTGCORS')
  t.equal(prefixed.nameIn('AWSALB=x'), null, 'unprefixed: not this gateway’s')
  t.equal(prefixed.nameIn('X-IN-AWSALB=x'), null)

  t.equal(names.drop(['a=1', 'b=2']), null, 'nothing to drop: null')
  t.same(names.drop(['a=1', 'AWSALB=x', 'b=2', 'AWSALBAPP-1=y', 'c=3']), { kept: ['a=1', 'b=2', 'c=3'], dropped: ['AWSALB', 'AWSALBAPP-1'] })
  t.same(names.drop(['AWSALB=x']), { kept: [], dropped: ['AWSALB'] })
  t.ok(names.anyIn(['a=1', 'AWSALBTG=x']))
  t.ok(names.anyIn('AWSALB=x'))
  t.notOk(names.anyIn(undefined))
  t.notOk(names.anyIn(['a=1']))
})

test('GatewayCookieNames: random lines are dropped exactly when a browser would store them under a gateway name', async (t) => {
  const names = new GatewayCookieNames('P_')
  const pieces = ['P_AWSALB', 'P_AWSALBCORS', 'P_AWSALBTG', 'P_AWSALBTGCORS', 'P_AWSALBAPP-0', 'P_AWSALBAPP-3', 'P_AWSALBAPP-9', 'AWSALB', 'p_awsalb', 'x', ' ', '\t', '=', ';', 'v', '"', ',']
  // A browser's reading (RFC 6265bis §5.6), written independently of the code under test.
  const browserName = (line: string): string | null => {
    const pair = line.split(';')[0]
    const at = pair.indexOf('=')
    return at === -1 ? '' : pair.slice(0, at).replace(/^[ \t]+|[ \t]+$/g, '')
  }
  let seed = 13
  const random = (n: number): number => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
    return seed % n
  }
  let failures = 0
  for (let i = 0; i < 5000; i++) {
    let line = ''
    const count = 1 + random(6)
    for (let j = 0; j < count; j++) line += pieces[random(pieces.length)]
    const expected = names.names.has(browserName(line) ?? '') ? browserName(line) : null
    if (names.nameIn(line) !== expected && failures++ < 5) t.fail(`${JSON.stringify(line)}: got ${names.nameIn(line)}, a browser reads ${browserName(line)}`)
  }
  t.equal(failures, 0, '5000 random lines')
})
