// npm run bench: every scenario side by side in one run, as ratios to plain @fastify/http-proxy
// (× ref) and to `bare`, a minimal node:http + undici proxy (× bare, bench/bare-proxy.js): the
// ceiling of a Node.js gateway on the machine.
//
//   node bench/run.js [--rounds 3] [--duration 5] [--warmup 2] [--connections 50]
//                     [--generator wrk|autocannon] [--only throughput,websocket,affinity,memory]
//                     [--scenarios bare,sticky-new,sticky-returning,drop-in,metrics-returning,source-ip,header,learn-memory,learn-redis,…]
//                     (the reference always runs; × bare needs bare)
//                     [--baseline <dist folder of another build>] (adds its sticky rows, to compare builds)
//                     [--ws-connections 50] [--ws-bytes 100]
//                     [--clients 1000000] [--json bench/results/latest.json] [--profile] [--smoke]
//
// Backends: nginx serving a ~100-byte body when installed, else a minimal node:http server; three
// targets, keep-alive. Load: wrk when installed, else autocannon; the gateway pinned to CPU 1,
// generator and backends to CPU 0 (taskset). Rounds are interleaved (A B C … A B C …); every
// figure is the median over the rounds. Timing never fails the command: only errors do.
// The cookie-less rows have returning clients too: `header` clients each send their own
// x-session-id; `learn-*` clients each log in once before the runs (their JSESSIONID's first
// request teaches the store), in memory or in a redis-server of the run's own (skipped with a
// note when redis-server is not installed); `source-ip` clients all come from 127.0.0.1.
// `metrics-returning` is sticky-returning through a gateway with `metrics: true` (prom-client),
// judged against sticky-returning in the same run.
// The WebSocket row (`websocket`): an echo over --ws-connections sockets, each a closed loop
// (send a message, wait for its echo, send the next), direct to three `ws` targets, through the
// plugin (lb_cookie, every socket opened with a cookie that pins it) and through
// @fastify/http-proxy's `websocket: true`; targets (bench/ws-target.js) and load
// (bench/ws-load.js) on CPU 0, each gateway on CPU 1, the same interleaved rounds and medians.
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { cpus, release, tmpdir, totalmem } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CookieCodec, COOKIE_PURPOSE_LB } from '../dist/index.js'
import { runAffinityBench } from './affinity.js'
import { BACKEND_BODY } from './backend.js'

const here = dirname(fileURLToPath(import.meta.url))
const BENCH_KEY = '5e'.repeat(32)
const TARGET_IDS = ['a', 'b', 'c']
/** Cookie values per target that returning clients rotate through. */
const VALUES_PER_TARGET = 10
/** The header `header` stickiness hashes. */
const SESSION_HEADER = 'x-session-id'
/** Names this run's files (CPU profiles): its start time, e.g. 2026-11-21T21-57-01. */
const RUN_STAMP = new Date().toISOString().slice(0, 19).replace(/:/g, '-')

const TARGETS = {
  returningRatio: 0.95,
  newRatio: 0.90,
  p99Ratio: 1.15,
  returningNs: 1000,
  newNs: 2000,
  /** Hashing a key (header, source_ip) over the affinity path of a new lb_cookie client. */
  hashingAddsNs: 200,
  /** learn with Redis, returning clients, against lb_cookie returning clients in the same run. */
  learnRedisRatio: 0.9,
  /** lb_cookie returning clients with metrics on, against the same with metrics off in the same run. */
  metricsRatio: 0.95,
  rssGrowthMiB: 64,
  /** WebSocket echo through the plugin, messages per second per socket against the same echo direct to the targets. */
  wsDirectRatio: 0.9,
  /** The same against @fastify/http-proxy's `websocket: true`: no fewer messages per second, no higher p99. */
  wsReferenceRatio: 1,
  wsP99Ratio: 1
}


async function main () {
  const started = Date.now()
  const report = {
    date: new Date().toISOString(),
    machine: machine(),
    settings: { rounds: options.rounds, durationSeconds: options.duration, warmupSeconds: options.warmup, connections: options.connections, wsConnections: options.wsConnections, wsMessageBytes: options.wsBytes, smoke: options.smoke },
    notes: []
  }
  const only = new Set(options.only)
  if (only.has('throughput')) report.throughput = await throughput(report.notes)
  if (only.has('websocket')) report.websocket = await websocket(report.notes)
  if (only.has('affinity')) {
    log('\naffinity path (open, decide, seal, Set-Cookie strings), in process:')
    report.affinity = await runAffinityBench({ smoke: options.smoke })
    printAffinity(report.affinity)
  }
  if (only.has('memory')) {
    const { runMemoryCheck } = await import('./memory.js')
    log(`\nmemory: ${options.clients.toLocaleString('en')} distinct clients through a cookie-sticky route`)
    report.memory = await runMemoryCheck({ clients: options.clients, warmup: options.smoke ? 2000 : 20_000, log })
    const m = report.memory
    log(`  after GC: rss ${fmt(m.baseline.rssMiB, 1)} → ${fmt(m.end.rssMiB, 1)} MiB (${fmt(m.growth.rssMiB, 1)}), heap used ${fmt(m.baseline.heapUsedMiB, 1)} → ${fmt(m.end.heapUsedMiB, 1)} MiB; ${fmt(m.requestsPerSecond, 0)} req/s; ${m.errors + m.non200 + m.missingCookie + m.wrongTarget} failed responses`)
  }
  report.targets = judgeTargets(report)
  printTargets(report.targets)
  report.elapsedSeconds = Math.round((Date.now() - started) / 1000)
  mkdirSync(dirname(options.json), { recursive: true })
  writeFileSync(options.json, JSON.stringify(report, null, 2) + '\n')
  for (const note of report.notes) log(`note: ${note}`)
  log(`\nwrote ${options.json} (${report.elapsedSeconds} s)`)
  const errors = [...(report.throughput?.scenarios ?? []), ...(report.websocket?.scenarios ?? [])].reduce((sum, s) => sum + s.rounds.reduce((n, r) => n + r.errors, 0), 0)
  if (errors > 0 || (report.memory !== undefined && report.memory.errors + report.memory.non200 + report.memory.missingCookie + report.memory.wrongTarget > 0)) {
    log('errors were counted: see the table')
    process.exitCode = 1
  }
}

