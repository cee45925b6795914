import { once } from 'node:events'
import { createSocket } from 'node:dgram'
import diagnosticsChannel from 'node:diagnostics_channel'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import dnsPacket from 'dns-packet'
import { test } from 'tap'
import { DNS_DISCOVERY_CHANNEL, type DnsDiscoveryEvent, type FastifyStickyOptions, type TargetGroupOptions } from '../lib/index.js'
import { discoveredTargetId } from '../lib/dns-discovery.js'
import { resolveOptions } from '../lib/options.js'
import type { TargetGroup } from '../lib/target-group.js'
import type { FastifyServerOptions } from 'fastify'
import { buildGateway, recordHealthChanges, waitFor } from './setup.js'
import { localhostCert, testCa } from './tls.js'

type Tap = Parameters<typeof buildGateway>[0]

/** A record the test DNS server answers with (dns-packet's form). */
type DnsRecord = dnsPacket.Answer

/**
 * A DNS server on 127.0.0.1 over UDP whose answers the test changes: `zone` maps `<type> <name>`
 * to records (an absent name is NXDOMAIN, an empty list an answer without records); `mode`
 * 'silent' answers nothing (the resolver times out), 'servfail' answers SERVFAIL.
 */
interface TestDns {
  readonly server: string
  readonly zone: Map<string, DnsRecord[]>
  mode: 'answer' | 'silent' | 'servfail'
  /** Every question asked, as `<type> <name>`. */
  readonly queries: string[]
}

async function startDns (t: Tap): Promise<TestDns> {
  const socket = createSocket('udp4')
  const dns: TestDns = { server: '', zone: new Map(), mode: 'answer', queries: [] }
  socket.on('message', (message, remote) => {
    const query = dnsPacket.decode(message)
    const question = query.questions?.[0]
    if (question === undefined) return
    const key = `${question.type} ${question.name}`
    dns.queries.push(key)
    if (dns.mode === 'silent') return
    const known = [...dns.zone.keys()].some((entry) => entry.endsWith(` ${question.name}`))
    const answers = dns.zone.get(key) ?? []
    // The low four bits of the flags are the RCODE: 2 SERVFAIL, 3 NXDOMAIN.
    const rcode = dns.mode === 'servfail' ? 2 : known ? 0 : 3
    const response = dnsPacket.encode({ type: 'response', id: query.id, flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | rcode, questions: [question], answers })
    socket.send(response, remote.port, remote.address)
  })
  socket.bind(0, '127.0.0.1')
  await once(socket, 'listening')
  t.teardown(() => new Promise<void>((resolve) => socket.close(() => resolve())))
  return Object.assign(dns, { server: `127.0.0.1:${(socket.address() as AddressInfo).port}` })
}

function a (name: string, ...addresses: string[]): DnsRecord[] {
  return addresses.map((address) => ({ type: 'A', name, ttl: 30, data: address }))
}

/** HTTP (or HTTPS) targets on loopback addresses 127.0.0.x, all on one port, answering `x-served-by: <address>`; `/hold` answers on `release()`. */
interface LoopbackTargets {
  readonly port: number
  readonly hits: Map<string, number>
  release (): void
}

async function startLoopbackTargets (t: Tap, addresses: string[], https = false): Promise<LoopbackTargets> {
  const held = new Set<() => void>()
  const hits = new Map<string, number>()
  const handler = (address: string) => (req: IncomingMessage, res: ServerResponse) => {
    hits.set(address, (hits.get(address) ?? 0) + 1)
    const send = () => res.writeHead(200, { 'x-served-by': address, 'content-type': 'text/plain' }).end(address)
    if (req.url === '/hold') {
      held.add(send)
      res.on('close', () => held.delete(send))
    } else {
      send()
    }
  }
  // The port of the first address is taken on the others; another process may hold it there: try again.
  for (let attempt = 0; ; attempt++) {
    const servers: Server[] = []
    let port = 0
    try {
      for (const address of addresses) {
        const server = https ? createHttpsServer(localhostCert, handler(address)) : createServer(handler(address))
        servers.push(server)
        server.listen(port, address)
        await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw err })])
        port = (server.address() as AddressInfo).port
      }
    } catch (err) {
      for (const server of servers) server.close()
      if (attempt < 5) continue
      throw err
    }
    t.teardown(() => Promise.all(servers.map(async (server) => {
      const closed = once(server, 'close')
      server.close()
      server.closeAllConnections()
      await closed
    })))
    return { port, hits, release: () => { for (const send of held) send(); held.clear() } }
  }
}

