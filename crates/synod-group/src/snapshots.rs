//! State-machine snapshots between replicas. The group decides *when*: a
//! replica behind the leader's log start gets one, and a received one is
//! installed only while the replica still wants it. The shell does the
//! bytes: it streams the committed rows from a storage read transaction
//! off the core thread, and writes received chunks into a stage
//! (`synod_storage::stream`), then hands the loaded store back here.
//!
//! ```text
//!   sender:   ready.snapshots ─► shell: reader at its committed slot S
//!             snapshot_started(S) (hold compaction at S) ─► chunks ─► peer
//!   receiver: shell: chunks ─► stage ─► load ─► install_staged(S, kv, stage)
//!             ─► ready.installed: switch to the stage + applied S +
//!                compaction through S, one durable write (F8)
//! ```

use crate::group::Group;
use crate::types::{Compaction, Installed};
use synod_kv::KvStore;
use synod_paxos::{Configuration, Slot};

/// How long a snapshot stream holds the leader's compaction back at its
/// slot: long enough to stream gigabytes, so the receiver can then catch
/// up from the log instead of needing another snapshot.
pub const SNAPSHOT_HOLD_MS: u64 = 120_000;
/// Bytes of applied commands past which compaction goes on despite a hold:
/// the log lives in memory.
pub const SNAPSHOT_HOLD_LOG_BYTES: u64 = 256 << 20;

impl Group {
    /// The shell started streaming this group's rows at `slot` to a
    /// replica: the log after `slot` stays (for a while, within bounds) so
    /// the replica can catch up from it once installed.
    pub fn snapshot_started(&mut self, slot: Slot) {
        let slot = match self.hold {
            Some((held, at)) if self.now.0 < at.0.saturating_add(SNAPSHOT_HOLD_MS) => {
                held.min(slot)
            }
            _ => slot,
        };
        self.hold = Some((slot, self.now));
    }

    /// The slot compaction must not pass, while a hold is in force.
    pub(crate) fn held_at(&self) -> Option<Slot> {
        let (slot, at) = self.hold?;
        let fresh = self.now.0 < at.0.saturating_add(SNAPSHOT_HOLD_MS);
        (fresh && self.log_bytes < SNAPSHOT_HOLD_LOG_BYTES).then_some(slot)
    }

    /// A snapshot through `slot` from the leader, received whole into
    /// storage stage `stage` and loaded as `kv`: installs it if this
    /// replica still wants it (it may have caught up from the log
    /// meanwhile), and returns whether it did. On true the next ready's
    /// `installed` tells the shell to make the stage live, with the
    /// applied slot and the compaction, in one durable write (the replica
    /// holds every reply that depends on it until then). On false the
    /// shell discards the stage.
    pub fn install_staged(
        &mut self,
        slot: Slot,
        membership: Option<Configuration>,
        kv: KvStore,
        stage: u64,
    ) -> bool {
        if !self.replica.wants_snapshot(slot) {
            return false;
        }
        if let Some(c) = &membership {
            if let Err(e) = c.validate() {
                tracing::warn!(%slot, error = %e, "snapshot with an invalid configuration refused");
                return false;
            }
        }
        let installed = match membership.clone() {
            Some(configuration) => self
                .replica
                .install_snapshot_with_membership(slot, configuration),
            None => self.replica.install_snapshot(slot),
        };
        assert!(installed, "wanted snapshot refused");
        self.kv.install(kv);
        self.lessor.reset(&self.kv, self.now.0);
        self.reset_sessions();
        self.jump = Some(self.kv.revision());
        self.applied = slot;
        self.compacted = slot;
        self.log_bytes = 0;
        self.compact_out = Some(Compaction { slot, membership });
        self.snapshots_installed += 1;
        self.installed = Some(Installed { slot, stage });
        self.members_changed = true;
        self.answer_from_sessions();
        self.serve_reads();
        true
    }
}
