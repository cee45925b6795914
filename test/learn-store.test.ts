import { test } from 'tap'
import { DEFAULT_LEARN_MAX_ENTRIES, LruEntry, LruList, MemoryLearnStore } from '../lib/stickiness/learn-store.js'

const T = 1_800_000_000_000
const MINUTE = 60_000

test('the memory store remembers key → target and answers synchronously', async (t) => {
  const store = new MemoryLearnStore()
  t.teardown(() => store.close())
  t.equal(store.get('a1', MINUTE, T), null, 'nothing learned yet')
  store.set('a1', 't0', MINUTE, T)
  store.set('b2', 't1', MINUTE, T)
  t.equal(store.get('a1', MINUTE, T + 1), 't0')
  t.equal(store.get('b2', MINUTE, T + 1), 't1')
  store.set('a1', 't2', MINUTE, T + 2)
  t.equal(store.get('a1', MINUTE, T + 3), 't2', 'a later set wins')
  t.same(store.counters, { hits: 3, localHits: 3, misses: 1, unavailable: 0, errors: 0 })
})

test('an entry expires its time to live after its last use, and a lookup slides it', async (t) => {
  const store = new MemoryLearnStore()
  t.teardown(() => store.close())
  store.set('a1', 't0', 1000, T)
  t.equal(store.get('a1', 1000, T + 999), 't0', 'the last millisecond of its life')
  // That lookup moved its end to T + 1999.
  t.equal(store.get('a1', 1000, T + 1998), 't0', 'slid by the lookup at T + 999')
  t.equal(store.get('a1', 1000, T + 2998), null, 'unused for its whole time to live: gone')
  t.equal(store.get('a1', 1000, T + 2999), null, 'and it stays gone')

  store.set('b2', 't1', 1000, T)
  t.equal(store.get('b2', 1000, T + 1000), null, 'expired exactly at set time + ttl')
  store.set('c3', 't1', 1000, T)
  t.equal(store.get('c3', 1000, T + 5000), null, 'long after')
  t.equal(store.get('c3', 1000, T + 10), null, 'an expired entry is forgotten, not revived by an earlier clock')
})

test('set() renews an entry: new target, new time to live', async (t) => {
  const store = new MemoryLearnStore()
  t.teardown(() => store.close())
  store.set('a1', 't0', 1000, T)
  store.set('a1', 't1', 1000, T + 900)
  t.equal(store.get('a1', 1000, T + 1800), 't1', 'alive until T + 1900')
  t.equal(store.size, 1)
})

test('the store holds at most maxEntries: the least recently used goes first', async (t) => {
  const store = new MemoryLearnStore({ maxEntries: 3 })
  t.teardown(() => store.close())
  store.set('a', 't0', MINUTE, T)
  store.set('b', 't0', MINUTE, T)
  store.set('c', 't0', MINUTE, T)
  t.equal(store.get('a', MINUTE, T + 1), 't0', 'a is now the most recently used')
  store.set('d', 't0', MINUTE, T + 2)
  t.equal(store.size, 3)
  t.equal(store.get('b', MINUTE, T + 3), null, 'b, the least recently used, went')
  t.equal(store.get('a', MINUTE, T + 3), 't0')
  t.equal(store.get('c', MINUTE, T + 3), 't0')
  t.equal(store.get('d', MINUTE, T + 3), 't0')
  store.set('c', 't1', MINUTE, T + 4)
  store.set('e', 't0', MINUTE, T + 5)
  t.equal(store.get('a', MINUTE, T + 6), null, 'renewing c made a the oldest: it went')
  t.equal(store.get('c', MINUTE, T + 6), 't1')

  const big = new MemoryLearnStore({ maxEntries: 1000 })
  t.teardown(() => big.close())
  for (let i = 0; i < 50_000; i++) big.set(`k${i}`, `t${i % 7}`, MINUTE, T + i)
  t.equal(big.size, 1000, 'never more than maxEntries')
  t.equal(big.get('k49000', MINUTE, T + 50_000), 't0', 'the last thousand are there')
  t.equal(big.get('k49999', MINUTE, T + 50_000), 't5')
    t.equal(big.get('k48999', MINUTE, T + 50_000), null, 'older ones are not')
  t.equal(DEFAULT_LEARN_MAX_ENTRIES, 100_000)
})

test('expired entries at the back are dropped as new ones come, so memory follows the live sessions', async (t) => {
  const store = new MemoryLearnStore({ maxEntries: 1000 })
  t.teardown(() => store.close())
  for (let i = 0; i < 500; i++) store.set(`old${i}`, 't0', 1000, T)
  t.equal(store.size, 500)
  for (let i = 0; i < 250; i++) store.set(`new${i}`, 't0', 1000, T + 5000)
  t.equal(store.size, 250, 'each new entry took two expired ones out')
  for (let i = 250; i < 600; i++) store.set(`new${i}`, 't0', 1000, T + 5000)
  t.equal(store.size, 600, 'only the live ones are left')
})

test('delete() forgets a key; deleting an unknown key is harmless', async (t) => {
  const store = new MemoryLearnStore()
  t.teardown(() => store.close())
  store.set('a1', 't0', MINUTE, T)
  store.set('b2', 't1', MINUTE, T)
  store.delete('a1')
  store.delete('zz')
  t.equal(store.get('a1', MINUTE, T + 1), null)
  t.equal(store.get('b2', MINUTE, T + 1), 't1')
  t.equal(store.size, 1)
  await store.close()
  t.equal(store.size, 0, 'close() lets everything go')
})

test('the LRU list keeps its order through touches, replacements and removals', async (t) => {
  const list = new LruList<LruEntry>(3)
  const order = (): string[] => {
    const keys: string[] = []
    for (let entry = list.tail; entry !== null; entry = entry.prevEntry) keys.push(entry.key)
    return keys
  }
  const a = new LruEntry('a')
  const b = new LruEntry('b')
  const c = new LruEntry('c')
  list.add(a)
  list.add(b)
  list.add(c)
  t.same(order(), ['a', 'b', 'c'], 'oldest first')
  list.touch(a)
  t.same(order(), ['b', 'c', 'a'])
  list.touch(a)
  t.same(order(), ['b', 'c', 'a'], 'touching the head changes nothing')
  const b2 = new LruEntry('b')
  list.add(b2)
  t.same(order(), ['c', 'a', 'b'], 'a replacement takes the front')
  t.equal(list.peek('b'), b2)
  list.remove(b)
  t.equal(list.peek('b'), b2, 'removing a replaced entry leaves its successor')
  list.remove(c)
  t.same(order(), ['a', 'b'])
  list.add(new LruEntry('d'))
  list.add(new LruEntry('e'))
  t.same(order(), ['b', 'd', 'e'], 'full: the oldest went')
  t.equal(list.size, 3)
  list.clear()
  t.same(order(), [])
  t.equal(list.size, 0)
})
