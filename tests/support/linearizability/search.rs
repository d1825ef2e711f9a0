//! The search for one key: Wing & Gong's, with Lowe's just-in-time linearization and
//! Porcupine's memo (see the parent module's docs for the rules it adds).

use std::collections::HashSet;
use std::fmt::Write as _;

use super::super::history::Op;
use super::{EXPLAIN_OPS_MAX, EXPLAIN_PREFIX_STEPS, Fast, KeyHistory, KeyOp, Lists, State, Step, apply};

/// A doubly linked list over `0..n` with the sentinel `n`, whose nodes lift out and go back
/// in last-out-first-in (Knuth's dancing links): a lifted node keeps its links.
struct Links {
    prev: Vec<u32>,
    next: Vec<u32>,
}

impl Links {
    /// The list `0, 1, .., n - 1`.
    fn new(n: usize) -> Links {
        let end = u32::try_from(n).expect("fewer than 2^32 nodes");
        Links { prev: std::iter::once(end).chain(0..end).collect(), next: (1..=end).chain([0]).collect() }
    }
    fn end(&self) -> u32 {
        (self.next.len() - 1) as u32
    }
    fn first(&self) -> u32 {
        self.next[self.end() as usize]
    }
    fn is_empty(&self) -> bool {
        self.first() == self.end()
    }
    fn next(&self, i: u32) -> u32 {
        self.next[i as usize]
    }
    fn lift(&mut self, i: u32) {
        let (p, n) = (self.prev[i as usize], self.next[i as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
    }
    fn restore(&mut self, i: u32) {
        let (p, n) = (self.prev[i as usize], self.next[i as usize]);
        self.next[p as usize] = i;
        self.prev[n as usize] = i;
    }
}

/// A call or a return of a required operation.
#[derive(Clone, Copy)]
struct Entry {
    time: u64,
    op: u32,
    ret: bool,
}

/// An operation placed by the search; each kind indexes its own vector of `KeyHistory`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Placed {
    Required(u32),
    Optional(u32),
    HiddenWrite(u32),
    HiddenCas(u32),
}

/// Where the search stands among one configuration's candidates: the required ones in list
/// order, then the optional ones, then the hidden ones. `boundary` is the time of the first
/// return in the list: only operations invoked by then may come next. `need` is the value a
/// candidate cas answered false against, when one did (only then may a hidden op come next).
#[derive(Clone, Copy)]
enum Cursor {
    /// A new configuration: first look for a required candidate that leaves the value as
    /// it is (a read, a refused cas). If one fits, it alone is tried: any linearization
    /// from here stays valid with it moved to the front, since it changes nothing and every
    /// op that had to precede it is placed already.
    Start,
    Required(u32),
    Optional {
        node: u32,
        boundary: u64,
        need: Option<i64>,
    },
    HiddenWrite {
        boundary: u64,
        need: i64,
    },
    HiddenCas {
        boundary: u64,
        need: i64,
    },
    Exhausted,
}

/// What undoes one placement, and where to go on among the candidates it was one of.
#[derive(Clone, Copy)]
struct Frame {
    placed: Placed,
    state: State,
    hi: usize,
    resume: Cursor,
}

pub(super) enum Verdict {
    Linearizable,
    NotLinearizable,
    Unknown,
}

enum Tried {
    Descended,
    Rejected,
    Capped,
}

pub(super) struct Search<'h> {
    h: &'h KeyHistory,
    lists: Lists,
    /// Calls and returns of the required ops by time, calls first at equal times (so
    /// operations that touch count as concurrent), then by op.
    entries: Vec<Entry>,
    call_of: Vec<u32>,
    return_of: Vec<u32>,
    required: Links,
    optional: Links,
    hidden_writes: Links,
    hidden_cas: Links,
    /// The required ops placed. Invariant: every op before the first call in `required`
    /// (ops are indexed by invocation) is placed.
    placed: Vec<u64>,
    /// The other ops placed: optional, then hidden writes, then hidden cas.
    placed_extra: Vec<u64>,
    /// One more than the highest required op placed (0 if none).
    hi: usize,
    state: State,
    memo: HashSet<Box<[u64]>, Fast>,
    /// The configuration being looked up, reused.
    scratch: Vec<u64>,
    limit: u64,
    stack: Vec<Frame>,
    /// The longest prefix placed so far. Invariant: `best[..common]` is what `stack` places.
    best: Vec<Placed>,
    common: usize,
}

