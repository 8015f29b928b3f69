#!/usr/bin/env node
// An app session against a skyfed node, driven by Bluesky's own client library,
// @atproto/api, unmodified (pinned in package-lock.json next to this file).
//
//   node session.mjs NODE_URL [--keep-going]
//
// Prints one JSON line per step, {"name", "ok", "detail"}, and exits 1 at the first
// failed step with a message naming it on stderr. --keep-going runs every step and
// still exits 1 if any failed (to see everything that is missing at once; a step
// that needs what a failed one would have made fails saying so). Nothing is skipped.
//
// The library checks every answer against the lexicons itself (XrpcClient validates
// each output), so a field of the wrong type or a missing required one is a failure
// even where no assertion below looks at it. tests/test_atproto_api_js.py runs this
// against a fresh node.

import { AppBskyFeedDefs, AtpAgent, AtUri, RichText, XRPCError } from '@atproto/api'
import { deflateSync } from 'node:zlib'
import { randomBytes } from 'node:crypto'
import { isDeepStrictEqual } from 'node:util'

const args = process.argv.slice(2)
const keepGoing = args.includes('--keep-going')
const url = args.find((a) => !a.startsWith('--'))
if (!url) {
  console.error('usage: node session.mjs NODE_URL [--keep-going]')
  process.exit(2)
}

const REQUEST_TIMEOUT_MS = 20_000
const WAIT_MS = 10_000
const PASSWORD = 'correct horse battery staple'
const TOKEN = randomBytes(4).toString('hex') // handles and search words unique per run

// ---------------------------------------------------------------------------------------
// Running steps

const failures = []

function emit(name, ok, detail) {
  process.stdout.write(JSON.stringify({ name, ok, detail }) + '\n')
}

function describe(err) {
  if (err instanceof XRPCError) {
    // An answer the library's lexicon check refused: say which method and what.
    const invalid = err.validationError
      ? ` (${err.lexiconNsid}: ${err.validationError.message})`
      : ''
    return `XRPC ${err.status} ${err.error}: ${err.message}${invalid}`
  }
  if (err instanceof Error) return `${err.name}: ${err.message}`
  return String(err)
}

async function step(name, fn) {
  let detail
  try {
    detail = await fn()
  } catch (err) {
    const why = describe(err)
    emit(name, false, why)
    failures.push(name)
    if (!keepGoing) {
      console.error(`session failed at step "${name}": ${why}`)
      process.exit(1)
    }
    return
  }
  emit(name, true, detail ?? '')
}

class Check extends Error {
  name = 'Check'
}

function check(cond, message) {
  if (!cond) throw new Check(message)
}

function eq(got, want, what) {
  if (!isDeepStrictEqual(got, want)) {
    throw new Check(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)
  }
}

// A value an earlier step makes: a clear failure when that step failed.
function need(value, stepName) {
  if (value === undefined || value === null) {
    throw new Check(`needs what step "${stepName}" makes, and that step failed`)
  }
  return value
}

async function expectXrpcError(promise, what) {
  try {
    await promise
  } catch (err) {
    if (err instanceof XRPCError) return err
    throw err
  }
  throw new Check(`${what} was accepted; it must be refused`)
}

