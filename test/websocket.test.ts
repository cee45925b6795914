import { once } from 'node:events'
import { createConnection, type AddressInfo } from 'node:net'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { stickyProxy, type FastifyStickyOptions, type TargetGroupOptions } from '../lib/index.js'
import { buildGateway, rawRequest, rawServer, refusedUrl, waitFor } from './setup.js'
import { cookieHeader, openWs, startWsTargets, upgradeRequest, type WsTarget } from './websocket.js'
import { localhostCert, testCa, wrongNameCert } from './tls.js'

type Tap = Parameters<typeof buildGateway>[0]

/** A gateway listening on 127.0.0.1 with one group `g` of `targets` under stickyProxy at `/p`. */
async function gateway (t: Tap, targets: ReadonlyArray<{ id: string, url: string }>, group: Partial<TargetGroupOptions> = {},
  options: Partial<FastifyStickyOptions> = {}, proxy: Record<string, unknown> = {}): Promise<{ app: FastifyInstance, port: number, ws: string }> {
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), ...group }],
    ...options
  })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g', ...proxy })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  return { app, port, ws: `ws://127.0.0.1:${port}` }
}

function inFlight (app: FastifyInstance): number {
  return app.targetGroups.get('g')!.describe().targets.reduce((sum, target) => sum + target.inFlight, 0)
}

test('a WebSocket goes to the affinity\'s target, its 101 pins the client, and the cookie keeps it there', async (t) => {
  const targets = await startWsTargets(t, 3)
  const { app, port, ws } = await gateway(t, targets)
  const first = await openWs(t, `${ws}/p/chat`)
  const served = await first.ask('who')
  t.match(String(first.headers['set-cookie']), /AWSALB=/, 'the 101 carries the gateway\'s cookie')
  t.ok(first.headers['sec-websocket-accept'], 'and the target\'s handshake headers')
  t.equal(await first.ask('hello'), `${served}:hello`, 'messages pass both ways')
  const cookie = cookieHeader(first.headers['set-cookie'])
  for (let i = 0; i < 10; i++) {
    const again = await openWs(t, `${ws}/p/chat`, { headers: { cookie } })
    t.equal(await again.ask('who'), served, `socket ${i} with the cookie lands on the same target`)
    t.notOk(again.headers['set-cookie'] === undefined, 'and gets fresh cookies')
    again.ws.close()
    await again.closed
  }
  const plain = await fetch(`http://127.0.0.1:${port}/p/cart`, { headers: { cookie } })
  t.equal(plain.headers.get('x-served-by'), served, 'a plain request with the cookie reaches the socket\'s target')
  await plain.text()
  const target = targets.find((one) => one.id === served) as WsTarget
  const seen = target.handshakes[0]
  t.equal(seen.upgrade, 'websocket', 'the target got an upgrade')
  t.equal(seen['sec-websocket-version'], '13')
  t.equal(seen['x-forwarded-for'], '127.0.0.1', 'with the forwarding headers')
  t.notMatch(String(target.handshakes[1].cookie ?? ''), /AWSALB/, 'and not the gateway\'s cookies')
  t.equal(inFlight(app), 1, 'the open socket counts as a request in flight')
  t.equal(app.targetGroups.get('g')!.describe().targets.find((one) => one.id === served)?.webSockets, 1, 'and as a WebSocket')
  first.ws.close()
  await first.closed
  await waitFor(() => inFlight(app) === 0, 5000, 'no request in flight once the socket closed')
  await waitFor(() => target.sockets.size === 0, 5000, 'the target\'s socket closed too')
})

