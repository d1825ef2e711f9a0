//! A linearizability checker for the key-value histories of [`super::history`].
//!
//! Keys are independent objects, and linearizability is local (Herlihy & Wing 1990, §3.3;
//! Horn & Kroening 2015 call it P-compositionality): a history is linearizable if and only
//! if each key's sub-history is. So each key is checked on its own, the keys in parallel.
//!
//! Per key the search is Wing & Gong's with Lowe's just-in-time linearization, as Porcupine
//! implements it. The calls and returns of the operations, sorted by time, form a doubly
//! linked list. An operation may be linearized next if its call comes before the first
//! return still in the list and the model accepts its answer; linearizing it lifts its call
//! and return out of the list. A depth-first search with an undo stack backtracks when no
//! candidate fits, and remembers every configuration (which operations are linearized, and
//! the value they leave), so none is explored twice.
//!
//! The model, per key: a value that starts `Absent`. A read returns it; `Write(v)` sets
//! `Int(v)`; `Cas(from, to)` sets `Int(to)` and answers true if the value is `Int(from)`,
//! else answers false; `Append(v)` makes `[v]` of `Absent` and `l + [v]` of a list, and is
//! illegal on an integer. A read of an empty list counts as a read of `Absent` (an absent
//! key is an empty list).
//!
//! Outcomes: a `Fail` operation had no effect and is dropped. An `Info` one may take effect
//! at any time after its invocation, or never, with any answer; it never has to be placed,
//! so the search succeeds once every other operation is. Those split three ways:
//! - an `Info` read shows nothing and is dropped;
//! - one whose value someone observed (a read returned it, or a cas compared with it) is an
//!   optional operation, tried after the operations that must be placed, so it goes in late;
//! - one whose value nobody observed leaves a value no read can match and no cas swaps, so
//!   placing it can matter only to explain a cas that answered false where it would have
//!   swapped. Appends of that kind never matter (a list already answers false) and are
//!   dropped. Writes and cas of that kind are *hidden*: tried only right before such a cas
//!   (moving one later to there keeps any linearization valid), only the earliest-invoked
//!   unused one of each kind (any serves as well as a later one), and the value they leave
//!   is one symbol, `State::Hidden`. Without this, every unobserved indeterminate write
//!   would double the configurations of a failing search.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::history::{Input, Op, Output, Value};

/// The default cap on configurations one key's search may explore before it answers
/// `Unknown` (each costs about 100 bytes of memo).
pub const CONFIGURATIONS_PER_KEY_MAX: u64 = 4_000_000;
/// Steps of the longest linearizable prefix that an explanation shows.
const EXPLAIN_PREFIX_STEPS: usize = 12;
/// Operations of the key, around the stuck point, that an explanation lists.
const EXPLAIN_OPS_MAX: usize = 60;

/// What a successful check covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Distinct keys in the history.
    pub keys: usize,
    /// Operations in the history, failed ones included.
    pub ops: usize,
    /// Operations whose outcome is unknown (`Output::Info`).
    pub info_ops: usize,
    /// Configurations the searches explored, summed over the keys.
    pub configurations: u64,
}

/// Why a check did not pass.
pub enum Anomaly {
    /// No order of the key's operations explains every answer.
    NotLinearizable {
        key: String,
        /// Where the search got stuck: the end of the longest linearizable prefix found, the
        /// operations that could come next and why none does, the key's operations around.
        details: String,
    },
    /// The key's search explored `explored` configurations, its cap, without a verdict.
    Unknown { key: String, explored: u64 },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::NotLinearizable { key, details } => write!(f, "not linearizable on key {key:?}:\n{details}"),
            Anomaly::Unknown { key, explored } => write!(
                f,
                "linearizability unknown on key {key:?}: the search explored {explored} configurations, \
                 its cap, without a verdict (count it as a failure; raise the cap with \
                 check_with_limit, or check a shorter history)"
            ),
        }
    }
}

/// As `Display`, so that `unwrap()` and `{:?}` print a readable explanation.
impl fmt::Debug for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Anomaly {}

/// Checks `ops` with the default cap, `CONFIGURATIONS_PER_KEY_MAX`.
pub fn check(ops: &[Op]) -> Result<Report, Anomaly> {
    check_with_limit(ops, CONFIGURATIONS_PER_KEY_MAX)
}

