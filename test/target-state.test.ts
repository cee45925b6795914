import { test } from 'tap'
import { matchesStatus, parseMatcher } from '../lib/health/matcher.js'
import {
  afterCheck, afterDeregistration, afterDraining, isRoutable, registeredHealth,
  type CheckResult, type HealthThresholds, type TargetHealth
} from '../lib/health/target-state.js'

const ALB: HealthThresholds = { healthyThreshold: 5, unhealthyThreshold: 2 }
const PASS: CheckResult = { ok: true }
const TIMEOUT: CheckResult = { ok: false, reason: 'Target.Timeout' }
const MISMATCH: CheckResult = { ok: false, reason: 'Target.ResponseCodeMismatch' }
const REFUSED: CheckResult = { ok: false, reason: 'Target.FailedHealthChecks' }

/** Applies the results in order, one a second from t = 1000 ms; returns every state seen. */
function run (start: TargetHealth, results: CheckResult[], thresholds = ALB): TargetHealth[] {
  const seen: TargetHealth[] = []
  let health = start
  results.forEach((result, i) => {
    health = afterCheck(health, result, thresholds, 1000 * (i + 1))
    seen.push(health)
  })
  return seen
}

test('a new target is initial until one check passes, and takes no new sessions before', async (t) => {
  const start = registeredHealth('initial', 0)
  t.same(start, { state: 'initial', reason: 'Elb.InitialHealthChecking', passes: 0, failures: 0, sinceMs: 0 })
  t.notOk(isRoutable(start), 'initial is not routable')
  const [after] = run(start, [PASS])
  t.same(after, { state: 'healthy', reason: null, passes: 1, failures: 0, sinceMs: 1000 }, 'one pass is enough (ALB)')
  t.ok(isRoutable(after))
  t.ok(Object.isFrozen(after), 'immutable')
})

test('healthy until proven otherwise, when chosen', async (t) => {
  const start = registeredHealth('healthy', 0)
  t.equal(start.state, 'healthy')
  t.ok(isRoutable(start))
  t.same(run(start, [MISMATCH, MISMATCH]).map((h) => h.state), ['healthy', 'unhealthy'], 'out after the unhealthy threshold')
})

test('an initial target that keeps failing becomes unhealthy after the unhealthy threshold', async (t) => {
  const seen = run(registeredHealth('initial', 0), [REFUSED, REFUSED, REFUSED])
  t.same(seen.map((h) => `${h.state}:${h.reason}`), [
    'initial:Elb.InitialHealthChecking', 'unhealthy:Target.FailedHealthChecks', 'unhealthy:Target.FailedHealthChecks'
  ])
  t.equal(seen[1].sinceMs, 2000, 'unhealthy since the second failure')
  t.equal(seen[2].sinceMs, 2000, 'and still since then')
})

test('thresholds are counted exactly: 2 failures out, 5 passes back, a break in a run starts it over', async (t) => {
  const healthy = run(registeredHealth('initial', 0), [PASS])[0]
  const seen = run(healthy, [TIMEOUT, PASS, TIMEOUT, TIMEOUT, PASS, PASS, PASS, PASS, MISMATCH, PASS, PASS, PASS, PASS, PASS])
  t.same(seen.map((h) => h.state), [
    'healthy', 'healthy', 'healthy', 'unhealthy', // one failure, a pass resets, then two in a row
    'unhealthy', 'unhealthy', 'unhealthy', 'unhealthy', 'unhealthy', // four passes, then a failure resets the count
    'unhealthy', 'unhealthy', 'unhealthy', 'unhealthy', 'healthy' // five in a row bring it back
  ])
  t.equal(seen[3].reason, 'Target.Timeout', 'the reason is the failure that took it out')
  t.equal(seen[8].reason, 'Target.ResponseCodeMismatch', 'and follows the latest failure while unhealthy')
  t.equal(seen[13].reason, null)
  t.equal(seen[13].sinceMs, 14_000)
})

test('other thresholds: 3 out, 2 back', async (t) => {
  const healthy = registeredHealth('healthy', 0)
  const seen = run(healthy, [TIMEOUT, TIMEOUT, TIMEOUT, PASS, PASS], { healthyThreshold: 2, unhealthyThreshold: 3 })
  t.same(seen.map((h) => h.state), ['healthy', 'healthy', 'unhealthy', 'unhealthy', 'healthy'])
})

test('deregistration: draining, then unused; checks no longer change either', async (t) => {
  const healthy = registeredHealth('healthy', 0)
  const draining = afterDeregistration(healthy, 5000)
  t.same(draining, { state: 'draining', reason: 'Target.DeregistrationInProgress', passes: 0, failures: 0, sinceMs: 5000 })
  t.notOk(isRoutable(draining), 'draining takes no new sessions')
  t.equal(afterCheck(draining, TIMEOUT, ALB, 6000), draining, 'a check result does not move a draining target')
  t.equal(afterDeregistration(draining, 7000), draining, 'deregistering twice changes nothing')
  const unused = afterDraining(draining, 8000)
  t.same(unused, { state: 'unused', reason: 'Target.NotRegistered', passes: 0, failures: 0, sinceMs: 8000 })
  t.equal(afterCheck(unused, PASS, ALB, 9000), unused)
  t.equal(afterDraining(unused, 9000), unused)
  t.equal(afterDeregistration(run(registeredHealth('initial', 0), [REFUSED, REFUSED])[1], 3000).state, 'draining', 'an unhealthy target drains too')
})

test('matchers: a code, a list, a range, within 200-499', async (t) => {
  t.same(parseMatcher('200'), [[200, 200]])
  t.same(parseMatcher('200,202'), [[200, 200], [202, 202]])
  t.same(parseMatcher('200-299'), [[200, 299]])
  t.same(parseMatcher(' 200 , 300-399 '), [[200, 200], [300, 399]], 'spaces around commas')
  for (const bad of ['', ' ', '199', '500', '200-500', '299-200', '2xx', '200,', 'abc', '200;202', '0200']) {
    t.equal(parseMatcher(bad), null, `refused: ${JSON.stringify(bad)}`)
  }
  const matcher = parseMatcher('200,204-206') ?? []
  t.same([199, 200, 201, 203, 204, 205, 206, 207, 500].filter((status) => matchesStatus(matcher, status)), [200, 204, 205, 206])
})
