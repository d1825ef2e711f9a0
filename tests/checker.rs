//! The linearizability checker (`tests/support/linearizability.rs`) against histories whose
//! verdict is known: small hand-written ones, one per rule, and large random ones drawn
//! from a simulated sequential store, linearizable by construction, then corrupted.

mod support;

use std::collections::HashMap;
use std::time::Instant;

use support::history::{Input, Op, Output, Value};
use support::linearizability::{Anomaly, check, check_with_limit};
use support::sim::Rng;

fn op(client: u64, key: &str, input: Input, output: Output, invoke_ns: u64, complete_ns: u64) -> Op {
    Op { client, key: key.to_string(), input, output, invoke_ns, complete_ns }
}

fn write(client: u64, v: i64, at: (u64, u64)) -> Op {
    op(client, "k", Input::Write(v), Output::Done, at.0, at.1)
}

fn read(client: u64, value: Value, at: (u64, u64)) -> Op {
    op(client, "k", Input::Read, Output::Read(value), at.0, at.1)
}

fn cas(client: u64, from: i64, to: i64, swapped: bool, at: (u64, u64)) -> Op {
    op(client, "k", Input::Cas(from, to), Output::Swapped(swapped), at.0, at.1)
}

fn append(client: u64, v: i64, output: Output, at: (u64, u64)) -> Op {
    op(client, "k", Input::Append(v), output, at.0, at.1)
}

fn list(items: &[i64]) -> Value {
    Value::List(items.to_vec())
}

#[track_caller]
fn assert_linearizable(ops: &[Op]) {
    if let Err(anomaly) = check(ops) {
        panic!("expected linearizable, but: {anomaly}");
    }
}

/// Asserts the search (or a pre-check) finds `ops` not linearizable; returns the message.
#[track_caller]
fn assert_not_linearizable(ops: &[Op]) -> String {
    match check(ops) {
        Err(anomaly @ Anomaly::NotLinearizable { .. }) => anomaly.to_string(),
        Err(anomaly) => panic!("expected not linearizable, but: {anomaly}"),
        Ok(report) => panic!("expected not linearizable, but it passed: {report:?}"),
    }
}

#[test]
fn a_sequential_history_is_linearizable() {
    let report = check(&[
        read(1, Value::Absent, (0, 1)),
        write(1, 1, (2, 3)),
        read(2, Value::Int(1), (4, 5)),
        cas(1, 1, 2, true, (6, 7)),
        cas(2, 1, 3, false, (8, 9)),
        read(1, Value::Int(2), (10, 11)),
    ])
    .unwrap();
    assert_eq!((report.keys, report.ops, report.info_ops), (1, 6, 0));
}

#[test]
fn a_read_overlapping_a_write_may_see_either_value() {
    for seen in [Value::Absent, Value::Int(1)] {
        assert_linearizable(&[write(1, 1, (0, 10)), read(2, seen, (5, 15))]);
    }
    // Touching intervals count as concurrent.
    assert_linearizable(&[write(1, 1, (0, 10)), read(2, Value::Absent, (10, 20))]);
}

#[test]
fn a_stale_read_is_caught() {
    let message =
        assert_not_linearizable(&[write(1, 1, (0, 10)), write(1, 2, (20, 30)), read(2, Value::Int(1), (40, 50))]);
    assert!(message.contains("on key \"k\""), "{message}");
    assert!(message.contains("it read Int(1)"), "{message}");
}

#[test]
fn a_lost_write_is_caught() {
    assert_not_linearizable(&[write(1, 1, (0, 10)), read(2, Value::Absent, (20, 30))]);
    assert_not_linearizable(&[write(1, 1, (0, 10)), write(1, 2, (20, 30)), read(1, Value::Int(1), (31, 40))]);
}

#[test]
fn a_write_seen_then_unseen_is_caught() {
    // The second write is slow; a read sees it, a later read sees the first again.
    let mut ops = vec![write(1, 1, (0, 10)), write(2, 2, (20, 100))];
    assert_linearizable(
        &[ops.clone(), vec![read(3, Value::Int(1), (30, 40)), read(3, Value::Int(2), (50, 60))]].concat(),
    );
    ops.extend([read(3, Value::Int(2), (30, 40)), read(4, Value::Int(1), (50, 60))]);
    assert_not_linearizable(&ops);
}

