import type { AddressInfo } from 'node:net'
import { test, type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { stickyProxy } from '../lib/index.js'
import { buildGateway, rawRequest, startTargets, type Echo, type RawResponse, type TestTarget } from './setup.js'

// Request targets other than origin-form (RFC 9112 §3.2): absolute-form, asterisk-form and what
// Fastify's router matches though it is neither. Sent on raw sockets, since a client library
// would resolve dot segments or reject the form before the gateway saw it.

interface Gateway {
  app: FastifyInstance
  port: number
  target: TestTarget
}

/** `/cart/*` bound by config.targetGroup, `/api` mounted by stickyProxy, `/fwd` forwarding `?to=`, all to one target. */
async function gateway (t: Test): Promise<Gateway> {
  const [target] = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: target.id, url: target.url }] }] })
  app.get('/cart/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  app.get('/fwd', { config: { targetGroup: 'g' } }, (request, reply) => reply.forward((request.query as { to: string }).to))
  await app.register(stickyProxy, { prefix: '/api', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port, target }
}

function send (port: number, method: string, requestTarget: string): Promise<RawResponse> {
  return rawRequest(port, `${method} ${requestTarget} HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n`)
}

function codeOf (res: RawResponse): string | undefined {
  try {
    return (JSON.parse(res.body) as { code?: string }).code
  } catch {
    return undefined
  }
}

test('an absolute-form request with a dot segment is refused like its origin-form, on config.targetGroup and stickyProxy routes, and the target sees nothing', async (t) => {
  const { port, target } = await gateway(t)
  const sneaky = ['/../admin', '/%2e%2e/admin', '/%2E%2e/admin', '/.%2e/admin', '/..%5cadmin', '/..\\admin', '/..%2fadmin', '/./admin', '/a/../../admin', '/..;x/admin']
  for (const prefix of ['/cart', '/api']) {
    for (const scheme of ['http', 'HTTP', 'https']) {
      for (const path of sneaky) {
        const requestTarget = `${scheme}://gw.example${prefix}${path}`
        const res = await send(port, 'GET', requestTarget)
        t.equal(res.status, 400, `${requestTarget}: 400, got ${res.status} ${res.body}`)
        t.equal(codeOf(res), 'FST_STICKY_REQUEST_INVALID', `${requestTarget}: our code, got ${res.body}`)
      }
    }
    // RFC 9110 §4.2.4: userinfo in an http(s) URI is treated as an error, dots or not.
    for (const requestTarget of [`http://u@gw.example${prefix}/../admin`, `http://u:p@gw.example${prefix}/x`]) {
      const res = await send(port, 'GET', requestTarget)
      t.equal(res.status, 400, `${requestTarget}: 400, got ${res.status} ${res.body}`)
    }
  }
  t.equal(target.hits, 0, `none of them reached the target: ${target.hits}`)
})

test('an absolute-form request reaches the target with its path and query byte for byte', async (t) => {
  const { port, target } = await gateway(t)
  const cases: Array<[string, string]> = [
    ['http://gw.example/cart/x?next=../y', '/cart/x?next=../y'],
    ['HTTP://gw.example/cart/a', '/cart/a'],
    ['https://gw.example:8443/cart/a', '/cart/a'],
    // A URL parser would encode these, or drop the empty query; the target gets what was sent.
    ['http://gw.example/cart/{x}', '/cart/{x}'],
    ["http://gw.example/cart/x?a='b'", "/cart/x?a='b'"],
    ['http://gw.example/cart/x?', '/cart/x?'],
    ['http://gw.example/cart/%2e%2ex', '/cart/%2e%2ex'],
    ['http://gw.example/api/a?b=/../c', '/a?b=/../c']
  ]
  for (const [requestTarget, expected] of cases) {
    const res = await send(port, 'GET', requestTarget)
    t.equal(res.status, 200, `${requestTarget}: 200, got ${res.status} ${res.body}`)
    if (res.status === 200) t.equal((JSON.parse(res.body) as Echo).url, expected, `${requestTarget}: the target saw ${expected}`)
  }
  t.equal(target.hits, cases.length, 'each reached the target once')
})

test('an absolute-form request without a path goes to / on a stickyProxy mounted at the root', async (t) => {
  const [target] = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: target.id, url: target.url }] }] })
  await app.register(stickyProxy, { targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  for (const [requestTarget, expected] of [['http://gw.example', '/'], ['http://gw.example?x=1', '/?x=1'], ['http://gw.example:80', '/']]) {
    const res = await send(port, 'GET', requestTarget)
    t.equal(res.status, 200, `${requestTarget}: 200, got ${res.status} ${res.body}`)
    if (res.status === 200) t.equal((JSON.parse(res.body) as Echo).url, expected, `${requestTarget}: the target saw ${expected}`)
  }
})

test('a request target Fastify routes though it is neither origin-form nor absolute-form is refused, not forwarded as another path', async (t) => {
  const { port, target } = await gateway(t)
  // The router matches `*cart/x` as /cart/x and `ftp://…` as some path: neither is a path to send.
  for (const requestTarget of ['*cart/x', '*cart/../x', '*api/x', 'ftp://gw.example/cart/x', 'ws://gw.example/api/x']) {
    const res = await send(port, 'GET', requestTarget)
    t.ok(res.status === 400 || res.status === 404, `${requestTarget}: 400 or 404, got ${res.status} ${res.body}`)
    if (res.status === 400) t.equal(codeOf(res), 'FST_STICKY_REQUEST_INVALID', `${requestTarget}: our code, got ${res.body}`)
  }
  t.equal(target.hits, 0, `none of them reached the target: ${target.hits}`)
})

