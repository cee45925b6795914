// Microbenchmark of the affinity path, in process: read the Cookie header, open the value,
// decide, seal and build the two Set-Cookie lines, exactly what the route hook runs per request.
//   node bench/affinity.js [--smoke]
// Prints ns per request for returning clients (a valid cookie, rotated over 30 values of 3
// targets), for returning clients of two groups (one value carrying both groups' bindings, 30
// values) and for new ones (no cookie): the median of several runs. Then the cookie-less types,
// decided as the route hook decides (GroupForward#decide), over the same 3 targets:
// `header` (x-session-id, 30 returning keys), `source_ip` (30 returning peer addresses, no
// trusted proxy) and `learn` (a JSESSIONID cookie of 30 sessions the memory store already
// knows, with what its onSend hook runs on a response that sets no cookie).
import { fileURLToPath } from 'node:url'
import { CookieCodec, COOKIE_PURPOSE_LB } from '../dist/index.js'
import { COOKIE_PURPOSE_LB_SET } from '../dist/cookie-codec.js'
import { encodeBindings } from '../dist/stickiness/app-bindings.js'
import { resolveListenerRule } from '../dist/listener-rule.js'
import { resolveOptions } from '../dist/options.js'
import { AppCookieSealer, AppCookieWriter } from '../dist/stickiness/app-cookie.js'
import { PeerTrust } from '../dist/client-address.js'
import { KeyHasher } from '../dist/hashing/key-hash.js'
import { MemoryLearnStore } from '../dist/stickiness/learn-store.js'
import { LbCookieWriter, LbSetSealer } from '../dist/stickiness/lb-cookie.js'
import { TargetGroup } from '../dist/target-group.js'

const KEY = '5e'.repeat(32)

