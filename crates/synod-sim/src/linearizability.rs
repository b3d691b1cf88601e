//! Linearizability checking for client histories of the synod key-value store.
//!
//! A history is *linearizable* if every operation can be given a single instant
//! (its linearization point) between its invocation and its return such that
//! running the operations one at a time in that order, against a sequential
//! model of the store, produces exactly the outputs the clients observed.
//!
//! # Algorithm
//!
//! The search is that of Wing & Gong ("Testing and verifying concurrent
//! objects", 1993) with the improvements of Lowe ("Testing for
//! linearizability", 2017). The history becomes a doubly-linked list of call
//! and return entries in time order. An operation whose call precedes the first
//! remaining return entry may take effect next; the search applies such an
//! operation to the model and, if the model's output matches the observed one,
//! unlinks the operation's call and return and starts again from the head.
//! Reaching a return entry means nothing that may come next works, so the
//! search backtracks, relinking entries in O(1) ("dancing links"). Lowe's
//! improvement memoizes every configuration reached, the set of linearized
//! operations as a bitset plus the model state, so no configuration is
//! explored twice.
//!
//! Two reductions, each justified by rewriting any linearization into one
//! the search still tries, keep the branching small:
//! - an operation that never changes the register (a get, a failed cas) and
//!   fits the current state is linearized at once and is not a branching
//!   point, since moving it earlier changes no other output;
//! - writes with unknown outputs are tried only after the known operations,
//!   and only in runs that enable a known operation that did not fit before
//!   (see `Search::allowed`); identical ones are used earliest first.
//!
//! Before searching, a cheap pre-check reports any completed operation that
//! observed a value no operation on its key writes.
//!
//! # Per-key decomposition
//!
//! Keys are independent registers and every operation touches exactly one key,
//! so a history is linearizable exactly when each key's sub-history is
//! (linearizability is local, Herlihy & Wing 1990; Lowe calls this
//! P-compositionality). Each key is checked on its own, which keeps the
//! bitsets short and the searches small. Keys are visited in ascending order,
//! so the result never depends on hash iteration order.
//!
//! # Unknown results
//!
//! An operation whose output is unknown (timeout, crash, never returned) may
//! have taken effect at any time after its invocation, or never. Its return
//! time is taken as +infinity whatever `ret` holds, any model output matches
//! it, and linearizing it is optional: the search succeeds as soon as every
//! operation with a known output is linearized. Unknown reads change nothing
//! and are left out of the search.
//!
//! # Equal timestamps
//!
//! A call at the same instant as another operation's return counts as
//! concurrent with it (calls sort before returns), so the checker never
//! reports a violation that depends on how equal timestamps are ordered.
//!
//! # Budget
//!
//! Every key's search may visit at most `max_states` configurations. A search
//! cut off by the budget yields [`CheckOutcome::Unknown`], never
//! [`CheckOutcome::Linearizable`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hasher};

/// A key-value operation as the client issued it; the checker replays it
/// against a sequential register to decide which outputs were legal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvInput {
    /// Unconditionally set `key` to `value`.
    Put {
        /// The register written.
        key: u64,
        /// The value stored.
        value: u64,
    },
    /// Read the current value of `key`.
    Get {
        /// The register read.
        key: u64,
    },
    /// Set `key` to `new` if and only if it currently holds `expect`.
    Cas {
        /// The register compared and perhaps written.
        key: u64,
        /// The value the register must hold (`None`: absent) for the swap to happen.
        expect: Option<u64>,
        /// The value stored when the comparison succeeds.
        new: u64,
    },
}

impl KvInput {
    /// The key this operation touches; histories are split by it.
    fn key(&self) -> u64 {
        match *self {
            KvInput::Put { key, .. } | KvInput::Get { key } | KvInput::Cas { key, .. } => key,
        }
    }
}

/// What the system answered; compared with what the sequential model answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutput {
    /// The put was acknowledged.
    Put,
    /// The value read (`None`: the key was absent).
    Get(Option<u64>),
    /// Whether the compare-and-swap took effect.
    Cas(bool),
}

/// One operation in a history: what a client asked, when, and what it got back.
///
/// Times are any monotone clock (sim nanoseconds). `output: None` means the
/// result is unknown (timeout, crash, or never returned): the operation may or
/// may not have taken effect, at any time after `invoke`, and `ret` is then
/// ignored (treated as +infinity).
#[derive(Clone, Debug)]
pub struct Operation {
    /// The client that issued the operation (reported in violations only).
    pub client: u64,
    /// What was asked.
    pub input: KvInput,
    /// When the client sent the request.
    pub invoke: u64,
    /// When the client received the answer; ignored when `output` is `None`.
    pub ret: u64,
    /// The answer, or `None` if unknown.
    pub output: Option<KvOutput>,
}

