import { once } from 'node:events'
import { request as httpRequest, type ClientRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { stickyProxy, type FastifyStickyOptions } from '../lib/index.js'
import { buildGateway, echoOf, startTargets, waitFor, type TestTarget } from './setup.js'

type Tap = Parameters<typeof startTargets>[0]

/** A listening gateway that streams every body under /p to one target, unparsed. */
async function gateway (t: Tap, target: TestTarget, options: Partial<FastifyStickyOptions> = {}): Promise<{ app: FastifyInstance, port: number }> {
  const app = await buildGateway(t, { ...options, targetGroups: [{ name: 'g', targets: [{ id: target.id, url: target.url }], stickiness: false }] })
  await app.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port }
}

interface Upload { req: ClientRequest, response: Promise<{ status: number, body: string } | { error: string }> }

/** Starts a POST with a declared length, sending nothing of its body yet. */
function upload (port: number, length: number, path = '/p/upload'): Upload {
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path, agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': String(length) } })
  req.flushHeaders()
  const response = new Promise<{ status: number, body: string } | { error: string }>((resolve) => {
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', (err) => resolve({ error: err.message }))
    })
    req.on('error', (err) => resolve({ error: err.message }))
  })
  return { req, response }
}

test('a small body is received whole before the target sees the request', async (t) => {
  const [target] = await startTargets(t, 1)
  const { port } = await gateway(t, target)
  const { req, response } = upload(port, 1000)
  req.write(Buffer.alloc(500, 'a'))
  // The gateway has the headers and half the body: nothing may reach the target yet.
  await new Promise((resolve) => setImmediate(resolve))
  await waitFor(() => target.hits === 0, 200)
  const probe = await fetch(`http://127.0.0.1:${port}/p/probe`)
  t.equal(probe.status, 200, 'another request passes meanwhile')
  t.equal(target.hits, 1, 'only that other request reached the target')
  req.end(Buffer.alloc(500, 'b'))
  const res = await response
  t.ok('status' in res && res.status === 200, `answered: ${JSON.stringify(res).slice(0, 100)}`)
  if ('body' in res) t.equal(echoOf(res).body, 'a'.repeat(500) + 'b'.repeat(500), 'the whole body, in one piece')
})

test('slow clients cost only themselves: sixteen 100 KB uploads at a trickle hold no connection of a 16-connection target, and end in 408', async (t) => {
  const [target] = await startTargets(t, 1)
  const { port } = await gateway(t, target, { connectionsPerTarget: 16, clientBodyTimeoutMs: 1500, idleTimeoutMs: 3000 })
  const slow = Array.from({ length: 16 }, () => upload(port, 100_000))
  const trickle = setInterval(() => { for (const { req } of slow) if (!req.destroyed) req.write('x') }, 100)
  t.teardown(() => clearInterval(trickle))
  const started = Date.now()
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`http://127.0.0.1:${port}/p/fast/${i}`)
    t.equal(res.status, 200, `a quick request ${i} is answered while the slow ones trickle`)
  }
  t.ok(Date.now() - started < 1000, `at once: ${Date.now() - started} ms for five`)
  t.equal(target.hits, 5, 'none of the slow uploads reached the target')
  const results = await Promise.all(slow.map(async ({ response }) => await response))
  clearInterval(trickle)
  for (const res of results) {
    t.ok('status' in res && res.status === 408 && JSON.parse(res.body).code === 'FST_STICKY_REQUEST_TIMEOUT', `a slow upload ends in 408: ${JSON.stringify(res).slice(0, 120)}`)
  }
  t.equal(target.hits, 5, 'and still none of them reached the target')
})

test('a large body streams once its first requestBufferBytes came, and a pause longer than clientBodyTimeoutMs ends it', async (t) => {
  const [target] = await startTargets(t, 1)
  const { port } = await gateway(t, target, { requestBufferBytes: 1024, clientBodyTimeoutMs: 400 })
  const whole = upload(port, 5000)
  whole.req.write(Buffer.alloc(1500, 'a'))
  await waitFor(() => target.hits === 1, 2000, 'the target to see the upload once 1 KiB came')
  whole.req.end(Buffer.alloc(3500, 'b'))
  const done = await whole.response
  t.ok('body' in done && echoOf(done).body.length === 5000, 'all of it arrived')

  const paused = upload(port, 5000)
  paused.req.write(Buffer.alloc(1500, 'a'))
  const res = await paused.response
  // The target was already answering when the body stopped: either the gateway's 408, or the connection cut.
  t.ok(('status' in res && res.status === 408) || 'error' in res, `a stalled stream ends: ${JSON.stringify(res).slice(0, 120)}`)
  paused.req.destroy()
})

test('a chunked body of unknown length streams after its first bytes, whole', async (t) => {
  const [target] = await startTargets(t, 1)
  const { port } = await gateway(t, target, { requestBufferBytes: 100 })
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/p/chunked', agent: false, headers: { 'content-type': 'text/plain' } })
  for (let i = 0; i < 10; i++) req.write('0123456789'.repeat(5))
  req.end()
  const [res] = await once(req, 'response') as [import('node:http').IncomingMessage]
  let body = ''
  for await (const chunk of res) body += String(chunk)
  t.equal(res.statusCode, 200)
  t.equal(JSON.parse(body).body.length, 500)
})
