import fc from 'fast-check'
import { CookieCodec } from '../lib/cookie-codec.js'
import { TEST_KEY } from './setup.js'

/**
 * Property-based fuzzing with fast-check. `npm test` runs every property with a few hundred
 * cases from a fixed seed, so a run is repeatable; `FUZZ_RUNS` (cases per property) and
 * `FUZZ_SEED` (a 32-bit integer, or `random`) override both: `npm run test:fuzz` runs 100 000 cases
 * per property. A failing property reports its seed and its shrunk counterexample.
 */

/** The seed of `npm test`. */
export const DEFAULT_FUZZ_SEED = 0x5eed13

/** The seed of this run: `FUZZ_SEED`, a fresh one for `FUZZ_SEED=random`, else the fixed default. */
export const FUZZ_SEED = seedOf(process.env.FUZZ_SEED)

/** `FUZZ_RUNS`, cases per property, when set. */
const RUNS_OVERRIDE = runsOf(process.env.FUZZ_RUNS)

function seedOf (text: string | undefined): number {
  if (text === undefined || text === '') return DEFAULT_FUZZ_SEED
  if (text === 'random') return (Date.now() ^ (Math.random() * 0x100000000)) | 0
  const seed = Number(text)
  if (!Number.isInteger(seed)) throw new Error(`FUZZ_SEED must be an integer or 'random', got ${JSON.stringify(text)}`)
  return seed | 0
}

function runsOf (text: string | undefined): number | null {
  if (text === undefined || text === '') return null
  const runs = Number(text)
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`FUZZ_RUNS must be a positive integer, got ${JSON.stringify(text)}`)
  return runs
}

/** Cases per property: `FUZZ_RUNS`, else the property's own small default. */
export function runsFor (defaultRuns: number): number {
  return RUNS_OVERRIDE ?? defaultRuns
}

interface Tap {
  ok (value: unknown, message: string): unknown
}

/**
 * Runs one property and reports it as one assertion: on failure the message holds the seed, the
 * shrink path and the counterexample (fast-check's report), so `FUZZ_SEED=<seed>` with the same
 * `FUZZ_RUNS` replays it.
 */
export async function checkProperty<T> (t: Tap, name: string, property: fc.IProperty<T> | fc.IAsyncProperty<T>, defaultRuns = 300): Promise<void> {
  const numRuns = runsFor(defaultRuns)
  const started = Date.now()
  const details = await fc.check(property as fc.IAsyncProperty<T>, { numRuns, seed: FUZZ_SEED })
  const ms = Date.now() - started
  if (details.failed) {
    const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)
    t.ok(false, `${name} — FUZZ_SEED=${FUZZ_SEED} FUZZ_RUNS=${numRuns}: ${error}\n${fc.defaultReportMessage(details) ?? ''}`)
  } else {
    t.ok(true, `${name}: ${details.numRuns} cases, seed ${FUZZ_SEED}, ${ms} ms`)
  }
}

/**
 * Wraps an end-to-end predicate so that, once it has failed, shrinking stops after `budget` more
 * failing cases: each case is a request, and a robust failure could otherwise shrink for minutes.
 * The counterexample reported is the smallest found by then.
 */
export function shrinkBudget<A extends unknown[]> (predicate: (...args: A) => Promise<boolean>, budget = 300): (...args: A) => Promise<boolean> {
  let failures = 0
  return async (...args: A) => {
    if (failures > budget) return true
    try {
      const ok = await predicate(...args)
      if (!ok) failures++
      return ok
    } catch (err) {
      if (!fc.PreconditionFailure.isFailure(err)) failures++
      throw err
    }
  }
}

// Generators shared by the fuzz files.

/** Any UTF-16 code unit, lone surrogates included: what a JavaScript string can hold but no valid text does. */
export const anyCodeUnit = fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code))

/** Strings of the kinds a header or path may hold: ASCII, any Unicode, or any code units (lone surrogates too). */
export function anyString (maxLength = 40): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ maxLength, size: 'max' }),
    fc.string({ unit: 'binary', maxLength, size: 'max' }),
    fc.string({ unit: anyCodeUnit, maxLength, size: 'max' })
  )
}

/** A cookie-name token of RFC 6265 (RFC 9110 tchar), short. */
export const cookieToken = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&\'*+-.^_`|~'), minLength: 1, maxLength: 8 })

/** Characters of a cookie-value a browser sends as they are (cookie-octet), plus spaces a lenient client adds. */
export const cookieOctets = fc.string({ unit: fc.constantFrom(...'abcXYZ019-_+/=!#$%&\'()*.:<>?@[]^`{|}~ '), maxLength: 12 })

/** The gateway's cookie names under `prefix` (ALB's, unprefixed, when it is ''). */
export function gatewayCookieNames (prefix: string): string[] {
  return [`${prefix}AWSALB`, `${prefix}AWSALBCORS`, `${prefix}AWSALBTG`, `${prefix}AWSALBTGCORS`,
    `${prefix}AWSALBAPP-0`, `${prefix}AWSALBAPP-1`, `${prefix}AWSALBAPP-2`, `${prefix}AWSALBAPP-3`]
}

