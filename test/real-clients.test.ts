import { execFile } from 'node:child_process'
import type { LookupAddress, LookupOptions } from 'node:dns'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import got, { type Got } from 'got'
import { test, type Test } from 'tap'
import { CookieJar } from 'tough-cookie'
import { realNow, SHOP_HOST, startAccountBackends, startClientGateway } from './client-gateway.js'
import { testCa } from './tls.js'

// The gateway as clients nobody here wrote meet it, by a name that is not local (clients keep
// Secure cookies from localhost even over plain HTTP): got with its usual tough-cookie jar, and
// curl's own cookie engine, each over plain HTTP and over HTTPS.

type Tap = Parameters<typeof startAccountBackends>[0]

const run = promisify(execFile)
const CURL = process.env.CURL_PATH ?? '/usr/bin/curl'
const CA_FILE = fileURLToPath(new URL('./fixtures/tls/ca.pem', import.meta.url))

/** Every route's kind of gateway cookie, and the requests that use it: lb_cookie, group stickiness, app_cookie after a login. */
const ROUTES = ['/lb/cart', '/tg/page', '/app/me'] as const
/** What a client holds once it used every route: over HTTPS the CORS twins too. */
const HTTP_NAMES = ['AWSALB', 'AWSALBAPP-0', 'AWSALBAPP-1', 'AWSALBAPP-2', 'AWSALBAPP-3', 'AWSALBTG', 'sid']
const HTTPS_NAMES = [...HTTP_NAMES, 'AWSALBCORS', 'AWSALBTGCORS'].sort()

/** got's `dnsLookup`: the shop's name is 127.0.0.1, nothing else resolves. */
function lookupShop (hostname: string, options: LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void): void {
  if (hostname !== SHOP_HOST) {
    callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), '')
    return
  }
  if (options.all === true) callback(null, [{ address: '127.0.0.1', family: 4 }])
  else callback(null, '127.0.0.1', 4)
}

/** got as an app uses it: its cookie jar, the shop's name resolved to loopback, the test CA trusted, no retry. */
function gotWith (jar: CookieJar | undefined): Got {
  return got.extend({
    cookieJar: jar,
    dnsLookup: lookupShop,
    https: { certificateAuthority: testCa },
    retry: { limit: 0 },
    timeout: { request: 5000 },
    throwHttpErrors: false
  })
}

/** The names a tough-cookie jar holds for the shop. */
async function jarNames (jar: CookieJar, origin: string): Promise<string[]> {
  return (await jar.getCookies(origin)).map((cookie) => cookie.key).sort()
}

interface Answer { status: number, affinity: string, backend: string, user: string | null, setCookie: string[] }

async function gotAnswer (client: Got, url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await client(url, { headers })
  const body = JSON.parse(res.body) as { backend: string, user: string | null }
  return { status: res.statusCode, affinity: String(res.headers['x-affinity']), backend: body.backend, user: body.user, setCookie: res.headers['set-cookie'] ?? [] }
}

/**
 * Logs in, then sends each route five times: every answer a 200, each route's first answer's
 * backend keeps every later one (a hit), and the login is known on the app route. `send` does
 * one request by the client under test.
 */
async function useEveryRoute (t: Test, send: (path: string) => Promise<Answer>, what: string): Promise<Record<string, string>> {
  const login = await send('/app/login?user=ann')
  t.equal(login.status, 200, `${what}: the login answered`)
  const first: Record<string, string> = { '/app/me': login.backend }
  for (let i = 0; i < 5; i++) {
    for (const path of ROUTES) {
      const res = await send(path)
      t.equal(res.status, 200, `${what} ${path} #${i + 1}: answered`)
      first[path] ??= res.backend
      if (i === 0 && path !== '/app/me') continue
      t.same({ backend: res.backend, affinity: res.affinity }, { backend: first[path], affinity: 'hit' }, `${what} ${path} #${i + 1}: on its first backend, a hit`)
    }
  }
  t.equal((await send('/app/me')).user, 'ann', `${what}: the login lives on ${first['/app/me']}`)
  return first
}

