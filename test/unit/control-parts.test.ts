/** Control-plane parts without root: keypair slots, the peer table and the status builder. */
import t from 'tap'
import { type Cidr, intToIp, parseCidr, parseIpv4 } from '../../src/common/ipv4.js'
import { KeypairSlots } from '../../src/agent/peers/keypairs.js'
import { PeerTable, newPeer } from '../../src/agent/peers/peer-table.js'
import type { PeerConfig } from '../../src/config/profile.js'
import { peerFixture, profileFixture } from '../helpers/fixtures.js'
import { type PeerFacts, buildStatus } from '../../src/agent/observability/status-builder.js'
import {
  KEY_BYTES_PER_SLOT,
  KP_MASK,
  KP_SLOTS,
  KP_VALID,
  K_FIELDS,
  K_INDEX,
  K_PEER,
  K_STATE,
  createLayout,
  views,
} from '../../src/ipc/layout.js'
import type { PeerCrypto, SessionKeys } from '../../src/protocol/noise.js'

const keys = (fill: number): SessionKeys => ({
  sendKey: new Uint8Array(32).fill(fill),
  recvKey: new Uint8Array(32).fill(fill + 1),
  localIndex: 0,
  remoteIndex: 0x01020304,
  isInitiator: true,
})

function slots(quarantineMs = 1000) {
  const v = views(createLayout(8, 1))
  return { v, kp: new KeypairSlots(v, quarantineMs) }
}

t.test('keypair slots: indexes carry the slot, install publishes, retire quarantines', async (t) => {
  const { v, kp } = slots()
  const a = kp.alloc(5, 0)!
  t.ok(a.slot >= 1 && a.slot < KP_SLOTS, 'slot 0 is never handed out')
  t.equal(a.index & KP_MASK, a.slot, 'the receiver index carries the slot in its low bits')
  t.equal(kp.state(a.slot), 0, 'allocated but not visible to workers')
  const ref = kp.install(a.slot, a.index, 5, keys(7), KP_VALID, 123)
  t.same(ref, { slot: a.slot, index: a.index, createdMs: 123, isInitiator: true })
  t.equal(v.kpI32[a.slot * K_FIELDS + K_STATE], KP_VALID)
  t.equal(v.kpI32[a.slot * K_FIELDS + K_PEER], 5)
  t.equal(kp.remoteIndex(a.slot), 0x01020304)
  t.same([...kp.sendKey(a.slot)], new Array(32).fill(7))
  t.equal(kp.ownerOf(a.index), 5, 'the owner is found from the index alone')
  t.equal(kp.ownerOf((a.index ^ 0x1000) >>> 0), undefined, 'a forged index with the same slot is not')
  t.equal(kp.takeSendCounter(a.slot), 0)
  t.equal(kp.takeSendCounter(a.slot), 1)
  const free = kp.freeCount
  kp.retire(a.slot, 1000)
  t.equal(kp.state(a.slot), 0)
  t.equal(v.kpI32[a.slot * K_FIELDS + K_INDEX], 0)
  t.equal(kp.ownerOf(a.index), undefined, 'a retired index has no owner')
  t.equal(kp.quarantined, 1)
  kp.alloc(5, 1999)
  t.equal(kp.freeCount, free - 1, 'still quarantined one tick before the end')
  kp.alloc(5, 2000)
  t.equal(kp.quarantined, 0, 'released when the quarantine ends')
  t.equal(kp.freeCount, free - 1)
  t.equal(v.kpKeys.length, KP_SLOTS * KEY_BYTES_PER_SLOT)
})

/** Peer settings through the schema; `name` becomes its description (the identity comes from the key). */
function cfg(name: string, key: number): PeerConfig {
  return peerFixture(Buffer.alloc(32, key), { Description: name })
}
const crypto = (handshakeIndex?: number) =>
  ({ handshake: handshakeIndex === undefined ? undefined : { localIndex: handshakeIndex } }) as unknown as PeerCrypto

