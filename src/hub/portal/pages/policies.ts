/**
 * Policies: the list, and one form for a new policy or an edit, with a Preview that shows the sender ->
 * receiver pairs the change would open or close (HubAdmin.putPolicy with dryRun) and saves nothing.
 * The fields are the CLI's flags (policyBody), so a mistake reads as `enclave hub policy` says it.
 */
import { EnclaveError } from '../../../errors.js'
import { notFound, usage } from '../../admin.js'
import type { PolicyRow } from '../../model.js'
import { policyBody } from '../../policy-flags.js'
import { type Html, html } from '../html.js'
import type { PageResult } from '../types.js'
import { type Ctx, form, page, pairSummary, tags } from './common.js'

interface PolicyForm {
  description: string
  /** The description being edited (empty for a new policy). */
  original: string
  senders: string
  receivers: string
  gateway: string
  acl: string
  allowIp: string
  enabled: boolean
}

const acl = (a: { Protocol: string; Ports?: string }) => (a.Ports ? `${a.Protocol.toLowerCase()}:${a.Ports}` : a.Protocol.toLowerCase())

function fromRow(p: PolicyRow): PolicyForm {
  const b = p.body
  return {
    description: p.description,
    original: p.description,
    senders: b.SenderTags.join(', '),
    receivers: (b.ReceiverTags ?? []).join(', '),
    gateway: b.Gateway ? b.Gateway.Routes.map((r) => `${b.Gateway?.Identity}:${r}`).join(', ') : '',
    acl: b.Acls.map(acl).join('\n'),
    allowIp: (b.GatewayAllowedIpRanges ?? []).map((r) => r.IpRange).join(', '),
    enabled: p.enabled,
  }
}

function fromPost(f: URLSearchParams): PolicyForm {
  const g = (k: string) => (f.get(k) ?? '').trim()
  return {
    description: g('description'),
    original: g('original'),
    senders: g('senders'),
    receivers: g('receivers'),
    gateway: g('gateway'),
    acl: f.get('acl') ?? '',
    allowIp: g('allow-ip'),
    enabled: f.has('enabled'),
  }
}

async function byId(c: Ctx, id: string): Promise<PolicyRow> {
  const p = (await c.r.admin.listPolicies()).find((x) => String(x.id) === id)
  if (!p) throw notFound(`no policy ${id} (see the policies page)`)
  return p
}

export async function policiesPage(c: Ctx): Promise<PageResult> {
  const policies = await c.r.admin.listPolicies()
  const to = (p: PolicyRow): Html => {
    const b = p.body
    if (!b.Gateway) return tags(b.ReceiverTags ?? [])
    return html`gateway ${b.Gateway.Routes.map((r) => html`<span class="mono">${b.Gateway?.Identity}:${r}</span> `)}${
      b.GatewayAllowedIpRanges?.length
        ? html`<br><span class="muted">only ${b.GatewayAllowedIpRanges.map((r) => r.IpRange).join(', ')}</span>`
        : ''
    }`
  }
  const rows = policies.map(
    (p) =>
      html`<tr><td>${p.description}</td><td>${tags(p.body.SenderTags)}</td><td>${to(p)}</td><td class="mono">${p.body.Acls.map(acl).join(' ')}</td><td>${
        p.enabled ? 'yes' : html`<span class="muted">no</span>`
      }</td>${
        c.canChange
          ? html`<td class="nowrap"><a href="/policies/${p.id}/edit">Edit</a> ${form(
              c,
              `/policies/${p.id}/delete`,
              html`<button type="submit" class="danger" aria-label="Delete policy ${p.description}">Delete</button>`,
            )}</td>`
          : ''
      }</tr>`,
  )
  const table = policies.length
    ? html`<table><thead><tr><th>Name</th><th>Senders</th><th>Receivers or gateway</th><th>ACLs</th><th>Enabled</th>${
        c.canChange ? html`<th>Actions</th>` : ''
      }</tr></thead><tbody>${rows}</tbody></table>`
    : html`<p class="muted">No policies: no system can reach another.</p>`
  return page(
    c,
    'Policies',
    '/policies',
    html`${c.canChange ? html`<p><a href="/policies/new" class="button">New policy</a></p>` : ''}${table}`,
  )
}

