import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'
import type { TargetHealth } from './health/target-state.js'
import type { ResolvedTarget } from './options.js'
import { BoundSessions } from './stickiness/bound-sessions.js'
import { targetConnector, type ResolvedTls } from './target-tls.js'
import type { ReassignReason, TargetRef } from './types.js'

/** Larger response headers are a malformed response (502), as at ALB. */
export const MAX_RESPONSE_HEADER_BYTES = 32_768

/** How the plugin's undici pools are built; the same for every target. */
export interface PoolSettings {
  readonly connections: number
  readonly connectTimeoutMs: number
  readonly idleTimeoutMs: number
  /** The target group's TLS settings for its https targets; absent or null: Node's defaults. */
  readonly tls?: ResolvedTls | null
}

/** The code of the error that ends requests still queued in a pool that was replaced: nothing of them reached the target. */
export const POOL_REPLACED = 'FST_STICKY_POOL_REPLACED'
/** A pool with queued requests and nothing running counts as stalled after the connect timeout plus this long without progress. */
const STALL_GRACE_MS = 1000
/** The same failure of one target is logged at most once per this long; the next line says how many were left out. */
const WARNING_INTERVAL_MS = 1000

/** A live request's outcome, for passive checks (see `Target.recordOutcome`). */
export type Outcome = 0 | 1 | 2
export const OUTCOME_OK = 0
export const OUTCOME_5XX = 1
export const OUTCOME_GATEWAY = 2

/** A request waiting for, or holding, one of the target's connections. */
export interface TargetRequest {
  /** False once it no longer waits for a connection (answered, timed out, or its client left). */
  readonly waiting: boolean
  /** Dispatches it on `target`'s pool: a connection is free for it. */
  start (target: Target): void
  /** The target goes away while it waits: it goes to another target, or is answered. */
  evict (): void
}

/**
 * One upstream origin of a target group, with the undici Pool the plugin owns for it. Only
 * `id` and `origin` show when a target is logged or serialized: the pool stays private.
 */
export class Target implements TargetRef {
  readonly id: string
  readonly origin: string
  /** Set by the group (`TargetGroup#setWeight`). */
  weight: number
  /** False while an operator keeps it out of service (`TargetGroup#setInService`): no new session. Set by the group. */
  inService = true
  /** What handlers see of this target (`request.affinity.target`): its id and origin, frozen. */
  readonly ref: TargetRef
  /**
   * The server name every request to an https target carries (undefined for http), always the
   * same: undici otherwise takes the client's Host and opens a new connection whenever it
   * changes. The connection's SNI comes from the group's settings (see targetConnector).
   * @internal
   */
  readonly servername: string | undefined
  readonly #settings: PoolSettings
  #pool: Pool
  /** Pools replaced after they stopped making progress, until they are closed. */
  readonly #retired = new Set<Pool>()
  #outstanding = 0
  /** Requests dispatched on the pool whose undici request has not ended. */
  #active = 0
  /** Requests waiting for a connection, oldest first, from `#head` on: the gateway's own queue, so a deadline can end them unsent. */
  #queue: Array<TargetRequest | undefined> = []
  #head = 0
  /** Called once nothing runs and nothing waits, while closing. */
  #onIdle: (() => void) | null = null
  /** Queue entries that stopped waiting (timed out, client gone) but are still in it. */
  #dead = 0
  #nextScheduled = false
  /** Anything undici did for this target (connected, answered, failed): the stall watchdog reads it. */
  #progress = 0
  #seenProgress = 0
  #stalledSinceMs = -1
  /** Rate-limited warnings: when each code was last logged, and how many were left out since. */
  readonly #warnings = new Map<string, { atMs: number, suppressed: number }>()
  #health: TargetHealth
  /** Consecutive failed requests of live traffic (passive checks), of any kind and gateway failures only. */
  #errors = 0
  #gatewayErrors = 0
  /**
   * True while the group gives it new sessions: healthy and not ejected, or the group fails
   * open. Set by the group on every change, read on every request.
   * @internal
   */
  routable = true
  /**
   * Why a client pinned to it moves to another target now; null while it keeps its pinned
   * clients (routable, or draining / ejected with sessions kept). Set by the group.
   * @internal
   */
  unpinReason: ReassignReason | null = null
  /** Estimate of the sticky sessions pinned to it. @internal */
  readonly sessions = new BoundSessions()
  /** Ejected by passive checks until this time; 0 when not. @internal */
  ejectedUntilMs = 0
  /** Registered with the group's first targets: no slow start until it has once been unhealthy (ALB). @internal */
  slowStartExempt = false
  /** In slow start from `slowStartFromMs` until this time; 0 when not. @internal */
  slowStartEndsMs = 0
  slowStartFromMs = 0
  /** While draining, when the deregistration delay ends; 0 otherwise. @internal */
  drainDeadlineMs = 0
  /** Passive checks: consecutive failures of any kind (5xx or gateway) that call `onErrors` (Infinity when off). @internal */
  errorLimit = Infinity
  /** Passive checks: consecutive gateway failures (refused, reset, timed out, cut off) that call `onErrors` (Infinity when off). @internal */
  gatewayErrorLimit = Infinity
  /** @internal */
  onErrors: ((target: Target) => void) | null = null
  /** Requests in flight over the target's group, which this target adds to (for bounded load). @internal */
  groupLoad: { inFlight: number } = { inFlight: 0 }
  /** Called when a request ends while the target drains. @internal */
  onSettled: (() => void) | null = null
  /** Its open WebSockets, each counted as a request in flight until it closes. @internal */
  readonly tunnels = new Set<{ goAway (): void }>()

