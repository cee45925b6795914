import { readFileSync } from 'node:fs'

/** The test certificates of test/fixtures/tls (made by its make.sh): PEM text, read once. */
function read (name: string): string {
  return readFileSync(new URL(`./fixtures/tls/${name}.pem`, import.meta.url), 'utf8')
}

/** A private CA, and the certificate it signs for localhost, 127.0.0.1, ::1 and *.example.test. */
export const testCa = read('ca')
export const localhostCert = { cert: read('localhost'), key: read('localhost-key') }
/** Signed by the same CA, for the name wrong.invalid only. */
export const wrongNameCert = { cert: read('wrong-name'), key: read('wrong-name-key') }
/** A self-signed certificate for localhost and 127.0.0.1. */
export const selfSignedCert = { cert: read('self-signed'), key: read('self-signed-key') }
/** A client certificate signed by the CA, for mutual TLS. */
export const clientCert = { cert: read('client'), key: read('client-key') }