/// Evidence that a history is not linearizable, detailed enough to debug the
/// run that produced it.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The key whose sub-history admits no linearization.
    pub key: u64,
    /// That key's sub-history, sorted by invoke; explanations refer to
    /// operations by their index `#i` in this list.
    pub operations: Vec<Operation>,
    /// What went wrong, in words.
    pub explanation: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "history is not linearizable on key {}: {}",
            self.key, self.explanation
        )?;
        for (i, op) in self.operations.iter().enumerate() {
            write!(f, "\n  #{i} client {}: {:?} ", op.client, op.input)?;
            match &op.output {
                Some(out) => write!(f, "[{}..{}] -> {:?}", op.invoke, op.ret, out)?,
                None => write!(f, "[{}..?] -> unknown", op.invoke)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// The result of a check that found no violation: either a proof of
/// linearizability or an admission that the budget ran out first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every key's sub-history has a linearization.
    Linearizable,
    /// The search for `key` (the smallest such key) exceeded the budget after
    /// exploring `states_explored` configurations; nothing is known about it.
    Unknown {
        /// The key whose search was cut off.
        key: u64,
        /// Configurations explored before giving up.
        states_explored: u64,
    },
}

/// Checks that `history` is linearizable against a store of independent
/// registers that all start absent (`None`).
///
/// `max_states` bounds the number of configurations explored per key; a key
/// that needs more gives [`CheckOutcome::Unknown`]. Each explored
/// configuration is kept in memory (about `ops / 64 + 6` words, `ops` being
/// the key's operation count), so the budget also bounds memory. A violation on any key
/// takes precedence over an unknown outcome on another; among several
/// violations the smallest key is reported.
pub fn check(history: &[Operation], max_states: u64) -> Result<CheckOutcome, Violation> {
    let mut first_unknown = None;
    for (key, ops) in split_by_key(history) {
        let outcome = check_key(key, ops, max_states)?;
        if first_unknown.is_none() && outcome != CheckOutcome::Linearizable {
            first_unknown = Some(outcome);
        }
    }
    Ok(first_unknown.unwrap_or(CheckOutcome::Linearizable))
}

/// Groups operations by key (ascending) and sorts each group by invoke,
/// keeping the history's order among equal invokes.
fn split_by_key(history: &[Operation]) -> BTreeMap<u64, Vec<Operation>> {
    let mut by_key: BTreeMap<u64, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.input.key()).or_default().push(op.clone());
    }
    for ops in by_key.values_mut() {
        ops.sort_by_key(|op| op.invoke);
    }
    by_key
}

/// Checks one key's sub-history (already sorted by invoke).
fn check_key(key: u64, ops: Vec<Operation>, max_states: u64) -> Result<CheckOutcome, Violation> {
    let explanation = match validate(&ops).or_else(|| unwritten_read(&ops)) {
        Some(explanation) => explanation,
        None => {
            let mut search = Search::new(&ops);
            match search.run(max_states) {
                SearchEnd::Linearizable => return Ok(CheckOutcome::Linearizable),
                SearchEnd::OutOfBudget(states_explored) => {
                    return Ok(CheckOutcome::Unknown {
                        key,
                        states_explored,
                    })
                }
                SearchEnd::Exhausted => search.explain(),
            }
        }
    };
    Err(Violation {
        key,
        operations: ops,
        explanation,
    })
}

/// Describes the first malformed completed operation, if any: one that
/// returned before it was invoked, or whose output does not answer its input.
fn validate(ops: &[Operation]) -> Option<String> {
    ops.iter().enumerate().find_map(|(i, op)| {
        let out = op.output.as_ref()?;
        let fits = matches!(
            (&op.input, out),
            (KvInput::Put { .. }, KvOutput::Put)
                | (KvInput::Get { .. }, KvOutput::Get(_))
                | (KvInput::Cas { .. }, KvOutput::Cas(_))
        );
        if op.invoke > op.ret {
            Some(format!(
                "malformed history: operation #{i} returned at {} before it was invoked at {}",
                op.ret, op.invoke
            ))
        } else if !fits {
            Some(format!(
                "malformed history: operation #{i} got output {out:?}, which cannot answer {:?}",
                op.input
            ))
        } else {
            None
        }
    })
}

/// Cheap pre-check: describes a completed operation that observed a value no
/// operation on the key ever writes. The search would find this too, but only
/// after exhausting every ordering of the operations before it.
fn unwritten_read(ops: &[Operation]) -> Option<String> {
    let written: HashSet<u64> = ops
        .iter()
        .filter_map(|op| match op.input {
            KvInput::Put { value, .. } => Some(value),
            KvInput::Cas { new, .. } => Some(new),
            KvInput::Get { .. } => None,
        })
        .collect();
    ops.iter().enumerate().find_map(|(i, op)| {
        let seen = match (&op.input, &op.output) {
            (_, Some(KvOutput::Get(Some(v)))) => *v,
            (
                KvInput::Cas {
                    expect: Some(v), ..
                },
                Some(KvOutput::Cas(true)),
            ) => *v,
            _ => return None,
        };
        (!written.contains(&seen)).then(|| {
            format!("operation #{i} observed value {seen}, which no operation on this key writes")
        })
    })
}