async function waitFor(what, probe) {
  const deadline = Date.now() + WAIT_MS
  let last
  for (;;) {
    last = await probe()
    if (last) return last
    if (Date.now() > deadline) throw new Check(`timed out after ${WAIT_MS} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100)) // poll interval
  }
}

function timedFetch(input, init) {
  return fetch(input, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
}

function newAgent() {
  return new AtpAgent({ service: url, fetch: timedFetch })
}

// ---------------------------------------------------------------------------------------
// A small PNG made here (solid colour, RGB, 8 bits), so the images are real ones.

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  return c >>> 0
})

function crc32(bytes) {
  let c = 0xffffffff
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

function chunk(type, data) {
  const head = Buffer.alloc(8)
  head.writeUInt32BE(data.length, 0)
  head.write(type, 4, 'latin1')
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0)
  return Buffer.concat([head, data, crc])
}

function makePng(width, height, [r, g, b]) {
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr.set([8, 2, 0, 0, 0], 8) // bit depth 8, colour type RGB
  const row = Buffer.alloc(1 + width * 3)
  for (let x = 0; x < width; x++) row.set([r, g, b], 1 + x * 3)
  const raw = Buffer.concat(Array.from({ length: height }, () => row))
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  return Buffer.concat([
    signature,
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

const IMAGE_MAGIC = [
  [0x89, 0x50, 0x4e, 0x47], // PNG
  [0xff, 0xd8, 0xff], // JPEG
  [0x52, 0x49, 0x46, 0x46], // RIFF (WebP)
  [0x47, 0x49, 0x46, 0x38], // GIF
]

// GET a view URL; the bytes, checked to be an image.
async function fetchImage(viewUrl, what) {
  check(typeof viewUrl === 'string' && /^https?:\/\//.test(viewUrl), `${what} is not a URL: ${viewUrl}`)
  const res = await timedFetch(viewUrl)
  check(res.ok, `GET ${what} ${viewUrl} answered ${res.status}`)
  const type = res.headers.get('content-type') ?? ''
  check(type.startsWith('image/'), `GET ${what} ${viewUrl} has content-type ${type}`)
  const bytes = Buffer.from(await res.arrayBuffer())
  check(
    IMAGE_MAGIC.some((magic) => magic.every((b, i) => bytes[i] === b)),
    `GET ${what} ${viewUrl} is not an image (${bytes.subarray(0, 8).toString('hex')})`,
  )
  return bytes
}

// ---------------------------------------------------------------------------------------
// Helpers over the library

const now = () => new Date().toISOString()

// JSON with object keys sorted, to compare values whatever order their keys came in.
function canonical(value) {
  const sorted = (v) =>
    Array.isArray(v)
      ? v.map(sorted)
      : v && typeof v === 'object'
        ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])]))
        : v
  return JSON.stringify(sorted(value))
}
const ref = (made) => ({ uri: made.uri, cid: made.cid })
const rkeyOf = (uri) => new AtUri(uri).rkey

async function timelineUris(agent) {
  const { data } = await agent.getTimeline({ limit: 100 })
  return data.feed.map((item) => item.post.uri)
}

async function allNotifications(agent, limit) {
  const seen = []
  let cursor
  for (let page = 0; page < 50; page++) {
    const { data } = await agent.listNotifications({ limit, cursor })
    seen.push(...data.notifications)
    if (!data.cursor || data.notifications.length === 0) return seen
    check(data.cursor !== cursor, `listNotifications repeated its cursor ${cursor}`)
    cursor = data.cursor
  }
  throw new Check('listNotifications never ran out of pages')
}

async function searchUris(agent, params) {
  const { data } = await agent.app.bsky.feed.searchPosts(params)
  return data.posts.map((p) => p.uri)
}

// ---------------------------------------------------------------------------------------
// The session

const s = {} // what the steps make, for the steps after them
const agents = {}
const NAMES = ['alice', 'bob', 'carol', 'dan']
const words = { harbour: `harbour${TOKEN}`, gone: `ephemeral${TOKEN}` }

await step('describeServer', async () => {
  const { data } = await newAgent().com.atproto.server.describeServer()
  check(data.availableUserDomains.length > 0, 'no availableUserDomains')
  s.domain = data.availableUserDomains[0]
  return `${data.did}, handles under ${s.domain}`
})

await step('createAccount', async () => {
  const domain = need(s.domain, 'describeServer')
  for (const name of NAMES) {
    const agent = newAgent()
    const handle = `${name}-${TOKEN}${domain.startsWith('.') ? domain : '.' + domain}`
    const { data } = await agent.createAccount({ handle, password: PASSWORD })
    eq(data.handle, handle, 'createAccount handle')
    check(data.did.startsWith('did:'), `createAccount did ${data.did}`)
    eq(agent.did, data.did, `${name}'s session did`)
    agents[name] = agent
    s[name] = { did: data.did, handle }
  }
  return NAMES.map((n) => s[n].handle).join(', ')
})

