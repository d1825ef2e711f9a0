//! From a command's arguments to what the server does with it: a replicated write, a
//! read, a reply that needs nobody, or a connection-level action. Arity and syntax errors
//! are answered here with Redis's own texts.

use serde_bytes::ByteBuf;

use crate::resp::{self, parse_i64};
use crate::store::{Read, SetWhen, Write};

/// What to do with one command.
#[derive(Debug)]
pub enum Cmd {
    /// Replicate through the log.
    Write(Write),
    /// Serve from the state (linearizable by default).
    Read(Read),
    /// Answer at once with these bytes (PING, ECHO, COMMAND, errors...).
    Reply(Vec<u8>),
    /// `INFO [section...]`: the node's status; the sections asked for, lowercase.
    Info(Vec<String>),
    /// `QUIT`: answer `+OK` and close.
    Quit,
    /// `QUORATE.FORWARDED`: this connection relays commands from another node, which
    /// answers its own client if we cannot serve it (no forwarding chains or loops).
    Forwarded,
}

/// The private command a forwarding node sends first on its connection to the leader.
pub const FORWARDED: &str = "QUORATE.FORWARDED";

/// Parses one command (copying what it keeps: the caller keeps `args` to forward them).
/// Never fails: a bad command becomes its error reply.
pub fn parse(args: &[Vec<u8>]) -> Cmd {
    let Some(name) = args.first() else { return Cmd::Reply(Vec::new()) };
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    let Some(&(_, arity)) = ARITY.iter().find(|(n, _)| *n == lower) else { return Cmd::Reply(unknown_command(args)) };
    let argc = args.len() as i64;
    if (arity >= 0 && argc != arity) || argc < -arity {
        return error(&format!("ERR wrong number of arguments for '{lower}' command"));
    }
    match parse_known(&lower, args[1..].to_vec()) {
        Ok(cmd) => cmd,
        Err(text) => error(&text),
    }
}

/// Redis's arity convention: `n` means exactly `n` words (the name included), `-n` at
/// least `n`.
const ARITY: &[(&str, i64)] = &[
    ("ping", -1),
    ("echo", 2),
    ("get", 2),
    ("set", -3),
    ("del", -2),
    ("exists", -2),
    ("incr", 2),
    ("decr", 2),
    ("incrby", 3),
    ("decrby", 3),
    ("mget", -2),
    ("mset", -3),
    ("append", 3),
    ("strlen", 2),
    ("cas", 4),
    ("dbsize", 1),
    ("info", -1),
    ("quit", -1),
    ("command", -1),
    ("config", -2),
    ("client", -2),
    ("select", 2),
    ("flushall", -1),
    ("flushdb", -1),
    ("quorate.forwarded", 1),
];

fn parse_known(name: &str, mut args: Vec<Vec<u8>>) -> Result<Cmd, String> {
    let bytes = |v: Vec<u8>| ByteBuf::from(v);
    let take = |args: &mut Vec<Vec<u8>>| std::mem::take(&mut args[0]);
    Ok(match name {
        "ping" if args.len() > 1 => return Err("ERR wrong number of arguments for 'ping' command".into()),
        "ping" => match args.pop() {
            None => Cmd::Reply(b"+PONG\r\n".to_vec()),
            Some(message) => Cmd::Reply(bulk(&message)),
        },
        "echo" => Cmd::Reply(bulk(&args[0])),
        "get" => Cmd::Read(Read::Get(take(&mut args))),
        "set" => parse_set(args)?,
        "del" => Cmd::Write(Write::Del(args.into_iter().map(bytes).collect())),
        "exists" => Cmd::Read(Read::Exists(args)),
        "incr" => Cmd::Write(Write::IncrBy { key: bytes(take(&mut args)), by: 1 }),
        "decr" => Cmd::Write(Write::IncrBy { key: bytes(take(&mut args)), by: -1 }),
        "incrby" => Cmd::Write(Write::IncrBy { by: integer(&args[1])?, key: bytes(take(&mut args)) }),
        "decrby" => {
            let by = integer(&args[1])?.checked_neg().ok_or("ERR decrement would overflow")?;
            Cmd::Write(Write::IncrBy { key: bytes(take(&mut args)), by })
        }
        "mget" => Cmd::Read(Read::MGet(args)),
        "mset" if !args.len().is_multiple_of(2) => {
            return Err("ERR wrong number of arguments for 'mset' command".into());
        }
        "mset" => {
            let mut pairs = Vec::with_capacity(args.len() / 2);
            let mut args = args.into_iter();
            while let (Some(key), Some(value)) = (args.next(), args.next()) {
                pairs.push((bytes(key), bytes(value)));
            }
            Cmd::Write(Write::MSet(pairs))
        }
        "append" => {
            let value = bytes(args.pop().expect("arity 3"));
            Cmd::Write(Write::Append { key: bytes(take(&mut args)), value })
        }
        "strlen" => Cmd::Read(Read::Strlen(take(&mut args))),
        "cas" => {
            let new = bytes(args.pop().expect("arity 4"));
            let expected = bytes(args.pop().expect("arity 4"));
            Cmd::Write(Write::Cas { key: bytes(take(&mut args)), expected, new })
        }
        "dbsize" => Cmd::Read(Read::DbSize),
        "info" => Cmd::Info(args.iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect()),
        "quit" => Cmd::Quit,
        // redis-cli and redis-benchmark ask for the command table; an empty one is fine.
        "command" => Cmd::Reply(b"*0\r\n".to_vec()),
        "config" => parse_config(&args)?,
        "client" => parse_client(&args)?,
        "select" => match integer(&args[0])? {
            0 => Cmd::Reply(resp::OK.to_vec()),
            _ => return Err("ERR DB index is out of range".into()),
        },
        "flushall" | "flushdb" => match args.first().map(|a| a.to_ascii_lowercase()) {
            None => Cmd::Write(Write::FlushAll),
            Some(mode) if args.len() == 1 && (mode == b"sync" || mode == b"async") => Cmd::Write(Write::FlushAll),
            Some(_) => return Err("ERR syntax error".into()),
        },
        "quorate.forwarded" => Cmd::Forwarded,
        other => unreachable!("{other} is in ARITY but not parsed"),
    })
}

