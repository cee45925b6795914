import proxyAddr from '@fastify/proxy-addr'
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import diagnosticsChannel from 'node:diagnostics_channel'
import type { ServerResponse } from 'node:http'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { DASHBOARD_HTML } from './admin-page.js'
import {
  FST_STICKY_ADMIN_FORBIDDEN, FST_STICKY_ADMIN_REQUEST_INVALID, FST_STICKY_ADMIN_TARGET_CONFLICT, FST_STICKY_ADMIN_TARGET_GROUP_NOT_FOUND,
  FST_STICKY_ADMIN_TARGET_NOT_FOUND, FST_STICKY_ADMIN_UNAUTHORIZED, FST_STICKY_OPTION_INVALID
} from './errors.js'
import { TARGET_HEALTH_CHANNEL, type TargetGroup } from './target-group.js'
import type { TargetDescription, TargetGroupDescription, TargetHealthChange } from './types.js'
import { invalid, refuseUnknownKeys, requireObject } from './validate.js'

/**
 * Options of `stickyAdmin`. Exactly one authentication choice is required: `token`, or
 * `authentication: 'custom'` when your own `onRequest`/`preHandler` hook guards the routes.
 * @example
 * await app.register(fastifySticky, { targetGroups })
 * await app.register(stickyAdmin, { prefix: '/admin', token: process.env.ADMIN_TOKEN!, allow: ['loopback', '10.0.0.0/8'] })
 */
export type StickyAdminOptions = StickyAdminCommonOptions & (
  | {
    /** The bearer token every request must carry (`Authorization: Bearer <token>`), at least 16 characters; compared in constant time, never logged. */
    token: string
    authentication?: undefined
  }
  | {
    /** `'custom'`: no token; your own hook (in a parent context, or one wrapping this plugin) authenticates every request. */
    authentication: 'custom'
    token?: undefined
  }
)

/** What `stickyAdmin` takes besides its authentication choice. */
export interface StickyAdminCommonOptions {
  /** Addresses and CIDR ranges (proxy-addr's, with `loopback`, `linklocal`, `uniquelocal`) allowed to reach the API; others get 403. Default `loopback`. */
  allow?: string | readonly string[]
  /** How many target state changes `GET <prefix>/state-changes` keeps, 1 to 10000. Default 200. */
  stateChanges?: number
  /** The route prefix, as for any Fastify plugin. */
  prefix?: string
}

/** How many state changes are kept by default. */
export const DEFAULT_ADMIN_STATE_CHANGES = 200
/** The dashboard's snapshots: one a second. */
const SNAPSHOT_INTERVAL_MS = 1000
/** The dashboard's cookie, set by `POST <prefix>/login`, lets its event stream in (EventSource sends no header). */
const SESSION_COOKIE = 'fastify-sticky-admin'
/** A dashboard cookie's lifetime; the page logs in again before it ends. */
const SESSION_SECONDS = 900
/** Dashboard sessions kept at most: the oldest goes first. */
const MAX_SESSIONS = 64
const MIN_TOKEN_LENGTH = 16
const KNOWN_OPTIONS = ['token', 'authentication', 'allow', 'stateChanges', 'prefix', 'logLevel', 'logSerializers']

interface Resolved {
  readonly tokenDigest: Buffer | null
  readonly allow: (address: string, hop: number) => boolean
  readonly stateChanges: number
}

