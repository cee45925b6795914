// One gateway of the benchmark, in its own process so it can be pinned to its own CPU:
//   node bench/gateway.js reference <port> <origin>          plain @fastify/http-proxy, one target
//   node bench/gateway.js sticky <port> <origin>,<origin>,…   fastify-sticky, lb_cookie, one target group
//   node bench/gateway.js sticky <port> <origins> <dist>       the same, from another build (run.js --baseline)
// Prints "ready" once listening; SIGTERM closes it cleanly (so --cpu-prof can write its profile).
import Fastify from 'fastify'
import httpProxy from '@fastify/http-proxy'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

/** The key the harness seals returning clients' cookies with (bench only). */
export const BENCH_KEY = '5e'.repeat(32)

const [kind, port, origins, dist] = process.argv.slice(2)
const { default: fastifySticky, stickyProxy } = await import(dist === undefined ? '../dist/index.js' : pathToFileURL(resolve(dist, 'index.js')).href)
const app = Fastify({ logger: false })

if (kind === 'reference') {
  await app.register(httpProxy, { upstream: origins.split(',')[0] })
} else if (kind === 'sticky') {
  const targets = origins.split(',').map((url, i) => ({ id: String.fromCharCode(97 + i), url }))
  await app.register(fastifySticky, { keys: [BENCH_KEY], targetGroups: [{ name: 'bench', targets }] })
  await app.register(stickyProxy, { targetGroup: 'bench' })
} else {
  throw new Error(`unknown gateway kind ${kind}`)
}

await app.listen({ host: '127.0.0.1', port: Number(port) })
process.stdout.write('ready\n')
process.once('SIGTERM', () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
