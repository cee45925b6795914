// The load suite's clients: sticky sessions, each with its own cookie jar, sending requests in a
// loop through undici keep-alive pools to the gateway, the bursts of long requests, and the
// WebSocket clients (a socket and HTTP requests sharing one jar). Every request, response and
// message is counted here, in the totals and per phase: a request in the phase running when it
// was sent, its outcome in the phase running when that came.
import { createHistogram } from 'node:perf_hooks'
import { Pool } from 'undici'
import { WebSocket } from 'ws'
import { sleep } from './targets.js'

/** Hard bounds on every loop, besides the time bounds. */
const MAX_SESSIONS_PER_CLIENT = 10_000
const MAX_REQUESTS_PER_SESSION = 100_000
const MAX_HARVEST_ATTEMPTS = 64
/** Lost requests, moves and misroutes kept in full (all are counted). */
const KEEP_DETAILS = 20_000
/** The paths a steady client asks for, by weight: reads, small JSON posts, some slow reads. */
const ITEMS = 500
/** The slowest answers to steady clients kept per phase. */
const SLOWEST_KEPT = 5

/** A WebSocket client reconnects at most this many times in a row before it starts a new session. */
const MAX_RECONNECT_ATTEMPTS = 30
const MAX_MESSAGES_PER_SOCKET = 1_000_000
/**
 * One message in this many is large (WS_LARGE_BYTES), so that frames span many TCP chunks and
 * the gateway's Close at a drain or shutdown must wait for a frame's end.
 */
const WS_LARGE_EVERY = 20
const WS_LARGE_BYTES = [16_384, 131_072]

/** Counters of the WebSocket clients in one phase, or in the whole run. */
export function newWsCounts () {
  return {
    /** Upgrade requests sent, answered 101, answered otherwise (status → count, gateway code → count). */
    handshakes: 0,
    opened: 0,
    refused: {},
    codes: {},
    /** Upgrades that failed in transport (error code → count), or got no answer within the deadline. */
    transport: {},
    handshakesLost: 0,
    /** Messages sent; echoed; cut (their socket closed before the echo); lost (no echo within the deadline, the socket still open). */
    sent: 0,
    echoed: 0,
    cut: 0,
    lost: 0,
    /** Echoes from another target than the one whose 101 opened the socket. */
    misrouted: 0,
    /** Of those, large ones (a message of WS_LARGE_BYTES). */
    large: 0,
    /** Sockets the client did not close itself: close code → count (1006: no Close frame came). */
    closes: {},
    /** Sockets the client closed (1000) at the end of its session. */
    closedByClient: 0,
    /** Connections opened again after the gateway closed one, or after a refused upgrade. */
    reconnects: 0,
    echoLatency: createHistogram()
  }
}

/** Counters of one phase, or of the whole run. */
export function newCounts () {
  return {
    sent: 0,
    answered: 0,
    status: {},
    codes: {},
    transport: {},
    lost: 0,
    /** Answered, but later than the gateway's own bound (connect + idle timeout + undici's 1 s tick). */
    late: 0,
    /** A 2xx whose `x-served-by` is not the target `request.affinity` named. */
    misrouted: 0,
    latency: createHistogram()
  }
}

function bump (map, key) {
  map[key] = (map[key] ?? 0) + 1
}

/** A browser's cookie jar reduced to what the gateway sets: name → value, deletions honoured. */
class Jar {
  cookies = new Map()

  store (setCookie) {
    if (setCookie === undefined) return
    for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const [pair, ...attributes] = line.split(';')
      const at = pair.indexOf('=')
      if (at <= 0) continue
      const name = pair.slice(0, at).trim()
      const maxAge = attributes.find((attribute) => /^\s*max-age=/i.test(attribute))
      const expires = attributes.find((attribute) => /^\s*expires=/i.test(attribute))
      const gone = maxAge !== undefined ? Number(maxAge.split('=')[1]) <= 0 : expires !== undefined && Date.parse(expires.split('=')[1]) <= Date.now()
      if (gone) this.cookies.delete(name)
      else this.cookies.set(name, pair.slice(at + 1).trim())
    }
  }

  header () {
    if (this.cookies.size === 0) return undefined
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ')
  }

  copy () {
    const jar = new Jar()
    for (const [name, value] of this.cookies) jar.cookies.set(name, value)
    return jar
  }
}

