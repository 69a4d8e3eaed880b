import { Flags } from '@oclif/core'
import { BaseCommand } from '../../base-command.js'
import { dataDirFlag, hubDir, portalUrl } from '../../hub/cli.js'
import { initHub } from '../../hub/hub.js'

export default class HubInit extends BaseCommand {
  static override summary =
    "Create a hub: its key pair, its database and its configuration; prints the hub's public key and the join command"
  static override examples = [
    '$ sudo <%= config.bin %> hub init --data-dir /var/lib/enclave-hub --listen 0.0.0.0:8443',
    '$ <%= config.bin %> hub init --data-dir ./hub --listen 127.0.0.1:8443 --json',
  ]
  static override enableJsonFlag = true
  static override flags = {
    ...dataDirFlag,
    listen: Flags.string({ description: 'address:port agents connect to (TCP)', required: true }),
  }

  async run() {
    const { flags } = await this.parse(HubInit)
    const dir = hubDir(flags['data-dir'])
    const r = await initHub(dir, flags.listen)
    if (!this.jsonEnabled()) {
      this.log(`Hub created in ${dir}`)
      this.log(`Hub public key: ${r.publicKey}`)
      this.log('')
      this.log(`Start it:        enclave hub serve --data-dir ${dir}`)
      this.log('Make a key:      enclave hub key create "office" --tags office [--auto-approve]')
      this.log(`Join a system:   sudo enclave enrol <KEY> --hub http://${joinHost(flags.listen)} --hub-key ${r.publicKey}`)
      this.log(`Portal and admin API: ${portalUrl(dir)} (create an account: enclave hub admin add <user>)`)
    }
    return r
  }
}

/** host:port for the join command: the listen address, unless it is a wildcard (then a placeholder). */
function joinHost(listen: string): string {
  const i = listen.lastIndexOf(':')
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '')
  const port = listen.slice(i + 1)
  return host === '' || host === '0.0.0.0' || host === '::' ? `<this host>:${port}` : `${listen.slice(0, i)}:${port}`
}