await step('login', async () => {
  for (const name of NAMES) {
    const who = need(s[name], 'createAccount')
    const agent = newAgent()
    const { data } = await agent.login({ identifier: who.handle, password: PASSWORD })
    eq(data.did, who.did, `${name} login did`)
    eq(data.active ?? true, true, `${name} login active`)
    // The DID document names this node, so the agent keeps talking to it.
    eq(agent.pdsUrl?.origin, new URL(url).origin, `${name}'s PDS endpoint from the didDoc`)
    const session = await agent.com.atproto.server.getSession()
    eq(session.data.handle, who.handle, `${name} getSession handle`)
    agents[name] = agent
  }
  return 'createSession and getSession for every account'
})

const { alice, bob, carol, dan } = new Proxy(
  {},
  { get: (_, name) => () => need(agents[name], 'login') },
)

await step('preferences put/get', async () => {
  const given = [
    { $type: 'app.bsky.actor.defs#adultContentPref', enabled: false },
    { $type: 'app.bsky.actor.defs#contentLabelPref', label: 'graphic-media', visibility: 'warn' },
    {
      $type: 'app.bsky.actor.defs#savedFeedsPrefV2',
      items: [{ id: '3l6ovcmm2vd2j', type: 'timeline', value: 'following', pinned: true }],
    },
    // A type no lexicon here knows: kept exactly as given.
    { $type: 'app.skyfed.test.prefs#opaque', note: 'kept as given', nested: { n: 3 } },
  ]
  await alice().app.bsky.actor.putPreferences({ preferences: given })
  const { data } = await alice().app.bsky.actor.getPreferences()
  eq(data.preferences.map(canonical).sort(), given.map(canonical).sort(), 'getPreferences')
  const parsed = await alice().getPreferences()
  eq(parsed.moderationPrefs.adultContentEnabled, false, 'parsed adultContentEnabled')
  eq(parsed.savedFeeds.map((f) => f.value), ['following'], 'parsed savedFeeds')
  // Private to the account.
  const other = await bob().app.bsky.actor.getPreferences()
  check(
    !other.data.preferences.some((p) => p.$type === 'app.skyfed.test.prefs#opaque'),
    "bob's getPreferences shows alice's preferences",
  )
  return `${data.preferences.length} preferences round-tripped`
})

await step('profile', async () => {
  await alice().upsertProfile((existing) => ({
    ...(existing ?? {}),
    displayName: `Alice ${TOKEN}`,
    description: 'pictures of harbours',
  }))
  const { data } = await bob().getProfile({ actor: s.alice.did })
  eq(data.displayName, `Alice ${TOKEN}`, 'profile displayName')
  eq(data.description, 'pictures of harbours', 'profile description')
  return `${data.handle}: ${data.displayName}`
})

await step('follow', async () => {
  const pairs = [
    ['bob', 'alice'],
    ['carol', 'alice'],
    ['bob', 'carol'],
    ['alice', 'bob'],
    ['alice', 'dan'],
  ]
  s.follows = {}
  for (const [who, whom] of pairs) {
    const made = await need(agents[who], 'login').follow(need(s[whom], 'createAccount').did)
    s.follows[`${who}->${whom}`] = made.uri
  }
  const profile = await bob().getProfile({ actor: s.alice.did })
  eq(profile.data.followersCount, 2, "alice's followersCount")
  eq(profile.data.viewer?.following, s.follows['bob->alice'], "bob's viewer.following of alice")
  return `${pairs.length} follows`
})

await step('post text', async () => {
  s.plain = await alice().post({ text: `a first post about the ${words.harbour}`, langs: ['en'] })
  s.bobPlain = await bob().post({ text: "bob's own post", langs: ['en'] })
  s.danPost = await dan().post({ text: "dan's post", langs: ['en'] })
  return s.plain.uri
})

await step('avatar', async () => {
  const png = makePng(48, 48, [200, 60, 40])
  const { data } = await alice().uploadBlob(png, { encoding: 'image/png' })
  eq(data.blob.mimeType, 'image/png', 'uploadBlob mimeType')
  eq(data.blob.size, png.length, 'uploadBlob size')
  await alice().upsertProfile((existing) => ({ ...(existing ?? {}), avatar: data.blob }))
  const profile = await bob().getProfile({ actor: s.alice.did })
  eq(profile.data.displayName, `Alice ${TOKEN}`, 'displayName kept beside the avatar')
  const avatar = await fetchImage(profile.data.avatar, 'avatar')
  // Post views carry it too (the author's ProfileViewBasic).
  const plain = need(s.plain, 'post text')
  const { data: got } = await bob().getPosts({ uris: [plain.uri] })
  eq(got.posts[0]?.author.avatar, profile.data.avatar, "the avatar on alice's post view")
  return `avatar ${data.blob.ref.toString()} served at ${profile.data.avatar} (${avatar.length} bytes)`
})

