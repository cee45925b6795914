// One gateway of the benchmark, in its own process so it can be pinned to its own CPU:
//   node bench/gateway.js reference <port> <origin>          plain @fastify/http-proxy, one target
//   node bench/gateway.js reference-ws <port> <origin>       the same with `websocket: true` (the WebSocket row)
//   node bench/gateway.js drop-in <port> <origin>            fastify-sticky/http-proxy with the reference's options (the import swapped)
//   node bench/gateway.js sticky <port> <origin>,<origin>,…   fastify-sticky, lb_cookie, one target group
//   node bench/gateway.js sticky <port> <origins> <dist>       the same, from another build (run.js --baseline)
//   node bench/gateway.js bare <port> <origin>,<origin>,…     node:http + undici, round-robin, no framework (bare-proxy.js)
//   node bench/gateway.js bare-relay <port> <origins>          node:net, each connection piped to the next target (bare-relay.js)
//   node bench/gateway.js sticky-as <port> <origins> <json>    fastify-sticky, the group's stickiness and the plugin's
//                                                             learnStore and metrics from <json>: { "stickiness": …, "learnStore": …, "metrics": … }
// Prints "ready" once listening; SIGTERM closes it cleanly (so --cpu-prof can write its profile).
import { resolve as resolvePath } from 'node:path'
import { pathToFileURL } from 'node:url'

/** The key the harness seals returning clients' cookies with (bench only). */
export const BENCH_KEY = '5e'.repeat(32)

const [kind, port, origins, dist] = process.argv.slice(2)
// Each kind loads only what it uses: the bare gateway never loads Fastify or the plugin.
const close = kind === 'bare' || kind === 'bare-relay' ? await listenBare(kind, origins.split(',')) : await listenFastify(kind, origins, dist)
process.stdout.write('ready\n')
process.once('SIGTERM', () => { close().then(() => process.exit(0), () => process.exit(1)) })

async function listenBare (kind, targets) {
  const { server, close } = kind === 'bare' ? (await import('./bare-proxy.js')).createBareProxy(targets) : (await import('./bare-relay.js')).createBareRelay(targets)
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(Number(port), '127.0.0.1', resolve)
  })
  return close
}

async function listenFastify (kind, origins, dist) {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false })
  if (kind === 'reference') {
    const { default: httpProxy } = await import('@fastify/http-proxy')
    await app.register(httpProxy, { upstream: origins.split(',')[0] })
  } else if (kind === 'drop-in') {
    const { default: httpProxy } = await import('../dist/http-proxy.js')
    await app.register(httpProxy, { upstream: origins.split(',')[0] })
  } else if (kind === 'reference-ws') {
    const { default: httpProxy } = await import('@fastify/http-proxy')
    // No compression on either hop, as in the other WebSocket rows.
    await app.register(httpProxy, { upstream: origins.split(',')[0], websocket: true, wsClientOptions: { perMessageDeflate: false } })
  } else if (kind === 'sticky') {
    const { default: fastifySticky, stickyProxy } = await import(dist === undefined ? '../dist/index.js' : pathToFileURL(resolvePath(dist, 'index.js')).href)
    const targets = origins.split(',').map((url, i) => ({ id: String.fromCharCode(97 + i), url }))
    await app.register(fastifySticky, { keys: [BENCH_KEY], targetGroups: [{ name: 'bench', targets }] })
    await app.register(stickyProxy, { targetGroup: 'bench' })
  } else if (kind === 'sticky-as') {
    const { default: fastifySticky, stickyProxy } = await import('../dist/index.js')
    const { stickiness, learnStore, metrics } = JSON.parse(dist)
    const targets = origins.split(',').map((url, i) => ({ id: String.fromCharCode(97 + i), url }))
    await app.register(fastifySticky, { keys: [BENCH_KEY], targetGroups: [{ name: 'bench', targets, stickiness }], ...(learnStore === undefined ? {} : { learnStore }), ...(metrics === undefined ? {} : { metrics }) })
    await app.register(stickyProxy, { targetGroup: 'bench' })
  } else {
    throw new Error(`unknown gateway kind ${kind}`)
  }
  await app.listen({ host: '127.0.0.1', port: Number(port) })
  return () => app.close()
}