test('a bound route tunnels WebSockets only with config.websocket: true; request.affinity is set on both', async (t) => {
  const targets = await startWsTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: targets[0].id, url: targets[0].url }] }] })
  const decided: string[] = []
  app.get('/on', { config: { targetGroup: 'g', websocket: true } }, (request, reply) => {
    decided.push(String(request.affinity?.outcome))
    return reply.forward()
  })
  app.get('/off', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  app.get('/mine', (_request, reply) => reply.send({ mine: true }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  const on = await openWs(t, `ws://127.0.0.1:${port}/on`)
  t.equal(await on.ask('who'), 't0')
  t.same(decided, ['new'])
  const off = await rawRequest(port, upgradeRequest('/off'))
  t.equal(off.status, 400, 'a route that does not allow it: 400')
  t.equal(JSON.parse(off.body).code, 'FST_STICKY_WEBSOCKET_NOT_ALLOWED')
  t.equal(off.headers.connection, 'close', 'and the connection closes')
  const mine = await rawRequest(port, upgradeRequest('/mine'))
  t.equal(mine.status, 200, 'a route of the app answers as it would a plain request')
  t.same(JSON.parse(mine.body), { mine: true })
  const missing = await rawRequest(port, upgradeRequest('/nowhere'))
  t.equal(missing.status, 404)
  t.equal(targets[0].upgrades, 1, 'only the allowed upgrade reached the target')
  await t.rejects(buildGateway(t, { targetGroups: [{ name: 'g' }] }).then((bad) => bad.get('/x', { config: { targetGroup: 'g', websocket: 'yes' as never } }, () => {}).ready()),
    { code: 'FST_STICKY_OPTION_INVALID', message: /route GET \/x: config\.websocket must be a boolean, received "yes"/ })
})

test('stickyProxy with websocket: false refuses upgrades', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { port } = await gateway(t, targets, {}, {}, { websocket: false })
  const refused = await rawRequest(port, upgradeRequest('/p/chat'))
  t.equal(refused.status, 400)
  t.equal(JSON.parse(refused.body).code, 'FST_STICKY_WEBSOCKET_NOT_ALLOWED')
  t.equal(targets[0].upgrades, 0)
})

test('a bad handshake is answered by the gateway and never reaches a target', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { app, port } = await gateway(t, targets)
  const head = (key: string, version = '13', method = 'GET', extra = ''): string =>
    `${method} /p/chat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: ${version}\r\n${extra}\r\n`
  for (const [what, request] of [
    ['no key', 'GET /p/chat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n'],
    ['a key of 15 bytes', head('dGhlIHNhbXBsZSBub25jZQ=')],
    ['a key that is no base64', head('dGhlIHNhbXBsZSBub25j!!==')],
    ['a key of 17 bytes', head('dGhlIHNhbXBsZSBub25jZQAA')],
    ['a POST', head('dGhlIHNhbXBsZSBub25jZQ==', '13', 'POST', 'Content-Length: 0\r\n')],
    ['a body', head('dGhlIHNhbXBsZSBub25jZQ==', '13', 'GET', 'Content-Length: 5\r\n')],
    ['HTTP/1.0', head('dGhlIHNhbXBsZSBub25jZQ==').replace('HTTP/1.1', 'HTTP/1.0')]
  ] as const) {
    const res = await rawRequest(port, request)
    t.equal(res.status, 400, `${what}: 400`)
    t.equal(JSON.parse(res.body || '{}').code, 'FST_STICKY_WEBSOCKET_HANDSHAKE_INVALID', what)
  }
  const version = await rawRequest(port, head('dGhlIHNhbXBsZSBub25jZQ==', '8'))
  t.equal(version.status, 426, 'another version: 426 Upgrade Required')
  t.equal(version.headers['sec-websocket-version'], '13', 'naming the version the gateway speaks')
  t.equal(JSON.parse(version.body).code, 'FST_STICKY_WEBSOCKET_VERSION_UNSUPPORTED')
  t.equal(targets[0].upgrades, 0, 'no target saw any of them')
  t.equal(inFlight(app), 0)
})

test('an upgrade to another protocol is served as the plain request it also is', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { port } = await gateway(t, targets)
  const res = await rawRequest(port, 'GET /p/page HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n')
  t.equal(res.status, 200)
  t.equal(res.body, 't0')
  t.equal(res.headers.connection, 'close')
  t.equal(targets[0].requests, 1)
  t.equal(targets[0].upgrades, 0, 'the target saw no upgrade')
})

