import { randomBytes, randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer } from 'node:http'
import { WebSocketServer } from 'ws'

export const SESSION_COOKIE = 'shop_session'
/** The account app's session cookie, named as Express's session middleware names it. */
export const ACCOUNT_COOKIE = 'connect.sid'
/** A user name: 1 to 32 of `A-Z a-z 0-9 space _ -`, not only spaces. */
export const USER_NAME = /^(?=.*[^ ])[A-Za-z0-9 _-]{1,32}$/

const MAX_BODY_BYTES = 4096
const MAX_NAME_LENGTH = 60
// Every request without a known session makes one; the oldest go first so memory stays bounded.
const MAX_SESSIONS = 10_000
// Logins are bounded the same way, and kept apart: a burst of carts does not log anyone out.
const MAX_ACCOUNT_SESSIONS = 1000
/** How often the live feed tells each socket about its cart. */
const LIVE_TICK_MS = 1000
/** The gateway's hand-off header: the backend a re-pinned client was on (see the plugin's `handoffHeaders`). */
export const PREVIOUS_TARGET_HEADER = 'x-sticky-previous-target'
/** Proves a request to `/internal/*` comes from a peer backend, not a client through the gateway. */
const INTERNAL_TOKEN_HEADER = 'x-internal-token'
/** How long a backend waits for a peer's cart before it answers without it. */
const HANDOFF_TIMEOUT_MS = 1000

/**
 * Starts one demo backend on an ephemeral port of 127.0.0.1, with two apps that keep their
 * sessions in its own memory, and names itself in `x-served-by` on every response.
 *
 * The cart app, keyed by a session id it sets as the `shop_session` cookie:
 *
 * - `GET /cart` → `{ servedBy, sessionKnown, items: [{ name, quantity }] }`
 * - `POST /cart/items` with JSON `{ name }` → adds one of `name`, answers the cart
 * - `DELETE /cart/items` → empties the cart, answers it
 *
 * The account app, whose login sets `connect.sid` (what the gateway's app-cookie stickiness follows);
 * each answers `{ backend, user, sessionKnown, visits }`:
 *
 * - `POST /account/login` with JSON `{ user }` (or `?user=`) → a new session for that user name
 *   (1 to 32 of `A-Z a-z 0-9 space _ -`, else 400) and its cookie
 * - `GET /account/me` → the session's user and how often it asked; `sessionKnown: false` and no
 *   user when this process has no such session (never logged in here, or lost with a restart)
 * - `POST /account/logout` → forgets the session and deletes the cookie (`Max-Age=0`)
 *
 * And `GET /health` → `{ status: 'ok', servedBy }`, for the gateway's health checks (no session).
 *
 * Taking sessions over: a `/cart` (or `/account`) request whose `x-sticky-previous-target` header
 * (the gateway's hand-off header) names a peer, for a `shop_session` (or `connect.sid`) this
 * process does not know, first copies that cart (or login) from the peer (`GET
 * /internal/cart/<id>` or `/internal/account/<id>` on it, with `internalToken`); its answer then
 * says `takenOverFrom: <peer id>`. `peerUrl(id)` gives a running peer's URL, or undefined. A
 * drained backend that still runs so hands its sessions to the backends its clients move to.
 *
 * The live feed, a WebSocket at `/cart/live`: once a second, and whenever its cart changes, it
 * sends `{ servedBy, sessionKnown, count }` for the cart its `shop_session` cookie names (on this
 * process). Through the gateway it lands on the same backend as the cart, by the same cookie.
 *
 * `stop()` closes the server and every connection, so connections are refused, and forgets
 * every cart and login, like a killed process; `start()` listens again on the same port.
 */
