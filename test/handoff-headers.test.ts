import { test } from 'tap'
import type { FastifyStickyOptions, TargetGroupOptions } from '../lib/index.js'
import { buildGateway, CookieJar, echoOf, type Echo, startTargets, type TestTarget, waitFor } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

const FORGED = { 'x-sticky-previous-target': 'forged', 'x-sticky-handoff-reason': 'forged' }

/** A gateway with one group `g` of `targets` (lb_cookie unless `group` says otherwise) on `/*`; handlers see `request.affinity`. */
async function gateway (t: Tap, targets: ReadonlyArray<{ id: string, url: string }>, options: Partial<FastifyStickyOptions> = {}, group: Partial<TargetGroupOptions> = {}) {
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), stickiness: { type: 'lb_cookie' }, ...group }],
    ...options
  })
  const previous: Array<string | undefined> = []
  app.get('/*', { config: { targetGroup: 'g' } }, (request, reply) => {
    const affinity = request.affinity
    previous.push(affinity?.outcome === 'reassigned' ? affinity.previousTargetId : undefined)
    return reply.forward()
  })
  return { app, previous }
}

/** The hand-off headers a target saw. */
function handoffOf (echo: Echo, previous = 'x-sticky-previous-target', reason = 'x-sticky-handoff-reason'): { previous: unknown, reason: unknown } {
  return { previous: echo.headers[previous], reason: echo.headers[reason] }
}

const NONE = { previous: undefined, reason: undefined }

/** Pins a new client and returns its jar and target. */
async function pin (app: Awaited<ReturnType<typeof gateway>>['app'], headers: Record<string, string> = {}): Promise<{ jar: CookieJar, pinned: string, echo: Echo }> {
  const jar = new CookieJar()
  const res = await app.inject({ url: '/', headers })
  jar.store(res.headers['set-cookie'])
  return { jar, pinned: echoOf(res).target, echo: echoOf(res) }
}

test('on by default: a client moved off a deregistered target hands off from it; a hit and a new client carry nothing, forged copies never pass', async (t) => {
  const targets = await startTargets(t, 3)
  const { app, previous } = await gateway(t, targets, {}, { drainingKeepsSessions: false })
  const { jar, pinned, echo } = await pin(app, FORGED)
  t.same(handoffOf(echo), NONE, `a new client: nothing, the forged copies taken out: ${JSON.stringify(echo.headers)}`)
  const hit = echoOf(await app.inject({ url: '/', headers: { ...jar.headers(), ...FORGED } }))
  t.equal(hit.target, pinned)
  t.same(handoffOf(hit), NONE, 'a hit: nothing, the forged copies taken out')

  await app.targetGroups.get('g')!.deregister(pinned)
  const moved = echoOf(await app.inject({ url: '/', headers: { ...jar.headers(), ...FORGED } }))
  t.not(moved.target, pinned)
  t.same(handoffOf(moved), { previous: pinned, reason: 'target-deregistered' }, 'the new target learns where the client was, and why it moved')
  t.equal(previous.at(-1), pinned, 'request.affinity.previousTargetId names it too')
})

test('a refused connection hands the client off from the target that refused', async (t) => {
  const targets = await startTargets(t, 2)
  const { app, previous } = await gateway(t, targets)
  const { jar, pinned } = await pin(app)
  await targets.find(({ id }) => id === pinned)!.stop()
  const res = await app.inject({ url: '/', headers: { ...jar.headers(), ...FORGED } })
  t.equal(res.statusCode, 200)
  const moved = echoOf(res)
  t.not(moved.target, pinned)
  t.same(handoffOf(moved), { previous: pinned, reason: 'target-unreachable' }, 'redispatched with the target that refused')
  t.equal(previous.at(-1), undefined, 'the handler saw a hit (the redispatch came after it)')
  jar.store(res.headers['set-cookie'])
  const after = echoOf(await app.inject({ url: '/', headers: jar.headers() }))
  t.equal(after.target, moved.target, 'pinned to the new target now')
  t.same(handoffOf(after), NONE, 'the next request is a hit there: nothing to hand off')
})

