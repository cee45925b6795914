import { createHash } from 'node:crypto'
import diagnosticsChannel from 'node:diagnostics_channel'
import { promises as dns, type RecordWithTtl } from 'node:dns'
import { isIP } from 'node:net'
import { MAX_TARGET_WEIGHT, type ResolvedDiscovery } from './options.js'
import type { TargetGroup } from './target-group.js'
import type { DnsDiscoveryEvent, TargetOptions, TargetRef } from './types.js'

/** Where every discovery change and failure is published (see `DnsDiscoveryEvent`). */
export const DNS_DISCOVERY_CHANNEL = 'fastify-sticky:dns-discovery'
const discoveryChannel = diagnosticsChannel.channel(DNS_DISCOVERY_CHANNEL)

/** The longest the plugin's registration waits for the first answers (half of Fastify's `pluginTimeout` when lower). */
export const MAX_DISCOVERY_START_WAIT_MS = 5000
/** The shortest refresh a TTL asks for; `intervalMs` below it wins. */
const MIN_TTL_REFRESH_MS = 1000
/** While resolutions keep failing, one warning per this long. */
const WARN_EVERY_MS = 60_000
/** Answers that hold no address: the name exists without records of the type, or not at all. */
const EMPTY_ANSWER = new Set(['ENODATA', 'ENOTFOUND'])

/** Where discovery writes its lines (Fastify's logger fits). */
export interface DiscoveryLogger {
  warn (details: Record<string, unknown>, message: string): void
  info (details: Record<string, unknown>, message: string): void
  debug (details: Record<string, unknown>, message: string): void
}

/** One address of an answer, as the target it becomes. */
interface Found {
  readonly id: string
  readonly url: string
  readonly weight: number
}

interface Answer {
  readonly found: Map<string, Found>
  /** The smallest TTL of the answer, in seconds; null when it gave none (SRV). */
  readonly ttlSeconds: number | null
}

/**
 * The stable id of a discovered target: its group's name (up to 40 characters) and 12 hex digits
 * of the SHA-256 of its address and port. The same on every gateway and after a restart, so
 * cookies and consistent hashing agree; it keeps the address out of logs, metrics and headers
 * (a hash of an address can be found by trying addresses: it hides, it does not protect).
 */
export function discoveredTargetId (group: string, address: string, port: number): string {
  const digest = createHash('sha256').update(`${address} ${port}`).digest('hex').slice(0, 12)
  return `${group.slice(0, 40)}-${digest}`
}

/**
 * Follows a target group's DNS name: resolves it at start and again at the answer's smallest
 * TTL (within `intervalMs`), registers new addresses and deregisters (drains) vanished ones. A
 * failed or empty resolution changes nothing: the last good answer's targets stay.
 */
export class DnsDiscovery {
  readonly #group: TargetGroup
  readonly #options: ResolvedDiscovery
  readonly #scheme: 'http' | 'https'
  readonly #log: DiscoveryLogger
  readonly #now: () => number
  readonly #resolver: dns.Resolver
  /** The targets this discovery registered, by id: only these does it deregister. */
  readonly #known = new Set<string>()
  #timer: NodeJS.Timeout | null = null
  #stopped = false
  /** Failed resolutions in a row, and when the last warning was written. */
  #failures = 0
  #warnedAtMs = -Infinity

  constructor (group: TargetGroup, options: ResolvedDiscovery, https: boolean, log: DiscoveryLogger, now: () => number) {
    this.#group = group
    this.#options = options
    this.#scheme = https ? 'https' : 'http'
    this.#log = log
    this.#now = now
    // Node's defaults wait 22 s for a silent server: always bounded here.
    this.#resolver = new dns.Resolver({ timeout: options.timeoutMs, tries: options.tries })
    if (options.servers !== null) this.#resolver.setServers([...options.servers])
  }