function policyForm(c: Ctx, f: PolicyForm, preview?: Html): Html {
  return html`${form(
    c,
    '/policies',
    html`<input type="hidden" name="original" value="${f.original}">
<label for="description">Name</label><input type="text" id="description" name="description" value="${f.description}" required placeholder="laptops to servers">
<label for="senders">Senders</label><input type="text" id="senders" name="senders" value="${f.senders}" placeholder="tags that start traffic: laptop, admin">
<label for="receivers">Receivers</label><input type="text" id="receivers" name="receivers" value="${f.receivers}" placeholder="tags they may reach: server">
<label for="gateway">Or gateway</label><input type="text" id="gateway" name="gateway" value="${f.gateway}" placeholder="instead of receivers: G982V:172.26.0.0/20">
<label for="allow-ip">Only addresses</label><input type="text" id="allow-ip" name="allow-ip" value="${f.allowIp}" placeholder="with a gateway: 172.26.1.5, 172.26.2.0/24">
<label for="acl">ACLs</label><textarea id="acl" name="acl" rows="4" placeholder="one per line: icmp, any, tcp:22, udp:53, tcp:8000-8100">${f.acl}</textarea>
<label for="enabled">Enabled</label><span><input type="checkbox" id="enabled" name="enabled" value="1"${f.enabled ? html` checked` : ''}></span>
<span></span><span>${
      c.canChange
        ? html`<button type="submit" name="action" value="preview">Preview</button> <button type="submit" name="action" value="save" class="primary">Save policy</button> <a href="/policies">Cancel</a>`
        : html`<span class="muted">A viewer changes nothing.</span> <a href="/policies">Back</a>`
    }</span>`,
    'card grid',
  )}${preview ?? ''}`
}

export function newPolicyPage(c: Ctx): PageResult {
  return page(
    c,
    'New policy',
    '/policies',
    policyForm(c, { description: '', original: '', senders: '', receivers: '', gateway: '', acl: '', allowIp: '', enabled: true }),
  )
}

export async function editPolicyPage(c: Ctx, id: string): Promise<PageResult> {
  return page(c, 'Edit policy', '/policies', policyForm(c, fromRow(await byId(c, id))))
}

function previewSection(d: { opened: string[]; closed: string[] }): Html {
  const lines = [
    ...d.opened.map((p) => html`<li class="plus mono">+ ${p}</li>`),
    ...d.closed.map((p) => html`<li class="minus mono">- ${p}</li>`),
  ]
  return html`<section id="preview" class="card"><h2>Preview</h2>${
    lines.length ? html`<ul class="pairs">${lines}</ul>` : html`<p>No sender -> receiver pair changes</p>`
  }<p class="muted">Nothing was saved.</p></section>`
}

export async function policyPost(c: Ctx): Promise<PageResult> {
  const f = fromPost(c.r.form)
  const action = c.r.form.get('action')
  const title = f.original ? 'Edit policy' : 'New policy'
  if (action !== 'preview' && action !== 'save') throw usage('choose Preview or Save policy')
  const a = c.r.admin
  try {
    if (!f.description) throw usage('a policy needs a name (its description)')
    const body = policyBody({
      senders: f.senders,
      receivers: f.receivers,
      gateway: f.gateway,
      acl: f.acl
        .split(/\r?\n/)
        .map((l) => l.trim())
        .filter(Boolean),
      'allow-ip': f.allowIp,
    })
    const renamed = !!f.original && f.original !== f.description
    if (renamed && (await a.listPolicies()).some((p) => p.description === f.description))
      throw usage(`a policy named "${f.description}" exists; choose another name`)
    if (action === 'preview') {
      // A rename moves no pair: the preview is the change of the policy under its old name.
      const d = f.original
        ? await a.putPolicy(f.original, body, { enabled: f.enabled, dryRun: true })
        : await a.putPolicy(f.description, body, { create: true, enabled: f.enabled, dryRun: true })
      return page(c, title, '/policies', policyForm(c, f, previewSection(d)))
    }
    let d: { opened: string[]; closed: string[] }
    if (!f.original) d = await a.putPolicy(f.description, body, { create: true, enabled: f.enabled })
    else if (!renamed) d = await a.putPolicy(f.original, body, { enabled: f.enabled })
    else {
      // A new name: the policy under it first, then the old one goes (the pairs stay open throughout).
      d = await a.putPolicy(f.description, body, { create: true, enabled: f.enabled })
      const gone = await a.deletePolicy(f.original)
      d = { opened: d.opened.filter((p) => !gone.closed.includes(p)), closed: gone.closed.filter((p) => !d.opened.includes(p)) }
    }
    return {
      redirect: '/policies',
      flash: { kind: 'ok', text: `Policy "${f.description}" ${f.original ? 'saved' : 'created'}: ${pairSummary(d)}` },
    }
  } catch (e) {
    // A mistake shows the form again as typed, with the reason (the Preview and Save alike).
    if (!(e instanceof EnclaveError) || (e.code !== 'EUSAGE' && e.code !== 'ENOTFOUND')) throw e
    return page(c, title, '/policies', policyForm(c, f), { status: 400, flash: { kind: 'error', text: e.message } })
  }
}

export async function deletePolicyPost(c: Ctx, id: string): Promise<PageResult> {
  const p = await byId(c, id)
  const d = await c.r.admin.deletePolicy(p.description)
  return { redirect: '/policies', flash: { kind: 'ok', text: `Policy "${d.description}" deleted: ${pairSummary(d)}` } }
}
