import type { PeerTrust } from '../client-address.js'
import type { KeyStickinessType } from '../types.js'
import { HeaderSource, resolveHeaderKey } from './header.js'
import { PathSource, resolvePathKey } from './path.js'
import { QuerySource, resolveQueryKey } from './query.js'
import type { KeySource, ResolvedKeySource } from './source.js'
import { resolveSourceIp, SourceIpSource } from './source-ip.js'

/** Every key type: adding one adds its file, a line here, its name in the types and in the options' list. */
export const KEY_TYPES: readonly KeyStickinessType[] = ['source_ip', 'header', 'query', 'path']

/** Checks a key source's options (`raw` without `enabled`), naming `path` in errors. */
export function resolveKeySource (type: KeyStickinessType, raw: unknown, path: string): ResolvedKeySource {
  switch (type) {
    case 'source_ip': return resolveSourceIp(raw, path)
    case 'header': return resolveHeaderKey(raw, path)
    case 'query': return resolveQueryKey(raw, path)
    default: return resolvePathKey(raw, path)
  }
}

/** What a key source needs of the gateway. */
export interface KeySourceContext {
  readonly peers: PeerTrust
}

/** Builds the key source of a resolved link, once per route. */
export function createKeySource (link: ResolvedKeySource, context: KeySourceContext): KeySource {
  switch (link.type) {
    case 'source_ip': return new SourceIpSource(link, context.peers)
    case 'header': return new HeaderSource(link)
    case 'query': return new QuerySource(link)
    default: return new PathSource(link)
  }
}