await step('post with images', async () => {
  const wide = makePng(40, 30, [20, 90, 200])
  const square = makePng(16, 16, [30, 160, 60])
  const a = await alice().uploadBlob(wide, { encoding: 'image/png' })
  const b = await alice().uploadBlob(square, { encoding: 'image/png' })
  s.images = [
    { bytes: wide, alt: 'boats in a blue harbour', aspectRatio: { width: 40, height: 30 } },
    { bytes: square, alt: 'a green buoy', aspectRatio: { width: 16, height: 16 } },
  ]
  s.imagePost = await alice().post({
    text: 'two pictures from the harbour',
    langs: ['en'],
    embed: {
      $type: 'app.bsky.embed.images',
      images: [
        { image: a.data.blob, alt: s.images[0].alt, aspectRatio: s.images[0].aspectRatio },
        { image: b.data.blob, alt: s.images[1].alt, aspectRatio: s.images[1].aspectRatio },
      ],
    },
  })
  const { data } = await alice().getPosts({ uris: [s.imagePost.uri] })
  eq(data.posts.length, 1, 'getPosts of the image post')
  eq(data.posts[0].embed?.$type, 'app.bsky.embed.images#view', 'image post embed $type')
  return s.imagePost.uri
})

await step('reply', async () => {
  const parent = ref(need(s.plain, 'post text'))
  s.reply = await bob().post({
    text: 'lovely light',
    reply: { root: parent, parent },
  })
  s.answer = await alice().post({
    text: 'thank you',
    reply: { root: parent, parent: ref(s.reply) },
  })
  return s.reply.uri
})

await step('quote', async () => {
  const quoted = ref(need(s.plain, 'post text'))
  s.quote = await carol().post({
    text: `quoting the ${words.harbour} post`,
    embed: { $type: 'app.bsky.embed.record', record: quoted },
  })
  return s.quote.uri
})

await step('mention', async () => {
  const rt = new RichText({ text: `hello @${need(s.alice, 'createAccount').handle}, nice boats` })
  await rt.detectFacets(carol()) // resolves the handle with resolveHandle
  const mentioned = rt.facets?.flatMap((f) => f.features).map((f) => f.did)
  eq(mentioned, [s.alice.did], 'mention facet did')
  s.mention = await carol().post({ text: rt.text, facets: rt.facets })
  return s.mention.uri
})

await step('like', async () => {
  const post = need(s.plain, 'post text')
  s.like = await bob().like(post.uri, post.cid)
  return s.like.uri
})

await step('repost', async () => {
  const post = need(s.plain, 'post text')
  s.repost = await carol().repost(post.uri, post.cid)
  return s.repost.uri
})

await step('timeline', async () => {
  const post = need(s.plain, 'post text')
  for (const made of ['reply', 'quote', 'like', 'repost']) need(s[made], made)
  const { data } = await bob().getTimeline({ limit: 100 })
  const uris = data.feed.map((i) => i.post.uri)
  for (const [what, made] of [
    ["alice's first post", post],
    ["bob's reply", s.reply],
    ["alice's answer", s.answer],
    ["carol's quote", s.quote],
    ["carol's mention", s.mention],
  ]) {
    check(uris.includes(made.uri), `${what} missing from bob's timeline`)
  }
  const item = data.feed.find((i) => i.post.uri === post.uri && !i.reason)
  check(item, "alice's first post is in the timeline only as a repost")
  const view = item.post
  eq(
    [view.likeCount, view.repostCount, view.replyCount, view.quoteCount],
    [1, 1, 1, 1],
    'like, repost, reply and quote counts',
  )
  eq(view.viewer?.like, s.like.uri, "bob's viewer.like")
  const repost = data.feed.find((i) => i.reason && i.post.uri === post.uri)
  check(repost, "carol's repost is not in bob's timeline")
  check(AppBskyFeedDefs.isReasonRepost(repost.reason), `repost reason ${repost.reason.$type}`)
  eq(repost.reason.by.did, s.carol.did, 'repost reason by')
  const replyItem = data.feed.find((i) => i.post.uri === s.reply.uri)
  check(AppBskyFeedDefs.isPostView(replyItem.reply?.parent), 'reply parent is not a postView')
  eq(replyItem.reply.parent.uri, post.uri, 'reply parent uri')
  const quoteItem = data.feed.find((i) => i.post.uri === s.quote.uri)
  eq(quoteItem.post.embed?.$type, 'app.bsky.embed.record#view', 'quote embed $type')
  eq(quoteItem.post.embed.record.uri, post.uri, 'quoted uri')
  return `${data.feed.length} items`
})

