// The FLUX protocol in the browser: the one module the web app imports (js/app/*).
//
// Mirrors flux.protocol (docs/PROTOCOL.md §2-§7) over WebCrypto: Ed25519 and X25519 keys
// are non-extractable CryptoKeys, kept in IndexedDB, never sent anywhere. Every function is
// async unless marked sync; bytes are Uint8Array; base64 is base64url with '=' padding;
// failures are FluxError {code, field, message} with the protocol's codes, plus
// "insecure_context" when the page has no WebCrypto (not HTTPS or localhost).

import { identityFromKeyFile } from "./identity.js";
import { sealedKeyFile } from "./keyfile.js";

export { FluxError } from "./errors.js";
export { b64d, b64e } from "./bytes.js";
export { canonical } from "./canonical.js";
export {
  addressFromPub,
  generateIdentity,
  identityFromKeyFile,
  isAddress,
  keyFileFor,
  openSigner,
  Signer,
} from "./identity.js";
export { forgetSigner, loadSigners, saveSigner } from "./keystore.js";
export { authSessionBody, registerBody } from "./session.js";
export { composeEnvelopes, newMessageId } from "./outgoing.js";
export { bodyHash, checkShape, integrityHash, signingPayload, verifyEnvelope } from "./envelope.js";
export { decryptContent } from "./e2e.js";
export { findOffense, verifyChain } from "./chain.js";

/**
 * A key file (plain FLUX or prototype) sealed under `passphrase`, as `flux keygen
 * --passphrase` writes it (scrypt N=32768, r=8, p=1; AES-256-GCM). Takes a second or two.
 * @throws {FluxError} bad_key_file
 */
export async function sealKeyFile(text, passphrase) {
  return sealedKeyFile(await identityFromKeyFile(text), passphrase);
}

/** The identity {seed, pub, address} in a sealed (or plain) key file. */
export const openKeyFile = (text, passphrase) => identityFromKeyFile(text, passphrase);
