import fc from 'fast-check'
import { test } from 'tap'
import { PeerTrust } from '../lib/client-address.js'
import { COOKIE_PURPOSE_LB, CookieCodec } from '../lib/cookie-codec.js'
import type { GroupForward } from '../lib/group-forward.js'
import { KeyHasher } from '../lib/hashing/key-hash.js'
import { resolveListenerRule } from '../lib/listener-rule.js'
import { resolveOptions } from '../lib/options.js'
import { hashCookieValue, type AppBinding } from '../lib/stickiness/app-bindings.js'
import { APP_COOKIE_PREFIX, AppCookieSealer, AppCookieWriter, readAppShards } from '../lib/stickiness/app-cookie.js'
import { readCookieValue } from '../lib/stickiness/cookie-text.js'
import { LB_COOKIE, LbCookieWriter, LbSetSealer, readLbCookies } from '../lib/stickiness/lb-cookie.js'
import { MemoryLearnStore } from '../lib/stickiness/learn-store.js'
import { TargetGroup } from '../lib/target-group.js'
import type { Pinned } from '../lib/stickiness/source.js'
import type { AffinityDecision, StickinessOptions } from '../lib/types.js'
import { checkProperty, cookieHeader, cookieValue, gatewayCookieNames } from './fuzz.js'

// The affinity decision is a function of the Cookie header and the clock: whatever a client
// sends, deciding never throws, the same header at the same second decides the same way, and a
// cookie of ours is a hit exactly when ALB's rules say so.

const KEY = Buffer.alloc(32, 0x5e)
const NOW_SECONDS = Math.floor(Date.UTC(2026, 10, 21, 12) / 1000)
const DURATION_SECONDS = 3600
const TARGETS = ['t0', 't1', 't2']

interface Tap {
  teardown (fn: () => unknown): void
}

/** A group `g` of three targets (and `gone`, deregistered), and the forwards of two routes on it, built as the plugin builds them. */
async function forwards (t: Tap, prefix: string): Promise<{ lb: GroupForward, app: GroupForward, appBound: GroupForward, codec: CookieCodec, sealer: AppCookieSealer, group: TargetGroup }> {
  const options = resolveOptions({
    keys: [KEY],
    cookiePrefix: prefix,
    targetGroups: [{
      name: 'g',
      deregistrationDelayMs: 0,
      stickiness: { type: 'lb_cookie', durationSeconds: DURATION_SECONDS },
      targets: [...TARGETS, 'gone'].map((id, i) => ({ id, url: `http://127.0.0.1:${9001 + i}` }))
    }]
  })
  // Pools connect lazily: nothing leaves this process.
  const group = new TargetGroup(options.targetGroups[0], { connections: 1, connectTimeoutMs: 1000, idleTimeoutMs: 1000, now: () => NOW_SECONDS * 1000 })
  t.teardown(() => group.close())
  await group.deregister('gone')
  const codec = new CookieCodec(options.keys)
  const sealer = new AppCookieSealer(codec, prefix + APP_COOKIE_PREFIX)
  const context = {
    groups: new Map([['g', group]]),
    codec,
    lbWriter: new LbCookieWriter(prefix + LB_COOKIE),
    appWriter: new AppCookieWriter(prefix + APP_COOKIE_PREFIX),
    appSealer: sealer,
    lbSetSealer: new LbSetSealer(codec, prefix + LB_COOKIE + 'CORS'),
    secureCookies: false,
    corsCookies: 'auto' as const,
    clockSkewSeconds: 5,
    listeners: new Map(),
    cookiePrefix: prefix,
    hasher: new KeyHasher(options.keys[0]),
    peers: new PeerTrust(null),
    learnStore: () => new MemoryLearnStore(),
    now: () => NOW_SECONDS * 1000
  }
  const rule = (stickiness?: StickinessOptions): GroupForward => resolveListenerRule({ targetGroup: 'g', stickiness }, 'GET /', context) as GroupForward
  return {
    lb: rule(),
    app: rule({ type: 'app_cookie', cookieName: 'sid', durationSeconds: DURATION_SECONDS }),
    appBound: rule({ type: 'app_cookie', cookieName: 'sid', durationSeconds: DURATION_SECONDS, bindToCookieValue: true }),
    codec,
    sealer,
    group
  }
}