/** Runs the microbenchmark; returns `{ returningNs, twoGroupsNs, newNs, headerNs, sourceIpNs, learnNs, runs, iterations }`. */
export async function runAffinityBench ({ smoke = false } = {}) {
  const options = resolveOptions({
    keys: [KEY],
    targetGroups: [{ name: 'bench', targets: ['a', 'b', 'c'].map((id, i) => ({ id, url: `http://127.0.0.1:${9001 + i}` })) }]
  })
  // Pools connect lazily: no traffic leaves this process.
  const group = new TargetGroup(options.targetGroups[0], { connections: 1, connectTimeoutMs: 1000, idleTimeoutMs: 1000, now: Date.now })
  const codec = new CookieCodec(options.keys)
  const learnStore = new MemoryLearnStore()
  const context = {
    hasher: new KeyHasher(options.keys[0]),
    peers: new PeerTrust(null),
    learnStore: () => learnStore,
    groups: new Map([['bench', group]]),
    codec,
    lbWriter: new LbCookieWriter(),
    appWriter: new AppCookieWriter(),
    appSealer: new AppCookieSealer(codec, 'AWSALBAPP-'),
    lbSetSealer: new LbSetSealer(codec, 'AWSALBCORS'),
    secureCookies: false,
    corsCookies: 'always',
    listeners: new Map(),
    cookiePrefix: '',
    clockSkewSeconds: 5,
    now: Date.now
  }
  const rule = resolveListenerRule({ targetGroup: 'bench' }, 'GET /', context)
  // The cookie-less types, as a route's override of the group's stickiness.
  const chained = (stickiness) => resolveListenerRule({ targetGroup: 'bench', stickiness }, 'GET /', context)
  const byHeader = chained({ type: 'header', name: 'x-session-id' })
  const bySourceIp = chained({ type: 'source_ip' })
  const byLearn = chained({ type: 'learn', cookieName: 'JSESSIONID' })

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
  // Request views as Fastify's request offers them to a chained forward.
  const view = (headers, address) => ({ headers, url: '/', raw: { socket: { remoteAddress: address }, headers } })
  // The cookie rows' requests, made once: the loop runs what the route hook runs, nothing else.
  const returningRequests = headers.map((cookie) => view({ cookie }, '127.0.0.1'))
  const twoGroupRequests = twoGroupHeaders.map((cookie) => view({ cookie }, '127.0.0.1'))
  const newRequest = view({}, '127.0.0.1')
  const headerRequests = []
  const sourceIpRequests = []
  const learnRequests = []
  for (let i = 0; i < 30; i++) {
    headerRequests.push(view({ 'x-session-id': `session-${i}-${'k'.repeat(24)}` }, '127.0.0.1'))
    sourceIpRequests.push(view({}, `198.51.100.${i + 1}`))
    const request = view({ cookie: `JSESSIONID=${i.toString(16).padStart(32, '0')}; theme=dark` }, '127.0.0.1')
    learnRequests.push(request)
    // Each session logged in once: the store learned its target from the response.
    const first = byLearn.decide(request, Date.now())
    byLearn.pin.atResponse(first.state, first.decision.target.id, { getHeader: () => undefined }, request, Date.now(), false)
  }
  const noSetCookie = { getHeader: () => undefined }
  const iterations = smoke ? 20_000 : 1_000_000
  const runs = smoke ? 1 : 7
  let sink = 0
  // What the route hook runs (lib/index.ts applyAffinity, settleAffinity) and, for a pinning
  // source that acts on the response, the onSend hook (pinAtResponse), minus setting request and reply fields.
  const decideOnce = (forward, request) => {
    const nowMs = forward.now()
    const decided = forward.decide(request, nowMs)
    if (decided instanceof Promise) throw new Error('the memory store answers at once')
    const { decision, state } = decided
    const lines = forward.pinLines(state, decision.target.id, nowMs, false, true)
    if (lines !== null) sink += lines[0].length
    if (forward.pin?.atResponse !== undefined) forward.pin.atResponse(state, decision.target.id, noSetCookie, request, nowMs, false)
    return decision
  }
  const step = (request) => {
    const decision = decideOnce(rule, request)
    if (decision.outcome === 'reassigned') throw new Error(`the benchmark's cookies must open: ${decision.reason}`)
  }
  const chainStep = (forward, expected) => (request) => {
    const decision = decideOnce(forward, request)
    if (decision.outcome !== 'hit' || decision.decidedBy !== expected) throw new Error(`the benchmark's ${expected} clients must be kept: ${decision.outcome} ${decision.decidedBy ?? ''}`)
    sink += decision.target.id.length
  }
  const headerStep = chainStep(byHeader, 'header')
  const sourceIpStep = chainStep(bySourceIp, 'source_ip')
  const learnStep = chainStep(byLearn, 'learn')
  const measure = (pickHeader, run = step) => {
    const started = process.hrtime.bigint()
    for (let i = 0; i < iterations; i++) run(pickHeader(i))
    return Number(process.hrtime.bigint() - started) / iterations
  }
  const returning = []
  const twoGroups = []
  const fresh = []
  const header = []
  const sourceIp = []
  const learn = []
  // Interleaved runs; the first of each warms the JIT and the per-second caches and is dropped.
  for (let run = 0; run <= runs; run++) {
    const r = measure((i) => returningRequests[i % returningRequests.length])
    const g = measure((i) => twoGroupRequests[i % twoGroupRequests.length])
    const n = measure(() => newRequest)
    const h = measure((i) => headerRequests[i % 30], headerStep)
    const s = measure((i) => sourceIpRequests[i % 30], sourceIpStep)
    const l = measure((i) => learnRequests[i % 30], learnStep)
    if (run > 0) { returning.push(r); twoGroups.push(g); fresh.push(n); header.push(h); sourceIp.push(s); learn.push(l) }
  }
  await group.close()
  await learnStore.close()
  if (sink === 0) throw new Error('unreachable')
  return {
    returningNs: median(returning),
    twoGroupsNs: median(twoGroups),
    newNs: median(fresh),
    headerNs: median(header),
    sourceIpNs: median(sourceIp),
    learnNs: median(learn),
    runs,
    iterations
  }
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
    `new client:                   ${result.newNs.toFixed(0)} ns per request\n` +
    `header, returning key:        ${result.headerNs.toFixed(0)} ns per request\n` +
    `source_ip, returning address: ${result.sourceIpNs.toFixed(0)} ns per request\n` +
    `learn (memory), returning:    ${result.learnNs.toFixed(0)} ns per request\n`)
}
