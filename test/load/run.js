// fastify-sticky's fault and load suite.
//
//   npm run test:load                       # full run: 2 rounds of the schedule, about 4 minutes
//                                           # (builds dist/ first: the suite imports ../../dist/index.js)
//   npm run test:load -- --short            # 1 round with shorter faults, about 50 s (CI)
//   npm run test:load -- --json report.json # also writes the whole report, every move and health change
//   (--clients <n> changes the number of steady clients, 200 by default; --ws-clients <n> the
//   number of WebSocket clients, 40 by default)
//
// Everything runs on 127.0.0.1: 4 node:http targets (targets.js) and the clients (clients.js) in
// this process, the gateway (gateway.js: Fastify, the plugin, one lb_cookie target group with
// active health checks every 500 ms and passive checks ejecting for 4 s, both scaled to the
// suite's time; `app.all('/*', …, reply.forward())` with `websocket: true`, and `/upload/*`
// through stickyProxy) in a child process of its own. 200 steady clients, each with its own
// cookie jar (sessions of a few seconds back to back), send GETs, small JSON POSTs and some slow
// GETs through undici keep-alive pools. Beside them, 40 WebSocket clients, each session one
// cookie jar shared by a socket (opened first: its 101 pins the jar) and GETs every few hundred
// ms, send a small message every ~100 ms on the socket (one in 20 of 16–128 KiB, so that frames
// span many chunks) and wait for its echo; when the gateway closes the socket (or refuses the
// upgrade) they reconnect with backoff. Meanwhile a schedule runs on the targets one after
// another, each phase followed by recovery (every target healthy and not ejected again, then a
// pause):
//
//   kill         close the target's server and all its connections, WebSockets too; start it
//                again on the same port
//   hang         accept connections and read requests, answer none (at least idleTimeoutMs + 1.5 s);
//                the held requests are answered at the end; upgrades are held too (the gateway's
//                handshake timeout answers them 504), open WebSockets still echo
//   reset        destroy the socket of every request and upgrade as it arrives, and every open WebSocket
//   slow         answer everything (health checks, upgrades and echoes too) `slowMs` late
//   flap         the health-check path alternates 500 and 200; traffic is answered normally
//   deregister   group.deregister(id) (drains for up to deregistrationDelayMs), then group.register({ id, url })
//   burst        load, not a fault: long GETs pinned to one target fill every connection of its pool
//   slow-bodies  load, not a fault: uploads pinned to one target trickle their small bodies in
//
// Every request, response and message is counted. A session that changes target (by a response,
// or by a socket's 101) is a move: expected when the target it left was faulted then (from the
// fault until it is healthy, and back from any ejection, after the fault was undone; report.js),
// unexpected otherwise; so is a socket the gateway closes on a target that was not faulted, and
// every socket the gateway closes must get a Close 1001. A message is echoed, cut (its socket
// closed first) or lost (no echo within the deadline, the socket still open). The sockets still
// open at the end must get 1001 from app.close(). A target-health change (the plugin's
// TARGET_HEALTH_CHANNEL) of a target that was not faulted is a flap. The report ends with
// `load: N passed, N failed` over five checks — no request or message lost silently, no
// unexpected move or close, no flap, app.close() settled in time (its WebSockets closed with
// 1001), no crash — and the exit code is 1 when one fails. Every loop is bounded in count and
// time, and the whole run by a time budget.
import { fork } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Load, newCounts } from './clients.js'
import { analyse, formatReport } from './report.js'
import { sleep, startTargets, withTimeout } from './targets.js'

const GROUP = 'load'
const KEY = '4c'.repeat(32)
const TARGET_COUNT = 4

/** The gateway's settings, the same in both profiles. */
const GATEWAY = {
  idleTimeoutMs: 2000,
  connectTimeoutMs: 1000,
  connectionsPerTarget: 128
}
/**
 * The group's WebSocket limits: the handshake timeout above the slow fault's delay (a slow
 * target's 101 still comes in time), below the idle timeout (a hung target's upgrades get 504
 * before its requests do).
 */
