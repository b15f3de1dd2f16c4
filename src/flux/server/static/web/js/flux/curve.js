// Ed25519 point checks and the Edwards → Montgomery map, in BigInt field arithmetic.
//
// WebCrypto signs, verifies and does X25519, but it cannot (1) turn a recipient's Ed25519
// public key into its X25519 form (PROTOCOL §6.1: u = (1 + y) / (1 − y) mod 2^255 − 19,
// libsodium's crypto_sign_ed25519_pk_to_curve25519), nor (2) promise libsodium's
// verification rules (§1: S < L, A canonical, neither A nor R of small order). Both need a
// few lines over the field, written here rather than vendoring a curve library for them:
// nothing here handles a secret (public keys and signatures only), so BigInt's
// non-constant time does not matter, and every branch is checked against libsodium's
// answers by tests/web/test_protocol_in_browser.py.

const P = 2n ** 255n - 19n;
const L = 2n ** 252n + 27742317777372353535851937790883648493n; // the group order
const mod = (a) => ((a % P) + P) % P;

function pow(base, exp) {
  let result = 1n;
  base = mod(base);
  while (exp > 0n) {
    if (exp & 1n) result = (result * base) % P;
    base = (base * base) % P;
    exp >>= 1n;
  }
  return result;
}

const inv = (a) => pow(a, P - 2n);
const D = mod(-121665n * inv(121666n));
const SQRT_M1 = pow(2n, (P - 1n) / 4n);

function littleEndian(bytes) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

function toBytes32(n) {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++, n >>= 8n) out[i] = Number(n & 255n);
  return out;
}

const yOf = (encoded) => littleEndian(encoded) & (2n ** 255n - 1n); // the sign bit cleared

// libsodium's blocklist (ge25519_has_small_order): the y of every point of order 1, 2, 4 or
// 8, and the non-canonical spellings p and p + 1 of 0 and 1, compared without the sign bit.
const Y_ORDER_8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022n;
const SMALL_ORDER_Y = new Set([0n, 1n, Y_ORDER_8, P - Y_ORDER_8, P - 1n, P, P + 1n]);

/** True when the 32-byte point encoding is one of the small-order points (any sign). */
export const hasSmallOrder = (encoded) => SMALL_ORDER_Y.has(yOf(encoded));

/** True when y < p (libsodium's ge25519_is_canonical). */
export const isCanonicalPoint = (encoded) => yOf(encoded) < P;

/** True when the 32-byte little-endian scalar S is < L (sc25519_is_canonical). */
export const isCanonicalScalar = (encoded) => littleEndian(encoded) < L;

/** The point's x for an encoding, or null when y is not on the curve. */
function decodeX(encoded) {
  const y = yOf(encoded);
  if (y >= P) return null;
  const y2 = (y * y) % P;
  const u = mod(y2 - 1n);
  const v = mod(D * y2 + 1n);
  const x2 = (u * inv(v)) % P;
  let x = pow(x2, (P + 3n) / 8n);
  if ((x * x) % P !== x2) x = (x * SQRT_M1) % P;
  if ((x * x) % P !== x2) return null; // not a square: no such point
  if (x === 0n && encoded[31] >> 7) return null; // "-0": libsodium refuses it
  return (x & 1n) === BigInt(encoded[31] >> 7) ? x : P - x;
}

// Extended coordinates (X, Y, Z, T), a = −1; the unified addition (add-2008-hwcd-3) also
// doubles, so the ladder below needs no special case.
function add(p, q) {
  const a = ((p[1] - p[0]) * (q[1] - q[0])) % P;
  const b = ((p[1] + p[0]) * (q[1] + q[0])) % P;
  const c = (2n * D * p[3] * q[3]) % P;
  const d = (2n * p[2] * q[2]) % P;
  const e = b - a;
  const f = d - c;
  const g = d + c;
  const h = b + a;
  return [mod(e * f), mod(g * h), mod(f * g), mod(e * h)];
}

function timesL(point) {
  let result = [0n, 1n, 1n, 0n];
  for (let bit = 252n; bit >= 0n; bit--) {
    result = add(result, result);
    if ((L >> bit) & 1n) result = add(result, point);
  }
  return result;
}

/**
 * The X25519 public key of an Ed25519 public key (32 bytes each), or null for a key libsodium
 * refuses: of small order, not on the curve, or outside the main subgroup.
 */
export function montgomeryFromEdwards(edPub) {
  if (edPub.length !== 32 || hasSmallOrder(edPub)) return null;
  const x = decodeX(edPub);
  if (x === null) return null;
  const y = yOf(edPub);
  const inSubgroup = timesL([x, y, 1n, (x * y) % P]);
  if (inSubgroup[0] !== 0n || inSubgroup[1] !== inSubgroup[2]) return null;
  return toBytes32(mod((1n + y) * inv(mod(1n - y))));
}