/** Names near the gateway's that are not its own: other cases, prefixes, suffixes, shard numbers. */
export const LOOKALIKE_NAMES = ['awsalb', 'AWSALB ', ' AWSALB', 'XAWSALB', 'AWSALBX', 'AWSALBCORSX', 'AWSALBAPP-4', 'AWSALBAPP-', 'AWSALBAPP-00',
  'AWSALBAPP-a', 'AWSALBTGCOR', 'AWSAL', 'AWSALBAPP', '"AWSALB"', 'AWSALB\t']

/** A cookie value: one of `real` (values the gateway sealed), or the kinds a forged or broken header carries. */
export function cookieValue (real: readonly string[]): fc.Arbitrary<string> {
  const arbitraries: Array<fc.Arbitrary<string>> = [
    cookieOctets,
    fc.constantFrom('', '_remove_', '""', '"', '=', '==', 'A'.repeat(5000), 'é', '\uD800', '\uDC00x', '\u0000', ' '),
    anyString(20),
    fc.base64String({ maxLength: 60 }).map((value) => value.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''))
  ]
  if (real.length > 0) {
    const sealed = fc.constantFrom(...real)
    arbitraries.push(sealed, sealed, sealed.map((value) => `"${value}"`), sealed.map((value) => ` ${value}\t`),
      fc.tuple(sealed, fc.nat()).map(([value, at]) => value.slice(0, at % (value.length + 1))))
  }
  return fc.oneof(...arbitraries)
}

/** What separates two cookie-pairs: the canonical `; `, or what a sloppy or hostile client sends. */
export const pairSeparator = fc.constantFrom('; ', '; ', '; ', ';', ';;', ' ; ', ';\t', '; ;  ;', ',', ' ', '')

/**
 * A Cookie header: mostly cookie-pairs of the given names (and lookalikes and random tokens) with
 * values from `values`, in any order and with repeats, joined by any separator; sometimes just
 * any string.
 */
export function cookieHeader (names: readonly string[], values: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const name = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...names) },
    { weight: 1, arbitrary: fc.constantFrom(...LOOKALIKE_NAMES) },
    { weight: 2, arbitrary: cookieToken },
    { weight: 1, arbitrary: anyString(6) }
  )
  const pair = fc.oneof(
    { weight: 8, arbitrary: fc.tuple(name, fc.constantFrom('=', '=', '=', ' =', '= '), values).map(([n, eq, v]) => `${n}${eq}${v}`) },
    { weight: 1, arbitrary: name },
    { weight: 1, arbitrary: anyString(10) }
  )
  const structured = fc.tuple(fc.constantFrom('', '', ' ', ';', '\t'), fc.array(fc.tuple(pair, pairSeparator), { maxLength: 10 }))
    .map(([lead, pairs]) => lead + pairs.map(([p, separator], i) => i === pairs.length - 1 ? p : p + separator).join(''))
  return fc.oneof({ weight: 5, arbitrary: structured }, { weight: 1, arbitrary: anyString(80) })
}

/** A codec with the gateway's test key: values it seals open in a gateway built by buildGateway. */
export function testCodec (): CookieCodec {
  return new CookieCodec([Buffer.from(TEST_KEY, 'hex')])
}

// Request targets.

/** The pieces a hostile path is made of: dot segments in every spelling, separators, parameters, and plain names. */
export const PATH_SEGMENTS = ['a', 'b', 'admin', '', '.', '..', '%2e', '%2E', '%2e%2e', '.%2e', '%2E.', '%2e%2E', '...', '.a', 'a.', '..a', '.well-known',
  '..;x', '.;', '..;', ';', 'a;b', '%2f', '%2F', '%5c', '%5C', '\\', '..\\', '%252e', '%25', '%', '%zz', 'é', '%C3%A9', '#', '?', '?x=../y', '&', '=', '*', ':', '@', '~']
/** What joins them: `/`, and what a lenient target reads as one. */
export const PATH_SEPARATORS = ['/', '/', '/', '/', '\\', '%2f', '%5c', '//']

/** The path before the query. */
export function pathOf (target: string): string {
  const query = target.indexOf('?')
  return query === -1 ? target : target.slice(0, query)
}

/** How the WHATWG URL parser writes one path segment (percent-encoding only). */
function encodedSegment (segment: string): string {
  return new URL(`http://h/x${segment}`).pathname.slice(2)
}

/** True when the WHATWG URL parser would drop or merge a segment of `path` (dot segments, `\` read as `/`). */
export function whatwgResolvesDots (path: string): boolean {
  const plain = path.replace(/#/g, '%23')
  const segments = plain.split(/[/\\]/)
  const resolved = new URL(`http://h${plain}`).pathname.split('/')
  return resolved.length !== segments.length || segments.some((segment, i) => encodedSegment(segment) !== resolved[i])
}

/** True when a lenient target (the WHATWG parser, also after decoding `%2f` and `%5c`, or dropping `;` parameters) would resolve a dot segment of `target`. */
export function lenientResolvesDots (target: string): boolean {
  const path = pathOf(target)
  const slashes = path.replace(/%2f|%5c/gi, '/')
  const params = slashes.split(/[/\\]/).map((segment) => segment.split(';')[0]).join('/')
  return whatwgResolvesDots(path) || whatwgResolvesDots(slashes) || whatwgResolvesDots(params)
}
