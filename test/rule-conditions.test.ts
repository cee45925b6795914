import { test, type Test } from 'tap'
import Fastify from 'fastify'
import { compileConditions, type RuleConditionsOptions, type RuleRequest } from '../lib/rules/conditions.js'

const PATH = 'listeners[0].rules[1].conditions'

function requestOf (over: Partial<RuleRequest>): RuleRequest {
  return { method: 'GET', hostname: 'example.com', url: '/', headers: {}, ip: '127.0.0.1', ...over }
}

/** Each request, with whether the conditions must match it. */
type Cases = Array<[Partial<RuleRequest>, boolean]>

function check (t: Test, conditions: RuleConditionsOptions, cases: Cases): void {
  const compiled = compileConditions(conditions, PATH)
  for (const [over, expected] of cases) {
    t.equal(compiled.matches(requestOf(over)), expected, `${JSON.stringify(conditions)} ${expected ? 'matches' : 'does not match'} ${JSON.stringify(over)}`)
  }
}

test('pathPattern: anchored, case-sensitive, * spans slashes, ? is one character, the query is ignored', async (t) => {
  check(t, { pathPattern: ['/api/*'] }, [
    [{ url: '/api/items' }, true],
    [{ url: '/api/a/b/c' }, true],
    [{ url: '/api/' }, true],
    [{ url: '/api/items?id=3' }, true],
    [{ url: '/api' }, false],
    [{ url: '/API/items' }, false],
    [{ url: '/v1/api/items' }, false]
  ])
  check(t, { pathPattern: ['/img/*.png'] }, [
    [{ url: '/img/a/b.png' }, true],
    [{ url: '/img/a.png?size=2' }, true],
    [{ url: '/img/apng' }, false],
    [{ url: '/img/a.png/x' }, false],
    [{ url: '/img/a.PNG' }, false]
  ])
  check(t, { pathPattern: ['/a?c'] }, [
    [{ url: '/abc' }, true],
    [{ url: '/a/c' }, true],
    [{ url: '/ac' }, false],
    [{ url: '/abbc' }, false],
    [{ url: '/a?c' }, false]
  ])
  check(t, { pathPattern: ['/c++/(x)|y$'] }, [
    [{ url: '/c++/(x)|y$' }, true],
    [{ url: '/cc/x' }, false],
    [{ url: '/c/(x)|y$' }, false],
    [{ url: '/c++/x' }, false]
  ])
  check(t, { pathPattern: ['/a*b'] }, [
    [{ url: '/a/b' }, true],
    [{ url: '/a?x=b' }, false],
    [{ url: '/ax?b' }, false]
  ])
  check(t, { pathPattern: ['/a*b*c', '/exact'] }, [
    [{ url: '/a-b-c' }, true],
    [{ url: '/abc' }, true],
    [{ url: '/a-c-b' }, false],
    [{ url: '/exact' }, true],
    [{ url: '/exact/' }, false]
  ])
})

test('host: anchored, case-insensitive, wildcards, literal dots', async (t) => {
  check(t, { host: ['*.example.com'] }, [
    [{ hostname: 'api.example.com' }, true],
    [{ hostname: 'API.Example.COM' }, true],
    [{ hostname: 'a.b.example.com' }, true],
    [{ hostname: 'example.com' }, false],
    [{ hostname: 'api.example.com.evil.net' }, false],
    [{ hostname: 'apiXexample.com' }, false],
    [{ hostname: '' }, false]
  ])
  check(t, { host: ['www?.example.com', 'localhost'] }, [
    [{ hostname: 'www1.example.com' }, true],
    [{ hostname: 'WWW2.EXAMPLE.COM' }, true],
    [{ hostname: 'www.example.com' }, false],
    [{ hostname: 'www12.example.com' }, false],
    [{ hostname: 'LocalHost' }, true]
  ])
})

