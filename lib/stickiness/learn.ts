import type { KeyHasher } from '../hashing/key-hash.js'
import { invalid, refuseUnknownKeys, requireObject } from '../validate.js'
import { readAppCookieChange, readCookieValue } from './cookie-text.js'
import type { ResolvedLearnStickiness, ResolvedStickiness } from '../options.js'
import type { TargetGroup } from '../target-group.js'
import { judgeLearned } from './affinity.js'
import type { LearnLookup, LearnStore } from './learn-store.js'
import { asKey, type PinSource, type Pinned, type Place, type RequestView, type ResolvedLearnSource, type ResponseRequest, type ResponseView } from './source.js'

/** What a learn source needs of the gateway. */
export interface LearnContext {
  /** The learn store, made when a route first needs it. */
  readonly learnStore: () => LearnStore
  readonly hasher: KeyHasher
}

const KEYS = ['type', 'enabled', 'durationSeconds', 'cookieName', 'headerName']
/** RFC 6265 §4.1.1 cookie-name and RFC 9110 field-name: both tokens. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/

export function resolveLearn (raw: unknown, path: string, cookiePrefix: string): ResolvedLearnSource {
  const options = requireObject(raw, path)
  refuseUnknownKeys(options, KEYS, `${path}.`)
  const { cookieName, headerName } = options
  if ((cookieName === undefined) === (headerName === undefined)) {
    invalid(path, "an object with exactly one of cookieName (the app's session cookie) and headerName (a header carrying the session id)", raw)
  }
  if (cookieName !== undefined) {
    if (typeof cookieName !== 'string' || !TOKEN.test(cookieName)) invalid(`${path}.cookieName`, "the application's cookie name (a token of 1 to 128 characters, e.g. 'JSESSIONID')", cookieName)
    for (const reserved of new Set(['AWSALB', `${cookiePrefix}AWSALB`])) {
      if (cookieName.startsWith(reserved)) invalid(`${path}.cookieName`, `a name not starting with ${reserved} (the gateway's own cookies)`, cookieName)
    }
    return Object.freeze({ type: 'learn', cookieName, headerName: null })
  }
  if (typeof headerName !== 'string' || !TOKEN.test(headerName)) invalid(`${path}.headerName`, "a header name (a token of 1 to 128 characters, e.g. 'x-session-id')", headerName)
  return Object.freeze({ type: 'learn', cookieName: null, headerName: headerName.toLowerCase() })
}

/** What a learn-sticky request brought, kept for its response. */
export interface LearnState {
  /** The store key of the session id the request carried; null when it carried none. */
  readonly key: string | null
  /** The target the store named for it (null: none, or the store did not answer). */
  readonly found: string | null
}

/** A learn source's state when the request carried no session id. */
const NO_KEY: LearnState = Object.freeze({ key: null, found: null })

/**
 * nginx's `sticky learn`: the app's session id (its cookie, or a header) is looked up in the
 * learn store, which maps it to the target that created the session; a target's response that
 * sets the id teaches the store. Ids are kept as keyed digests, never as they came.
 */
export class LearnSource implements PinSource<LearnState> {
  readonly type = 'learn'
  /** Nothing is written to the client: no cookie, no header. */
  readonly pinNames: readonly string[] = Object.freeze([])
  readonly cookiesAtResponse = false
  readonly #group: TargetGroup
  readonly #stickiness: ResolvedStickiness
  readonly #cookieName: string | null
  readonly #headerName: string | null
  readonly #store: LearnStore
  readonly #hasher: KeyHasher
  readonly #ttlMs: number
  /** Put before each session id hashed: groups sharing a store (or a Redis) keep apart entries. */
  readonly #scope: string

  constructor (group: TargetGroup, stickiness: ResolvedLearnStickiness, context: LearnContext) {
    const resolved = stickiness.learn
    this.#group = group
    this.#stickiness = stickiness
    // The group's name scopes its entries (its targets are what the store names).
    this.#scope = `${group.name}\u0000`
    this.#cookieName = resolved.cookieName
    this.#headerName = resolved.headerName
    this.#store = context.learnStore()
    this.#hasher = context.hasher
    this.#ttlMs = stickiness.durationSeconds * 1000
  }

  /** The store key of the session id in the request, or null when it has none (or one too long to be a key). */
  keyOf (request: RequestView): string | null {
    const name = this.#headerName
    let id: string | undefined
    if (name !== null) {
      const value = request.headers[name]
      id = Array.isArray(value) ? value[0] : value
    } else {
      id = readCookieValue(request.headers.cookie, this.#cookieName as string)
    }
    const key = asKey(id)
    return key === null ? null : this.#hasher.hex(this.#scope + key)
  }

  /** The target id learned for `key`, sliding its time to live; a promise when the store must be asked. */
  lookup (key: string, nowMs: number): LearnLookup | Promise<LearnLookup> {
    return this.#store.get(key, this.#ttlMs, nowMs)
  }

  /**
   * A session id the store names a target for that keeps its clients is a `hit`; an id it does
   * not know is placed (`place(null)`); a store that cannot answer in time, `store-unavailable`.
   */
  decide (request: RequestView, nowMs: number, place: Place): Pinned<LearnState> | Promise<Pinned<LearnState>> {
    const key = this.keyOf(request)
    if (key === null) return { decision: place(null, nowMs), state: NO_KEY }
    const found = this.lookup(key, nowMs)
    if (typeof found === 'object' && found !== null) return found.then((answer) => this.#decided(key, answer, nowMs, place))
    return this.#decided(key, found, nowMs, place)
  }

  #decided (key: string, found: LearnLookup, nowMs: number, place: Place): Pinned<LearnState> {
    if (found === null) return { decision: place(null, nowMs), state: { key, found: null } }
    if (found === 'unavailable') return { decision: place('store-unavailable', nowMs), state: { key, found: null } }
    const judged = judgeLearned(this.#group, this.#stickiness, found, nowMs)
    return { decision: typeof judged === 'string' ? place(judged, nowMs, found) : judged, state: { key, found } }
  }

  stateOf (request: RequestView): LearnState {
    return { key: this.keyOf(request), found: null }
  }

  pinLines (): null {
    return null
  }

  atResponse (state: LearnState, targetId: string | null, response: ResponseView, _request: ResponseRequest, nowMs: number): null {
    this.learn(state, targetId, response, nowMs)
    return null
  }

  /**
   * Learns from the response of the target `targetId`: a session id it sets is remembered on it;
   * one it deletes is forgotten; a request's id the store did not name this target for (new to
   * the store, or its target gone) is remembered on this target, so the client stays.
   */
  learn (state: LearnState, targetId: string | null, response: ResponseView, nowMs: number): void {
    if (targetId === null) return
    const store = this.#store
    let given: string | null | 'deleted' = null
    if (this.#headerName !== null) {
      const value = response.getHeader(this.#headerName)
      const id = asKey(Array.isArray(value) ? String(value[0]) : value === undefined ? undefined : String(value))
      given = id
    } else {
      const change = readAppCookieChange(response.getHeader('set-cookie'), this.#cookieName as string, nowMs)
      given = change === null ? null : change === 'deleted' ? 'deleted' : asKey(change.value)
    }
    if (given === 'deleted') {
      if (state.key !== null) store.delete(state.key)
      return
    }
    if (given !== null) {
      const key = this.#hasher.hex(this.#scope + given)
      if (key !== state.key || state.found !== targetId) store.set(key, targetId, this.#ttlMs, nowMs)
      return
    }
    if (state.key !== null && state.found !== targetId) store.set(state.key, targetId, this.#ttlMs, nowMs)
  }
}