function resolveAdminOptions (raw: unknown): Resolved {
  const options = requireObject(raw ?? {}, 'stickyAdmin options')
  refuseUnknownKeys(options, KNOWN_OPTIONS, 'stickyAdmin ')
  const { token, authentication } = options
  if (token === undefined && authentication === undefined) {
    throw new FST_STICKY_OPTION_INVALID("stickyAdmin needs an authentication choice: token (a bearer token) or authentication: 'custom' (your own onRequest/preHandler hook authenticates), received neither")
  }
  if (token !== undefined && authentication !== undefined) invalid('stickyAdmin authentication', "absent when token is given (one authentication choice)", authentication)
  if (authentication !== undefined && authentication !== 'custom') invalid('stickyAdmin authentication', "'custom'", authentication)
  if (token !== undefined && (typeof token !== 'string' || token.length < MIN_TOKEN_LENGTH)) {
    // Never the token itself in a message: a length only.
    throw new FST_STICKY_OPTION_INVALID(`stickyAdmin token must be a string of at least ${MIN_TOKEN_LENGTH} characters, received ${typeof token === 'string' ? `${token.length} characters` : typeof token}`)
  }
  const rawAllow = options.allow ?? ['loopback']
  const entries = typeof rawAllow === 'string' ? [rawAllow] : rawAllow
  if (!Array.isArray(entries) || entries.length === 0) invalid('stickyAdmin allow', 'an address or CIDR range, or a non-empty array of them', rawAllow)
  entries.forEach((entry: unknown, i: number) => {
    const path = typeof rawAllow === 'string' ? 'stickyAdmin allow' : `stickyAdmin allow[${i}]`
    if (typeof entry !== 'string') invalid(path, 'an address or CIDR range', entry)
    try {
      proxyAddr.compile(entry)
    } catch {
      invalid(path, "an address or CIDR range (or 'loopback', 'linklocal', 'uniquelocal')", entry)
    }
  })
  const stateChanges = options.stateChanges ?? DEFAULT_ADMIN_STATE_CHANGES
  if (typeof stateChanges !== 'number' || !Number.isInteger(stateChanges) || stateChanges < 1 || stateChanges > 10_000) {
    invalid('stickyAdmin stateChanges', 'an integer from 1 to 10000', stateChanges)
  }
  return {
    tokenDigest: typeof token === 'string' ? digest(token) : null,
    allow: proxyAddr.compile(entries as string[]),
    stateChanges
  }
}

function digest (value: string): Buffer {
  return createHash('sha256').update(value).digest()
}

/** Equal-length digests compared in constant time: neither the token's length nor its prefix leaks through timing. */
export function tokenMatches (expected: Buffer, given: string): boolean {
  return timingSafeEqual(expected, digest(given))
}

/** The bounded log of target state changes, newest last. */
class StateChangeLog {
  readonly #size: number
  readonly #entries: TargetHealthChange[] = []
  constructor (size: number) {
    this.#size = size
  }

