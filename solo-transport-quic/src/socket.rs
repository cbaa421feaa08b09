//! The endpoint's UDP socket on Linux, which also reports ICMP "port unreachable" errors: the
//! fast path of [`QuicConfig::close_on_unreachable`](crate::QuicConfig::close_on_unreachable).
//!
//! On an unconnected UDP socket Linux reports ICMP errors only with `IP_RECVERR` (and
//! `IPV6_RECVERR`) on, and then in two ways:
//!
//! * each error is queued on the socket's *error queue*, read with `recvmsg(MSG_ERRQUEUE)`:
//!   its address is the destination of the packet that drew it, and a `sock_extended_err`
//!   control message says what it was. A queued error makes the socket signal `POLLERR`.
//! * it also sets the socket's *pending error*, which the next receive or send on the socket
//!   returns once (`ECONNREFUSED` for "port unreachable") instead of doing its work.
//!
//! [`IcmpSocket`] is quinn's tokio socket (the same [`UdpSocketState`] calls) plus:
//!
//! * The error queue is read whenever the socket signals an error, and whenever a receive or
//!   send fails; reading it to the end also clears the pending error. Each "port unreachable"
//!   goes to the network (a channel), which closes the connections to that address. The
//!   queue must be read: its entries count against the socket's receive buffer.
//! * A receive that fails is never reported to quinn, whose endpoint stops for good on any
//!   receive error but `ConnectionReset`: the queue is read and the receive tried again.
//! * A send that fails is tried again once after reading the queue, since the failure may
//!   be an earlier packet's error; further errors are handled as quinn does (the packet is
//!   lost and QUIC sends its content again).
//! * Once the socket signalled an error, tokio considers it "write closed" for good (mio
//!   reads `EPOLLERR` with `EPOLLOUT`, or alone, as a closed pipe, and tokio never clears a
//!   closed state), so its write readiness is always set and tells nothing. quinn's own
//!   poller would then retry a full send buffer in a busy loop. [`WritablePoller`] lets
//!   sends go ahead until one finds the buffer full; then it waits for tokio's readiness,
//!   and if that is the sticky "write closed", asks the kernel (`poll(2)`) and, if the
//!   buffer is still full, looks again a millisecond later.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, RecvMsg, SockaddrStorage, getsockopt, recvmsg, setsockopt,
    sockopt,
};
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{Interest, Ready};
use tokio::sync::mpsc;

/// The most error-queue entries read in one go; more are read on the next poll.
const MAX_ERRORS_PER_DRAIN: usize = 256;
/// The most failed receives in a row in one poll before letting other tasks run.
const MAX_RECV_ERRORS: usize = 16;
/// How long [`WritablePoller`] waits before looking again at a full socket whose write
/// readiness tokio can no longer tell.
const FULL_SOCKET_RETRY: Duration = Duration::from_millis(1);
/// Room for the control messages of one error-queue entry: the `sock_extended_err` with the
/// ICMP sender's address, plus the packet information and traffic class quinn asks for.
const CONTROL_LEN: usize = 256;

type ReadyFuture = Pin<Box<dyn Future<Output = io::Result<Ready>> + Send + Sync>>;

/// A buffer for control messages, aligned as `cmsghdr` needs.
#[repr(C, align(16))]
struct Control([u8; CONTROL_LEN]);

/// Binds a UDP socket to `addr` that reports every ICMP "port unreachable" it receives,
/// with the destination of the packet that drew it, through `unreachable`.
pub(crate) fn bind(
    addr: SocketAddr,
    unreachable: mpsc::Sender<SocketAddr>,
) -> io::Result<Arc<IcmpSocket>> {
    let socket = std::net::UdpSocket::bind(addr)?;
    set_recv_err(&socket, addr.is_ipv6(), true)?;
    let state = UdpSocketState::new((&socket).into())?;
    let io = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
    Ok(Arc::new(IcmpSocket {
        io,
        state,
        send_blocked: AtomicBool::new(false),
        errors: Mutex::new(ErrorWait {
            ready: None,
            off: false,
        }),
        unreachable,
    }))
}

