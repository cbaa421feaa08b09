//! [`Randomness`]: where handshake nonces and backoff jitter come from.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};

/// The transport's source of random bytes: handshake nonces and backoff jitter.
///
/// Real deployments use [`Randomness::system`] (the default), the operating system's
/// generator through `ring`. A deterministic simulation passes its seeded generator with
/// [`Randomness::from_fn`], so that nothing reads ambient randomness and a run replays.
pub struct Randomness(Source);

enum Source {
    System(SystemRandom),
    Fn(Box<dyn FnMut() -> u64 + Send>),
}

impl Randomness {
    /// The operating system's cryptographically secure generator.
    pub fn system() -> Self {
        Self(Source::System(SystemRandom::new()))
    }

    /// Random bits drawn from `next`, 64 at a time: for deterministic simulation and tests.
    ///
    /// Nonces drawn this way are as predictable as `next`; do not use it in production.
    pub fn from_fn(next: impl FnMut() -> u64 + Send + 'static) -> Self {
        Self(Source::Fn(Box::new(next)))
    }

    /// Fills `dest` with random bytes.
    pub(crate) fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomError> {
        match &mut self.0 {
            Source::System(rng) => rng.fill(dest).map_err(|_| RandomError),
            Source::Fn(next) => {
                for chunk in dest.chunks_mut(8) {
                    let bytes = next().to_le_bytes();
                    chunk.copy_from_slice(&bytes[..chunk.len()]);
                }
                Ok(())
            }
        }
    }

    /// 64 random bits.
    pub(crate) fn next_u64(&mut self) -> Result<u64, RandomError> {
        let mut bytes = [0; 8];
        self.fill(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

impl Default for Randomness {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Randomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Source::System(_) => f.write_str("Randomness::system()"),
            Source::Fn(_) => f.write_str("Randomness::from_fn(..)"),
        }
    }
}

/// The operating system's random number generator failed. The handshake that needed a nonce
/// is abandoned; nothing else changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_fn_fills_any_length_deterministically() {
        let seeded = || {
            let mut n = 0u64;
            Randomness::from_fn(move || {
                n += 1;
                n
            })
        };
        let (mut a, mut b) = (seeded(), seeded());
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x).expect("fill");
        b.fill(&mut y).expect("fill");
        assert_eq!(x, y);
        assert_eq!(&x[..8], &1u64.to_le_bytes());
        assert_eq!(&x[8..], &2u64.to_le_bytes()[..5]);
    }

    #[test]
    fn system_randomness_differs_between_draws() {
        let mut rng = Randomness::system();
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        rng.fill(&mut x).expect("fill");
        rng.fill(&mut y).expect("fill");
        assert_ne!(x, y);
    }
}
