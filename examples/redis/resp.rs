//! RESP2, the Redis wire protocol: a bounded, incremental request parser (multibulk and
//! inline commands), a reply copier for relaying a leader's replies, and reply encoders.
//!
//! Every size read from the wire is checked against a named bound before anything is
//! allocated for it, so no input can make the server panic, or hold more than about three
//! times [`REQUEST_BYTES_MAX`] per connection (the arguments parsed so far, and a buffer at
//! most twice the unparsed rest: it is compacted once more than half is consumed).

use std::io::{self, BufRead};

/// Largest bulk string (one argument) accepted, and so the largest value. Redis allows
/// 512 MiB (`proto-max-bulk-len`); a replicated write must fit one Raft command, so we keep
/// it small: 4 MiB.
pub const ARG_BYTES_MAX: usize = 4 << 20;
/// Most arguments in one multibulk request (Redis's own limit for authenticated clients).
pub const ARGS_MAX: i64 = 1 << 20;
/// Longest inline command line (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_BYTES_MAX: usize = 64 << 10;
/// Most bytes one command may hold while it is being received (arguments plus
/// [`ARG_OVERHEAD_BYTES`] each); a larger one is a protocol error. This is also the bound
/// on what a connection buffers.
pub const REQUEST_BYTES_MAX: usize = 8 << 20;
/// What one parsed argument costs besides its bytes (its `Vec`), counted against
/// [`REQUEST_BYTES_MAX`] so a million empty arguments cannot cost 24 MB unnoticed.
const ARG_OVERHEAD_BYTES: usize = 24;
/// Longest `*<count>` or `$<length>` header line: a sign, 20 digits, CRLF, with room.
const COUNT_LINE_MAX: usize = 32;
/// How much one `read` call asks for.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Longest status or error line in a reply being relayed.
const REPLY_LINE_MAX: usize = 64 << 10;
/// Deepest array nesting in a reply being relayed (ours never nest).
const REPLY_DEPTH_MAX: usize = 8;
/// Largest whole reply relayed from a leader (an `MGET` of many large values is bounded
/// by this, not by the leader).
pub const REPLY_BYTES_MAX: usize = 64 << 20;

/// A request that breaks the protocol: the text after `-ERR Protocol error: `. The
/// connection is closed after it is answered, as Redis does.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(why: impl Into<String>) -> ProtocolError {
        ProtocolError(why.into())
    }
}

/// One command: its arguments, the command name first.
pub type Args = Vec<Vec<u8>>;

/// The arguments received so far of a multibulk command.
struct Partial {
    args: Args,
    /// Arguments still to come.
    remaining: usize,
    /// Bytes received (plus overhead per argument). Invariant: <= REQUEST_BYTES_MAX.
    bytes: usize,
}

/// Splits a connection's input into commands, keeping the unfinished one between reads.
///
/// A command's arguments are copied out as each whole bulk string arrives, so a large
/// command received in many reads is scanned once, not once per read.
#[derive(Default)]
pub struct RequestParser {
    /// Received bytes are `buf[start..end]`; the rest is room for the next read (zeroed
    /// once when the buffer grows, not on every read).
    buf: Vec<u8>,
    /// Bytes of `buf` before this are consumed. Invariant: start <= end <= buf.len().
    start: usize,
    end: usize,
    partial: Option<Partial>,
}

impl RequestParser {
    /// Reads once from `from` into the buffer; returns the bytes read (0: end of input).
    pub fn read_from(&mut self, from: &mut impl io::Read) -> io::Result<usize> {
        self.compact();
        if self.buf.len() - self.end < READ_CHUNK_BYTES {
            self.buf.resize(self.end + READ_CHUNK_BYTES, 0);
        }
        let n = from.read(&mut self.buf[self.end..self.end + READ_CHUNK_BYTES])?;
        self.end += n;
        Ok(n)
    }

