//! A seeded property test of the frame decoder and the message decoder (a bounded stand-in
//! for `cargo fuzz`, which needs a nightly toolchain CI does not have): random and mangled
//! byte streams, fed in random pieces, must only ever yield frames or errors; whatever
//! decodes as a Raft message, stepped into a core from any sender, must leave its
//! invariants intact. Nothing may panic, in release or debug builds.
//!
//! Longer run: `QUORATE_FUZZ_CASES=1000000 cargo test --release --test decoder_fuzz`.

mod support;

use quorate::core::{CoreConfig, Membership, Message, Raft};
use quorate::transport::{FrameDecoder, Handshake, Proof, TransportError, encode_frame};
use support::hostile::{HOSTILE_IDS, mangle, message, wild};
use support::sim::Rng;

/// Cases per run by default: about a second of CI time.
const CASES_DEFAULT: u64 = 200_000;
/// Largest frame the decoders under test accept.
const FRAME_BYTES_MAX: usize = 64 * 1024;

fn cases() -> u64 {
    std::env::var("QUORATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES_DEFAULT)
}

/// A byte stream: frames of random messages, some mangled, some raw noise.
fn stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.between(1, 4) {
        let mut frame = Vec::new();
        match rng.between(0, 3) {
            0 => frame.extend((0..rng.between(0, 64)).map(|_| rng.next_u64() as u8)),
            1 => encode_frame(&mut frame, &Handshake::new("quorate", wild(rng)).unwrap(), usize::MAX).unwrap(),
            2 => encode_frame(&mut frame, &Proof { mac: [rng.next_u64() as u8; 32] }, usize::MAX).unwrap(),
            _ => encode_frame(&mut frame, &message(rng, 5, 5), usize::MAX).unwrap(),
        }
        if rng.chance(0.5) {
            mangle(rng, &mut frame);
        }
        out.extend(frame);
    }
    out
}

/// Feeds `bytes` in random pieces; returns the messages decoded before the first error.
fn decode_all<T: serde::de::DeserializeOwned>(rng: &mut Rng, bytes: &[u8]) -> Vec<T> {
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (rng.between(1, 64) as usize).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        decoder.push(piece);
        loop {
            match decoder.next_frame::<T>() {
                Ok(Some(msg)) => out.push(msg),
                Ok(None) => break,
                // A bad body is consumed, so decoding may go on; a bad prefix ends the stream.
                Err(TransportError::Decode(_)) => continue,
                Err(_) => return out,
            }
        }
        assert!(decoder.buffered_len() <= FRAME_BYTES_MAX + 4, "the decoder buffered past one frame");
    }
    out
}

#[test]
fn decoders_never_panic_and_the_core_keeps_its_invariants() {
    let mut rng = Rng::new(0xF022);
    let voters = Membership::with_voters((1..=3).map(|id| (id, format!("n{id}"))));
    let mut core = Raft::new(CoreConfig::new(1), voters);
    let (mut decoded, mut stepped) = (0u64, 0u64);
    for _ in 0..cases() {
        let bytes = stream(&mut rng);
        decode_all::<Handshake>(&mut rng, &bytes);
        decode_all::<Proof>(&mut rng, &bytes);
        for msg in decode_all::<Message>(&mut rng, &bytes) {
            decoded += 1;
            // Members too: the core's checks must hold whoever the sender claims to be.
            let from =
                if rng.chance(0.5) { rng.between(0, 4) } else { rng.between(*HOSTILE_IDS.start(), *HOSTILE_IDS.end()) };
            if msg.check_well_formed().is_ok() {
                stepped += 1;
            }
            core.step(from, msg);
            core.tick();
            core.take_ready();
            core.check_invariants();
        }
    }
    assert!(decoded > 0 && stepped > 0, "the generator produced no decodable message");
    assert!(core.current_term().0 < quorate::core::TERM_MAX, "an absurd term got in");
    eprintln!("decoded {decoded} messages, {stepped} well-formed, refused {:?}", core.refused());
}
