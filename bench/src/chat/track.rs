//! What a connection holds of one conversation, by seq: the run's messages
//! start after the head it found at its first look (reused accounts keep
//! earlier runs' messages), and it holds them gapless up to some seq, with
//! perhaps a few later ones that came early.

use std::collections::BTreeSet;

/// What a received seq was, to the conversation's track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// At or below the first look's head: an earlier run's message.
    Old,
    /// The next one after the gapless run.
    Next,
    /// Past the next one: the seqs between have not come (yet).
    Ahead,
    /// Already held.
    Repeat,
}

/// One conversation's seqs as one connection holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Track {
    /// The head at the first look; the run's messages come after it.
    pub base: u64,
    /// Every seq from `base + 1` to this one is held.
    pub gapless: u64,
    /// The read position last heard of.
    pub read_seq: u64,
    /// Seqs held above `gapless + 1`.
    ahead: BTreeSet<u64>,
}

impl Track {
    /// A conversation whose first `base` seqs are earlier runs'.
    pub fn after(base: u64, read_seq: u64) -> Track {
        Track {
            base,
            gapless: base,
            read_seq,
            ahead: BTreeSet::new(),
        }
    }

    /// Notes `seq` as held.
    pub fn take(&mut self, seq: u64) -> Taken {
        if seq <= self.base {
            return Taken::Old;
        }
        if seq <= self.gapless {
            return Taken::Repeat;
        }
        if seq > self.gapless + 1 {
            return if self.ahead.insert(seq) {
                Taken::Ahead
            } else {
                Taken::Repeat
            };
        }
        self.gapless = seq;
        while self.ahead.remove(&(self.gapless + 1)) {
            self.gapless += 1;
        }
        Taken::Next
    }

    /// Seqs after `base` up to `head` not held.
    pub fn missing(&self, head: u64) -> u64 {
        let held_ahead = self.ahead.range(..=head).count() as u64;
        head.saturating_sub(self.gapless).saturating_sub(held_ahead)
    }

    /// The highest seq held.
    pub fn top(&self) -> u64 {
        self.ahead.last().copied().unwrap_or(self.gapless)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_past_a_gap_wait_until_it_fills() {
        let mut track = Track::after(10, 4);
        assert_eq!(track.take(3), Taken::Old);
        assert_eq!(track.take(11), Taken::Next);
        assert_eq!(track.take(13), Taken::Ahead);
        assert_eq!(track.take(13), Taken::Repeat);
        assert_eq!(track.take(15), Taken::Ahead);
        assert_eq!((track.gapless, track.top()), (11, 15));
        assert_eq!(track.missing(16), 3, "12, 14 and 16");
        assert_eq!(track.take(12), Taken::Next);
        assert_eq!(track.gapless, 13);
        assert_eq!(track.take(11), Taken::Repeat);
        assert_eq!(track.missing(15), 1, "14");
        assert_eq!(track.take(14), Taken::Next);
        assert_eq!((track.gapless, track.missing(15)), (15, 0));
        assert_eq!(
            track.missing(5),
            0,
            "a head below what is held misses nothing"
        );
    }
}
