import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { FST_STICKY_OPTION_INVALID } from './errors.js'
import type { CheckResult } from './health/target-state.js'
import type { ResolvedMetrics } from './options.js'
import type { LearnStore, LearnStoreCounters } from './stickiness/learn-store.js'
import type { GroupMetrics, TargetGroup } from './target-group.js'
import type { AffinityDecision, MetricsClient, MetricsRegistry, TargetDescription, TargetStateName } from './types.js'
import { invalid } from './validate.js'

// Prometheus metrics through the user's prom-client (or `@prometheus-io/client`, same API). Per
// request: one decision count and one response count, kept here in plain maps and handed to
// prom-client when the registry is scraped (its labelled inc() costs a few hundred ns), and one
// duration observation; everything about targets is read from describe() at scrape time.

type Labels = Record<string, string>
interface Counter { inc (labels: Labels, value?: number): void, remove (labels: Labels): void, reset (): void }
interface Gauge { set (labels: Labels, value: number): void, reset (): void }
interface Histogram { observe (labels: Labels, value: number): void }
interface MetricConfig<T> {
  name: string
  help: string
  labelNames: readonly string[]
  registers: readonly MetricsRegistry[]
  buckets?: readonly number[]
  collect?: (this: T) => void
}
interface Client {
  Registry: new () => MetricsRegistry
  Counter: new (config: MetricConfig<Counter>) => Counter
  Gauge: new (config: MetricConfig<Gauge>) => Gauge
  Histogram: new (config: MetricConfig<Histogram>) => Histogram
}

const STATES: readonly TargetStateName[] = ['initial', 'healthy', 'unhealthy', 'draining', 'unused']
/** `status_class` by the status code's first digit. */
const STATUS_CLASSES = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx']
const CHECK_RESULTS: ReadonlyArray<{ result: string, reason: string }> = [
  { result: 'pass', reason: '' },
  { result: 'fail', reason: 'Target.Timeout' },
  { result: 'fail', reason: 'Target.ResponseCodeMismatch' },
  { result: 'fail', reason: 'Target.FailedHealthChecks' }
]

/** A counted combination of labels. */
interface Count {
  readonly labels: Labels
  value: number
}

/** What the metrics read at scrape time. */
export interface MetricsSources {
  readonly groups: ReadonlyMap<string, TargetGroup>
  /** The learn store once made; null before (it is made when a `learn` route first asks). */
  readonly learnStore: () => LearnStore | null
  readonly learnStoreType: 'memory' | 'redis'
  readonly now: () => number
}

/**
 * The resolved `metrics` option made real: prom-client loaded (or the user's module), the
 * registry checked (or made), every metric registered. Throws FST_STICKY_OPTION_INVALID when
 * prom-client cannot be loaded, the registry is not one of its Registries, or it already holds
 * a metric of the same name.
 */
export async function createMetrics (options: ResolvedMetrics, sources: MetricsSources): Promise<Metrics> {
  const client = (options.client ?? await loadPromClient()) as unknown as Client
  const registry = options.registry ?? new client.Registry()
  if (!(registry instanceof client.Registry)) {
    invalid('metrics.registry', `a Registry of the prom-client in use (${options.client === null ? "the one fastify-sticky loads: with another copy installed, pass yours as metrics.client" : 'metrics.client'})`, registry)
  }
  return new Metrics(client, registry, options, sources)
}

async function loadPromClient (): Promise<MetricsClient> {
  // A variable specifier: prom-client is an optional peer, loaded only when metrics are asked for.
  const specifier = 'prom-client'
  try {
    return await import(specifier) as MetricsClient
  } catch (err) {
    throw new FST_STICKY_OPTION_INVALID(`metrics needs prom-client, which could not be loaded (${(err as { code?: string }).code ?? 'no code'}): install it (npm install prom-client) or pass its module as metrics.client`)
  }
}

/** The plugin's metrics in one registry; see docs/metrics.md. */
export class Metrics implements GroupMetrics {
  readonly registry: MetricsRegistry
  /** Decisions by group, outcome, reason and decided_by (strings whose hashes V8 keeps: no key is built per request). */
  readonly #decisions = new Map<string, Map<string, Map<string, Map<string, Count>>>>()
  /** Responses by group, then target id, then the status code's first digit. */
  readonly #responses = new Map<string, Map<string, number[]>>()
  readonly #duration: GroupHistogram
  readonly #gatewayErrors: Counter
  readonly #checks: Counter
  readonly #checkDuration: Histogram
  readonly #owned: Array<{ name: string, metric: unknown }> = []

