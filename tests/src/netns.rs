//! Linux network namespaces for the tests that need a real LAN: one namespace per node, each
//! with a veth pair whose other end is on a bridge the test makes. Needs root and `ip`;
//! [`Net::new`] says `None` where the machine cannot. It touches only what it creates
//! (named `sx<tag>…`), and deletes it on drop, pass or fail.

use std::process::{Command, Stdio};

/// Runs `ip` with `args`; whether it succeeded.
pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The namespaces, veth pairs and bridge of one test, deleted on drop.
#[derive(Debug)]
pub struct Net {
    tag: String,
    subnet: u8,
    hosts: usize,
}

impl Net {
    /// Makes `hosts` namespaces on one bridge, with the addresses `10.213.(100 + test).(i + 1)`,
    /// or `None` if this machine cannot. `test` tells apart the nets of tests that run at
    /// once in one process.
    pub fn new(test: u8, hosts: usize) -> Option<Net> {
        let tag = format!("{}{test}", std::process::id() % 10_000);
        let subnet = 100 + test;
        let net = Net { tag, subnet, hosts };
        let bridge = net.bridge();
        if !ip(&["link", "add", &bridge, "type", "bridge"]) {
            return None;
        }
        if !ip(&["link", "set", &bridge, "up"]) {
            return None;
        }
        for i in 0..hosts {
            let (ns, host, peer) = (net.ns(i), net.host_veth(i), net.peer_veth(i));
            let addr = format!("{}/24", net.addr(i));
            let ok = ip(&["netns", "add", &ns])
                && ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])
                && ip(&["link", "set", &peer, "netns", &ns])
                && ip(&["link", "set", &host, "master", &bridge])
                && ip(&["link", "set", &host, "up"])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
                && ip(&[
                    "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &peer,
                ])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", &peer, "up"]);
            if !ok {
                return None;
            }
        }
        Some(net)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        format!("sx{}b", self.tag)
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("sx{}n{i}", self.tag)
    }

    fn host_veth(&self, i: usize) -> String {
        format!("sx{}h{i}", self.tag)
    }

    fn peer_veth(&self, i: usize) -> String {
        format!("sx{}p{i}", self.tag)
    }

    /// Host `i`'s IPv4 address.
    pub fn addr(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.subnet, i + 1)
    }

    /// Cuts host `i` off: its link to the bridge goes down, silently for both sides.
    ///
    /// # Panics
    ///
    /// If `ip` fails: the test's premise is gone.
    pub fn cut(&self, i: usize) {
        assert!(ip(&["link", "set", &self.host_veth(i), "down"]), "cut");
    }

    /// Joins host `i` to the bridge again.
    ///
    /// # Panics
    ///
    /// If `ip` fails.
    pub fn heal(&self, i: usize) {
        assert!(ip(&["link", "set", &self.host_veth(i), "up"]), "heal");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.hosts {
            ip(&["link", "del", &self.host_veth(i)]);
            ip(&["netns", "del", &self.ns(i)]);
        }
        ip(&["link", "del", &self.bridge()]);
    }
}
