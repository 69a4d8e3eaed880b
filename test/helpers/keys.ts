import { generatePrivateKey, publicKeyFromPrivate } from '../../src/config/keys.js'

export function keyPair() {
  const sk = generatePrivateKey()
  return { sk, pk: publicKeyFromPrivate(sk), skB64: sk.toString('base64'), pkB64: publicKeyFromPrivate(sk).toString('base64') }
}