// ---------------------------------------------------------------------------------------------
// Throughput

async function throughput (notes) {
  const pin = canPin()
  if (!pin) notes.push('taskset or a second CPU is missing: processes are not pinned')
  const generator = options.generator ?? (onPath('wrk') ? 'wrk' : 'autocannon')
  if (generator === 'autocannon') notes.push(`${options.generator === undefined ? 'wrk is not installed: ' : ''}load comes from autocannon, which needs more CPU of its own than wrk`)
  const work = mkdtempSync(join(tmpdir(), 'fastify-sticky-bench-'))
  cleanups.push(async () => rmSync(work, { recursive: true, force: true }))

  // Backends
  const backendPorts = await freePorts(3)
  const backendKind = onPath('nginx') ? 'nginx' : 'node'
  if (backendKind === 'node') notes.push('nginx is not installed: targets are a node:http server')
  if (backendKind === 'nginx') {
    const conf = join(work, 'backends.conf')
    writeFileSync(conf, nginxBackendsConf(work, backendPorts))
    await startProcess('backends', 'nginx', ['-p', work, '-c', conf, '-e', join(work, 'backends-error.log')], { cpu: pin ? 0 : null, port: backendPorts[2] })
  } else {
    await startProcess('backends', process.execPath, [join(here, 'backend.js'), ...backendPorts.map(String)], { cpu: pin ? 0 : null, readyLine: 'ready' })
  }
  await Promise.all(backendPorts.map((port) => waitForPort(port)))
  const origins = backendPorts.map((port) => `http://127.0.0.1:${port}`)

  // Gateways, all started up front and left idle while another is measured.
  const [refPort, stickyPort, barePort, haproxyPort, nginxPort] = await freePorts(5)
  const profiles = {}
  const startGateway = (name, args) => startNodeGateway(name, args, pin, profiles)
  const gateways = {}
  gateways.reference = await startGateway('reference', ['reference', String(refPort), origins[0]])
  gateways.sticky = await startGateway('sticky', ['sticky', String(stickyPort), origins.join(',')])
  gateways.bare = await startGateway('bare', ['bare', String(barePort), origins.join(',')])
  // The cookie-less gateways, each only when one of its scenarios runs.
  const wants = (name) => options.scenarios === undefined || options.scenarios.includes(name)
  const stickyAs = async (name, config) => {
    const [port] = await freePorts(1)
    const child = await startGateway(name, ['sticky-as', String(port), origins.join(','), JSON.stringify(config)])
    child.port = port
    return child
  }
  if (wants('drop-in')) {
    const [port] = await freePorts(1)
    gateways.dropIn = await startGateway('drop-in', ['drop-in', String(port), origins[0]])
    gateways.dropIn.port = port
  }
  if (wants('metrics-returning')) gateways.metrics = await stickyAs('metrics', { metrics: true })
  if (wants('source-ip')) gateways.sourceIp = await stickyAs('source-ip', { stickiness: { type: 'source_ip' } })
  if (wants('header')) gateways.header = await stickyAs('header', { stickiness: { type: 'header', name: SESSION_HEADER } })
  if (wants('learn-memory')) gateways.learnMemory = await stickyAs('learn-memory', { stickiness: { type: 'learn', cookieName: 'JSESSIONID' } })
  if (wants('learn-redis')) {
    if (onPath('redis-server')) {
      const [redisPort] = await freePorts(1)
      await startProcess('redis', 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', work], { cpu: pin ? 0 : null, port: redisPort })
      gateways.learnRedis = await stickyAs('learn-redis', { stickiness: { type: 'learn', cookieName: 'JSESSIONID' }, learnStore: { type: 'redis', url: `redis://127.0.0.1:${redisPort}` } })
    } else {
      notes.push('redis-server is not installed: the learn-redis row is skipped')
    }
  }
  if (options.baseline !== undefined) {
    const [port] = await freePorts(1)
    gateways.baseline = await startGateway('baseline', ['sticky', String(port), origins.join(','), options.baseline])
    gateways.baseline.port = port
  }
  if (onPath('haproxy')) {
    const conf = join(work, 'haproxy.cfg')
    writeFileSync(conf, haproxyConf(haproxyPort, backendPorts))
    gateways.haproxy = await startProcess('haproxy', 'haproxy', ['-db', '-f', conf], { cpu: pin ? 1 : null, port: haproxyPort })
  } else {
    notes.push('haproxy is not installed: its rows are skipped')
  }
  if (onPath('nginx')) {
    const conf = join(work, 'lb.conf')
    writeFileSync(conf, nginxLbConf(work, nginxPort, backendPorts))
    gateways.nginx = await startProcess('nginx-lb', 'nginx', ['-p', work, '-c', conf, '-e', join(work, 'lb-error.log')], { cpu: pin ? 1 : null, port: nginxPort })
  } else {
    notes.push('nginx is not installed: its row is skipped')
  }

  // Returning clients rotate through valid cookies for every target; values are sealed here with
  // the gateway's key, as another gateway instance sharing the key ring would have sealed them.
  const codec = new CookieCodec([Buffer.from(BENCH_KEY, 'hex')])
  const nowSeconds = Math.floor(Date.now() / 1000)
  const stickyCookies = []
  for (let i = 0; i < VALUES_PER_TARGET; i++) {
    for (const targetId of TARGET_IDS) {
      const value = codec.seal(COOKIE_PURPOSE_LB, { group: 'bench', targetId, stickyUntilSeconds: nowSeconds + 86_400, issuedAtSeconds: nowSeconds })
      stickyCookies.push(`AWSALB=${value}; AWSALBCORS=${value}`)
    }
  }
  const url = (port) => `http://127.0.0.1:${port}/`
  const scenarios = [
    { name: 'direct', description: 'direct to one target (ceiling)', url: url(backendPorts[0]), cookies: [''], process: null },
    { name: 'reference', description: 'plain @fastify/http-proxy, one target', url: url(refPort), cookies: [''], process: gateways.reference },
    // The returning clients' Cookie headers, forwarded untouched: the same requests as sticky-returning.
    { name: 'bare', description: 'node:http + undici, round-robin over the three targets, no framework (ceiling of a Node gateway)', url: url(barePort), cookies: stickyCookies, process: gateways.bare },
    { name: 'sticky-new', description: 'fastify-sticky lb_cookie, new clients', url: url(stickyPort), cookies: [''], process: gateways.sticky, expectCookie: true },
    { name: 'sticky-returning', description: 'fastify-sticky lb_cookie, returning clients', url: url(stickyPort), cookies: stickyCookies, process: gateways.sticky, expectCookie: true }
  ]
  if (gateways.baseline !== undefined) {
    const at = url(gateways.baseline.port)
    scenarios.push(
      { name: 'baseline-new', description: `the --baseline build, new clients (${options.baseline})`, url: at, cookies: [''], process: gateways.baseline, expectCookie: true },
      { name: 'baseline-returning', description: 'the --baseline build, returning clients', url: at, cookies: stickyCookies, process: gateways.baseline, expectCookie: true })
  }
  if (gateways.haproxy !== undefined) {
    scenarios.push(
      { name: 'haproxy-new', description: 'HAProxy roundrobin + cookie insert, new clients', url: url(haproxyPort), cookies: [''], process: gateways.haproxy },
      { name: 'haproxy-returning', description: 'HAProxy roundrobin + cookie insert, returning', url: url(haproxyPort), cookies: TARGET_IDS.map((id) => `SERVERID=${id}`), process: gateways.haproxy })
  }
  if (gateways.dropIn !== undefined) {
    scenarios.push({ name: 'drop-in', description: 'fastify-sticky/http-proxy with the reference\'s options (one target, no stickiness)', url: url(gateways.dropIn.port), cookies: [''], process: gateways.dropIn })
  }
  if (gateways.metrics !== undefined) {
    scenarios.push({ name: 'metrics-returning', description: 'fastify-sticky lb_cookie, returning clients, metrics on (prom-client)', url: url(gateways.metrics.port), cookies: stickyCookies, process: gateways.metrics, expectCookie: true })
  }
  // Returning clients of the cookie-less types: 30 session ids, as many as the cookie values above.
  const sessionIds = stickyCookies.map((_, i) => `s${String(i).padStart(2, '0')}-${'7f'.repeat(15)}`)
  if (gateways.sourceIp !== undefined) {
    scenarios.push({ name: 'source-ip', description: 'fastify-sticky source_ip (every client 127.0.0.1)', url: url(gateways.sourceIp.port), cookies: [''], process: gateways.sourceIp, expectSticky: true })
  }
  if (gateways.header !== undefined) {
    scenarios.push({ name: 'header', description: `fastify-sticky header (${SESSION_HEADER}), returning clients`, url: url(gateways.header.port), header: SESSION_HEADER, cookies: sessionIds, process: gateways.header, expectSticky: true })
  }
  const learnCookies = sessionIds.map((id) => `JSESSIONID=${id}`)
  if (gateways.learnMemory !== undefined) {
    scenarios.push({ name: 'learn-memory', description: 'fastify-sticky learn (JSESSIONID), memory store, returning clients', url: url(gateways.learnMemory.port), cookies: learnCookies, process: gateways.learnMemory, expectSticky: true })
  }
  if (gateways.learnRedis !== undefined) {
    scenarios.push({ name: 'learn-redis', description: 'fastify-sticky learn (JSESSIONID), Redis store, returning clients', url: url(gateways.learnRedis.port), cookies: learnCookies, process: gateways.learnRedis, expectSticky: true })
  }
  if (gateways.nginx !== undefined) {
    scenarios.push({ name: 'nginx-hash', description: 'nginx hash $cookie_AWSALB consistent, returning', url: url(nginxPort), cookies: stickyCookies, process: gateways.nginx })
  }
  if (options.scenarios !== undefined) {
    const wanted = new Set([...options.scenarios, 'reference', ...(options.baseline === undefined ? [] : ['baseline-new', 'baseline-returning'])])
    scenarios.splice(0, scenarios.length, ...scenarios.filter((s) => wanted.has(s.name)))
  }
  for (const scenario of scenarios) await checkScenario(scenario)

  log(`throughput: ${scenarios.length} scenarios × ${options.rounds} rounds × ${options.duration} s, ${options.connections} connections, ${generator}, backends ${backendKind}${pin ? ', gateway on CPU 1, load and backends on CPU 0' : ''}`)
  for (const scenario of scenarios) {
    if (scenario.process !== null && options.warmup > 0) await load(generator, scenario, options.warmup, work)
    scenario.rounds = []
  }
  for (let round = 1; round <= options.rounds; round++) {
    for (const scenario of scenarios) {
      const before = scenario.process === null ? 0 : cpuTicks(scenario.process.pid)
      const result = await load(generator, scenario, options.duration, work)
      const cpuMs = scenario.process === null ? null : (cpuTicks(scenario.process.pid) - before) * (1000 / clockTicks())
      const row = { ...result, cpuUsPerRequest: cpuMs === null || result.requests === 0 ? null : (cpuMs * 1000) / result.requests }
      scenario.rounds.push(row)
      log(`  round ${round} ${scenario.name.padEnd(18)} ${fmt(row.rps, 0).padStart(8)} req/s  p99 ${fmt(row.p99Ms, 2)} ms${row.errors > 0 ? `  ${row.errors} errors` : ''}`)
    }
  }

  const reference = scenarios.find((s) => s.name === 'reference')
  const summary = (scenario) => ({
    rps: median(scenario.rounds.map((r) => r.rps)),
    p50Ms: median(scenario.rounds.map((r) => r.p50Ms)),
    p99Ms: median(scenario.rounds.map((r) => r.p99Ms)),
    cpuUsPerRequest: scenario.process === null ? null : median(scenario.rounds.map((r) => r.cpuUsPerRequest)),
    errors: scenario.rounds.reduce((sum, r) => sum + r.errors, 0)
  })
  const refMedian = summary(reference)
  const bare = scenarios.find((s) => s.name === 'bare')
  // Without the bare row (--scenarios left it out) there is no ceiling to divide by.
  const bareMedian = bare === undefined ? null : summary(bare)
  const rows = scenarios.map((scenario) => {
    const m = summary(scenario)
    return {
      name: scenario.name,
      description: scenario.description,
      median: m,
      ratio: {
        rps: m.rps / refMedian.rps,
        p99: m.p99Ms / refMedian.p99Ms,
        rpsToBare: bareMedian === null ? null : m.rps / bareMedian.rps,
        // Steadier than req/s when other processes share the gateway's CPU.
        cpuPerRequestToBare: bareMedian === null || m.cpuUsPerRequest === null ? null : m.cpuUsPerRequest / bareMedian.cpuUsPerRequest
      },
      rounds: scenario.rounds
    }
  })
  printTable(rows)
  printCeiling(rows)
  if (options.profile) notes.push(`CPU profiles (written when the gateways stop; node bench/profile-summary.js reads them): ${Object.values(profiles).join(' ')}`)
  return { generator, backends: backendKind, pinned: pin, scenarios: rows, ...(options.profile ? { profiles } : {}) }
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/**
 * The WebSocket row: the same echo over `--ws-connections` sockets direct to the targets (socket
 * i to target i mod 3), through fastify-sticky (stickyProxy, lb_cookie; socket i opens with its
 * own cookie pinning it to target i mod 3, and the load checks that it lands there) and through
 * @fastify/http-proxy with `websocket: true` (one target: it has no balancing). Targets are three
 * `ws` servers in one process, pinned with the load to CPU 0; each gateway has CPU 1 to itself.
 */
async function websocket (notes) {
  const pin = canPin()
  const unpinned = 'taskset or a second CPU is missing: processes are not pinned'
  if (!pin && !notes.includes(unpinned)) notes.push(unpinned)
  const work = mkdtempSync(join(tmpdir(), 'fastify-sticky-bench-ws-'))
  cleanups.push(async () => rmSync(work, { recursive: true, force: true }))
  const targetPorts = await freePorts(TARGET_IDS.length)
  await startProcess('ws-targets', process.execPath, [join(here, 'ws-target.js'), ...targetPorts.map(String)], { cpu: pin ? 0 : null, readyLine: 'ready' })
  const origins = targetPorts.map((port) => `http://127.0.0.1:${port}`)
  const [stickyPort, refPort, barePort] = await freePorts(3)
  const profiles = {}
  const sticky = await startNodeGateway('ws-sticky', ['sticky', String(stickyPort), origins.join(',')], pin, profiles)
  const reference = await startNodeGateway('ws-reference', ['reference-ws', String(refPort), origins[0]], pin, profiles)
  const bare = await startNodeGateway('ws-bare', ['bare-relay', String(barePort), origins.join(',')], pin, profiles)

  const codec = new CookieCodec([Buffer.from(BENCH_KEY, 'hex')])
  const nowSeconds = Math.floor(Date.now() / 1000)
  const pinnedTo = Array.from({ length: options.wsConnections }, (_, i) => TARGET_IDS[i % TARGET_IDS.length])
  const url = (port) => `ws://127.0.0.1:${port}/`
  const scenarios = [
    { name: 'ws-direct', description: 'direct to the three targets (ceiling)', process: null, sockets: pinnedTo.map((id, i) => ({ url: url(targetPorts[i % targetPorts.length]), cookie: '', expect: id })) },
    { name: 'ws-reference', description: '@fastify/http-proxy, websocket: true, one target', process: reference, sockets: pinnedTo.map(() => ({ url: url(refPort), cookie: '', expect: null })) },
    // Connections reach it in no set order: which target each socket gets is not checked.
    { name: 'ws-bare', description: 'node:net, each connection piped to the next target, no HTTP (ceiling of a Node relay)', process: bare, sockets: pinnedTo.map(() => ({ url: url(barePort), cookie: '', expect: null })) },
    {
      name: 'ws-sticky',
      description: 'fastify-sticky stickyProxy, lb_cookie, returning clients (each socket\'s cookie pins it)',
      process: sticky,
      sockets: pinnedTo.map((id) => {
        const value = codec.seal(COOKIE_PURPOSE_LB, { group: 'bench', targetId: id, stickyUntilSeconds: nowSeconds + 86_400, issuedAtSeconds: nowSeconds })
        return { url: url(stickyPort), cookie: `AWSALB=${value}; AWSALBCORS=${value}`, expect: id, gatewayCookie: true }
      })
    }
  ]

  log(`\nwebsocket: ${scenarios.length} scenarios × ${options.rounds} rounds × ${options.duration} s, echo of ${options.wsBytes}-byte messages over ${options.wsConnections} sockets, closed loop${pin ? ', gateway on CPU 1, load and targets on CPU 0' : ''}`)
  for (const scenario of scenarios) {
    // The warm-up's handshakes are checked like a round's: a socket on the wrong target fails the run.
    if (options.warmup > 0) {
      const warm = await wsLoad(scenario, options.warmup, work)
      if (warm.errors > 0) throw new Error(`${scenario.name}: ${warm.errors} errors in the warm-up: ${warm.failures.join('; ')}`)
    }
    scenario.rounds = []
  }
  for (let round = 1; round <= options.rounds; round++) {
    for (const scenario of scenarios) {
      const before = scenario.process === null ? 0 : cpuTicks(scenario.process.pid)
      const result = await wsLoad(scenario, options.duration, work)
      const cpuMs = scenario.process === null ? null : (cpuTicks(scenario.process.pid) - before) * (1000 / clockTicks())
      const row = { ...result, mpsPerSocket: result.sockets === 0 ? 0 : result.mps / result.sockets, cpuUsPerMessage: cpuMs === null || result.messages === 0 ? null : (cpuMs * 1000) / result.messages }
      scenario.rounds.push(row)
      log(`  round ${round} ${scenario.name.padEnd(18)} ${fmt(row.mps, 0).padStart(8)} msg/s  p99 ${fmt(row.p99Ms, 2)} ms${row.errors > 0 ? `  ${row.errors} errors: ${row.failures.join('; ')}` : ''}`)
    }
  }

  const summary = (scenario) => ({
    mps: median(scenario.rounds.map((r) => r.mps)),
    mpsPerSocket: median(scenario.rounds.map((r) => r.mpsPerSocket)),
    p50Ms: median(scenario.rounds.map((r) => r.p50Ms)),
    p99Ms: median(scenario.rounds.map((r) => r.p99Ms)),
    cpuUsPerMessage: scenario.process === null ? null : median(scenario.rounds.map((r) => r.cpuUsPerMessage)),
    errors: scenario.rounds.reduce((sum, r) => sum + r.errors, 0)
  })
  const direct = summary(scenarios.find((s) => s.name === 'ws-direct'))
  const ref = summary(scenarios.find((s) => s.name === 'ws-reference'))
  const bareRelay = summary(scenarios.find((s) => s.name === 'ws-bare'))
  const rows = scenarios.map((scenario) => {
    const m = summary(scenario)
    return {
      name: scenario.name,
      description: scenario.description,
      median: m,
      ratio: {
        mpsPerSocketToDirect: m.mpsPerSocket / direct.mpsPerSocket,
        mps: m.mps / ref.mps,
        p99: m.p99Ms / ref.p99Ms,
        // Steadier than msg/s when other processes share the gateway's CPU.
        cpuPerMessageToBare: m.cpuUsPerMessage === null ? null : m.cpuUsPerMessage / bareRelay.cpuUsPerMessage
      },
      rounds: scenario.rounds
    }
  })
  printWebSocketTable(rows)
  if (options.profile) notes.push(`CPU profiles of the WebSocket gateways: ${Object.values(profiles).join(' ')}`)
  return { sockets: options.wsConnections, messageBytes: options.wsBytes, pinned: pin, scenarios: rows, ...(options.profile ? { profiles } : {}) }
}

/** Runs bench/ws-load.js, pinned with the targets, against one WebSocket scenario for `seconds`. */
async function wsLoad (scenario, seconds, work) {
  // In a file: a thousand sockets' cookies would pass the length of one argument.
  const file = join(work, `${scenario.name}.json`)
  writeFileSync(file, JSON.stringify({ sockets: scenario.sockets, seconds, bytes: options.wsBytes }))
  const args = [join(here, 'ws-load.js'), file]
  const out = canPin() ? await run('taskset', ['-c', '0', process.execPath, ...args]) : await run(process.execPath, args)
  return JSON.parse(out.trim().split('\n').pop())
}

/**
 * A few requests first: each scenario must answer 200 (and sticky ones set AWSALB), or the
 * figures mean nothing. Cookie-less sticky scenarios send every client's value twice, which is
 * also the learn clients' login (the first request teaches the store), and must reach the same
 * target both times.
 */
async function checkScenario (scenario) {
  const header = scenario.header ?? 'cookie'
  const values = scenario.expectSticky === true ? scenario.cookies : scenario.cookies.slice(0, 3)
  for (const value of values) {
    const seen = []
    for (let i = 0; i < (scenario.expectSticky === true ? 2 : 1); i++) {
      const response = await fetch(scenario.url, { headers: value === '' ? {} : { [header]: value } })
      const text = await response.text()
      if (response.status !== 200 || text.length < 50) throw new Error(`${scenario.name}: expected 200 with the target's body, got ${response.status}`)
      if (scenario.expectCookie === true && !(response.headers.getSetCookie()[0] ?? '').startsWith('AWSALB=')) {
        throw new Error(`${scenario.name}: no AWSALB cookie in the response`)
      }
      seen.push(response.headers.get('x-target'))
    }
    if (scenario.expectSticky === true && (seen[0] === null || seen[0] !== seen[1])) {
      throw new Error(`${scenario.name}: a returning client went to ${seen.join(' then ')}, not to one target`)
    }
  }
}

/**
 * Starts `node bench/gateway.js …args` pinned like every gateway; with --profile under
 * node --cpu-prof, its profile named after the gateway (recorded in `profiles`), so that a
 * profile says whose it is.
 */
function startNodeGateway (name, args, pin, profiles) {
  const nodeArgs = []
  if (options.profile) {
    const dir = join(here, 'results', 'profiles')
    const file = `${name}-${RUN_STAMP}.cpuprofile`
    profiles[name] = join(dir, file)
    nodeArgs.push('--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-name', file)
  }
  return startProcess(name, process.execPath, [...nodeArgs, join(here, 'gateway.js'), ...args], { cpu: pin ? 1 : null, readyLine: 'ready' })
}

/** Runs the load generator against one scenario for `seconds`. */
async function load (generator, scenario, seconds, work) {
  const pinned = canPin() ? ['taskset', '-c', '0'] : []
  if (generator === 'wrk') {
    const script = join(work, `${scenario.name}.lua`)
    if (!existsSync(script)) writeFileSync(script, wrkScript(scenario.cookies, scenario.header))
    const args = ['-t1', `-c${options.connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, scenario.url]
    const out = await run(pinned.length > 0 ? pinned[0] : 'wrk', pinned.length > 0 ? [...pinned.slice(1), 'wrk', ...args] : args)
    const line = out.split('\n').find((l) => l.startsWith('WRK_JSON '))
    if (line === undefined) throw new Error(`wrk printed no result for ${scenario.name}:\n${out}`)
    const r = JSON.parse(line.slice('WRK_JSON '.length))
    return {
      requests: r.requests,
      rps: r.requests / (r.durationUs / 1e6),
      p50Ms: r.p50Us / 1000,
      p99Ms: r.p99Us / 1000,
      errors: r.connect + r.read + r.write + r.status + r.timeout
    }
  }
  const args = [join(here, 'autocannon-load.js'), scenario.url, String(options.connections), String(seconds), JSON.stringify(scenario.cookies), scenario.header ?? 'cookie']
  const out = await run(pinned.length > 0 ? pinned[0] : process.execPath, pinned.length > 0 ? [...pinned.slice(1), process.execPath, ...args] : args)
  return JSON.parse(out.trim().split('\n').pop())
}

function wrkScript (cookies, header = 'Cookie') {
  return `-- generated by bench/run.js: rotate through these ${header} headers, report JSON at the end
local cookies = { ${cookies.map((c) => JSON.stringify(c)).join(', ')} }
local requests = {}
local n = 0
init = function (args)
  for i, cookie in ipairs(cookies) do
    local headers = {}
    if cookie ~= "" then headers[${JSON.stringify(header)}] = cookie end
    requests[i] = wrk.format("GET", "/", headers)
  end
end
request = function ()
  n = n % #requests + 1
  return requests[n]
end
done = function (summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"durationUs":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50Us":%d,"p99Us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
`
}

/** What both nginx configurations share: one worker in the foreground, every file in `work/<name>-…`, no access log. */
function nginxPreamble (work, name, comment) {
  const at = (what) => join(work, `${name}-${what}`)
  return `# generated by bench/run.js: ${comment}
worker_processes 1;
daemon off;
pid ${at('pid')};
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${at('body')}; proxy_temp_path ${at('proxy')}; fastcgi_temp_path ${at('fcgi')}; uwsgi_temp_path ${at('uwsgi')}; scgi_temp_path ${at('scgi')};
  keepalive_requests 100000000;`
}

function nginxBackendsConf (work, ports) {
  return `${nginxPreamble(work, 'backends', 'three targets answering a ~100-byte body')}
  keepalive_timeout 300s;
  default_type text/plain;
${ports.map((port, i) => `  server { listen 127.0.0.1:${port}; location / { add_header X-Target ${TARGET_IDS[i]}; return 200 '${BACKEND_BODY}'; } }`).join('\n')}
}
`
}

function nginxLbConf (work, port, backendPorts) {
  return `${nginxPreamble(work, 'lb', "nginx's cookie hash, the nearest it has to sticky sessions")}
  upstream targets {
    hash $cookie_AWSALB consistent;
${backendPorts.map((p) => `    server 127.0.0.1:${p};`).join('\n')}
    keepalive 128;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://targets;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
`
}

function haproxyConf (port, backendPorts) {
  return `# generated by bench/run.js: HAProxy's inserted-cookie stickiness
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 10s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  option forwardfor
  http-reuse always
frontend gateway
  bind 127.0.0.1:${port}
  default_backend targets
backend targets
  balance roundrobin
  cookie SERVERID insert indirect nocache
${backendPorts.map((p, i) => `  server ${TARGET_IDS[i]} 127.0.0.1:${p} cookie ${TARGET_IDS[i]}`).join('\n')}
`
}

// ---------------------------------------------------------------------------------------------
// Report

function printTable (rows) {
  const header = ['scenario', 'req/s', '× ref', '× bare', 'p50 ms', 'p99 ms', 'p99 × ref', 'errors', 'CPU µs/req']
  const lines = rows.map((r) => [
    r.name, fmt(r.median.rps, 0), fmt(r.ratio.rps, 2), fmt(r.ratio.rpsToBare, 2), fmt(r.median.p50Ms, 2), fmt(r.median.p99Ms, 2),
    fmt(r.ratio.p99, 2), String(r.median.errors), r.median.cpuUsPerRequest === null ? '–' : fmt(r.median.cpuUsPerRequest, 1)
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')
  log('\nmedians of ' + options.rounds + ' rounds; × ref = ratio to plain @fastify/http-proxy, × bare = ratio to the bare node:http + undici proxy, in this run')
  log(line(header))
  for (const l of lines) log(line(l))
  for (const r of rows) log(`  ${r.name}: ${r.description}`)
}

/** The plugin's rows against both yardsticks, in one line each. */
function printCeiling (rows) {
  const ours = new Set(['source-ip', 'header', 'learn-memory', 'learn-redis'])
  const lines = rows.filter((r) => r.name.startsWith('sticky-') || r.name.startsWith('baseline-') || ours.has(r.name)).map((r) =>
    `  ${r.name.padEnd(18)} ${fmt(r.ratio.rps, 2)}× reference, ${r.ratio.rpsToBare === null ? 'no bare row in this run' : `${fmt(r.ratio.rpsToBare, 2)}× bare (CPU per request ${fmt(r.ratio.cpuPerRequestToBare, 2)}× bare's)`}`)
  if (lines.length === 0) return
  log('\nreq/s of fastify-sticky against plain @fastify/http-proxy and against the bare node:http + undici ceiling:')
  for (const line of lines) log(line)
}

function printWebSocketTable (rows) {
  const header = ['scenario', 'msg/s', 'per socket', '× direct', '× ref', 'p50 ms', 'p99 ms', 'p99 × ref', 'errors', 'CPU µs/msg']
  const lines = rows.map((r) => [
    r.name, fmt(r.median.mps, 0), fmt(r.median.mpsPerSocket, 0), fmt(r.ratio.mpsPerSocketToDirect, 2), fmt(r.ratio.mps, 2), fmt(r.median.p50Ms, 2),
    fmt(r.median.p99Ms, 2), fmt(r.ratio.p99, 2), String(r.median.errors), r.median.cpuUsPerMessage === null ? '–' : fmt(r.median.cpuUsPerMessage, 1)
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')
  log(`\nmedians of ${options.rounds} rounds; × direct = messages per second per socket against the echo direct to the targets, × ref = against @fastify/http-proxy, in this run`)
  log(line(header))
  for (const l of lines) log(line(l))
  for (const r of rows) log(`  ${r.name}: ${r.description}`)
  const sticky = rows.find((r) => r.name === 'ws-sticky')
  log(`fastify-sticky's tunnel: ${fmt(sticky.ratio.mpsPerSocketToDirect, 2)}× direct per socket, ${fmt(sticky.ratio.mps, 2)}× @fastify/http-proxy, CPU per message ${fmt(sticky.ratio.cpuPerMessageToBare, 2)}× the bare relay's`)
}

function printAffinity (a) {
  log(`  returning client: ${fmt(a.returningNs, 0)} ns per request`)
  log(`  new client:       ${fmt(a.newNs, 0)} ns per request`)
  log(`  header:           ${fmt(a.headerNs, 0)} ns per request (returning key)`)
  log(`  source_ip:        ${fmt(a.sourceIpNs, 0)} ns per request (returning address)`)
  log(`  learn (memory):   ${fmt(a.learnNs, 0)} ns per request (returning session)`)
}

function judgeTargets (report) {
  const targets = []
  const rows = report.throughput?.scenarios
  const row = (name) => rows?.find((r) => r.name === name)
  // --scenarios may have left either sticky row out: judge the ones that ran.
  if (row('sticky-returning') !== undefined) {
    targets.push({ target: `returning clients ≥ ${TARGETS.returningRatio}× reference req/s`, value: row('sticky-returning').ratio.rps, met: row('sticky-returning').ratio.rps >= TARGETS.returningRatio })
  }
  if (row('sticky-new') !== undefined) {
    targets.push({ target: `new clients ≥ ${TARGETS.newRatio}× reference req/s`, value: row('sticky-new').ratio.rps, met: row('sticky-new').ratio.rps >= TARGETS.newRatio })
  }
  for (const name of ['sticky-returning', 'sticky-new']) {
    if (row(name) !== undefined) targets.push({ target: `${name} p99 ≤ ${TARGETS.p99Ratio}× reference p99`, value: row(name).ratio.p99, met: row(name).ratio.p99 <= TARGETS.p99Ratio })
  }
  if (report.affinity !== undefined) {
    targets.push({ target: `affinity path ≤ ${TARGETS.returningNs} ns per returning request`, value: report.affinity.returningNs, met: report.affinity.returningNs <= TARGETS.returningNs })
    targets.push({ target: `affinity path ≤ ${TARGETS.newNs} ns per new request`, value: report.affinity.newNs, met: report.affinity.newNs <= TARGETS.newNs })
  }
  if (row('learn-redis') !== undefined && row('sticky-returning') !== undefined) {
    const ratio = row('learn-redis').median.rps / row('sticky-returning').median.rps
    targets.push({ target: `learn-redis ≥ ${TARGETS.learnRedisRatio}× sticky-returning req/s`, value: ratio, met: ratio >= TARGETS.learnRedisRatio })
  }
  if (row('metrics-returning') !== undefined && row('sticky-returning') !== undefined) {
    const ratio = row('metrics-returning').median.rps / row('sticky-returning').median.rps
    targets.push({ target: `metrics on ≥ ${TARGETS.metricsRatio}× metrics off req/s (returning clients)`, value: ratio, met: ratio >= TARGETS.metricsRatio })
    const cpu = row('metrics-returning').median.cpuUsPerRequest / row('sticky-returning').median.cpuUsPerRequest
    targets.push({ target: `metrics on ≤ ${fmt(1 / TARGETS.metricsRatio, 2)}× metrics off gateway CPU per request (returning clients)`, value: cpu, met: cpu <= 1 / TARGETS.metricsRatio })
  }
  if (report.affinity !== undefined) {
    for (const [type, ns] of [['header', report.affinity.headerNs], ['source_ip', report.affinity.sourceIpNs]]) {
      const added = ns - report.affinity.newNs
      targets.push({ target: `${type} hashing adds ≤ ${TARGETS.hashingAddsNs} ns to a new client's affinity path (ns added)`, value: added, met: added <= TARGETS.hashingAddsNs })
    }
  }
  const ws = (name) => report.websocket?.scenarios.find((r) => r.name === name)
  if (ws('ws-sticky') !== undefined) {
    const { ratio } = ws('ws-sticky')
    targets.push({ target: `WebSocket echo through the gateway ≥ ${TARGETS.wsDirectRatio}× direct msg/s per socket`, value: ratio.mpsPerSocketToDirect, met: ratio.mpsPerSocketToDirect >= TARGETS.wsDirectRatio })
    targets.push({ target: `WebSocket echo through the gateway ≥ ${TARGETS.wsReferenceRatio}× @fastify/http-proxy msg/s`, value: ratio.mps, met: ratio.mps >= TARGETS.wsReferenceRatio })
    targets.push({ target: `WebSocket echo p99 ≤ ${TARGETS.wsP99Ratio}× @fastify/http-proxy p99`, value: ratio.p99, met: ratio.p99 <= TARGETS.wsP99Ratio })
  }
  if (report.memory !== undefined) {
    targets.push({ target: `RSS growth ≤ ${TARGETS.rssGrowthMiB} MiB over ${report.memory.clients.toLocaleString('en')} clients`, value: report.memory.growth.rssMiB, met: report.memory.growth.rssMiB <= TARGETS.rssGrowthMiB })
  }
  return targets
}

function printTargets (targets) {
  if (targets.length === 0) return
  log(`\ntargets${options.smoke ? ' (smoke run: figures are not meaningful)' : ''}:`)
  for (const t of targets) log(`  ${t.met ? 'met   ' : 'missed'}  ${t.target}: ${fmt(t.value, 2)}`)
}

function machine () {
  const list = cpus()
  return {
    cpu: list[0]?.model ?? 'unknown',
    cores: list.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    kernel: release()
  }
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Starts a long-running process for this run, ready once `readyLine` is printed or `port` accepts connections; killed when the run ends. */
async function startProcess (name, command, args, { cpu, readyLine, port }) {
  const argv = cpu === null ? [command, ...args] : ['taskset', '-c', String(cpu), command, ...args]
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (chunk) => { output += chunk })
  child.stderr.on('data', (chunk) => { output += chunk })
  cleanups.push(() => stopProcess(child))
  const exited = new Promise((resolve, reject) => child.once('exit', (code) => reject(new Error(`${name} exited with ${code}:\n${output}`))))
  const ready = readyLine !== undefined
    ? new Promise((resolve) => { const onData = () => { if (output.includes(readyLine)) { child.stdout.off('data', onData); resolve() } }; child.stdout.on('data', onData) })
    : waitForPort(port)
  let timer
  const timeout = new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`${name} did not start within 10 s:\n${output}`)), 10_000) })
  try {
    await Promise.race([ready, exited, timeout])
  } finally {
    clearTimeout(timer)
    exited.catch(() => {})
  }
  return child
}

