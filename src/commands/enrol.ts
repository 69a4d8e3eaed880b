import { Args, Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { applyToAgent } from '../api/apply.js'
import { enrol } from '../ops/enrol.js'

export default class Enrol extends BaseCommand {
  static override summary = "Enrol this system with a hub: it gets its peers, tags, policies and routes from the hub's map"
  static override description =
    "The enrolment key travels encrypted to the hub's pinned key and is never written to disk; the profile gets a Hub block only after the hub accepted it. The hub can never set this system's keys, port, interface or other host settings; it may make this system an exit node only with --allow-gateway, and route 0.0.0.0/0 through an exit node only with --accept-default-route."
  static override examples = [
    '$ sudo <%= config.bin %> enrol K7Q2M-3XH9D-… --hub http://192.0.2.10:8443 --hub-key 3nM…=',
    '$ sudo <%= config.bin %> enrol K7Q2M-3XH9D-… --hub http://192.0.2.10:8443 --hub-key 3nM…= --allow-gateway   # an exit node',
  ]
  static override enableJsonFlag = true
  static override args = { key: Args.string({ description: 'the enrolment key, XXXXX-XXXXX-XXXXX-XXXXX-XXXXX', required: true }) }
  static override flags = {
    hub: Flags.string({ description: 'the hub URL, http://<address>:<port> (comma-separated for several)', required: true }),
    'hub-key': Flags.string({ description: "the hub's public key, as `enclave hub init` printed it", required: true }),
    'allow-gateway': Flags.boolean({ description: 'let the hub make this system an exit node for routes it approves' }),
    'accept-default-route': Flags.boolean({
      description: 'let the hub route 0.0.0.0/0, or any address space outside RFC 1918, through an exit node',
    }),
    'advertise-endpoint': Flags.string({ description: 'host:port peers should use for this system (repeat for several)', multiple: true }),
    ...configDirFlag,
    ...runDirFlag,
  }

  async run() {
    const { args, flags } = await this.parse(Enrol)
    const r = await enrol({
      file: this.profileFile(flags),
      key: args.key,
      urls: flags.hub.split(',').map((u) => u.trim()),
      hubKey: flags['hub-key'],
      allowGateway: flags['allow-gateway'] ?? false,
      acceptDefaultRoute: flags['accept-default-route'] ?? false,
      advertiseEndpoints: flags['advertise-endpoint'],
    })
    const applied = await applyToAgent(this.profileFile(flags))
    const state =
      r.state === 'pending'
        ? 'awaiting approval on the hub'
        : r.state === 'approved'
          ? `approved, ${r.peers} ${r.peers === 1 ? 'peer' : 'peers'}`
          : r.state
    this.log(`${r.enrolled ? 'Enrolled' : 'Already enrolled'} as ${r.identity} (${r.virtualAddress}) — ${state}`)
    return this.reportApplied(r, applied, [])
  }
}