#[test]
fn an_indeterminate_write_may_take_effect_late() {
    let ops = [
        write(1, 1, (0, 10)),
        op(1, "k", Input::Write(2), Output::Info, 20, 30),
        read(2, Value::Int(1), (40, 50)),
        read(2, Value::Int(2), (1_000, 1_010)),
    ];
    assert_eq!(check(&ops).unwrap().info_ops, 1);
    // But not before it was invoked.
    assert_not_linearizable(&[
        write(1, 1, (0, 10)),
        read(2, Value::Int(2), (11, 12)),
        op(1, "k", Input::Write(2), Output::Info, 20, 30),
    ]);
}

#[test]
fn an_indeterminate_write_may_never_take_effect() {
    assert_linearizable(&[
        write(1, 1, (0, 10)),
        op(1, "k", Input::Write(2), Output::Info, 20, 30),
        read(2, Value::Int(1), (40, 50)),
        read(2, Value::Int(1), (1_000, 1_010)),
        op(3, "k", Input::Read, Output::Info, 5, 6),
    ]);
}

#[test]
fn an_indeterminate_cas_swaps_only_from_its_value() {
    let info_cas = |from, to, at: (u64, u64)| op(2, "k", Input::Cas(from, to), Output::Info, at.0, at.1);
    assert_linearizable(&[write(1, 1, (0, 10)), info_cas(1, 5, (20, 30)), read(1, Value::Int(5), (40, 50))]);
    assert_not_linearizable(&[write(1, 1, (0, 10)), info_cas(9, 5, (20, 30)), read(1, Value::Int(5), (40, 50))]);
    // One indeterminate op building on another.
    assert_linearizable(&[
        write(1, 1, (0, 10)),
        op(3, "k", Input::Write(2), Output::Info, 20, 30),
        info_cas(2, 3, (40, 50)),
        read(1, Value::Int(1), (60, 70)),
        read(1, Value::Int(3), (100, 110)),
    ]);
}

#[test]
fn a_failed_write_must_have_had_no_effect() {
    let message = assert_not_linearizable(&[
        write(1, 1, (0, 10)),
        op(1, "k", Input::Write(2), Output::Fail, 20, 30),
        read(2, Value::Int(2), (40, 50)),
    ]);
    assert!(message.contains("only a failed operation wrote"), "{message}");
    // Unobserved, a failure is fine.
    assert_linearizable(&[
        write(1, 1, (0, 10)),
        op(1, "k", Input::Write(2), Output::Fail, 20, 30),
        read(2, Value::Int(1), (40, 50)),
    ]);
}

#[test]
fn a_read_of_a_value_nobody_wrote_is_caught() {
    let message = assert_not_linearizable(&[write(1, 1, (0, 10)), read(2, Value::Int(9), (20, 30))]);
    assert!(message.contains("no operation on this key wrote"), "{message}");
}

#[test]
fn cas_answers_follow_the_value() {
    assert_linearizable(&[write(1, 1, (0, 10)), cas(1, 1, 2, true, (20, 30)), read(1, Value::Int(2), (40, 50))]);
    assert_linearizable(&[write(1, 1, (0, 10)), cas(1, 5, 2, false, (20, 30)), read(1, Value::Int(1), (40, 50))]);
    assert_linearizable(&[cas(1, 1, 2, false, (0, 10)), read(1, Value::Absent, (20, 30))]);
    // A swap from a value the key does not hold, or a refusal when it holds it.
    assert_not_linearizable(&[write(1, 1, (0, 10)), cas(1, 5, 2, true, (20, 30))]);
    assert_not_linearizable(&[write(1, 1, (0, 10)), cas(1, 1, 2, false, (20, 30))]);
    // A refusal explained by a concurrent write placed before it.
    assert_linearizable(&[
        write(1, 1, (0, 10)),
        write(2, 3, (20, 40)),
        cas(1, 1, 2, false, (25, 35)),
        read(1, Value::Int(3), (50, 60)),
    ]);
}