/** What must not change between two decisions on the same input: the outcome, its reason, and a hit's target (a new pick rotates). */
function verdict (decision: AffinityDecision): string {
  const reason = decision.outcome === 'reassigned' ? decision.reason : ''
  return `${decision.outcome}:${reason}:${decision.outcome === 'hit' ? decision.target.id : ''}`
}

/** A sealed AWSALB value and what it carries. */
interface Sealed {
  value: string
  group: string
  targetId: string
  issuedAtSeconds: number
}

/** Values of every kind a client may bring back: ours for each target (and for a deregistered, an unknown one, another group), fresh and old. */
function sealValues (codec: CookieCodec): Sealed[] {
  const sealed: Sealed[] = []
  for (const targetId of [...TARGETS, 'gone', 'nobody']) {
    for (const group of ['g', 'other']) {
      for (const age of [0, 10, DURATION_SECONDS, DURATION_SECONDS + 1, 40 * DURATION_SECONDS, -60]) {
        const issuedAtSeconds = NOW_SECONDS - age
        const value = codec.seal(COOKIE_PURPOSE_LB, { group, targetId, stickyUntilSeconds: issuedAtSeconds + DURATION_SECONDS, issuedAtSeconds })
        sealed.push({ value, group, targetId, issuedAtSeconds })
      }
    }
  }
  return sealed
}

/** ALB's rules for the candidates of a header, written out (with our clock-skew rule): the first cookie that holds is a hit; else the first one's reason. */
function expectedLb (candidates: readonly string[], sealed: ReadonlyMap<string, Sealed>, group: TargetGroup, nowSeconds: number): string {
  let reason: string | null = null
  for (const value of candidates) {
    const payload = sealed.get(value)
    let why: string
    if (payload === undefined) why = 'undecodable'
    else if (payload.group !== 'g') why = 'group-mismatch'
    // Ours beyond ALB: a value issued more than the 5 s clock-skew allowance ahead is not honoured.
    else if (payload.issuedAtSeconds > nowSeconds + 5) why = 'issued-in-future'
    else if (payload.issuedAtSeconds + DURATION_SECONDS < nowSeconds) why = 'expired'
    else if (group.get(payload.targetId) === undefined) why = group.wasDeregistered(payload.targetId) ? 'target-deregistered' : 'target-unknown'
    else return `hit::${payload.targetId}`
    reason ??= why
  }
  return reason === null ? 'new::' : `reassigned:${reason}:`
}

for (const prefix of ['', 'gw-']) {
  test(`lb_cookie decisions${prefix === '' ? '' : ` under cookiePrefix '${prefix}'`}: never a throw, the same header decides the same way, and a cookie of ours holds exactly when ALB says so`, async (t) => {
    const { lb, codec, group } = await forwards(t, prefix)
    const sealed = sealValues(codec)
    const byValue = new Map(sealed.map((entry) => [entry.value, entry]))
    // The names the decision reads, often; the others, and ALB's unprefixed ones, now and then.
    const ownNames = [`${prefix}AWSALB`, `${prefix}AWSALBCORS`]
    const values = cookieValue(sealed.map(({ value }) => value))
    const noise = cookieHeader([...ownNames, ...gatewayCookieNames(prefix), ...gatewayCookieNames(''), 'sid'], values)
    // A browser's header: our pairs (one to three, repeats and the twin too) among the others.
    const browser = fc.tuple(noise, fc.array(fc.tuple(fc.constantFrom(...ownNames), values), { minLength: 1, maxLength: 3 }), fc.nat(), fc.constantFrom('; ', ';', ' ; '))
      .map(([other, pairs, at, separator]) => {
        const parts = other === '' ? [] : [other]
        parts.splice(at % (parts.length + 1), 0, ...pairs.map(([name, value]) => `${name}=${value}`))
        return parts.join(separator)
      })
    const header = fc.oneof(noise, browser)
    const clock = fc.integer({ min: -2 * DURATION_SECONDS, max: 2 * DURATION_SECONDS }).map((offset) => (NOW_SECONDS + offset) * 1000 + 999)

    await checkProperty(t, 'decide(header, now) is what ALB decides, twice over', fc.property(
      fc.option(header, { nil: undefined }), clock,
      (text, nowMs) => {
        const first = verdict(decisionOf(lb, text, nowMs))
        const second = verdict(decisionOf(lb, text, nowMs))
        if (first !== second) throw new Error(`decided ${first}, then ${second}`)
        const expected = expectedLb(readLbCookies(text, prefix + LB_COOKIE), byValue, group, Math.floor(nowMs / 1000))
        if (first !== expected) throw new Error(`decided ${first}, ALB: ${expected}`)
        return true
      }))
  })
}