  add (change: TargetHealthChange): void {
    this.#entries.push(change)
    if (this.#entries.length > this.#size) this.#entries.shift()
  }

  list (limit: number): TargetHealthChange[] {
    return this.#entries.slice(-limit)
  }
}

/** Responses counted at the previous snapshot, per group and target, for the rates. */
interface Sample { total: number, errors: number, atMs: number }

const STATES = ['initial', 'healthy', 'unhealthy', 'draining', 'unused']
const REASONS = [null, 'Elb.InitialHealthChecking', 'Target.Timeout', 'Target.ResponseCodeMismatch', 'Target.FailedHealthChecks', 'Target.DeregistrationInProgress', 'Target.NotRegistered']
const nullable = (type: string): object => ({ type: [type, 'null'] })
const NAME = { type: 'string', minLength: 1, maxLength: 64 }

const TARGET_SCHEMA = {
  type: 'object',
  required: ['id', 'origin', 'weight', 'state', 'reason', 'sinceMs', 'routable', 'inService', 'inFlight', 'queued', 'webSockets', 'boundSessions', 'keepsSessions', 'ejectedUntilMs', 'slowStartEndsMs', 'drainDeadlineMs'],
  properties: {
    id: { type: 'string' },
    origin: { type: 'string' },
    weight: { type: 'integer' },
    state: { type: 'string', enum: STATES },
    reason: { type: ['string', 'null'], enum: REASONS },
    sinceMs: { type: 'number' },
    routable: { type: 'boolean' },
    inService: { type: 'boolean' },
    inFlight: { type: 'integer' },
    queued: { type: 'integer' },
    webSockets: { type: 'integer' },
    boundSessions: { type: 'integer' },
    keepsSessions: { type: 'boolean' },
    ejectedUntilMs: nullable('number'),
    slowStartEndsMs: nullable('number'),
    drainDeadlineMs: nullable('number')
  }
}
const GROUP_SCHEMA = {
  type: 'object',
  required: ['name', 'algorithm', 'degraded', 'failOpen', 'targets'],
  properties: {
    name: { type: 'string' },
    algorithm: { type: 'string' },
    degraded: { type: 'boolean' },
    failOpen: { type: 'boolean' },
    targets: { type: 'array', items: TARGET_SCHEMA }
  }
}
const ERROR_SCHEMA = {
  type: 'object',
  properties: { statusCode: { type: 'integer' }, code: { type: 'string' }, error: { type: 'string' }, message: { type: 'string' } }
}
const ERRORS = { '4xx': ERROR_SCHEMA }
// Bodies name their properties with propertyNames, not additionalProperties: false, which ajv's
// removeAdditional (Fastify's default) would meet by dropping a misspelt property without a word.
const GROUP_PARAMS = { type: 'object', required: ['group'], properties: { group: NAME } }
const TARGET_PARAMS = { type: 'object', required: ['group', 'target'], properties: { group: NAME, target: NAME } }
const CHANGE_SCHEMA = {
  type: 'object',
  required: ['change', 'targetGroup', 'target', 'from', 'to', 'reason', 'atMs'],
  properties: {
    change: { type: 'string', enum: ['state', 'ejected', 'returned', 'out-of-service', 'in-service'] },
    targetGroup: { type: 'string' },
    target: { type: 'object', required: ['id', 'origin'], properties: { id: { type: 'string' }, origin: { type: 'string' } } },
    from: { type: ['string', 'null'], enum: [...STATES, null] },
    to: { type: 'string', enum: STATES },
    reason: { type: ['string', 'null'], enum: REASONS },
    atMs: { type: 'number' }
  }
}

/** Who made a change, as logged: how they authenticated and from where. */
interface Who { readonly by: 'token' | 'custom', readonly client: string | undefined }

/**
 * The admin API and its dashboard, a plugin of its own mounted after fastify-sticky, under the
 * prefix you choose: list the target groups, register and deregister targets, change weights,
 * take targets out of service and back, read recent state changes, and watch it all live on
 * `GET <prefix>/`. See docs/operations.md.
 */
async function stickyAdmin (fastify: FastifyInstance, rawOptions: StickyAdminOptions): Promise<void> {
  const options = resolveAdminOptions(rawOptions)
  if (!fastify.hasDecorator('targetGroups')) {
    throw new FST_STICKY_OPTION_INVALID('stickyAdmin reads app.targetGroups: register fastify-sticky before it (in the same or a parent context)')
  }
  const groups = fastify.targetGroups
  const prefix = fastify.prefix === '' ? '/' : fastify.prefix
  const log = new StateChangeLog(options.stateChanges)
  const onChange = (message: unknown): void => {
    const change = message as TargetHealthChange
    // The channel is the process's: only this gateway's groups.
    if (groups.get(change.targetGroup) !== undefined) log.add(change)
  }
  diagnosticsChannel.subscribe(TARGET_HEALTH_CHANNEL, onChange)
  /** Dashboard sessions: the cookie's value, and when it expires. */
  const sessions = new Map<string, number>()
  const streams = new Set<ServerResponse>()
  const samples = new Map<string, Sample>()
  let timer: NodeJS.Timeout | null = null

  const who = (request: FastifyRequest): Who => ({ by: options.tokenDigest === null ? 'custom' : 'token', client: request.socket.remoteAddress })

  /** Loggable: the action and its subject, never the token. */
  const record = (request: FastifyRequest, action: string, details: Record<string, unknown>, message: string): void => {
    request.log.info({ admin: { ...who(request), action, ...details } }, message)
  }

  const bearer = (request: FastifyRequest): string | null => {
    const header = request.headers.authorization
    if (typeof header !== 'string') return null
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)
    return match === null ? null : match[1]
  }
  const hasSession = (request: FastifyRequest): boolean => {
    const cookies = request.headers.cookie
    if (typeof cookies !== 'string') return false
    for (const part of cookies.split(';')) {
      const [name, value] = part.trim().split('=', 2)
      if (name !== SESSION_COOKIE || value === undefined) continue
      const expires = sessions.get(value)
      if (expires !== undefined && expires > Date.now()) return true
    }
    return false
  }

  fastify.addHook('onRequest', async (request) => {
    // The connection's peer, never X-Forwarded-For: a header cannot buy access.
    const address = request.socket.remoteAddress
    if (address === undefined || !options.allow(address, 0)) throw new FST_STICKY_ADMIN_FORBIDDEN()
    const tokenDigest = options.tokenDigest
    const config = request.routeOptions.config as { adminAccess?: 'public' | 'session' }
    if (tokenDigest === null || config.adminAccess === 'public') return
    const given = bearer(request)
    if (given !== null && tokenMatches(tokenDigest, given)) return
    // The cookie opens only the read-only event stream (EventSource sends no header); every change needs the bearer token.
    if (config.adminAccess === 'session' && hasSession(request)) return
    throw new FST_STICKY_ADMIN_UNAUTHORIZED()
  })

