// The memory learn store's cost per entry: fills a MemoryLearnStore with 100 000 sessions (keys
// as the learn source makes them: 16-hex digests) and reports the heap it took, per entry.
// Run: `npm run build && node --expose-gc bench/learn-store-memory.js`.
import { KeyHasher } from '../dist/hashing/key-hash.js'
import { MemoryLearnStore } from '../dist/stickiness/learn-store.js'

if (typeof globalThis.gc !== 'function') {
  console.error('run with node --expose-gc')
  process.exit(1)
}
const ENTRIES = 100_000
const hasher = new KeyHasher(Buffer.alloc(32, 7))
const targets = ['cart-a', 'cart-b', 'cart-c']
const results = []
// Each fill's store is kept, so the next fill's figure is its own.
const kept = []
for (let run = 0; run < 3; run++) {
  // The session ids exist before (the requests' own strings, kept alive here); the hex digests,
  // made one by one, are what the store keeps.
  const digests = Array.from({ length: ENTRIES }, (_, i) => `${run}:session-${i}`)
  globalThis.gc()
  const before = process.memoryUsage().heapUsed
  const store = new MemoryLearnStore({ maxEntries: ENTRIES })
  for (let i = 0; i < ENTRIES; i++) store.set(hasher.hex(digests[i]), targets[i % 3], 3_600_000, 1_800_000_000_000)
  globalThis.gc()
  const after = process.memoryUsage().heapUsed
  if (store.size !== ENTRIES) throw new Error(`the store holds ${store.size} entries`)
  kept.push(store, digests)
  results.push((after - before) / ENTRIES)
}
results.sort((a, b) => a - b)
console.log(`memory learn store: ${results[1].toFixed(0)} bytes per entry (median of 3 fills of ${ENTRIES.toLocaleString('en')}), ${(results[1] * ENTRIES / 1e6).toFixed(1)} MB in all, on Node ${process.versions.node}`)