test('httpMethod: exact and case-sensitive, like ALB', async (t) => {
  check(t, { httpMethod: ['GET', 'HEAD', 'CUSTOM_VERB-X'] }, [
    [{ method: 'GET' }, true],
    [{ method: 'HEAD' }, true],
    [{ method: 'CUSTOM_VERB-X' }, true],
    [{ method: 'POST' }, false],
    [{ method: 'get' }, false],
    [{ method: 'GETS' }, false]
  ])
})

test('httpHeader: name looked up in lower case, values case-insensitive with wildcards, arrays by element, entries ANDed', async (t) => {
  check(t, { httpHeader: [{ name: 'User-Agent', values: ['*Mobile*', 'curl/?.*'] }] }, [
    [{ headers: { 'user-agent': 'Mozilla/5.0 (iPhone) Mobile Safari' } }, true],
    [{ headers: { 'user-agent': 'SOMETHING MOBILE' } }, true],
    [{ headers: { 'user-agent': 'curl/8.5.0' } }, true],
    [{ headers: { 'user-agent': 'curl/10.1' } }, false],
    [{ headers: { 'user-agent': 'Mozilla/5.0 (X11) Firefox' } }, false],
    [{ headers: {} }, false],
    [{ headers: { 'x-user-agent': 'Mobile' } }, false]
  ])
  check(t, { httpHeader: [{ name: 'x-tag', values: ['b*'] }] }, [
    [{ headers: { 'x-tag': ['alpha', 'Beta'] } }, true],
    [{ headers: { 'x-tag': ['alpha', 'gamma'] } }, false],
    [{ headers: { 'x-tag': [] } }, false],
    // A repeated header Node joined into one string is matched whole.
    [{ headers: { 'x-tag': 'alpha, beta' } }, false]
  ])
  check(t, { httpHeader: [{ name: 'x-tag', values: ['*, beta'] }] }, [
    [{ headers: { 'x-tag': 'alpha, beta' } }, true]
  ])
  check(t, { httpHeader: [{ name: 'x-env', values: ['beta', 'canary'] }, { name: 'x-region', values: ['eu-*'] }] }, [
    [{ headers: { 'x-env': 'canary', 'x-region': 'eu-west-1' } }, true],
    [{ headers: { 'x-env': 'BETA', 'x-region': 'EU-central-1' } }, true],
    [{ headers: { 'x-env': 'canary', 'x-region': 'us-east-1' } }, false],
    [{ headers: { 'x-env': 'prod', 'x-region': 'eu-west-1' } }, false],
    [{ headers: { 'x-region': 'eu-west-1' } }, false]
  ])
})

test('queryString: percent-decoded, case-insensitive, any entry and any pair; a missing key matches any key', async (t) => {
  check(t, { queryString: [{ key: 'version', value: 'v1' }, { value: '*example*' }] }, [
    [{ url: '/?version=v1' }, true],
    [{ url: '/items?VERSION=V1' }, true],
    [{ url: '/?x=1&version=v1&y=2' }, true],
    [{ url: '/?version=v2' }, false],
    [{ url: '/?v=v1' }, false],
    [{ url: '/?q=an%20Example%21' }, true],
    [{ url: '/?anything=example' }, true],
    [{ url: '/?example=1' }, false],
    [{ url: '/' }, false],
    [{ url: '/?' }, false],
    [{ url: '/example' }, false]
  ])
  check(t, { queryString: [{ key: 'q', value: 'a b/c' }] }, [
    [{ url: '/?q=a%20b%2Fc' }, true],
    [{ url: '/?q=a+b%2fc' }, true],
    [{ url: '/?%71=a%20b/c' }, true],
    [{ url: '/?q=a%2520b%2Fc' }, false]
  ])
  check(t, { queryString: [{ key: 'q', value: '\\*' }, { key: 'p', value: 'a?c' }] }, [
    [{ url: '/?q=*' }, true],
    [{ url: '/?q=%2A' }, true],
    [{ url: '/?q=x' }, false],
    [{ url: '/?p=abc' }, true],
    [{ url: '/?p=ac' }, false]
  ])
  check(t, { queryString: [{ key: 'id*', value: '%zz' }] }, [
    [{ url: '/?id2=%zz' }, true],
    [{ url: '/?xid=%zz' }, false]
  ])
})

