/** What a lookup found: the target id, none, or the store could not answer in time (the caller falls back and records why). */
export type LearnLookup = string | null | 'unavailable'

/**
 * Where `learn` stickiness keeps what it learned: the digest of an app session id → the id of
 * the target that issued it, each entry expiring its time to live after its last use.
 */
export interface LearnStore {
  /** The target id learned for `key` (a digest), sliding its time to live to `ttlMs` from `nowMs`. Answers synchronously when it can (memory, local cache); else a promise that always resolves (never rejects) within the store's deadline. */
  get (key: string, ttlMs: number, nowMs: number): LearnLookup | Promise<LearnLookup>
  /** Remembers key → targetId for ttlMs; fire and forget (errors are counted, never thrown). */
  set (key: string, targetId: string, ttlMs: number, nowMs: number): void
  /** Forgets a key (the app deleted its session cookie). */
  delete (key: string): void
  close (): Promise<void>
}

/** What a store's lookups came to, since it was made; for metrics. */
export interface LearnStoreCounters {
  /** Lookups that found a target id (`localHits` of them without asking a shared store). */
  hits: number
  /** Lookups answered from the process's own memory (the memory store, or a shared store's local cache). */
  localHits: number
  /** Lookups that found nothing. */
  misses: number
  /** Lookups answered `'unavailable'` (the shared store was down, failed or missed the deadline). */
  unavailable: number
  /** Failed commands, reads and writes alike (writes skipped while the shared store is down included). */
  errors: number
}

/** Entries the memory store keeps by default: about 16 MB of heap when full (`node --expose-gc bench/learn-store-memory.js`: about 160 bytes an entry on Node 20, its 16-character key included). */
export const DEFAULT_LEARN_MAX_ENTRIES = 100_000

/** An entry of an `LruList`: its key and its neighbours (the head is the most recently used). */
export class LruEntry {
  readonly key: string
  prevEntry: LruEntry | null = null
  nextEntry: LruEntry | null = null

  constructor (key: string) {
    this.key = key
  }
}

/**
 * A map bounded to `maxEntries` that forgets the least recently used entry first: a map of key
 * → entry plus a list threaded through the entries, so a lookup, a move to the front and an
 * eviction are each O(1) and allocate nothing.
 */
export class LruList<E extends LruEntry> {
  readonly maxEntries: number
  readonly #entries = new Map<string, E>()
  #head: E | null = null
  #tail: E | null = null

  constructor (maxEntries: number) {
    this.maxEntries = Math.max(1, Math.floor(maxEntries))
  }

  get size (): number {
    return this.#entries.size
  }

  /** The least recently used entry; null when empty. */
  get tail (): E | null {
    return this.#tail
  }

  /** The entry of `key`, without moving it. */
  peek (key: string): E | undefined {
    return this.#entries.get(key)
  }

  /** Moves `entry` to the front (just used). */
  touch (entry: E): void {
    if (this.#head === entry) return
    this.#unlink(entry)
    this.#linkFirst(entry)
  }

  /** Adds `entry` at the front, in place of the entry of its key if any; forgets the least recently used when full. */
  add (entry: E): void {
    const previous = this.#entries.get(entry.key)
    if (previous !== undefined) this.#unlink(previous)
    else if (this.#entries.size >= this.maxEntries && this.#tail !== null) this.remove(this.#tail)
    this.#entries.set(entry.key, entry)
    this.#linkFirst(entry)
  }

  /** Forgets `entry` (safe when it is no longer there). */
  remove (entry: E): void {
    if (this.#entries.get(entry.key) !== entry) return
    this.#entries.delete(entry.key)
    this.#unlink(entry)
  }

  clear (): void {
    this.#entries.clear()
    this.#head = null
    this.#tail = null
  }

  #linkFirst (entry: E): void {
    entry.prevEntry = null
    entry.nextEntry = this.#head
    if (this.#head === null) this.#tail = entry
    else this.#head.prevEntry = entry
    this.#head = entry
  }

  #unlink (entry: E): void {
    const { prevEntry, nextEntry } = entry
    if (prevEntry === null) {
      if (this.#head === entry) this.#head = nextEntry as E | null
    } else {
      prevEntry.nextEntry = nextEntry
    }
    if (nextEntry === null) {
      if (this.#tail === entry) this.#tail = prevEntry as E | null
    } else {
      nextEntry.prevEntry = prevEntry
    }
    entry.prevEntry = null
    entry.nextEntry = null
  }
}

class MemoryEntry extends LruEntry {
  targetId: string
  /** Last use + time to live, on the caller's clock. */
  expiresAtMs: number

  constructor (key: string, targetId: string, expiresAtMs: number) {
    super(key)
    this.targetId = targetId
    this.expiresAtMs = expiresAtMs
  }
}

/** Options of `MemoryLearnStore`. */
export interface MemoryLearnStoreOptions {
  /** Most entries kept; when full, the least recently used goes. Default `DEFAULT_LEARN_MAX_ENTRIES` (100 000). */
  maxEntries?: number
}

/**
 * The learn store of one gateway process: a bounded LRU whose entries expire their time to
 * live after their last use. It judges time only by the `nowMs` it is given, and always
 * answers synchronously.
 */
export class MemoryLearnStore implements LearnStore {
  readonly #entries: LruList<MemoryEntry>
  readonly #counters: LearnStoreCounters = { hits: 0, localHits: 0, misses: 0, unavailable: 0, errors: 0 }

  constructor (options: MemoryLearnStoreOptions = {}) {
    this.#entries = new LruList(options.maxEntries ?? DEFAULT_LEARN_MAX_ENTRIES)
  }

  /** Entries held, expired ones not yet dropped included. */
  get size (): number {
    return this.#entries.size
  }

  get counters (): Readonly<LearnStoreCounters> {
    return this.#counters
  }

  get (key: string, ttlMs: number, nowMs: number): string | null {
    const entry = this.#entries.peek(key)
    if (entry !== undefined) {
      if (nowMs < entry.expiresAtMs) {
        entry.expiresAtMs = nowMs + ttlMs
        this.#entries.touch(entry)
        this.#counters.hits++
        this.#counters.localHits++
        return entry.targetId
      }
      this.#entries.remove(entry)
    }
    this.#counters.misses++
    return null
  }

  set (key: string, targetId: string, ttlMs: number, nowMs: number): void {
    const entry = this.#entries.peek(key)
    if (entry !== undefined) {
      entry.targetId = targetId
      entry.expiresAtMs = nowMs + ttlMs
      this.#entries.touch(entry)
      return
    }
    // Expired entries gather at the back when durations are alike: drop a few, so that
    // memory follows the live sessions rather than the high-water mark.
    for (let i = 0; i < 2; i++) {
      const tail = this.#entries.tail
      if (tail === null || nowMs < tail.expiresAtMs) break
      this.#entries.remove(tail)
    }
    this.#entries.add(new MemoryEntry(key, targetId, nowMs + ttlMs))
  }

  delete (key: string): void {
    const entry = this.#entries.peek(key)
    if (entry !== undefined) this.#entries.remove(entry)
  }

  async close (): Promise<void> {
    this.#entries.clear()
  }
}