test('a target that refuses the upgrade passes its answer through', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { app, ws } = await gateway(t, targets)
  const err = await openWs(t, `${ws}/p/deny`).then(() => null, (error: { statusCode: number, headers: Record<string, string> }) => error)
  t.equal(err?.statusCode, 403, 'its status')
  t.equal(err?.headers['x-denied'], 'yes', 'its headers')
  t.match(String(err?.headers['set-cookie']), /AWSALB=/, 'with the gateway\'s cookies')
  const { port } = app.server.address() as AddressInfo
  const res = await rawRequest(port, upgradeRequest('/p/deny'))
  t.equal(res.body, 'denied', 'and its body')
  await waitFor(() => inFlight(app) === 0, 5000, 'nothing in flight')
})

test('a refused connection goes to another target, which pins the client; with none left, 502', async (t) => {
  const targets = await startWsTargets(t, 1)
  const refused = await refusedUrl()
  const { app, ws } = await gateway(t, [{ id: 'dead', url: refused }, targets[0]], { stickiness: { type: 'lb_cookie' }, algorithm: 'round_robin' })
  for (let i = 0; i < 4; i++) {
    const client = await openWs(t, `${ws}/p/chat`)
    t.equal(await client.ask('who'), 't0', `socket ${i} reached the live target`)
    const again = await openWs(t, `${ws}/p/chat`, { headers: { cookie: cookieHeader(client.headers['set-cookie']) } })
    t.equal(await again.ask('who'), 't0', 'and its cookie names it')
    client.ws.close()
    again.ws.close()
  }
  await targets[0].stop()
  const err = await openWs(t, `${ws}/p/chat`).then(() => null, (error: { statusCode: number }) => error)
  t.equal(err?.statusCode, 502)
  const { port } = app.server.address() as AddressInfo
  const res = await rawRequest(port, upgradeRequest('/p/chat'))
  t.equal(JSON.parse(res.body).code, 'FST_STICKY_TARGET_CONNECTION_FAILED')
  t.notMatch(res.body, /127\.0\.0\.1/, 'the body names no address')
  await waitFor(() => inFlight(app) === 0, 5000, 'nothing in flight')
})

test('a target that closes mid-handshake: 502; one that never answers: 504 after handshakeTimeoutMs', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { app, port } = await gateway(t, targets, { websocket: { handshakeTimeoutMs: 300 } }, { redispatchIdempotent: false })
  const reset = await rawRequest(port, upgradeRequest('/p/reset'))
  t.equal(reset.status, 502)
  t.equal(JSON.parse(reset.body).code, 'FST_STICKY_TARGET_CONNECTION_FAILED')
  const started = Date.now()
  const hung = await rawRequest(port, upgradeRequest('/p/hang'))
  t.equal(hung.status, 504)
  t.equal(JSON.parse(hung.body).code, 'FST_STICKY_TARGET_TIMEOUT')
  t.match(JSON.parse(hung.body).message, /300ms/, 'the message names the handshake timeout')
  t.ok(Date.now() - started < 3000, 'answered at the handshake timeout, not the idle timeout')
  await waitFor(() => inFlight(app) === 0, 5000, 'nothing in flight')
})

test('a client that leaves during the handshake leaves nothing behind', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { app, port } = await gateway(t, targets)
  const socket = createConnection(port, '127.0.0.1')
  socket.on('error', () => {})
  socket.write(upgradeRequest('/p/hold'))
  await waitFor(() => targets[0].upgrades === 1, 5000, 'the upgrade reached the target')
  t.equal(inFlight(app), 1)
  socket.destroy()
  await waitFor(() => inFlight(app) === 0, 5000, 'nothing in flight once the client left')
  targets[0].release()
  await waitFor(() => targets[0].sockets.size === 0, 5000, 'the target\'s side is closed')
})

