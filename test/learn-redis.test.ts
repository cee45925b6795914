import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { test } from 'tap'
import { Pool } from 'undici'
import { KeyHasher } from '../lib/hashing/key-hash.js'
import type { AffinityDecision, FastifyStickyOptions } from '../lib/types.js'
import { startRedis } from './redis.js'
import { buildGateway, echoOf, startTargets, TEST_KEY, waitFor, type TestTarget } from './setup.js'

interface Tap {
  teardown (fn: () => unknown): void
}

type RedisStoreOptions = Extract<NonNullable<FastifyStickyOptions['learnStore']>, { type: 'redis' }>

/** A gateway whose group is learn-sticky on the app's `sid` cookie, its store in Redis; each decision is echoed in `x-decision`. */
async function learnGateway (t: Tap, targets: TestTarget[], store: RedisStoreOptions): Promise<FastifyInstance> {
  const app = await buildGateway(t as Parameters<typeof buildGateway>[0], {
    learnStore: store,
    targetGroups: [{ name: 'g', targets: targets.map((target) => ({ id: target.id, url: target.url })), stickiness: { type: 'learn', cookieName: 'sid' } }]
  })
  app.addHook('onSend', async (request, reply) => {
    if (request.affinity !== null) reply.header('x-decision', JSON.stringify(request.affinity))
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  return app
}

function decisionOf (res: { headers: Record<string, unknown> }): AffinityDecision {
  return JSON.parse(String(res.headers['x-decision'])) as AffinityDecision
}

/** `sid=<value>` from a login's Set-Cookie. */
function sidOf (res: { headers: Record<string, unknown> }): string {
  const line = ([] as string[]).concat(res.headers['set-cookie'] as string | string[]).find((value) => value.startsWith('sid='))
  if (line === undefined) throw new Error('the target set no sid')
  return line.split(';')[0]
}

/** `outcome` or `reassigned;<reason>`. */
function outcomeOf (decision: AffinityDecision): string {
  return decision.outcome === 'reassigned' ? `reassigned;${String(decision.reason)}` : decision.outcome
}

let probes = 0
/** Waits until the gateway's store answers from Redis: an id it never saw is then `new` (not `store-unavailable`). */
async function untilStoreAnswers (app: FastifyInstance, timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => {
    const res = await app.inject({ url: '/probe', headers: { cookie: `sid=probe-${++probes}` } })
    return decisionOf(res).outcome === 'new'
  }, timeoutMs, 'the learn store to answer from Redis')
}

/** A plain client to look inside Redis, disconnected by the test's teardown. */
async function inspect (t: Tap, url: string): Promise<Redis> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 })
  t.teardown(() => client.disconnect())
  await client.connect()
  return client
}

const hasher = new KeyHasher(Buffer.from(TEST_KEY, 'hex'))
const PREFIX = 'fastify-sticky:learn:'

/** Waits until Redis holds the entry of every `sid=<value>` given (the gateway's writes are fire and forget): the keyed digest of the group's name and the id. */
async function untilStored (client: Redis, sids: string[], prefix = PREFIX): Promise<void> {
  const keys = sids.map((sid) => prefix + hasher.hex(`g\u0000${sid.slice('sid='.length)}`))
  await waitFor(async () => (await client.exists(...keys)) === keys.length, 5000, 'the learned sessions to reach Redis')
}

test('two gateways on one Redis: a session learned through one sticks on the other', async (t) => {
  const redis = await startRedis(t)
  const targets = await startTargets(t, 3)
  const a = await learnGateway(t, targets, { type: 'redis', url: redis.url })
  const b = await learnGateway(t, targets, { type: 'redis', url: redis.url })
  await untilStoreAnswers(a)
  await untilStoreAnswers(b)
  const client = await inspect(t, redis.url)

  const sessions: Array<{ sid: string, target: string }> = []
  for (let i = 0; i < 20; i++) {
    const login = await a.inject({ url: '/login' })
    t.equal(login.statusCode, 200)
    t.match(decisionOf(login), { outcome: 'new' }, 'a login without a session is placed by the algorithm')
    sessions.push({ sid: sidOf(login), target: echoOf(login).target })
  }
  t.ok(new Set(sessions.map((session) => session.target)).size > 1, 'the logins spread over the targets')
  await untilStored(client, sessions.map((session) => session.sid))

  // B never saw these ids: its local cache is empty for them, so each answer comes from Redis.
  for (let round = 0; round < 2; round++) {
    for (const session of sessions) {
      const res = await b.inject({ url: '/cart', headers: { cookie: session.sid } })
      t.equal(echoOf(res).target, session.target, 'gateway B sends the session to the target that created it on gateway A')
      t.match(decisionOf(res), { outcome: 'hit', stickiness: 'learn', decidedBy: 'learn', target: { id: session.target } })
    }
  }

  // And the other way round.
  const login = await b.inject({ url: '/login' })
  const sid = sidOf(login)
  await untilStored(client, [sid])
  const res = await a.inject({ url: '/cart', headers: { cookie: sid } })
  t.equal(echoOf(res).target, echoOf(login).target, 'a session learned on B sticks on A')
  t.match(decisionOf(res), { outcome: 'hit', decidedBy: 'learn' })
})