  /**
   * Resolves once, then keeps refreshing. Settles when the first resolution ends, or after
   * `maxWaitMs` (the plugin waits for it, so the group starts with its targets; a slower answer
   * registers them when it comes).
   */
  start (maxWaitMs: number): Promise<void> {
    const first = this.#refresh()
    let timer: NodeJS.Timeout | undefined
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, maxWaitMs)
      timer.unref()
    })
    return Promise.race([first, waited]).finally(() => clearTimeout(timer))
  }

  /** Stops refreshing and cancels a resolution under way; the targets stay registered (the group closes them). */
  stop (): void {
    this.#stopped = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    this.#resolver.cancel()
  }

  async #refresh (): Promise<void> {
    let delayMs = this.#options.intervalMs
    try {
      const answer = await this.#resolve()
      if (this.#stopped) return
      // An empty answer is taken for a fault (a DNS server that lost its records), not for "no targets".
      if (answer.found.size === 0) throw Object.assign(new Error('the answer holds no address'), { code: 'ENODATA' })
      this.#apply(answer.found)
      if (answer.ttlSeconds !== null) delayMs = Math.min(this.#options.intervalMs, Math.max(MIN_TTL_REFRESH_MS, answer.ttlSeconds * 1000))
    } catch (err) {
      if (this.#stopped) return
      this.#fail(err as Error & { code?: string })
    } finally {
      if (!this.#stopped) {
        this.#timer = setTimeout(() => { void this.#refresh() }, delayMs)
        this.#timer.unref()
      }
    }
  }

  async #resolve (): Promise<Answer> {
    const { hostname, port } = this.#options
    if (!this.#options.srv) {
      const { addresses, ttlSeconds } = await this.#addresses(hostname)
      const found = new Map<string, Found>()
      for (const address of addresses) this.#add(found, address, port as number, 1)
      return { found, ttlSeconds }
    }
    // RFC 2782: the lowest priority is used; the others are backups, left out (no health is known here).
    const records = await this.#resolver.resolveSrv(hostname)
    const priority = Math.min(...records.map((record) => record.priority))
    const chosen = records.filter((record) => record.priority === priority)
    const resolved = await Promise.all(chosen.map(async (record) => ({ record, addresses: isIP(record.name) !== 0 ? [record.name] : (await this.#addresses(record.name)).addresses })))
    const found = new Map<string, Found>()
    for (const { record, addresses } of resolved) {
      const weight = Math.min(MAX_TARGET_WEIGHT, Math.max(1, record.weight))
      for (const address of addresses) this.#add(found, address, record.port, weight)
    }
    return { found, ttlSeconds: null }
  }

  /** The addresses of a name in the family asked; with both, one family may have none. */
  async #addresses (name: string): Promise<{ addresses: string[], ttlSeconds: number | null }> {
    const family = this.#options.family
    const lookups: Array<Promise<RecordWithTtl[]>> = []
    if (family !== 6) lookups.push(this.#resolver.resolve4(name, { ttl: true }))
    if (family !== 4) lookups.push(this.#resolver.resolve6(name, { ttl: true }))
    const settled = await Promise.allSettled(lookups)
    const records: RecordWithTtl[] = []
    let empty: unknown = null
    for (const result of settled) {
      if (result.status === 'fulfilled') records.push(...result.value)
      else if (EMPTY_ANSWER.has((result.reason as { code?: string }).code ?? '')) empty = result.reason
      else throw result.reason
    }
    if (records.length === 0 && empty !== null) throw empty
    const ttl = records.length === 0 ? null : Math.min(...records.map((record) => record.ttl))
    return { addresses: records.map((record) => record.address), ttlSeconds: ttl }
  }

  #add (found: Map<string, Found>, address: string, port: number, weight: number): void {
    const id = discoveredTargetId(this.#group.name, address, port)
    if (found.has(id)) return
    const host = isIP(address) === 6 ? `[${address}]` : address
    found.set(id, { id, url: `${this.#scheme}://${host}:${port}`, weight })
  }

  /** Registers what is new, deregisters what vanished; a target still draining is registered again at a later refresh. */
  #apply (found: Map<string, Found>): void {
    const added: Found[] = []
    for (const entry of found.values()) if (!this.#known.has(entry.id)) added.push(entry)
    // In id order, whatever order the DNS server rotated the records into: every gateway registers alike.
    added.sort((x, y) => (x.id < y.id ? -1 : 1))
    const registered: TargetRef[] = []
    const results = this.#group.registerTogether(added.map((entry): TargetOptions => ({ id: entry.id, url: entry.url, weight: entry.weight })))
    results.forEach((result, i) => {
      if (result instanceof Error) {
        this.#log.debug({ targetGroup: this.#group.name, target: added[i].id, code: (result as Error & { code?: string }).code }, `fastify-sticky: target ${added[i].id} found in DNS is not registered yet: ${result.message}`)
        return
      }
      this.#known.add(result.id)
      registered.push(result)
    })
    const deregistered: string[] = []
    for (const id of this.#known) {
      if (found.has(id)) continue
      this.#known.delete(id)
      deregistered.push(id)
      void this.#group.deregister(id)
    }
    const recovered = this.#failures > 0
    if (recovered) {
      this.#log.info({ targetGroup: this.#group.name, hostname: this.#options.hostname, failures: this.#failures }, `fastify-sticky: DNS discovery of '${this.#options.hostname}' resolves again after ${this.#failures} failed resolutions`)
      this.#failures = 0
      this.#warnedAtMs = -Infinity
    }
    if (registered.length > 0 || deregistered.length > 0) {
      // Addresses at debug only; ids at info.
      this.#log.debug({ targetGroup: this.#group.name, hostname: this.#options.hostname, registered }, `fastify-sticky: DNS discovery of '${this.#options.hostname}' registered ${registered.map((ref) => `${ref.id} (${ref.origin})`).join(', ') || 'no target'}`)
      this.#log.info({ targetGroup: this.#group.name, hostname: this.#options.hostname, registered: registered.map((ref) => ref.id), deregistered }, `fastify-sticky: DNS discovery of '${this.#options.hostname}' registered ${registered.length} and deregistered ${deregistered.length} targets`)
    }
    if (recovered || registered.length > 0 || deregistered.length > 0) this.#publish('resolved', registered, deregistered, null)
  }

  #fail (err: Error & { code?: string }): void {
    this.#failures++
    const code = err.code ?? err.name
    const now = this.#now()
    // Rate-limited: the first failure of a run, then one line a minute while it lasts.
    if (now - this.#warnedAtMs >= WARN_EVERY_MS) {
      this.#warnedAtMs = now
      this.#log.warn({ targetGroup: this.#group.name, hostname: this.#options.hostname, code, failures: this.#failures, targets: this.#known.size },
        `fastify-sticky: DNS discovery of '${this.#options.hostname}' failed (${code}); target group '${this.#group.name}' keeps its ${this.#known.size} discovered targets`)
    }
    this.#publish('failed', [], [], code)
  }

  #publish (outcome: DnsDiscoveryEvent['outcome'], registered: readonly TargetRef[], deregistered: readonly string[], error: string | null): void {
    if (!discoveryChannel.hasSubscribers) return
    const event: DnsDiscoveryEvent = { targetGroup: this.#group.name, hostname: this.#options.hostname, outcome, registered, deregistered, error, atMs: this.#now() }
    discoveryChannel.publish(event)
  }
}
