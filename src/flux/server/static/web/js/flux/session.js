// Request bodies a key signs for its server (docs/PROTOCOL.md §11.2, §11.3), as FluxClient
// builds them: the signed strings name the server's domain, so a proof made for one server
// is useless at another.

/** Body for POST /auth/session: signs "flux-auth:1:{domain}:{challenge}". */
export async function authSessionBody(signer, challenge, domain) {
  return {
    address: signer.address,
    pub: signer.pubB64,
    challenge,
    sig: await signer.signB64(`flux-auth:1:${domain}:${challenge}`),
  };
}

/** Body for POST /register: signs "flux-register:1:{domain}:{address}:{t}" (t = nowMs). */
export async function registerBody(signer, domain, nowMs, invite = undefined) {
  const body = {
    address: signer.address,
    pub: signer.pubB64,
    t: nowMs,
    sig: await signer.signB64(`flux-register:1:${domain}:${signer.address}:${nowMs}`),
  };
  if (invite !== undefined && invite !== null) body.invite = invite;
  return body;
}
