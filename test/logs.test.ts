import { test } from 'tap'
import Fastify from 'fastify'
import fastifySticky from '../lib/index.js'
import { CookieJar, refusedUrl, startTargets, TEST_KEY, waitFor } from './setup.js'

interface LogLine {
  level: number
  msg: string
  [field: string]: unknown
}

const INFO = 30
/** The fields of the decision line, as docs/logs.md lists them. */
const DECISION_FIELDS = ['targetGroup', 'route', 'outcome', 'decidedBy', 'reason', 'target', 'previousTarget', 'stickiness', 'listener', 'rulePriority', 'groupOutcome']

test('logs at trace: a debug line per decision with its documented fields, state changes at info, and no target address or cookie value at info or above', async (t) => {
  const targets = await startTargets(t, 3)
  const gone = await refusedUrl()
  const lines: LogLine[] = []
  const app = Fastify({ logger: { level: 'trace', stream: { write: (line: string) => { lines.push(JSON.parse(line) as LogLine) } } } })
  t.teardown(() => app.close())
  const refs = targets.map(({ id, url }) => ({ id, url }))
  await app.register(fastifySticky, {
    keys: [TEST_KEY],
    targetGroups: [
      {
        name: 'shop',
        targets: [...refs, { id: 'gone', url: gone }],
        stickiness: { type: 'lb_cookie' },
        healthCheck: { intervalMs: 250, timeoutMs: 200, healthyThreshold: 2, unhealthyThreshold: 2, initialState: 'healthy', allowShortIntervals: true }
      },
      { name: 'accounts', targets: refs, stickiness: { type: 'app_cookie', cookieName: 'sid' } },
      // Nowhere to hand a refused request to: the gateway answers 502.
      { name: 'void', targets: [{ id: 'nowhere', url: gone }] }
    ]
  })
  app.all('/shop/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  app.all('/accounts/*', { config: { targetGroup: 'accounts' } }, (_request, reply) => reply.forward())
  app.all('/void/*', { config: { targetGroup: 'void' } }, (_request, reply) => reply.forward())

  const cookieValues = new Set<string>()
  const send = async (jar: CookieJar, url: string): Promise<number> => {
    const res = await app.inject({ url, headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    for (const value of jar.cookies.values()) cookieValues.add(value)
    return res.statusCode
  }
  // Clients pinned to every target, the refused one included (redispatched), then a target stops under them.
  const jars = Array.from({ length: 8 }, () => new CookieJar())
  for (const jar of jars) {
    await send(jar, '/shop/a')
    await send(jar, '/shop/b')
    await send(jar, '/accounts/login')
    await send(jar, '/accounts/me')
    await send(jar, '/shop/status/500')
  }
  await send(new CookieJar(), '/shop/x')
  t.equal(await send(new CookieJar(), '/void/x'), 502, 'a refused connection with no other target is a 502')
  t.equal(await send(new CookieJar(), '/void/y'), 502, 'twice')
  const forged = new CookieJar()
  forged.cookies.set('AWSALB', 'not-a-sealed-cookie')
  await send(forged, '/shop/forged')
  await targets[1].stop()
  await waitFor(() => lines.some((line) => line.msg === 'fastify-sticky: target state changed' && line.target === 't1' && line.to === 'unhealthy'), 10_000, 't1 logged unhealthy')
  for (const jar of jars) await send(jar, '/shop/after-stop')

  const ports = [...targets.map(({ url }) => new URL(url).port), new URL(gone).port]
  const addressOf = (line: string): string | undefined => ports.find((port) => line.includes(`127.0.0.1:${port}`) || line.includes(`localhost:${port}`))
  const loud = lines.filter((line) => line.level >= INFO).map((line) => JSON.stringify(line))
  t.same(loud.filter((line) => addressOf(line) !== undefined), [], 'no line at info or above shows a target address')
  const all = lines.map((line) => JSON.stringify(line))
  const values = [...cookieValues].filter((value) => value.length >= 3)
  t.ok(values.length >= 8 * 2, `the clients held cookies (AWSALB, sid, AWSALBAPP-*): ${values.length}`)
  t.same(all.filter((line) => values.some((value) => line.includes(value))), [], 'no line at any level shows a cookie value')

  const decisions = lines.filter((line) => line.msg === 'fastify-sticky: affinity decided')
  t.ok(decisions.length >= 8 * 5 + 4, `a decision line per bound request: ${decisions.length}`)
  t.same(decisions.filter((line) => line.level !== 20).map((line) => JSON.stringify(line)), [], 'every decision line is at debug')
  t.same(decisions.filter((line) => DECISION_FIELDS.some((field) => !(field in line))).map((line) => JSON.stringify(line)), [], 'every decision line has every documented field')
  const outcomes = new Set(decisions.map((line) => `${String(line.outcome)};${String(line.outcome === 'reassigned' ? line.reason : line.decidedBy)}`))
  for (const expected of ['new;round_robin', 'hit;lb_cookie', 'reassigned;undecodable', 'reassigned;target-unhealthy', 'hit;app_cookie']) {
    t.ok(outcomes.has(expected), `a decision ${expected} was logged: ${[...outcomes].join(', ')}`)
  }
  const hit = decisions.find((line) => line.outcome === 'hit' && line.targetGroup === 'shop')
  t.match(hit, { targetGroup: 'shop', route: 'GET /shop/*', decidedBy: 'lb_cookie', reason: null, stickiness: 'lb_cookie', listener: null }, 'a hit says its group, route and source')
  t.match(String(hit?.target), /^t[0-2]$|^gone$/, `by target id: ${JSON.stringify(hit)}`)

  const failed = lines.find((line) => line.msg === 'fastify-sticky: target request failed' && line.targetGroup === 'void')
  t.match(failed, { level: 40, target: 'nowhere', code: 'ECONNREFUSED', suppressed: 0 }, `the failure is a warning by target id: ${JSON.stringify(failed)}`)
  const changes = lines.filter((line) => line.msg.startsWith('fastify-sticky: target '))
  const registered = changes.filter((line) => line.msg === 'fastify-sticky: target registered')
  t.same(registered.map((line) => `${String(line.targetGroup)}/${String(line.target)}`).sort(),
    ['accounts/t0', 'accounts/t1', 'accounts/t2', 'shop/gone', 'shop/t0', 'shop/t1', 'shop/t2', 'void/nowhere'], 'every registration at info')
  t.same(registered.filter((line) => line.level !== INFO).map((line) => JSON.stringify(line)), [], 'registrations are at info')
  const down = changes.find((line) => line.msg === 'fastify-sticky: target state changed' && line.target === 't1')
  t.match(down, { level: INFO, targetGroup: 'shop', change: 'state', from: 'healthy', to: 'unhealthy', reason: /^Target\./ }, `t1's state change at info: ${JSON.stringify(down)}`)
})

test('without debug enabled, no decision line is written', async (t) => {
  const targets = await startTargets(t, 1)
  const lines: LogLine[] = []
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { lines.push(JSON.parse(line) as LogLine) } } } })
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  app.get('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  const res = await app.inject({ url: '/x' })
  t.equal(res.statusCode, 200)
  t.same(lines.filter((line) => line.msg === 'fastify-sticky: affinity decided'), [], 'no decision line at info')
  t.ok(lines.some((line) => line.msg === 'fastify-sticky: target registered' && line.target === 't0' && line.to === 'healthy'), `the registration at info: ${lines.map((line) => line.msg).join(' | ')}`)
})