const WEBSOCKET = {
  handshakeTimeoutMs: 1500
}
/** Active health checks: short intervals (allowShortIntervals), ALB's minimum thresholds. */
const HEALTH_CHECK = {
  path: '/health',
  intervalMs: 500,
  timeoutMs: 400,
  healthyThreshold: 2,
  unhealthyThreshold: 2,
  allowShortIntervals: true
}

const PROFILES = {
  short: {
    clients: 200,
    wsClients: 40,
    rounds: 1,
    warmupMs: 2000,
    faultMs: 2000,
    recoverMs: 1000,
    cooldownMs: 1000,
    sessionMs: [4000, 10_000],
    deadlineMs: 10_000,
    deregistrationDelayMs: 2000,
    budgetMs: 150_000
  },
  full: {
    clients: 200,
    wsClients: 40,
    rounds: 2,
    warmupMs: 10_000,
    faultMs: 8000,
    recoverMs: 4000,
    cooldownMs: 5000,
    sessionMs: [8000, 25_000],
    deadlineMs: 20_000,
    deregistrationDelayMs: 6000,
    budgetMs: 900_000
  }
}

/** Shared by both profiles. */
const COMMON = {
  thinkMs: [20, 80],
  /** A WebSocket client's pause between two messages (each sent once the last was echoed), and between two of its GETs. */
  wsIntervalMs: [80, 120],
  wsHttpThinkMs: [200, 600],
  /** A reconnect's first pause (doubling at each refused upgrade) and its longest; each with jitter. */
  wsBackoffMs: [100, 2000],
  slowPathMs: [100, 300],
  /** The slow fault's extra delay: above the health check's timeout, below the gateway's idle timeout. */
  slowMs: 1000,
  /** The flap fault switches the health path's answer this often. */
  flapPeriodMs: 3 * HEALTH_CHECK.intervalMs,
  /** Long requests of a burst: every connection of one target's pool, and a quarter more waiting behind them. */
  burstSize: GATEWAY.connectionsPerTarget + GATEWAY.connectionsPerTarget / 4,
  /** A burst lasts at least this long: two rounds of its long requests and more, time for two health checks to queue behind them. */
  minBurstMs: 4000,
  /** How long each long request of a burst holds its connection (just below the idle timeout). */
  burstHoldMs: GATEWAY.idleTimeoutMs - 200,
  /** The hang fault lasts at least this long, so requests on the hung target meet the idle timeout. */
  minHangMs: GATEWAY.idleTimeoutMs + 1500,
  /** Passive checks' first ejection (the plugin's default is 30 s, longer than a short run's phases). */
  baseEjectionMs: 4000,
  /** After a fault is undone, the targets get this long to be healthy (and not ejected) again before the next one. */
  maxRecoveryMs: 10_000,
  closeBoundMs: 10_000,
  /** The gateway process must end by itself this soon after app.close(). */
  exitBoundMs: 5000
}

const USAGE = 'usage: node test/load/run.js [--short] [--json <file>] [--clients <n>] [--ws-clients <n>]'

function parseOptions () {
  const { values } = parseArgs({
    options: {
      short: { type: 'boolean', default: false },
      json: { type: 'string' },
      clients: { type: 'string' },
      'ws-clients': { type: 'string' },
      help: { type: 'boolean', default: false }
    }
  })
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }
  const profile = values.short ? 'short' : 'full'
  const settings = { profile, ...PROFILES[profile], ...COMMON, gateway: GATEWAY, healthCheck: HEALTH_CHECK, websocket: WEBSOCKET, targets: TARGET_COUNT }
  if (values.clients !== undefined) {
    const clients = Number(values.clients)
    if (!Number.isSafeInteger(clients) || clients < 1 || clients > 2000) throw new RangeError(`--clients must be an integer from 1 to 2000, received ${values.clients}`)
    settings.clients = clients
  }
  if (values['ws-clients'] !== undefined) {
    const wsClients = Number(values['ws-clients'])
    if (!Number.isSafeInteger(wsClients) || wsClients < 0 || wsClients > 1000) throw new RangeError(`--ws-clients must be an integer from 0 to 1000, received ${values['ws-clients']}`)
    settings.wsClients = wsClients
  }
  // The gateway's own bound on an answer: connect, then idle timeout, plus undici's 1 s tick.
  settings.lateMs = GATEWAY.connectTimeoutMs + GATEWAY.idleTimeoutMs + 1000
  // After a fault is undone: checks in flight end and `healthyThreshold` passes bring it back.
  settings.graceMs = HEALTH_CHECK.healthyThreshold * HEALTH_CHECK.intervalMs * 1.05 + HEALTH_CHECK.timeoutMs + 250
  settings.marginMs = HEALTH_CHECK.intervalMs
  return { settings, json: values.json }
}

