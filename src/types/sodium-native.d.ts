// The subset of sodium-native 4.x that the agent uses (the package ships no types).
declare module 'sodium-native' {
  type B = Uint8Array
  const sodium: {
    randombytes_buf(buf: B): void
    randombytes_uniform(upper: number): number
    crypto_scalarmult_base(q: B, n: B): void
    crypto_scalarmult(q: B, n: B, p: B): void
    crypto_aead_chacha20poly1305_ietf_encrypt(c: B, m: B, ad: B | null, nsec: null, npub: B, k: B): number
    crypto_aead_chacha20poly1305_ietf_decrypt(m: B, nsec: null, c: B, ad: B | null, npub: B, k: B): number
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(c: B, mac: B, m: B, ad: B | null, nsec: null, npub: B, k: B): number
    crypto_aead_chacha20poly1305_ietf_decrypt_detached(m: B, nsec: null, c: B, mac: B, ad: B | null, npub: B, k: B): void
    crypto_aead_xchacha20poly1305_ietf_encrypt(c: B, m: B, ad: B | null, nsec: null, npub: B, k: B): number
    crypto_aead_xchacha20poly1305_ietf_decrypt(m: B, nsec: null, c: B, ad: B | null, npub: B, k: B): number
    sodium_memzero(buf: B): void
    sodium_memcmp(a: B, b: B): boolean
    sodium_is_zero(buf: B): boolean
    crypto_aead_chacha20poly1305_ietf_ABYTES: number
  }
  export default sodium
}