await step('timeline with hydrated images', async () => {
  const post = need(s.imagePost, 'post with images')
  const { data } = await bob().getTimeline({ limit: 100 })
  const item = data.feed.find((i) => i.post.uri === post.uri)
  check(item, "the image post is not in bob's timeline")
  const view = item.post
  eq(view.embed?.$type, 'app.bsky.embed.images#view', 'image post embed $type')
  eq(view.embed.images.length, 2, 'number of images in the view')
  let bytes = 0
  for (const [i, image] of view.embed.images.entries()) {
    eq(image.alt, s.images[i].alt, `image ${i} alt`)
    eq(image.aspectRatio, s.images[i].aspectRatio, `image ${i} aspectRatio`)
    const full = await fetchImage(image.fullsize, `image ${i} fullsize`)
    check(full.equals(s.images[i].bytes), `image ${i} fullsize bytes differ from the upload`)
    const thumb = await fetchImage(image.thumb, `image ${i} thumb`)
    bytes += full.length + thumb.length
  }
  return `${bytes} image bytes fetched from the view URLs`
})

await step('author feed filters', async () => {
  const post = need(s.imagePost, 'post with images')
  const answer = need(s.answer, 'reply')
  const feed = async (filter) => {
    const { data } = await bob().getAuthorFeed({ actor: s.alice.did, filter, limit: 100 })
    return data.feed.map((i) => i.post.uri)
  }
  eq(await feed('posts_with_replies'), [answer.uri, post.uri, s.plain.uri], 'posts_with_replies')
  eq(await feed('posts_no_replies'), [post.uri, s.plain.uri], 'posts_no_replies')
  eq(await feed('posts_with_media'), [post.uri], 'posts_with_media')
  return 'posts_with_replies, posts_no_replies, posts_with_media'
})

await step('thread', async () => {
  const post = need(s.plain, 'post text')
  const { data } = await bob().getPostThread({ uri: post.uri, depth: 6 })
  check(AppBskyFeedDefs.isThreadViewPost(data.thread), `thread is ${data.thread.$type}`)
  eq(data.thread.post.uri, post.uri, 'thread anchor')
  const replies = data.thread.replies ?? []
  eq(replies.map((r) => r.post?.uri), [s.reply.uri], 'replies to the anchor')
  eq((replies[0].replies ?? []).map((r) => r.post?.uri), [s.answer.uri], 'replies to the reply')
  const up = await bob().getPostThread({ uri: s.answer.uri })
  eq(up.data.thread.parent?.post?.uri, s.reply.uri, 'parent of the answer')
  eq(up.data.thread.parent?.parent?.post?.uri, post.uri, 'grandparent of the answer')
  return 'anchor, replies and parents'
})

