import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'tap'
import Fastify from 'fastify'
import fastifySticky, { stickyProxy, type FastifyStickyOptions } from '../lib/index.js'
import { resolveOptions } from '../lib/options.js'
import { TEST_KEY } from './setup.js'
import { clientCert, localhostCert, testCa } from './tls.js'

const target = { id: 'a', url: 'http://127.0.0.1:3001' }
const group = { name: 'g', targets: [target] }

/** Each bad input, with the exact message it must produce. */
const cases: Array<[string, unknown, string]> = [
  ['options not an object', 'x', 'options must be an object, received "x"'],
  ['no targetGroups', {}, 'targetGroups must be a non-empty array of target groups, received undefined'],
  ['empty targetGroups', { targetGroups: [] }, 'targetGroups must be a non-empty array of target groups, received an array of 0'],
  ['unknown option', { targetGroups: [group], targetGroup: 'g' }, 'targetGroup is not an option (known: keys, targetGroups, idleTimeoutMs, connectTimeoutMs, redispatch, redispatchIdempotent, requestBufferBytes, clientBodyTimeoutMs, xForwardedFor, trustedProxies, forwardStickyCookies, connectionsPerTarget, cookiePrefix, cookieSecure, corsCookies, cookieHttpOnly, cookieClockSkewSeconds, learnStore, listeners, exposeDecision, handoffHeaders, metrics, now)'],
  ['group not an object', { targetGroups: [null] }, 'targetGroups[0] must be an object, received null'],
  ['group name missing', { targetGroups: [{ targets: [] }] }, 'targetGroups[0].name must be a string of 1 to 64 characters from A-Z a-z 0-9 . _ : -, received undefined'],
  ['group name with a space', { targetGroups: [{ name: 'my group' }] }, 'targetGroups[0].name must be a string of 1 to 64 characters from A-Z a-z 0-9 . _ : -, received "my group"'],
  ['duplicate group name', { targetGroups: [group, { name: 'g' }] }, 'targetGroups[1].name must be unique (targetGroups[0] has it too), received "g"'],
  ['unknown group option', { targetGroups: [{ name: 'g', healthChecks: {} }] }, 'targetGroups[0].healthChecks is not an option (known: name, targets, algorithm, stickiness, healthCheck, minimumHealthyTargets, failOpen, deregistrationDelayMs, drainingKeepsSessions, slowStartMs, outlierDetection, boundedLoadFactor, websocket, tls, discovery)'],
  ['deregistration delay above ALB', { targetGroups: [{ name: 'g', deregistrationDelayMs: 3_600_001 }] }, 'targetGroups[0].deregistrationDelayMs must be an integer from 0 to 3600000, received 3600001'],
  ['deregistration delay negative', { targetGroups: [{ name: 'g', deregistrationDelayMs: -1 }] }, 'targetGroups[0].deregistrationDelayMs must be an integer from 0 to 3600000, received -1'],
  ['drainingKeepsSessions not a boolean', { targetGroups: [{ name: 'g', drainingKeepsSessions: 1 }] }, 'targetGroups[0].drainingKeepsSessions must be a boolean, received 1'],
  ['slow start below ALB', { targetGroups: [{ name: 'g', slowStartMs: 29_999 }] }, 'targetGroups[0].slowStartMs must be 0 (off) or an integer from 30000 to 900000, received 29999'],
  ['slow start above ALB', { targetGroups: [{ name: 'g', slowStartMs: 900_001 }] }, 'targetGroups[0].slowStartMs must be 0 (off) or an integer from 30000 to 900000, received 900001'],
  ['slow start with least outstanding requests', { targetGroups: [{ name: 'g', algorithm: 'least_outstanding_requests', slowStartMs: 30_000 }] }, 'targetGroups[0].slowStartMs must be 0 when algorithm is least_outstanding_requests (ALB does not combine them), received 30000'],
  ['outlier detection true', { targetGroups: [{ name: 'g', outlierDetection: true }] }, 'targetGroups[0].outlierDetection must be false or an object, received true'],
  ['unknown outlier detection option', { targetGroups: [{ name: 'g', outlierDetection: { interval: 1 } }] }, 'targetGroups[0].outlierDetection.interval is not an option (known: consecutiveErrors, consecutiveGatewayErrors, baseEjectionMs, maxEjectionMs, maxEjectedPercent, keepSessions)'],
  ['consecutive errors below 0', { targetGroups: [{ name: 'g', outlierDetection: { consecutiveErrors: -1 } }] }, 'targetGroups[0].outlierDetection.consecutiveErrors must be an integer from 0 to 1000, received -1'],
  ['consecutive gateway errors above 1000', { targetGroups: [{ name: 'g', outlierDetection: { consecutiveGatewayErrors: 1001 } }] }, 'targetGroups[0].outlierDetection.consecutiveGatewayErrors must be an integer from 0 to 1000, received 1001'],
  ['consecutive gateway errors not a number', { targetGroups: [{ name: 'g', outlierDetection: { consecutiveGatewayErrors: '5' } }] }, 'targetGroups[0].outlierDetection.consecutiveGatewayErrors must be an integer from 0 to 1000, received "5"'],
  ['redispatchIdempotent not a boolean', { targetGroups: [group], redispatchIdempotent: 1 }, 'redispatchIdempotent must be a boolean, received 1'],
  ['requestBufferBytes negative', { targetGroups: [group], requestBufferBytes: -1 }, 'requestBufferBytes must be an integer from 0 to 16777216, received -1'],
  ['requestBufferBytes above 16 MiB', { targetGroups: [group], requestBufferBytes: 16_777_217 }, 'requestBufferBytes must be an integer from 0 to 16777216, received 16777217'],
  ['cookieSecure a string other than auto', { targetGroups: [group], cookieSecure: 'yes' }, "cookieSecure must be true, false or 'auto', received \"yes\""],
  ['corsCookies a boolean', { targetGroups: [group], corsCookies: true }, "corsCookies must be 'auto' or 'always', received true"],
  ['corsCookies another word', { targetGroups: [group], corsCookies: 'never' }, "corsCookies must be 'auto' or 'always', received \"never\""],
  ['cookieHttpOnly not a boolean', { targetGroups: [group], cookieHttpOnly: 1 }, 'cookieHttpOnly must be a boolean, received 1'],
  ['a __Host- prefix without Secure', { targetGroups: [group], cookiePrefix: '__Host-' }, "cookieSecure must be true when cookiePrefix starts with __Host- (browsers drop such cookies without Secure, and 'auto' leaves it off over HTTP), received false"],
  ['a __Secure- prefix with Secure only over HTTPS', { targetGroups: [group], cookiePrefix: '__Secure-', cookieSecure: 'auto' }, "cookieSecure must be true when cookiePrefix starts with __Secure- (browsers drop such cookies without Secure, and 'auto' leaves it off over HTTP), received \"auto\""],
  ['a __host- prefix in another case (browsers match it case-insensitively)', { targetGroups: [group], cookiePrefix: '__host-x', cookieSecure: false }, "cookieSecure must be true when cookiePrefix starts with __host- (browsers drop such cookies without Secure, and 'auto' leaves it off over HTTP), received false"],
  ['cookieClockSkewSeconds negative', { targetGroups: [group], cookieClockSkewSeconds: -1 }, 'cookieClockSkewSeconds must be an integer from 0 to 300, received -1'],
  ['cookieClockSkewSeconds past 300', { targetGroups: [group], cookieClockSkewSeconds: 301 }, 'cookieClockSkewSeconds must be an integer from 0 to 300, received 301'],
  ['cookieClockSkewSeconds a string', { targetGroups: [group], cookieClockSkewSeconds: '5' }, 'cookieClockSkewSeconds must be an integer from 0 to 300, received "5"'],
  ['clientBodyTimeoutMs of 0', { targetGroups: [group], clientBodyTimeoutMs: 0 }, 'clientBodyTimeoutMs must be an integer from 1 to 3600000, received 0'],
  ['clientBodyTimeoutMs not an integer', { targetGroups: [group], clientBodyTimeoutMs: 1.5 }, 'clientBodyTimeoutMs must be an integer from 1 to 3600000, received 1.5'],
  ['max ejection below the base', { targetGroups: [{ name: 'g', outlierDetection: { baseEjectionMs: 1000, maxEjectionMs: 999 } }] }, 'targetGroups[0].outlierDetection.maxEjectionMs must be an integer from 1000 to 3600000, received 999'],
  ['max ejected above 100 %', { targetGroups: [{ name: 'g', outlierDetection: { maxEjectedPercent: 101 } }] }, 'targetGroups[0].outlierDetection.maxEjectedPercent must be an integer from 1 to 100, received 101'],
  ['outlier keepSessions not a boolean', { targetGroups: [{ name: 'g', outlierDetection: { keepSessions: 'yes' } }] }, 'targetGroups[0].outlierDetection.keepSessions must be a boolean, received "yes"'],
  ['minimum healthy of 0', { targetGroups: [{ name: 'g', minimumHealthyTargets: 0 }] }, "targetGroups[0].minimumHealthyTargets must be a count from 1 to 1000, or a percentage from '1%' to '100%', received 0"],
  ['minimum healthy above 100 %', { targetGroups: [{ name: 'g', minimumHealthyTargets: '101%' }] }, "targetGroups[0].minimumHealthyTargets must be a count from 1 to 1000, or a percentage from '1%' to '100%', received \"101%\""],
  ['minimum healthy as a fraction', { targetGroups: [{ name: 'g', minimumHealthyTargets: 0.5 }] }, "targetGroups[0].minimumHealthyTargets must be a count from 1 to 1000, or a percentage from '1%' to '100%', received 0.5"],
  ['failOpen not a boolean', { targetGroups: [{ name: 'g', failOpen: 'no' }] }, 'targetGroups[0].failOpen must be a boolean, received "no"'],
  ['health check not an object', { targetGroups: [{ name: 'g', healthCheck: true }] }, 'targetGroups[0].healthCheck must be an object, received true'],
  ['unknown health check option', { targetGroups: [{ name: 'g', healthCheck: { protocol: 'HTTP' } }] }, 'targetGroups[0].healthCheck.protocol is not an option (known: path, port, intervalMs, timeoutMs, healthyThreshold, unhealthyThreshold, matcher, initialState, allowShortIntervals)'],
  ['health check port 0', { targetGroups: [{ name: 'g', healthCheck: { port: 0 } }] }, "targetGroups[0].healthCheck.port must be 'traffic-port' or an integer from 1 to 65535, received 0"],
  ['health check port as a string', { targetGroups: [{ name: 'g', healthCheck: { port: '8080' } }] }, "targetGroups[0].healthCheck.port must be 'traffic-port' or an integer from 1 to 65535, received \"8080\""],
  ['health check path without /', { targetGroups: [{ name: 'g', healthCheck: { path: 'health' } }] }, 'targetGroups[0].healthCheck.path must be a path starting with / (a query is allowed), printable ASCII without spaces, received "health"'],
  ['health check path to another host', { targetGroups: [{ name: 'g', healthCheck: { path: '//evil/x' } }] }, 'targetGroups[0].healthCheck.path must be a path starting with / (a query is allowed), printable ASCII without spaces, received "//evil/x"'],
  ['health check interval below ALB', { targetGroups: [{ name: 'g', healthCheck: { intervalMs: 4999 } }] }, 'targetGroups[0].healthCheck.intervalMs must be an integer from 5000 to 300000, received 4999'],
  ['health check interval above ALB', { targetGroups: [{ name: 'g', healthCheck: { intervalMs: 300_001 } }] }, 'targetGroups[0].healthCheck.intervalMs must be an integer from 5000 to 300000, received 300001'],
  ['health check timeout below ALB', { targetGroups: [{ name: 'g', healthCheck: { timeoutMs: 1999 } }] }, 'targetGroups[0].healthCheck.timeoutMs must be an integer from 2000 to 120000, received 1999'],
  ['health check timeout not below the interval', { targetGroups: [{ name: 'g', healthCheck: { intervalMs: 10_000, timeoutMs: 10_000 } }] }, 'targetGroups[0].healthCheck.timeoutMs must be below intervalMs (10000), received 10000'],
  ['healthy threshold of 1', { targetGroups: [{ name: 'g', healthCheck: { healthyThreshold: 1 } }] }, 'targetGroups[0].healthCheck.healthyThreshold must be an integer from 2 to 10, received 1'],
  ['unhealthy threshold of 11', { targetGroups: [{ name: 'g', healthCheck: { unhealthyThreshold: 11 } }] }, 'targetGroups[0].healthCheck.unhealthyThreshold must be an integer from 2 to 10, received 11'],
  ['matcher with a 5xx', { targetGroups: [{ name: 'g', healthCheck: { matcher: '200-503' } }] }, "targetGroups[0].healthCheck.matcher must be status codes from 200 to 499: '200', a list '200,202' or a range '200-299', received \"200-503\""],
  ['matcher as a number', { targetGroups: [{ name: 'g', healthCheck: { matcher: 200 } }] }, "targetGroups[0].healthCheck.matcher must be status codes from 200 to 499: '200', a list '200,202' or a range '200-299', received 200"],
  ['unknown initial state', { targetGroups: [{ name: 'g', healthCheck: { initialState: 'up' } }] }, 'targetGroups[0].healthCheck.initialState must be one of initial, healthy, received "up"'],
  ['short intervals not allowed', { targetGroups: [{ name: 'g', healthCheck: { intervalMs: 50, timeoutMs: 20 } }] }, 'targetGroups[0].healthCheck.intervalMs must be an integer from 5000 to 300000, received 50'],
  ['targets not an array', { targetGroups: [{ name: 'g', targets: {} }] }, 'targetGroups[0].targets must be an array of targets, received an object'],
  ['target id missing', { targetGroups: [{ name: 'g', targets: [{ url: 'http://127.0.0.1:1' }] }] }, 'targetGroups[0].targets[0].id must be a string of 1 to 64 characters from A-Z a-z 0-9 . _ : -, received undefined'],
  ['duplicate target id', { targetGroups: [{ name: 'g', targets: [target, target] }] }, 'targetGroups[0].targets[1].id must be unique within the group (targets[0] has it too), received "a"'],
  ['target url not http', { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: 'ftp://127.0.0.1' }] }] }, 'targetGroups[0].targets[0].url must be an http: or https: origin such as http://127.0.0.1:3001 (no path, query or credentials), received "ftp://127.0.0.1"'],
  ['target url with a path', { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: 'http://127.0.0.1:1/app' }] }] }, 'targetGroups[0].targets[0].url must be an http: or https: origin such as http://127.0.0.1:3001 (no path, query or credentials), received "http://127.0.0.1:1/app"'],
  ['target url not a URL', { targetGroups: [{ name: 'g', targets: [{ id: 'a', url: 'localhost:3001' }] }] }, 'targetGroups[0].targets[0].url must be an http: or https: origin such as http://127.0.0.1:3001 (no path, query or credentials), received "localhost:3001"'],
  ['target weight zero', { targetGroups: [{ name: 'g', targets: [{ ...target, weight: 0 }] }] }, 'targetGroups[0].targets[0].weight must be an integer from 1 to 1000, received 0'],
  ['target weight fraction', { targetGroups: [{ name: 'g', targets: [{ ...target, weight: 1.5 }] }] }, 'targetGroups[0].targets[0].weight must be an integer from 1 to 1000, received 1.5'],
  ['unknown target option', { targetGroups: [{ name: 'g', targets: [{ ...target, port: 1 }] }] }, 'targetGroups[0].targets[0].port is not an option (known: id, url, weight)'],
  ['unknown algorithm', { targetGroups: [{ name: 'g', algorithm: 'random' }] }, 'targetGroups[0].algorithm must be one of round_robin, least_outstanding_requests, weighted_random, least_sessions, received "random"'],
  ['stickiness true', { targetGroups: [{ name: 'g', stickiness: true }] }, 'targetGroups[0].stickiness must be false, an object or an array of them (a fallback chain), received true'],
  ['stickiness type unknown', { targetGroups: [{ name: 'g', stickiness: { type: 'ip_hash' } }] }, 'targetGroups[0].stickiness.type must be one of lb_cookie, app_cookie, learn, source_ip, header, query, path, received "ip_hash"'],
  ['header without name', { targetGroups: [{ name: 'g', stickiness: { type: 'header' } }] }, "targetGroups[0].stickiness.name must be a header name (a token of 1 to 128 characters, e.g. 'x-session-id'), required with type 'header', received undefined"],
  ['header name not a token', { targetGroups: [{ name: 'g', stickiness: { type: 'header', name: 'x session' } }] }, "targetGroups[0].stickiness.name must be a header name (a token of 1 to 128 characters, e.g. 'x-session-id'), required with type 'header', received \"x session\""],
  ['query name with =', { targetGroups: [{ name: 'g', stickiness: { type: 'query', name: 'a=b' } }] }, "targetGroups[0].stickiness.name must be a query parameter name (1 to 128 characters, none of & = # or blanks, e.g. 'sid'), required with type 'query', received \"a=b\""],
  ['path pattern not a RegExp', { targetGroups: [{ name: 'g', stickiness: { type: 'path', pattern: '/s/(.*)' } }] }, 'targetGroups[0].stickiness.pattern must be a RegExp whose first capture group is the session id, received "/s/(.*)"'],
  ['path name and pattern', { targetGroups: [{ name: 'g', stickiness: { type: 'path', name: 'sid', pattern: /x(y)/ } }] }, 'targetGroups[0].stickiness.name must be absent when pattern is given, received "sid"'],
  ['source_ip prefix too long', { targetGroups: [{ name: 'g', stickiness: { type: 'source_ip', ipv4PrefixLength: 33 } }] }, 'targetGroups[0].stickiness.ipv4PrefixLength must be an integer from 1 to 32, received 33'],
  ['source_ip ipv6 prefix zero', { targetGroups: [{ name: 'g', stickiness: { type: 'source_ip', ipv6PrefixLength: 0 } }] }, 'targetGroups[0].stickiness.ipv6PrefixLength must be an integer from 1 to 128, received 0'],
  ['key type with a duration', { targetGroups: [{ name: 'g', stickiness: { type: 'source_ip', durationSeconds: 60 } }] }, 'targetGroups[0].stickiness.durationSeconds is not an option (known: type, ipv4PrefixLength, ipv6PrefixLength)'],
  ['learn without a name', { targetGroups: [{ name: 'g', stickiness: { type: 'learn' } }] }, "targetGroups[0].stickiness must be an object with exactly one of cookieName (the app's session cookie) and headerName (a header carrying the session id), received an object"],
  ['learn with both names', { targetGroups: [{ name: 'g', stickiness: { type: 'learn', cookieName: 'sid', headerName: 'x-sid' } }] }, "targetGroups[0].stickiness must be an object with exactly one of cookieName (the app's session cookie) and headerName (a header carrying the session id), received an object"],
  ['learn of a gateway cookie', { targetGroups: [{ name: 'g', stickiness: { type: 'learn', cookieName: 'AWSALBAPP-0' } }] }, 'targetGroups[0].stickiness.cookieName must be a name not starting with AWSALB (the gateway\'s own cookies), received "AWSALBAPP-0"'],
  ['empty chain', { targetGroups: [{ name: 'g', stickiness: [] }] }, 'targetGroups[0].stickiness must be false, an object, or an array of 1 to 8 sources, received an array of 0'],
  ['chain without a type', { targetGroups: [{ name: 'g', stickiness: [{ type: 'lb_cookie' }, { name: 'x' }] }] }, 'targetGroups[0].stickiness[1].type must be one of lb_cookie, app_cookie, learn, source_ip, header, query, path (required in a chain), received undefined'],
  ['chain with two pins', { targetGroups: [{ name: 'g', stickiness: [{ type: 'lb_cookie' }, { type: 'learn', cookieName: 'sid' }] }] }, 'targetGroups[0].stickiness[1].type must be a key type (source_ip, header, query, path): targetGroups[0].stickiness[0] already pins the client, and a chain has one source that does, received "learn"'],
  ['bounded load factor 1', { targetGroups: [{ name: 'g', boundedLoadFactor: 1 }] }, 'targetGroups[0].boundedLoadFactor must be 0 (off) or a number from 1.01 to 100 (e.g. 1.25), received 1'],
  ['websocket not an object', { targetGroups: [{ name: 'g', websocket: true }] }, 'targetGroups[0].websocket must be an object, received true'],
  ['unknown websocket option', { targetGroups: [{ name: 'g', websocket: { maxConnections: 1 } }] }, 'targetGroups[0].websocket.maxConnections is not an option (known: maxConnectionsPerTarget, handshakeTimeoutMs, idleTimeoutMs, closeOnUnhealthy)'],
  ['websocket limit negative', { targetGroups: [{ name: 'g', websocket: { maxConnectionsPerTarget: -1 } }] }, 'targetGroups[0].websocket.maxConnectionsPerTarget must be an integer from 0 to 1000000, received -1'],
  ['websocket handshake past the idle timeout', { idleTimeoutMs: 5000, targetGroups: [{ name: 'g', websocket: { handshakeTimeoutMs: 6000 } }] }, 'targetGroups[0].websocket.handshakeTimeoutMs must be an integer from 1 to 5000, received 6000'],
  ['websocket idle timeout fraction', { targetGroups: [{ name: 'g', websocket: { idleTimeoutMs: 1.5 } }] }, 'targetGroups[0].websocket.idleTimeoutMs must be an integer from 0 to 86400000, received 1.5'],
  ['websocket closeOnUnhealthy text', { targetGroups: [{ name: 'g', websocket: { closeOnUnhealthy: 'yes' } }] }, 'targetGroups[0].websocket.closeOnUnhealthy must be a boolean, received "yes"'],
  ['bounded load factor text', { targetGroups: [{ name: 'g', boundedLoadFactor: '1.25' }] }, 'targetGroups[0].boundedLoadFactor must be 0 (off) or a number from 1.01 to 100 (e.g. 1.25), received "1.25"'],
  ['least_sessions without a pin', { targetGroups: [{ name: 'g', algorithm: 'least_sessions', stickiness: { type: 'source_ip' } }] }, 'targetGroups[0].algorithm must be round_robin, least_outstanding_requests or weighted_random: least_sessions counts the sessions a cookie or the learn store pins, and this stickiness pins none, received "least_sessions"'],
  ['learn store type', { targetGroups: [group], learnStore: { type: 'memcached' } }, 'learnStore.type must be one of memory, redis, received "memcached"'],
  ['learn store url', { targetGroups: [group], learnStore: { type: 'redis', url: 'http://user:secret@127.0.0.1' } }, 'learnStore.url must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379, received a string of 28 characters'],
  ['learn store timeout', { targetGroups: [group], learnStore: { type: 'redis', url: 'redis://127.0.0.1:6379', timeoutMs: 0 } }, 'learnStore.timeoutMs must be an integer from 1 to 10000, received 0'],
  ['learn store memory option on redis', { targetGroups: [group], learnStore: { type: 'redis', url: 'redis://127.0.0.1:6379', maxEntries: 5 } }, 'learnStore.maxEntries is not an option (known: type, url, keyPrefix, timeoutMs, localCacheMs)'],
  ['stickiness enabled not boolean', { targetGroups: [{ name: 'g', stickiness: { enabled: 'yes' } }] }, 'targetGroups[0].stickiness.enabled must be a boolean, received "yes"'],
  ['duration zero', { targetGroups: [{ name: 'g', stickiness: { durationSeconds: 0 } }] }, 'targetGroups[0].stickiness.durationSeconds must be an integer from 1 to 604800, received 0'],
  ['duration over 7 days', { targetGroups: [{ name: 'g', stickiness: { durationSeconds: 604801 } }] }, 'targetGroups[0].stickiness.durationSeconds must be an integer from 1 to 604800, received 604801'],
  ['duration as a string', { targetGroups: [{ name: 'g', stickiness: { durationSeconds: '3600' } }] }, 'targetGroups[0].stickiness.durationSeconds must be an integer from 1 to 604800, received "3600"'],
  ['unknown stickiness option', { targetGroups: [{ name: 'g', stickiness: { cookie: 'X' } }] }, 'targetGroups[0].stickiness.cookie is not an option (known: type, enabled, durationSeconds, cookieName, bindToCookieValue)'],
  ['weighted_random with default stickiness', { targetGroups: [{ name: 'g', algorithm: 'weighted_random' }] }, 'targetGroups[0].stickiness must be false when algorithm is weighted_random (ALB does not combine them), received undefined (the default: lb_cookie stickiness)'],
  ['weighted_random with stickiness', { targetGroups: [{ name: 'g', algorithm: 'weighted_random', stickiness: { durationSeconds: 60 } }] }, 'targetGroups[0].stickiness must be false when algorithm is weighted_random (ALB does not combine them), received an object'],
  ['metrics not an object', { targetGroups: [group], metrics: 'prometheus' }, 'metrics must be true, false or { registry, client, prefix, buckets }, received "prometheus"'],
  ['unknown metrics option', { targetGroups: [group], metrics: { register: {} } }, 'metrics.register is not an option (known: registry, client, prefix, buckets)'],
  ['metrics registry not a registry', { targetGroups: [group], metrics: { registry: {} } }, 'metrics.registry must be a prom-client Registry, received an object'],
  ['metrics client not the module', { targetGroups: [group], metrics: { client: { Registry () {} } } }, "metrics.client must be the prom-client module (import * as client from 'prom-client'), received an object"],
  ['metrics prefix starting with a digit', { targetGroups: [group], metrics: { prefix: '1gw_' } }, 'metrics.prefix must be a string of 0 to 64 characters from a-z A-Z 0-9 _ :, not starting with a digit, received "1gw_"'],
  ['metrics prefix with a dash', { targetGroups: [group], metrics: { prefix: 'edge-' } }, 'metrics.prefix must be a string of 0 to 64 characters from a-z A-Z 0-9 _ :, not starting with a digit, received "edge-"'],
  ['metrics buckets empty', { targetGroups: [group], metrics: { buckets: [] } }, 'metrics.buckets must be an array of 1 to 50 increasing positive numbers (seconds), received an array of 0'],
  ['metrics buckets not increasing', { targetGroups: [group], metrics: { buckets: [1, 0.5] } }, 'metrics.buckets must be an array of 1 to 50 increasing positive numbers (seconds), received an array of 2'],
  ['metrics bucket not finite', { targetGroups: [group], metrics: { buckets: [0.1, Infinity] } }, 'metrics.buckets must be an array of 1 to 50 increasing positive numbers (seconds), received an array of 2'],
  ['keys not an array (value never shown)', { targetGroups: [group], keys: TEST_KEY }, 'keys must be a non-empty array of 32-byte keys, received a string of 64 characters'],
  ['keys empty', { targetGroups: [group], keys: [] }, 'keys must be a non-empty array of 32-byte keys, received an array of 0'],
  ['key too short (value never shown)', { targetGroups: [group], keys: [TEST_KEY, 'secret-but-short'] }, 'keys[1] must be 32 bytes: a Buffer, 64 hex characters, or base64 or base64url of 32 bytes, received a string of 16 characters'],
  ['key Buffer of 16 bytes', { targetGroups: [group], keys: [Buffer.alloc(16)] }, 'keys[0] must be 32 bytes: a Buffer, 64 hex characters, or base64 or base64url of 32 bytes, received a Buffer of 16 bytes'],
  ['idleTimeoutMs zero', { targetGroups: [group], idleTimeoutMs: 0 }, 'idleTimeoutMs must be an integer from 1 to 4000000, received 0'],
  ['connectTimeoutMs too large', { targetGroups: [group], connectTimeoutMs: 600001 }, 'connectTimeoutMs must be an integer from 1 to 600000, received 600001'],
  ['redispatch not boolean', { targetGroups: [group], redispatch: 'no' }, 'redispatch must be a boolean, received "no"'],
  ['xForwardedFor unknown', { targetGroups: [group], xForwardedFor: 'replace' }, 'xForwardedFor must be one of append, preserve, remove, received "replace"'],
  ['trustedProxies a hop count', { targetGroups: [group], trustedProxies: 1 }, "trustedProxies must be the proxies' addresses, not a hop count (true, false, a string of comma-separated addresses and CIDR blocks ('10.0.0.0/8, 127.0.0.1'), an array of them, or a function (address, hop) => boolean), received 1"],
  ['trustedProxies an object', { targetGroups: [group], trustedProxies: { from: '10.0.0.0/8' } }, "trustedProxies must be true, false, a string of comma-separated addresses and CIDR blocks ('10.0.0.0/8, 127.0.0.1'), an array of them, or a function (address, hop) => boolean, received an object"],
  ['trustedProxies null', { targetGroups: [group], trustedProxies: null }, "trustedProxies must be true, false, a string of comma-separated addresses and CIDR blocks ('10.0.0.0/8, 127.0.0.1'), an array of them, or a function (address, hop) => boolean, received null"],
  ['trustedProxies empty string', { targetGroups: [group], trustedProxies: '' }, 'trustedProxies must be an IP address, a CIDR block (10.0.0.0/8, fd00::/8), or loopback, linklocal or uniquelocal, received ""'],
  ['trustedProxies a bad address', { targetGroups: [group], trustedProxies: '10.0.0.300' }, 'trustedProxies must be an IP address, a CIDR block (10.0.0.0/8, fd00::/8), or loopback, linklocal or uniquelocal, received "10.0.0.300"'],
  ['trustedProxies a bad second entry', { targetGroups: [group], trustedProxies: '10.0.0.0/8, proxy.internal' }, 'trustedProxies must be an IP address, a CIDR block (10.0.0.0/8, fd00::/8), or loopback, linklocal or uniquelocal, received "proxy.internal"'],
  ['trustedProxies a prefix too long', { targetGroups: [group], trustedProxies: ['127.0.0.1', '10.0.0.0/33'] }, 'trustedProxies[1] must be an IP address, a CIDR block (10.0.0.0/8, fd00::/8), or loopback, linklocal or uniquelocal, received "10.0.0.0/33"'],
  ['trustedProxies a number in the array', { targetGroups: [group], trustedProxies: ['::1', 8] }, 'trustedProxies[1] must be an IP address, a CIDR block (10.0.0.0/8, fd00::/8), or loopback, linklocal or uniquelocal, received 8'],
  ['forwardStickyCookies not a boolean', { targetGroups: [group], forwardStickyCookies: 'yes' }, 'forwardStickyCookies must be a boolean, received "yes"'],
  ['connectionsPerTarget zero', { targetGroups: [group], connectionsPerTarget: 0 }, 'connectionsPerTarget must be an integer from 1 to 65536, received 0'],
  ['now not a function', { targetGroups: [group], now: 5 }, 'now must be a function returning milliseconds since the epoch, received 5'],
  ['exposeDecision a number', { targetGroups: [group], exposeDecision: 1 }, "exposeDecision must be true, false or a header name (e.g. 'x-sticky-decision'), received 1"],
  ['exposeDecision not a header name', { targetGroups: [group], exposeDecision: 'x decision' }, "exposeDecision must be a header name (a token of 1 to 128 characters, e.g. 'x-sticky-decision'), received \"x decision\""],
  ['exposeDecision empty', { targetGroups: [group], exposeDecision: '' }, "exposeDecision must be a header name (a token of 1 to 128 characters, e.g. 'x-sticky-decision'), received \"\""],
  ['exposeDecision a reserved name', { targetGroups: [group], exposeDecision: 'Set-Cookie' }, 'exposeDecision must be a header name that HTTP or the gateway does not use for something else, received "Set-Cookie"'],
  ['handoffHeaders a string', { targetGroups: [group], handoffHeaders: 'x-from' }, 'handoffHeaders must be true, false or an object { previousTarget, reason } of header names, received "x-from"'],
  ['handoffHeaders unknown key', { targetGroups: [group], handoffHeaders: { target: 'x-from' } }, 'handoffHeaders.target is not an option (known: previousTarget, reason)'],
  ['handoffHeaders previousTarget not a header name', { targetGroups: [group], handoffHeaders: { previousTarget: 'x:from' } }, "handoffHeaders.previousTarget must be a header name (a token of 1 to 128 characters, e.g. 'x-sticky-previous-target'), received \"x:from\""],
  ['handoffHeaders reason a forwarding header', { targetGroups: [group], handoffHeaders: { reason: 'X-Forwarded-For' } }, 'handoffHeaders.reason must be a header name that HTTP or the gateway does not use for something else, received "X-Forwarded-For"'],
  ['handoffHeaders one name for both', { targetGroups: [group], handoffHeaders: { reason: 'X-Sticky-Previous-Target' } }, "handoffHeaders.reason must be another name than handoffHeaders.previousTarget ('x-sticky-previous-target'), received \"X-Sticky-Previous-Target\""],
  // Application-cookie stickiness (issue 5)
  ['app_cookie without cookieName', { targetGroups: [{ name: 'g', stickiness: { type: 'app_cookie' } }] }, "targetGroups[0].stickiness.cookieName must be the application's cookie name (a token of 1 to 128 characters, e.g. 'JSESSIONID'), required with type 'app_cookie', received undefined"],
  ['app cookie name with a space', { targetGroups: [{ name: 'g', stickiness: { type: 'app_cookie', cookieName: 'my session' } }] }, "targetGroups[0].stickiness.cookieName must be the application's cookie name (a token of 1 to 128 characters, e.g. 'JSESSIONID'), required with type 'app_cookie', received \"my session\""],
  ['app cookie named AWSALB…', { targetGroups: [{ name: 'g', stickiness: { type: 'app_cookie', cookieName: 'AWSALBsession' } }] }, 'targetGroups[0].stickiness.cookieName must be a name not starting with AWSALB, AWSALBAPP or AWSALBTG (the gateway\'s own cookies; ALB refuses them too), received "AWSALBsession"'],
  ['app cookie named AWSALBAPP…', { targetGroups: [{ name: 'g', stickiness: { type: 'app_cookie', cookieName: 'AWSALBAPP-9' } }] }, 'targetGroups[0].stickiness.cookieName must be a name not starting with AWSALB, AWSALBAPP or AWSALBTG (the gateway\'s own cookies; ALB refuses them too), received "AWSALBAPP-9"'],
  ['app cookie named AWSALBTG…', { targetGroups: [{ name: 'g', stickiness: { type: 'app_cookie', cookieName: 'AWSALBTGX' } }] }, 'targetGroups[0].stickiness.cookieName must be a name not starting with AWSALB, AWSALBAPP or AWSALBTG (the gateway\'s own cookies; ALB refuses them too), received "AWSALBTGX"'],
  ['app cookie named like the prefixed cookies', { cookiePrefix: 'EDGE-', targetGroups: [{ name: 'g', stickiness: { type: 'app_cookie', cookieName: 'EDGE-AWSALBAPP-0' } }] }, 'targetGroups[0].stickiness.cookieName must be a name not starting with EDGE-AWSALB, EDGE-AWSALBAPP or EDGE-AWSALBTG (the gateway\'s own cookies; ALB refuses them too), received "EDGE-AWSALBAPP-0"'],
  ['cookieName with lb_cookie', { targetGroups: [{ name: 'g', stickiness: { cookieName: 'sid' } }] }, "targetGroups[0].stickiness.cookieName must be absent unless type is 'app_cookie', received \"sid\""],
  ['bindToCookieValue not boolean', { targetGroups: [{ name: 'g', stickiness: { type: 'app_cookie', cookieName: 'sid', bindToCookieValue: 'yes' } }] }, 'targetGroups[0].stickiness.bindToCookieValue must be a boolean, received "yes"'],
  ['app duration over 7 days', { targetGroups: [{ name: 'g', stickiness: { type: 'app_cookie', cookieName: 'sid', durationSeconds: 604801 } }] }, 'targetGroups[0].stickiness.durationSeconds must be an integer from 1 to 604800, received 604801'],
  ['cookiePrefix with a space', { cookiePrefix: 'a b', targetGroups: [group] }, 'cookiePrefix must be a string of 0 to 32 characters from A-Z a-z 0-9 _ -, received "a b"'],
  ['cookiePrefix too long', { cookiePrefix: 'x'.repeat(33), targetGroups: [group] }, `cookiePrefix must be a string of 0 to 32 characters from A-Z a-z 0-9 _ -, received "${'x'.repeat(33)}"`],
  // Listeners, rules, weighted forwards and group stickiness (issue 5)
  ['listeners not an array', { targetGroups: [group], listeners: {} }, 'listeners must be an array of listeners, received an object'],
  ['listener without a name', { targetGroups: [group], listeners: [{ default: 'g' }] }, 'listeners[0].name must be a string of 1 to 64 characters from A-Z a-z 0-9 . _ : -, received undefined'],
  ['two listeners of one name', { targetGroups: [group], listeners: [{ name: 'l', default: 'g' }, { name: 'l', default: 'g' }] }, 'listeners[1].name must be unique (listeners[0] has it too), received "l"'],
  ['listener without a default', { targetGroups: [group], listeners: [{ name: 'l' }] }, 'listeners[0].default must be a forward: the name of a target group, or { targetGroups, stickiness }, received undefined'],
  ['unknown listener option', { targetGroups: [group], listeners: [{ name: 'l', default: 'g', port: 80 }] }, 'listeners[0].port is not an option (known: name, rules, default)'],
  ['rule without priority', { targetGroups: [group], listeners: [{ name: 'l', default: 'g', rules: [{ conditions: { httpMethod: ['GET'] }, forward: 'g' }] }] }, 'listeners[0].rules[0].priority must be an integer from 1 to 50000, received undefined'],
  ['rule priority 0', { targetGroups: [group], listeners: [{ name: 'l', default: 'g', rules: [{ priority: 0, conditions: { httpMethod: ['GET'] }, forward: 'g' }] }] }, 'listeners[0].rules[0].priority must be an integer from 1 to 50000, received 0'],
  ['two rules of one priority', { targetGroups: [group], listeners: [{ name: 'l', default: 'g', rules: [{ priority: 5, conditions: { httpMethod: ['GET'] }, forward: 'g' }, { priority: 5, conditions: { httpMethod: ['PUT'] }, forward: 'g' }] }] }, 'listeners[0].rules[1].priority must be unique within the listener (rules[0] has it too), received 5'],
  ['rule without conditions', { targetGroups: [group], listeners: [{ name: 'l', default: 'g', rules: [{ priority: 1, conditions: {}, forward: 'g' }] }] }, 'listeners[0].rules[0].conditions must be an object with at least one condition (pathPattern, host, httpMethod, httpHeader, queryString, sourceIp), received an object'],
  ['rule forwarding to no group', { targetGroups: [group], listeners: [{ name: 'l', default: 'g', rules: [{ priority: 1, conditions: { httpMethod: ['GET'] }, forward: 'nope' }] }] }, 'listeners[0].rules[0].forward must be the name of a target group (g), received "nope"'],
  ['six weighted groups', { targetGroups: [group], listeners: [{ name: 'l', default: { targetGroups: Array.from({ length: 6 }, () => ({ name: 'g' })) } }] }, "listeners[0].default.targetGroups must be an array of 1 to 5 target groups (ALB's quota), received an array of 6"],
  ['weight over 999', { targetGroups: [group, { name: 'h' }], listeners: [{ name: 'l', default: { targetGroups: [{ name: 'g', weight: 1000 }, { name: 'h' }] } }] }, 'listeners[0].default.targetGroups[0].weight must be an integer from 0 to 999, received 1000'],
  ['every weight 0', { targetGroups: [group, { name: 'h' }], listeners: [{ name: 'l', default: { targetGroups: [{ name: 'g', weight: 0 }, { name: 'h', weight: 0 }] } }] }, 'listeners[0].default.targetGroups must be a forward with at least one weight above 0, received "weights 0, 0"'],
  ['a group twice in one forward', { targetGroups: [group], listeners: [{ name: 'l', default: { targetGroups: [{ name: 'g' }, { name: 'g' }] } }] }, 'listeners[0].default.targetGroups[1].name must be unique within the forward (targetGroups[0] has it too), received "g"'],
  ['app_cookie group in a weighted forward', { targetGroups: [{ name: 'g', stickiness: false }, { name: 'app', stickiness: { type: 'app_cookie', cookieName: 'sid' } }], listeners: [{ name: 'l', default: { targetGroups: [{ name: 'g' }, { name: 'app' }], stickiness: { durationSeconds: 60 } } }] }, 'listeners[0].default.targetGroups[1].name must be a target group without app_cookie stickiness (ALB: application-based stickiness does not work with weighted target groups), received "app"'],
  ['target stickiness without group stickiness', { targetGroups: [{ name: 'g', stickiness: false }, { name: 'h' }], listeners: [{ name: 'l', default: { targetGroups: [{ name: 'g' }, { name: 'h' }] } }] }, 'listeners[0].default.stickiness must be { durationSeconds } (group stickiness) because target group \'h\' is sticky; ALB: "You must enable group stickiness on a rule if you enabled target stickiness on one of its target groups", received undefined'],
  ['group stickiness turned off beside a sticky group', { targetGroups: [{ name: 'g' }, { name: 'h' }], listeners: [{ name: 'l', default: { targetGroups: [{ name: 'g' }, { name: 'h' }], stickiness: { enabled: false, durationSeconds: 60 } } }] }, 'listeners[0].default.stickiness must be { durationSeconds } (group stickiness) because target group \'g\' is sticky; ALB: "You must enable group stickiness on a rule if you enabled target stickiness on one of its target groups", received an object'],
  ['group stickiness without a duration', { targetGroups: [group, { name: 'h' }], listeners: [{ name: 'l', default: { targetGroups: [{ name: 'g' }, { name: 'h' }], stickiness: {} } }] }, 'listeners[0].default.stickiness.durationSeconds must be an integer from 1 to 604800 (required with group stickiness), received undefined'],
  ['group stickiness on one group', { targetGroups: [group], listeners: [{ name: 'l', default: { targetGroups: [{ name: 'g' }], stickiness: { durationSeconds: 60 } } }] }, 'listeners[0].default.stickiness must be false or absent for a forward to one target group (group stickiness chooses between groups), received an object'],
]

