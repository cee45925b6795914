import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import * as client from 'prom-client'
import fastifySticky, { type FastifyStickyOptions, type MetricsOptions } from '../lib/index.js'
import type { TargetGroup } from '../lib/target-group.js'
import { buildGateway, CookieJar, echoOf, rawTarget, refusedUrl, startTargets, TEST_KEY, waitFor } from './setup.js'
import { openWs, startWsTargets } from './websocket.js'

type Tap = Parameters<typeof startTargets>[0]

/** A gateway whose routes all forward to group `g`, its metrics in a fresh Registry of the test's own prom-client. */
async function gateway (t: Tap, options: Omit<FastifyStickyOptions, 'metrics'>, metrics: MetricsOptions = {}): Promise<{ app: FastifyInstance, registry: client.Registry }> {
  const registry = new client.Registry()
  const app = await buildGateway(t, { ...options, metrics: { registry, client, ...metrics } })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  return { app, registry }
}

/** The scrape's sample lines, `name{labels} value`, without comments. */
async function samples (registry: { metrics (): Promise<string> }): Promise<string[]> {
  return (await registry.metrics()).split('\n').filter((line) => line !== '' && !line.startsWith('#'))
}

/** The value of the sample `series` (`name{labels}`, exactly as scraped); undefined when absent. */
function valueOf (lines: string[], series: string): number | undefined {
  const line = lines.find((candidate) => candidate.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

/** Every metric name docs/metrics.md documents. */
function documentedNames (): string[] {
  const section = readFileSync(new URL('../docs/metrics.md', import.meta.url), 'utf8')
  return [...new Set([...section.matchAll(/^\| `(fastify_sticky_[a-z_]+)`/gm)].map((match) => match[1]))].sort()
}

test('a scrape after traffic has every documented metric, labelled by group and target id, never by address or cookie', async (t) => {
  const targets = await startTargets(t, 2)
  const { app, registry } = await gateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })) }] })
  t.equal(app.stickyMetrics?.registry, registry, 'app.stickyMetrics.registry is the registry given')

  const jar = new CookieJar()
  const first = await app.inject({ url: '/' })
  jar.store(first.headers['set-cookie'])
  const pinned = echoOf(first).target
  for (let i = 0; i < 3; i++) t.equal(echoOf(await app.inject({ url: '/', headers: jar.headers() })).target, pinned)
  t.equal((await app.inject({ url: '/status/503', headers: jar.headers() })).statusCode, 503)
  t.equal((await app.inject({ url: '/status/404', headers: jar.headers() })).statusCode, 404)

  const text = await registry.metrics()
  const lines = await samples(registry)
  const other = targets.find((target) => target.id !== pinned)?.id as string
  t.equal(valueOf(lines, 'fastify_sticky_decisions_total{target_group="g",outcome="new",reason="",decided_by="round_robin"}'), 1, 'the new client')
  t.equal(valueOf(lines, 'fastify_sticky_decisions_total{target_group="g",outcome="hit",reason="",decided_by="lb_cookie"}'), 5, 'its returns')
  t.equal(valueOf(lines, `fastify_sticky_responses_total{target_group="g",target="${pinned}",status_class="2xx"}`), 4)
  t.equal(valueOf(lines, `fastify_sticky_responses_total{target_group="g",target="${pinned}",status_class="5xx"}`), 1)
  t.equal(valueOf(lines, `fastify_sticky_responses_total{target_group="g",target="${pinned}",status_class="4xx"}`), 1)
  t.equal(valueOf(lines, 'fastify_sticky_request_duration_seconds_count{target_group="g"}'), 6)
  t.equal(valueOf(lines, 'fastify_sticky_request_duration_seconds_bucket{le="+Inf",target_group="g"}'), 6)
  t.equal(valueOf(lines, `fastify_sticky_target_state{target_group="g",target="${pinned}",state="healthy"}`), 1)
  t.equal(valueOf(lines, `fastify_sticky_target_state{target_group="g",target="${pinned}",state="draining"}`), 0)
  t.equal(valueOf(lines, `fastify_sticky_target_in_flight{target_group="g",target="${pinned}"}`), 0)
  t.equal(valueOf(lines, `fastify_sticky_target_bound_sessions{target_group="g",target="${pinned}"}`), 1)
  t.equal(valueOf(lines, `fastify_sticky_target_bound_sessions{target_group="g",target="${other}"}`), 0)
  t.equal(valueOf(lines, `fastify_sticky_target_ejected{target_group="g",target="${other}"}`), 0)
  t.equal(valueOf(lines, `fastify_sticky_target_weight{target_group="g",target="${other}"}`), 1)
  t.equal(valueOf(lines, `fastify_sticky_target_slow_start_weight{target_group="g",target="${other}"}`), 1)
  t.equal(valueOf(lines, 'fastify_sticky_target_group_degraded{target_group="g"}'), 0)

  const scraped = [...text.matchAll(/^# TYPE (\S+) /gm)].map((match) => match[1]).sort()
  t.same(scraped, documentedNames(), 'docs/metrics.md lists every metric the registry holds, and no other')
  for (const target of targets) t.notOk(text.includes(target.url.slice('http://'.length)), `no address in the scrape (${target.url})`)
  t.notOk(text.includes('127.0.0.1'), 'no address at all')
  const cookie = jar.cookies.get('AWSALB') as string
  t.ok(cookie.length > 20)
  t.notOk(text.includes(cookie.slice(0, 20)), 'no cookie value')
})

