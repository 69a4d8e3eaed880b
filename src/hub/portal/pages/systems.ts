/**
 * Systems: the pending queue (approve or decline several at once), the list with tags edited in place
 * and state buttons, and one system's details with its routes and audit trail.
 */
import { parseTags, usage } from '../../admin.js'
import { type Html, html } from '../html.js'
import { systemDetail } from '../live.js'
import type { PageResult } from '../types.js'
import { type Ctx, form, page, pairSummary, stateText, systemLink, tags, when } from './common.js'

const STATE_VERBS = ['disable', 'enable', 'remove'] as const
const ROUTE_VERBS = ['approve', 'remove', 'add'] as const

/** Where a system form goes back to: its details page when sent from there, else the list. */
function back(c: Ctx, id: string): string {
  return c.r.form.get('from') === 'detail' ? `/systems/${encodeURIComponent(id)}` : '/systems'
}

function fromField(detail: boolean): Html {
  return detail ? html`<input type="hidden" name="from" value="detail">` : html``
}

function onlineCell(c: Ctx, id: string): Html {
  return c.r.live.online.has(id)
    ? html`<span class="online">online</span> <span class="muted">${c.r.live.path(id)}</span>`
    : html`<span class="offline">offline</span>`
}

function tagsCell(c: Ctx, id: string, list: string[], detail = false): Html {
  if (!c.canChange) return tags(list)
  return form(
    c,
    `/systems/${encodeURIComponent(id)}/tags`,
    html`${fromField(detail)}<input type="text" name="tags" value="${list.join(', ')}" aria-label="Tags of ${id}" placeholder="tag1, tag2" size="24"> <button type="submit" aria-label="Save tags of ${id}">Save</button>`,
    'inline nowrap',
  )
}

function stateButtons(c: Ctx, id: string, state: string, detail = false): Html {
  if (!c.canChange) return html``
  const b = (verb: string, label: string, cls = '') =>
    html`<button type="submit" name="action" value="${verb}"${cls ? html` class="${cls}"` : ''}>${label}</button>`
  return form(
    c,
    `/systems/${encodeURIComponent(id)}/state`,
    html`${fromField(detail)}${state === 'approved' ? b('disable', 'Disable') : ''}${state === 'disabled' ? b('enable', 'Enable') : ''} ${b('remove', 'Remove', 'danger')}`,
    'inline nowrap',
  )
}

export async function pendingPage(c: Ctx): Promise<PageResult> {
  const systems = await c.r.admin.listSystems({ pending: true })
  const keyRows = await c.r.admin.store.db
    .selectFrom('systems')
    .leftJoin('enrolment_keys', 'enrolment_keys.id', 'systems.enrolment_key_id')
    .select(['systems.identity as identity', 'enrolment_keys.key_id as keyId', 'enrolment_keys.description as description'])
    .where('systems.state', '=', 'pending')
    .execute()
  const keyOf = new Map(keyRows.map((k) => [k.identity, k]))
  if (!systems.length) return page(c, 'Pending systems', '/systems/pending', html`<p class="muted">No system is awaiting approval.</p>`)
  const rows = systems.map((s) => {
    const k = keyOf.get(s.identity)
    return html`<tr>${c.canChange ? html`<td><input type="checkbox" name="identity" value="${s.identity}" aria-label="Select ${s.identity}"></td>` : ''}<td>${systemLink(s.identity)}</td><td>${s.hostname}</td><td class="mono">${s.virtualAddress}</td><td>${
      k?.keyId
        ? html`<span class="mono">${k.keyId}</span> <span class="muted">${k.description}</span>`
        : html`<span class="muted">none</span>`
    }</td><td>${tags(s.tags)}</td><td>${when(s.enrolledAt, c.now)}</td></tr>`
  })
  const table = html`<table><thead><tr>${c.canChange ? html`<th><span class="sr">Select</span></th>` : ''}<th>Identity</th><th>Host name</th><th>Address</th><th>Enrolment key</th><th>Tags</th><th>Waiting since</th></tr></thead><tbody>${rows}</tbody></table>`
  const body = c.canChange
    ? form(
        c,
        '/systems/pending',
        html`${table}<p class="actions"><button type="submit" name="action" value="approve" class="primary">Approve</button> <button type="submit" name="action" value="decline" class="danger">Decline</button></p>`,
        '',
      )
    : table
  return page(
    c,
    'Pending systems',
    '/systems/pending',
    html`<p class="muted">Systems that enrolled with a key needing approval. They get no peers until approved; a declined one must enrol again with a new key pair.</p>${body}`,
  )
}