test('sourceIp: IPv4 and IPv6 blocks, bare addresses, IPv4-mapped clients against IPv4 blocks', async (t) => {
  check(t, { sourceIp: ['10.0.0.0/8', '2001:db8::/32', '192.168.1.7'] }, [
    [{ ip: '10.1.2.3' }, true],
    [{ ip: '::ffff:10.1.2.3' }, true],
    [{ ip: '11.0.0.1' }, false],
    [{ ip: '::ffff:11.0.0.1' }, false],
    [{ ip: '2001:db8:1::5' }, true],
    [{ ip: '2001:db9::1' }, false],
    [{ ip: '192.168.1.7' }, true],
    [{ ip: '::ffff:192.168.1.7' }, true],
    [{ ip: '192.168.1.8' }, false],
    [{ ip: '::1' }, false],
    [{ ip: 'not-an-address' }, false],
    [{ ip: undefined as unknown as string }, false]
  ])
  check(t, { sourceIp: ['::1', '0.0.0.0/0'] }, [
    [{ ip: '::1' }, true],
    [{ ip: '::2' }, false],
    [{ ip: '203.0.113.9' }, true],
    [{ ip: '::ffff:203.0.113.9' }, true]
  ])
  check(t, { sourceIp: ['::ffff:10.0.0.0/104'] }, [
    [{ ip: '::ffff:10.9.9.9' }, true],
    [{ ip: '10.9.9.9' }, true],
    [{ ip: '11.9.9.9' }, false]
  ])
})

test('every condition must match (AND), any value within one may (OR)', async (t) => {
  check(t, { httpMethod: ['POST', 'PUT'], pathPattern: ['/api/*', '/rpc'], sourceIp: ['10.0.0.0/8'] }, [
    [{ method: 'POST', url: '/api/x', ip: '10.0.0.1' }, true],
    [{ method: 'PUT', url: '/rpc', ip: '10.0.0.1' }, true],
    [{ method: 'GET', url: '/api/x', ip: '10.0.0.1' }, false],
    [{ method: 'POST', url: '/web', ip: '10.0.0.1' }, false],
    [{ method: 'POST', url: '/api/x', ip: '192.0.2.1' }, false]
  ])
})

test('checks run cheapest first and stop at the first miss', async (t) => {
  const compiled = compileConditions({
    httpMethod: ['GET'],
    host: ['example.com'],
    pathPattern: ['/a'],
    httpHeader: [{ name: 'x-a', values: ['1'] }, { name: 'x-b', values: ['2'] }],
    queryString: [{ key: 'q', value: '1' }],
    sourceIp: ['127.0.0.1']
  }, PATH)
  const reads: string[] = []
  const spy = (values: RuleRequest): RuleRequest => ({
    get method () { reads.push('method'); return values.method },
    get hostname () { reads.push('hostname'); return values.hostname },
    get url () { reads.push('url'); return values.url },
    get headers () { reads.push('headers'); return values.headers },
    get ip () { reads.push('ip'); return values.ip }
  })
  const hit = requestOf({ url: '/a?q=1', headers: { 'x-a': '1', 'x-b': '2' } })
  t.equal(compiled.matches(spy(hit)), true, 'the full request matches')
  t.same(reads, ['method', 'hostname', 'url', 'headers', 'url', 'ip'], `read order, headers once for two entries: ${reads.join(',')}`)
  reads.length = 0
  t.equal(compiled.matches(spy({ ...hit, method: 'POST' })), false)
  t.same(reads, ['method'], `a method miss reads nothing else: ${reads.join(',')}`)
  reads.length = 0
  t.equal(compiled.matches(spy({ ...hit, hostname: 'other.com' })), false)
  t.same(reads, ['method', 'hostname'], `a host miss reads no url: ${reads.join(',')}`)
  reads.length = 0
  t.equal(compiled.matches(spy({ ...hit, url: '/b?q=1' })), false)
  t.same(reads, ['method', 'hostname', 'url'], `a path miss parses no query: ${reads.join(',')}`)
})

