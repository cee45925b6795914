import fc from 'fast-check'
import { test } from 'tap'
import { anyString, checkProperty, cookieHeader, cookieToken, cookieValue, gatewayCookieNames, lenientResolvesDots, PATH_SEGMENTS, PATH_SEPARATORS, shrinkBudget } from './fuzz.js'
import { CASE_HEADER, fuzzGateway, valuesOf, type FuzzGateway, type Reply, type TargetRecord } from './fuzz-gateway.js'

// Raw requests against a real gateway: request lines, request targets and headers as a client
// may write them, well-formed or not. Whatever comes, the gateway answers without a 500 and
// stays up; its targets get only paths the route forwards, never a hop-by-hop header, and no
// server but a registered target is ever reached.

/** Cases per property in `npm test`: each is a request on a socket. */
const RUNS = 150

/** One generated request. */
interface RequestCase {
  readonly method: string
  readonly target: string
  readonly version: string
  readonly headers: ReadonlyArray<readonly [string, string]>
  /** The bytes after the header section. */
  readonly body: string
  /** Half-close after writing: the request (or its body) is cut short. */
  readonly end: boolean
  /** Well-formed by construction: its connection may carry the next case. */
  readonly clean: boolean
}

/** A Connection header's tokens, including those naming end-to-end headers the gateway must then drop. */
const CONNECTION_TOKENS = ['keep-alive', 'close', 'upgrade', 'x-hop', 'X-Hop', 'cookie', 'te', 'authorization', 'x-forwarded-for', 'x-other-hop', 'accept', 'host', 'content-length', 'transfer-encoding', 'Keep-Alive', 'x-hop ']
/** Hop-by-hop headers (RFC 9110 §7.6.1) and headers only a Connection header makes hop-by-hop. */
const HOP_HEADERS: Array<[string, string]> = [['Keep-Alive', 'timeout=5'], ['Proxy-Connection', 'keep-alive'], ['TE', 'trailers'], ['TE', 'gzip'], ['Trailer', 'X-T'],
  ['Upgrade', 'websocket'], ['Upgrade', 'h2c'], ['Proxy-Authorization', 'Basic Zm9vOmJhcg=='], ['HTTP2-Settings', 'AAMAAABkAAQAAP__'], ['Expect', '100-continue'],
  ['X-Hop', 'secret'], ['X-Other-Hop', 'secret'], ['Authorization', 'Bearer x'], ['Accept', '*/*']]
const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'POST', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']
const ODD_METHODS = ['TRACE', 'CONNECT', 'PROPFIND', 'QUERY', 'get', 'GE T', '', 'G\u00e9T']
/** Requests whose body could hold a second request, were it framed wrongly. */
const SMUGGLED = ['GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n', '0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n', 'POST /smuggled HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc']
/** What the forbidden server's address may be spelt as. */
const ABSOLUTE_SCHEMES = ['http://', 'http://', 'https://', 'HTTP://', 'Http://', 'http:/', 'ftp://', 'javascript:', 'http:\\\\']

/** The case's bytes on the wire: Node reads them as latin1, so does the comparison. */
function wireOf (text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1')
}

/** The path and query find-my-way routes an absolute-form target on (null: it answers 404), as sent. */
function routedPathOf (sent: string): string | null {
  // Node's parser ends the target at the first space: `GET /  HTTP/1.1` asks for `/`.
  const space = sent.indexOf(' ')
  const target = space === -1 ? sent : sent.slice(0, space)
  if (target.startsWith('/')) return target
  const schemeEnd = target.indexOf('://')
  if (schemeEnd === -1) return null
  const scheme = target.slice(0, schemeEnd).toLowerCase()
  if (scheme !== 'http' && scheme !== 'https') return null
  const authorityStart = schemeEnd + 3
  const pathStart = target.indexOf('/', authorityStart)
  const queryStart = target.indexOf('?', authorityStart)
  if (target.includes('#', authorityStart)) return null
  if (queryStart !== -1 && (pathStart === -1 || queryStart < pathStart)) return `/${target.slice(queryStart)}`
  return pathStart === -1 ? '/' : target.slice(pathStart)
}