test('Redis killed under load: every request is answered, by the fallback while Redis is down, and the store recovers by itself', async (t) => {
  const redis = await startRedis(t)
  const targets = await startTargets(t, 3)
  const app = await learnGateway(t, targets, { type: 'redis', url: redis.url, timeoutMs: 100, localCacheMs: 200 })
  await app.listen({ port: 0, host: '127.0.0.1' })
  // A second gateway, no local cache: what it finds, it found in Redis.
  const other = await learnGateway(t, targets, { type: 'redis', url: redis.url, localCacheMs: 0 })
  await untilStoreAnswers(app)
  await untilStoreAnswers(other)
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('the gateway does not listen on TCP')
  const pool = new Pool(`http://127.0.0.1:${address.port}`, { connections: 20 })
  t.teardown(() => pool.destroy())

  const LOOPS = 20
  const DEADLINE_MS = 5000
  const sids: string[] = []
  const homes: string[] = []
  for (let i = 0; i < LOOPS; i++) {
    const login = await app.inject({ url: '/login' })
    sids.push(sidOf(login))
    homes.push(echoOf(login).target)
  }

  type Phase = 'up' | 'down' | 'restarting' | 'recovered'
  let phase: Phase = 'up'
  let running = true
  let sent = 0
  let received = 0
  const failures: string[] = []
  const statuses = new Map<number, number>()
  /** Outcomes of requests sent and answered while Redis was dead. */
  const whileDown: string[] = []
  let afterRecovery = 0
  /** Learned sessions sent elsewhere than their target by a `hit` before the restart emptied Redis. */
  let strayHits = 0

  const loop = async (i: number): Promise<void> => {
    for (let n = 0; running; n++) {
      // Three in four carry a session this gateway learned; one in four an id nobody has seen (never in the local cache).
      const cookie = n % 4 === 3 ? `sid=fresh-${i}-${n}` : sids[i]
      const sentIn = phase
      sent++
      try {
        const res = await pool.request({ method: 'GET', path: '/cart', headers: { cookie }, signal: AbortSignal.timeout(DEADLINE_MS) })
        const body = await res.body.text()
        received++
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
        const outcome = outcomeOf(JSON.parse(String(res.headers['x-decision'])) as AffinityDecision)
        if (sentIn === 'down' && phase === 'down') whileDown.push(outcome)
        if ((sentIn === 'up' || sentIn === 'down') && outcome === 'hit' && cookie === sids[i] && (JSON.parse(body) as { target: string }).target !== homes[i]) strayHits++
        if (sentIn === 'recovered') afterRecovery++
      } catch (err) {
        failures.push(`${cookie}: ${(err as Error).message}`)
      }
    }
  }
  const loops = Array.from({ length: LOOPS }, async (_, i) => await loop(i))
  const stopLoad = async (): Promise<void> => {
    running = false
    await Promise.all(loops)
  }
  t.teardown(stopLoad)

  await waitFor(() => received >= 200, 20_000, 'load before the kill')
  await redis.stop('SIGKILL')
  phase = 'down'
  const count = (outcome: string): number => whileDown.filter((seen) => seen === outcome).length
  await waitFor(() => count('reassigned;store-unavailable') >= 20 && count('hit') >= 20, 20_000, 'requests served while Redis is down')
  phase = 'restarting'

  t.same(new Set(whileDown), new Set(['hit', 'reassigned;store-unavailable']),
    'while Redis is down, a request is decided by the local cache (hit) or placed anew (store-unavailable), nothing else')

  await redis.start()
  // Redis came back empty: a login through the gateway is learned again once it has reconnected,
  // which the other gateway (no local cache) sees in Redis.
  let stuck: { sid: string, target: string } | null = null
  await waitFor(async () => {
    const login = await app.inject({ url: '/login' })
    const sid = sidOf(login)
    const res = await other.inject({ url: '/cart', headers: { cookie: sid } })
    if (decisionOf(res).outcome !== 'hit') return false
    stuck = { sid, target: echoOf(login).target }
    return echoOf(res).target === stuck.target
  }, 15_000, 'a new login to be learned in Redis again')
  t.ok(stuck, 'after the restart, new logins are learned and stick across gateways')
  phase = 'recovered'
  await waitFor(() => afterRecovery >= 100, 20_000, 'load after the recovery')
  await stopLoad()

  t.same(failures, [], 'no request failed or passed its deadline')
  t.equal(received, sent, `every request sent got a response (${sent})`)
  t.equal(strayHits, 0, 'a hit, from Redis or from the local cache, sends a session to its target')
  t.same([...statuses.keys()], [200], 'every response was a 200')
  t.ok(whileDown.length >= 40, `requests were served while Redis was down (${whileDown.length})`)
})