/// Turns `IP_RECVERR` (and `IPV6_RECVERR` on an IPv6 socket) on or off.
fn set_recv_err(socket: &impl AsFd, ipv6: bool, on: bool) -> io::Result<()> {
    if ipv6 {
        setsockopt(socket, sockopt::Ipv6RecvErr, &on)?;
        // A dual-stack socket's IPv4 peers: their errors follow the IPv4 option.
        if let Err(error) = setsockopt(socket, sockopt::Ipv4RecvErr, &on) {
            tracing::debug!(%error, "IP_RECVERR on an IPv6 socket");
        }
    } else {
        setsockopt(socket, sockopt::Ipv4RecvErr, &on)?;
    }
    Ok(())
}

/// A quinn socket that reports ICMP "port unreachable" errors: see the module docs.
pub(crate) struct IcmpSocket {
    io: Arc<tokio::net::UdpSocket>,
    state: UdpSocketState,
    /// The last send found the send buffer full.
    send_blocked: AtomicBool,
    errors: Mutex<ErrorWait>,
    unreachable: mpsc::Sender<SocketAddr>,
}

/// Waiting for the socket to signal an error.
struct ErrorWait {
    ready: Option<ReadyFuture>,
    /// Reading the error queue failed for good (and `IP_RECVERR` was turned off), or the
    /// runtime is shutting down.
    off: bool,
}