/** Percent-encodes what the WHATWG URL serializer or encodeRequestTarget would: two spellings of one path compare equal. */
function canonical (path: string): string {
  return path.replace(/[^\x21-\x7e]|["'<>`{}]/g, (c) => [...Buffer.from(c, 'utf8')].map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`).join(''))
}

/** What a route may send for a routed path: as it is (a user route), or with `/p` (as routed: `/%70` too) rewritten to `/r` (stickyProxy). */
function forwardedPaths (routed: string): string[] {
  const prefix = /^\/(?:p|%70)/.exec(routed)?.[0]
  const rest = prefix === undefined ? routed : routed.slice(prefix.length)
  const proxied = `/r${rest === '' || rest[0] === '?' ? `/${rest}` : rest}`
  return [canonical(routed), canonical(proxied), canonical(`/r${rest}`)]
}

/** The request's bytes, tagged with its case number. */
function render (request: RequestCase, tag: number): Buffer {
  const head = `${request.method} ${request.target} ${request.version}\r\n${CASE_HEADER}: ${tag}\r\n${request.headers.map(([name, value]) => `${name}: ${value}\r\n`).join('')}\r\n`
  return Buffer.from(head + request.body, 'utf8')
}

/** How the body is framed, and whether the framing is one Node reads without doubt. */
interface Framing {
  readonly headers: Array<[string, string]>
  readonly body: string
  readonly end: boolean
  readonly clean: boolean
}

function bodyFraming (): fc.Arbitrary<Framing> {
  const content = fc.oneof({ weight: 6, arbitrary: anyString(40) }, { weight: 3, arbitrary: fc.constantFrom(...SMUGGLED) }, { weight: 1, arbitrary: fc.constant('x'.repeat(70_000)) })
  const length = (text: string): number => Buffer.byteLength(text, 'utf8')
  const chunked = (text: string): string => (text === '' ? '' : `${length(text).toString(16)}\r\n${text}\r\n`) + '0\r\n\r\n'
  return fc.oneof(
    { weight: 6, arbitrary: fc.constant<Framing>({ headers: [], body: '', end: false, clean: true }) },
    { weight: 3, arbitrary: content.map((text): Framing => ({ headers: [['Content-Length', String(length(text))]], body: text, end: false, clean: true })) },
    { weight: 2, arbitrary: content.map((text): Framing => ({ headers: [['Transfer-Encoding', 'chunked']], body: chunked(text), end: false, clean: true })) },
    {
      weight: 2,
      arbitrary: fc.tuple(content, fc.integer({ min: 1, max: 10 }), fc.integer({ min: 0, max: 9 })).map(([text, k, kind]): Framing => {
        const n = length(text)
        switch (kind) {
          case 0: return { headers: [['Content-Length', String(n + k)]], body: text, end: true, clean: false }
          case 1: return { headers: [['Content-Length', String(Math.max(0, n - k))]], body: text, end: false, clean: false }
          case 2: return { headers: [['Content-Length', String(n)], ['Content-Length', String(n)]], body: text, end: false, clean: false }
          case 3: return { headers: [['Content-Length', String(n)], ['Content-Length', String(n + k)]], body: text, end: true, clean: false }
          case 4: return { headers: [['Transfer-Encoding', 'chunked'], ['Content-Length', String(n)]], body: chunked(text), end: false, clean: false }
          case 5: return { headers: [['Transfer-Encoding', ['chunked, chunked', 'gzip, chunked', 'Chunked', 'identity', 'chunked ', 'xchunked', 'chunked;x'][k % 7]]], body: chunked(text), end: false, clean: false }
          case 6: return { headers: [['Transfer-Encoding', 'chunked']], body: `${['zz', '-1', '0x5', 'ffffffffffffffff', '5 ', '5;ext=1'][k % 6]}\r\nhello\r\n0\r\n\r\n`, end: true, clean: false }
          case 7: return { headers: [['Content-Length', [' 5', '+5', '5x', '-1', '0x5', '99999999999999999999'][k % 6]]], body: 'hello', end: true, clean: false }
          case 8: return { headers: [['Transfer-Encoding', 'chunked'], ['Transfer-Encoding', 'chunked']], body: chunked(text), end: false, clean: false }
          default: return { headers: [['Content-Length', String(n)]], body: text + SMUGGLED[k % SMUGGLED.length], end: false, clean: false }
        }
      })
    }
  )
}

/** Requests of every kind, aimed at the gateway `gw`, naming the forbidden server and the targets wherever a request can name a host. */
function requestCase (gw: FuzzGateway): fc.Arbitrary<RequestCase> {
  const hosts = [gw.address, gw.address, gw.forbiddenAddress, gw.targetAddresses[0], 'evil.example', `user:pw@${gw.forbiddenAddress}`, `${gw.forbiddenAddress}@evil.example`, 'localhost', '[::1]:1']
  // Plain names often, so that many requests reach a target; every spelling of a dot segment, and anything, too.
  const segment = fc.oneof({ weight: 10, arbitrary: fc.constantFrom('a', 'b', 'admin', 'x', '.well-known', '...', 'a.b', '', '~', '%41', 'a;b', '*') },
    { weight: 6, arbitrary: fc.constantFrom(...PATH_SEGMENTS) }, { weight: 2, arbitrary: fc.string({ maxLength: 5 }) }, { weight: 1, arbitrary: anyString(5) })
  const path = fc.tuple(fc.constantFrom('/', '/x/', '/p/', '/p', '/app/', '//', '/%70/', '/P/', '/pa', ''), fc.array(fc.tuple(fc.constantFrom(...PATH_SEPARATORS), segment), { maxLength: 5 }), fc.option(fc.oneof({ weight: 8, arbitrary: fc.constantFrom('?q=1', '?next=../x', '?a=%2e%2e', '?', '?a=1&b=%20') }, { weight: 1, arbitrary: fc.constant('?x=a b') }), { nil: '' }))
    .map(([start, parts, query]) => `${start}${parts.map(([separator, s], i) => (i === 0 && start.endsWith('/') ? '' : separator) + s).join('')}${query}`)
  const target = fc.oneof(
    { weight: 6, arbitrary: path.map((p) => (p.startsWith('/') ? p : `/${p}`)) },
    { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...ABSOLUTE_SCHEMES), fc.constantFrom(...hosts), path).map(([scheme, host, p]) => scheme + host + p) },
    { weight: 1, arbitrary: fc.constantFrom('*', gw.forbiddenAddress, `//${gw.forbiddenAddress}/x`, `http://${gw.forbiddenAddress}`, `http://${gw.forbiddenAddress}?x`, 'javascript:alert(1)', 'mailto:x@evil.example') },
    { weight: 1, arbitrary: anyString(20) }
  )
  const method = fc.oneof({ weight: 16, arbitrary: fc.constantFrom(...METHODS) }, { weight: 1, arbitrary: fc.constantFrom(...ODD_METHODS) }, { weight: 1, arbitrary: cookieToken })
  const version = fc.oneof({ weight: 20, arbitrary: fc.constant('HTTP/1.1') }, { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'http/1.1', 'HTTP/1.1 ', '') })
  const name = (text: string): fc.Arbitrary<string> => fc.oneof({ weight: 3, arbitrary: fc.constant(text) }, { weight: 1, arbitrary: fc.mixedCase(fc.constant(text)) })
  const sealedCookies = cookieValue([])
  const header: fc.Arbitrary<[string, string]> = fc.oneof(
    { weight: 1, arbitrary: fc.tuple(name('Host'), fc.constantFrom(...hosts, '', 'a b', 'evil.example\r\nX-Injected: 1')) },
    { weight: 3, arbitrary: fc.tuple(name('Connection'), fc.tuple(fc.subarray(CONNECTION_TOKENS, { minLength: 1, maxLength: 4 }), fc.constantFrom(', ', ',', ' ,\t')).map(([tokens, separator]) => tokens.join(separator))) },
    { weight: 4, arbitrary: fc.constantFrom(...HOP_HEADERS).chain(([n, v]) => fc.tuple(name(n), fc.constant(v))) },
    { weight: 2, arbitrary: fc.tuple(name('X-Forwarded-For'), fc.constantFrom('1.2.3.4', '1.2.3.4, 5.6.7.8', '', 'a'.repeat(100))) },
    { weight: 1, arbitrary: fc.constantFrom<[string, string]>(['X-Forwarded-Proto', 'https'], ['X-Forwarded-Port', '443'], ['X-Forwarded-Host', gw.forbiddenAddress], ['Forwarded', `for=1.2.3.4;host=${gw.forbiddenAddress};proto=https`]) },
    // Cookie values of any text; controls are what Node's parser refuses, so they are rare.
    { weight: 3, arbitrary: fc.tuple(name('Cookie'), fc.tuple(cookieHeader([...gatewayCookieNames(''), 'sid'], sealedCookies), fc.integer({ min: 0, max: 7 }).map((n) => n === 0)).map(([text, raw]) => (raw ? text : text.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, '')))) },
    { weight: 3, arbitrary: fc.tuple(cookieToken.map((text) => `x-${text}`), fc.string({ maxLength: 20 })) },
    // Names and values Node's parser may refuse: the request must then get a 400.
    { weight: 1, arbitrary: fc.tuple(fc.oneof(anyString(8), fc.constantFrom('X Y', 'x:y', '', ' Host', 'Host ', 'x\u0000')), fc.oneof(anyString(12), fc.constantFrom('a\r\nInjected: 1', 'a\nb', 'a\rb', '\u0000'))) }
  )
  // HTTP/1.1 needs a Host header (Node refuses a request without one): nearly always the gateway's.
  const host = fc.oneof({ weight: 12, arbitrary: fc.constant<Array<[string, string]>>([['Host', gw.address]]) },
    { weight: 3, arbitrary: fc.constantFrom(...hosts).map((value): Array<[string, string]> => [['Host', value]]) },
    { weight: 1, arbitrary: fc.constant<Array<[string, string]>>([]) })
  return fc.tuple(method, target, version, host, fc.array(header, { maxLength: 6 }), fc.nat(), bodyFraming())
    .map(([m, t, v, hostHeader, generated, at, framing]) => {
      // A copy: fast-check keeps the generated values to shrink them.
      const headers = [...generated]
      headers.splice(at % (headers.length + 1), 0, ...hostHeader)
      const all = [...headers, ...framing.headers]
      const tidy = (text: string): boolean => /^[\x21-\x7e]*$/.test(text)
      // After a request with an Upgrade header, Node's server parses nothing more on that
      // connection (no 'upgrade' listener yet: WebSockets come later): such a request gets a
      // connection of its own.
      const clean = framing.clean && v === 'HTTP/1.1' && METHODS.includes(m) && tidy(t) &&
        headers.every(([n, value]) => /^[A-Za-z0-9-]+$/.test(n) && /^[\x20-\x7e]*$/.test(value) && n.toLowerCase() !== 'upgrade')
      return { method: m, target: t, version: v, headers: all, body: framing.body, end: framing.end, clean }
    })
}