test('a long header cannot make a many-wildcard pattern backtrack for long', async (t) => {
  const compiled = compileConditions({ httpHeader: [{ name: 'x-a', values: ['*a*a*a*b'] }], pathPattern: ['/*a*a*a*b'] }, PATH)
  const long = 'a'.repeat(50_000)
  const started = performance.now()
  const missed = compiled.matches(requestOf({ url: '/' + long + 'b', headers: { 'x-a': long } }))
  const matched = compiled.matches(requestOf({ url: '/' + long + 'b', headers: { 'x-a': long + 'b' } }))
  const pathMissed = compiled.matches(requestOf({ url: '/' + long, headers: { 'x-a': long + 'b' } }))
  const elapsedMs = performance.now() - started
  t.same([missed, matched, pathMissed], [false, true, false], 'the answers are right')
  // A plain `^.*a.*a.*a.*b$` takes about 20 s on 800 characters.
  t.ok(elapsedMs < 500, `three matches on 50 000 characters took ${elapsedMs.toFixed(1)} ms`)
})

test('a real FastifyRequest fits RuleRequest: hostname without port, remote address, headers, url', async (t) => {
  const conditions = compileConditions({
    httpMethod: ['GET'],
    host: ['*.example.com'],
    pathPattern: ['/api/*'],
    httpHeader: [{ name: 'X-Env', values: ['beta'] }],
    queryString: [{ key: 'v', value: '2' }],
    sourceIp: ['10.0.0.0/8']
  }, PATH)
  const app = Fastify()
  t.teardown(() => app.close())
  app.get('/*', async (request) => ({ matches: conditions.matches(request) }))
  const ask = async (over: { url?: string, host?: string, env?: string, remoteAddress?: string }): Promise<unknown> => {
    const response = await app.inject({
      method: 'GET',
      url: over.url ?? '/api/items?v=2',
      headers: { host: over.host ?? 'shop.example.com:8080', 'x-env': over.env ?? 'BETA' },
      remoteAddress: over.remoteAddress ?? '10.1.2.3'
    })
    return response.json().matches
  }
  t.equal(await ask({}), true, 'every condition met')
  t.equal(await ask({ remoteAddress: '::ffff:10.1.2.3' }), true, 'IPv4-mapped client address')
  t.equal(await ask({ remoteAddress: '192.0.2.1' }), false, 'client outside the block')
  t.equal(await ask({ host: 'example.com' }), false, 'host outside *.example.com')
  t.equal(await ask({ host: 'SHOP.EXAMPLE.COM' }), true, 'host without port, any case')
  t.equal(await ask({ url: '/web/items?v=2' }), false, 'path outside /api/*')
  t.equal(await ask({ url: '/api/items?v=%32' }), true, 'query percent-decoded')
  t.equal(await ask({ url: '/api/items?v=3' }), false, 'query value differs')
  t.equal(await ask({ env: 'prod' }), false, 'header value differs')
})

test('valid conditions at the limits compile', async (t) => {
  const five = ['/1', '/2', '/3', '/4', '/5']
  const longest = '/' + 'a'.repeat(127)
  const compiled = compileConditions({
    pathPattern: [...five.slice(0, 4), longest],
    host: ['h'.repeat(128)],
    httpMethod: ['M'.repeat(40)],
    httpHeader: [{ name: 'x'.repeat(40), values: ['v'.repeat(128)] }],
    queryString: [{ key: 'k'.repeat(128), value: ' '.repeat(128) }],
    sourceIp: ['0.0.0.0/0', '::/0', '10.0.0.0/32', '::1/128', '1.2.3.4']
  }, PATH)
  t.equal(compiled.matches({
    method: 'M'.repeat(40),
    hostname: 'H'.repeat(128),
    url: `${longest}?${'k'.repeat(128)}=${'+'.repeat(128)}`,
    headers: { ['x'.repeat(40)]: 'V'.repeat(128) },
    ip: '::ffff:8.8.8.8'
  }), true, 'a request meeting every condition at its length limit')
})