await step('notifications with every reason', async () => {
  const post = need(s.plain, 'post text')
  for (const made of ['like', 'repost', 'reply', 'quote', 'mention']) need(s[made], made)
  const expected = [
    ['like', s.bob.did, s.like.uri, post.uri],
    ['repost', s.carol.did, s.repost.uri, post.uri],
    ['follow', s.bob.did, s.follows['bob->alice'], undefined],
    ['follow', s.carol.did, s.follows['carol->alice'], undefined],
    ['reply', s.bob.did, s.reply.uri, post.uri],
    ['quote', s.carol.did, s.quote.uri, post.uri],
    ['mention', s.carol.did, s.mention.uri, undefined],
  ]
  const got = await waitFor('seven notifications', async () => {
    const { data } = await alice().listNotifications({ limit: 50 })
    return data.notifications.length >= expected.length ? data.notifications : null
  })
  const shape = (n) => [n.reason, n.author.did, n.uri, n.reasonSubject]
  const key = (row) => JSON.stringify(row)
  eq(got.map(shape).map(key).sort(), expected.map(key).sort(), 'notifications')
  for (const n of got) {
    eq(n.isRead, false, `${n.reason} isRead`)
    check(typeof n.record?.$type === 'string', `${n.reason} has no record $type`)
    check(!Number.isNaN(Date.parse(n.indexedAt)), `${n.reason} indexedAt ${n.indexedAt}`)
  }
  check(
    got.every((n, i) => i === 0 || got[i - 1].indexedAt >= n.indexedAt),
    'notifications are not newest first',
  )
  const paged = await allNotifications(alice(), 3)
  eq(paged.map((n) => n.uri), got.map((n) => n.uri), 'notifications paged 3 at a time')
  s.notifications = got
  return [...new Set(got.map((n) => n.reason))].join(', ')
})

await step('unread count', async () => {
  need(s.notifications, 'notifications with every reason')
  const { data } = await alice().countUnreadNotifications()
  eq(data.count, s.notifications.length, 'getUnreadCount')
  return `${data.count} unread`
})

await step('updateSeen', async () => {
  need(s.notifications, 'notifications with every reason')
  const seenAt = now()
  await alice().updateSeenNotifications(seenAt)
  eq((await alice().countUnreadNotifications()).data.count, 0, 'unread after updateSeen')
  const { data } = await alice().listNotifications({ limit: 50 })
  check(data.notifications.every((n) => n.isRead), 'a notification is unread after updateSeen')
  check(data.seenAt !== undefined, 'listNotifications has no seenAt after updateSeen')
  s.lateLike = await carol().like(s.plain.uri, s.plain.cid)
  const after = await waitFor('a new unread notification', async () => {
    const { data } = await alice().countUnreadNotifications()
    return data.count > 0 ? data.count : null
  })
  eq(after, 1, 'unread after a new like')
  const latest = (await alice().listNotifications({ limit: 1 })).data.notifications[0]
  eq([latest.reason, latest.uri, latest.isRead], ['like', s.lateLike.uri, false], 'newest')
  return `seen at ${seenAt}; one new like unread`
})

await step('search posts', async () => {
  const post = need(s.plain, 'post text')
  const quote = need(s.quote, 'quote')
  const hits = await waitFor('the search index', async () => {
    const uris = await searchUris(bob(), { q: words.harbour, limit: 25 })
    return uris.length >= 2 ? uris : null
  })
  eq([...hits].sort(), [post.uri, quote.uri].sort(), `searchPosts ${words.harbour}`)
  const latest = await searchUris(bob(), { q: words.harbour, sort: 'latest' })
  eq(latest, [quote.uri, post.uri], 'searchPosts sort=latest')
  const from = await searchUris(bob(), { q: `${words.harbour} from:${s.alice.handle}` })
  eq(from, [post.uri], 'searchPosts from:')
  const fromParam = await searchUris(bob(), { q: words.harbour, author: s.carol.did })
  eq(fromParam, [quote.uri], 'searchPosts author=')
  const none = await searchUris(bob(), { q: `nothing${TOKEN}matches` })
  eq(none, [], 'searchPosts for a word nobody wrote')
  return `${hits.length} hits`
})

await step('search actors', async () => {
  need(s.alice, 'createAccount')
  const { data } = await bob().searchActors({ q: `alice-${TOKEN}` })
  eq(data.actors.map((a) => a.did), [s.alice.did], 'searchActors by handle')
  const byName = await bob().searchActors({ q: `Alice ${TOKEN}` })
  check(byName.data.actors.some((a) => a.did === s.alice.did), 'searchActors by display name')
  const typeahead = await bob().searchActorsTypeahead({ q: `alice-${TOKEN.slice(0, 4)}` })
  eq(typeahead.data.actors.map((a) => a.did), [s.alice.did], 'searchActorsTypeahead')
  return 'searchActors and searchActorsTypeahead'
})