    /// Appends bytes already read (for tests and callers with their own buffers).
    #[cfg(test)]
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
    }

    /// Bytes of the command being received (unparsed input and parsed arguments). A
    /// connection stops reading once this reaches [`REQUEST_BYTES_MAX`].
    pub fn pending_bytes(&self) -> usize {
        self.end - self.start + self.partial.as_ref().map_or(0, |p| p.bytes)
    }

    /// Drops consumed bytes once they are most of the buffer, so it does not grow forever.
    fn compact(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > READ_CHUNK_BYTES && self.start * 2 > self.end {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
    }

    /// The next whole command, `None` if more input is needed.
    pub fn next_command(&mut self) -> Result<Option<Args>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                let avail = &self.buf[self.start..self.end];
                match avail.first() {
                    None => return Ok(None),
                    Some(b'*') => {
                        if !self.start_multibulk()? {
                            return Ok(None);
                        }
                    }
                    Some(_) => match self.inline()? {
                        None => return Ok(None),
                        Some(args) if args.is_empty() => continue, // A blank line: no command.
                        Some(args) => return Ok(Some(args)),
                    },
                }
                if self.partial.is_none() {
                    continue; // `*0` or `*-1`: an empty command, skipped like Redis does.
                }
            }
            if !self.more_bulks()? {
                return Ok(None);
            }
            let done = self.partial.take().expect("a command in progress");
            return Ok(Some(done.args));
        }
    }

    /// Parses a `*<count>` header; false if it is not complete yet.
    fn start_multibulk(&mut self) -> Result<bool, ProtocolError> {
        let avail = &self.buf[self.start..self.end];
        let Some((count, used)) = count_line(avail, "multibulk")? else { return Ok(false) };
        self.start += used;
        match count {
            // Redis accepts both as an empty command.
            -1 | 0 => {}
            n if !(1..=ARGS_MAX).contains(&n) => return Err(ProtocolError::new("invalid multibulk length")),
            n => {
                let remaining = n as usize;
                // Capacity from a number on the wire is capped; the Vec grows as bulks arrive.
                let args = Vec::with_capacity(remaining.min(1024));
                self.partial = Some(Partial { args, remaining, bytes: 0 });
            }
        }
        Ok(true)
    }

    /// Parses as many whole bulk strings as are buffered; true once the command is whole.
    fn more_bulks(&mut self) -> Result<bool, ProtocolError> {
        let partial = self.partial.as_mut().expect("a command in progress");
        while partial.remaining > 0 {
            let avail = &self.buf[self.start..self.end];
            match avail.first() {
                None => return Ok(false),
                Some(b'$') => {}
                Some(&other) => {
                    return Err(ProtocolError(format!("expected '$', got '{}'", printable(other))));
                }
            }
            let Some((len, used)) = count_line(avail, "bulk")? else { return Ok(false) };
            if !(0..=ARG_BYTES_MAX as i64).contains(&len) {
                return Err(ProtocolError::new("invalid bulk length"));
            }
            let len = len as usize;
            if partial.bytes + len + ARG_OVERHEAD_BYTES > REQUEST_BYTES_MAX {
                return Err(ProtocolError(format!("request larger than {REQUEST_BYTES_MAX} bytes")));
            }
            // The header is parsed again once the whole bulk is there: a few bytes.
            if avail.len() < used + len + 2 {
                return Ok(false);
            }
            if &avail[used + len..used + len + 2] != b"\r\n" {
                return Err(ProtocolError::new("expected CRLF after a bulk string"));
            }
            partial.args.push(avail[used..used + len].to_vec());
            partial.bytes += len + ARG_OVERHEAD_BYTES;
            partial.remaining -= 1;
            self.start += used + len + 2;
        }
        Ok(true)
    }

    /// Parses an inline command (a line of space-separated, possibly quoted words, as
    /// telnet and `redis-cli` in some modes send); `None` if the line is not complete.
    fn inline(&mut self) -> Result<Option<Args>, ProtocolError> {
        let avail = &self.buf[self.start..self.end];
        let window = &avail[..avail.len().min(INLINE_BYTES_MAX)];
        let Some(end) = window.iter().position(|&b| b == b'\n') else {
            if avail.len() >= INLINE_BYTES_MAX {
                return Err(ProtocolError::new("too big inline request"));
            }
            return Ok(None);
        };
        let line = avail[..end].strip_suffix(b"\r").unwrap_or(&avail[..end]);
        let args = split_args(line).ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
        self.start += end + 1;
        Ok(Some(args))
    }
}

