import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { FastifyStickyOptions, TargetGroupOptions } from '../lib/index.js'
import { buildGateway, startServer, waitFor } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

/**
 * A target with long-lived responses. `/events?every=<ms>&count=<n>`: a server-sent event stream,
 * one event every `every` ms, ended after `count` (never, without it); `every=0` sends one event
 * and goes silent. `/download`: an endless `application/octet-stream` body, a chunk every 50 ms.
 * `/poll`: a long poll, answered when the test calls `answerPolls()`.
 */
async function longLivedTarget (t: Tap, id: string) {
  const open = new Set<ServerResponse>()
  const polls = new Set<ServerResponse>()
  /** Responses whose connection the gateway closed before the target ended them. */
  let cut = 0
  const { url } = await startServer(t, (req: IncomingMessage, res: ServerResponse) => {
    const { pathname, searchParams } = new URL(req.url ?? '/', 'http://x')
    open.add(res)
    let timer: NodeJS.Timeout | undefined
    res.on('close', () => {
      clearInterval(timer)
      open.delete(res)
      polls.delete(res)
      if (!res.writableFinished) cut++
    })
    if (pathname === '/events') {
      const every = Number(searchParams.get('every'))
      const count = Number(searchParams.get('count') ?? Infinity)
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-served-by': id })
      let sent = 0
      const send = (): void => {
        res.write(`id: ${sent}\ndata: ${id} ${sent}\n\n`)
        if (++sent >= count) res.end()
      }
      send()
      if (every > 0 && sent < count) timer = setInterval(send, every)
    } else if (pathname === '/download') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-served-by': id })
      res.write('x'.repeat(1000))
      timer = setInterval(() => res.write('x'.repeat(1000)), 50)
    } else if (pathname === '/poll') {
      polls.add(res)
    } else {
      res.setHeader('x-served-by', id)
      res.end(id)
    }
  })
  return {
    id,
    url,
    get open () { return open.size },
    get cut () { return cut },
    /** Long polls this target holds now. */
    get polls () { return polls.size },
    answerPolls () {
      for (const res of polls) res.end(JSON.stringify({ from: id }))
      polls.clear()
    }
  }
}

/** A listening gateway over group `g`: every path is forwarded. */
async function gateway (t: Tap, group: Omit<TargetGroupOptions, 'name'>, options: Partial<FastifyStickyOptions> = {}): Promise<{ app: FastifyInstance, port: number }> {
  const app = await buildGateway(t, { ...options, targetGroups: [{ name: 'g', ...group }] })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port }
}

/** A long-lived response as the client sees it: what came, and how it ended. */
interface Watched {
  readonly status: number
  readonly headers: IncomingMessage['headers']
  /** The body so far. */
  text: string
  /** Resolves when the response ends: complete (the whole body, chunked terminator included) or cut. */
  readonly ended: Promise<{ complete: boolean, atMs: number }>
  close (): void
}

/** Opens `path` on the gateway with its own connection and watches the response. */
async function watch (t: Tap, port: number, path: string): Promise<Watched> {
  const req = httpRequest({ host: '127.0.0.1', port, path, agent: false })
  req.on('error', () => {})
  t.teardown(() => req.destroy())
  req.end()
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    req.on('response', resolve)
    req.on('error', reject)
  })
  res.setEncoding('utf8')
  const watched: Watched = {
    status: res.statusCode ?? 0,
    headers: res.headers,
    text: '',
    ended: new Promise((resolve) => {
      res.on('error', () => {})
      res.on('close', () => resolve({ complete: res.complete, atMs: Date.now() }))
    }),
    close: () => req.destroy()
  }
  res.on('data', (chunk: string) => { watched.text += chunk })
  return watched
}

/** The `data:` lines of the events in `text`. */
function eventsIn (text: string): string[] {
  return text.split('\n\n').filter((event) => event.includes('data: ')).map((event) => /data: (.*)/.exec(event)?.[1] ?? '')
}

function inFlight (app: FastifyInstance, id: string): number {
  return app.targetGroups.get('g')?.describe().targets.find((target) => target.id === id)?.inFlight ?? -1
}

test('an event stream that sends every idleTimeoutMs/3 lives through four idle timeouts; one silent for longer is ended', async (t) => {
  const target = await longLivedTarget(t, 't0')
  const idleTimeoutMs = 900
  const { port } = await gateway(t, { targets: [{ id: 't0', url: target.url }], stickiness: false }, { idleTimeoutMs })
  const startedMs = Date.now()
  const lively = await watch(t, port, `/events?every=${idleTimeoutMs / 3}&count=13`)
  t.equal(lively.headers['content-type'], 'text/event-stream')
  const { complete } = await lively.ended
  const tookMs = Date.now() - startedMs
  t.ok(complete, 'the stream ended as the target ended it')
  t.equal(eventsIn(lively.text).length, 13, `all 13 events came over ${tookMs} ms, ${(tookMs / idleTimeoutMs).toFixed(1)} idle timeouts`)

  const silent = await watch(t, port, '/events?every=0')
  const openedMs = Date.now()
  const ended = await silent.ended
  const silentMs = ended.atMs - openedMs
  t.notOk(ended.complete, 'a stream silent past the idle timeout is cut: the client sees it was not ended')
  t.same(eventsIn(silent.text), ['t0 0'], 'the event before the silence came')
  t.ok(silentMs >= idleTimeoutMs - 100 && silentMs < idleTimeoutMs + 3000, `cut after ${silentMs} ms of silence`)
  await waitFor(() => target.open === 0, 2000, 'the target’s response closed')
})

