//! Local acceptance statistics: which suggestions the editor showed, and which the
//! user accepted whole, accepted in part or dismissed, as the editor reports them
//! (`inkling/didShow`, `inkling/didAccept`, `inkling/didDismiss`, and the items'
//! `inkling.didAccept` command). Kept in memory and reported only through
//! `inkling/stats`: nothing is sent anywhere.
//!
//! Every answer with items is recorded under a new id, and an item is named by its
//! answer's id and its index. An item that continues an earlier suggestion — its
//! rest after the user typed or accepted its start (the typed-through cache gives
//! exactly that), or the same text asked for again at the same place — counts as
//! that earlier suggestion: typing through a suggestion, or accepting it word by
//! word, is one suggestion shown, not one per keystroke.
//!
//! Invariants:
//! - Reports about ids no longer (or never) remembered, and repeated reports, change
//!   nothing; no report is an error.
//! - Each suggestion counts at most once as shown and is, at any time, in at most
//!   one of accepted (whole), partly accepted and dismissed; a later report moves it
//!   (partly → whole, dismissed → accepted), never back.
//! - Characters accepted count each character of a suggestion once, and not the
//!   characters the user typed themselves.

use std::collections::VecDeque;
use std::sync::Mutex;

use inkling_core::lock;
use inkling_core::postprocess::Trigger;

/// Answers remembered for attributing reports (each holds its items' texts).
const REMEMBERED_ANSWERS: usize = 500;
/// How many of a document's latest answers a new answer's items may continue.
const CONTINUATION_SEARCH: usize = 64;

/// An item of an answer: the answer's id and the item's index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemId {
    pub answer: u64,
    pub item: usize,
}

/// What happened to the suggestions shown, as far as the editor told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Suggestions shown (accepted or dismissed ones count as shown even if the
    /// editor did not say so).
    pub shown: u64,
    /// Suggestions accepted whole.
    pub accepted: u64,
    /// Suggestions of which only a start was accepted.
    pub partly_accepted: u64,
    /// Suggestions dismissed (without any of it accepted).
    pub dismissed: u64,
    /// Characters (Unicode scalar values) inserted by accepting.
    pub characters_accepted: u64,
}

impl Counts {
    /// The share of suggestions shown that were accepted whole or in part (0 when
    /// none was shown).
    pub fn acceptance_rate(&self) -> f64 {
        if self.shown == 0 {
            return 0.0;
        }
        (self.accepted + self.partly_accepted) as f64 / self.shown as f64
    }
}

/// The counts in total and split by trigger and by single- or multi-line suggestions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptanceStats {
    pub total: Counts,
    pub automatic: Counts,
    pub invoked: Counts,
    pub single_line: Counts,
    pub multi_line: Counts,
}

impl AcceptanceStats {
    /// Applies `change` to the total and to the two splits `suggestion` is in.
    fn apply(&mut self, suggestion: &Suggestion, change: impl Fn(&mut Counts)) {
        change(&mut self.total);
        change(match suggestion.trigger {
            Trigger::Automatic => &mut self.automatic,
            Trigger::Invoked => &mut self.invoked,
        });
        change(if suggestion.multi_line {
            &mut self.multi_line
        } else {
            &mut self.single_line
        });
    }
}

/// Where a suggestion stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Open,
    PartlyAccepted,
    Accepted,
    Dismissed,
}

impl Outcome {
    /// The count a suggestion in this state is part of.
    fn count(self, counts: &mut Counts) -> Option<&mut u64> {
        match self {
            Outcome::Open => None,
            Outcome::PartlyAccepted => Some(&mut counts.partly_accepted),
            Outcome::Accepted => Some(&mut counts.accepted),
            Outcome::Dismissed => Some(&mut counts.dismissed),
        }
    }
}

/// A suggestion as first offered, and what became of it.
#[derive(Debug)]
struct Suggestion {
    trigger: Trigger,
    /// Its length in chars.
    chars: usize,
    multi_line: bool,
    shown: bool,
    /// How far from its start it has been accepted, in chars.
    accepted_to: usize,
    /// Chars inserted by accepting it (not those the user typed).
    characters_accepted: usize,
    outcome: Outcome,
}

/// An answer's item: a suggestion of its own, or the rest of an earlier one.
#[derive(Debug)]
enum Item {
    Own(Suggestion),
    /// The suggestion of item `of` from char `offset` on.
    Rest {
        of: ItemId,
        offset: usize,
    },
}

/// An answer as given: where, its texts, and what each item stands for.
#[derive(Debug)]
struct Answer {
    document: String,
    /// The cursor, a char index into the document.
    cursor: usize,
    texts: Vec<String>,
    items: Vec<Item>,
}