/** The gateway child process: its IPC commands, health events and exit. */
class GatewayProcess {
  constructor (settings, onHealth, onCrash) {
    this.onHealth = onHealth
    this.onCrash = onCrash
    this.pending = new Map()
    this.nextId = 0
    this.exit = null
    this.expectExit = false
    this.crashed = null
    this.output = ''
    this.child = fork(fileURLToPath(new URL('./gateway.js', import.meta.url)), [], {
      execArgv: [...process.execArgv, '--expose-gc'],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: { ...process.env, LOAD_GATEWAY_BUDGET_MS: String(settings.budgetMs + 30_000) }
    })
    const keep = (chunk) => { this.output = (this.output + chunk.toString()).slice(-8000) }
    this.child.stdout.on('data', keep)
    this.child.stderr.on('data', keep)
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exit = { code, signal, at: Date.now() }
        if (!this.expectExit) {
          this.crashed = `the gateway process exited during the run (code ${code}, signal ${signal})`
          this.onCrash()
        }
        for (const { reject } of this.pending.values()) reject(new Error('the gateway process exited'))
        this.pending.clear()
        resolve(this.exit)
      })
    })
    this.child.on('message', (message) => {
      if (message.type === 'health') {
        this.onHealth(message.change)
      } else if (message.type === 'rpc-result') {
        const waiting = this.pending.get(message.id)
        if (waiting === undefined) return
        this.pending.delete(message.id)
        if (message.ok) waiting.resolve(message.value)
        else waiting.reject(new Error(message.error))
      } else if (message.type === 'ready' || message.type === 'start-failed') {
        this.onStart?.(message)
      }
    })
  }

  start (config, timeoutMs) {
    const started = new Promise((resolve, reject) => {
      this.onStart = (message) => message.type === 'ready' ? resolve(message) : reject(new Error(message.error))
      this.exited.then(() => reject(new Error('the gateway process exited before it was ready')))
    })
    this.child.send({ type: 'start', config })
    return withTimeout(started, timeoutMs, 'the gateway start')
  }

  rpc (op, args, timeoutMs) {
    if (this.exit !== null) return Promise.reject(new Error('the gateway process has exited'))
    const id = this.nextId++
    const answered = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }))
    this.child.send({ type: 'rpc', id, op, args })
    return withTimeout(answered, timeoutMs, `the gateway's ${op}`).finally(() => this.pending.delete(id))
  }

  /** Resolves with the exit, or null when the process is still running after `ms`. */
  async waitExit (ms) {
    let timer
    const result = await Promise.race([this.exited, new Promise((resolve) => { timer = setTimeout(() => resolve(null), ms) })])
    clearTimeout(timer)
    return result
  }

  kill () {
    this.expectExit = true
    if (this.exit === null) this.child.kill('SIGKILL')
  }
}