export async function pendingPost(c: Ctx): Promise<PageResult> {
  const action = c.r.form.get('action')
  if (action !== 'approve' && action !== 'decline') throw usage('choose Approve or Decline')
  const ids = c.r.form.getAll('identity')
  if (!ids.length) throw usage(`select at least one system to ${action}`)
  const out = await c.r.admin.setState(action, ids)
  const verb = action === 'approve' ? 'Approved' : 'Declined'
  return {
    redirect: c.pending > out.length ? '/systems/pending' : '/systems',
    flash: {
      kind: 'ok',
      text: `${verb} ${out.length === 1 ? '1 system' : `${out.length} systems`}: ${out.map((s) => s.identity).join(', ')}`,
    },
  }
}

export async function systemsPage(c: Ctx): Promise<PageResult> {
  const systems = await c.r.admin.listSystems()
  if (!systems.length)
    return page(
      c,
      'Systems',
      '/systems',
      html`<p class="muted">No system has enrolled yet: create an <a href="/keys">enrolment key</a> and run the join command on a system.</p>`,
    )
  const rows = systems.map(
    (s) =>
      html`<tr><td>${systemLink(s.identity)}</td><td>${s.hostname}</td><td class="mono">${s.virtualAddress}</td><td>${stateText(s.state)}${
        s.state === 'pending' ? html` <a href="/systems/pending">review</a>` : ''
      }</td><td>${onlineCell(c, s.identity)}</td><td>${when(s.lastSeenAt, c.now)}</td><td>${tagsCell(c, s.identity, s.tags)}</td>${
        c.canChange ? html`<td>${stateButtons(c, s.identity, s.state)}</td>` : ''
      }</tr>`,
  )
  return page(
    c,
    'Systems',
    '/systems',
    html`<table><thead><tr><th>Identity</th><th>Host name</th><th>Address</th><th>State</th><th>Online / path</th><th>Last seen</th><th>Tags</th>${
      c.canChange ? html`<th>Actions</th>` : ''
    }</tr></thead><tbody>${rows}</tbody></table>`,
  )
}

