//! The `redis` example (a Redis-compatible server over quorate) as OS processes, driven by
//! a real Redis client library and by raw bytes: every command, pipelined and not, on the
//! leader and through a follower's forwarding; a leader killed mid-run; malformed RESP;
//! `--redirect` mode.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::{RedisError, RedisResult, Value};
use support::redisprocs::RedisCluster;

/// How long a cluster may take to elect a leader, on a slow, loaded machine.
const ELECTION_WITHIN: Duration = Duration::from_secs(20);

/// A reply as one line: `+OK`, `:3`, `$bytes` (escaped), `nil`, `[a, b]`, `-CODE detail`.
fn show(reply: &RedisResult<Value>) -> String {
    match reply {
        Ok(value) => show_value(value),
        Err(e) => show_error(e),
    }
}

fn show_value(value: &Value) -> String {
    match value {
        Value::Nil => "nil".into(),
        Value::Okay => "+OK".into(),
        Value::SimpleString(s) => format!("+{s}"),
        Value::Int(n) => format!(":{n}"),
        Value::BulkString(bytes) => format!("${}", bytes.escape_ascii()),
        Value::Array(items) => format!("[{}]", items.iter().map(show_value).collect::<Vec<_>>().join(", ")),
        Value::ServerError(e) => format!("-{} {}", e.code(), e.details().unwrap_or("")),
        other => format!("unexpected {other:?}"),
    }
}

fn show_error(e: &RedisError) -> String {
    format!("-{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

/// Every command the server knows, with the reply Redis gives, in an order where each
/// reply is certain (the script starts by emptying the store).
fn script() -> Vec<(Vec<Vec<u8>>, &'static str)> {
    let words = |s: &str| s.split(' ').map(|w| w.as_bytes().to_vec()).collect::<Vec<_>>();
    let binary_key = b"bin\x00\r\nkey".to_vec();
    let binary_value = b"\xff\x00\r\n$-1\r\n".to_vec();
    let mut script: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (words("FLUSHALL"), "+OK"),
        (words("DBSIZE"), ":0"),
        (words("PING"), "+PONG"),
        (words("PING hello"), "$hello"),
        (vec![b"ECHO".to_vec(), b"a b".to_vec()], "$a b"),
        (words("SET k1 v1"), "+OK"),
        (words("GET k1"), "$v1"),
        (words("SET k1 v2 NX"), "nil"),
        (words("SET k1 v2 XX"), "+OK"),
        (words("SET k2 v NX"), "+OK"),
        (words("SET k3 v XX"), "nil"),
        (words("SET k1 v3 GET"), "$v2"),
        (words("GET k1"), "$v3"),
        (
            words("SET k1 v EX 10"),
            "-ERR expiry (EX, PX, EXAT, PXAT) is not supported: keys of a replicated state machine cannot expire \
             deterministically",
        ),
        (words("SET k1 v NX XX"), "-ERR syntax error"),
        (words("GET nope"), "nil"),
        (vec![b"SET".to_vec(), binary_key.clone(), binary_value], "+OK"),
        (vec![b"GET".to_vec(), binary_key], "$\\xff\\x00\\r\\n$-1\\r\\n"),
        (words("EXISTS k1 k2 nope k1"), ":3"),
        (words("DEL k2 nope"), ":1"),
        (words("DEL k2"), ":0"),
        (words("INCR n"), ":1"),
        (words("INCRBY n 41"), ":42"),
        (words("DECR n"), ":41"),
        (words("DECRBY n 40"), ":1"),
        (words("INCRBY n x"), "-ERR value is not an integer or out of range"),
        (words("INCR k1"), "-ERR value is not an integer or out of range"),
        (words("SET big 9223372036854775807"), "+OK"),
        (words("INCR big"), "-ERR increment or decrement would overflow"),
        (words("MSET a 1 b 2"), "+OK"),
        (words("MGET a b nope"), "[$1, $2, nil]"),
        (words("MSET a 1 b"), "-ERR wrong number of arguments for 'mset' command"),
        (words("APPEND s hello"), ":5"),
        (vec![b"APPEND".to_vec(), b"s".to_vec(), b" world".to_vec()], ":11"),
        (words("STRLEN s"), ":11"),
        (words("STRLEN nope"), ":0"),
        (vec![b"CAS".to_vec(), b"s".to_vec(), b"hello world".to_vec(), b"x".to_vec()], ":1"),
        (vec![b"CAS".to_vec(), b"s".to_vec(), b"hello world".to_vec(), b"y".to_vec()], ":0"),
        (words("GET s"), "$x"),
        (words("DBSIZE"), ":7"),
        (words("SELECT 0"), "+OK"),
        (words("SELECT 1"), "-ERR DB index is out of range"),
        (words("COMMAND DOCS"), "[]"),
        (words("CONFIG GET save"), "[]"),
        (words("GET"), "-ERR wrong number of arguments for 'get' command"),
        (words("XYZ a b"), "-ERR unknown command 'XYZ', with args beginning with: 'a' 'b'"),
        (words("FLUSHDB"), "+OK"),
        (words("DBSIZE"), ":0"),
    ];
    // Writes on keys of their own after the flush, left for the caller to check.
    script.extend([(words("SET kept yes"), "+OK"), (words("INCRBY kept-n 7"), ":7")]);
    script
}

fn command(args: &[Vec<u8>]) -> redis::Cmd {
    let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap());
    for arg in &args[1..] {
        cmd.arg(arg.as_slice());
    }
    cmd
}

