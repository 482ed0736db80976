//! Conversation context: the turns before a query. In a chat, *how old is he?* means something
//! else after *who is Barack Obama?* than after *who is Tom Hanks?*; the context's digest is a hard
//! partition of the key and of the semantic scope (only the query itself is embedded), so the same
//! question under another context never hits, exactly or semantically.

use serde::{Deserialize, Serialize};

use resk_core::{Result, Turn, context_digest};

use crate::invalid;

/// Most messages a context may hold.
pub const MAX_CONTEXT_MESSAGES: usize = 256;
/// Longest role name.
const MAX_ROLE_LEN: usize = 32;

/// One message of the conversation before a query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, …
    pub role: String,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A message of `role` saying `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Which part of a context counts: the system messages (or not) and the last `turns` others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContextPolicy {
    /// How many of the last non-system messages count (older ones are ignored). Default 8.
    pub turns: usize,
    /// Whether system messages count (a different system prompt is a different partition).
    /// Default true.
    pub system: bool,
}

impl Default for ContextPolicy {
    fn default() -> Self {
        Self {
            turns: 8,
            system: true,
        }
    }
}

impl ContextPolicy {
    /// The policy counting the last `turns` non-system messages, and system messages if `system`.
    pub fn new(turns: usize, system: bool) -> Self {
        Self { turns, system }
    }

    /// The messages of `context` that count, in order; an error names what is wrong with it.
    pub(crate) fn select<'m>(
        &self,
        context: &'m [Message],
        max_chars: usize,
    ) -> Result<Vec<Turn<'m>>> {
        if context.len() > MAX_CONTEXT_MESSAGES {
            return Err(invalid(
                "context",
                format!(
                    "context has {} messages; at most {MAX_CONTEXT_MESSAGES}",
                    context.len()
                ),
            ));
        }
        let mut chars = 0usize;
        for (i, m) in context.iter().enumerate() {
            let role_ok = !m.role.is_empty()
                && m.role.len() <= MAX_ROLE_LEN
                && m.role
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !role_ok {
                return Err(invalid(
                    "context",
                    format!("context[{i}].role must be 1-{MAX_ROLE_LEN} letters, digits, - or _"),
                ));
            }
            chars = chars.saturating_add(m.content.chars().count());
        }
        if chars > max_chars {
            return Err(invalid(
                "context",
                format!("context is {chars} characters; the maximum is {max_chars}"),
            ));
        }
        let is_system = |m: &Message| m.role.eq_ignore_ascii_case("system");
        let others = context.iter().filter(|m| !is_system(m)).count();
        let skip = others.saturating_sub(self.turns);
        let mut seen = 0;
        Ok(context
            .iter()
            .filter(|m| {
                if is_system(m) {
                    return self.system;
                }
                seen += 1;
                seen > skip
            })
            .filter(|m| !m.content.trim().is_empty())
            .map(|m| Turn {
                role: &m.role,
                content: &m.content,
            })
            .collect())
    }

    /// The digest of the part of `context` that counts; `None` when nothing counts.
    pub(crate) fn digest(&self, context: &[Message], max_chars: usize) -> Result<Option<[u8; 32]>> {
        let turns = self.select(context, max_chars)?;
        Ok((!turns.is_empty()).then(|| context_digest(turns)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, content: &str) -> Message {
        Message::new(role, content)
    }

    #[test]
    fn depth_and_system_decide_what_counts() {
        let chat = [
            m("system", "You are terse."),
            m("user", "Who is Barack Obama?"),
            m("assistant", "The 44th US president."),
        ];
        let p = ContextPolicy::default();
        let all = p.digest(&chat, 10_000).unwrap();
        assert!(all.is_some());
        // Spacing and case of the content do not matter; the words do.
        let respaced = [
            m("system", "you are   TERSE."),
            m("user", "who is barack obama?"),
            m("assistant", "The 44th US president."),
        ];
        assert_eq!(p.digest(&respaced, 10_000).unwrap(), all);
        let other = [
            m("system", "You are terse."),
            m("user", "Who is Tom Hanks?"),
        ];
        assert_ne!(p.digest(&other, 10_000).unwrap(), all);
        // Without the system prompt, only the turns count.
        let no_system = ContextPolicy::new(8, false);
        let mut other_system = chat.clone();
        other_system[0].content = "You are verbose.".into();
        assert_eq!(
            no_system.digest(&chat, 10_000).unwrap(),
            no_system.digest(&other_system, 10_000).unwrap()
        );
        assert_ne!(
            p.digest(&chat, 10_000).unwrap(),
            p.digest(&other_system, 10_000).unwrap()
        );
        // Only the last turn counts at depth 1.
        let last = ContextPolicy::new(1, false);
        assert_eq!(
            last.digest(&chat, 10_000).unwrap(),
            last.digest(&[m("assistant", "The 44th US president.")], 10_000)
                .unwrap()
        );
        assert_eq!(ContextPolicy::default().digest(&[], 10).unwrap(), None);
    }

    #[test]
    fn bad_contexts_name_the_field() {
        let p = ContextPolicy::default();
        for bad in [
            vec![m("", "x")],
            vec![m("us er", "x")],
            vec![m("user", &"x".repeat(11))],
        ] {
            let err = p.digest(&bad, 10).unwrap_err();
            assert_eq!(err.op(), "context", "{err}");
        }
        let many = vec![m("user", "x"); MAX_CONTEXT_MESSAGES + 1];
        assert_eq!(p.digest(&many, usize::MAX).unwrap_err().op(), "context");
    }
}
