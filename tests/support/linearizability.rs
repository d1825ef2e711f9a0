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
//! - one whose value someone observed (a read returned it, or a cas compared with it) is
//!   *optional*: tried after the required candidates, and only when it enables one of the
//!   candidates (makes one legal that is not, or makes an indeterminate cas swap);
//! - one whose value nobody observed leaves a value no read can match and no cas swaps, so
//!   placing it can matter only to explain a cas that answered false where it would have
//!   swapped. Appends of that kind never matter (a list already answers false) and are
//!   dropped. Writes and cas of that kind are *hidden*: tried only right before such a cas,
//!   only the earliest-invoked unused one of each kind (any serves as well as a later one),
//!   and the value they leave is one symbol, `State::Hidden`.
//!
//! Rules that cut the search without losing a linearization (each is an exchange argument:
//! from any linearization of what is left, one that obeys the rule can be built):
//! - a candidate that fits and leaves the value as it is (a read, a refused cas) is placed
//!   at once, and nothing else is tried there: moved to the front, it changes nothing, and
//!   every op that had to precede it is placed already;
//! - an optional or hidden op that enables no candidate can be moved later, past an op it
//!   commutes with or that overwrites it, or dropped; so it need go in only when it does;
//! - an append whose value some read shows goes in only onto the list that read shows
//!   before the value.
//!
//! Without the first, concurrent reads multiply the configurations of any search that must
//! backtrack; without the others, every pending indeterminate op doubles them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::history::{Input, Op, Output, Value};

mod search;

use search::{Search, Verdict};

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
        Verdict::Linearizable => Ok(search.explored()),
        Verdict::NotLinearizable => Err(not_linearizable(search.explain(ops))),
        Verdict::Unknown => Err(Anomaly::Unknown { key: key.to_string(), explored: search.explored() }),
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
