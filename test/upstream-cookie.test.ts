import type { AddressInfo } from 'node:net'
import { test, type Test } from 'tap'
import { stripGatewayCookies } from '../lib/gateway-cookies.js'
import type { FastifyStickyOptions } from '../lib/index.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, parseRawResponses, rawExchange, rawServer, startTargets } from './setup.js'

// The gateway's cookies stay at the gateway (HAProxy's `cookie … indirect`): the target gets the
// client's Cookie header without them, every other byte as it came.

/** [header, cookiePrefix, what the target gets ('' → no Cookie header)] */
const cases: Array<[string, string, string]> = [
  ['a=1; AWSALB=x; b=2', '', 'a=1; b=2'],
  ['AWSALB=x; a=1', '', 'a=1'],
  ['a=1; AWSALB=x', '', 'a=1'],
  ['a=1;AWSALB=x;b=2', '', 'a=1;b=2'],
  ['a=1;  AWSALB=x ;\tb=2 ', '', 'a=1;\tb=2 '],
  ['a=1; AWSALB=x;', '', 'a=1;'],
  ['AWSALB=x; AWSALBCORS=x; a=1', '', 'a=1'],
  ['AWSALB=x', '', ''],
  ['AWSALB=x; AWSALBCORS=x', '', ''],
  ['AWSALBTG=g; AWSALBTGCORS=g; AWSALBAPP-0=s0; AWSALBAPP-1=_remove_; AWSALBAPP-2=_remove_; AWSALBAPP-3=_remove_', '', ''],
  ['AWSALB=', '', ''],
  ['AWSALB="quoted"; sid=1', '', 'sid=1'],
  ['sid="v"; AWSALB="x y"; z=2', '', 'sid="v"; z=2'],
  // Names that merely start like the gateway's, or that are not at a pair's start, stay.
  ['AWSALBX=1; a=2', '', 'AWSALBX=1; a=2'],
  ['AWSALBAPP-4=1; AWSALBAPP=2; AWSALBTGX=3; awsalb=4', '', 'AWSALBAPP-4=1; AWSALBAPP=2; AWSALBTGX=3; awsalb=4'],
  ['AWSALB =1; a=2', '', 'a=2'],
  ['a=AWSALB=x; b="AWSALB=y"', '', 'a=AWSALB=x; b="AWSALB=y"'],
  ['note=a AWSALB=x; AWSALB=real', '', 'note=a AWSALB=x'],
  ['', '', ''],
  ['a=1', '', 'a=1'],
  // With a prefix, only the prefixed names are the gateway's: unprefixed ones belong to a layer in front.
  ['AWSALB=outer; IN-AWSALB=x; IN-AWSALBCORS=x; c=1', 'IN-', 'AWSALB=outer; c=1'],
  ['XIN-AWSALB=1; IN-AWSALBAPP-3=z', 'IN-', 'XIN-AWSALB=1'],
  ['IN-AWSALBTG=g; AWSALBTG=outer', 'IN-', 'AWSALBTG=outer']
]

test('stripGatewayCookies takes out exactly the gateway’s cookie-pairs and their separators', async (t) => {
  for (const [header, prefix, expected] of cases) {
    t.equal(stripGatewayCookies(header, prefix), expected, `${JSON.stringify(header)} with prefix ${JSON.stringify(prefix)}`)
  }
  const plain = 'a=1; b=2'
  t.equal(stripGatewayCookies(plain), plain, 'a header without the gateway’s cookies is returned as it is')
  // Browsers never put blanks before `=`, but an app whose parser trims names would read AWSALB.
  t.equal(stripGatewayCookies('a=1; AWSALB =x; b=2'), 'a=1; b=2', 'a blank before =')
  t.equal(stripGatewayCookies('AWSALBAPP-0\t=x;b=2'), 'b=2', 'a tab before =')
  t.equal(stripGatewayCookies('a=1; AWSALB x=1'), 'a=1; AWSALB x=1', 'AWSALB followed by another name is not ours')
})

/** A raw target that records each request's bytes and answers 200, closing the connection. */
async function recordingTarget (t: Test): Promise<{ url: string, requests: string[] }> {
  const requests: string[] = []
  const url = await rawServer(t, (socket, data) => {
    requests.push(data.toString('latin1'))
    socket.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok')
  })
  return { url, requests }
}