/// The recent answers, oldest first, with consecutive ids.
#[derive(Debug, Default)]
struct Answers {
    /// The id of `list[0]`.
    first_id: u64,
    list: VecDeque<Answer>,
}

impl Answers {
    fn get(&self, id: u64) -> Option<&Answer> {
        self.list
            .get(usize::try_from(id.checked_sub(self.first_id)?).ok()?)
    }

    fn suggestion_mut(&mut self, id: ItemId) -> Option<&mut Suggestion> {
        let index = usize::try_from(id.answer.checked_sub(self.first_id)?).ok()?;
        match self.list.get_mut(index)?.items.get_mut(id.item)? {
            Item::Own(suggestion) => Some(suggestion),
            Item::Rest { .. } => None,
        }
    }

    /// The suggestion item `id` is or continues, and where in it the item starts.
    fn resolve(&self, id: ItemId) -> Option<(ItemId, usize)> {
        match self.get(id.answer)?.items.get(id.item)? {
            Item::Own(_) => Some((id, 0)),
            Item::Rest { of, offset } => Some((*of, *offset)),
        }
    }

    /// The suggestion that `text` at char `cursor` of `document` continues, and
    /// where in it `text` starts: one of the document's recent items that, given at
    /// or before `cursor`, reads `text` from `cursor` on.
    fn continued(&self, document: &str, cursor: usize, text: &str) -> Option<(ItemId, usize)> {
        if text.is_empty() {
            return None;
        }
        let recent = (self.list.iter().enumerate())
            .rev()
            .filter(|(_, answer)| answer.document == document)
            .take(CONTINUATION_SEARCH);
        for (index, answer) in recent {
            let id = self.first_id + index as u64;
            let Some(typed) = cursor.checked_sub(answer.cursor) else {
                continue;
            };
            for (item, earlier) in answer.texts.iter().enumerate() {
                if without_chars(earlier, typed) == Some(text)
                    && let Some((of, offset)) = self.resolve(ItemId { answer: id, item })
                {
                    return Some((of, offset + typed));
                }
            }
        }
        None
    }

    /// Adds an answer; the oldest is forgotten when there are too many.
    fn push(&mut self, answer: Answer) -> u64 {
        if self.list.len() == REMEMBERED_ANSWERS {
            self.list.pop_front();
            self.first_id += 1;
        }
        self.list.push_back(answer);
        self.first_id + self.list.len() as u64 - 1
    }
}

/// `text` without its first `n` chars, if it has that many.
fn without_chars(text: &str, n: usize) -> Option<&str> {
    let mut starts = text.char_indices().map(|(i, _)| i).chain([text.len()]);
    starts.nth(n).map(|i| &text[i..])
}

/// The recent answers and the counts, changed together under one lock.
#[derive(Debug, Default)]
struct Ledger {
    answers: Answers,
    stats: AcceptanceStats,
}

impl Ledger {
    /// Applies `change` to the suggestion that item `id` is or continues (given the
    /// item's offset in it), and counts what changed.
    fn update(&mut self, id: ItemId, change: impl FnOnce(&mut Suggestion, usize)) {
        let found = self.answers.resolve(id).and_then(|(of, offset)| {
            let suggestion = self.answers.suggestion_mut(of)?;
            Some((suggestion, offset))
        });
        let Some((suggestion, offset)) = found else {
            tracing::debug!(?id, "a report about an unknown suggestion; ignored");
            return;
        };
        let (was_shown, was, characters) = (
            suggestion.shown,
            suggestion.outcome,
            suggestion.characters_accepted,
        );
        change(suggestion, offset);
        let stats = &mut self.stats;
        if suggestion.shown && !was_shown {
            stats.apply(suggestion, |c| c.shown += 1);
        }
        let now = suggestion.outcome;
        if now != was {
            stats.apply(suggestion, |c| {
                if let Some(old) = was.count(c) {
                    *old = old.saturating_sub(1);
                }
                if let Some(new) = now.count(c) {
                    *new += 1;
                }
            });
        }
        let characters = (suggestion.characters_accepted - characters) as u64;
        if characters > 0 {
            stats.apply(suggestion, |c| c.characters_accepted += characters);
        }
    }
}

/// The acceptance statistics of a session and the recent answers they are about.
#[derive(Debug, Default)]
pub struct Acceptance {
    ledger: Mutex<Ledger>,
}

