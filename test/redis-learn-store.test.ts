import { once } from 'node:events'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { Redis } from 'ioredis'
import { test } from 'tap'
import type { LearnLookup } from '../lib/stickiness/learn-store.js'
import { DEFAULT_LEARN_KEY_PREFIX, RedisLearnStore, type LearnStoreLogger, type RedisLearnStoreOptions } from '../lib/stickiness/redis-learn-store.js'
import { startRedis } from './redis.js'
import { waitFor } from './setup.js'

interface Tap {
  teardown (fn: () => unknown): void
}

const MINUTE = 60_000
const TIMEOUT_MS = 50

/** A store on `url`, closed by the test's teardown; resolves once it is ready (unless told not to wait). */
async function openStore (t: Tap, options: RedisLearnStoreOptions, ready = true): Promise<RedisLearnStore> {
  const store = new RedisLearnStore({ timeoutMs: TIMEOUT_MS, ...options })
  t.teardown(() => store.close())
  if (ready) await waitFor(() => store.status === 'ready', 5000, 'the store to connect')
  return store
}

/** A plain client to look inside Redis. */
async function inspect (t: Tap, url: string): Promise<Redis> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 })
  t.teardown(() => client.disconnect())
  await client.connect()
  return client
}

/** The lookup's answer and how long it took (0 when it came synchronously). */
async function timedGet (store: RedisLearnStore, key: string, ttlMs: number, nowMs: number): Promise<{ value: LearnLookup, ms: number, sync: boolean }> {
  const started = performance.now()
  const answer = store.get(key, ttlMs, nowMs)
  const sync = !(answer instanceof Promise)
  const value = await answer
  return { value, ms: performance.now() - started, sync }
}

function recordingLogger (): LearnStoreLogger & { lines: Array<{ level: string, details: Record<string, unknown>, message: string }> } {
  const lines: Array<{ level: string, details: Record<string, unknown>, message: string }> = []
  return {
    lines,
    warn: (details, message) => { lines.push({ level: 'warn', details, message }) },
    info: (details, message) => { lines.push({ level: 'info', details, message }) }
  }
}

test('set then get: a round trip through Redis, under the key prefix, each key with its time to live', async (t) => {
  const redis = await startRedis(t)
  const writer = await openStore(t, { url: redis.url })
  const reader = await openStore(t, { url: redis.url, localCacheMs: 0 })
  const now = Date.now()
  writer.set('a1b2c3d4e5f60718', 't0', MINUTE, now)
  writer.set('ffff000011112222', 't1', 2 * MINUTE, now)
  const client = await inspect(t, redis.url)
  await waitFor(async () => (await client.dbsize()) === 2, 2000, 'both writes')
  const keys = (await client.keys('*')).sort()
  t.same(keys, [`${DEFAULT_LEARN_KEY_PREFIX}a1b2c3d4e5f60718`, `${DEFAULT_LEARN_KEY_PREFIX}ffff000011112222`], 'the prefix, then the key as given')
  t.equal(DEFAULT_LEARN_KEY_PREFIX, 'fastify-sticky:learn:')
  const ttls = await Promise.all(keys.map(async (key) => await client.pttl(key)))
  t.ok(ttls[0] > MINUTE - 2000 && ttls[0] <= MINUTE, `PTTL ${ttls[0]} of a one-minute entry`)
  t.ok(ttls[1] > 2 * MINUTE - 2000 && ttls[1] <= 2 * MINUTE, `PTTL ${ttls[1]} of a two-minute entry`)

  const got = await timedGet(reader, 'a1b2c3d4e5f60718', 3 * MINUTE, now + 10)
  t.same({ value: got.value, sync: got.sync }, { value: 't0', sync: false }, 'another store asked Redis')
  const slid = await client.pttl(`${DEFAULT_LEARN_KEY_PREFIX}a1b2c3d4e5f60718`)
  t.ok(slid > 2 * MINUTE, `the lookup slid the time to live to its own (PTTL ${slid})`)
  t.equal(await reader.get('0000000000000000', MINUTE, now + 10), null, 'an unknown key')
  t.equal(await client.exists(`${DEFAULT_LEARN_KEY_PREFIX}0000000000000000`), 0, 'a miss writes nothing')
  t.same(reader.counters, { hits: 1, localHits: 0, misses: 1, unavailable: 0, errors: 0 })
})

