import { FST_STICKY_OPTION_INVALID } from './errors.js'

/** Checks shared by every part that validates options: each throws FST_STICKY_OPTION_INVALID naming the option, what was expected and what came. */

export function requireObject (raw: unknown, path: string, expected = 'an object'): Record<string, unknown> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) invalid(path, expected, raw)
  return raw as Record<string, unknown>
}

export function refuseUnknownKeys (object: object, known: readonly string[], prefix: string): void {
  for (const key of Object.keys(object)) {
    if (!known.includes(key)) {
      throw new FST_STICKY_OPTION_INVALID(`${prefix}${key} is not an option (known: ${known.join(', ')})`)
    }
  }
}

export function optionalInteger (raw: unknown, path: string, min: number, max: number, fallback: number): number {
  if (raw === undefined) return fallback
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < min || raw > max) {
    invalid(path, `an integer from ${min} to ${max}`, raw)
  }
  return raw
}

export function optionalBoolean (raw: unknown, path: string, fallback: boolean): boolean {
  if (raw === undefined) return fallback
  if (typeof raw !== 'boolean') invalid(path, 'a boolean', raw)
  return raw
}

export function optionalChoice<T extends string> (raw: unknown, path: string, choices: readonly T[], fallback: T): T {
  if (raw === undefined) return fallback
  if (!choices.includes(raw as T)) invalid(path, `one of ${choices.join(', ')}`, raw)
  return raw as T
}

/** Throws FST_STICKY_OPTION_INVALID; `secret` values (keys) are described by size, never shown. */
export function invalid (path: string, expected: string, received: unknown, secret = false): never {
  throw new FST_STICKY_OPTION_INVALID(`${path} must be ${expected}, received ${describeValue(received, secret)}`)
}

export function describeValue (value: unknown, secret: boolean): string {
  if (Buffer.isBuffer(value)) return `a Buffer of ${value.length} bytes`
  if (typeof value === 'string') {
    if (secret) return `a string of ${value.length} characters`
    return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value)
  }
  if (Array.isArray(value)) return `an array of ${value.length}`
  if (typeof value === 'function') return 'a function'
  if (value !== null && typeof value === 'object') return 'an object'
  return String(value)
}