function stopProcess (child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    child.once('exit', () => { clearTimeout(timer); resolve() })
    child.kill('SIGTERM')
  })
}

async function cleanup () {
  while (cleanups.length > 0) await cleanups.pop()()
}

function run (command, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (chunk) => { out += chunk })
    child.stderr.on('data', (chunk) => { err += chunk })
    child.once('error', reject)
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} ${args.join(' ')} exited with ${code}:\n${out}${err}`))))
  })
}

/** CPU time (user + system, in clock ticks) of a process and its children (nginx's workers). */
function cpuTicks (pid) {
  let ticks = 0
  const pids = [pid]
  try {
    for (const child of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)) if (child !== '') pids.push(Number(child))
  } catch {}
  for (const p of pids) {
    try {
      // Fields after the command name, which may contain spaces: utime and stime are 14 and 15.
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {}
  }
  return ticks
}

function clockTicks () {
  clockTicks.perSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  return clockTicks.perSecond
}

function canPin () {
  return process.platform === 'linux' && cpus().length >= 2 && onPath('taskset')
}

function onPath (command) {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && existsSync(join(dir, command)))
}

async function freePorts (count) {
  const servers = []
  for (let i = 0; i < count; i++) {
    const server = createServer()
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
    servers.push(server)
  }
  const ports = servers.map((s) => s.address().port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

async function waitForPort (port) {
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    const open = await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1')
      socket.once('connect', () => { socket.destroy(); resolve(true) })
      socket.once('error', () => resolve(false))
    })
    if (open) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after 10 s`)
}

