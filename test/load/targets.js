// The load suite's targets: real node:http servers on 127.0.0.1, each answering with its id in
// `x-served-by` and counting what it got, with switches for the faults the suite injects. Each
// also echoes WebSocket messages on the same port (`ws`, as an app's backend would).
import { once } from 'node:events'
import { createServer } from 'node:http'
import { WebSocketServer } from 'ws'

/** The path the gateway's active health checks ask for. */
export const HEALTH_PATH = '/health'

/** How long `kill()` and `restart()` may take before the suite gives up on them. */
const SERVER_OP_TIMEOUT_MS = 5000
/** `restart()` retries a port still in use this often, this far apart. */
const LISTEN_ATTEMPTS = 50
const LISTEN_RETRY_MS = 100

/**
 * One target. Paths: `/health` answers `healthStatus` (200 unless a fault flips it);
 * `/slow/<ms>`, `/burst/<ms>` answer after that long; every other path at once. Every answer is
 * a small JSON body with `x-served-by: <id>`, after the whole request body was read. The fault
 * switches apply to every path, health checks included, except `healthStatus`.
 * A WebSocket upgrade on any path is accepted with `x-served-by: <id>` on its 101, and each text
 * message is echoed as `<id>:<message>`. The faults: `kill` drops every WebSocket (a dead
 * process); `hang` holds upgrades unanswered (open sockets still echo: only new requests hang);
 * `reset` destroys every upgrade as it arrives (and, by `dropWebSockets()`, the open sockets);
 * `slow` answers upgrades and echoes `extraDelayMs` late.
 */