impl<'h> Search<'h> {
    pub(super) fn new(h: &'h KeyHistory, lists: Lists, limit: u64) -> Search<'h> {
        let mut entries: Vec<Entry> = (0..h.required.len() as u32)
            .flat_map(|op| {
                let o = &h.required[op as usize];
                [Entry { time: o.invoke, op, ret: false }, Entry { time: o.complete, op, ret: true }]
            })
            .collect();
        entries.sort_by_key(|e| (e.time, e.ret, e.op));
        let (mut call_of, mut return_of) = (vec![0; h.required.len()], vec![0; h.required.len()]);
        for (at, e) in entries.iter().enumerate() {
            let slot = if e.ret { &mut return_of } else { &mut call_of };
            slot[e.op as usize] = at as u32;
        }
        Search {
            h,
            lists,
            required: Links::new(entries.len()),
            entries,
            call_of,
            return_of,
            optional: Links::new(h.optional.len()),
            hidden_writes: Links::new(h.hidden_writes.len()),
            hidden_cas: Links::new(h.hidden_cas.len()),
            placed: vec![0; h.required.len().div_ceil(64)],
            placed_extra: vec![0; (h.optional.len() + h.hidden()).div_ceil(64)],
            hi: 0,
            state: State::Absent,
            memo: HashSet::default(),
            scratch: Vec::new(),
            limit,
            stack: Vec::new(),
            best: Vec::new(),
            common: 0,
        }
    }

    /// Configurations explored so far.
    pub(super) fn explored(&self) -> u64 {
        self.memo.len() as u64
    }

    pub(super) fn run(&mut self) -> Verdict {
        let mut cursor = Cursor::Start;
        loop {
            if self.required.is_empty() {
                return Verdict::Linearizable;
            }
            let (placed, resume) = match cursor {
                Cursor::Start => match self.pure_candidate() {
                    Some(op) => (Placed::Required(op), Cursor::Exhausted),
                    None => {
                        cursor = Cursor::Required(self.required.first());
                        continue;
                    }
                },
                Cursor::Required(e) => {
                    let entry = self.entries[e as usize];
                    if entry.ret {
                        cursor = self.past_required(entry.time);
                        continue;
                    }
                    (Placed::Required(entry.op), Cursor::Required(self.required.next(e)))
                }
                Cursor::Optional { node, boundary, need } => {
                    if node == self.optional.end() || self.h.optional[node as usize].invoke > boundary {
                        cursor = need.map_or(Cursor::Exhausted, |need| Cursor::HiddenWrite { boundary, need });
                        continue;
                    }
                    let rest = Cursor::Optional { node: self.optional.next(node), boundary, need };
                    if !self.enables_a_candidate(node, boundary) {
                        cursor = rest;
                        continue;
                    }
                    (Placed::Optional(node), rest)
                }
                Cursor::HiddenWrite { boundary, need } => {
                    // Only the earliest-invoked unused one: any other would serve no better.
                    let node = self.hidden_writes.first();
                    let rest = Cursor::HiddenCas { boundary, need };
                    if node == self.hidden_writes.end() || self.h.hidden_writes[node as usize].invoke > boundary {
                        cursor = rest;
                        continue;
                    }
                    (Placed::HiddenWrite(node), rest)
                }
                Cursor::HiddenCas { boundary, need } => {
                    let mut node = self.hidden_cas.first();
                    while node != self.hidden_cas.end()
                        && self.h.hidden_cas[node as usize].invoke <= boundary
                        && !matches!(self.h.hidden_cas[node as usize].step, Step::HideCas(from) if from == need)
                    {
                        node = self.hidden_cas.next(node);
                    }
                    if node == self.hidden_cas.end() || self.h.hidden_cas[node as usize].invoke > boundary {
                        cursor = Cursor::Exhausted;
                        continue;
                    }
                    (Placed::HiddenCas(node), Cursor::Exhausted)
                }
                Cursor::Exhausted => {
                    let Some(frame) = self.stack.pop() else { return Verdict::NotLinearizable };
                    self.common = self.common.min(self.stack.len());
                    self.undo(&frame);
                    cursor = frame.resume;
                    continue;
                }
            };
            cursor = match self.try_place(placed, resume) {
                Tried::Descended => Cursor::Start,
                Tried::Rejected => resume,
                Tried::Capped => return Verdict::Unknown,
            };
        }
    }

    /// A required candidate that fits and leaves the value as it is.
    fn pure_candidate(&self) -> Option<u32> {
        let mut e = self.required.first();
        while !self.entries[e as usize].ret {
            let op = self.entries[e as usize].op;
            let pure = match self.h.required[op as usize].step {
                Step::Read(seen) => seen == self.state,
                Step::Cas { from, swapped: Some(false), .. } => self.state != State::Int(from),
                _ => false,
            };
            if pure {
                return Some(op);
            }
            e = self.required.next(e);
        }
        None
    }

    /// The cursor once the required candidates are tried, the first return at `boundary`.
    fn past_required(&self, boundary: u64) -> Cursor {
        let mut need = None;
        if let State::Int(value) = self.state
            && self.h.hidden() > 0
        {
            let mut e = self.required.first();
            while !self.entries[e as usize].ret {
                let op = &self.h.required[self.entries[e as usize].op as usize];
                if matches!(op.step, Step::Cas { from, swapped: Some(false), .. } if from == value) {
                    need = Some(value);
                    break;
                }
                e = self.required.next(e);
            }
        }
        Cursor::Optional { node: self.optional.first(), boundary, need }
    }

    /// Whether placing the optional op `o` now would enable a candidate: make legal one
    /// that is not, or make an indeterminate cas swap. An optional op need go in only then
    /// (Lowe's just-in-time idea, applied to indeterminate ops): one placed earlier can be
    /// moved later past any op it does not enable, or dropped, and the linearization stays
    /// valid. (A write or cas followed by an op legal both before and after it is either
    /// overwritten by it or commutes with it; an append can only go after the list a read
    /// shows before its value.)
    fn enables_a_candidate(&mut self, o: u32, boundary: u64) -> bool {
        let h = self.h;
        let before = self.state;
        let Some(after) = apply(&mut self.lists, before, h.optional[o as usize].step) else { return false };
        let lists = &mut self.lists;
        let mut enables = |step: Step| match step {
            Step::Cas { from, swapped: None, .. } => before != State::Int(from) && after == State::Int(from),
            _ => apply(lists, before, step).is_none() && apply(lists, after, step).is_some(),
        };
        let mut e = self.required.first();
        while !self.entries[e as usize].ret {
            if enables(h.required[self.entries[e as usize].op as usize].step) {
                return true;
            }
            e = self.required.next(e);
        }
        let mut n = self.optional.first();
        while n != self.optional.end() && h.optional[n as usize].invoke <= boundary {
            if n != o && enables(h.optional[n as usize].step) {
                return true;
            }
            n = self.optional.next(n);
        }
        false
    }

    fn op(&self, placed: Placed) -> &'h KeyOp {
        let h = self.h;
        match placed {
            Placed::Required(i) => &h.required[i as usize],
            Placed::Optional(i) => &h.optional[i as usize],
            Placed::HiddenWrite(i) => &h.hidden_writes[i as usize],
            Placed::HiddenCas(i) => &h.hidden_cas[i as usize],
        }
    }

