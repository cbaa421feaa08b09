//! Helpers shared by the facade's in-process tests.

use std::time::Duration;

use solo::Event;
use tokio::sync::broadcast;

/// The next event of `events` that `matches`, within `bound`.
///
/// # Panics
///
/// If none comes within `bound`, or the stream fails.
pub(crate) async fn next_matching(
    events: &mut broadcast::Receiver<Event>,
    bound: Duration,
    mut matches: impl FnMut(&Event) -> bool,
) -> Event {
    tokio::time::timeout(bound, async {
        loop {
            match events.recv().await {
                Ok(event) if matches(&event) => return event,
                Ok(_) => {}
                Err(e) => panic!("event stream failed: {e}"),
            }
        }
    })
    .await
    .expect("event within the bound")
}
