import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import type { Socket } from 'node:net'
import { buildConnector } from 'undici'
import { FST_STICKY_OPTION_INVALID } from './errors.js'
import type { TargetGroupTlsOptions } from './types.js'
import { describeValue, invalid, optionalBoolean, optionalChoice, refuseUnknownKeys, requireObject } from './validate.js'

/** A target group's TLS settings towards its `https://` targets, after defaults, certificates read. */
export interface ResolvedTls {
  /** PEM text of the CAs trusted instead of Node's public ones; null: the public ones. */
  readonly ca: readonly string[] | null
  /** Client certificate (PEM, leaf first) and its key, for targets that want one; both or neither. */
  readonly cert: string | null
  readonly key: string | null
  /** The name sent as SNI and checked in the target's certificate; null: the target URL's host name (none for an IP). */
  readonly servername: string | null
  readonly rejectUnauthorized: boolean
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3'
}

export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const
export const DEFAULT_TLS_MIN_VERSION = 'TLSv1.2'
const TLS_KEYS = ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized', 'minVersion']
const PEM_SOURCE = 'PEM text (a string or Buffer) or the path of a PEM file'
const CERTIFICATES = 'PEM certificates (-----BEGIN CERTIFICATE----- blocks)'
const PRIVATE_KEY = 'an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)'
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g
/** A DNS name of letters, digits and hyphens (RFC 1123 labels); SNI carries no IP address (RFC 6066 §3). */
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/

/**
 * Checks a target group's `tls` and reads its certificate files, once (at registration): the
 * targets' pools and health checks use the text read then, whatever happens to the files after.
 */
export function resolveTls (raw: unknown, path: string): ResolvedTls | null {
  if (raw === undefined) return null
  const tls = requireObject(raw, path) as Partial<TargetGroupTlsOptions>
  refuseUnknownKeys(tls, TLS_KEYS, `${path}.`)
  let ca: string[] | null = null
  if (tls.ca !== undefined) {
    const sources: unknown[] = Array.isArray(tls.ca) ? tls.ca : [tls.ca]
    if (sources.length === 0) invalid(`${path}.ca`, `${PEM_SOURCE}, or an array of them`, tls.ca)
    ca = sources.map((source, i) => readCertificates(source, Array.isArray(tls.ca) ? `${path}.ca[${i}]` : `${path}.ca`, true))
  }
  const cert = tls.cert === undefined ? null : readCertificates(tls.cert, `${path}.cert`, false)
  const key = tls.key === undefined ? null : readKey(tls.key, `${path}.key`)
  if (cert !== null && key === null) invalid(`${path}.key`, `given with ${path}.cert (a client certificate needs its key)`, undefined)
  if (key !== null && cert === null) invalid(`${path}.cert`, `given with ${path}.key (a client certificate needs its key)`, undefined)
  if (cert !== null && key !== null && !firstCertificate(cert).checkPrivateKey(key.object)) {
    throw new FST_STICKY_OPTION_INVALID(`${path}.key must be the private key of ${path}.cert, received the key of another certificate`)
  }
  const servername = tls.servername ?? null
  if (servername !== null && (typeof servername !== 'string' || !HOST_NAME.test(servername) || isIP(servername) !== 0)) {
    invalid(`${path}.servername`, 'a host name such as api.internal (letters, digits, - and ., not an IP address)', servername)
  }
  const rejectUnauthorized = optionalBoolean(tls.rejectUnauthorized, `${path}.rejectUnauthorized`, true)
  const minVersion = optionalChoice(tls.minVersion, `${path}.minVersion`, TLS_VERSIONS, DEFAULT_TLS_MIN_VERSION)
  return Object.freeze({ ca: ca === null ? null : Object.freeze(ca), cert, key: key?.text ?? null, servername, rejectUnauthorized, minVersion })
}

/** A group with `tls` takes `https://` targets only: an `http://` one would go in clear text, its TLS settings unused. */
export function requireHttpsTarget (origin: string, path: string): void {
  if (!origin.startsWith('https:')) invalid(path, 'an https: origin (the target group has tls options)', origin)
}

/** PEM text as given, or read from the file a string names. `secret`: the value is never shown in a message. */
function readPem (raw: unknown, path: string, expected: string, secret: boolean): string {
  if (Buffer.isBuffer(raw)) return raw.toString('utf8')
  if (typeof raw !== 'string' || raw === '') invalid(path, expected, raw, secret)
  if (raw.includes('-----BEGIN ')) return raw
  try {
    return readFileSync(raw, 'utf8')
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'unreadable'
    throw new FST_STICKY_OPTION_INVALID(`${path} must be PEM text or the path of a readable file, received ${describeValue(raw, secret)} (${code})`)
  }
}