    /// Places `placed` next if the model accepts it and the configuration it leads to is
    /// new; `resume` is where to go on among the current candidates after backtracking.
    fn try_place(&mut self, placed: Placed, resume: Cursor) -> Tried {
        let step = self.op(placed).step;
        let Some(state) = apply(&mut self.lists, self.state, step) else { return Tried::Rejected };
        let frame = Frame { placed, state: self.state, hi: self.hi, resume };
        self.lift(placed);
        self.state = state;
        if !self.required.is_empty() {
            self.configuration();
            if self.memo.contains(self.scratch.as_slice()) {
                self.undo(&frame);
                return Tried::Rejected;
            }
            if self.memo.len() as u64 >= self.limit {
                self.undo(&frame);
                return Tried::Capped;
            }
            self.memo.insert(self.scratch.clone().into_boxed_slice());
        }
        self.stack.push(frame);
        if self.stack.len() > self.best.len() {
            self.best.truncate(self.common);
            self.best.extend(self.stack[self.common..].iter().map(|f| f.placed));
            self.common = self.stack.len();
        }
        Tried::Descended
    }

    /// Writes the current configuration to `scratch`: the first unplaced required op `m`,
    /// `hi`, the state, the other ops placed, and the required ones placed from `m`'s word
    /// to `hi`'s (those before `m` are all placed, those from `hi` on none).
    fn configuration(&mut self) {
        let m = self.entries[self.required.first() as usize].op as usize;
        let key = &mut self.scratch;
        key.clear();
        key.extend([m as u64, self.hi as u64]);
        key.extend(self.state.words());
        key.extend_from_slice(&self.placed_extra);
        let low = m / 64;
        key.extend_from_slice(&self.placed[low..self.hi.div_ceil(64).max(low)]);
    }