const P = PATH
const TOO_LONG = '/' + 'a'.repeat(128)
const CONDITION_NAMES = 'pathPattern, host, httpMethod, httpHeader, queryString, sourceIp'
const PATH_EXPECTED = 'a path pattern starting with / (1 to 128 printable ASCII characters without spaces; * and ? are wildcards)'
const HOST_EXPECTED = 'a host pattern of 1 to 128 characters from A-Z a-z 0-9 - . (* and ? are wildcards)'
const METHOD_EXPECTED = 'an HTTP method of 1 to 40 characters from A-Z _ - (case-sensitive, like GET)'
const HEADER_NAME_EXPECTED = 'a header name of 1 to 40 token characters (RFC 7230)'
const HEADER_VALUE_EXPECTED = 'a header value pattern of 1 to 128 printable ASCII characters (* and ? are wildcards)'
const QUERY_KEY_EXPECTED = 'absent (any key) or a key pattern of 1 to 128 printable ASCII characters (* and ? are wildcards, \\* and \\? literal)'
const QUERY_VALUE_EXPECTED = 'a value pattern of 1 to 128 printable ASCII characters (* and ? are wildcards, \\* and \\? literal)'
const SOURCE_IP_EXPECTED = 'an IPv4 or IPv6 CIDR block such as 10.0.0.0/8 or 2001:db8::/32, or a bare address'

