//! The plugin boundary's encoding alone: a `Response::Batch` of 64 envelopes like the `sim`
//! plugin's, encoded and decoded with the SDK's codec (MessagePack) and with JSON (the
//! encoding of ABI 1), per event. Run: `cargo bench -p millwright-benches --bench codec`.

use std::hint::black_box;
use std::time::Instant;

use millwright_plugin_sdk::codec;
use millwright_plugin_sdk::connector::{AckToken, SourceBatch};
use millwright_plugin_sdk::event::Envelope;
use millwright_plugin_sdk::protocol::Response;

const ROUNDS: usize = 5;
const BATCH: usize = 64;
const ITERS: usize = 4_000;

fn batch() -> Response {
    let events = (0..BATCH)
        .map(|i| {
            Envelope::new(
                "press1",
                "mw.ev.press1.value",
                serde_json::json!(20.0 + (i as f64) / 7.0),
            )
        })
        .collect();
    Response::Batch {
        batch: SourceBatch::new(AckToken(1), events),
    }
}

/// Nanoseconds per event of `f` run over a batch, median of [`ROUNDS`].
fn per_event(mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ITERS {
                f();
            }
            start.elapsed().as_nanos() as f64 / (ITERS * BATCH) as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[ROUNDS / 2]
}

fn main() {
    let r = batch();
    let mp = codec::encode(&r).unwrap();
    let json = serde_json::to_vec(&r).unwrap();
    println!("\n### codec: one batch of {BATCH} envelopes, ns per event (median of {ROUNDS})\n");
    println!("| encoding | bytes/event | encode | decode | clone (for scale) |");
    println!("|---|---:|---:|---:|---:|");
    let clone = per_event(|| drop(black_box(black_box(&r).clone())));
    let mut buf = Vec::new();
    let enc = per_event(|| {
        buf.clear();
        codec::encode_into(&mut buf, black_box(&r)).unwrap();
    });
    let dec = per_event(|| {
        drop(black_box(
            codec::decode::<Response>(black_box(&mp)).unwrap(),
        ))
    });
    println!(
        "| MessagePack (ABI 3, packed envelopes) | {} | {enc:.0} | {dec:.0} | {clone:.0} |",
        mp.len() / BATCH
    );
    let enc = per_event(|| {
        buf.clear();
        serde_json::to_writer(&mut buf, black_box(&r)).unwrap();
    });
    let dec = per_event(|| {
        drop(black_box(
            serde_json::from_slice::<Response>(black_box(&json)).unwrap(),
        ))
    });
    println!(
        "| JSON (ABI 1 shape) | {} | {enc:.0} | {dec:.0} | {clone:.0} |",
        json.len() / BATCH
    );
}
