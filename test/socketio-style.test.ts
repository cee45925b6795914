import { once } from 'node:events'
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { stickyProxy, type StickinessOptions } from '../lib/index.js'
import { buildGateway } from './setup.js'
import { cookieHeader } from './websocket.js'

type Tap = Parameters<typeof buildGateway>[0]

/**
 * A socket.io-style target (Engine.IO's transports, reduced): a client opens a session by
 * long-polling (`GET /io/?transport=polling` answers its `sid`), polls and posts with that sid,
 * then upgrades to a WebSocket with it. Sessions live in this target's memory only: a poll or an
 * upgrade that names a sid this target did not open is answered 400, as Engine.IO does.
 */
async function startIoTarget (t: Tap, id: string): Promise<{ id: string, url: string, sessions: Set<string>, upgraded: number }> {
  const sessions = new Set<string>()
  const sockets = new Set<Socket>()
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://target')
    const sid = url.searchParams.get('sid')
    res.setHeader('content-type', 'text/plain')
    if (sid === null) {
      const opened = `${id}-${randomUUID()}`
      sessions.add(opened)
      res.end(opened)
      return
    }
    if (!sessions.has(sid)) {
      res.statusCode = 400
      res.end('unknown session')
      return
    }
    req.resume()
    req.on('end', () => res.end(req.method === 'POST' ? 'ok' : `noop from ${id}`))
  })
  const wss = new WebSocketServer({ noServer: true })
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const sid = new URL(req.url ?? '/', 'http://target').searchParams.get('sid')
    if (sid === null || !sessions.has(sid)) {
      socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 15\r\n\r\nunknown session')
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      target.upgraded++
      ws.on('message', (data) => ws.send(`${id}:${String(data)}`))
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    return new Promise((resolve) => server.close(resolve))
  })
  const target = { id, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sessions, upgraded: 0 }
  return target
}

/** One client's whole life: open by polling, poll and post twice, upgrade, exchange a message; returns the target that answered. */
async function runClient (base: string, ws: string, useCookies: boolean): Promise<string> {
  const client = randomUUID()
  let cookie = ''
  const headers = (): Record<string, string> => (useCookies && cookie !== '' ? { cookie } : {})
  const keep = (res: Response): void => {
    if (!useCookies) return
    const lines = res.headers.getSetCookie()
    if (lines.length > 0) cookie = cookieHeader(lines)
  }
  const open = await fetch(`${base}/io/?transport=polling&client=${client}`, { headers: headers() })
  keep(open)
  const sid = await open.text()
  for (let i = 0; i < 2; i++) {
    const posted = await fetch(`${base}/io/?transport=polling&client=${client}&sid=${sid}`, { method: 'POST', body: `message ${i}`, headers: headers() })
    keep(posted)
    if (await posted.text() !== 'ok') throw new Error(`post ${i} reached another target (${posted.status})`)
    const polled = await fetch(`${base}/io/?transport=polling&client=${client}&sid=${sid}`, { headers: headers() })
    keep(polled)
    if (polled.status !== 200) throw new Error(`poll ${i} reached another target`)
    await polled.text()
  }
  const socket = new WebSocket(`${ws}/io/?transport=websocket&client=${client}&sid=${sid}`, { headers: headers() })
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('open', resolve)
      socket.once('unexpected-response', (_req, res) => reject(new Error(`the upgrade reached another target (${res.statusCode})`)))
      socket.once('error', reject)
    })
    socket.send('probe')
    const [answer] = await once(socket, 'message') as [Buffer]
    const [served] = String(answer).split(':')
    if (!sid.startsWith(`${served}-`)) throw new Error('the socket landed elsewhere')
    return served
  } finally {
    socket.close()
  }
}

for (const [name, stickiness, useCookies] of [
  ['lb_cookie', { type: 'lb_cookie' }, true],
  ['a query parameter the client chose', { type: 'query', name: 'client' }, false]
] as Array<[string, StickinessOptions, boolean]>) {
  test(`socket.io-style clients keep long polling and their WebSocket on one target: ${name}`, async (t) => {
    const targets = await Promise.all(['t0', 't1', 't2'].map((id) => startIoTarget(t, id)))
    const app = await buildGateway(t, { targetGroups: [{ name: 'io', targets: targets.map(({ id, url }) => ({ id, url })), stickiness }] })
    await app.register(stickyProxy, { targetGroup: 'io' })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as AddressInfo).port
    const served: string[] = []
    const failures: string[] = []
    // 100 clients, 10 at a time.
    for (let batch = 0; batch < 10; batch++) {
      const results = await Promise.allSettled(Array.from({ length: 10 }, () => runClient(`http://127.0.0.1:${port}`, `ws://127.0.0.1:${port}`, useCookies)))
      for (const result of results) {
        if (result.status === 'fulfilled') served.push(result.value)
        else failures.push(String(result.reason))
      }
    }
    t.same(failures, [], 'no client lost its session between polling and the upgrade')
    t.equal(served.length, 100, 'all 100 clients upgraded on the target that opened their session')
    for (const target of targets) t.ok(target.upgraded > 10, `${target.id} served ${target.upgraded} of them: the clients spread`)
  })
}
