/**
 * `enclave enrol`: one handshake with the hub carrying the enrolment key (encrypted to the hub's
 * pinned key; never written to disk), then the Hub block and the allocated address go into the
 * profile, atomically, only after the hub said yes. `enclave unenrol` takes them out again.
 */
import os from 'node:os'
import fs from 'node:fs'
import path from 'node:path'
import WebSocket from 'ws'
import { EnclaveError } from '../errors.js'
import { decodeKey } from '../config/keys.js'
import { hasControlCharacter } from '../config/free-text.js'
import { loadProfile, writeProfile } from '../config/profile.js'
import { initiate } from '../hubproto/noise-ik.js'
import { HUB_PATH, HUB_PROTOCOL_VERSION, T_MSG1, T_MSG2, helloTimestamp, refusalSchema, welcomeSchema } from '../hubproto/wire.js'
import { normaliseEnrolmentKey } from '../hubproto/enrolment-key.js'

export interface EnrolOptions {
  file: string
  key: string
  urls: string[]
  hubKey: string
  allowGateway: boolean
  acceptDefaultRoute: boolean
  advertiseEndpoints?: string[]
  timeoutMs?: number
}

export interface EnrolResult {
  identity: string
  virtualAddress: string
  state: 'pending' | 'approved' | 'disabled'
  enrolled: boolean
  peers: number
  hub: string
}

/** Hub refusal codes -> exit code 1 with the hub's reason; a wrong key form is a usage error (2). */
export async function enrol(o: EnrolOptions): Promise<EnrolResult> {
  const key = normaliseEnrolmentKey(o.key)
  if (!key) throw new EnclaveError('EUSAGE', 'that is not an enrolment key: expected XXXXX-XXXXX-XXXXX-XXXXX-XXXXX', 2)
  const hubKey = decodeKey(o.hubKey)
  if (typeof hubKey === 'string') throw new EnclaveError('EUSAGE', `--hub-key: ${hubKey}`, 2)
  for (const u of o.urls)
    if (!/^(https?|wss?):\/\/[^\s/]+\/?$/.test(u)) throw new EnclaveError('EUSAGE', `--hub "${u}": use http://<address>:<port>`, 2)
  const profile = loadProfile(o.file)
  const hello = {
    t: 'hello',
    v: HUB_PROTOCOL_VERSION,
    ts: helloTimestamp(Date.now()),
    hostname: os.hostname().slice(0, 253),
    listenPort: profile.localPort || 51820,
    enrol: { key },
    allowGateway: o.allowGateway,
    acceptDefaultRoute: o.acceptDefaultRoute,
    advertise: profile.exitNode.providesRoutes.map((c) => c.text),
    ...(o.advertiseEndpoints?.length ? { endpoints: o.advertiseEndpoints } : {}),
  }
  const url = o.urls[0].replace(/^http/, 'ws').replace(/\/$/, '') + HUB_PATH
  const hs = initiate({ privateKey: profile.privateKey, publicKey: profile.publicKey }, hubKey, Buffer.from(JSON.stringify(hello)))
  const answer = await new Promise<unknown>((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: o.timeoutMs ?? 10_000 })
    const timer = setTimeout(() => {
      ws.terminate()
      reject(new EnclaveError('EHUB', `the hub at ${o.urls[0]} did not answer within ${(o.timeoutMs ?? 10_000) / 1000} s`))
    }, o.timeoutMs ?? 10_000)
    ws.on('open', () => ws.send(Buffer.concat([Buffer.of(T_MSG1), hs.message1])))
    ws.on('message', (data: Buffer) => {
      clearTimeout(timer)
      const got = data[0] === T_MSG2 ? hs.readMessage2(data.subarray(1)) : null
      ws.close()
      if (!got) {
        reject(
          new EnclaveError(
            'EHUBKEY',
            `the hub at ${o.urls[0]} did not prove the key given with --hub-key: check it against \`enclave hub init\`'s output`,
          ),
        )
        return
      }
      resolve(JSON.parse(Buffer.from(got.payload).toString('utf8')))
    })
    ws.on('close', () => {
      clearTimeout(timer)
      reject(
        new EnclaveError('EHUB', `the hub at ${o.urls[0]} closed the connection without answering (is --hub-key its key? is this a hub?)`),
      )
    })
    ws.on('error', (e) => {
      clearTimeout(timer)
      reject(new EnclaveError('EHUB', `cannot reach the hub at ${o.urls[0]}: ${e.message}`, 3))
    })
  })
  const refusal = refusalSchema.safeParse(answer)
  if (refusal.success) throw new EnclaveError(refusal.data.code, `the hub refused the enrolment: ${printable(refusal.data.message)}`)
  const w = welcomeSchema.parse(answer)
  // Only now, and without the enrolment key: the hub block and the address the hub allocated.
  const raw = { ...loadProfile(o.file).raw }
  raw.VirtualAddress = w.address
  raw.Hub = {
    Urls: o.urls,
    PublicKey: o.hubKey,
    AllowGateway: o.allowGateway,
    AcceptDefaultRoute: o.acceptDefaultRoute,
    ...(o.advertiseEndpoints?.length ? { AdvertiseEndpoints: o.advertiseEndpoints } : {}),
  }
  writeProfile(o.file, raw)
  return { identity: w.identity, virtualAddress: w.address, state: w.state, enrolled: w.enrolled, peers: w.peers ?? 0, hub: o.urls[0] }
}

/** Takes the Hub block out of the profile and deletes the cached map; the agent then runs on local peers only. */
export function unenrol(file: string, stateDir: string): { removed: boolean } {
  const raw = { ...loadProfile(file).raw }
  if (!raw.Hub) return { removed: false }
  raw.Hub = undefined
  raw.VirtualAddress = undefined
  writeProfile(file, JSON.parse(JSON.stringify(raw)))
  fs.rmSync(path.join(stateDir, 'hub-map.json'), { force: true })
  return { removed: true }
}

/** Text from the hub, printable: control characters become "?" (it goes to a terminal). */
function printable(s: string): string {
  return [...s].map((ch) => (hasControlCharacter(ch) ? '?' : ch)).join('')
}
