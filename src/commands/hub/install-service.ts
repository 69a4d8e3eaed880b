import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Flags } from '@oclif/core'
import { BaseCommand } from '../../base-command.js'
import { EnclaveError } from '../../errors.js'
import { dataDirFlag, hubDir } from '../../hub/cli.js'
import { hubPaths } from '../../hub/hub.js'
import { HUB_UNIT_NAME, PACKAGE_ROOT, hiddenFromUnit, hubUnitFile } from '../../ops/service.js'
import { run } from '../../platform/linux/exec.js'
import { copyPackage } from '../install-service.js'

export default class HubInstallService extends BaseCommand {
  static override summary = 'Write the systemd unit for the hub (then: systemctl daemon-reload && systemctl enable --now enclave-hub)'
  static override description =
    'The hub runs as the user that owns its data directory (make one with `useradd --system enclave-hub` and `chown -R enclave-hub` the directory), with no capabilities, writing only its data directory. The unit is hardened (ProtectHome, PrivateTmp, ProtectSystem=strict): a program or data directory under /home, /root, /tmp or /var/tmp would be invisible to it, so such paths are refused.'
  static override examples = [
    '$ sudo <%= config.bin %> hub install-service --data-dir /var/lib/enclave-hub && sudo systemctl enable --now enclave-hub',
  ]
  static override enableJsonFlag = true
  static override flags = {
    ...dataDirFlag,
    'unit-dir': Flags.string({ description: 'where to write the unit (must exist)', default: '/etc/systemd/system' }),
    'install-to': Flags.string({ description: 'copy the program here first and run it from here (e.g. /opt/enclave)' }),
  }

  async run() {
    const { flags } = await this.parse(HubInstallService)
    const unitDir = flags['unit-dir']
    if (!fs.existsSync(unitDir) || !fs.statSync(unitDir).isDirectory())
      throw new EnclaveError('ENOENT', `--unit-dir ${unitDir}: no such directory (systemd reads /etc/systemd/system)`, 2)
    const dir = hubDir(flags['data-dir'])
    if (!fs.existsSync(hubPaths(dir).config))
      throw new EnclaveError('ENOHUB', `no hub in ${dir}: run \`enclave hub init --data-dir ${dir} --listen <ip:port>\` first`)
    const problems: string[] = []
    const root = flags['install-to'] ? path.resolve(flags['install-to']) : PACKAGE_ROOT
    for (const [what, p] of [
      ['the data directory', dir],
      ['node', process.execPath],
      [flags['install-to'] ? '--install-to' : 'the program (add --install-to /opt/enclave to copy it)', root],
    ] as const) {
      const hidden = hiddenFromUnit(p)
      if (hidden) problems.push(`${what} at ${p}: ${hidden}`)
    }
    if (problems.length) throw new EnclaveError('EHIDDEN', `no unit written: the service would not see ${problems.join('; ')}`, 2)
    if (flags['install-to']) {
      copyPackage(PACKAGE_ROOT, root)
      this.log(`Copied the program to ${root}`)
    }
    const owner = fs.statSync(dir).uid
    const user = userName(owner)
    if (!user) throw new EnclaveError('EINVAL', `${dir} belongs to uid ${owner}, which has no name in /etc/passwd`, 2)
    const file = path.join(unitDir, `${HUB_UNIT_NAME}.service`)
    const tmp = `${file}.tmp`
    fs.writeFileSync(tmp, hubUnitFile({ dataDir: dir, user, binPath: path.join(root, 'bin', 'run.js') }), { mode: 0o644 })
    fs.renameSync(tmp, file)
    this.log(`Wrote ${file} (runs as ${user}, the owner of ${dir})`)
    if (owner === 0)
      this.log(`Tip: run the hub as its own user: useradd --system enclave-hub && chown -R enclave-hub ${dir}, then run this again`)
    let reloaded = false
    if (fs.existsSync('/run/systemd/system') && path.resolve(unitDir) === '/etc/systemd/system')
      reloaded = (await run('systemctl', ['daemon-reload'])).code === 0
    this.log(
      reloaded
        ? `Ran \`systemctl daemon-reload\`. Now: sudo systemctl enable --now ${HUB_UNIT_NAME}`
        : `Now: sudo systemctl daemon-reload && sudo systemctl enable --now ${HUB_UNIT_NAME}`,
    )
    return { unit: file, dataDir: dir, user, program: root, daemonReloaded: reloaded }
  }
}

/** The name of `uid` from /etc/passwd (what systemd's User= takes). */
function userName(uid: number): string | undefined {
  if (uid === process.getuid?.()) return os.userInfo().username
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':')
    if (f.length > 3 && Number(f[2]) === uid) return f[0]
  }
  return undefined
}