/// Runs the script one command at a time, checking each reply.
fn run_script(con: &mut redis::Connection, node: &str) {
    for (args, expected) in script() {
        let reply = command(&args).query::<Value>(con);
        assert_eq!(show(&reply).trim_end(), expected, "{node}: {:?}", String::from_utf8_lossy(&args.concat()));
    }
}

/// Runs the whole script as one pipeline, checking each reply.
fn run_script_pipelined(con: &mut redis::Connection, node: &str) {
    let script = script();
    let mut pipe = redis::pipe();
    for (args, _) in &script {
        pipe.add_command(command(args));
    }
    let replies: Vec<RedisResult<Value>> = pipe.ignore_errors().query(con).expect("the pipeline");
    assert_eq!(replies.len(), script.len());
    for ((args, expected), reply) in script.iter().zip(&replies) {
        assert_eq!(
            show(reply).trim_end(),
            *expected,
            "{node}, pipelined: {:?}",
            String::from_utf8_lossy(&args.concat())
        );
    }
}

fn info_field(info: &[(String, String)], name: &str) -> String {
    info.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("INFO has no {name}"))
}

#[test]
fn every_command_on_the_leader_and_through_a_follower_pipelined_or_not() {
    let cluster = RedisCluster::start(3, &[]);
    let leader = cluster.await_leader(ELECTION_WITHIN);
    let follower = cluster.follower(leader);
    for (id, name) in [(leader, "leader"), (follower, "follower")] {
        let mut con = cluster.connect(id).unwrap();
        run_script(&mut con, name);
        run_script_pipelined(&mut con, name);
        let kept: (String, i64) = redis::pipe().get("kept").get("kept-n").query(&mut con).unwrap();
        assert_eq!(kept, ("yes".to_string(), 7));
    }
    // A large binary value, written through the follower, read back everywhere.
    let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut con = cluster.connect(follower).unwrap();
    let _: () = redis::cmd("SET").arg("big").arg(big.as_slice()).query(&mut con).unwrap();
    for id in [leader, follower] {
        let mut con = cluster.connect(id).unwrap();
        let (value, len): (Vec<u8>, usize) = redis::pipe().get("big").strlen("big").query(&mut con).unwrap();
        assert!(value == big && len == big.len(), "node {id}: the large value differs");
    }
    // Every node's INFO names the leader, its client address, and the members.
    for id in cluster.alive() {
        let info = cluster.replication(id).unwrap();
        assert_eq!(info_field(&info, "role"), if id == leader { "master" } else { "slave" }, "node {id}");
        assert_eq!(info_field(&info, "raft_leader_id"), leader.to_string());
        assert_eq!(info_field(&info, "raft_leader_addr"), cluster.addr(leader).to_string());
        assert_eq!(info_field(&info, "raft_members"), "3");
        let commit: u64 = info_field(&info, "raft_commit_index").parse().unwrap();
        assert!(commit > 0 && commit >= info_field(&info, "raft_applied_index").parse::<u64>().unwrap());
        assert!(!info_field(&info, "raft_term").is_empty());
    }
    // INFO stats: the leader's Raft counters moved with the writes above.
    let stats = cluster.info(leader, "stats").unwrap();
    for counter in ["raft_proposals", "raft_entries_committed", "raft_entries_applied", "raft_elections_won"] {
        assert!(info_field(&stats, counter).parse::<u64>().unwrap() > 0, "{counter}: {stats:?}");
    }
    assert_eq!(stats.iter().filter(|(k, _)| k.starts_with("raft_peer")).count(), 2, "traffic per peer: {stats:?}");
    // QUIT answers, then the server closes the connection.
    let mut raw = TcpStream::connect(cluster.addr(follower)).unwrap();
    let (reply, closed) = exchange(&mut raw, b"QUIT\r\n");
    assert_eq!((reply.as_slice(), closed), (&b"+OK\r\n"[..], true));
}

