import { once } from 'node:events'
import { connect, type AddressInfo } from 'node:net'
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifySticky, { stickyProxy } from '../lib/index.js'
import { buildGateway, CookieJar, echoOf, rawTarget, refusedUrl, startTargets, TEST_KEY, waitFor } from './setup.js'

interface Tap { teardown (fn: () => unknown): void }

/** A gateway that keeps every log line, to check none shows an address or a cookie. */
async function loggedGateway (t: Tap, urls: string[], options: { redispatch?: boolean, redispatchIdempotent?: boolean } = {}): Promise<{ app: FastifyInstance, logs: string[] }> {
  const logs: string[] = []
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } } })
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], ...options, targetGroups: [{ name: 'g', targets: urls.map((url, i) => ({ id: `r${i}`, url })) }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  return { app, logs }
}

test('a status code Fastify cannot send (600) is a 502, and the gateway lives on', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 600 Weird\r\ncontent-length: 2\r\n\r\nok')
  const { app } = await loggedGateway(t, [url])
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'FST_STICKY_TARGET_RESPONSE_INVALID')
  const again = await app.inject({ url: '/' })
  t.equal(again.statusCode, 502, 'and again: nothing crashed')
})

test('a target that closes after its headers, before any body byte: 502 with a clean JSON body', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-encoding: gzip\r\nx-internal: secret\r\nset-cookie: app=1\r\n\r\n', true)
  const { app, logs } = await loggedGateway(t, [url], { redispatch: false })
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 502, `status ${res.statusCode}: ${res.body}`)
  t.equal(res.json().code, 'FST_STICKY_TARGET_CONNECTION_FAILED')
  t.notOk(res.headers['content-encoding'] ?? res.headers['x-internal'], `no target header left: ${JSON.stringify(res.headers)}`)
  const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? [])
  t.same(cookies.map((line) => line.split('=')[0]), ['AWSALB'], `only the gateway’s own cookie (no CORS twin over plain HTTP): ${JSON.stringify(cookies)}`)
  const port = new URL(url).port
  t.notOk(logs.some((line) => line.includes(`:${port}`) || line.includes('127.0.0.1:')), `no log line shows the target's address: ${logs.filter((line) => line.includes(port)).join('\n')}`)
})

test('a target that closes in the middle of its body: the client’s connection is closed too', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial', true)
  const { app, logs } = await loggedGateway(t, [url], { redispatch: false })
  await t.rejects(app.inject({ url: '/' }), /destroyed/, 'no complete response: the client sees the connection end')
  await waitFor(() => logs.some((line) => line.includes('fastify-sticky: target request failed')), 2000, 'the failure to be logged')
  t.notOk(logs.some((line) => line.includes('127.0.0.1:')), 'no log line shows the target’s address')
})

test('a small typed response cut off in its body: collected, so a clean 502 without any of the target’s headers', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\nx-internal: secret\r\nset-cookie: app=1\r\n\r\npartial', true)
  const { app, logs } = await loggedGateway(t, [url], { redispatch: false })
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 502, `status ${res.statusCode}: ${res.body}`)
  t.equal(res.json().code, 'FST_STICKY_TARGET_CONNECTION_FAILED')
  t.notOk(res.headers['x-internal'], `no target header left: ${JSON.stringify(res.headers)}`)
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8', 'the error’s own content-type')
  const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? [])
  t.same(cookies.map((line) => line.split('=')[0]), ['AWSALB'], `only the gateway’s own cookie (no CORS twin over plain HTTP): ${JSON.stringify(cookies)}`)
  t.notOk(res.body.includes('partial'), 'nothing of the partial body')
  t.notOk(logs.some((line) => line.includes('127.0.0.1:')), 'no log line shows the target’s address')
})

test('a small typed response that stalls in its body: a clean 504 after the idle timeout', async (t) => {
  const stalling = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\nx-internal: secret\r\n\r\nstart')
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], idleTimeoutMs: 200, targetGroups: [{ name: 'g', targets: [{ id: 'slow', url: stalling }] }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 504, `status ${res.statusCode}: ${res.body}`)
  t.equal(res.json().code, 'FST_STICKY_TARGET_TIMEOUT')
  t.notOk(res.headers['x-internal'], 'none of the target’s headers')
})