  constructor (client: Client, registry: MetricsRegistry, options: ResolvedMetrics, sources: MetricsSources) {
    this.registry = registry
    const prefix = options.prefix
    const registers = [registry]
    const names = ['decisions_total', 'responses_total', 'request_duration_seconds', 'gateway_errors_total', 'target_state', 'target_in_flight',
      'target_bound_sessions', 'target_ejected', 'target_weight', 'target_slow_start_weight', 'target_group_degraded', 'health_checks_total',
      'health_check_duration_seconds', 'learn_store_lookups_total', 'learn_store_errors_total']
    for (const name of names) {
      if (registry.getSingleMetric(prefix + name) !== undefined) {
        throw new FST_STICKY_OPTION_INVALID(`metrics.registry already holds a metric named ${prefix + name}: give each gateway its own registry or metrics.prefix`)
      }
    }
    const own = <T>(metric: T, name: string): T => {
      this.#owned.push({ name: prefix + name, metric })
      return metric
    }
    const counter = (name: string, help: string, labelNames: readonly string[], collect?: (this: Counter) => void): Counter =>
      own(new client.Counter({ name: prefix + name, help, labelNames, registers, ...(collect === undefined ? {} : { collect }) }), name)
    const gauge = (name: string, help: string, labelNames: readonly string[], collect: (this: Gauge) => void): Gauge =>
      own(new client.Gauge({ name: prefix + name, help, labelNames, registers, collect }), name)
    const histogram = (name: string, help: string): Histogram =>
      own(new client.Histogram({ name: prefix + name, help, labelNames: ['target_group'], registers, buckets: options.buckets }), name)
    const { groups, now } = sources
    const decisions = this.#decisions
    function * decisionCounts (): Generator<Count> {
      for (const byOutcome of decisions.values()) for (const byReason of byOutcome.values()) for (const byDecider of byReason.values()) yield * byDecider.values()
    }
    const responses = this.#responses

    counter('decisions_total', 'Affinity decisions: outcome hit, new, reassigned (with its reason) or unavailable, and what decided', ['target_group', 'outcome', 'reason', 'decided_by'], function collect () {
      this.reset()
      for (const { labels, value } of decisionCounts()) this.inc(labels, value)
    })
    counter('responses_total', 'Responses to requests of bound routes, by target (empty when the gateway answered itself) and status class', ['target_group', 'target', 'status_class'], function collect () {
      this.reset()
      for (const [group, byTarget] of responses) {
        for (const [target, byClass] of byTarget) {
          // A target that left its group (a late response of a drained one included) leaves with its series.
          if (target !== '' && groups.get(group)?.get(target) === undefined) {
            byTarget.delete(target)
            continue
          }
          for (let i = 0; i < byClass.length; i++) if (byClass[i] > 0) this.inc({ target_group: group, target, status_class: STATUS_CLASSES[i] }, byClass[i])
        }
      }
    })
    // Observed on every response: kept in plain arrays, handed to the registry as prom-client's own histogram is.
    this.#duration = own(new GroupHistogram(prefix + 'request_duration_seconds', 'Time from the request to the end of its response (or a WebSocket\'s 101), on bound routes', options.buckets), 'request_duration_seconds')
    registry.registerMetric(this.#duration)
    this.#gatewayErrors = counter('gateway_errors_total', 'Errors the gateway answered with (or cut a response for), by FST_STICKY_* code', ['target_group', 'code'])
    const perTarget = (name: string, help: string, value: (target: TargetDescription, group: TargetGroup, nowMs: number) => number): Gauge =>
      gauge(name, help, ['target_group', 'target'], function collect () {
        this.reset()
        const nowMs = now()
        for (const group of groups.values()) {
          for (const target of group.describe().targets) this.set({ target_group: group.name, target: target.id }, value(target, group, nowMs))
        }
      })
    gauge('target_state', 'A target\'s state: 1 for the state it is in, 0 for the others', ['target_group', 'target', 'state'], function collect () {
      this.reset()
      for (const group of groups.values()) {
        for (const target of group.describe().targets) {
          for (const state of STATES) this.set({ target_group: group.name, target: target.id, state }, target.state === state ? 1 : 0)
        }
      }
    })
    perTarget('target_in_flight', 'Requests in flight to a target (queued ones and open WebSockets included)', (target) => target.inFlight)
    perTarget('target_bound_sessions', 'Estimate of the sticky sessions pinned to a target', (target) => target.boundSessions)
    perTarget('target_ejected', '1 while passive checks keep a target ejected', (target) => target.ejectedUntilMs === null ? 0 : 1)
    perTarget('target_weight', 'A target\'s configured weight', (target) => target.weight)
    perTarget('target_slow_start_weight', 'The weight a target takes new sessions with now: growing from 0 to its weight during slow start, its weight otherwise', slowStartWeight)
    gauge('target_group_degraded', '1 while a target group has fewer healthy targets than its minimum (failing open, or answering 503)', ['target_group'], function collect () {
      this.reset()
      for (const group of groups.values()) this.set({ target_group: group.name }, group.degraded ? 1 : 0)
    })
    this.#checks = counter('health_checks_total', 'Active health checks by target and result (pass, or fail with ALB\'s reason code)', ['target_group', 'target', 'result', 'reason'])
    this.#checkDuration = histogram('health_check_duration_seconds', 'Time an active health check took, by target group')
    const storeType = sources.learnStoreType
    const countersOf = (): LearnStoreCounters | undefined => (sources.learnStore() as { counters?: LearnStoreCounters } | null)?.counters
    // The stores count for themselves; their totals are copied at scrape time.
    counter('learn_store_lookups_total', 'Learn store lookups: local_hit (this process\'s memory), hit and miss (for Redis, a round trip each), unavailable (Redis down, failed or late)', ['store', 'result'], function collect () {
      this.reset()
      const counters = countersOf()
      if (counters === undefined) return
      this.inc({ store: storeType, result: 'local_hit' }, counters.localHits)
      this.inc({ store: storeType, result: 'hit' }, counters.hits - counters.localHits)
      this.inc({ store: storeType, result: 'miss' }, counters.misses)
      this.inc({ store: storeType, result: 'unavailable' }, counters.unavailable)
    })
    counter('learn_store_errors_total', 'Failed learn store commands, reads and writes (writes skipped while Redis is down included)', ['store'], function collect () {
      this.reset()
      const counters = countersOf()
      if (counters !== undefined) this.inc({ store: storeType }, counters.errors)
    })
  }

  /** Counts an affinity decision (each request's, and a redispatch's new one). */
  decided (decision: AffinityDecision): void {
    const { targetGroup, outcome } = decision
    const reason = outcome === 'reassigned' ? decision.reason : ''
    const decidedBy = outcome === 'unavailable' ? '' : decision.decidedBy
    const byOutcome = childOf(this.#decisions, targetGroup)
    const byReason = childOf(byOutcome, outcome)
    const byDecider = childOf(byReason, reason)
    const count = byDecider.get(decidedBy)
    if (count !== undefined) count.value++
    else byDecider.set(decidedBy, { labels: { target_group: targetGroup, outcome, reason, decided_by: decidedBy }, value: 1 })
  }

  /** Counts a response of a bound route, with its duration. */
  responded (request: FastifyRequest, reply: FastifyReply, statusCode: number): void {
    const affinity = request.affinity
    const group = affinity === null ? '' : affinity.targetGroup
    const target = affinity?.target?.id ?? ''
    const byTarget = childOf(this.#responses, group)
    let byClass = byTarget.get(target)
    if (byClass === undefined) byTarget.set(target, byClass = [0, 0, 0, 0, 0, 0])
    const digit = Math.floor(statusCode / 100)
    byClass[digit >= 1 && digit <= 5 ? digit : 0]++
    this.#duration.observe(group, reply.elapsedTime / 1000)
  }

  /** Responses counted so far for a target, by status class; the admin dashboard derives its rates from them. */
  responseCounts (group: string, targetId: string): readonly number[] | undefined {
    return this.#responses.get(group)?.get(targetId)
  }

  /** Counts an error the gateway answered with, by its `FST_STICKY_*` code. */
  gatewayError (group: string, code: string): void {
    this.#gatewayErrors.inc({ target_group: group, code })
  }

  /** Counts an active health check, with how long it took. */
  checked (group: string, targetId: string, result: CheckResult, durationMs: number): void {
    this.#checks.inc({ target_group: group, target: targetId, result: result.ok ? 'pass' : 'fail', reason: result.ok ? '' : result.reason })
    this.#checkDuration.observe({ target_group: group }, durationMs / 1000)
  }

  /**
   * A deregistered target finished draining: its series go (its responses' at the next scrape,
   * after any late one; no check of it runs any more).
   */
  targetRemoved (group: string, targetId: string): void {
    this.#responses.get(group)?.delete(targetId)
    for (const { result, reason } of CHECK_RESULTS) this.#checks.remove({ target_group: group, target: targetId, result, reason })
  }

  /** The route-level onResponse hook of bound routes. */
  readonly onResponse = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    this.responded(request, reply, reply.statusCode)
    done()
  }

  /** The route-level onError hook of bound routes: counts the gateway's own errors by code. */
  readonly onError = (request: FastifyRequest, _reply: FastifyReply, error: Error & { code?: unknown }, done: () => void): void => {
    const code = error.code
    if (typeof code === 'string' && code.startsWith('FST_STICKY_')) this.gatewayError(request.affinity?.targetGroup ?? '', code)
    done()
  }

  /** Takes the plugin's metrics out of the registry (the app closes), so a new app may register them again. */
  close (): void {
    for (const { name, metric } of this.#owned) {
      if (this.registry.getSingleMetric(name) === metric) this.registry.removeSingleMetric(name)
    }
  }
}

/** One target group's observations: counts per bucket (not cumulative), their sum and count. */
interface Observed {
  readonly labels: Labels
  readonly counts: number[]
  sum: number
  count: number
}

/**
 * A histogram labelled by target group, kept in plain arrays and read by the registry as
 * prom-client's Histogram is (`getForPromString()`, `get()`): prom-client's `observe()` checks
 * and hashes its labels on every call, which cost a returning request about a tenth of its
 * gateway CPU (see docs/performance.md).
 */
class GroupHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly #groups = new Map<string, Observed>()

  constructor (readonly name: string, readonly help: string, readonly upperBounds: readonly number[]) {}

  observe (group: string, value: number): void {
    let observed = this.#groups.get(group)
    if (observed === undefined) this.#groups.set(group, observed = { labels: { target_group: group }, counts: this.upperBounds.map(() => 0), sum: 0, count: 0 })
    const bounds = this.upperBounds
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]) {
        observed.counts[i]++
        break
      }
    }
    observed.sum += value
    observed.count++
  }

  /** What the registry prints: cumulative buckets with `le`, then `+Inf`, sum and count, per group (prom-client's layout). */
  getForPromString (): { name: string, help: string, type: string, aggregator: string, values: Array<{ labels: Record<string, string | number>, sharedLabels: Labels, value: number, metricName: string }> } {
    const { name, upperBounds } = this
    const values = []
    for (const { labels, counts, sum, count } of this.#groups.values()) {
      let cumulative = 0
      for (let i = 0; i < upperBounds.length; i++) {
        cumulative += counts[i]
        values.push({ labels: { le: upperBounds[i] }, sharedLabels: labels, value: cumulative, metricName: `${name}_bucket` })
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: labels, value: count, metricName: `${name}_bucket` })
      values.push({ labels: {}, sharedLabels: labels, value: sum, metricName: `${name}_sum` })
      values.push({ labels: {}, sharedLabels: labels, value: count, metricName: `${name}_count` })
    }
    return { name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  /** The same with each value's labels in one object (`registry.getMetricsAsJSON()`). */
  get (): { name: string, help: string, type: string, aggregator: string, values: Array<{ labels: Record<string, string | number>, value: number, metricName: string }> } {
    const data = this.getForPromString()
    return { ...data, values: data.values.map(({ labels, sharedLabels, value, metricName }) => ({ labels: { ...labels, ...sharedLabels }, value, metricName })) }
  }

  reset (): void {
    this.#groups.clear()
  }
}

/** The map under `key`, made when missing. */
function childOf<V> (map: Map<string, Map<string, V>>, key: string): Map<string, V> {
  let child = map.get(key)
  if (child === undefined) map.set(key, child = new Map())
  return child
}

/** A target's weight as slow start scales it now (see TargetGroup's slow pick). */
function slowStartWeight (target: TargetDescription, group: TargetGroup, nowMs: number): number {
  if (target.slowStartEndsMs === null || group.slowStartMs === 0) return target.weight
  const share = (nowMs - (target.slowStartEndsMs - group.slowStartMs)) / group.slowStartMs
  return target.weight * Math.min(1, Math.max(0, share))
}