test('gateway errors are counted by code, with the response that carried them', async (t) => {
  const refused = await refusedUrl()
  const { app, registry } = await gateway(t, { redispatch: false, targetGroups: [{ name: 'g', targets: [{ id: 'gone', url: refused }], outlierDetection: false }] })
  t.equal((await app.inject({ url: '/' })).statusCode, 502)
  t.equal((await app.inject({ url: '/' })).statusCode, 502)
  const tooLong = await app.inject({ url: '/', headers: { 'x-forwarded-for': Array.from({ length: 31 }, (_, i) => `10.0.0.${i}`).join(', ') } })
  t.equal(tooLong.statusCode, 463)
  const lines = await samples(registry)
  t.equal(valueOf(lines, 'fastify_sticky_gateway_errors_total{target_group="g",code="FST_STICKY_TARGET_CONNECTION_FAILED"}'), 2)
  t.equal(valueOf(lines, 'fastify_sticky_gateway_errors_total{target_group="g",code="FST_STICKY_FORWARDED_FOR_TOO_LONG"}'), 1, 'the 463 too, though it is no thrown error')
  t.equal(valueOf(lines, 'fastify_sticky_responses_total{target_group="g",target="gone",status_class="5xx"}'), 2)
  t.equal(valueOf(lines, 'fastify_sticky_responses_total{target_group="g",target="gone",status_class="4xx"}'), 1)
})

test('a response cut after its head went out counts as a gateway error', async (t) => {
  const url = await rawTarget(t, 'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial', true)
  const { app, registry } = await gateway(t, { redispatch: false, targetGroups: [{ name: 'g', targets: [{ id: 'cut', url }] }] })
  await t.rejects(app.inject({ url: '/' }), /destroyed/, 'the client sees its connection end')
  let lines: string[] = []
  await waitFor(async () => {
    lines = await samples(registry)
    return valueOf(lines, 'fastify_sticky_gateway_errors_total{target_group="g",code="FST_STICKY_TARGET_CONNECTION_FAILED"}') === 1
  }, 5000, 'the cut response to be counted')
  t.pass('counted once')
})

test('a WebSocket’s 101 counts as a 1xx response, once', async (t) => {
  const targets = await startWsTargets(t, 1)
  const registry = new client.Registry()
  const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'ws', url: targets[0].url }] }], metrics: { registry, client } })
  app.get('/chat', { config: { targetGroup: 'g', websocket: true } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const socket = await openWs(t, `ws://127.0.0.1:${(app.server.address() as { port: number }).port}/chat`)
  t.equal(await socket.ask('hi'), 't0:hi')
  const lines = await samples(registry)
  t.equal(valueOf(lines, 'fastify_sticky_responses_total{target_group="g",target="ws",status_class="1xx"}'), 1)
  t.equal(valueOf(lines, 'fastify_sticky_decisions_total{target_group="g",outcome="new",reason="",decided_by="round_robin"}'), 1)
  t.equal(valueOf(lines, 'fastify_sticky_request_duration_seconds_count{target_group="g"}'), 1)
  socket.ws.close()
  await socket.closed
  t.equal(valueOf(await samples(registry), 'fastify_sticky_responses_total{target_group="g",target="ws",status_class="1xx"}'), 1, 'and not again when it closes')
})

