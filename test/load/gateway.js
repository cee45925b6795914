// The gateway under test, run by test/load/run.js in a child process of its own (so its memory,
// handles and event loop are its own): a real Fastify on 127.0.0.1:0 with the built plugin, one
// target group with lb_cookie stickiness and active health checks, `app.all('/*')` forwarding to
// it (WebSockets too), and `/upload/*` mounted with stickyProxy (request bodies stream to the
// target there; WebSockets are tunnelled, stickyProxy's default).
// It talks to the driver over IPC only: it reports every target-health change, and runs the
// driver's deregister / register / stats / close commands.
import diagnosticsChannel from 'node:diagnostics_channel'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import Fastify, * as fastifyModule from 'fastify'
import fastifySticky, { stickyProxy, TARGET_HEALTH_CHANNEL } from '../../dist/index.js'

/**
 * Handles of this process before Fastify and the plugin exist: stdout and stderr (pipes, opened
 * first) and the IPC channel (ref'd once a 'message' listener is on), taken once those are.
 */
let baselineHandles = []
let closing = false

// The driver went away: nobody will close this gateway, so stop now.
process.on('disconnect', () => { if (!closing) process.exit(3) })
// Whatever happens, this process ends by itself (the timer does not keep it alive).
setTimeout(() => process.exit(4), Number(process.env.LOAD_GATEWAY_BUDGET_MS ?? 900_000)).unref()

/** @type {import('fastify').FastifyInstance | null} */
let app = null
let group = null
/** The gateway's event-loop delay, from the start of the load (created then, so it is no baseline handle). */
let eventLoop = null
const counts = { received: 0, responded: 0, aborted: 0, status: {} }
/** The plugin's own log lines (failures at warn, redispatches at info) since the last stats: "message target code" → count. */
let logged = {}
const logStream = {
  write (line) {
    try {
      const entry = JSON.parse(line)
      const key = [String(entry.msg ?? '').replace(/^fastify-sticky: /, ''), entry.target, entry.code, entry.to === undefined ? undefined : `to ${entry.to}`].filter((part) => part !== undefined).join(' ')
      logged[key] = (logged[key] ?? 0) + 1
    } catch {
      logged[line.slice(0, 120)] = (logged[line.slice(0, 120)] ?? 0) + 1
    }
  }
}

function send (message) {
  if (process.connected) process.send(message)
}

diagnosticsChannel.subscribe(TARGET_HEALTH_CHANNEL, (message) => {
  const { change, targetGroup, target, from, to, reason, atMs } = message
  send({ type: 'health', change: { change, targetGroup, id: target.id, from, to, reason, atMs } })
})

async function start (config) {
  // Per-request logging off: only what the plugin itself logs reaches the stream.
  const quiet = typeof fastifyModule.LogController === 'function'
    ? { logController: new fastifyModule.LogController({ disableRequestLogging: true }) }
    : { disableRequestLogging: true }
  app = Fastify({ logger: { level: 'info', stream: logStream }, ...quiet })
  await app.register(fastifySticky, config.plugin)
  group = app.targetGroups.get(config.groupName)
  // request.affinity, copied into headers the driver reads: the decision and the target it names.
  app.addHook('onSend', (request, reply, payload, done) => {
    affinityHeaders(request, reply)
    done(null, payload)
  })
  // A 101 is written without onSend: for an upgrade the decision goes on the reply before it is
  // sent (a refused connection sent on to another target is seen by the driver from x-served-by).
  app.addHook('preHandler', (request, reply, done) => {
    if (request.headers.upgrade !== undefined) affinityHeaders(request, reply)
    done()
  })
  app.addHook('onRequest', (request, reply, done) => { counts.received++; done() })
  app.addHook('onResponse', (request, reply, done) => {
    counts.responded++
    counts.status[reply.statusCode] = (counts.status[reply.statusCode] ?? 0) + 1
    done()
  })
  app.addHook('onRequestAbort', (request, done) => { counts.aborted++; done() })
  app.all('/*', { config: { targetGroup: config.groupName, websocket: true } }, (request, reply) => reply.forward())
  await app.register(stickyProxy, { prefix: '/upload', targetGroup: config.groupName, rewritePrefix: '/upload' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  eventLoop = monitorEventLoopDelay({ resolution: 10 })
  eventLoop.enable()
  return { port: app.server.address().port }
}

function affinityHeaders (request, reply) {
  const affinity = request.affinity
  if (affinity !== null) {
    reply.header('x-affinity', affinity.outcome === 'reassigned' ? `reassigned;${affinity.reason}` : affinity.outcome)
    if (affinity.target !== null) reply.header('x-affinity-target', affinity.target.id)
  }
}

const ops = {
  async deregister ({ id }) {
    const startedAt = Date.now()
    const result = await group.deregister(id)
    return { result, ms: Date.now() - startedAt }
  },
  register ({ id, url }) {
    return group.register({ id, url })
  },
  /** Event-loop delay since the last call (ms), and the group's view of its targets. */
  stats () {
    const delay = eventLoop.count === 0
      ? { p50: 0, p99: 0, max: 0 }
      : { p50: eventLoop.percentile(50) / 1e6, p99: eventLoop.percentile(99) / 1e6, max: eventLoop.max / 1e6 }
    eventLoop.reset()
    const log = logged
    logged = {}
    return { eventLoopDelayMs: delay, group: group.describe(), counts, log }
  },
  /** app.close() within `boundMs`, then the process's memory and handles once it has settled. */
  async close ({ boundMs }) {
    closing = true
    eventLoop.disable()
    const startedAt = performance.now()
    let settled = false
    let error = null
    const closed = app.close().then(() => { settled = true }, (err) => {
      settled = true
      error = String(err?.stack ?? err)
    })
    let timer
    await Promise.race([closed, new Promise((resolve) => { timer = setTimeout(resolve, boundMs) })])
    clearTimeout(timer)
    const closeMs = performance.now() - startedAt
    // Sockets and pools finish closing on later turns of the loop.
    await new Promise((resolve) => setTimeout(resolve, 250))
    globalThis.gc?.()
    globalThis.gc?.()
    const memory = process.memoryUsage()
    return {
      settled,
      error,
      closeMs,
      boundMs,
      rss: memory.rss,
      heapUsed: memory.heapUsed,
      handles: process.getActiveResourcesInfo(),
      baselineHandles,
      counts
    }
  }
}

process.on('message', async (message) => {
  try {
    if (message.type === 'start') {
      send({ type: 'ready', ...(await start(message.config)) })
    } else if (message.type === 'rpc') {
      const value = await ops[message.op](message.args ?? {})
      send({ type: 'rpc-result', id: message.id, ok: true, value })
      // After close, the process is left to end by itself: the driver times how long it takes.
      if (message.op === 'close') process.disconnect()
    }
  } catch (err) {
    send({ type: message.type === 'start' ? 'start-failed' : 'rpc-result', id: message.id, ok: false, error: String(err?.stack ?? err) })
  }
})

void process.stdout
void process.stderr
baselineHandles = process.getActiveResourcesInfo()
send({ type: 'spawned' })