    fn extra_bit(&self, placed: Placed) -> Option<usize> {
        let (optional, writes) = (self.h.optional.len(), self.h.hidden_writes.len());
        match placed {
            Placed::Required(_) => None,
            Placed::Optional(i) => Some(i as usize),
            Placed::HiddenWrite(i) => Some(optional + i as usize),
            Placed::HiddenCas(i) => Some(optional + writes + i as usize),
        }
    }

    fn lift(&mut self, placed: Placed) {
        match placed {
            Placed::Required(op) => {
                self.required.lift(self.call_of[op as usize]);
                self.required.lift(self.return_of[op as usize]);
                self.placed[op as usize / 64] |= 1 << (op % 64);
                self.hi = self.hi.max(op as usize + 1);
            }
            Placed::Optional(i) => self.optional.lift(i),
            Placed::HiddenWrite(i) => self.hidden_writes.lift(i),
            Placed::HiddenCas(i) => self.hidden_cas.lift(i),
        }
        if let Some(bit) = self.extra_bit(placed) {
            self.placed_extra[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn undo(&mut self, frame: &Frame) {
        match frame.placed {
            Placed::Required(op) => {
                self.required.restore(self.return_of[op as usize]);
                self.required.restore(self.call_of[op as usize]);
                self.placed[op as usize / 64] &= !(1 << (op % 64));
            }
            Placed::Optional(i) => self.optional.restore(i),
            Placed::HiddenWrite(i) => self.hidden_writes.restore(i),
            Placed::HiddenCas(i) => self.hidden_cas.restore(i),
        }
        if let Some(bit) = self.extra_bit(frame.placed) {
            self.placed_extra[bit / 64] &= !(1 << (bit % 64));
        }
        self.state = frame.state;
        self.hi = frame.hi;
    }

    /// Where a failed search got stuck, for a reader: the end of the longest linearizable
    /// prefix, the operations that could come next and why none does, and the key's
    /// operations around that point.
    pub(super) fn explain(&mut self, ops: &[Op]) -> String {
        let h = self.h;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} operations on the key: {} to place, {} indeterminate that may be placed; \
             no order of them explains every answer.",
            h.all.len(),
            h.required.len(),
            h.optional.len() + h.hidden()
        );
        let (state, placed, since) = self.explain_prefix(ops, &mut out);
        let Some(first_return) = (0..h.required.len())
            .filter(|&i| !placed.contains(&Placed::Required(i as u32)))
            .min_by_key(|&i| (h.required[i].complete, i))
        else {
            unreachable!("a failed search leaves a required op unplaced");
        };
        let boundary = h.required[first_return].complete;
        let _ = writeln!(
            out,
            "Stuck there, at the value {}: {} had to take effect by its answer at {boundary} ns, \
             so one of these comes next, and none can:",
            self.lists.show(state),
            ops[h.required[first_return].orig]
        );
        let required = (0..h.required.len() as u32).map(Placed::Required);
        let optional = (0..h.optional.len() as u32).map(Placed::Optional);
        for candidate in required.chain(optional).filter(|p| !placed.contains(p)) {
            let op = self.op(candidate);
            if op.invoke <= boundary {
                let why = self.why_not(state, op.step);
                let _ = writeln!(out, "  {}: {why}", ops[op.orig]);
            }
        }
        // The operations that overlap the end of the prefix, up to the stuck point.
        let around: Vec<usize> =
            h.all.iter().copied().filter(|&i| ops[i].invoke_ns <= boundary && ops[i].complete_ns >= since).collect();
        let shown = &around[around.len().saturating_sub(EXPLAIN_OPS_MAX)..];
        let _ = writeln!(
            out,
            "The key's operations by invocation ({} of {}, up to the stuck point):",
            shown.len(),
            h.all.len()
        );
        for &i in shown {
            let _ = writeln!(out, "  {}", ops[i]);
        }
        out
    }

    /// Writes the end of the longest prefix found; answers the value it leaves, what it
    /// places, and when the first op of the end shown was invoked.
    fn explain_prefix(&mut self, ops: &[Op], out: &mut String) -> (State, HashSet<Placed>, u64) {
        let best = std::mem::take(&mut self.best);
        let _ = writeln!(
            out,
            "The longest linearizable prefix found places {}; its last steps, each with the value after it:",
            best.len()
        );
        let tail = best.len().saturating_sub(EXPLAIN_PREFIX_STEPS);
        if tail > 0 {
            let _ = writeln!(out, "  ({tail} steps before)");
        }
        let mut state = State::Absent;
        let mut since = if best.is_empty() { 0 } else { u64::MAX };
        for (n, &placed) in best.iter().enumerate() {
            let op = self.op(placed);
            state = apply(&mut self.lists, state, op.step).expect("the longest prefix replays");
            if n >= tail {
                since = since.min(op.invoke);
                let _ = writeln!(out, "  {}  => {}", ops[op.orig], self.lists.show(state));
            }
        }
        (state, best.into_iter().collect(), since)
    }

    /// Why an op cannot come next at `state`.
    fn why_not(&mut self, state: State, step: Step) -> String {
        match (apply(&mut self.lists, state, step), step) {
            (Some(_), _) => "could come next, but nothing after it explains the rest".to_string(),
            (None, Step::Read(seen)) => format!("it read {}", self.lists.show(seen)),
            (None, Step::Cas { swapped: Some(s), .. }) => format!("it answered swapped={s}"),
            (None, Step::Append { after: Some(before), .. }) if before != state => {
                format!("a read shows it appended to {}", self.lists.show(before))
            }
            (None, Step::Append { .. }) => "an append needs a list or Absent".to_string(),
            (None, step) => unreachable!("{step:?} always applies"),
        }
    }
}
