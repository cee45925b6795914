import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { stickyProxy } from '../lib/index.js'
import httpProxy from '../lib/http-proxy.js'
import type { AddressInfo } from 'node:net'
import { buildGateway, echoOf, rawRequest, startServer, startTargets, type TestTarget } from './setup.js'

/** A gateway with one group `g` of the given targets, stickiness off, and stickyProxy registered with `options`. */
async function gateway (t: Parameters<typeof buildGateway>[0], targets: TestTarget[], options: Record<string, unknown>): Promise<FastifyInstance> {
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), stickiness: false }] })
  await app.register(stickyProxy, { targetGroup: 'g', ...options })
  return app
}

test('unknown options and those that cannot carry over are refused at registration, saying what to use instead', async (t) => {
  const targets = await startTargets(t, 1)
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ prefix: '/a', rewritePrefx: '/b' }, /stickyProxy rewritePrefx is not an option \(known: prefix, /],
    [{ prefix: '/a', replyOptions: { getUpstream: () => 'http://127.0.0.1:1' } }, /stickyProxy replyOptions\.getUpstream is not supported: the request goes to its affinity's target/],
    [{ prefix: '/a', wsHooks: {} }, /stickyProxy wsHooks is not supported: the gateway tunnels WebSocket bytes/],
    [{ prefix: '/a', wsReconnect: {} }, /stickyProxy wsReconnect is not supported: .*1001/],
    [{ prefix: '/a', wsUpstream: 'ws://127.0.0.1:1' }, /stickyProxy wsUpstream is not supported unless it names the origin of upstream/],
    [{ prefix: '/a', replyOptions: { retriesCount: 2 } }, /redispatch and redispatchIdempotent/],
    [{ prefix: '/a', undici: { connections: 5 } }, /stickyProxy undici must be a boolean/],
    [{ prefix: '/a', httpMethods: [] }, /stickyProxy httpMethods must be an array of HTTP method names/],
    [{ prefix: '/a', upstream: 'ftp://127.0.0.1:1' }, /stickyProxy upstream must be an http:, https:, ws: or wss: URL/]
  ]
  for (const [options, message] of cases) {
    const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: targets[0].id, url: targets[0].url }] }] })
    app.register(stickyProxy, { targetGroup: 'g', ...options })
    await t.rejects(async () => await app.ready(), message, JSON.stringify(Object.keys(options)))
  }
})

test('upstream mounts one target with stickiness off, and is refused where the plugin is registered', async (t) => {
  const targets = await startTargets(t, 1)
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(stickyProxy, { prefix: '/api', upstream: `${targets[0].url}/v1` })
  const res = await app.inject({ url: '/api/items?x=1' })
  t.equal(res.statusCode, 200)
  t.equal(echoOf(res).url, '/v1/items?x=1', "the upstream's path replaces the prefix")
  t.equal(res.headers['set-cookie'], undefined, 'no stickiness, no cookie')

  // wsUpstream naming the upstream's own origin is the same target: taken; any other is refused (above).
  const same = Fastify()
  t.teardown(() => same.close())
  await same.register(stickyProxy, { prefix: '/ws', upstream: targets[0].url, wsUpstream: targets[0].url.replace('http:', 'ws:') })
  t.equal((await same.inject({ url: '/ws/x' })).statusCode, 200)

  const sticky = await gateway(t, targets, { prefix: '/a' })
  sticky.register(stickyProxy, { prefix: '/b', upstream: targets[0].url })
  await t.rejects(async () => await sticky.ready(), /stickyProxy upstream must be used where the fastify-sticky plugin is not registered yet/)
})

test('methods, routes, config and hooks are those given; the plugin\'s own config keys stay out of sight', async (t) => {
  const targets = await startTargets(t, 1)
  let seenConfig: unknown = null
  const app = await gateway(t, targets, {
    prefix: '/p',
    httpMethods: ['GET'],
    routes: ['/only/*'],
    config: { mine: 1 },
    preHandler: async (request: { routeOptions: { config: unknown } }) => { seenConfig = request.routeOptions.config }
  })
  t.equal((await app.inject({ url: '/p/only/x' })).statusCode, 200)
  t.same(seenConfig, { mine: 1, url: '/p/only/*', method: ['GET'] })
  t.equal((await app.inject({ method: 'POST', url: '/p/only/x', payload: 'a' })).statusCode, 404, 'a method not given is not mounted')
  t.equal((await app.inject({ url: '/p/other' })).statusCode, 404, 'a route not given is not mounted')
})

