/** The status codes a health check accepts: ALB's `Matcher.HttpCode`, e.g. `200`, `200,202` or `200-299`. */
export type StatusMatcher = readonly (readonly [number, number])[]

/** ALB accepts codes 200 to 499 in a matcher. */
export const MATCHER_MIN_STATUS = 200
export const MATCHER_MAX_STATUS = 499

const PART = /^(\d{3})(?:-(\d{3}))?$/

/**
 * Parses a matcher: comma-separated codes and `low-high` ranges, each within 200–499, spaces
 * allowed around commas. Returns null when the text is not one (the caller names the option).
 */
export function parseMatcher (text: string): StatusMatcher | null {
  if (text.trim() === '') return null
  const ranges: Array<readonly [number, number]> = []
  for (const part of text.split(',')) {
    const match = PART.exec(part.trim())
    if (match === null) return null
    const low = Number(match[1])
    const high = match[2] === undefined ? low : Number(match[2])
    if (low < MATCHER_MIN_STATUS || high > MATCHER_MAX_STATUS || low > high) return null
    ranges.push(Object.freeze([low, high] as const))
  }
  return Object.freeze(ranges)
}

/** True when `status` is one the matcher accepts. */
export function matchesStatus (matcher: StatusMatcher, status: number): boolean {
  for (const [low, high] of matcher) if (status >= low && status <= high) return true
  return false
}
