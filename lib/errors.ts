import createError from '@fastify/error'

/** A plugin, route or target option is wrong; the message names the option path, what was expected and what came. */
export const FST_STICKY_OPTION_INVALID = createError<[string]>(
  'FST_STICKY_OPTION_INVALID', 'Invalid fastify-sticky option: %s', 500, TypeError)

/** A route's `config.targetGroup` names no registered target group. */
export const FST_STICKY_TARGET_GROUP_UNKNOWN = createError<[string, string]>(
  'FST_STICKY_TARGET_GROUP_UNKNOWN', "Route %s: config.targetGroup names no target group, received '%s'", 500, TypeError)

/** `register()` was given a target id that the group already has. */
export const FST_STICKY_TARGET_DUPLICATE = createError<[string, string]>(
  'FST_STICKY_TARGET_DUPLICATE', "Target group '%s' already has a target with id '%s'", 500, TypeError)

/** `register()` was given the id of a target that is still draining. */
export const FST_STICKY_TARGET_DRAINING = createError<[string, string]>(
  'FST_STICKY_TARGET_DRAINING', "Target group '%s' is still draining target '%s': register it again once its deregister() has resolved", 500, TypeError)

/** `register()` was called on a target group whose app has closed (its pools are gone). */
export const FST_STICKY_TARGET_GROUP_CLOSED = createError<[string]>(
  'FST_STICKY_TARGET_GROUP_CLOSED', "Target group '%s' is closed: its app has closed", 500)

/** `reply.forward()` was called on a route that is not bound to a target group. */
export const FST_STICKY_ROUTE_UNBOUND = createError<[string]>(
  'FST_STICKY_ROUTE_UNBOUND', 'reply.forward() called on route %s, which has no config.targetGroup', 500)

/** The target group has no target to send the request to: none registered, or none healthy with `failOpen: false` (ALB: 503). */
export const FST_STICKY_TARGET_GROUP_UNAVAILABLE = createError<[string]>(
  'FST_STICKY_TARGET_GROUP_UNAVAILABLE', "Target group '%s' has no routable target", 503)

/**
 * Request-time errors below become the JSON body of the gateway's reply, so their messages
 * name no target id or address.
 */

/** The target refused, reset or closed the connection before a response (ALB: 502). */
export const FST_STICKY_TARGET_CONNECTION_FAILED = createError(
  'FST_STICKY_TARGET_CONNECTION_FAILED', 'The target refused, reset or closed the connection', 502)

/**
 * The TLS handshake with an https target failed: its certificate not trusted, expired or for
 * another name, no TLS version in common, or a client certificate wanted or refused (ALB: 502).
 */
export const FST_STICKY_TARGET_TLS_FAILED = createError(
  'FST_STICKY_TARGET_TLS_FAILED', 'The TLS handshake with the target failed', 502)

/** The target was deregistered and its deregistration delay ended before it answered (ALB: 502). */
export const FST_STICKY_TARGET_DEREGISTERED = createError(
  'FST_STICKY_TARGET_DEREGISTERED', 'The target was deregistered and its deregistration delay ended before the response did', 502)

/** The target's response could not be parsed: bad status line, bad or oversized headers (ALB: 502). */
export const FST_STICKY_TARGET_RESPONSE_INVALID = createError(
  'FST_STICKY_TARGET_RESPONSE_INVALID', 'The target sent a malformed response', 502)

/** No connection to the target within the connect timeout (ALB: 504). */
export const FST_STICKY_TARGET_CONNECT_TIMEOUT = createError<[number]>(
  'FST_STICKY_TARGET_CONNECT_TIMEOUT', 'The target accepted no connection within %dms', 504)

/** The target sent no response within the idle timeout (ALB: 504). */
export const FST_STICKY_TARGET_TIMEOUT = createError<[number]>(
  'FST_STICKY_TARGET_TIMEOUT', 'The target sent no response within %dms', 504)

/** The request's X-Forwarded-For carries more than 30 addresses (ALB: 463). */
export const FST_STICKY_FORWARDED_FOR_TOO_LONG = createError<[number]>(
  'FST_STICKY_FORWARDED_FOR_TOO_LONG', 'X-Forwarded-For carries more than %d addresses', 463)