/** A gateway with one discovered group `carts` on every path; its log lines are collected. */
async function discoveringGateway (t: Tap, discovery: Record<string, unknown>, group: Partial<TargetGroupOptions> = {}, serverOptions: FastifyServerOptions = {}) {
  const logs: Array<Record<string, unknown>> = []
  const stream = { write: (line: string) => { logs.push(JSON.parse(line) as Record<string, unknown>) } }
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'carts', stickiness: false, deregistrationDelayMs: 5000, ...group, discovery } as unknown as TargetGroupOptions]
  }, { ...serverOptions, logger: { level: 'debug', stream } })
  app.all('/*', { config: { targetGroup: 'carts' } }, (_request, reply) => reply.forward())
  return { app, logs, group: app.targetGroups.get('carts') as TargetGroup }
}

function recordDiscovery (t: Tap): DnsDiscoveryEvent[] {
  const events: DnsDiscoveryEvent[] = []
  const listen = (message: unknown): void => { events.push(message as DnsDiscoveryEvent) }
  diagnosticsChannel.subscribe(DNS_DISCOVERY_CHANNEL, listen)
  t.teardown(() => diagnosticsChannel.unsubscribe(DNS_DISCOVERY_CHANNEL, listen))
  return events
}

function idOf (address: string, port: number): string {
  return discoveredTargetId('carts', address, port)
}

function originsOf (group: TargetGroup): string[] {
  return group.describe().targets.map((target) => target.origin).sort()
}

/** Sends `count` requests; the addresses that answered. */
async function servedBy (app: Awaited<ReturnType<typeof discoveringGateway>>['app'], count: number): Promise<Set<string>> {
  const seen = new Set<string>()
  for (let i = 0; i < count; i++) {
    const res = await app.inject({ url: '/' })
    seen.add(`${res.statusCode} ${String(res.headers['x-served-by'])}`)
  }
  return seen
}

test('the first answer is registered before the app is ready; a new address is registered and takes traffic', async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2', '127.0.0.3', '127.0.0.4'])
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2', '127.0.0.3'))
  const changes = recordHealthChanges(t, 'carts')
  const { app, group } = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 20, timeoutMs: 1000, tries: 1, servers: [dns.server] })

  const port = targets.port
  t.same(group.describe().targets.map(({ id, origin, weight, state }) => ({ id, origin, weight, state })).sort((x, y) => x.origin.localeCompare(y.origin)), [
    { id: idOf('127.0.0.2', port), origin: `http://127.0.0.2:${port}`, weight: 1, state: 'healthy' },
    { id: idOf('127.0.0.3', port), origin: `http://127.0.0.3:${port}`, weight: 1, state: 'healthy' }
  ], 'registered by address, ids derived from address and port, at ready')
  t.match(idOf('127.0.0.2', port), /^carts-[0-9a-f]{12}$/, 'an id names the group and hides the address')
  t.same([...await servedBy(app, 4)].sort(), ['200 127.0.0.2', '200 127.0.0.3'], 'both addresses take traffic')

  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2', '127.0.0.3', '127.0.0.4'))
  await waitFor(() => group.targets.length === 3, 5000, 'the new address to be registered')
  t.same(originsOf(group), [`http://127.0.0.2:${port}`, `http://127.0.0.3:${port}`, `http://127.0.0.4:${port}`])
  t.ok((await servedBy(app, 6)).has('200 127.0.0.4'), `the new target receives traffic (hits ${JSON.stringify([...targets.hits])})`)
  const added = changes.find((change) => change.target.id === idOf('127.0.0.4', port))
  t.match(added, { change: 'state', from: null, to: 'healthy' }, 'registered through the run-time path (its state change is published)')
})

