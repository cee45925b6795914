import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type ServerOptions } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TLSSocket } from 'node:tls'
import { test, type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { FastifyStickyOptions, TargetGroupOptions, TargetGroupTlsOptions } from '../lib/index.js'
import type { TargetGroup } from '../lib/target-group.js'
import { isTlsFailure } from '../lib/target-tls.js'
import { buildGateway, CookieJar, exposeAffinity, listenOnLoopback, recordHealthChanges, startServer, waitFor } from './setup.js'
import { clientCert, localhostCert, selfSignedCert, testCa, wrongNameCert } from './tls.js'

/** What an https test target answers: who it is, and what it saw of the TLS connection. */
interface TlsEcho {
  target: string
  url: string
  host: string | undefined
  /** The SNI the gateway sent; false when none. */
  servername: string | false
  /** The subject CN of the client certificate the target verified; null when none. */
  client: string | null
}

interface HttpsTarget {
  id: string
  url: string
  hits: number
  /** TLS connections the target accepted. */
  handshakes: number
}

/**
 * A real HTTPS server on 127.0.0.1 with the given certificate (and `requestCert`, `maxVersion`,
 * … for the cases that need them), echoing what it saw as JSON; closed by the test's teardown.
 * `host` names it in its URL: `127.0.0.1` (no SNI) or `localhost`.
 */
async function startHttpsTarget (t: Test, id: string, options: ServerOptions, host = '127.0.0.1'): Promise<HttpsTarget> {
  const server = createServer(options, (req, res) => {
    target.hits++
    const socket = req.socket as TLSSocket
    const peer = socket.authorized ? socket.getPeerCertificate() : null
    const echo: TlsEcho = { target: id, url: req.url ?? '', host: req.headers.host, servername: socket.servername ?? false, client: peer === null ? null : String(peer.subject.CN) }
    res.setHeader('x-served-by', id)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(echo))
  })
  server.on('secureConnection', () => { target.handshakes++ })
  // A refused handshake is the point of several tests; the server's side of it is not.
  server.on('tlsClientError', () => {})
  const port = await listenOnLoopback(t, server)
  const target: HttpsTarget = { id, url: `https://${host}:${port}`, hits: 0, handshakes: 0 }
  return target
}

interface Logged { level: number, msg: string, code?: string, targetGroup?: string }

/** A gateway with one group `g` of these targets (and any other group or plugin options), `/*` bound to it; its log lines collected in `lines`. */
async function gateway (t: Test, targets: HttpsTarget[], group: Partial<TargetGroupOptions> = {}, lines: Logged[] = [], plugin: Partial<FastifyStickyOptions> = {}): Promise<FastifyInstance> {
  const app = await buildGateway(t, {
    ...plugin,
    targetGroups: [{ name: 'g', targets: targets.map(({ id, url }) => ({ id, url })), ...group }]
  }, { logger: { level: 'info', stream: { write: (line: string) => { lines.push(JSON.parse(line) as Logged) } } } })
  app.all('/*', { config: { targetGroup: 'g' } }, (_request, reply) => reply.forward())
  exposeAffinity(app)
  return app
}

function tlsEcho (res: { body: string }): TlsEcho {
  return JSON.parse(res.body) as TlsEcho
}

/** A 502 of the TLS code whose body names no address, port or target id. */
function assertTlsFailure (t: Test, res: { statusCode: number, body: string }, target: HttpsTarget, what: string): void {
  t.equal(res.statusCode, 502, `${what}: 502, got ${res.statusCode} ${res.body}`)
  t.equal((JSON.parse(res.body) as { code?: string }).code, 'FST_STICKY_TARGET_TLS_FAILED', `${what}: its own code, got ${res.body}`)
  const port = new URL(target.url).port
  t.notOk(res.body.includes(port) || res.body.includes('127.0.0.1') || res.body.includes('localhost') || res.body.includes(target.id), `${what}: the body names no address or target: ${res.body}`)
}

