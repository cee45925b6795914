import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'

interface Tap {
  teardown (fn: () => unknown): void
}

/** A WebSocket target: who it is, what upgrades it saw, and the close codes its sockets got. */
export interface WsTarget {
  id: string
  url: string
  server: Server
  /** Upgrade requests it received, whatever it answered. */
  upgrades: number
  /** Plain HTTP requests it received. */
  requests: number
  /** The headers of each upgrade it accepted, in order. */
  handshakes: IncomingHttpHeaders[]
  /** Its open WebSockets. */
  sockets: Set<WebSocket>
  /** The close code of each of its WebSockets that closed, in order. */
  closeCodes: number[]
  /** What it answers on `/health`: 200 while true, else 503. */
  healthy: boolean
  /** Answers every upgrade held on `/hold` with 101. */
  release (): void
  /** Stops listening and drops every connection. */
  stop (): Promise<void>
}

/**
 * Starts `count` WebSocket targets on 127.0.0.1 (`t0`, `t1`, …). A WebSocket on any path echoes
 * each text message as `<id>:<message>`; `who` answers the target's id. Upgrade paths:
 * `/deny` answers 403 with a body, `/hang` never answers, `/hold` answers when the test calls
 * `release()`, `/reset` destroys the connection. Plain requests get 200 `<id>` with
 * `x-served-by`; `…/login` sets `sid=<id>.<n>`; `/health` answers 200 while `healthy`, else 503.
 */
export async function startWsTargets (t: Tap, count: number, prefix = 't'): Promise<WsTarget[]> {
  const targets: WsTarget[] = []
  for (let i = 0; i < count; i++) targets.push(await startWsTarget(`${prefix}${i}`))
  t.teardown(() => Promise.all(targets.map((target) => target.stop())))
  return targets
}

async function startWsTarget (id: string): Promise<WsTarget> {
  let sessions = 0
  const held: Array<() => void> = []
  const raw = new Set<Socket>()
  const server = createServer((req, res) => {
    target.requests++
    res.setHeader('x-served-by', id)
    if (req.url === '/health') res.statusCode = target.healthy ? 200 : 503
    if ((req.url ?? '').endsWith('/login')) res.setHeader('set-cookie', `sid=${id}.${++sessions}; Path=/`)
    res.end(id)
  })
  server.on('connection', (socket: Socket) => {
    raw.add(socket)
    socket.on('close', () => raw.delete(socket))
  })
  const wss = new WebSocketServer({ noServer: true })
  wss.on('headers', (headers, req) => {
    if ((req.url ?? '').endsWith('/login')) headers.push(`Set-Cookie: sid=${id}.${++sessions}; Path=/`)
  })
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    target.upgrades++
    socket.on('error', () => {})
    const url = req.url ?? '/'
    if (url.startsWith('/deny')) {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nx-denied: yes\r\n\r\ndenied')
      return
    }
    if (url.startsWith('/reset')) {
      socket.destroy()
      return
    }
    if (url.startsWith('/hang')) return
    const accept = (): void => {
      wss.handleUpgrade(req, socket, head, (ws) => {
        target.handshakes.push(req.headers)
        target.sockets.add(ws)
        ws.on('close', (code) => {
          target.sockets.delete(ws)
          target.closeCodes.push(code)
        })
        ws.on('error', () => {})
        ws.on('message', (data) => {
          const text = String(data)
          ws.send(text === 'who' ? id : `${id}:${text}`)
        })
      })
    }
    if (url.startsWith('/hold')) held.push(accept)
    else accept()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const target: WsTarget = {
    id,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    upgrades: 0,
    requests: 0,
    healthy: true,
    handshakes: [],
    sockets: new Set(),
    closeCodes: [],
    release () {
      for (const accept of held.splice(0)) accept()
    },
    async stop () {
      for (const ws of target.sockets) ws.terminate()
      for (const socket of raw) socket.destroy()
      if (!server.listening) return
      const closed = once(server, 'close')
      server.close()
      server.closeAllConnections()
      await closed
    }
  }
  return target
}

/** A client WebSocket with its messages queued, its 101's headers and its close. */
export interface WsClient {
  ws: WebSocket
  /** The 101's headers. */
  headers: IncomingHttpHeaders
  /** The next message, as text. */
  next (timeoutMs?: number): Promise<string>
  /** Sends `text` and waits for the answer. */
  ask (text: string): Promise<string>
  /** Resolves with the close code and reason once the socket closed. */
  closed: Promise<{ code: number, reason: string }>
}

/** Opens a WebSocket to `url` (ws://…) with `headers`; rejects with the status of a refused upgrade. */
export async function openWs (t: Tap, url: string, options: WebSocket.ClientOptions = {}): Promise<WsClient> {
  const ws = new WebSocket(url, options)
  t.teardown(() => ws.terminate())
  const queue: string[] = []
  const waiting: Array<(text: string) => void> = []
  ws.on('message', (data) => {
    const text = String(data)
    const next = waiting.shift()
    if (next !== undefined) next(text)
    else queue.push(text)
  })
  const closed = new Promise<{ code: number, reason: string }>((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: String(reason) }))
  })
  let headers: IncomingHttpHeaders = {}
  ws.on('upgrade', (res) => { headers = res.headers })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('unexpected-response', (_req, res) => {
      reject(Object.assign(new Error(`upgrade answered ${res.statusCode}`), { statusCode: res.statusCode, headers: res.headers }))
      res.resume()
    })
    ws.once('error', reject)
  })
  const next = (timeoutMs = 5000): Promise<string> => {
    const queued = queue.shift()
    if (queued !== undefined) return Promise.resolve(queued)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no message within the deadline')), timeoutMs)
      waiting.push((text) => {
        clearTimeout(timer)
        resolve(text)
      })
    })
  }
  return {
    ws,
    headers,
    next,
    async ask (text) {
      ws.send(text)
      return next()
    },
    closed
  }
}

/** The `name=value` pairs of Set-Cookie lines, for a Cookie header. */
export function cookieHeader (setCookie: string | string[] | undefined): string {
  if (setCookie === undefined) return ''
  return (Array.isArray(setCookie) ? setCookie : [setCookie]).map((line) => line.split(';')[0]).join('; ')
}

/** A valid upgrade request's head, raw, for `path` with extra header lines. */
export function upgradeRequest (path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`
}
