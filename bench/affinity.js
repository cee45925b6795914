// Microbenchmark of the affinity path, in process: read the Cookie header, open the value,
// decide, seal and build the two Set-Cookie lines, exactly what the route hook runs per request.
//   node bench/affinity.js [--smoke]
// Prints ns per request for returning clients (a valid cookie, rotated over 30 values of 3
// targets), for returning clients of two groups (one value carrying both groups' bindings, 30
// values) and for new ones (no cookie): the median of several runs.
import { fileURLToPath } from 'node:url'
import { CookieCodec, COOKIE_PURPOSE_LB } from '../dist/index.js'
import { AppCookieSealer, LbSetSealer } from '../dist/group-forward.js'
import { COOKIE_PURPOSE_LB_SET } from '../dist/cookie-codec.js'
import { encodeBindings } from '../dist/stickiness/app-bindings.js'
import { resolveListenerRule } from '../dist/listener-rule.js'
import { resolveOptions } from '../dist/options.js'
import { AppCookieWriter } from '../dist/stickiness/app-cookie.js'
import { LbCookieWriter } from '../dist/stickiness/lb-cookie.js'
import { TargetGroup } from '../dist/target-group.js'

const KEY = '5e'.repeat(32)

/** Runs the microbenchmark; returns `{ returningNs, twoGroupsNs, newNs, runs, iterations }`. */
export async function runAffinityBench ({ smoke = false } = {}) {
  const options = resolveOptions({
    keys: [KEY],
    targetGroups: [{ name: 'bench', targets: ['a', 'b', 'c'].map((id, i) => ({ id, url: `http://127.0.0.1:${9001 + i}` })) }]
  })
  // Pools connect lazily: no traffic leaves this process.
  const group = new TargetGroup(options.targetGroups[0], { connections: 1, connectTimeoutMs: 1000, idleTimeoutMs: 1000, now: Date.now })
  const codec = new CookieCodec(options.keys)
  const rule = resolveListenerRule({ targetGroup: 'bench' }, 'GET /', {
    groups: new Map([['bench', group]]),
    codec,
    lbWriter: new LbCookieWriter(),
    appWriter: new AppCookieWriter(),
    appSealer: new AppCookieSealer(codec, 'AWSALBAPP-'),
    lbSetSealer: new LbSetSealer(codec, 'AWSALBCORS'),
    secureCookies: false,
    listeners: new Map(),
    cookiePrefix: '',
    clockSkewSeconds: 5,
    now: Date.now
  })

  const nowSeconds = Math.floor(Date.now() / 1000)
  const headers = []
  for (let i = 0; i < 30; i++) {
    const value = codec.seal(COOKIE_PURPOSE_LB, { group: 'bench', targetId: 'abc'[i % 3], stickyUntilSeconds: nowSeconds + 86_400, issuedAtSeconds: nowSeconds })
    headers.push(`AWSALB=${value}; AWSALBCORS=${value}; theme=dark`)
  }
  // Clients of this group and another: one value carries both bindings.
  const twoGroupHeaders = []
  for (let i = 0; i < 30; i++) {
    const value = codec.sealBytes(COOKIE_PURPOSE_LB_SET, encodeBindings([
      { group: 'bench', targetId: 'abc'[i % 3], issuedAtSeconds: nowSeconds, valueHash: null },
      { group: 'other', targetId: 'abc'[(i + 1) % 3], issuedAtSeconds: nowSeconds, valueHash: null }
    ]))
    twoGroupHeaders.push(`AWSALB=${value}; AWSALBCORS=${value}; theme=dark`)
  }
  const iterations = smoke ? 20_000 : 1_000_000
  const runs = smoke ? 1 : 7
  let sink = 0
  // What the route hook runs (lib/index.ts applyAffinity), minus setting request and reply fields.
  const step = (header) => {
    const nowMs = rule.now()
    const { decision, carried } = rule.decideLb(header, nowMs)
    if (decision.outcome === 'reassigned') throw new Error(`the benchmark's cookies must open: ${decision.reason}`)
    const lines = rule.setCookies(decision.target.id, nowMs, false, carried)
    sink += lines[0].length
  }
  const measure = (pickHeader) => {
    const started = process.hrtime.bigint()
    for (let i = 0; i < iterations; i++) step(pickHeader(i))
    return Number(process.hrtime.bigint() - started) / iterations
  }
  const returning = []
  const twoGroups = []
  const fresh = []
  // Interleaved runs; the first of each warms the JIT and the per-second caches and is dropped.
  for (let run = 0; run <= runs; run++) {
    const r = measure((i) => headers[i % headers.length])
    const g = measure((i) => twoGroupHeaders[i % twoGroupHeaders.length])
    const n = measure(() => undefined)
    if (run > 0) { returning.push(r); twoGroups.push(g); fresh.push(n) }
  }
  await group.close()
  if (sink === 0) throw new Error('unreachable')
  return { returningNs: median(returning), twoGroupsNs: median(twoGroups), newNs: median(fresh), runs, iterations }
}

function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const result = await runAffinityBench({ smoke: process.argv.includes('--smoke') })
  process.stdout.write(`returning client:             ${result.returningNs.toFixed(0)} ns per request\n` +
    `returning client, two groups: ${result.twoGroupsNs.toFixed(0)} ns per request\n` +
    `new client:                   ${result.newNs.toFixed(0)} ns per request\n`)
}