/** Sends a case; returns the reply and what the targets got for it. */
async function exchange (gw: FuzzGateway, request: RequestCase, tag: number): Promise<{ reply: Reply, records: TargetRecord[] }> {
  const reply = await gw.send(render(request, tag), { method: request.method, reuse: request.clean, end: request.end })
  await gw.settle()
  return { reply, records: gw.take(tag) }
}

/** A short description of a reply, for messages. */
function describeReply (reply: Reply): string {
  return reply.kind === 'response' ? `${reply.response.status} ${reply.response.body.toString('latin1').slice(0, 200)}` : `${reply.kind} ${JSON.stringify(reply.data.slice(0, 200))}`
}

/** The property's end: the forbidden server got nothing, the pools connected to targets only, no request reached a target untagged, and the gateway still answers. */
async function checkAfter (t: Tap, gw: FuzzGateway): Promise<void> {
  t.equal(gw.forbiddenConnections(), 0, 'the forbidden server got no connection')
  t.same(gw.connectAttempts.filter((address) => !gw.targetAddresses.includes(address)), [], `the gateway connected to its targets only: ${JSON.stringify([...new Set(gw.connectAttempts)])}`)
  t.same(gw.untagged.map((record) => `${record.method} ${record.url}`), [], `every request a target got (${gw.recordCount()}) is one the gateway received (none smuggled in a body)`)
  t.same(gw.pipelined.filter((record) => !record.url.startsWith('/') || lenientResolvesDots(record.url)).map((record) => record.url), [], `requests a client pipelined (${gw.pipelined.length}) reached the targets as origin-form paths without dot segments too`)
  const control = await gw.send(Buffer.from(`GET /x/alive HTTP/1.1\r\nHost: ${gw.address}\r\nConnection: close\r\n\r\n`), { method: 'GET', reuse: false, end: false })
  t.ok(control.kind === 'response' && control.response.status === 200, `the gateway still answers: ${describeReply(control)}`)
}

