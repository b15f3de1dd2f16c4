// scrypt (RFC 7914), for FLUX's passphrase-sealed key files (PROTOCOL §2.3: N = 32768,
// r = 8, p = 1). WebCrypto has PBKDF2 but no scrypt, so the memory-hard middle (ROMix over
// Salsa20/8) is written here, ~60 lines straight from the RFC; PBKDF2-HMAC-SHA-256 is
// WebCrypto's. Checked against Python's hashlib.scrypt by the browser tests.

import { fail } from "./errors.js";
import { subtle } from "./webcrypto.js";

const MAX_MEMORY = 256 * 1024 * 1024; // refuse a key file that asks for more (a hostile n or r)

async function pbkdf2(password, salt, length) {
  const key = await subtle().importKey("raw", password, "PBKDF2", false, ["deriveBits"]);
  const params = { name: "PBKDF2", hash: "SHA-256", salt, iterations: 1 };
  return new Uint8Array(await subtle().deriveBits(params, key, length * 8));
}

const rotl = (a, b) => (a << b) | (a >>> (32 - b));

// Salsa20/8 core over the 16 words at B[bi..bi+16], in place; x is scratch.
function salsa8(B, bi, x) {
  for (let i = 0; i < 16; i++) x[i] = B[bi + i];
  for (let i = 0; i < 8; i += 2) {
    x[4] ^= rotl(x[0] + x[12], 7); x[8] ^= rotl(x[4] + x[0], 9);
    x[12] ^= rotl(x[8] + x[4], 13); x[0] ^= rotl(x[12] + x[8], 18);
    x[9] ^= rotl(x[5] + x[1], 7); x[13] ^= rotl(x[9] + x[5], 9);
    x[1] ^= rotl(x[13] + x[9], 13); x[5] ^= rotl(x[1] + x[13], 18);
    x[14] ^= rotl(x[10] + x[6], 7); x[2] ^= rotl(x[14] + x[10], 9);
    x[6] ^= rotl(x[2] + x[14], 13); x[10] ^= rotl(x[6] + x[2], 18);
    x[3] ^= rotl(x[15] + x[11], 7); x[7] ^= rotl(x[3] + x[15], 9);
    x[11] ^= rotl(x[7] + x[3], 13); x[15] ^= rotl(x[11] + x[7], 18);
    x[1] ^= rotl(x[0] + x[3], 7); x[2] ^= rotl(x[1] + x[0], 9);
    x[3] ^= rotl(x[2] + x[1], 13); x[0] ^= rotl(x[3] + x[2], 18);
    x[6] ^= rotl(x[5] + x[4], 7); x[7] ^= rotl(x[6] + x[5], 9);
    x[4] ^= rotl(x[7] + x[6], 13); x[5] ^= rotl(x[4] + x[7], 18);
    x[11] ^= rotl(x[10] + x[9], 7); x[8] ^= rotl(x[11] + x[10], 9);
    x[9] ^= rotl(x[8] + x[11], 13); x[10] ^= rotl(x[9] + x[8], 18);
    x[12] ^= rotl(x[15] + x[14], 7); x[13] ^= rotl(x[12] + x[15], 9);
    x[14] ^= rotl(x[13] + x[12], 13); x[15] ^= rotl(x[14] + x[13], 18);
  }
  for (let i = 0; i < 16; i++) B[bi + i] += x[i];
}

// BlockMix: X (32r words) -> Y, with the RFC's even-then-odd output order.
function blockMix(X, Y, r, x) {
  const t = X.slice((2 * r - 1) * 16, 2 * r * 16);
  for (let i = 0; i < 2 * r; i++) {
    for (let k = 0; k < 16; k++) t[k] ^= X[i * 16 + k];
    salsa8(t, 0, x);
    const out = ((i & 1) * r + (i >> 1)) * 16;
    Y.set(t, out);
  }
}

function roMix(block, r, n) {
  const words = 32 * r;
  const V = new Uint32Array(words * n);
  let X = new Uint32Array(words);
  let Y = new Uint32Array(words);
  const x = new Uint32Array(16);
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  for (let i = 0; i < words; i++) X[i] = view.getUint32(4 * i, true);
  for (let i = 0; i < n; i++) {
    V.set(X, i * words);
    blockMix(X, Y, r, x);
    [X, Y] = [Y, X];
  }
  for (let i = 0; i < n; i++) {
    const j = X[(2 * r - 1) * 16] & (n - 1);
    for (let k = 0; k < words; k++) X[k] ^= V[j * words + k];
    blockMix(X, Y, r, x);
    [X, Y] = [Y, X];
  }
  for (let i = 0; i < words; i++) view.setUint32(4 * i, X[i], true);
}

/**
 * scrypt(password, salt, N, r, p) → 32 bytes (Uint8Array in, Uint8Array out).
 * @throws {FluxError} bad_key_file for parameters that are not sane (n a power of 2 > 1)
 */
export async function scrypt(password, salt, { n, r, p }, length = 32) {
  const ok = [n, r, p].every(Number.isSafeInteger) && n > 1 && (n & (n - 1)) === 0 && r > 0 && p > 0;
  if (!ok || 128 * r * n > MAX_MEMORY || p > 16) {
    throw fail("bad_key_file", "key file names scrypt parameters this page will not run", "kdf");
  }
  const B = await pbkdf2(password, salt, p * 128 * r);
  for (let i = 0; i < p; i++) roMix(B.subarray(i * 128 * r, (i + 1) * 128 * r), r, n);
  return pbkdf2(password, B, length);
}