test('every option mistake throws FST_STICKY_OPTION_INVALID with its exact message', async (t) => {
  for (const [what, raw, message] of cases) {
    // Caught and compared whole: t.throws would accept a message that only contains the text.
    let error: { code?: string, message?: string } | undefined
    try {
      resolveOptions(raw)
    } catch (err) {
      error = err as typeof error
    }
    t.equal(error?.code, 'FST_STICKY_OPTION_INVALID', `${what}: code`)
    t.equal(error?.message, `Invalid fastify-sticky option: ${message}`, `${what}: message`)
  }
})

test('a mistake fails the registration of the plugin itself', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'g', stickiness: { durationSeconds: -1 } }] })
  await t.rejects(async () => await app.ready(), {
    code: 'FST_STICKY_OPTION_INVALID',
    statusCode: 500,
    message: 'Invalid fastify-sticky option: targetGroups[0].stickiness.durationSeconds must be an integer from 1 to 604800, received -1'
  })
})

test('defaults are ALB’s, and accepted keys come in every documented form', async (t) => {
  const resolved = resolveOptions({ targetGroups: [{ name: 'g', targets: [target] }] })
  t.same(resolved.targetGroups[0], {
    name: 'g',
    algorithm: 'round_robin',
    stickiness: { type: 'lb_cookie', durationSeconds: 86400, chain: [{ type: 'lb_cookie' }] },
    targets: [{ id: 'a', origin: 'http://127.0.0.1:3001', weight: 1 }],
    healthCheck: null,
    minimumHealthyTargets: { count: 1 },
    failOpen: true,
    deregistrationDelayMs: 300_000,
    drainingKeepsSessions: true,
    slowStartMs: 0,
    outlierDetection: { consecutiveErrors: Infinity, consecutiveGatewayErrors: 5, baseEjectionMs: 30_000, maxEjectionMs: 300_000, maxEjectedPercent: 10, keepSessions: false },
    boundedLoadFactor: 0,
    websocket: { maxConnectionsPerTarget: Infinity, handshakeTimeoutMs: 10_000, idleTimeoutMs: 0, closeOnUnhealthy: false },
    tls: null,
    discovery: null
  }, 'passive checks on by default for gateway failures only (Envoy’s consecutive_gateway_failure)')
  const [passive] = resolveOptions({ targetGroups: [{ name: 'g', outlierDetection: {}, slowStartMs: 30_000 }] }).targetGroups
  t.same(passive.outlierDetection, { consecutiveErrors: 5, consecutiveGatewayErrors: 5, baseEjectionMs: 30_000, maxEjectionMs: 300_000, maxEjectedPercent: 10, keepSessions: false }, 'passive checks given: Envoy’s defaults, 5xx counted too')
  t.equal(resolveOptions({ targetGroups: [{ name: 'g', outlierDetection: { consecutiveErrors: 0, consecutiveGatewayErrors: 0 } }] }).targetGroups[0].outlierDetection, null, 'both counts 0: off')
  t.same(resolveOptions({ targetGroups: [{ name: 'g', outlierDetection: { consecutiveErrors: 3, consecutiveGatewayErrors: 0 } }] }).targetGroups[0].outlierDetection?.consecutiveGatewayErrors, Infinity, 'gateway count 0: not counted apart')
  t.equal(resolved.redispatchIdempotent, true)
  t.equal(resolved.requestBufferBytes, 16_384, 'nginx’s client_body_buffer_size on 64-bit')
  t.equal(resolved.clientBodyTimeoutMs, 60_000, 'nginx’s client_body_timeout')
  t.equal(passive.slowStartMs, 30_000)
  t.equal(resolveOptions({ targetGroups: [{ name: 'g', outlierDetection: false }] }).targetGroups[0].outlierDetection, null, 'false: off')
  t.equal(resolveOptions({ targetGroups: [{ name: 'g', outlierDetection: { baseEjectionMs: 600_000 } }] }).targetGroups[0].outlierDetection?.maxEjectionMs, 600_000, 'the longest ejection is never below the first')
  t.equal(resolved.idleTimeoutMs, 60000)
  t.equal(resolved.connectTimeoutMs, 10000)
  t.equal(resolved.redispatch, true)
  t.equal(resolved.xForwardedFor, 'append')
  t.equal(resolved.trustedProxies, null, 'no peer is trusted')
  t.equal(resolved.forwardStickyCookies, false, 'the gateway’s cookies stay at the gateway')
  t.equal(resolved.exposeDecision, null, 'no decision header unless asked')
  t.equal(resolveOptions({ targetGroups: [group], exposeDecision: true }).exposeDecision, 'x-sticky-decision')
  t.equal(resolveOptions({ targetGroups: [group], exposeDecision: 'X-Route' }).exposeDecision, 'x-route', 'a name is lower-cased')
  t.same(resolved.handoffHeaders, { previousTarget: 'x-sticky-previous-target', reason: 'x-sticky-handoff-reason' }, 'hand-off headers on by default')
  t.equal(resolveOptions({ targetGroups: [group], handoffHeaders: false }).handoffHeaders, null)
  t.same(resolveOptions({ targetGroups: [group], handoffHeaders: { reason: 'X-Why' } }).handoffHeaders, { previousTarget: 'x-sticky-previous-target', reason: 'x-why' })
  for (const [form, trustedProxies] of [['true', true], ['a string', '10.0.0.0/8, ::1, loopback'], ['an array', ['fd00::/8', '192.168.0.0/255.255.0.0']]] as const) {
    const trust = resolveOptions({ targetGroups: [group], trustedProxies }).trustedProxies
    t.equal(typeof trust, 'function', `${form} compiles to a function`)
  }
  t.equal(resolveOptions({ targetGroups: [group], trustedProxies: false }).trustedProxies, null, 'false: nobody')
  t.equal(resolveOptions({ targetGroups: [group], trustedProxies: [] }).trustedProxies, null, 'an empty array: nobody')
  t.equal(resolved.connectionsPerTarget, 128)
  t.equal(resolved.cookieClockSkewSeconds, 5)
  t.equal(resolved.cookieSecure, false, 'ALB’s output: no Secure on AWSALB')
  t.equal(resolved.cookieHttpOnly, false, 'ALB’s output: no HttpOnly')
  t.equal(resolved.corsCookies, 'auto', 'the CORS twins where a client keeps them')
  t.equal(resolveOptions({ targetGroups: [{ name: 'g', targets: [target] }], corsCookies: 'always' }).corsCookies, 'always', "ALB's twins on every response, when asked")
  t.equal(resolveOptions({ targetGroups: [{ name: 'g', targets: [target] }], cookiePrefix: '__Host-', cookieSecure: true }).cookiePrefix, '__Host-', 'a __Host- prefix with Secure is accepted')
  t.equal(resolved.keysGenerated, true, 'no keys: a random one is made')
  t.equal(resolved.keys[0].length, 32)
  t.ok(Object.isFrozen(resolved) && Object.isFrozen(resolved.targetGroups[0]), 'resolved options are frozen')

  const key = Buffer.alloc(32, 7)
  const forms = [key, key.toString('hex'), key.toString('base64'), key.toString('base64url')]
  const ring = resolveOptions({ targetGroups: [group], keys: forms }).keys
  t.ok(ring.every((k) => k.equals(key)), 'Buffer, hex, base64 and base64url name the same key')

  t.equal(resolveOptions({ targetGroups: [{ name: 'g', stickiness: false }] }).targetGroups[0].stickiness, null, 'stickiness: false')
  t.equal(resolveOptions({ targetGroups: [{ name: 'g', stickiness: { enabled: false } }] }).targetGroups[0].stickiness, null, 'enabled: false')
  t.same(resolveOptions({ targetGroups: [{ name: 'g', algorithm: 'weighted_random', stickiness: false }] }).targetGroups[0].algorithm, 'weighted_random')
})