export async function startBackend (id, { peerUrl = () => undefined, internalToken = null } = {}) {
  let carts = new Map()
  /** Login sessions by `connect.sid` value: `{ user, visits }`, oldest first. */
  let accounts = new Map()
  let server = null
  let port = 0
  /** The live feed's sockets, each with the cart session it follows. */
  const live = new Map()
  const feed = new WebSocketServer({ noServer: true })
  let ticker = null
  // start() and stop() run one at a time, in the order they were called.
  let queue = Promise.resolve()

  function serialized (fn) {
    const run = queue.then(fn)
    queue = run.catch(() => {})
    return run
  }

  function handle (req, res) {
    res.setHeader('x-served-by', id)
    const path = (req.url ?? '/').split('?')[0]
    // Before sessionOf(): a health check must not make a session, nor a cookie, every few seconds.
    if (path === '/health' && req.method === 'GET') return sendJson(res, 200, { status: 'ok', servedBy: id })
    if (path.startsWith('/internal/') && req.method === 'GET') return answerInternal(req, res, path)
    // A client moved here from a peer: take its cart or login over before answering.
    const previous = req.headers[PREVIOUS_TARGET_HEADER]
    const kind = path.startsWith('/cart') ? 'cart' : path.startsWith('/account') ? 'account' : null
    if (kind !== null && typeof previous === 'string' && previous !== id) {
      takeOver(req, kind, previous).then(() => route(req, res, path))
      return
    }
    route(req, res, path)
  }

  function route (req, res, path) {
    if (path === '/cart' && req.method === 'GET') return answerCart(req, res)
    if (path === '/cart/items' && req.method === 'DELETE') {
      const session = sessionOf(req, res)
      session.items.clear()
      answerCart(req, res, session)
      return tell(session.items)
    }
    if (path === '/cart/items' && req.method === 'POST') return addItem(req, res)
    if (path === '/account/login' && req.method === 'POST') return login(req, res)
    if (path === '/account/me' && req.method === 'GET') return answerAccount(res, accountOf(req), true, req.takenOverFrom)
    if (path === '/account/logout' && req.method === 'POST') return logout(req, res)
    sendJson(res, 404, { error: 'Not Found', message: `${req.method} ${path} is not a route of ${id}`, servedBy: id })
  }

  /**
   * A peer asks for a session to take over (`/internal/cart/<shop_session>` or
   * `/internal/account/<connect.sid>`): only with the peers' token, so never for a client through
   * the gateway. A real deployment would authenticate its peers (mTLS) or share a store instead.
   */
  function answerInternal (req, res, path) {
    const match = /^\/internal\/(cart|account)\/([^/]+)$/.exec(path)
    let sessionId = null
    try {
      sessionId = match === null ? null : decodeURIComponent(match[2])
    } catch {}
    const found = sessionId === null ? undefined : match[1] === 'cart' ? carts.get(sessionId) : accounts.get(sessionId)
    if (internalToken === null || req.headers[INTERNAL_TOKEN_HEADER] !== internalToken || found === undefined) {
      return sendJson(res, 404, { error: 'Not Found', message: 'no such session', servedBy: id })
    }
    if (match[1] === 'cart') return sendJson(res, 200, { servedBy: id, items: [...found].map(([name, quantity]) => ({ name, quantity })) })
    sendJson(res, 200, { servedBy: id, user: found.user, visits: found.visits })
  }

  /**
   * Copies the request's cart (`kind` 'cart') or login ('account') from peer `peerId` when this
   * process does not know its session; a peer that is gone or slow leaves the request as it is.
   */
  async function takeOver (req, kind, peerId) {
    const sessions = kind === 'cart' ? carts : accounts
    const sessionId = readCookie(req.headers.cookie, kind === 'cart' ? SESSION_COOKIE : ACCOUNT_COOKIE)
    const url = peerUrl(peerId)
    if (sessionId === undefined || sessions.has(sessionId) || url === undefined || internalToken === null) return
    try {
      const res = await fetch(`${url}/internal/${kind}/${encodeURIComponent(sessionId)}`, {
        headers: { [INTERNAL_TOKEN_HEADER]: internalToken },
        signal: AbortSignal.timeout(HANDOFF_TIMEOUT_MS)
      })
      if (!res.ok) return
      const body = await res.json()
      // The process may have been stopped meanwhile (its maps replaced), or the session made here.
      const current = kind === 'cart' ? carts : accounts
      if (current.has(sessionId)) return
      if (kind === 'cart') {
        if (!Array.isArray(body.items)) return
        if (carts.size >= MAX_SESSIONS) carts.delete(carts.keys().next().value)
        carts.set(sessionId, new Map(body.items.map(({ name, quantity }) => [String(name), Number(quantity)])))
      } else {
        if (typeof body.user !== 'string') return
        if (accounts.size >= MAX_ACCOUNT_SESSIONS) accounts.delete(accounts.keys().next().value)
        accounts.set(sessionId, { user: body.user, visits: Number(body.visits) || 0 })
      }
      req.takenOverFrom = peerId
    } catch {}
  }

  /** The request's session; a new one (and its cookie) when the cookie names none of this process. */
  function sessionOf (req, res) {
    const sessionId = readCookie(req.headers.cookie, SESSION_COOKIE)
    const known = sessionId === undefined ? undefined : carts.get(sessionId)
    if (known !== undefined) return { known: true, items: known }
    if (carts.size >= MAX_SESSIONS) carts.delete(carts.keys().next().value)
    const fresh = randomUUID()
    const items = new Map()
    carts.set(fresh, items)
    res.setHeader('set-cookie', `${SESSION_COOKIE}=${fresh}; Path=/; HttpOnly; SameSite=Lax`)
    return { known: false, items }
  }

  function answerCart (req, res, session = sessionOf(req, res)) {
    const items = [...session.items].map(([name, quantity]) => ({ name, quantity }))
    const body = { servedBy: id, sessionKnown: session.known, items }
    if (req.takenOverFrom !== undefined) body.takenOverFrom = req.takenOverFrom
    sendJson(res, 200, body)
  }

  function addItem (req, res) {
    readBody(req, res, (body) => {
      let name
      try {
        name = JSON.parse(body.toString('utf8')).name
      } catch {}
      if (typeof name !== 'string' || name.trim() === '' || name.length > MAX_NAME_LENGTH) {
        return sendJson(res, 400, { error: 'Bad Request', message: `send JSON { "name": "<1 to ${MAX_NAME_LENGTH} characters>" }`, servedBy: id })
      }
      const session = sessionOf(req, res)
      name = name.trim()
      session.items.set(name, (session.items.get(name) ?? 0) + 1)
      answerCart(req, res, session)
      tell(session.items)
    })
  }

  /** The request's login session of this process, or undefined: unlike a cart, never made on the way. */
  function accountOf (req) {
    const sessionId = readCookie(req.headers.cookie, ACCOUNT_COOKIE)
    const account = sessionId === undefined ? undefined : accounts.get(sessionId)
    return account === undefined ? undefined : { sessionId, account }
  }

  function answerAccount (res, session, visit = false, takenOverFrom = undefined) {
    if (session !== undefined && visit) session.account.visits++
    const body = {
      backend: id,
      user: session?.account.user ?? null,
      sessionKnown: session !== undefined,
      visits: session?.account.visits ?? 0
    }
    if (takenOverFrom !== undefined) body.takenOverFrom = takenOverFrom
    sendJson(res, 200, body)
  }

  function login (req, res) {
    readBody(req, res, (body) => {
      let user
      if (body.length === 0) {
        user = new URL(req.url ?? '/', 'http://backend').searchParams.get('user') ?? undefined
      } else {
        try {
          user = JSON.parse(body.toString('utf8')).user
        } catch {}
      }
      if (typeof user !== 'string' || !USER_NAME.test(user)) {
        return sendJson(res, 400, { error: 'Bad Request', message: 'send JSON { "user": "<1 to 32 of A-Z a-z 0-9 space _ ->" }, or ?user=', servedBy: id })
      }
      // A login always starts a new session id (no session fixation); the previous one ends here.
      const previous = accountOf(req)
      if (previous !== undefined) accounts.delete(previous.sessionId)
      if (accounts.size >= MAX_ACCOUNT_SESSIONS) accounts.delete(accounts.keys().next().value)
      const sessionId = randomBytes(24).toString('base64url')
      const account = { user, visits: 0 }
      accounts.set(sessionId, account)
      res.setHeader('set-cookie', `${ACCOUNT_COOKIE}=${sessionId}; Path=/; HttpOnly; SameSite=Lax`)
      answerAccount(res, { sessionId, account })
    })
  }

  function logout (req, res) {
    const session = accountOf(req)
    if (session !== undefined) accounts.delete(session.sessionId)
    // Deleted whether or not this process knew it: the browser drops it, and the gateway its AWSALBAPP-*.
    res.setHeader('set-cookie', `${ACCOUNT_COOKIE}=; Max-Age=0; Path=/`)
    answerAccount(res, undefined)
  }

  /** Opens a live-feed socket on `/cart/live`; any other upgrade is refused with 404. */
  function upgrade (req, socket, head) {
    socket.on('error', () => {})
    if ((req.url ?? '/').split('?')[0] !== '/cart/live') {
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
      return
    }
    feed.handleUpgrade(req, socket, head, (ws) => {
      const sessionId = readCookie(req.headers.cookie, SESSION_COOKIE)
      live.set(ws, sessionId)
      ws.on('close', () => live.delete(ws))
      ws.on('error', () => {})
      // Messages from the page are only a liveness check: answered with the same state.
      ws.on('message', () => send(ws))
      send(ws)
    })
  }

  /** What a live socket is told: this backend, and the size of its cart here. */
  function send (ws) {
    const items = carts.get(live.get(ws))
    let count = 0
    for (const quantity of items?.values() ?? []) count += quantity
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ servedBy: id, sessionKnown: items !== undefined, count }))
  }

  /** Tells the sockets following `items` (a cart that just changed). */
  function tell (items) {
    for (const ws of live.keys()) if (carts.get(live.get(ws)) === items) send(ws)
  }

  /** Collects a request body of up to MAX_BODY_BYTES for `use`; a larger one is answered 413. */
  function readBody (req, res, use) {
    const chunks = []
    let size = 0
    req.on('data', (chunk) => {
      size += chunk.length
      if (size <= MAX_BODY_BYTES) chunks.push(chunk)
    })
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) return sendJson(res, 413, { error: 'Payload Too Large', message: `at most ${MAX_BODY_BYTES} bytes`, servedBy: id })
      use(Buffer.concat(chunks))
    })
  }

  const backend = {
    id,
    get url () { return `http://127.0.0.1:${port}` },
    get running () { return server !== null },
    start: () => serialized(async () => {
      if (server !== null) return
      const next = createServer(handle)
      next.on('upgrade', upgrade)
      next.listen(port, '127.0.0.1')
      // Rejects with the 'error' (e.g. EADDRINUSE) if the port could not be had again.
      await once(next, 'listening')
      port = next.address().port
      server = next
      ticker = setInterval(() => { for (const ws of live.keys()) send(ws) }, LIVE_TICK_MS)
      ticker.unref()
    }),
    stop: () => serialized(async () => {
      if (server === null) return
      const closing = server
      server = null
      carts = new Map()
      accounts = new Map()
      clearInterval(ticker)
      // A killed process drops its sockets: no Close frame from here.
      for (const ws of live.keys()) ws.terminate()
      live.clear()
      const closed = once(closing, 'close')
      closing.close()
      closing.closeAllConnections()
      await closed
    })
  }
  await backend.start()
  return backend
}

function readCookie (header, name) {
  if (header === undefined) return undefined
  for (const pair of header.split(';')) {
    const at = pair.indexOf('=')
    if (at !== -1 && pair.slice(0, at).trim() === name) return pair.slice(at + 1).trim()
  }
  return undefined
}

function sendJson (res, status, body) {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}