#[test]
fn an_unobserved_indeterminate_op_may_explain_a_refused_cas() {
    for hidden in [Input::Write(2), Input::Cas(1, 7)] {
        let ops = [
            write(1, 1, (0, 10)),
            op(2, "k", hidden, Output::Info, 20, 30),
            cas(1, 1, 5, false, (100, 110)),
            write(1, 3, (120, 130)),
            read(1, Value::Int(3), (140, 150)),
        ];
        assert_linearizable(&ops);
        // Without it the refusal is unexplained.
        assert_not_linearizable(&[&ops[..1], &ops[2..]].concat());
        // It leaves a value no read could return.
        assert_not_linearizable(&[&ops[..3], &[read(1, Value::Int(1), (140, 150))]].concat());
    }
}

#[test]
fn appends_build_lists_in_order() {
    assert_linearizable(&[
        read(1, list(&[]), (0, 1)),
        append(1, 1, Output::Done, (2, 3)),
        append(1, 2, Output::Done, (4, 5)),
        read(2, list(&[1, 2]), (6, 7)),
    ]);
    // Concurrent appends, either order.
    for seen in [[3, 4], [4, 3]] {
        assert_linearizable(&[
            append(1, 3, Output::Done, (0, 10)),
            append(2, 4, Output::Done, (0, 10)),
            read(3, list(&seen), (20, 30)),
        ]);
    }
    assert_not_linearizable(&[
        append(1, 1, Output::Done, (0, 10)),
        append(1, 2, Output::Done, (20, 30)),
        read(2, list(&[2, 1]), (40, 50)),
    ]);
}

#[test]
fn a_duplicate_append_is_caught() {
    let message = assert_not_linearizable(&[append(1, 1, Output::Done, (0, 10)), read(2, list(&[1, 1]), (20, 30))]);
    assert!(message.contains("holding 1 twice"), "{message}");
}

#[test]
fn a_missing_acked_append_is_caught() {
    assert_not_linearizable(&[
        append(1, 1, Output::Done, (0, 10)),
        append(1, 2, Output::Done, (20, 30)),
        read(2, list(&[1, 2]), (40, 50)),
        append(1, 3, Output::Done, (60, 70)),
        read(2, list(&[1, 3]), (80, 90)),
    ]);
    // An indeterminate append may show up late, or never.
    assert_linearizable(&[
        append(1, 1, Output::Done, (0, 10)),
        append(2, 2, Output::Info, (20, 30)),
        read(3, list(&[1]), (40, 50)),
        read(3, list(&[1, 2]), (60, 70)),
    ]);
    assert_linearizable(&[
        append(1, 1, Output::Done, (0, 10)),
        append(2, 2, Output::Info, (20, 30)),
        read(3, list(&[1]), (40, 50)),
    ]);
}

#[test]
fn an_append_to_an_integer_is_illegal() {
    assert_not_linearizable(&[write(1, 1, (0, 10)), append(1, 2, Output::Done, (20, 30))]);
}

#[test]
fn keys_are_checked_independently() {
    let on = |key: &str, o: Op| Op { key: key.to_string(), ..o };
    let ops = [
        on("a", write(1, 1, (0, 10))),
        on("b", write(2, 2, (5, 15))),
        on("a", read(3, Value::Int(1), (12, 20))),
        on("b", read(4, Value::Int(2), (16, 25))),
        on("b", write(2, 3, (30, 40))),
        on("a", read(3, Value::Int(1), (35, 45))),
    ];
    assert_eq!(check(&ops).unwrap().keys, 2);
    // Each key alone: what key a's reads would see if they were on b is wrong there.
    let crossed = [on("a", write(1, 1, (0, 10))), on("b", read(2, Value::Int(1), (20, 30)))];
    assert_not_linearizable(&crossed);
}

