import { test } from 'tap'
import { MaglevTable, maglevSize } from '../lib/hashing/maglev.js'

const KEYS = 200_000

/** Deterministic unsigned 32-bit key hashes (xorshift32), so a failure replays. */
function keyHashes (count: number, seed = 0x9e3779b9): Uint32Array {
  const hashes = new Uint32Array(count)
  let x = seed >>> 0
  for (let i = 0; i < count; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    hashes[i] = x
  }
  return hashes
}

const idsOf = (count: number, from = 0): string[] => Array.from({ length: count }, (_, i) => `target-${from + i}`)
const ones = (count: number): number[] => new Array<number>(count).fill(1)

/** Each member's share of the table's entries. */
function shares (table: MaglevTable, members: number): number[] {
  const counts = new Array<number>(members).fill(0)
  for (let entry = 0; entry < table.size; entry++) counts[table.lookup(entry, 0)]++
  return counts.map((count) => count / table.size)
}

/** Keys whose first choice differs between two tables, and how many of those were on `member` before (or are on it after). */
function movedKeys (hashes: Uint32Array, before: MaglevTable, beforeIds: string[], after: MaglevTable, afterIds: string[], member: string): { moved: number, involving: number } {
  let moved = 0
  let involving = 0
  for (const hash of hashes) {
    const was = beforeIds[before.lookup(hash, 0)]
    const is = afterIds[after.lookup(hash, 0)]
    if (was === is) continue
    moved++
    if (was === member || is === member) involving++
  }
  return { moved, involving }
}

test('maglevSize is the next prime from 65537 or 100 entries per member', async (t) => {
  t.equal(maglevSize(0), 65_537)
  t.equal(maglevSize(10), 65_537)
  t.equal(maglevSize(655), 65_537)
  t.equal(maglevSize(656), 65_609, '65600 and the 8 numbers after it are not prime')
  t.equal(maglevSize(1000), 100_003)
  t.equal(new MaglevTable(idsOf(1000), ones(1000)).size, 100_003, 'the default size')
})

test('each member’s share of entries follows its weight', async (t) => {
  const [a, b, c] = shares(new MaglevTable(['a', 'b', 'c'], [2, 1, 1]), 3)
  t.ok(Math.abs(a / 0.5 - 1) <= 0.01, `weight 2 of 4: ${a}`)
  t.ok(Math.abs(b / 0.25 - 1) <= 0.01, `weight 1 of 4: ${b}`)
  t.ok(Math.abs(c / 0.25 - 1) <= 0.01, `weight 1 of 4: ${c}`)

  const weights = [1000, 1, 7, 3, 250]
  const weighted = shares(new MaglevTable(idsOf(5), weights), 5)
  const total = weights.reduce((sum, weight) => sum + weight, 0)
  weighted.forEach((share, i) => {
    t.ok(Math.abs(share - weights[i] / total) <= 0.01 * (weights[i] / total) + 1 / 65_537, `weight ${weights[i]} of ${total}: ${share}`)
  })

  const many = shares(new MaglevTable(idsOf(1000), ones(1000)), 1000)
  const spread = `${Math.min(...many) * 1000} to ${Math.max(...many) * 1000} of the mean`
  t.ok(Math.max(...many) * 1000 <= 1.02 && Math.min(...many) * 1000 >= 0.98, `1000 equal members within 2 %: ${spread}`)
})

test('removing one of N members moves about 1/N of the keys, nearly all of them its own', async (t) => {
  const hashes = keyHashes(KEYS)
  // Measured: at N = 10 98 % of the moved keys were the removed member's; at N = 100 (the same
  // 65537 entries) 60 %, the rest moved between other members by the refill.
  for (const [members, ownShare] of [[10, 0.95], [100, 0.5]]) {
    const ids = idsOf(members)
    const before = new MaglevTable(ids, ones(members))
    const removed = ids[3]
    const rest = ids.filter((id) => id !== removed)
    const after = new MaglevTable(rest, ones(members - 1), before.size)
    const { moved, involving } = movedKeys(hashes, before, ids, after, rest, removed)
    t.ok(moved / KEYS >= 0.8 / members, `N = ${members}: at least the removed member's keys moved: ${moved / KEYS}`)
    t.ok(moved / KEYS <= 1.3 / members + 0.01, `N = ${members}: ${moved / KEYS} of the keys moved`)
    t.ok(involving / moved >= ownShare, `N = ${members}: ${involving / moved} of the moved keys were the removed member's`)
  }
})