export class LoadTarget {
  /** @param {string} id */
  constructor (id) {
    this.id = id
    this.port = 0
    /** 'normal' | 'hang' | 'reset' */
    this.mode = 'normal'
    /** Added to every answer while the target is made slow. */
    this.extraDelayMs = 0
    /** What `/health` answers. */
    this.healthStatus = 200
    /** False between `kill()` and `restart()`. */
    this.up = false
    this.counts = {
      requests: 0,
      healthChecks: 0,
      answered: 0,
      healthAnswered: 0,
      /** Responses whose connection closed before they were sent (the gateway gave up, or a kill). */
      abandoned: 0,
      /** Requests whose connection this target destroyed (reset fault). */
      resets: 0,
      /** Requests held unanswered by the hang fault. */
      held: 0,
      bodyBytes: 0,
      connections: 0,
      peakConnections: 0,
      peakInFlight: 0,
      /** WebSocket upgrades received, accepted (101), held by a hang, destroyed by a reset. */
      wsUpgrades: 0,
      wsAccepted: 0,
      wsHeld: 0,
      wsResets: 0,
      /** Open WebSockets destroyed by kill() or dropWebSockets(), without a Close. */
      wsDropped: 0,
      wsMessages: 0,
      wsEchoed: 0,
      peakWebSockets: 0,
      /** The close code of each WebSocket that closed, as this target saw it: code → count. */
      wsCloses: {}
    }
    this.inFlight = 0
    /** @type {Set<() => void>} answers held by the hang fault */
    this.held = new Set()
    /** @type {Set<import('node:net').Socket>} */
    this.sockets = new Set()
    /** @type {import('node:http').Server | null} */
    this.server = null
    /** @type {Set<import('ws').WebSocket>} */
    this.webSockets = new Set()
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false })
    this.wss.on('headers', (headers) => { headers.push(`x-served-by: ${this.id}`) })
  }

  get url () {
    return `http://127.0.0.1:${this.port}`
  }

  /** Listens on 127.0.0.1 (a free port the first time, the same port afterwards). */
  async start () {
    let lastError = null
    for (let attempt = 0; attempt < LISTEN_ATTEMPTS; attempt++) {
      const server = createServer({ keepAliveTimeout: 30_000 }, (req, res) => this.#handle(req, res))
      server.on('connection', (socket) => {
        this.sockets.add(socket)
        this.counts.connections++
        if (this.sockets.size > this.counts.peakConnections) this.counts.peakConnections = this.sockets.size
        socket.on('close', () => this.sockets.delete(socket))
      })
      server.on('clientError', (err, socket) => { socket.destroy(err) })
      server.on('upgrade', (req, socket, head) => this.#upgrade(req, socket, head))
      try {
        server.listen(this.port, '127.0.0.1')
        await withTimeout(once(server, 'listening'), SERVER_OP_TIMEOUT_MS, `${this.id} listen`)
        this.server = server
        this.port = /** @type {import('node:net').AddressInfo} */ (server.address()).port
        this.up = true
        return
      } catch (err) {
        lastError = err
        server.close()
        if (err?.code !== 'EADDRINUSE') break
        await sleep(LISTEN_RETRY_MS)
      }
    }
    throw new Error(`target ${this.id} could not listen on port ${this.port}: ${lastError?.message}`)
  }

  /** Stops listening and destroys every connection, as a killed process does; held answers are dropped. */
  async kill () {
    const server = this.server
    if (server === null) return
    this.up = false
    this.server = null
    this.held.clear()
    const closed = once(server, 'close')
    server.close()
    server.closeAllConnections()
    this.dropWebSockets()
    for (const socket of this.sockets) socket.destroy()
    await withTimeout(closed, SERVER_OP_TIMEOUT_MS, `${this.id} close`)
  }

  /** Listens again on the same port. */
  async restart () {
    if (this.server !== null) return
    await this.start()
  }

  /** Answers every request the hang fault held. */
  release () {
    const held = [...this.held]
    this.held.clear()
    for (const answer of held) answer()
  }

  /** Destroys every open WebSocket's connection without a Close, as a reset or a dead process does. */
  dropWebSockets () {
    for (const ws of this.webSockets) {
      this.counts.wsDropped++
      ws.terminate()
    }
    this.webSockets.clear()
  }

  /** Stops for good (end of the run). */
  async close () {
    this.mode = 'normal'
    this.release()
    await this.kill()
  }

  /**
   * @param {import('node:http').IncomingMessage} req
   * @param {import('node:http').ServerResponse} res
   */
  #handle (req, res) {
    const counts = this.counts
    const url = req.url ?? '/'
    const health = url === HEALTH_PATH
    if (health) counts.healthChecks++
    else counts.requests++
    if (this.mode === 'reset') {
      counts.resets++
      req.socket.destroy()
      return
    }
    this.inFlight++
    if (this.inFlight > counts.peakInFlight) counts.peakInFlight = this.inFlight
    let finished = false
    res.on('close', () => {
      this.inFlight--
      if (!finished) counts.abandoned++
    })
    req.on('error', () => {})
    let bytes = 0
    req.on('data', (chunk) => { bytes += chunk.length })
    req.on('end', () => {
      counts.bodyBytes += bytes
      const answer = () => {
        if (res.destroyed || res.writableEnded) return
        finished = true
        if (health) {
          counts.healthAnswered++
          res.writeHead(this.healthStatus, { 'content-type': 'text/plain', 'content-length': '2', 'x-served-by': this.id })
          res.end(this.healthStatus === 200 ? 'ok' : 'no')
          return
        }
        counts.answered++
        const body = `{"target":"${this.id}","n":${counts.answered},"bytes":${bytes}}`
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'x-served-by': this.id })
        res.end(body)
      }
      if (this.mode === 'hang') {
        counts.held++
        this.held.add(answer)
        res.on('close', () => this.held.delete(answer))
        return
      }
      const delay = /^\/(?:slow|burst)\/(\d+)/.exec(url)
      const delayMs = (delay === null ? 0 : Number(delay[1])) + this.extraDelayMs
      if (delayMs > 0) setTimeout(answer, delayMs)
      else answer()
    })
  }

  /**
   * @param {import('node:http').IncomingMessage} req
   * @param {import('node:stream').Duplex} socket
   * @param {Buffer} head
   */
  #upgrade (req, socket, head) {
    const counts = this.counts
    counts.wsUpgrades++
    socket.on('error', () => {})
    if (this.mode === 'reset') {
      counts.wsResets++
      socket.destroy()
      return
    }
    const accept = () => {
      if (socket.destroyed || !socket.writable) return
      this.wss.handleUpgrade(req, socket, head, (ws) => this.#echo(ws))
    }
    if (this.mode === 'hang') {
      counts.wsHeld++
      this.held.add(accept)
      socket.on('close', () => this.held.delete(accept))
    } else if (this.extraDelayMs > 0) {
      setTimeout(accept, this.extraDelayMs)
    } else {
      accept()
    }
  }

  /** @param {import('ws').WebSocket} ws */
  #echo (ws) {
    const counts = this.counts
    counts.wsAccepted++
    this.webSockets.add(ws)
    if (this.webSockets.size > counts.peakWebSockets) counts.peakWebSockets = this.webSockets.size
    ws.on('error', () => {})
    ws.on('close', (code) => {
      this.webSockets.delete(ws)
      counts.wsCloses[code] = (counts.wsCloses[code] ?? 0) + 1
    })
    ws.on('message', (data) => {
      counts.wsMessages++
      const send = () => {
        if (ws.readyState !== ws.OPEN) return
        counts.wsEchoed++
        ws.send(`${this.id}:${data}`)
      }
      if (this.extraDelayMs > 0) setTimeout(send, this.extraDelayMs)
      else send()
    })
  }
}

/** Starts `count` targets `t0`, `t1`, … on 127.0.0.1. */
export async function startTargets (count) {
  const targets = []
  for (let i = 0; i < count; i++) {
    const target = new LoadTarget(`t${i}`)
    await target.start()
    targets.push(target)
  }
  return targets
}

export function sleep (ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Resolves or rejects with `promise`, or rejects after `ms`. */
export function withTimeout (promise, ms, what) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