/// Sets `key` to `value` through `con`, retrying (on a new connection if needed) while
/// the cluster answers TRYAGAIN or CLUSTERDOWN or the connection fails, until `deadline`.
fn set_until_acknowledged(
    cluster: &RedisCluster,
    node: usize,
    con: &mut Option<redis::Connection>,
    pairs: &[(String, String)],
    deadline: Instant,
) {
    loop {
        assert!(Instant::now() < deadline, "writes through node {node} not acknowledged in time");
        let Some(c) = con.as_mut() else {
            *con = cluster.connect(node).ok();
            continue;
        };
        let mut pipe = redis::pipe();
        for (k, v) in pairs {
            pipe.set(k, v);
        }
        let replies: RedisResult<Vec<RedisResult<Value>>> = pipe.ignore_errors().query(c);
        let Ok(replies) = replies else {
            *con = None; // The connection broke: a new one next time.
            continue;
        };
        let retry = |r: &RedisResult<Value>| {
            let text = show(r);
            assert!(
                text == "+OK" || text.starts_with("-TRYAGAIN") || text.starts_with("-CLUSTERDOWN"),
                "unexpected answer to SET: {text}"
            );
            text != "+OK"
        };
        if !replies.iter().any(retry) {
            return;
        }
        // Pacing while a new leader is elected, not synchronisation.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes through node `node` until `stop`: single SETs and pipelines of five in turn,
/// each retried until acknowledged. Returns the acknowledged pairs; counts them in `acked`.
fn write_until(cluster: &RedisCluster, node: usize, stop: &AtomicBool, acked: &AtomicUsize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut con = None;
    let mut acknowledged = Vec::new();
    for round in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let size = if round % 2 == 0 { 1 } else { 5 };
        let pairs: Vec<(String, String)> =
            (0..size).map(|i| (format!("key-{node}-{round}-{i}"), format!("value-{round}-{i}"))).collect();
        set_until_acknowledged(cluster, node, &mut con, &pairs, deadline);
        acked.fetch_add(pairs.len(), Ordering::SeqCst);
        acknowledged.extend(pairs);
    }
    acknowledged
}

/// Waits until `counter` reaches `target`.
fn await_count(counter: &AtomicUsize, target: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while counter.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "only {} of {target} writes acknowledged in time",
            counter.load(Ordering::SeqCst)
        );
        // Polling pace, not synchronisation.
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn acknowledged_writes_survive_the_leader_being_killed() {
    let cluster = RedisCluster::start(3, &[]);
    let leader = cluster.await_leader(ELECTION_WITHIN);
    let survivors: Vec<usize> = cluster.alive().into_iter().filter(|&id| id != leader).collect();
    let (stop, acked) = (AtomicBool::new(false), AtomicUsize::new(0));
    let (cluster_ref, stop_ref, acked_ref) = (&cluster, &stop, &acked);
    // One writer through each survivor; the leader is killed while they write.
    let acknowledged: Vec<(String, String)> = std::thread::scope(|s| {
        let writers: Vec<_> =
            survivors.iter().map(|&id| s.spawn(move || write_until(cluster_ref, id, stop_ref, acked_ref))).collect();
        await_count(&acked, 60, Duration::from_secs(30));
        cluster.kill(leader);
        let at_kill = acked.load(Ordering::SeqCst);
        await_count(&acked, at_kill + 120, Duration::from_secs(40));
        stop.store(true, Ordering::SeqCst);
        writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let new_leader = cluster.await_leader(ELECTION_WITHIN);
    assert_ne!(new_leader, leader);
    for id in cluster.alive() {
        let mut con = cluster.connect(id).unwrap();
        let keys: Vec<&str> = acknowledged.iter().map(|(k, _)| k.as_str()).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
        for ((key, value), got) in acknowledged.iter().zip(values) {
            assert_eq!(got.as_deref(), Some(value.as_str()), "node {id}: acknowledged {key} lost");
        }
        let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(size, acknowledged.len());
    }
}

/// Sends `request` on `stream` and reads until the server closes the connection (or 10 s
/// pass): the bytes received, and whether it closed.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> (Vec<u8>, bool) {
    // The server may close before reading all of a large request: a failed write is fine.
    let _ = stream.write_all(request);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (reply, true),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (reply, false);
            }
            Err(_) => return (reply, true), // Reset: closed.
        }
    }
}

