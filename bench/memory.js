/**
 * Memory check for fastify-sticky: pushes a million distinct clients through a cookie-sticky
 * `stickyProxy` route over real HTTP and reports how much the gateway process's RSS and heap grew
 * between the end of a warm-up and the end of the run, both measured after a full GC. In cookie
 * mode the plugin keeps no per-client state, so the RSS growth must stay within 64 MiB.
 *
 *   npm run build
 *   node bench/memory.js [--clients 1000000] [--warmup 20000] [--deadline 600] [--json result.json]
 *
 * Three processes, all on 127.0.0.1 only: this driver (makes the clients and reads the numbers), a
 * backend (one node:http server on three ports, the three targets) and the gateway under test
 * (Fastify with fastify-sticky, run with --expose-gc). The driver forks both children from this
 * file (`--role backend`, `--role gateway`) and talks to them over IPC. With taskset and two or
 * more CPUs, the gateway gets CPU 1 to itself and the driver and backend share CPU 0.
 *
 * Every client has its own address in X-Forwarded-For; 3 in 4 carry their own AWSALB cookie,
 * sealed here with the gateway's key and naming target a, b or c, and 1 in 4 come without one.
 * Each response is checked: status 200, a fresh AWSALB cookie, and a cookie'd client served by
 * the target its cookie names. The process exits with 1 when any response fails those checks or
 * the RSS growth exceeds the target.
 */
