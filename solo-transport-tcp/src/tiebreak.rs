//! Which connection a pair of nodes keeps when it finds itself with two.
//!
//! Both ends run [`resolve`] on the same two connections (each from its own point of view)
//! and must pick the same one, whatever order the handshakes finished in; otherwise each
//! side would close the connection the other kept.

use std::cmp::Ordering;

use solo_core::NodeId;

/// Who dialed a connection, from this node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer dialed this node.
    Inbound,
    /// This node dialed the peer.
    Outbound,
}

/// The verdict of [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Keep the connection already installed; close the new one.
    Existing,
    /// Install the new connection; close the existing one.
    New,
}

/// Chooses between the connection installed for a peer name and a newly authenticated one
/// to a peer of the same name. `local` is this node's id; each connection is given as the
/// peer's id and who dialed it.
///
/// 1. Different incarnations: the newer process wins (a restarted peer replaces its former
///    self; a stale process is refused).
/// 2. Same peer, dialed by the same node: the new one wins. A node only dials a peer it has
///    a connection to when it gave up on that connection.
/// 3. Same peer, one dialed by each side (a simultaneous dial): the connection dialed by the
///    node whose id sorts lower wins, which both ends compute alike.
pub(crate) fn resolve(
    local: &NodeId,
    existing: (&NodeId, Direction),
    new: (&NodeId, Direction),
) -> Keep {
    match new.0.incarnation.cmp(&existing.0.incarnation) {
        Ordering::Greater => return Keep::New,
        Ordering::Less => return Keep::Existing,
        Ordering::Equal => {}
    }
    if new.1 == existing.1 {
        return Keep::New;
    }
    let winner = if local < new.0 {
        Direction::Outbound
    } else {
        Direction::Inbound
    };
    if new.1 == winner {
        Keep::New
    } else {
        Keep::Existing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::tests::id;

    fn flip(d: Direction) -> Direction {
        match d {
            Direction::Inbound => Direction::Outbound,
            Direction::Outbound => Direction::Inbound,
        }
    }

    #[test]
    fn both_ends_keep_the_same_connection_of_a_simultaneous_dial() {
        for (x, y) in [
            (id("a", 1), id("b", 1)),
            (id("b", 1), id("a", 1)),
            (id("a", 1), id("a", 2)),
        ] {
            for existing in [Direction::Inbound, Direction::Outbound] {
                let new = flip(existing);
                let on_x = resolve(&x, (&y, existing), (&y, new));
                // On y the same two connections have the other direction, and they may have
                // been installed in either order.
                let kept_on_x = if on_x == Keep::New { new } else { existing };
                for y_existing in [flip(existing), flip(new)] {
                    let y_new = flip(y_existing);
                    let on_y = resolve(&y, (&x, y_existing), (&x, y_new));
                    let kept_on_y = if on_y == Keep::New { y_new } else { y_existing };
                    assert_eq!(kept_on_y, flip(kept_on_x), "{x} and {y} disagree");
                }
                // The kept one was dialed by the lower id.
                let dialer_is_x = kept_on_x == Direction::Outbound;
                assert_eq!(dialer_is_x, x < y);
            }
        }
    }

    #[test]
    fn a_redial_by_the_same_side_replaces_the_old_connection() {
        let (a, b) = (id("a", 1), id("b", 1));
        for d in [Direction::Inbound, Direction::Outbound] {
            assert_eq!(resolve(&a, (&b, d), (&b, d)), Keep::New);
        }
    }

    #[test]
    fn the_newer_incarnation_wins_whoever_dialed() {
        let a = id("a", 1);
        let (old, new) = (id("b", 1), id("b", 2));
        for d1 in [Direction::Inbound, Direction::Outbound] {
            for d2 in [Direction::Inbound, Direction::Outbound] {
                assert_eq!(resolve(&a, (&old, d1), (&new, d2)), Keep::New);
                assert_eq!(resolve(&a, (&new, d1), (&old, d2)), Keep::Existing);
            }
        }
    }
}
