import { Redis } from 'ioredis'
import { DeadlineList, type Timed } from '../deadlines.js'
import { LruEntry, LruList, type LearnLookup, type LearnStore, type LearnStoreCounters } from './learn-store.js'

/** Prefix of every key the Redis learn store writes. */
export const DEFAULT_LEARN_KEY_PREFIX = 'fastify-sticky:learn:'
/** How long a lookup waits for Redis before it answers `'unavailable'`. */
export const DEFAULT_LEARN_TIMEOUT_MS = 50
/** How long an answer from Redis is reused by the gateway that got it. */
export const DEFAULT_LEARN_LOCAL_CACHE_MS = 1000
/** Entries of the local cache. */
export const DEFAULT_LEARN_MAX_LOCAL_ENTRIES = 10_000

/** At most one log line per this long; the others are counted in the next one. */
const LOG_INTERVAL_MS = 10_000
/** Reconnection backoff: 50 ms doubling per failed attempt, up to 1 s (so a Redis back is seen within about a second). */
const RECONNECT_FIRST_MS = 50
const RECONNECT_MAX_MS = 1000
/** A connection attempt that has not connected in this long is abandoned (and retried). */
const CONNECT_TIMEOUT_MS = 2000
/** A connection with commands pending that has received nothing in this long (and at least 20 deadlines) is dropped and made anew. */
const SOCKET_TIMEOUT_MIN_MS = 1000
/** How long `close()` lets QUIT take before it drops the connection. */
const CLOSE_TIMEOUT_MS = 1000

/** Where the Redis learn store writes its rate-limited lines (Fastify's logger fits). */
export interface LearnStoreLogger {
  warn (details: Record<string, unknown>, message: string): void
  info (details: Record<string, unknown>, message: string): void
}

/** Options of `RedisLearnStore`. */
export interface RedisLearnStoreOptions {
  /** `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS. */
  url: string
  /** Prefix of every key. Default `'fastify-sticky:learn:'`. */
  keyPrefix?: string
  /** A lookup that Redis has not answered within this long answers `'unavailable'`. Default 50. */
  timeoutMs?: number
  /** How long an answer is reused without asking Redis again; 0 asks every time. Default 1000. */
  localCacheMs?: number
  /** Entries of the local cache (least recently used go first). Default 10 000. */
  maxLocalEntries?: number
  /** Gets at most one line per 10 s about Redis being unreachable or slow, never with keys or values. */
  logger?: LearnStoreLogger
}

/** Where the connection to Redis stands: answering, not yet connected, or lost (reconnecting by itself). */
export type RedisLearnStoreStatus = 'ready' | 'connecting' | 'down'

class LocalEntry extends LruEntry {
  /** Null: deleted here, so that an answer to a lookup sent before the deletion does not bring it back. */
  targetId: string | null
  /** When Redis last confirmed it (or this process wrote it), on the caller's clock. */
  fetchedAtMs: number
  /** Last use + time to live, on the caller's clock. */
  expiresAtMs: number
  /** A refresh of its time to live in Redis is under way. */
  refreshing = false

  constructor (key: string, targetId: string | null, fetchedAtMs: number, expiresAtMs: number) {
    super(key)
    this.targetId = targetId
    this.fetchedAtMs = fetchedAtMs
    this.expiresAtMs = expiresAtMs
  }
}

/** A lookup waiting for Redis, in the store's deadline list. */
class PendingGet implements Timed {
  deadlineAtMs = Infinity
  prevTimed: Timed | null = null
  nextTimed: Timed | null = null
  timed = false
  readonly key: string
  /** The local entry when the lookup was sent (undefined: none): the answer fills the cache only if it is still the same. */
  readonly seen: LocalEntry | undefined
  readonly ttlMs: number
  readonly nowMs: number
  readonly promise: Promise<LearnLookup>
  resolve!: (lookup: LearnLookup) => void
  readonly #onExpire: (pending: PendingGet) => void

  constructor (key: string, seen: LocalEntry | undefined, ttlMs: number, nowMs: number, onExpire: (pending: PendingGet) => void) {
    this.key = key
    this.seen = seen
    this.ttlMs = ttlMs
    this.nowMs = nowMs
    this.#onExpire = onExpire
    this.promise = new Promise((resolve) => { this.resolve = resolve })
  }

  expire (): void {
    this.#onExpire(this)
  }
}

/**
 * The learn store that several gateway instances share, in Redis: `GETEX key PX ttl` reads and
 * slides an entry in one round trip, `SET key value PX ttl` writes it (pipelined, fire and
 * forget), every key has the prefix and a time to live. A lookup waits at most `timeoutMs`
 * (one timer for all of them), and answers `'unavailable'` at once while the connection is not
 * ready: the client queues nothing offline and retries nothing, so a down or slow Redis costs a
 * request its deadline at most, never a hang; the client reconnects by itself.
 *
 * Answers are kept `localCacheMs` in a bounded local cache, so a returning client costs no round
 * trip most of the time; a client seen again in the second half of that window refreshes the
 * entry (its value and its time to live in Redis) in the background, pipelined, once. When
 * Redis cannot answer, an entry older than that window but within its time to live still
 * answers: what this gateway last knew beats no stickiness.
 */
