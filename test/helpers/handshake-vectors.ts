/**
 * Known-answer vectors for the WireGuard handshake, computed by an independent implementation.
 *
 * Produced once by `python3 test/helpers/wg-handshake-vectors.py` and pasted verbatim. That script is
 * written from the WireGuard whitepaper, not from our TypeScript, and uses other primitives than ours
 * (hashlib BLAKE2s/HMAC; X25519 and ChaCha20-Poly1305 from pyca/cryptography over OpenSSL; HChaCha20
 * from draft-irtf-cfrg-xchacha). Before printing it checks itself against published vectors:
 * cacophony's Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s vector and the XChaCha draft's HChaCha20 and AEAD
 * vectors. Run it again to regenerate them. Hex strings; indexes and the time (ms) are numbers.
 */
export const V = {
  initiatorStaticPrivate: '100e325155f353e2a6c83787bf2eacbd476a8ba394af9587d6fb6436dd02d668',
  initiatorStaticPublic: '892ef5e6c056d6746cfa8f7fcfdc3a0717306fdbadf80626938b22cb9a196142',
  responderStaticPrivate: 'e023afab9c18f42dc9d6f1454c27282cac9b9e73ca0bf2f24abfeed85996ac4e',
  responderStaticPublic: '58b3d4341f6a1a144546e15ea612a3707fba7ac9ab2581c52632adbc25b04d01',
  initiatorEphemeralPrivate: '2042d10bb09d0287da0ad50d7a77db330eff4cbd3774ae11f3858a0893cef279',
  initiatorEphemeralPublic: '08d2d04fb97022c66423b65b3e5a8a62b9fb6c073c48bb0e52d7738a8e886611',
  responderEphemeralPrivate: 'e8be048d0ceb69763b70c3e7f698d5cc4bbd0cc6ec355f3d153e184d300e276a',
  responderEphemeralPublic: 'e3adee1197987f41f96766af04c3f8ad0f5b0c41ae738a73c34c0dd19f6ad272',
  presharedKey: '98fcb6d5263179d0d35dc174a64db9ed7b79723c8b0ede7386d95c8554b46bb9',
  initiatorIndex: 0xd00dfeed,
  responderIndex: 0x1badb002,
  timeMs: 1_700_000_000_123,
  tai64n: '400000006553f10a07000000',
  initiation:
    '01000000edfe0dd008d2d04fb97022c66423b65b3e5a8a62b9fb6c073c48bb0e52d7738a8e8866117baf13ff5c1e4f9c9380fca5f73580c6779b45b57aa62788ead9588abcb0afdf9f1e6ba0f2937f22003d7746423729fd37c2af5733e0e410c7c71f6fad98f0435c882299d250c8d0646fc7022897de921000e60b1b84ee72ca2d2d1d00000000000000000000000000000000',
  initiationChainKey: 'bc49526f29191c7e3dbe16d82aa55722e67f5584725a4afbe7a080f87c5f1176',
  initiationHash: '52fce8f88639bd6be830c589ce5471059fe5ceff9eb38fed21247b716683cc76',
  cookieSecret: '111cc56330bde99bca501bce9e248e960756f910d76de911e63ca2f374327b9c',
  cookieSource: '198.18.0.1:51820',
  cookie: '682368e1fbe88c8c5a499d4dee0f0090',
  cookieNonce: '076c5b4df23afbb03bd875d4c59973c42eaf1a37684ff267',
  cookieReply:
    '03000000edfe0dd0076c5b4df23afbb03bd875d4c59973c42eaf1a37684ff2679ee06c857ddbebd7909b934afb4e8a9f88dcb42a27116cf535b3e8257070c763',
  initiationWithMac2:
    '01000000edfe0dd008d2d04fb97022c66423b65b3e5a8a62b9fb6c073c48bb0e52d7738a8e8866117baf13ff5c1e4f9c9380fca5f73580c6779b45b57aa62788ead9588abcb0afdf9f1e6ba0f2937f22003d7746423729fd37c2af5733e0e410c7c71f6fad98f0435c882299d250c8d0646fc7022897de921000e60b1b84ee72ca2d2d1dd11fca2f743d760ef6249b40e538bc22',
  response:
    '0200000002b0ad1bedfe0dd0e3adee1197987f41f96766af04c3f8ad0f5b0c41ae738a73c34c0dd19f6ad272833a0ea0ff2fe73c81f632554fc0a36218ae04dfb61433e8117a2ec6668f99f400000000000000000000000000000000',
  responseHash: 'de3d52a2d47b5bf9b01f23c4b12516e02291dda64db231168fd3a2feb8b7b7c0',
  initiatorSendKey: 'd0c6bab0e3387ccc68778ae43dc9443e5909f76837a22a5416a0141c3702aa49',
  initiatorRecvKey: '2715c96a93949221227d217c246f7eab5c2d4441725c40c7bb3eae71fd03866f',
  transportFromInitiator:
    '0400000002b0ad1b0000000000000000326f800530b458cdfda72cc903a54faf8c5a5a9747424e0a2484e582787df39ddf499d2e78fef356127aa30086b24425',
  keepaliveFromResponder: '04000000edfe0dd00000000000000000910ba036eda4a322059e98a841a47e81',
  transportFromInitiatorAtCounter:
    '0400000002b0ad1befcdab8900000000e4d65ccdb9cc3b5d0c1478bd253b6aaddc358d1956950e33053cedc5b427bb2588f960c65363c74964c353163f6d6f0d',
  responseNoPsk:
    '0200000002b0ad1bedfe0dd0e3adee1197987f41f96766af04c3f8ad0f5b0c41ae738a73c34c0dd19f6ad27297dbea544604d315c0746c20d786d926cd2e0911a8ba9a0be9f90cd4f633ea5600000000000000000000000000000000',
  responseHashNoPsk: 'ef11ec6eb8c32d577ddacaeb14ae629f7bebf7542f53abcb7ba7f134c44e36bc',
  initiatorSendKeyNoPsk: '0b509d3ac5b9f7d02b7eaca84d234e3d534fbccf307f063c83eb19e77c7ed7f7',
  initiatorRecvKeyNoPsk: '61ed01e2821c7c10c22473dd2604f1006c0e609a2149dfbbe702466b0a2f19cb',
  transportFromInitiatorNoPsk:
    '0400000002b0ad1b0000000000000000f730bcb927fb7c0fc983e946250fa9d8f2a1212eb8e3df1ca62d813629de7be9e722d8d7b1b0b489bd2b77f08d880d17',
  keepaliveFromResponderNoPsk: '04000000edfe0dd00000000000000000b1671ab464550e37f2e2451354a79702',
  transportFromInitiatorAtCounterNoPsk:
    '0400000002b0ad1befcdab8900000000df7b6f1577e841c6fff63645ec9ab54888930125f66370bffb07c0714ff0117e8505b648077b3927ce398a196f6d9980',
  transportPayload: '6b6e6f776e2d616e73776572207472616e73706f72742074657374',
}
