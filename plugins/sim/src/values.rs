//! The values a simulated machine produces: a slow sine wave per tag around a base value, with
//! a little deterministic noise, so dashboards show plausible, changing data.

use std::hash::{Hash, Hasher};

/// The value of `tag` on machine `machine` at `t` seconds after start, for sample `seq`.
pub fn sample(machine: &str, tag: &str, t: f64, seq: u64) -> f64 {
    let h = hash(machine, tag);
    let base = 20.0 + (h % 100) as f64; // 20..120
    let amplitude = base * 0.1;
    let period = 20.0 + ((h >> 8) % 40) as f64; // 20..60 s
    let phase = ((h >> 16) % 628) as f64 / 100.0;
    let noise = (xorshift(h ^ seq) % 2001) as f64 / 1000.0 - 1.0; // -1..1
    let v =
        base + amplitude * (std::f64::consts::TAU * t / period + phase).sin() + noise * 0.01 * base;
    (v * 1000.0).round() / 1000.0
}

fn hash(machine: &str, tag: &str) -> u64 {
    // FNV-1a: stable across Rust versions and processes, unlike `DefaultHasher`'s contract.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    machine.hash(&mut h);
    tag.hash(&mut h);
    h.finish()
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_near_their_base_and_change() {
        let a: Vec<f64> = (0..50)
            .map(|i| sample("press1", "temperature", f64::from(i), i as u64))
            .collect();
        assert!(a.iter().all(|v| (17.0..=135.0).contains(v)), "{a:?}");
        assert!(a.windows(2).any(|w| w[0] != w[1]), "values change");
        assert_eq!(
            sample("m", "t", 1.0, 1),
            sample("m", "t", 1.0, 1),
            "deterministic"
        );
    }
}