#[test]
fn a_search_over_its_cap_is_unknown() {
    // Ten concurrent writes and a read of the last: many orders to try.
    let mut ops: Vec<Op> = (0..10).map(|c| write(c, c as i64, (0, 100))).collect();
    ops.push(read(20, Value::Int(3), (200, 300)));
    ops.push(read(20, Value::Int(4), (400, 500)));
    match check_with_limit(&ops, 5) {
        Err(anomaly @ Anomaly::Unknown { .. }) => {
            let message = anomaly.to_string();
            assert!(message.contains("unknown on key \"k\"") && message.contains("explored 5"), "{message}");
        }
        other => panic!("expected unknown, got {other:?}"),
    }
    // With room the search finishes (and finds it not linearizable: 3 cannot come back).
    assert_not_linearizable(&ops);
}

// ---------------------------------------------------------------------------------------
// Random histories.

/// A random history of `clients_per_key` clients on each of `keys` keys (every fourth a
/// list), drawn from a sequential store: each operation takes effect at a random instant of
/// its interval, indeterminate ones (`info_ratio` of them) at any later instant or never.
fn random_history(seed: u64, keys: usize, clients_per_key: usize, ops_total: usize, info_ratio: f64) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut next_value = 0i64;
    let mut ops = Vec::with_capacity(ops_total);
    for k in 0..keys {
        let key = format!("k{k}");
        let is_list = k % 4 == 3;
        // (when it takes effect, index in `ops`)
        let mut effects: Vec<(u64, usize)> = Vec::new();
        for c in 0..clients_per_key {
            let client = (k * clients_per_key + c) as u64;
            let mut t = rng.between(0, 10_000);
            for _ in 0..ops_total / keys / clients_per_key {
                let invoke_ns = t;
                let long = rng.chance(0.01);
                let complete_ns =
                    invoke_ns + if long { rng.between(1_000_000, 20_000_000) } else { rng.between(1_000, 100_000) };
                next_value += 1;
                let roll = rng.between(0, 99);
                let input = match (is_list, roll) {
                    (true, 0..50) | (false, 0..45) => Input::Read,
                    (true, _) => Input::Append(next_value),
                    (false, 45..80) => Input::Write(next_value),
                    // The `from` is settled when the cas takes effect.
                    (false, _) => Input::Cas(0, next_value),
                };
                let output = if rng.chance(info_ratio) {
                    Output::Info
                } else if rng.chance(0.01) {
                    Output::Fail
                } else {
                    Output::Done
                };
                let effect = match output {
                    Output::Info if rng.chance(0.5) => Some(invoke_ns + rng.between(0, 30_000_000)),
                    Output::Done => Some(rng.between(invoke_ns, complete_ns)),
                    _ => None,
                };
                if let Some(at) = effect {
                    effects.push((at, ops.len()));
                }
                ops.push(Op { client, key: key.clone(), input, output, invoke_ns, complete_ns });
                t = complete_ns + rng.between(0, 50_000);
            }
        }
        effects.sort();
        let mut state = Value::Absent;
        let mut written: Vec<i64> = Vec::new();
        for (_, i) in effects {
            let op = &mut ops[i];
            let answer = match (op.input, &mut state) {
                (Input::Read, state) => Output::Read(state.clone()),
                (Input::Write(v), state) => {
                    *state = Value::Int(v);
                    written.push(v);
                    Output::Done
                }
                (Input::Cas(_, to), state) => {
                    let current = match state {
                        Value::Int(v) => Some(*v),
                        _ => None,
                    };
                    let from = match current {
                        Some(v) if rng.chance(0.6) => v,
                        _ => rng.pick(&written).unwrap_or(-1),
                    };
                    op.input = Input::Cas(from, to);
                    let swapped = current == Some(from);
                    if swapped {
                        *state = Value::Int(to);
                        written.push(to);
                    }
                    Output::Swapped(swapped)
                }
                (Input::Append(v), Value::List(l)) => {
                    l.push(v);
                    Output::Done
                }
                (Input::Append(v), state) => {
                    *state = Value::List(vec![v]);
                    Output::Done
                }
            };
            if op.output != Output::Info {
                op.output = answer;
            }
        }
        // Info cas that never took effect still need a `from`.
        for op in ops.iter_mut().filter(|op| op.key == key) {
            if let Input::Cas(0, to) = op.input {
                op.input = Input::Cas(rng.pick(&written).unwrap_or(-1), to);
            }
        }
    }
    // A recorder logs operations as they complete.
    ops.sort_by_key(|op| op.complete_ns);
    ops
}