import { execFileSync, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once, setMaxListeners } from 'node:events'
import { writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { availableParallelism } from 'node:os'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import { Pool } from 'undici'
import fastifySticky, { COOKIE_PURPOSE_LB, CookieCodec, stickyProxy } from '../dist/index.js'

/** Every socket of the check is on the loopback: no traffic leaves the machine. */
const HOST = '127.0.0.1'
const GROUP = 'shop'
/** The group's targets, in the order of the backend's ports. */
const TARGET_IDS = ['a', 'b', 'c']
/** The gateway reads the key ring from here (hex), so it does not show in the process list. */
const KEY_ENV = 'FASTIFY_STICKY_MEMORY_CHECK_KEY'
/** Connections from the driver to the gateway, and requests in flight over them. */
const CONNECTIONS = 64
const IN_FLIGHT = 128
/** Cookies are sealed and requests sent this many clients at a time. */
const BATCH = 10_000
/** A progress line (with a measurement) every this many clients. */
const SAMPLE_EVERY = 200_000
const TARGET_RSS_GROWTH_MIB = 64
const STICKY_SECONDS = 86_400
/** X-Forwarded-For addresses are 10.x.y.z from the client's index: this many are distinct. */
const MAX_CLIENTS = 2 ** 24
const CHILD_EXIT_GRACE_MS = 5_000
const MIB = 1024 * 1024

const BODY_HEAD = '{"ok":true,"pad":"'
/** The backend's answer to every request: 100 bytes of JSON. */
const BODY = Buffer.from(`${BODY_HEAD}${'x'.repeat(100 - BODY_HEAD.length - 2)}"}`)

const USAGE = 'usage: node bench/memory.js [--clients N] [--warmup N] [--deadline SECONDS] [--json PATH]'

/**
 * Runs the memory check: starts the backend and the gateway, sends `warmup` clients, measures,
 * sends `clients` more (a progress line every 200 000), measures again and stops both children.
 * Rejects when the deadline passes, on SIGINT/SIGTERM, or when the warm-up's responses are wrong.
 *
 * @param {object} [options]
 * @param {number} [options.clients] distinct clients after the warm-up (default 1 000 000)
 * @param {number} [options.warmup] distinct clients before the baseline (default 20 000)
 * @param {number} [options.deadlineSeconds] the whole run is aborted after this (default 600)
 * @param {(line: string) => void} [options.log] receives progress lines
 * @returns {Promise<object>} the figures; `ok` is true when every response passed and the target was met
 */
export async function runMemoryCheck ({ clients = 1_000_000, warmup = 20_000, deadlineSeconds = 600, log = () => {} } = {}) {
  if (!Number.isSafeInteger(clients) || clients < 1) throw new RangeError(`clients must be a positive integer, received ${clients}`)
  if (!Number.isSafeInteger(warmup) || warmup < 1) throw new RangeError(`warmup must be a positive integer, received ${warmup}`)
  if (warmup + clients > MAX_CLIENTS) throw new RangeError(`warmup + clients must be at most ${MAX_CLIENTS} (distinct 10.x.y.z addresses)`)
  if (!(deadlineSeconds > 0)) throw new RangeError(`deadlineSeconds must be positive, received ${deadlineSeconds}`)

  const controller = new AbortController()
  const { signal } = controller
  // Every request in flight listens to the signal, so that an abort ends it at once.
  setMaxListeners(IN_FLIGHT + 8, signal)
  const deadline = setTimeout(() => controller.abort(new Error(`deadline of ${deadlineSeconds} s passed`)), deadlineSeconds * 1000)
  const interrupt = (name) => controller.abort(new Error(`interrupted by ${name}`))
  process.once('SIGINT', interrupt)
  process.once('SIGTERM', interrupt)
  const children = []
  // Last resort if the driver dies without reaching `finally` (the children also exit when
  // their IPC channel closes).
  const killChildren = () => { for (const child of children) child.kill('SIGKILL') }
  process.once('exit', killChildren)
  let pool = null
  let pinning = null
  let stage = 'while starting'

  try {
    const key = randomBytes(32)
    const backend = forkRole('backend', [], {})
    children.push(backend)
    const { ports } = await receive(backend, 'ready', signal)
    const targets = ports.map((port) => `http://${HOST}:${port}`)
    const gateway = forkRole('gateway', ['--targets', targets.join(',')], {
      execArgv: ['--expose-gc'],
      env: { ...process.env, [KEY_ENV]: key.toString('hex') }
    })
    children.push(gateway)
    const { port } = await receive(gateway, 'ready', signal)
    pinning = pinProcesses(gateway.pid, backend.pid)
    log(`gateway pid ${gateway.pid} on http://${HOST}:${port}, targets ${targets.join(' ')}; pinning: ${pinning.description}`)

    const codec = new CookieCodec([key])
    pool = new Pool(`http://${HOST}:${port}`, { connections: CONNECTIONS })
    const send = (first, count, tally) => sendClients({ pool, codec, first, count, tally, signal })

    const warm = newTally()
    stage = 'during the warm-up'
    await send(0, warmup, warm)
    if (problemsOf(warm) > 0) {
      throw new Error(`warm-up responses are wrong (${describeProblems(warm)}); first: ${warm.firstProblem}`)
    }
    const baseline = await measure(gateway, signal)
    log(`warm-up: ${formatCount(warmup)} clients, all 200 with a fresh AWSALB cookie and cookie'd clients on their target; ${memoryLine(baseline)}`)

    const tally = newTally()
    const started = performance.now()
    let done = 0
    let nextSample = SAMPLE_EVERY
    let end = null
    while (done < clients) {
      const count = Math.min(BATCH, clients - done)
      await send(warmup + done, count, tally)
      done += count
      stage = `after ${formatCount(done)} of ${formatCount(clients)} clients`
      if (done === clients || done >= nextSample) {
        const memory = await measure(gateway, signal)
        const elapsed = (performance.now() - started) / 1000
        log(`${formatCount(done).padStart(11)} clients  ${elapsed.toFixed(1).padStart(6)} s  ${Math.round(done / elapsed).toString().padStart(6)} req/s  ${memoryLine(memory)}`)
        while (nextSample <= done) nextSample += SAMPLE_EVERY
        if (done === clients) end = memory
      }
    }
    const seconds = (performance.now() - started) / 1000

    const growth = { rssMiB: toMiB(end.rss - baseline.rss), heapUsedMiB: toMiB(end.heapUsed - baseline.heapUsed) }
    const met = growth.rssMiB <= TARGET_RSS_GROWTH_MIB
    return {
      clients,
      warmup,
      clientsWithCookie: countWithCookie(warmup, warmup + clients),
      connections: CONNECTIONS,
      inFlight: IN_FLIGHT,
      pinning: pinning.description,
      baseline: { rssMiB: toMiB(baseline.rss), heapUsedMiB: toMiB(baseline.heapUsed) },
      end: { rssMiB: toMiB(end.rss), heapUsedMiB: toMiB(end.heapUsed) },
      growth,
      seconds: round1(seconds),
      requestsPerSecond: Math.round(clients / seconds),
      errors: tally.errors,
      non200: tally.non200,
      missingCookie: tally.missingCookie,
      wrongTarget: tally.wrongTarget,
      firstProblem: tally.firstProblem,
      targetRssGrowthMiB: TARGET_RSS_GROWTH_MIB,
      met,
      ok: met && problemsOf(tally) === 0
    }
  } catch (error) {
    if (signal.aborted) throw new Error(`${signal.reason.message} ${stage}`, { cause: error })
    throw error
  } finally {
    clearTimeout(deadline)
    process.off('SIGINT', interrupt)
    process.off('SIGTERM', interrupt)
    pinning?.restore()
    await pool?.destroy()
    await Promise.all(children.map(stopChild))
    process.off('exit', killChildren)
  }
}

/** Forks this file in `role` with an IPC channel; the child's output goes to ours. */
function forkRole (role, args, { execArgv = [], env = process.env }) {
  return fork(fileURLToPath(import.meta.url), ['--role', role, ...args], { execArgv, env })
}

/**
 * Resolves with the child's next message of `type`; rejects when the child exits first or
 * `signal` aborts.
 */
function receive (child, type, signal) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      child.off('message', onMessage)
      child.off('exit', onExit)
      signal.removeEventListener('abort', onAbort)
    }
    const onMessage = (message) => {
      if (message?.type !== type) return
      cleanup()
      resolve(message)
    }
    const onExit = (code, signalName) => {
      cleanup()
      const role = child.spawnargs[child.spawnargs.indexOf('--role') + 1]
      reject(new Error(`the ${role} process exited (${signalName ?? code}) before sending '${type}'`))
    }
    const onAbort = () => {
      cleanup()
      reject(signal.reason)
    }
    if (signal.aborted) return onAbort()
    child.on('message', onMessage)
    child.on('exit', onExit)
    signal.addEventListener('abort', onAbort)
  })
}

