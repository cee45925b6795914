// Load from autocannon when wrk is not installed: node bench/autocannon-load.js <url> <connections> <seconds> <cookies JSON> [header]
// Each connection walks through the Cookie headers (or the values of `header`) in turn; prints one JSON line with the result.
import autocannon from 'autocannon'

const [url, connections, seconds, cookiesJson, header = 'cookie'] = process.argv.slice(2)
const cookies = JSON.parse(cookiesJson)
const result = await autocannon({
  url,
  connections: Number(connections),
  duration: Number(seconds),
  requests: cookies.map((cookie) => ({ method: 'GET', headers: cookie === '' ? {} : { [header]: cookie } }))
})
process.stdout.write(JSON.stringify({
  requests: result.requests.total,
  rps: result.requests.total / (result.duration),
  p50Ms: result.latency.p50,
  p99Ms: result.latency.p99,
  errors: result.errors + result.timeouts + result.non2xx
}) + '\n')