  const groupOf = (name: string): TargetGroup => {
    const group = groups.get(name)
    if (group === undefined) throw new FST_STICKY_ADMIN_TARGET_GROUP_NOT_FOUND(name)
    return group
  }
  const registered = (group: TargetGroup, id: string): TargetDescription => {
    const found = group.describe().targets.find((target) => target.id === id && target.state !== 'draining' && target.state !== 'unused')
    if (found === undefined) throw new FST_STICKY_ADMIN_TARGET_NOT_FOUND(group.name, id)
    return found
  }

  fastify.get('/', { config: { adminAccess: 'public' }, schema: { response: { 200: { type: 'string' }, ...ERRORS } } }, async (_request, reply) => {
    reply.header('content-security-policy', "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    reply.header('cache-control', 'no-store')
    reply.header('referrer-policy', 'no-referrer')
    reply.type('text/html; charset=utf-8')
    return DASHBOARD_HTML
  })

  if (options.tokenDigest !== null) {
    fastify.post('/login', { schema: { response: { 204: { type: 'null' }, ...ERRORS } } }, async (request, reply) => {
      const now = Date.now()
      for (const [value, expires] of sessions) if (expires <= now) sessions.delete(value)
      if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value as string)
      const value = randomBytes(32).toString('base64url')
      sessions.set(value, now + SESSION_SECONDS * 1000)
      const secure = request.protocol === 'https' ? '; Secure' : ''
      reply.header('set-cookie', `${SESSION_COOKIE}=${value}; Path=${prefix}; Max-Age=${SESSION_SECONDS}; HttpOnly; SameSite=Strict${secure}`)
      reply.code(204)
    })
  }

  fastify.get('/target-groups', {
    schema: { response: { 200: { type: 'object', required: ['targetGroups'], properties: { targetGroups: { type: 'array', items: GROUP_SCHEMA } } }, ...ERRORS } }
  }, async () => ({ targetGroups: [...groups.values()].map((group) => group.describe()) }))

  fastify.get<{ Params: { group: string } }>('/target-groups/:group', {
    schema: { params: GROUP_PARAMS, response: { 200: GROUP_SCHEMA, ...ERRORS } }
  }, async (request) => groupOf(request.params.group).describe())