function between ([low, high]) {
  return low + Math.random() * (high - low)
}

/**
 * The clients of one run and everything they saw. `phase` is the phase now running (set by the
 * driver); every request counts in it and in `totals`.
 */
export class Load {
  /**
   * @param {object} settings
   * @param {string} settings.gatewayUrl
   * @param {number} settings.clients steady clients
   * @param {number} settings.burstSize concurrent long requests of a burst
   * @param {number} settings.deadlineMs a request not answered within this is lost
   * @param {number} settings.lateMs an answer after this is late (the gateway's own bound)
   * @param {[number, number]} settings.thinkMs pause between two requests of a client
   * @param {[number, number]} settings.sessionMs how long a client keeps its cookie jar
   * @param {[number, number]} settings.slowPathMs delay of the steady clients' slow paths
   * @param {number} [settings.wsClients] WebSocket clients
   * @param {[number, number]} [settings.wsIntervalMs] pause between two messages of a socket
   * @param {[number, number]} [settings.wsHttpThinkMs] pause between two HTTP requests of a WebSocket client
   * @param {[number, number]} [settings.wsBackoffMs] a reconnect's first and longest pause
   */
  constructor (settings) {
    this.settings = settings
    this.totals = newCounts()
    /** The same counts by kind of client: steady, burst, upload, probe (finding a cookie for a burst). */
    this.byKind = {}
    this.phase = { name: 'start-up', counts: newCounts() }
    this.stopped = false
    this.inFlight = 0
    this.sessions = []
    this.moves = []
    this.movesCounted = 0
    this.lostRequests = []
    this.misroutes = []
    this.nextSession = 0
    this.wsTotals = newWsCounts()
    /** Sockets the gateway closed (not their client): their target and when, for report.js to judge. */
    this.wsCloses = []
    /** Messages lost, kept in full (all are counted). */
    this.lostMessages = []
    /** The sockets left open when the clients stopped, for app.close() to close. */
    this.openAtStop = new Set()
    /** What those sockets got: close code → count. */
    this.shutdownCloses = {}
    // headersTimeout and bodyTimeout off: the suite's own deadline decides what is lost.
    const options = { pipelining: 1, headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 30_000 }
    this.steadyPool = new Pool(settings.gatewayUrl, { ...options, connections: settings.clients + (settings.wsClients ?? 0) + 8 })
    this.burstPool = new Pool(settings.gatewayUrl, { ...options, connections: settings.burstSize + 8 })
    this.loops = []
  }