test('no log line or error body shows a target address or a cookie value, whatever fails', async (t) => {
  const targets = await startTargets(t, 1)
  const garbage = await rawTarget(t, 'garbage\r\n\r\n')
  const closing = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n', true)
  const refused = await refusedUrl()
  const urls = [targets[0].url, garbage, closing, refused]
  const { app, logs } = await loggedGateway(t, urls, { redispatch: false })
  const issued: string[] = []
  const errors: string[] = []
  for (let i = 0; i < 8; i++) {
    const res = await app.inject({ url: '/', headers: { cookie: 'AWSALB=forged-value-123' } })
    const jar = new CookieJar()
    jar.store(res.headers['set-cookie'])
    issued.push(jar.cookies.get('AWSALB') ?? '')
    if (res.statusCode >= 500) errors.push(res.body)
  }
  t.equal(errors.length, 6, `round robin reached each failing target twice: ${errors.length} errors`)
  t.same([...new Set(errors.map((body) => JSON.parse(body).code))].sort(), ['FST_STICKY_TARGET_CONNECTION_FAILED', 'FST_STICKY_TARGET_RESPONSE_INVALID'])
  // (Fastify's own request log shows the client's address, 127.0.0.1 here, without a port.)
  const secrets = [...urls, ...urls.map((url) => `:${new URL(url).port}`), 'forged-value-123', ...issued]
  for (const secret of secrets) {
    t.notOk(logs.some((line) => line.includes(secret)), `no log line contains ${secret}`)
    t.notOk(errors.some((body) => body.includes(secret)), `no error body contains ${secret}`)
  }
  const failures = logs.filter((line) => line.includes('fastify-sticky: target request failed'))
  t.equal(failures.length, 3, `each failing target's failure is logged once a second, not once a request: ${failures.length} lines`)
})

test('the outstanding count returns to 0 when an onSend hook replaces the target’s body', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', algorithm: 'least_outstanding_requests', targets: [{ id: 'a', url: targets[0].url }] }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  app.addHook('onSend', async () => 'replaced')
  for (let i = 0; i < 10; i++) t.equal((await app.inject({ url: '/' })).body, 'replaced')
  const target = app.targetGroups.get('g')!.get('a')!
  await waitFor(() => target.outstanding === 0, 2000, `outstanding to drop to 0 (it is ${target.outstanding})`)
  t.equal(target.outstanding, 0)
})

test('a target deregistered between the decision and forward(): the request goes elsewhere, re-pinned', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), drainingKeepsSessions: false }] })
  app.get('/*', { config: { targetGroup: 'g' } }, async (request, reply) => {
    if (request.affinity?.target !== null && request.affinity?.target.id === 't0') await app.targetGroups.get('g')!.deregister('t0')
    return reply.forward()
  })
  app.addHook('onSend', async (request, reply) => {
    const affinity = request.affinity
    if (affinity?.outcome === 'reassigned') reply.header('x-reason', affinity.reason)
  })
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 200, res.body)
  t.equal(echoOf(res).target, 't1', 'answered by the remaining target')
  t.equal(res.headers['x-reason'], 'target-deregistered')
  const jar = new CookieJar()
  jar.store(res.headers['set-cookie'])
  t.same(([] as string[]).concat(res.headers['set-cookie'] ?? []).map((line) => line.split('=')[0]), ['AWSALB'], 'one AWSALB (no CORS twin over plain HTTP), for the new target')
  const next = await app.inject({ url: '/', headers: jar.headers() })
  t.equal(echoOf(next).target, 't1', 'and the client stays there')
})

/** Sends one request with `path` exactly as written (inject would resolve dot segments first). */
async function rawStatus (port: number, path: string): Promise<number> {
  const socket = connect(port, '127.0.0.1')
  socket.write(`GET ${path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n`)
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  await once(socket, 'close')
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString())?.[1] ?? 0)
}

