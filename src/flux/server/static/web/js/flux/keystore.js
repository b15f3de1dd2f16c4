// Signers kept in the browser (IndexedDB), never on the server.
//
// What is stored is the Signer's two CryptoKey objects, which IndexedDB keeps as they are:
// NON-EXTRACTABLE, so neither script on the page nor anything reading the database can get
// the key material back (exportKey rejects); they can only be used, by this origin. The
// key file for a backup is made once, from the seed, before it is dropped (keyFileFor).

import { fail } from "./errors.js";
import { b64d } from "./bytes.js";
import { Signer } from "./identity.js";

const DB_NAME = "flux-keystore";
const STORE = "signers";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function open() {
  if (!globalThis.indexedDB) throw fail("keystore_unavailable", "this browser keeps no IndexedDB here");
  const req = indexedDB.open(DB_NAME, 1);
  req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: "address" });
  try {
    return await request(req);
  } catch (err) {
    throw fail("keystore_unavailable", `the browser refused its key store: ${err?.message ?? err}`);
  }
}

async function withStore(mode, work) {
  const db = await open();
  try {
    const tx = db.transaction(STORE, mode);
    const done = new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
    const result = await work(tx.objectStore(STORE));
    await done;
    return result;
  } finally {
    db.close();
  }
}

/** Keep `signer` in this browser (replacing one of the same address). */
export async function saveSigner(signer, { label = undefined } = {}) {
  const row = {
    address: signer.address,
    pub: signer.pubB64,
    label: label ?? signer.label ?? null,
    signingKey: signer.signingKey,
    x25519: signer.x25519,
    saved_at: Date.now(),
  };
  await withStore("readwrite", (store) => request(store.put(row)));
}

/** Every Signer kept in this browser, oldest first. */
export async function loadSigners() {
  const rows = await withStore("readonly", (store) => request(store.getAll()));
  rows.sort((a, b) => a.saved_at - b.saved_at);
  return rows.map(
    (row) =>
      new Signer({
        address: row.address,
        pub: b64d(row.pub, "pub", 32),
        signingKey: row.signingKey,
        x25519: row.x25519,
        label: row.label ?? undefined,
      }),
  );
}

/** Remove the Signer of `address` from this browser (its key is then gone unless backed up). */
export async function forgetSigner(address) {
  await withStore("readwrite", (store) => request(store.delete(address)));
}
