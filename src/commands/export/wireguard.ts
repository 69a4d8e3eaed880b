import fs from 'node:fs'
import { Args, Flags } from '@oclif/core'
import { BaseCommand, configDirFlag } from '../../base-command.js'
import { EnclaveError } from '../../errors.js'
import { loadProfile } from '../../config/profile.js'
import { wireguardConfig } from '../../config/wireguard.js'

export default class ExportWireguard extends BaseCommand {
  static override summary = 'Print a wg-quick config for a peer that runs stock WireGuard (a phone, a router)'
  static override description =
    `The peer must already be added (\`enclave add <its public key>\`): its WireGuard app makes the key pair and shows the public key. Import the output into that app, or save it as /etc/wireguard/enclave.conf and run \`wg-quick up enclave\`.
AllowedIPs are this system's virtual address and the routes it provides as an exit node. The config holds no private key unless --private-key-file gives the peer's own; the app keeps its own key when you edit the tunnel.`
  static override examples = [
    '$ sudo <%= config.bin %> export wireguard 7QK2M --endpoint vpn.example.com:51820',
    '$ sudo <%= config.bin %> export wireguard 7QK2M --endpoint 203.0.113.7:51820 --private-key-file phone.key > phone.conf',
  ]
  static override enableJsonFlag = true
  static override args = { peer: Args.string({ description: "the peer's identity, virtual address or public key", required: true }) }
  static override flags = {
    endpoint: Flags.string({ description: 'how the peer reaches this system, host:port (its public address and LocalPort)' }),
    'private-key-file': Flags.string({ description: "a file with the peer's own private key, to make a complete config" }),
    output: Flags.string({
      char: 'o',
      description: 'write the config to this file, mode 0600 (it may hold a private key), instead of stdout',
    }),
    keepalive: Flags.integer({ description: 'PersistentKeepalive for the peer, seconds (0 = off)', min: 0, max: 65535, default: 25 }),
    ...configDirFlag,
  }

  async run() {
    const { args, flags } = await this.parse(ExportWireguard)
    let key: string | undefined
    if (flags['private-key-file']) {
      try {
        key = fs.readFileSync(flags['private-key-file'], 'utf8')
      } catch (e) {
        throw new EnclaveError('EUSAGE', `--private-key-file: ${(e as Error).message}`, 2)
      }
    }
    const out = wireguardConfig(loadProfile(this.profileFile(flags)), args.peer, {
      endpoint: flags.endpoint,
      peerPrivateKey: key,
      keepalive: flags.keepalive,
    })
    if (flags.output) {
      // Written aside with O_EXCL and mode 0600, then renamed: never readable by others, never half-written.
      const tmp = `${flags.output}.${process.pid}.tmp`
      const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600)
      try {
        fs.writeFileSync(fd, out.config)
      } finally {
        fs.closeSync(fd)
      }
      fs.renameSync(tmp, flags.output)
      this.logToStderr(`Wrote ${flags.output} (mode 0600)`)
    } else if (!this.jsonEnabled()) {
      process.stdout.write(out.config)
      if (out.incomplete.length)
        this.logToStderr(`Note: fill in ${out.incomplete.join(' and ')} before use (see \`enclave export wireguard --help\`).`)
    }
    return out
  }
}