test('route config mistakes fail when the route is added, naming the route', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [group, { name: 'random', algorithm: 'weighted_random', stickiness: false }] } satisfies FastifyStickyOptions)
  t.throws(() => app.get('/nope', { config: { targetGroup: 'missing' } }, (_req, reply) => reply.forward()), {
    code: 'FST_STICKY_TARGET_GROUP_UNKNOWN',
    message: "Route GET /nope: config.targetGroup names no target group, received 'missing'"
  })
  t.throws(() => app.get('/random', { config: { targetGroup: 'random', stickiness: { durationSeconds: 60 } } }, (_req, reply) => reply.forward()), {
    code: 'FST_STICKY_OPTION_INVALID',
    message: "Invalid fastify-sticky option: route GET /random: config.stickiness must be false: target group 'random' uses weighted_random, which ALB does not combine with stickiness, received an object"
  })
  t.throws(() => app.get('/short', { config: { targetGroup: 'g', stickiness: { durationSeconds: 0 } } }, (_req, reply) => reply.forward()), {
    code: 'FST_STICKY_OPTION_INVALID',
    message: 'Invalid fastify-sticky option: route GET /short: config.stickiness.durationSeconds must be an integer from 1 to 604800, received 0'
  })
  t.throws(() => app.get('/both', { config: { targetGroup: 'g', listener: 'web' } }, (_req, reply) => reply.forward()), {
    code: 'FST_STICKY_OPTION_INVALID',
    message: "Invalid fastify-sticky option: route GET /both: config.listener must be given without config.targetGroup and config.stickiness (the listener's rules choose both), received \"web\""
  })
  t.throws(() => app.get('/listener', { config: { listener: 'nope' } }, (_req, reply) => reply.forward()), {
    code: 'FST_STICKY_OPTION_INVALID',
    message: 'Invalid fastify-sticky option: route GET /listener: config.listener must be the name of a listener (), received "nope"'
  })
  t.throws(() => app.get('/app', { config: { targetGroup: 'g', stickiness: { type: 'app_cookie', cookieName: 'AWSALBAPP-0' } } }, (_req, reply) => reply.forward()), {
    code: 'FST_STICKY_OPTION_INVALID',
    message: "Invalid fastify-sticky option: route GET /app: config.stickiness.cookieName must be a name not starting with AWSALB, AWSALBAPP or AWSALBTG (the gateway's own cookies; ALB refuses them too), received \"AWSALBAPP-0\""
  })
  t.throws(() => app.post('/idem', { config: { targetGroup: 'g', idempotent: 'yes' as unknown as boolean } }, (_req, reply) => reply.forward()), {
    code: 'FST_STICKY_OPTION_INVALID',
    message: 'Invalid fastify-sticky option: route POST /idem: config.idempotent must be a boolean, received "yes"'
  })
})

