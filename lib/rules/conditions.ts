import type { IncomingHttpHeaders } from 'node:http'
import { BlockList, isIP } from 'node:net'
import { FST_STICKY_OPTION_INVALID } from '../errors.js'
import { originFormOf } from '../request-target.js'
import { invalid } from '../validate.js'

/** What a condition reads from a request; a FastifyRequest satisfies it structurally. */
export interface RuleRequest {
  readonly method: string
  /** Host without port (Fastify's request.hostname, which honours trustProxy). */
  readonly hostname: string
  /** Path and query as received, e.g. '/api/items?id=3' (Fastify's request.url). */
  readonly url: string
  readonly headers: IncomingHttpHeaders
  /** Client address (Fastify's request.ip, which honours trustProxy), e.g. '127.0.0.1' or '::ffff:127.0.0.1' or '::1'. */
  readonly ip: string
}

/**
 * The conditions of a listener rule as given in plugin options, after ALB's condition types.
 * Each list holds 1 to 5 entries; `*` matches any run of characters and `?` exactly one.
 *
 * @example
 * const conditions: RuleConditionsOptions = {
 *   pathPattern: ['/api/*'],
 *   httpHeader: [{ name: 'user-agent', values: ['*Mobile*'] }],
 *   sourceIp: ['10.0.0.0/8', '2001:db8::/32']
 * }
 */
export interface RuleConditionsOptions {
  /** Patterns for the path (not the query), starting with `/`; case-sensitive. */
  pathPattern?: string[]
  /** Patterns for the host name without port, from A-Z a-z 0-9 - .; case-insensitive. */
  host?: string[]
  /** Methods such as GET, compared exactly (ALB: case-sensitive). */
  httpMethod?: string[]
  /** Header name and value patterns (case-insensitive); every entry must match. */
  httpHeader?: Array<{ name: string, values: string[] }>
  /** Patterns for the percent-decoded query (case-insensitive; `\*` and `\?` are literal); any entry may match. A missing key matches any key. */
  queryString?: Array<{ key?: string, value: string }>
  /** IPv4 or IPv6 CIDR blocks, or bare addresses, holding the client address. */
  sourceIp?: string[]
}

/** Compiled conditions: every given condition must match (AND); within one, any value matches (OR). */
export interface RuleConditions {
  /** Whether the request meets every condition; called on every proxied request. */
  matches (request: RuleRequest): boolean
}

const CONDITION_KEYS = ['pathPattern', 'host', 'httpMethod', 'httpHeader', 'queryString', 'sourceIp']
const HEADER_KEYS = ['name', 'values']
const QUERY_KEYS = ['key', 'value']
/** ALB takes up to 3 values per condition and 5 per rule; one list here may use all 5. */
const MAX_VALUES = 5
const PATH_PATTERN = /^\/[\x21-\x7e]{0,127}$/
const HOST_PATTERN = /^[A-Za-z0-9.*?-]{1,128}$/
const METHOD_PATTERN = /^[A-Z_-]{1,40}$/
const HEADER_NAME_PATTERN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,40}$/
// Spaces allowed: header values (User-Agent) and decoded query values carry them.
const VALUE_PATTERN = /^[\x20-\x7e]{1,128}$/
const CIDR_PATTERN = /^([0-9A-Fa-f:.]+)(?:\/(0|[1-9][0-9]{0,2}))?$/

const PATH_EXPECTED = 'a path pattern starting with / (1 to 128 printable ASCII characters without spaces; * and ? are wildcards)'
const HOST_EXPECTED = 'a host pattern of 1 to 128 characters from A-Z a-z 0-9 - . (* and ? are wildcards)'
const METHOD_EXPECTED = 'an HTTP method of 1 to 40 characters from A-Z _ - (case-sensitive, like GET)'
const HEADER_NAME_EXPECTED = 'a header name of 1 to 40 token characters (RFC 7230)'
const HEADER_VALUE_EXPECTED = 'a header value pattern of 1 to 128 printable ASCII characters (* and ? are wildcards)'
const QUERY_KEY_EXPECTED = 'absent (any key) or a key pattern of 1 to 128 printable ASCII characters (* and ? are wildcards, \\* and \\? literal)'
const QUERY_VALUE_EXPECTED = 'a value pattern of 1 to 128 printable ASCII characters (* and ? are wildcards, \\* and \\? literal)'
const SOURCE_IP_EXPECTED = 'an IPv4 or IPv6 CIDR block such as 10.0.0.0/8 or 2001:db8::/32, or a bare address'