function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'fastify-sticky-tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('a target with a private CA works once the group trusts the CA, as PEM text, a Buffer, a file or a list', async (t) => {
  const target = await startHttpsTarget(t, 't0', localhostCert)
  const caFile = join(tempDir(t), 'ca.pem')
  writeFileSync(caFile, testCa)
  const forms: Array<[string, TargetGroupTlsOptions['ca']]> = [
    ['PEM text', testCa], ['a Buffer', Buffer.from(testCa)], ['a file path', caFile], ['a list with another CA first', [selfSignedCert.cert, caFile]]
  ]
  for (const [what, ca] of forms) {
    const app = await gateway(t, [target], { tls: { ca } })
    const res = await app.inject({ url: '/cart' })
    t.equal(res.statusCode, 200, `${what}: 200, got ${res.statusCode} ${res.body}`)
    if (res.statusCode === 200) t.equal(tlsEcho(res).target, 't0', `${what}: the target answered`)
    await app.close()
  }
})

test('without its CA, a private-CA target is refused with 502 FST_STICKY_TARGET_TLS_FAILED, logged by code, never by address', async (t) => {
  const target = await startHttpsTarget(t, 't0', localhostCert)
  const lines: Logged[] = []
  const app = await gateway(t, [target], {}, lines)
  const res = await app.inject({ url: '/cart' })
  assertTlsFailure(t, res, target, 'no tls option')
  t.equal(target.hits, 0, 'nothing reached the target')
  const failure = lines.find((line) => line.msg === 'fastify-sticky: target request failed')
  t.equal(failure?.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', `the warning carries Node's code: ${JSON.stringify(failure)}`)
  const port = new URL(target.url).port
  const leaked = lines.filter((line) => JSON.stringify(line).includes(port))
  t.same(leaked, [], 'no log line names the target\'s address')

  const other = await gateway(t, [target], { tls: { ca: selfSignedCert.cert } })
  assertTlsFailure(t, await other.inject({ url: '/cart' }), target, 'another CA only')
})

test('a self-signed target is refused unless its own certificate is the CA, or verification is off', async (t) => {
  const target = await startHttpsTarget(t, 't0', selfSignedCert)
  const lines: Logged[] = []
  const refused = await gateway(t, [target], { tls: { ca: testCa } }, lines)
  assertTlsFailure(t, await refused.inject({ url: '/' }), target, 'the test CA')
  t.equal(lines.find((line) => line.msg === 'fastify-sticky: target request failed')?.code, 'DEPTH_ZERO_SELF_SIGNED_CERT', 'logged by its code')

  const trusted = await gateway(t, [target], { tls: { ca: selfSignedCert.cert } })
  t.equal((await trusted.inject({ url: '/' })).statusCode, 200, 'its own certificate as the CA: 200')

  const unverifiedLines: Logged[] = []
  const unverified = await gateway(t, [target], { tls: { rejectUnauthorized: false } }, unverifiedLines)
  t.equal((await unverified.inject({ url: '/' })).statusCode, 200, 'rejectUnauthorized: false: 200')
  const warnings = unverifiedLines.filter((line) => line.level === 40)
  t.equal(warnings.length, 1, `one warning, at registration: ${JSON.stringify(warnings)}`)
  t.match(warnings[0], { targetGroup: 'g', msg: /target group 'g' has tls.rejectUnauthorized: false, so its targets' certificates are not verified/ })
})

test('a certificate for another name is refused; servername names the one it has, and the target gets it as SNI', async (t) => {
  const wrong = await startHttpsTarget(t, 't0', wrongNameCert)
  const lines: Logged[] = []
  const refused = await gateway(t, [wrong], { tls: { ca: testCa } }, lines)
  assertTlsFailure(t, await refused.inject({ url: '/' }), wrong, 'an IP origin, a certificate for wrong.invalid')
  t.equal(lines.find((line) => line.msg === 'fastify-sticky: target request failed')?.code, 'ERR_TLS_CERT_ALTNAME_INVALID', 'logged by its code')

  const named = await gateway(t, [wrong], { tls: { ca: testCa, servername: 'wrong.invalid' } })
  const res = await named.inject({ url: '/' })
  t.equal(res.statusCode, 200, `servername wrong.invalid: 200, got ${res.statusCode} ${res.body}`)
  if (res.statusCode === 200) t.equal(tlsEcho(res).servername, 'wrong.invalid', 'sent as SNI')

  const right = await startHttpsTarget(t, 't1', localhostCert)
  const misnamed = await gateway(t, [right], { tls: { ca: testCa, servername: 'wrong.invalid' } })
  assertTlsFailure(t, await misnamed.inject({ url: '/' }), right, 'a servername the certificate lacks')
})

test('the server name is the group\'s, never the client\'s Host, and one connection serves every Host', async (t) => {
  // One connection per target: undici would open a new one whenever the server name changed.
  const byIp = await startHttpsTarget(t, 't0', localhostCert)
  const byName = await startHttpsTarget(t, 't1', localhostCert, 'localhost')
  const hosts = ['wrong.invalid', 'shop.example.test', 'other.example', 'localhost', 'wrong.invalid']
  for (const [target, sni] of [[byIp, false], [byName, 'localhost']] as const) {
    const app = await gateway(t, [target], { tls: { ca: testCa } }, [], { connectionsPerTarget: 1 })
    for (const host of hosts) {
      const res = await app.inject({ url: '/', headers: { host } })
      t.equal(res.statusCode, 200, `${target.url} with Host ${host}: 200, got ${res.statusCode} ${res.body}`)
      if (res.statusCode !== 200) continue
      t.equal(tlsEcho(res).host, host, 'the Host goes on as the client sent it')
      t.equal(tlsEcho(res).servername, sni, `the SNI is ${String(sni)}`)
    }
    t.equal(target.handshakes, 1, `${target.url}: one TLS connection for ${hosts.length} Hosts, got ${target.handshakes}`)
  }
})

test('mutual TLS: a target that wants a client certificate gets the group\'s, and 502 FST_STICKY_TARGET_TLS_FAILED without one', async (t) => {
  for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
    const target = await startHttpsTarget(t, 't0', { ...localhostCert, ca: testCa, requestCert: true, rejectUnauthorized: true, maxVersion })
    const withCert = await gateway(t, [target], { tls: { ca: testCa, cert: clientCert.cert, key: clientCert.key } })
    const res = await withCert.inject({ url: '/' })
    t.equal(res.statusCode, 200, `${maxVersion}, with cert and key: 200, got ${res.statusCode} ${res.body}`)
    if (res.statusCode === 200) t.equal(tlsEcho(res).client, 'fastify-sticky test client', 'the target verified the client certificate')

    const lines: Logged[] = []
    const without = await gateway(t, [target], { tls: { ca: testCa } }, lines)
    // In TLS 1.3 the target refuses the missing certificate after the handshake, once undici began writing.
    assertTlsFailure(t, await without.inject({ url: '/' }), target, `${maxVersion}, without a client certificate`)
    const code = lines.find((line) => line.msg === 'fastify-sticky: target request failed')?.code
    t.ok(code?.startsWith('ERR_SSL_'), `${maxVersion}: logged by OpenSSL's alert, got ${String(code)}`)
  }
})