  /** Starts the steady and WebSocket clients; each runs sessions back to back until `stop()`. */
  startClients () {
    for (let i = 0; i < this.settings.clients; i++) this.loops.push(this.#client(i))
    for (let i = 0; i < (this.settings.wsClients ?? 0); i++) this.loops.push(this.#wsClient(i))
  }

  async #client (index) {
    // Spread the start over the first think time, so 200 clients do not arrive in one tick.
    await sleep(Math.random() * this.settings.thinkMs[1])
    for (let n = 0; n < MAX_SESSIONS_PER_CLIENT && !this.stopped; n++) {
      const session = this.#newSession('steady', `c${index}`)
      const endsAt = Date.now() + between(this.settings.sessionMs)
      for (let i = 0; i < MAX_REQUESTS_PER_SESSION && !this.stopped && Date.now() < endsAt; i++) {
        await this.exchange(this.steadyPool, session, steadyRequest(this.settings.slowPathMs))
        if (!this.stopped) await sleep(between(this.settings.thinkMs))
      }
    }
  }

  /**
   * A WebSocket client: sessions back to back, each one cookie jar shared by a socket and HTTP
   * GETs, as a socket.io-style app's page has. The socket opens first (its 101 pins the jar),
   * then the GETs start; an upgrade and a GET are never in flight together, so that one answer's
   * cookie is in the jar before the other is sent (a browser's page could race them). Half the clients go through the bound route (`/ws/…`), half
   * through stickyProxy (`/upload/ws/…`).
   */
  async #wsClient (index) {
    await sleep(Math.random() * this.settings.wsIntervalMs[1])
    const path = index % 2 === 0 ? `/ws/w${index}` : `/upload/ws/w${index}`
    for (let n = 0; n < MAX_SESSIONS_PER_CLIENT && !this.stopped; n++) {
      const session = this.#newSession('ws', `w${index}`)
      session.lock = Promise.resolve()
      const endsAt = Date.now() + between(this.settings.sessionMs)
      const socket = this.#wsSocketLoop(session, path, endsAt)
      const http = this.#wsHttpLoop(session, endsAt)
      await Promise.all([socket, http])
    }
  }

