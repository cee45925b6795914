import { once } from 'node:events'
import { connect, type AddressInfo } from 'node:net'
import { test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { buildGateway, CookieJar, echoOf, exposeAffinity, startServer, startTargets } from './setup.js'

// Review of the app-cookie stickiness, listener rules and weighted forwards (commit ba2010c).
// Every test here failed on that commit; each name says what should happen.

function setCookieLines (res: LightMyRequestResponse): string[] {
  const lines = res.headers['set-cookie']
  return lines === undefined ? [] : Array.isArray(lines) ? lines : [lines]
}

function shardLines (res: LightMyRequestResponse): string[] {
  return setCookieLines(res).filter((line) => line.startsWith('AWSALBAPP-'))
}

/** The `AWSALBAPP-*` pairs of a response, as a browser sends them back. */
function shardPairs (res: LightMyRequestResponse): string {
  return shardLines(res).map((line) => line.split(';')[0]).join('; ')
}

test('a header condition on a header named constructor or __proto__ does not match a request without that header (no 500)', async (t) => {
  const targets = await startTargets(t, 2)
  for (const name of ['constructor', '__proto__']) {
    const app = await buildGateway(t, {
      targetGroups: [
        { name: 'flagged', targets: [{ id: targets[0].id, url: targets[0].url }], stickiness: false },
        { name: 'web', targets: [{ id: targets[1].id, url: targets[1].url }], stickiness: false }
      ],
      listeners: [{ name: 'web', rules: [{ priority: 1, conditions: { httpHeader: [{ name, values: ['*'] }] }, forward: 'flagged' }], default: 'web' }]
    })
    app.all('/*', { config: { listener: 'web' } }, (_request, reply) => reply.forward())
    const res = await app.inject({ url: '/page' })
    // Node's req.headers inherits from Object.prototype: headers['constructor'] is a function.
    t.equal(res.statusCode, 200, `header condition '${name}': answered, got ${res.statusCode} ${res.body.slice(0, 120)}`)
    if (res.statusCode === 200) t.equal(echoOf(res).target, targets[1].id, `header condition '${name}': no such header, so the default rule`)
  }
})

test('a pathPattern rule matches the path the target gets: absolute form (GET http://host/admin/x) and percent-encoded unreserved characters (/%61dmin/x) go where /admin/x goes', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [
      { name: 'admin', targets: [{ id: targets[0].id, url: targets[0].url }], stickiness: false },
      { name: 'public', targets: [{ id: targets[1].id, url: targets[1].url }], stickiness: false }
    ],
    listeners: [{ name: 'web', rules: [{ priority: 1, conditions: { pathPattern: ['/admin/*'] }, forward: 'admin' }], default: 'public' }]
  })
  app.all('/*', { config: { listener: 'web' } }, (_request, reply) => reply.forward())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as AddressInfo).port
  const send = async (requestTarget: string): Promise<{ target: string, url: string }> => {
    const socket = connect(port, '127.0.0.1')
    socket.write(`GET ${requestTarget} HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n`)
    let data = ''
    socket.on('data', (chunk: Buffer) => { data += chunk.toString() })
    await once(socket, 'end')
    const body = data.slice(data.indexOf('\r\n\r\n') + 4)
    return JSON.parse(body) as { target: string, url: string }
  }
  const origin = await send('/admin/x')
  t.equal(origin.target, targets[0].id, 'origin-form /admin/x: the admin group')
  // RFC 9112 §3.2.2: a server must accept the absolute form; its path is /admin/x, and that is
  // what the target receives (originFormOf): the rule must see the same path.
  const absolute = await send('http://gw.example/admin/x')
  t.equal(absolute.url, '/admin/x', 'the target is sent /admin/x')
  t.equal(absolute.target, targets[0].id, `absolute-form http://gw.example/admin/x: the admin group too, got ${absolute.target}`)
  // RFC 3986 §6.2.2.2: %61 is 'a'; the target reads /admin/x, so the rule must too.
  const encoded = await send('/%61dmin/x')
  t.equal(encoded.target, targets[0].id, `/%61dmin/x: the admin group too, got ${encoded.target}`)
})