/// A register's content; `None` is absent.
type Value = Option<u64>;

/// The sequential model: the state after `input` and the output it gives.
fn apply(state: Value, input: &KvInput) -> (Value, KvOutput) {
    match *input {
        KvInput::Put { value, .. } => (Some(value), KvOutput::Put),
        KvInput::Get { .. } => (state, KvOutput::Get(state)),
        KvInput::Cas { expect, new, .. } if state == expect => (Some(new), KvOutput::Cas(true)),
        KvInput::Cas { .. } => (state, KvOutput::Cas(false)),
    }
}

/// The state after `op` if the model agrees with its observed output (an
/// unknown output agrees with anything), `None` if it does not.
fn step(state: Value, op: &Operation) -> Option<Value> {
    let (next, out) = apply(state, &op.input);
    match &op.output {
        Some(seen) if *seen != out => None,
        _ => Some(next),
    }
}

/// FxHash-style hasher: the cache is hashed many times per step and its keys
/// are not attacker-controlled, so a fast multiplicative hash is enough.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// End-of-list marker for entry links.
const NIL: usize = usize::MAX;
/// Index of the sentinel entry heading the list.
const HEAD: usize = 0;

/// A call or return entry in the time-ordered, doubly-linked list.
struct Entry {
    /// Index of the operation in the key's sub-history.
    op: usize,
    is_call: bool,
    /// For a call, its return entry (`NIL` for unknown outputs).
    partner: usize,
    prev: usize,
    next: usize,
}

/// How the search treats an operation; also names the sweep of the list that
/// tries operations of that class. Sweeps run in declaration order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// A known-output operation that never changes the register (a get, a
    /// failed cas, or a cas writing the value it expects). If it fits the
    /// current state it can be linearized at once without losing anything:
    /// moving it earlier in any linearization changes no other output. So it
    /// is never a branching point.
    Read,
    /// A known-output operation that may change the register.
    Write,
    /// A write with an unknown output: optional, tried last.
    Unknown,
    /// An unknown read: it cannot affect anything, so it is left out.
    Ignored,
}

/// Classifies `op` for the search (see [`Class`]).
fn classify(op: &Operation) -> Class {
    match (&op.input, &op.output) {
        (KvInput::Get { .. }, None) => Class::Ignored,
        (_, None) => Class::Unknown,
        (KvInput::Get { .. }, _) | (_, Some(KvOutput::Cas(false))) => Class::Read,
        (KvInput::Cas { expect, new, .. }, _) if *expect == Some(*new) => Class::Read,
        _ => Class::Write,
    }
}

/// For each unknown write, the previous unknown write (in invoke order) with
/// an identical input, or `NIL`. Identical unknown writes are interchangeable,
/// so the search only ever takes the earliest one not yet linearized: any
/// linearization using a later twin still works with the two swapped.
fn unknown_twins(ops: &[Operation], class: &[Class]) -> Vec<usize> {
    let mut last: HashMap<(bool, Option<u64>, u64), usize, FxBuild> = HashMap::default();
    let mut twin = vec![NIL; ops.len()];
    for (i, op) in ops.iter().enumerate() {
        if class[i] != Class::Unknown {
            continue;
        }
        let shape = match op.input {
            KvInput::Put { value, .. } => (false, None, value),
            KvInput::Cas { expect, new, .. } => (true, expect, new),
            KvInput::Get { .. } => continue,
        };
        if let Some(prev) = last.insert(shape, i) {
            twin[i] = prev;
        }
    }
    twin
}

/// What to undo when backtracking over one linearized operation.
struct Frame {
    entry: usize,
    prev_state: Value,
    prev_block: Block,
    /// The sweep that chose the operation, to resume after it.
    pass: Class,
}

/// How one key's search ended.
enum SearchEnd {
    Linearizable,
    Exhausted,
    OutOfBudget(u64),
}

/// What happened when the search tried to linearize one operation next.
enum Attempt {
    /// Linearized; the search goes deeper.
    Taken,
    /// The model disagrees, or the configuration was already explored.
    Rejected,
    /// A read fits but its configuration was explored and failed, so the
    /// current configuration fails too.
    Dead,
}

/// The state before the current run of consecutive unknown writes, or `None`
/// when the last linearized operation had a known output (see
/// [`Search::allowed`]).
type Block = Option<Value>;

/// A set of linearized-operation bitsets.
type BitsetSet = HashSet<Box<[u64]>, FxBuild>;