impl fmt::Debug for IcmpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IcmpSocket")
            .field("local_addr", &self.io.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl IcmpSocket {
    /// Reads the error queue to the end, then clears the pending error: `Ok` if it stopped
    /// early with more to read, `WouldBlock` once it is empty.
    fn drain_error_queue(&self) -> io::Result<()> {
        for _ in 0..MAX_ERRORS_PER_DRAIN {
            let mut control = Control([0; CONTROL_LEN]);
            // Only the address and the control messages matter, not the packet's bytes.
            let mut data: [IoSliceMut<'_>; 0] = [];
            let received = recvmsg::<SockaddrStorage>(
                self.io.as_raw_fd(),
                &mut data,
                Some(&mut control.0),
                MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
            );
            match received {
                Ok(message) => {
                    if let Some(addr) = port_unreachable(&message) {
                        self.report(addr);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    // An error that raced with the reading, or was not queued (the queue was
                    // full), left the pending error set: the next send would fail for it.
                    let _ = getsockopt(&*self.io, sockopt::SocketError);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(())
    }

    fn report(&self, addr: SocketAddr) {
        match self.unreachable.try_send(addr) {
            Ok(()) => tracing::debug!(%addr, "ICMP port unreachable"),
            // The network is gone, or flooded with errors: the next packet draws another.
            Err(error) => tracing::debug!(%addr, %error, "ICMP port unreachable dropped"),
        }
    }

    /// Reads the error queue if the socket signalled an error, and registers `cx` to be woken
    /// at the next one.
    fn poll_error_queue(&self, cx: &mut Context<'_>) {
        let mut wait = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded, so that an error queue that fills as fast as it is read cannot hold up the
        // receive path.
        for _ in 0..4 {
            if wait.off {
                return;
            }
            let ready = wait.ready.get_or_insert_with(|| {
                let io = Arc::clone(&self.io);
                Box::pin(async move { io.ready(Interest::ERROR).await })
            });
            match ready.as_mut().poll(cx) {
                Poll::Pending => return,
                Poll::Ready(Ok(_)) => wait.ready = None,
                Poll::Ready(Err(error)) => {
                    // The runtime is shutting down: so is everything else.
                    tracing::debug!(%error, "no more UDP socket errors");
                    wait.ready = None;
                    wait.off = true;
                    return;
                }
            }
            // Reading to `WouldBlock` through `try_io` clears the error readiness; an error
            // that arrives meanwhile sets it again, so none is missed.
            let drained = match self.io.try_io(Interest::ERROR, || self.drain_error_queue()) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
                other => other,
            };
            if let Err(error) = drained {
                // Never seen: the socket is valid and the buffer fits. An unread error queue
                // would fill the receive buffer, so stop asking for ICMP errors altogether.
                tracing::warn!(
                    %error,
                    "cannot read the UDP socket's error queue; ICMP errors are ignored from now on"
                );
                let ipv6 = self.io.local_addr().is_ok_and(|a| a.is_ipv6());
                let _ = set_recv_err(&*self.io, ipv6, false);
                wait.off = true;
                return;
            }
        }
        cx.waker().wake_by_ref();
    }

    fn send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        match self.state.try_send((&*self.io).into(), transmit) {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock => {
                // Perhaps an earlier packet's ICMP error, returned instead of sending this
                // one: read the queue, which clears it, and send again, once.
                tracing::trace!(%error, "UDP send failed");
                let _ = self.drain_error_queue();
                self.state.send((&*self.io).into(), transmit)
            }
            result => result,
        }
    }

    /// The kernel's view: does the send buffer have room?
    fn writable_now(&self) -> bool {
        let mut fds = [PollFd::new(self.io.as_fd(), PollFlags::POLLOUT)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            && fds[0]
                .revents()
                .is_some_and(|events| events.contains(PollFlags::POLLOUT))
    }
}

/// The destination of the packet that drew an ICMP "port unreachable", if `message` (from
/// the error queue) is one.
fn port_unreachable(message: &RecvMsg<'_, '_, SockaddrStorage>) -> Option<SocketAddr> {
    let destination = message.address.as_ref().and_then(|address| {
        if let Some(v4) = address.as_sockaddr_in() {
            Some(SocketAddr::V4(SocketAddrV4::from(*v4)))
        } else {
            address
                .as_sockaddr_in6()
                .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
        }
    });
    let Ok(controls) = message.cmsgs() else {
        tracing::debug!("error queue entry with truncated control messages");
        return None;
    };
    for control in controls {
        let error = match control {
            ControlMessageOwned::Ipv4RecvErr(error, _)
            | ControlMessageOwned::Ipv6RecvErr(error, _) => error,
            _ => continue,
        };
        let port_unreachable = match error.ee_origin {
            // ICMP destination unreachable (3), port unreachable (3).
            libc::SO_EE_ORIGIN_ICMP => error.ee_type == 3 && error.ee_code == 3,
            // ICMPv6 destination unreachable (1), port unreachable (4).
            libc::SO_EE_ORIGIN_ICMP6 => error.ee_type == 1 && error.ee_code == 4,
            _ => false,
        };
        if port_unreachable {
            return destination;
        }
        tracing::trace!(
            ?destination,
            origin = error.ee_origin,
            r#type = error.ee_type,
            code = error.ee_code,
            errno = error.ee_errno,
            "UDP socket error ignored"
        );
    }
    None
}

impl AsyncUdpSocket for IcmpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller {
            socket: self,
            wait: WriteWait::Idle,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let result = self.io.try_io(Interest::WRITABLE, || self.send(transmit));
        let blocked = matches!(&result, Err(error) if error.kind() == io::ErrorKind::WouldBlock);
        self.send_blocked.store(blocked, Ordering::Relaxed);
        result
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.poll_error_queue(cx);
        for _ in 0..MAX_RECV_ERRORS {
            ready!(self.io.poll_recv_ready(cx))?;
            let received = self.io.try_io(Interest::READABLE, || {
                self.state.recv((&*self.io).into(), bufs, meta)
            });
            match received {
                Ok(count) => return Poll::Ready(Ok(count)),
                // Readiness cleared: the next `poll_recv_ready` waits.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    // Most likely the pending error of an ICMP error (`ConnectionRefused`
                    // for "port unreachable"): never for quinn, whose endpoint would stop.
                    tracing::trace!(%error, "UDP receive failed");
                    let _ = self.drain_error_queue();
                }
            }
        }
        // Failure after failure: let other tasks run before trying again.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

/// Tells quinn when [`IcmpSocket`] may take another send: see the module docs.
struct WritablePoller {
    socket: Arc<IcmpSocket>,
    wait: WriteWait,
}

enum WriteWait {
    Idle,
    /// tokio's write readiness, after a send found the buffer full.
    Ready(ReadyFuture),
    /// A full socket whose readiness tokio cannot tell: looking again shortly.
    Sleep(Pin<Box<tokio::time::Sleep>>),
}

impl fmt::Debug for WritablePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wait = match self.wait {
            WriteWait::Idle => "idle",
            WriteWait::Ready(_) => "ready",
            WriteWait::Sleep(_) => "sleep",
        };
        f.debug_struct("WritablePoller")
            .field("wait", &wait)
            .finish_non_exhaustive()
    }
}

impl UdpPoller for WritablePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // Until a send finds the buffer full, or once one succeeds again: go ahead.
            if !this.socket.send_blocked.load(Ordering::Relaxed) {
                this.wait = WriteWait::Idle;
                return Poll::Ready(Ok(()));
            }
            match &mut this.wait {
                WriteWait::Idle => {
                    let io = Arc::clone(&this.socket.io);
                    this.wait =
                        WriteWait::Ready(Box::pin(
                            async move { io.ready(Interest::WRITABLE).await },
                        ));
                }
                WriteWait::Ready(ready) => {
                    let readiness = ready!(ready.as_mut().poll(cx));
                    this.wait = WriteWait::Idle;
                    if !readiness?.is_write_closed() || this.socket.writable_now() {
                        return Poll::Ready(Ok(()));
                    }
                    this.wait = WriteWait::Sleep(Box::pin(tokio::time::sleep(FULL_SOCKET_RETRY)));
                }
                WriteWait::Sleep(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    this.wait = WriteWait::Idle;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};

    const WAIT: Duration = Duration::from_secs(10);

    /// An address on `ip` where nothing listens: a port that was just free.
    fn closed_port(ip: std::net::IpAddr) -> SocketAddr {
        let socket = UdpSocket::bind((ip, 0)).expect("binds");
        socket.local_addr().expect("an address")
    }

    fn transmit(destination: SocketAddr, contents: &[u8]) -> Transmit<'_> {
        Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        }
    }

    /// Sends as quinn does: waits for the poller's go-ahead, tries, and waits again if the
    /// socket was not writable after all (as with a new socket, before tokio knows).
    async fn send(socket: &Arc<IcmpSocket>, destination: SocketAddr, contents: &[u8]) {
        let mut poller = Arc::clone(socket).create_io_poller();
        let sending = async {
            loop {
                std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                    .await
                    .expect("no error");
                match socket.try_send(&transmit(destination, contents)) {
                    Ok(()) => return,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => panic!("a send error reached quinn: {error}"),
                }
            }
        };
        tokio::time::timeout(WAIT, sending).await.expect("in time");
    }

    /// Receives one datagram through `socket` (reading its error queue as quinn's endpoint
    /// would while polling), or waits for the first unreachable address, whichever `until`
    /// asks for.
    async fn drive_until<T>(
        socket: &IcmpSocket,
        mut until: impl FnMut(&mut Context<'_>, Option<(SocketAddr, Vec<u8>)>) -> Option<T>,
    ) -> T {
        let driving = std::future::poll_fn(|cx| {
            let mut buf = [0u8; 2048];
            let mut meta = [RecvMeta::default()];
            let received = {
                let mut bufs = [IoSliceMut::new(&mut buf)];
                match socket.poll_recv(cx, &mut bufs, &mut meta) {
                    Poll::Ready(Ok(1)) => Some(meta[0].addr),
                    Poll::Ready(Ok(n)) => panic!("{n} datagrams"),
                    Poll::Ready(Err(error)) => panic!("a receive error reached quinn: {error}"),
                    Poll::Pending => None,
                }
            };
            let datagram = received.map(|from| (from, buf[..meta[0].len].to_vec()));
            let woken = datagram.is_some();
            match until(cx, datagram) {
                Some(done) => Poll::Ready(done),
                None => {
                    if woken {
                        cx.waker().wake_by_ref();
                    }
                    Poll::Pending
                }
            }
        });
        tokio::time::timeout(WAIT, driving).await.expect("in time")
    }

    async fn unreachable_is_reported(local: SocketAddr, target: SocketAddr) {
        let (tx, mut rx) = mpsc::channel(16);
        let socket = bind(local, tx).expect("binds");
        send(&socket, target, b"anyone?").await;
        let reported = drive_until(&socket, |cx, _| match rx.poll_recv(cx) {
            Poll::Ready(addr) => Some(addr.expect("the socket is alive")),
            Poll::Pending => None,
        })
        .await;
        assert_eq!(reported.ip().to_canonical(), target.ip().to_canonical());
        assert_eq!(reported.port(), target.port());

        // The socket works on: its pending error is never returned by a send or a receive,
        // and a datagram sent now arrives.
        let peer = UdpSocket::bind((target.ip(), 0)).expect("binds");
        let peer_addr = peer.local_addr().expect("an address");
        send(&socket, peer_addr, b"to a live peer").await;
        peer.set_read_timeout(Some(WAIT)).expect("a timeout");
        let mut buf = [0; 64];
        let (n, _) = peer.recv_from(&mut buf).expect("the datagram arrives");
        assert_eq!(&buf[..n], b"to a live peer");
        let socket_addr = socket.local_addr().expect("an address");
        let reply_to = SocketAddr::new(target.ip(), socket_addr.port());
        peer.send_to(b"reply", reply_to).expect("sent");
        let (from, data) = drive_until(&socket, |_, datagram| datagram).await;
        assert_eq!(from.ip().to_canonical(), target.ip().to_canonical());
        assert_eq!(data, b"reply");
    }

    #[tokio::test]
    async fn ipv4_port_unreachable_is_reported_and_the_socket_works_on() {
        let ip = Ipv4Addr::LOCALHOST.into();
        unreachable_is_reported(SocketAddr::new(ip, 0), closed_port(ip)).await;
    }

    fn ipv6_available() -> bool {
        let available = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok();
        if !available {
            eprintln!("no IPv6 loopback here: skipped");
        }
        available
    }

    #[tokio::test]
    async fn ipv6_port_unreachable_is_reported() {
        if !ipv6_available() {
            return;
        }
        let ip = Ipv6Addr::LOCALHOST.into();
        unreachable_is_reported(SocketAddr::new(ip, 0), closed_port(ip)).await;
    }

    #[tokio::test]
    async fn a_dual_stack_socket_reports_ipv4_peers() {
        if !ipv6_available() {
            return;
        }
        let target = closed_port(Ipv4Addr::LOCALHOST.into());
        let mapped = SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), target.port());
        unreachable_is_reported(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0), mapped).await;
    }

    /// Why [`WritablePoller`] cannot trust tokio's write readiness once an error came.
    #[tokio::test]
    async fn after_an_icmp_error_tokio_reports_the_socket_write_closed() {
        let (tx, mut rx) = mpsc::channel(16);
        let socket = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), tx).expect("binds");
        let ready = tokio::time::timeout(WAIT, socket.io.ready(Interest::WRITABLE))
            .await
            .expect("in time")
            .expect("ready");
        assert!(!ready.is_write_closed());
        send(&socket, closed_port(Ipv4Addr::LOCALHOST.into()), b"anyone?").await;
        // Read (as the endpoint does) when tokio saw the error.
        drive_until(&socket, |cx, _| match rx.poll_recv(cx) {
            Poll::Ready(reported) => reported,
            Poll::Pending => None,
        })
        .await;
        let ready = tokio::time::timeout(WAIT, socket.io.ready(Interest::WRITABLE))
            .await
            .expect("in time")
            .expect("ready");
        assert!(ready.is_write_closed(), "{ready:?}");
        // The poller still says "go" while sends succeed...
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binds");
        send(&socket, peer.local_addr().expect("an address"), b"live").await;
        // ...and after one found the buffer full, asks the kernel rather than tokio: the
        // socket has room, so it says "go" at once (tokio's readiness would say so forever).
        socket.send_blocked.store(true, Ordering::Relaxed);
        let mut poller = Arc::clone(&socket).create_io_poller();
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(poller.as_mut().poll_writable(cx))).await;
        assert!(matches!(polled, Poll::Ready(Ok(()))), "{polled:?}");
        assert!(socket.writable_now());
    }

    #[tokio::test]
    async fn a_send_refused_for_an_earlier_error_is_sent_again() {
        let (tx, mut rx) = mpsc::channel(16);
        let socket = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), tx).expect("binds");
        let dead = closed_port(Ipv4Addr::LOCALHOST.into());
        send(&socket, dead, b"anyone?").await;
        // Wait (bounded) for the ICMP error to be queued, without reading it.
        let mut fds = [PollFd::new(socket.io.as_fd(), PollFlags::empty())];
        let signalled = nix::poll::poll(&mut fds, PollTimeout::from(10_000u16)).expect("polls");
        assert_eq!(signalled, 1);
        assert!(
            fds[0]
                .revents()
                .is_some_and(|e| e.contains(PollFlags::POLLERR))
        );
        // The kernel refuses this send for the earlier error; the socket sends it again.
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binds");
        send(&socket, peer.local_addr().expect("an address"), b"live").await;
        peer.set_read_timeout(Some(WAIT)).expect("a timeout");
        let mut buf = [0; 16];
        let (n, _) = peer.recv_from(&mut buf).expect("the datagram arrives");
        assert_eq!(&buf[..n], b"live");
        // And the error was read on the way.
        let reported = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("in time");
        assert_eq!(reported, Some(dead));
    }
}