t.test('peer table: lookups by slot, key, name and initiation index; slots reused after the delay', async (t) => {
  const table = new PeerTable(2, 500)
  const s0 = table.takeSlot(0)!
  const a = newPeer(s0, cfg('alice', 1), crypto(0xabc))
  table.add(a)
  const b = newPeer(table.takeSlot(0)!, cfg('bob', 2), crypto())
  table.add(b)
  t.equal(table.takeSlot(0), undefined, 'full')
  t.equal(table.get(a.slot), a)
  t.equal(table.byPublicKey(Buffer.alloc(32, 2)), b)
  t.equal(table.byPublicKey(Buffer.alloc(32, 3)), undefined)
  t.equal(table.byName(a.cfg.identity), a, 'by identity')
  t.equal(table.byName(intToIp(b.cfg.virtualAddress)), b, 'by virtual address')
  table.setInitiationIndex(a, 0xabc)
  t.equal(table.byInitiationIndex(0xabc), a)
  a.crypto.handshake = undefined
  t.equal(table.byInitiationIndex(0xabc), undefined, 'an index whose Noise state is gone finds nobody')
  table.setInitiationIndex(b, 0xdef)
  table.setInitiationIndex(b, undefined)
  t.equal(table.byInitiationIndex(0xdef), undefined)
  table.remove(a, 1000)
  t.equal(table.size, 1)
  t.equal(table.get(a.slot), undefined)
  t.equal(table.byPublicKey(a.cfg.publicKey), undefined)
  t.equal(table.takeSlot(1499), undefined, 'the slot waits out the delay')
  t.equal(table.takeSlot(1500), s0)
  t.same(
    [...table].map((p) => p.cfg.identity),
    [b.cfg.identity],
  )
})

t.test('status builder: states, routes, exit-node users', async (t) => {
  const profile = profileFixture({ VirtualAddress: '100.64.0.1', ExitNode: { ProvidesRoutes: ['192.168.1.0/24'] } })
  const base = { description: undefined, rxBytes: 1, txBytes: 2, rxPackets: 3, txPackets: 4, bytesFromLan: 0 }
  const peers: PeerFacts[] = [
    {
      ...base,
      slot: 0,
      identity: 'exit-a',
      publicKey: 'A=',
      virtualAddress: parseIpv4('100.64.0.2') as number,
      availableRoutes: ['0.0.0.0/0', '10.0.0.0/8'],
      state: 'Down',
      lastActivityMs: 0,
      bytesToLan: 0,
    },
    {
      ...base,
      slot: 1,
      identity: 'exit-b',
      publicKey: 'B=',
      virtualAddress: parseIpv4('100.64.0.3') as number,
      availableRoutes: ['0.0.0.0/0'],
      state: 'Up',
      endpoint: '192.0.2.1:51820',
      lastHandshakeMs: 9000,
      lastActivityMs: 9500,
      bytesToLan: 77,
    },
  ]
  const s = buildStatus({
    now: 10_000,
    pid: 42,
    releaseVersion: '1.0.0',
    profile,
    interface: 'enclave0',
    port: 51820,
    verbosity: 2,
    counters: { unsolicited: 5 },
    exitWarnings: ['w'],
    flows: new Map([[1, 3]]),
    peers,
    active: new Map([
      ['0.0.0.0/0', 1],
      ['10.0.0.0/8', 0],
    ]),
    routeInstalled: (r) => r !== '10.0.0.0/8',
    routeRefusal: (r) => (r === '10.0.0.0/8' ? 'overlaps eth0' : undefined),
  })
  t.equal(s.virtualAddress, '100.64.0.1')
  t.equal(s.bindingAddress, '0.0.0.0:51820')
  t.same(s.exitNode, {
    providesRoutes: ['192.168.1.0/24'],
    activeFlows: 3,
    unsolicitedDrops: 5,
    users: [{ identity: 'exit-b', flows: 3, bytesToLan: 77, bytesFromLan: 0 }],
    warnings: ['w'],
  })
  t.same(s.peers[0].exitNodeFor, [
    { route: '0.0.0.0/0', installed: true, active: false, reason: 'exit-b is active' },
    { route: '10.0.0.0/8', installed: false, active: true, reason: 'overlaps eth0' },
  ])
  t.same(s.peers[1].exitNodeFor, [{ route: '0.0.0.0/0', installed: true, active: true, reason: undefined }])
  t.equal(s.peers[0].lastActivitySecondsAgo, null, 'never active')
  t.equal(s.peers[1].lastActivitySecondsAgo, 0.5)
  t.equal(s.peers[1].lastHandshakeSecondsAgo, 1)
  t.equal(s.peers[1].endpoint, '192.0.2.1:51820')
})