/// The Wing–Gong/Lowe search over one key's sub-history.
struct Search<'a> {
    ops: &'a [Operation],
    class: Vec<Class>,
    twin: Vec<usize>,
    entries: Vec<Entry>,
    /// The linearized operations, one bit per index into `ops`.
    bits: Vec<u64>,
    state: Value,
    block: Block,
    stack: Vec<Frame>,
    remaining_known: usize,
    unknown_in_list: usize,
    /// Visited configurations: linearized-operation bitsets, grouped by
    /// model state and block.
    cache: HashMap<(Value, Block), BitsetSet, FxBuild>,
    explored: u64,
    /// The longest linearization found (operation indices) and its end state.
    best: Vec<usize>,
    best_state: Value,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Operation]) -> Self {
        let class: Vec<Class> = ops.iter().map(classify).collect();
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if class[i] != Class::Ignored {
                events.push((op.invoke, false, i));
            }
            if op.output.is_some() {
                events.push((op.ret, true, i));
            }
        }
        events.sort_unstable();
        let count = |c: Class| class.iter().filter(|&&k| k == c).count();
        Search {
            ops,
            twin: unknown_twins(ops, &class),
            entries: build_list(&events, ops.len()),
            bits: vec![0; ops.len().div_ceil(64)],
            state: None,
            block: None,
            stack: Vec::new(),
            remaining_known: count(Class::Read) + count(Class::Write),
            unknown_in_list: count(Class::Unknown),
            class,
            cache: HashMap::default(),
            explored: 0,
            best: Vec::new(),
            best_state: None,
        }
    }

    fn run(&mut self, max_states: u64) -> SearchEnd {
        let mut cursor = self.entries[HEAD].next;
        let mut pass = Class::Read;
        loop {
            if self.remaining_known == 0 {
                return SearchEnd::Linearizable;
            }
            if self.explored > max_states {
                return SearchEnd::OutOfBudget(self.explored);
            }
            let at_end = cursor == NIL || !self.entries[cursor].is_call;
            if let Some(next) = self.next_sweep(pass).filter(|_| at_end) {
                pass = next;
                cursor = self.entries[HEAD].next;
                continue;
            }
            let attempt = if at_end {
                Attempt::Dead
            } else {
                self.attempt(cursor, pass)
            };
            match attempt {
                Attempt::Taken => {
                    cursor = self.entries[HEAD].next;
                    pass = Class::Read;
                }
                Attempt::Rejected => cursor = self.entries[cursor].next,
                Attempt::Dead => match self.backtrack() {
                    Some(frame) => {
                        cursor = self.entries[frame.entry].next;
                        pass = frame.pass;
                    }
                    None => return SearchEnd::Exhausted,
                },
            }
        }
    }

    /// The sweep to run after sweep `pass` has reached the first return entry.
    fn next_sweep(&self, pass: Class) -> Option<Class> {
        match pass {
            Class::Read => Some(Class::Write),
            Class::Write if self.unknown_in_list > 0 => Some(Class::Unknown),
            _ => None,
        }
    }

    /// Tries to linearize the call at `entry` next during sweep `pass`.
    fn attempt(&mut self, entry: usize, pass: Class) -> Attempt {
        let op = self.entries[entry].op;
        if self.class[op] != pass {
            return Attempt::Rejected;
        }
        let Some(next_state) = step(self.state, &self.ops[op]) else {
            return Attempt::Rejected;
        };
        if !self.allowed(op, next_state) {
            return Attempt::Rejected;
        }
        let block = match pass {
            Class::Unknown => Some(self.block.unwrap_or(self.state)),
            _ => None,
        };
        self.flip(op);
        if !self.visit(next_state, block) {
            self.flip(op);
            return match pass {
                Class::Read => Attempt::Dead,
                _ => Attempt::Rejected,
            };
        }
        self.stack.push(Frame {
            entry,
            prev_state: self.state,
            prev_block: self.block,
            pass,
        });
        (self.state, self.block) = (next_state, block);
        self.lift(entry);
        self.count_linearized(pass, true);
        if self.stack.len() > self.best.len() {
            self.best = self
                .stack
                .iter()
                .map(|f| self.entries[f.entry].op)
                .collect();
            self.best_state = self.state;
        }
        Attempt::Taken
    }

    /// Whether `op`, which would move the register to `next_state`, may come
    /// next in a linearization of the normal form the search looks for.
    ///
    /// Every linearizable history has a linearization in which each run of
    /// consecutive unknown writes (1) starts with one that changes the state,
    /// (2) continues only with successful, state-changing cas operations, and
    /// (3) ends with a known operation that would not fit the state before
    /// the run; and in which identical unknown writes are used earliest-invoked
    /// first. Any linearization can be rewritten into that form: drop an
    /// unknown write that changes nothing or that a put overwrites unobserved;
    /// if the known operation after a run fits the state before it, move it
    /// before the run when it leaves the state alone, or else drop the run (a
    /// put, or a cas that succeeds both before and after the run, ends in the
    /// same state either way); swap twins. Each rewrite keeps the
    /// linearization valid, and the rewriting terminates.
    fn allowed(&self, op: usize, next_state: Value) -> bool {
        if self.class[op] != Class::Unknown {
            return self
                .block
                .is_none_or(|before| step(before, &self.ops[op]).is_none());
        }
        let twin = self.twin[op];
        let cas = matches!(self.ops[op].input, KvInput::Cas { .. });
        next_state != self.state
            && (self.block.is_none() || cas)
            && (twin == NIL || self.is_linearized(twin))
    }

    /// Undoes linearized operations until one was a branching choice, which
    /// is returned (the search resumes after it); `None` when none is left.
    /// Reads were forced, so backtracking over one continues further.
    fn backtrack(&mut self) -> Option<Frame> {
        loop {
            let frame = self.stack.pop()?;
            let op = self.entries[frame.entry].op;
            self.flip(op);
            (self.state, self.block) = (frame.prev_state, frame.prev_block);
            self.unlift(frame.entry);
            self.count_linearized(frame.pass, false);
            if frame.pass != Class::Read {
                return Some(frame);
            }
        }
    }

    fn count_linearized(&mut self, class: Class, linearized: bool) {
        let counter = match class {
            Class::Unknown => &mut self.unknown_in_list,
            _ => &mut self.remaining_known,
        };
        if linearized {
            *counter -= 1;
        } else {
            *counter += 1;
        }
    }

    fn flip(&mut self, op: usize) {
        self.bits[op / 64] ^= 1 << (op % 64);
    }

    fn is_linearized(&self, op: usize) -> bool {
        self.bits[op / 64] & (1 << (op % 64)) != 0
    }

    /// Records the configuration (`bits`, `state`, `block`); false if seen.
    fn visit(&mut self, state: Value, block: Block) -> bool {
        let seen = self.cache.entry((state, block)).or_default();
        if seen.contains(&self.bits[..]) {
            return false;
        }
        seen.insert(self.bits.clone().into_boxed_slice());
        self.explored += 1;
        true
    }

    fn unlink(&mut self, e: usize) {
        let (prev, next) = (self.entries[e].prev, self.entries[e].next);
        self.entries[prev].next = next;
        if next != NIL {
            self.entries[next].prev = prev;
        }
    }

    fn relink(&mut self, e: usize) {
        let (prev, next) = (self.entries[e].prev, self.entries[e].next);
        self.entries[prev].next = e;
        if next != NIL {
            self.entries[next].prev = e;
        }
    }

    /// Removes a call and its return; `unlift` restores them in reverse order.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.entries[call].partner;
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.entries[call].partner;
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }

    /// Explains an exhausted search using the longest linearization found.
    fn explain(&self) -> String {
        let mut in_best = vec![false; self.ops.len()];
        let mut order = String::new();
        for (n, &i) in self.best.iter().enumerate() {
            in_best[i] = true;
            let _ = write!(order, "{}#{i}", if n == 0 { "" } else { ", " });
        }
        let mut text = format!(
            "no order of the operations respects real time and a sequential register; \
             the longest linearizable prefix found has {} of {} operations [{order}] \
             and leaves the value {:?}",
            self.best.len(),
            self.ops.len(),
            self.best_state
        );
        let stuck = (0..self.ops.len())
            .filter(|&i| self.ops[i].output.is_some() && !in_best[i])
            .min_by_key(|&i| (self.ops[i].ret, i));
        if let Some(i) = stuck {
            let op = &self.ops[i];
            let _ = write!(
                text,
                "; no remaining operation can follow it, and the earliest to return \
                 among them is #{i} ({:?} -> {:?}, returned at {})",
                op.input,
                op.output.as_ref().expect("filtered to known outputs"),
                op.ret
            );
        }
        text
    }
}

