/** The status model: one versioned JSON shape for `enclave status --json` and the daemon API. */
export const STATUS_VERSION = 1

export interface RouteStatus {
  route: string
  /** The OS route to the TUN is present. */
  installed: boolean
  /** This peer carries the route now (false: another exit node is preferred, or the session is down). */
  active: boolean
  reason?: string
}

export interface PeerStatus {
  identity: string
  description?: string
  publicKey: string
  state: 'Up' | 'Connecting' | 'Down' | 'Configured'
  endpoint?: string
  virtualAddress: string
  lastHandshakeSecondsAgo: number | null
  lastActivitySecondsAgo: number | null
  rxBytes: number
  txBytes: number
  rxPackets: number
  txPackets: number
  exitNodeFor: RouteStatus[]
}

export interface ExitUser {
  identity: string
  flows: number
  bytesToLan: number
  bytesFromLan: number
}

export interface StatusModel {
  version: number
  running: boolean
  pid?: number
  releaseVersion: string
  localIdentity: string
  publicKey: string
  profileLocation: string
  virtualAddress: string
  interface: string
  bindingAddress?: string
  logLevel?: number
  exitNode: {
    providesRoutes: string[]
    activeFlows: number
    unsolicitedDrops: number
    users: ExitUser[]
    warnings: string[]
  }
  counters?: Record<string, number>
  peers: PeerStatus[]
}