export async function systemPage(c: Ctx, which: string): Promise<PageResult> {
  const s = await systemDetail(c.r.admin, c.r.live, which)
  const row = await c.r.admin.findSystem(s.identity)
  const routeRows = s.routes.map(
    (rt) =>
      html`<tr><td class="mono">${rt.cidr}</td><td>${rt.source === 'agent' ? 'advertised by the system' : 'added by an admin'}</td><td>${
        rt.approved ? html`<span class="state-approved">approved</span>` : html`<span class="state-pending">awaiting approval</span>`
      }</td>${
        c.canChange
          ? html`<td>${form(
              c,
              `/systems/${encodeURIComponent(s.identity)}/routes`,
              html`<input type="hidden" name="cidr" value="${rt.cidr}">${
                rt.approved ? '' : html`<button type="submit" name="action" value="approve" class="primary">Approve</button> `
              }<button type="submit" name="action" value="remove" class="danger">Remove</button>`,
            )}</td>`
          : ''
      }</tr>`,
  )
  const routes = s.routes.length
    ? html`<table><thead><tr><th>Route</th><th>Source</th><th>State</th>${c.canChange ? html`<th>Actions</th>` : ''}</tr></thead><tbody>${routeRows}</tbody></table>`
    : html`<p class="muted">No routes.</p>`
  const addRoute = c.canChange
    ? form(
        c,
        `/systems/${encodeURIComponent(s.identity)}/routes`,
        html`<label for="cidr">Add a route</label> <input type="text" id="cidr" name="cidr" placeholder="172.26.0.0/20" required> <button type="submit" name="action" value="add">Add route</button>`,
        'card',
      )
    : ''
  const audit = s.audit.length
    ? html`<table><thead><tr><th>At</th><th>Rev</th><th>Actor</th><th>Action</th><th>Target</th></tr></thead><tbody>${[...s.audit]
        .reverse()
        .map(
          (a) => html`<tr><td>${when(a.at, c.now)}</td><td>${a.rev}</td><td>${a.actor}</td><td>${a.action}</td><td>${a.target}</td></tr>`,
        )}</tbody></table>`
    : html`<p class="muted">No entries.</p>`
  const body = html`<dl class="card grid">
<dt>Host name</dt><dd>${s.hostname}</dd>
<dt>Address</dt><dd class="mono">${s.virtualAddress}</dd>
<dt>Public key</dt><dd class="mono">${row.publicKey}</dd>
<dt>State</dt><dd>${stateText(s.state)} ${stateButtons(c, s.identity, s.state, true)}</dd>
<dt>Tags</dt><dd>${tagsCell(c, s.identity, s.tags, true)}</dd>
<dt>Online / path</dt><dd>${onlineCell(c, s.identity)}</dd>
<dt>Endpoint</dt><dd class="mono">${s.endpoint ?? html`<span class="muted">none</span>`}</dd>
<dt>NAT</dt><dd>${s.nat ?? html`<span class="muted">unknown</span>`}</dd>
<dt>Gateway consent</dt><dd>${s.allowGateway ? 'allowed' : 'not allowed'}</dd>
<dt>Enrolled</dt><dd>${when(s.enrolledAt, c.now)}</dd>
<dt>Last seen</dt><dd>${when(s.lastSeenAt, c.now)}</dd>
</dl>
<h2>Routes</h2>${routes}${addRoute}
<h2>Audit trail</h2>${audit}`
  return page(c, `System ${s.identity}`, '/systems', body)
}

export async function tagsPost(c: Ctx, id: string): Promise<PageResult> {
  const list = parseTags(c.r.form.get('tags') ?? '')
  const d = await c.r.admin.setTags(id, list)
  return {
    redirect: back(c, d.identity),
    flash: { kind: 'ok', text: `Tags of ${d.identity}: ${d.tags.length ? d.tags.join(', ') : 'none'} (${pairSummary(d)})` },
  }
}

export async function statePost(c: Ctx, id: string): Promise<PageResult> {
  const action = c.r.form.get('action') as (typeof STATE_VERBS)[number]
  if (!STATE_VERBS.includes(action)) throw usage('choose Disable, Enable or Remove')
  const [out] = await c.r.admin.setState(action, [id])
  return {
    redirect: action === 'remove' ? '/systems' : back(c, out.identity),
    flash: { kind: 'ok', text: `${out.identity} is ${out.state}` },
  }
}

export async function routesPost(c: Ctx, id: string): Promise<PageResult> {
  const action = c.r.form.get('action') as (typeof ROUTE_VERBS)[number]
  if (!ROUTE_VERBS.includes(action)) throw usage('choose Approve, Remove or Add route')
  const cidr = (c.r.form.get('cidr') ?? '').trim()
  if (!cidr) throw usage('give a route, e.g. 172.26.0.0/20')
  const a = c.r.admin
  const out = await (action === 'add' ? a.addRoute(id, cidr) : action === 'approve' ? a.approveRoute(id, cidr) : a.removeRoute(id, cidr))
  const done = action === 'add' ? 'added' : action === 'approve' ? 'approved' : 'removed'
  return {
    redirect: `/systems/${encodeURIComponent(out.identity)}`,
    flash: { kind: 'ok', text: `Route ${out.cidr} of ${out.identity} ${done}` },
  }
}