test('bytes that come with the handshake pass in both directions', async (t) => {
  // A target that answers 101 and a frame in one write, and echoes the first frame it reads.
  let received: Buffer = Buffer.alloc(0)
  const url = await rawServer(t, (socket, data) => {
    const end = data.indexOf('\r\n\r\n') + 4
    received = data.subarray(end)
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x05hello')
    socket.on('data', (more: Buffer) => { received = Buffer.concat([received, more]) })
  })
  const { port } = await gateway(t, [{ id: 'raw', url }])
  const socket = createConnection(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  let got: Buffer = Buffer.alloc(0)
  socket.on('data', (chunk: Buffer) => { got = Buffer.concat([got, chunk]) })
  // The handshake and a masked frame ("hi") in one write.
  const frame = Buffer.from([0x81, 0x82, 1, 2, 3, 4, 'h'.charCodeAt(0) ^ 1, 'i'.charCodeAt(0) ^ 2])
  socket.write(Buffer.concat([Buffer.from(upgradeRequest('/p/x')), frame]))
  await waitFor(() => got.includes(Buffer.from('\x81\x05hello', 'latin1')), 5000, 'the target\'s first frame reached the client')
  t.match(got.toString('latin1'), /^HTTP\/1\.1 101 Switching Protocols\r\n/)
  await waitFor(() => received.equals(frame), 5000, 'the client\'s first frame reached the target')
})

test('draining: open WebSockets stay until the deadline, then get 1001 on both sides', async (t) => {
  const targets = await startWsTargets(t, 2)
  const { app, ws } = await gateway(t, targets, { deregistrationDelayMs: 400 })
  const clients = await Promise.all([0, 1, 2, 3].map(() => openWs(t, `${ws}/p/chat`)))
  const served = await Promise.all(clients.map((client) => client.ask('who')))
  const group = app.targetGroups.get('g')!
  const started = Date.now()
  const drained = group.deregister('t0')
  const onT0 = clients.filter((_client, i) => served[i] === 't0')
  t.ok(onT0.length > 0)
  t.equal(await onT0[0].ask('still'), 't0:still', 'a draining target keeps its sockets')
  const codes = await Promise.all(onT0.map((client) => client.closed))
  t.ok(Date.now() - started >= 350, 'until the deregistration delay ends')
  t.same(codes.map((closed) => closed.code), onT0.map(() => 1001), 'then each client gets 1001 Going Away')
  await waitFor(() => targets[0].closeCodes.length === onT0.length, 5000, 'the target saw them close')
  t.same(targets[0].closeCodes, onT0.map(() => 1001), 'with 1001 too')
  t.equal(await drained, true)
  const onT1 = clients.filter((_client, i) => served[i] === 't1')
  for (const client of onT1) t.equal(await client.ask('x'), 't1:x', 'the other target\'s sockets are untouched')
})

test('app.close() sends 1001 to every open WebSocket and settles', async (t) => {
  const targets = await startWsTargets(t, 2)
  const { app, ws } = await gateway(t, targets)
  const clients = await Promise.all([0, 1, 2].map(() => openWs(t, `${ws}/p/chat`)))
  for (const client of clients) await client.ask('who')
  await app.close()
  for (const client of clients) t.equal((await client.closed).code, 1001)
  await waitFor(() => targets.every((target) => target.sockets.size === 0), 5000, 'the targets\' sockets closed')
  t.same([...targets[0].closeCodes, ...targets[1].closeCodes], [1001, 1001, 1001])
})

test('a Close never lands inside a frame: a message under way is finished first', async (t) => {
  // The target sends the header of a 64 KiB binary frame and half its payload, then the rest on request.
  let rest: (() => void) | null = null
  const payload = Buffer.alloc(65_536, 7)
  const url = await rawServer(t, (socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n')
    const header = Buffer.from([0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0])
    socket.write(Buffer.concat([header, payload.subarray(0, 32_768)]))
    rest = () => socket.write(payload.subarray(32_768))
  })
  const { app, port } = await gateway(t, [{ id: 'raw', url }], { deregistrationDelayMs: 0 })
  const socket = createConnection(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  let got: Buffer = Buffer.alloc(0)
  socket.on('data', (chunk: Buffer) => { got = Buffer.concat([got, chunk]) })
  socket.write(upgradeRequest('/p/x'))
  await waitFor(() => got.length > 32_768, 5000, 'half the frame reached the client')
  const closing = app.close()
  ;(rest as unknown as () => void)()
  await once(socket, 'close')
  const head = got.indexOf('\r\n\r\n') + 4
  const frames = got.subarray(head)
  t.equal(frames.length, 10 + 65_536 + 4, 'the whole frame, then a Close')
  t.same([...frames.subarray(10 + 65_536)], [0x88, 0x02, 0x03, 0xe9], 'the Close says 1001')
  await closing
})

test('maxConnectionsPerTarget: one more socket is answered 503', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { app, ws, port } = await gateway(t, targets, { websocket: { maxConnectionsPerTarget: 2 } })
  const a = await openWs(t, `${ws}/p/chat`)
  await openWs(t, `${ws}/p/chat`)
  const res = await rawRequest(port, upgradeRequest('/p/chat'))
  t.equal(res.status, 503)
  t.equal(JSON.parse(res.body).code, 'FST_STICKY_TARGET_WEBSOCKET_LIMIT')
  a.ws.close()
  await waitFor(() => app.targetGroups.get('g')!.describe().targets[0].webSockets === 1, 5000, 'one closed')
  const c = await openWs(t, `${ws}/p/chat`)
  t.equal(await c.ask('who'), 't0', 'then there is room again')
  t.equal(inFlight(app), 2)
})

test('idleTimeoutMs closes a silent WebSocket with 1001, not a busy one', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { app, ws } = await gateway(t, targets, { websocket: { idleTimeoutMs: 300 } })
  const busy = await openWs(t, `${ws}/p/chat`)
  const silent = await openWs(t, `${ws}/p/chat`)
  const started = Date.now()
  const closed = await Promise.race([silent.closed, (async () => {
    for (let i = 0; i < 100; i++) await busy.ask(String(i))
    return null
  })()])
  const code = closed ?? await silent.closed
  t.equal(code.code, 1001, 'the silent one got 1001')
  t.ok(Date.now() - started >= 250, 'after the idle timeout')
  let echoed = 0
  for (let i = 0; Date.now() - started < 1000; i++) if (await busy.ask(`k${i}`) === `t0:k${i}`) echoed++
  t.ok(echoed > 10, `the busy one echoed ${echoed} messages`)
  t.equal(busy.ws.readyState, busy.ws.OPEN, 'the busy one is open after three idle timeouts')
  await waitFor(() => inFlight(app) === 1, 5000, 'only the busy one in flight')
})

