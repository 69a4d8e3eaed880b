/**
 * The portal end to end (issue 21, flow 6): a real hub (`enclave hub serve`) in its own namespace with
 * its portal on that namespace's 127.0.0.1, chromium started inside the same namespace (a wrapper
 * script as playwright's executable: `ip netns exec` keeps the pipe playwright talks over), and two
 * real agents (`enclave run` with a TUN) in theirs. Everything an admin does happens in the browser: a
 * manual key, both systems approved, a policy; then the agents ping each other.
 *
 *   hub 198.18.0.100 (portal 127.0.0.1:8444 inside) ─┐
 *   a1  198.18.0.1 ──────────────────────────────────┼── br0 in "sw"
 *   a2  198.18.0.2 ──────────────────────────────────┘
 */
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { BrowserHarness, CHROMIUM, browserMissing, logIn, shot } from '../helpers/browser.js'
import { type AgentInfo, type AgentProc, HubProc, Lab, BIN, bridge, pingUntil, rootSkipReason, statusJson } from '../helpers/netns.js'

const ADMIN = { user: 'alice', password: 'correct horse battery' }
const PORTAL = '127.0.0.1:8444'

const skip = rootSkipReason() || browserMissing()
if (skip) {
  t.skip(`portal end to end: ${skip}`)
} else {
  t.test('agents approved and connected by a policy, all in the browser inside the hub namespace', async (t) => {
    const lab = new Lab('portal')
    const procs: AgentProc[] = []
    let hub: HubProc | undefined
    let browser: BrowserHarness | undefined
    t.teardown(async () => {
      await browser?.close()
      hub?.kill()
      await lab.cleanup()
    })
    const [nsHub, nsA1, nsA2, nsSw] = await Promise.all(['hub', 'a1', 'a2', 'sw'].map((n) => lab.addNs(n)))
    const under = await bridge(lab, nsSw, 'br0')
    await under(nsHub, 'eth0', '198.18.0.100/24')
    await under(nsA1, 'eth0', '198.18.0.1/24')
    await under(nsA2, 'eth0', '198.18.0.2/24')

    hub = new HubProc(lab, nsHub, path.join(lab.tmp, 'hub'))
    const hubKey: string = (await hub.json(['init', '--listen', '198.18.0.100:8443'])).publicKey
    // The account, as an admin makes it: `enclave hub admin add` with the password on stdin.
    const r = await lab.exec(
      nsHub,
      'sh',
      ['-c', `printf '%s\\n' "$PW" | "$NODE" "$BIN" hub admin add "$USERNAME" --data-dir "$DIR"`],
      30_000,
      { PW: ADMIN.password, NODE: process.execPath, BIN, USERNAME: ADMIN.user, DIR: hub.dir },
    )
    t.equal(r.code, 0, `enclave hub admin add: ${r.stdout.trim()}${r.stderr.trim()}`)
    await hub.serve(['--portal', PORTAL])

    // Chromium in the hub's namespace: its 127.0.0.1 is the hub's. `exec` all the way down keeps the
    // process playwright started (its pipe on fds 3 and 4) the browser itself.
    const wrapper = path.join(lab.tmp, 'chromium-in-ns')
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${nsHub} ${CHROMIUM} "$@"\n`, { mode: 0o755 })
    browser = await BrowserHarness.launch(t, { executablePath: wrapper })
    const ctx = await browser.context(`http://${PORTAL}`)
    const page = await ctx.newPage()
    await page.goto('/login')
    t.equal((await logIn(page, ADMIN)).status(), 303, "logged in to the portal through the browser in the hub's namespace")

    await page.goto('/keys')
    await page.locator('[name="description"]').fill('lab')
    await page.locator('[name="tags"]').fill('lab')
    await page.locator('[name="uses"]').fill('2')
    await page.locator('select[name="approval"]').selectOption('manual')
    await page.getByRole('button', { name: 'Create key', exact: true }).click()
    await page.waitForLoadState()
    const key = ((await page.locator('#new-key').textContent()) ?? '').trim()
    t.match(key, /^[0-9A-Z]{5}(-[0-9A-Z]{5}){4}$/, 'a manual key made in the browser')
    t.match(
      (await page.locator('#join-command').textContent()) ?? '',
      `--hub http://198.18.0.100:8443 --hub-key ${hubKey}`,
      'its join command names this hub',
    )
    await shot(page, 'e2e-key-created')

    const nodes: AgentInfo[] = [lab.makeAgent({ name: 'a1', ns: nsA1 }), lab.makeAgent({ name: 'a2', ns: nsA2 })]
    for (const n of nodes) {
      const r = await lab.cli(n, ['enrol', key, '--hub', 'http://198.18.0.100:8443', '--hub-key', hubKey])
      t.equal(r.code, 0, `${n.name} enrolled`)
      t.match(r.stdout, /awaiting approval/, `${n.name} waits for approval`)
      const p = lab.startAgent(n, ['-v', '3'], { ENCLAVE_STATE_DIR: path.join(n.dir, 'state') })
      procs.push(p)
      await p.waitFor(/control socket ready/)
    }
    for (const n of nodes) t.equal((await statusJson(lab, n)).hub.systemState, 'pending', `${n.name}: pending`)
    const va2 = (await statusJson(lab, nodes[1])).virtualAddress as string
    t.equal((await lab.exec(nsA1, 'ping', ['-c', '1', '-W', '1', va2])).code, 1, 'a pending system is unreachable')

    await page.goto('/systems/pending')
    for (const n of nodes) await page.getByLabel(`Select ${n.identity}`, { exact: true }).check()
    await shot(page, 'e2e-pending')
    await page.getByRole('button', { name: 'Approve', exact: true }).click()
    await page.waitForLoadState()

    await page.goto('/policies/new')
    await page.locator('[name="description"]').fill('lab talks')
    await page.locator('[name="senders"]').fill('lab')
    await page.locator('[name="receivers"]').fill('lab')
    await page.locator('[name="acl"]').fill('icmp')
    const enabled = page.locator('input[name="enabled"]')
    if (!(await enabled.isChecked())) await enabled.check()
    await page.getByRole('button', { name: 'Save policy', exact: true }).click()
    await page.waitForLoadState()
    await shot(page, 'e2e-policies')

    const va1 = (await statusJson(lab, nodes[0])).virtualAddress as string
    t.ok(await pingUntil(lab, nsA1, va2, 15), 'a1 pings a2 over the overlay')
    t.ok(await pingUntil(lab, nsA2, va1, 15), 'a2 pings a1 over the overlay')
    for (const n of nodes) t.equal((await statusJson(lab, n)).hub.systemState, 'approved', `${n.name}: approved`)
  })
}
