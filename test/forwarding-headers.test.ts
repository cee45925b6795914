import type { AddressInfo } from 'node:net'
import { test, type Test } from 'tap'
import type { FastifyServerOptions } from 'fastify'
import type { FastifyStickyOptions } from '../lib/index.js'
import { buildGateway, parseRawResponses, rawExchange, startTargets, type Echo } from './setup.js'

// One trust rule for X-Forwarded-For, -Proto, -Port, -Host and Forwarded: only a peer that
// trustedProxies names may speak for the client; from anyone else the gateway says what it saw.

/** What a client claims in every forwarding header. */
const CLAIMS = [
  'X-Forwarded-For: 203.0.113.7, 198.51.100.1',
  'X-Forwarded-Proto: https',
  'X-Forwarded-Port: 8443',
  'X-Forwarded-Host: shop.example',
  'Forwarded: for=203.0.113.7;proto=https;host=shop.example'
]

interface Gateway {
  port: number
  /** The address the gateway listens on, as its peers see it. */
  host: string
}

async function echoGateway (t: Test, options: Partial<FastifyStickyOptions> = {}, server: FastifyServerOptions = {}, host = '127.0.0.1'): Promise<Gateway> {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 't0', url: targets[0].url }] }], ...options }, server)
  app.get('/x', { config: { targetGroup: 'g' } }, (request, reply) => {
    reply.header('x-seen-protocol', request.protocol)
    return reply.forward()
  })
  await app.listen({ port: 0, host })
  return { port: (app.server.address() as AddressInfo).port, host }
}

/** Sends GET /x with `lines` on a raw socket; returns the headers the target got, and the response's head. */
async function through (t: Test, gateway: Gateway, lines: string[]): Promise<Echo['headers'] & { head?: string }> {
  const text = await rawExchange(gateway.port, `GET /x HTTP/1.1\r\nHost: gw.test\r\n${lines.map((line) => `${line}\r\n`).join('')}Connection: close\r\n\r\n`, gateway.host)
  const [res] = parseRawResponses(text)
  t.equal(res?.status, 200, `the gateway answered: ${text}`)
  return { ...(JSON.parse(res.body) as Echo).headers, head: res.head }
}

const FORWARDING = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-port', 'x-forwarded-host', 'forwarded'] as const

function forwarding (seen: Echo['headers']): Record<string, unknown> {
  return Object.fromEntries(FORWARDING.filter((name) => name in seen).map((name) => [name, seen[name]]))
}

