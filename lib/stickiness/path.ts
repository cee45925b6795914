import { invalid, refuseUnknownKeys, requireObject } from '../validate.js'
import { asKey, type KeySource, type RequestView, type ResolvedPathKey } from './source.js'

const NAME = /^[A-Za-z0-9._~!$'()*+,-]{1,64}$/
const KEYS = ['type', 'name', 'pattern']
/** The servlet form of URL rewriting: `/cart;jsessionid=ABC`. */
const DEFAULT_NAME = 'jsessionid'

export function resolvePathKey (raw: unknown, path: string): ResolvedPathKey {
  const options = requireObject(raw, path)
  refuseUnknownKeys(options, KEYS, `${path}.`)
  const { name, pattern } = options
  if (pattern !== undefined) {
    if (!(pattern instanceof RegExp)) invalid(`${path}.pattern`, 'a RegExp whose first capture group is the session id', pattern)
    if (name !== undefined) invalid(`${path}.name`, 'absent when pattern is given', name)
    if (pattern.global || pattern.sticky) invalid(`${path}.pattern`, 'a RegExp without the g or y flag', String(pattern))
    return Object.freeze({ type: 'path', name: null, pattern })
  }
  if (name !== undefined && (typeof name !== 'string' || !NAME.test(name))) invalid(`${path}.name`, "a path parameter name (1 to 64 characters of A-Z a-z 0-9 . _ ~ ! $ ' ( ) * + , -)", name)
  return Object.freeze({ type: 'path', name: ((name as string | undefined) ?? DEFAULT_NAME).toLowerCase(), pattern: null })
}

/**
 * A session id inside the path (the source texts' URL-based stickiness): the path parameter
 * `;jsessionid=…` (or another name; up to the next `;`, `/`, `?` or `#`), or the first capture
 * group of a pattern matched against the path before `?`.
 */
export class PathSource implements KeySource {
  readonly type = 'path'
  readonly #needle: string | null
  readonly #pattern: RegExp | null

  constructor (resolved: ResolvedPathKey) {
    this.#needle = resolved.name === null ? null : `;${resolved.name}=`
    this.#pattern = resolved.pattern
  }

  key (request: RequestView): string | null {
    const url = request.url
    let end = url.indexOf('?')
    if (end === -1) end = url.length
    const pattern = this.#pattern
    if (pattern !== null) {
      const match = pattern.exec(end === url.length ? url : url.slice(0, end))
      return asKey(match?.[1])
    }
    const needle = this.#needle as string
    const at = url.slice(0, end).toLowerCase().indexOf(needle)
    if (at === -1) return null
    const from = at + needle.length
    let stop = from
    while (stop < end) {
      const code = url.charCodeAt(stop)
      if (code === 59 /* ; */ || code === 47 /* / */ || code === 35 /* # */) break
      stop++
    }
    return asKey(url.slice(from, stop))
  }
}