interface Tap {
  ok (value: unknown, message: string): unknown
  equal (found: unknown, wanted: unknown, message: string): unknown
  same (found: unknown, wanted: unknown, message: string): unknown
  teardown (fn: () => unknown): void
}

let tags = 0

test('never a 500, and a request the gateway cannot read gets a 400 or a closed connection', async (t) => {
  const gw = await fuzzGateway(t)
  await checkProperty(t, 'every reply is a response below 500 or a closed connection; a target answers at most once, and only 200s', fc.asyncProperty(requestCase(gw), shrinkBudget(async (request) => {
    const tag = ++tags
    const { reply, records } = await exchange(gw, request, tag)
    if (reply.kind === 'timeout') throw new Error(`no reply within the deadline: ${describeReply(reply)}`)
    if (records.length > 1) throw new Error(`the targets got the request ${records.length} times`)
    if (reply.kind === 'closed') return true
    const { status, headers } = reply.response
    if (status >= 500) throw new Error(`answered ${describeReply(reply)}`)
    const servedBy = valuesOf(headers, 'x-served-by')
    // `OPTIONS *` is the one 200 the gateway gives itself (a question about the server).
    if (status === 200 && request.method === 'OPTIONS' && request.target === '*' && records.length === 0) return true
    if (status === 200 && (records.length !== 1 || servedBy[0] !== records[0].target)) throw new Error(`200 from ${JSON.stringify(servedBy)}, the targets got ${records.length}`)
    if (status !== 200 && records.length > 0) throw new Error(`a target got the request, yet the client got ${describeReply(reply)}`)
    return true
  })), RUNS)
  await checkAfter(t, gw)
})