/** Sends `message` to a child; a child that cannot receive it any more is killed. */
function tell (child, message) {
  if (!child.connected) return child.kill('SIGKILL')
  child.send(message, (error) => { if (error) child.kill('SIGKILL') })
}

/** Asks the gateway for its memory usage after a full GC. */
async function measure (gateway, signal) {
  const reply = receive(gateway, 'memory', signal)
  tell(gateway, { cmd: 'measure' })
  return (await reply).memory
}

/** Asks a child to exit, and kills it if it has not after a grace period. */
async function stopChild (child) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_EXIT_GRACE_MS)
  tell(child, { cmd: 'exit' })
  await exited
  clearTimeout(timer)
}

/**
 * With taskset and two or more CPUs, pins every thread of the gateway to CPU 1 and those of the
 * driver and the backend to CPU 0. Returns what was done, and `restore()`, which gives the driver
 * back its CPUs (it may be a longer-lived script that imported runMemoryCheck). Failure is not an
 * error, only less isolation.
 */
function pinProcesses (gatewayPid, backendPid) {
  const unchanged = (description) => ({ description, restore () {} })
  if (availableParallelism() < 2) return unchanged('none (one CPU)')
  const taskset = (...args) => execFileSync('taskset', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
  const pin = (cpus, pid) => {
    try {
      taskset('-a', '-cp', cpus, String(pid))
      return true
    } catch {
      return false
    }
  }
  let driverCpus
  try {
    // "pid 123's current affinity list: 0-3"
    driverCpus = taskset('-cp', String(process.pid)).trim().split(': ').at(-1)
  } catch {
    return unchanged('none (taskset missing or refused)')
  }
  if (!pin('1', gatewayPid)) return unchanged('none (taskset refused)')
  const restore = () => { pin(driverCpus, process.pid) }
  const othersPinned = pin('0', process.pid) && pin('0', backendPid)
  return { description: othersPinned ? 'gateway on CPU 1, driver and backend on CPU 0' : 'gateway on CPU 1 only', restore }
}

/** What went wrong in a phase: counters and the first problem's description. */
function newTally () {
  return { errors: 0, non200: 0, missingCookie: 0, wrongTarget: 0, firstProblem: null }
}

/** Counts a problem of `kind` and keeps the first description. */
function note (tally, kind, description) {
  tally[kind]++
  tally.firstProblem ??= description
}

function problemsOf (tally) {
  return tally.errors + tally.non200 + tally.missingCookie + tally.wrongTarget
}

function describeProblems (tally) {
  return `errors ${tally.errors}, non-200 ${tally.non200}, no AWSALB cookie ${tally.missingCookie}, wrong target ${tally.wrongTarget}`
}

/**
 * The request of client `index`: its own address in X-Forwarded-For and, for 3 clients in 4, its
 * own AWSALB cookie (a fresh nonce makes every value distinct) naming target a, b or c.
 */
function clientRequest (codec, index, nowSeconds) {
  const headers = { 'x-forwarded-for': `10.${(index >>> 16) & 255}.${(index >>> 8) & 255}.${index & 255}` }
  let target = -1
  if (hasCookie(index)) {
    // Not index % 3: that is also what round robin gives clients arriving in index order, so
    // reassigned clients would land on "their" target and a broken cookie would go unnoticed.
    target = Math.floor(index / 4) % TARGET_IDS.length
    const value = codec.seal(COOKIE_PURPOSE_LB, {
      group: GROUP,
      targetId: TARGET_IDS[target],
      stickyUntilSeconds: nowSeconds + STICKY_SECONDS,
      issuedAtSeconds: nowSeconds
    })
    headers.cookie = `AWSALB=${value}`
  }
  return { path: `/item/${index}`, headers, target }
}

/** Clients 0, 1, 2 of every 4 carry a cookie; the fourth is new. */
function hasCookie (index) {
  return index % 4 !== 3
}

/** How many of the clients `from` to `to - 1` carry a cookie. */
function countWithCookie (from, to) {
  const before = (n) => n - Math.floor((n + 1) / 4)
  return before(to) - before(from)
}

/**
 * Sends clients `first` to `first + count - 1` through the pool, a batch at a time with
 * IN_FLIGHT requests in flight, and checks each response into `tally`. Cookies are sealed per
 * batch, so at most one batch of them is held.
 */
async function sendClients ({ pool, codec, first, count, tally, signal }) {
  for (let done = 0; done < count; done += BATCH) {
    const nowSeconds = Math.floor(Date.now() / 1000)
    const size = Math.min(BATCH, count - done)
    const batch = Array.from({ length: size }, (_, i) => clientRequest(codec, first + done + i, nowSeconds))
    let next = 0
    const worker = async () => {
      while (next < batch.length && !signal.aborted) await sendOne(pool, batch[next++], tally, signal)
    }
    await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, size) }, worker))
    signal.throwIfAborted()
  }
}

