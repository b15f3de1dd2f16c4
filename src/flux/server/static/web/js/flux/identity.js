// Identity (docs/PROTOCOL.md §2): an Ed25519 keypair, its fx1 address, the key file, and the
// Signer a page signs and decrypts with. Mirrors flux.protocol.identity.
//
// A Signer holds WebCrypto keys only, both NON-EXTRACTABLE: the Ed25519 signing key and the
// X25519 key (the clamped first half of SHA-512(seed), §6.2) that opens mail sent to it.
// The seed is used to make them and then dropped: script on the page can sign with a Signer
// but cannot read the key back out of it, nor can anything that reads IndexedDB (keystore.js).

import { fail } from "./errors.js";
import { b64d, b64e, hex, utf8 } from "./bytes.js";
import {
  ed25519Sign,
  ed25519Verify,
  importEd25519Seed,
  importX25519Private,
  randomBytes,
  sha256,
  x25519ScalarFromSeed,
} from "./webcrypto.js";
import { openSealedSeed } from "./keyfile.js";

export const ADDRESS_RE = /^fx1[0-9a-f]{40}$/; // JS "$" does not match before a final "\n"

/** "fx1" + the first 40 hex digits of SHA-256(pub) (§2.2). */
export async function addressFromPub(pub) {
  return "fx1" + hex(await sha256(pub)).slice(0, 40);
}

export const isAddress = (value) => typeof value === "string" && ADDRESS_RE.test(value);

/** {seed, pub, address} of a 32-byte seed. */
async function identityOf(seed) {
  if (!(seed instanceof Uint8Array) || seed.length !== 32) {
    throw fail("invalid_value", "an Ed25519 seed is 32 bytes", "private_key");
  }
  const { pub } = await importEd25519Seed(seed);
  return { seed, pub, address: await addressFromPub(pub) };
}

/** A new identity from the browser's CSPRNG: {seed, pub, address} (bytes are Uint8Array). */
export const generateIdentity = async () => identityOf(randomBytes(32));

/**
 * The identity in a key file's text (§2.3): the prototype's {"address", "private_key"}, or
 * FLUX's passphrase-sealed {"address", "private_key_enc", "kdf"} (then `passphrase` is
 * required). Throws FluxError bad_key_file saying what is wrong (for a sealed file, never
 * whether the passphrase or the file is at fault).
 */
export async function identityFromKeyFile(text, passphrase = undefined) {
  let data;
  try {
    data = JSON.parse(typeof text === "string" ? text : new TextDecoder().decode(text));
  } catch {
    throw fail("bad_key_file", "key file is not JSON");
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw fail("bad_key_file", "key file is not a JSON object");
  }
  let seed;
  if ("private_key" in data) {
    try {
      seed = b64d(data.private_key, "private_key", 32);
    } catch (err) {
      throw fail("bad_key_file", `key file's ${err.message}`, "private_key");
    }
  } else if ("private_key_enc" in data) {
    seed = await openSealedSeed(data, passphrase);
  } else {
    throw fail("bad_key_file", "key file has no private_key");
  }
  const identity = await identityOf(seed);
  if ("address" in data && data.address !== identity.address) {
    throw fail("bad_key_file", "key file address does not match its key", "address");
  }
  return identity;
}

/**
 * The FLUX key file text for an identity, exactly as `flux keygen` writes it (Python's
 * json.dumps of {"address", "private_key"}). Sync. For a backup download.
 */
export function keyFileFor({ seed, address }) {
  return `{"address": ${JSON.stringify(address)}, "private_key": ${JSON.stringify(b64e(seed))}}`;
}

/** The one thing that signs and decrypts for an address; its keys cannot be exported. */
export class Signer {
  constructor({ address, pub, signingKey, x25519, label = undefined }) {
    this.address = address;
    this.pub = pub; // Uint8Array(32)
    this.pubB64 = b64e(pub);
    this.signingKey = signingKey; // CryptoKey Ed25519 private, non-extractable
    this.x25519 = x25519; // CryptoKey X25519 private, non-extractable
    this.label = label;
    Object.freeze(this);
  }

  /** The Ed25519 signature (64 bytes) over `bytes` (a string is signed as its UTF-8). */
  async sign(bytes) {
    return ed25519Sign(this.signingKey, typeof bytes === "string" ? utf8(bytes) : bytes);
  }

  /** base64url signature, as flux.protocol.Identity.sign returns. */
  async signB64(bytes) {
    return b64e(await this.sign(bytes));
  }
}

/**
 * A Signer for a 32-byte seed: imports it into non-extractable WebCrypto keys and keeps no
 * copy of it (the caller's array is left as it is: wipe it when done).
 */
export async function openSigner(seed) {
  const { privateKey, pub } = await importEd25519Seed(seed);
  const scalar = await x25519ScalarFromSeed(seed);
  const x25519 = await importX25519Private(scalar);
  scalar.fill(0);
  return new Signer({ address: await addressFromPub(pub), pub, signingKey: privateKey, x25519 });
}

/** True when `sig` is `pub`'s signature over `message` (all bytes), by libsodium's rules. */
export const verifySignature = ed25519Verify;
