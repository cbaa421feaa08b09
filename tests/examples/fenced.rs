//! The point of fencing tokens: an exclusive singleton writes to a small store that
//! rejects any token lower than the highest it has seen. The owner is frozen (SIGSTOP)
//! with a write on its way, another node takes over once the lease ran out and writes under
//! a larger token, then the frozen owner is resumed: its late write reaches the store and
//! is rejected, and the resumed process stops its worker without another roar.
//!
//! ```sh
//! cargo run -p tests --example fenced
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::{
    Node, NodeEvent, cluster_specs, exclusive_flags, now_us, settled_owner, solo_node_binary,
    wait_any_other,
};

const LOCK: &str = "lock";
/// How long each write travels before it reaches the store: a slow network path, or a
/// pause between deciding to write and the write landing.
const WRITE_DELAY_MS: u64 = 500;

/// The fenced store: one line per write, `NAME TOKEN COUNT`; answers `accepted` or
/// `rejected: ...`. It remembers the highest token it accepted, and keeps a log.
fn start_store() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the store");
    let addr = listener.local_addr().expect("bound");
    let log = Arc::new(Mutex::new(Vec::new()));
    let store_log = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut highest = 0u64;
        for stream in listener.incoming().map_while(Result::ok) {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let token: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let answer = if token >= highest {
                highest = token;
                "accepted".to_owned()
            } else {
                format!("rejected: token {token} is below {highest}, the highest seen")
            };
            if let Ok(mut log) = store_log.lock() {
                log.push(format!("{} -> {answer}", line.trim()));
            }
            let _ = (&stream).write_all(format!("{answer}\n").as_bytes());
        }
    });
    (addr, log)
}

fn fail(why: &str) -> ! {
    eprintln!("fenced demo: {why}");
    std::process::exit(1);
}

fn wait(node: &Node, what: &str, matches: impl FnMut(&NodeEvent) -> bool) -> NodeEvent {
    node.wait_seen(Duration::from_secs(15), matches)
        .unwrap_or_else(|| fail(&format!("{} never {what}", node.spec.name)))
}

fn main() {
    println!("building solo-node…");
    let binary = solo_node_binary(false);
    let (store, log) = start_store();
    println!("fenced store on {store}: it rejects a token below the highest it has seen");
    let mut specs = cluster_specs(3, "k9Qe4tXv2Lm8Rz7w-fenced", &[]);
    for spec in &mut specs {
        spec.extra = exclusive_flags(&["n1", "n2", "n3"], LOCK);
        spec.extra.extend([
            "--fenced-store".to_owned(),
            store.to_string(),
            "--store-delay-ms".to_owned(),
            WRITE_DELAY_MS.to_string(),
        ]);
    }
    println!("starting 3 nodes (all voters), each declaring the exclusive singleton \"{LOCK}\"");
    let nodes: Vec<Node> = specs.into_iter().map(|s| Node::start(&binary, s)).collect();
    let Some(old) = settled_owner(&nodes, LOCK, Duration::from_secs(15)) else {
        fail("no node settled as the owner");
    };
    let token = |e: &NodeEvent| e.field("token").unwrap_or("?").to_owned();
    let accepted = wait(&nodes[old], "wrote to the store", |e| {
        e.event == "store_reply" && e.field("reply") == Some("accepted")
    });
    println!(
        "{} owns it under token {}; its writes are accepted",
        nodes[old].spec.name,
        token(&accepted)
    );
    // Freeze it right after a roar: that roar's write is on its way to the store.
    let roar = wait(&nodes[old], "roared", |e| {
        e.event == "roar" && e.ts_us > accepted.ts_us
    });
    nodes[old].signal("STOP");
    let frozen_at = now_us();
    println!(
        "froze {} (SIGSTOP) with write {} (token {}) on its way",
        nodes[old].spec.name,
        roar.field("count").unwrap_or("?"),
        token(&roar)
    );
    let (new, started) = wait_any_other(&nodes, old, Duration::from_secs(10), |e| {
        e.event == "worker_started" && e.ts_us >= frozen_at
    })
    .unwrap_or_else(|| fail("nobody took over"));
    println!(
        "{} took over {:.2} s later, once the lease ran out, under token {}",
        nodes[new].spec.name,
        (started.ts_us - frozen_at) as f64 / 1e6,
        token(&started)
    );
    wait(&nodes[new], "wrote to the store", |e| {
        e.event == "store_reply" && e.field("reply") == Some("accepted")
    });
    println!("{}'s writes are accepted", nodes[new].spec.name);
    let resumed_at = now_us();
    nodes[old].signal("CONT");
    println!("resumed {} (SIGCONT)", nodes[old].spec.name);
    let late = wait(&nodes[old], "heard back from the store", |e| {
        e.event == "store_reply" && e.ts_us >= resumed_at
    });
    let reply = late.field("reply").unwrap_or("");
    println!("its late write reached the store: {reply}");
    let stopped = wait(&nodes[old], "stopped its worker", |e| {
        e.event == "worker_stopped" && e.ts_us >= resumed_at
    });
    let roared_again =
        nodes[old].find(|e| e.event == "roar" && e.ts_us >= resumed_at && e.ts_us <= stopped.ts_us);
    println!(
        "{} stopped its worker ({}) without another roar: {}",
        nodes[old].spec.name,
        stopped.field("reason").unwrap_or("?"),
        roared_again.is_none()
    );
    println!("store log:");
    for line in log.lock().map(|l| l.clone()).unwrap_or_default() {
        println!("  {line}");
    }
    if !reply.starts_with("rejected") || roared_again.is_some() {
        fail("the late write was not rejected, or the resumed owner roared");
    }
}
