import { once } from 'node:events'
import { connect, type AddressInfo } from 'node:net'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { privateCacheControl } from '../lib/gateway-cookies.js'
import { buildGateway, exposeAffinity, rawTarget, refusedUrl, startServer } from './setup.js'

interface Tap { teardown (fn: () => unknown): void }

/** Longest wait for one answer; every one expected here comes in milliseconds. */
const RESPONSE_DEADLINE_MS = 5000

/** A response's status and header lines, as they went over the wire (names lower-cased). */
interface Wire {
  status: number
  headers: Array<[string, string]>
}

function values (res: Wire, name: string): string[] {
  return res.headers.filter(([key]) => key === name).map(([, value]) => value)
}

/** One request over a raw socket (`Connection: close`), so every response header line is seen as sent. */
async function wire (t: Tap, port: number, path: string, method = 'GET', headers: Record<string, string> = {}): Promise<Wire> {
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  socket.setTimeout(RESPONSE_DEADLINE_MS, () => socket.destroy(new Error(`no complete response to ${method} ${path} within ${RESPONSE_DEADLINE_MS} ms`)))
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('')
  socket.write(`${method} ${path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n${extra}\r\n`)
  await once(socket, 'end')
  const text = Buffer.concat(chunks).toString('latin1')
  const [head] = text.split('\r\n\r\n')
  const [statusLine, ...lines] = head.split('\r\n')
  return {
    status: Number(statusLine.split(' ')[1]),
    headers: lines.map((line): [string, string] => {
      const colon = line.indexOf(':')
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]
    })
  }
}

/**
 * A target that answers with the Cache-Control lines the request's `x-cache-control` lists
 * (JSON; none for `[]`), the CDN-Cache-Control of `x-cdn-cache-control`, and, by `x-mode`, a
 * small sized body (collected by the gateway), a chunked one (streamed) or a 304.
 */
async function cachingTarget (t: Tap): Promise<string> {
  const { url } = await startServer(t, (req, res) => {
    const lines = JSON.parse(String(req.headers['x-cache-control'] ?? '[]')) as string[]
    if (lines.length > 0) res.setHeader('cache-control', lines.length === 1 ? lines[0] : lines)
    const cdn = req.headers['x-cdn-cache-control']
    if (cdn !== undefined) res.setHeader('cdn-cache-control', cdn)
    res.setHeader('x-served', 'yes')
    if (req.headers['x-mode'] === '304') {
      res.statusCode = 304
      res.end()
      return
    }
    res.setHeader('content-type', 'text/plain')
    if (req.headers['x-mode'] === 'streamed') {
      res.write('a')
      res.end('b')
    } else {
      res.setHeader('content-length', 2)
      res.end('ab')
    }
  })
  return url
}