test('a first resolution that fails does not fail the start: the group answers 503 until an answer comes', async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2'])
  dns.mode = 'silent'
  const started = Date.now()
  const { app, group, logs } = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 20, timeoutMs: 100, tries: 2, servers: [dns.server] })
  const waited = Date.now() - started
  t.ok(waited >= 250 && waited < 5000, `ready waited for the first resolution, bounded by timeoutMs and tries (${waited} ms)`)
  t.same(group.targets, [], 'no target yet')
  t.equal((await app.inject({ url: '/' })).statusCode, 503, 'an empty group answers 503')
  t.match(logs.filter((line) => line.level === 40), [{ targetGroup: 'carts', code: 'ETIMEOUT', targets: 0 }], 'the failure is reported')
  dns.mode = 'answer'
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2'))
  await waitFor(() => group.targets.length === 1, 5000, 'the answer to come')
  t.equal((await app.inject({ url: '/' })).headers['x-served-by'], '127.0.0.2')
})

test('the start waits for a slow first answer at most half of Fastify\'s pluginTimeout (5 s at most); the answer registers its targets when it comes', async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2'])
  dns.mode = 'silent'
  const started = Date.now()
  const { group } = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 20, timeoutMs: 3000, tries: 1, servers: [dns.server] }, {}, { pluginTimeout: 1000 })
  const waited = Date.now() - started
  t.ok(waited >= 450 && waited < 2500, `ready after half the plugin timeout, not the query's 3 s (${waited} ms)`)
  t.same(group.targets, [], 'no target yet')
  dns.mode = 'answer'
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2'))
  await waitFor(() => group.targets.length === 1, 8000, 'the answer after the timed-out query')
  t.pass(`registered ${Date.now() - started} ms after the start`)
})

test('a new address goes through initialState and health checks, as a target registered at run time', async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2', '127.0.0.3'])
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2'))
  const changes = recordHealthChanges(t, 'carts')
  const { group } = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 20, timeoutMs: 1000, tries: 1, servers: [dns.server] }, {
    healthCheck: { allowShortIntervals: true, intervalMs: 100, timeoutMs: 90, healthyThreshold: 2, initialState: 'initial' }
  })
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2', '127.0.0.3'))
  const id = idOf('127.0.0.3', targets.port)
  await waitFor(() => changes.some((change) => change.target.id === id && change.to === 'healthy'), 5000, 'the new target to turn healthy')
  const own = changes.filter((change) => change.target.id === id && change.change === 'state').map((change) => `${String(change.from)}>${change.to}`)
  t.same(own, ['null>initial', 'initial>healthy'], 'initial first, healthy after its checks pass')
  t.equal(group.targets.length, 2)
})

test('targets are registered in id order, whatever the order of the records', async (t) => {
  const dns = await startDns(t)
  const addresses = ['127.0.0.2', '127.0.0.3', '127.0.0.4']
  const targets = await startLoopbackTargets(t, addresses)
  const byIdDescending = [...addresses].sort((x, y) => (idOf(x, targets.port) < idOf(y, targets.port) ? 1 : -1))
  dns.zone.set('A carts.test', a('carts.test', ...byIdDescending))
  const { group } = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 20, timeoutMs: 1000, tries: 1, servers: [dns.server] })
  const ids = group.targets.map(({ id }) => id)
  t.same(ids, [...ids].sort(), `ascending ids (records sent as ${byIdDescending.join(', ')})`)
  t.equal(ids.length, 3)
})

test('the first answer takes traffic at full weight at once; a later address slow-starts', async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2', '127.0.0.3', '127.0.0.4'])
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2', '127.0.0.3'))
  const { group } = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 20, timeoutMs: 1000, tries: 1, servers: [dns.server] }, { slowStartMs: 30_000 })
  t.same(group.describe().targets.map((target) => target.slowStartEndsMs), [null, null], 'registered together into an empty group: no slow start (as targets given at registration)')
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2', '127.0.0.3', '127.0.0.4'))
  await waitFor(() => group.targets.length === 3, 5000, 'the new address to be registered')
  const added = group.describe().targets.find((target) => target.id === idOf('127.0.0.4', targets.port))
  t.ok(added?.slowStartEndsMs != null && added.slowStartEndsMs > Date.now() + 25_000, `the new target slow-starts (ends ${String(added?.slowStartEndsMs)})`)
})