test('an unhealthy target keeps its WebSockets; with closeOnUnhealthy they get 1001', async (t) => {
  for (const closeOnUnhealthy of [false, true]) {
    const targets = await startWsTargets(t, 2)
    const { app, ws } = await gateway(t, targets, {
      websocket: { closeOnUnhealthy },
      healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 90, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
    })
    const group = app.targetGroups.get('g')!
    await waitFor(() => group.describe().targets.every((target) => target.state === 'healthy'), 5000, 'both healthy')
    const clients = await Promise.all([0, 1].map(() => openWs(t, `${ws}/p/chat`)))
    const served = await Promise.all(clients.map((client) => client.ask('who')))
    const onT0 = clients[served.indexOf('t0')]
    targets[0].healthy = false
    await waitFor(() => group.describe().targets[0].state === 'unhealthy', 5000, 't0 unhealthy')
    if (closeOnUnhealthy) {
      t.equal((await onT0.closed).code, 1001, 'closeOnUnhealthy: the socket gets 1001')
      await waitFor(() => inFlight(app) === 1, 5000, 'only the healthy target\'s socket is left')
    } else {
      t.equal(await onT0.ask('still'), 't0:still', 'by default the socket stays open, as at ALB')
    }
    t.equal(await clients[served.indexOf('t1')].ask('x'), 't1:x', 'the healthy target\'s socket is untouched')
  }
})