/// Parses a `*<n>\r\n` or `$<n>\r\n` header at the start of `avail`: the number and the
/// bytes used; `None` if the line is not complete yet. `what` names it in errors, as
/// Redis does ("invalid multibulk length", "invalid bulk length").
fn count_line(avail: &[u8], what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &avail[..avail.len().min(COUNT_LINE_MAX)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if avail.len() >= COUNT_LINE_MAX {
            let short = if what == "multibulk" { "mbulk" } else { "bulk" };
            return Err(ProtocolError(format!("too big {short} count string")));
        }
        return Ok(None);
    };
    let digits =
        avail[1..newline].strip_suffix(b"\r").ok_or_else(|| ProtocolError(format!("invalid {what} length")))?;
    let n = parse_i64(digits).ok_or_else(|| ProtocolError(format!("invalid {what} length")))?;
    Ok(Some((n, newline + 1)))
}

/// Parses a decimal integer strictly, as Redis's `string2ll`: an optional `-`, digits, no
/// leading zeros, no spaces or `+`, within `i64`.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let leading_zero = digits.len() > 1 && digits[0] == b'0';
    if digits.is_empty() || leading_zero || (negative && digits == b"0") || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // All ASCII digits, so UTF-8; `parse` checks the range.
    let text = std::str::from_utf8(bytes).ok()?;
    text.parse().ok()
}

