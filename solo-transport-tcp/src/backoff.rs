//! The reconnect schedule, as a pure function of the failure count and a random draw.

use std::time::Duration;

/// How long to wait before the next dial to an address that failed `failures` times in a row.
///
/// The un-jittered delay is `initial · 2^(failures − 1)`, capped at `max`; the result is drawn
/// from its upper half, `[delay / 2, delay]`, by `jitter` ("equal jitter"): nodes that lost
/// the same peer at the same instant spread their retries out, yet none retries much sooner
/// than the schedule says. No failure, no wait.
pub(crate) fn backoff_delay(
    failures: u32,
    initial: Duration,
    max: Duration,
    jitter: u64,
) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = failures.saturating_sub(1).min(31);
    let delay = initial.saturating_mul(1u32 << doublings).min(max);
    let half = delay / 2;
    let spread = u64::try_from((delay - half).as_nanos()).unwrap_or(u64::MAX);
    let extra = if spread == 0 {
        0
    } else {
        jitter % spread.saturating_add(1)
    };
    half + Duration::from_nanos(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITIAL: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    #[test]
    fn the_schedule_doubles_from_50ms_and_caps_at_2s() {
        let ceiling = |failures| backoff_delay(failures, INITIAL, MAX, u64::MAX);
        let full: Vec<u64> = (1..=9)
            .map(|f| {
                let d = backoff_delay(f, INITIAL, MAX, 0) * 2;
                u64::try_from(d.as_millis()).expect("small")
            })
            .collect();
        assert_eq!(full, [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(backoff_delay(0, INITIAL, MAX, 12345), Duration::ZERO);
        assert!(ceiling(1) <= INITIAL);
        assert!(ceiling(100) <= MAX);
        assert!(ceiling(u32::MAX) <= MAX);
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        let mut seed = 0x1234_5678_u64;
        for failures in 1..=12 {
            let top = INITIAL.saturating_mul(1 << (failures - 1)).min(MAX);
            for _ in 0..200 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let d = backoff_delay(failures, INITIAL, MAX, seed);
                assert!(
                    d >= top / 2 && d <= top,
                    "{failures}: {d:?} not in [{:?}, {top:?}]",
                    top / 2
                );
            }
        }
    }

    #[test]
    fn the_top_of_the_range_is_reachable() {
        let top = backoff_delay(3, INITIAL, MAX, 0) * 2;
        let spread = u64::try_from((top / 2).as_nanos()).expect("small");
        assert_eq!(backoff_delay(3, INITIAL, MAX, spread), top);
    }
}