test('beside another upgrade listener, only the upgrades of WebSocket routes are taken', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { app, ws, port } = await gateway(t, targets)
  app.server.on('upgrade', (req, socket) => {
    if (req.url === '/other') socket.end('HTTP/1.1 418 I\'m a teapot\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
  })
  const other = await rawRequest(port, upgradeRequest('/other'))
  t.equal(other.status, 418, 'the other listener answered its own upgrade, alone')
  t.notMatch(other.body, /HTTP\/1\.1/, 'nothing else was written after it')
  const client = await openWs(t, `${ws}/p/chat`)
  t.equal(await client.ask('who'), 't0', 'and the gateway still tunnels its routes')
})

test('WebSockets over TLS on a gateway that serves HTTP/2 and HTTP/1.1', async (t) => {
  const targets = await startWsTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })) }] },
    { http2: true, https: { ...localhostCert, allowHTTP1: true } } as never)
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  const first = await openWs(t, `wss://localhost:${port}/p/chat`, { ca: testCa })
  const served = await first.ask('who')
  const lines = [first.headers['set-cookie']].flat().map(String)
  t.match(lines.find((line) => line.startsWith('AWSALBCORS=')), /; Secure/, 'the cookies of an HTTPS request')
  const again = await openWs(t, `wss://localhost:${port}/p/chat`, { ca: testCa, headers: { cookie: cookieHeader(first.headers['set-cookie']) } })
  t.equal(await again.ask('who'), served, 'and the cookie keeps the client on its target')
  t.equal(targets.find((target) => target.id === served)?.handshakes[0]['x-forwarded-proto'], 'https')
})

test('an open WebSocket counts as in flight: least_outstanding_requests sends new clients elsewhere', async (t) => {
  const targets = await startWsTargets(t, 2)
  const { app, ws, port } = await gateway(t, targets, { algorithm: 'least_outstanding_requests', stickiness: false })
  const first = await openWs(t, `${ws}/p/chat`)
  const busy = await first.ask('who')
  const idle = busy === 't0' ? 't1' : 't0'
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`http://127.0.0.1:${port}/p/page`)
    t.equal(await res.text(), idle, `request ${i} goes to the target without the socket`)
  }
  const second = await openWs(t, `${ws}/p/chat`)
  t.equal(await second.ask('who'), idle, 'and so does the next socket')
  t.equal(inFlight(app), 2)
})

test('a refused upgrade counts against the target for passive checks', async (t) => {
  const targets = await startWsTargets(t, 1)
  const refused = await refusedUrl()
  const { app, ws } = await gateway(t, [{ id: 'dead', url: refused }, targets[0]], {
    stickiness: false,
    outlierDetection: { consecutiveGatewayErrors: 2, maxEjectedPercent: 50 }
  })
  for (let i = 0; i < 4; i++) {
    const client = await openWs(t, `${ws}/p/chat`)
    t.equal(await client.ask('who'), 't0')
    client.ws.close()
  }
  t.not(app.targetGroups.get('g')!.describe().targets[0].ejectedUntilMs, null, 'the refusing target is ejected')
})