test('stickyProxy options are checked at registration', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [group] })
  app.register(stickyProxy, { prefix: '/p', targetGroup: 'missing' })
  await t.rejects(async () => await app.ready(), { code: 'FST_STICKY_OPTION_INVALID', message: 'Invalid fastify-sticky option: stickyProxy targetGroup must be the name of a target group (g), received "missing"' })

  const bare = Fastify()
  t.teardown(() => bare.close())
  bare.register(stickyProxy, { prefix: '/p', targetGroup: 'g' })
  await t.rejects(async () => await bare.ready(), { code: 'FST_STICKY_OPTION_INVALID', message: 'Invalid fastify-sticky option: stickyProxy must be registered after the fastify-sticky plugin, received "no reply.forward decorator"' })
})

test('registering a target at run time checks it like the options', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [group] })
  const g = app.targetGroups.get('g')!
  t.throws(() => g.register({ id: 'b', url: 'http://127.0.0.1:1/x' }), {
    code: 'FST_STICKY_OPTION_INVALID',
    message: "Invalid fastify-sticky option: targetGroups.get('g').register(target).url must be an http: or https: origin such as http://127.0.0.1:3001 (no path, query or credentials), received \"http://127.0.0.1:1/x\""
  })
  t.throws(() => g.register({ id: 'a', url: 'http://127.0.0.1:2' }), { code: 'FST_STICKY_TARGET_DUPLICATE', message: "Target group 'g' already has a target with id 'a'" })
})