await step('mute and unmute', async () => {
  const quote = need(s.quote, 'quote')
  check((await timelineUris(bob())).includes(quote.uri), "carol's quote not in bob's timeline")
  await bob().mute(s.carol.did)
  const muted = await bob().getProfile({ actor: s.carol.did })
  eq(muted.data.viewer?.muted, true, 'viewer.muted')
  const mutes = await bob().app.bsky.graph.getMutes()
  eq(mutes.data.mutes.map((p) => p.did), [s.carol.did], 'getMutes')
  const { data } = await bob().getTimeline({ limit: 100 })
  check(
    !data.feed.some((i) => i.post.author.did === s.carol.did || i.reason?.by?.did === s.carol.did),
    "a muted account's post or repost is in the timeline",
  )
  await bob().unmute(s.carol.did)
  const unmuted = await bob().getProfile({ actor: s.carol.did })
  check(unmuted.data.viewer?.muted !== true, 'viewer.muted after unmuting')
  check((await timelineUris(bob())).includes(quote.uri), 'unmuted posts came back')
  return 'muted posts left the timeline and came back'
})

await step('blocks hide posts', async () => {
  const danPost = need(s.danPost, 'post text')
  const post = need(s.plain, 'post text')
  check((await timelineUris(alice())).includes(danPost.uri), "dan's post not in alice's timeline")
  const block = await alice().app.bsky.graph.block.create(
    { repo: s.alice.did },
    { subject: s.dan.did, createdAt: now() },
  )
  check(!(await timelineUris(alice())).includes(danPost.uri), "a blocked account's post shows")
  const seen = await alice().getProfile({ actor: s.dan.did })
  eq(seen.data.viewer?.blocking, block.uri, 'viewer.blocking')
  const seenBy = await dan().getProfile({ actor: s.alice.did })
  eq(seenBy.data.viewer?.blockedBy, true, 'viewer.blockedBy')
  // The other direction: the blocked account does not get the blocker's posts.
  const thread = await dan().getPostThread({ uri: post.uri })
  check(AppBskyFeedDefs.isBlockedPost(thread.data.thread), `dan sees ${thread.data.thread.$type}`)
  const got = await dan().getPosts({ uris: [post.uri] })
  eq(got.data.posts, [], "the blocked account's getPosts of the blocker's post")
  const blocks = await alice().app.bsky.graph.getBlocks()
  eq(blocks.data.blocks.map((p) => p.did), [s.dan.did], 'getBlocks')
  await alice().app.bsky.graph.block.delete({ repo: s.alice.did, rkey: rkeyOf(block.uri) })
  check((await timelineUris(alice())).includes(danPost.uri), 'unblocked posts came back')
  return 'hidden both ways, back after unblocking'
})

await step('lists', async () => {
  const bobPlain = need(s.bobPlain, 'post text')
  const list = await alice().app.bsky.graph.list.create(
    { repo: s.alice.did },
    {
      purpose: 'app.bsky.graph.defs#curatelist',
      name: 'Harbour people',
      description: 'people who post harbours',
      createdAt: now(),
    },
  )
  const item = await alice().app.bsky.graph.listitem.create(
    { repo: s.alice.did },
    { subject: s.bob.did, list: list.uri, createdAt: now() },
  )
  const { data } = await bob().app.bsky.graph.getList({ list: list.uri })
  eq(
    [data.list.uri, data.list.name, data.list.purpose, data.list.creator.did],
    [list.uri, 'Harbour people', 'app.bsky.graph.defs#curatelist', s.alice.did],
    'getList list view',
  )
  eq(data.items.map((i) => [i.uri, i.subject.did]), [[item.uri, s.bob.did]], 'getList items')
  const lists = await bob().app.bsky.graph.getLists({ actor: s.alice.did })
  eq(lists.data.lists.map((l) => l.uri), [list.uri], 'getLists')
  const feed = await alice().app.bsky.feed.getListFeed({ list: list.uri, limit: 50 })
  const authors = new Set(feed.data.feed.map((i) => i.post.author.did))
  check(feed.data.feed.some((i) => i.post.uri === bobPlain.uri), "bob's post not in the list feed")
  eq([...authors], [s.bob.did], 'authors in the list feed')
  return `${list.uri} with one member; list feed of ${feed.data.feed.length}`
})