/** One or more certificates, each parsed, so a truncated or foreign file fails the registration, not the first request. */
function readCertificates (raw: unknown, path: string, list: boolean): string {
  const text = readPem(raw, path, list ? `${PEM_SOURCE}, or an array of them` : PEM_SOURCE, false)
  const blocks = text.match(PEM_BLOCK) ?? []
  const valid = blocks.length > 0 && blocks.every((block) => block.startsWith('-----BEGIN CERTIFICATE-----') && parsesAsCertificate(block))
  if (!valid) throw new FST_STICKY_OPTION_INVALID(`${path} must be ${CERTIFICATES}, received ${describeSource(raw, text)}`)
  return text
}

/** The client certificate's key, parsed: a value from a file is shown by the file's name, any other never. */
function readKey (raw: unknown, path: string): { text: string, object: KeyObject } {
  const text = readPem(raw, path, PEM_SOURCE, true)
  try {
    if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) throw new Error('no private key block')
    return { text, object: createPrivateKey(text) }
  } catch {
    throw new FST_STICKY_OPTION_INVALID(`${path} must be ${PRIVATE_KEY}, received ${describeSource(raw, text)}`)
  }
}

function parsesAsCertificate (block: string): boolean {
  try {
    return new X509Certificate(block).raw.length > 0
  } catch {
    return false
  }
}

function firstCertificate (pem: string): X509Certificate {
  return new X509Certificate((pem.match(PEM_BLOCK) as string[])[0])
}

/**
 * What a message shows of a value that is not what was expected: the file it was read from, and
 * the kinds of PEM blocks it holds, never its text (a private key given in the wrong place).
 */
function describeSource (raw: unknown, text: string): string {
  const labels = [...text.matchAll(PEM_BLOCK)].map((block) => block[1])
  const held = labels.length === 0 ? 'no PEM block' : `PEM blocks of type ${[...new Set(labels)].join(', ')}`
  if (typeof raw === 'string' && raw !== text) return `the file ${JSON.stringify(raw)}, holding ${held}`
  return `${describeValue(raw, true)} holding ${held}`
}

/**
 * The undici `connect` option of an `https://` target's pools (traffic and health checks); undefined
 * for `http://`. The server name (SNI and the certificate's name check) is the group's
 * `servername`, else the target URL's host name (none for an IP address), never the client's
 * `Host`, which undici would use otherwise. A TLS alert that ends the connection after the
 * handshake (TLS 1.3: the target refused the client certificate) becomes the `cause` of the
 * closed-socket error undici reports in its place, so it is told from a reset.
 */
export function targetConnector (origin: string, tls: ResolvedTls | null, timeoutMs?: number): buildConnector.connector | undefined {
  if (!origin.startsWith('https:')) return undefined
  const connect = buildConnector({
    ...(tls === null
      ? {}
      : {
          ca: tls.ca === null ? undefined : [...tls.ca],
          cert: tls.cert ?? undefined,
          key: tls.key ?? undefined,
          rejectUnauthorized: tls.rejectUnauthorized,
          minVersion: tls.minVersion
        }),
    timeout: timeoutMs
  })
  const servername = tls?.servername ?? undefined
  return (options, callback) => connect({ ...options, servername }, (err, socket) => {
    if (err !== null) return callback(err, null)
    keepTlsAlert(socket)
    callback(null, socket)
  })
}

/** undici reports the alert as 'other side closed' (UND_ERR_SOCKET): the alert is made its cause. */
function keepTlsAlert (socket: Socket): void {
  let alert: Error | null = null
  socket.prependListener('error', (err: Error & { code?: string, cause?: unknown }) => {
    if (alert === null && isTlsFailure(err.code)) alert = err
    else if (alert !== null && err.code === 'UND_ERR_SOCKET' && err.cause === undefined) err.cause = alert
  })
}

/** Node's certificate verification codes (OpenSSL's X509_V_ERR_* names) that fail a connection. */
const CERTIFICATE_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_CRL', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE', 'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'CERT_SIGNATURE_FAILURE', 'CRL_SIGNATURE_FAILURE', 'CERT_NOT_YET_VALID', 'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID', 'CRL_HAS_EXPIRED', 'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD', 'ERROR_IN_CRL_NEXT_UPDATE_FIELD', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_CHAIN_TOO_LONG', 'CERT_REVOKED', 'INVALID_CA',
  'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'HOSTNAME_MISMATCH'
])

/**
 * Whether an error code is a failed TLS handshake with the target: its certificate not trusted,
 * expired or for another name (the codes above, ERR_TLS_CERT_ALTNAME_INVALID), or OpenSSL's
 * alerts and refusals (ERR_SSL_*: no common version, a client certificate wanted or refused,
 * a target that speaks no TLS).
 */
export function isTlsFailure (code: string | undefined): boolean {
  return code !== undefined && (CERTIFICATE_CODES.has(code) || code.startsWith('ERR_SSL_') || code === 'ERR_TLS_CERT_ALTNAME_INVALID')
}