/// Splits an inline command line into words like Redis's `sdssplitargs`: words separated
/// by spaces; `"..."` with C escapes (`\n`, `\xHH`, ...) and `'...'` (only `\'` escaped)
/// may start anywhere in a word; a closing quote must end the word. `None`: unbalanced
/// quotes.
pub fn split_args(line: &[u8]) -> Option<Args> {
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Some(words);
        }
        let mut word = Vec::new();
        loop {
            match line.get(i) {
                None => break,
                Some(c) if c.is_ascii_whitespace() => break,
                Some(b'"') => i = double_quoted(line, i + 1, &mut word)?,
                Some(b'\'') => i = single_quoted(line, i + 1, &mut word)?,
                Some(&c) => {
                    word.push(c);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
}

/// Reads a `"`-quoted part starting after the quote; returns the index after the closing
/// quote, which must end the word.
fn double_quoted(line: &[u8], mut i: usize, word: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(i)? {
            b'\\' if i + 3 < line.len() && line[i + 1] == b'x' && hex_pair(line[i + 2], line[i + 3]).is_some() => {
                word.push(hex_pair(line[i + 2], line[i + 3])?);
                i += 4;
            }
            b'\\' if i + 1 < line.len() => {
                word.push(match line[i + 1] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 8,
                    b'a' => 7,
                    other => other,
                });
                i += 2;
            }
            b'"' => return closing(line, i + 1),
            c => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// Reads a `'`-quoted part starting after the quote (only `\'` is an escape).
fn single_quoted(line: &[u8], mut i: usize, word: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(i)? {
            b'\\' if line.get(i + 1) == Some(&b'\'') => {
                word.push(b'\'');
                i += 2;
            }
            b'\'' => return closing(line, i + 1),
            c => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// A closing quote must be followed by a space or the end of the line.
fn closing(line: &[u8], next: usize) -> Option<usize> {
    match line.get(next) {
        None => Some(next),
        Some(c) if c.is_ascii_whitespace() => Some(next),
        Some(_) => None,
    }
}

fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

/// A byte as it may appear in an error line: printable ASCII as is, others as `?`.
fn printable(b: u8) -> char {
    if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' }
}

// ---------------------------------------------------------------------------------------
// Replies.

/// `+OK`.
pub const OK: &[u8] = b"+OK\r\n";
/// The null bulk string.
pub const NIL: &[u8] = b"$-1\r\n";

/// Appends an error reply; `text` starts with its code (`ERR`, `TRYAGAIN`, ...). CR and
/// LF become spaces (an error is one line), as Redis's `addReplyErrorFormat` does.
pub fn error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    out.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

/// An error reply on its own.
pub fn error_reply(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 3);
    error(&mut out, text);
    out
}

/// Appends an integer reply.
pub fn int(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string, or the null bulk string for `None`.
pub fn bulk(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(value) = value else {
        out.extend_from_slice(NIL);
        return;
    };
    out.push(b'$');
    out.extend_from_slice(value.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends an array header of `len` elements (the elements follow).
pub fn array(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a command as a client sends it: an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[Vec<u8>]) {
    array(out, args.len());
    for arg in args {
        bulk(out, Some(arg));
    }
}

/// Reads one whole reply from `from` and appends its bytes, unchanged, to `out`. Every
/// size is bounded, so a misbehaving peer costs an error, not unbounded memory.
pub fn copy_reply(from: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<()> {
    copy_reply_at(from, out, 0)
}

fn copy_reply_at(from: &mut impl BufRead, out: &mut Vec<u8>, depth: usize) -> io::Result<()> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {why}"));
    if depth > REPLY_DEPTH_MAX || out.len() > REPLY_BYTES_MAX {
        return Err(bad("too deep or too large"));
    }
    let start = out.len();
    let mut limited = io::Read::take(&mut *from, REPLY_LINE_MAX as u64);
    limited.read_until(b'\n', out)?;
    let line = &out[start..];
    if !line.ends_with(b"\r\n") {
        return Err(if line.is_empty() { io::ErrorKind::UnexpectedEof.into() } else { bad("unterminated line") });
    }
    let (kind, body) = (line[0], &line[1..line.len() - 2]);
    match kind {
        b'+' | b'-' | b':' => Ok(()),
        b'$' => match parse_i64(body) {
            Some(-1) => Ok(()),
            Some(n) if (0..=REPLY_BYTES_MAX as i64).contains(&n) => {
                let at = out.len();
                out.resize(at + n as usize + 2, 0);
                io::Read::read_exact(from, &mut out[at..])?;
                if !out.ends_with(b"\r\n") {
                    return Err(bad("bulk string without CRLF"));
                }
                Ok(())
            }
            _ => Err(bad("bulk length")),
        },
        b'*' => match parse_i64(body) {
            Some(-1) => Ok(()),
            Some(n) if (0..=ARGS_MAX).contains(&n) => {
                for _ in 0..n {
                    copy_reply_at(from, out, depth + 1)?;
                }
                Ok(())
            }
            _ => Err(bad("array length")),
        },
        _ => Err(bad("unknown type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> (Vec<Args>, Result<(), ProtocolError>) {
        let mut parser = RequestParser::default();
        parser.feed(input);
        let mut commands = Vec::new();
        loop {
            match parser.next_command() {
                Ok(Some(args)) => commands.push(args),
                Ok(None) => return (commands, Ok(())),
                Err(e) => return (commands, Err(e)),
            }
        }
    }

    fn words(ws: &[&str]) -> Args {
        ws.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline_commands_in_one_buffer() {
        let (commands, result) = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\n*0\r\nset a \"b c\"\r\n");
        assert_eq!(result, Ok(()));
        assert_eq!(commands, vec![words(&["GET", "k"]), words(&["PING"]), words(&["set", "a", "b c"])]);
    }

    #[test]
    fn a_command_split_at_every_byte_parses_the_same() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n";
        let mut parser = RequestParser::default();
        let mut got = Vec::new();
        for &b in input {
            parser.feed(&[b]);
            while let Some(args) = parser.next_command().unwrap() {
                got.push(args);
            }
        }
        assert_eq!(got, vec![vec![b"SET".to_vec(), b"k\r\n".to_vec(), Vec::new()]]);
        assert_eq!(parser.pending_bytes(), 0);
    }

    #[test]
    fn malformed_requests_are_protocol_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"*x\r\n", "invalid multibulk length"),
            (b"*-5\r\n", "invalid multibulk length"),
            (b"*99999999999\r\n", "invalid multibulk length"),
            (b"*99999999999999999999999\r\n", "invalid multibulk length"),
            (b"*1\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$999999999\r\n", "invalid bulk length"),
            (b"*1\r\n$01\r\n", "invalid bulk length"),
            (b"*1\r\n:1\r\n", "expected '$', got ':'"),
            (b"*1\r\n$1\r\nab\r\n", "expected CRLF after a bulk string"),
            (b"*1111111111111111111111111111111111", "too big mbulk count string"),
            (b"set a \"b\r\n", "unbalanced quotes in request"),
            (b"set a 'b'c\r\n", "unbalanced quotes in request"),
        ];
        for (input, why) in cases {
            let (_, result) = parse_all(input);
            assert_eq!(result, Err(ProtocolError(why.to_string())), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn an_endless_inline_line_is_refused_at_its_bound() {
        let (_, result) = parse_all(&vec![b'a'; INLINE_BYTES_MAX]);
        assert_eq!(result, Err(ProtocolError::new("too big inline request")));
        let (_, result) = parse_all(&vec![b'a'; INLINE_BYTES_MAX - 1]);
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn too_many_bytes_in_one_command_are_refused() {
        let mut input = b"*3\r\n".to_vec();
        for _ in 0..3 {
            input.extend_from_slice(format!("${ARG_BYTES_MAX}\r\n").as_bytes());
            input.extend(std::iter::repeat_n(b'v', ARG_BYTES_MAX));
            input.extend_from_slice(b"\r\n");
        }
        let (_, result) = parse_all(&input);
        assert_eq!(result, Err(ProtocolError(format!("request larger than {REQUEST_BYTES_MAX} bytes"))));
    }

    #[test]
    fn inline_quoting_follows_redis() {
        assert_eq!(split_args(br#"a "b\x41\n" 'c\'d' e"f g""#), Some(words(&["a", "bA\n", "c'd", "ef g"])));
        assert_eq!(split_args(b"   "), Some(Vec::new()));
        assert_eq!(split_args(br#""\x4""#), Some(words(&["x4"])));
        assert_eq!(split_args(b"\"abc"), None);
        assert_eq!(split_args(b"'abc"), None);
    }

    #[test]
    fn integers_are_parsed_strictly() {
        for (text, n) in [("0", Some(0)), ("-12", Some(-12)), ("9223372036854775807", Some(i64::MAX))] {
            assert_eq!(parse_i64(text.as_bytes()), n);
        }
        for text in ["", "-", "+1", " 1", "01", "-0", "1.5", "9223372036854775808", "1e3"] {
            assert_eq!(parse_i64(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn replies_are_copied_whole() {
        let input = b"*3\r\n$1\r\na\r\n$-1\r\n:5\r\n+OK\r\n";
        let mut reader = io::Cursor::new(&input[..]);
        let mut out = Vec::new();
        copy_reply(&mut reader, &mut out).unwrap();
        assert_eq!(out, b"*3\r\n$1\r\na\r\n$-1\r\n:5\r\n");
        out.clear();
        copy_reply(&mut reader, &mut out).unwrap();
        assert_eq!(out, b"+OK\r\n");
        assert!(copy_reply(&mut reader, &mut Vec::new()).is_err());
        assert!(copy_reply(&mut io::Cursor::new(&b"$-5\r\n"[..]), &mut Vec::new()).is_err());
        assert!(copy_reply(&mut io::Cursor::new(&b"*9999999999\r\n"[..]), &mut Vec::new()).is_err());
    }
}