/// Pseudo-random bytes (a fixed LCG: the same junk every run), without newlines.
fn junk(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            match (x >> 56) as u8 {
                b'\n' => b'?',
                b => b,
            }
        })
        .collect()
}

#[test]
fn malformed_resp_gets_an_error_and_a_closed_connection_and_harms_nothing() {
    let cluster = RedisCluster::start(1, &["--command-timeout-ms", "300"]);
    let node = cluster.await_leader(ELECTION_WITHIN);
    let mut con = cluster.connect(node).unwrap();
    let _: () = redis::cmd("MSET").arg("a").arg("1").arg("b").arg("2").query(&mut con).unwrap();

    let error = |why: &str| format!("-ERR Protocol error: {why}\r\n").into_bytes();
    let mut too_big_inline = junk(100 << 10);
    too_big_inline[0] = b'x'; // Not '*': an inline command.
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("bad count", b"*x\r\n".to_vec(), error("invalid multibulk length")),
        ("negative bulk length", b"*1\r\n$-5\r\n".to_vec(), error("invalid bulk length")),
        ("null bulk as argument", b"*1\r\n$-1\r\n".to_vec(), error("invalid bulk length")),
        ("huge array", b"*99999999999\r\n".to_vec(), error("invalid multibulk length")),
        ("oversized bulk header", b"*1\r\n$99999999999\r\n".to_vec(), error("invalid bulk length")),
        ("bulk just over the limit", b"*1\r\n$4194305\r\n".to_vec(), error("invalid bulk length")),
        ("endless count line", b"*11111111111111111111111111111111111".to_vec(), error("too big mbulk count string")),
        ("not a bulk string", b"*2\r\n$3\r\nGET\r\n:1\r\n".to_vec(), error("expected '$', got ':'")),
        ("bulk without CRLF", b"*1\r\n$4\r\nPINGxx".to_vec(), error("expected CRLF after a bulk string")),
        ("binary junk", too_big_inline, error("too big inline request")),
        ("unbalanced quotes", b"SET a \"b\r\n".to_vec(), error("unbalanced quotes in request")),
        (
            "served, then refused",
            b"PING\r\n*0\r\n*-1\r\n*x\r\n".to_vec(),
            [&b"+PONG\r\n"[..], &error("invalid multibulk length")].concat(),
        ),
    ];
    for (name, request, expected) in cases {
        let mut stream = TcpStream::connect(cluster.addr(node)).unwrap();
        let (reply, closed) = exchange(&mut stream, &request);
        assert_eq!(String::from_utf8_lossy(&reply), String::from_utf8_lossy(&expected), "{name}");
        assert!(closed, "{name}: the connection stayed open");
    }

    // A node's (or a remote client's) handshake frame on the RESP port is not RESP: it is
    // refused, and the connection closed, never taken for a peer.
    let mut frame = Vec::new();
    let handshake = quorate::transport::Handshake::new("quorate", 2).unwrap();
    quorate::transport::encode_frame(&mut frame, &handshake, 4096).unwrap();
    let mut stream = TcpStream::connect(cluster.addr(node)).unwrap();
    let (reply, closed) = exchange(&mut stream, &frame);
    assert!(closed, "a quorate frame left the RESP connection open");
    assert!(reply.is_empty() || reply.starts_with(b"-ERR"), "{:?}", String::from_utf8_lossy(&reply));

    // Binary junk on a line is an unknown command, not a protocol error: the connection
    // stays usable.
    let mut stream = TcpStream::connect(cluster.addr(node)).unwrap();
    let mut line = b"\x01\xfe\x00junk ".to_vec();
    line.extend_from_slice(b"\r\nPING\r\nQUIT\r\n");
    let (reply, closed) = exchange(&mut stream, &line);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("-ERR unknown command '"), "{reply:?}");
    assert!(reply.ends_with("+PONG\r\n+OK\r\n") && closed, "{reply:?}");

    // Half a command, then silence: closed once the command timeout passes.
    let mut stream = TcpStream::connect(cluster.addr(node)).unwrap();
    let started = Instant::now();
    let (reply, closed) = exchange(&mut stream, b"*2\r\n$3\r\nGET\r\n$5\r\nab");
    assert!(closed, "a half command was never timed out");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(String::from_utf8_lossy(&reply), "-ERR Protocol error: command not completed within 300 ms\r\n");

    // The server and the data are unharmed.
    let mut con = cluster.connect(node).unwrap();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let values: Vec<Option<String>> = redis::cmd("MGET").arg("a").arg("b").query(&mut con).unwrap();
    assert_eq!(values, vec![Some("1".to_string()), Some("2".to_string())]);
    let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 2);
}