test('without keys, a random key is used and a warning says what that costs', async (t) => {
  const lines: Array<{ level: number, msg: string }> = []
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } })
  t.teardown(() => app.close())
  await app.register(fastifySticky, { targetGroups: [group] })
  t.match(lines, [{ level: 40, msg: /no keys given.*will not survive a restart or be shared between gateway instances/ }])
  const withKeys = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } } })
  t.teardown(() => withKeys.close())
  await withKeys.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [group] })
  t.equal(lines.length, 1, 'no warning when keys are given')
})

test('health checks: ALB’s defaults, and millisecond intervals only when asked for (tests)', async (t) => {
  const [group] = resolveOptions({ targetGroups: [{ name: 'g', healthCheck: {} }] }).targetGroups
  t.same(group.healthCheck, { path: '/', port: null, intervalMs: 30_000, timeoutMs: 5000, healthyThreshold: 5, unhealthyThreshold: 2, matcher: [[200, 200]], initialState: 'initial' })
  const [custom] = resolveOptions({ targetGroups: [{ name: 'g', healthCheck: { path: '/health?deep=1', port: 8081, matcher: '200-299,302', initialState: 'healthy', intervalMs: 50, timeoutMs: 20, allowShortIntervals: true } }] }).targetGroups
  t.same(custom.healthCheck, { path: '/health?deep=1', port: 8081, intervalMs: 50, timeoutMs: 20, healthyThreshold: 5, unhealthyThreshold: 2, matcher: [[200, 299], [302, 302]], initialState: 'healthy' })
})