/** Each bad input, with the exact message it must produce. */
const cases: Array<[string, unknown, string]> = [
  ['conditions null', null, `${P} must be an object of conditions, received null`],
  ['conditions an array', [], `${P} must be an object of conditions, received an array of 0`],
  ['conditions a string', '/api/*', `${P} must be an object of conditions, received "/api/*"`],
  ['no condition', {}, `${P} must be an object with at least one condition (${CONDITION_NAMES}), received an object`],
  ['only undefined conditions', { pathPattern: undefined }, `${P} must be an object with at least one condition (${CONDITION_NAMES}), received an object`],
  ['unknown condition', { path: ['/'] }, `${P}.path is not an option (known: ${CONDITION_NAMES})`],
  ['ALB field name', { 'path-pattern': ['/'] }, `${P}.path-pattern is not an option (known: ${CONDITION_NAMES})`],
  ['pathPattern a string', { pathPattern: '/api/*' }, `${P}.pathPattern must be an array of 1 to 5 path patterns, received "/api/*"`],
  ['pathPattern empty', { pathPattern: [] }, `${P}.pathPattern must be an array of 1 to 5 path patterns, received an array of 0`],
  ['pathPattern of 6', { pathPattern: ['/1', '/2', '/3', '/4', '/5', '/6'] }, `${P}.pathPattern must be an array of 1 to 5 path patterns, received an array of 6`],
  ['path without a slash', { pathPattern: ['api/*'] }, `${P}.pathPattern[0] must be ${PATH_EXPECTED}, received "api/*"`],
  ['path with a space', { pathPattern: ['/', '/a b'] }, `${P}.pathPattern[1] must be ${PATH_EXPECTED}, received "/a b"`],
  ['path empty', { pathPattern: [''] }, `${P}.pathPattern[0] must be ${PATH_EXPECTED}, received ""`],
  ['path of 129', { pathPattern: [TOO_LONG] }, `${P}.pathPattern[0] must be ${PATH_EXPECTED}, received "${TOO_LONG.slice(0, 77)}..."`],
  ['path not ASCII', { pathPattern: ['/café'] }, `${P}.pathPattern[0] must be ${PATH_EXPECTED}, received "/café"`],
  ['path a number', { pathPattern: [5] }, `${P}.pathPattern[0] must be ${PATH_EXPECTED}, received 5`],
  ['host with a port', { host: ['example.com:8080'] }, `${P}.host[0] must be ${HOST_EXPECTED}, received "example.com:8080"`],
  ['host with an underscore', { host: ['a.b', 'exa_mple.com'] }, `${P}.host[1] must be ${HOST_EXPECTED}, received "exa_mple.com"`],
  ['host of 129', { host: ['h'.repeat(129)] }, `${P}.host[0] must be ${HOST_EXPECTED}, received "${'h'.repeat(77)}..."`],
  ['host empty list', { host: [] }, `${P}.host must be an array of 1 to 5 host patterns, received an array of 0`],
  ['method lower case', { httpMethod: ['get'] }, `${P}.httpMethod[0] must be ${METHOD_EXPECTED}, received "get"`],
  ['method of 41', { httpMethod: ['M'.repeat(41)] }, `${P}.httpMethod[0] must be ${METHOD_EXPECTED}, received "${'M'.repeat(41)}"`],
  ['method with a wildcard', { httpMethod: ['GET', 'P*'] }, `${P}.httpMethod[1] must be ${METHOD_EXPECTED}, received "P*"`],
  ['method a string', { httpMethod: 'GET' }, `${P}.httpMethod must be an array of 1 to 5 HTTP methods, received "GET"`],
  ['httpHeader an object', { httpHeader: { name: 'x', values: ['1'] } }, `${P}.httpHeader must be an array of 1 to 5 { name, values } objects, received an object`],
  ['httpHeader entry a string', { httpHeader: ['x-env'] }, `${P}.httpHeader[0] must be an object { name, values }, received "x-env"`],
  ['httpHeader entry unknown key', { httpHeader: [{ name: 'x', value: '1' }] }, `${P}.httpHeader[0].value is not an option (known: name, values)`],
  ['header name with a space', { httpHeader: [{ name: 'X Env', values: ['1'] }] }, `${P}.httpHeader[0].name must be ${HEADER_NAME_EXPECTED}, received "X Env"`],
  ['header name with a colon', { httpHeader: [{ name: 'x-env:', values: ['1'] }] }, `${P}.httpHeader[0].name must be ${HEADER_NAME_EXPECTED}, received "x-env:"`],
  ['header name of 41', { httpHeader: [{ name: 'x'.repeat(41), values: ['1'] }] }, `${P}.httpHeader[0].name must be ${HEADER_NAME_EXPECTED}, received "${'x'.repeat(41)}"`],
  ['header name missing', { httpHeader: [{ values: ['1'] }] }, `${P}.httpHeader[0].name must be ${HEADER_NAME_EXPECTED}, received undefined`],
  ['header name Host', { httpHeader: [{ name: 'x', values: ['1'] }, { name: 'Host', values: ['a.com'] }] }, `${P}.httpHeader[1].name must be a header other than host (ALB matches the host with the host condition), received "Host"`],
  ['header values missing', { httpHeader: [{ name: 'x' }] }, `${P}.httpHeader[0].values must be an array of 1 to 5 header value patterns, received undefined`],
  ['header values empty', { httpHeader: [{ name: 'x', values: [] }] }, `${P}.httpHeader[0].values must be an array of 1 to 5 header value patterns, received an array of 0`],
  ['header value a string list', { httpHeader: [{ name: 'x', values: 'a' }] }, `${P}.httpHeader[0].values must be an array of 1 to 5 header value patterns, received "a"`],
  ['header value with a tab', { httpHeader: [{ name: 'x', values: ['a', 'b', 'a\tb'] }] }, `${P}.httpHeader[0].values[2] must be ${HEADER_VALUE_EXPECTED}, received "a\\tb"`],
  ['header value empty', { httpHeader: [{ name: 'x', values: [''] }] }, `${P}.httpHeader[0].values[0] must be ${HEADER_VALUE_EXPECTED}, received ""`],
  ['header value of 129', { httpHeader: [{ name: 'x', values: ['v'.repeat(129)] }] }, `${P}.httpHeader[0].values[0] must be ${HEADER_VALUE_EXPECTED}, received "${'v'.repeat(77)}..."`],
  ['queryString entry null', { queryString: [null] }, `${P}.queryString[0] must be an object { key?, value }, received null`],
  ['queryString of 6', { queryString: Array(6).fill({ value: 'a' }) }, `${P}.queryString must be an array of 1 to 5 { key?, value } objects, received an array of 6`],
  ['queryString entry unknown key', { queryString: [{ name: 'q', value: '1' }] }, `${P}.queryString[0].name is not an option (known: key, value)`],
  ['query key empty', { queryString: [{ key: '', value: '1' }] }, `${P}.queryString[0].key must be ${QUERY_KEY_EXPECTED}, received ""`],
  ['query key null', { queryString: [{ key: null, value: '1' }] }, `${P}.queryString[0].key must be ${QUERY_KEY_EXPECTED}, received null`],
  ['query value missing', { queryString: [{ key: 'q' }] }, `${P}.queryString[0].value must be ${QUERY_VALUE_EXPECTED}, received undefined`],
  ['query value a number', { queryString: [{ value: 'a' }, { key: 'q', value: 1 }] }, `${P}.queryString[1].value must be ${QUERY_VALUE_EXPECTED}, received 1`],
  ['query value not ASCII', { queryString: [{ value: 'é' }] }, `${P}.queryString[0].value must be ${QUERY_VALUE_EXPECTED}, received "é"`],
  ['sourceIp a string', { sourceIp: '10.0.0.0/8' }, `${P}.sourceIp must be an array of 1 to 5 CIDR blocks, received "10.0.0.0/8"`],
  ['IPv4 prefix 33', { sourceIp: ['10.0.0.0/33'] }, `${P}.sourceIp[0] must be ${SOURCE_IP_EXPECTED}, received "10.0.0.0/33"`],
  ['IPv6 prefix 129', { sourceIp: ['10.0.0.0/8', '2001:db8::/129'] }, `${P}.sourceIp[1] must be ${SOURCE_IP_EXPECTED}, received "2001:db8::/129"`],
  ['prefix with a leading zero', { sourceIp: ['10.0.0.0/08'] }, `${P}.sourceIp[0] must be ${SOURCE_IP_EXPECTED}, received "10.0.0.0/08"`],
  ['empty prefix', { sourceIp: ['10.0.0.0/'] }, `${P}.sourceIp[0] must be ${SOURCE_IP_EXPECTED}, received "10.0.0.0/"`],
  ['short IPv4', { sourceIp: ['10.0.0/8'] }, `${P}.sourceIp[0] must be ${SOURCE_IP_EXPECTED}, received "10.0.0/8"`],
  ['IPv6 with a zone', { sourceIp: ['fe80::1%eth0'] }, `${P}.sourceIp[0] must be ${SOURCE_IP_EXPECTED}, received "fe80::1%eth0"`],
  ['a host name', { sourceIp: ['example.com'] }, `${P}.sourceIp[0] must be ${SOURCE_IP_EXPECTED}, received "example.com"`],
  ['a number', { sourceIp: [167772160] }, `${P}.sourceIp[0] must be ${SOURCE_IP_EXPECTED}, received 167772160`]
]

test('every condition mistake throws FST_STICKY_OPTION_INVALID with its exact message', async (t) => {
  for (const [what, raw, message] of cases) {
    let error: { code?: unknown, message?: unknown } | undefined
    try {
      compileConditions(raw, P)
    } catch (err) {
      error = err as { code?: unknown, message?: unknown }
    }
    t.equal(error?.code, 'FST_STICKY_OPTION_INVALID', `${what}: code`)
    t.equal(error?.message, `Invalid fastify-sticky option: ${message}`, `${what}: message`)
  }
})
