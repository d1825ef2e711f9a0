//! Peer authentication: a challenge-response on the cluster secret, inside the handshake.
//!
//! Each side's [`Handshake`](super::Handshake) carries a fresh random nonce. Once a side
//! holds both nonces it sends a [`Proof`]: a keyed BLAKE3 MAC, under a key derived from
//! the cluster secret, of a transcript naming the prover's role, the cluster, both ids
//! and both nonces. Each side checks the other's proof before it sends or accepts
//! anything else, so:
//!
//! - a process without the secret never gets past the handshake;
//! - a recorded handshake cannot be replayed: the other side's nonce is new every time;
//! - a proof cannot be reflected back at its sender: the role is in the transcript.
//!
//! What it does not do: it authenticates the *cluster* (everyone holding the secret), not
//! a node id; and it neither encrypts nor MACs the frames that follow, so someone on the
//! network path can read them, or hijack the TCP stream after the handshake. TLS (rustls,
//! whose sans-IO API fits mio) would close that; it would wrap [`Connection`]'s byte
//! stream and leave this proof in place, as a check of cluster membership.
//!
//! [`Connection`]: super::Connection

use serde::{Deserialize, Serialize};

use super::error::TransportError;

/// Bytes of a handshake nonce and of a proof.
pub const NONCE_BYTES: usize = 32;

/// The shortest cluster secret accepted: 128 bits.
pub const CLUSTER_SECRET_BYTES_MIN: usize = 16;

/// Separates this use of BLAKE3's key derivation from every other (BLAKE3's `derive_key`
/// wants a hard-coded, globally unique context string).
const KEY_CONTEXT: &str = "quorate 2026-12 cluster secret -> peer handshake key";

/// Starts every transcript, so a proof is never valid for another protocol.
const TRANSCRIPT_LABEL: &[u8] = b"quorate peer handshake proof v3";

/// A handshake nonce.
pub type Nonce = [u8; NONCE_BYTES];

/// Which end of the connection a side is; part of what it proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It dialed.
    Dialer,
    /// It accepted.
    Acceptor,
}

/// The key proofs are made with, derived from the cluster secret. Its `Debug` prints
/// nothing of the key, so a logged configuration leaks nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClusterKey {
    key: [u8; 32],
    /// Whether it came from a real secret (the unauthenticated key is public).
    secret: bool,
}

impl ClusterKey {
    /// The key for `secret` (any bytes; at least [`CLUSTER_SECRET_BYTES_MIN`] of them
    /// are checked for by `Config::validate`).
    pub fn from_secret(secret: &[u8]) -> ClusterKey {
        ClusterKey { key: blake3::derive_key(KEY_CONTEXT, secret), secret: true }
    }

    /// The public key of a cluster without a secret: every proof still has to be right,
    /// but anyone can make one, so peers are not authenticated.
    pub fn unauthenticated() -> ClusterKey {
        ClusterKey { key: blake3::derive_key(KEY_CONTEXT, b""), secret: false }
    }

    /// Whether this key comes from a secret, i.e. proofs authenticate.
    pub fn is_secret(&self) -> bool {
        self.secret
    }
}

impl Default for ClusterKey {
    fn default() -> Self {
        ClusterKey::unauthenticated()
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.secret { "ClusterKey(<secret>)" } else { "ClusterKey(<none>)" })
    }
}

/// The second frame each side sends: proof that it holds the cluster secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The keyed MAC of the transcript (see [`prove`]).
    pub mac: [u8; NONCE_BYTES],
}

/// What a proof covers: both ends as each announced itself.
#[derive(Clone, Copy, Debug)]
pub struct Transcript<'a> {
    /// The cluster id both sides announced.
    pub cluster_id: &'a str,
    /// The dialer's node id and nonce.
    pub dialer: (u64, &'a Nonce),
    /// The acceptor's node id and nonce.
    pub acceptor: (u64, &'a Nonce),
    /// Whether the dialer is a client (see [`Handshake::client`](super::Handshake)).
    pub client: bool,
}

/// The proof that side `role` of the connection described by `t` holds `key`.
pub fn prove(key: &ClusterKey, role: Role, t: &Transcript<'_>) -> Proof {
    let mut h = blake3::Hasher::new_keyed(&key.key);
    h.update(TRANSCRIPT_LABEL);
    h.update(&[match role {
        Role::Dialer => b'D',
        Role::Acceptor => b'A',
    }]);
    h.update(&[if t.client { b'C' } else { b'P' }]);
    // Length-prefixed, so no two different transcripts hash the same bytes.
    h.update(&(t.cluster_id.len() as u64).to_be_bytes());
    h.update(t.cluster_id.as_bytes());
    for (id, nonce) in [t.dialer, t.acceptor] {
        h.update(&id.to_be_bytes());
        h.update(nonce);
    }
    Proof { mac: *h.finalize().as_bytes() }
}

/// Checks the proof of side `role`, in constant time.
pub fn verify(key: &ClusterKey, role: Role, t: &Transcript<'_>, proof: &Proof) -> Result<(), TransportError> {
    let expected = blake3::Hash::from(prove(key, role, t).mac);
    // `blake3::Hash`'s equality is constant-time: no timing oracle on the MAC.
    if expected == blake3::Hash::from(proof.mac) { Ok(()) } else { Err(TransportError::AuthFailed) }
}

/// A fresh nonce from the operating system's random number generator.
pub fn fresh_nonce() -> Result<Nonce, TransportError> {
    let mut nonce = [0; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(dn: &'a Nonce, an: &'a Nonce) -> Transcript<'a> {
        Transcript { cluster_id: "c", dialer: (1, dn), acceptor: (2, an), client: false }
    }

    #[test]
    fn a_proof_checks_only_under_its_key_role_and_nonces() {
        let key = ClusterKey::from_secret(b"0123456789abcdef");
        let (dn, an) = (fresh_nonce().unwrap(), fresh_nonce().unwrap());
        let t = transcript(&dn, &an);
        let p = prove(&key, Role::Dialer, &t);
        assert!(verify(&key, Role::Dialer, &t, &p).is_ok());
        assert!(verify(&key, Role::Acceptor, &t, &p).is_err(), "reflected");
        assert!(verify(&ClusterKey::unauthenticated(), Role::Dialer, &t, &p).is_err(), "other key");
        let an2 = fresh_nonce().unwrap();
        assert!(verify(&key, Role::Dialer, &transcript(&dn, &an2), &p).is_err(), "replayed");
        let swapped = Transcript { dialer: (2, &dn), acceptor: (1, &an), ..t };
        assert!(verify(&key, Role::Dialer, &swapped, &p).is_err(), "other ids");
        let as_client = Transcript { client: true, ..t };
        assert!(verify(&key, Role::Dialer, &as_client, &p).is_err(), "a peer's proof passed for a client's");
    }

    #[test]
    fn nonces_are_fresh_and_keys_do_not_print() {
        assert_ne!(fresh_nonce().unwrap(), fresh_nonce().unwrap());
        let key = ClusterKey::from_secret(b"very secret value");
        assert_eq!(format!("{key:?}"), "ClusterKey(<secret>)");
        assert!(key.is_secret() && !ClusterKey::unauthenticated().is_secret());
    }
}
