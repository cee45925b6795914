import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { FastifyStickyOptions } from '../lib/index.js'
import { buildGateway, CookieJar, echoOf, startTargets } from './setup.js'

type Tap = Parameters<typeof buildGateway>[0]

/** A gateway whose every path goes to group `name`, exposing its affinity in `header`. */
async function layer (t: Tap, prefix: string, name: string, targets: Array<{ id: string, url: string }>, header: string, options: Partial<FastifyStickyOptions> = {}): Promise<FastifyInstance> {
  const app = await buildGateway(t, { ...options, cookiePrefix: prefix, targetGroups: [{ name, targets }] })
  app.addHook('onSend', async (request, reply) => {
    if (request.affinity !== null) reply.header(header, `${request.affinity.outcome}:${request.affinity.target?.id ?? ''}`)
  })
  app.all('/*', { config: { targetGroup: name } }, (_request, reply) => reply.forward())
  return app
}

test('two layers of gateways, the inner one with a cookie prefix, each keep their own cookies and clients', async (t) => {
  const backends = await startTargets(t, 2)
  const inner: string[] = []
  for (let i = 0; i < 2; i++) {
    const app = await layer(t, 'IN-', 'app', backends.map(({ id, url }) => ({ id, url })), 'x-inner')
    inner.push(await app.listen({ port: 0, host: '127.0.0.1' }))
  }
  const outer = await layer(t, '', 'edge', inner.map((url, i) => ({ id: `inner-${i}`, url })), 'x-outer')

  const jar = new CookieJar()
  const first = await outer.inject({ url: '/cart' })
  jar.store(first.headers['set-cookie'])
  t.same([...jar.cookies.keys()].sort(), ['AWSALB', 'IN-AWSALB'], 'the browser holds both layers’ cookies (over plain HTTP, no CORS twin)')
  t.match(first.headers['x-inner'], /^new:/)
  t.match(first.headers['x-outer'], /^new:/)
  const backend = echoOf(first).target
  for (let i = 0; i < 5; i++) {
    const res = await outer.inject({ url: '/cart', headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    t.equal(res.headers['x-outer'], first.headers['x-outer']?.toString().replace('new', 'hit'), `request ${i + 1}: the outer layer holds the client on its inner gateway`)
    t.equal(res.headers['x-inner'], `hit:${backend}`, `request ${i + 1}: the inner layer holds it on its backend`)
    t.equal(echoOf(res).target, backend)
  }
})

test('a prefixed gateway ignores unprefixed cookies and writes only prefixed ones', async (t) => {
  const backends = await startTargets(t, 2)
  const app = await layer(t, 'EDGE_', 'app', backends.map(({ id, url }) => ({ id, url })), 'x-affinity')
  const res = await app.inject({ url: '/' })
  const lines = res.headers['set-cookie'] as string[]
  t.same(lines.map((line) => line.split('=')[0]), ['EDGE_AWSALB'])
  const https = await layer(t, 'EDGE_', 'app', backends.map(({ id, url }) => ({ id, url })), 'x-affinity', { corsCookies: 'always' })
  t.same((((await https.inject({ url: '/' })).headers['set-cookie']) as string[]).map((line) => line.split('=')[0]), ['EDGE_AWSALB', 'EDGE_AWSALBCORS'], 'and its CORS twin, where one is written')
  const value = lines[0].split(';')[0].split('=')[1]
  const plain = await app.inject({ url: '/', headers: { cookie: `AWSALB=${value}` } })
  t.match(plain.headers['x-affinity'], /^new:/, 'the unprefixed name is not ours')
  const prefixed = await app.inject({ url: '/', headers: { cookie: `EDGE_AWSALB=${value}` } })
  t.equal(prefixed.headers['x-affinity'], `hit:${echoOf(res).target}`, 'the prefixed one is')
})