  /** Runs `fn` once no other upgrade or request of the session is in flight. */
  #exclusive (session, fn) {
    const run = session.lock.then(fn)
    session.lock = run.catch(() => {})
    return run
  }

  /** The session's GETs, once its jar has a cookie (between two sockets too), until the session ends. */
  async #wsHttpLoop (session, endsAt) {
    for (let i = 0; i < MAX_REQUESTS_PER_SESSION && !this.stopped && Date.now() < endsAt; i++) {
      await sleep(between(this.settings.wsHttpThinkMs))
      if (this.stopped || Date.now() >= endsAt) break
      // Before the first answer to an upgrade the jar is empty: a GET then would be placed on its own.
      if (session.jar.cookies.size === 0) continue
      await this.#exclusive(session, () => this.exchange(this.steadyPool, session, { method: 'GET', path: `/item/${Math.floor(Math.random() * ITEMS)}` }))
    }
  }

  /**
   * The session's socket: opened, messages until the session ends, opened again after the
   * gateway closed it or refused the upgrade (pauses doubling from wsBackoffMs[0] to
   * wsBackoffMs[1], at most MAX_RECONNECT_ATTEMPTS in a row). When the clients stop, the open
   * socket is left open for app.close().
   */
  async #wsSocketLoop (session, path, endsAt) {
    let failures = 0
    let closedAt = null
    for (let n = 0; n < MAX_MESSAGES_PER_SOCKET && !this.stopped && Date.now() < endsAt; n++) {
      if (closedAt !== null || failures > 0) for (const counts of this.#wsCounts()) counts.reconnects++
      const socket = await this.#exclusive(session, () => this.#wsOpen(session, path, closedAt))
      if (socket === null) {
        if (++failures > MAX_RECONNECT_ATTEMPTS) return
        const [first, longest] = this.settings.wsBackoffMs
        await sleep(Math.min(longest, first * 2 ** (failures - 1)) * (0.5 + Math.random() / 2))
        continue
      }
      failures = 0
      const ended = await this.#wsConverse(session, socket, endsAt)
      if (ended !== 'closed') return
      closedAt = socket.closedAt
      const [first] = this.settings.wsBackoffMs
      await sleep(first * (0.5 + Math.random() / 2))
    }
  }

  #wsCounts () {
    return [this.phase.ws ??= newWsCounts(), this.wsTotals]
  }

  /**
   * One upgrade through the gateway with the session's cookies: the socket once open (its 101's
   * cookies stored, its target from `x-served-by`), or null when it was refused, failed or got
   * no answer within the deadline. The target it lands on is judged as any response's: a move
   * when the session was elsewhere (since `since`, when its last socket closed).
   */
  #wsOpen (session, path, since) {
    for (const counts of this.#wsCounts()) counts.handshakes++
    const sentAt = Date.now()
    const cookie = session.jar.header()
    const url = `${this.settings.gatewayUrl.replace(/^http/, 'ws')}${path}`
    const ws = new WebSocket(url, { headers: cookie === undefined ? {} : { cookie }, perMessageDeflate: false, followRedirects: false })
    this.inFlight++
    return new Promise((resolve) => {
      let done = false
      const finish = (value) => {
        if (done) return
        done = true
        clearTimeout(timer)
        this.inFlight--
        resolve(value)
      }
      // No answer to the upgrade within the deadline: lost, as a request would be.
      const timer = setTimeout(() => {
        for (const counts of this.#wsCounts()) counts.handshakesLost++
        if (this.lostMessages.length < KEEP_DETAILS) {
          this.lostMessages.push({ session: session.id, kind: 'upgrade', path, target: session.current, sentAt, phase: this.phase.name })
        }
        finish(null)
        ws.terminate()
      }, this.settings.deadlineMs)
      let served = null
      let decision = null
      ws.once('upgrade', (res) => {
        session.jar.store(res.headers['set-cookie'])
        served = typeof res.headers['x-served-by'] === 'string' ? res.headers['x-served-by'] : null
        const affinity = typeof res.headers['x-affinity'] === 'string' ? res.headers['x-affinity'] : null
        const decided = typeof res.headers['x-affinity-target'] === 'string' ? res.headers['x-affinity-target'] : null
        // The route decided before the target was tried: a refused connection went elsewhere.
        decision = decided !== null && decided !== served ? 'reassigned;target-unreachable' : affinity
      })
      ws.once('open', () => {
        if (done) {
          ws.terminate()
          return
        }
        for (const counts of this.#wsCounts()) counts.opened++
        const socket = this.#wsSocket(session, ws, served)
        if (served !== null) this.#observe(session, served, decision, 101, since ?? sentAt, 'ws', path)
        finish(socket)
      })
      ws.once('unexpected-response', (req, res) => {
        if (done) {
          ws.terminate()
          return
        }
        session.jar.store(res.headers['set-cookie'])
        const chunks = []
        res.on('data', (chunk) => chunks.push(chunk))
        res.on('error', () => {})
        res.on('close', () => {
          for (const counts of this.#wsCounts()) {
            bump(counts.refused, res.statusCode)
            if (res.statusCode >= 400) bump(counts.codes, errorCode(Buffer.concat(chunks).toString(), res.statusCode))
          }
          ws.terminate()
          finish(null)
        })
      })
      ws.on('error', (err) => {
        if (done) return
        for (const counts of this.#wsCounts()) bump(counts.transport, err.code ?? err.message)
        finish(null)
      })
    })
  }

  /** An open socket: at most one message awaiting its echo, and how the socket closed. */
  #wsSocket (session, ws, target) {
    // byClient: 'ended' (closed at the end of its session) or 'dropped' (after a lost message).
    const socket = { ws, target, closed: false, closedAt: null, code: null, byClient: null, waiting: null, expected: null, large: false, closedPromise: null }
    socket.closedPromise = new Promise((resolve) => {
      ws.on('close', (code) => {
        socket.closed = true
        socket.closedAt = Date.now()
        socket.code = code
        if (this.openAtStop.delete(socket)) {
          bump(this.shutdownCloses, code)
        } else if (socket.byClient !== null) {
          if (socket.byClient === 'ended') for (const counts of this.#wsCounts()) counts.closedByClient++
        } else {
          for (const counts of this.#wsCounts()) bump(counts.closes, code)
          // largeInFlight: a target that dies while it echoes a large message may cut the frame
          // the gateway relays, which then cannot be followed by a Close (report.js excuses it).
          if (this.wsCloses.length < KEEP_DETAILS) this.wsCloses.push({ session: session.id, target, code, largeInFlight: socket.waiting !== null && socket.large, at: socket.closedAt, phase: this.phase.name })
        }
        socket.waiting?.('cut')
        resolve()
      })
    })
    ws.on('error', () => {})
    ws.on('message', (data) => {
      const text = String(data)
      const at = text.indexOf(':')
      if (text.slice(0, at) !== target) {
        for (const counts of this.#wsCounts()) counts.misrouted++
      }
      if (socket.expected === text.slice(at + 1)) socket.waiting?.('echoed')
    })
    return socket
  }

  /**
   * Messages on an open socket, each sent once the last was echoed, until the session ends
   * ('ended': the client closes it with 1000), the clients stop ('stopped': left open), the
   * socket closes ('closed') or a message is lost ('lost': the socket is dropped).
   */
  async #wsConverse (session, socket, endsAt) {
    const { ws } = socket
    for (let seq = 0; seq < MAX_MESSAGES_PER_SOCKET; seq++) {
      if (socket.closed) return 'closed'
      if (this.stopped) {
        this.openAtStop.add(socket)
        return 'stopped'
      }
      if (Date.now() >= endsAt) {
        socket.byClient = 'ended'
        ws.close(1000)
        await Promise.race([socket.closedPromise, sleep(this.settings.deadlineMs)])
        if (!socket.closed) ws.terminate()
        return 'ended'
      }
      const large = Math.random() < 1 / WS_LARGE_EVERY
      const message = large ? `${session.id}.${seq}.${'L'.repeat(Math.round(between(WS_LARGE_BYTES)))}` : `${session.id}.${seq}`
      const sentAt = Date.now()
      const startedAt = performance.now()
      for (const counts of this.#wsCounts()) {
        counts.sent++
        if (large) counts.large++
      }
      this.inFlight++
      let timer
      const outcome = await new Promise((resolve) => {
        socket.waiting = resolve
        socket.expected = message
        socket.large = large
        timer = setTimeout(() => resolve('lost'), this.settings.deadlineMs)
        ws.send(message)
      })
      clearTimeout(timer)
      socket.waiting = null
      socket.expected = null
      this.inFlight--
      for (const counts of this.#wsCounts()) {
        counts[outcome]++
        if (outcome === 'echoed') counts.echoLatency.record(Math.max(1, Math.round(performance.now() - startedAt)))
      }
      if (outcome === 'cut') return 'closed'
      if (outcome === 'lost') {
        if (this.lostMessages.length < KEEP_DETAILS) this.lostMessages.push({ session: session.id, kind: 'message', path: large ? `${message.slice(0, 24)}… (${message.length} bytes)` : message, target: socket.target, sentAt, phase: this.phase.name })
        socket.byClient = 'dropped'
        ws.terminate()
        await socket.closedPromise
        return 'closed'
      }
      await sleep(between(this.settings.wsIntervalMs))
    }
    return 'ended'
  }

  /** Waits until every socket left open at the stop has closed (app.close() closes them), or `boundMs`; true when all did. */
  async wsShutdown (boundMs) {
    const deadline = Date.now() + boundMs
    while (this.openAtStop.size > 0 && Date.now() < deadline) await sleep(20)
    return this.openAtStop.size === 0
  }

  #newSession (kind, client, jar = new Jar()) {
    const session = { id: this.nextSession++, kind, client, jar, startedAt: Date.now(), responses: 0, current: null, targets: new Set(), moves: 0 }
    this.sessions.push(session)
    return session
  }

  /**
   * Long requests pinned to `targetId`, `size` at a time, each client sending again as soon as
   * it is answered, until `untilMs`: kind `burst`, GETs the target answers after `holdMs`; kind
   * `upload`, POSTs whose small body trickles in over `holdMs` (stickyProxy streams it on).
   * Each client is a session of its own, with a cookie jar that starts pinned to the target.
   */
  async burst ({ kind, targetId, size, holdMs, untilMs }) {
    const jar = await this.#harvest(targetId)
    if (jar === null) return { started: false, note: `no cookie for ${targetId} after ${MAX_HARVEST_ATTEMPTS} new clients` }
    const loops = []
    for (let i = 0; i < size; i++) {
      const session = this.#newSession(kind, `${kind}${i}`, jar.copy())
      loops.push((async () => {
        for (let n = 0; n < MAX_REQUESTS_PER_SESSION && !this.stopped && Date.now() < untilMs; n++) {
          const request = kind === 'upload' ? uploadRequest(holdMs) : { method: 'GET', path: `/burst/${holdMs}` }
          // A failed request is not resent at once: a dead gateway is not hammered.
          if (await this.exchange(this.burstPool, session, request) === null) await sleep(50)
        }
      })())
    }
    await Promise.all(loops)
    return { started: true }
  }

  /** A cookie jar pinned to `targetId`: new clients until round robin places one there. */
  async #harvest (targetId) {
    for (let i = 0; i < MAX_HARVEST_ATTEMPTS && !this.stopped; i++) {
      const session = this.#newSession('probe', 'probe')
      const result = await this.exchange(this.burstPool, session, { method: 'GET', path: '/item/probe' })
      if (result !== null && result.target === targetId && result.status === 200) return session.jar
    }
    return null
  }

  /**
   * One request of `session`, counted from send to the end of its response body: its status,
   * the gateway's error `code`, a transport error, or lost when the deadline passed first. It
   * counts as sent in the phase running when it was sent, and its outcome (and a move) in the
   * phase running when the outcome came.
   * The session's cookie jar takes the response's cookies; a change of the target named by
   * `x-affinity-target` is a move, with the reason `x-affinity` gives.
   */
  async exchange (pool, session, { method, path, headers = {}, body }) {
    const kindCounts = this.byKind[session.kind] ??= newCounts()
    for (const counts of [this.phase.counts, this.totals, kindCounts]) counts.sent++
    this.inFlight++
    const sentAt = Date.now()
    const startedAt = performance.now()
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(), this.settings.deadlineMs)
    const cookie = session.jar.header()
    const requestHeaders = cookie === undefined ? headers : { ...headers, cookie }
    try {
      const response = await pool.request({
        method,
        path,
        headers: requestHeaders,
        body: typeof body === 'function' ? body(controller.signal) : body,
        signal: controller.signal
      })
      const text = await response.body.text()
      clearTimeout(timer)
      const phase = this.phase
      const all = [phase.counts, this.totals, kindCounts]
      const elapsedMs = performance.now() - startedAt
      const status = response.statusCode
      const h = response.headers
      const code = status >= 400 ? errorCode(text, status) : null
      for (const counts of all) {
        counts.answered++
        bump(counts.status, status)
        if (code !== null) bump(counts.codes, code)
        counts.latency.record(Math.max(1, Math.round(elapsedMs)))
        if (elapsedMs > this.settings.lateMs) counts.late++
      }
      session.jar.store(h['set-cookie'])
      const target = typeof h['x-affinity-target'] === 'string' ? h['x-affinity-target'] : null
      const affinity = typeof h['x-affinity'] === 'string' ? h['x-affinity'] : null
      if (session.kind === 'steady') {
        keepSlowest(phase, { ms: Math.round(elapsedMs), method, path, status, code, pinned: session.current, target, affinity, sentAt })
      }
      const servedBy = typeof h['x-served-by'] === 'string' ? h['x-served-by'] : null
      if (status >= 200 && status < 300 && servedBy !== target) {
        for (const counts of all) counts.misrouted++
        if (this.misroutes.length < KEEP_DETAILS) this.misroutes.push({ session: session.id, path, servedBy, target, affinity, at: Date.now(), phase: phase.name })
      }
      if (target !== null) this.#observe(session, target, affinity, status, sentAt, 'http', path)
      return { status, target, affinity }
    } catch (err) {
      clearTimeout(timer)
      const phase = this.phase
      const all = [phase.counts, this.totals, kindCounts]
      if (controller.signal.aborted) {
        for (const counts of all) counts.lost++
        if (this.lostRequests.length < KEEP_DETAILS) {
          this.lostRequests.push({ session: session.id, kind: session.kind, method, path, target: session.current, sentAt, phase: phase.name })
        }
      } else {
        const code = err?.code ?? err?.name ?? 'UNKNOWN'
        for (const counts of all) bump(counts.transport, code)
      }
      return null
    } finally {
      this.inFlight--
    }
  }

  /**
   * The session was answered by `target` (a response, or a socket's 101): a move when it was
   * on another one, judged by report.js against the fault windows from `sentAt` to now.
   */
  #observe (session, target, affinity, status, sentAt, channel, path) {
    session.responses++
    if (session.current !== null && session.current !== target) {
      session.moves++
      this.movesCounted++
      if (this.moves.length < KEEP_DETAILS) {
        this.moves.push({ session: session.id, kind: session.kind, channel, path, from: session.current, to: target, reason: affinity, status, sentAt, at: Date.now(), phase: this.phase.name })
      }
    }
    session.current = target
    session.targets.add(target)
  }

  /** Stops every loop after its current request; resolves when all have ended (or `boundMs` passed: false). */
  async stop (boundMs) {
    this.stopped = true
    let timer
    const ended = await Promise.race([
      Promise.all(this.loops).then(() => true),
      new Promise((resolve) => { timer = setTimeout(() => resolve(false), boundMs) })
    ])
    clearTimeout(timer)
    return ended
  }

  async close () {
    for (const socket of this.openAtStop) socket.ws.terminate()
    await Promise.all([this.steadyPool.destroy(), this.burstPool.destroy()])
  }
}