test('minVersion TLSv1.3 refuses a target that stops at TLS 1.2; the default takes it', async (t) => {
  const target = await startHttpsTarget(t, 't0', { ...localhostCert, maxVersion: 'TLSv1.2' })
  const strict = await gateway(t, [target], { tls: { ca: testCa, minVersion: 'TLSv1.3' } })
  assertTlsFailure(t, await strict.inject({ url: '/' }), target, 'minVersion TLSv1.3')
  const lenient = await gateway(t, [target], { tls: { ca: testCa } })
  t.equal((await lenient.inject({ url: '/' })).statusCode, 200, 'the default minVersion TLSv1.2: 200')
})

test('a target that speaks no TLS at an https URL gets the same 502', async (t) => {
  const { url } = await startServer(t, (_req, res) => res.end('plain'))
  const target: HttpsTarget = { id: 't0', url: url.replace('http:', 'https:'), hits: 0, handshakes: 0 }
  const lines: Logged[] = []
  const app = await gateway(t, [target], { tls: { ca: testCa } }, lines)
  assertTlsFailure(t, await app.inject({ url: '/' }), target, 'a plain HTTP server')
  const code = lines.find((line) => line.msg === 'fastify-sticky: target request failed')?.code
  t.ok(code?.startsWith('ERR_SSL_'), `logged by OpenSSL's code, got ${String(code)}`)
})

