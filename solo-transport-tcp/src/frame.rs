//! Framing on the byte stream: a `u32` big-endian length, then that many bytes.
//!
//! The length is checked against the limit *before* any buffer is allocated, so a peer that
//! announces a 4 GiB frame costs four bytes of reading and a closed connection, nothing more.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes in the length prefix.
pub(crate) const LEN_PREFIX: usize = 4;

/// Why a connection's byte stream could not be read or written as frames. The connection is
/// closed; if it was established, its peer is reported [`Link::Down`](solo_core::Link::Down).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer closed the connection cleanly, between two frames.
    #[error("connection closed by peer")]
    Closed,
    /// The socket failed, or closed in the middle of a frame.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The length prefix announces more bytes than the limit allows; nothing was allocated.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// The announced length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The length prefix announces an empty frame, which no sender produces.
    #[error("zero-length frame")]
    Empty,
}

/// Reads one frame of at most `max` bytes.
///
/// Not cancel-safe: the transport reads each connection from one task that never races the
/// read against anything else.
pub(crate) async fn read_frame<R>(reader: &mut R, max: usize) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut prefix = [0u8; LEN_PREFIX];
    let first = reader.read(&mut prefix).await?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    reader.read_exact(&mut prefix[first..]).await?;
    let len = u32::from_be_bytes(prefix);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= max)
        .ok_or(FrameError::Oversized {
            len: u64::from(len),
            max,
        })?;
    let mut frame = vec![0; len];
    reader.read_exact(&mut frame).await?;
    Ok(frame)
}

/// The next frame if `buffered` (what a buffered reader holds already) has all of it, with
/// how many bytes it took; `None` if more must be read first. The same checks as
/// [`read_frame`], without waiting: a reader under load takes frame after frame out of one
/// fill of its buffer, and pays for a timer and a clock only once per fill.
pub(crate) fn buffered_frame(
    buffered: &[u8],
    max: usize,
) -> Option<Result<(&[u8], usize), FrameError>> {
    let prefix: [u8; LEN_PREFIX] = buffered.get(..LEN_PREFIX)?.try_into().ok()?;
    let len = u32::from_be_bytes(prefix);
    if len == 0 {
        return Some(Err(FrameError::Empty));
    }
    let Some(len) = usize::try_from(len).ok().filter(|&len| len <= max) else {
        return Some(Err(FrameError::Oversized {
            len: u64::from(len),
            max,
        }));
    };
    let frame = buffered.get(LEN_PREFIX..LEN_PREFIX + len)?;
    Some(Ok((frame, LEN_PREFIX + len)))
}

/// One frame as a single buffer: the length prefix, then the bytes.
pub(crate) fn framed(frame: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    let len = prefix_for(frame, max)?;
    let mut out = Vec::with_capacity(LEN_PREFIX + frame.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(frame);
    Ok(out)
}

pub(crate) fn prefix_for(frame: &[u8], max: usize) -> Result<[u8; LEN_PREFIX], FrameError> {
    if frame.is_empty() {
        return Err(FrameError::Empty);
    }
    u32::try_from(frame.len())
        .ok()
        .filter(|_| frame.len() <= max)
        .map(u32::to_be_bytes)
        .ok_or(FrameError::Oversized {
            len: frame.len() as u64,
            max,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use solo_core::wire::MAX_FRAME_LEN;

    #[tokio::test]
    async fn frames_round_trip_in_order() {
        let mut bytes = framed(b"one", MAX_FRAME_LEN).expect("framed");
        bytes.extend(framed(b"two!", MAX_FRAME_LEN).expect("framed"));
        assert_eq!(&bytes[..4], &[0, 0, 0, 3]);
        let mut reader = &bytes[..];
        assert_eq!(
            read_frame(&mut reader, MAX_FRAME_LEN).await.expect("read"),
            b"one"
        );
        assert_eq!(
            read_frame(&mut reader, MAX_FRAME_LEN).await.expect("read"),
            b"two!"
        );
        assert!(matches!(
            read_frame(&mut reader, MAX_FRAME_LEN).await,
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn buffered_frames_come_out_whole_or_not_at_all() {
        let mut bytes = framed(b"one", MAX_FRAME_LEN).expect("framed");
        bytes.extend(framed(b"two!", MAX_FRAME_LEN).expect("framed"));
        let (frame, took) = buffered_frame(&bytes, MAX_FRAME_LEN)
            .expect("whole")
            .expect("valid");
        assert_eq!((frame, took), (&b"one"[..], 7));
        let rest = &bytes[took..];
        for cut in 0..rest.len() {
            assert!(
                buffered_frame(&rest[..cut], MAX_FRAME_LEN).is_none(),
                "{cut}"
            );
        }
        let (frame, _) = buffered_frame(rest, MAX_FRAME_LEN)
            .expect("whole")
            .expect("valid");
        assert_eq!(frame, b"two!");
        assert!(matches!(
            buffered_frame(&[0, 0, 0, 0], MAX_FRAME_LEN),
            Some(Err(FrameError::Empty))
        ));
        assert!(matches!(
            buffered_frame(&[0xFF, 0xFF, 0xFF, 0xFF], MAX_FRAME_LEN),
            Some(Err(FrameError::Oversized { .. }))
        ));
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading_or_allocating() {
        // Only the prefix is there: had the reader allocated and read the body, it would
        // have failed with an I/O error (end of stream) instead.
        let mut reader: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF];
        match read_frame(&mut reader, MAX_FRAME_LEN).await {
            Err(FrameError::Oversized { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, MAX_FRAME_LEN);
            }
            other => panic!("expected Oversized, got {other:?}"),
        }
        let just_over = u32::try_from(MAX_FRAME_LEN + 1).expect("fits");
        let prefix = just_over.to_be_bytes();
        let mut reader = &prefix[..];
        assert!(matches!(
            read_frame(&mut reader, MAX_FRAME_LEN).await,
            Err(FrameError::Oversized { .. })
        ));
    }

    #[tokio::test]
    async fn empty_and_truncated_frames_are_errors() {
        let mut reader: &[u8] = &[0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut reader, MAX_FRAME_LEN).await,
            Err(FrameError::Empty)
        ));
        let mut reader: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut reader, MAX_FRAME_LEN).await,
            Err(FrameError::Io(_))
        ));
        let mut reader: &[u8] = &[0, 0, 0, 9, 1, 2, 3];
        assert!(matches!(
            read_frame(&mut reader, MAX_FRAME_LEN).await,
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn writers_refuse_what_readers_would() {
        assert!(matches!(framed(&[], 10), Err(FrameError::Empty)));
        assert!(matches!(
            framed(&[0; 11], 10),
            Err(FrameError::Oversized { len: 11, max: 10 })
        ));
        assert_eq!(framed(b"ab", 10).expect("framed"), [0, 0, 0, 2, b'a', b'b']);
    }
}