test('event streams and long polls count as in flight: describe(), least outstanding requests, and back to 0 when they end', async (t) => {
  const a = await longLivedTarget(t, 'a')
  const b = await longLivedTarget(t, 'b')
  const { app, port } = await gateway(t, { targets: [{ id: 'a', url: a.url }, { id: 'b', url: b.url }], stickiness: false, algorithm: 'least_outstanding_requests' })
  const stream = await watch(t, port, '/events?every=100')
  const first = String(stream.headers['x-served-by'])
  const other = first === 'a' ? 'b' : 'a'
  t.equal(inFlight(app, first), 1, 'the event stream is in flight on its target')
  // Each new request goes to the target with fewer outstanding: the other one, every time.
  const served: string[] = []
  for (let i = 0; i < 4; i++) served.push(await (await fetch(`http://127.0.0.1:${port}/plain`)).text())
  t.same(served, [other, other, other, other], 'least outstanding requests sends everything else to the other target')
  const poll = fetch(`http://127.0.0.1:${port}/poll`).then(async (res) => await res.json() as { from: string })
  await waitFor(() => inFlight(app, other) === 1, 2000, 'the long poll in flight')
  t.equal(inFlight(app, first), 1, 'one each: the event stream and the long poll')
  // In flight at the gateway is not yet at the target: answer the poll once the target holds it.
  const polled = other === 'a' ? a : b
  await waitFor(() => polled.polls === 1, 2000, 'the long poll at its target')
  polled.answerPolls()
  t.same(await poll, { from: other })
  stream.close()
  await waitFor(() => inFlight(app, 'a') === 0 && inFlight(app, 'b') === 0, 2000, 'nothing in flight once the client left the stream')
  await waitFor(() => a.open === 0 && b.open === 0, 2000, 'the target’s response ended with the client')
})

test('draining waits for an event stream: deregister() settles once it ends, not before', async (t) => {
  const target = await longLivedTarget(t, 't0')
  const { app, port } = await gateway(t, { targets: [{ id: 't0', url: target.url }], stickiness: false, deregistrationDelayMs: 30_000 })
  const stream = await watch(t, port, '/events?every=100&count=8')
  let settled = false
  const deregistered = app.targetGroups.get('g')?.deregister('t0').then((done) => { settled = done })
  await waitFor(() => eventsIn(stream.text).length >= 4, 3000, 'four events while draining')
  t.notOk(settled, 'still draining while the stream runs')
  t.equal(app.targetGroups.get('g')?.describe().targets[0]?.state, 'draining')
  t.ok((await stream.ended).complete, 'the stream ran to its own end')
  t.equal(eventsIn(stream.text).length, 8)
  await deregistered
  t.ok(settled, 'deregister() settled when the stream ended, long before its delay')
})

test('at the drain deadline an event stream ends cleanly, another unfinished body is cut, a long poll gets 502; nothing is left behind', async (t) => {
  const target = await longLivedTarget(t, 't0')
  const { app, port } = await gateway(t, { targets: [{ id: 't0', url: target.url }], stickiness: false, deregistrationDelayMs: 600 })
  const stream = await watch(t, port, '/events?every=100')
  const download = await watch(t, port, '/download')
  const poll = fetch(`http://127.0.0.1:${port}/poll`)
  await waitFor(() => inFlight(app, 't0') === 3, 2000, 'three requests in flight')
  const group = app.targetGroups.get('g')
  const startedMs = Date.now()
  t.equal(await group?.deregister('t0'), true)
  const [events, body, polled] = await Promise.all([stream.ended, download.ended, poll])
  t.ok(events.complete, 'the event stream ended with its chunked terminator: an EventSource reconnects, to another target')
  t.ok(events.atMs - startedMs < 3000, `within the delay: ${events.atMs - startedMs} ms`)
  t.ok(eventsIn(stream.text).length >= 3, 'its events came until then')
  t.match(stream.text, /\n\n$/, 'the body ends on a whole event')
  t.notOk(body.complete, 'the download is cut: the client sees it is incomplete')
  t.equal(polled.status, 502)
  t.match(await polled.json(), { code: 'FST_STICKY_TARGET_DEREGISTERED' })
  await waitFor(() => target.open === 0, 2000, 'every response at the target closed')
  t.equal(group?.describe().targets.length, 0, 'the target is gone')
  t.equal(group?.pendingTimers, 0, 'no drain timer left')
  t.equal(app.targetGroups.get('g')?.describe().targets.reduce((sum, each) => sum + each.inFlight, 0), 0)
})

test('app.close() ends an event stream cleanly and cuts another unfinished body within the idle timeout; a long poll gets its 504 as ever', async (t) => {
  const target = await longLivedTarget(t, 't0')
  const idleTimeoutMs = 1000
  const { app, port } = await gateway(t, { targets: [{ id: 't0', url: target.url }], stickiness: false }, { idleTimeoutMs })
  const stream = await watch(t, port, '/events?every=100')
  const download = await watch(t, port, '/download')
  // The poll came before app.close(): its own deadline passes before the close's grace ends.
  const poll = watch(t, port, '/poll')
  await waitFor(() => inFlight(app, 't0') === 3, 2000, 'three requests in flight')
  const startedMs = Date.now()
  const closed = app.close()
  const [events, body, polled] = await Promise.all([stream.ended, download.ended, poll])
  await closed
  const tookMs = Date.now() - startedMs
  t.ok(events.complete, 'the event stream ended with its chunked terminator')
  t.match(stream.text, /\n\n$/, 'on a whole event')
  t.notOk(body.complete, 'the download is cut')
  t.equal(polled.status, 504)
  await polled.ended
  t.match(JSON.parse(polled.text), { code: 'FST_STICKY_TARGET_TIMEOUT' })
  t.ok(tookMs < idleTimeoutMs + 3000, `app.close() settled in ${tookMs} ms`)
  await waitFor(() => target.open === 0, 2000, 'every response at the target closed')
})