/** The request cannot be forwarded as it is (undici refused its headers or body framing). */
export const FST_STICKY_REQUEST_INVALID = createError(
  'FST_STICKY_REQUEST_INVALID', 'The request cannot be forwarded as sent', 400)

/** A path under a `stickyProxy` prefix (or given to `reply.from()` of the @fastify/http-proxy entry) would leave its origin or climb out of its rewritten prefix; the message is @fastify/http-proxy's. */
export const FST_STICKY_PATH_ESCAPES_PREFIX = createError(
  'FST_STICKY_PATH_ESCAPES_PREFIX', 'source/request contain invalid characters', 400)

/** A CONNECT request: the gateway opens no tunnels (405, with `Allow`). */
export const FST_STICKY_METHOD_NOT_ALLOWED = createError<[string]>(
  'FST_STICKY_METHOD_NOT_ALLOWED', 'The gateway does not serve %s requests', 405)

/** The request body did not arrive within `clientBodyTimeoutMs` (nginx's 408). */
export const FST_STICKY_REQUEST_TIMEOUT = createError<[number]>(
  'FST_STICKY_REQUEST_TIMEOUT', 'The request body did not arrive within %dms', 408)

/** An upgrade to WebSocket on a route whose `config.websocket` is not true (400). */
export const FST_STICKY_WEBSOCKET_NOT_ALLOWED = createError(
  'FST_STICKY_WEBSOCKET_NOT_ALLOWED', 'This route does not accept WebSocket upgrades', 400)

/** A WebSocket upgrade without a valid handshake: not GET, a body, or a missing or malformed Sec-WebSocket-Key (RFC 6455 §4.2.1: 400). */
export const FST_STICKY_WEBSOCKET_HANDSHAKE_INVALID = createError(
  'FST_STICKY_WEBSOCKET_HANDSHAKE_INVALID', 'The WebSocket handshake is invalid', 400)

/** A WebSocket upgrade with a Sec-WebSocket-Version other than 13 (RFC 6455 §4.4: 426, with `Sec-WebSocket-Version: 13`). */
export const FST_STICKY_WEBSOCKET_VERSION_UNSUPPORTED = createError(
  'FST_STICKY_WEBSOCKET_VERSION_UNSUPPORTED', 'Only WebSocket version 13 is supported', 426)

/** The affinity's target already has `websocket.maxConnectionsPerTarget` open WebSockets (503). */
export const FST_STICKY_TARGET_WEBSOCKET_LIMIT = createError<[number]>(
  'FST_STICKY_TARGET_WEBSOCKET_LIMIT', 'The target already has %d open WebSockets', 503)

/** An admin API request without the bearer token (or the dashboard's cookie), or with a wrong one (401). */
export const FST_STICKY_ADMIN_UNAUTHORIZED = createError(
  'FST_STICKY_ADMIN_UNAUTHORIZED', 'The admin API needs its bearer token', 401)

/** An admin API request from an address outside the admin plugin's `allow` (403). */
export const FST_STICKY_ADMIN_FORBIDDEN = createError(
  'FST_STICKY_ADMIN_FORBIDDEN', 'The admin API does not answer this address', 403)

/** An admin API request naming a target group the gateway does not have (404). */
export const FST_STICKY_ADMIN_TARGET_GROUP_NOT_FOUND = createError<[string]>(
  'FST_STICKY_ADMIN_TARGET_GROUP_NOT_FOUND', "No target group '%s'", 404)

/** An admin API request naming a target its group does not have registered (404). */
export const FST_STICKY_ADMIN_TARGET_NOT_FOUND = createError<[string, string]>(
  'FST_STICKY_ADMIN_TARGET_NOT_FOUND', "Target group '%s' has no registered target '%s'", 404)

/** An admin API registration of an id the group already has, registered or still draining (409). */
export const FST_STICKY_ADMIN_TARGET_CONFLICT = createError<[string]>(
  'FST_STICKY_ADMIN_TARGET_CONFLICT', '%s', 409)

/** An admin API registration the group refuses: a bad URL, an http target in an https group (400). */
export const FST_STICKY_ADMIN_REQUEST_INVALID = createError<[string]>(
  'FST_STICKY_ADMIN_REQUEST_INVALID', '%s', 400)