test('a vanished address drains (its request in flight finishes) and is deregistered', async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2', '127.0.0.3'])
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2', '127.0.0.3'))
  const changes = recordHealthChanges(t, 'carts')
  const { app, group } = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 20, timeoutMs: 1000, tries: 1, servers: [dns.server] })
  const leaving = idOf('127.0.0.3', targets.port)

  // Round robin: of two requests, one is held on each target.
  const held = [app.inject({ url: '/hold' }), app.inject({ url: '/hold' })]
  await waitFor(() => targets.hits.get('127.0.0.3') === 1 && targets.hits.get('127.0.0.2') === 1, 5000, 'a request held on each target')
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2'))
  await waitFor(() => group.describe().targets.find((target) => target.id === leaving)?.state === 'draining', 5000, 'the vanished target to drain')
  t.same(group.targets.map(({ id }) => id), [idOf('127.0.0.2', targets.port)], 'only the remaining target is registered')
  t.same([...await servedBy(app, 4)], ['200 127.0.0.2'], 'no new request reaches the draining target')
  t.match(group.describe().targets.find((target) => target.id === leaving), { state: 'draining', inFlight: 1 }, 'its request is still in flight')

  targets.release()
  const answers = await Promise.all(held)
  t.same(answers.map((res) => res.statusCode), [200, 200], 'the held requests finish, the draining one too')
  await waitFor(() => group.describe().targets.every((target) => target.id !== leaving), 5000, 'the drained target to be gone')
  t.same(changes.filter((change) => change.target.id === leaving).map((change) => change.to), ['healthy', 'draining', 'unused'], 'healthy, draining, unused')
})

test('a failing DNS server keeps the last targets and is reported once in the log and at every failure on the channel', async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2', '127.0.0.3'])
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2', '127.0.0.3'))
  const events = recordDiscovery(t)
  // A short timeout, so timeouts come quickly: under load the first answer may come only at a retry.
  const { app, group, logs } = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 20, timeoutMs: 300, tries: 1, servers: [dns.server] })
  await waitFor(() => group.targets.length === 2, 5000, 'the first answer')
  const before = originsOf(group)
  t.match(events.filter((event) => event.outcome === 'resolved'), [{ outcome: 'resolved', error: null, registered: [{}, {}] }], 'the first answer is published')
  t.ok(logs.some((line) => line.targetGroup === 'carts' && line.level === 30 && /registered 2/.test(String(line.msg))), 'the registrations are logged')
  const startLogs = logs.splice(0)
  events.splice(0)

  const failures = async (code: string, count: number): Promise<void> => {
    const from = events.length
    await waitFor(() => events.slice(from).filter((event) => event.error === code).length >= count, 5000, `${count} ${code} failures`)
    t.same(originsOf(group), before, `${code}: the last targets stay`)
    t.same([...await servedBy(app, 4)].sort(), ['200 127.0.0.2', '200 127.0.0.3'], `${code}: and take traffic`)
  }
  dns.mode = 'silent'
  await failures('ETIMEOUT', 2)
  dns.mode = 'servfail'
  await failures('ESERVFAIL', 2)
  dns.mode = 'answer'
  dns.zone.clear()
  await failures('ENOTFOUND', 2) // NXDOMAIN
  dns.zone.set('A carts.test', [])
  await failures('ENODATA', 2) // the name without addresses: taken for a fault, not for "no targets"

  t.ok(events.every((event) => event.targetGroup === 'carts' && event.hostname === 'carts.test' && event.outcome === 'failed'), 'each failure is published')
  const warnings = logs.filter((line) => line.level === 40)
  t.equal(warnings.length, 1, `one warning for the run of failures, got ${JSON.stringify(warnings)}`)
  t.match(warnings[0], { targetGroup: 'carts', hostname: 'carts.test', code: 'ETIMEOUT', targets: 2 })

  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2'))
  await waitFor(() => events.some((event) => event.outcome === 'resolved'), 5000, 'a resolution again')
  const resolved = events.find((event) => event.outcome === 'resolved')
  t.same(resolved?.deregistered, [idOf('127.0.0.3', targets.port)], 'the next good answer applies')
  t.ok(logs.some((line) => line.level === 30 && /resolves again/.test(String(line.msg))), 'the recovery is logged')
  const own = [...startLogs, ...logs].filter((line) => line.targetGroup === 'carts')
  t.notOk(own.some((line) => (line.level as number) >= 30 && /127\.0\.0\./.test(JSON.stringify(line))), 'no address at info or above')
})

