// The only module that calls WebCrypto's raw primitives (the browser's flux.protocol._aead).
// Everything above it uses these few recipes; a failed decryption is one opaque
// decryption_failed, never which step failed (PROTOCOL §6.2).
//
// WebCrypto exists only in a secure context (HTTPS, or http://localhost / 127.0.0.1): on a
// page served otherwise every call here throws FluxError "insecure_context".

import { fail } from "./errors.js";
import { b64d, concat, fromHex } from "./bytes.js";
import { hasSmallOrder, isCanonicalPoint, isCanonicalScalar } from "./curve.js";

export const NONCE_LEN = 12;

// PKCS #8 wrappings of a raw 32-byte Ed25519 seed / X25519 scalar (RFC 8410): WebCrypto
// imports private keys of these curves only as PKCS #8 or JWK.
const ED25519_PKCS8 = fromHex("302e020100300506032b657004220420");
const X25519_PKCS8 = fromHex("302e020100300506032b656e04220420");

/** WebCrypto's SubtleCrypto, or FluxError insecure_context when the page has none. */
export function subtle() {
  const found = globalThis.crypto?.subtle;
  if (!found) {
    throw fail(
      "insecure_context",
      "This page is not a secure context, so the browser offers no cryptography here. " +
        "Open FLUX over HTTPS (or on localhost).",
    );
  }
  return found;
}

/** `n` bytes from the browser's CSPRNG. */
export function randomBytes(n) {
  subtle();
  return crypto.getRandomValues(new Uint8Array(n));
}

export const sha256 = async (bytes) => new Uint8Array(await subtle().digest("SHA-256", bytes));
export const sha512 = async (bytes) => new Uint8Array(await subtle().digest("SHA-512", bytes));

// The JWK "x" of a private key is its public key; base64url without padding.
function jwkBytes(text) {
  return b64d(text + "=".repeat((4 - (text.length % 4)) % 4), "jwk", 32);
}

/**
 * Import an Ed25519 seed: {privateKey: non-extractable CryptoKey (sign), pub: 32 bytes}.
 * The public key is read once through a short-lived extractable copy (WebCrypto cannot
 * compute it otherwise); only the non-extractable key is returned.
 */
export async function importEd25519Seed(seed) {
  const pkcs8 = concat(ED25519_PKCS8, seed);
  const once = await subtle().importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
  const pub = jwkBytes((await subtle().exportKey("jwk", once)).x);
  const privateKey = await subtle().importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
  pkcs8.fill(0);
  return { privateKey, pub };
}

export async function ed25519Sign(privateKey, message) {
  return new Uint8Array(await subtle().sign({ name: "Ed25519" }, privateKey, message));
}

/**
 * True when `sig` (64 bytes) is `pub`'s (32 bytes) Ed25519 signature over `message`, under
 * libsodium's rules (PROTOCOL §1): S < L, A canonical, neither A nor R of small order, then
 * WebCrypto's cofactorless check.
 */
export async function ed25519Verify(pub, message, sig) {
  if (pub.length !== 32 || sig.length !== 64) return false;
  if (!isCanonicalScalar(sig.subarray(32)) || hasSmallOrder(sig.subarray(0, 32))) return false;
  if (!isCanonicalPoint(pub) || hasSmallOrder(pub)) return false;
  try {
    const key = await subtle().importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    return await subtle().verify({ name: "Ed25519" }, key, sig, message);
  } catch (err) {
    if (err?.code === "insecure_context") throw err;
    return false; // a key WebCrypto cannot even decode
  }
}

/** A non-extractable X25519 private key (deriveBits) from a 32-byte scalar. */
export async function importX25519Private(scalar, extractable = false) {
  const pkcs8 = concat(X25519_PKCS8, scalar);
  const key = await subtle().importKey("pkcs8", pkcs8, { name: "X25519" }, extractable, ["deriveBits"]);
  pkcs8.fill(0);
  return key;
}

/** The X25519 public key (32 bytes) of a 32-byte private scalar (an ephemeral key). */
export async function x25519Keypair(scalar) {
  const key = await importX25519Private(scalar, true);
  const pub = jwkBytes((await subtle().exportKey("jwk", key)).x);
  return { privateKey: await importX25519Private(scalar), pub };
}

/**
 * X25519(private, peer) (32 bytes). A small-order peer (an all-zero secret) or a bad key is
 * FluxError decryption_failed.
 */
export async function x25519Shared(privateKey, peerPub) {
  try {
    const peer = await subtle().importKey("raw", peerPub, { name: "X25519" }, false, []);
    const bits = await subtle().deriveBits({ name: "X25519", public: peer }, privateKey, 256);
    const shared = new Uint8Array(bits);
    if (shared.every((b) => b === 0)) throw new Error("all-zero shared secret");
    return shared;
  } catch (err) {
    if (err?.code === "insecure_context") throw err;
    throw fail("decryption_failed", "decryption failed");
  }
}

async function aesKey(raw, usage) {
  if (raw.length !== 32) throw fail("decryption_failed", "decryption failed"); // AES-256 only
  return subtle().importKey("raw", raw, { name: "AES-GCM" }, false, [usage]);
}

/** nonce(12) ‖ AES-256-GCM(key, plaintext) ‖ tag(16): the prototype's blob layout. */
export async function seal(key, plaintext, nonce, aad = undefined) {
  const params = { name: "AES-GCM", iv: nonce, tagLength: 128, ...(aad ? { additionalData: aad } : {}) };
  const sealed = await subtle().encrypt(params, await aesKey(key, "encrypt"), plaintext);
  return concat(nonce, new Uint8Array(sealed));
}

/** The plaintext of a `seal` blob; anything wrong is FluxError decryption_failed. */
export async function openSealed(key, blob, aad = undefined) {
  if (blob.length < NONCE_LEN + 16) throw fail("decryption_failed", "decryption failed");
  const iv = blob.subarray(0, NONCE_LEN);
  const params = { name: "AES-GCM", iv, tagLength: 128, ...(aad ? { additionalData: aad } : {}) };
  try {
    const k = await aesKey(key, "decrypt");
    return new Uint8Array(await subtle().decrypt(params, k, blob.subarray(NONCE_LEN)));
  } catch (err) {
    if (err?.code === "insecure_context") throw err;
    throw fail("decryption_failed", "decryption failed");
  }
}

/** The recipient's X25519 scalar: the clamped first half of SHA-512(seed) (§6.2 step 3). */
export async function x25519ScalarFromSeed(seed) {
  const scalar = (await sha512(seed)).slice(0, 32);
  scalar[0] &= 248;
  scalar[31] &= 127;
  scalar[31] |= 64;
  return scalar;
}