test('a redispatch counts the new decision, and an empty group counts unavailable', async (t) => {
  const targets = await startTargets(t, 1)
  const refused = await refusedUrl()
  const { app, registry } = await gateway(t, {
    targetGroups: [{ name: 'g', targets: [{ id: 'gone', url: refused }, { id: 'up', url: targets[0].url }], outlierDetection: false, deregistrationDelayMs: 0 }]
  })
  for (let i = 0; i < 2; i++) t.equal(echoOf(await app.inject({ url: '/' })).target, 't0')
  const group = app.targetGroups.get('g') as TargetGroup
  await Promise.all(['gone', 'up'].map(async (id) => await group.deregister(id)))
  t.equal((await app.inject({ url: '/' })).statusCode, 503)
  const lines = await samples(registry)
  t.equal(valueOf(lines, 'fastify_sticky_decisions_total{target_group="g",outcome="new",reason="",decided_by="round_robin"}'), 2, 'each request')
  const redispatched = valueOf(lines, 'fastify_sticky_decisions_total{target_group="g",outcome="reassigned",reason="target-unreachable",decided_by="round_robin"}') ?? 0
  t.ok(redispatched >= 1 && redispatched <= 2, `and each that went to the refusing target first: ${redispatched}`)
  t.equal(valueOf(lines, 'fastify_sticky_decisions_total{target_group="g",outcome="unavailable",reason="",decided_by=""}'), 1)
  t.equal(valueOf(lines, 'fastify_sticky_responses_total{target_group="g",target="",status_class="5xx"}'), 1, 'no target: the gateway answered itself')
  t.equal(valueOf(lines, 'fastify_sticky_gateway_errors_total{target_group="g",code="FST_STICKY_TARGET_GROUP_UNAVAILABLE"}'), 1)
})

test('health checks are counted by target and result, with their durations', async (t) => {
  const targets = await startTargets(t, 1)
  const refused = await refusedUrl()
  const { registry } = await gateway(t, {
    targetGroups: [{
      name: 'g',
      targets: [{ id: 'up', url: targets[0].url }, { id: 'down', url: refused }],
      healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 90, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
    }]
  })
  let lines: string[] = []
  const passes = (): number => valueOf(lines, 'fastify_sticky_health_checks_total{target_group="g",target="up",result="pass",reason=""}') ?? 0
  const failures = (): number => valueOf(lines, 'fastify_sticky_health_checks_total{target_group="g",target="down",result="fail",reason="Target.FailedHealthChecks"}') ?? 0
  await waitFor(async () => {
    lines = await samples(registry)
    return passes() >= 2 && failures() >= 2
  }, 10_000, 'two checks of each target')
  t.ok((valueOf(lines, 'fastify_sticky_health_check_duration_seconds_count{target_group="g"}') ?? 0) >= passes() + failures(), 'every check timed')
  t.equal(valueOf(lines, 'fastify_sticky_target_state{target_group="g",target="down",state="unhealthy"}'), 1)
  t.equal(valueOf(lines, 'fastify_sticky_target_state{target_group="g",target="up",state="healthy"}'), 1)
  t.equal(valueOf(lines, 'fastify_sticky_target_group_degraded{target_group="g"}'), 0, 'one healthy target is the minimum')
})

test('a deregistered target’s series go once it has drained', async (t) => {
  const targets = await startTargets(t, 2)
  const { app, registry } = await gateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), deregistrationDelayMs: 0 }] })
  for (let i = 0; i < 4; i++) await app.inject({ url: '/' })
  t.ok((await registry.metrics()).includes('target="t1"'), 't1 has series while registered')
  t.equal(await (app.targetGroups.get('g') as TargetGroup).deregister('t1'), true)
  const text = await registry.metrics()
  t.notOk(text.includes('target="t1"'), `no series of t1 left:\n${text.split('\n').filter((line) => line.includes('t1')).join('\n')}`)
  t.ok(text.includes('target="t0"'), 't0 keeps its own')
})

test('learn store lookups are counted at scrape time', async (t) => {
  const targets = await startTargets(t, 2)
  const { app, registry } = await gateway(t, { targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), stickiness: { type: 'learn', cookieName: 'sid' } }] })
  t.equal(valueOf(await samples(registry), 'fastify_sticky_learn_store_lookups_total{store="memory",result="local_hit"}') ?? 0, 0, 'none before traffic')
  const login = await app.inject({ url: '/login' })
  const sid = String(login.headers['set-cookie']).split(';')[0]
  for (let i = 0; i < 3; i++) t.equal(echoOf(await app.inject({ url: '/', headers: { cookie: sid } })).target, echoOf(login).target)
  const lines = await samples(registry)
  t.equal(valueOf(lines, 'fastify_sticky_learn_store_lookups_total{store="memory",result="local_hit"}'), 3)
  t.equal(valueOf(lines, 'fastify_sticky_learn_store_errors_total{store="memory"}'), 0)
  t.equal(valueOf(lines, 'fastify_sticky_decisions_total{target_group="g",outcome="hit",reason="",decided_by="learn"}'), 3)
})