test('SRV records: the lowest priority only, each record its own port, its weight the target weight', async (t) => {
  const dns = await startDns(t)
  const first = await startLoopbackTargets(t, ['127.0.0.2'])
  const second = await startLoopbackTargets(t, ['127.0.0.3'])
  const backup = await startLoopbackTargets(t, ['127.0.0.4'])
  const name = '_http._tcp.carts.test'
  dns.zone.set(`SRV ${name}`, [
    { type: 'SRV', name, ttl: 30, data: { priority: 10, weight: 3, port: first.port, target: 'a.carts.test' } },
    { type: 'SRV', name, ttl: 30, data: { priority: 10, weight: 0, port: second.port, target: 'b.carts.test' } },
    { type: 'SRV', name, ttl: 30, data: { priority: 20, weight: 5, port: backup.port, target: 'c.carts.test' } }
  ])
  dns.zone.set('A a.carts.test', a('a.carts.test', '127.0.0.2'))
  dns.zone.set('A b.carts.test', a('b.carts.test', '127.0.0.3'))
  dns.zone.set('A c.carts.test', a('c.carts.test', '127.0.0.4'))
  const { app, group } = await discoveringGateway(t, { hostname: name, intervalMs: 20, timeoutMs: 1000, tries: 1, servers: [dns.server] }, { algorithm: 'weighted_random' })

  t.same(group.describe().targets.map(({ id, origin, weight }) => ({ id, origin, weight })).sort((x, y) => x.origin.localeCompare(y.origin)), [
    { id: idOf('127.0.0.2', first.port), origin: `http://127.0.0.2:${first.port}`, weight: 3 },
    { id: idOf('127.0.0.3', second.port), origin: `http://127.0.0.3:${second.port}`, weight: 1 }
  ], 'priority 10 only; weight 3, and weight 0 taken as 1')
  t.same([...await servedBy(app, 20)].sort(), ['200 127.0.0.2', '200 127.0.0.3'], 'both records take traffic')

  dns.zone.set(`SRV ${name}`, [{ type: 'SRV', name, ttl: 30, data: { priority: 20, weight: 5, port: backup.port, target: 'c.carts.test' } }])
  await waitFor(() => group.targets.length === 1 && group.targets[0].origin === `http://127.0.0.4:${backup.port}`, 5000, 'the SRV change to apply')
  t.equal(group.describe().targets.find((target) => target.origin.includes('127.0.0.4'))?.weight, 5)
})

test('family 6 asks AAAA records; family 0 takes A and AAAA, either may be empty', async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2'])
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2'))
  dns.zone.set('AAAA carts.test', [{ type: 'AAAA', name: 'carts.test', ttl: 30, data: 'fd00::5' }])
  const six = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, family: 6, intervalMs: 20, timeoutMs: 1000, tries: 1, servers: [dns.server] })
  t.same(originsOf(six.group), [`http://[fd00::5]:${targets.port}`], 'family 6: an IPv6 origin')
  const both = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, family: 0, intervalMs: 20, timeoutMs: 1000, tries: 1, servers: [dns.server] })
  t.same(originsOf(both.group), [`http://127.0.0.2:${targets.port}`, `http://[fd00::5]:${targets.port}`], 'family 0: both')
  dns.zone.set('AAAA carts.test', [])
  await waitFor(() => both.group.targets.length === 1, 5000, 'the IPv6 address to vanish')
  t.same(originsOf(both.group).filter((origin) => origin.includes('127.0.0.2')), [`http://127.0.0.2:${targets.port}`], 'family 0: an empty AAAA answer is no failure')
})