test('a path with dot segments is refused, so a route cannot reach outside itself on the target', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }] })
  app.get('/cart/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.register(stickyProxy, { prefix: '/api', targetGroup: 'g', rewritePrefix: '/public' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  const sneaky = ['/../admin', '/%2e%2e/admin', '/%2E%2E/admin', '/..%5cadmin', '/..%2fadmin', '/a/../../admin', '/..\\admin', '/..;/admin', '/./admin', '/x%2f..%2fadmin']
  for (const prefix of ['/cart', '/api']) {
    for (const path of sneaky) t.equal(await rawStatus(port, prefix + path), 400, `${prefix}${path}: 400`)
  }
  t.equal(targets[0].hits, 0, 'none of them reached the target')
  t.equal(await rawStatus(port, '/cart/app.js?next=../x'), 200, 'dots in names and in the query are fine')
  t.equal(await rawStatus(port, '/api/.well-known/x'), 200, 'and names that start with a dot')
  t.equal(targets[0].hits, 2, 'those reached the target')
})

test('pick(except) never returns the failed target and keeps the rotation', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }, i) => ({ id, url, weight: i + 1 })) }] })
  const group = app.targetGroups.get('g')!
  const except = group.get('t2')!
  const picks = Array.from({ length: 60 }, () => group.pick(Date.now(), except)?.id)
  t.notOk(picks.includes('t2'), 'never the excluded target')
  t.same(new Set(picks), new Set(['t0', 't1']), `both others are picked: ${picks.join(',')}`)
})

test('an idempotent request whose connection was reset before any response byte goes once to another target, and its client with it', async (t) => {
  const targets = await startTargets(t, 1)
  const resetting = await rawTarget(t, '', true)
  const { app } = await loggedGateway(t, [resetting, targets[0].url])
  for (let i = 0; i < 4; i++) {
    const jar = new CookieJar()
    const res = await app.inject({ url: '/', method: i % 2 === 0 ? 'GET' : 'HEAD' })
    t.equal(res.statusCode, 200, `request ${i} (${i % 2 === 0 ? 'GET' : 'HEAD'}): 200 from the other target`)
    jar.store(res.headers['set-cookie'])
    const again = await app.inject({ url: '/', headers: jar.headers() })
    t.equal(echoOf(again).target, 't0', 'the client is pinned to the target that answered')
  }
  t.equal(targets[0].hits, 8, `the healthy target got every request: ${targets[0].hits}`)
})

test('a request that is not idempotent is never sent twice, even when the connection resets before any response byte', async (t) => {
  const targets = await startTargets(t, 1)
  const resetting = await rawTarget(t, '', true)
  const { app } = await loggedGateway(t, [resetting, targets[0].url])
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: '/', method: 'POST', payload: 'x=1', headers: { 'content-type': 'text/plain' } })
    if (i % 2 === 0) t.equal(res.statusCode, 502, `POST ${i}, to the resetting target: 502, ${res.body}`)
    else t.equal(res.statusCode, 200, `POST ${i}, to the healthy target: 200`)
  }
  t.equal(targets[0].hits, 2, `the healthy target got only its own two requests, not the reset ones: ${targets[0].hits}`)
})

test('redispatchIdempotent: false answers a reset GET with 502; config.idempotent: true lets a POST go to another target', async (t) => {
  const targets = await startTargets(t, 1)
  const resetting = await rawTarget(t, '', true)
  const off = (await loggedGateway(t, [resetting, targets[0].url], { redispatchIdempotent: false })).app
  const statuses: number[] = []
  for (let i = 0; i < 4; i++) statuses.push((await off.inject({ url: '/' })).statusCode)
  t.same(statuses, [502, 200, 502, 200], 'switched off: ALB’s plain 502')

  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'r0', url: resetting }, { id: 'r1', url: targets[0].url }] }] })
  app.post('/put-like', { config: { targetGroup: 'g', idempotent: true } }, (_request, reply) => reply.forward())
  app.post('/plain', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const marked = await app.inject({ url: '/put-like', method: 'POST', payload: { a: 1 } })
  t.equal(marked.statusCode, 200, 'a route marked idempotent: sent again')
  t.same(echoOf(marked).body, '{"a":1}', 'with its body')
  const plain = await app.inject({ url: '/plain', method: 'POST', payload: { a: 1 } })
  t.equal(plain.statusCode, 502, 'an unmarked POST: never')
})