  constructor (resolved: ResolvedTarget, settings: PoolSettings, health: TargetHealth) {
    this.#health = health
    this.id = resolved.id
    this.origin = resolved.origin
    this.weight = resolved.weight
    this.ref = Object.freeze({ id: resolved.id, origin: resolved.origin })
    this.#settings = settings
    this.servername = resolved.origin.startsWith('https:') ? settings.tls?.servername ?? new URL(resolved.origin).hostname : undefined
    this.#pool = this.#newPool()
  }

  #newPool (): Pool {
    const pool = new Pool(this.origin, {
      connections: this.#settings.connections,
      pipelining: 1,
      connectTimeout: this.#settings.connectTimeoutMs,
      // The proxy's own deadline, counted from the request's arrival, ends a request waiting for
      // its response; undici's coarser timer is only a backstop.
      headersTimeout: this.#settings.idleTimeoutMs + 2000,
      // ALB's idle timeout between body chunks → abort.
      bodyTimeout: this.#settings.idleTimeoutMs,
      // ALB answers 502 past 32 KB of response headers.
      maxHeaderSize: MAX_RESPONSE_HEADER_BYTES,
      connect: targetConnector(this.origin, this.#settings.tls ?? null, this.#settings.connectTimeoutMs)
    })
    const progressed = (): void => { this.#progress++ }
    pool.on('connect', progressed).on('disconnect', progressed).on('connectionError', progressed)
    return pool
  }

  /** The target's health: state, ALB's reason code, consecutive check results. */
  get health (): TargetHealth {
    return this.#health
  }

  /** @internal */
  setHealth (health: TargetHealth): void {
    this.#health = health
  }

  /** The target's own undici Pool. */
  get pool (): Pool {
    return this.#pool
  }

  /** Requests sent to this target whose response has not ended yet. */
  get outstanding (): number {
    return this.#outstanding
  }

  /** Counts a request as sent; call `settle()` once when its response ends or fails. */
  begin (): void {
    this.#outstanding++
    this.groupLoad.inFlight++
  }

  settle (): void {
    this.#outstanding--
    this.groupLoad.inFlight--
    if (this.onSettled !== null) this.onSettled()
  }

  /**
   * A live request's outcome for passive checks: a complete response below 500 (OUTCOME_OK)
   * clears both counts; the target's own 5xx (OUTCOME_5XX) counts against `errorLimit`; a
   * failed connection, a reset, a timeout or a cut-off response (OUTCOME_GATEWAY) against both.
   */
  recordOutcome (outcome: Outcome): void {
    if (outcome === OUTCOME_OK) {
      this.#errors = 0
      this.#gatewayErrors = 0
      return
    }
    const gateway = outcome === OUTCOME_GATEWAY && ++this.#gatewayErrors >= this.gatewayErrorLimit
    if (++this.#errors >= this.errorLimit || gateway) {
      this.#errors = 0
      this.#gatewayErrors = 0
      this.onErrors?.(this)
    }
  }

  /**
   * Takes a connection for `request` (its `start` is called now) or queues it until one is free.
   * The gateway's queue, not undici's: a request that waits past its deadline can be answered
   * without ever reaching the target, and one queued for a target that goes away can go elsewhere.
   */
  admit (request: TargetRequest): void {
    if (this.#active < this.#settings.connections && this.#head === this.#queue.length) {
      this.#active++
      request.start(this)
      return
    }
    this.#queue.push(request)
    if (this.#active < this.#settings.connections && !this.#nextScheduled) {
      this.#nextScheduled = true
      queueMicrotask(this.#startNext)
    }
  }

  /** A dispatched request's undici request ended: its connection is free for the next in the queue. */
  release (): void {
    this.#active--
    this.#progress++
    if (this.#onIdle !== null && this.#active === 0 && this.waitingCount() === 0) this.#onIdle()
    if (this.#head < this.#queue.length && !this.#nextScheduled) {
      // After undici's callback has returned, so the connection counts as free there too.
      this.#nextScheduled = true
      queueMicrotask(this.#startNext)
    }
  }

  readonly #startNext = (): void => {
    this.#nextScheduled = false
    // The queue is read anew each time: starting a request may rebuild or empty it.
    while (this.#active < this.#settings.connections && this.#head < this.#queue.length) {
      const request = this.#queue[this.#head] as TargetRequest
      this.#queue[this.#head++] = undefined
      if (!request.waiting) continue
      this.#active++
      request.start(this)
    }
    const queue = this.#queue
    if (this.#head === queue.length) {
      this.#queue = []
      this.#head = 0
      this.#dead = 0
    } else if (this.#head > 1024 && this.#head * 2 > queue.length) {
      this.#queue = queue.slice(this.#head)
      this.#head = 0
    }
  }

  /** Takes every request still waiting for a connection out of the queue (the target is going away): the caller sends them elsewhere. */
  takeQueued (): TargetRequest[] {
    const waiting: TargetRequest[] = []
    for (let i = this.#head; i < this.#queue.length; i++) {
      const request = this.#queue[i] as TargetRequest
      if (request.waiting) waiting.push(request)
    }
    this.#queue = []
    this.#head = 0
    this.#dead = 0
    return waiting
  }

  /**
   * A queued request stopped waiting (timed out, or its client left): once half the queue is
   * such entries, it is rebuilt without them, so requests that give up while the target's
   * connections stay busy (long polls, streams) do not pile up.
   */
  forget (): void {
    if (++this.#dead * 2 < this.#queue.length - this.#head) return
    const waiting: TargetRequest[] = []
    for (let i = this.#head; i < this.#queue.length; i++) {
      const request = this.#queue[i]
      if (request !== undefined && request.waiting) waiting.push(request)
    }
    this.#queue = waiting
    this.#head = 0
    this.#dead = 0
  }

  /** Entries in the gateway's queue for this target, some perhaps timed out or left meanwhile (cheap, for the hot path). */
  get queued (): number {
    return this.#queue.length - this.#head
  }

  /** Requests that really wait in the gateway's queue for a connection to this target (counts them: for describe()). */
  waitingCount (): number {
    let waiting = 0
    for (let i = this.#head; i < this.#queue.length; i++) if (this.#queue[i]?.waiting === true) waiting++
    return waiting
  }

  /** Something happened on a request of this target (connected, answered, failed). */
  progressed (): void {
    this.#progress++
  }

  /**
   * Looks whether the pool stopped making progress: requests queued in undici, none running,
   * and nothing happened (no connection, answer or failure) for longer than a connect can take.
   * undici leaves a pool so when a dispatch fails synchronously; such a pool is replaced by a
   * new one to the same origin, so the target keeps its id and its sticky clients, and the
   * requests stuck in it come back with POOL_REPLACED to be sent again. Called once a second.
   * @internal
   */
  watchStall (nowMs = performance.now()): boolean {
    const stats = this.#pool.stats
    if (stats.queued === 0 || stats.running > 0 || this.#progress !== this.#seenProgress) {
      this.#seenProgress = this.#progress
      this.#stalledSinceMs = -1
      return false
    }
    if (this.#stalledSinceMs < 0) {
      this.#stalledSinceMs = nowMs
      return false
    }
    if (nowMs - this.#stalledSinceMs < this.#settings.connectTimeoutMs + STALL_GRACE_MS) return false
    this.#stalledSinceMs = -1
    this.replacePool(false)
    return true
  }

  /**
   * Puts a new pool in place of the current one. `graceful`: requests running on the old pool
   * finish there (it is destroyed after the idle timeout at the latest); else they end now.
   * Requests the old pool never sent end with POOL_REPLACED.
   * @internal
   */
  replacePool (graceful: boolean): void {
    const old = this.#pool
    if (old.closed || old.destroyed) return
    this.#pool = this.#newPool()
    this.#retired.add(old)
    const replaced = Object.assign(new Error('the target\'s connection pool was replaced'), { code: POOL_REPLACED })
    const destroy = (): void => { old.destroy(replaced).catch(noop).finally(() => this.#retired.delete(old)) }
    if (!graceful) {
      destroy()
      return
    }
    const timer = setTimeout(destroy, this.#settings.idleTimeoutMs)
    timer.unref()
    old.close().then(() => {
      clearTimeout(timer)
      this.#retired.delete(old)
    }, noop)
  }

  /**
   * Whether a failure with this code should be logged now: at most once per second per code.
   * Returns -1 to stay silent, else how many were left out since the last line.
   * @internal
   */
  warnable (code: string, nowMs = performance.now()): number {
    const last = this.#warnings.get(code)
    if (last === undefined) {
      this.#warnings.set(code, { atMs: nowMs, suppressed: 0 })
      return 0
    }
    if (nowMs - last.atMs < WARNING_INTERVAL_MS) {
      last.suppressed++
      return -1
    }
    const suppressed = last.suppressed
    last.atMs = nowMs
    last.suppressed = 0
    return suppressed
  }

  /**
   * Lets in-flight requests finish, then closes every connection; after `graceMs` what still
   * runs is ended, so closing always settles.
   */
  async close (graceMs = this.#settings.idleTimeoutMs): Promise<void> {
    // No new client can come: open WebSockets are told to go away (1001) now.
    this.closeTunnels()
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs)
      timer.unref()
    })
    // Requests still waiting in the gateway's queue get their connection first: the pool is
    // closed once the queue is empty and nothing runs, or when the grace ends.
    if (this.#active > 0 || this.waitingCount() > 0) {
      await Promise.race([new Promise<void>((resolve) => { this.#onIdle = resolve }), late])
      this.#onIdle = null
    }
    const pools = [this.#pool, ...this.#retired]
    await Promise.all(pools.map(async (pool) => {
      if (pool.closed || pool.destroyed) return
      await Promise.race([pool.close(), late])
      if (!pool.destroyed) await pool.destroy().catch(noop)
    }))
    clearTimeout(timer)
  }

  /** Ends every request still running with `err` and closes every connection. */
  async destroy (err: Error): Promise<void> {
    this.closeTunnels()
    await Promise.all([this.#pool, ...this.#retired].map((pool) => pool.destroyed ? undefined : pool.destroy(err).catch(noop)))
  }

  /** Closes every open WebSocket to this target with 1001 (Going Away), at a frame boundary. @internal */
  closeTunnels (): void {
    for (const tunnel of this.tunnels) tunnel.goAway()
  }

  toJSON (): TargetRef {
    return this.ref
  }
}

function noop (): void {}