test('an AWSALBTG cookie issued by one rule does not place a client in a group that another rule gives weight 0', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [
      { name: 'internal', targets: [{ id: targets[0].id, url: targets[0].url }] },
      { name: 'public', targets: [{ id: targets[1].id, url: targets[1].url }] }
    ],
    listeners: [{
      name: 'web',
      // Clients from 10/8 go to internal; everyone else to public: internal takes no new client there.
      rules: [{ priority: 1, conditions: { sourceIp: ['10.0.0.0/8'] }, forward: { targetGroups: [{ name: 'internal', weight: 1 }, { name: 'public', weight: 0 }], stickiness: { durationSeconds: 600 } } }],
      default: { targetGroups: [{ name: 'public', weight: 1 }, { name: 'internal', weight: 0 }], stickiness: { durationSeconds: 600 } }
    }]
  })
  app.all('/*', { config: { listener: 'web' } }, (_request, reply) => reply.forward())
  const insider = new CookieJar()
  const inside = await app.inject({ url: '/', remoteAddress: '10.1.2.3' })
  insider.store(inside.headers['set-cookie'])
  t.equal(echoOf(inside).target, targets[0].id, 'a client from 10/8 is placed in internal by rule 1')

  // The insider hands its AWSALBTG to a client outside 10/8 (or the client got it from rule 1 once).
  const outsider = new CookieJar()
  outsider.cookies.set('AWSALBTG', insider.cookies.get('AWSALBTG') ?? '')
  const outside = await app.inject({ url: '/', remoteAddress: '203.0.113.9', headers: outsider.headers() })
  t.equal(echoOf(outside).target, targets[1].id, `the default rule's forward places it in public, got ${echoOf(outside).target}`)
})

test('an app cookie whose Expires browsers cannot parse (Expires=0: a session cookie) keeps the client bound', async (t) => {
  const servers = await Promise.all(['s0', 's1'].map((id) => startServer(t, (req, res) => {
    // An app that means "until the browser closes" with an Expires no browser can parse.
    if (req.url === '/login') res.setHeader('set-cookie', `sid=${id}-session; Path=/; Expires=0`)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ target: id, method: req.method, url: req.url, headers: req.headers, body: '' }))
  })))
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'shop', targets: servers.map(({ url }, i) => ({ id: `s${i}`, url })), stickiness: { type: 'app_cookie', cookieName: 'sid' } }]
  })
  exposeAffinity(app)
  app.all('/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  const login = await app.inject({ url: '/login' })
  const target = echoOf(login).target
  // RFC 6265 §5.1.1: "0" has no month, year or time, so the Expires attribute is ignored and the
  // browser keeps sid for the session; the gateway read it (Date.parse('0') is 2000) as a deletion.
  t.notMatch(shardLines(login)[0] ?? '', /^AWSALBAPP-0=_remove_/, `the response binds the session: ${shardLines(login)[0]}`)
  const cookie = `sid=${target}-session; ${shardPairs(login)}`
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ url: '/cart', headers: { cookie } })
    t.equal(res.headers['x-affinity'], 'hit', `request ${i + 1} with the session cookie the browser kept: a hit`)
    t.equal(echoOf(res).target, target, `request ${i + 1} stays on ${target}`)
  }
})

test('the app cookie is read from whole cookie-pairs: "note=a sid=x" is no sid, so shards without the app cookie are reassigned', async (t) => {
  const targets = await startTargets(t, 2)
  const app = await buildGateway(t, {
    targetGroups: [{ name: 'shop', targets: targets.map(({ id, url }) => ({ id, url })), stickiness: { type: 'app_cookie', cookieName: 'sid' } }]
  })
  exposeAffinity(app)
  app.all('/*', { config: { targetGroup: 'shop' } }, (_request, reply) => reply.forward())
  const jar = new CookieJar()
  const login = await app.inject({ url: '/login' })
  jar.store(login.headers['set-cookie'])
  // The app's sid expired in the browser; another cookie's value happens to hold " sid=".
  // Browsers send values with inner spaces as they are; the app (RFC 6265 parsers split on ';') sees no sid.
  jar.cookies.delete('sid')
  const cookie = `note=a sid=${echoOf(login).target}.1; ${jar.headers().cookie}`
  const res = await app.inject({ url: '/cart', headers: { cookie } })
  t.equal(res.headers['x-affinity'], 'reassigned;app-cookie-withheld', `the request brought no app cookie: ${cookie.slice(0, 40)}…`)
})
