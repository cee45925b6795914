import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'
import type { ResolvedHealthCheck } from '../options.js'
import type { Target } from '../target.js'
import { targetConnector, type ResolvedTls } from '../target-tls.js'
import { matchesStatus } from './matcher.js'
import type { CheckResult } from './target-state.js'

const PASS: CheckResult = Object.freeze({ ok: true })
const TIMEOUT: CheckResult = Object.freeze({ ok: false, reason: 'Target.Timeout' })
const MISMATCH: CheckResult = Object.freeze({ ok: false, reason: 'Target.ResponseCodeMismatch' })
const FAILED: CheckResult = Object.freeze({ ok: false, reason: 'Target.FailedHealthChecks' })

/** A target registered at run time is first checked within up to this long. */
const MAX_FIRST_CHECK_SPREAD_MS = 1000
/** Later checks start every interval, less up to this share of it (never more: the bound of an unhealthy verdict holds). */
const INTERVAL_JITTER = 0.1

/**
 * Active health checks of one target group: `GET path` on each watched target over a connection
 * of its own (a one-connection pool to the target's traffic port, or to its check `port`), never
 * queued behind the target's traffic, so a busy target is not taken for a dead one and a hung
 * one is found within `unhealthyThreshold × intervalMs + timeoutMs`. One check at a time per
 * target (the next is scheduled when one ends), with jitter; the group's first checks spread over
 * a whole interval so targets and gateway instances do not probe in step. Every timer is
 * unref'd, so checks never keep the process alive. Results, with how long each check took, go to
 * `report`; the group turns them into states (see target-state.ts).
 */
export class HealthChecker {
  readonly #settings: ResolvedHealthCheck
  readonly #report: (target: Target, result: CheckResult, durationMs: number) => void
  readonly #tls: ResolvedTls | null
  readonly #watched = new Set<Target>()
  readonly #timers = new Map<Target, NodeJS.Timeout>()
  /** Each watched target's one-connection pool for its checks. */
  readonly #pools = new Map<Target, Pool>()
  #running = 0
  #closed = false

  /** `tls`: the group's TLS settings, so an https target is checked as its traffic reaches it. */
  constructor (settings: ResolvedHealthCheck, report: (target: Target, result: CheckResult, durationMs: number) => void, tls: ResolvedTls | null = null) {
    this.#settings = settings
    this.#report = report
    this.#tls = tls
  }

  /**
   * Starts checking `target`. `spread` (the group's first targets): the first check comes at a
   * random point of the first interval; else (registered at run time) within a tenth of the
   * interval, at most 1 s.
   */
  watch (target: Target, spread = false): void {
    if (this.#closed || this.#watched.has(target)) return
    this.#watched.add(target)
    const { port, intervalMs } = this.#settings
    const url = new URL(target.origin)
    if (port !== null) url.port = String(port)
    this.#pools.set(target, new Pool(url.origin, { connections: 1, pipelining: 1, connect: targetConnector(url.origin, this.#tls) }))
    this.#schedule(target, Math.random() * (spread ? intervalMs : Math.min(intervalMs / 10, MAX_FIRST_CHECK_SPREAD_MS)))
  }

  /** Stops checking `target`; a check already running is not reported. */
  unwatch (target: Target): void {
    this.#watched.delete(target)
    clearTimeout(this.#timers.get(target))
    this.#timers.delete(target)
    const pool = this.#pools.get(target)
    if (pool !== undefined) {
      this.#pools.delete(target)
      // A check still running ends with the pool.
      pool.destroy().catch(() => {})
    }
  }

  /** Stops every check; nothing is scheduled or reported afterwards. */
  close (): void {
    this.#closed = true
    for (const target of [...this.#watched]) this.unwatch(target)
  }

  /**
   * Checks scheduled or running now (0 once closed and the running ones ended).
   * @internal
   */
  get pending (): number {
    return this.#timers.size + this.#running
  }

  #schedule (target: Target, delayMs: number): void {
    const timer = setTimeout(() => { void this.#check(target) }, delayMs)
    timer.unref()
    this.#timers.set(target, timer)
  }

  async #check (target: Target): Promise<void> {
    this.#timers.delete(target)
    this.#running++
    const startedMs = performance.now()
    let result: CheckResult
    try {
      result = await this.#probe(target)
    } finally {
      this.#running--
    }
    if (this.#closed || !this.#watched.has(target)) return
    this.#report(target, result, performance.now() - startedMs)
    // Checks start an interval apart (a check ends within its timeout, below the interval), so
    // a target that stops answering is unhealthy within unhealthyThreshold × intervalMs + timeoutMs.
    const { intervalMs } = this.#settings
    const nextMs = intervalMs * (1 - Math.random() * INTERVAL_JITTER)
    this.#schedule(target, Math.max(0, nextMs - (performance.now() - startedMs)))
  }

  async #probe (target: Target): Promise<CheckResult> {
    const { path, timeoutMs, matcher } = this.#settings
    // AbortSignal.timeout's timer is unref'd and exact; undici's own timeouts tick once a second.
    const signal = AbortSignal.timeout(timeoutMs)
    try {
      const pool = this.#pools.get(target) as Pool
      const { statusCode, body } = await pool.request({ method: 'GET', path, headers: { 'user-agent': 'fastify-sticky-health-check' }, signal })
      await body.dump({ limit: 65_536, signal })
      return matchesStatus(matcher, statusCode) ? PASS : MISMATCH
    } catch {
      return signal.aborted ? TIMEOUT : FAILED
    }
  }
}