test('adding one to N members moves about 1/N of the keys, nearly all of them to it', async (t) => {
  const hashes = keyHashes(KEYS, 7)
  for (const [members, ownShare] of [[10, 0.95], [100, 0.5]]) {
    const ids = idsOf(members)
    const before = new MaglevTable(ids, ones(members))
    const grown = [...ids, 'target-new']
    const after = new MaglevTable(grown, ones(members + 1), before.size)
    const { moved, involving } = movedKeys(hashes, before, ids, after, grown, 'target-new')
    t.ok(moved / KEYS >= 0.8 / (members + 1), `N = ${members}: the added member took its share: ${moved / KEYS}`)
    t.ok(moved / KEYS <= 1.3 / members + 0.01, `N = ${members}: ${moved / KEYS} of the keys moved`)
    t.ok(involving / moved >= ownShare, `N = ${members}: ${involving / moved} of the moved keys went to the added member`)
  }
})

test('probing past a member that cannot take keys moves only its keys, spread over the others', async (t) => {
  const hashes = keyHashes(KEYS, 11)
  const members = 10
  const table = new MaglevTable(idsOf(members), ones(members))
  const skipped = 4
  const firstRoutable = (hash: number): number => {
    for (let probe = 0; probe < table.size; probe++) {
      const member = table.lookup(hash, probe)
      if (member !== skipped) return member
    }
    return -1
  }
  let movedOthers = 0
  const landed = new Array<number>(members).fill(0)
  let displaced = 0
  for (const hash of hashes) {
    const first = table.lookup(hash, 0)
    const routed = firstRoutable(hash)
    if (first !== skipped) {
      if (routed !== first) movedOthers++
      continue
    }
    displaced++
    landed[routed]++
  }
  t.equal(movedOthers, 0, 'no other member’s key moved')
  t.equal(landed[skipped], 0)
  const others = landed.filter((_, member) => member !== skipped).map((count) => count / displaced)
  t.ok(Math.min(...others) >= 0.9 / (members - 1) && Math.max(...others) <= 1.1 / (members - 1), `its ${displaced} keys spread over the other 9: ${others.map((share) => share.toFixed(3)).join(' ')}`)
})

test('the same members in another order, or built again, give the same table', async (t) => {
  const ids = idsOf(50)
  const weights = ids.map((_, i) => 1 + (i % 4))
  const table = new MaglevTable(ids, weights)
  const reversed = [...ids].reverse()
  const other = new MaglevTable(reversed, [...weights].reverse())
  const again = new MaglevTable(ids, weights)
  let differing = 0
  for (let entry = 0; entry < table.size; entry++) {
    const id = ids[table.lookup(entry, 0)]
    if (reversed[other.lookup(entry, 0)] !== id || ids[again.lookup(entry, 0)] !== id) differing++
  }
  t.equal(differing, 0, 'every entry names the same member id')
})

test('a lookup wraps around the table and names any member, indexes past 65535 included', async (t) => {
  const table = new MaglevTable(['a', 'b', 'c'], [1, 1, 1], 101)
  for (const hash of [0, 1, 100, 101, 0x7fffffff, 0xffffffff]) {
    t.equal(table.lookup(hash, 101), table.lookup(hash, 0), `hash ${hash}: probe \`size\` is probe 0 again`)
    const seen = new Set<number>()
    for (let probe = 0; probe < 101; probe++) seen.add(table.lookup(hash, probe))
    t.same([...seen].sort(), [0, 1, 2], `hash ${hash}: its first 101 probes name every member`)
  }

  // As many entries as members: each member gets exactly one.
  const count = 65_537
  const big = new MaglevTable(idsOf(count), ones(count), count)
  const seen = new Uint8Array(count)
  for (let entry = 0; entry < count; entry++) seen[big.lookup(entry, 0)]++
  t.equal(seen.every((times) => times === 1), true, 'each of the 65537 members names one entry')
})

test('an empty table names no member', async (t) => {
  const table = new MaglevTable([], [])
  t.equal(table.size, 65_537)
  t.equal(table.lookup(0, 0), -1)
  t.equal(table.lookup(0xffffffff, 12), -1)
})

test('bad members, weights and sizes are refused', async (t) => {
  t.throws(() => new MaglevTable(['a', 'b'], [1]), new RangeError('MaglevTable needs one weight per id, got 2 ids and 1 weights'))
  t.throws(() => new MaglevTable(['a', 'a'], [1, 1]), new RangeError('MaglevTable member ids must be distinct'))
  for (const weight of [0, -1, 1.5, Number.NaN, 2 ** 40]) {
    t.throws(() => new MaglevTable(['a'], [weight]), RangeError, `weight ${weight}`)
  }
  for (const size of [65_536, 1, 0, 2.5, 67_108_879]) {
    t.throws(() => new MaglevTable(['a'], [1], size), RangeError, `size ${size}`)
  }
  t.throws(() => new MaglevTable(['a', 'b', 'c', 'd'], [1, 1, 1, 1], 3), RangeError, 'fewer entries than members')
})
