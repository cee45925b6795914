import fc from 'fast-check'
import { test } from 'tap'
import { COOKIE_PURPOSE_LB } from '../lib/cookie-codec.js'
import { readLbCookies } from '../lib/stickiness/lb-cookie.js'
import { checkProperty, cookieHeader, cookieValue, gatewayCookieNames, shrinkBudget, testCodec } from './fuzz.js'
import { CASE_HEADER, fuzzGateway, valuesOf, type FuzzGateway, type Reply, type TargetRecord } from './fuzz-gateway.js'

// Cookie headers as clients send them, through a real gateway: the same request with the same
// cookies always goes where its cookie says, and the gateway's own cookies are the gateway's:
// they never reach a target.

const RUNS = 150
const codec = testCodec()
const PREFIXES = ['', 'gw-']

/** Values the gateway would have sealed for each of its targets (and one for another group). */
function sealedFor (now: number): string[] {
  const seconds = Math.floor(now / 1000)
  return ['t0', 't1', 't0', 't1', 'gone'].map((targetId, i) => codec.seal(COOKIE_PURPOSE_LB, { group: i === 4 ? 'other' : 'g', targetId, stickyUntilSeconds: seconds + 3600, issuedAtSeconds: seconds }))
}

/** A request carrying 1 or 2 Cookie headers, on one of the gateway's three kinds of route. */
interface CookieCase {
  readonly method: string
  readonly path: string
  readonly cookies: readonly string[]
}

function cookieCase (prefix: string, sealed: readonly string[]): fc.Arbitrary<CookieCase> {
  const own = gatewayCookieNames(prefix)
  const names = [...own, `${prefix}AWSALB`, `${prefix}AWSALB`, `${prefix}AWSALBCORS`, ...gatewayCookieNames(''), ...gatewayCookieNames('gw-'), 'sid', 'theme']
  // Controls are what Node's parser refuses: out, so that the requests reach a target.
  const header = cookieHeader(names, cookieValue(sealed)).map((text) => text.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, ''))
  return fc.record({
    method: fc.constantFrom('GET', 'GET', 'HEAD', 'DELETE', 'OPTIONS'),
    path: fc.constantFrom('/x/a', '/p/a?q=1', '/app/a', '/', '/p'),
    cookies: fc.array(header, { minLength: 1, maxLength: 2 })
  })
}

function render (request: CookieCase, tag: number, gw: FuzzGateway): Buffer {
  const cookies = request.cookies.map((value) => `Cookie: ${value}\r\n`).join('')
  return Buffer.from(`${request.method} ${request.path} HTTP/1.1\r\nHost: ${gw.address}\r\n${CASE_HEADER}: ${tag}\r\n${cookies}\r\n`, 'utf8')
}

function describeReply (reply: Reply): string {
  return reply.kind === 'response' ? `${reply.response.status} ${JSON.stringify(reply.response.headers)}` : `${reply.kind} ${JSON.stringify(reply.data.slice(0, 200))}`
}

let tags = 0

async function exchange (gw: FuzzGateway, request: CookieCase): Promise<{ reply: Reply, records: TargetRecord[] }> {
  const tag = ++tags
  const reply = await gw.send(render(request, tag, gw), { method: request.method, reuse: true, end: false })
  await gw.settle()
  return { reply, records: gw.take(tag) }
}

/** The names of the cookie-pairs a Cookie header holds (RFC 6265: the name before `=`, trimmed). */
function pairNames (header: string): string[] {
  return header.split(';').filter((pair) => pair.includes('=')).map((pair) => pair.slice(0, pair.indexOf('=')).trim())
}

for (const prefix of PREFIXES) {
  const under = prefix === '' ? '' : ` (cookiePrefix '${prefix}')`

  test(`the same request with the same cookies is decided the same way twice, and a hit goes to the target its cookie names${under}`, async (t) => {
    const gw = await fuzzGateway(t, { cookiePrefix: prefix })
    const sealed = sealedFor(Date.now())
    const targetOf = new Map(sealed.map((value, i) => [value, i === 4 ? null : ['t0', 't1'][i % 2]]))
    await checkProperty(t, 'two sends, one decision; a hit is served by its cookie\'s target', fc.asyncProperty(cookieCase(prefix, sealed), shrinkBudget(async (request) => {
      const first = await exchange(gw, request)
      const second = await exchange(gw, request)
      if (first.reply.kind !== 'response' || second.reply.kind !== 'response') throw new Error(`no response: ${describeReply(first.reply)} / ${describeReply(second.reply)}`)
      const [a, b] = [first.reply.response, second.reply.response]
      if (a.status >= 500 || b.status >= 500) throw new Error(`answered ${a.status}, ${b.status}`)
      const affinity = [valuesOf(a.headers, 'x-affinity')[0], valuesOf(b.headers, 'x-affinity')[0]]
      const served = [valuesOf(a.headers, 'x-served-by')[0], valuesOf(b.headers, 'x-served-by')[0]]
      if (affinity[0] !== affinity[1]) throw new Error(`decided ${affinity[0]}, then ${affinity[1]}`)
      if (affinity[0] === 'hit') {
        if (served[0] !== served[1]) throw new Error(`a hit, served by ${served[0]}, then by ${served[1]}`)
        // Node joins repeated Cookie headers with `; `: the first candidate that opens names the target.
        const candidates = readLbCookies(request.cookies.join('; '), `${prefix}AWSALB`)
        const named = candidates.map((value) => targetOf.get(value)).find((target) => target !== undefined && target !== null)
        if (named !== served[0]) throw new Error(`a hit on ${served[0]}, but the cookie names ${String(named)} (candidates ${JSON.stringify(candidates)})`)
      }
      return true
    })), RUNS)
  })

  test(`the gateway's own cookies never reach a target${under}`, async (t) => {
    const gw = await fuzzGateway(t, { cookiePrefix: prefix })
    const own = new Set(gatewayCookieNames(prefix))
    await checkProperty(t, 'no Cookie header upstream holds a pair named as one of the gateway\'s cookies', fc.asyncProperty(cookieCase(prefix, sealedFor(Date.now())), shrinkBudget(async (request) => {
      const { records } = await exchange(gw, request)
      for (const record of records) {
        const leaked = valuesOf(record.headers, 'cookie').flatMap(pairNames).filter((name) => own.has(name))
        if (leaked.length > 0) throw new Error(`the target got ${JSON.stringify(valuesOf(record.headers, 'cookie'))}: ${leaked.join(', ')}`)
      }
      return true
    })), RUNS)
  })
}