/** The path and query the WHATWG URL parser reads in a target; null when it reads none. */
function parsedPathOf (wire: string): string | null {
  try {
    const url = new URL(wire)
    return `${url.pathname}${url.search}`
  } catch {
    return null
  }
}

/**
 * True for a target that is not origin-form and that the router and the URL parser read
 * differently: dot segments (known), a `\` read as `/`, or a scheme other than http(s)
 * (`ftp://gw/x`), routed on the whole string yet forwarded with the URL's path (or with `/`
 * before the whole string, when the URL parser refuses it).
 */
function absoluteDiffers (wire: string): boolean {
  if (wire.startsWith('/')) return false
  const routed = routedPathOf(wire)
  const parsed = parsedPathOf(wire)
  if (routed === null || parsed === null) return true
  return lenientResolvesDots(routed) || canonical(routed) !== canonical(parsed)
}

/** Throws unless every request a target got for `request` has the path its route forwards, with no dot segment. */
function checkPaths (request: RequestCase, records: readonly TargetRecord[]): void {
  const wire = wireOf(request.target)
  const routed = routedPathOf(wire)
  for (const record of records) {
    if (!record.url.startsWith('/')) throw new Error(`the target got ${JSON.stringify(record.url)}`)
    if (lenientResolvesDots(record.url)) throw new Error(`the target got ${JSON.stringify(record.url)}, whose dot segments a lenient target resolves`)
    if (routed === null) throw new Error(`the target got ${JSON.stringify(record.url)} for ${JSON.stringify(wire)}, which routes nowhere`)
    if (lenientResolvesDots(routed)) throw new Error(`the target got ${JSON.stringify(record.url)} for ${JSON.stringify(wire)}, which has dot segments`)
    if (!forwardedPaths(routed).includes(canonical(record.url))) throw new Error(`the target got ${JSON.stringify(record.url)} for ${JSON.stringify(wire)} (routed as ${JSON.stringify(routed)})`)
  }
}