export class RedisLearnStore implements LearnStore {
  readonly #client: Redis
  readonly #prefix: string
  readonly #timeoutMs: number
  readonly #localCacheMs: number
  readonly #local: LruList<LocalEntry> | null
  readonly #deadlines = new DeadlineList()
  readonly #logger: LearnStoreLogger | undefined
  readonly #counters: LearnStoreCounters = { hits: 0, localHits: 0, misses: 0, unavailable: 0, errors: 0 }
  #down = false
  #closed = false
  #closing: Promise<void> | null = null
  #loggedAtMs = -Infinity
  #suppressed = 0

  constructor (options: RedisLearnStoreOptions) {
    this.#prefix = options.keyPrefix ?? DEFAULT_LEARN_KEY_PREFIX
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_LEARN_TIMEOUT_MS
    this.#localCacheMs = options.localCacheMs ?? DEFAULT_LEARN_LOCAL_CACHE_MS
    const maxLocalEntries = options.maxLocalEntries ?? DEFAULT_LEARN_MAX_LOCAL_ENTRIES
    this.#local = this.#localCacheMs > 0 && maxLocalEntries > 0 ? new LruList(maxLocalEntries) : null
    this.#logger = options.logger
    this.#client = new Redis(options.url, {
      // Fail fast: a command sent while the connection is not ready is rejected at once (not
      // queued), and commands in flight when it drops are rejected (not resent).
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // Commands of one tick go out in one write.
      enableAutoPipelining: true,
      // The per-lookup deadline is the store's own (one timer); this bounds how long a Redis that
      // stopped answering holds a connection and its commands (one timer per connection, not
      // `commandTimeout`'s one per command).
      socketTimeout: Math.max(SOCKET_TIMEOUT_MIN_MS, 20 * this.#timeoutMs),
      connectTimeout: CONNECT_TIMEOUT_MS,
      retryStrategy: (attempt) => Math.min(RECONNECT_FIRST_MS * 2 ** Math.min(attempt - 1, 10), RECONNECT_MAX_MS)
    })
    this.#client.on('ready', this.#onReady)
    this.#client.on('error', this.#onConnectionError)
    this.#client.on('close', this.#onClose)
  }

  /** Where the connection stands; `'down'` after `close()`. */
  get status (): RedisLearnStoreStatus {
    if (this.#closed) return 'down'
    if (this.#client.status === 'ready') return 'ready'
    return this.#down ? 'down' : 'connecting'
  }

  get counters (): Readonly<LearnStoreCounters> {
    return this.#counters
  }

  get (key: string, ttlMs: number, nowMs: number): LearnLookup | Promise<LearnLookup> {
    const local = this.#local?.peek(key)
    if (local !== undefined && local.targetId !== null && nowMs < local.expiresAtMs && nowMs - local.fetchedAtMs < this.#localCacheMs) {
      local.expiresAtMs = nowMs + ttlMs
      this.#local?.touch(local)
      if (!local.refreshing && nowMs - local.fetchedAtMs >= this.#localCacheMs / 2) this.#refresh(local, ttlMs, nowMs)
      this.#counters.hits++
      this.#counters.localHits++
      return local.targetId
    }
    if (this.#closed || this.#client.status !== 'ready') {
      this.#log('not-ready')
      return this.#fallback(key, ttlMs, nowMs)
    }
    const pending = new PendingGet(key, local, ttlMs, nowMs, this.#onDeadline)
    this.#deadlines.add(pending, this.#timeoutMs)
    this.#client.getex(this.#prefix + key, 'PX', wholeMs(ttlMs)).then(
      (value) => this.#answer(pending, value),
      (err: Error) => this.#fail(pending, err))
    return pending.promise
  }

  set (key: string, targetId: string, ttlMs: number, nowMs: number): void {
    if (this.#closed) return
    this.#local?.add(new LocalEntry(key, targetId, nowMs, nowMs + ttlMs))
    if (this.#client.status !== 'ready') {
      this.#counters.errors++
      this.#log('not-ready')
      return
    }
    this.#client.set(this.#prefix + key, targetId, 'PX', wholeMs(ttlMs)).catch(this.#onCommandError)
  }

  delete (key: string): void {
    if (this.#closed) return
    this.#local?.add(new LocalEntry(key, null, -Infinity, -Infinity))
    if (this.#client.status !== 'ready') {
      this.#counters.errors++
      this.#log('not-ready')
      return
    }
    this.#client.del(this.#prefix + key).catch(this.#onCommandError)
  }

  /** Quits (drops the connection when Redis is down or QUIT takes over a second); lookups in flight answer `'unavailable'`. */
  async close (): Promise<void> {
    if (this.#closing !== null) return await this.#closing
    this.#closed = true
    this.#local?.clear()
    this.#closing = this.#quit()
    await this.#closing
  }

  async #quit (): Promise<void> {
    if (this.#client.status === 'ready') {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        this.#client.quit().catch(() => {}),
        new Promise((resolve) => { timer = setTimeout(resolve, CLOSE_TIMEOUT_MS) })
      ])
      clearTimeout(timer)
    }
    this.#client.disconnect()
  }

  /** A background GETEX: slides the entry's time to live in Redis, and brings its value up to date. */
  #refresh (entry: LocalEntry, ttlMs: number, nowMs: number): void {
    if (this.#client.status !== 'ready') return
    entry.refreshing = true
    this.#client.getex(this.#prefix + entry.key, 'PX', wholeMs(ttlMs)).then((value) => {
      entry.refreshing = false
      if (this.#local?.peek(entry.key) !== entry) return
      if (value === null) {
        this.#local.remove(entry)
      } else {
        entry.targetId = value
        entry.fetchedAtMs = nowMs
      }
    }, (err: Error) => {
      entry.refreshing = false
      this.#onCommandError(err)
    })
  }

  #answer (pending: PendingGet, value: string | null): void {
    this.#fill(pending, value)
    // Answered at its deadline already: the value only fed the cache.
    if (!pending.timed) return
    this.#deadlines.remove(pending)
    if (value === null) this.#counters.misses++
    else this.#counters.hits++
    pending.resolve(value)
  }

  #fail (pending: PendingGet, err: Error): void {
    this.#onCommandError(err)
    if (!pending.timed) return
    this.#deadlines.remove(pending)
    pending.resolve(this.#fallback(pending.key, pending.ttlMs, pending.nowMs))
  }

  readonly #onDeadline = (pending: PendingGet): void => {
    this.#log('timeout')
    pending.resolve(this.#fallback(pending.key, pending.ttlMs, pending.nowMs))
  }

  /** Puts Redis's answer in the local cache, unless the entry changed since the lookup was sent (a write, a deletion, a later answer). */
  #fill (pending: PendingGet, value: string | null): void {
    const local = this.#local
    if (local === null || this.#closed) return
    const current = local.peek(pending.key)
    if (current !== pending.seen) return
    if (value === null) {
      if (current !== undefined) local.remove(current)
      return
    }
    local.add(new LocalEntry(pending.key, value, pending.nowMs, pending.nowMs + pending.ttlMs))
  }

  /** When Redis cannot answer: what this process last knew, if its time to live allows, else `'unavailable'`. */
  #fallback (key: string, ttlMs: number, nowMs: number): LearnLookup {
    const local = this.#local?.peek(key)
    if (local !== undefined && local.targetId !== null && nowMs < local.expiresAtMs) {
      local.expiresAtMs = nowMs + ttlMs
      this.#local?.touch(local)
      this.#counters.hits++
      this.#counters.localHits++
      return local.targetId
    }
    this.#counters.unavailable++
    return 'unavailable'
  }

  readonly #onReady = (): void => {
    if (this.#down) this.#logger?.info({ learnStore: 'redis' }, 'fastify-sticky: learn store reconnected to Redis')
    this.#down = false
  }

  readonly #onConnectionError = (err: Error): void => {
    this.#down = true
    this.#log(describe(err))
  }

  readonly #onClose = (): void => {
    if (!this.#closed) this.#down = true
  }

  readonly #onCommandError = (err: Error): void => {
    this.#counters.errors++
    this.#log(describe(err))
  }

  /** One line per LOG_INTERVAL_MS at most, saying why and how many were left out; never a key or a value. */
  #log (reason: string): void {
    if (this.#logger === undefined || this.#closed) return
    const nowMs = performance.now()
    if (nowMs - this.#loggedAtMs < LOG_INTERVAL_MS) {
      this.#suppressed++
      return
    }
    this.#loggedAtMs = nowMs
    const suppressed = this.#suppressed
    this.#suppressed = 0
    this.#logger.warn({ learnStore: 'redis', status: this.status, reason, suppressed }, 'fastify-sticky: learn store cannot use Redis; lookups answer from the local cache or fall back')
  }
}

/** Redis takes whole milliseconds, at least 1. */
function wholeMs (ms: number): number {
  return Math.max(1, Math.ceil(ms))
}

/** An error's code or first line: what went wrong, without the command's arguments. */
function describe (err: Error): string {
  const code = (err as NodeJS.ErrnoException).code
  if (typeof code === 'string') return code
  return err.message.split('\n', 1)[0].slice(0, 200)
}
