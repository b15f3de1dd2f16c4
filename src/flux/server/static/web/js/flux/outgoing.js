// Composing outgoing mail (docs/PROTOCOL.md §5): every envelope of one send, exactly as
// flux.protocol.compose makes them, so the browser and the Python client send the same
// bytes for the same input (tests/web compare them under the vectors' randomness):
// cc/bcc/tags normalised (§5.1), one envelope per audience for BCC (§5.2), encrypt-then-
// sign (§5.3) with randomness drawn in the vectors' order, uuid4 ids (§5.4).

import { fail } from "./errors.js";
import { b64d, hex } from "./bytes.js";
import { byCodePoint } from "./canonical.js";
import { addressFromPub } from "./identity.js";
import { checkShape, ENCRYPTED_PLACEHOLDER, pyLower, signEnvelope, VERSION } from "./envelope.js";
import { encryptContent, wrapCek } from "./e2e.js";
import { randomBytes } from "./webcrypto.js";

/** A uuid4 in hex (32 characters), as the prototype makes message ids. */
export function newMessageId(randbytes = randomBytes) {
  const b = randbytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return hex(b);
}

const unique = (items) => [...new Set(items)];

async function checkedSigned(signer, fields) {
  const signed = await signEnvelope(fields, signer);
  checkShape(signed);
  return signed;
}

/**
 * Build and sign every envelope of one message: [primary (to + cc), one copy per BCC].
 *
 * @param {import("./identity.js").Signer} signer
 * @param {object} m  {to, cc?, bcc?, subject?, content, re?, tags?, expires?, encrypt?,
 *   readerPubs?: {address: pub base64url}, id?: fixed message id, randbytes?: (n) => bytes}
 *   (`id` and `randbytes` exist for tests and vectors; leave them out otherwise)
 * @param {number} nowMs  the sender's clock, unix ms (the envelopes' `t`)
 * @returns {Promise<object[]>}
 * @throws {FluxError} invalid_value, missing_field (field encrypt_for: a reader's key is
 *   missing or not its key; encryption is all or nothing), too_large, wrong_type...
 */
export async function composeEnvelopes(signer, m, nowMs) {
  const randbytes = m.randbytes ?? randomBytes;
  const to = m.to;
  const cc = unique(m.cc ?? []).filter((a) => a !== to);
  const bcc = unique(m.bcc ?? []).filter((a) => a !== to && !cc.includes(a));
  const fields = {
    v: VERSION, id: m.id || newMessageId(randbytes), from: signer.address, to, t: nowMs, content: m.content,
  };
  if (m.subject) fields.subject = m.subject;
  if (m.re) fields.re = m.re;
  if (cc.length) fields.cc = cc;
  if (m.tags?.length) fields.tags = unique(m.tags.map(pyLower)).sort(byCodePoint);
  if (m.expires !== undefined && m.expires !== null) fields.expires = m.expires;
  if (!m.encrypt) {
    const out = [await checkedSigned(signer, fields)];
    for (const addr of bcc) out.push(await checkedSigned(signer, { ...fields, bcc: [addr] }));
    return out;
  }
  return encrypted(signer, fields, bcc, m.readerPubs ?? {}, randbytes);
}

async function encrypted(signer, fields, bcc, readerPubs, randbytes) {
  checkShape({ ...fields, sig: "", pub: "" }); // the content limit applies to the plaintext
  const keys = new Map();
  for (const [address, pub] of Object.entries(readerPubs)) {
    keys.set(address, pub instanceof Uint8Array ? pub : b64d(pub, `encrypt_for.${address}`, 32));
  }
  if (!keys.has(signer.address)) keys.set(signer.address, signer.pub);
  const visible = [fields.to, ...(fields.cc ?? []), signer.address];
  for (const address of [...visible, ...bcc]) {
    if (!keys.has(address)) throw fail("missing_field", `no public key to encrypt for ${address}`, "encrypt_for");
  }
  for (const address of bcc) {
    if ((await addressFromPub(keys.get(address))) !== address) {
      throw fail("invalid_value", `key given for ${address} is not its key`, "encrypt_for");
    }
  }
  const readers = new Map(unique(visible).map((a) => [a, keys.get(a)]));
  const { contentEnc, blobs, cek } = await encryptContent(fields.content, readers, randbytes);
  const sealed = { ...fields, content: ENCRYPTED_PLACEHOLDER, encrypted: true, content_enc: contentEnc };
  const out = [await checkedSigned(signer, { ...sealed, enc_recipients: blobs })];
  for (const addr of bcc) {
    const own = { ...blobs, [addr]: await wrapCek(cek, keys.get(addr), randbytes) };
    out.push(await checkedSigned(signer, { ...sealed, bcc: [addr], enc_recipients: own }));
  }
  cek.fill(0);
  return out;
}