/**
 * Sends one client's request and checks the response: 200, a fresh AWSALB cookie, and a
 * cookie'd client served by the target its cookie names (the backend says which in `x-backend`).
 */
async function sendOne (pool, request, tally, signal) {
  try {
    const { statusCode, headers, body } = await pool.request({ path: request.path, method: 'GET', headers: request.headers, signal })
    await body.dump()
    if (statusCode !== 200) {
      note(tally, 'non200', `${request.path}: HTTP ${statusCode}`)
    } else if (![headers['set-cookie']].flat().some((cookie) => cookie?.startsWith('AWSALB='))) {
      note(tally, 'missingCookie', `${request.path}: no AWSALB in Set-Cookie`)
    } else if (request.target !== -1 && headers['x-backend'] !== String(request.target)) {
      note(tally, 'wrongTarget', `${request.path}: cookie names target ${TARGET_IDS[request.target]}, served by backend ${headers['x-backend']}`)
    }
  } catch (error) {
    if (!signal.aborted) note(tally, 'errors', `${request.path}: ${error.code ?? error.name}: ${error.message}`)
  }
}

const toMiB = (bytes) => round1(bytes / MIB)
const round1 = (value) => Math.round(value * 10) / 10
const formatCount = (n) => n.toLocaleString('en-US')
const memoryLine = (memory) => `rss ${toMiB(memory.rss).toFixed(1)} MiB, heapUsed ${toMiB(memory.heapUsed).toFixed(1)} MiB`
const signed = (mib) => `${mib >= 0 ? '+' : ''}${mib.toFixed(1)} MiB`