/// Checks that `ops` is linearizable, each key's search exploring at most
/// `max_configurations_per_key` configurations.
///
/// If several keys fail, reports the first in key order that is certainly not
/// linearizable, else the first that is unknown.
///
/// # Panics
/// If an operation's answer cannot answer its input (a read told `Done`), or one that is
/// not `Info` completed before it was invoked: the history recorder is broken.
pub fn check_with_limit(ops: &[Op], max_configurations_per_key: u64) -> Result<Report, Anomaly> {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    let keys: Vec<(&str, Vec<usize>)> = by_key.into_iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(keys.len()).max(1);
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<u64, Anomaly>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some((key, idxs)) = keys.get(k) else { return done };
                        done.push((k, check_key(ops, key, idxs.clone(), max_configurations_per_key)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a key's check panicked")).collect()
    });
    results.sort_by_key(|(k, _)| *k);

    let mut configurations = 0;
    let mut unknown = None;
    for (_, result) in results {
        match result {
            Ok(explored) => configurations += explored,
            Err(anomaly @ Anomaly::NotLinearizable { .. }) => return Err(anomaly),
            Err(anomaly @ Anomaly::Unknown { .. }) => {
                unknown.get_or_insert(anomaly);
            }
        }
    }
    if let Some(anomaly) = unknown {
        return Err(anomaly);
    }
    let info_ops = ops.iter().filter(|op| op.output == Output::Info).count();
    Ok(Report { keys: keys.len(), ops: ops.len(), info_ops, configurations })
}

/// Checks one key's operations (`idxs` index `ops`); answers the configurations explored.
fn check_key(ops: &[Op], key: &str, idxs: Vec<usize>, limit: u64) -> Result<u64, Anomaly> {
    let not_linearizable = |details| Anomaly::NotLinearizable { key: key.to_string(), details };
    let (history, lists) = KeyHistory::prepare(ops, idxs).map_err(not_linearizable)?;
    let mut search = Search::new(&history, lists, limit);
    match search.run() {
        Verdict::Linearizable => Ok(search.memo.len() as u64),
        Verdict::NotLinearizable => Err(not_linearizable(search.explain(ops))),
        Verdict::Unknown => Err(Anomaly::Unknown { key: key.to_string(), explored: search.memo.len() as u64 }),
    }
}

// ---------------------------------------------------------------------------------------
// The model.

/// A key's value. Lists are interned in `Lists`, so equal lists have equal ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Absent,
    Int(i64),
    List(u32),
    /// An integer no read returns and no cas compares with (see the module docs).
    Hidden,
}

impl State {
    fn words(self) -> [u64; 2] {
        match self {
            State::Absent => [0, 0],
            State::Int(v) => [1, v as u64],
            State::List(id) => [2, u64::from(id)],
            State::Hidden => [3, 0],
        }
    }
}

/// What an operation asks of the model, its answer folded in.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A read that returned this.
    Read(State),
    Write(i64),
    /// `swapped` is `None` when the answer is unknown.
    Cas {
        from: i64,
        to: i64,
        swapped: Option<bool>,
    },
    /// `after` is the value before it that a read shows (the list before the appended
    /// value, in a read that holds it); `None` if no read holds the value.
    Append {
        v: i64,
        after: Option<State>,
    },
    /// A hidden write.
    Hide,
    /// A hidden cas, from this value.
    HideCas(i64),
}

/// The value after `step` from `state`, or `None` if the step cannot give its answer there.
fn apply(lists: &mut Lists, state: State, step: Step) -> Option<State> {
    match step {
        Step::Read(seen) => (seen == state).then_some(state),
        Step::Write(v) => Some(State::Int(v)),
        Step::Cas { from, to, swapped } => {
            let swaps = state == State::Int(from);
            if swapped.is_some_and(|s| s != swaps) { None } else { Some(if swaps { State::Int(to) } else { state }) }
        }
        Step::Append { after: Some(before), .. } if before != state => None,
        Step::Append { v, .. } => match state {
            State::Absent => Some(State::List(lists.append(EMPTY_LIST, v))),
            State::List(id) => Some(State::List(lists.append(id, v))),
            State::Int(_) | State::Hidden => None,
        },
        Step::Hide => Some(State::Hidden),
        Step::HideCas(from) => (state == State::Int(from)).then_some(State::Hidden),
    }
}