await step('threadgate refuses a reply', async () => {
  const gated = await alice().post({ text: 'no replies to this one' })
  const gate = await alice().app.bsky.feed.threadgate.create(
    { repo: s.alice.did, rkey: rkeyOf(gated.uri) },
    { post: gated.uri, allow: [], createdAt: now() },
  )
  const refused = await expectXrpcError(
    bob().post({ text: 'replying anyway', reply: { root: ref(gated), parent: ref(gated) } }),
    'a reply the threadgate forbids',
  )
  check(refused.status >= 400 && refused.status < 500, `refused with ${refused.status}`)
  const { data } = await bob().getPostThread({ uri: gated.uri })
  check(AppBskyFeedDefs.isThreadViewPost(data.thread), `thread is ${data.thread.$type}`)
  eq(data.thread.post.threadgate?.uri, gate.uri, 'post view threadgate')
  eq(data.thread.post.viewer?.replyDisabled, true, "bob's viewer.replyDisabled")
  eq(data.thread.replies ?? [], [], 'replies under the gated post')
  return `refused: ${refused.error}`
})

await step('report', async () => {
  const danPost = need(s.danPost, 'post text')
  const { data } = await bob().com.atproto.moderation.createReport({
    reasonType: 'com.atproto.moderation.defs#reasonSpam',
    reason: 'selling boats in every reply',
    subject: { $type: 'com.atproto.repo.strongRef', uri: danPost.uri, cid: danPost.cid },
  })
  check(Number.isInteger(data.id), `report id ${data.id}`)
  eq(data.reportedBy, s.bob.did, 'reportedBy')
  eq(data.reasonType, 'com.atproto.moderation.defs#reasonSpam', 'reasonType')
  eq(data.subject.uri, danPost.uri, 'reported subject')
  const account = await bob().com.atproto.moderation.createReport({
    reasonType: 'com.atproto.moderation.defs#reasonRude',
    subject: { $type: 'com.atproto.admin.defs#repoRef', did: s.dan.did },
  })
  eq(account.data.subject.did, s.dan.did, 'reported account')
  check(account.data.id !== data.id, 'two reports share an id')
  return `reports ${data.id} and ${account.data.id}`
})

await step('deleted post gone from timeline and search', async () => {
  need(s.follows, 'follow')
  const doomed = await alice().post({ text: `this ${words.gone} post will not last` })
  check((await timelineUris(bob())).includes(doomed.uri), "the post is not in bob's timeline")
  await waitFor('the post in search', async () =>
    (await searchUris(bob(), { q: words.gone })).includes(doomed.uri),
  )
  await alice().deletePost(doomed.uri)
  check(!(await timelineUris(bob())).includes(doomed.uri), 'a deleted post is in the timeline')
  eq(await searchUris(bob(), { q: words.gone }), [], 'search after the delete')
  eq((await bob().getPosts({ uris: [doomed.uri] })).data.posts, [], 'getPosts after the delete')
  return doomed.uri
})

await step('refreshSession', async () => {
  const agent = alice()
  const before = agent.session
  await agent.sessionManager.refreshSession()
  const after = agent.session
  check(after.accessJwt !== before.accessJwt, 'the access token did not change')
  check(after.refreshJwt !== before.refreshJwt, 'the refresh token did not rotate')
  const { data } = await agent.com.atproto.server.getSession()
  eq(data.did, s.alice.did, 'getSession with the new token')
  return 'new access and refresh tokens'
})

await step('deleteSession', async () => {
  const agent = alice()
  const { refreshJwt } = agent.session
  // logout() swallows errors, so the call is made directly first.
  await agent.com.atproto.server.deleteSession(undefined, {
    headers: { authorization: `Bearer ${refreshJwt}` },
  })
  await agent.logout()
  const res = await timedFetch(new URL('/xrpc/com.atproto.server.refreshSession', url), {
    method: 'POST',
    headers: { authorization: `Bearer ${refreshJwt}` },
  })
  const body = await res.json()
  check(res.status === 400 || res.status === 401, `refresh after deleteSession: ${res.status}`)
  check(typeof body.error === 'string', 'the refusal has no error name')
  return `the old refresh token is refused (${res.status} ${body.error})`
})

if (failures.length > 0) {
  console.error(`session failed: ${failures.length} step(s): ${failures.join(', ')}`)
  process.exit(1)
}
console.error('session passed')
