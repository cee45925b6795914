import { invalid, refuseUnknownKeys, requireObject } from '../validate.js'
import { asKey, type KeySource, type RequestView, type ResolvedQueryKey } from './source.js'

const NAME = /^[^&=#\s]{1,128}$/
const KEYS = ['type', 'name']

export function resolveQueryKey (raw: unknown, path: string): ResolvedQueryKey {
  const options = requireObject(raw, path)
  refuseUnknownKeys(options, KEYS, `${path}.`)
  const name = options.name
  if (typeof name !== 'string' || !NAME.test(name)) invalid(`${path}.name`, "a query parameter name (1 to 128 characters, none of & = # or blanks, e.g. 'sid'), required with type 'query'", name)
  return Object.freeze({ type: 'query', name })
}

/** The first value of one query parameter as the key, as sent (not decoded: `a%20b` and `a+b` are two keys). */
export class QuerySource implements KeySource {
  readonly type = 'query'
  readonly #needle: string

  constructor (resolved: ResolvedQueryKey) {
    this.#needle = `${resolved.name}=`
  }

  key (request: RequestView): string | null {
    const url = request.url
    const query = url.indexOf('?')
    if (query === -1) return null
    const needle = this.#needle
    let at = url.indexOf(needle, query + 1)
    while (at !== -1) {
      const before = url.charCodeAt(at - 1)
      if (at === query + 1 || before === 38 /* & */) {
        const from = at + needle.length
        let end = url.indexOf('&', from)
        const hash = url.indexOf('#', from)
        if (end === -1 || (hash !== -1 && hash < end)) end = hash === -1 ? url.length : hash
        return asKey(url.slice(from, end))
      }
      at = url.indexOf(needle, at + 1)
    }
    return null
  }
}