interface HeaderMatcher {
  readonly name: string
  readonly pattern: RegExp
}

interface QueryMatcher {
  /** Null: any key. */
  readonly key: RegExp | null
  readonly value: RegExp
}

/** How wildcard patterns of one condition type become a RegExp. */
interface WildcardSyntax {
  readonly flags: '' | 'i'
  /** What `*` and `?` may stand for. */
  readonly any: string
  /** What must follow the match. */
  readonly end: string
  /** Whether `\*` and `\?` are literal (ALB: query strings only). */
  readonly escapes: boolean
}

const PATH_SYNTAX: WildcardSyntax = { flags: '', any: '[^?]', end: '(?:\\?|$)', escapes: false }
const HOST_SYNTAX: WildcardSyntax = { flags: 'i', any: '[\\s\\S]', end: '$', escapes: false }
const HEADER_SYNTAX = HOST_SYNTAX
const QUERY_SYNTAX: WildcardSyntax = { flags: 'i', any: '[\\s\\S]', end: '$', escapes: true }

/** Validates and compiles `raw` (the option at `path`, e.g. 'listeners[0].rules[2].conditions'); throws FST_STICKY_OPTION_INVALID via `invalid()`. */
export function compileConditions (raw: unknown, path: string): RuleConditions {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) invalid(path, 'an object of conditions', raw)
  const options = raw as Record<string, unknown>
  refuseUnknownKeys(options, CONDITION_KEYS, path)
  // ALB: only the default rule goes without a condition.
  if (CONDITION_KEYS.every((key) => options[key] === undefined)) {
    invalid(path, `an object with at least one condition (${CONDITION_KEYS.join(', ')})`, raw)
  }

  const pathPatterns = optionalList(options.pathPattern, `${path}.pathPattern`, 'path patterns', (value, at) => {
    if (typeof value !== 'string' || !PATH_PATTERN.test(value)) invalid(at, PATH_EXPECTED, value)
    return value
  })
  const hosts = optionalList(options.host, `${path}.host`, 'host patterns', (value, at) => {
    if (typeof value !== 'string' || !HOST_PATTERN.test(value)) invalid(at, HOST_EXPECTED, value)
    return value
  })
  const methods = optionalList(options.httpMethod, `${path}.httpMethod`, 'HTTP methods', (value, at) => {
    if (typeof value !== 'string' || !METHOD_PATTERN.test(value)) invalid(at, METHOD_EXPECTED, value)
    return value
  })
  const headers = optionalList(options.httpHeader, `${path}.httpHeader`, '{ name, values } objects', compileHeader)
  const query = optionalList(options.queryString, `${path}.queryString`, '{ key?, value } objects', compileQuery)
  const sourceIp = optionalList(options.sourceIp, `${path}.sourceIp`, 'CIDR blocks', parseCidr)

  let blocks: BlockList | null = null
  if (sourceIp !== null) {
    blocks = new BlockList()
    for (const [address, prefix, family] of sourceIp) blocks.addSubnet(address, prefix, family)
  }
  return new CompiledConditions({
    methods: methods === null ? null : new Set(methods),
    host: hosts === null ? null : compileWildcards(hosts, HOST_SYNTAX),
    path: pathPatterns === null ? null : compileWildcards(pathPatterns, PATH_SYNTAX),
    headers: headers ?? [],
    query,
    sourceIp: blocks
  })
}

class CompiledConditions implements RuleConditions {
  readonly #methods: ReadonlySet<string> | null
  readonly #host: RegExp | null
  readonly #path: RegExp | null
  readonly #headers: readonly HeaderMatcher[]
  readonly #query: readonly QueryMatcher[] | null
  readonly #sourceIp: BlockList | null

