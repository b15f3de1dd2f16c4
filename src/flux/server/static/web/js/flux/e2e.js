// End-to-end encryption (docs/PROTOCOL.md §6), the prototype's scheme, as flux.protocol.e2e:
//
//   CEK          = 32 random bytes
//   content_enc  = b64(nonce12 ‖ AES-256-GCM(CEK, UTF-8 content))
//   per reader:    X = the reader's Ed25519 key in X25519 form (curve.js)
//                  e = an ephemeral X25519 key; wrap = SHA-256(X25519(e, X))
//                  blob = b64(E(32) ‖ nonce12 ‖ AES-256-GCM(wrap, CEK))
//   a reader opens its blob with the X25519 key of its Signer (identity.js).

import { fail } from "./errors.js";
import { b64d, b64e, concat, fromUtf8, utf8 } from "./bytes.js";
import { montgomeryFromEdwards } from "./curve.js";
import { addressFromPub } from "./identity.js";
import { NONCE_LEN, openSealed, randomBytes, seal, sha256, x25519Keypair, x25519Shared } from "./webcrypto.js";

/** One reader's blob: `cek` wrapped for the Ed25519 public key `readerPub` (bytes). */
export async function wrapCek(cek, readerPub, randbytes = randomBytes) {
  const ephemeral = await x25519Keypair(randbytes(32));
  const peer = montgomeryFromEdwards(readerPub);
  if (peer === null) throw fail("invalid_value", "recipient key cannot be used for encryption");
  let shared;
  try {
    shared = await x25519Shared(ephemeral.privateKey, peer);
  } catch {
    throw fail("invalid_value", "recipient key cannot be used for encryption");
  }
  const sealed = await seal(await sha256(shared), cek, randbytes(NONCE_LEN));
  return b64e(concat(ephemeral.pub, sealed));
}

/**
 * Encrypt `content` for `readers` (a Map or object, address → Ed25519 public key bytes, in
 * the order to wrap them): {contentEnc, blobs, cek}. Each key must hash to its address.
 * @throws {FluxError} invalid_value (field encrypt_for)
 */
export async function encryptContent(content, readers, randbytes = randomBytes) {
  const entries = readers instanceof Map ? [...readers] : Object.entries(readers);
  for (const [address, pub] of entries) {
    if ((await addressFromPub(pub)) !== address) {
      throw fail("invalid_value", `key given for ${address} is not its key`, "encrypt_for");
    }
  }
  const cek = randbytes(32);
  const contentEnc = b64e(await seal(cek, utf8(content), randbytes(NONCE_LEN)));
  const blobs = {};
  for (const [address, pub] of entries) blobs[address] = await wrapCek(cek, pub, randbytes);
  return { contentEnc, blobs, cek };
}

async function unwrapCek(blobB64, signer) {
  let blob;
  try {
    blob = b64d(blobB64, "enc_recipients");
  } catch {
    throw fail("decryption_failed", "decryption failed");
  }
  if (blob.length < 32 + NONCE_LEN + 16) throw fail("decryption_failed", "decryption failed");
  const shared = await x25519Shared(signer.x25519, blob.subarray(0, 32));
  const cek = await openSealed(await sha256(shared), blob.subarray(32));
  if (cek.length !== 32) throw fail("decryption_failed", "decryption failed");
  return cek;
}

/**
 * The plaintext of `msg` for `signer` (the content itself when not encrypted, §6.2).
 * @throws {FluxError} not_a_recipient (no blob for this address); decryption_failed (anything
 *   else, saying nothing more)
 */
export async function decryptContent(signer, msg) {
  if (!msg.encrypted) return msg.content;
  const blobs = msg.enc_recipients;
  if (blobs === null || typeof blobs !== "object" || !Object.hasOwn(blobs, signer.address)) {
    throw fail("not_a_recipient", "this identity is not a recipient of the message");
  }
  const cek = await unwrapCek(blobs[signer.address], signer);
  try {
    const sealed = b64d(msg.content_enc, "content_enc");
    return fromUtf8(await openSealed(cek, sealed));
  } catch {
    throw fail("decryption_failed", "decryption failed");
  }
}
