import fc from 'fast-check'
import { test } from 'tap'
import { encodeRequestTarget, hasDotSegment, originFormOf } from '../lib/request-target.js'
import { anyString, checkProperty, lenientResolvesDots, PATH_SEGMENTS, PATH_SEPARATORS } from './fuzz.js'

// What the proxy makes of a request target before it goes to a target: encoded, in origin-form,
// refused when it has a dot segment. Whatever the client or the route sends, none of the three
// throws, the result is a path on the target, and no target that resolves dot segments (as the
// WHATWG URL parser does, or one that also decodes `%2f` or drops `;` parameters) can be walked
// out of the route with a path the proxy let through.

/** A request target as a route or a client may give it: origin-form, absolute-form, `*`, or anything. */
const requestTarget = (() => {
  const path = fc.array(fc.tuple(fc.constantFrom(...PATH_SEPARATORS), fc.oneof(fc.constantFrom(...PATH_SEGMENTS), anyString(6))), { maxLength: 8 })
    .map((parts) => parts.map(([separator, segment]) => separator + segment).join('') || '/')
  const host = fc.constantFrom('gw.example', '127.0.0.1:1', 'evil.example', 'user@evil.example', '[::1]:80', 'evil.example:99999', '')
  return fc.oneof(
    { weight: 4, arbitrary: path },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom('http://', 'https://', 'HTTP://', 'ftp://', 'http:', '//', 'http:///'), host, path).map(([scheme, h, p]) => scheme + h + p) },
    { weight: 1, arbitrary: fc.constantFrom('*', '', '?', 'http://evil.example', 'evil.example:443', 'http://[bad', 'javascript:alert(1)') },
    { weight: 1, arbitrary: anyString(30) }
  )
})()

/** A UTF-16 code unit that is half of a pair without its other half: the string is not Unicode. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

test('encodeRequestTarget: visible ASCII out, nothing lost, null only for a string that is not Unicode', async (t) => {
  await checkProperty(t, 'encodeRequestTarget never throws, leaves visible ASCII as it is, and encodes the rest', fc.property(
    anyString(40),
    (path) => {
      const encoded = encodeRequestTarget(path)
      if (encoded === null) return LONE_SURROGATE.test(path)
      if (!/^[\x21-\x7e]*$/.test(encoded)) return false
      return /^[\x21-\x7e]*$/.test(path) ? encoded === path : encoded !== path
    }))

  // Without a `%` of its own, a path decodes back exactly: nothing was lost or added.
  await checkProperty(t, 'a path without % decodes back to itself', fc.property(
    fc.string({ unit: fc.oneof(fc.constantFrom(...'/abc.?=&;#\\ \t\u0000\u007f\u00e9\u2028'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength: 30 }),
    (path) => {
      fc.pre(!path.includes('%'))
      const encoded = encodeRequestTarget(path)
      return encoded !== null && decodeURIComponent(encoded) === path
    }))
})

/** What the proxy sends for a request target: null when it refuses it (not Unicode, or a dot segment). */
function sentFor (target: string): string | null {
  const encoded = encodeRequestTarget(target)
  if (encoded === null) return null
  const sent = originFormOf(encoded)
  if (sent === null) return null
  return hasDotSegment(sent) ? null : sent
}

test('the path the proxy sends always starts with /', async (t) => {
  await checkProperty(t, 'originFormOf(encodeRequestTarget(x)) starts with /', fc.property(requestTarget, (target) => {
    const sent = sentFor(target)
    if (sent !== null && !sent.startsWith('/')) throw new Error(`sent ${JSON.stringify(sent)}`)
    return true
  }))
})

test('the path the proxy sends: visible ASCII, and no dot segment a lenient target would resolve', async (t) => {
  await checkProperty(t, 'unless hasDotSegment refuses it, the path the proxy sends resolves to itself on a lenient target', fc.property(
    requestTarget,
    (target) => {
      const sent = sentFor(target)
      if (sent === null) return true
      if (!/^[\x21-\x7e]*$/.test(sent)) throw new Error(`sent ${JSON.stringify(sent)}`)
      // A path without a leading / is the property above.
      fc.pre(sent.startsWith('/'))
      if (lenientResolvesDots(sent)) throw new Error(`${JSON.stringify(sent)} passed, but a lenient target resolves its dot segments`)
      return true
    }))

  const plainSegment = fc.oneof(fc.constantFrom('a', 'b', '...', '.a', 'a.', '..a', '.well-known', '%2ea', 'a%2e', '%25', '~', '@', ':', '*', '=', ';x', 'a;..'),
    fc.string({ unit: fc.constantFrom(...'abcXYZ019-_~!$&\'()*+,=:@'), minLength: 1, maxLength: 6 }))
  const plainPath = fc.array(plainSegment, { minLength: 1, maxLength: 6 }).map((segments) => `/${segments.join('/')}`)

  await checkProperty(t, 'names that only contain dots are never refused', fc.property(
    plainPath, fc.option(fc.constantFrom('?next=../x', '?a=/./b', '?%2e%2e'), { nil: '' }),
    (path, query) => !hasDotSegment(path + query)))

  await checkProperty(t, 'originFormOf keeps an origin-form target as it is, and the path and query of an absolute-form one', fc.property(
    plainPath, fc.constantFrom('', '?q=1', '?a=b&c=%20'), fc.constantFrom('http://gw.example', 'https://evil.example:8443', 'http://127.0.0.1:1'),
    (path, query, origin) => originFormOf(path + query) === path + query && originFormOf(origin + path + query) === path + query))
})