test('app_cookie decisions: never a throw, the same header decides the same way, a hit needs both cookies and our binding, the shards stay while the app cookie is withheld', async (t) => {
  const { app, appBound, sealer } = await forwards(t, '')
  // Binding sets sealed by the gateway: this group's binding to each target (or to none), with others' around it.
  const sets = new Map<string, readonly AppBinding[]>()
  const writer = new AppCookieWriter()
  const shardHeaders: string[] = []
  for (const targetId of [...TARGETS, 'gone', 'nobody', null]) {
    for (const age of [0, DURATION_SECONDS + 1]) {
      for (const valueHash of [null, hashCookieValue('abc')]) {
        const own: AppBinding[] = targetId === null ? [] : [{ group: 'g', targetId, issuedAtSeconds: NOW_SECONDS - age, valueHash }]
        const bindings = [...own, { group: 'other', targetId: 't0', issuedAtSeconds: NOW_SECONDS, valueHash: null }]
        const value = sealer.seal(bindings, NOW_SECONDS - age)
        sets.set(value, bindings)
        shardHeaders.push((writer.setCookies(value, NOW_SECONDS * 1000, false) as string[]).map((line) => line.split(';')[0]).join('; '))
      }
    }
  }
  const noise = cookieHeader(['sid', ...gatewayCookieNames('')], cookieValue([...sets.keys()]))
  const sid = fc.option(fc.constantFrom('sid=abc', 'sid=', 'sid="x y"', ' sid=1'), { nil: '' })
  const structured = fc.tuple(fc.shuffledSubarray([noise, fc.constantFrom(...shardHeaders), sid], { minLength: 3 }), fc.constantFrom('; ', ';', ' ; '))
    .chain(([parts, separator]) => fc.tuple(...parts).map((texts) => texts.filter((text) => text !== '').join(separator)))
  const header = fc.oneof(structured, cookieHeader(['sid', ...gatewayCookieNames('')], cookieValue([...sets.keys()])))

  // What the target's response does with the app cookie: nothing, sets a new one, deletes it.
  const responses: Array<[string, string | undefined]> = [['none', undefined], ['sets', 'sid=new; Path=/; HttpOnly'], ['deletes', 'sid=; Max-Age=0; Path=/']]

  await checkProperty(t, 'decideApp(header, now) decides the same way twice, a hit is a binding of ours with the app cookie beside it, and the shards change only as ALB’s rules and ours say', fc.property(
    fc.option(header, { nil: undefined }), fc.boolean(), fc.constantFrom(...responses),
    (text, bound, [change, setCookie]) => {
      const forward = bound ? appBound : app
      const first = decidedBy(forward, text, NOW_SECONDS * 1000)
      const again = decidedBy(forward, text, NOW_SECONDS * 1000)
      if (verdict(first.decision) !== verdict(again.decision)) throw new Error(`decided ${verdict(first.decision)}, then ${verdict(again.decision)}`)
      const shards = readAppShards(text)
      const bindings = typeof shards === 'string' ? sets.get(shards) : undefined
      const own = bindings?.find((binding) => binding.group === 'g')
      const appValue = readCookieValue(text, 'sid')
      const holds = own !== undefined && appValue !== undefined && TARGETS.includes(own.targetId) &&
        own.issuedAtSeconds + DURATION_SECONDS >= NOW_SECONDS && (!bound || own.valueHash === hashCookieValue(appValue))
      const expected = holds ? `hit::${own.targetId}` : null
      if (expected !== null && verdict(first.decision) !== expected) throw new Error(`decided ${verdict(first.decision)}, expected ${expected}`)
      if (expected === null && first.decision.outcome === 'hit') throw new Error(`a hit without a binding of ours: ${verdict(first.decision)}`)
      // Shards holding a binding of this group without the app cookie: a browser withholds a Lax cookie across sites.
      const withheld = own !== undefined && appValue === undefined
      if (withheld && verdict(first.decision) !== 'reassigned:app-cookie-withheld:') throw new Error(`the app cookie withheld, decided ${verdict(first.decision)}`)

      const target = first.decision.target?.id ?? null
      const lines = forward.pin?.atResponse?.(first.state, target, { getHeader: () => setCookie }, { ...requestOf(text), protocol: 'http' }, NOW_SECONDS * 1000, false)
      if (lines === undefined) throw new Error('an app-cookie route acts at the response')
      const cleared = lines !== null && lines.length === 4 && lines.every((line) => line.includes('=_remove_; Expires=Thu, 01 Jan 1970'))
      if (change === 'deletes') {
        // Logout: the binding ends; the shards go when nothing else is left in them.
        const left = lines === null ? [] : openShards(sealer, lines)
        if (left === null || left.some((binding) => binding.group === 'g')) throw new Error(`the app deleted its cookie, the shards still bind g: ${JSON.stringify(lines)}`)
        if (!cleared && left.length === 0) throw new Error(`logout without a binding left, yet not cleared: ${JSON.stringify(lines)}`)
        return true
      }
      // The client's shards are left alone over a withheld binding: no line at all, not even _remove_.
      if (withheld) {
        if (lines !== null) throw new Error(`the app cookie withheld, yet the response writes ${JSON.stringify(lines)}`)
        return true
      }
      if (lines === null || lines.length !== 4) throw new Error(`four AWSALBAPP lines on every other response: ${JSON.stringify(lines)}`)
      // With an app cookie (the request's, or the one the response sets) the binding follows it to the request's target.
      const written = openShards(sealer, lines)
      const boundTo = written?.find((binding) => binding.group === 'g')?.targetId
      const follows = appValue !== undefined || change === 'sets'
      if (follows && target !== null && boundTo !== target) throw new Error(`the binding of g names ${String(boundTo)}, not the request's ${target}: ${JSON.stringify(lines)}`)
      if (!follows && boundTo !== undefined) throw new Error(`no app cookie, yet g is bound to ${boundTo}`)
      return true
    }))
})

/** The bindings a response's four AWSALBAPP lines carry ([] for four `_remove_`), null when they do not open. */
function openShards (sealer: AppCookieSealer, lines: readonly string[]): readonly AppBinding[] | null {
  const value = readAppShards(lines.map((line) => line.split(';')[0]).join('; '))
  if (value === null) return []
  return value === 'invalid' ? null : sealer.open(value)
}

function requestOf (cookie: string | undefined): { headers: Record<string, string>, url: string, raw: { socket: null, headers: Record<string, string> } } {
  const headers: Record<string, string> = cookie === undefined ? {} : { cookie }
  return { headers, url: '/', raw: { socket: null, headers } }
}

/** A forward's decision and state for a request with this Cookie header (the sources read nothing else of it here). */
function decidedBy (forward: GroupForward, cookie: string | undefined, nowMs: number): Pinned<unknown> {
  const decided = forward.decide(requestOf(cookie), nowMs)
  if (decided instanceof Promise) throw new Error('a cookie source answered with a promise')
  return decided
}

function decisionOf (forward: GroupForward, cookie: string | undefined, nowMs: number): AffinityDecision {
  return decidedBy(forward, cookie, nowMs).decision
}