test('a refused request is redispatched once, not again', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: [{ id: 'dead1', url: await refusedUrl() }, { id: 'dead2', url: await refusedUrl() }, { id: 'alive', url: targets[0].url }] }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const statuses: number[] = []
  for (let i = 0; i < 6; i++) statuses.push((await app.inject({ url: '/' })).statusCode)
  t.ok(statuses.includes(502), `some requests met two refusing targets and got 502: ${statuses.join(',')}`)
  t.ok(statuses.includes(200), `others reached the live target: ${statuses.join(',')}`)
  t.equal(targets[0].hits, statuses.filter((status) => status === 200).length, 'each 200 is one request to the live target')
})

test('response headers up to 32 KB pass; larger ones are a 502 (ALB’s limit)', async (t) => {
  const small = await rawTarget(t, `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(20_000)}\r\ncontent-length: 2\r\n\r\nok`)
  const large = await rawTarget(t, `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(33_000)}\r\ncontent-length: 2\r\n\r\nok`)
  const { app } = await loggedGateway(t, [small, large], { redispatch: false })
  const first = await app.inject({ url: '/' })
  t.equal(first.statusCode, 200, '20 KB of headers: passed through (undici’s own default stops at 16 KB)')
  t.equal(String(first.headers['x-big']).length, 20_000)
  const second = await app.inject({ url: '/' })
  t.equal(second.statusCode, 502, '33 KB of headers: 502')
  t.equal(second.json().code, 'FST_STICKY_TARGET_RESPONSE_INVALID')
})

test('a target that stalls in the middle of its body is cut off after the idle timeout', async (t) => {
  const stalling = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nstart')
  const logs: string[] = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { logs.push(line) } } } })
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], idleTimeoutMs: 200, targetGroups: [{ name: 'g', targets: [{ id: 'slow', url: stalling }] }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const started = Date.now()
  await t.rejects(app.inject({ url: '/' }), /destroyed/, 'the client’s response is closed, incomplete')
  t.ok(Date.now() - started < 5000, `within the idle timeout and undici's timer tick: ${Date.now() - started} ms`)
  await waitFor(() => logs.some((line) => line.includes('UND_ERR_BODY_TIMEOUT')), 2000, 'the body timeout to be logged')
})

test('a path given to reply.forward() that no request line can carry is percent-encoded; a broken string is a 400', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }] })
  app.get('/search', { config: { targetGroup: 'g' } }, (request, reply) => reply.forward(`/search?q=${(request.query as { q: string }).q}`))
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward('/a b\u0000é\u{1F600}'))
  app.get('/broken', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward('/x\uD800'))
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 200)
  t.equal(echoOf(res).url, '/a%20b%00%C3%A9%F0%9F%98%80', 'spaces, controls and non-ASCII as UTF-8, percent-encoded')
  const search = await app.inject({ url: '/search?q=a%20b' })
  t.equal(echoOf(search).url, '/search?q=a%20b', 'a decoded query value goes out encoded again')
  const broken = await app.inject({ url: '/broken' })
  t.equal(broken.statusCode, 400)
  t.equal(broken.json().code, 'FST_STICKY_REQUEST_INVALID')
  t.equal(targets[0].hits, 2, 'the broken one was not sent')
})

