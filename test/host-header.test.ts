import type { AddressInfo } from 'node:net'
import { test } from 'tap'
import { stickyProxy } from '../lib/index.js'
import { buildGateway, rawRequest, startTargets, type Echo, type RawResponse } from './setup.js'

// RFC 9112 §3.2: a request with more than one Host header is answered 400. Node keeps the first
// and drops the others, so only the raw headers tell; sent on raw sockets, since a client
// library would merge or refuse them.

function codeOf (res: RawResponse): string | undefined {
  try {
    return (JSON.parse(res.body) as { code?: string }).code
  } catch {
    return undefined
  }
}

test('a request with two Host headers is refused with 400 and reaches no target, whatever their case or values', async (t) => {
  const [target] = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: target.id, url: target.url }] }] })
  app.get('/cart/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.register(stickyProxy, { prefix: '/api', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  const twice = ['Host: a.example\r\nHost: b.example', 'Host: a.example\r\nhost: a.example', 'HOST: a.example\r\nhost: b.example', 'Host: a.example\r\nX-A: 1\r\nhOsT: a.example']
  for (const path of ['/cart/x', '/api/x', 'http://a.example/cart/x']) {
    for (const hosts of twice) {
      const res = await rawRequest(port, `GET ${path} HTTP/1.1\r\n${hosts}\r\nConnection: close\r\n\r\n`)
      const what = `${path} with ${JSON.stringify(hosts)}`
      t.equal(res.status, 400, `${what}: 400, got ${res.status} ${res.body}`)
      t.equal(codeOf(res), 'FST_STICKY_REQUEST_INVALID', `${what}: our code, got ${res.body}`)
    }
  }
  t.equal(target.hits, 0, `none of them reached the target: ${target.hits}`)
  const one = await rawRequest(port, 'GET /cart/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n')
  t.equal(one.status, 200, `one Host header: forwarded, ${one.status} ${one.body}`)
  if (one.status === 200) t.equal((JSON.parse(one.body) as Echo).headers.host, 'a.example', 'with that Host')
})

test('what Node refuses before routing stays answered, never forwarded: HTTP/1.1 without Host, two Content-Length headers', async (t) => {
  const [target] = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: target.id, url: target.url }] }] })
  await app.register(stickyProxy, { prefix: '/api', targetGroup: 'g' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  const requests = [
    'GET /api/x HTTP/1.1\r\nConnection: close\r\n\r\n',
    'POST /api/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx',
    'POST /api/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n'
  ]
  for (const request of requests) {
    const res = await rawRequest(port, request)
    t.equal(res.status, 400, `${JSON.stringify(request)}: answered 400, got ${res.status} ${res.body}`)
  }
  t.equal(target.hits, 0, `none of them reached the target: ${target.hits}`)
})