test('every key the store writes has a time to live, whatever the path', async (t) => {
  const redis = await startRedis(t)
  const store = await openStore(t, { url: redis.url, keyPrefix: 'app1:' })
  const other = await openStore(t, { url: redis.url, keyPrefix: 'app1:', localCacheMs: 0 })
  const now = Date.now()
  for (let i = 0; i < 50; i++) store.set(`k${i}`, `t${i % 3}`, 1000 + i * 1000, now)
  store.set('tiny', 't2', 0.4, now)
  for (let i = 0; i < 50; i += 5) await other.get(`k${i}`, MINUTE, now)
  store.delete('k1')
  const client = await inspect(t, redis.url)
  await waitFor(async () => (await client.exists('app1:k1')) === 0, 2000, 'the deletion')
  const keys = (await client.keys('*')).filter((key) => key !== 'app1:tiny')
  t.equal(keys.length, 49, `all but k1, deleted (${keys.length} keys)`)
  const tiny = await client.pttl('app1:tiny')
  t.ok(tiny === -2 || tiny === 1, `a time to live under a millisecond is one millisecond (PTTL ${tiny}; -2: gone)`)
  t.ok(keys.every((key) => key.startsWith('app1:')), 'the prefix given')
  const ttls = await Promise.all(keys.map(async (key) => await client.pttl(key)))
  t.ok(ttls.every((ttl) => ttl > 0), `no key without a time to live: ${ttls.filter((ttl) => ttl <= 0).length} without`)
})

test('two stores on one Redis see each other\'s entries once their local cache time has passed', async (t) => {
  const redis = await startRedis(t)
  const a = await openStore(t, { url: redis.url, localCacheMs: 1000 })
  const b = await openStore(t, { url: redis.url, localCacheMs: 1000 })
  const now = Date.now()
  a.set('s1', 't0', MINUTE, now)
  t.equal(a.get('s1', MINUTE, now), 't0', 'the writer answers from its local cache, synchronously')
  t.equal(await b.get('s1', MINUTE, now + 1), 't0', 'the other store asked Redis')
  t.equal(b.get('s1', MINUTE, now + 2), 't0', 'and keeps the answer')

  // The app moved the session: a learns it.
  a.set('s1', 't1', MINUTE, now + 3)
  const client = await inspect(t, redis.url)
  await waitFor(async () => (await client.get(`${DEFAULT_LEARN_KEY_PREFIX}s1`)) === 't1', 2000, 'the write')
  t.equal(b.get('s1', MINUTE, now + 4), 't0', 'b still answers from its cache within the window')
  t.equal(await b.get('s1', MINUTE, now + 1003), 't1', 'after the window b asks Redis again')

  a.delete('s1')
  await waitFor(async () => (await client.exists(`${DEFAULT_LEARN_KEY_PREFIX}s1`)) === 0, 2000, 'the deletion')
  t.equal(await a.get('s1', MINUTE, now + 5), null, 'the deleting store does not answer from its cache')
  t.equal(await b.get('s1', MINUTE, now + 2004), null, 'nor does the other, after its window')
})

test('a returning client costs no round trip; in the second half of the window it refreshes the entry in Redis, in the background', async (t) => {
  const redis = await startRedis(t)
  const a = await openStore(t, { url: redis.url, localCacheMs: 1000 })
  const b = await openStore(t, { url: redis.url, localCacheMs: 0 })
  const client = await inspect(t, redis.url)
  const key = `${DEFAULT_LEARN_KEY_PREFIX}s1`
  const now = Date.now()
  a.set('s1', 't0', MINUTE, now)
  await waitFor(async () => (await client.exists(key)) === 1, 2000, 'the write')
  const answers = new Set<unknown>()
  for (let i = 1; i < 100; i++) answers.add(a.get('s1', MINUTE, now + i))
  t.same([...answers], ['t0'], '99 lookups, answered synchronously')
  t.equal(a.counters.localHits, 99, 'all from the local cache')
  t.equal(client.status, 'ready')
  const info = await client.info('commandstats')
  t.notMatch(info, /cmdstat_getex/, 'no GETEX reached Redis in the first half of the window')

  // Another gateway moves the session meanwhile.
  b.set('s1', 't1', MINUTE, now + 100)
  await waitFor(async () => (await client.get(key)) === 't1', 2000, 'the other write')
  t.equal(a.get('s1', 2 * MINUTE, now + 600), 't0', 'the second half: still answered locally…')
  await waitFor(async () => (await client.pttl(key)) > MINUTE, 2000, '…and the time to live in Redis slid (to the two minutes asked)')
  await waitFor(() => a.get('s1', 2 * MINUTE, now + 601) === 't1', 2000, 'the refresh brought the new target into the cache')
  t.equal(a.get('s1', 2 * MINUTE, now + 1500), 't1', 'the refreshed entry counts its window from the refresh')
})