test('got with a tough-cookie jar over plain HTTP: no response fails on a Secure cookie, and the client sticks on every kind of route', async (t) => {
  const backends = await startAccountBackends(t, 3)
  const { origin } = await startClientGateway(t, backends, { https: false })
  const jar = new CookieJar()
  const client = gotWith(jar)
  // tough-cookie refuses a Secure cookie from a plain-HTTP origin and got turns that into a RequestError.
  await useEveryRoute(t, (path) => gotAnswer(client, origin + path), 'got over HTTP')
  t.same(await jarNames(jar, origin), HTTP_NAMES, 'the jar holds what the gateway wrote, no CORS twin')
})

test('got with a tough-cookie jar over HTTPS: the CORS twins are kept too, and a cross-site request keeps the login where it is', async (t) => {
  const backends = await startAccountBackends(t, 3, '; SameSite=Lax')
  const { origin } = await startClientGateway(t, backends, { https: true })
  const jar = new CookieJar()
  const client = gotWith(jar)
  const first = await useEveryRoute(t, (path) => gotAnswer(client, origin + path), 'got over HTTPS')
  t.same(await jarNames(jar, origin), HTTPS_NAMES, 'the jar holds every gateway cookie, the CORS twins among them')

  // A page of another site fetching /app/me with its credentials: tough-cookie's cross-site
  // context sends the shards and leaves the SameSite=Lax sid out, and stores what comes back as
  // a browser does (a Lax cookie from a cross-site response is refused).
  const url = `${origin}/app/me`
  const cookie = await jar.getCookieString(url, { sameSiteContext: 'none' })
  t.notMatch(cookie, /(^|; )sid=/, `the cross-site request carries no sid: ${cookie}`)
  t.match(cookie, /(^|; )AWSALBAPP-0=/, 'but the shards')
  const crossSite = await gotAnswer(gotWith(undefined), url, { cookie })
  t.same({ status: crossSite.status, affinity: crossSite.affinity, user: crossSite.user }, { status: 200, affinity: 'reassigned;app-cookie-withheld', user: null },
    'served without app stickiness: nobody is logged in for that request')
  for (const line of crossSite.setCookie) await jar.setCookie(line, url, { sameSiteContext: 'none', ignoreError: true })
  t.same(crossSite.setCookie.filter((line) => line.startsWith('AWSALBAPP-')), [], 'and no AWSALBAPP line: the shards stay as they are')

  const back = await gotAnswer(client, url)
  t.same({ backend: back.backend, affinity: back.affinity, user: back.user }, { backend: first['/app/me'], affinity: 'hit', user: 'ann' }, 'the next first-party request is still logged in, on its backend')
})

/** The cookies of a curl cookie jar file (Netscape format; HttpOnly ones are marked `#HttpOnly_`), by name. */
async function curlJar (file: string): Promise<Map<string, string>> {
  const cookies = new Map<string, string>()
  let text = ''
  try {
    text = await readFile(file, 'utf8')
  } catch {
    return cookies
  }
  for (const line of text.split('\n')) {
    if (line === '' || (line.startsWith('#') && !line.startsWith('#HttpOnly_'))) continue
    const fields = line.split('\t')
    cookies.set(fields[5], line)
  }
  return cookies
}