test('health checks speak the group\'s TLS: healthy with the CA (and a client certificate), unhealthy without', async (t) => {
  const healthCheck = { path: '/health', intervalMs: 200, timeoutMs: 150, healthyThreshold: 2, unhealthyThreshold: 2, allowShortIntervals: true }
  const target = await startHttpsTarget(t, 't0', localhostCert)
  const mutual = await startHttpsTarget(t, 't1', { ...localhostCert, ca: testCa, requestCert: true, rejectUnauthorized: true })
  const stateOf = (app: FastifyInstance, id: string): string => {
    const health = (app.targetGroups.get('g') as TargetGroup).get(id)?.health
    return health === undefined ? 'absent' : `${health.state}${health.reason === null ? '' : `:${health.reason}`}`
  }
  const waitForState = async (app: FastifyInstance, id: string, state: string): Promise<void> => {
    await waitFor(() => stateOf(app, id) === state, 5000, `${id} to be ${state} (is ${stateOf(app, id)})`)
  }
  const trusted = await gateway(t, [target, mutual], { healthCheck, tls: { ca: testCa, cert: clientCert.cert, key: clientCert.key } })
  await waitForState(trusted, 't0', 'healthy')
  await waitForState(trusted, 't1', 'healthy')
  t.pass('both healthy with the CA and the client certificate')

  const noCert = await gateway(t, [mutual], { healthCheck, tls: { ca: testCa } })
  await waitForState(noCert, 't1', 'unhealthy:Target.FailedHealthChecks')
  t.pass('the target that wants a client certificate is unhealthy without one')
  const noCa = await gateway(t, [target], { healthCheck })
  await waitForState(noCa, 't0', 'unhealthy:Target.FailedHealthChecks')
  t.pass('the private-CA target is unhealthy without its CA')
})

test('certificate files are read once, at registration: deleted or replaced after, nothing changes, for targets registered later too', async (t) => {
  const dir = tempDir(t)
  const caFile = join(dir, 'ca.pem')
  const certFile = join(dir, 'client.pem')
  const keyFile = join(dir, 'client-key.pem')
  writeFileSync(caFile, testCa)
  writeFileSync(certFile, clientCert.cert)
  writeFileSync(keyFile, clientCert.key)
  const first = await startHttpsTarget(t, 't0', { ...localhostCert, ca: testCa, requestCert: true, rejectUnauthorized: true })
  const app = await gateway(t, [first], { tls: { ca: caFile, cert: certFile, key: keyFile }, deregistrationDelayMs: 0 })
  rmSync(caFile)
  copyFileSync(new URL('./fixtures/tls/self-signed.pem', import.meta.url), certFile)
  writeFileSync(keyFile, 'not a key')
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 200, `after the files changed: 200, got ${res.statusCode} ${res.body}`)
  if (res.statusCode === 200) t.equal(tlsEcho(res).client, 'fastify-sticky test client', 'with the client certificate read at registration')
  const later = await startHttpsTarget(t, 't1', { ...localhostCert, ca: testCa, requestCert: true, rejectUnauthorized: true })
  const group = app.targetGroups.get('g') as TargetGroup
  group.register({ id: 't1', url: later.url })
  await group.deregister('t0')
  const again = await app.inject({ url: '/' })
  t.equal(again.statusCode, 200, `a target registered after the files changed: 200, got ${again.statusCode} ${again.body}`)
  if (again.statusCode === 200) t.same([tlsEcho(again).target, tlsEcho(again).client], ['t1', 'fastify-sticky test client'], 'it got the same settings')
})