impl Acceptance {
    /// Remembers an answer of `texts` given at char `cursor` of `document`; returns
    /// its id (items are named by it and their index).
    pub fn record(&self, trigger: Trigger, document: &str, cursor: usize, texts: &[String]) -> u64 {
        let mut ledger = lock(&self.ledger);
        let answers = &mut ledger.answers;
        let items = texts
            .iter()
            .map(|text| match answers.continued(document, cursor, text) {
                Some((of, offset)) => Item::Rest { of, offset },
                None => Item::Own(Suggestion {
                    trigger,
                    chars: text.chars().count(),
                    multi_line: text.contains('\n'),
                    shown: false,
                    accepted_to: 0,
                    characters_accepted: 0,
                    outcome: Outcome::Open,
                }),
            })
            .collect();
        answers.push(Answer {
            document: document.to_owned(),
            cursor,
            texts: texts.to_vec(),
            items,
        })
    }

    /// The editor showed item `id`.
    pub fn shown(&self, id: ItemId) {
        lock(&self.ledger).update(id, |suggestion, _| suggestion.shown = true);
    }

    /// The user accepted item `id`: its first `length` chars, or all of it.
    pub fn accepted(&self, id: ItemId, length: Option<usize>) {
        lock(&self.ledger).update(id, |suggestion, offset| {
            let item_chars = suggestion.chars.saturating_sub(offset);
            let length = length.map_or(item_chars, |n| n.min(item_chars));
            if length == 0 {
                return;
            }
            suggestion.shown = true;
            // The item starts `offset` chars in: what lies before it was accepted
            // or typed already.
            let end = offset + length;
            suggestion.characters_accepted +=
                end.saturating_sub(suggestion.accepted_to.max(offset));
            suggestion.accepted_to = suggestion.accepted_to.max(end);
            suggestion.outcome = match suggestion.outcome {
                _ if end >= suggestion.chars => Outcome::Accepted,
                Outcome::Accepted => Outcome::Accepted,
                _ => Outcome::PartlyAccepted,
            };
        });
    }

    /// The user dismissed item `id` (it counts only if none of it was accepted).
    pub fn dismissed(&self, id: ItemId) {
        lock(&self.ledger).update(id, |suggestion, _| {
            if suggestion.outcome == Outcome::Open {
                suggestion.shown = true;
                suggestion.outcome = Outcome::Dismissed;
            }
        });
    }

