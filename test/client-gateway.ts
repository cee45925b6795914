import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifySticky from '../lib/index.js'
import { exposeAffinity, listenOnLoopback, TEST_KEY } from './setup.js'
import { localhostCert } from './tls.js'

// What the real-client tests (got, curl, Chromium) talk to: a gateway on loopback that they reach
// by a name that is not local, as a user reaches a site. Clients treat localhost and 127.0.0.1 as
// secure even over plain HTTP, so only another name shows what they do with the gateway's cookies;
// each client resolves it to 127.0.0.1 (got's dnsLookup, curl's --resolve, Chromium's
// --host-resolver-rules), and the test certificate holds it.

/** The gateway's name; the test certificate holds it and every `*.example.test`. */
export const SHOP_HOST = 'shop.example.test'

interface Tap {
  teardown (fn: () => unknown): void
}

/** A backend of the tests: its id and origin. */
export interface AccountBackend {
  readonly id: string
  readonly url: string
}

/**
 * Starts `count` backends `b0`, `b1`, … on 127.0.0.1: an account app whose logins live in the
 * process's memory, as in-memory sessions do. `/app/login?user=<name>` starts a session and sets
 * `sid=<backend>.<n>; Path=/; HttpOnly` plus `sidAttributes` (none: a browser takes it as
 * `SameSite=Lax`); `/app/logout` deletes it; any other path answers `{ backend, user }`, the user
 * of the request's `sid` on this backend (null when it knows none). A request with an `Origin`
 * gets the CORS headers that let that page read the answer with its credentials.
 */
export async function startAccountBackends (t: Tap, count: number, sidAttributes = ''): Promise<AccountBackend[]> {
  const backends: AccountBackend[] = []
  for (let i = 0; i < count; i++) {
    const id = `b${i}`
    const sessions = new Map<string, string>()
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://backend')
      const sid = /(?:^|;\s*)sid=([^;]*)/.exec(req.headers.cookie ?? '')?.[1]
      let user = sid === undefined ? null : sessions.get(sid) ?? null
      if (url.pathname === '/app/login') {
        user = url.searchParams.get('user') ?? 'someone'
        const session = `${id}.${sessions.size + 1}`
        sessions.set(session, user)
        res.setHeader('set-cookie', `sid=${session}; Path=/; HttpOnly${sidAttributes}`)
      } else if (url.pathname === '/app/logout') {
        if (sid !== undefined) sessions.delete(sid)
        user = null
        res.setHeader('set-cookie', 'sid=; Max-Age=0; Path=/')
      }
      const origin = req.headers.origin
      if (origin !== undefined) {
        res.setHeader('access-control-allow-origin', origin)
        res.setHeader('access-control-allow-credentials', 'true')
        res.setHeader('access-control-expose-headers', 'x-affinity, x-served-by')
        res.setHeader('vary', 'Origin')
      }
      res.setHeader('x-served-by', id)
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ backend: id, user }))
    })
    backends.push({ id, url: `http://127.0.0.1:${await listenOnLoopback(t, server)}` })
  }
  return backends
}

/** A listening gateway: its origin by `SHOP_HOST`, and its port. */
export interface ClientGateway {
  readonly app: FastifyInstance
  readonly origin: string
  readonly port: number
}

/**
 * A gateway over `backends`, listening on 127.0.0.1 over plain HTTP or, with `https`, over TLS
 * with the test certificate, so `request.protocol` is what the client used. Every kind of gateway
 * cookie has a route: `/lb/*` (lb_cookie group `carts`: `AWSALB`, `AWSALBCORS`), `/tg/*` (a
 * listener weighting `blue` and `green` with group stickiness: `AWSALBTG`, `AWSALBTGCORS`, and
 * their `AWSALB`), `/app/*` (app_cookie group `accounts` following `sid`: `AWSALBAPP-0..3`).
 * Each response says its decision in `x-affinity`. `now`: the gateway's clock, for clients that
 * keep cookies by the machine's real one (curl, Chromium).
 */
export async function startClientGateway (t: Tap, backends: readonly AccountBackend[], options: { https: boolean, now?: () => number }): Promise<ClientGateway> {
  // Typed as the plain-HTTP instance the helpers take: the plugin and hooks do not depend on the server's kind.
  const app = (options.https ? Fastify({ https: localhostCert, http2: false }) : Fastify()) as unknown as FastifyInstance
  t.teardown(() => app.close())
  const targets = backends.map(({ id, url }) => ({ id, url }))
  await app.register(fastifySticky, {
    keys: [TEST_KEY],
    now: options.now,
    targetGroups: [
      { name: 'carts', targets },
      { name: 'blue', targets: targets.slice(0, 2) },
      { name: 'green', targets: targets.slice(2) },
      { name: 'accounts', targets, stickiness: { type: 'app_cookie', cookieName: 'sid' } }
    ],
    listeners: [{ name: 'web', default: { targetGroups: [{ name: 'blue', weight: 1 }, { name: 'green', weight: 1 }], stickiness: { durationSeconds: 600 } } }]
  })
  exposeAffinity(app)
  app.all('/lb/*', { config: { targetGroup: 'carts' } }, (_request, reply) => reply.forward())
  app.all('/tg/*', { config: { listener: 'web' } }, (_request, reply) => reply.forward())
  app.all('/app/*', { config: { targetGroup: 'accounts' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  return { app, port, origin: `${options.https ? 'https' : 'http'}://${SHOP_HOST}:${port}` }
}

/** The machine's real clock, in ms: what curl and Chromium keep cookies by, whatever this process's calendar says (.ci/run moves it). */
export function realNow (): number {
  return Math.round(performance.timeOrigin + performance.now())
}
