import { createHash } from 'node:crypto'

/** Envoy's default table size: the smallest the table gets. */
const MIN_MAGLEV_SIZE = 65_537
/** The largest table (and 670 000 members): keeps the probe arithmetic exact. */
const MAX_MAGLEV_SIZE = 2 ** 26
/** Entries per member: at 100 a member's share is within about 1 % of its weight's. */
const ENTRIES_PER_MEMBER = 100

function isPrime (n: number): boolean {
  if (n < 2) return false
  if (n % 2 === 0) return n === 2
  for (let d = 3; d * d <= n; d += 2) {
    if (n % d === 0) return false
  }
  return true
}

/**
 * Next prime ≥ max(65537, 100 × members). Past 655 members it changes with the member count, and
 * a table of another size maps every key anew: rebuild for a membership change at the previous
 * table's size, and grow it seldom (e.g. once the members outgrow it).
 */
export function maglevSize (members: number): number {
  let size = Math.max(MIN_MAGLEV_SIZE, Math.ceil(ENTRIES_PER_MEMBER * members))
  while (!isPrime(size)) size++
  return size
}

/**
 * A weighted Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
 * Load Balancer", NSDI 2016, with Envoy's weighted fill): `size` entries, each naming a member, a
 * member's share of entries proportional to its weight. Removing or adding one of N members
 * changes about 1/N of the entries, most of them that member's (at the same `size`: the more
 * entries per member, the fewer others'). Built once per membership, off the request path (tens
 * of milliseconds for 1000 members); a lookup is one array read.
 */
export class MaglevTable {
  readonly size: number
  readonly #table: Uint16Array | Uint32Array | null

  /**
   * Built once from member ids (stable names, e.g. target ids) and integer weights ≥ 1, in any
   * order; each member's permutation (offset, skip) derives from its id alone (sha256 of the id),
   * so two gateways, or the same gateway after a restart, build identical tables for the same
   * members whatever their order. `size` must be a prime (default {@link maglevSize}); keys keep
   * their entries only between tables of the same size.
   */
  constructor (ids: readonly string[], weights: readonly number[], size: number = maglevSize(ids.length)) {
    if (ids.length !== weights.length) throw new RangeError(`MaglevTable needs one weight per id, got ${ids.length} ids and ${weights.length} weights`)
    if (!Number.isSafeInteger(size) || size > MAX_MAGLEV_SIZE || size < ids.length || !isPrime(size)) throw new RangeError(`MaglevTable size must be a prime from the number of members (${ids.length}) to 2^26, got ${size}`)
    for (const weight of weights) {
      if (!Number.isSafeInteger(weight) || weight < 1 || !Number.isSafeInteger(weight * size)) throw new RangeError(`MaglevTable weights must be integers from 1, got ${weight}`)
    }
    if (new Set(ids).size !== ids.length) throw new RangeError('MaglevTable member ids must be distinct')
    this.size = size
    this.#table = ids.length === 0 ? null : buildTable(ids, weights, size)
  }

  /**
   * Member index (into the `ids` given) that the key's probe names, or -1 when there is no member:
   * probe 0 is the key's first choice, entry hash mod size; callers walk probe 1, 2, … to skip
   * members that cannot take the key (unhealthy, draining, overloaded) and must stop after `size`
   * probes. Probe p names entry (hash + p · stride) mod size with stride = 1 + hash mod (size − 1):
   * each key walks all entries in its own order (size is prime), so a skipped member's keys spread
   * evenly over the others (stepping to the next entry instead gave some members 0.6× and others
   * 1.3× their share, at 10 members). `hash` is an unsigned 32-bit integer, `probe` an integer
   * from 0.
   */
  lookup (hash: number, probe: number): number {
    const table = this.#table
    if (table === null) return -1
    const size = this.size
    if (probe === 0) return table[hash % size]
    // Exact: probe and stride below 2^26 (probe reduced), hash below 2^32.
    return table[(hash + (probe % size) * (1 + (hash % (size - 1)))) % size]
  }
}

function buildTable (ids: readonly string[], weights: readonly number[], size: number): Uint16Array | Uint32Array {
  const count = ids.length
  // Members take turns in the order of their ids, not the order given: the fill depends on the
  // membership alone.
  const order = ids.map((_id, index) => index).sort((a, b) => (ids[a] < ids[b] ? -1 : 1))
  const position = new Float64Array(count)
  const skip = new Float64Array(count)
  let maxWeight = 0
  for (let k = 0; k < count; k++) {
    const digest = createHash('sha256').update(ids[order[k]], 'utf8').digest()
    position[k] = digest.readUIntBE(0, 6) % size
    skip[k] = (digest.readUIntBE(6, 6) % (size - 1)) + 1
    maxWeight = Math.max(maxWeight, weights[order[k]])
  }
  // Envoy's weighted fill: turn after turn, each member in order takes its next free preferred
  // entry if its weight w allows: at most one a turn, its m-th (from 0) on turn m · maxWeight / w
  // or the first turn after, so a member of the largest weight takes one every turn, one of a
  // third of it every third turn. A heap of (turn, member) replays that order without visiting
  // the members that sit a turn out.
  const picks = new Float64Array(count)
  const turn = new Float64Array(count).fill(1)
  const heap = new TurnHeap(turn)
  for (let k = 0; k < count; k++) heap.push(k)
  const table = count <= 0x10000 ? new Uint16Array(size) : new Uint32Array(size)
  const taken = new Uint8Array(size)
  for (let filled = 0; filled < size; filled++) {
    const k = heap.top()
    // size is prime, so each member's permutation (offset + j · skip) mod size visits every entry.
    let entry = position[k]
    while (taken[entry] === 1) {
      entry += skip[k]
      if (entry >= size) entry -= size
    }
    taken[entry] = 1
    table[entry] = order[k]
    entry += skip[k]
    position[k] = entry >= size ? entry - size : entry
    picks[k]++
    turn[k] = Math.max(turn[k] + 1, Math.ceil((picks[k] * maxWeight) / weights[order[k]]))
    heap.siftTopDown()
  }
  return table
}

/** A binary min-heap of members 0…count-1, by their turn, then by number; the top's turn may grow in place. */
class TurnHeap {
  readonly #items: Int32Array
  readonly #turn: Float64Array
  #length = 0

  constructor (turn: Float64Array) {
    this.#items = new Int32Array(turn.length)
    this.#turn = turn
  }

  push (member: number): void {
    const items = this.#items
    const turn = this.#turn
    let i = this.#length++
    while (i > 0) {
      const parent = (i - 1) >> 1
      const above = items[parent]
      if (turn[above] < turn[member] || (turn[above] === turn[member] && above < member)) break
      items[i] = above
      i = parent
    }
    items[i] = member
  }

  top (): number {
    return this.#items[0]
  }

  /** Restores the order after the top's turn grew. */
  siftTopDown (): void {
    const items = this.#items
    const turn = this.#turn
    const length = this.#length
    const member = items[0]
    let i = 0
    for (;;) {
      let child = 2 * i + 1
      if (child >= length) break
      const right = child + 1
      if (right < length && (turn[items[right]] < turn[items[child]] || (turn[items[right]] === turn[items[child]] && items[right] < items[child]))) child = right
      const below = items[child]
      if (turn[member] < turn[below] || (turn[member] === turn[below] && member < below)) break
      items[i] = below
      i = child
    }
    items[i] = member
  }
}