test('metrics: true makes a registry of the plugin’s own; a prefix and buckets apply', async (t) => {
  const targets = await startTargets(t, 1)
  const own = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }], metrics: true })
  own.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  await own.inject({ url: '/' })
  const registry = own.stickyMetrics?.registry as client.Registry
  t.ok(registry instanceof client.Registry, 'a prom-client Registry')
  t.equal(registry.contentType, client.register.contentType)
  t.equal(valueOf(await samples(registry), 'fastify_sticky_responses_total{target_group="g",target="a",status_class="2xx"}'), 1)
  t.same(await client.register.getMetricsAsJSON(), [], 'prom-client’s global registry is left alone')

  const { app, registry: prefixed } = await gateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }] }, { prefix: 'edge_', buckets: [0.5, 1] })
  await app.inject({ url: '/' })
  const lines = await samples(prefixed)
  t.equal(valueOf(lines, 'edge_responses_total{target_group="g",target="a",status_class="2xx"}'), 1)
  t.same(lines.filter((line) => line.startsWith('edge_request_duration_seconds_bucket')).map((line) => /le="([^"]+)"/.exec(line)?.[1]), ['0.5', '1', '+Inf'])
})

test('metrics off: no registry touched, no hook on the routes', async (t) => {
  const targets = await startTargets(t, 1)
  for (const metrics of [undefined, false]) {
    const app = await buildGateway(t, { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: targets[0].url }] }], ...(metrics === undefined ? {} : { metrics }) })
    let hooks: unknown = null
    app.addHook('onRoute', (route) => { hooks = route })
    app.get('/', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
    await app.ready()
    t.equal((await app.inject({ url: '/' })).statusCode, 200)
    t.equal(app.stickyMetrics, null, `metrics ${String(metrics)}: app.stickyMetrics is null`)
    t.same((hooks as { onResponse?: unknown, onError?: unknown }).onResponse ?? [], [], 'no onResponse hook')
    t.same(await client.register.getMetricsAsJSON(), [], 'prom-client’s global registry is empty')
  }
})

test('a registry that is no Registry of the prom-client in use, or one already holding the metrics, fails the registration', async (t) => {
  const group = { name: 'g', targets: [{ id: 'a', url: 'http://127.0.0.1:3001' }] }
  const register = async (metrics: MetricsOptions): Promise<Error & { code?: string }> => {
    const app = Fastify()
    t.teardown(() => app.close())
    app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [group], metrics })
    return await app.ready().then(() => { throw new Error('registered') }, (err: Error) => err)
  }
  const lookalike = { contentType: 'text/plain', metrics: async () => '', registerMetric () {}, getSingleMetric () {}, removeSingleMetric () {} }
  const foreign = await register({ registry: lookalike })
  t.equal(foreign.code, 'FST_STICKY_OPTION_INVALID')
  t.equal(foreign.message, 'Invalid fastify-sticky option: metrics.registry must be a Registry of the prom-client in use (the one fastify-sticky loads: with another copy installed, pass yours as metrics.client), received an object')
  const given = await register({ registry: lookalike, client })
  t.equal(given.message, 'Invalid fastify-sticky option: metrics.registry must be a Registry of the prom-client in use (metrics.client), received an object')

  const registry = new client.Registry()
  const first = Fastify()
  await first.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [group], metrics: { registry, client } })
  const clash = await register({ registry, client })
  t.equal(clash.message, 'Invalid fastify-sticky option: metrics.registry already holds a metric named fastify_sticky_decisions_total: give each gateway its own registry or metrics.prefix')
  await first.close()
  t.same(await registry.getMetricsAsJSON(), [], 'a closed app takes its metrics out of the registry')
  const again = Fastify()
  t.teardown(() => again.close())
  await again.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [group], metrics: { registry, client } })
  t.ok((await registry.metrics()).includes('fastify_sticky_decisions_total'), 'so a new app registers them again')
})

test('without prom-client installed, metrics fail the registration with what to do', async (t) => {
  // The built package, in a process where resolving `prom-client` fails as it does when it is not installed.
  const hook = 'export async function resolve (specifier, context, next) { if (specifier === "prom-client") throw Object.assign(new Error("not found"), { code: "ERR_MODULE_NOT_FOUND" }); return next(specifier, context) }'
  const program = `
    import { register } from 'node:module'
    register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}))
    const { default: Fastify } = await import('fastify')
    const { default: sticky } = await import('fastify-sticky')
    const app = Fastify()
    app.register(sticky, { keys: ['${TEST_KEY}'], targetGroups: [{ name: 'g' }], metrics: true })
    await app.ready().then(() => console.log('{}'), (err) => console.log(JSON.stringify({ code: err.code, message: err.message })))
    await app.close()
  `
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', program], { cwd: process.cwd() })
  t.same(JSON.parse(stdout), {
    code: 'FST_STICKY_OPTION_INVALID',
    message: 'Invalid fastify-sticky option: metrics needs prom-client, which could not be loaded (ERR_MODULE_NOT_FOUND): install it (npm install prom-client) or pass its module as metrics.client'
  })
})