test('the target gets only the path its route forwards, never with a dot segment, and no other server is reached', async (t) => {
  const gw = await fuzzGateway(t)
  await checkProperty(t, 'what reaches a target is the routed path as sent (or its stickyProxy rewrite), without dot segments', fc.asyncProperty(requestCase(gw), shrinkBudget(async (request) => {
    // Absolute-form targets, read differently by the router and the URL parser, are the next property's.
    fc.pre(!absoluteDiffers(wireOf(request.target)))
    // `OPTIONS *` is answered by the gateway (a property of its own, below).
    fc.pre(request.target !== '*')
    const { records } = await exchange(gw, request, ++tags)
    checkPaths(request, records)
    return true
  })), RUNS)
  await checkAfter(t, gw)
})

test('an absolute-form target is forwarded as routed, and refused with 400 when it has a dot segment', async (t) => {
  const gw = await fuzzGateway(t)
  await checkProperty(t, 'an absolute-form target: 400 when its path has a dot segment, else the routed path reaches the target', fc.asyncProperty(requestCase(gw), shrinkBudget(async (request) => {
    const wire = wireOf(request.target)
    fc.pre(!wire.startsWith('/'))
    const { reply, records } = await exchange(gw, request, ++tags)
    const routed = routedPathOf(wire)
    // Refused: the gateway's 400, or a 4xx Fastify or Node gave before it (415 for a body without Content-Type, 431).
    if (routed !== null && lenientResolvesDots(routed) && reply.kind === 'response' && (reply.response.status < 400 || reply.response.status >= 500)) throw new Error(`answered ${describeReply(reply)}`)
    checkPaths(request, records)
    return true
  })), RUNS)
  await checkAfter(t, gw)
})

test('OPTIONS * is answered by the gateway, never forwarded', async (t) => {
  const gw = await fuzzGateway(t)
  await checkProperty(t, 'no target gets a request for *', fc.asyncProperty(requestCase(gw).map((request) => ({ ...request, method: 'OPTIONS', target: '*' })), shrinkBudget(async (request) => {
    const { reply, records } = await exchange(gw, request, ++tags)
    if (records.length > 0) throw new Error(`a target got ${records[0].method} ${records[0].url}; the client got ${describeReply(reply)}`)
    return true
  })), 50)
})

