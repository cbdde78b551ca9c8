//! The subscription index ([`Index`]): exact topics in a hash map, patterns in a trie of topic
//! segments. Publishing looks its topic up once and walks one trie path per wildcard branch that
//! exists, so its cost depends on the topic's depth and on the patterns that can match it, not
//! on how many unrelated subscriptions there are.

use std::collections::HashMap;

type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use super::mailbox::{remove_subscriber, Shared};
use super::topic::{ONE, SEPARATOR, TAIL};

#[derive(Default)]
pub(crate) struct Node {
    children: Map<Node>,
    star: Option<Box<Node>>,
    /// Subscribers whose pattern ends here.
    here: Vec<Arc<Shared>>,
    /// Subscribers whose pattern ends here with `>` (one or more further segments).
    tail: Vec<Arc<Shared>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.tail.is_empty()
    }

    /// Adds `sub` under `pattern`. The caller has checked the pattern and that the mailbox does
    /// not hold it already.
    pub(crate) fn insert(&mut self, pattern: &str, sub: Arc<Shared>) {
        let mut node = self;
        for seg in pattern.split(SEPARATOR) {
            if seg == TAIL {
                node.tail.push(sub);
                return;
            }
            node = if seg == ONE {
                node.star.get_or_insert_with(Default::default)
            } else {
                node.children.entry(seg.into()).or_default()
            };
        }
        node.here.push(sub);
    }

    /// Removes `sub` from `pattern`, pruning nodes left empty. Returns whether it was there.
    pub(crate) fn remove(&mut self, pattern: &str, id: u64) -> bool {
        let segments: Vec<&str> = pattern.split(SEPARATOR).collect();
        self.remove_at(&segments, id)
    }

    fn remove_at(&mut self, segments: &[&str], id: u64) -> bool {
        let drop_from = |list: &mut Vec<Arc<Shared>>| remove_subscriber(list, id);
        let Some((&seg, rest)) = segments.split_first() else {
            return drop_from(&mut self.here);
        };
        if seg == TAIL {
            return drop_from(&mut self.tail);
        }
        if seg == ONE {
            let Some(star) = self.star.as_mut() else {
                return false;
            };
            let removed = star.remove_at(rest, id);
            if star.is_empty() {
                self.star = None;
            }
            return removed;
        }
        let Some(child) = self.children.get_mut(seg) else {
            return false;
        };
        let removed = child.remove_at(rest, id);
        if child.is_empty() {
            self.children.remove(seg);
        }
        removed
    }

    /// Calls `found` with each list of subscribers matching `topic` (a mailbox may be in more
    /// than one list when several of its patterns match).
    pub(crate) fn matching<'a>(&'a self, topic: &str, found: &mut impl FnMut(&'a [Arc<Shared>])) {
        let mut segments = [""; 32];
        let mut n = 0;
        for seg in topic.split(SEPARATOR) {
            if n == segments.len() {
                // Deep topics are rare: fall back to an allocated list.
                let all: Vec<&str> = topic.split(SEPARATOR).collect();
                return self.walk(&all, found);
            }
            segments[n] = seg;
            n += 1;
        }
        self.walk(&segments[..n], found)
    }

    fn walk<'a>(&'a self, segments: &[&str], found: &mut impl FnMut(&'a [Arc<Shared>])) {
        let Some((seg, rest)) = segments.split_first() else {
            if !self.here.is_empty() {
                found(&self.here);
            }
            return;
        };
        if !self.tail.is_empty() {
            found(&self.tail);
        }
        if let Some(star) = &self.star {
            star.walk(rest, found);
        }
        if let Some(child) = self.children.get(*seg) {
            child.walk(rest, found);
        }
    }

    /// Calls `f` with every subscriber list of the trie (a mailbox may appear in several).
    pub(crate) fn for_each_list<'a>(&'a self, f: &mut impl FnMut(&'a [Arc<Shared>])) {
        for list in [&self.here, &self.tail] {
            if !list.is_empty() {
                f(list);
            }
        }
        if let Some(star) = &self.star {
            star.for_each_list(f);
        }
        for child in self.children.values() {
            child.for_each_list(f);
        }
    }

    /// Number of trie nodes below this one (for leak checks).
    pub(crate) fn node_count(&self) -> usize {
        1 + self.children.values().map(Node::node_count).sum::<usize>()
            + self.star.as_ref().map_or(0, |s| s.node_count())
    }
}

/// The whole subscription index: wildcard-free subscriptions by their whole topic, and a trie
/// of the patterns. A publish to a topic costs one hash lookup, plus a walk of the trie only
/// while some pattern is subscribed (most buses subscribe exact topics only).
#[derive(Default)]
pub(crate) struct Index {
    /// Subscribers of each exact topic.
    exact: Map<Vec<Arc<Shared>>>,
    /// Subscribers of patterns (`*`, `>`); empty while there are none.
    patterns: Node,
}

/// Whether `pattern` has a wildcard segment.
fn is_pattern(pattern: &str) -> bool {
    pattern.split(SEPARATOR).any(|s| s == ONE || s == TAIL)
}

impl Index {
    /// Adds `sub` under `pattern`. The caller has checked the pattern and that the mailbox does
    /// not hold it already.
    pub(crate) fn insert(&mut self, pattern: &str, sub: Arc<Shared>) {
        if is_pattern(pattern) {
            self.patterns.insert(pattern, sub);
        } else {
            self.exact.entry(pattern.into()).or_default().push(sub);
        }
    }

    /// Removes mailbox `id` from `pattern`. Returns whether it was there.
    pub(crate) fn remove(&mut self, pattern: &str, id: u64) -> bool {
        if is_pattern(pattern) {
            return self.patterns.remove(pattern, id);
        }
        let Some(list) = self.exact.get_mut(pattern) else {
            return false;
        };
        let removed = remove_subscriber(list, id);
        if list.is_empty() {
            self.exact.remove(pattern);
        }
        removed
    }

    /// Calls `found` with each list of subscribers matching `topic` (a mailbox may be in more
    /// than one list when several of its subscriptions match).
    #[inline]
    pub(crate) fn matching<'a>(&'a self, topic: &str, found: &mut impl FnMut(&'a [Arc<Shared>])) {
        if let Some(list) = self.exact.get(topic) {
            found(list);
        }
        if !self.patterns.is_empty() {
            self.patterns.matching(topic, found);
        }
    }

    /// Calls `f` with every subscriber list (a mailbox may appear in several).
    pub(crate) fn for_each_list<'a>(&'a self, f: &mut impl FnMut(&'a [Arc<Shared>])) {
        for list in self.exact.values() {
            f(list);
        }
        self.patterns.for_each_list(f);
    }

    /// Number of trie nodes plus exact topics (1 when nothing is subscribed: the trie's root),
    /// for checks that nothing leaks.
    pub(crate) fn node_count(&self) -> usize {
        self.patterns.node_count() + self.exact.len()
    }
}
