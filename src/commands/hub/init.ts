import { Flags } from '@oclif/core'
import { BaseCommand } from '../../base-command.js'
import { dataDirFlag, hubDir, portalUrl } from '../../hub/cli.js'
import { initHub } from '../../hub/hub.js'
import { redactUrl } from '../../hub/store.js'
import { EnclaveError } from '../../errors.js'
import fs from 'node:fs'

export default class HubInit extends BaseCommand {
  static override summary =
    "Create a hub: its key pair, its database and its configuration; prints the hub's public key and the join command"
  static override examples = [
    '$ sudo <%= config.bin %> hub init --data-dir /var/lib/enclave-hub --listen 0.0.0.0:8443',
    '$ <%= config.bin %> hub init --data-dir ./hub --listen 127.0.0.1:8443 --json',
    '$ <%= config.bin %> hub init --listen 0.0.0.0:8443 --store postgres --postgres-url "postgresql:///enclave_hub?host=/run/postgresql"',
    '$ <%= config.bin %> hub init --listen 0.0.0.0:8443 --store postgres --postgres-url "postgresql:///enclave_hub?host=/run/postgresql" --join --kek-file hub.kek',
  ]
  static override enableJsonFlag = true
  static override flags = {
    ...dataDirFlag,
    listen: Flags.string({ description: 'address:port agents connect to (TCP)', required: true }),
    store: Flags.string({
      description: 'sqlite (one file in the data directory) or postgres (several replicas)',
      options: ['sqlite', 'postgres'],
      default: 'sqlite',
    }),
    'postgres-url': Flags.string({
      description:
        'with --store postgres: the database, e.g. postgresql:///enclave_hub?host=/run/postgresql (or $ENCLAVE_HUB_POSTGRES_URL; keep passwords in ~/.pgpass or PGPASSWORD)',
    }),
    join: Flags.boolean({
      description: "add a replica to the hub already in that PostgreSQL database (needs the first replica's hub.kek)",
    }),
    'kek-file': Flags.string({ description: "with --join: the first replica's hub.kek (or $ENCLAVE_HUB_KEK)" }),
  }

  async run() {
    const { flags } = await this.parse(HubInit)
    const dir = hubDir(flags['data-dir'])
    const postgresUrl = flags['postgres-url'] || process.env.ENCLAVE_HUB_POSTGRES_URL
    if (flags.store === 'postgres' && !postgresUrl)
      throw new EnclaveError('EUSAGE', '--store postgres needs --postgres-url (or $ENCLAVE_HUB_POSTGRES_URL)', 2)
    if (flags.store !== 'postgres' && (flags['postgres-url'] || flags.join))
      throw new EnclaveError('EUSAGE', '--postgres-url and --join go with --store postgres', 2)
    let kek: string | undefined
    if (flags['kek-file'])
      try {
        kek = fs.readFileSync(flags['kek-file'], 'utf8')
      } catch (e) {
        throw new EnclaveError('EUSAGE', `--kek-file ${flags['kek-file']}: ${(e as Error).message}`, 2)
      }
    const r = await initHub(
      dir,
      flags.listen,
      flags.store === 'postgres' ? { postgresUrl, join: flags.join, kek, urlInConfig: !!flags['postgres-url'] } : {},
    )
    if (!this.jsonEnabled()) {
      this.log(r.replica ? `Hub replica created in ${dir} (the hub in ${redactUrl(postgresUrl as string)})` : `Hub created in ${dir}`)
      if (r.store === 'postgres' && !r.replica)
        this.log(`Store: PostgreSQL. For more replicas: copy ${dir}/hub.kek to each and run hub init --store postgres --join there.`)
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