test('from a peer not trusted (the default), the forwarding headers say only what the gateway saw', async (t) => {
  const gateway = await echoGateway(t)
  const seen = await through(t, gateway, CLAIMS)
  t.same(forwarding(seen), { 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-port': String(gateway.port) },
    'X-Forwarded-For is the socket address alone, Proto and Port are the gateway’s, Host and Forwarded are gone')
})

test("from a peer not trusted, every xForwardedFor mode: 'append' and 'preserve' send the socket address, 'remove' none", async (t) => {
  for (const mode of ['append', 'preserve', 'remove'] as const) {
    const gateway = await echoGateway(t, { xForwardedFor: mode })
    const claimed = forwarding(await through(t, gateway, CLAIMS))
    const none = forwarding(await through(t, gateway, []))
    const expected = mode === 'remove' ? undefined : '127.0.0.1'
    t.equal(claimed['x-forwarded-for'], expected, `${mode}, with a claimed X-Forwarded-For: ${JSON.stringify(claimed)}`)
    t.equal(none['x-forwarded-for'], expected, `${mode}, without one: ${JSON.stringify(none)}`)
    t.notOk('forwarded' in claimed || 'x-forwarded-host' in claimed, `${mode}: no Forwarded or X-Forwarded-Host: ${JSON.stringify(claimed)}`)
  }
})

test('from a trusted proxy, its forwarding headers are passed on, X-Forwarded-For in ALB’s modes', async (t) => {
  const append = await echoGateway(t, { trustedProxies: '127.0.0.1' })
  t.same(forwarding(await through(t, append, CLAIMS)), {
    'x-forwarded-for': '203.0.113.7, 198.51.100.1, 127.0.0.1',
    'x-forwarded-proto': 'https',
    'x-forwarded-port': '8443',
    'x-forwarded-host': 'shop.example',
    forwarded: 'for=203.0.113.7;proto=https;host=shop.example'
  }, 'append: the proxy’s address after the chain it sent')
  t.same(forwarding(await through(t, append, [])), { 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-port': String(append.port) },
    'a trusted proxy that claims nothing: the gateway’s own')

  const preserve = await echoGateway(t, { trustedProxies: '127.0.0.1', xForwardedFor: 'preserve' })
  t.equal((await through(t, preserve, CLAIMS))['x-forwarded-for'], '203.0.113.7, 198.51.100.1', 'preserve: as the proxy sent it')
  t.notOk('x-forwarded-for' in (await through(t, preserve, [])), 'preserve: none when the proxy sent none')

  const remove = await echoGateway(t, { trustedProxies: '127.0.0.1', xForwardedFor: 'remove' })
  const removed = await through(t, remove, CLAIMS)
  t.notOk('x-forwarded-for' in removed, `remove: none, ${JSON.stringify(forwarding(removed))}`)
  t.equal(removed['x-forwarded-host'], 'shop.example', 'remove touches X-Forwarded-For only')
})

test('from a trusted proxy, a malformed X-Forwarded-Proto or -Port is replaced by the gateway’s own', async (t) => {
  const gateway = await echoGateway(t, { trustedProxies: '127.0.0.1' })
  const own = { 'x-forwarded-proto': 'http', 'x-forwarded-port': String(gateway.port) }
  for (const [proto, port] of [['javascript', '0'], ['https, http', '99999'], ['', '443x'], ['ftp', '-1'], ['HTTP ', '1e3']]) {
    const seen = forwarding(await through(t, gateway, [`X-Forwarded-Proto: ${proto}`, `X-Forwarded-Port: ${port}`]))
    t.same({ 'x-forwarded-proto': seen['x-forwarded-proto'], 'x-forwarded-port': seen['x-forwarded-port'] }, own, `${JSON.stringify(proto)} and ${JSON.stringify(port)}`)
  }
  const upper = forwarding(await through(t, gateway, ['X-Forwarded-Proto: HTTPS', 'X-Forwarded-Port: 443']))
  t.same([upper['x-forwarded-proto'], upper['x-forwarded-port']], ['https', '443'], 'a well-formed one in capitals is passed on in lower case')
})

test('trustedProxies in each of Fastify’s forms: true, a string, an array, a function', async (t) => {
  const calls: Array<[string, number]> = []
  const forms: Array<[string, FastifyStickyOptions['trustedProxies'], boolean]> = [
    ['true', true, true],
    ['false', false, false],
    ['a string of several', '10.0.0.0/8, 127.0.0.0/8', true],
    ['a string of others', '10.0.0.1, ::1', false],
    ['an array', ['192.168.0.0/16', '127.0.0.1/32'], true],
    ['a named range', 'loopback', true],
    ['an array of others', ['10.0.0.0/8'], false],
    ['a function', (address, hop) => { calls.push([address, hop]); return address === '127.0.0.1' }, true],
    ['a function saying no', () => false, false]
  ]
  for (const [what, trustedProxies, trusted] of forms) {
    const gateway = await echoGateway(t, { trustedProxies })
    const seen = await through(t, gateway, ['X-Forwarded-For: 203.0.113.7', 'X-Forwarded-Host: shop.example'])
    t.equal(seen['x-forwarded-for'], trusted ? '203.0.113.7, 127.0.0.1' : '127.0.0.1', `${what}: X-Forwarded-For`)
    t.equal(seen['x-forwarded-host'], trusted ? 'shop.example' : undefined, `${what}: X-Forwarded-Host`)
  }
  t.same(calls, [['127.0.0.1', 0]], 'the function is asked with the peer’s address and hop 0')
})

test('an IPv4-mapped IPv6 peer is trusted by its IPv4 address', async (t) => {
  // A socket bound to ::ffff:127.0.0.1 sees its peers as ::ffff:127.0.0.1.
  const gateway = await echoGateway(t, { trustedProxies: '127.0.0.1' }, {}, '::ffff:127.0.0.1')
  const seen = await through(t, gateway, ['X-Forwarded-For: 203.0.113.7', 'X-Forwarded-Proto: https'])
  t.equal(seen['x-forwarded-for'], '203.0.113.7, ::ffff:127.0.0.1', 'trusted: its chain is kept, the socket address appended as the socket gives it')
  t.equal(seen['x-forwarded-proto'], 'https')
  const block = await echoGateway(t, { trustedProxies: ['127.0.0.0/8'] }, {}, '::ffff:127.0.0.1')
  t.equal((await through(t, block, ['X-Forwarded-For: 203.0.113.7']))['x-forwarded-for'], '203.0.113.7, ::ffff:127.0.0.1', 'and by an IPv4 block')
  const other = await echoGateway(t, { trustedProxies: '10.0.0.0/8' }, {}, '::ffff:127.0.0.1')
  t.equal((await through(t, other, ['X-Forwarded-For: 203.0.113.7']))['x-forwarded-for'], '::ffff:127.0.0.1', 'not in the list: not trusted')
})

test('trust is judged once per connection, not per request', async (t) => {
  const peers: string[] = []
  const gateway = await echoGateway(t, { trustedProxies: (address) => { peers.push(address); return true } })
  const request = (close: boolean) => `GET /x HTTP/1.1\r\nHost: gw.test\r\nX-Forwarded-For: 203.0.113.7\r\n${close ? 'Connection: close\r\n' : ''}\r\n`
  const text = await rawExchange(gateway.port, request(false) + request(false) + request(true))
  const responses = parseRawResponses(text)
  t.same(responses.map((res) => res.status), [200, 200, 200], `three answers on one connection: ${text}`)
  for (const res of responses) t.equal((JSON.parse(res.body) as Echo).headers['x-forwarded-for'], '203.0.113.7, 127.0.0.1')
  t.same(peers, ['127.0.0.1'], 'asked once for the connection')
  await through(t, gateway, ['X-Forwarded-For: 203.0.113.7'])
  t.same(peers, ['127.0.0.1', '127.0.0.1'], 'and once more for a new connection')
})

test('a forwarding header named in Connection is dropped with its value, but what the gateway adds is still sent', async (t) => {
  const connection = 'Connection: keep-alive, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Port, X-Forwarded-Host, Forwarded'
  for (const trustedProxies of ['127.0.0.1', undefined]) {
    const gateway = await echoGateway(t, { trustedProxies })
    const seen = await through(t, gateway, [connection, ...CLAIMS])
    t.same(forwarding(seen), { 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-port': String(gateway.port) },
      `${trustedProxies === undefined ? 'untrusted' : 'trusted'} peer: the gateway’s own X-Forwarded-For, -Proto and -Port, nothing of the client’s`)
  }
})

test('Fastify’s trustProxy governs request.protocol, not what is forwarded', async (t) => {
  const gateway = await echoGateway(t, {}, { trustProxy: true })
  const seen = await through(t, gateway, ['X-Forwarded-Proto: https', 'X-Forwarded-For: 203.0.113.7'])
  t.match(seen.head, /\r\nx-seen-protocol: https/i, 'request.protocol believes the header, as trustProxy says')
  t.equal(seen['x-forwarded-proto'], 'http', 'the target is told the gateway’s own protocol: trustedProxies is not set')
  t.equal(seen['x-forwarded-for'], '127.0.0.1')
})

test('more than 30 X-Forwarded-For addresses are ALB’s 463, from any peer', async (t) => {
  const addresses = Array.from({ length: 31 }, (_, i) => `10.0.0.${i + 1}`).join(', ')
  for (const trustedProxies of ['127.0.0.1', undefined]) {
    const gateway = await echoGateway(t, { trustedProxies })
    const [res] = parseRawResponses(await rawExchange(gateway.port, `GET /x HTTP/1.1\r\nHost: gw.test\r\nX-Forwarded-For: ${addresses}\r\nConnection: close\r\n\r\n`))
    t.equal(res?.status, 463, `${trustedProxies === undefined ? 'untrusted' : 'trusted'}: ${res?.head}`)
  }
})
