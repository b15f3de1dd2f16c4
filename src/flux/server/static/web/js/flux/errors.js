// The protocol's errors in the browser (docs/PROTOCOL.md §9), mirroring flux.protocol.errors.
//
// One class with the protocol's stable `code` (what a program branches on) and, where one
// field is to blame, its `field`; `message` is for people. Codes added by the browser
// alone: `insecure_context` (no WebCrypto: the page is not HTTPS or localhost) and
// `keystore_unavailable` (IndexedDB refused).

export class FluxError extends Error {
  /**
   * @param {string} code  the protocol's error code (e.g. "bad_signature")
   * @param {string} message  a sentence for people
   * @param {string} [field]  the field to blame, when one is
   */
  constructor(code, message, field) {
    super(message);
    this.name = "FluxError";
    this.code = code;
    this.field = field;
  }
}

export const fail = (code, message, field) => new FluxError(code, message, field);