test('replyOptions: request and response header rewriting, queryString, onResponse; Location gets the prefix back', async (t) => {
  const { url } = await startServer(t, (req, res) => {
    res.setHeader('location', '/v1/next')
    res.setHeader('content-type', 'text/plain')
    res.end(`${req.url ?? ''} ${String(req.headers['x-added'])}`)
  })
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(stickyProxy, {
    prefix: '/api',
    upstream: `${url}/v1`,
    replyOptions: {
      rewriteRequestHeaders: (_request, headers) => ({ ...headers, 'x-added': 'yes', connection: 'close, x-added' }),
      rewriteHeaders: (headers) => ({ ...headers, 'x-rewritten': '1' }),
      // As @fastify/reply-from's: `search` is the request's query with its `?`, the result without.
      queryString: (search) => search.slice(1).replace('a=1', 'a=2'),
      onResponse: (_request, reply, response) => { reply.send(response.stream) }
    }
  })
  const res = await app.inject({ url: '/api/x?a=1' })
  t.equal(res.statusCode, 200)
  t.equal(res.body, '/v1/x?a=2 yes', 'the header added reaches the target, the Connection header it tried does not drop it')
  t.equal(res.headers['x-rewritten'], '1')
  t.equal(res.headers.location, '/api/next', 'a relative Location: rewritePrefix becomes the prefix again')
})

test('replyOptions.onError takes over a gateway error; http.requestOptions.timeout sets the response deadline', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await gateway(t, targets, {
    prefix: '/p',
    http: { requestOptions: { timeout: 200 } },
    replyOptions: { onError: (reply: { code: (n: number) => { send: (b: unknown) => void } }, { error }: { error: { code?: string } }) => reply.code(599).send({ mine: error.code }) }
  })
  const res = await app.inject({ url: '/p/hang' })
  t.equal(res.statusCode, 599)
  t.same(res.json(), { mine: 'FST_STICKY_TARGET_TIMEOUT' })
})

test('paths that leave the origin or climb out of rewritePrefix are refused; parameters carry into rewritePrefix', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await gateway(t, targets, { prefix: '/api/:tenant', rewritePrefix: '/v2/:tenant' })
  await app.register(stickyProxy, { targetGroup: 'g', prefix: '/pub', rewritePrefix: '' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  const res = await rawRequest(port, 'GET /api/acme/orders?x=1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n')
  t.equal(echoOf(res).url, '/v2/acme/orders?x=1')
  // Raw requests: a client library would resolve the dot segments itself.
  for (const path of ['/pub//evil.example/x', '/api/acme/%2e%2e/secret', '/api/acme/..%5Csecret']) {
    const refused = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n`)
    t.equal(refused.status, 400, path)
  }
  t.equal(targets[0].hits, 1, 'the refused paths reached no target')
})

test('fastify-sticky/http-proxy keeps @fastify/http-proxy\'s defaults and its reply.from()', async (t) => {
  const targets = await startTargets(t, 1)
  const app = Fastify()
  t.teardown(() => app.close())
  app.register(httpProxy, {
    upstream: targets[0].url,
    prefix: '/p',
    preHandler: (request, reply, done) => {
      if (request.url.startsWith('/p/fake')) reply.from?.('/real')
      else done()
    }
  })
  await app.ready()
  t.equal(echoOf(await app.inject({ url: '/p/fake?q=1' })).url, '/real?q=1', 'reply.from() keeps the request query')
  t.equal((await app.inject({ method: 'PROPFIND', url: '/p/x' })).statusCode, 404, "only @fastify/http-proxy's methods are mounted")
  const noUpstream = Fastify()
  noUpstream.register(httpProxy, {})
  await t.rejects(async () => await noUpstream.ready(), /upstream must be specified/)
})
