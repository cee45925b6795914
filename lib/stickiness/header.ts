import { invalid, refuseUnknownKeys, requireObject } from '../validate.js'
import { asKey, type KeySource, type RequestView, type ResolvedHeaderKey } from './source.js'

/** RFC 9110 §5.1: a field name is a token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/
const KEYS = ['type', 'name']

export function resolveHeaderKey (raw: unknown, path: string): ResolvedHeaderKey {
  const options = requireObject(raw, path)
  refuseUnknownKeys(options, KEYS, `${path}.`)
  const name = options.name
  if (typeof name !== 'string' || !TOKEN.test(name)) invalid(`${path}.name`, "a header name (a token of 1 to 128 characters, e.g. 'x-session-id'), required with type 'header'", name)
  return Object.freeze({ type: 'header', name: name.toLowerCase() })
}

/**
 * The value of one request header as the key (`x-session-id`, `authorization`): hashed, never
 * logged or stored. A header sent several times counts as its values joined, as Node joins them.
 */
export class HeaderSource implements KeySource {
  readonly type = 'header'
  readonly #name: string

  constructor (resolved: ResolvedHeaderKey) {
    this.#name = resolved.name
  }

  key (request: RequestView): string | null {
    const value = request.headers[this.#name]
    return asKey(Array.isArray(value) ? value.join(', ') : value)
  }
}