/** The human-readable summary of a result of runMemoryCheck. */
function formatReport (result) {
  return [
    '',
    `memory check: ${formatCount(result.clients)} distinct clients (${formatCount(result.clientsWithCookie)} with a sealed AWSALB cookie) after ${formatCount(result.warmup)} warm-up clients`,
    `  pinning            ${result.pinning}`,
    `  baseline (warm)    rss ${result.baseline.rssMiB.toFixed(1)} MiB, heapUsed ${result.baseline.heapUsedMiB.toFixed(1)} MiB`,
    `  end                rss ${result.end.rssMiB.toFixed(1)} MiB, heapUsed ${result.end.heapUsedMiB.toFixed(1)} MiB`,
    `  growth             rss ${signed(result.growth.rssMiB)}, heapUsed ${signed(result.growth.heapUsedMiB)}`,
    `  time               ${result.seconds.toFixed(1)} s, ${formatCount(result.requestsPerSecond)} req/s (${result.connections} connections, ${result.inFlight} in flight)`,
    `  problems           ${describeProblems(result)}${result.firstProblem === null ? '' : `; first: ${result.firstProblem}`}`,
    `  target: RSS growth ≤ ${result.targetRssGrowthMiB} MiB: ${result.met ? 'met' : 'missed'}`
  ].join('\n')
}

/** Backend role: three node:http servers (the targets), each answering BODY and its index. */
async function runBackend () {
  const ports = []
  for (let index = 0; index < TARGET_IDS.length; index++) {
    const headers = { 'content-type': 'application/json', 'content-length': BODY.length, 'x-backend': String(index) }
    const server = createServer((request, response) => {
      response.writeHead(200, headers)
      response.end(BODY)
    })
    server.keepAliveTimeout = 60_000
    server.listen(0, HOST)
    await once(server, 'listening')
    ports.push(server.address().port)
  }
  process.on('message', (message) => { if (message?.cmd === 'exit') process.exit(0) })
  process.on('disconnect', () => process.exit(0))
  process.send({ type: 'ready', ports })
}

/** Gateway role: Fastify with fastify-sticky and stickyProxy over the backend's three ports. */
async function runGateway (targetUrls) {
  const app = Fastify({ logger: false })
  await app.register(fastifySticky, {
    keys: [process.env[KEY_ENV]],
    targetGroups: [{ name: GROUP, targets: targetUrls.map((url, i) => ({ id: TARGET_IDS[i], url })) }]
  })
  await app.register(stickyProxy, { targetGroup: GROUP })
  await app.listen({ host: HOST, port: 0 })

  process.on('message', async (message) => {
    if (message?.cmd === 'measure') {
      for (let i = 0; i < 3; i++) {
        global.gc()
        await new Promise(setImmediate)
      }
      process.send({ type: 'memory', memory: process.memoryUsage() })
    } else if (message?.cmd === 'exit') {
      await app.close()
      process.exit(0)
    }
  })
  process.on('disconnect', () => process.exit(0))
  process.send({ type: 'ready', port: app.server.address().port })
}

/** Parses a non-negative integer option, or returns `fallback` when it is absent. */
function integerOption (name, text, fallback) {
  if (text === undefined) return fallback
  if (!/^\d+$/.test(text)) throw new TypeError(`--${name} must be an integer, received ${text}`)
  return Number(text)
}

/** Command line: runs a role when forked with --role, else the check (exit code 1 on failure). */
async function main () {
  let values
  let options
  try {
    ({ values } = parseArgs({
      options: {
        role: { type: 'string' },
        targets: { type: 'string' },
        clients: { type: 'string' },
        warmup: { type: 'string' },
        deadline: { type: 'string' },
        json: { type: 'string' }
      }
    }))
    if (values.role === 'backend') return await runBackend()
    if (values.role === 'gateway') return await runGateway(values.targets.split(','))
    options = {
      clients: integerOption('clients', values.clients, 1_000_000),
      warmup: integerOption('warmup', values.warmup, 20_000),
      deadlineSeconds: integerOption('deadline', values.deadline, 600)
    }
  } catch (error) {
    if (values?.role !== undefined) throw error
    console.error(`${error.message}\n${USAGE}`)
    process.exitCode = 2
    return
  }

  try {
    const result = await runMemoryCheck({ ...options, log: (line) => console.log(line) })
    console.log(formatReport(result))
    if (values.json !== undefined) await writeFile(values.json, `${JSON.stringify(result, null, 2)}\n`)
    process.exitCode = result.ok ? 0 : 1
  } catch (error) {
    console.error(`memory check failed: ${error.message}`)
    process.exitCode = 1
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main()
