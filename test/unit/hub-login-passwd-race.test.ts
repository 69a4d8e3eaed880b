/**
 * "A new password ends every session of the account" (README security, src/hub/auth.ts), also for a login
 * that read the account before the change and records its session after it: the login checks the old
 * password (scrypt, tens of ms) while another process or hub replica changes it. The interleaving is
 * forced here: the login's session write waits until the password change has committed.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { HubAuth } from '../../src/hub/auth.js'
import { HubStore } from '../../src/hub/store.js'

t.test('a login with the old password that finishes after the change gets no session', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `enclave-login-race-${process.pid}-`))
  const store = await HubStore.open({ file: path.join(dir, 'hub.db'), create: true })
  t.teardown(async () => {
    await store.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })
  await store.setMeta('rev', '0')
  const auth = new HubAuth(store)
  await auth.addAdmin('test@cli', 'alice', 'the old password 1', 'admin')

  // Every way the login could record its session (directly, or in a write without audit) waits for `gate`.
  let release!: () => void
  const gate = new Promise<void>((r) => {
    release = r
  })
  const db = store.db
  const gated = new Proxy(db, {
    get(target, prop) {
      if (prop === 'insertInto')
        return (table: 'sessions') => {
          const b = target.insertInto(table)
          if (table !== 'sessions') return b
          return { values: (v: never) => ({ execute: async () => (await gate, b.values(v).execute()) }) }
        }
      const v = Reflect.get(target, prop, target)
      return typeof v === 'function' ? v.bind(target) : v
    },
  })
  ;(store as { db: typeof db }).db = gated
  const write = store.write.bind(store)
  store.write = (async (audit: Parameters<typeof write>[0], fn: Parameters<typeof write>[1]) => {
    if (!audit) await gate
    return write(audit, fn)
  }) as typeof store.write

  const login = auth.login('192.0.2.1', 'alice', 'the old password 1')
  await auth.setPassword('test@cli', 'alice', 'the new password 2')
  release()
  const r = await login
  const survived = r.ok ? await auth.session(r.cookie) : null
  t.equal(survived, null, 'no session from the old password outlives the change')
  const again = await auth.login('192.0.2.1', 'alice', 'the new password 2')
  t.ok(again.ok && (await auth.session(again.cookie)), 'the new password logs in')
})