test('a client that stops reading stops the target: nothing piles up in the gateway', async (t) => {
  const targets = await startWsTargets(t, 1)
  const { app, port } = await gateway(t, targets)
  const socket = createConnection(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.write(upgradeRequest('/p/chat'))
  await once(socket, 'data')
  // The client reads nothing more; the target sends 64 KiB messages as long as its socket takes them.
  socket.pause()
  await waitFor(() => targets[0].sockets.size === 1, 5000, 'the target has the socket')
  const [server] = targets[0].sockets
  const [tunnel] = app.targetGroups.get('g')!.get('t0')!.tunnels as Set<unknown> as Set<{ client: { writableLength: number } }>
  const chunk = Buffer.alloc(65_536, 1)
  const cap = 32 * 1024 * 1024
  let sent = 0
  let held = 0
  while (sent < cap) {
    server.send(chunk)
    sent += chunk.length
  }
  // The flood stalls (the target's buffer stops shrinking for 20 polls in a row) with most of it
  // still at the target, and what the gateway holds for the client never grows past its sockets'
  // buffers: the gateway stopped reading the target.
  let last = -1
  let still = 0
  await waitFor(() => {
    held = Math.max(held, tunnel.client.writableLength)
    still = server.bufferedAmount === last ? still + 1 : 0
    last = server.bufferedAmount
    return still >= 20
  }, 10_000, 'the flood stalls')
  t.ok(held < 1024 * 1024, `the gateway held at most ${Math.round(held / 1024)} KiB for the client`)
  t.ok(server.bufferedAmount >= cap - 16 * 1024 * 1024, `${Math.round(server.bufferedAmount / 1048576)} MiB wait at the target`)
})

test('a target that dies: its clients get 1001 at once, not a dropped connection; a client that vanishes: the target gets 1001', async (t) => {
  const targets = await startWsTargets(t, 2)
  const { app, ws } = await gateway(t, targets)
  const clients = await Promise.all([0, 1, 2, 3].map(() => openWs(t, `${ws}/p/chat`)))
  const served = await Promise.all(clients.map((client) => client.ask('who')))
  for (const socket of targets[0].sockets) socket.terminate()
  for (const [i, client] of clients.entries()) {
    if (served[i] === 't0') t.equal((await client.closed).code, 1001, `client ${i} of the dead target got 1001`)
  }
  const onT1 = clients.filter((_client, i) => served[i] === 't1')
  for (const client of onT1) t.equal(await client.ask('x'), 't1:x', 'the other target\'s clients are untouched')
  onT1[0].ws.terminate()
  await waitFor(() => targets[1].closeCodes.length === 1, 5000, 'the target saw the vanished client close')
  t.same(targets[1].closeCodes, [1001], 'with 1001 (Going Away)')
  await waitFor(() => inFlight(app) === onT1.length - 1, 5000, 'the closed sockets are no longer in flight')
})

test('WebSockets to HTTPS targets: the group\'s private CA is trusted, a wrong name is refused with 502', async (t) => {
  const { createServer: createHttpsServer } = await import('node:https')
  const { WebSocketServer } = await import('ws')
  const servers: Array<{ url: string }> = []
  for (const cert of [localhostCert, wrongNameCert]) {
    const server = createHttpsServer(cert)
    const wss = new WebSocketServer({ server })
    wss.on('connection', (socket) => socket.on('message', (data) => socket.send(`tls:${String(data)}`)))
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    t.teardown(() => {
      for (const client of wss.clients) client.terminate()
      return new Promise((resolve) => server.close(resolve))
    })
    servers.push({ url: `https://127.0.0.1:${(server.address() as AddressInfo).port}` })
  }
  const { ws } = await gateway(t, [{ id: 'good', url: servers[0].url }], { tls: { ca: testCa } })
  const client = await openWs(t, `${ws}/p/chat`)
  t.equal(await client.ask('hi'), 'tls:hi', 'tunnelled to the target over TLS')
  const wrong = await gateway(t, [{ id: 'wrong', url: servers[1].url }], { tls: { ca: testCa } })
  const res = await rawRequest(wrong.port, upgradeRequest('/p/chat'))
  t.equal(res.status, 502)
  t.equal(JSON.parse(res.body).code, 'FST_STICKY_TARGET_TLS_FAILED')
  t.notMatch(res.body, /127\.0\.0\.1/, 'no address in the body')
})

test('a client that never finishes its upgrade request is answered 408 by Node\'s headersTimeout, and reaches no target', async (t) => {
  const targets = await startWsTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: targets[0].id, url: targets[0].url }] }] },
    { http: { headersTimeout: 300, requestTimeout: 400, connectionsCheckingInterval: 50 } } as never)
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  // The handshake without its last empty line.
  const res = await rawRequest(port, upgradeRequest('/p/chat').slice(0, -2), 5000)
  t.equal(res.status, 408)
  t.equal(targets[0].upgrades, 0)
  t.equal(inFlight(app), 0)
})
