// Keeps Bluesky's reference PDS (with an in-memory PLC directory, on localhost) up
// for tests/test_atproto_pds_e2e.py, and takes one JSON command per line on stdin,
// answering one JSON line on stdout: {"cmd": "account", "handle"}, {"cmd": "post",
// "as", "text"}, {"cmd": "reply", "as", "text", "root", "parent"} (refs {uri, cid}),
// {"cmd": "like", "as", "uri", "cid"}, {"cmd": "delete", "as", "uri"}. EOF stops it.
import { createInterface } from 'node:readline'
import { TestNetworkNoAppView } from '@atproto/dev-env'

const net = await TestNetworkNoAppView.create({ dbPostgresSchema: undefined })
const agents = new Map()
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n')
out({ pds: net.pds.url, plc: net.plc.url })

async function run(c) {
  if (c.cmd === 'account') {
    const agent = net.pds.getClient()
    const name = c.handle.split('.')[0]
    await agent.createAccount({ handle: c.handle, email: `${name}@x.test`, password: 'hunter2' })
    agents.set(agent.session.did, agent)
    return { did: agent.session.did }
  }
  const agent = agents.get(c.as)
  if (!agent) throw new Error('unknown account ' + c.as)
  if (c.cmd === 'post') return await agent.post({ text: c.text, createdAt: new Date().toISOString() })
  if (c.cmd === 'reply') {
    return await agent.post({
      text: c.text, reply: { root: c.root, parent: c.parent }, createdAt: new Date().toISOString(),
    })
  }
  if (c.cmd === 'like') return await agent.like(c.uri, c.cid)
  if (c.cmd === 'delete') {
    const [, , repo, collection, rkey] = c.uri.split('/')
    await agent.com.atproto.repo.deleteRecord({ repo, collection, rkey })
    return { ok: true }
  }
  throw new Error('unknown command ' + c.cmd)
}

const rl = createInterface({ input: process.stdin })
for await (const line of rl) {
  if (!line.trim()) continue
  try {
    out(await run(JSON.parse(line)))
  } catch (e) {
    out({ error: String(e && e.message ? e.message : e) })
  }
}
await net.close()
process.exit(0)
