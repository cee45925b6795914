// Simulator of how the placement algorithms spread sessions over targets, in process, no I/O:
//   node bench/simulate.js [--json FILE] [--sessions N]
// For 1 000 000 sessions (string keys hashed with the gateway's keyed hash) and 10, 100 and 1000
// targets of weight 1, per algorithm: the sessions moved when one target is added and when one is
// removed, max/mean sessions per target, and max/mean requests per target when a few clients send
// most requests (Zipf popularity). Prints one Markdown table and the Maglev table's build and
// lookup times; --json writes the figures too. Deterministic: fixed secret and seeds.
import { writeFileSync } from 'node:fs'
import { boundedCapacity } from '../dist/balancer/bounded-load.js'
import { KeyHasher } from '../dist/hashing/key-hash.js'
import { MaglevTable, maglevSize } from '../dist/hashing/maglev.js'

const TARGET_COUNTS = [10, 100, 1000]
/** Sessions placed after a target is added, to see which share it gets. */
const NEW_SESSIONS = 100_000
const REQUESTS = 1_000_000
/** The Zipf case's requests in flight: each holds its target until 1000 more have started. */
const IN_FLIGHT = 1000
const ZIPF_EXPONENT = 1.1
const BALANCE_FACTOR = 1.25

/** mulberry32: a seeded 32-bit generator, so every run draws the same numbers. */
function seededRandom (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The hashes of `count` session keys (`session-<i>`), as the gateway hashes a client's key. */
function hashSessions (count) {
  const hasher = new KeyHasher(Buffer.alloc(32, 0x5e))
  const hashes = new Uint32Array(count)
  for (let i = 0; i < count; i++) hashes[i] = hasher.hash(`session-${i}`)
  return hashes
}

/** `count` requests, each from one of `sessions` sessions, the k-th most popular with weight 1/k^s. */
function zipfRequests (sessions, count, exponent, random) {
  const cumulative = new Float64Array(sessions)
  let total = 0
  for (let rank = 0; rank < sessions; rank++) cumulative[rank] = (total += (rank + 1) ** -exponent)
  // Popularity is unrelated to the order sessions arrived in.
  const sessionOfRank = new Int32Array(sessions)
  for (let i = 0; i < sessions; i++) sessionOfRank[i] = i
  for (let i = sessions - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const swap = sessionOfRank[i]
    sessionOfRank[i] = sessionOfRank[j]
    sessionOfRank[j] = swap
  }
  const requests = new Int32Array(count)
  for (let r = 0; r < count; r++) {
    const point = random() * total
    let low = 0
    let high = sessions - 1
    while (low < high) {
      const mid = (low + high) >> 1
      if (cumulative[mid] < point) low = mid + 1
      else high = mid
    }
    requests[r] = sessionOfRank[low]
  }
  return { requests, topShare: 1 / total }
}

// ---- Shared figures -------------------------------------------------------------------------

/** Sessions per target (targets numbered 0 … targets-1). */
function countPerTarget (assignment, targets, from = 0, to = assignment.length) {
  const counts = new Float64Array(targets)
  for (let i = from; i < to; i++) counts[assignment[i]]++
  return counts
}

/** The fullest target's count over the mean, over the targets that exist (count them all). */
function maxOverMean (counts, targets) {
  let max = 0
  let sum = 0
  for (let t = 0; t < targets; t++) {
    max = Math.max(max, counts[t])
    sum += counts[t]
  }
  return max / (sum / targets)
}

/** Share of sessions whose target changed, and of those that changed though not on `removed`. */
function movedShares (before, after, removed = -1) {
  let moved = 0
  let others = 0
  for (let i = 0; i < before.length; i++) {
    if (before[i] === after[i]) continue
    moved++
    if (before[i] !== removed) others++
  }
  return { moved: moved / before.length, others: others / before.length }
}

/** Requests per target when each request goes to its session's target. */
function requestsPerTarget (assignment, requests, targets) {
  const counts = new Float64Array(targets)
  for (let r = 0; r < requests.length; r++) counts[assignment[requests[r]]]++
  return counts
}

// ---- Cookie algorithms: a session keeps the target its cookie names while the target exists --

/** round_robin: new sessions go to the targets in turn. */
class RoundRobinPicker {
  #alive
  #cursor = -1

  constructor (targets, capacity) {
    this.#alive = new Uint8Array(capacity)
    this.#alive.fill(1, 0, targets)
  }

  add (target) { this.#alive[target] = 1 }
  remove (target) { this.#alive[target] = 0 }

  pick () {
    do this.#cursor = (this.#cursor + 1) % this.#alive.length
    while (this.#alive[this.#cursor] === 0)
    return this.#cursor
  }
}

/** least_sessions: a new session goes to the target with the fewest bound sessions, ties in turn. */
class LeastSessionsPicker {
  #alive
  #sessions
  #fewest = 0
  #cursor = -1

  constructor (targets, capacity) {
    this.#alive = new Uint8Array(capacity)
    this.#alive.fill(1, 0, targets)
    this.#sessions = new Float64Array(capacity)
  }

  add (target) {
    this.#alive[target] = 1
    this.#sessions[target] = 0
    this.#fewest = 0
  }

  remove (target) { this.#alive[target] = 0 }

  pick () {
    const alive = this.#alive
    const sessions = this.#sessions
    for (;;) {
      // One sweep from the last pick finds the next target holding the fewest; counts only grow,
      // so when a sweep finds none, the fewest grew.
      for (let step = 1; step <= alive.length; step++) {
        const t = (this.#cursor + step) % alive.length
        if (alive[t] === 1 && sessions[t] === this.#fewest) {
          this.#cursor = t
          sessions[t]++
          return t
        }
      }
      this.#fewest = Infinity
      for (let t = 0; t < alive.length; t++) if (alive[t] === 1) this.#fewest = Math.min(this.#fewest, sessions[t])
    }
  }
}

/**
 * A cookie algorithm's figures: sessions placed one by one by `Picker`; on scale-out nobody moves
 * (their cookies still name live targets) and the next new sessions show where new work goes; on
 * scale-in only the removed target's sessions are placed again.
 */
function simulateCookie (Picker, n, sessions) {
  const place = () => {
    const picker = new Picker(n, n + 1)
    const assignment = new Int32Array(sessions)
    for (let i = 0; i < sessions; i++) assignment[i] = picker.pick()
    return { picker, assignment }
  }

  const { picker: grown, assignment } = place()
  grown.add(n)
  const next = new Int32Array(NEW_SESSIONS)
  for (let i = 0; i < NEW_SESSIONS; i++) next[i] = grown.pick()
  const addedShare = countPerTarget(next, n + 1)[n] / NEW_SESSIONS

  const { picker: shrunk, assignment: before } = place()
  const removed = 0
  shrunk.remove(removed)
  const after = before.slice()
  for (let i = 0; i < sessions; i++) if (after[i] === removed) after[i] = shrunk.pick()

  return { assignment, added: { moved: 0, addedShare }, removed: movedShares(before, after, removed) }
}

/** round_robin + lb_cookie. */
function simulateRoundRobinCookie (n, sessions) {
  return simulateCookie(RoundRobinPicker, n, sessions)
}

/** least_sessions + lb_cookie. */
function simulateLeastSessionsCookie (n, sessions) {
  return simulateCookie(LeastSessionsPicker, n, sessions)
}

// ---- Hashing: a session's target follows from its key's hash and the membership alone -------

const idsOf = (targets) => targets.map((t) => `target-${t}`)
const range = (count) => Array.from({ length: count }, (_, t) => t)

/** A Maglev table over the targets numbered in `targets`, and the target each table member is. */
function maglevOver (targets, size) {
  return { table: new MaglevTable(idsOf(targets), targets.map(() => 1), size), targets: Int32Array.from(targets) }
}

/** Each key's first choice. */
function firstChoices ({ table, targets }, hashes, from, to) {
  const assignment = new Int32Array(to - from)
  for (let i = from; i < to; i++) assignment[i - from] = targets[table.lookup(hashes[i], 0)]
  return assignment
}

/** hash: each session on its key's Maglev first choice (the table keeps its size across changes). */
function simulateHash (n, sessions, hashes) {
  const size = maglevSize(n)
  const all = maglevOver(range(n), size)
  const assignment = firstChoices(all, hashes, 0, sessions)

  const grown = maglevOver(range(n + 1), size)
  const next = firstChoices(grown, hashes, sessions, sessions + NEW_SESSIONS)
  const added = {
    moved: movedShares(assignment, firstChoices(grown, hashes, 0, sessions)).moved,
    addedShare: countPerTarget(next, n + 1)[n] / NEW_SESSIONS
  }

  const removed = 0
  const shrunk = maglevOver(range(n).filter((t) => t !== removed), size)
  return {
    assignment,
    added,
    removed: movedShares(assignment, firstChoices(shrunk, hashes, 0, sessions), removed),
    probedPast: movedShares(assignment, probePast(all, hashes, sessions, removed), removed)
  }
}

/** Each key's first target other than `skipped`, walking the probes of the table that still holds it. */
function probePast ({ table, targets }, hashes, sessions, skipped) {
  const assignment = new Int32Array(sessions)
  for (let i = 0; i < sessions; i++) {
    let target = skipped
    for (let probe = 0; target === skipped; probe++) target = targets[table.lookup(hashes[i], probe)]
    assignment[i] = target
  }
  return assignment
}

/**
 * Places sessions from..to-1 one by one: each key walks its Maglev probes to the first target
 * holding fewer sessions than the bounded-load capacity. `load` (sessions per target) is updated.
 */
function placeBounded ({ table, targets }, hashes, from, to, load) {
  const assignment = new Int32Array(to - from)
  let placed = 0
  for (let t = 0; t < load.length; t++) placed += load[t]
  for (let i = from; i < to; i++) {
    const capacity = boundedCapacity(BALANCE_FACTOR, placed, 1, targets.length)
    let target = -1
    for (let probe = 0; probe < table.size; probe++) {
      target = targets[table.lookup(hashes[i], probe)]
      if (load[target] < capacity) break
    }
    load[target]++
    placed++
    assignment[i - from] = target
  }
  return assignment
}

/**
 * hash + bounded load: sessions placed one by one, the load being the sessions placed so far. A
 * hashing gateway keeps no per-session state, so after a membership change the same sessions are
 * placed again, in the same order, over the new membership.
 */
function simulateBoundedHash (n, sessions, hashes) {
  const size = maglevSize(n)
  const assignment = placeBounded(maglevOver(range(n), size), hashes, 0, sessions, new Float64Array(n + 1))

  const grown = maglevOver(range(n + 1), size)
  const grownLoad = new Float64Array(n + 1)
  const replaced = placeBounded(grown, hashes, 0, sessions, grownLoad)
  const next = placeBounded(grown, hashes, sessions, sessions + NEW_SESSIONS, grownLoad)
  const added = { moved: movedShares(assignment, replaced).moved, addedShare: countPerTarget(next, n + 1)[n] / NEW_SESSIONS }

  const removed = 0
  const shrunk = maglevOver(range(n).filter((t) => t !== removed), size)
  const after = placeBounded(shrunk, hashes, 0, sessions, new Float64Array(n + 1))
  return { assignment, added, removed: movedShares(assignment, after, removed) }
}

/**
 * hash + bounded load under skewed requests: the load is requests in flight (each holds its target
 * while the next IN_FLIGHT - 1 requests start), and every request is bounded on its own, so a busy
 * key's requests overflow to its next probes. Returns requests per target and the share of
 * requests not sent to their key's first choice.
 */
function boundedRequests (n, hashes, requests) {
  const { table, targets } = maglevOver(range(n), maglevSize(n))
  const counts = new Float64Array(n)
  const inFlight = new Float64Array(n)
  const window = new Int32Array(IN_FLIGHT)
  let held = 0
  let off = 0
  for (let r = 0; r < requests.length; r++) {
    if (held === IN_FLIGHT) inFlight[window[r % IN_FLIGHT]]--
    else held++
    const hash = hashes[requests[r]]
    const capacity = boundedCapacity(BALANCE_FACTOR, held - 1, 1, n)
    let target = -1
    for (let probe = 0; probe < table.size; probe++) {
      target = targets[table.lookup(hash, probe)]
      if (inFlight[target] < capacity) break
    }
    if (target !== targets[table.lookup(hash, 0)]) off++
    inFlight[target]++
    window[r % IN_FLIGHT] = target
    counts[target]++
  }
  return { counts, off: off / requests.length }
}

// ---- Maglev timing ---------------------------------------------------------------------------

function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** Build time per N (median of 5 after one warm-up) and lookup time (first choice; a later probe). */
function timeMaglev (hashes) {
  const buildMs = {}
  const sizes = {}
  for (const n of TARGET_COUNTS) {
    const ids = idsOf(range(n))
    const weights = ids.map(() => 1)
    const runs = []
    for (let run = 0; run <= 5; run++) {
      const started = process.hrtime.bigint()
      const table = new MaglevTable(ids, weights)
      if (run > 0) runs.push(Number(process.hrtime.bigint() - started) / 1e6)
      sizes[n] = table.size
    }
    buildMs[n] = median(runs)
  }
  const table = new MaglevTable(idsOf(range(100)), new Array(100).fill(1))
  let sink = 0
  const measure = (probe) => {
    const started = process.hrtime.bigint()
    for (let i = 0; i < hashes.length; i++) sink += table.lookup(hashes[i], probe)
    return Number(process.hrtime.bigint() - started) / hashes.length
  }
  const first = []
  const later = []
  for (let run = 0; run <= 5; run++) {
    const f = measure(0)
    const l = measure(3)
    if (run > 0) { first.push(f); later.push(l) }
  }
  if (sink === 0) throw new Error('unreachable')
  return { buildMs, sizes, lookupNs: median(first), probeNs: median(later) }
}

// ---- Report ----------------------------------------------------------------------------------

const ALGORITHMS = [
  { name: 'round_robin + lb_cookie', simulate: (n, s) => simulateRoundRobinCookie(n, s.sessions) },
  { name: 'least_sessions + lb_cookie', simulate: (n, s) => simulateLeastSessionsCookie(n, s.sessions) },
  { name: 'hash (Maglev)', simulate: (n, s) => simulateHash(n, s.sessions, s.hashes), bounded: false },
  { name: `hash + bounded load ${BALANCE_FACTOR}`, simulate: (n, s) => simulateBoundedHash(n, s.sessions, s.hashes), bounded: true }
]

const COLUMNS = [
  ['scale-out: sessions moved', (f) => percent(f.added.moved)],
  [`scale-out: added target's share of the next ${NEW_SESSIONS.toLocaleString('en').replace(/,/g, ' ')} sessions`, (f) => percent(f.added.addedShare)],
  ['scale-in: sessions moved', (f) => percent(f.removed.moved)],
  ['scale-in: moved though not on the removed target', (f) => percent(f.removed.others)],
  ['max/mean sessions', (f) => f.sessionsMaxOverMean.toFixed(2)],
  [`Zipf ${ZIPF_EXPONENT}: max/mean requests`, (f) => f.zipfMaxOverMean.toFixed(2)],
  ['Zipf: requests off their session\'s target', (f) => percent(f.zipfOff)]
]

function percent (share) {
  if (share === 0) return '0'
  const value = share * 100
  return `${value >= 1 ? value.toFixed(1) : value.toPrecision(2)} %`
}

function markdownTable (results) {
  const lines = [
    `| algorithm (each cell: N = ${TARGET_COUNTS.join(' / ')}) | ${COLUMNS.map(([title]) => title).join(' | ')} |`,
    `|---|${COLUMNS.map(() => '---:').join('|')}|`
  ]
  for (const { name } of ALGORITHMS) {
    const cells = COLUMNS.map(([, format]) => TARGET_COUNTS.map((n) => format(results[name][n])).join(' / '))
    lines.push(`| ${name} | ${cells.join(' | ')} |`)
  }
  return lines.join('\n')
}

function parseArgs (argv) {
  const args = { json: null, sessions: 1_000_000 }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--json') args.json = argv[++i]
    else if (argv[i] === '--sessions') args.sessions = Number(argv[++i])
    else throw new Error(`unknown argument ${argv[i]}; usage: node bench/simulate.js [--json FILE] [--sessions N]`)
  }
  if (!Number.isSafeInteger(args.sessions) || args.sessions < 1000) throw new Error('--sessions takes an integer from 1000')
  return args
}

const args = parseArgs(process.argv.slice(2))
const started = performance.now()
const sessions = args.sessions
const hashes = hashSessions(sessions + NEW_SESSIONS)
const { requests, topShare } = zipfRequests(sessions, REQUESTS, ZIPF_EXPONENT, seededRandom(14))
const state = { sessions, hashes }

const results = {}
for (const { name, simulate, bounded } of ALGORITHMS) {
  results[name] = {}
  for (const n of TARGET_COUNTS) {
    const { assignment, added, removed, probedPast } = simulate(n, state)
    const zipf = bounded ? boundedRequests(n, hashes, requests) : { counts: requestsPerTarget(assignment, requests, n), off: 0 }
    results[name][n] = {
      added,
      removed,
      sessionsMaxOverMean: maxOverMean(countPerTarget(assignment, n), n),
      zipfMaxOverMean: maxOverMean(zipf.counts, n),
      zipfOff: zipf.off,
      ...(probedPast === undefined ? {} : { probedPast })
    }
  }
}
const maglev = timeMaglev(hashes.subarray(0, 1_000_000))
const elapsedSeconds = (performance.now() - started) / 1000

process.stdout.write(`${sessions.toLocaleString('en')} sessions, ${TARGET_COUNTS.join(' / ')} targets of weight 1; ` +
  `Zipf case: ${REQUESTS.toLocaleString('en')} requests, the busiest session sending ${(topShare * 100).toFixed(1)} %, ${IN_FLIGHT} in flight\n\n`)
process.stdout.write(`${markdownTable(results)}\n\n`)
const hash = results[ALGORITHMS[2].name]
process.stdout.write(`hash (Maglev), the removed target probed past instead of rebuilding the table: ` +
  `${TARGET_COUNTS.map((n) => percent(hash[n].probedPast.moved)).join(' / ')} of the sessions moved, ` +
  `${TARGET_COUNTS.map((n) => percent(hash[n].probedPast.others)).join(' / ')} though not on it\n`)
process.stdout.write(`Maglev table (M = ${TARGET_COUNTS.map((n) => maglev.sizes[n]).join(' / ')}): build ` +
  `${TARGET_COUNTS.map((n) => maglev.buildMs[n].toFixed(1)).join(' / ')} ms for N = ${TARGET_COUNTS.join(' / ')}; ` +
  `lookup ${maglev.lookupNs.toFixed(1)} ns (first choice), ${maglev.probeNs.toFixed(1)} ns (a later probe)\n`)
process.stdout.write(`simulated in ${elapsedSeconds.toFixed(1)} s\n`)

if (args.json !== null) {
  writeFileSync(args.json, `${JSON.stringify({
    date: new Date().toISOString(),
    node: process.version,
    sessions,
    newSessions: NEW_SESSIONS,
    requests: REQUESTS,
    inFlight: IN_FLIGHT,
    zipfExponent: ZIPF_EXPONENT,
    zipfTopShare: topShare,
    balanceFactor: BALANCE_FACTOR,
    targetCounts: TARGET_COUNTS,
    results,
    maglev,
    elapsedSeconds
  }, null, 2)}\n`)
}