test('a request undici refuses leaves no connection slot of the target busy: more of them than connections, then the target still answers and app.close() settles', async (t) => {
  const targets = await startTargets(t, 1)
  const app = Fastify()
  await app.register(fastifySticky, { keys: [TEST_KEY], connectionsPerTarget: 2, targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }] })
  // A hook that copies client input into a header unchecked: undici refuses the value.
  app.get('/bad', { config: { targetGroup: 'g' }, preHandler: async (request) => { request.headers['x-user'] = 'a\r\nb' } }, (_request, reply) => reply.forward())
  app.get('/good', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const started = Date.now()
  for (let i = 0; i < 5; i++) {
    const bad = await app.inject({ url: '/bad' })
    t.equal(bad.statusCode, 400, `refused request ${i}: 400 ${bad.body}`)
  }
  // undici would leave each refusal's connection slot busy for good; the stall watchdog would
  // only notice after the connect timeout (10 s): the pool is replaced at once instead.
  t.ok(Date.now() - started < 2000, `each answered at once, not after a stalled pool is noticed: ${Date.now() - started} ms for five`)
  const good = await Promise.race([app.inject({ url: '/good' }), new Promise<null>((resolve) => setTimeout(resolve, 3000, null).unref())])
  t.equal(good?.statusCode, 200, 'the next request is answered')
  const closed = await Promise.race([app.close().then(() => 'closed'), new Promise((resolve) => setTimeout(resolve, 3000, 'hung').unref())])
  t.equal(closed, 'closed', 'app.close() settles')
})

test('every hop-by-hop response header is dropped, each on its own', async (t) => {
  const hopByHop = ['keep-alive: timeout=5', 'proxy-connection: keep-alive', 'te: trailers', 'trailer: x-sum', 'upgrade: h2c', 'proxy-authenticate: Basic']
  const url = await rawTarget(t, `HTTP/1.1 200 OK\r\n${hopByHop.join('\r\n')}\r\nx-kept: yes\r\ncontent-length: 2\r\n\r\nok`)
  const { app } = await loggedGateway(t, [url])
  const res = await app.inject({ url: '/' })
  t.equal(res.headers['x-kept'], 'yes', 'an ordinary header passes')
  for (const line of hopByHop) {
    const name = line.split(':')[0]
    t.equal(res.headers[name], undefined, `${name} is not forwarded`)
  }
})

test('an HTTP2-Settings request header never reaches the target', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const res = await app.inject({ url: '/', headers: { 'http2-settings': 'AAMAAABkAAQAAP__', 'keep-alive': 'timeout=5' } })
  t.equal(echoOf(res).headers['http2-settings'], undefined)
  t.equal(echoOf(res).headers['keep-alive'], undefined, 'nor Keep-Alive, when Connection does not list it')
})

test('when the client goes away, the request to the target ends too', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const socket = connect((app.server.address() as AddressInfo).port, '127.0.0.1')
  socket.on('error', () => {})
  socket.write('GET /hang HTTP/1.1\r\nHost: gateway\r\n\r\n')
  await waitFor(() => targets[0].hits === 1, 2000, 'the request to reach the target')
  socket.destroy()
  await waitFor(() => targets[0].abandoned === 1, 2000, 'the target’s request to be closed')
  const target = app.targetGroups.get('g')!.get('a')!
  await waitFor(() => target.outstanding === 0, 2000, 'the outstanding count to drop')
  t.equal(targets[0].abandoned, 1, 'the target saw its request closed')
  t.equal(target.outstanding, 0)
})

test('a pool that stops making progress is replaced within about the connect timeout and two seconds, and the request stuck in it is answered by the same target', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { connectionsPerTarget: 1, connectTimeoutMs: 200, targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const target = app.targetGroups.get('g')!.get('a')!
  // Poison the pool's only connection slot the way undici itself does after a synchronous
  // refusal, behind the gateway's back, so only the watchdog can notice.
  const stale = target.pool
  stale.dispatch({ path: '/a b', method: 'GET' }, { onError () {}, onConnect () {}, onHeaders () { return true }, onData () { return true }, onComplete () {} } as any)
  const started = Date.now()
  const res = await app.inject({ url: '/stuck' })
  const tookMs = Date.now() - started
  t.equal(res.statusCode, 200, `answered: ${res.body}`)
  t.equal(echoOf(res).target, 't0', 'by the same target')
  t.not(target.pool, stale, 'through a new pool')
  // Looked at once a second: stalled at one look, still stalled connectTimeoutMs + 1 s later.
  t.ok(tookMs >= 1000 && tookMs < 5500, `after the watchdog noticed: ${tookMs} ms`)
})
