import { test } from 'tap'
import { buildGateway, echoOf, startTargets } from './setup.js'
import type { AffinityDecision } from '../lib/types.js'

function decisionOf (res: { headers: Record<string, unknown> }): AffinityDecision {
  return JSON.parse(String(res.headers['x-decision'])) as AffinityDecision
}

test('learn: the gateway learns the app\'s session cookie from the target and keeps a client that returns only it', async (t) => {
  let now = 1_800_000_000_000
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, {
    now: () => now,
    targetGroups: [{ name: 'g', targets: targets.map((target) => ({ id: target.id, url: target.url })), stickiness: { type: 'learn', cookieName: 'sid', durationSeconds: 600 } }]
  })
  app.addHook('onSend', async (request, reply) => {
    if (request.affinity !== null) reply.header('x-decision', JSON.stringify(request.affinity))
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())

  const clients: Array<{ sid: string, target: string }> = []
  for (let i = 0; i < 6; i++) {
    const login = await app.inject({ url: '/login' })
    t.match(decisionOf(login), { outcome: 'new' })
    const line = ([] as string[]).concat(login.headers['set-cookie'] as string[]).find((value) => value.startsWith('sid='))!
    t.notOk(([] as string[]).concat(login.headers['set-cookie'] as string[]).some((value) => value.startsWith('AWSALB')), 'learn writes no gateway cookie')
    clients.push({ sid: line.split(';')[0], target: echoOf(login).target })
  }
  t.ok(new Set(clients.map((client) => client.target)).size > 1, 'the logins spread')
  for (let round = 0; round < 3; round++) {
    for (const client of clients) {
      const res = await app.inject({ url: '/cart', headers: { cookie: client.sid } })
      t.equal(echoOf(res).target, client.target, 'the app cookie alone keeps the client on its target')
      t.match(decisionOf(res), { outcome: 'hit', stickiness: 'learn', decidedBy: 'learn' })
    }
  }
  // Entries live durationSeconds since their last use: used now, still there 599 s later, gone 601 s after that.
  now += 599_000
  t.match(decisionOf(await app.inject({ url: '/', headers: { cookie: clients[0].sid } })), { outcome: 'hit' }, 'the window slides with each use')
  now += 601_000
  t.match(decisionOf(await app.inject({ url: '/', headers: { cookie: clients[1].sid } })), { outcome: 'new' }, 'an entry unused for longer than the duration is gone')
  // The app ends the session: the entry goes with it.
  t.match(decisionOf(await app.inject({ url: '/', headers: { cookie: clients[0].sid } })), { outcome: 'new' }, 'so is one last used 601 s ago')
  const login = await app.inject({ url: '/login' })
  const sid = ([] as string[]).concat(login.headers['set-cookie'] as string[]).find((value) => value.startsWith('sid='))!.split(';')[0]
  const logout = await app.inject({ url: '/logout', headers: { cookie: sid } })
  t.equal(echoOf(logout).target, echoOf(login).target)
  const after = await app.inject({ url: '/', headers: { cookie: sid } })
  t.match(decisionOf(after), { outcome: 'new' }, 'a session the app deleted is forgotten')
})

test('learn: a client whose target is gone is re-pinned where it lands, and stays there', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: targets.map((target) => ({ id: target.id, url: target.url })), stickiness: { type: 'learn', cookieName: 'sid' }, deregistrationDelayMs: 0 }]
  })
  app.addHook('onSend', async (request, reply) => {
    if (request.affinity !== null) reply.header('x-decision', JSON.stringify(request.affinity))
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const login = await app.inject({ url: '/login' })
  const sid = ([] as string[]).concat(login.headers['set-cookie'] as string[]).find((value) => value.startsWith('sid='))!.split(';')[0]
  const first = echoOf(login).target
  await app.targetGroups.get('g')!.deregister(first)
  const moved = await app.inject({ url: '/', headers: { cookie: sid } })
  t.match(decisionOf(moved), { outcome: 'reassigned', reason: 'target-deregistered' })
  const second = echoOf(moved).target
  t.not(second, first)
  for (let i = 0; i < 5; i++) {
    const res = await app.inject({ url: '/', headers: { cookie: sid } })
    t.equal(echoOf(res).target, second, 'the session stays on its new target')
    t.match(decisionOf(res), { outcome: 'hit', decidedBy: 'learn' })
  }
  const header = await app.inject({ url: '/', headers: { cookie: 'sid=never-seen' } })
  t.match(decisionOf(header), { outcome: 'new' }, 'an id the store never saw is placed by the algorithm')
  const again = await app.inject({ url: '/', headers: { cookie: 'sid=never-seen' } })
  t.equal(echoOf(again).target, echoOf(header).target, 'and remembered where it was placed')
})

test('learn: two groups that see the same session id keep their own entries', async (t) => {
  const targets = await startTargets(t, 4)
  const app = await buildGateway(t, {
    targetGroups: [
      { name: 'a', targets: targets.slice(0, 2).map((target) => ({ id: target.id, url: target.url })), stickiness: { type: 'learn', cookieName: 'sid' } },
      { name: 'b', targets: targets.slice(2).map((target) => ({ id: target.id, url: target.url })), stickiness: { type: 'learn', cookieName: 'sid' } }
    ]
  })
  app.addHook('onSend', async (request, reply) => {
    if (request.affinity !== null) reply.header('x-decision', JSON.stringify(request.affinity))
  })
  app.get('/a/*', { config: { targetGroup: 'a' } }, (_request, reply) => reply.forward())
  app.get('/b/*', { config: { targetGroup: 'b' } }, (_request, reply) => reply.forward())
  // The same id reaches both groups (one app cookie for the whole site).
  const cookie = 'sid=shared-session'
  const onA = echoOf(await app.inject({ url: '/a/x', headers: { cookie } })).target
  const onB = echoOf(await app.inject({ url: '/b/x', headers: { cookie } })).target
  for (let i = 0; i < 3; i++) {
    const a = await app.inject({ url: '/a/x', headers: { cookie } })
    const b = await app.inject({ url: '/b/x', headers: { cookie } })
    t.equal(echoOf(a).target, onA)
    t.equal(echoOf(b).target, onB)
    t.match(decisionOf(a), { outcome: 'hit', decidedBy: 'learn' }, 'group a\'s entry was not overwritten by group b')
    t.match(decisionOf(b), { outcome: 'hit', decidedBy: 'learn' })
  }
})