test('tls mistakes throw with their exact message, which never shows a key or a certificate', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fastify-sticky-options-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const notPem = join(dir, 'not.pem')
  writeFileSync(notPem, 'hello')
  const missing = join(dir, 'missing.pem')
  const https = { id: 'a', url: 'https://127.0.0.1:3001' }
  const withTls = (tls: unknown): unknown => ({ targetGroups: [{ name: 'g', targets: [https], tls }] })
  const certificates = 'must be PEM certificates (-----BEGIN CERTIFICATE----- blocks), received'
  const lines = testCa.trimEnd().split('\n')
  const cutShort = [...lines.slice(0, 2), ...lines.slice(3)].join('\n')
  const tlsCases: Array<[string, unknown, string]> = [
    ['tls not an object', withTls(true), 'targetGroups[0].tls must be an object, received true'],
    ['unknown tls option', withTls({ ciphers: 'x' }), 'targetGroups[0].tls.ciphers is not an option (known: ca, cert, key, servername, rejectUnauthorized, minVersion)'],
    ['ca a number', withTls({ ca: 42 }), 'targetGroups[0].tls.ca must be PEM text (a string or Buffer) or the path of a PEM file, or an array of them, received 42'],
    ['ca an empty list', withTls({ ca: [] }), 'targetGroups[0].tls.ca must be PEM text (a string or Buffer) or the path of a PEM file, or an array of them, received an array of 0'],
    ['ca a missing file', withTls({ ca: missing }), `targetGroups[0].tls.ca must be PEM text or the path of a readable file, received ${JSON.stringify(missing)} (ENOENT)`],
    ['ca[1] neither PEM nor a file', withTls({ ca: [testCa, 'not-a-file'] }), 'targetGroups[0].tls.ca[1] must be PEM text or the path of a readable file, received "not-a-file" (ENOENT)'],
    ['ca a file that is not PEM', withTls({ ca: notPem }), `targetGroups[0].tls.ca ${certificates} the file ${JSON.stringify(notPem)}, holding no PEM block`],
    ['ca a private key', withTls({ ca: clientCert.key }), `targetGroups[0].tls.ca ${certificates} a string of ${clientCert.key.length} characters holding PEM blocks of type PRIVATE KEY`],
    ['ca a certificate cut short', withTls({ ca: cutShort }), `targetGroups[0].tls.ca ${certificates} a string of ${cutShort.length} characters holding PEM blocks of type CERTIFICATE`],
    ['cert a Buffer that is not PEM', withTls({ cert: Buffer.from('x'), key: clientCert.key }), `targetGroups[0].tls.cert ${certificates} a Buffer of 1 bytes holding no PEM block`],
    ['cert without key', withTls({ cert: clientCert.cert }), 'targetGroups[0].tls.key must be given with targetGroups[0].tls.cert (a client certificate needs its key), received undefined'],
    ['key without cert', withTls({ key: clientCert.key }), 'targetGroups[0].tls.cert must be given with targetGroups[0].tls.key (a client certificate needs its key), received undefined'],
    ['key a certificate', withTls({ cert: clientCert.cert, key: clientCert.cert }), `targetGroups[0].tls.key must be an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----), received a string of ${clientCert.cert.length} characters holding PEM blocks of type CERTIFICATE`],
    ['key a missing file (shown by its length: it may be a key)', withTls({ cert: clientCert.cert, key: missing }), `targetGroups[0].tls.key must be PEM text or the path of a readable file, received a string of ${missing.length} characters (ENOENT)`],
    ['key of another certificate', withTls({ cert: clientCert.cert, key: localhostCert.key }), 'targetGroups[0].tls.key must be the private key of targetGroups[0].tls.cert, received the key of another certificate'],
    ['servername an IP address', withTls({ servername: '10.0.0.1' }), 'targetGroups[0].tls.servername must be a host name such as api.internal (letters, digits, - and ., not an IP address), received "10.0.0.1"'],
    ['servername with a port', withTls({ servername: 'api.internal:443' }), 'targetGroups[0].tls.servername must be a host name such as api.internal (letters, digits, - and ., not an IP address), received "api.internal:443"'],
    ['rejectUnauthorized a string', withTls({ rejectUnauthorized: 'false' }), 'targetGroups[0].tls.rejectUnauthorized must be a boolean, received "false"'],
    ['minVersion TLSv1.1', withTls({ minVersion: 'TLSv1.1' }), 'targetGroups[0].tls.minVersion must be one of TLSv1.2, TLSv1.3, received "TLSv1.1"'],
    ['an http target in a group with tls', { targetGroups: [{ name: 'g', targets: [https, { id: 'b', url: 'http://127.0.0.1:3002' }], tls: {} }] }, 'targetGroups[0].targets[1].url must be an https: origin (the target group has tls options), received "http://127.0.0.1:3002"']
  ]
  const secret = /MIG|MII/ // the base64 of any key or certificate of test/fixtures/tls
  for (const [what, raw, message] of tlsCases) {
    let error: { code?: string, message?: string } | undefined
    try {
      resolveOptions(raw)
    } catch (err) {
      error = err as typeof error
    }
    t.equal(error?.code, 'FST_STICKY_OPTION_INVALID', `${what}: code`)
    t.equal(error?.message, `Invalid fastify-sticky option: ${message}`, `${what}: message`)
    t.notMatch(error?.message ?? '', secret, `${what}: no PEM text in the message`)
  }
})

