import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { test } from 'tap'
import { COOKIE_PURPOSE_LB, CookieCodec } from '../lib/cookie-codec.js'
import { buildGateway, CookieJar, echoOf, exposeAffinity, startTargets, TEST_KEY, waitFor } from './setup.js'

const codec = new CookieCodec([Buffer.from(TEST_KEY, 'hex')])

function pinnedTarget (jar: CookieJar): string | undefined {
  return codec.open(COOKIE_PURPOSE_LB, jar.cookies.get('AWSALB') ?? '')?.payload.targetId
}

test('drainingKeepsSessions false (ALB): a deregistered target loses its sticky clients at once, with a new cookie', async (t) => {
  const targets = await startTargets(t, 3)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), drainingKeepsSessions: false }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  const jar = new CookieJar()
  const first = await app.inject({ url: '/' })
  jar.store(first.headers['set-cookie'])
  const pinned = echoOf(first).target

  t.equal(await app.targetGroups.get('g')!.deregister(pinned), true, 'deregister resolves true')
  const moved = await app.inject({ url: '/', headers: jar.headers() })
  jar.store(moved.headers['set-cookie'])
  t.equal(moved.statusCode, 200)
  t.not(echoOf(moved).target, pinned, `answered by another target than ${pinned}`)
  t.equal(moved.headers['x-affinity'], 'reassigned;target-deregistered')
  t.equal(pinnedTarget(jar), echoOf(moved).target, 'the new cookie names the new target')
  for (let i = 0; i < 10; i++) {
    const res = await app.inject({ url: '/', headers: jar.headers() })
    t.equal(echoOf(res).target, echoOf(moved).target, `request ${i} stays on the new target`)
  }
  t.equal(await app.targetGroups.get('g')!.deregister(pinned), false, 'deregistering it again resolves false')
})

test('a request in flight on a deregistered target finishes; draining ends with it and the pool closes', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'only', url: targets[0].url }], drainingKeepsSessions: false }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const inFlight = app.inject({ url: '/hold' })
  const group = app.targetGroups.get('g')!
  await waitFor(() => targets[0].hits === 1, 2000, 'the request to reach the target')
  let deregistered = false
  const deregistering = group.deregister('only').then(() => { deregistered = true })
  const after = await app.inject({ url: '/' })
  t.equal(after.statusCode, 503, 'no registered target left: 503')
  t.equal(after.json().code, 'FST_STICKY_TARGET_GROUP_UNAVAILABLE')
  t.notOk(deregistered, 'deregistration waits for the request in flight')
  targets[0].release()
  const res = await inFlight
  t.equal(res.statusCode, 200, 'the request in flight finished')
  await deregistering
  t.ok(deregistered)
})

test('a target registered at run time takes new clients', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: targets[0].id, url: targets[0].url }] }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const ref = app.targetGroups.get('g')!.register({ id: targets[1].id, url: targets[1].url })
  t.same({ id: ref.id, origin: ref.origin }, { id: 't1', origin: targets[1].url })
  t.same(app.targetGroups.get('g')!.targets.map((target) => target.id), ['t0', 't1'])
  const seen = new Set<string>()
  for (let i = 0; i < 4; i++) seen.add(echoOf(await app.inject({ url: '/' })).target)
  t.same([...seen].sort(), ['t0', 't1'], 'both targets take new clients')
})

test('when the pinned target’s process is killed, its clients fail over with a new cookie', async (t) => {
  const targets = await startTargets(t, 2)
  const child = spawn(process.execPath, ['-e', `
    const http = require('node:http')
    http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ target: 'doomed' }))
    }).listen(0, '127.0.0.1', function () { console.log(this.address().port) })
  `], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const [line] = await once(child.stdout, 'data') as [Buffer]
  const url = `http://127.0.0.1:${Number(line.toString().trim())}`

  const app = await buildGateway(t, {
    targetGroups: [{ name: 'g', targets: [{ id: 'doomed', url }, ...targets.map(({ id, url }) => ({ id, url }))] }]
  })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  const jar = new CookieJar()
  const first = await app.inject({ url: '/' })
  jar.store(first.headers['set-cookie'])
  t.equal(echoOf(first).target, 'doomed', 'round robin puts the first client on the child process')
  const again = await app.inject({ url: '/', headers: jar.headers() })
  t.equal(echoOf(again).target, 'doomed', 'and keeps it there')

  child.kill('SIGKILL')
  await once(child, 'exit')
  const moved = await app.inject({ url: '/', headers: jar.headers() })
  jar.store(moved.headers['set-cookie'])
  t.equal(moved.statusCode, 200, 'no error reaches the client')
  t.not(echoOf(moved).target, 'doomed', `answered by ${echoOf(moved).target}`)
  t.equal(moved.headers['x-affinity'], 'reassigned;target-unreachable')
  t.equal(pinnedTarget(jar), echoOf(moved).target, 'the new cookie names the new target')
  const next = await app.inject({ url: '/', headers: jar.headers() })
  t.equal(next.headers['x-affinity'], 'hit', 'and the client is sticky there')
  t.equal(echoOf(next).target, echoOf(moved).target)
})

test('after the app closed, register() refuses instead of opening a pool nobody would close', async (t) => {
  const targets = await startTargets(t, 1)
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [] }] })
  const group = app.targetGroups.get('g')!
  await app.close()
  t.throws(() => group.register({ id: 'late', url: targets[0].url }), { code: 'FST_STICKY_TARGET_GROUP_CLOSED', message: "Target group 'g' is closed: its app has closed" })
  t.same(group.targets, [], 'nothing was added')
})