/** `/lb/*` sticky by AWSALB, `/plain/*` not sticky, `/app/*` app-cookie sticky, `/web/*` a weighted forward with group stickiness only. */
async function gateway (t: Tap, url: string): Promise<{ app: FastifyInstance, port: number }> {
  const targets = [{ id: 'c0', url }]
  const app = await buildGateway(t, {
    targetGroups: [
      { name: 'lb', targets },
      { name: 'plain', targets, stickiness: false },
      { name: 'shop', targets, stickiness: { type: 'app_cookie', cookieName: 'sid' } },
      { name: 'blue', targets, stickiness: false },
      { name: 'green', targets, stickiness: false }
    ],
    listeners: [{ name: 'web', default: { targetGroups: [{ name: 'blue', weight: 1 }, { name: 'green', weight: 1 }], stickiness: { durationSeconds: 60 } } }]
  })
  app.all('/lb/*', { config: { targetGroup: 'lb' } }, (_request, reply) => reply.forward())
  app.all('/plain/*', { config: { targetGroup: 'plain' } }, (_request, reply) => reply.forward())
  app.all('/app/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  app.all('/web/*', { config: { listener: 'web' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port }
}

/** The target's Cache-Control lines, and the one line a response carrying a gateway cookie gets. */
const CASES: Array<[string, string[], string[]]> = [
  ['public with max-age', ['public, max-age=600'], ['private, max-age=600']],
  ['none at all', [], ['private']],
  ['no-store', ['no-store'], ['no-store']],
  ['private already', ['private, max-age=60'], ['private, max-age=60']],
  ['the qualified private="set-cookie"', ['private="set-cookie", max-age=60'], ['private, max-age=60']],
  ['no-cache', ['no-cache'], ['private, no-cache']],
  ['upper case, with s-maxage', ['PUBLIC, Max-Age=600, S-MAXAGE=3600'], ['private, Max-Age=600']],
  ['two lines', ['public', 'max-age=600'], ['private, max-age=600']],
  ['a quoted comma', ['no-cache="set-cookie, x-a", public'], ['private, no-cache="set-cookie, x-a"']]
]

test('a response carrying a fresh AWSALB is kept from shared caches (HAProxy nocache): collected, streamed, HEAD and 304', async (t) => {
  const { port } = await gateway(t, await cachingTarget(t))
  for (const mode of ['buffered', 'streamed', 'head', '304']) {
    for (const [label, given, expected] of CASES) {
      const res = await wire(t, port, '/lb/x', mode === 'head' ? 'HEAD' : 'GET', { 'x-mode': mode, 'x-cache-control': JSON.stringify(given) })
      const what = `${mode}, ${label}: ${JSON.stringify(res.headers)}`
      t.equal(res.status, mode === '304' ? 304 : 200, what)
      t.same(values(res, 'set-cookie').map((line) => line.split('=')[0]), ['AWSALB'], what)
      t.same(values(res, 'cache-control'), expected, what)
      t.same(values(res, 'x-served'), ['yes'], what)
    }
  }
})

test('responses that carry no gateway cookie (stickiness: false) keep their Cache-Control as the target sent it', async (t) => {
  const { port } = await gateway(t, await cachingTarget(t))
  for (const mode of ['buffered', 'streamed', 'head', '304']) {
    for (const [label, given] of CASES) {
      const res = await wire(t, port, '/plain/x', mode === 'head' ? 'HEAD' : 'GET', { 'x-mode': mode, 'x-cache-control': JSON.stringify(given), 'x-cdn-cache-control': 'public, max-age=60' })
      const what = `${mode}, ${label}: ${JSON.stringify(res.headers)}`
      t.same(values(res, 'set-cookie'), [], what)
      t.same(values(res, 'cache-control'), given, `line for line: ${what}`)
      t.same(values(res, 'cdn-cache-control'), ['public, max-age=60'], what)
    }
  }
})

test('app-cookie routes (AWSALBAPP-* written on send) and group stickiness (AWSALBTG) are marked the same way', async (t) => {
  const { port } = await gateway(t, await cachingTarget(t))
  for (const [path, names] of [['/app/x', ['AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3']], ['/web/x', ['AWSALBTG']]] as const) {
    for (const mode of ['buffered', 'streamed']) {
      const res = await wire(t, port, path, 'GET', { 'x-mode': mode, 'x-cache-control': JSON.stringify(['public, max-age=600']) })
      const what = `${path} ${mode}: ${JSON.stringify(res.headers)}`
      t.same(values(res, 'set-cookie').map((line) => line.split('=')[0]), names, what)
      t.same(values(res, 'cache-control'), ['private, max-age=600'], what)
    }
  }
})

test('CDN-Cache-Control, which CDNs obey in place of Cache-Control, is marked too when the target sent one', async (t) => {
  const { port } = await gateway(t, await cachingTarget(t))
  const res = await wire(t, port, '/lb/x', 'GET', { 'x-cache-control': JSON.stringify(['no-store']), 'x-cdn-cache-control': 'public, max-age=600' })
  t.same(values(res, 'cache-control'), ['no-store'])
  t.same(values(res, 'cdn-cache-control'), ['private, max-age=600'], JSON.stringify(res.headers))
})

test('a redispatched request is marked for the cookies that pin it to its new target', async (t) => {
  const url = await cachingTarget(t)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'gone', url: await refusedUrl() }, { id: 'c0', url }] }] })
  exposeAffinity(app)
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  const outcomes: string[] = []
  for (let i = 0; i < 4; i++) {
    const res = await wire(t, port, '/x', 'GET', { 'x-cache-control': JSON.stringify(['public, max-age=600']) })
    t.equal(res.status, 200, JSON.stringify(res.headers))
    t.same(values(res, 'set-cookie').map((line) => line.split('=')[0]), ['AWSALB'])
    t.same(values(res, 'cache-control'), ['private, max-age=600'], `request ${i + 1}: ${JSON.stringify(res.headers)}`)
    outcomes.push(values(res, 'x-affinity').join())
  }
  t.ok(outcomes.includes('reassigned;target-unreachable'), `round robin sent one of them to the refused target first: ${outcomes.join(' ')}`)
})