/** One curl request, with its cookie engine reading `cookies` (`-b`) and writing `save` (`-c`): status, headers' Set-Cookie lines, body. */
async function curl (origin: string, port: number, path: string, cookies: string, save = cookies): Promise<Answer> {
  const args = ['-sS', '--max-time', '5', '--resolve', `${SHOP_HOST}:${port}:127.0.0.1`, '--cacert', CA_FILE, '-b', cookies, '-c', save, '-i', origin + path]
  const { stdout } = await run(CURL, args, { encoding: 'utf8' })
  const end = stdout.indexOf('\r\n\r\n')
  const head = stdout.slice(0, end).split('\r\n')
  const body = JSON.parse(stdout.slice(end + 4)) as { backend: string, user: string | null }
  const header = (name: string): string[] => head.filter((line) => line.toLowerCase().startsWith(`${name}:`)).map((line) => line.slice(name.length + 1).trim())
  return { status: Number(head[0].split(' ')[1]), affinity: header('x-affinity')[0] ?? '', backend: body.backend, user: body.user, setCookie: header('set-cookie') }
}

async function tempDir (t: Tap): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastify-sticky-curl-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** A curl client that logs in and uses every route, its cookie engine keeping `jar`; then what it kept matches what the gateway wrote. */
async function curlEveryRoute (t: Test, https: boolean, jar: string): Promise<{ origin: string, port: number, first: Record<string, string> }> {
  const scheme = https ? 'HTTPS' : 'plain HTTP'
  const backends = await startAccountBackends(t, 3)
  // curl keeps cookies by the machine's clock.
  const { origin, port } = await startClientGateway(t, backends, { https, now: realNow })
  const written = new Set<string>()
  const first = await useEveryRoute(t, async (path) => {
    const res = await curl(origin, port, path, jar)
    for (const line of res.setCookie) written.add(line.slice(0, line.indexOf('=')))
    return res
  }, `curl over ${scheme}`)
  const kept = [...(await curlJar(jar)).keys()].sort()
  // Over plain HTTP curl drops a Secure cookie: a twin the gateway wrote there would be lost.
  t.same([...written].sort(), kept, `curl kept every cookie the gateway wrote: wrote ${[...written].sort().join(' ')}`)
  t.same(kept, https ? HTTPS_NAMES : HTTP_NAMES, `every kind of gateway cookie${https ? ', the CORS twins too' : ', no CORS twin'}`)
  return { origin, port, first }
}

test("curl's cookie engine over plain HTTP: it keeps every cookie the gateway writes, and sticks on every kind of route", async (t) => {
  await curlEveryRoute(t, false, join(await tempDir(t), 'jar.txt'))
})

test("curl's cookie engine over HTTPS: it keeps every cookie, the CORS twins too, and a request with the shards but not the app cookie leaves the login where it is", async (t) => {
  const dir = await tempDir(t)
  const jar = join(dir, 'jar.txt')
  const { origin, port, first } = await curlEveryRoute(t, true, jar)
  const cookies = await curlJar(jar)

  // What a browser sends across sites: the jar without the app's Lax sid. curl's engine stores
  // what the answer sets; the client then holds its old cookies with those applied over them.
  const withheld = join(dir, 'withheld.txt')
  const answered = join(dir, 'answered.txt')
  await writeFile(withheld, [...cookies].filter(([name]) => name !== 'sid').map(([, line]) => line).join('\n') + '\n')
  const crossSite = await curl(origin, port, '/app/me', withheld, answered)
  t.same({ affinity: crossSite.affinity, user: crossSite.user }, { affinity: 'reassigned;app-cookie-withheld', user: null }, 'served without app stickiness')
  const merged = new Map([...cookies, ...await curlJar(answered)])
  await writeFile(jar, [...merged.values()].join('\n') + '\n')
  const shards = (jarCookies: Map<string, string>): Array<string | undefined> => [0, 1, 2, 3].map((i) => jarCookies.get(`AWSALBAPP-${i}`))
  t.same(shards(merged), shards(cookies), `the shards the client holds are the ones it had: ${JSON.stringify(crossSite.setCookie)}`)

  const back = await curl(origin, port, '/app/me', jar)
  t.same({ backend: back.backend, affinity: back.affinity, user: back.user }, { backend: first['/app/me'], affinity: 'hit', user: 'ann' }, 'the next request with both cookies is still logged in, on its backend')
})