test('Redis paused: a lookup that Redis does not answer is decided by its deadline, store-unavailable, and never hangs', async (t) => {
  const TIMEOUT_MS = 100
  const redis = await startRedis(t)
  const targets = await startTargets(t, 3)
  const app = await learnGateway(t, targets, { type: 'redis', url: redis.url, timeoutMs: TIMEOUT_MS })
  await untilStoreAnswers(app)

  redis.pause()
  t.teardown(() => { try { redis.resume() } catch {} })
  const answers = await Promise.all(Array.from({ length: 5 }, async (_, i) => {
    const started = performance.now()
    const res = await app.inject({ url: '/cart', headers: { cookie: `sid=unseen-${i}` } })
    return { res, ms: performance.now() - started }
  }))
  for (const { res, ms } of answers) {
    t.equal(res.statusCode, 200)
    // Placed anew by the group's algorithm (round robin), the reason recorded.
    t.match(decisionOf(res), { outcome: 'reassigned', reason: 'store-unavailable', stickiness: 'learn', decidedBy: 'round_robin' })
    t.ok(ms >= TIMEOUT_MS - 5, `it waited for Redis until its deadline (${ms.toFixed(0)} ms)`)
    // Without the deadline the lookup would wait for the client's socket timeout (2 s for this timeoutMs).
    t.ok(ms < TIMEOUT_MS + 1000, `and not much longer (${ms.toFixed(0)} ms)`)
  }

  redis.resume()
  await untilStoreAnswers(app)
  const login = await app.inject({ url: '/login' })
  const res = await app.inject({ url: '/cart', headers: { cookie: sidOf(login) } })
  t.match(decisionOf(res), { outcome: 'hit', decidedBy: 'learn', target: { id: echoOf(login).target } }, 'once Redis answers again, sessions are learned')
})

test('keys in Redis: the prefix and a 16-hex digest, each with a time to live; never the session id itself', async (t) => {
  const redis = await startRedis(t)
  const targets = await startTargets(t, 3)
  const prefix = 'shop:sessions:'
  const app = await learnGateway(t, targets, { type: 'redis', url: redis.url, keyPrefix: prefix })
  await untilStoreAnswers(app)
  const client = await inspect(t, redis.url)

  const sids: string[] = []
  for (let i = 0; i < 10; i++) sids.push(sidOf(await app.inject({ url: '/login' })))
  // Ids the client brings, learned where they are placed.
  for (let i = 0; i < 5; i++) {
    const sid = `sid=client-chosen-secret-${i}-${'x'.repeat(i * 20)}`
    await app.inject({ url: '/', headers: { cookie: sid } })
    sids.push(sid)
  }
  await untilStored(client, sids, prefix)

  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await client.scan(cursor, 'COUNT', 100)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  // untilStored found each session's key (the prefix and its keyed digest); the probes' keys are there too.
  t.ok(keys.length >= sids.length, `one key per session (${keys.length} keys)`)
  const values = new Set(targets.map((target) => target.id))
  for (const key of keys) {
    t.match(key, new RegExp(`^${prefix}[0-9a-f]{16}$`), 'the prefix and a 16-hex digest')
    const ttl = await client.pttl(key)
    t.ok(ttl > 0, `a time to live (${ttl} ms)`)
    const value = await client.get(key)
    t.ok(value !== null && values.has(value), 'the value is a target id')
    const leaked = sids.map((sid) => sid.slice('sid='.length)).filter((raw) => key.includes(raw) || (value ?? '').includes(raw))
    t.same(leaked, [], 'neither the key nor the value holds a session id')
  }
})