// ---------------------------------------------------------------------------------------------
// Helpers

function median (values) {
  const sorted = values.filter((v) => v !== null && Number.isFinite(v)).sort((a, b) => a - b)
  if (sorted.length === 0) return null
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

function fmt (value, digits) {
  return value === null || value === undefined ? '–' : value.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

function log (line) {
  process.stdout.write(line + '\n')
}

function parseArgs (argv) {
  const o = { rounds: 3, duration: 5, warmup: 2, connections: 50, wsConnections: 50, wsBytes: 100, clients: 1_000_000, only: ['throughput', 'websocket', 'affinity', 'memory'], json: join(here, 'results', 'latest.json'), profile: false, smoke: false, generator: undefined }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const value = () => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${arg} needs a value`)
      return v
    }
    switch (arg) {
      case '--rounds': o.rounds = positive(arg, value()); break
      case '--duration': o.duration = positive(arg, value()); break
      case '--warmup': o.warmup = Number(value()); break
      case '--connections': o.connections = positive(arg, value()); break
      case '--clients': o.clients = positive(arg, value()); break
      case '--ws-connections': o.wsConnections = positive(arg, value()); break
      case '--ws-bytes': o.wsBytes = positive(arg, value()); break
      case '--only': o.only = value().split(','); break
      case '--scenarios': o.scenarios = value().split(','); break
      case '--json': o.json = value(); break
      case '--baseline': o.baseline = value(); break
      case '--generator': o.generator = value(); break
      case '--profile': o.profile = true; break
      case '--smoke': o.smoke = true; break
      default: throw new Error(`unknown option ${arg} (see the top of bench/run.js)`)
    }
  }
  if (o.smoke) {
    // Proves every part still runs, in seconds; its figures mean nothing.
    if (!argv.includes('--rounds')) o.rounds = 1
    if (!argv.includes('--duration')) o.duration = 1
    if (!argv.includes('--warmup')) o.warmup = 0
    if (!argv.includes('--clients')) o.clients = 10_000
  }
  if (o.generator !== undefined && o.generator !== 'wrk' && o.generator !== 'autocannon') throw new Error('--generator must be wrk or autocannon')
  return o
}

function positive (name, text) {
  const n = Number(text)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, received ${text}`)
  return n
}

const options = parseArgs(process.argv.slice(2))
const cleanups = []
process.once('SIGINT', () => { cleanup().finally(() => process.exit(130)) })

try {
  await main()
} finally {
  await cleanup()
}