async function main () {
  const { settings, json } = parseOptions()
  if (!existsSync(new URL('../../dist/index.js', import.meta.url))) {
    console.log('dist/index.js is missing: build the plugin first (npm run build)')
    console.log('load: 0 passed, 1 failed')
    process.exitCode = 1
    return
  }
  const runStartedAt = Date.now()
  const log = (line) => console.log(`[${((Date.now() - runStartedAt) / 1000).toFixed(1).padStart(6)} s] ${line}`)
  const state = {
    settings,
    runStartedAt,
    phases: [],
    windows: [],
    healthEvents: [],
    targetStates: new Map(),
    ejected: new Set(),
    monitorFrom: null,
    monitorTo: null,
    gatewayEnd: null,
    gatewayExit: null,
    wsShutdown: null,
    crashes: [],
    notes: [],
    targets: [],
    load: null
  }
  let gateway = null
  let load = null
  let targets = []
  let finished = false

  const finish = async (reason) => {
    if (finished) return
    finished = true
    if (reason !== null) state.crashes.push(reason)
    gateway?.kill()
    const report = analyse(state)
    if (json !== undefined) {
      try {
        await writeFile(json, JSON.stringify(report, null, 2) + '\n')
      } catch (err) {
        report.notes.push(`could not write ${json}: ${err.message}`)
      }
    }
    console.log(formatReport(report))
    process.exitCode = report.failed === 0 ? 0 : 1
    // Nothing should be left running; if something is, it does not keep the run alive.
    setTimeout(() => process.exit(process.exitCode), 2000).unref()
  }

  const budget = setTimeout(() => {
    void finish(`the run exceeded its time budget of ${settings.budgetMs / 1000} s`).then(() => process.exit(1))
  }, settings.budgetMs)
  process.on('uncaughtException', (err) => { state.crashes.push(`uncaught exception in the driver: ${err?.stack ?? err}`) })
  process.on('unhandledRejection', (err) => { state.crashes.push(`unhandled rejection in the driver: ${err?.stack ?? err}`) })
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => { void finish(`stopped by ${signal}`).then(() => process.exit(130)) })
  }

  try {
    targets = await startTargets(TARGET_COUNT)
    state.targets = targets
    log(`targets ${targets.map((t) => `${t.id} ${t.url}`).join(', ')}`)

    gateway = new GatewayProcess(settings, (change) => {
      if (change.targetGroup !== GROUP) return
      state.healthEvents.push(change)
      if (change.change === 'state') state.targetStates.set(change.id, change.to)
      if (change.change === 'ejected') state.ejected.add(change.id)
      if (change.change === 'returned' || change.to === 'draining' || change.to === 'unused') state.ejected.delete(change.id)
    }, () => {
      // Nobody answers any more: stop the clients instead of letting them hammer a closed port.
      if (load !== null) load.stopped = true
    })
    const { port } = await gateway.start({
      groupName: GROUP,
      plugin: {
        keys: [KEY],
        idleTimeoutMs: GATEWAY.idleTimeoutMs,
        connectTimeoutMs: GATEWAY.connectTimeoutMs,
        connectionsPerTarget: GATEWAY.connectionsPerTarget,
        targetGroups: [{
          name: GROUP,
          targets: targets.map((t) => ({ id: t.id, url: t.url })),
          algorithm: 'round_robin',
          stickiness: { type: 'lb_cookie', durationSeconds: 3600 },
          healthCheck: HEALTH_CHECK,
          websocket: WEBSOCKET,
          deregistrationDelayMs: settings.deregistrationDelayMs,
          // Passive checks (on by default for gateway failures since f76154c), their ejection
          // scaled to the suite's time, as the health checks' interval is.
          outlierDetection: { baseEjectionMs: settings.baseEjectionMs }
        }]
      }
    }, 10_000)
    const gatewayUrl = `http://127.0.0.1:${port}`
    log(`gateway ${gatewayUrl} (pid ${gateway.child.pid})`)

    const allHealthy = () => targets.every((t) => state.targetStates.get(t.id) === 'healthy' && !state.ejected.has(t.id))
    const waitHealthy = async (boundMs) => {
      const deadline = Date.now() + boundMs
      while (!allHealthy() && Date.now() < deadline && gateway.exit === null) await sleep(20)
      return allHealthy()
    }
    if (!await waitHealthy(10_000)) throw new Error('the targets did not all turn healthy within 10 s of the gateway start')
    state.monitorFrom = Date.now()

    load = new Load({
      gatewayUrl,
      clients: settings.clients,
      burstSize: settings.burstSize,
      deadlineMs: settings.deadlineMs,
      lateMs: settings.lateMs,
      thinkMs: settings.thinkMs,
      sessionMs: settings.sessionMs,
      slowPathMs: settings.slowPathMs,
      wsClients: settings.wsClients,
      wsIntervalMs: settings.wsIntervalMs,
      wsHttpThinkMs: settings.wsHttpThinkMs,
      wsBackoffMs: settings.wsBackoffMs
    })
    state.load = load
    const driverLoop = monitorEventLoopDelay({ resolution: 10 })
    driverLoop.enable()

    /** Runs one phase: `body` applies (and undoes) what the phase does; then the targets recover. */
    const runPhase = async (name, kind, target, body) => {
      const phase = { name, kind, target: target?.id ?? null, startedAt: Date.now(), restoredAt: null, healthyAgainAt: null, endedAt: null, counts: null, notes: [] }
      phase.counts = newCounts()
      state.phases.push(phase)
      load.phase = phase
      log(`${name}${kind === 'fault' ? ' (fault)' : kind === 'load' ? ' (load, not a fault)' : ''}`)
      await body(phase)
      if (kind !== 'steady') {
        if (await waitHealthy(settings.maxRecoveryMs)) {
          phase.healthyAgainAt = Date.now()
        } else {
          phase.notes.push(`targets not all healthy ${settings.maxRecoveryMs / 1000} s after the phase: ${targets.map((t) => `${t.id} ${state.targetStates.get(t.id)}${state.ejected.has(t.id) ? ' (ejected)' : ''}`).join(', ')}`)
        }
        await sleep(settings.recoverMs)
      }
      try {
        phase.gateway = await gateway.rpc('stats', {}, 5000)
      } catch (err) {
        phase.notes.push(`gateway stats: ${err.message}`)
      }
      phase.driverEventLoopMaxMs = driverLoop.max / 1e6
      driverLoop.reset()
      phase.endedAt = Date.now()
    }

    /** A fault on `target`: `apply` at once, `undo` after faultMs; the window between counts as faulted. */
    const fault = (apply, undo, lastsMs = settings.faultMs) => async (phase, target) => {
      const window = { target: target.id, fault: phase.name, start: Date.now(), restoredAt: null }
      state.windows.push(window)
      await apply(target, phase)
      await sleep(lastsMs)
      await undo(target, phase)
      window.restoredAt = phase.restoredAt = Date.now()
    }

    const schedule = [
      ['kill', 'fault', fault((t) => t.kill(), (t) => t.restart())],
      ['hang', 'fault', fault((t) => { t.mode = 'hang' }, (t) => { t.mode = 'normal'; t.release() }, Math.max(settings.faultMs, settings.minHangMs))],
      ['reset', 'fault', fault((t) => { t.mode = 'reset'; t.dropWebSockets() }, (t) => { t.mode = 'normal' })],
      ['slow', 'fault', fault((t) => { t.extraDelayMs = settings.slowMs }, (t) => { t.extraDelayMs = 0 })],
      ['flap', 'fault', async (phase, target) => {
        const window = { target: target.id, fault: phase.name, start: Date.now(), restoredAt: null }
        state.windows.push(window)
        const endsAt = Date.now() + settings.faultMs
        for (let flips = 0; flips < 1000 && Date.now() < endsAt; flips++) {
          target.healthStatus = flips % 2 === 0 ? 500 : 200
          await sleep(Math.min(settings.flapPeriodMs, Math.max(0, endsAt - Date.now())))
        }
        target.healthStatus = 200
        window.restoredAt = phase.restoredAt = Date.now()
      }],
      ['deregister', 'fault', async (phase, target) => {
        const window = { target: target.id, fault: phase.name, start: Date.now(), restoredAt: null }
        state.windows.push(window)
        try {
          const drained = await gateway.rpc('deregister', { id: target.id }, settings.deregistrationDelayMs + 10_000)
          phase.notes.push(`deregister() resolved ${drained.result} after ${(drained.ms / 1000).toFixed(1)} s`)
        } catch (err) {
          phase.notes.push(`deregister(): ${err.message.split('\n')[0]}`)
        }
        try {
          await gateway.rpc('register', { id: target.id, url: target.url }, 5000)
        } catch (err) {
          phase.notes.push(`register(): ${err.message.split('\n')[0]}`)
        }
        window.restoredAt = phase.restoredAt = Date.now()
      }],
      ['burst', 'load', async (phase, target) => {
        const result = await load.burst({ kind: 'burst', targetId: target.id, size: settings.burstSize, holdMs: settings.burstHoldMs, untilMs: Date.now() + Math.max(settings.faultMs, settings.minBurstMs) })
        phase.notes.push(result.started ? `${settings.burstSize} long GETs (${settings.burstHoldMs} ms each) pinned to ${target.id}, peak ${target.counts.peakInFlight} in flight at the target` : result.note)
        phase.restoredAt = Date.now()
      }],
      ['slow-bodies', 'load', async (phase, target) => {
        const result = await load.burst({ kind: 'upload', targetId: target.id, size: settings.burstSize, holdMs: settings.burstHoldMs, untilMs: Date.now() + Math.max(settings.faultMs, settings.minBurstMs) })
        phase.notes.push(result.started ? `${settings.burstSize} uploads of 2 KiB, each trickled over ${settings.burstHoldMs} ms, pinned to ${target.id}, peak ${target.counts.peakInFlight} in flight at the target` : result.note)
        phase.restoredAt = Date.now()
      }]
    ]

    load.startClients()
    await runPhase('warm-up', 'steady', null, () => sleep(settings.warmupMs))
    for (let round = 0; round < settings.rounds; round++) {
      for (let i = 0; i < schedule.length; i++) {
        if (gateway.exit !== null) throw new Error(gateway.crashed ?? 'the gateway process exited')
        const [name, kind, body] = schedule[i]
        const target = targets[(i + round) % targets.length]
        target.counts.peakInFlight = target.inFlight
        await runPhase(`${name} ${target.id}`, kind, target, (phase) => body(phase, target))
      }
    }
    await runPhase('cool-down', 'steady', null, () => sleep(settings.cooldownMs))
    state.monitorTo = Date.now()

    log(`stopping ${settings.clients} clients and ${settings.wsClients} WebSocket clients (${load.inFlight} requests and messages in flight)`)
    const stopped = await load.stop(settings.deadlineMs + 5000)
    if (!stopped) state.notes.push(`client loops had not all ended ${(settings.deadlineMs + 5000) / 1000} s after the stop`)
    driverLoop.disable()

    log('closing the gateway (app.close())')
    gateway.expectExit = true
    const openAtClose = load.openAtStop.size
    try {
      state.gatewayEnd = await gateway.rpc('close', { boundMs: settings.closeBoundMs }, settings.closeBoundMs + 10_000)
      state.gatewayEnd.answeredAt = Date.now()
    } catch (err) {
      state.crashes.push(`the gateway's close command failed: ${err.message.split('\n')[0]}`)
    }
    // The sockets the clients left open: app.close() sends each a Close 1001.
    const socketsClosed = await load.wsShutdown(settings.closeBoundMs)
    state.wsShutdown = { open: openAtClose, allClosed: socketsClosed, stillOpen: load.openAtStop.size, codes: { ...load.shutdownCloses } }
    const exit = await gateway.waitExit(settings.exitBoundMs)
    state.gatewayExit = exit === null
      ? { exitedBySelf: false, boundMs: settings.exitBoundMs }
      : { exitedBySelf: true, code: exit.code, signal: exit.signal, boundMs: settings.exitBoundMs, afterCloseMs: state.gatewayEnd === null ? null : Math.max(0, exit.at - state.gatewayEnd.answeredAt) }
    if (exit !== null && exit.code !== 0) state.crashes.push(`the gateway process exited with code ${exit.code} after close`)
    gateway.kill()
    await load.close()
    await Promise.all(targets.map((t) => t.close()))
  } catch (err) {
    if (load !== null) load.stopped = true
    // The gateway's exit is reported below, once.
    if (gateway?.crashed == null || !String(err?.message).includes(gateway.crashed)) state.crashes.push(`the run failed: ${err?.stack ?? err}`)
  } finally {
    if (gateway?.crashed) state.crashes.push(gateway.crashed)
    if (state.crashes.length > 0 && gateway?.output) state.notes.push(`the gateway's stdout and stderr (last 8000 characters):\n${gateway.output}`)
    gateway?.kill()
    if (load !== null) load.stopped = true
    await load?.close().catch(() => {})
    await Promise.all(targets.map((t) => t.close().catch(() => {})))
    clearTimeout(budget)
    state.monitorTo ??= Date.now()
    await finish(null)
  }
}

await main()