/// Makes one register read stale: it returns a value overwritten by a write that finished
/// before the read began, so no order explains it. Returns the read's index.
fn make_a_read_stale(ops: &mut [Op]) -> usize {
    let done_writes: HashMap<(String, i64), usize> = (0..ops.len())
        .filter_map(|i| match (ops[i].input, &ops[i].output) {
            (Input::Write(v), Output::Done) => Some(((ops[i].key.clone(), v), i)),
            _ => None,
        })
        .collect();
    for r in ops.len() / 2..ops.len() {
        let Output::Read(Value::Int(v)) = ops[r].output else { continue };
        let Some(&w) = done_writes.get(&(ops[r].key.clone(), v)) else { continue };
        if ops[w].complete_ns >= ops[r].invoke_ns {
            continue;
        }
        let older = done_writes
            .iter()
            .filter(|&((key, _), &u)| *key == ops[r].key && ops[u].complete_ns < ops[w].invoke_ns)
            .max_by_key(|&(_, &u)| ops[u].complete_ns);
        if let Some(((_, u), _)) = older {
            ops[r].output = Output::Read(Value::Int(*u));
            return r;
        }
    }
    panic!("no read to make stale");
}

/// Drops, from one list read, an element whose append was acknowledged before the read
/// began. Returns the read's index.
fn lose_an_acked_append(ops: &mut [Op]) -> usize {
    let appended: HashMap<i64, usize> = (0..ops.len())
        .filter_map(|i| match (ops[i].input, &ops[i].output) {
            (Input::Append(v), Output::Done) => Some((v, i)),
            _ => None,
        })
        .collect();
    for r in ops.len() / 2..ops.len() {
        let Output::Read(Value::List(l)) = &ops[r].output else { continue };
        let at = l.iter().position(|v| appended.get(v).is_some_and(|&a| ops[a].complete_ns < ops[r].invoke_ns));
        if let Some(at) = at.filter(|&at| at + 1 < l.len()) {
            let mut l = l.clone();
            l.remove(at);
            ops[r].output = Output::Read(Value::List(l));
            return r;
        }
    }
    panic!("no list read to corrupt");
}

#[test]
fn small_random_histories_are_linearizable() {
    for seed in 0..20 {
        let ops = random_history(seed, 4, 4, 2_000, 0.05);
        if let Err(anomaly) = check(&ops) {
            panic!("seed {seed}: {anomaly}");
        }
    }
}

#[test]
fn a_large_random_history_checks_and_its_corruptions_are_caught() {
    let ops = random_history(42, 10, 5, 50_000, 0.02);
    let started = Instant::now();
    let report = check(&ops).unwrap();
    eprintln!("linearizable: {report:?} in {:?}", started.elapsed());
    assert_eq!((report.keys, report.ops), (10, 50_000));
    assert!(report.info_ops > 0);

    let mut stale = ops.clone();
    let r = make_a_read_stale(&mut stale);
    let started = Instant::now();
    match check(&stale) {
        Err(Anomaly::NotLinearizable { key, details }) => {
            assert_eq!(key, stale[r].key);
            eprintln!("stale read caught in {:?}; the message:\n{details}", started.elapsed());
        }
        other => panic!("the stale read {} went unnoticed: {other:?}", stale[r]),
    }

    let mut lost = ops;
    let r = lose_an_acked_append(&mut lost);
    let started = Instant::now();
    match check(&lost) {
        Err(Anomaly::NotLinearizable { key, .. }) => {
            assert_eq!(key, lost[r].key);
            eprintln!("lost append caught in {:?}", started.elapsed());
        }
        other => panic!("the lost append in {} went unnoticed: {other:?}", lost[r]),
    }
}
