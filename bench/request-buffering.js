// What requestBufferBytes costs and buys, in one run: POST bodies of several sizes through a
// stickyProxy gateway whose requestBufferBytes is 0 (stream every body), 16 KiB (the default) or
// 64 KiB; req/s and p99 from autocannon (50 connections), the gateway's RSS at the end; then how
// many quick GETs get through while 64 clients trickle 100 KB bodies at a byte per 100 ms.
//   node bench/request-buffering.js [--duration 3]
// Loopback only; everything runs in this process, so compare rows with each other, not with
// `npm run bench`.
import { createServer, request as httpRequest } from 'node:http'
import autocannon from 'autocannon'
import Fastify from 'fastify'
import fastifySticky, { stickyProxy } from '../dist/index.js'

const duration = Number(process.argv[process.argv.indexOf('--duration') + 1] || 3)
const SIZES = [1024, 16_384, 65_536]
const LIMITS = [0, 16_384, 65_536]

const target = createServer((req, res) => {
  let bytes = 0
  req.on('data', (chunk) => { bytes += chunk.length })
  req.on('end', () => res.end(String(bytes)))
})
target.keepAliveTimeout = 30_000
await new Promise((resolve) => target.listen(0, '127.0.0.1', resolve))
const origin = `http://127.0.0.1:${target.address().port}`

async function gateway (requestBufferBytes, connectionsPerTarget = 128) {
  const app = Fastify()
  await app.register(fastifySticky, { keys: ['5e'.repeat(32)], requestBufferBytes, connectionsPerTarget, clientBodyTimeoutMs: 60_000, targetGroups: [{ name: 'g', targets: [{ id: 't', url: origin }], stickiness: false }] })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, url: `http://127.0.0.1:${app.server.address().port}/p/upload` }
}

console.log(`POST bodies, ${duration} s each, 50 connections`)
console.log('body      requestBufferBytes   req/s    p99 ms   errors')
for (const size of SIZES) {
  const body = Buffer.alloc(size, 'x')
  for (const limit of LIMITS) {
    const { app, url } = await gateway(limit)
    const result = await autocannon({ url, connections: 50, duration, method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } })
    await app.close()
    console.log(`${String(size).padEnd(9)} ${String(limit).padEnd(20)} ${String(Math.round(result.requests.average)).padEnd(8)} ${String(result.latency.p99).padEnd(8)} ${result.errors + result.non2xx + result.timeouts}`)
  }
}

console.log('\n64 clients trickling 100 KB bodies (a byte per 100 ms) on a 16-connection target; quick GETs in 3 s:')
for (const limit of [0, 16_384]) {
  const { app, url } = await gateway(limit, 16)
  const slow = Array.from({ length: 64 }, () => {
    const req = httpRequest(url, { method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': '100000' } })
    req.on('error', () => {})
    req.flushHeaders()
    return req
  })
  const trickle = setInterval(() => { for (const req of slow) if (!req.destroyed) req.write('x') }, 100)
  const quick = await autocannon({ url: url.replace('/upload', '/quick'), connections: 10, duration: 3, timeout: 2 })
  clearInterval(trickle)
  for (const req of slow) req.destroy()
  await app.close()
  console.log(`requestBufferBytes ${String(limit).padEnd(6)} quick GETs answered: ${quick.requests.total}, timed out or failed: ${quick.errors + quick.timeouts + quick.non2xx}`)
}
target.close()
target.closeAllConnections()