  constructor (compiled: {
    methods: ReadonlySet<string> | null
    host: RegExp | null
    path: RegExp | null
    headers: readonly HeaderMatcher[]
    query: readonly QueryMatcher[] | null
    sourceIp: BlockList | null
  }) {
    this.#methods = compiled.methods
    this.#host = compiled.host
    this.#path = compiled.path
    this.#headers = compiled.headers
    this.#query = compiled.query
    this.#sourceIp = compiled.sourceIp
  }

  matches (request: RuleRequest): boolean {
    if (this.#methods !== null && !this.#methods.has(request.method)) return false
    if (this.#host !== null && !this.#host.test(request.hostname)) return false
    // The path RegExp stops at the first '?', so the url needs no slicing.
    if (this.#path !== null && !this.#path.test(pathOf(request.url))) return false
    if (this.#headers.length > 0) {
      // Read once: Fastify's headers getter may copy them on every read.
      const headers = request.headers
      for (const header of this.#headers) {
        // Own headers only: Node's headers object has a prototype (`constructor`, `__proto__`).
        if (!matchesHeader(Object.hasOwn(headers, header.name) ? headers[header.name] : undefined, header.pattern)) return false
      }
    }
    if (this.#query !== null && !matchesQuery(request.url, this.#query)) return false
    if (this.#sourceIp !== null) {
      const ip = request.ip
      // Checked as ipv6, an IPv4-mapped address (::ffff:10.1.2.3) matches IPv4 blocks too.
      if (typeof ip !== 'string' || !this.#sourceIp.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4')) return false
    }
    return true
  }
}

const ENCODED_UNRESERVED = /%(?:[46][1-9A-F]|[57][0-9A]|3[0-9]|2[DE]|5F|7E)/gi

/**
 * The path the target will be sent, as a rule must see it: the absolute form
 * (`GET http://host/admin`) reduced to its path as the proxy does, and percent-encoded unreserved
 * characters (`/%61dmin`) decoded, as RFC 3986 §6.2.2.2 makes them equivalent and targets read
 * them. Either way a client could otherwise pass a rule for a path its target still serves.
 */
function pathOf (url: string): string {
  const path = url.charCodeAt(0) === 47 /* / */ ? url : originFormOf(url) ?? url
  return path.includes('%') ? path.replace(ENCODED_UNRESERVED, (escape) => String.fromCharCode(parseInt(escape.slice(1), 16))) : path
}

function matchesHeader (value: string | string[] | undefined, pattern: RegExp): boolean {
  if (typeof value === 'string') return pattern.test(value)
  if (value === undefined) return false
  // ALB searches every occurrence of a repeated header in order.
  for (const one of value) {
    if (pattern.test(one)) return true
  }
  return false
}

function matchesQuery (url: string, matchers: readonly QueryMatcher[]): boolean {
  const start = url.indexOf('?')
  if (start === -1) return false
  for (const [key, value] of new URLSearchParams(url.slice(start + 1))) {
    for (const matcher of matchers) {
      if ((matcher.key === null || matcher.key.test(key)) && matcher.value.test(value)) return true
    }
  }
  return false
}

function compileHeader (raw: unknown, path: string): HeaderMatcher {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) invalid(path, 'an object { name, values }', raw)
  const entry = raw as Record<string, unknown>
  refuseUnknownKeys(entry, HEADER_KEYS, path)
  const name = entry.name
  if (typeof name !== 'string' || !HEADER_NAME_PATTERN.test(name)) invalid(`${path}.name`, HEADER_NAME_EXPECTED, name)
  if (name.toLowerCase() === 'host') invalid(`${path}.name`, 'a header other than host (ALB matches the host with the host condition)', name)
  const values = optionalList(entry.values, `${path}.values`, 'header value patterns', (value, at) => {
    if (typeof value !== 'string' || !VALUE_PATTERN.test(value)) invalid(at, HEADER_VALUE_EXPECTED, value)
    return value
  })
  if (values === null) invalid(`${path}.values`, `an array of 1 to ${MAX_VALUES} header value patterns`, undefined)
  return { name: name.toLowerCase(), pattern: compileWildcards(values, HEADER_SYNTAX) }
}

function compileQuery (raw: unknown, path: string): QueryMatcher {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) invalid(path, 'an object { key?, value }', raw)
  const entry = raw as Record<string, unknown>
  refuseUnknownKeys(entry, QUERY_KEYS, path)
  const key = entry.key
  if (key !== undefined && (typeof key !== 'string' || !VALUE_PATTERN.test(key))) invalid(`${path}.key`, QUERY_KEY_EXPECTED, key)
  const value = entry.value
  if (typeof value !== 'string' || !VALUE_PATTERN.test(value)) invalid(`${path}.value`, QUERY_VALUE_EXPECTED, value)
  return {
    key: key === undefined ? null : compileWildcards([key], QUERY_SYNTAX),
    value: compileWildcards([value], QUERY_SYNTAX)
  }
}

function parseCidr (raw: unknown, path: string): [string, number, 'ipv4' | 'ipv6'] {
  const match = typeof raw === 'string' ? CIDR_PATTERN.exec(raw) : null
  const version = match === null ? 0 : isIP(match[1])
  const bits = version === 4 ? 32 : 128
  const prefix = match?.[2] === undefined ? bits : Number(match[2])
  if (match === null || version === 0 || prefix > bits) invalid(path, SOURCE_IP_EXPECTED, raw)
  return [match[1], prefix, version === 4 ? 'ipv4' : 'ipv6']
}

/** Null when absent; otherwise 1 to MAX_VALUES entries, each checked by `check`. */
function optionalList<T> (raw: unknown, path: string, noun: string, check: (value: unknown, path: string) => T): T[] | null {
  if (raw === undefined) return null
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_VALUES) invalid(path, `an array of 1 to ${MAX_VALUES} ${noun}`, raw)
  return raw.map((value, i) => check(value, `${path}[${i}]`))
}

function refuseUnknownKeys (object: object, known: readonly string[], path: string): void {
  for (const key of Object.keys(object)) {
    if (!known.includes(key)) {
      throw new FST_STICKY_OPTION_INVALID(`${path}.${key} is not an option (known: ${known.join(', ')})`)
    }
  }
}

/**
 * One anchored RegExp for several wildcard patterns (any may match). Each `*` but the last becomes
 * an emulated atomic group, `(?=(any*?segment))\N`: the leftmost fit of each segment is always the
 * right one, and never backtracking into it keeps matching linear, so a pattern like `*a*a*a*b`
 * cannot be made to take seconds by a long header.
 */
function compileWildcards (patterns: readonly string[], syntax: WildcardSyntax): RegExp {
  let group = 0
  const alternatives = patterns.map((pattern) => {
    const segments = splitOnStars(pattern, syntax)
    let source = segments[0]
    for (let i = 1; i < segments.length - 1; i++) {
      if (segments[i] === '') continue
      group++
      source += `(?=(${syntax.any}*?${segments[i]}))\\${group}`
    }
    if (segments.length > 1) source += `${syntax.any}*${segments[segments.length - 1]}`
    return source
  })
  return new RegExp(`^(?:${alternatives.join('|')})${syntax.end}`, syntax.flags)
}

/** The pattern's fixed-length segments between `*`s, as RegExp sources (`?` as one `any`). */
function splitOnStars (pattern: string, syntax: WildcardSyntax): string[] {
  const segments = ['']
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i]
    if (syntax.escapes && char === '\\' && (pattern[i + 1] === '*' || pattern[i + 1] === '?')) {
      segments[segments.length - 1] += `\\${pattern[++i]}`
    } else if (char === '*') {
      segments.push('')
    } else if (char === '?') {
      segments[segments.length - 1] += syntax.any
    } else {
      segments[segments.length - 1] += char.replace(/[.+^${}()|[\]\\/-]/g, '\\$&')
    }
  }
  return segments
}