    /// The counts so far.
    pub fn stats(&self) -> AcceptanceStats {
        lock(&self.ledger).stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "file:///a.py";

    fn texts(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    fn item(answer: u64, item: usize) -> ItemId {
        ItemId { answer, item }
    }

    #[test]
    fn reports_are_counted_by_trigger_and_line_kind() {
        let acceptance = Acceptance::default();
        let one_line = acceptance.record(Trigger::Automatic, DOC, 10, &texts(&["a + b"]));
        let two_lines = acceptance.record(Trigger::Invoked, DOC, 40, &texts(&["x\ny", "x"]));
        let dismissed = acceptance.record(Trigger::Automatic, DOC, 70, &texts(&["z"]));
        acceptance.shown(item(one_line, 0));
        acceptance.accepted(item(one_line, 0), None);
        acceptance.shown(item(two_lines, 0));
        acceptance.accepted(item(two_lines, 0), Some(1));
        acceptance.shown(item(dismissed, 0));
        acceptance.dismissed(item(dismissed, 0));

        let stats = acceptance.stats();
        let expected_total = Counts {
            shown: 3,
            accepted: 1,
            partly_accepted: 1,
            dismissed: 1,
            characters_accepted: 6,
        };
        assert_eq!(stats.total, expected_total);
        assert!((stats.total.acceptance_rate() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!((stats.automatic.shown, stats.automatic.accepted), (2, 1));
        assert_eq!(stats.automatic.dismissed, 1);
        assert_eq!((stats.invoked.shown, stats.invoked.partly_accepted), (1, 1));
        assert_eq!(stats.invoked.characters_accepted, 1);
        assert_eq!((stats.single_line.shown, stats.multi_line.shown), (2, 1));
        assert_eq!(stats.multi_line.partly_accepted, 1);
        assert_eq!(Counts::default().acceptance_rate(), 0.0);
    }

    #[test]
    fn accepting_word_by_word_is_one_suggestion_accepted_whole() {
        // The report of the word may come before or after the rest is asked for.
        for reported_first in [true, false] {
            let acceptance = Acceptance::default();
            let first = acceptance.record(Trigger::Invoked, DOC, 10, &texts(&["total += i"]));
            acceptance.shown(item(first, 0));
            if reported_first {
                acceptance.accepted(item(first, 0), Some(5)); // "total"
            }
            // The rest, from the typed-through cache, at the cursor after the word.
            let rest = acceptance.record(Trigger::Automatic, DOC, 15, &texts(&[" += i"]));
            if !reported_first {
                acceptance.accepted(item(first, 0), Some(5));
            }
            let partly = acceptance.stats().total;
            assert_eq!((partly.partly_accepted, partly.characters_accepted), (1, 5));
            acceptance.shown(item(rest, 0));
            acceptance.accepted(item(rest, 0), None);

            let stats = acceptance.stats();
            let expected = Counts {
                shown: 1,
                accepted: 1,
                partly_accepted: 0,
                dismissed: 0,
                characters_accepted: 10,
            };
            assert_eq!(stats.total, expected);
            assert_eq!(stats.invoked, expected, "counted under the first trigger");
            assert_eq!(stats.automatic, Counts::default());
        }
    }

    #[test]
    fn typing_through_a_suggestion_shows_it_once_and_typed_chars_are_not_accepted() {
        let acceptance = Acceptance::default();
        let first = acceptance.record(Trigger::Automatic, DOC, 10, &texts(&["añadir(x)"]));
        acceptance.shown(item(first, 0));
        let mut last = first;
        for typed in 1..=3 {
            let rest = without_chars("añadir(x)", typed).unwrap();
            last = acceptance.record(Trigger::Automatic, DOC, 10 + typed, &texts(&[rest]));
            acceptance.shown(item(last, 0));
        }
        // Asked again at the same place: the same suggestion.
        let again = acceptance.record(Trigger::Automatic, DOC, 13, &texts(&["dir(x)"]));
        acceptance.shown(item(again, 0));
        acceptance.accepted(item(last, 0), None);
        let stats = acceptance.stats().total;
        assert_eq!((stats.shown, stats.accepted), (1, 1));
        assert_eq!(
            stats.characters_accepted, 6,
            "the 3 typed chars were counted"
        );
        // Another document, or another text, is another suggestion.
        let elsewhere =
            acceptance.record(Trigger::Automatic, "file:///b.py", 13, &texts(&["dir(x)"]));
        let other = acceptance.record(Trigger::Automatic, DOC, 13, &texts(&["dir(y)"]));
        acceptance.shown(item(elsewhere, 0));
        acceptance.shown(item(other, 0));
        assert_eq!(acceptance.stats().total.shown, 3);
    }

    #[test]
    fn unknown_repeated_and_empty_reports_change_nothing() {
        let acceptance = Acceptance::default();
        let id = acceptance.record(Trigger::Automatic, DOC, 0, &texts(&["abc"]));
        for unknown in [item(id + 1, 0), item(id, 1), item(u64::MAX, usize::MAX)] {
            acceptance.shown(unknown);
            acceptance.accepted(unknown, Some(2));
            acceptance.dismissed(unknown);
        }
        acceptance.accepted(item(id, 0), Some(0));
        assert_eq!(acceptance.stats(), AcceptanceStats::default());

        acceptance.accepted(item(id, 0), Some(99)); // Clamped to the item: whole.
        acceptance.accepted(item(id, 0), None);
        acceptance.accepted(item(id, 0), Some(1)); // Never back to partly.
        acceptance.dismissed(item(id, 0)); // Accepted ones are not dismissed.
        let stats = acceptance.stats().total;
        assert_eq!(
            (stats.shown, stats.accepted, stats.partly_accepted),
            (1, 1, 0)
        );
        assert_eq!((stats.dismissed, stats.characters_accepted), (0, 3));
    }

    #[test]
    fn a_dismissed_suggestion_accepted_later_counts_as_accepted() {
        let acceptance = Acceptance::default();
        let id = acceptance.record(Trigger::Automatic, DOC, 0, &texts(&["abc"]));
        acceptance.dismissed(item(id, 0));
        assert_eq!(acceptance.stats().total.dismissed, 1);
        acceptance.accepted(item(id, 0), Some(1));
        let stats = acceptance.stats().total;
        assert_eq!(
            (stats.shown, stats.dismissed, stats.partly_accepted),
            (1, 0, 1)
        );
    }

    #[test]
    fn only_the_most_recent_answers_are_remembered() {
        let acceptance = Acceptance::default();
        let first = acceptance.record(Trigger::Automatic, DOC, 0, &texts(&["abc"]));
        for n in 1..=REMEMBERED_ANSWERS {
            let id = acceptance.record(Trigger::Automatic, DOC, n * 10, &texts(&["abc"]));
            assert_eq!(id, first + n as u64);
        }
        acceptance.accepted(item(first, 0), None);
        assert_eq!(
            acceptance.stats().total.accepted,
            0,
            "a forgotten id was counted"
        );
        acceptance.accepted(item(first + 1, 0), None);
        assert_eq!(acceptance.stats().total.accepted, 1);
    }
}