test('a new client redispatched after a refused connection has nothing to hand off', async (t) => {
  const targets = await startTargets(t, 2)
  const { app } = await gateway(t, targets)
  await targets[0].stop()
  const seen: Echo[] = []
  for (let i = 0; i < 4; i++) seen.push(echoOf(await app.inject({ url: '/', headers: FORGED })))
  t.same(seen.map(({ target }) => target), ['t1', 't1', 't1', 't1'])
  t.same(seen.map((echo) => handoffOf(echo)), [NONE, NONE, NONE, NONE], 'no hand-off, and the forged copies never pass')
})

test('an ejected target hands its clients off (failover)', async (t) => {
  const targets = await startTargets(t, 2)
  const { app } = await gateway(t, targets, {}, { outlierDetection: { consecutiveErrors: 1, baseEjectionMs: 60_000, maxEjectedPercent: 50 } })
  const { jar, pinned } = await pin(app)
  const failed = await app.inject({ url: '/status/500', headers: jar.headers() })
  t.equal(failed.statusCode, 500)
  const moved = echoOf(await app.inject({ url: '/', headers: jar.headers() }))
  t.not(moved.target, pinned)
  t.same(handoffOf(moved), { previous: pinned, reason: 'target-ejected' })
})

test('app-cookie stickiness hands off from the bound target', async (t) => {
  const targets = await startTargets(t, 2)
  const { app } = await gateway(t, targets, {}, { stickiness: { type: 'app_cookie', cookieName: 'sid' }, drainingKeepsSessions: false })
  const jar = new CookieJar()
  const login = await app.inject({ url: '/login' })
  jar.store(login.headers['set-cookie'])
  const pinned = echoOf(login).target
  await app.targetGroups.get('g')!.deregister(pinned)
  const moved = echoOf(await app.inject({ url: '/', headers: jar.headers() }))
  t.not(moved.target, pinned)
  t.same(handoffOf(moved), { previous: pinned, reason: 'target-deregistered' })
})

test('handoffHeaders: false sends none, and still takes out the clients\' copies', async (t) => {
  const targets = await startTargets(t, 2)
  const { app } = await gateway(t, targets, { handoffHeaders: false }, { drainingKeepsSessions: false })
  const { jar, pinned } = await pin(app)
  await app.targetGroups.get('g')!.deregister(pinned)
  const moved = echoOf(await app.inject({ url: '/', headers: { ...jar.headers(), ...FORGED } }))
  t.not(moved.target, pinned)
  t.same(handoffOf(moved), NONE)
})

test('handoffHeaders names the headers; clients\' copies of both names are taken out', async (t) => {
  const targets: TestTarget[] = await startTargets(t, 2)
  const { app } = await gateway(t, targets, { handoffHeaders: { previousTarget: 'X-From', reason: 'x-why' } }, { drainingKeepsSessions: false })
  const forged = { 'x-from': 'forged', 'x-why': 'forged' }
  const { jar, pinned, echo } = await pin(app, forged)
  t.same(handoffOf(echo, 'x-from', 'x-why'), NONE, 'a new client: the forged copies taken out')
  await app.targetGroups.get('g')!.deregister(pinned)
  const moved = echoOf(await app.inject({ url: '/', headers: { ...jar.headers(), ...forged } }))
  t.same(handoffOf(moved, 'x-from', 'x-why'), { previous: pinned, reason: 'target-deregistered' })
  t.same(handoffOf(moved), NONE, 'not under the default names')
})

test('a target deregistered while the handler awaited hands its pinned client off', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), drainingKeepsSessions: false }] })
  let gate: Promise<unknown> = Promise.resolve()
  const outcomes: string[] = []
  app.get('/*', { config: { targetGroup: 'g' } }, async (request, reply) => {
    outcomes.push(request.affinity?.outcome ?? 'none')
    await gate
    return reply.forward()
  })
  const jar = new CookieJar()
  const first = await app.inject({ url: '/' })
  jar.store(first.headers['set-cookie'])
  const pinned = echoOf(first).target

  let open!: () => void
  gate = new Promise<void>((resolve) => { open = resolve })
  const pending = app.inject({ url: '/', headers: jar.headers() })
  await waitFor(() => outcomes.length === 2, 2000, 'the handler to hold the second request')
  t.equal(outcomes[1], 'hit', 'decided on the pinned target')
  await app.targetGroups.get('g')!.deregister(pinned)
  open()
  const moved = echoOf(await pending)
  t.not(moved.target, pinned)
  t.same(handoffOf(moved), { previous: pinned, reason: 'target-deregistered' }, 'the new target learns where the client was')
})