/// `SET key value [NX|XX] [GET] [KEEPTTL]`. Expiry options are refused: a key that
/// disappears when a clock says so is not a deterministic function of the log.
fn parse_set(args: Vec<Vec<u8>>) -> Result<Cmd, String> {
    let mut args = args.into_iter();
    let (key, value) = (args.next().expect("arity -3"), args.next().expect("arity -3"));
    let (mut when, mut get) = (SetWhen::Always, false);
    for option in args {
        match option.to_ascii_lowercase().as_slice() {
            b"nx" if when != SetWhen::Present => when = SetWhen::Absent,
            b"xx" if when != SetWhen::Absent => when = SetWhen::Present,
            b"get" => get = true,
            b"keepttl" => {} // No key has a TTL.
            b"ex" | b"px" | b"exat" | b"pxat" => {
                return Err("ERR expiry (EX, PX, EXAT, PXAT) is not supported: keys of a replicated state machine \
                            cannot expire deterministically"
                    .into());
            }
            _ => return Err("ERR syntax error".into()),
        }
    }
    Ok(Cmd::Write(Write::Set { key: ByteBuf::from(key), value: ByteBuf::from(value), when, get }))
}

/// `CONFIG GET pattern...`: no parameters to show (redis-benchmark asks for `save` and
/// `appendonly` and copes with an empty answer).
fn parse_config(args: &[Vec<u8>]) -> Result<Cmd, String> {
    match args[0].to_ascii_lowercase().as_slice() {
        b"get" if args.len() >= 2 => Ok(Cmd::Reply(b"*0\r\n".to_vec())),
        b"get" => Err("ERR wrong number of arguments for 'config|get' command".into()),
        _ => Err(unknown_subcommand(&args[0], "CONFIG")),
    }
}

/// `CLIENT SETNAME` and `CLIENT SETINFO` (which client libraries send on connecting) are
/// accepted and ignored; `CLIENT GETNAME` answers nil.
fn parse_client(args: &[Vec<u8>]) -> Result<Cmd, String> {
    match args[0].to_ascii_lowercase().as_slice() {
        b"setname" | b"setinfo" => Ok(Cmd::Reply(resp::OK.to_vec())),
        b"getname" => Ok(Cmd::Reply(resp::NIL.to_vec())),
        _ => Err(unknown_subcommand(&args[0], "CLIENT")),
    }
}

fn unknown_subcommand(sub: &[u8], command: &str) -> String {
    format!("ERR unknown subcommand '{}'. Try {command} HELP.", String::from_utf8_lossy(truncated(sub, 128)))
}

/// Redis's text: `unknown command 'xyz', with args beginning with: 'a' 'b' `, the name
/// cut at 128 bytes and the arguments once they pass 128 bytes together.
fn unknown_command(args: &[Vec<u8>]) -> Vec<u8> {
    let mut listed = String::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push_str(&format!("'{}' ", String::from_utf8_lossy(truncated(arg, room))));
    }
    let name = String::from_utf8_lossy(truncated(&args[0], 128));
    resp::error_reply(&format!("ERR unknown command '{name}', with args beginning with: {listed}"))
}

fn truncated(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

fn integer(arg: &[u8]) -> Result<i64, String> {
    parse_i64(arg).ok_or_else(|| "ERR value is not an integer or out of range".into())
}

fn bulk(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 16);
    resp::bulk(&mut out, Some(value));
    out
}

fn error(text: &str) -> Cmd {
    Cmd::Reply(resp::error_reply(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(words: &[&str]) -> String {
        let args: crate::resp::Args = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        match parse(&args) {
            Cmd::Reply(bytes) => String::from_utf8(bytes).unwrap(),
            other => panic!("{words:?}: not an immediate reply: {other:?}"),
        }
    }

    #[test]
    fn errors_use_redis_texts() {
        assert_eq!(reply(&["xyz", "a", "b"]), "-ERR unknown command 'xyz', with args beginning with: 'a' 'b' \r\n");
        assert_eq!(reply(&["GET"]), "-ERR wrong number of arguments for 'get' command\r\n");
        assert_eq!(reply(&["ping", "a", "b"]), "-ERR wrong number of arguments for 'ping' command\r\n");
        assert_eq!(reply(&["incrby", "k", "x"]), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(reply(&["set", "k", "v", "nx", "xx"]), "-ERR syntax error\r\n");
        assert_eq!(reply(&["mset", "a", "1", "b"]), "-ERR wrong number of arguments for 'mset' command\r\n");
        assert_eq!(reply(&["select", "1"]), "-ERR DB index is out of range\r\n");
        assert!(reply(&["set", "k", "v", "EX", "10"]).starts_with("-ERR expiry"));
        assert_eq!(reply(&["x\r\ny"]), "-ERR unknown command 'x  y', with args beginning with: \r\n");
    }

    #[test]
    fn immediate_replies() {
        assert_eq!(reply(&["PING"]), "+PONG\r\n");
        assert_eq!(reply(&["ping", "hi"]), "$2\r\nhi\r\n");
        assert_eq!(reply(&["COMMAND", "DOCS"]), "*0\r\n");
        assert_eq!(reply(&["CONFIG", "GET", "save"]), "*0\r\n");
        assert_eq!(reply(&["select", "0"]), "+OK\r\n");
    }
}
