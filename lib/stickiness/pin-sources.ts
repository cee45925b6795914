import type { ResolvedStickiness } from '../options.js'
import type { TargetGroup } from '../target-group.js'
import { AppCookieSource, type AppCookieContext } from './app-cookie.js'
import { LbCookieSource, type LbCookieContext } from './lb-cookie.js'
import { LearnSource, type LearnContext } from './learn.js'
import type { PinSource } from './source.js'

/** What the sources that pin clients need of the gateway. */
export interface PinSourceContext extends LbCookieContext, AppCookieContext, LearnContext {}

/** The source that pins the clients of a route with this stickiness; null when none does (key types alone, or not sticky). Adding a pinning type adds a case here. */
export function createPinSource (group: TargetGroup, stickiness: ResolvedStickiness | null, context: PinSourceContext): PinSource | null {
  switch (stickiness?.type) {
    case 'lb_cookie': return new LbCookieSource(group, stickiness, context)
    case 'app_cookie': return new AppCookieSource(group, stickiness, context)
    case 'learn': return new LearnSource(group, stickiness, context)
    default: return null
  }
}
