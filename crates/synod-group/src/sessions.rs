//! Sessions that end by time, through the log. Every command is
//! `(session, seq)`, one session per node incarnation; the state machine
//! keeps each session's window of outcomes so a retried command applies
//! once. A session whose incarnation is gone would stay forever: the
//! leader proposes its expiry once no command of it applied for
//! `GroupConfig::session_idle_ms`.
//!
//! Why no copy of an expired session's command can still apply (E1): a
//! pending write lives at most `session_idle_ms / 4` on its node (then it
//! is answered "timed out" and never sent again, and the seqs below the
//! lowest pending one are declared answered); a copy accepted in the log
//! but not chosen is re-proposed by the next leader's takeover, which
//! fills those slots before anything that leader proposes, the expiry
//! included, and then finds the session still there. The expiry names the
//! revision of the session's last command, so a session that woke up in
//! between is kept (the state machine checks).

use crate::group::Group;
use crate::types::Answer;
use synod_kv::{error_outcome, KvError};
use synod_paxos::{RoleKind, Time};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::SessionExpire;

/// A node's `GroupConfig::session_idle_ms`: ten minutes, far past any
/// client's timeout (a write then waits at most 150 s on its node).
pub const SESSION_IDLE_MS: u64 = 10 * 60 * 1000;
/// How often the leader looks for idle sessions.
const SESSION_SCAN_MS: u64 = 1_000;
/// Sessions expired by one command at most.
const SESSION_EXPIRE_BATCH: usize = 1_024;

impl Group {
    /// How long a write may wait on this node before it is answered
    /// "timed out" and dropped (E1); `None` when sessions never expire.
    fn write_deadline_ms(&self) -> Option<u64> {
        (self.config.session_idle_ms > 0).then_some(self.config.session_idle_ms / 4)
    }

    /// Every session in the state machine, seen now (at start, and after
    /// a snapshot replaced the store): each gets a whole idle period.
    pub(crate) fn reset_sessions(&mut self) {
        let now = self.now;
        self.session_seen = self.kv.sessions().map(|(c, r)| (c, (r, now))).collect();
    }

    /// A command of `client` applied, leaving the store at `revision`.
    pub(crate) fn saw_session(&mut self, client: u64, revision: i64) {
        self.session_seen.insert(client, (revision, self.now));
    }

    /// An expiry applied: the sessions it removed are gone.
    pub(crate) fn sessions_expired(&mut self, expired: &SessionExpire) {
        for client in &expired.clients {
            self.session_seen.remove(client);
        }
        self.sessions_expired += expired.clients.len() as u64;
    }

    /// Per tick: the writes past their deadline are answered and dropped;
    /// a leader proposes the expiry of sessions idle too long.
    pub(crate) fn session_duties(&mut self) {
        let Some(deadline) = self.write_deadline_ms() else {
            return;
        };
        self.drop_late_writes(deadline);
        let now = self.now;
        if self.replica.role_kind() != RoleKind::Leader
            || now.0 < self.sessions_scanned_at.0.saturating_add(SESSION_SCAN_MS)
        {
            return;
        }
        self.sessions_scanned_at = now;
        let idle = self.config.session_idle_ms;
        let own = self.config.session;
        let due: Vec<(u64, i64)> = self
            .session_seen
            .iter()
            .filter(|(c, (_, seen))| **c != own && now.0.saturating_sub(seen.0) >= idle)
            .map(|(c, (r, _))| (*c, *r))
            .take(SESSION_EXPIRE_BATCH)
            .collect();
        if due.is_empty() {
            return;
        }
        for (client, revision) in &due {
            // Asked again only after another idle period.
            self.session_seen.insert(*client, (*revision, now));
        }
        let (clients, revisions) = due.into_iter().unzip();
        self.issue_as_leader(Op::SessionExpire(SessionExpire { clients, revisions }));
    }

    /// Answers "timed out" to every write that waited
    /// past `deadline` ms, and never sends it again (E1).
    fn drop_late_writes(&mut self, deadline: u64) {
        let now: Time = self.now;
        let late: Vec<(u64, u64)> = self
            .writes
            .iter()
            .filter(|(_, p)| now.0.saturating_sub(p.submitted_at.0) >= deadline)
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            let pending = self.writes.remove(&key).expect("listed above");
            if let Some(ticket) = pending.ticket {
                let outcome = error_outcome(&KvError::TimedOut);
                self.answers.push((ticket, Answer::Write(outcome)));
            }
        }
    }
}