#[test]
fn redirect_mode_answers_moved_on_a_follower() {
    let cluster = RedisCluster::start(3, &["--redirect"]);
    let leader = cluster.await_leader(ELECTION_WITHIN);
    let follower = cluster.follower(leader);
    let moved = format!("-MOVED 0 {}", cluster.addr(leader));
    let mut con = cluster.connect(follower).unwrap();
    for cmd in [redis::cmd("SET").arg("k").arg("v").clone(), redis::cmd("GET").arg("k").clone()] {
        let error = cmd.query::<Value>(&mut con).unwrap_err();
        assert_eq!(show_error(&error), moved);
        let leader_addr = cluster.addr(leader).to_string();
        assert_eq!(error.redirect_node(), Some((leader_addr.as_str(), 0)));
    }
    // Commands that need no leader are still served; the leader serves the rest.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let mut con = cluster.connect(leader).unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let value: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(value, "v");
}

#[test]
fn stale_reads_are_served_by_a_follower_itself() {
    let cluster = RedisCluster::start(3, &["--redirect", "--stale-reads"]);
    let leader = cluster.await_leader(ELECTION_WITHIN);
    let follower = cluster.follower(leader);
    let mut con = cluster.connect(leader).unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    // The follower answers reads from its own copy (no -MOVED), which catches up; writes
    // still go to the leader.
    let mut con = cluster.connect(follower).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value: Option<String> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
        if value.as_deref() == Some("v") {
            break;
        }
        assert!(Instant::now() < deadline, "the follower's copy never caught up");
        // Polling pace, not synchronisation.
        std::thread::sleep(Duration::from_millis(10));
    }
    let error = redis::cmd("SET").arg("k").arg("w").query::<Value>(&mut con).unwrap_err();
    assert_eq!(show_error(&error), format!("-MOVED 0 {}", cluster.addr(leader)));
}