test('https targets found in DNS are verified against the discovery host name, not their address', async (t) => {
  const dns = await startDns(t)
  // The certificate names *.example.test and 127.0.0.1, not 127.0.0.2.
  const targets = await startLoopbackTargets(t, ['127.0.0.2'], true)
  dns.zone.set('A carts.example.test', a('carts.example.test', '127.0.0.2'))
  const { app, group } = await discoveringGateway(t, { hostname: 'carts.example.test', port: targets.port, intervalMs: 20, timeoutMs: 1000, tries: 1, servers: [dns.server] }, { tls: { ca: testCa } })
  t.same(originsOf(group), [`https://127.0.0.2:${targets.port}`])
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 200, `verified by name: ${res.body}`)
  t.equal(res.headers['x-served-by'], '127.0.0.2')
})

test("the answer's smallest TTL sets the next refresh, within intervalMs", async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2', '127.0.0.3'])
  dns.zone.set('A carts.test', [{ type: 'A', name: 'carts.test', ttl: 1, data: '127.0.0.2' }, { type: 'A', name: 'carts.test', ttl: 600, data: '127.0.0.3' }])
  const started = Date.now()
  await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 3_600_000, timeoutMs: 1000, tries: 1, servers: [dns.server] })
  t.equal(dns.queries.length, 1, 'one query at start')
  await waitFor(() => dns.queries.length === 2, 5000, 'the refresh after the 1 s TTL')
  const elapsed = Date.now() - started
  t.ok(elapsed >= 950, `not before the TTL ran out (${elapsed} ms)`)
})

test('closing the app stops its discovery', async (t) => {
  const dns = await startDns(t)
  const targets = await startLoopbackTargets(t, ['127.0.0.2'])
  dns.zone.set('A carts.test', a('carts.test', '127.0.0.2'))
  dns.zone.set('A other.test', a('other.test', '127.0.0.2'))
  const closing = await discoveringGateway(t, { hostname: 'carts.test', port: targets.port, intervalMs: 20, timeoutMs: 50, tries: 1, servers: [dns.server] })
  await discoveringGateway(t, { hostname: 'other.test', port: targets.port, intervalMs: 20, timeoutMs: 50, tries: 1, servers: [dns.server] })
  const count = (name: string): number => dns.queries.filter((query) => query === `A ${name}`).length
  await waitFor(() => count('carts.test') >= 3, 5000, 'a few refreshes')
  await closing.app.close()
  const afterClose = count('carts.test')
  const others = count('other.test')
  await waitFor(() => count('other.test') >= others + 5, 5000, 'the other app to ask five times more')
  t.equal(count('carts.test'), afterClose, `the closed app asks no more (the other asked ${count('other.test') - others} times since)`)
})