/// Builds the linked list from sorted `(time, is_return, op)` events; entry 0
/// is the sentinel head. Every known op's call sorts before its return.
fn build_list(events: &[(u64, bool, usize)], n_ops: usize) -> Vec<Entry> {
    let n = events.len();
    let mut entries = Vec::with_capacity(n + 1);
    entries.push(Entry {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: if n > 0 { 1 } else { NIL },
    });
    let mut call_of = vec![NIL; n_ops];
    for (k, &(_, is_return, op)) in events.iter().enumerate() {
        let idx = k + 1;
        entries.push(Entry {
            op,
            is_call: !is_return,
            partner: NIL,
            prev: k,
            next: if idx < n { idx + 1 } else { NIL },
        });
        if is_return {
            entries[call_of[op]].partner = idx;
        } else {
            call_of[op] = idx;
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 1_000_000;

    fn op(client: u64, input: KvInput, invoke: u64, ret: u64, output: KvOutput) -> Operation {
        Operation {
            client,
            input,
            invoke,
            ret,
            output: Some(output),
        }
    }

    fn put(client: u64, key: u64, value: u64, invoke: u64, ret: u64) -> Operation {
        op(
            client,
            KvInput::Put { key, value },
            invoke,
            ret,
            KvOutput::Put,
        )
    }

    fn get(client: u64, key: u64, seen: Option<u64>, invoke: u64, ret: u64) -> Operation {
        op(
            client,
            KvInput::Get { key },
            invoke,
            ret,
            KvOutput::Get(seen),
        )
    }

    fn cas(client: u64, key: u64, cmp: (Option<u64>, u64), ok: bool, t: (u64, u64)) -> Operation {
        let (expect, new) = cmp;
        let input = KvInput::Cas { key, expect, new };
        op(client, input, t.0, t.1, KvOutput::Cas(ok))
    }

    /// An unknown-output operation; `ret` holds junk (0) that must be ignored.
    fn unknown(client: u64, input: KvInput, invoke: u64) -> Operation {
        Operation {
            client,
            input,
            invoke,
            ret: 0,
            output: None,
        }
    }

    fn assert_ok(history: &[Operation]) {
        match check(history, BUDGET) {
            Ok(CheckOutcome::Linearizable) => {}
            other => panic!("expected linearizable, got {other:?}"),
        }
    }

    fn assert_violation(history: &[Operation], key: u64) -> Violation {
        match check(history, BUDGET) {
            Err(v) => {
                assert_eq!(v.key, key, "{v}");
                v
            }
            other => panic!("expected a violation on key {key}, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check(&[], 0).unwrap(), CheckOutcome::Linearizable);
    }

    #[test]
    fn put_then_get_sees_value() {
        assert_ok(&[put(1, 0, 5, 0, 10), get(2, 0, Some(5), 20, 30)]);
    }

    #[test]
    fn get_of_never_written_value_is_violation() {
        let v = assert_violation(&[put(1, 0, 5, 0, 10), get(2, 0, Some(6), 20, 30)], 0);
        assert!(v.explanation.contains("value 6"), "{v}");
    }

    #[test]
    fn stale_read_after_completed_put_is_violation() {
        let v = assert_violation(&[put(1, 0, 1, 0, 10), get(2, 0, None, 20, 30)], 0);
        assert_eq!(v.operations.len(), 2);
        assert!(v.explanation.contains("#1"), "{v}");
    }

    #[test]
    fn concurrent_put_and_get_may_see_old_or_new() {
        assert_ok(&[put(1, 0, 1, 0, 10), get(2, 0, None, 5, 15)]);
        assert_ok(&[put(1, 0, 1, 0, 10), get(2, 0, Some(1), 5, 15)]);
        // Touching endpoints count as concurrent.
        assert_ok(&[put(1, 0, 1, 0, 10), get(2, 0, None, 10, 15)]);
    }

    #[test]
    fn unknown_put_later_read_is_ok() {
        let p = unknown(1, KvInput::Put { key: 0, value: 7 }, 0);
        assert_ok(&[p, get(2, 0, Some(7), 50, 60)]);
    }

    #[test]
    fn unknown_put_never_read_is_ok() {
        let p = unknown(1, KvInput::Put { key: 0, value: 7 }, 0);
        assert_ok(&[p.clone(), get(2, 0, None, 50, 60)]);
        // It may also take effect between two reads, long after its invoke.
        assert_ok(&[p, get(2, 0, None, 50, 60), get(2, 0, Some(7), 70, 80)]);
    }

    #[test]
    fn read_of_unknown_put_before_its_invoke_is_violation() {
        let p = unknown(1, KvInput::Put { key: 0, value: 7 }, 20);
        assert_violation(&[get(2, 0, Some(7), 0, 10), p], 0);
    }

    #[test]
    fn unknown_put_may_take_effect_after_later_writes() {
        // An unknown put(7) may not be reordered before its invoke, so the
        // final read of 7 after put(8) completed needs it to land after put(8).
        let p = unknown(1, KvInput::Put { key: 0, value: 7 }, 5);
        assert_ok(&[p.clone(), put(2, 0, 8, 10, 20), get(3, 0, Some(7), 30, 40)]);
        let late = [put(2, 0, 8, 10, 20), get(3, 0, Some(7), 30, 40)];
        let early_put = [put(1, 0, 7, 0, 5), late[0].clone(), late[1].clone()];
        assert_violation(&early_put, 0);
    }

    #[test]
    fn successful_cas_chain_is_ok() {
        assert_ok(&[
            cas(1, 0, (None, 1), true, (0, 10)),
            cas(2, 0, (Some(1), 2), true, (20, 30)),
            cas(1, 0, (Some(1), 3), false, (40, 50)),
            get(3, 0, Some(2), 60, 70),
        ]);
    }

    #[test]
    fn concurrent_cas_with_same_expect_both_succeeding_is_violation() {
        let history = [
            put(1, 0, 1, 0, 5),
            cas(2, 0, (Some(1), 2), true, (10, 20)),
            cas(3, 0, (Some(1), 3), true, (10, 20)),
        ];
        assert_violation(&history, 0);
        // One winner is fine.
        let mut one_wins = history.clone();
        one_wins[2].output = Some(KvOutput::Cas(false));
        assert_ok(&one_wins);
    }

    #[test]
    fn readers_observing_new_then_old_is_violation() {
        let w0 = put(1, 0, 0, 0, 5);
        let w1 = put(1, 0, 1, 10, 100);
        let reader_a = get(2, 0, Some(1), 20, 30);
        let reader_b = get(3, 0, Some(0), 40, 50);
        assert_violation(&[w0.clone(), w1.clone(), reader_a, reader_b], 0);
        // Old value first, then new: fine.
        let reader_b = get(3, 0, Some(0), 20, 30);
        let reader_a = get(2, 0, Some(1), 40, 50);
        assert_ok(&[w0, w1, reader_b, reader_a]);
    }

    #[test]
    fn keys_are_checked_independently() {
        // Fine per key although a single register could not explain it.
        assert_ok(&[
            put(1, 1, 1, 0, 10),
            put(1, 2, 2, 20, 30),
            get(2, 1, Some(1), 40, 50),
            get(2, 2, Some(2), 40, 50),
        ]);
        let v = assert_violation(
            &[
                put(1, 1, 1, 0, 10),
                put(1, 2, 2, 20, 30),
                get(2, 1, Some(1), 40, 50),
                get(2, 2, None, 40, 50),
            ],
            2,
        );
        assert!(v.operations.iter().all(|op| op.input.key() == 2));
    }

    #[test]
    fn malformed_operations_are_reported_not_panicked() {
        let v = assert_violation(&[put(1, 3, 1, 10, 5)], 3);
        assert!(v.explanation.contains("malformed"), "{v}");
        let wrong_kind = op(1, KvInput::Get { key: 4 }, 0, 1, KvOutput::Cas(true));
        let v = assert_violation(&[wrong_kind], 4);
        assert!(v.explanation.contains("malformed"), "{v}");
        // Unknown outputs ignore `ret`, even when it precedes `invoke`.
        assert_ok(&[unknown(1, KvInput::Put { key: 0, value: 1 }, 10)]);
    }

    #[test]
    fn display_lists_every_operation() {
        let history = [
            put(1, 9, 1, 0, 10),
            get(2, 9, None, 20, 30),
            unknown(3, KvInput::Get { key: 9 }, 25),
        ];
        let text = assert_violation(&history, 9).to_string();
        assert!(text.contains("key 9"), "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("client 2: Get { key: 9 } [20..30] -> Get(None)"));
        assert!(text.contains("[25..?] -> unknown"), "{text}");
    }

    /// A hard history: 12 concurrent puts then reads of 1, 2, 1, which no
    /// order explains; proving it means trying every order of the puts.
    fn hard_history(key: u64) -> Vec<Operation> {
        let mut h: Vec<_> = (1..=12).map(|v| put(v, key, v, 0, 100)).collect();
        h.push(get(20, key, Some(1), 110, 120));
        h.push(get(20, key, Some(2), 130, 140));
        h.push(get(20, key, Some(1), 150, 160));
        h
    }

    #[test]
    fn tiny_budget_returns_unknown() {
        let h = hard_history(0);
        match check(&h, 100) {
            Ok(CheckOutcome::Unknown {
                key: 0,
                states_explored,
            }) => assert!(states_explored > 100),
            other => panic!("expected unknown, got {other:?}"),
        }
        assert_violation(&h, 0);
        // A violation elsewhere wins over an unknown outcome.
        let mut both = hard_history(0);
        both.extend([put(1, 5, 1, 0, 10), get(2, 5, None, 20, 30)]);
        match check(&both, 100) {
            Err(v) => assert_eq!(v.key, 5),
            other => panic!("expected violation on key 5, got {other:?}"),
        }
    }

    /// Xorshift64* generator: deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    fn random_input(rng: &mut Rng, key: u64) -> KvInput {
        match rng.below(3) {
            0 => KvInput::Put {
                key,
                value: 1 + rng.below(4),
            },
            1 => KvInput::Get { key },
            _ => KvInput::Cas {
                key,
                expect: (rng.below(4) > 0).then(|| 1 + rng.below(4)),
                new: 1 + rng.below(4),
            },
        }
    }

    /// A linearizable history: random intervals per client, a linearization
    /// point inside each (or anywhere after invoke, or none, for unknown
    /// results), outputs from running the model in linearization-point order.
    fn linearizable_history(seed: u64, shape: (usize, u64, u64), lost_pct: u64) -> Vec<Operation> {
        let (n, keys, clients) = shape;
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut clock = vec![0u64; clients as usize];
        let mut ops = Vec::with_capacity(n);
        let mut points = Vec::with_capacity(n);
        for i in 0..n {
            let client = rng.below(clients);
            let invoke = clock[client as usize] + rng.below(20);
            let ret = invoke + 1 + rng.below(60);
            clock[client as usize] = ret + 1;
            let key = rng.below(keys);
            let input = random_input(&mut rng, key);
            let lost = rng.below(100) < lost_pct;
            let point = match (lost, rng.below(2)) {
                (false, _) => invoke + rng.below(ret - invoke + 1),
                (true, 0) => invoke + rng.below(300),
                (true, _) => u64::MAX, // never takes effect
            };
            points.push((point, i));
            let output = (!lost).then_some(KvOutput::Put);
            ops.push(Operation {
                client,
                input,
                invoke,
                ret,
                output,
            });
        }
        points.sort_unstable();
        let mut registers = vec![None; keys as usize];
        for (point, i) in points.into_iter().filter(|p| p.0 != u64::MAX) {
            let _ = point;
            let reg = &mut registers[ops[i].input.key() as usize];
            let (next, out) = apply(*reg, &ops[i].input);
            *reg = next;
            if ops[i].output.is_some() {
                ops[i].output = Some(out);
            }
        }
        ops
    }

    #[test]
    fn random_linearizable_histories_pass_and_mutations_fail() {
        for seed in 1..=20 {
            let mut h = linearizable_history(seed, (200, 3, 5), 8);
            assert_eq!(check(&h, BUDGET).unwrap(), CheckOutcome::Linearizable);
            let i = h
                .iter()
                .position(|op| matches!(op.output, Some(KvOutput::Get(_))))
                .expect("some completed get");
            h[i].output = Some(KvOutput::Get(Some(1000)));
            let key = h[i].input.key();
            assert_violation(&h, key);
            // The search alone (without the unwritten-value pre-check) agrees.
            let sub = split_by_key(&h).remove(&key).unwrap();
            assert!(matches!(
                Search::new(&sub).run(BUDGET),
                SearchEnd::Exhausted
            ));
        }
    }

    /// Reference checker straight from the definition, memoizing failed
    /// (linearized set, state) pairs: any remaining operation that no
    /// remaining completed operation strictly precedes may come next, and
    /// success means every completed operation is placed. Up to 32 operations.
    fn reference(
        ops: &[Operation],
        used: u32,
        state: Value,
        dead: &mut HashSet<(u32, Value)>,
    ) -> bool {
        let pending = |j: usize| used & (1 << j) == 0;
        if (0..ops.len()).all(|j| !pending(j) || ops[j].output.is_none()) {
            return true;
        }
        if dead.contains(&(used, state)) {
            return false;
        }
        for i in (0..ops.len()).filter(|&i| pending(i)) {
            let blocked = (0..ops.len())
                .any(|j| pending(j) && ops[j].output.is_some() && ops[j].ret < ops[i].invoke);
            let next = step(state, &ops[i]);
            if !blocked && next.is_some_and(|next| reference(ops, used | 1 << i, next, dead)) {
                return true;
            }
        }
        dead.insert((used, state));
        false
    }

    fn random_small_history(rng: &mut Rng) -> Vec<Operation> {
        let n = 1 + rng.below(7) as usize;
        (0..n)
            .map(|c| {
                let input = random_input(rng, 0);
                let output = match input {
                    _ if rng.below(3) == 0 => None,
                    KvInput::Put { .. } => Some(KvOutput::Put),
                    KvInput::Get { .. } => {
                        Some(KvOutput::Get((rng.below(3) > 0).then(|| 1 + rng.below(4))))
                    }
                    KvInput::Cas { .. } => Some(KvOutput::Cas(rng.below(2) == 0)),
                };
                let invoke = rng.below(10);
                let ret = invoke + rng.below(6);
                Operation {
                    client: c as u64,
                    input,
                    invoke,
                    ret,
                    output,
                }
            })
            .collect()
    }

    /// A generated linearizable single-key history with up to two outputs
    /// flipped to other plausible values.
    fn mutated_history(seed: u64, rng: &mut Rng) -> Vec<Operation> {
        let n = 4 + (seed % 13) as usize;
        let lost_pct = [0, 10, 25, 50][(seed % 4) as usize];
        let mut h = linearizable_history(seed, (n, 1, 2 + seed % 4), lost_pct);
        for _ in 0..rng.below(3) {
            let i = rng.below(n as u64) as usize;
            h[i].output = match h[i].output {
                Some(KvOutput::Get(_)) => {
                    Some(KvOutput::Get((rng.below(3) > 0).then(|| 1 + rng.below(4))))
                }
                Some(KvOutput::Cas(ok)) => Some(KvOutput::Cas(!ok)),
                ref other => other.clone(),
            };
        }
        h
    }

    #[test]
    fn agrees_with_reference_checker() {
        let mut rng = Rng(0x5eed);
        let (mut good, mut bad) = (0, 0);
        for seed in 0..3000 {
            let h = if seed % 2 == 0 {
                random_small_history(&mut rng)
            } else {
                mutated_history(seed, &mut rng)
            };
            let sorted = split_by_key(&h).remove(&0).unwrap();
            let expected = reference(&sorted, 0, None, &mut HashSet::new());
            let got = check(&h, BUDGET);
            assert_eq!(got.is_ok(), expected, "history {sorted:#?} gave {got:?}");
            if expected {
                assert_eq!(got.unwrap(), CheckOutcome::Linearizable);
                good += 1;
            } else {
                bad += 1;
            }
        }
        assert!(good > 800 && bad > 800, "good {good}, bad {bad}");
    }
}
