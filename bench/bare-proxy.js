// The `bare` row of the benchmark: the least a correct Node.js reverse proxy does, built from
// node:http and undici alone, as the ceiling a Node gateway can reach on the machine. No
// framework, no stickiness, no cookies, no X-Forwarded-*: round-robin over one keep-alive undici
// Pool per target, hop-by-hop headers dropped both ways, the response streamed back as it comes.
//
// It dispatches with its own undici handler, the layer under undici's request() and stream(),
// as lib/proxy.ts does: so the gap to the sticky rows is what Fastify and the plugin add, not a
// different undici API.
import { createServer } from 'node:http'
import { Pool } from 'undici'

/** Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate'])
/** And `Expect`: node:http has answered 100 Continue already, and undici refuses the header. */
const HOP_BY_HOP_REQUEST = new Set([...HOP_BY_HOP, 'expect'])

/** An http.Server forwarding every request to `origins` in turn, and a `close()` that ends it and its pools. */
export function createBareProxy (origins) {
  // The plugin's defaults: 128 connections per target, one request at a time on each.
  const pools = origins.map((origin) => new Pool(origin, { connections: 128, pipelining: 1 }))
  let next = 0
  const server = createServer((req, res) => {
    const pool = pools[next]
    next = (next + 1) % pools.length
    forward(pool, req, res)
  })
  const close = async () => {
    await new Promise((resolve) => server.close(resolve))
    await Promise.all(pools.map((pool) => pool.close()))
  }
  return { server, close }
}

function forward (pool, req, res) {
  const handler = new BareExchange(res)
  // The client left first: end the target's request too rather than hold a pooled connection.
  res.once('close', () => { if (!res.writableFinished) handler.abort() })
  pool.dispatch({ path: req.url, method: req.method, headers: requestHeaders(req.headers), body: hasBody(req) ? req : undefined }, handler)
}

function hasBody (req) {
  const length = req.headers['content-length']
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined
}

/** The client's headers without hop-by-hop ones, nor those its Connection header names. */
function requestHeaders (incoming) {
  const listed = connectionTokens(incoming.connection)
  const headers = {}
  for (const name in incoming) {
    if (!HOP_BY_HOP_REQUEST.has(name) && (listed === null || !listed.has(name))) headers[name] = incoming[name]
  }
  return headers
}

function connectionTokens (value) {
  if (value === undefined) return null
  return new Set(String(value).toLowerCase().split(',').map((token) => token.trim()))
}

/**
 * The undici dispatch handler of one request, writing the target's response onto `res` as it
 * arrives. The onHeaders/onData style, like lib/proxy.ts's: undici 7's pools call it directly.
 */
class BareExchange {
  #res
  #abort = null
  #resume = null
  #done = false

  constructor (res) {
    this.#res = res
  }

  abort () {
    if (!this.#done) this.#abort?.()
  }

  onConnect (abort) {
    this.#abort = abort
  }

  onHeaders (statusCode, rawHeaders, resume) {
    if (statusCode < 200) return true
    this.#resume = resume
    this.#res.writeHead(statusCode, responseHeaders(rawHeaders))
    return true
  }

  onData (chunk) {
    if (this.#res.write(chunk)) return true
    // undici pauses the target's socket while onData returns false, until the client's drain resumes it.
    this.#res.once('drain', this.#resume)
    return false
  }

  onComplete () {
    this.#done = true
    this.#res.end()
  }

  onError () {
    this.#done = true
    const res = this.#res
    if (res.headersSent || res.destroyed) {
      res.destroy()
    } else {
      res.writeHead(502, { 'content-length': 0 })
      res.end()
    }
  }
}

/** The target's raw headers as a flat [name, value, …] list for writeHead, hop-by-hop ones dropped. */
function responseHeaders (raw) {
  let listed = null
  const names = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString('latin1').toLowerCase()
    names.push(name)
    if (name === 'connection') listed = connectionTokens(raw[i + 1].toString('latin1'))
  }
  const headers = []
  for (let i = 0; i < names.length; i++) {
    const name = names[i]
    if (!HOP_BY_HOP.has(name) && (listed === null || !listed.has(name))) headers.push(name, raw[2 * i + 1].toString('latin1'))
  }
  return headers
}