test('a TLS failure is redispatched like a refused connection, and counts for passive checks', async (t) => {
  const bad = await startHttpsTarget(t, 'bad', wrongNameCert)
  const good = await startHttpsTarget(t, 'good', localhostCert)
  const changes = recordHealthChanges(t, 'g', ['ejected'])
  const app = await gateway(t, [bad, good], { tls: { ca: testCa }, outlierDetection: { consecutiveGatewayErrors: 2, maxEjectedPercent: 50 } })
  const seen: string[] = []
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ url: '/' })
    t.equal(res.statusCode, 200, `request ${i}: 200, got ${res.statusCode} ${res.body}`)
    if (res.statusCode === 200) seen.push(`${tlsEcho(res).target}:${String(res.headers['x-affinity'])}`)
  }
  t.ok(seen.includes('good:reassigned;target-unreachable'), `a request for the bad target went to the good one: ${seen.join(', ')}`)
  t.ok(seen.every((entry) => entry.startsWith('good:')), `the good target answered every request: ${seen.join(', ')}`)
  await waitFor(() => changes.length > 0, 2000, 'the bad target to be ejected')
  t.equal(changes[0].target.id, 'bad', 'the target that failed TLS was ejected')
})

test('a target that refuses the missing client certificate after a TLS 1.3 handshake: a POST is redispatched too, nothing of it reached the target', async (t) => {
  const mutual = await startHttpsTarget(t, 'mutual', { ...localhostCert, ca: testCa, requestCert: true, rejectUnauthorized: true, maxVersion: 'TLSv1.3' })
  const plain = await startHttpsTarget(t, 'plain', localhostCert)
  const app = await gateway(t, [mutual, plain], { tls: { ca: testCa }, stickiness: false })
  const seen: string[] = []
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ method: 'POST', url: '/order', payload: { n: i } })
    t.equal(res.statusCode, 200, `POST ${i}: 200, got ${res.statusCode} ${res.body}`)
    if (res.statusCode === 200) seen.push(tlsEcho(res).target)
  }
  t.same(seen, ['plain', 'plain', 'plain', 'plain'], 'the target without client certificates answered every one')
  t.equal(mutual.hits, 0, 'none reached the target that wants a client certificate')
})

test('lb_cookie stickiness holds over https targets', async (t) => {
  const targets = [
    await startHttpsTarget(t, 't0', localhostCert),
    await startHttpsTarget(t, 't1', localhostCert),
    await startHttpsTarget(t, 't2', localhostCert)
  ]
  const app = await gateway(t, targets, { tls: { ca: testCa } })
  const jar = new CookieJar()
  const first = await app.inject({ url: '/cart' })
  t.equal(first.statusCode, 200, `200, got ${first.statusCode} ${first.body}`)
  jar.store(first.headers['set-cookie'])
  const pinned = tlsEcho(first).target
  for (let i = 0; i < 5; i++) {
    const res = await app.inject({ url: '/cart', headers: jar.headers() })
    jar.store(res.headers['set-cookie'])
    t.same([tlsEcho(res).target, res.headers['x-affinity']], [pinned, 'hit'], `request ${i}: a hit on ${pinned}`)
  }
})

test('the TLS failures told apart from other connection failures', async (t) => {
  for (const code of ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID',
    'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'ERR_TLS_CERT_ALTNAME_INVALID', 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'ERR_SSL_WRONG_VERSION_NUMBER']) {
    t.ok(isTlsFailure(code), `${code} is a TLS failure`)
  }
  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'HPE_INVALID_CONSTANT', 'ERR_TLS_INVALID_PROTOCOL_METHOD', undefined]) {
    t.notOk(isTlsFailure(code), `${String(code)} is not`)
  }
})