/** Headers that belong to one connection, whatever else the client listed in Connection (the gateway's own `Connection: keep-alive` aside). */
const HOP_BY_HOP = ['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'http2-settings', 'expect']
/** Headers the gateway writes itself, whatever the client listed: the body's framing, the target's Host, X-Forwarded-*. */
const GATEWAY_WRITES = ['host', 'content-length', 'transfer-encoding', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-port']

/** Throws unless `record` carries no hop-by-hop header of `request`'s, and X-Forwarded-Proto and -Port are the gateway's own. */
function checkHeaders (gw: FuzzGateway, request: RequestCase, record: TargetRecord): void {
  const names = new Set(record.headers.map(([name]) => name))
  for (const name of HOP_BY_HOP) if (names.has(name)) throw new Error(`the target got ${name}: ${JSON.stringify(valuesOf(record.headers, name))}`)
  // The gateway's pool manages its own connection to the target: only its own token, never the client's list.
  const connection = valuesOf(record.headers, 'connection')
  if (connection.length > 1 || (connection.length === 1 && connection[0] !== 'keep-alive' && connection[0] !== 'close')) throw new Error(`the target got connection: ${JSON.stringify(connection)}`)
  const listed = request.headers.filter(([name]) => name.toLowerCase() === 'connection')
    .flatMap(([, value]) => value.toLowerCase().split(',').map((token) => token.trim()))
  for (const token of listed) {
    if (!GATEWAY_WRITES.includes(token) && names.has(token)) throw new Error(`the client listed ${token} in Connection, yet the target got it: ${JSON.stringify(valuesOf(record.headers, token))}`)
  }
  const framing = valuesOf(record.headers, 'transfer-encoding')
  if (framing.length > 0 && (framing.length > 1 || framing[0] !== 'chunked' || names.has('content-length'))) throw new Error(`the target got transfer-encoding ${JSON.stringify(framing)} with content-length ${JSON.stringify(valuesOf(record.headers, 'content-length'))}`)
  const proto = valuesOf(record.headers, 'x-forwarded-proto')
  const port = valuesOf(record.headers, 'x-forwarded-port')
  if (proto.length !== 1 || proto[0] !== 'http' || port.length !== 1 || port[0] !== String(gw.port)) throw new Error(`the target got x-forwarded-proto ${JSON.stringify(proto)}, x-forwarded-port ${JSON.stringify(port)}`)
  const forwardedFor = valuesOf(record.headers, 'x-forwarded-for')
  if (forwardedFor.length !== 1 || !/(^|, )127\.0\.0\.1$/.test(forwardedFor[0])) throw new Error(`the target got x-forwarded-for ${JSON.stringify(forwardedFor)}`)
}

test('no hop-by-hop header reaches a target, nor one the client listed in Connection', async (t) => {
  const gw = await fuzzGateway(t)
  await checkProperty(t, 'upstream requests carry no hop-by-hop header, and the gateway\'s own X-Forwarded-*', fc.asyncProperty(requestCase(gw), shrinkBudget(async (request) => {
    const { records } = await exchange(gw, request, ++tags)
    for (const record of records) checkHeaders(gw, request, record)
    return true
  })), RUNS)
  await checkAfter(t, gw)
})

test('a request with two Host headers is refused', async (t) => {
  const gw = await fuzzGateway(t)
  const hosts = fc.constantFrom(gw.address, gw.forbiddenAddress, 'evil.example', '')
  await checkProperty(t, 'two Host headers: 400, and no target gets it', fc.asyncProperty(requestCase(gw), hosts, hosts, fc.nat(), shrinkBudget(async (request, first, second, at) => {
    const headers = request.headers.filter(([name]) => name.toLowerCase() !== 'host')
    headers.splice(at % (headers.length + 1), 0, ['Host', first], ['Host', second])
    const { reply, records } = await exchange(gw, { ...request, headers, target: '/x/y', method: 'GET', version: 'HTTP/1.1' }, ++tags)
    // The gateway's 400, or a 4xx Node gave before it (431 for headers too large).
    if (records.length > 0 || (reply.kind === 'response' && (reply.response.status < 400 || reply.response.status >= 500))) throw new Error(`answered ${describeReply(reply)}; the targets got ${records.length}`)
    return true
  })), 50)
})