test('tls: defaults, every form of a certificate read to PEM text, and run-time targets held to https', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fastify-sticky-options-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const caFile = join(dir, 'ca.pem')
  writeFileSync(caFile, testCa)
  const https = { id: 'a', url: 'https://127.0.0.1:3001' }
  const [none] = resolveOptions({ targetGroups: [{ name: 'g', targets: [https] }] }).targetGroups
  t.equal(none.tls, null, 'no tls: null (Node\'s defaults for https targets)')
  const [empty] = resolveOptions({ targetGroups: [{ name: 'g', targets: [https], tls: {} }] }).targetGroups
  t.same(empty.tls, { ca: null, cert: null, key: null, servername: null, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, 'the defaults')
  const [full] = resolveOptions({
    targetGroups: [{ name: 'g', targets: [https], tls: { ca: [caFile, Buffer.from(testCa)], cert: Buffer.from(clientCert.cert), key: clientCert.key, servername: 'api.internal', rejectUnauthorized: false, minVersion: 'TLSv1.3' } }]
  }).targetGroups
  t.same(full.tls, { ca: [testCa, testCa], cert: clientCert.cert, key: clientCert.key, servername: 'api.internal', rejectUnauthorized: false, minVersion: 'TLSv1.3' }, 'files and Buffers read to PEM text')
  t.ok(Object.isFrozen(full.tls) && Object.isFrozen(full.tls?.ca), 'frozen')

  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySticky, { keys: [TEST_KEY], targetGroups: [{ name: 'g', tls: { ca: testCa } }] })
  const g = app.targetGroups.get('g')!
  t.throws(() => g.register({ id: 'b', url: 'http://127.0.0.1:3002' }), {
    code: 'FST_STICKY_OPTION_INVALID',
    message: "Invalid fastify-sticky option: targetGroups.get('g').register(target).url must be an https: origin (the target group has tls options), received \"http://127.0.0.1:3002\""
  })
  t.same(g.register({ id: 'c', url: 'https://127.0.0.1:3003' }), { id: 'c', origin: 'https://127.0.0.1:3003' }, 'an https target is taken')
})