/** The phase's slowest answers to steady clients, slowest first. */
function keepSlowest (phase, entry) {
  const slowest = phase.slowest ??= []
  if (slowest.length >= SLOWEST_KEPT && entry.ms <= slowest[slowest.length - 1].ms) return
  slowest.push(entry)
  slowest.sort((a, b) => b.ms - a.ms)
  if (slowest.length > SLOWEST_KEPT) slowest.pop()
}

/** A steady client's next request: 70 % GET of an item, 20 % POST of a small JSON body, 10 % a slow GET. */
function steadyRequest (slowPathMs) {
  const roll = Math.random()
  const item = Math.floor(Math.random() * ITEMS)
  if (roll < 0.7) return { method: 'GET', path: `/item/${item}` }
  if (roll < 0.9) {
    const body = JSON.stringify({ sku: `sku-${item}`, qty: 1 + Math.floor(Math.random() * 5), note: 'x'.repeat(Math.floor(Math.random() * 200)) })
    return { method: 'POST', path: '/cart/items', headers: { 'content-type': 'application/json' }, body }
  }
  return { method: 'GET', path: `/slow/${Math.round(between(slowPathMs))}` }
}

/** A POST of 2 KiB whose body comes in 8 chunks spread over `holdMs` (a slow client upload). */
function uploadRequest (holdMs) {
  const chunks = 8
  const chunk = Buffer.alloc(256, 'u')
  return {
    method: 'POST',
    path: `/upload/${Math.floor(Math.random() * ITEMS)}`,
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(chunks * chunk.length) },
    body: (signal) => (async function * () {
      for (let i = 0; i < chunks; i++) {
        if (signal.aborted) return
        yield chunk
        await sleep(holdMs / chunks)
      }
    })()
  }
}

/** The gateway's error `code` from a JSON error body; `HTTP <status>` when there is none. */
function errorCode (text, status) {
  try {
    const parsed = JSON.parse(text)
    if (parsed !== null && typeof parsed.code === 'string') return parsed.code
  } catch {}
  return `HTTP ${status} (no code)`
}