const EMPTY_LIST: u32 = 0;

/// Hash-consed lists: a list is its last element and the id of the list before it.
struct Lists {
    nodes: Vec<(u32, i64)>,
    ids: HashMap<(u32, i64), u32, Fast>,
}

impl Lists {
    fn new() -> Lists {
        Lists { nodes: vec![(EMPTY_LIST, 0)], ids: HashMap::default() }
    }

    fn append(&mut self, list: u32, v: i64) -> u32 {
        let nodes = &mut self.nodes;
        *self.ids.entry((list, v)).or_insert_with(|| {
            nodes.push((list, v));
            u32::try_from(nodes.len() - 1).expect("fewer than 2^32 distinct lists")
        })
    }

    fn show(&self, state: State) -> String {
        match state {
            State::Absent => "Absent".into(),
            State::Int(v) => format!("Int({v})"),
            State::Hidden => "a value no read returned (left by an indeterminate op)".into(),
            State::List(mut id) => {
                let mut items = Vec::new();
                while id != EMPTY_LIST {
                    let (before, v) = self.nodes[id as usize];
                    items.push(v);
                    id = before;
                }
                items.reverse();
                if items.len() <= 10 {
                    format!("List({items:?})")
                } else {
                    format!(
                        "List([{}, {}, .. {} more .., {:?}])",
                        items[0],
                        items[1],
                        items.len() - 6,
                        &items[items.len() - 4..]
                    )
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// One key's history, prepared for the search.

/// An operation to place.
#[derive(Clone, Copy, Debug)]
struct KeyOp {
    /// Its index in the whole history.
    orig: usize,
    step: Step,
    invoke: u64,
    complete: u64,
}

struct KeyHistory {
    /// Every operation of the key, by invocation, failed ones included (for explanations).
    all: Vec<usize>,
    /// Operations the search must place, by invocation.
    required: Vec<KeyOp>,
    /// Indeterminate operations whose value was observed, by invocation.
    optional: Vec<KeyOp>,
    /// Indeterminate writes and cas whose value nobody observed, by invocation.
    hidden_writes: Vec<KeyOp>,
    hidden_cas: Vec<KeyOp>,
}

impl KeyHistory {
    /// Sorts and classifies the key's operations `idxs` (see the module docs), after the
    /// quick pre-checks; an `Err` says why the history is not linearizable.
    fn prepare(ops: &[Op], mut idxs: Vec<usize>) -> Result<(KeyHistory, Lists), String> {
        idxs.sort_by_key(|&i| (ops[i].invoke_ns, i));
        let writers = Writers::new(ops, &idxs);
        // Reads first, so that each append knows the list a read shows before its value
        // (`before`, which thereby also holds every value a list read returned).
        let mut lists = Lists::new();
        let mut spine = Spine::default();
        let mut before = HashMap::default();
        let mut reads = HashMap::new();
        // Integers read or compared with by a cas.
        let mut observed: HashSet<i64, Fast> = HashSet::default();
        let mut cas_false = false;
        for &i in &idxs {
            let op = &ops[i];
            let bad = |why: String| format!("pre-check: {op} returned {why}");
            match (op.input, &op.output) {
                (_, Output::Fail) => {}
                (Input::Cas(from, _), output) => {
                    observed.insert(from);
                    cas_false |= *output == Output::Swapped(false);
                }
                (_, Output::Read(Value::Int(v))) => {
                    writers.check(*v, false).map_err(bad)?;
                    observed.insert(*v);
                    reads.insert(i, State::Int(*v));
                }
                (_, Output::Read(Value::List(l))) => {
                    let state = spine.read(&mut lists, l, &mut before, &writers).map_err(bad)?;
                    reads.insert(i, state);
                }
                (_, Output::Read(Value::Absent)) => {
                    reads.insert(i, State::Absent);
                }
                _ => {}
            }
        }
        let mut h = KeyHistory {
            all: idxs.clone(),
            required: Vec::new(),
            optional: Vec::new(),
            hidden_writes: Vec::new(),
            hidden_cas: Vec::new(),
        };
        for i in idxs {
            let op = &ops[i];
            let key_op = |step| KeyOp { orig: i, step, invoke: op.invoke_ns, complete: op.complete_ns };
            let seen = |v: &i64| observed.contains(v);
            let append = |v| Step::Append { v, after: before.get(&v).copied() };
            match (op.input, &op.output) {
                (_, Output::Fail) | (Input::Read, Output::Info) => {}
                (Input::Write(v), Output::Info) if seen(&v) => h.optional.push(key_op(Step::Write(v))),
                (Input::Write(_), Output::Info) if cas_false => h.hidden_writes.push(key_op(Step::Hide)),
                (Input::Cas(from, to), Output::Info) if seen(&to) => {
                    h.optional.push(key_op(Step::Cas { from, to, swapped: None }))
                }
                (Input::Cas(from, _), Output::Info) if cas_false => h.hidden_cas.push(key_op(Step::HideCas(from))),
                (Input::Append(v), Output::Info) if before.contains_key(&v) => h.optional.push(key_op(append(v))),
                (_, Output::Info) => {}
                (input, output) => {
                    assert!(op.invoke_ns <= op.complete_ns, "an operation completed before it was invoked: {op}");
                    let step = match (input, output) {
                        (Input::Read, Output::Read(_)) => Step::Read(reads[&i]),
                        (Input::Write(v), Output::Done) => Step::Write(v),
                        (Input::Cas(from, to), Output::Swapped(s)) => Step::Cas { from, to, swapped: Some(*s) },
                        (Input::Append(v), Output::Done) => append(v),
                        _ => panic!("{output:?} cannot answer {input:?}: {op}"),
                    };
                    h.required.push(key_op(step));
                }
            }
        }
        Ok((h, lists))
    }

    fn hidden(&self) -> usize {
        self.hidden_writes.len() + self.hidden_cas.len()
    }
}

/// For the pre-checks: who wrote each value. Per value, whether an operation that did not
/// fail wrote (or appended) it.
struct Writers<'a> {
    ops: &'a [Op],
    idxs: &'a [usize],
    written: HashMap<i64, bool, Fast>,
    appended: HashMap<i64, bool, Fast>,
}

impl<'a> Writers<'a> {
    fn new(ops: &'a [Op], idxs: &'a [usize]) -> Writers<'a> {
        let (mut written, mut appended) = (HashMap::default(), HashMap::default());
        for &i in idxs {
            let effect = ops[i].took_effect_maybe();
            match (ops[i].input, &ops[i].output) {
                (Input::Write(v), _) => *written.entry(v).or_default() |= effect,
                (Input::Cas(_, to), output) if *output != Output::Swapped(false) => {
                    *written.entry(to).or_default() |= effect
                }
                (Input::Append(v), _) => *appended.entry(v).or_default() |= effect,
                _ => {}
            }
        }
        Writers { ops, idxs, written, appended }
    }

    /// Whether `v`, read as an integer or (`in_list`) as a list element, was put there by an
    /// operation that did not fail; if not, what to say.
    fn check(&self, v: i64, in_list: bool) -> Result<(), String> {
        let (of, what) = if in_list { (&self.appended, "appended") } else { (&self.written, "wrote") };
        let held = if in_list { "a list holding " } else { "" };
        match of.get(&v) {
            Some(true) => Ok(()),
            Some(false) => {
                let failed = self.idxs.iter().map(|&i| &self.ops[i]).find(|op| match op.input {
                    Input::Write(w) | Input::Append(w) | Input::Cas(_, w) => w == v && op.output == Output::Fail,
                    Input::Read => false,
                });
                let failed = failed.map_or(String::new(), |op| op.to_string());
                Err(format!(
                    "{held}{v}, which only a failed operation {what} ({failed}); a failure must have had no effect"
                ))
            }
            None => Err(format!("{held}{v}, which no operation on this key {what}")),
        }
    }
}

/// The list of the last list read, interned, so that the next read, which usually returns
/// it and a little more, costs only what differs.
#[derive(Default)]
struct Spine {
    items: Vec<i64>,
    /// `ids[n]` is the id of `items[..=n]`.
    ids: Vec<u32>,
    /// What `items` holds.
    held: HashSet<i64, Fast>,
}

impl Spine {
    /// The state a read that returned `list` saw, after the pre-checks on what is new in it
    /// (no value twice, each appended by an op that did not fail). Notes in `before`, for
    /// each value new to it, the list before that value.
    fn read(
        &mut self,
        lists: &mut Lists,
        list: &[i64],
        before: &mut HashMap<i64, State, Fast>,
        writers: &Writers<'_>,
    ) -> Result<State, String> {
        let common = self.items.iter().zip(list).take_while(|(a, b)| a == b).count();
        for v in self.items.drain(common..) {
            self.held.remove(&v);
        }
        self.ids.truncate(common);
        for &v in &list[common..] {
            if !self.held.insert(v) {
                return Err(format!("a list holding {v} twice: an append applied twice"));
            }
            writers.check(v, true)?;
            let prefix = self.ids.last().map_or(State::Absent, |&id| State::List(id));
            before.entry(v).or_insert(prefix);
            self.ids.push(lists.append(self.ids.last().copied().unwrap_or(EMPTY_LIST), v));
            self.items.push(v);
        }
        Ok(self.ids.last().map_or(State::Absent, |&id| State::List(id)))
    }
}

// ---------------------------------------------------------------------------------------
// The search.

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
#[derive(Clone, Copy, PartialEq, Eq)]
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

enum Verdict {
    Linearizable,
    NotLinearizable,
    Unknown,
}

enum Tried {
    Descended,
    Rejected,
    Capped,
}

struct Search<'h> {
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
    fn new(h: &'h KeyHistory, lists: Lists, limit: u64) -> Search<'h> {
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

    fn run(&mut self) -> Verdict {
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
    fn explain(&mut self, ops: &[Op]) -> String {
        let h = self.h;
        let best = std::mem::take(&mut self.best);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} operations on the key: {} to place, {} indeterminate that may be placed; \
             no order of them explains every answer.",
            h.all.len(),
            h.required.len(),
            h.optional.len() + h.hidden()
        );
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
        let mut done = vec![false; h.required.len()];
        let mut optional_done = vec![false; h.optional.len()];
        let mut t0 = u64::MAX;
        for (n, &placed) in best.iter().enumerate() {
            let op = self.op(placed);
            state = apply(&mut self.lists, state, op.step).expect("the longest prefix replays");
            match placed {
                Placed::Required(i) => done[i as usize] = true,
                Placed::Optional(i) => optional_done[i as usize] = true,
                _ => {}
            }
            if n >= tail {
                t0 = t0.min(op.invoke);
                let _ = writeln!(out, "  {}  => {}", ops[op.orig], self.lists.show(state));
            }
        }
        let Some(first_return) =
            (0..h.required.len()).filter(|&i| !done[i]).min_by_key(|&i| (h.required[i].complete, i))
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
        let candidates = (0..h.required.len()).filter(|&i| !done[i]).map(|i| &h.required[i]);
        let optional = (0..h.optional.len()).filter(|&i| !optional_done[i]).map(|i| &h.optional[i]);
        for op in candidates.chain(optional).filter(|op| op.invoke <= boundary) {
            t0 = t0.min(op.invoke);
            let why = match (apply(&mut self.lists, state, op.step), op.step) {
                (Some(_), _) => "could come next, but nothing after it explains the rest".to_string(),
                (None, Step::Read(seen)) => format!("it read {}", self.lists.show(seen)),
                (None, Step::Cas { swapped: Some(s), .. }) => format!("it answered swapped={s}"),
                (None, Step::Append { after: Some(before), .. }) if before != state => {
                    format!("a read shows it appended to {}", self.lists.show(before))
                }
                (None, Step::Append { .. }) => "an append needs a list or Absent".to_string(),
                (None, step) => unreachable!("{step:?} always applies"),
            };
            let _ = writeln!(out, "  {}: {why}", ops[op.orig]);
        }
        let around: Vec<usize> = if h.all.len() <= EXPLAIN_OPS_MAX {
            h.all.clone()
        } else {
            h.all.iter().copied().filter(|&i| ops[i].invoke_ns <= boundary && ops[i].complete_ns >= t0).collect()
        };
        let _ = writeln!(
            out,
            "The key's operations by invocation ({} of {}, around the stuck point):",
            around.len().min(EXPLAIN_OPS_MAX),
            h.all.len()
        );
        for &i in around.iter().take(EXPLAIN_OPS_MAX) {
            let _ = writeln!(out, "  {}", ops[i]);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------

/// A quick hasher for words (the memo's keys and the list ids): a multiply-rotate per
/// word, and a final avalanche so that the table's high bits are mixed too.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

type Fast = BuildHasherDefault<FastHasher>;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.write_u64(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        // MurmurHash3's fmix64.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}