test('a gateway error in place of a response (the target failed after its headers) carries no Cache-Control it added', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nstart', true)
  const app = await buildGateway(t, { redispatch: false, targetGroups: [{ name: 'g', targets: [{ id: 'r0', url }] }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 502, res.body)
  t.equal(res.headers['cache-control'], undefined, JSON.stringify(res.headers))
})

test('privateCacheControl: what shared caches get told', async (t) => {
  const cases: Array<[string | string[] | undefined, string | null]> = [
    [undefined, 'private'],
    ['', 'private'],
    [' , ', 'private'],
    ['public', 'private'],
    ['public, max-age=600', 'private, max-age=600'],
    ['max-age=600, public', 'private, max-age=600'],
    ['s-maxage=60', 'private'],
    ['private', null],
    ['Private, max-age=5', null],
    ['private, public', 'private'],
    ['private, s-maxage=5, max-age=5', 'private, max-age=5'],
    ['private="set-cookie"', 'private'],
    ['private = "a"', 'private'],
    ['no-store', null],
    ['public, NO-STORE', null],
    [['public', 'no-store'], null],
    [['public', 'max-age=1'], 'private, max-age=1'],
    [['', 'max-age=1'], 'private, max-age=1'],
    ['no-cache="a, b", public', 'private, no-cache="a, b"'],
    ['x="a\\", public", max-age=1', 'private, x="a\\", public", max-age=1'],
    ['must-revalidate, proxy-revalidate, immutable', 'private, must-revalidate, proxy-revalidate, immutable'],
    ['max-age=600 ,  stale-while-revalidate=30', 'private, max-age=600, stale-while-revalidate=30']
  ]
  for (const [value, expected] of cases) t.equal(privateCacheControl(value), expected, JSON.stringify(value))
})

test('privateCacheControl on random directive lists: never public or s-maxage, private unless no-store, and stable', async (t) => {
  const pieces = ['public', 'PUBLIC', 'private', 'Private', 'private="set-cookie"', 'private="a, public"', 'no-store', 'no-cache', 'no-cache="x, y"',
    'max-age=600', 's-maxage=60', 'S-MaxAge=1', 'must-revalidate', 'immutable', 'x="public, s-maxage=1"', '']
  let seed = 7
  const random = (n: number): number => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
    return seed % n
  }
  // Directive names of a list, outside quoted strings (the test's own reading).
  const namesOf = (value: string): string[] => value.replace(/"(?:[^"\\]|\\.)*"/g, '""').split(',').map((part) => part.split('=')[0].trim().toLowerCase()).filter((name) => name !== '')
  let failures = 0
  const fail = (message: string): void => { if (failures++ < 5) t.fail(message) }
  for (let i = 0; i < 5000; i++) {
    const lineCount = 1 + random(2)
    const lines: string[] = []
    for (let l = 0; l < lineCount; l++) lines.push(Array.from({ length: random(4) }, () => pieces[random(pieces.length)]).join(random(2) === 0 ? ', ' : ','))
    const given = lineCount === 1 ? lines[0] : lines
    const names = namesOf(lines.join(','))
    const out = privateCacheControl(given)
    if (out === null) {
      const alone = lines.join(',').replace(/"(?:[^"\\]|\\.)*"/g, '""').split(',').some((part) => part.trim().toLowerCase() === 'private')
      if (!names.includes('no-store') && !(alone && !names.includes('public') && !names.includes('s-maxage'))) fail(`${JSON.stringify(given)} left as it is`)
      continue
    }
    const outNames = namesOf(out)
    if (names.includes('no-store')) fail(`${JSON.stringify(given)} has no-store, yet became ${out}`)
    if (outNames[0] !== 'private' || !out.startsWith('private')) fail(`${JSON.stringify(given)} → ${out}: private does not lead`)
    if (outNames.includes('public') || outNames.includes('s-maxage')) fail(`${JSON.stringify(given)} → ${out}`)
    if (outNames.filter((name) => name === 'private').length !== 1) fail(`${JSON.stringify(given)} → ${out}: one private`)
    if (privateCacheControl(out) !== null) fail(`${JSON.stringify(given)} → ${out} is not final`)
    const keptNames = names.filter((name) => name !== 'public' && name !== 's-maxage' && name !== 'private')
    if (JSON.stringify(outNames.slice(1)) !== JSON.stringify(keptNames)) fail(`${JSON.stringify(given)} → ${out}: the others, in order`)
  }
  t.equal(failures, 0, '5000 random lists')
})