test('a path given to reply.forward() is sent as given when it is origin-form or absolute-form, refused otherwise', async (t) => {
  const { app, target } = await gateway(t)
  const sent: Array<[string, string]> = [
    ['/a?b=../c', '/a?b=../c'],
    ['//other.example/x', '//other.example/x'],
    ['http://other.example/a?b=1', '/a?b=1'],
    ['HTTPS://other.example', '/'],
    ['http://other.example?q=1', '/?q=1']
  ]
  for (const [to, expected] of sent) {
    const res = await app.inject({ url: '/fwd', query: { to } })
    t.equal(res.statusCode, 200, `reply.forward(${JSON.stringify(to)}): 200, got ${res.statusCode} ${res.body}`)
    if (res.statusCode === 200) t.equal((JSON.parse(res.body) as Echo).url, expected, `reply.forward(${JSON.stringify(to)}): the target saw ${expected}`)
  }
  const hits = target.hits
  const refused = ['http://other.example/a/../b', 'http://other.example/%2e%2e/b', 'a/../b', 'a/b', '*', '', '?q=1', 'ftp://other.example/a', 'http:///a', 'http://u@other.example/a', 'http://other.example/a#b']
  for (const to of refused) {
    const res = await app.inject({ url: '/fwd', query: { to } })
    t.equal(res.statusCode, 400, `reply.forward(${JSON.stringify(to)}): 400, got ${res.statusCode} ${res.body}`)
    t.equal(res.json().code, 'FST_STICKY_REQUEST_INVALID', `reply.forward(${JSON.stringify(to)}): our code`)
  }
  t.equal(target.hits, hits, `none of the refused paths reached the target: ${target.hits - hits}`)
})

test('OPTIONS * is answered by the gateway with Allow, never forwarded as a path; another method with * is refused', async (t) => {
  const [target] = await startTargets(t, 1)
  for (const mount of ['stickyProxy', 'route'] as const) {
    const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: target.id, url: target.url }] }] })
    if (mount === 'stickyProxy') await app.register(stickyProxy, { targetGroup: 'g' })
    else app.route({ method: ['GET', 'OPTIONS', 'POST'], url: '/', config: { targetGroup: 'g' }, handler: (_request, reply) => reply.forward() })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as AddressInfo).port
    const hits = target.hits
    const options = await send(port, 'OPTIONS', '*')
    t.equal(options.status, 200, `${mount}: OPTIONS * → 200, got ${options.status} ${options.body}`)
    const allow = String(options.headers.allow ?? '').split(/,\s*/)
    t.ok(allow.includes('GET') && allow.includes('OPTIONS') && allow.includes('POST'), `${mount}: Allow lists the route's methods: ${String(options.headers.allow)}`)
    t.equal(options.headers['content-length'], '0', `${mount}: no content (RFC 9110 §9.3.7)`)
    t.equal(options.headers['set-cookie'], undefined, `${mount}: no stickiness cookie for a request no target serves`)
    for (const method of ['GET', 'POST']) {
      const res = await send(port, method, '*')
      t.equal(res.status, 400, `${mount}: ${method} * → 400, got ${res.status} ${res.body}`)
      t.equal(codeOf(res), 'FST_STICKY_REQUEST_INVALID', `${mount}: ${method} *: our code, got ${res.body}`)
    }
    t.equal(target.hits, hits, `${mount}: the target saw none of them: ${target.hits - hits}`)
    const plain = await send(port, 'OPTIONS', '/')
    t.equal(plain.status, 200, `${mount}: OPTIONS / is forwarded as ever: ${plain.status}`)
    t.equal(target.hits, hits + 1, `${mount}: OPTIONS / reached the target`)
    await app.close()
  }
})

test('a raw backslash in the path is refused in every form: a lenient target would read it as /, past the route that matched', async (t) => {
  const { port, target } = await gateway(t)
  for (const requestTarget of ['/cart/admin\\secret', 'http://gw.example/cart/admin\\secret', '/api/x\\', 'http://gw.example/api/\\\\', '/fwd?to=/admin%5C%5Cx']) {
    const res = await send(port, 'GET', requestTarget)
    const decoded = requestTarget.startsWith('/fwd') ? decodeURIComponent(requestTarget.slice(8)) : requestTarget
    t.equal(res.status, 400, `${decoded}: 400, got ${res.status} ${res.body}`)
    t.equal(codeOf(res), 'FST_STICKY_REQUEST_INVALID', `${decoded}: our code`)
  }
  t.equal(target.hits, 0, `none of them reached the target: ${target.hits}`)
  // Encoded, it is data: `%5c` in a path goes on (only as part of a dot segment is it refused), and `\` in a query too.
  for (const requestTarget of ['/cart/a%5cb', '/cart/x?path=a\\b']) {
    const res = await send(port, 'GET', requestTarget)
    t.equal(res.status, 200, `${requestTarget}: forwarded, got ${res.status} ${res.body}`)
  }
  t.equal(target.hits, 2, 'those two reached the target')
})