test('Redis stopped: lookups answer \'unavailable\' at once and never reject, writes do not throw; it recovers by itself', async (t) => {
  const redis = await startRedis(t)
  const logger = recordingLogger()
  const store = await openStore(t, { url: redis.url, logger })
  const now = Date.now()
  store.set('known', 't0', MINUTE, now)
  await redis.stop()

  // Right after the stop, before the client may have noticed: quick, whichever way it learns.
  const first = await Promise.all(Array.from({ length: 10 }, async (_, i) => await timedGet(store, `new${i}`, MINUTE, now)))
  const slowest = Math.max(...first.map((got) => got.ms))
  t.ok(first.every((got) => got.value === 'unavailable'), `all 'unavailable': ${first.map((got) => String(got.value)).join(',')}`)
  t.ok(slowest < TIMEOUT_MS + 100, `within the deadline and then some: slowest ${slowest.toFixed(1)} ms`)

  await waitFor(() => store.status === 'down', 2000, 'the store to see Redis down')
  const later = await timedGet(store, 'new-later', MINUTE, now)
  t.same({ value: later.value, sync: later.sync }, { value: 'unavailable', sync: true }, 'known down: answered synchronously')
  t.doesNotThrow(() => store.set('k', 't1', MINUTE, now), 'set does not throw')
  t.doesNotThrow(() => store.delete('k'), 'delete does not throw')
  t.equal(store.get('known', MINUTE, now + 5000), 't0', 'an entry this gateway learned still answers from its cache past the window, within its time to live')
  t.equal(store.get('known', MINUTE, now + 5000 + MINUTE), 'unavailable', 'but not past its time to live')

  const warnings = logger.lines.filter((line) => line.level === 'warn')
  t.equal(warnings.length, 1, `one line for the whole outage so far: ${JSON.stringify(logger.lines)}`)
  t.notMatch(JSON.stringify(logger.lines), /known|new\d|t0|t1/, 'no key or value in the log')
  t.ok(store.counters.unavailable >= 11 && store.counters.errors >= 2, `counted: ${JSON.stringify(store.counters)}`)

  await redis.start()
  await waitFor(() => store.status === 'ready', 5000, 'the store to reconnect by itself')
  store.set('k2', 't2', MINUTE, now)
  const reader = await openStore(t, { url: redis.url, localCacheMs: 0 })
  await waitFor(async () => (await reader.get('k2', MINUTE, now)) === 't2', 2000, 'the write after the return to reach Redis')
  t.ok(logger.lines.some((line) => line.level === 'info' && /reconnected/.test(line.message)), 'the return is logged')
})

test('a Redis that stops answering: lookups answer \'unavailable\' by the deadline; it recovers when Redis does', async (t) => {
  const redis = await startRedis(t)
  const store = await openStore(t, { url: redis.url })
  const now = Date.now()
  store.set('s1', 't0', MINUTE, now)
  t.equal(await store.get('fresh', MINUTE, now), null, 'answering')
  redis.pause()
  const got = await Promise.all(Array.from({ length: 20 }, async (_, i) => await timedGet(store, `k${i}`, MINUTE, now)))
  const times = got.map((one) => one.ms)
  t.ok(got.every((one) => one.value === 'unavailable' && !one.sync), `all 'unavailable', at the deadline: ${got.map((one) => String(one.value)).join(',')}`)
  t.ok(Math.min(...times) >= TIMEOUT_MS - 2, `none before the deadline: fastest ${Math.min(...times).toFixed(1)} ms`)
  t.ok(Math.max(...times) < TIMEOUT_MS + 100, `none long after: slowest ${Math.max(...times).toFixed(1)} ms`)
  t.equal(store.counters.unavailable, 20)
  t.equal(await store.get('s1', MINUTE, now + 5000), 't0', 'past its window, a learned entry answers from the cache at the deadline')

  redis.resume()
  await waitFor(async () => (await store.get('s1', MINUTE, now + 10_000)) === 't0', 5000, 'answers from Redis again')
  t.equal(store.status, 'ready')
})

test('a server that accepts the connection and never answers: never ready, lookups answer at once, close() settles', async (t) => {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    return new Promise((resolve) => server.close(resolve))
  })
  const store = await openStore(t, { url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}` }, false)
  await waitFor(() => sockets.size > 0, 2000, 'the connection')
  const got = await timedGet(store, 'k', MINUTE, Date.now())
  t.same({ value: got.value, sync: got.sync }, { value: 'unavailable', sync: true })
  t.equal(store.status, 'connecting')
  t.doesNotThrow(() => store.set('k', 't0', MINUTE, Date.now()))
  const started = performance.now()
  await store.close()
  t.ok(performance.now() - started < 1500, `close() settled in ${(performance.now() - started).toFixed(0)} ms`)
  t.equal(store.status, 'down')
})

test('close() settles when Redis is down, when it hangs, and twice', async (t) => {
  const redis = await startRedis(t)
  const down = await openStore(t, { url: redis.url })
  const hung = await openStore(t, { url: redis.url })
  const pending = hung.get('k', MINUTE, Date.now())

  redis.pause()
  let started = performance.now()
  await hung.close()
  const hungMs = performance.now() - started
  t.ok(hungMs < 2500, `with Redis hung: ${hungMs.toFixed(0)} ms`)
  t.equal(await pending, 'unavailable', 'a lookup in flight answered')
  t.equal(await hung.get('k', MINUTE, Date.now()), 'unavailable', 'closed: every lookup answers unavailable')
  t.doesNotThrow(() => hung.set('k', 't0', MINUTE, Date.now()))

  redis.resume()
  await redis.stop()
  await waitFor(() => down.status !== 'ready', 2000, 'the store to see Redis gone')
  started = performance.now()
  await Promise.all([down.close(), down.close()])
  t.ok(performance.now() - started < 1000, `with Redis stopped: ${(performance.now() - started).toFixed(0)} ms`)
})
