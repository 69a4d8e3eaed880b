/**
 * Our handshake code against stock wireguard-go, message by message, with the fixed keys of the
 * known-answer vectors and a preshared key (interop.test.ts runs whole agents without one and never
 * exercises cookies). wireguard-go initiates from inside a namespace made here, over its loopback;
 * test/helpers/wg-go-responder.ts answers with our protocol functions and reports what it saw:
 *   - wireguard-go's initiation: our mac1 check passes over its bytes, its mac2 is zero, we decrypt its
 *     static key (the vector's initiator key) and a TAI64N timestamp of now, whitened like ours;
 *   - our cookie reply (XChaCha20-Poly1305, fixed secret and nonce): wireguard-go decrypts it, since its
 *     retry carries a mac2 made with our cookie;
 *   - our response (fixed ephemeral key, PSK): wireguard-go completes the handshake, confirms with a
 *     keepalive we open with our receive key, and answers an ICMP echo request sealed with our send key.
 */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { Lab, ROOT, haveCommand, rootSkipReason } from '../helpers/netns.js'
import { V } from '../helpers/handshake-vectors.js'

const skip =
  rootSkipReason() ||
  (!haveCommand('wireguard-go') || !haveCommand('wg')
    ? 'wireguard-go and wireguard-tools are not installed (apt-get install wireguard-go wireguard-tools)'
    : false)

const b64 = (h: string) => Buffer.from(h, 'hex').toString('base64')
const HELPER_PORT = 51821
const WG_PORT = 51820

if (skip) {
  t.skip(`handshake against wireguard-go: ${skip}`)
} else {
  t.test('wireguard-go initiates to our responder code: cookie reply, mac2, PSK response, transport keys', async (t) => {
    const lab = new Lab('hw')
    t.teardown(() => lab.cleanup())
    const ns = await lab.addNs('w')

    const helper = lab.spawn(ns, process.execPath, [
      '--import',
      'tsx',
      path.join(ROOT, 'test/helpers/wg-go-responder.ts'),
      String(HELPER_PORT),
      V.responderStaticPrivate,
      V.initiatorStaticPublic,
      V.presharedKey,
      V.responderEphemeralPrivate,
      V.cookieSecret,
      V.cookieNonce,
    ])
    let stderr = ''
    helper.stderr!.on('data', (d) => (stderr += d))
    const lines: Record<string, any>[] = []
    let closed = false
    let notify = () => {}
    readline.createInterface({ input: helper.stdout! }).on('line', (l) => {
      try {
        lines.push(JSON.parse(l))
      } catch {
        lines.push({ unparsed: l })
      }
      notify()
    })
    const exitCode = new Promise<number | null>((r) =>
      helper.on('close', (code) => {
        closed = true
        notify()
        r(code)
      }),
    )
    /** The first line from the helper that `want` accepts, or undefined once it has ended without one. */
    const until = async (want: (l: Record<string, any>) => boolean): Promise<Record<string, any> | undefined> => {
      for (;;) {
        const hit = lines.find(want)
        if (hit || closed) return hit
        await new Promise<void>((r) => (notify = r))
      }
    }
    t.ok(await until((l) => l.ready || l.error), `helper listening in the namespace ${stderr}`)

    const keyFile = path.join(lab.tmp, 'wg.key')
    const pskFile = path.join(lab.tmp, 'wg.psk')
    fs.writeFileSync(keyFile, b64(V.initiatorStaticPrivate) + '\n', { mode: 0o600 })
    fs.writeFileSync(pskFile, b64(V.presharedKey) + '\n', { mode: 0o600 })
    const dev = lab.wgDeviceName()
    const r = await lab.wireguardGo(ns, dev)
    t.equal(r.code, 0, `wireguard-go started${r.code ? ': ' + r.stderr : ''}`)
    await lab.exec(ns, 'ip', ['addr', 'add', '10.99.0.1/24', 'dev', dev])
    await lab.exec(ns, 'ip', ['link', 'set', dev, 'up'])
    // A persistent keepalive makes wireguard-go start the handshake at once.
    const set = await lab.exec(ns, 'wg', [
      'set',
      dev,
      'listen-port',
      String(WG_PORT),
      'private-key',
      keyFile,
      'peer',
      b64(V.responderStaticPublic),
      'preshared-key',
      pskFile,
      'endpoint',
      `127.0.0.1:${HELPER_PORT}`,
      'allowed-ips',
      '10.99.0.2/32',
      'persistent-keepalive',
      '1',
    ])
    t.equal(set.code, 0, `wg set ${set.stderr}`)

    const end = await until((l) => l.report || l.error)
    t.equal(await exitCode, 0, 'helper finished')
    t.notOk(end?.error, `helper reported no error ${end?.error ?? ''} ${stderr}`)
    const rep = end?.report ?? {}

    t.equal(rep.first?.length, 148, "wireguard-go's first initiation")
    t.equal(rep.first?.from, `127.0.0.1:${WG_PORT}`)
    t.equal(rep.first?.mac1, true, 'our mac1 check accepts its mac1')
    t.equal(rep.first?.mac2, '00'.repeat(16), 'its mac2 is zero before any cookie')
    t.equal(rep.first?.static, V.initiatorStaticPublic, 'we decrypt its static key: the public key of the fixed private key')
    const ts = Buffer.from(rep.first?.timestamp ?? '', 'hex')
    const ours = Buffer.from(rep.first?.ourTimestampNow ?? '', 'hex')
    t.equal(ts.length, 12, 'we decrypt a 12-byte TAI64N timestamp')
    if (ts.length === 12 && ours.length === 12) {
      t.equal(ts.readUInt32BE(0), ours.readUInt32BE(0), 'TAI64N high word (2^62 label) as ours')
      const skew = Math.abs(ts.readUInt32BE(4) - ours.readUInt32BE(4))
      t.ok(skew <= 30, `its seconds (2^62 + 10 + unix time) agree with ours within ${skew} s on one clock`)
      t.equal(ts.readUInt32BE(8) % 2 ** 24, 0, 'its nanoseconds are whitened to multiples of 2^24, as ours')
    }

    t.equal(rep.retry?.mac1, true, "the retry's mac1 is valid")
    t.equal(rep.retry?.mac2, true, 'the retry carries mac2 made with our cookie: wireguard-go decrypted our cookie reply')
    t.equal(rep.retry?.static, V.initiatorStaticPublic)
    t.equal(rep.retry?.accepted, 'ok')

    const resp = Buffer.from(rep.response ?? '', 'hex')
    t.equal(resp.length, 92, 'our response')
    t.equal(resp.subarray(12, 44).toString('hex'), V.responderEphemeralPublic, 'built with the fixed ephemeral key')

    t.same(
      rep.keepalive,
      { receiver: V.responderIndex, counter: 0, opened: true, length: 0 },
      'wireguard-go accepted our response and confirmed with a keepalive that our receive key opens (PSK mixed alike)',
    )
    t.same(
      rep.echoReply,
      { opened: true, src: '10.99.0.1', dst: '10.99.0.2', icmpType: 0, id: 0x4b41, seq: 1, data: 'enclave known-answer ping' },
      'wireguard-go opened our echo request (our send key) and its reply opens with our receive key',
    )

    t.equal(rep.unopened, 0, 'every transport message from wireguard-go opened')

    const show = await lab.exec(ns, 'wg', ['show', dev, 'latest-handshakes'])
    t.ok(Number(show.stdout.trim().split(/\s+/)[1]) > 0, `wireguard-go reports a completed handshake: ${show.stdout.trim()}`)
  })
}