/** The Cookie lines of a raw request, as sent. */
function cookieLines (request: string): string[] {
  return request.split('\r\n\r\n')[0].split('\r\n').filter((line) => /^cookie:/i.test(line)).map((line) => line.slice(line.indexOf(':') + 1).trim())
}

async function listeningGateway (t: Test, url: string, options: Partial<FastifyStickyOptions> = {}): Promise<number> {
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 't0', url }] }], ...options })
  app.get('/x', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  return (app.server.address() as AddressInfo).port
}

/** Sends GET /x with the given Cookie lines on a raw socket; returns the Cookie lines the target got. */
async function cookiesThrough (t: Test, port: number, target: { requests: string[] }, cookies: string[]): Promise<string[]> {
  const before = target.requests.length
  const text = await rawExchange(port, `GET /x HTTP/1.1\r\nHost: shop.test\r\n${cookies.map((line) => `Cookie: ${line}\r\n`).join('')}Connection: close\r\n\r\n`)
  const [res] = parseRawResponses(text)
  t.equal(res?.status, 200, `the gateway answered: ${text}`)
  t.equal(target.requests.length, before + 1, 'the target got the request')
  return cookieLines(target.requests[before])
}

test('the target never sees the gateway’s cookies; every other byte of Cookie is as the client sent it', async (t) => {
  const target = await recordingTarget(t)
  const port = await listeningGateway(t, target.url)
  t.same(await cookiesThrough(t, port, target, ['a=1; AWSALB=x; b=2']), ['a=1; b=2'], 'one header')
  t.same(await cookiesThrough(t, port, target, ['sid="q; r"; AWSALBCORS=x; z="AWSALB=1"; AWSALBX=2']), ['sid="q; r"; z="AWSALB=1"; AWSALBX=2'],
    'quoted values, a value holding AWSALB=, a name that only starts with AWSALB')
  // HTTP/1.1 joins several Cookie lines with `; ` into one header.
  t.same(await cookiesThrough(t, port, target, ['a=1', 'AWSALB=x; AWSALBCORS=x', 'b=2']), ['a=1; b=2'], 'several Cookie lines')
  t.same(await cookiesThrough(t, port, target, ['AWSALB=x; AWSALBCORS=x', 'AWSALBAPP-0=y']), [], 'only the gateway’s cookies: no Cookie header at all')
  t.same(await cookiesThrough(t, port, target, ['a=1;b=2']), ['a=1;b=2'], 'a header without them goes as it came')
})

test('with cookiePrefix, only the prefixed cookies are the gateway’s', async (t) => {
  const target = await recordingTarget(t)
  const port = await listeningGateway(t, target.url, { cookiePrefix: 'IN-' })
  t.same(await cookiesThrough(t, port, target, ['AWSALB=outer; IN-AWSALB=x; IN-AWSALBCORS=x; IN-AWSALBTG=g; c=1']), ['AWSALB=outer; c=1'])
})

test('forwardStickyCookies: true sends the Cookie header on as it came', async (t) => {
  const target = await recordingTarget(t)
  const port = await listeningGateway(t, target.url, { forwardStickyCookies: true })
  t.same(await cookiesThrough(t, port, target, ['a=1; AWSALB=x; AWSALBCORS=x']), ['a=1; AWSALB=x; AWSALBCORS=x'])
})

test('a sticky client stays on its target while the target sees none of the stickiness cookies', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  exposeAffinity(app)
  app.get('/x', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const jar = new CookieJar()
  jar.cookies.set('sid', '1')
  const first = await app.inject({ url: '/x', headers: jar.headers() })
  jar.store(first.headers['set-cookie'])
  t.ok(jar.cookies.has('AWSALB'), 'the client got its cookie')
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ url: '/x', headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    t.equal(res.headers['x-affinity'], 'hit', `request ${i + 1}: the gateway still read its cookie`)
    t.equal(echoOf(res).target, echoOf(first).target, `request ${i + 1}: same target`)
    t.equal(echoOf(res).headers.cookie, 'sid=1', `request ${i + 1}: the target saw only the app’s cookie`)
  }
})
