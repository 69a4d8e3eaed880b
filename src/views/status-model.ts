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
  /** The peer's Tags in this profile (what policies match it by). */
  tags?: string[]
  /** Up, but we have sent it data and heard nothing authenticated back for this many seconds (15 or more). */
  noReplySeconds?: number
  /** On a system enrolled with a hub: where the peer comes from. */
  source?: 'local' | 'hub'
  /**
   * The path the hub helped find (issue 20): direct, local (a host address behind the same router) or
   * relay-udp (through the hub's relay), relay-tcp (over the hub connection, where UDP is blocked).
   * Absent for peers reached at their configured endpoint.
   */
  path?: 'direct' | 'local' | 'relay-udp' | 'relay-tcp'
  /** How often that path switched (direct <-> relay) since the agent learned of the peer. */
  pathSwitches?: number
  /** The path's round trip: the last answered probe on a direct path, else the last handshake's (ms). */
  roundTripMs?: number
  /** Payload bytes (in and out) moved while the path was a relay. */
  relayedBytes?: number
}

export interface HubStatusModel {
  url: string
  /** The link: connecting, up, unreachable, refused. */
  state: string
  /** This system on the hub: pending, approved, disabled, removed. */
  systemState?: string
  rev?: number
  mapAgeS?: number
  peers?: number
  error?: string
  notAccepted: string[]
  /** Endpoint discovery: none, easy, hard, blocked (UDP to the hub gets no answer), unknown. */
  nat?: string
  /** The address the hub saw this system's WireGuard port at. */
  reflexive?: string
}

export interface PolicyStatus {
  /** `Policies[2] "laptops to printer"` */
  label: string
  /** `laptops -> exit-node: Tcp 9100, Icmp; to 172.26.0.250/32` */
  rule: string
  enabled: boolean
  /** Names a receiver tag this system carries: this system enforces it on what it receives. */
  enforcedHere: boolean
  /** New flows this policy allowed since it was loaded. */
  hits: number
  /** New flows dropped that matched this policy's tags and destination but not its Acls. */
  drops: number
}

export interface PolicySection {
  /** none: no Policies key, every configured peer may reach this system and its provided routes. */
  mode: 'none' | 'enforce'
  summary: string
  /** This system's Tags. */
  tags: string[]
  policies: PolicyStatus[]
  /** New flows dropped that no policy came near. */
  droppedNoPolicy: number
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
  policy?: PolicySection
  /** The hub this system is enrolled with. */
  hub?: HubStatusModel
  /** Path switches (direct <-> relay) since the agent started (issue 20). */
  pathSwitches?: number
  peers: PeerStatus[]
}