test('discovery option mistakes throw FST_STICKY_OPTION_INVALID with their exact message', async (t) => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['targets too', { targets: [], discovery: { hostname: 'carts.test', port: 80 } }, 'targetGroups[0].targets must be absent when discovery is given (DNS finds the targets), received an array of 0'],
    ['not an object', { discovery: 'carts.test' }, 'targetGroups[0].discovery must be { hostname, port } (A/AAAA records) or { hostname } (SRV records), received "carts.test"'],
    ['unknown key', { discovery: { hostname: 'carts.test', port: 80, ttl: 5 } }, 'targetGroups[0].discovery.ttl is not an option (known: hostname, port, srv, family, intervalMs, timeoutMs, tries, servers)'],
    ['an IP', { discovery: { hostname: '10.0.0.5', port: 80 } }, 'targetGroups[0].discovery.hostname must be a DNS name such as carts.default.svc.cluster.local or _http._tcp.carts.service.consul (not an IP address: list fixed targets in targets), received "10.0.0.5"'],
    ['a bad name', { discovery: { hostname: 'carts..test', port: 80 } }, 'targetGroups[0].discovery.hostname must be a DNS name such as carts.default.svc.cluster.local or _http._tcp.carts.service.consul (not an IP address: list fixed targets in targets), received "carts..test"'],
    ['no port', { discovery: { hostname: 'carts.test' } }, "targetGroups[0].discovery.port must be the targets' port, an integer from 1 to 65535 (required for A/AAAA records), received undefined"],
    ['port 0', { discovery: { hostname: 'carts.test', port: 0 } }, 'targetGroups[0].discovery.port must be an integer from 1 to 65535, received 0'],
    ['port with SRV', { discovery: { hostname: '_http._tcp.carts.test', port: 80 } }, 'targetGroups[0].discovery.port must be absent with SRV records (each record names its port), received 80'],
    ['port with srv: true', { discovery: { hostname: 'carts.service.consul', srv: true, port: 80 } }, 'targetGroups[0].discovery.port must be absent with SRV records (each record names its port), received 80'],
    ['family', { discovery: { hostname: 'carts.test', port: 80, family: 5 } }, 'targetGroups[0].discovery.family must be 4 (A records), 6 (AAAA) or 0 (both), received 5'],
    ['interval too short', { discovery: { hostname: 'carts.test', port: 80, intervalMs: 5 } }, 'targetGroups[0].discovery.intervalMs must be an integer from 10 to 3600000, received 5'],
    ['interval too long', { discovery: { hostname: 'carts.test', port: 80, intervalMs: 3_600_001 } }, 'targetGroups[0].discovery.intervalMs must be an integer from 10 to 3600000, received 3600001'],
    ['timeout', { discovery: { hostname: 'carts.test', port: 80, timeoutMs: 0 } }, 'targetGroups[0].discovery.timeoutMs must be an integer from 1 to 60000, received 0'],
    ['tries', { discovery: { hostname: 'carts.test', port: 80, tries: 11 } }, 'targetGroups[0].discovery.tries must be an integer from 1 to 10, received 11'],
    ['servers empty', { discovery: { hostname: 'carts.test', port: 80, servers: [] } }, "targetGroups[0].discovery.servers must be an array of 1 to 8 DNS servers, each an IP address with an optional port, such as '10.0.0.2', '127.0.0.1:5353' or '[fd00::53]:53', received an array of 0"],
    ['server a name', { discovery: { hostname: 'carts.test', port: 80, servers: ['127.0.0.1:53', 'dns.local'] } }, "targetGroups[0].discovery.servers[1] must be an IP address with an optional port, such as '10.0.0.2', '127.0.0.1:5353' or '[fd00::53]:53', received \"dns.local\""],
    ['srv not boolean', { discovery: { hostname: 'carts.test', port: 80, srv: 'yes' } }, 'targetGroups[0].discovery.srv must be a boolean, received "yes"']
  ]
  for (const [what, group, message] of cases) {
    let error: (Error & { code?: string }) | undefined
    try {
      resolveOptions({ targetGroups: [{ name: 'carts', ...group }] } as unknown as FastifyStickyOptions)
    } catch (err) {
      error = err as Error & { code?: string }
    }
    t.equal(error?.code, 'FST_STICKY_OPTION_INVALID', `${what}: code`)
    t.equal(error?.message, `Invalid fastify-sticky option: ${message}`, `${what}: message`)
  }
  const resolved = resolveOptions({ targetGroups: [{ name: 'carts', discovery: { hostname: '_https._tcp.carts.test.' }, tls: {} }] })
  t.match(resolved.targetGroups[0].discovery, { srv: true, port: null, family: 4, intervalMs: 30_000, timeoutMs: 2000, tries: 2, servers: null }, 'defaults; SRV for a _service._proto name')
  t.equal(resolved.targetGroups[0].tls?.servername, 'carts.test', 'the TLS server name is the service name')
})
