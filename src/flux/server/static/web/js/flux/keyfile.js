// FLUX's passphrase-sealed key file (PROTOCOL §2.3), byte-compatible with `flux keygen
// --passphrase`: the seed sealed with AES-256-GCM (AAD = the ASCII address) under
// K = scrypt(UTF-8 passphrase, salt, N = 32768, r = 8, p = 1). Mirrors
// flux.protocol.identity (to_keyfile, _open_sealed_seed).

import { fail } from "./errors.js";
import { b64d, b64e, utf8 } from "./bytes.js";
import { openSealed, randomBytes, seal } from "./webcrypto.js";
import { scrypt } from "./scrypt.js";

const SCRYPT = { n: 32768, r: 8, p: 1 };

/** The seed of a sealed key file's parsed JSON; FluxError bad_key_file otherwise. */
export async function openSealedSeed(data, passphrase) {
  if (typeof passphrase !== "string") {
    throw fail("bad_key_file", "key file is protected by a passphrase", "passphrase");
  }
  const kdf = data.kdf;
  if (kdf === null || typeof kdf !== "object" || kdf.name !== "scrypt") {
    throw fail("bad_key_file", "key file names an unknown key derivation", "kdf");
  }
  let salt;
  let sealed;
  try {
    salt = b64d(kdf.salt, "kdf.salt");
    sealed = b64d(data.private_key_enc, "private_key_enc");
  } catch {
    throw fail("bad_key_file", "key file is damaged");
  }
  const key = await scrypt(utf8(passphrase), salt, kdf);
  try {
    const seed = await openSealed(key, sealed, utf8(String(data.address ?? "")));
    if (seed.length !== 32) throw new Error("not a seed");
    return seed;
  } catch {
    // Which one is never said (§2.3): that would help whoever guesses passphrases offline.
    throw fail("bad_key_file", "wrong passphrase (or a damaged key file)", "passphrase");
  }
}

/**
 * A sealed key file for the identity `{seed, address}` under `passphrase`: the text Python's
 * Identity.to_keyfile(passphrase) writes. `randbytes(n)` is for tests (salt 16, nonce 12).
 */
export async function sealedKeyFile({ seed, address }, passphrase, randbytes = randomBytes) {
  const salt = randbytes(16);
  const key = await scrypt(utf8(passphrase), salt, SCRYPT);
  const sealed = await seal(key, seed, randbytes(12), utf8(address));
  return (
    `{"address": ${JSON.stringify(address)}, "private_key_enc": "${b64e(sealed)}", ` +
    `"kdf": {"name": "scrypt", "salt": "${b64e(salt)}", "n": ${SCRYPT.n}, "r": ${SCRYPT.r}, "p": ${SCRYPT.p}}}`
  );
}