  fastify.post<{ Params: { group: string }, Body: { id: string, url: string, weight?: number } }>('/target-groups/:group/targets', {
    schema: {
      params: GROUP_PARAMS,
      body: {
        type: 'object',
        required: ['id', 'url'],
        propertyNames: { enum: ['id', 'url', 'weight'] },
        properties: { id: NAME, url: { type: 'string', minLength: 1, maxLength: 2048 }, weight: { type: 'integer', minimum: 1, maximum: 1000 } }
      },
      response: { 201: TARGET_SCHEMA, ...ERRORS }
    }
  }, async (request, reply) => {
    const group = groupOf(request.params.group)
    const { id, url, weight } = request.body
    try {
      group.register(weight === undefined ? { id, url } : { id, url, weight })
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === 'FST_STICKY_TARGET_DUPLICATE' || code === 'FST_STICKY_TARGET_DRAINING') throw new FST_STICKY_ADMIN_TARGET_CONFLICT((err as Error).message)
      if (code === 'FST_STICKY_OPTION_INVALID') throw new FST_STICKY_ADMIN_REQUEST_INVALID((err as Error).message)
      throw err
    }
    record(request, 'register', { targetGroup: group.name, target: id, weight: weight ?? 1 }, 'admin: target registered')
    reply.code(201)
    return registered(group, id)
  })

  fastify.delete<{ Params: { group: string, target: string } }>('/target-groups/:group/targets/:target', {
    schema: { params: TARGET_PARAMS, response: { 202: TARGET_SCHEMA, ...ERRORS } }
  }, async (request, reply) => {
    const group = groupOf(request.params.group)
    const id = request.params.target
    const before = registered(group, id)
    // Draining may take the deregistration delay: the answer comes at once, with the target draining
    // (or already unused, when nothing was left on it).
    void group.deregister(id)
    record(request, 'deregister', { targetGroup: group.name, target: id }, 'admin: target deregistered')
    reply.code(202)
    return group.describe().targets.find((target) => target.id === id) ??
      { ...before, state: 'unused', reason: 'Target.NotRegistered', sinceMs: Date.now(), routable: false, keepsSessions: false, inFlight: 0, queued: 0, webSockets: 0 }
  })

  fastify.put<{ Params: { group: string, target: string }, Body: { weight: number } }>('/target-groups/:group/targets/:target/weight', {
    schema: {
      params: TARGET_PARAMS,
      body: { type: 'object', required: ['weight'], propertyNames: { enum: ['weight'] }, properties: { weight: { type: 'integer', minimum: 1, maximum: 1000 } } },
      response: { 200: TARGET_SCHEMA, ...ERRORS }
    }
  }, async (request) => {
    const group = groupOf(request.params.group)
    const id = request.params.target
    const before = registered(group, id).weight
    group.setWeight(id, request.body.weight)
    record(request, 'weight', { targetGroup: group.name, target: id, from: before, to: request.body.weight }, 'admin: target weight changed')
    return registered(group, id)
  })

  fastify.put<{ Params: { group: string, target: string }, Body: { inService: boolean } }>('/target-groups/:group/targets/:target/in-service', {
    schema: {
      params: TARGET_PARAMS,
      body: { type: 'object', required: ['inService'], propertyNames: { enum: ['inService'] }, properties: { inService: { type: 'boolean' } } },
      response: { 200: TARGET_SCHEMA, ...ERRORS }
    }
  }, async (request) => {
    const group = groupOf(request.params.group)
    const id = request.params.target
    registered(group, id)
    const inService = request.body.inService
    group.setInService(id, inService)
    record(request, inService ? 'in-service' : 'out-of-service', { targetGroup: group.name, target: id }, inService ? 'admin: target put back in service' : 'admin: target taken out of service')
    return registered(group, id)
  })

  fastify.get<{ Querystring: { limit?: number } }>('/state-changes', {
    schema: {
      querystring: { type: 'object', propertyNames: { enum: ['limit'] }, properties: { limit: { type: 'integer', minimum: 1, maximum: 10_000 } } },
      response: { 200: { type: 'object', required: ['stateChanges'], properties: { stateChanges: { type: 'array', items: CHANGE_SCHEMA } } }, ...ERRORS }
    }
  }, async (request) => ({ stateChanges: log.list(request.query.limit ?? options.stateChanges) }))

  /** Every group's describe(), each target with its requests per second and 5xx share since the last snapshot (null without metrics). */
  const snapshot = (): object => {
    const now = Date.now()
    const seen = new Set<string>()
    const targetGroups = [...groups.values()].map((group) => {
      const described: TargetGroupDescription = group.describe()
      return {
        ...described,
        targets: described.targets.map((target) => {
          const key = `${group.name}\u0000${target.id}`
          seen.add(key)
          const counts = group.metrics?.responseCounts(group.name, target.id)
          if (group.metrics == null) return { ...target, requestsPerSecond: null, errorRate: null }
          const total = counts === undefined ? 0 : counts.reduce((sum, count) => sum + count, 0)
          const errors = counts?.[5] ?? 0
          const previous = samples.get(key)
          samples.set(key, { total, errors, atMs: now })
          const requests = previous === undefined ? 0 : total - previous.total
          return {
            ...target,
            // Over the time since the last snapshot: a dashboard joining takes one between two ticks.
            requestsPerSecond: previous === undefined ? 0 : requests / Math.max(0.001, (now - previous.atMs) / 1000),
            errorRate: requests === 0 ? null : (errors - (previous?.errors ?? 0)) / requests
          }
        })
      }
    })
    for (const key of samples.keys()) if (!seen.has(key)) samples.delete(key)
    return { atMs: now, targetGroups }
  }

  const send = (stream: ServerResponse, data: string): void => {
    stream.write(`event: snapshot\ndata: ${data}\n\n`)
  }
  const tick = (): void => {
    const data = JSON.stringify(snapshot())
    for (const stream of streams) send(stream, data)
  }

  fastify.get('/events', { config: { adminAccess: 'session' }, schema: { response: { ...ERRORS } } }, (request, reply) => {
    reply.hijack()
    const stream = reply.raw
    stream.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' })
    streams.add(stream)
    stream.on('close', () => {
      streams.delete(stream)
      if (streams.size === 0 && timer !== null) {
        clearInterval(timer)
        timer = null
      }
    })
    // A snapshot at once, then one a second while a dashboard watches.
    send(stream, JSON.stringify(snapshot()))
    if (timer === null) {
      timer = setInterval(tick, SNAPSHOT_INTERVAL_MS)
      timer.unref()
    }
  })

  // Before the server closes: an open event stream would keep it waiting.
  fastify.addHook('preClose', (done) => {
    if (timer !== null) clearInterval(timer)
    timer = null
    for (const stream of streams) stream.end()
    streams.clear()
    done()
  })
  fastify.addHook('onClose', (_instance, done) => {
    diagnosticsChannel.unsubscribe(TARGET_HEALTH_CHANNEL, onChange)
    done()
  })
}

export { stickyAdmin }
